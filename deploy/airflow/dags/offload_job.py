"""Run a container job on offload from plain Airflow: no offload package needed.

Needs only apache-airflow-providers-http and a connection `offload`, for example:

    AIRFLOW_CONN_OFFLOAD='{"conn_type": "http", "host": "http://127.0.0.1:8080",
                           "extra": {"Authorization": "Bearer TOKEN"}}'

- submit: POST /v1/jobs with a JSON string body and an Idempotency-Key built from the
  dag, task, run, map index and try, so a retried POST finds the job it made;
- wait: an HttpSensor that long-polls GET /v1/jobs/{id}?wait=30 (one request per state
  change instead of one per poke) and fails the task with the job's reason;
- cancel: a teardown that cancels the job if the run ends early (Airflow gave up
  waiting after `wait_timeout_seconds`, the run failed or was killed).

Trigger with `--conf '{"command": ["sh", "-c", "echo hi"], "timeout_seconds": 600}'`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from airflow.exceptions import AirflowException
from airflow.providers.http.operators.http import HttpOperator
from airflow.providers.http.sensors.http import HttpSensor
from airflow.sdk import DAG, Param

OFFLOAD_CONN = "offload"


def job_succeeded(response, ti, params, **_context) -> bool:
    """True once the job succeeded; raises when it ended any other way, or when it has
    run longer than the run's `wait_timeout_seconds` (the cancel teardown then stops it)."""
    job = response.json()
    if job["state"] == "succeeded":
        return True
    if job["terminal"]:
        raise AirflowException(
            f"offload job {job['id']} {job['state']}: {job.get('reason') or 'no reason given'}"
        )
    waited = (datetime.now(timezone.utc) - ti.start_date).total_seconds()
    if waited > params["wait_timeout_seconds"]:
        raise AirflowException(
            f"offload job {job['id']} still {job['state']} after {params['wait_timeout_seconds']} s: giving up"
        )
    return False


with DAG(
    dag_id="offload_job",
    schedule=None,
    catchup=False,
    params={
        "image": Param("alpine:3", type="string"),
        "command": Param(["sh", "-c", "echo hello from offload"], type="array"),
        # The job's own limit, enforced by the gateway (the job fails with reason timeout).
        "timeout_seconds": Param(3600, type="integer"),
        # How long Airflow waits before it gives up and the teardown cancels the job.
        "wait_timeout_seconds": Param(7200, type="integer"),
    },
    tags=["offload"],
) as dag:
    submit = HttpOperator(
        task_id="submit",
        http_conn_id=OFFLOAD_CONN,
        method="POST",
        endpoint="/v1/jobs",
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": "{{ dag.dag_id }}.{{ task.task_id }}.{{ run_id }}.{{ ti.map_index }}.{{ ti.try_number }}",
        },
        data=(
            '{{ {"name": dag.dag_id ~ "." ~ task.task_id, "image": params.image,'
            ' "command": params.command, "timeout_seconds": params.timeout_seconds,'
            ' "labels": {"dag_id": dag.dag_id, "task_id": task.task_id, "run_id": run_id,'
            ' "try_number": ti.try_number | string}} | tojson }}'
        ),
        response_filter=lambda response: response.json()["id"],
        log_response=True,
    )

    wait = HttpSensor(
        task_id="wait",
        http_conn_id=OFFLOAD_CONN,
        endpoint="/v1/jobs/{{ ti.xcom_pull(task_ids='submit') }}",
        request_params={"wait": "30"},
        response_check=job_succeeded,
        poke_interval=1,
        timeout=timedelta(days=1),
        mode="poke",
    )

    cancel = HttpOperator(
        task_id="cancel",
        http_conn_id=OFFLOAD_CONN,
        method="POST",
        endpoint="/v1/jobs/{{ ti.xcom_pull(task_ids='submit') }}/cancel",
        # 409 (already ended) is the usual answer after a success: not an error here.
        extra_options={"check_response": False},
    ).as_teardown(setups=submit)

    submit >> wait >> cancel

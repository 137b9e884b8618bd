"""Run a container job on offload from plain Airflow: no offload package needed.

Needs only apache-airflow-providers-http (Airflow 2.11, or 3.0 and later) and a connection
`offload`, for example:

    AIRFLOW_CONN_OFFLOAD='{"conn_type": "http", "host": "http://127.0.0.1:8080",
                           "extra": {"Authorization": "Bearer TOKEN"}}'

- submit: POST /v1/jobs with a JSON string body and an Idempotency-Key that is the SHA-256
  of the JSON array [dag_id, task_id, run_id, map_index, try_number] (the one the operator
  package sends), so a POST sent again for the same try gets the job it made; 429 and 5xx
  answers are sent again, with the same key;
- wait: an HttpSensor in reschedule mode: each poke long-polls GET /v1/jobs/{id}?wait=10
  (answered at once when the job changes state), then gives its worker slot back until the
  next poke, 2 s later at first, then twice as long each time up to a minute. It ends with
  the job: its log is copied into the task log, and the task succeeds with the job's
  `result` as its XCom, or fails with the job's reason;
- cancel: a teardown that cancels the job if the run ends early (Airflow gave up waiting
  after `wait_timeout_seconds`, the run failed or was killed).

Trigger with `--conf '{"command": ["sh", "-c", "echo hi"], "timeout_seconds": 600}'`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import tenacity
from airflow.exceptions import AirflowException
from airflow.providers.http.hooks.http import HttpHook
from airflow.providers.http.operators.http import HttpOperator
from airflow.providers.http.sensors.http import HttpSensor

try:
    from airflow.sdk import DAG, Param, PokeReturnValue
except ImportError:  # Airflow 2
    from airflow.models.dag import DAG  # type: ignore[assignment,no-redef]
    from airflow.models.param import Param  # type: ignore[assignment,no-redef]
    from airflow.sensors.base import PokeReturnValue  # type: ignore[assignment,no-redef]

OFFLOAD_CONN = "offload"
#: How long each poke may wait for the job to change state (the gateway's `?wait=`).
LONG_POLL_SECONDS = 10
#: How many of the log's last lines are copied into the task log once the job has ended.
LOG_LINES = 10_000
#: The gateway's limit on a job's name.
MAX_NAME_LENGTH = 253
#: The answers after which a request is sent again: the gateway asks for it (429, 503) or
#: could not answer (5xx).
RETRY_STATUSES = ("429", "500", "502", "503", "504")

def offload_key(task_instance: list[Any]) -> str:
    """The Idempotency-Key of one try: the SHA-256 of the JSON array
    [dag_id, task_id, run_id, map_index, try_number], written compactly."""
    dag_id, task_id, run_id, map_index, try_number = task_instance
    array = json.dumps([dag_id, task_id, run_id, int(map_index), int(try_number)], separators=(",", ":"))
    return hashlib.sha256(array.encode()).hexdigest()


def offload_name(name: str) -> str:
    """A job name the gateway takes: a longer one is cut and ends with 8 hex digits of its hash."""
    if len(name) <= MAX_NAME_LENGTH:
        return name
    return f"{name[: MAX_NAME_LENGTH - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _sent_again(error: BaseException) -> bool:
    """HttpHook raises `AirflowException("429:Too Many Requests")` for an error status."""
    return str(error).startswith(RETRY_STATUSES) or not isinstance(error, AirflowException)


def copy_log(job: dict[str, Any], log: Any) -> None:
    """The ended job's log into the task log (`log`). A log that cannot be read is a
    warning: the job's state decides the task's."""
    try:
        response = HttpHook(method="GET", http_conn_id=OFFLOAD_CONN).run(
            f"/v1/jobs/{job['id']}/logs", data={"tail": LOG_LINES}, headers={"Accept": "text/plain"}
        )
    except Exception as e:  # noqa: BLE001
        log.warning("offload job %s %s, but its log could not be read: %s", job["id"], job["state"], e)
        return
    log.info("offload job %s %s; its log:", job["id"], job["state"])
    for line in response.text.splitlines():
        log.info("[offload] %s", line)


def job_ended(response: Any, params: dict[str, Any], task: Any) -> bool | PokeReturnValue:
    """Done, with the job's `result` as XCom, once the job succeeded; raises when it ended
    any other way, or when it has run longer than the run's `wait_timeout_seconds` (the
    cancel teardown then stops it). The job's log is copied first."""
    job = response.json()
    if job["terminal"]:
        copy_log(job, task.log)
        if job["state"] == "succeeded":
            return PokeReturnValue(is_done=True, xcom_value=job.get("result"))
        raise AirflowException(f"offload job {job['id']} {job['state']}: {job.get('reason') or 'no reason given'}")
    waited = (datetime.now(timezone.utc) - datetime.fromisoformat(job["created_at"].replace("Z", "+00:00")))
    if waited.total_seconds() > params["wait_timeout_seconds"]:
        raise AirflowException(
            f"offload job {job['id']} still {job['state']} after {params['wait_timeout_seconds']} s: giving up"
        )
    return False


with DAG(
    dag_id="offload_job",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={
        "image": Param("alpine:3", type="string"),
        "command": Param(["sh", "-c", "echo hello from offload"], type="array"),
        # The job's own limit, enforced by the gateway (the job fails with reason timeout).
        "timeout_seconds": Param(3600, type="integer"),
        # How long Airflow waits before it gives up and the teardown cancels the job.
        "wait_timeout_seconds": Param(7200, type="integer"),
    },
    user_defined_filters={"offload_key": offload_key, "offload_name": offload_name},
    tags=["offload"],
) as dag:
    submit = HttpOperator(
        task_id="submit",
        http_conn_id=OFFLOAD_CONN,
        method="POST",
        endpoint="/v1/jobs",
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": "{{ [dag.dag_id, task.task_id, run_id, ti.map_index, ti.try_number] | offload_key }}",
        },
        data=(
            '{{ {"name": (dag.dag_id ~ "." ~ task.task_id) | offload_name, "image": params.image,'
            ' "command": params.command, "timeout_seconds": params.timeout_seconds,'
            ' "labels": {"dag_id": dag.dag_id, "task_id": task.task_id, "run_id": run_id,'
            ' "map_index": ti.map_index | string, "try_number": ti.try_number | string}} | tojson }}'
        ),
        response_filter=lambda response: response.json()["id"],
        log_response=True,
        # 429 and 5xx are sent again (the same body and key: never a second job).
        retry_args={
            "wait": tenacity.wait_exponential(multiplier=1, max=30),
            "stop": tenacity.stop_after_delay(300),
            "retry": tenacity.retry_if_exception(_sent_again),
            "reraise": True,
        },
    )

    wait = HttpSensor(
        task_id="wait",
        http_conn_id=OFFLOAD_CONN,
        endpoint="/v1/jobs/{{ ti.xcom_pull(task_ids='submit') }}",
        request_params={"wait": str(LONG_POLL_SECONDS)},
        response_check=job_ended,
        # A 429 or 5xx is a poke that found nothing: the next one asks again.
        response_error_codes_allowlist=list(RETRY_STATUSES),
        mode="reschedule",
        poke_interval=4,
        exponential_backoff=True,
        max_wait=timedelta(minutes=1),
        timeout=timedelta(days=7),
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

"""Run a container job on offload with the airflow-provider-offload package.

Needs the airflow-provider-offload package on the workers and the triggerer (it is not on
PyPI: build its wheel, `python -m build deploy/airflow/provider`, or install it from a
checkout, `pip install ./deploy/airflow/provider`; see docs/airflow.md) and a connection
`offload_default` of type offload, for example:

    AIRFLOW_CONN_OFFLOAD_DEFAULT='{"conn_type": "offload", "host": "http://127.0.0.1:8080",
                                   "password": "TOKEN"}'

The job's `offload-result: {...}` line becomes the task's XCom, which `report` reads.
Trigger with `--conf '{"command": ["sh", "-c", "echo hi"]}'`.
"""

from __future__ import annotations

from datetime import timedelta

try:
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2
    from airflow.decorators import task
    from airflow.models.dag import DAG
    from airflow.models.param import Param

from offload_airflow.operator import OffloadJobOperator

with DAG(
    dag_id="offload_operator",
    schedule=None,
    catchup=False,
    params={
        "image": Param("alpine:3", type="string"),
        "command": Param(["sh", "-c", 'echo counting; echo \'offload-result: {"rows": 3}\''], type="array"),
    },
    # `command` is a list: render templates as Python objects, not strings.
    render_template_as_native_obj=True,
    tags=["offload"],
) as dag:
    run = OffloadJobOperator(
        task_id="run",
        image="{{ params.image }}",
        command="{{ params.command }}",
        container_resources={"cpu": 0.5, "memory": "256Mi"},
        timeout_seconds=3600,
        deferrable=True,
        execution_timeout=timedelta(hours=2),
    )

    @task
    def report(result: dict) -> None:
        print(f"the job reported {result['rows']} rows")

    report(run.output)

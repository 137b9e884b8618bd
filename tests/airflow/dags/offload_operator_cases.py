"""DAGs the operator tests need besides the package's example: the synchronous wait,
with a secret and an execution_timeout small enough to hit."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from offload_airflow.operator import OffloadJobOperator

with DAG(
    dag_id="offload_operator_sync",
    schedule=None,
    params={
        "command": Param(["sh", "-c", "echo hi"], type="array"),
        "secret": Param("s3cr3t-value", type="string"),
    },
    render_template_as_native_obj=True,
) as dag:
    OffloadJobOperator(
        task_id="run",
        image="alpine:3",
        command="{{ params.command }}",
        secret_env={"TOKEN": "{{ params.secret }}"},
        deferrable=False,
        wait_seconds=1,
        execution_timeout=timedelta(seconds=4),
    )

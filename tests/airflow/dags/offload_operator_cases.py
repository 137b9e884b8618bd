"""DAGs the operator tests need besides the package's example: the synchronous wait,
with a secret and an execution_timeout small enough to hit; a deferred wait without
execution_timeout, which `airflow tasks test` can run again on Airflow 2.11 too (there it
fails on any deferrable task with an execution_timeout: it adds the timeout to a start date
it has not set)."""

from __future__ import annotations

from datetime import timedelta

try:
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2
    from airflow.models.dag import DAG
    from airflow.models.param import Param

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

with DAG(
    dag_id="offload_operator_reattach",
    schedule=None,
    params={"command": Param(["sh", "-c", "echo hi"], type="array")},
    render_template_as_native_obj=True,
) as reattach_dag:
    OffloadJobOperator(
        task_id="run",
        image="alpine:3",
        command="{{ params.command }}",
        deferrable=True,
        wait_seconds=1,
    )

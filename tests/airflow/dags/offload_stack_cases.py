"""DAGs for the tests that run a whole Airflow (scheduler, triggerer, api-server,
dag-processor) against the gateway: short polls and timeouts so that each case takes
seconds. The job's command comes from the run's conf."""

from __future__ import annotations

from datetime import timedelta

try:
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2
    from airflow.models.dag import DAG
    from airflow.models.param import Param

from offload_airflow.operator import OffloadJobOperator

PARAMS = {"command": Param(["sh", "-c", "echo hi"], type="array")}


def dag(dag_id: str, **operator_kwargs) -> DAG:
    with DAG(
        dag_id=dag_id, schedule=None, catchup=False, params=PARAMS, render_template_as_native_obj=True,
        tags=["offload-tests"],
    ) as d:
        OffloadJobOperator(
            task_id="run",
            image="alpine:3",
            command="{{ params.command }}",
            wait_seconds=1,
            log_lines=20,
            **operator_kwargs,
        )
    return d


#: Waits on the triggerer; execution_timeout far away; a secret the job may print.
deferred = dag("offload_stack_deferred", deferrable=True, execution_timeout=timedelta(minutes=3),
               secret_env={"TOKEN": "stack-s3cr3t"})
#: Waits on the triggerer; execution_timeout runs out while deferred.
deferred_timeout = dag("offload_stack_timeout", deferrable=True, execution_timeout=timedelta(seconds=6))
#: Waits in the worker; a lost worker gets one more try.
sync_retry = dag("offload_stack_sync", deferrable=False, retries=1, retry_delay=timedelta(seconds=0))
#: Waits in the worker; a lost worker fails the task for good.
sync_once = dag("offload_stack_sync_once", deferrable=False, retries=0)
#: Waits in the worker; cleared while it waits. Airflow 2 puts a cleared running task up for
#: retry, and with no retry delay its next try can start before the old try's process has
#: ended, which then fails the task instance (an Airflow 2 race): the delay lets it end.
sync_clear = dag("offload_stack_sync_clear", deferrable=False, retries=1, retry_delay=timedelta(seconds=4))

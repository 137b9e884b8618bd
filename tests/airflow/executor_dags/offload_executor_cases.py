"""DAGs that tests/airflow/test_executor_stack.py runs on a whole Airflow 3.3 whose default
executor is OffloadExecutor (`[core] executor = offload_airflow.executor.OffloadExecutor,
LocalExecutor`): plain operators, with nothing about offload in them but an
`executor_config` where a case needs one."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Variable, task

START = datetime(2026, 1, 1)
TAGS = ["offload-executor-tests"]


def _numbers() -> dict[str, int]:
    return {"a": 2, "b": 3}


# Bash, Python and @task tasks (one of them mapped) passing XComs.
with DAG("offload_executor_xcom", schedule=None, start_date=START, catchup=False, tags=TAGS):
    words = BashOperator(task_id="words", bash_command="echo bash-says-hello; echo 'seven'")
    numbers = PythonOperator(task_id="numbers", python_callable=_numbers)

    @task
    def square(n: int) -> int:
        print(f"squaring {n}")
        return n * n

    @task
    def total(word: str, numbers: dict[str, int], squares: list[int]) -> str:
        result = f"{word}:{numbers['a'] + numbers['b']}:{sum(squares)}"
        print(f"total is {result}")
        return result

    total(words.output, numbers.output, square.expand(n=[1, 2, 3]))

    @task
    def secret() -> None:
        print(f"the password is {Variable.get('offload_test_password')}")

    secret()


# A task that fails on each of its two tries.
with DAG("offload_executor_fails", schedule=None, start_date=START, catchup=False, tags=TAGS,
         default_args={"retries": 1, "retry_delay": timedelta(seconds=0)}):

    @task
    def explode() -> None:
        print("about to fail")
        raise ValueError("boom from the offload executor test")

    explode()


# A long task on the gateway's provider `narrow`, which runs one job at a time: a second
# run's job waits at the gateway while the first one's runs.
with DAG("offload_executor_sleep", schedule=None, start_date=START, catchup=False, tags=TAGS):
    BashOperator(task_id="sleep", bash_command="echo sleeping; sleep 300",
                 executor_config={"offload": {"provider": "narrow"}})


# executor_config the gateway refuses: an unknown key, a resource no provider has.
with DAG("offload_executor_bad_config", schedule=None, start_date=START, catchup=False, tags=TAGS,
         default_args={"retries": 0}):
    BashOperator(task_id="unknown_key", bash_command="echo never", executor_config={"offload": {"cpus": 2}})
    BashOperator(task_id="no_provider", bash_command="echo never",
                 executor_config={"offload": {"resources": {"gpu": {"count": 1, "kind": "h100"}}}})


# Some tasks on LocalExecutor, some on OffloadExecutor (named, or the default).
with DAG("offload_executor_mixed", schedule=None, start_date=START, catchup=False, tags=TAGS):
    local = BashOperator(task_id="on_local", bash_command="echo on-local", executor="LocalExecutor")
    named = BashOperator(task_id="on_offload", bash_command="echo on-offload", executor="OffloadExecutor")
    default = BashOperator(task_id="on_default", bash_command="echo on-default")
    local >> named >> default


# Several tasks at once, long enough to outlive a scheduler or a gateway restart, then one
# after them.
with DAG("offload_executor_many", schedule=None, start_date=START, catchup=False, tags=TAGS,
         default_args={"retries": 0}):
    sleepers = [BashOperator(task_id=f"sleep_{i}", bash_command="echo started; sleep 12; echo done")
                for i in range(4)]
    after = BashOperator(task_id="after", bash_command="echo after")
    sleepers >> after

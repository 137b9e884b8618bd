"""The DAG files parse on this Airflow, and the no-install DAG waits in reschedule mode and
makes the operator's Idempotency-Key."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
NO_INSTALL = ROOT / "deploy" / "airflow" / "dags" / "offload_job.py"
DAG_FILES = [
    NO_INSTALL,
    ROOT / "deploy" / "airflow" / "provider" / "example_dags" / "offload_operator.py",
    *sorted((ROOT / "tests" / "airflow" / "dags").glob("*.py")),
]


def dag_bag(path: pathlib.Path) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3.2 and later
    except ImportError:
        from airflow.models.dagbag import DagBag
    return DagBag(dag_folder=str(path))  # examples off: AIRFLOW__CORE__LOAD_EXAMPLES (conftest)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_the_dag_file_parses(path: pathlib.Path) -> None:
    bag = dag_bag(path)
    assert bag.import_errors == {}
    assert bag.dags


def test_the_no_install_dag_waits_in_reschedule_mode() -> None:
    dag = dag_bag(NO_INSTALL).dags["offload_job"]
    wait = dag.get_task("wait")
    assert wait.mode == "reschedule"
    assert wait.request_params == {"wait": "10"}
    assert wait.max_wait is not None and wait.max_wait.total_seconds() == 60
    assert dag.get_task("cancel").is_teardown


@pytest.mark.parametrize("task_instance", [
    ["etl.daily", "load", "manual__2026-01-02T03:04:05+00:00", -1, 1],
    ["etl", "daily.load", "manual__2026-01-02T03:04:05+00:00", -1, 1],
    ["d" * 250, "a.b.c", "scheduled__2026-01-02T03:04:05+00:00", 7, 12],
])
def test_the_no_install_dag_makes_the_operators_key(task_instance: list[Any]) -> None:
    from offload_airflow.operator import fit_name, idempotency_key

    dag = dag_bag(NO_INSTALL).dags["offload_job"]
    make_key = dag.user_defined_filters["offload_key"]
    assert make_key(task_instance) == idempotency_key(*task_instance)
    name = f"{task_instance[0]}.{task_instance[1]}"
    assert dag.user_defined_filters["offload_name"](name) == fit_name(name)


def test_the_no_install_dag_renders_its_key_header() -> None:
    from offload_airflow.operator import idempotency_key

    dag = dag_bag(NO_INSTALL).dags["offload_job"]
    submit = dag.get_task("submit")
    env = dag.get_template_env()
    context = {"dag": dag, "task": submit, "run_id": "manual__2026-01-02T03:04:05+00:00",
               "ti": type("TI", (), {"map_index": -1, "try_number": 2})()}
    rendered = env.from_string(submit.headers["Idempotency-Key"]).render(**context)
    assert rendered == idempotency_key("offload_job", "submit", "manual__2026-01-02T03:04:05+00:00", -1, 2)


class _Response:
    def __init__(self, job: dict[str, Any]):
        self.job = job

    def json(self) -> dict[str, Any]:
        return self.job


class _Task:
    def __init__(self) -> None:
        from .fakes import RecordingLog

        self.log = RecordingLog()


def _job_ended(monkeypatch: pytest.MonkeyPatch, log_read: Any) -> Any:
    """The wait task's response_check, its log reads answered by `log_read`."""
    check = dag_bag(NO_INSTALL).dags["offload_job"].get_task("wait").response_check

    class Hook:
        def __init__(self, **_: Any) -> None:
            pass

        def run(self, endpoint: str, **_: Any) -> Any:
            return log_read(endpoint)
    monkeypatch.setitem(check.__globals__, "HttpHook", Hook)
    return check


def _job(state: str, **fields: Any) -> dict[str, Any]:
    return {"id": "j1", "state": state, "terminal": state in ("succeeded", "failed", "cancelled"),
            "created_at": "2026-01-02T03:04:05Z", "reason": None, "result": None, **fields}


def test_the_no_install_wait_ends_with_the_job_whatever_its_log_read_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.exceptions import AirflowException

    def unreadable(endpoint: str) -> Any:
        raise AirflowException("502:Bad Gateway")
    check = _job_ended(monkeypatch, unreadable)
    task = _Task()
    done = check(_Response(_job("succeeded", result={"rows": 1})), params={"wait_timeout_seconds": 10**9}, task=task)
    assert (done.is_done, done.xcom_value) == (True, {"rows": 1})
    assert "offload job j1 succeeded, but its log could not be read: 502:Bad Gateway" in task.log.text("warning")
    with pytest.raises(AirflowException, match="offload job j1 failed: exited with code 3"):
        check(_Response(_job("failed", reason="exited with code 3")), params={"wait_timeout_seconds": 10**9},
              task=_Task())


def test_the_no_install_wait_copies_the_log_once_the_job_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []

    def readable(endpoint: str) -> Any:
        reads.append(endpoint)
        return type("R", (), {"text": "one\ntwo\n"})()
    check = _job_ended(monkeypatch, readable)
    task = _Task()
    assert check(_Response(_job("running")), params={"wait_timeout_seconds": 10**9}, task=task) is False
    assert reads == []
    check(_Response(_job("succeeded")), params={"wait_timeout_seconds": 10**9}, task=task)
    assert reads == ["/v1/jobs/j1/logs"]
    assert [m for _, m in task.log.lines if m.startswith("[offload]")] == ["[offload] one", "[offload] two"]


def test_the_no_install_submit_is_sent_again_on_429_and_5xx(monkeypatch: pytest.MonkeyPatch) -> None:
    """The submit's retry_args: 429 and 5xx answers (and no answer) are sent again, with the
    same headers, so the same Idempotency-Key; a 422 is not."""
    from airflow.exceptions import AirflowException
    from airflow.providers.http.hooks.http import HttpHook

    submit = dag_bag(NO_INSTALL).dags["offload_job"].get_task("submit")
    sent: list[Any] = []
    answers: list[Any] = [AirflowException("429:Too Many Requests"), AirflowException("503:Service Unavailable"),
                          type("R", (), {"json": lambda self: {"id": "job-1"}, "text": "{}"})()]

    def run(self: Any, endpoint: Any, data: Any = None, headers: Any = None, *args: Any, **kwargs: Any) -> Any:
        sent.append(headers)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    monkeypatch.setattr(HttpHook, "run", run)
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda seconds: None)
    monkeypatch.setenv("AIRFLOW_CONN_OFFLOAD", '{"conn_type": "http", "host": "http://gateway.test"}')
    hook = HttpHook(method="POST", http_conn_id="offload")
    answer = hook.run_with_advanced_retry(submit.retry_args, "/v1/jobs", "{}", {"Idempotency-Key": "k"})
    assert answer.json() == {"id": "job-1"}
    assert sent == [{"Idempotency-Key": "k"}] * 3
    answers[:] = [AirflowException("422:Unprocessable Entity")]
    with pytest.raises(AirflowException, match="422"):
        hook.run_with_advanced_retry(submit.retry_args, "/v1/jobs", "{}", {"Idempotency-Key": "k"})
    assert len(sent) == 4


def test_the_no_install_wait_takes_429_and_5xx_as_not_yet() -> None:
    wait = dag_bag(NO_INSTALL).dags["offload_job"].get_task("wait")
    assert set(wait.response_error_codes_allowlist) == {"429", "500", "502", "503", "504"}

"""OffloadJobOperator against the fake gateway: outcomes, keys and names, XCom, logs, retries."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    TaskDeferred,
)
from .fakes import FakeGateway, context_for, operator, problem

# --- an ended job's outcome never depends on reading its log ---


def test_a_succeeded_job_whose_log_cannot_be_read_succeeds_the_task(gateway: FakeGateway) -> None:
    gateway.next_job = {"result": {"rows": 3}}
    # The log route answers 502 (the provider's log cannot be read), however often it is asked.
    gateway.fail("GET", r"/logs$", *[problem(502, "the provider's log cannot be read")] * 50)
    op = operator()
    context = context_for(op)
    assert op.execute(context) == {"rows": 3}
    warnings = op.log.text("warning")
    job_id = gateway.order[-1]
    assert f"offload job {job_id} succeeded, but its log could not be read" in warnings, op.log.lines
    assert len(gateway.submits()) == 1


def test_a_failed_job_whose_log_cannot_be_read_fails_with_its_reason(gateway: FakeGateway) -> None:
    gateway.next_job = {"states": ["running", "failed"], "exit_code": 5}
    gateway.fail("GET", r"/logs$", *[problem(502, "the provider's log cannot be read")] * 50)
    op = operator()
    with pytest.raises(AirflowException, match=r"offload job \S+ failed: exited with code 5$"):
        op.execute(context_for(op))


def test_a_retry_after_a_job_that_succeeded_takes_its_result(gateway: FakeGateway) -> None:
    op = operator()
    labels = {"dag_id": "unit", "task_id": "run", "run_id": "manual__2026-01-02T03:04:05+00:00", "map_index": "-1"}
    earlier = gateway.add_job({**labels, "try_number": "1", "clear_number": "0"}, result={"rows": 9},
                              log="done\n")
    context = context_for(op, try_number=2)
    assert op.execute(context) == {"rows": 9}
    assert gateway.submits() == [], "the retry ran the work again"
    assert f"offload job {earlier['id']}, submitted by try 1, already succeeded" in op.log.text()
    assert context["ti"].xcoms["job_id"] == earlier["id"]


def test_a_cleared_task_instance_runs_its_job_again(gateway: FakeGateway) -> None:
    # The job succeeded before the DAG run was cleared (clear_number 0, now 1): a new job.
    op = operator()
    labels = {"dag_id": "unit", "task_id": "run", "run_id": "manual__2026-01-02T03:04:05+00:00", "map_index": "-1"}
    gateway.add_job({**labels, "try_number": "1", "clear_number": "0"}, result={"rows": 9})
    gateway.next_job = {"result": {"rows": 10}}
    assert op.execute(context_for(op, try_number=2, clear_number=1)) == {"rows": 10}
    assert len(gateway.submits()) == 1
    assert json.loads(gateway.submits()[0].content)["labels"]["clear_number"] == "1"


def test_a_retry_after_a_failed_job_runs_it_again(gateway: FakeGateway) -> None:
    op = operator()
    labels = {"dag_id": "unit", "task_id": "run", "run_id": "manual__2026-01-02T03:04:05+00:00", "map_index": "-1"}
    gateway.add_job({**labels, "try_number": "1", "clear_number": "0"}, state="failed", exit_code=1)
    op.execute(context_for(op, try_number=2))
    assert len(gateway.submits()) == 1


# --- keys and names that fit and never collide ---


def key_of(dag_id: str, task_id: str, run_id: str, map_index: int, try_number: int) -> str:
    array = json.dumps([dag_id, task_id, run_id, map_index, try_number], separators=(",", ":"))
    return hashlib.sha256(array.encode()).hexdigest()


def test_the_idempotency_key_is_a_digest_of_the_task_instance_and_try(gateway: FakeGateway) -> None:
    op = operator(dag_id="etl", task_id="load")
    op.execute(context_for(op, try_number=3, map_index=4))
    (submit,) = gateway.submits()
    assert submit.headers["idempotency-key"] == key_of("etl", "load", "manual__2026-01-02T03:04:05+00:00", 4, 3)


def test_a_250_character_dag_id_with_nested_task_groups_submits(gateway: FakeGateway) -> None:
    from airflow.providers.common.compat.sdk import DAG, TaskGroup

    from offload_airflow.operator import OffloadJobOperator

    dag_id = "d" * 250
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)):
        with TaskGroup("extract_and_transform_the_nightly_batch"), TaskGroup("per_region_partitions"):
            op = OffloadJobOperator(task_id="load_the_warehouse_tables", image="alpine:3", wait_seconds=0)
    assert op.task_id == "extract_and_transform_the_nightly_batch.per_region_partitions.load_the_warehouse_tables"
    run_id = "scheduled__2026-01-02T03:04:05+00:00"
    op.execute(context_for(op, run_id=run_id))
    (submit,) = gateway.submits()
    assert submit.headers["idempotency-key"] == key_of(dag_id, op.task_id, run_id, -1, 1)
    name = json.loads(submit.content)["name"]
    full = f"{dag_id}.{op.task_id}"
    assert len(name) == 253 and name == full[:244] + "-" + hashlib.sha256(full.encode()).hexdigest()[:8]
    job = gateway.jobs[gateway.order[-1]]
    assert job["labels"]["dag_id"] == dag_id and job["labels"]["task_id"] == op.task_id


def test_dots_cannot_make_two_task_instances_share_a_key(gateway: FakeGateway) -> None:
    # dag `etl.daily` task `load`, and dag `etl` task `daily.load` (a task group), same run.
    from airflow.providers.common.compat.sdk import DAG, TaskGroup

    from offload_airflow.operator import OffloadJobOperator

    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with DAG(dag_id="etl.daily", schedule=None, start_date=start):
        first = OffloadJobOperator(task_id="load", image="alpine:3", wait_seconds=0)
    with DAG(dag_id="etl", schedule=None, start_date=start):
        with TaskGroup("daily"):
            second = OffloadJobOperator(task_id="load", image="alpine:3", wait_seconds=0)
    assert second.task_id == "daily.load"
    first.execute(context_for(first))
    second.execute(context_for(second))
    keys = [r.headers["idempotency-key"] for r in gateway.submits()]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert len(gateway.jobs) == 2


def test_long_names_are_cut_with_a_hash_so_they_stay_apart() -> None:
    from offload_airflow.operator import fit_name

    assert fit_name("short") == "short"
    assert fit_name("x" * 253) == "x" * 253
    a, b = fit_name("x" * 300 + "a"), fit_name("x" * 300 + "b")
    assert len(a) == len(b) == 253 and a != b and a[:244] == b[:244] == "x" * 244


def test_a_long_name_of_your_own_is_cut_too(gateway: FakeGateway) -> None:
    op = operator(name="n" * 400)
    op.execute(context_for(op))
    assert len(json.loads(gateway.submits()[0].content)["name"]) == 253


# --- XCom, the link ---


def test_without_do_xcom_push_nothing_is_pushed_but_the_link(gateway: FakeGateway) -> None:
    gateway.next_job = {"result": {"rows": 1}, "cost": {"usd": 0.5, "estimated_usd": 0.4, "billed_seconds": 10}}
    op = operator(do_xcom_push=False)
    context = context_for(op)
    op.execute(context)
    job_id = gateway.order[-1]
    assert context["ti"].xcoms == {"_link_OffloadJobLink": f"http://gateway.test:8080/ui/jobs/{job_id}"}


def test_with_do_xcom_push_the_job_id_provider_and_cost_are_pushed(gateway: FakeGateway) -> None:
    gateway.next_job = {"result": {"rows": 1}, "cost": {"usd": 0.5, "estimated_usd": 0.4, "billed_seconds": 10}}
    op = operator()
    context = context_for(op)
    assert op.execute(context) == {"rows": 1}
    job_id = gateway.order[-1]
    assert context["ti"].xcoms == {
        "_link_OffloadJobLink": f"http://gateway.test:8080/ui/jobs/{job_id}",
        "job_id": job_id, "provider": "local", "cost_usd": 0.5,
    }


def test_the_link_is_saved_before_the_task_defers(gateway: FakeGateway) -> None:
    op = operator(deferrable=True)
    context = context_for(op)
    with pytest.raises(TaskDeferred):
        op.execute(context)
    job_id = gateway.order[-1]
    assert context["ti"].xcoms["_link_OffloadJobLink"] == f"http://gateway.test:8080/ui/jobs/{job_id}"
    # The link as Airflow's UI asks for it.
    from offload_airflow.links import OffloadJobLink

    assert OffloadJobLink.url("http://gateway.test:8080/", job_id) == f"http://gateway.test:8080/ui/jobs/{job_id}"


# --- logs ---


def test_the_end_copies_only_the_lines_not_shown_yet(gateway: FakeGateway) -> None:
    gateway.next_job = {"states": ["running", "running", "succeeded"],
                        "logs": ["a\nb\n", "a\nb\nc\n", "a\nb\nc\nd\n"]}
    op = operator(log_lines=2)
    op.execute(context_for(op))
    shown = [m for _, m in op.log.lines if m.startswith("[offload] ") and "USD" not in m and "no cost" not in m]
    assert shown == ["[offload] a", "[offload] b", "[offload] c", "[offload] d"], op.log.lines


def test_get_logs_false_reads_no_log(gateway: FakeGateway) -> None:
    gateway.next_job = {"states": ["running", "succeeded"], "logs": ["a\n", "a\nb\n"]}
    op = operator(get_logs=False)
    op.execute(context_for(op))
    assert gateway.reads("/logs") == []
    assert not [m for _, m in op.log.lines if m.startswith("[offload] ") and "USD" not in m and "no cost" not in m]


def test_the_end_reads_at_most_max_log_lines(gateway: FakeGateway) -> None:
    gateway.next_job = {"states": ["succeeded"], "logs": ["".join(f"line {i}\n" for i in range(100))]}
    op = operator(max_log_lines=30, log_lines=0)
    op.execute(context_for(op))
    assert [r.url.params["tail"] for r in gateway.reads("/logs")] == ["30"]
    shown = [m for _, m in op.log.lines if m.startswith("[offload] line")]
    assert shown == [f"[offload] line {i}" for i in range(70, 100)]


def test_a_failure_carries_the_log_tail(gateway: FakeGateway) -> None:
    gateway.next_job = {"states": ["failed"], "exit_code": 2, "logs": ["one\ntwo\nthree\n"]}
    op = operator(log_tail_lines=2, get_logs=False)
    with pytest.raises(AirflowException, match=r"exited with code 2\nlast lines of its log:\ntwo\nthree$"):
        op.execute(context_for(op))


# --- skip_on_exit_code ---


@pytest.mark.parametrize("skip", [3, [3, 4], {3}])
def test_skip_on_exit_code_skips(gateway: FakeGateway, skip: Any) -> None:
    gateway.next_job = {"states": ["failed"], "exit_code": 3}
    op = operator(skip_on_exit_code=skip)
    with pytest.raises(AirflowSkipException):
        op.execute(context_for(op))


def test_other_exit_codes_still_fail(gateway: FakeGateway) -> None:
    gateway.next_job = {"states": ["failed"], "exit_code": 1}
    op = operator(skip_on_exit_code=3)
    with pytest.raises(AirflowException) as raised:
        op.execute(context_for(op))
    assert not isinstance(raised.value, AirflowSkipException)


# --- retries where the gateway asks for them ---


def test_a_submit_is_sent_again_on_429_and_503_with_the_same_key(gateway: FakeGateway, hook_log: Any) -> None:
    gateway.fail("POST", r"^/v1/jobs$", problem(429, "slow down", {"Retry-After": "0"}),
                 problem(503, "the store could not commit", {"Retry-After": "0"}))
    op = operator()
    op.execute(context_for(op))
    submits = gateway.submits()
    assert len(submits) == 3 and len({r.headers["idempotency-key"] for r in submits}) == 1
    assert len(gateway.jobs) == 1
    assert hook_log.text("warning").count("sending it again") == 2


def test_find_logs_and_cancel_are_sent_again_on_5xx(gateway: FakeGateway) -> None:
    from offload_airflow.hook import OffloadHook

    job = gateway.add_job({"dag_id": "x"}, state="running", log="hi\n")
    gateway.fail("GET", r"^/v1/jobs$", problem(502, "bad gateway", {"Retry-After": "0"}))
    gateway.fail("GET", r"/logs$", problem(503, "busy", {"Retry-After": "0"}))
    gateway.fail("POST", r"/cancel$", problem(500, "oops", {"Retry-After": "0"}))
    hook = OffloadHook()
    assert [j["id"] for j in hook.find_jobs({"dag_id": "x"})] == [job["id"]]
    assert hook.logs(job["id"]) == "hi\n"
    assert hook.cancel(job["id"]) is True
    assert hook.cancel(job["id"]) is False  # 409: it has ended


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_a_refused_request_fails_without_retries(gateway: FakeGateway, status: int) -> None:
    gateway.fail("POST", r"^/v1/jobs$", problem(status, "refused"))
    op = operator()
    with pytest.raises(AirflowFailException, match=f"{status}"):
        op.execute(context_for(op))
    assert len(gateway.submits()) == 1


def test_a_gateway_down_longer_than_the_outage_limit_fails_the_call(gateway: FakeGateway, monkeypatch: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OFFLOAD_DEFAULT", json.dumps({
        "conn_type": "offload", "host": "http://gateway.test:8080", "password": "unit-test-token",
        "extra": {"max_outage_seconds": 2}}))
    gateway.fail("POST", r"^/v1/jobs$", *[problem(503, "down", {"Retry-After": "1"})] * 10)
    op = operator()
    with pytest.raises(AirflowException, match="unavailable for 2 s"):
        op.execute(context_for(op))
    assert 2 <= len(gateway.submits()) <= 3


# --- the spec: routing, templated fields ---


def test_routing_and_the_templated_fields_reach_the_spec(gateway: FakeGateway, monkeypatch: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OTHER_GATEWAY", json.dumps(
        {"conn_type": "offload", "host": "http://other.test", "password": "unit-test-token"}))
    op = operator(
        routing={"prefer": "{{ params.prefer }}", "spot": "allowed", "allow": ["local", "ecs"], "deny": ["aci"],
                 "max_hourly_usd": 2.5, "expected_duration_seconds": 600},
        offload_conn_id="{{ params.conn }}", timeout_seconds="{{ params.timeout }}", wait_seconds="{{ params.wait }}",
    )
    context = context_for(op)
    context["params"] = {"prefer": "speed", "conn": "other_gateway", "timeout": "900", "wait": "0"}
    op.render_template_fields(context)
    op.execute(context)
    spec = json.loads(gateway.submits()[0].content)
    assert spec["routing"] == {"prefer": "speed", "spot": "allowed", "allow": ["local", "ecs"], "deny": ["aci"],
                               "max_hourly_usd": 2.5, "expected_duration_seconds": 600}
    assert spec["timeout_seconds"] == 900
    assert gateway.submits()[0].url.host == "other.test"
    assert all(r.url.params.get("wait") == "0" for r in gateway.reads("/v1/jobs/") if "/logs" not in r.url.path)


def test_template_fields() -> None:
    from offload_airflow.operator import OffloadJobOperator

    assert set(OffloadJobOperator.template_fields) == {
        "image", "command", "args", "env", "secret_env", "container_resources", "timeout_seconds", "provider",
        "routing", "labels", "provider_options", "name", "offload_conn_id", "wait_seconds",
    }


def test_every_parameter_is_documented_and_says_whether_it_is_templated() -> None:
    import inspect
    import re

    from offload_airflow.operator import OffloadJobOperator

    doc = inspect.getdoc(OffloadJobOperator) or ""
    entries = dict(re.findall(r":param (\w+):(.*?)(?=\n:param |\Z)", doc, re.S))
    parameters = [p for p in inspect.signature(OffloadJobOperator.__init__).parameters if p not in ("self", "kwargs")]
    assert sorted(entries) == sorted(parameters)
    for name in parameters:
        assert ("(templated)" in entries[name]) == (name in OffloadJobOperator.template_fields), name


def test_the_job_timeout_is_capped_by_execution_timeout(gateway: FakeGateway) -> None:
    from datetime import timedelta

    op = operator(timeout_seconds=10_000, execution_timeout=timedelta(minutes=10))
    op.execute(context_for(op))
    assert json.loads(gateway.submits()[0].content)["timeout_seconds"] == 600 + 120

"""OffloadJobTrigger against the fake gateway: the wait, the progress it shows, what it hands
to the task, and who cancels the job when a user stops the deferred task on this Airflow
version (`on_kill` from 3.3, `cleanup` before)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from .fakes import FakeGateway, context_for, operator, problem, record

from offload_airflow.lifecycle import UNKNOWN
from offload_airflow.trigger import OffloadJobTrigger
from offload_airflow.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS

RUN_ID = "manual__2026-01-02T03:04:05+00:00"


def submitted(gateway: FakeGateway, **plan: Any) -> str:
    """A job as the operator submits it, and the id the trigger then waits for."""
    gateway.next_job = plan
    op = operator()
    op.deferrable = True
    with pytest.raises(TaskDeferred):
        op.execute(context_for(op))
    return gateway.order[-1]


def events(trigger: OffloadJobTrigger) -> list[Any]:
    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]
    return asyncio.run(collect())


def test_serialize_round_trip() -> None:
    trigger = OffloadJobTrigger("job-1", "conn", 7, 12, False, ["s3cret-value"], ["abc"])
    path, kwargs = trigger.serialize()
    assert path == "offload_airflow.trigger.OffloadJobTrigger"
    assert OffloadJobTrigger(**kwargs).serialize() == (path, kwargs)


def test_the_trigger_shows_progress_and_hands_what_it_showed_to_the_task(gateway: FakeGateway) -> None:
    job_id = submitted(gateway, states=["running", "running", "succeeded"],
                       logs=["a\n", "a\nb\n", "a\nb\nc\n"], result={"rows": 2})
    trigger = OffloadJobTrigger(job_id, wait_seconds=0, log_lines=10)
    trigger_log = record(trigger)
    (event,) = events(trigger)
    assert event.payload["job"]["state"] == "succeeded" and event.payload["job_id"] == job_id
    assert [m for _, m in trigger_log.lines if m.startswith("[offload]")] == ["[offload] a", "[offload] b"]
    # The task resumes with the event: only the line the trigger did not show.
    op = operator()
    context = context_for(op)
    assert op.execute_complete(context, event.payload) == {"rows": 2}
    assert [m for _, m in op.log.lines if m.startswith("[offload] ") and "USD" not in m
            and "no cost" not in m] == ["[offload] c"]
    # No line of the log itself travels in the event (it may hold secrets), only digests.
    assert all(len(d) == 16 and d not in ("a", "b") for d in event.payload["log_seen"])


def test_a_refused_wait_fails_the_task_without_retries(gateway: FakeGateway) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    job_id = submitted(gateway)
    gateway.fail("GET", rf"^/v1/jobs/{job_id}$", problem(403, "this token may not read the job"))
    (event,) = events(OffloadJobTrigger(job_id, wait_seconds=0, log_lines=0))
    assert event.payload["refused"] is True
    op = operator()
    with pytest.raises(AirflowFailException, match="403"):
        op.execute_complete(context_for(op), event.payload)


def test_the_wait_outlasts_a_gateway_restart(gateway: FakeGateway) -> None:
    job_id = submitted(gateway, result={"ok": True})
    gateway.fail("GET", rf"^/v1/jobs/{job_id}$", problem(503, "restarting", {"Retry-After": "0"}),
                 problem(502, "bad gateway", {"Retry-After": "0"}))
    (event,) = events(OffloadJobTrigger(job_id, wait_seconds=0, log_lines=0))
    assert event.payload["job"]["result"] == {"ok": True}


class Stopped:
    """A trigger stopped while its job runs, the task instance in `state` as Airflow says."""

    def __init__(self, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch, state: Any,
                 reattach_on_restart: bool = True):
        self.gateway = gateway
        self.job_id = gateway.add_job({"dag_id": "unit"}, state="running")["id"]
        self.trigger = OffloadJobTrigger(self.job_id, reattach_on_restart=reattach_on_restart)
        self.trigger.task_instance = SimpleNamespace(dag_id="unit", task_id="run", run_id=RUN_ID, map_index=-1)
        self.log = record(self.trigger)

        async def state_of(*args: Any) -> Any:
            return state
        monkeypatch.setattr("offload_airflow.trigger.atask_instance_state", state_of)

    def on_kill(self) -> bool:
        asyncio.run(self.trigger.on_kill())
        return self.cancelled()

    def cleanup(self) -> bool:
        asyncio.run(self.trigger.cleanup())
        return self.cancelled()

    def cancelled(self) -> bool:
        return any(r.method == "POST" and r.url.path.endswith("/cancel") for r in self.gateway.requests)


@pytest.mark.parametrize("state", ["failed", "success", "skipped", "upstream_failed"])
def test_a_final_state_cancels_the_job(gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    stopped = Stopped(gateway, monkeypatch, state)
    if AIRFLOW_V_3_3_PLUS:
        assert stopped.cleanup() is False, "cleanup cancels nothing on 3.3: on_kill does"
        assert stopped.on_kill() is True
    else:
        assert stopped.cleanup() is True
    assert gateway.jobs[stopped.job_id]["state"] == "cancelled"


@pytest.mark.parametrize("state", ["deferred", "scheduled", "up_for_retry", "restarting", None])
def test_a_try_that_follows_leaves_the_job(gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch, state: Any) -> None:
    stopped = Stopped(gateway, monkeypatch, state)
    stopped.on_kill() if AIRFLOW_V_3_3_PLUS else stopped.cleanup()
    assert not stopped.cancelled()
    assert f"offload job {stopped.job_id} left running" in stopped.log.text()


def test_without_reattach_only_a_deferred_task_instance_keeps_the_job(
        gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = (lambda s: s.on_kill()) if AIRFLOW_V_3_3_PLUS else (lambda s: s.cleanup())
    assert stop(Stopped(gateway, monkeypatch, "deferred", reattach_on_restart=False)) is False
    assert stop(Stopped(gateway, monkeypatch, "scheduled", reattach_on_restart=False)) is True


def test_when_airflow_does_not_answer(gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = Stopped(gateway, monkeypatch, UNKNOWN)
    if AIRFLOW_V_3_3_PLUS:
        # on_kill comes only from a user's action: cancel.
        assert stopped.on_kill() is True
    else:
        # cleanup comes on every exit, a triggerer shutting down included: leave the job.
        assert stopped.cleanup() is False


def test_a_trigger_that_fired_cancels_nothing_when_it_is_cleaned_up(
        gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = submitted(gateway)
    trigger = OffloadJobTrigger(job_id, wait_seconds=0, log_lines=0)
    trigger.task_instance = SimpleNamespace(dag_id="unit", task_id="run", run_id=RUN_ID, map_index=-1)

    async def failed(*args: Any) -> str:
        return "failed"
    monkeypatch.setattr("offload_airflow.trigger.atask_instance_state", failed)
    events(trigger)
    asyncio.run(trigger.cleanup())
    assert not any(r.url.path.endswith("/cancel") for r in gateway.requests)


def test_the_task_instance_state_question_on_this_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 3 asks over the supervisor's channel (the message this version defines);
    Airflow 2 reads the database."""
    from offload_airflow import lifecycle

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import GetTaskStates

        sent: list[Any] = []

        class Comms:
            async def asend(self, message: Any) -> Any:
                sent.append(message)
                return SimpleNamespace(task_states={RUN_ID: {"run_3": "failed"}})
        monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", Comms(), raising=False)
        assert asyncio.run(lifecycle.atask_instance_state("unit", "run", RUN_ID, 3)) == "failed"
        (message,) = sent
        assert isinstance(message, GetTaskStates)
        assert (message.dag_id, message.task_ids, message.run_ids, message.map_index) == ("unit", ["run"], [RUN_ID], 3)
    else:
        asked: list[Any] = []

        def from_database(*args: Any) -> str:
            asked.append(args)
            return "failed"
        monkeypatch.setattr(lifecycle, "_state_from_database", from_database)
        assert asyncio.run(lifecycle.atask_instance_state("unit", "run", RUN_ID, 3)) == "failed"
        assert lifecycle.task_instance_state("unit", "run", RUN_ID, 3) == "failed"
        assert asked == [("unit", "run", RUN_ID, 3)] * 2


def test_an_event_about_another_task_instances_job_is_not_taken(gateway: FakeGateway) -> None:
    """Airflow can give a new trigger the id of one it has just deleted, and the old one's
    event with it: the task follows its own job again instead of ending with another's."""
    other = gateway.add_job({"dag_id": "other", "task_id": "run", "run_id": RUN_ID, "map_index": "-1"},
                            state="cancelled")
    own = submitted(gateway)  # running, this task instance's
    op = operator()
    op.deferrable = True
    with pytest.raises(TaskDeferred) as deferred:
        op.execute_complete(context_for(op), {"job_id": other["id"], "job": other, "log_seen": []})
    assert deferred.value.trigger.job_id == own
    assert f"about offload job {other['id']}, of another task instance" in op.log.text("warning")
    # An error event is checked against the job it names.
    with pytest.raises(TaskDeferred):
        op.execute_complete(context_for(op), {"job_id": other["id"], "error": "gone", "refused": False})
    assert len(gateway.submits()) == 1

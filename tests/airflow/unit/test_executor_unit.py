"""OffloadExecutor's logic against a fake gateway behind httpx.MockTransport (executor_fakes.py),
on a clock that moves only when a test says: one workload one job, the token's path, the
budget of a heartbeat's sync, the safety net, adoption, backoff and outages, stops, logs.

On Airflow 3.1 to 3.3 the executor runs; on 2.11 and 3.0 it must refuse to start, saying
which versions it supports (the last test, the only one defined there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from offload_airflow.version_compat import AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_3_PLUS

from .executor_fakes import AdoptableTI, Clock, ExecutorGateway, workload
from .fakes import problem, record

if AIRFLOW_V_3_1_PLUS:
    from offload_airflow.executor import LAUNCHER, MAX_SYNC_REQUESTS, OffloadExecutor
    from offload_airflow.operator import idempotency_key

    @pytest.fixture
    def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
        import offload_airflow.executor as module

        fake = Clock()
        monkeypatch.setattr(module, "time", fake)
        return fake

    @pytest.fixture
    def xgateway(monkeypatch: pytest.MonkeyPatch) -> ExecutorGateway:
        fake = ExecutorGateway()

        def transport(**_: Any) -> httpx.MockTransport:
            return httpx.MockTransport(fake.handler)

        monkeypatch.setattr(httpx, "HTTPTransport", transport)
        return fake

    class States:
        """The task instance states the executor reads from Airflow's database: each key it
        asks about is running at its own try unless a test says otherwise."""

        def __init__(self) -> None:
            self.set: dict[tuple[str, str, str, int], tuple[int, str]] = {}
            self.asked = 0

        def __call__(self, keys: Any) -> dict[tuple[str, str, str, int], tuple[int, str]]:
            self.asked += 1
            found = {}
            for key in keys:
                primary = (key.dag_id, key.task_id, key.run_id, key.map_index)
                found[primary] = self.set.get(primary, (key.try_number, "running"))
                if found[primary][1] == "gone":
                    del found[primary]
            return found

        def of(self, key: Any, state: str, try_number: int | None = None) -> None:
            self.set[(key.dag_id, key.task_id, key.run_id, key.map_index)] = (try_number or key.try_number, state)

    @pytest.fixture
    def states() -> States:
        return States()

    @pytest.fixture
    def make(monkeypatch: pytest.MonkeyPatch, xgateway: ExecutorGateway, clock: Clock, states: States) -> Any:
        """Makes an executor with these `[offload_executor]` settings (environment variables)."""
        made: list[OffloadExecutor] = []

        def make(parallelism: int = 32, **settings: Any) -> OffloadExecutor:
            defaults = {"python": "/opt/venv/bin/python", "image": "registry.test/airflow:3", "deployment": "unit",
                        "execution_api_server_url": "http://airflow.test:8080/execution/", "copy_logs": "False"}
            for name, value in {**defaults, **settings}.items():
                monkeypatch.setenv(f"AIRFLOW__OFFLOAD_EXECUTOR__{name.upper()}", str(value))
            executor = OffloadExecutor(parallelism=parallelism)
            monkeypatch.setattr(executor, "task_instance_states", states)
            record(executor)
            made.append(executor)
            return executor

        yield make
        for executor in made:
            executor._close()

    def run(executor: OffloadExecutor, *items: Any) -> None:
        """The scheduler hands the workloads over and beats once."""
        for item in items:
            executor.queue_workload(item, session=None)
        executor.heartbeat()

    def events(executor: OffloadExecutor) -> dict[Any, tuple[str, Any]]:
        return {key: (str(getattr(state, "value", state)), info)
                for key, (state, info) in executor.get_event_buffer().items()}

    def body(request: httpx.Request) -> dict[str, Any]:
        return json.loads(request.content)

    def job_of(gateway: ExecutorGateway, task_id: str) -> str:
        """The id of the job of this task (submits go out side by side, in any order)."""
        (job_id,) = [job["id"] for job in gateway.jobs.values() if job["labels"].get("task_id") == task_id]
        return job_id

    # --- one workload, one job ---

    def test_a_workload_becomes_one_job_that_runs_it(make: Any, xgateway: ExecutorGateway) -> None:
        executor = make(env='{"TEAM": "data"}', labels='{"team": "data", "dag_id": "not-this"}')
        overriding = make(env='{"AIRFLOW__CORE__DAGS_FOLDER": "/opt/airflow/dags"}')
        run(overriding, workload(task_id="elsewhere"))
        (elsewhere,) = xgateway.submits()
        assert body(elsewhere)["env"]["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"
        xgateway.requests.clear()
        item = workload(dag_id="etl", task_id="load", run_id="manual__1", try_number=2, map_index=3,
                        executor_config={"offload": {"resources": {"cpu": 2}, "env": {"EXTRA": "1"}}})
        run(executor, item)
        (submit,) = xgateway.submits()
        assert submit.headers["Idempotency-Key"] == idempotency_key("etl", "load", "manual__1", 3, 2, scope="executor")
        assert submit.headers["Idempotency-Key"] != idempotency_key("etl", "load", "manual__1", 3, 2)
        spec = body(submit)
        assert spec["command"] == ["/opt/venv/bin/python", "-c", LAUNCHER]
        (args,) = spec["args"]
        # The workload, without its token, which travels in secret_env only.
        assert json.loads(args) == json.loads(item.model_dump_json(exclude={"token"}))
        assert "token" not in json.loads(args) and item.token not in args
        assert spec["secret_env"] == {"OFFLOAD_AIRFLOW_TOKEN": item.token}
        assert spec["image"] == "registry.test/airflow:3" and spec["provider"] == "auto"
        from airflow.configuration import conf

        # What the worker shares with the scheduler to find and parse the DAG, then the
        # configured and the task's variables, then the way back to the API server.
        assert spec["env"] == {
            "AIRFLOW__CORE__DAGS_FOLDER": conf.get("core", "dags_folder"),
            "AIRFLOW__CORE__EXECUTOR": conf.get("core", "executor"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": conf.get("dag_processor", "dag_bundle_config_list"),
            "TEAM": "data", "EXTRA": "1", "AIRFLOW_IS_EXECUTOR_CONTAINER": "true",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://airflow.test:8080/execution/"}
        assert spec["labels"] == {"team": "data", "dag_id": "etl", "task_id": "load", "run_id": "manual__1",
                                  "map_index": "3", "try_number": "2", "airflow_executor": "unit", "launch": "1"}
        assert spec["resources"] == {"cpu": 2} and spec["name"] == "etl.load[3]"
        (job_id,) = [j["id"] for j in xgateway.jobs.values() if j["labels"]["task_id"] == "load"]
        # The job's id becomes the task instance's external_executor_id.
        assert events(executor) == {item.ti.key: ("running", job_id)}
        assert item.ti.key in executor.running
        # The token is in no line the executor logged.
        assert item.token not in executor.log.text()  # type: ignore[attr-defined]

    def test_the_launcher_puts_the_token_back_and_runs_execute_workload(tmp_path: Path) -> None:
        # A stand-in for the Task SDK's entry point, first on the path: it prints what it got.
        module = tmp_path / "airflow" / "sdk" / "execution_time"
        module.mkdir(parents=True)
        for folder in (tmp_path / "airflow", tmp_path / "airflow" / "sdk", module):
            (folder / "__init__.py").write_text("")
        (module / "execute_workload.py").write_text(
            "import json, os, sys\n"
            "def main():\n"
            "    print(json.dumps({'argv': sys.argv, 'left': os.environ.get('OFFLOAD_AIRFLOW_TOKEN')}))\n")
        env = {**os.environ, "PYTHONPATH": str(tmp_path), "OFFLOAD_AIRFLOW_TOKEN": "eyJsecret"}
        done = subprocess.run([sys.executable, "-c", LAUNCHER, json.dumps({"type": "ExecuteTask", "log_path": "x"})],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        assert seen["argv"][1] == "--json-string"
        assert json.loads(seen["argv"][2]) == {"type": "ExecuteTask", "log_path": "x", "token": "eyJsecret"}
        # Out of the environment the task process inherits.
        assert seen["left"] is None

    def test_a_submit_whose_answer_was_lost_is_sent_again_and_makes_no_second_job(
        make: Any, xgateway: ExecutorGateway, clock: Clock
    ) -> None:
        executor = make()
        item = workload()
        xgateway.lose_answers = 1
        run(executor, item)
        assert len(xgateway.jobs) == 1 and events(executor) == {}
        clock.advance(1)
        executor.heartbeat()
        first, again = xgateway.submits()
        assert first.headers["Idempotency-Key"] == again.headers["Idempotency-Key"] and first.content == again.content
        assert len(xgateway.jobs) == 1
        assert events(executor) == {item.ti.key: ("running", next(iter(xgateway.jobs)))}

    def test_a_try_queued_again_is_a_new_launch_with_its_own_key(
        make: Any, xgateway: ExecutorGateway, clock: Clock
    ) -> None:
        executor = make()
        first = workload(task_id="sensor")
        run(executor, first)
        (job_id,) = xgateway.jobs
        xgateway.set_state(job_id, "succeeded")  # the task deferred (or was rescheduled): its worker ended
        executor.heartbeat()
        assert events(executor)[first.ti.key] == ("success", None)
        # Resumed: the same try, a new workload (a new token).
        again = workload(task_id="sensor")
        run(executor, again)
        assert len(xgateway.jobs) == 2
        second = xgateway.jobs[list(xgateway.jobs)[1]]
        assert second["labels"]["launch"] == "2" and second["labels"]["try_number"] == "1"
        keys = [r.headers["Idempotency-Key"] for r in xgateway.submits()]
        assert keys[-1] == idempotency_key("etl", "sensor", "manual__1", -1, 1, scope="executor", launch=2)
        assert events(executor)[again.ti.key] == ("running", second["id"])
        # A scheduler that does not remember the first launch finds the next key all the same.
        other = make()
        run(other, workload(task_id="sensor"))
        assert xgateway.jobs[list(xgateway.jobs)[2]]["labels"]["launch"] == "3"
        assert [r.headers["Idempotency-Key"] for r in xgateway.submits()][-3:] == [
            idempotency_key("etl", "sensor", "manual__1", -1, 1, scope="executor", launch=n) for n in (1, 2, 3)]

    # --- outcomes ---

    def test_job_ends_become_task_outcomes(make: Any, xgateway: ExecutorGateway, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(tmp_path))
        executor = make(copy_logs="True")
        executor.start()
        items = {name: workload(task_id=name) for name in ("ok", "never_started", "died", "cancelled")}
        run(executor, *items.values())
        ids = {job["labels"]["task_id"]: job["id"] for job in xgateway.jobs.values()}
        xgateway.logs[ids["died"]] = '{"event": "working", "level": "info"}\nKilled\n'
        xgateway.set_state(ids["ok"], "running")
        xgateway.set_state(ids["ok"], "succeeded", exit_code=0)
        xgateway.set_state(ids["never_started"], "failed", reason="image pull failed: no such image")
        xgateway.set_state(ids["died"], "running")
        xgateway.set_state(ids["died"], "failed", exit_code=137, reason="exited with code 137 (OOMKilled)")
        xgateway.set_state(ids["cancelled"], "cancelled", reason="cancelled by a user")
        executor.get_event_buffer()
        executor.heartbeat()
        found = events(executor)
        assert found[items["ok"].ti.key] == ("success", None)
        assert found[items["never_started"].ti.key] == (
            "failed", f"offload job {ids['never_started']} failed before it started: image pull failed: no such image")
        assert found[items["died"].ti.key] == (
            "failed", f"offload job {ids['died']} failed: exited with code 137 (OOMKilled)")
        assert found[items["cancelled"].ti.key] == (
            "failed", f"offload job {ids['cancelled']} was cancelled at the gateway: cancelled by a user")
        assert executor.running == set()
        executor.end()  # the log thread writes what it has
        # The task logs (no worker wrote one here): the job's log, then why it ended.
        died = (tmp_path / items["died"].log_path).read_text().splitlines()
        assert json.loads(died[0])["event"] == "working" and died[1] == "Killed"
        assert json.loads(died[2])["event"] == found[items["died"].ti.key][1]
        never = [json.loads(line)["event"] for line in (tmp_path / items["never_started"].log_path).read_text().splitlines()]
        assert never == [found[items["never_started"].ti.key][1]]

    # --- the sync's cost ---

    def test_a_heartbeat_costs_at_most_three_requests_whatever_the_running_tasks(
        make: Any, xgateway: ExecutorGateway, clock: Clock
    ) -> None:
        executor = make(parallelism=400, full_sync_seconds="5")
        items = [workload(task_id=f"t{i}") for i in range(300)]
        run(executor, *items)
        assert len(xgateway.submits()) == 300
        assert executor.counts["max_sync_requests"] <= MAX_SYNC_REQUESTS
        # Jobs start and end in waves; other deployments' jobs change too.
        ids = list(xgateway.jobs)
        for beat in range(40):
            for job_id in ids[beat * 7:(beat + 1) * 7]:
                xgateway.set_state(job_id, "running")
            for job_id in ids[beat * 5:(beat + 1) * 5]:
                xgateway.set_state(job_id, "succeeded")
            xgateway.add_job({"airflow_executor": "another"})
            before = len(xgateway.reads())
            clock.advance(1)
            executor.heartbeat()
            assert len(xgateway.reads()) - before <= MAX_SYNC_REQUESTS
        done = events(executor)
        assert sum(1 for state, _ in done.values() if state == "success") == 200
        assert executor.counts["max_sync_requests"] <= MAX_SYNC_REQUESTS

    def test_a_late_told_end_is_found_by_the_safety_net(make: Any, xgateway: ExecutorGateway, clock: Clock) -> None:
        executor = make(full_sync_seconds="30")
        item = workload()
        run(executor, item)
        (job_id,) = xgateway.jobs
        executor.get_event_buffer()
        # The end is committed, but the feed never tells it (its position was passed).
        xgateway.set_state(job_id, "succeeded", told=False)
        clock.advance(1)
        executor.heartbeat()
        assert events(executor) == {}
        clock.advance(30)
        executor.heartbeat()
        assert events(executor) == {item.ti.key: ("success", None)}

    def test_a_job_gone_from_the_gateway_fails_its_task(make: Any, xgateway: ExecutorGateway, clock: Clock) -> None:
        executor = make(full_sync_seconds="10")
        item = workload()
        run(executor, item)
        (job_id,) = xgateway.jobs
        executor.get_event_buffer()
        del xgateway.jobs[job_id]
        for _ in range(3):
            clock.advance(10)
            executor.heartbeat()
        assert events(executor) == {item.ti.key: ("failed", f"offload job {job_id} is gone from the offload gateway")}

    # --- adoption ---

    def test_a_restarted_scheduler_adopts_its_tasks_and_submits_nothing(
        make: Any, xgateway: ExecutorGateway
    ) -> None:
        first = make()
        items = [workload(task_id=f"t{i}") for i in range(3)]
        run(first, *items)
        ids = [job_of(xgateway, f"t{i}") for i in range(3)]
        xgateway.set_state(ids[1], "succeeded")
        # The scheduler died before it recorded t2's job id; t3 never got one (no job).
        labels = {"airflow_executor": "unit", "dag_id": "etl", "task_id": "t3", "run_id": "manual__1",
                  "map_index": "-1", "try_number": "1", "launch": "1"}
        xgateway.add_job({**labels, "task_id": "t4"}, state="succeeded")  # another try's, ended
        tis = [AdoptableTI("etl", "t0", external_executor_id=ids[0]), AdoptableTI("etl", "t1", external_executor_id=ids[1]),
               AdoptableTI("etl", "t2"), AdoptableTI("etl", "t3"), AdoptableTI("etl", "t4"),
               AdoptableTI("etl", "t5", external_executor_id="01a24fe6-0000-7000-8000-000000000000")]
        submits = len(xgateway.submits())
        second = make()
        not_adopted = second.try_adopt_task_instances(tis)
        assert len(xgateway.submits()) == submits
        # t3 and t4 have no live job, t5's is gone: the scheduler resets them.
        assert [ti.task_id for ti in not_adopted] == ["t3", "t4", "t5"]
        found = events(second)
        assert tis[0].key not in found  # its job id is recorded already
        assert found[tis[1].key] == ("success", None)  # ended while nobody watched
        assert found[tis[2].key] == ("running", ids[2])  # the job id is recorded now
        assert second.running == {tis[0].key, tis[2].key}
        xgateway.set_state(ids[0], "succeeded")
        xgateway.set_state(ids[2], "failed", reason="exited with code 1")
        second.heartbeat()
        found = events(second)
        assert found[tis[0].key] == ("success", None)
        assert found[tis[2].key][0] == "failed"
        assert len(xgateway.submits()) == submits

    def test_adoption_while_the_gateway_is_down_follows_the_jobs_once_it_answers(
        make: Any, xgateway: ExecutorGateway, clock: Clock
    ) -> None:
        first = make()
        run(first, workload(task_id="a"), workload(task_id="b"))
        ids = [job_of(xgateway, "a"), job_of(xgateway, "b")]
        down = httpx.ConnectError("connection refused")
        xgateway.fail("GET", "/v1/jobs", down, down)
        second = make()
        tis = [AdoptableTI("etl", "a", external_executor_id=ids[0]), AdoptableTI("etl", "b")]
        assert second.try_adopt_task_instances(tis) == []
        xgateway.set_state(ids[0], "succeeded")
        for _ in range(3):
            clock.advance(2)
            second.heartbeat()
        found = events(second)
        assert found[tis[0].key] == ("success", None)
        assert found[tis[1].key] == ("running", ids[1])
        assert len(xgateway.submits()) == 2

    # --- a gateway that cannot answer ---

    def test_429_and_503_are_waited_out_with_backoff(make: Any, xgateway: ExecutorGateway, clock: Clock) -> None:
        executor = make()
        busy = problem(429, "too many requests", {"Retry-After": "7"})
        xgateway.fail("POST", "/v1/jobs$", busy, problem(503, "store unavailable"))
        item = workload()
        run(executor, item)
        assert len(xgateway.requests) == 1
        # Nothing is sent before Retry-After has passed.
        for _ in range(6):
            clock.advance(1)
            executor.heartbeat()
        assert len(xgateway.requests) == 1
        clock.advance(1)
        executor.heartbeat()
        assert len(xgateway.submits()) == 2  # 503, no Retry-After: 1 s
        clock.advance(1)
        executor.heartbeat()
        assert len(xgateway.submits()) == 3 and len(xgateway.jobs) == 1
        assert events(executor) == {item.ti.key: ("running", next(iter(xgateway.jobs)))}
        assert "429" in executor.log.text("warning")  # type: ignore[attr-defined]

    def test_a_gateway_down_for_long_fails_the_tasks_it_cannot_place(
        make: Any, xgateway: ExecutorGateway, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(tmp_path))
        executor = make(max_outage_seconds="120")
        xgateway.fail("POST", "/v1/jobs$", *[httpx.ConnectError("connection refused")] * 100)
        item = workload()
        run(executor, item)
        sent = []
        for _ in range(130):
            clock.advance(1)
            executor.heartbeat()
            sent.append(len(xgateway.requests))
        # Backoff: 1, 2, 4 ... 30 s between tries, not one a heartbeat.
        assert len(xgateway.requests) < 12
        state, info = events(executor)[item.ti.key]
        assert state == "failed"
        assert info.startswith("the offload gateway could not take the job for 120 s")
        assert "connection refused" in info
        note = json.loads((tmp_path / item.log_path).read_text().splitlines()[-1])
        assert note["event"] == info and note["level"] == "error"
        assert executor.running == set() and xgateway.jobs == {}

    def test_bad_executor_config_fails_the_task_at_once(
        make: Any, xgateway: ExecutorGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(tmp_path))
        executor = make()

        def refuse(spec: dict[str, Any]) -> httpx.Response | None:
            if "cpus" in spec:
                return httpx.Response(422, json={
                    "type": "about:blank", "title": "Unprocessable Entity", "status": 422,
                    "detail": "cpus: unknown field `cpus`", "errors": [{"field": "cpus", "message": "unknown field `cpus`"}]},
                    headers={"content-type": "application/problem+json"})
            return None
        xgateway.refuse = refuse
        reserved = workload(task_id="reserved", executor_config={"offload": {"command": ["sh"]}})
        unknown = workload(task_id="unknown", executor_config={"offload": {"cpus": 2}})
        run(executor, reserved, unknown)
        found = events(executor)
        assert found[reserved.ti.key] == ("failed", "executor_config: ['offload']['command'] is set by the executor, "
                                                    "not by a task")
        assert found[unknown.ti.key] == ("failed", "the offload gateway refused the job: 422 Unprocessable Entity: "
                                                   "cpus: unknown field `cpus` (field: cpus)")
        assert len(xgateway.submits()) == 1 and xgateway.jobs == {}
        for item in (reserved, unknown):
            assert json.loads((tmp_path / item.log_path).read_text())["event"] == found[item.ti.key][1]

    # --- stops ---

    def test_a_task_instance_that_stopped_has_its_job_cancelled(
        make: Any, xgateway: ExecutorGateway, clock: Clock, states: States
    ) -> None:
        executor = make(stop_grace_seconds="30")
        items = {name: workload(task_id=name) for name in ("queued", "running", "newer_try", "unsure", "working")}
        run(executor, *items.values())
        ids = {job["labels"]["task_id"]: job["id"] for job in xgateway.jobs.values()}
        for name in ("running", "newer_try", "unsure", "working"):
            xgateway.set_state(ids[name], "running")
        executor.get_event_buffer()
        states.of(items["queued"].ti.key, "failed")  # marked failed before its job started
        states.of(items["running"].ti.key, "success")  # marked success while its job runs
        states.of(items["newer_try"].ti.key, "queued", try_number=2)
        states.of(items["unsure"].ti.key, "scheduled")
        clock.advance(2)
        executor.heartbeat()
        # A job that has not started is cancelled at once; a running one first gets its grace
        # (its worker ends by itself once it finds its task instance stopped).
        assert xgateway.cancels() == [ids["queued"]]
        clock.advance(31)
        executor.heartbeat()
        assert sorted(xgateway.cancels()) == sorted([ids["queued"], ids["newer_try"], ids["running"], ids["unsure"]])
        clock.advance(2)
        executor.heartbeat()
        found = events(executor)
        # The executor stopped them as Airflow asked: a success (a cleared task instance is
        # then scheduled again), never a failure of its own.
        for name in ("queued", "running", "newer_try", "unsure"):
            state, info = found[items[name].ti.key]
            assert state == "success" and info.startswith(f"offload job {ids[name]} stopped: "), (name, info)
        assert items["working"].ti.key not in found
        assert xgateway.jobs[ids["working"]]["state"] == "running"

    def test_revoke_task_cancels_and_forgets_the_job(make: Any, xgateway: ExecutorGateway) -> None:
        executor = make()
        item = workload()
        run(executor, item)
        executor.get_event_buffer()
        executor.revoke_task(ti=AdoptableTI("etl", "load"))
        (job_id,) = xgateway.jobs
        assert xgateway.cancels() == [job_id] and executor.running == set()
        executor.heartbeat()
        assert events(executor) == {}

    def test_terminate_cancels_every_job_end_leaves_them_to_the_next_scheduler(
        make: Any, xgateway: ExecutorGateway
    ) -> None:
        ending = make()
        run(ending, workload(task_id="a"))
        ending.end()
        assert xgateway.cancels() == []
        cancelling = make(cancel_on_end="True")
        run(cancelling, workload(task_id="b"))
        cancelling.end()
        terminated = make()
        run(terminated, workload(task_id="c"))
        terminated.terminate()
        ids = {job["labels"]["task_id"]: job["id"] for job in xgateway.jobs.values()}
        assert xgateway.cancels() == [ids["b"], ids["c"]]

    # --- logs ---

    def test_the_task_log_comes_from_the_gateway_masked(make: Any, xgateway: ExecutorGateway) -> None:
        from airflow.providers.common.compat.sdk import mask_secret

        executor = make()
        item = workload()
        run(executor, item)
        (job_id,) = xgateway.jobs
        mask_secret("hunter2-registered")
        xgateway.logs[job_id] = (
            '{"event": "connecting", "password": "plain-in-a-field", "level": "info"}\n'
            '{"event": "using hunter2-registered now", "level": "info"}\n'
            "a plain line with hunter2-registered\n")
        ti = AdoptableTI("etl", "load", external_executor_id=job_id)
        messages, logs = executor.get_task_log(ti, 1)
        assert messages == [f"offload job {job_id} (queued) at http://gateway.test:8080/ui/jobs/{job_id}"]
        (text,) = logs
        assert "plain-in-a-field" not in text and "hunter2-registered" not in text
        lines = text.splitlines()
        assert json.loads(lines[0])["password"] == "***" and json.loads(lines[1])["event"] == "using *** now"
        assert lines[2] == "a plain line with ***"
        # Without the job id (an earlier try's log, say): found by the try's labels.
        ti.external_executor_id = None
        assert executor.get_task_log(ti, 1)[0] == messages
        # A gateway that cannot answer is a message, never an error.
        xgateway.fail("GET", "/logs$", problem(502, "the provider's log cannot be read"))
        ti.external_executor_id = job_id
        messages, logs = executor.get_task_log(ti, 1)
        assert logs == [] and "its log could not be read: 502" in messages[0]

    def test_parallelism_bounds_the_jobs_at_once(make: Any, xgateway: ExecutorGateway, clock: Clock) -> None:
        executor = make(parallelism=2)
        items = [workload(task_id=f"t{i}") for i in range(5)]
        run(executor, *items)
        assert len(xgateway.submits()) == 2
        assert len(executor.running) == 2 and len(executor.queued_tasks) == 3
        for job_id in list(xgateway.jobs):
            xgateway.set_state(job_id, "succeeded")
        clock.advance(1)
        executor.heartbeat()  # sees the two end
        clock.advance(1)
        executor.heartbeat()  # submits the next two
        assert len(xgateway.submits()) == 4

    if AIRFLOW_V_3_3_PLUS:

        def test_a_callback_workload_becomes_a_job_too(make: Any, xgateway: ExecutorGateway) -> None:
            import uuid

            from airflow.executors import workloads

            executor = make()
            callback = workloads.ExecuteCallback(
                callback=workloads.callback.CallbackDTO(id=str(uuid.uuid4()), fetch_method="import_path",
                                                        data={"path": "deadline.alert", "kwargs": {}}),
                dag_rel_path="etl.py", token="eyJcallback", bundle_info=workloads.BundleInfo(name="dags-folder"),
                log_path="callbacks/alert.log")
            run(executor, callback)
            (submit,) = xgateway.submits()
            spec = body(submit)
            assert spec["labels"]["callback_id"] == callback.callback.id
            assert spec["secret_env"] == {"OFFLOAD_AIRFLOW_TOKEN": "eyJcallback"}
            (job_id,) = xgateway.jobs
            xgateway.set_state(job_id, "succeeded")
            executor.heartbeat()
            assert events(executor)[callback.key][0] == "success"

    def test_the_executor_starts_on_this_airflow() -> None:
        from offload_airflow.executor import refuse_unsupported_airflow

        refuse_unsupported_airflow()

else:

    def test_the_executor_refuses_this_airflow_saying_which_it_supports() -> None:
        from airflow.exceptions import AirflowConfigException

        from offload_airflow.executor import OffloadExecutor

        with pytest.raises(AirflowConfigException, match=r"runs on Airflow 3\.1, 3\.2 and 3\.3, and this is "
                                                           r"Airflow [23]\.\d+\.\d+.*OffloadJobOperator"):
            OffloadExecutor()


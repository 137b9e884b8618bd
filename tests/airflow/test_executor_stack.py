"""OffloadExecutor on a whole Airflow 3.3 (scheduler, api-server, dag-processor, triggerer, all
on loopback) against the real gateway on its `local` provider, which runs each job's command
(the workload's `execute_workload`, with this venv's python) as a host process. The default
executor is OffloadExecutor (`[core] executor = offload_airflow.executor.OffloadExecutor,
LocalExecutor`): the DAGs (tests/airflow/executor_dags/) are plain operators, one of them
sending some tasks to LocalExecutor by name.

The jobs' Airflow home and log folder are not the scheduler's (as on a serverless runtime
without a shared volume or remote logging): what the UI shows of a task's log comes from the
gateway, through the executor.

The gateway is this module's own, so that a test can restart it. The DAG runs that do not
disturb anything are triggered together by the `runs` fixture; the tests that kill the
scheduler or restart the gateway come last. tests/run.sh runs this file on Airflow 3.3 only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import AIRFLOW, OFFLOAD, ROOT, TOKEN, free_port, xcoms
from test_operator_stack import Airflow, Process, stop_processes, wait_for

DAG_FILE = ROOT / "tests" / "airflow" / "executor_dags" / "offload_executor_cases.py"
DAG_IDS = {"offload_executor_xcom", "offload_executor_fails", "offload_executor_sleep",
           "offload_executor_bad_config", "offload_executor_mixed", "offload_executor_many"}
#: Seconds the executor gives a worker to end by itself once its task instance stopped (a
#: worker that has just reported its task's end can take several seconds to exit on a busy
#: machine: a job cancelled in that time would end `cancelled`).
STOP_GRACE = 20
#: The local provider's sandbox lets a job read only what `read_paths` names: its defaults,
#: and what the workload needs here: this venv and the Python it was made from, the DAGs, and
#: the provider package's source (installed editable in the venv, whose entry point Airflow
#: loads).
READ_PATHS = ["/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/sys",
              "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/uptime", "/proc/version",
              "/proc/filesystems", "/proc/sys", sys.prefix, sys.base_prefix, str(DAG_FILE.parent),
              str(ROOT / "deploy" / "airflow" / "provider" / "src")]


class Gateway:
    """This module's `offload serve`, restartable on the same port and store."""

    def __init__(self, work: Path, dags: Path):
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        read_paths = json.dumps([*READ_PATHS, str(dags)])
        # `local`, and `narrow`, which runs one job at a time (a second job waits, queued).
        (work / "offload.toml").write_text(
            f'[providers.local]\nkind = "local"\nread_paths = {read_paths}\n\n'
            f'[providers.narrow]\nkind = "local"\nworkdir = "offload-data/narrow"\nmax_concurrency = 1\n'
            f'read_paths = {read_paths}\n')
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self):
        self.starts += 1
        log = open(self.work / f"serve-{self.starts}.log", "w")
        env = {**os.environ, "OFFLOAD_LISTEN": f"127.0.0.1:{self.port}"}
        self.proc = subprocess.Popen([OFFLOAD, "serve", "--config", "offload.toml"], cwd=self.work, env=env,
                                     stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/readyz", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.fail("offload serve did not start:\n" + self.log_text())
                time.sleep(0.1)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def log_text(self):
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.work.glob("serve-*.log")))

    def request(self, path):
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return json.loads(body) if response.headers.get_content_type() == "application/json" else body.decode()

    def jobs(self, **labels):
        """Every job carrying these labels (all pages), newest first."""
        selector = urllib.parse.quote(",".join(f"{k}={v}" for k, v in labels.items()))
        found, cursor = [], ""
        while True:
            page = self.request(f"/v1/jobs?labels={selector}&limit=500{cursor}")
            found += page["jobs"]
            if not page.get("next_cursor"):
                return found
            cursor = f"&cursor={page['next_cursor']}"


_TIS = """
import json, sys
from sqlalchemy import select
from airflow.models.taskinstance import TaskInstance as TI
from airflow.utils.session import create_session
with create_session() as session:
    rows = session.execute(select(TI.task_id, TI.map_index, TI.try_number, TI.state, TI.executor,
                                  TI.external_executor_id).where(TI.dag_id == sys.argv[1], TI.run_id == sys.argv[2]))
    print(json.dumps([dict(task_id=r[0], map_index=r[1], try_number=r[2], state=str(getattr(r[3], 'value', r[3])),
                           executor=r[4], external_executor_id=r[5]) for r in rows]))
"""


class Stack:
    """The Airflow home, its four components and the gateway."""

    def __init__(self, home: Path, gateway: Gateway):
        from cryptography.fernet import Fernet

        self.home = home
        self.gateway = gateway
        self.deployment = f"tests-{uuid.uuid4().hex[:8]}"
        self.api_port = free_port()
        self.api = Airflow(f"http://127.0.0.1:{self.api_port}")
        self.processes: dict[str, Process] = {}
        dags = home.parent / "executor-dags"
        dags.mkdir()
        (dags / DAG_FILE.name).symlink_to(DAG_FILE)
        self.secret = f"s3cr3t-{uuid.uuid4().hex[:8]}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "offload_airflow.executor.OffloadExecutor,LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "16",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api.url,
            "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
            # A killed scheduler's task instances adopted within seconds of the restart.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "6",
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "2",
            "AIRFLOW_CONN_OFFLOAD_DEFAULT": json.dumps({"conn_type": "offload", "host": gateway.url,
                                                        "password": TOKEN}),
            # A variable whose name says it is a secret: masked wherever Airflow shows it.
            "AIRFLOW_VAR_OFFLOAD_TEST_PASSWORD": self.secret,
            # The executor: this venv's python runs the workload (the local provider runs the
            # command on this host; the image is recorded only).
            "AIRFLOW__OFFLOAD_EXECUTOR__PYTHON": sys.executable,
            "AIRFLOW__OFFLOAD_EXECUTOR__IMAGE": "apache/airflow:3.3.2",
            "AIRFLOW__OFFLOAD_EXECUTOR__DEPLOYMENT": self.deployment,
            "AIRFLOW__OFFLOAD_EXECUTOR__STOP_GRACE_SECONDS": str(STOP_GRACE),
            "AIRFLOW__OFFLOAD_EXECUTOR__FULL_SYNC_SECONDS": "5",
            # The jobs' Airflow home is their own (~/airflow in the job's working directory):
            # their logs are not where the api-server reads (a runtime without shared logs).
            # They get the scheduler's DAG folder and executors from the executor itself.
            "AIRFLOW__OFFLOAD_EXECUTOR__ENV": json.dumps({"AIRFLOW__CORE__LOAD_EXAMPLES": "False"}),
        }

    def start(self, name, *args):
        self.processes[name] = Process(name, [AIRFLOW, *args], self.env, self.home)
        return self.processes[name]

    def start_scheduler(self):
        return self.start("scheduler", "scheduler", "--skip-serve-logs")

    def describe(self, *names, lines=60):
        names = names or tuple(self.processes)
        return "\n".join(self.processes[n].output_tail(lines) for n in names if n in self.processes)

    def check_alive(self):
        for process in self.processes.values():
            if not process.alive():
                pytest.fail(f"airflow {process.name} exited with {process.popen.returncode}\n{process.output_tail(80)}")

    def healthy(self, *components):
        try:
            health = self.api.call("GET", "/api/v2/monitor/health")
        except (OSError, AssertionError):
            return False
        return all((health.get(c) or {}).get("status") == "healthy" for c in components)

    def stop(self):
        stop_processes(self.processes)

    # --- what the cases ask ---

    def trigger(self, dag_id):
        run_id = f"{dag_id.removeprefix('offload_executor_')}-{uuid.uuid4().hex[:8]}"
        self.api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
        return run_id

    def run_state(self, dag_id, run_id):
        return self.api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}")["state"]

    def wait_run(self, dag_id, run_id, seconds=180):
        def ended():
            self.check_alive()
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None
        return wait_for(f"{dag_id} {run_id} to end", ended, seconds, lambda: self.report(dag_id, run_id))

    def tis(self, dag_id, run_id):
        """The run's task instances as Airflow's database has them (with external_executor_id)."""
        done = subprocess.run([sys.executable, "-c", _TIS, dag_id, run_id], env=self.env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return {(t["task_id"], t["map_index"]): t for t in json.loads(done.stdout.strip().splitlines()[-1])}

    def ti_path(self, dag_id, run_id, task_id, map_index=-1):
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}"
        return path + (f"/{map_index}" if map_index >= 0 else "")

    def ti(self, dag_id, run_id, task_id):
        return self.api.call("GET", self.ti_path(dag_id, run_id, task_id))

    def log(self, dag_id, run_id, task_id, try_number=1, map_index=-1):
        """The try's log as the UI shows it."""
        path = self.ti_path(dag_id, run_id, task_id)
        path += f"/logs/{try_number}?full_content=true" + (f"&map_index={map_index}" if map_index >= 0 else "")
        lines = []
        for item in self.api.call("GET", path).get("content", []):
            if isinstance(item, dict):
                extra = {k: v for k, v in item.items() if k not in ("event", "timestamp", "level", "logger")}
                lines.append(f"{item.get('level', '')} {item.get('event', '')} {json.dumps(extra) if extra else ''}")
            else:
                lines.append(str(item))
        return "\n".join(lines)

    def jobs(self, dag_id, run_id, **labels):
        return self.gateway.jobs(airflow_executor=self.deployment, dag_id=dag_id, run_id=run_id, **labels)

    def ended_jobs(self, dag_id, run_id, seconds=60):
        """The run's jobs once each has ended (a task's job ends a moment after the task: its
        worker exits once it has reported the task's state)."""
        def ended():
            jobs = self.jobs(dag_id, run_id)
            return jobs if all(j["terminal"] for j in jobs) else None
        return wait_for(f"the jobs of {run_id} to end", ended, seconds, lambda: self.report(dag_id, run_id))

    def report(self, dag_id, run_id):
        try:
            tis = self.tis(dag_id, run_id)
        except AssertionError as e:
            tis = repr(e)
        jobs = [(j["labels"].get("task_id"), j["labels"].get("map_index"), j["labels"].get("try_number"),
                 j["state"], j.get("reason")) for j in self.jobs(dag_id, run_id)]
        return f"task instances: {tis}\njobs: {jobs}\n{self.describe()}"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    assert os.path.exists(OFFLOAD), f"{OFFLOAD} is missing: build it first (cargo build)"
    gateway = Gateway(tmp_path_factory.mktemp("executor-gateway"), tmp_path_factory.getbasetemp() / "executor-dags")
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gateway):
    started = time.monotonic()
    stack = Stack(tmp_path_factory.mktemp("executor-stack"), gateway)
    try:
        migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=stack.env, capture_output=True, text=True,
                                 timeout=300)
        assert migrate.returncode == 0, "airflow db migrate failed:\n" + migrate.stdout + migrate.stderr
        stack.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(stack.api_port), "--workers", "1")
        stack.start("dag-processor", "dag-processor")
        stack.start_scheduler()
        stack.start("triggerer", "triggerer", "--skip-serve-logs")

        def ready():
            stack.check_alive()
            return stack.healthy("metadatabase", "scheduler", "triggerer", "dag_processor")
        wait_for("Airflow's components to report healthy", ready, 180, stack.describe)
        stack.api.login()

        def parsed():
            dags = stack.api.call("GET", "/api/v2/dags?tags=offload-executor-tests&limit=100")["dags"]
            return {d["dag_id"] for d in dags} >= DAG_IDS
        wait_for("the DAGs to be parsed", parsed, 120, stack.describe)
        print(f"Airflow stack with OffloadExecutor up in {time.monotonic() - started:.0f} s")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def runs(stack):
    """The DAG runs that disturb nothing, triggered together (they run side by side)."""
    return {dag_id: stack.trigger(dag_id) for dag_id in
            ("offload_executor_xcom", "offload_executor_fails", "offload_executor_bad_config",
             "offload_executor_mixed")}


def no_token_anywhere(stack, jobs):
    """No execution-API token (a JWT: `eyJ...`) in a job's spec, its log, the gateway's log or
    the scheduler's; the token's variable is in the spec's secret_env, its value redacted."""
    for job in jobs:
        spec = stack.gateway.request(f"/v1/jobs/{job['id']}")["spec"]
        assert "OFFLOAD_AIRFLOW_TOKEN" in spec["secret_env"], spec
        assert "eyJ" not in json.dumps(spec), spec
        assert "eyJ" not in stack.gateway.request(f"/v1/jobs/{job['id']}/logs")
    assert "eyJ" not in stack.gateway.log_text()
    assert "eyJ" not in stack.processes["scheduler"].log_path.read_text(errors="replace")


# --- the cases ---


def test_a_dag_of_plain_operators_runs_every_task_as_a_gateway_job(stack, runs):
    dag_id, run_id = "offload_executor_xcom", runs["offload_executor_xcom"]
    assert stack.wait_run(dag_id, run_id) == "success", stack.report(dag_id, run_id)
    tis = stack.tis(dag_id, run_id)
    assert set(tis) == {("words", -1), ("numbers", -1), ("square", 0), ("square", 1), ("square", 2), ("total", -1),
                        ("secret", -1)}
    jobs = stack.ended_jobs(dag_id, run_id)
    # One job per task instance try, each succeeded, each the task instance's external id.
    by_ti = {(j["labels"]["task_id"], int(j["labels"]["map_index"])): j for j in jobs}
    assert len(jobs) == len(tis) == len(by_ti), stack.report(dag_id, run_id)
    for key, ti in tis.items():
        job = by_ti[key]
        assert (ti["state"], ti["try_number"], job["labels"]["try_number"]) == ("success", 1, "1"), (ti, job)
        assert job["state"] == "succeeded", job
        assert ti["external_executor_id"] == job["id"], (ti, job)
    assert xcoms(stack.env, dag_id, run_id, "total")["return_value"] == "seven:5:14"
    # The task logs, as the UI shows them once the tasks have ended: from the gateway (the
    # jobs' own log folder is not the scheduler's).
    assert "bash-says-hello" in stack.log(dag_id, run_id, "words")
    assert "total is seven:5:14" in stack.log(dag_id, run_id, "total")
    assert "squaring 3" in stack.log(dag_id, run_id, "square", map_index=2)
    # A secret the task read is masked in its log (and was never in the job's output).
    secret = stack.log(dag_id, run_id, "secret")
    assert "the password is ***" in secret and stack.secret not in secret, secret
    assert stack.secret not in stack.gateway.request(f"/v1/jobs/{by_ti[('secret', -1)]['id']}/logs")
    no_token_anywhere(stack, jobs)


def test_a_failing_task_retries_and_fails_with_its_log(stack, runs):
    dag_id, run_id = "offload_executor_fails", runs["offload_executor_fails"]
    assert stack.wait_run(dag_id, run_id) == "failed", stack.report(dag_id, run_id)
    ti = stack.tis(dag_id, run_id)[("explode", -1)]
    assert (ti["state"], ti["try_number"]) == ("failed", 2), ti
    jobs = stack.ended_jobs(dag_id, run_id)
    # A job per try (the worker ran and reported the failure: the job itself succeeded).
    assert sorted(j["labels"]["try_number"] for j in jobs) == ["1", "2"], stack.report(dag_id, run_id)
    for try_number in (1, 2):
        text = stack.log(dag_id, run_id, "explode", try_number)
        assert "about to fail" in text and "boom from the offload executor test" in text, text


def test_bad_executor_config_fails_the_task_at_once_naming_the_field(stack, runs):
    dag_id, run_id = "offload_executor_bad_config", runs["offload_executor_bad_config"]
    assert stack.wait_run(dag_id, run_id, seconds=60) == "failed", stack.report(dag_id, run_id)
    tis = stack.tis(dag_id, run_id)
    assert {key: ti["state"] for key, ti in tis.items()} == {("unknown_key", -1): "failed",
                                                             ("no_provider", -1): "failed"}
    # Refused by the gateway: no job at all.
    assert stack.jobs(dag_id, run_id) == []
    unknown = stack.log(dag_id, run_id, "unknown_key")
    assert "the offload gateway refused the job: 422" in unknown and "unknown field `cpus`" in unknown, unknown
    no_provider = stack.log(dag_id, run_id, "no_provider")
    assert "the offload gateway refused the job: 422" in no_provider, no_provider
    assert "no GPU kinds are enabled" in no_provider and "(field: provider)" in no_provider, no_provider


def test_a_mixed_dag_runs_each_task_where_it_says(stack, runs):
    dag_id, run_id = "offload_executor_mixed", runs["offload_executor_mixed"]
    assert stack.wait_run(dag_id, run_id) == "success", stack.report(dag_id, run_id)
    tis = stack.tis(dag_id, run_id)
    assert tis[("on_local", -1)]["executor"] == "LocalExecutor"
    assert tis[("on_offload", -1)]["executor"] == "OffloadExecutor"
    jobs = {j["labels"]["task_id"]: j for j in stack.ended_jobs(dag_id, run_id)}
    # LocalExecutor's task ran in the scheduler's worker, not as a job; the others as jobs.
    assert set(jobs) == {"on_offload", "on_default"}, stack.report(dag_id, run_id)
    assert all(j["state"] == "succeeded" for j in jobs.values()), jobs
    assert tis[("on_local", -1)]["external_executor_id"] is None
    local_log = stack.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=on_local" / "attempt=1.log"
    assert "on-local" in local_log.read_text(), local_log
    assert "on-offload" in stack.log(dag_id, run_id, "on_offload")


def test_the_log_while_a_task_runs_and_marking_tasks_failed_stops_their_jobs(stack):
    dag_id = "offload_executor_sleep"  # on `narrow`: one job at a time
    running_run = stack.trigger(dag_id)

    def running():
        jobs = stack.jobs(dag_id, running_run)
        return jobs[0] if jobs and jobs[0]["state"] == "running" and \
            stack.ti(dag_id, running_run, "sleep")["state"] == "running" else None
    job = wait_for("the task's job to run", running, 90, lambda: stack.report(dag_id, running_run))
    # The UI shows the running task's log from the gateway (get_task_log).
    text = wait_for("the running task's log", lambda: (t := stack.log(dag_id, running_run, "sleep")) and
                    "sleeping" in t and t, 60, lambda: stack.report(dag_id, running_run))
    assert f"offload job {job['id']} (running)" in text, text

    # A second run's job waits at the gateway (its task instance queued in Airflow): marked
    # failed, its job is cancelled at once, before it ever starts.
    queued_run = stack.trigger(dag_id)
    queued = wait_for("the second job to wait at the gateway",
                      lambda: (jobs := stack.jobs(dag_id, queued_run)) and jobs[0]["state"] == "queued" and jobs[0],
                      60, lambda: stack.report(dag_id, queued_run))
    stack.api.call("PATCH", stack.ti_path(dag_id, queued_run, "sleep"), {"new_state": "failed"})
    cancelled = wait_for("the waiting job to be cancelled",
                         lambda: (found := stack.gateway.request(f"/v1/jobs/{queued['id']}"))["terminal"] and found,
                         20, lambda: stack.report(dag_id, queued_run))
    assert (cancelled["state"], cancelled["started_at"]) == ("cancelled", None), cancelled

    # The running one, marked failed: its worker is told at its next heartbeat and ends the
    # task; the job ends with it (or the executor cancels it after STOP_GRACE).
    stack.api.call("PATCH", stack.ti_path(dag_id, running_run, "sleep"), {"new_state": "failed"})
    ended = wait_for("the running job to end",
                     lambda: (found := stack.gateway.request(f"/v1/jobs/{job['id']}"))["terminal"] and found,
                     STOP_GRACE + 30, lambda: stack.report(dag_id, running_run))
    assert ended["state"] in ("succeeded", "cancelled"), ended
    for run_id in (running_run, queued_run):
        assert stack.tis(dag_id, run_id)[("sleep", -1)]["state"] == "failed"
        assert len(stack.jobs(dag_id, run_id)) == 1


def test_the_scheduler_killed_mid_run_and_restarted_every_task_ends_no_job_twice(stack):
    dag_id = "offload_executor_many"
    run_id = stack.trigger(dag_id)

    def sleepers_running():
        jobs = [j for j in stack.jobs(dag_id, run_id) if j["state"] == "running"]
        return len(jobs) >= 4 and jobs
    wait_for("the four sleepers' jobs to run", sleepers_running, 90, lambda: stack.report(dag_id, run_id))
    stack.processes.pop("scheduler").kill()
    # The jobs keep running without a scheduler.
    assert {j["state"] for j in stack.jobs(dag_id, run_id)} == {"running"}
    restarted = stack.start_scheduler()
    assert stack.wait_run(dag_id, run_id) == "success", stack.report(dag_id, run_id)
    tis = stack.tis(dag_id, run_id)
    jobs = stack.ended_jobs(dag_id, run_id)
    assert sorted((j["labels"]["task_id"], j["labels"]["try_number"]) for j in jobs) == sorted(
        (task_id, str(ti["try_number"])) for (task_id, _), ti in tis.items()), stack.report(dag_id, run_id)
    assert all(ti["try_number"] == 1 and ti["state"] == "success" for ti in tis.values()), tis
    assert "OffloadExecutor adopted 4 task instances" in restarted.log_path.read_text(errors="replace")


def test_a_gateway_restarted_mid_run_loses_nothing(stack):
    dag_id = "offload_executor_many"
    run_id = stack.trigger(dag_id)

    def sleepers_running():
        jobs = [j for j in stack.jobs(dag_id, run_id) if j["state"] == "running"]
        return len(jobs) >= 4 and jobs
    wait_for("the four sleepers' jobs to run", sleepers_running, 90, lambda: stack.report(dag_id, run_id))
    stack.gateway.stop()
    # The scheduler finds the gateway gone (and says so) before it comes back.
    wait_for("the executor to find the gateway gone",
             lambda: "offload gateway: GET /v1/changes" in stack.processes["scheduler"].log_path.read_text(
                 errors="replace"), 30, stack.describe)
    stack.gateway.start()
    assert stack.wait_run(dag_id, run_id) == "success", stack.report(dag_id, run_id)
    tis = stack.tis(dag_id, run_id)
    jobs = stack.ended_jobs(dag_id, run_id)
    assert len(jobs) == len(tis) == 5, stack.report(dag_id, run_id)
    assert all(j["state"] == "succeeded" for j in jobs), stack.report(dag_id, run_id)
    assert all(ti["try_number"] == 1 for ti in tis.values()), tis

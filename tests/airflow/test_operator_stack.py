"""The operator on a whole Airflow (scheduler with LocalExecutor and triggerer, all on
loopback; on Airflow 3 an api-server and a dag-processor, on Airflow 2.11 a webserver)
against the real gateway: what happens to the job on each path that stops a wait. One
Airflow serves every case (module-scoped fixture); each case drives it through Airflow's
REST API (v2 on Airflow 3, v1 on Airflow 2), as a user in the UI would, and checks both
sides: the task instance's state in Airflow and the job's state and count at the gateway.
tests/run.sh runs it on Airflow 3.3 and 2.11.

DAGs: tests/airflow/dags/offload_stack_cases.py (polls every second, short timeouts)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import AIRFLOW, AIRFLOW_2, ROOT, TOKEN, free_port, xcoms

#: Which REST API: v1 on Airflow 2, v2 on Airflow 3.
API = "/api/v1" if AIRFLOW_2 else "/api/v2"
#: Airflow 2: the admin user's name and password.
ADMIN = "admin"

DAG_FILE = ROOT / "tests" / "airflow" / "dags" / "offload_stack_cases.py"
DAG_IDS = ("offload_stack_deferred", "offload_stack_timeout", "offload_stack_sync", "offload_stack_sync_once",
           "offload_stack_sync_clear")
#: The scheduler fails a task whose worker has not sent a heartbeat for this long.
HEARTBEAT_TIMEOUT = 8


def wait_for(what, predicate, seconds, describe=lambda: ""):
    """Polls `predicate` until it returns something true; fails with `describe()` at the deadline."""
    deadline = time.monotonic() + seconds
    while not (found := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}\n{describe()}")
        time.sleep(0.25)
    return found


class Process:
    """One Airflow component we started, in its own process group, its output in a file."""

    def __init__(self, name, argv, env, home: Path):
        self.name = name
        self.log_path = home / f"{name}.log"
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def output_tail(self, lines=40):
        text = self.log_path.read_text(errors="replace").splitlines()
        return f"--- {self.name} (pid {self.pid}) output, last {lines} lines:\n" + "\n".join(text[-lines:])

    def signal_group(self, sig):
        """`sig` to the process and its children (the group it leads)."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self):
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=30)


def stop_processes(processes):
    """SIGTERM to every component's group, then SIGKILL to what is left, including task
    processes (each leads a group of its own) that outlived their supervisor."""
    started = {process.pid for process in processes.values()}
    descendants = [pid for pid in all_pids() if pid not in started and any(descends_from(pid, s) for s in started)]
    for process in processes.values():
        process.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + 5
    for process in processes.values():
        try:
            process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        process.kill()
    for pid in descendants:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Airflow:
    """Airflow's REST API: v2 with a JWT from /auth/token on Airflow 3; v1 on Airflow 2, as
    the admin user the fixture creates (basic auth)."""

    def __init__(self, url):
        self.url = url
        self.token = None

    def call(self, method, path, body=None, accept="application/json"):
        headers = {"Accept": accept}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif AIRFLOW_2:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{ADMIN}:{ADMIN}".encode()).decode()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read().decode()[:2000]}") from None
        return json.loads(text) if text and accept == "application/json" else text

    def login(self):
        """Airflow 3: with `simple_auth_manager_all_admins`, /auth/token hands out an admin token."""
        if not AIRFLOW_2:
            self.token = self.call("GET", "/auth/token")["access_token"]

    def trigger(self, dag_id, conf):
        run_id = f"{dag_id.removeprefix('offload_stack_')}-{uuid.uuid4().hex[:8]}"
        body = {"dag_run_id": run_id, "conf": conf}
        if not AIRFLOW_2:
            body["logical_date"] = None
        self.call("POST", f"{API}/dags/{dag_id}/dagRuns", body)
        return run_id

    def ti_path(self, dag_id, run_id):
        return f"{API}/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/run"

    def ti(self, dag_id, run_id):
        return self.call("GET", self.ti_path(dag_id, run_id))

    def set_state(self, dag_id, run_id, state):
        body = {"new_state": state, **({"dry_run": False} if AIRFLOW_2 else {})}
        return self.call("PATCH", self.ti_path(dag_id, run_id), body)

    def set_run_state(self, dag_id, run_id, state):
        return self.call("PATCH", f"{API}/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}", {"state": state})

    def clear(self, dag_id, run_id):
        return self.call("POST", f"{API}/dags/{dag_id}/clearTaskInstances", {
            "dry_run": False, "dag_run_id": run_id, "task_ids": ["run"], "only_failed": False,
            "reset_dag_runs": True,
        })

    def log(self, dag_id, run_id, try_number):
        """The try's task log as the UI shows it (worker and trigger parts), as one text."""
        path = f"{self.ti_path(dag_id, run_id)}/logs/{try_number}?full_content=true"
        if AIRFLOW_2:
            return self.call("GET", path, accept="text/plain")
        answer = self.call("GET", path)
        lines = []
        for item in answer.get("content", []):
            if isinstance(item, dict):
                extra = {k: v for k, v in item.items() if k not in ("event", "timestamp", "level", "logger")}
                lines.append(f"{item.get('level', '')} {item.get('event', '')} {json.dumps(extra) if extra else ''}")
            else:
                lines.append(str(item))
        return "\n".join(lines)

    def links(self, dag_id, run_id):
        """The task instance's extra links, by name, as the UI shows them."""
        answer = self.call("GET", f"{self.ti_path(dag_id, run_id)}/links")
        return answer["extra_links"] if "extra_links" in answer else answer

    def health(self):
        return self.call("GET", f"{API}/health" if AIRFLOW_2 else "/api/v2/monitor/health")

    def dag_ids(self, tag):
        return {d["dag_id"] for d in self.call("GET", f"{API}/dags?tags={tag}&limit=100")["dags"]}


def postgres_database():
    """Airflow 2's LocalExecutor refuses SQLite: a database of its own on the PostgreSQL that
    tests/pg.sh runs (DATABASE_URL), as an SQLAlchemy URL."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.fail("Airflow 2's LocalExecutor needs PostgreSQL, and DATABASE_URL is not set: "
                    "run these tests under tests/pg.sh run (as tests/run.sh does)")
    import psycopg2

    name = f"airflow_{uuid.uuid4().hex[:12]}"
    connection = psycopg2.connect(url)
    try:
        connection.autocommit = True
        connection.cursor().execute(f"CREATE DATABASE {name}")
    finally:
        connection.close()
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(("postgresql+psycopg2", parts.netloc, f"/{name}", "", ""))


class Stack:
    """One Airflow home with its four components, the gateway they talk to, and their env."""

    def __init__(self, home: Path, gateway):
        self.home = home
        self.gateway = gateway
        self.api_port = free_port()
        self.api = Airflow(f"http://127.0.0.1:{self.api_port}")
        self.processes: dict[str, Process] = {}
        from cryptography.fernet import Fernet

        dags = home / "dags"
        dags.mkdir()
        (dags / DAG_FILE.name).symlink_to(DAG_FILE)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            # Deferral timeouts noticed within a second.
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "1",
            # A killed triggerer's triggers go to another one after a few seconds.
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
            "AIRFLOW_CONN_OFFLOAD_DEFAULT": json.dumps(
                {"conn_type": "offload", "host": gateway.url, "password": TOKEN}
            ),
        }
        if AIRFLOW_2:
            self.env.update({
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_database(),
                "AIRFLOW__WEBSERVER__SECRET_KEY": uuid.uuid4().hex,
                "AIRFLOW__WEBSERVER__BASE_URL": self.api.url,
                # The test calls the REST API as an admin user, with basic auth.
                "AIRFLOW__API__AUTH_BACKENDS": "airflow.providers.fab.auth_manager.api.auth.backend.basic_auth",
                # A task notices within a second that a user changed its state, and a task
                # whose worker is gone fails after HEARTBEAT_TIMEOUT.
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_ZOMBIE_TASK_THRESHOLD": str(HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__ZOMBIE_DETECTION_INTERVAL": "1",
            })
        else:
            self.env.update({
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api.url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api.url,
                "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
                "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
                # Lost workers noticed within a second or two.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "1",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            })

    def start(self, name, *args):
        self.processes[name] = Process(name, [AIRFLOW, *args], self.env, self.home)
        return self.processes[name]

    def start_triggerer(self):
        # The log servers listen on every interface: skipped, the api-server reads the
        # log files (one AIRFLOW_HOME).
        return self.start("triggerer", "triggerer", "--skip-serve-logs")

    def describe(self, *names):
        names = names or tuple(self.processes)
        return "\n".join(self.processes[n].output_tail() for n in names if n in self.processes)

    def health(self):
        try:
            return self.api.health()
        except (OSError, AssertionError):
            return None

    def healthy(self, *components):
        health = self.health() or {}
        return all((health.get(c) or {}).get("status") == "healthy" for c in components)

    def check_alive(self):
        for process in self.processes.values():
            if not process.alive():
                pytest.fail(f"airflow {process.name} exited with {process.popen.returncode}\n{process.output_tail(80)}")

    def stop(self):
        stop_processes(self.processes)

    # --- what the cases ask ---

    def ti_state(self, dag_id, run_id):
        return self.api.ti(dag_id, run_id)["state"]

    def jobs(self, dag_id, run_id):
        return self.gateway.jobs(dag_id=dag_id, run_id=run_id)

    def wait_ti(self, dag_id, run_id, states, seconds=60, try_number=None):
        def reached():
            self.check_alive()
            ti = self.api.ti(dag_id, run_id)
            ok = ti["state"] in states and (try_number is None or ti["try_number"] == try_number)
            return ti if ok else None
        return wait_for(f"{dag_id} {run_id} to be {states}", reached, seconds, lambda: self.report(dag_id, run_id))

    def wait_job(self, dag_id, run_id, states, seconds=60):
        def reached():
            jobs = self.jobs(dag_id, run_id)
            return jobs[0] if jobs and jobs[0]["state"] in states else None
        return wait_for(f"the job of {run_id} to be {states}", reached, seconds, lambda: self.report(dag_id, run_id))

    def report(self, dag_id, run_id):
        try:
            ti = self.api.ti(dag_id, run_id)
        except Exception as e:  # noqa: BLE001 - a report for a failure message
            ti = repr(e)
        jobs = [(j["id"], j["state"], j["labels"].get("try_number")) for j in self.jobs(dag_id, run_id)]
        try:
            try_number = ti["try_number"] if isinstance(ti, dict) else 1
            log = self.api.log(dag_id, run_id, max(try_number, 1))
        except Exception as e:  # noqa: BLE001 - a report for a failure message
            log = repr(e)
        return f"task instance: {ti}\njobs: {jobs}\ntask log:\n{log}\n{self.describe()}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gateway):
    started = time.monotonic()
    stack = Stack(tmp_path_factory.mktemp("airflow-stack"), gateway)
    try:
        migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=stack.env, capture_output=True, text=True,
                                 timeout=300)
        assert migrate.returncode == 0, "airflow db migrate failed:\n" + migrate.stdout + migrate.stderr
        if AIRFLOW_2:
            user = subprocess.run([AIRFLOW, "users", "create", "--username", ADMIN, "--password", ADMIN,
                                   "--role", "Admin", "--email", "admin@example.com", "--firstname", "A",
                                   "--lastname", "A"], env=stack.env, capture_output=True, text=True, timeout=300)
            assert user.returncode == 0, "airflow users create failed:\n" + user.stdout + user.stderr
        if AIRFLOW_2:
            # The scheduler parses the DAGs and runs the failure callbacks itself.
            stack.start("webserver", "webserver", "--hostname", "127.0.0.1", "--port", str(stack.api_port),
                        "--workers", "1")
            components = ("metadatabase", "scheduler", "triggerer")
        else:
            stack.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(stack.api_port),
                        "--workers", "1")
            stack.start("dag-processor", "dag-processor")
            components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        stack.start("scheduler", "scheduler", "--skip-serve-logs")
        stack.start_triggerer()

        def ready():
            stack.check_alive()
            return stack.healthy(*components)
        wait_for("Airflow's components to report healthy", ready, 180, stack.describe)
        stack.api.login()
        wait_for("the DAGs to be parsed", lambda: stack.api.dag_ids("offload-tests") >= set(DAG_IDS), 120,
                 stack.describe)
        print(f"Airflow stack up in {time.monotonic() - started:.0f} s")
        yield stack
    finally:
        stack.stop()


def all_pids():
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def parent_of(pid):
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def task_processes(ti, run_id):
    """(pid, parent pid) of the task process running this task instance try. Its title is
    `airflow worker -- <ti id>` on Airflow 3 (set by the task runner), under the supervisor
    the LocalExecutor forked; `airflow task runner: <dag> <task> <run id> ...` on Airflow 2,
    under its `airflow task supervisor` (the LocalTaskJob that heartbeats)."""
    title = (f"airflow task runner: {ti['dag_id']} run {run_id} " if AIRFLOW_2
             else f"airflow worker -- {ti['id']}")
    found = []
    for pid in all_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if title in cmdline:
                found.append((pid, parent_of(pid)))
        except OSError:
            continue
    return found


def descends_from(pid, ancestor):
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = parent_of(pid)
        except OSError:
            return False
    return False


#: How long a deferred task's stop may take to reach its job: the triggerer's syncs, then
#: its on_kill_timeout (30 s by default), with room for a loaded machine.
KILL_SECONDS = 60


def running_job(stack, dag_id, run_id):
    """Waits until the run's job runs at the gateway."""
    return stack.wait_job(dag_id, run_id, {"running"}, seconds=60)


def trigger_follows(stack, dag_id, run_id, line):
    """Waits until the task is deferred and its trigger runs on the triggerer: the job's
    log line `line` reached the task log through the trigger's polls."""
    stack.wait_ti(dag_id, run_id, {"deferred"}, seconds=30)
    wait_for(f"the trigger of {run_id} to run", lambda: f"[offload] {line}" in stack.api.log(dag_id, run_id, 1),
             30, lambda: stack.report(dag_id, run_id))


# --- the cases ---


def test_deferred_success_shows_progress_while_the_job_runs(stack):
    dag_id = "offload_stack_deferred"
    command = ("echo token=$TOKEN; for i in 1 2 3 4 5 6; do echo step-$i; sleep 1; done; "
               "echo 'offload-result: {\"rows\": 5}'")
    run_id = stack.api.trigger(dag_id, {"command": ["sh", "-c", command]})
    job = running_job(stack, dag_id, run_id)
    stack.wait_ti(dag_id, run_id, {"deferred"}, seconds=30)

    # The trigger copies the job's log into the task log at its polls: visible in the
    # task's log (what the UI shows) while the task is deferred and the job still runs.
    def progress_shown():
        text = stack.api.log(dag_id, run_id, 1)
        return "[offload] step-" in text and text
    text = wait_for("the job's log lines in the deferred task's log", progress_shown, 20,
                    lambda: stack.api.log(dag_id, run_id, 1))
    # The "Offload Job" link leads to the job's page on the gateway's dashboard while the
    # task waits.
    link = f"{stack.gateway.url}/ui/jobs/{job['id']}"
    assert stack.api.links(dag_id, run_id) == {"Offload Job": link}
    assert stack.gateway.request(f"/v1/jobs/{job['id']}")["state"] == "running"
    assert stack.ti_state(dag_id, run_id) == "deferred", text

    ti = stack.wait_ti(dag_id, run_id, {"success", "failed"}, seconds=60)
    assert ti["state"] == "success", stack.report(dag_id, run_id)
    assert xcoms(stack.env, dag_id, run_id)["return_value"] == {"rows": 5}
    jobs = stack.jobs(dag_id, run_id)
    assert [(j["id"], j["state"], j["result"]) for j in jobs] == [(job["id"], "succeeded", {"rows": 5})]
    text = stack.api.log(dag_id, run_id, 1)
    # Each line of the job's log once: from the trigger's polls, or at the end if not shown yet.
    for i in range(1, 7):
        assert text.count(f"[offload] step-{i}") == 1, text
    assert f"offload job {job['id']} succeeded" in text, text
    # The secret_env value the job printed is masked in the trigger's lines as in the worker's.
    assert text.count("[offload] token=***") == 1 and "stack-s3cr3t" not in text, text
    assert stack.api.links(dag_id, run_id) == {"Offload Job": link}


def test_execution_timeout_while_deferred_cancels_the_job(stack):
    dag_id = "offload_stack_timeout"  # execution_timeout: 6 s
    run_id = stack.api.trigger(dag_id, {"command": ["sh", "-c", "echo waiting; sleep 120"]})
    job = running_job(stack, dag_id, run_id)
    stack.wait_ti(dag_id, run_id, {"deferred"}, seconds=30)
    ti = stack.wait_ti(dag_id, run_id, {"failed", "success", "up_for_retry"}, seconds=45)
    assert ti["state"] == "failed", stack.report(dag_id, run_id)
    job = stack.wait_job(dag_id, run_id, {"cancelled", "failed", "succeeded"}, seconds=20)
    assert [(j["id"], j["state"]) for j in stack.jobs(dag_id, run_id)] == [(job["id"], "cancelled")]
    text = stack.api.log(dag_id, run_id, 1)
    assert "AirflowTaskTimeout" in text and f"cancelled offload job {job['id']} (execution_timeout)" in text, text
    # Cut at execution_timeout, not at the job's 120 s.
    assert ti["duration"] < 60, ti


def test_marked_failed_while_deferred_cancels_the_job(stack):
    dag_id = "offload_stack_deferred"
    run_id = stack.api.trigger(dag_id, {"command": ["sh", "-c", "echo waiting; sleep 120"]})
    job = running_job(stack, dag_id, run_id)
    trigger_follows(stack, dag_id, run_id, "waiting")
    stack.api.set_state(dag_id, run_id, "failed")
    # The triggerer kills the trigger; its on_kill sees the task instance failed for good.
    # Within the triggerer's next syncs plus its on_kill_timeout (30 s), which the question
    # to Airflow (up to 20 s on a loaded machine) and the cancel run under.
    job = stack.wait_job(dag_id, run_id, {"cancelled", "failed", "succeeded"}, seconds=KILL_SECONDS)
    assert job["state"] == "cancelled", stack.report(dag_id, run_id)
    assert len(stack.jobs(dag_id, run_id)) == 1
    assert stack.ti_state(dag_id, run_id) == "failed"
    assert f"cancelled offload job {job['id']}" in stack.api.log(dag_id, run_id, 1)


def test_marked_success_or_dag_run_failed_while_deferred_cancels_the_job(stack):
    dag_id = "offload_stack_deferred"
    runs = [stack.api.trigger(dag_id, {"command": ["sh", "-c", "echo waiting; sleep 120"]}) for _ in range(2)]
    for run_id in runs:
        running_job(stack, dag_id, run_id)
        trigger_follows(stack, dag_id, run_id, "waiting")
    marked_success, run_failed = runs
    stack.api.set_state(dag_id, marked_success, "success")
    stack.api.set_run_state(dag_id, run_failed, "failed")
    for run_id, state in ((marked_success, "success"), (run_failed, "failed")):
        job = stack.wait_job(dag_id, run_id, {"cancelled", "failed", "succeeded"}, seconds=KILL_SECONDS)
        assert job["state"] == "cancelled", stack.report(dag_id, run_id)
        assert len(stack.jobs(dag_id, run_id)) == 1
        assert stack.ti_state(dag_id, run_id) == state


def test_cleared_while_deferred_the_new_try_follows_the_job(stack):
    dag_id = "offload_stack_deferred"
    command = "echo first-try-started; sleep 14; echo 'offload-result: {\"rows\": 2}'"
    run_id = stack.api.trigger(dag_id, {"command": ["sh", "-c", command]})
    job = running_job(stack, dag_id, run_id)
    trigger_follows(stack, dag_id, run_id, "first-try-started")
    stack.api.clear(dag_id, run_id)
    ti = stack.wait_ti(dag_id, run_id, {"success", "failed"}, seconds=60, try_number=2)
    assert ti["state"] == "success", stack.report(dag_id, run_id)
    # Try 2 reattached to try 1's job, which try 1's trigger left running: one job, its result.
    assert [(j["id"], j["state"]) for j in stack.jobs(dag_id, run_id)] == [(job["id"], "succeeded")]
    assert xcoms(stack.env, dag_id, run_id)["return_value"] == {"rows": 2}
    assert f"reattached to offload job {job['id']} (submitted by try 1)" in stack.api.log(dag_id, run_id, 2)
    assert f"offload job {job['id']} left running" in stack.api.log(dag_id, run_id, 1)


def test_triggerer_killed_and_restarted_the_wait_goes_on(stack):
    dag_id = "offload_stack_deferred"
    command = "echo before-the-kill; sleep 12; echo after-the-kill; echo 'offload-result: {\"rows\": 3}'"
    run_id = stack.api.trigger(dag_id, {"command": ["sh", "-c", command]})
    job = running_job(stack, dag_id, run_id)
    trigger_follows(stack, dag_id, run_id, "before-the-kill")
    # The triggerer and its trigger runner die without a word (no on_kill)...
    stack.processes.pop("triggerer").kill()
    assert stack.gateway.request(f"/v1/jobs/{job['id']}")["state"] == "running"
    # ...and a new one takes the trigger over once the old one's heartbeat is stale.
    stack.start_triggerer()
    ti = stack.wait_ti(dag_id, run_id, {"success", "failed"}, seconds=60)
    assert ti["state"] == "success" and ti["try_number"] == 1, stack.report(dag_id, run_id)
    assert [(j["id"], j["state"]) for j in stack.jobs(dag_id, run_id)] == [(job["id"], "succeeded")]
    assert xcoms(stack.env, dag_id, run_id)["return_value"] == {"rows": 3}


def test_worker_killed_during_a_synchronous_wait(stack):
    """The worker (LocalExecutor's process and the task process under it) dies mid-wait, as
    on a lost node. With a retry left, the next try reattaches to the job; without, the
    scheduler fails the task for its missing heartbeat and the failure callback (run by
    the DAG processor) cancels the job."""
    command = "echo started; sleep 22; echo 'offload-result: {\"rows\": 4}'"
    runs = {dag_id: stack.api.trigger(dag_id, {"command": ["sh", "-c", command]})
            for dag_id in ("offload_stack_sync", "offload_stack_sync_once")}
    jobs = {dag_id: running_job(stack, dag_id, run_id) for dag_id, run_id in runs.items()}
    scheduler = stack.processes["scheduler"].pid
    for dag_id, run_id in runs.items():
        ti = stack.wait_ti(dag_id, run_id, {"running"}, seconds=30)
        (task, worker), = wait_for(f"the task process of {run_id}",
                                   lambda ti=ti, run_id=run_id: task_processes(ti, run_id), 20)
        assert descends_from(worker, scheduler), (task, worker, scheduler)
        os.kill(task, signal.SIGKILL)
        os.kill(worker, signal.SIGKILL)

    dag_id, run_id = "offload_stack_sync", runs["offload_stack_sync"]
    ti = stack.wait_ti(dag_id, run_id, {"success", "failed"}, seconds=HEARTBEAT_TIMEOUT + 60, try_number=2)
    assert ti["state"] == "success", stack.report(dag_id, run_id)
    job = jobs[dag_id]
    assert [(j["id"], j["state"]) for j in stack.jobs(dag_id, run_id)] == [(job["id"], "succeeded")]
    assert f"reattached to offload job {job['id']} (submitted by try 1)" in stack.api.log(dag_id, run_id, 2)
    assert xcoms(stack.env, dag_id, run_id)["return_value"] == {"rows": 4}

    dag_id, run_id = "offload_stack_sync_once", runs["offload_stack_sync_once"]
    ti = stack.wait_ti(dag_id, run_id, {"failed", "success"}, seconds=HEARTBEAT_TIMEOUT + 30)
    assert ti["state"] == "failed", stack.report(dag_id, run_id)
    job = stack.wait_job(dag_id, run_id, {"cancelled", "failed", "succeeded"}, seconds=30)
    assert [(j["id"], j["state"]) for j in stack.jobs(dag_id, run_id)] == [(job["id"], "cancelled")]


def test_marked_failed_while_waiting_in_the_worker_cancels_the_job(stack):
    dag_id = "offload_stack_sync_once"
    run_id = stack.api.trigger(dag_id, {"command": ["sh", "-c", "echo waiting; sleep 120"]})
    job = running_job(stack, dag_id, run_id)
    stack.wait_ti(dag_id, run_id, {"running"}, seconds=30)
    stack.api.set_state(dag_id, run_id, "failed")
    # The worker's heartbeat is refused, the task gets SIGTERM, its on_kill sees it failed.
    job = stack.wait_job(dag_id, run_id, {"cancelled", "failed", "succeeded"}, seconds=30)
    assert job["state"] == "cancelled", stack.report(dag_id, run_id)
    assert len(stack.jobs(dag_id, run_id)) == 1
    assert stack.ti_state(dag_id, run_id) == "failed"
    assert f"cancelled offload job {job['id']} (the task was stopped)" in stack.api.log(dag_id, run_id, 1)


def test_cleared_while_waiting_in_the_worker_the_new_try_follows_the_job(stack):
    dag_id = "offload_stack_sync_clear"
    command = "echo first-try-started; sleep 16; echo 'offload-result: {\"rows\": 6}'"
    run_id = stack.api.trigger(dag_id, {"command": ["sh", "-c", command]})
    job = running_job(stack, dag_id, run_id)
    stack.wait_ti(dag_id, run_id, {"running"}, seconds=30)
    stack.api.clear(dag_id, run_id)
    ti = stack.wait_ti(dag_id, run_id, {"success", "failed"}, seconds=60, try_number=2)
    assert ti["state"] == "success", stack.report(dag_id, run_id)
    assert [(j["id"], j["state"]) for j in stack.jobs(dag_id, run_id)] == [(job["id"], "succeeded")]
    assert xcoms(stack.env, dag_id, run_id)["return_value"] == {"rows": 6}
    # Airflow 3 marks a running task instance that is cleared `restarting`; Airflow 2 has
    # already put it up for retry when its worker stops the task.
    state = "up_for_retry" if AIRFLOW_2 else "restarting"
    assert f"offload job {job['id']} left running: the task instance is {state}" in stack.api.log(dag_id, run_id, 1)
    assert f"reattached to offload job {job['id']} (submitted by try 1)" in stack.api.log(dag_id, run_id, 2)

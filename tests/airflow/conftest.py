"""The real-Airflow harness: the real `offload serve` binary on its local provider (given a
price, so that what a job costs is not 0) and an Airflow home (of the Airflow the venv has:
3.3 or 2.11) whose DAGs are the examples in deploy/airflow plus tests/airflow/dags.
tests/run.sh installs Airflow and the operator package, then runs these tests."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from importlib.metadata import version

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
OFFLOAD = os.path.abspath(os.environ.get("OFFLOAD_BIN", ROOT / "target" / "debug" / "offload"))
AIRFLOW = str(pathlib.Path(sys.executable).parent / "airflow")
TOKEN = "offload-dev-token"
#: Airflow 2 (2.11) rather than 3: a few of its outputs and paths differ.
AIRFLOW_2 = int(version("apache-airflow").split(".")[0]) < 3
#: The gateway's configuration: its one provider, local, with a price sheet (local is free
#: by default), so that a job's `cost.usd` (the operator's `cost_usd` XCom) is more than 0.
GATEWAY_CONFIG = """\
[providers.local]
kind = "local"
price = { vcpu_hour = 3.6 }
"""
DAG_FILES = [
    ROOT / "deploy" / "airflow" / "dags" / "offload_job.py",
    ROOT / "deploy" / "airflow" / "provider" / "example_dags" / "offload_operator.py",
    *sorted((ROOT / "tests" / "airflow" / "dags").glob("*.py")),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """A running `offload serve` and the calls the tests make to it."""

    def __init__(self, url):
        self.url = url

    def request(self, path, method="GET"):
        request = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return json.loads(body) if response.headers.get_content_type() == "application/json" else body

    def jobs(self, **labels):
        """The jobs carrying these labels, newest first."""
        selector = urllib.parse.quote(",".join(f"{k}={v}" for k, v in labels.items()))
        return self.request(f"/v1/jobs?labels={selector}&limit=100")["jobs"]

    def logs(self, job_id):
        return self.request(f"/v1/jobs/{job_id}/logs")

    def status_reads(self):
        """How many `GET /v1/jobs/{id}` requests the gateway has answered, from its metrics."""
        text = urllib.request.urlopen(self.url + "/metrics", timeout=10).read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("offload_http_request_duration_seconds_count{")
            and 'method="GET"' in line and 'route="/v1/jobs/{id}"' in line
        )

    def wait_for(self, what, predicate, seconds=30):
        deadline = time.time() + seconds
        while not (found := predicate()):
            assert time.time() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)
        return found


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    assert os.path.exists(OFFLOAD), f"{OFFLOAD} is missing: build it first (cargo build)"
    work = tmp_path_factory.mktemp("gateway")
    url = f"http://127.0.0.1:{free_port()}"
    (work / "offload.toml").write_text(GATEWAY_CONFIG)
    log = open(work / "serve.log", "w")
    env = {**os.environ, "OFFLOAD_LISTEN": url.removeprefix("http://")}
    proc = subprocess.Popen([OFFLOAD, "serve", "--config", "offload.toml"], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/readyz", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("offload serve did not start:\n" + (work / "serve.log").read_text())
            time.sleep(0.1)
    yield Gateway(url)
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory, gateway):
    home = tmp_path_factory.mktemp("airflow")
    dags = home / "dags"
    dags.mkdir()
    for path in DAG_FILES:
        (dags / path.name).symlink_to(path)
    env = {
        # Nothing of the unit tests' Airflow settings (tests/airflow/unit/conftest.py).
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The no-install DAG's plain HTTP connection...
        "AIRFLOW_CONN_OFFLOAD": json.dumps(
            {"conn_type": "http", "host": gateway.url, "extra": {"Authorization": f"Bearer {TOKEN}"}}
        ),
        # ...and the operator package's own connection type.
        "AIRFLOW_CONN_OFFLOAD_DEFAULT": json.dumps(
            {"conn_type": "offload", "host": gateway.url, "password": TOKEN}
        ),
    }
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    return env


def dags_test(env, dag_id, conf=None, logical_date=None, timeout=300):
    """`airflow dags test`: one DAG run, inline. Returns the exit code and Airflow's output."""
    argv = [AIRFLOW, "dags", "test", dag_id, *([logical_date] if logical_date else [])]
    argv += ["-c", json.dumps(conf or {})]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


#: `airflow dags test` names its run after the clock, not this date, but `airflow tasks test`
#: with this date finds that run again: the way to run one task of a run a second time.
LOGICAL_DATE = "2026-01-02T03:04:05+00:00"


def tasks_test(env, dag_id, task_id, logical_date, timeout=300):
    """`airflow tasks test`: one task of the run with this logical date, again, same try."""
    done = subprocess.run([AIRFLOW, "tasks", "test", dag_id, task_id, logical_date],
                          env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


_READ_XCOMS = """
import json, sys
from sqlalchemy import select
from airflow.utils.session import create_session
dag_id, run_id, task_id = sys.argv[1:]
try:
    from airflow.models.xcom import XComModel
except ImportError:  # Airflow 2
    from airflow.models.xcom import XCom
    with create_session() as session:
        keys = [key for (key,) in session.query(XCom.key).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id)]
    values = {key: XCom.get_one(run_id=run_id, key=key, task_id=task_id, dag_id=dag_id) for key in keys}
else:
    with create_session() as session:
        rows = session.scalars(select(XComModel).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id))
        values = {row.key: XComModel.deserialize_value(row) for row in rows}
print(json.dumps(values))
"""


def xcoms(env, dag_id, run_id, task_id="run"):
    """What a task instance pushed as XCom, by key, as Airflow's database holds it."""
    done = subprocess.run([sys.executable, "-c", _READ_XCOMS, dag_id, run_id, task_id],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])

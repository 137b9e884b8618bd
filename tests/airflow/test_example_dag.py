"""deploy/airflow/dags/offload_job.py on real Airflow 3 (`airflow dags test`) against the
real `offload serve` binary on its local provider: success, failure and timeout paths end
in the right DAG run and job states. tests/run.sh installs Airflow and runs this."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
OFFLOAD = os.path.abspath(os.environ.get("OFFLOAD_BIN", ROOT / "target" / "debug" / "offload"))
AIRFLOW = str(pathlib.Path(sys.executable).parent / "airflow")
TOKEN = "offload-dev-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url, path):
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    assert os.path.exists(OFFLOAD), f"{OFFLOAD} is missing: build it first (cargo build)"
    work = tmp_path_factory.mktemp("gateway")
    url = f"http://127.0.0.1:{free_port()}"
    log = open(work / "serve.log", "w")
    env = {**os.environ, "OFFLOAD_LISTEN": url.removeprefix("http://")}
    proc = subprocess.Popen([OFFLOAD, "serve"], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log)
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
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory, gateway):
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow")),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "deploy" / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_OFFLOAD": json.dumps(
            {"conn_type": "http", "host": gateway, "extra": {"Authorization": f"Bearer {TOKEN}"}}
        ),
    }
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    return env


def run_dag(env, conf):
    """Runs offload_job once; returns the exit code, Airflow's output, and the job it made."""
    done = subprocess.run(
        [AIRFLOW, "dags", "test", "offload_job", "-c", json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def newest_job(gateway):
    jobs = api(gateway, "/v1/jobs?labels=dag_id=offload_job&limit=1")["jobs"]
    assert jobs, "the DAG submitted no job"
    return jobs[0]


def test_success(gateway, airflow_env):
    code, output = run_dag(airflow_env, {"command": ["sh", "-c", "echo hello from airflow"]})
    assert code == 0, output
    job = newest_job(gateway)
    assert (job["state"], job["exit_code"]) == ("succeeded", 0)
    assert job["labels"]["task_id"] == "submit" and job["labels"]["try_number"] == "1"
    logs = urllib.request.urlopen(urllib.request.Request(
        f"{gateway}/v1/jobs/{job['id']}/logs", headers={"Authorization": f"Bearer {TOKEN}"})).read()
    assert logs == b"hello from airflow\n"


def test_failing_job_fails_the_run_with_its_reason(gateway, airflow_env):
    code, output = run_dag(airflow_env, {"command": ["sh", "-c", "echo boom; exit 5"]})
    assert code == 1, output
    job = newest_job(gateway)
    assert (job["state"], job["exit_code"], job["reason"]) == ("failed", 5, "exited with code 5")
    assert f"offload job {job['id']} failed: exited with code 5" in output


def test_timeout_stops_the_job_and_fails_the_run(gateway, airflow_env):
    code, output = run_dag(airflow_env, {"command": ["sh", "-c", "sleep 60"], "timeout_seconds": 2})
    assert code == 1, output
    job = newest_job(gateway)
    assert job["state"] == "failed" and job["reason"].startswith("timeout"), job
    assert "timeout: still running after 2 s" in output

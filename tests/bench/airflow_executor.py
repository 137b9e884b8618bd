"""OffloadExecutor against LocalExecutor on this machine: one DAG of N one-second tasks
(BashOperator `sleep 1`, no dependencies), run by a whole Airflow 3.3 (scheduler, api-server,
dag-processor) with each executor alone, the same parallelism; OffloadExecutor against the
real gateway on its `local` provider (each task a host process running the workload with
this venv's python). Prints, for each: the wall time of the DAG run, the tasks'
queued-to-running latency (queued_dttm to start_date: median, p95, max), and for
OffloadExecutor the gateway requests per scheduler heartbeat (its sync's, from the
executor's own counts; submits and the rest from the gateway's metrics).

Not run by CI (tests/run.sh): BENCHMARKS.md has its figures.

    OFFLOAD_BIN=target/debug/offload target/airflow-venv/bin/python tests/bench/airflow_executor.py \\
        [--tasks 200] [--parallelism 16]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "airflow"))

from conftest import AIRFLOW, OFFLOAD, TOKEN, free_port  # noqa: E402
from test_operator_stack import Airflow, Process, all_pids, descends_from  # noqa: E402

DAG = '''
from datetime import datetime
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG("bench_one_second_tasks", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         max_active_tasks={parallelism}):
    for i in range({tasks}):
        BashOperator(task_id=f"t{{i:03d}}", bash_command="sleep 1")
'''

TIS = """
import json, sys
from sqlalchemy import select
from airflow.models.taskinstance import TaskInstance as TI
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
with create_session() as session:
    rows = session.execute(select(TI.task_id, TI.state, TI.queued_dttm, TI.start_date, TI.end_date)
                           .where(TI.dag_id == "bench_one_second_tasks")).all()
    run = session.execute(select(DagRun.start_date, DagRun.end_date, DagRun.state)
                          .where(DagRun.dag_id == "bench_one_second_tasks")).one()
print(json.dumps({"tis": [[r[0], str(getattr(r[1], "value", r[1])), r[2].timestamp(), r[3].timestamp(), r[4].timestamp()]
                          for r in rows],
                  "run": [run[0].timestamp(), run[1].timestamp(), str(getattr(run[2], "value", run[2]))]}))
"""


def wait_for(what, predicate, seconds):
    deadline = time.monotonic() + seconds
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.5)
    return found


def gateway_get(url, path):
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
        return json.loads(body) if response.headers.get_content_type() == "application/json" else body.decode()


def quantiles(values):
    values = sorted(values)
    return {"median": round(statistics.median(values), 2),
            "p95": round(values[max(0, int(round(0.95 * len(values))) - 1)], 2), "max": round(values[-1], 2)}


def where_the_time_goes(url):
    """For each job, from the gateway's API: submit to process start, process start to the
    worker's first line ("Executing workload": the interpreter and Airflow's imports), the
    workload itself, and its last line ("Workload finished") to the job's end at the gateway."""
    def instant(value):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    jobs, cursor = [], ""
    while True:
        page = gateway_get(url, f"/v1/jobs?limit=500{cursor}")
        jobs += page["jobs"]
        if not page.get("next_cursor"):
            break
        cursor = f"&cursor={page['next_cursor']}"
    parts = {"submit_to_process_start_s": [], "process_start_to_first_worker_line_s": [],
             "workload_s": [], "last_worker_line_to_job_end_s": []}
    for job in jobs:
        seen = {}
        for line in gateway_get(url, f"/v1/jobs/{job['id']}/logs").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") in ("Executing workload", "Workload finished"):
                seen.setdefault(record["event"], instant(record["timestamp"]))
        if len(seen) < 2 or not job.get("started_at"):
            continue
        started = instant(job["started_at"])
        parts["submit_to_process_start_s"].append(started - instant(job["created_at"]))
        parts["process_start_to_first_worker_line_s"].append(seen["Executing workload"] - started)
        parts["workload_s"].append(seen["Workload finished"] - seen["Executing workload"])
        parts["last_worker_line_to_job_end_s"].append(instant(job["finished_at"]) - seen["Workload finished"])
    return {name: quantiles(values) for name, values in parts.items() if values}


def gateway_metrics(url):
    """Requests the gateway answered, by method and route, from its /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("offload_http_request_duration_seconds_count{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = f"{labels.get('method')} {labels.get('route')}"
            counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def start_gateway(work: Path, dags: Path):
    """The gateway, its local provider's sandbox letting jobs read this venv, the Python it
    was made from, the package's source (installed editable) and the DAGs."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    read_paths = ["/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/sys",
                  "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/uptime", "/proc/version",
                  "/proc/filesystems", "/proc/sys", sys.prefix, sys.base_prefix,
                  str(ROOT / "deploy" / "airflow" / "provider" / "src"), str(dags)]
    (work / "offload.toml").write_text(f'[providers.local]\nkind = "local"\nread_paths = {json.dumps(read_paths)}\n')
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen([OFFLOAD, "serve", "--config", "offload.toml"], cwd=work,
                            env={**os.environ, "OFFLOAD_LISTEN": f"127.0.0.1:{port}"},
                            stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            urllib.request.urlopen(url + "/readyz", timeout=1)
            return True
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("offload serve did not start:\n" + (work / "serve.log").read_text())
            return False
    wait_for("the gateway", ready, 30)
    return proc, url


def run_airflow(kind: str, work: Path, tasks: int, parallelism: int, gateway_url: str | None):
    """One Airflow with `kind` as its only executor; runs the DAG once; returns the figures."""
    from cryptography.fernet import Fernet

    home = work / kind
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "bench.py").write_text(DAG.format(tasks=tasks, parallelism=parallelism))
    api_port = free_port()
    api = Airflow(f"http://127.0.0.1:{api_port}")
    executor = "LocalExecutor" if kind == "local" else "offload_airflow.executor.OffloadExecutor"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api.url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": api.url,
        "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
    }
    if gateway_url:
        env.update({
            "AIRFLOW_CONN_OFFLOAD_DEFAULT": json.dumps({"conn_type": "offload", "host": gateway_url,
                                                        "password": TOKEN}),
            "AIRFLOW__OFFLOAD_EXECUTOR__PYTHON": sys.executable,
            "AIRFLOW__OFFLOAD_EXECUTOR__IMAGE": "apache/airflow:3.3.2",
            # A tenth of a CPU each, so that the local provider (which counts the host's
            # CPUs) holds `parallelism` jobs at once, as LocalExecutor runs that many.
            "AIRFLOW__OFFLOAD_EXECUTOR__RESOURCES": json.dumps({"cpu": 0.1, "memory": "256Mi"}),
            # The jobs' Airflow home is ~/airflow in each job's own working directory.
            "AIRFLOW__OFFLOAD_EXECUTOR__ENV": json.dumps({
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": executor}),
        })
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True)
    if migrate.returncode:
        raise SystemExit(migrate.stdout + migrate.stderr)
    processes = [
        Process("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(api_port),
                               "--workers", "1"], env, home),
        Process("dag-processor", [AIRFLOW, "dag-processor"], env, home),
        Process("scheduler", [AIRFLOW, "scheduler", "--skip-serve-logs"], env, home),
    ]
    try:
        def healthy():
            for p in processes:
                if not p.alive():
                    raise SystemExit(p.output_tail(80))
            try:
                health = api.call("GET", "/api/v2/monitor/health")
            except (OSError, AssertionError):
                return False
            return all((health.get(c) or {}).get("status") == "healthy"
                       for c in ("metadatabase", "scheduler", "dag_processor"))
        wait_for("Airflow to be healthy", healthy, 180)
        api.login()
        wait_for("the DAG to be parsed",
                 lambda: any(d["dag_id"] == "bench_one_second_tasks"
                             for d in api.call("GET", "/api/v2/dags?limit=100")["dags"]), 120)
        before = gateway_metrics(gateway_url) if gateway_url else {}
        api.call("POST", "/api/v2/dags/bench_one_second_tasks/dagRuns", {"dag_run_id": "bench", "logical_date": None})
        wait_for("the DAG run", lambda: api.call("GET", "/api/v2/dags/bench_one_second_tasks/dagRuns/bench")["state"]
                 in ("success", "failed"), 3600)
        after = gateway_metrics(gateway_url) if gateway_url else {}
    finally:
        started = {p.pid for p in processes}
        descendants = [pid for pid in all_pids() if pid not in started and any(descends_from(pid, s) for s in started)]
        for p in processes:
            p.signal_group(signal.SIGTERM)
        for p in processes:
            try:
                p.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    done = subprocess.run([sys.executable, "-c", TIS], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    latencies = sorted(start - queued for _, _, queued, start, _ in found["tis"])
    if gateway_url:
        breakdown = where_the_time_goes(gateway_url)
    states = sorted({state for _, state, *_ in found["tis"]})
    figures = {
        "executor": "LocalExecutor" if kind == "local" else "OffloadExecutor",
        "tasks": len(found["tis"]),
        "states": states,
        "run_state": found["run"][2],
        "wall_s": found["run"][1] - found["run"][0],
        "queued_to_running_median_s": statistics.median(latencies),
        "queued_to_running_p95_s": latencies[max(0, int(round(0.95 * len(latencies))) - 1)],
        "queued_to_running_max_s": latencies[-1],
    }
    if gateway_url:
        log = (home / "scheduler.log").read_text(errors="replace")
        totals = [json.loads(m) for m in re.findall(r"totals (\{[^}]*\})", log)]
        if not totals:
            raise SystemExit("the scheduler's log has no OffloadExecutor summary:\n" + log[-3000:])
        counts = totals[-1]
        figures.update({
            "heartbeats": counts["heartbeats"],
            "sync_requests": counts["sync_requests"],
            "sync_requests_per_heartbeat": counts["sync_requests"] / max(counts["heartbeats"], 1),
            "max_sync_requests_in_one_heartbeat": counts["max_sync_requests"],
            "submits": counts["submits"],
            "gateway_requests": {k: int(after.get(k, 0) - before.get(k, 0)) for k in sorted(after)
                                 if after.get(k, 0) - before.get(k, 0) > 0},
            "where_the_time_goes": breakdown,
        })
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--parallelism", type=int, default=16)
    args = parser.parse_args()
    if not os.path.exists(OFFLOAD):
        raise SystemExit(f"{OFFLOAD} is missing: build it (cargo build) or set OFFLOAD_BIN")
    work = Path(tempfile.mkdtemp(prefix="offload-bench-airflow-"))
    print(f"{args.tasks} one-second tasks, parallelism {args.parallelism}, {os.cpu_count()} CPUs; work in {work}")
    local = run_airflow("local", work, args.tasks, args.parallelism, None)
    print(json.dumps(local))
    (work / "offload" / "dags").mkdir(parents=True)
    gateway, url = start_gateway(work / "gateway", work / "offload" / "dags")
    try:
        offload = run_airflow("offload", work, args.tasks, args.parallelism, url)
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
    print(json.dumps(offload))
    print()
    print("| executor | wall time s | queued to running, median s | p95 s | max s | sync requests per heartbeat "
          "(most in one) | submits |")
    print("|---|---|---|---|---|---|---|")
    for f in (local, offload):
        sync = (f"{f['sync_requests_per_heartbeat']:.2f} ({f['max_sync_requests_in_one_heartbeat']})"
                if "heartbeats" in f else "-")
        print(f"| {f['executor']} | {f['wall_s']:.1f} | {f['queued_to_running_median_s']:.2f} | "
              f"{f['queued_to_running_p95_s']:.2f} | {f['queued_to_running_max_s']:.2f} | {sync} | "
              f"{f.get('submits', '-')} |")
    print(f"\ngateway requests during OffloadExecutor's run: {offload['gateway_requests']}")
    print("OffloadExecutor's jobs, where the time goes (seconds):")
    for name, figures in offload["where_the_time_goes"].items():
        print(f"  {name}: median {figures['median']}, p95 {figures['p95']}, max {figures['max']}")
    print(f"heartbeats: {offload['heartbeats']}; every task {'succeeded' if local['states'] == ['success'] and offload['states'] == ['success'] else 'did NOT succeed: ' + str((local['states'], offload['states']))}")


if __name__ == "__main__":
    main()

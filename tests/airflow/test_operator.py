"""The airflow-provider-offload package (deploy/airflow/provider) on real Airflow (3.3 and 2.11) against
the real gateway: deferred and synchronous waits, XCom result, the job's log in the task
log, its provider and cost as XCom and in the task log, failure with reason and log tail,
secret masking, cancel on execution_timeout, and reattach after the worker died."""

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import AIRFLOW, AIRFLOW_2, LOGICAL_DATE, dags_test, xcoms


def only_job(gateway, dag_id):
    """The newest job of the DAG, as the gateway has it."""
    jobs = gateway.jobs(dag_id=dag_id)
    assert jobs, f"{dag_id} submitted no job"
    return jobs[0]


def cost_line(job):
    """The task log's line on where the ended job ran and what it cost."""
    cost = job["cost"]
    reference = cost["reference"]
    return (f"[offload] job {job['id']} ran on {job['provider']}: {cost['usd']:.6f} USD "
            f"(estimated {cost['estimated_usd']:.6f} USD, billed {cost['billed_seconds']} s); "
            f"{reference['usd']:.6f} USD at reference {reference['provider']}, "
            f"saved {reference['usd'] - cost['usd']:.6f} USD")


def test_deferred_success_returns_the_result_and_copies_the_log_and_cost(gateway, airflow_env):
    reads_before = gateway.status_reads()
    code, output = dags_test(airflow_env, "offload_operator", {
        "command": ["sh", "-c", "sleep 10; echo counting; echo 'offload-result: {\"rows\": 3}'"],
    })
    assert code == 0, output
    # The trigger long-polls too: a handful of reads for a 10 s job.
    reads = gateway.status_reads() - reads_before
    print(f"status reads to wait out a 10 s job: {reads:.0f}")
    assert 1 <= reads <= 4, reads
    job = only_job(gateway, "offload_operator")
    assert (job["state"], job["result"]) == ("succeeded", {"rows": 3})
    assert job["labels"] == {
        "dag_id": "offload_operator", "task_id": "run", "run_id": job["labels"]["run_id"],
        "map_index": "-1", "try_number": "1", "clear_number": "0",
    }
    assert job["spec"]["resources"]["cpu"] == 0.5
    assert "[DAG TEST] running trigger in line" in output, output
    # Each line of the job's log once: shown by the trigger's polls or at the end, not both
    # (Airflow 2's `dags test` prints each log record twice, in two formats).
    assert output.count("[offload] counting") == (2 if AIRFLOW_2 else 1), output
    # `report` got the XCom.
    assert "the job reported 3 rows" in output
    # Where it ran and what it cost, as the gateway has it: local at 3.6 USD per vCPU-hour
    # (conftest's price sheet) for 0.5 vCPU, so a 10 s job costs something.
    cost = job["cost"]
    assert job["provider"] == cost["provider"] == "local", job
    assert cost["hourly_usd"] == pytest.approx(1.8), cost
    assert cost["billed_seconds"] > 0 and cost["usd"] == pytest.approx(1.8 * cost["billed_seconds"] / 3600), cost
    assert cost["usd"] > 0, cost
    assert xcoms(airflow_env, "offload_operator", job["labels"]["run_id"]) == {
        "job_id": job["id"], "provider": job["provider"], "cost_usd": cost["usd"], "return_value": {"rows": 3},
        # The "Offload Job" link: the job's page on the gateway's dashboard.
        "_link_OffloadJobLink": f"{gateway.url}/ui/jobs/{job['id']}",
    }
    assert cost_line(job) in output, output


def test_failing_job_fails_the_task_with_reason_and_log_tail(gateway, airflow_env):
    code, output = dags_test(airflow_env, "offload_operator", {"command": ["sh", "-c", "echo boom; exit 5"]})
    assert code == 1, output
    job = only_job(gateway, "offload_operator")
    assert (job["state"], job["exit_code"]) == ("failed", 5)
    assert f"offload job {job['id']} failed: exited with code 5\nlast lines of its log:\nboom" in output, output
    # A failed job's cost is reported too.
    assert cost_line(job) in output, output


def test_synchronous_wait_with_a_masked_secret(gateway, airflow_env):
    command = ["sh", "-c", 'echo "the token has ${#TOKEN} characters"']
    code, output = dags_test(airflow_env, "offload_operator_sync", {"command": command})
    assert code == 0, output
    job = only_job(gateway, "offload_operator_sync")
    assert job["state"] == "succeeded" and "[offload] the token has 12 characters" in output
    assert "s3cr3t-value" not in output
    assert "s3cr3t-value" not in str(job)


def test_execution_timeout_cancels_the_job(gateway, airflow_env):
    code, output = dags_test(airflow_env, "offload_operator_sync", {"command": ["sh", "-c", "sleep 60"]})
    assert code == 1, output
    job = only_job(gateway, "offload_operator_sync")
    assert f"cancelled offload job {job['id']}" in output, output
    job = gateway.wait_for("the job to end", lambda: (j := gateway.request(f"/v1/jobs/{job['id']}"))["terminal"] and j)
    assert job["state"] == "cancelled", job


def test_a_new_worker_reattaches_to_the_running_job(gateway, airflow_env, tmp_path):
    marker = "reattach-marker"
    # The job runs until the test releases it, once the second worker has reattached:
    # however long Airflow takes to start, the job is still running when it looks.
    release = tmp_path / "release"
    command = f"echo {marker}; while [ ! -e {release} ]; do sleep 0.2; done; echo 'offload-result: {{\"rows\": 7}}'"
    conf = {"command": ["sh", "-c", command]}
    argv = [AIRFLOW, "dags", "test", "offload_operator_reattach", LOGICAL_DATE, "-c", json.dumps(conf)]
    worker = subprocess.Popen(argv, env=airflow_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        job = gateway.wait_for("the job to run", lambda: next(
            (j for j in gateway.jobs(dag_id="offload_operator_reattach")
             if j["state"] == "running" and marker in j["spec"]["command"][-1]), None), seconds=60)
    finally:
        # The worker dies without a word: no on_kill, no cancel.
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    # The same task of the same run again (`airflow tasks test`), in a new worker.
    out = tmp_path / "tasks-test.log"
    with open(out, "w") as sink:
        second = subprocess.Popen([AIRFLOW, "tasks", "test", "offload_operator_reattach", "run", LOGICAL_DATE],
                                  env={**airflow_env, "PYTHONUNBUFFERED": "1"}, stdout=sink,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        gateway.wait_for("the second worker to reattach", lambda: second.poll() is not None
                         or f"reattached to offload job {job['id']}" in out.read_text(), seconds=240)
    finally:
        release.touch()
    try:
        code = second.wait(timeout=300)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    output = out.read_text()
    assert code == 0, output
    assert f"reattached to offload job {job['id']}" in output, output
    assert f"[offload] {marker}" in output
    assert [j["id"] for j in gateway.jobs(dag_id="offload_operator_reattach", run_id=job["labels"]["run_id"])] == [
        job["id"]]
    assert gateway.request(f"/v1/jobs/{job['id']}")["result"] == {"rows": 7}

"""deploy/airflow/dags/offload_job.py (plain HttpOperator + HttpSensor, nothing installed)
on real Airflow (3.3 and 2.11) against the real gateway: success (the sensor in reschedule
mode, the job's log and result in Airflow), failure, timeout, Airflow giving up (the
teardown cancels the job) and a retried submit (no second job)."""

from conftest import LOGICAL_DATE, dags_test, tasks_test, xcoms

DAG = "offload_job"


def newest_job(gateway):
    jobs = gateway.jobs(dag_id=DAG)
    assert jobs, "the DAG submitted no job"
    return jobs[0]


def test_success(gateway, airflow_env):
    reads_before = gateway.status_reads()
    command = "sleep 10; echo hello from airflow; echo 'offload-result: {\"rows\": 4}'"
    code, output = dags_test(airflow_env, DAG, {"command": ["sh", "-c", command]})
    assert code == 0, output
    job = newest_job(gateway)
    assert (job["state"], job["exit_code"]) == ("succeeded", 0)
    assert job["labels"]["task_id"] == "submit" and job["labels"]["try_number"] == "1"
    assert gateway.logs(job["id"]).startswith(b"hello from airflow\n")
    # The sensor gave its worker slot back between its pokes...
    assert "Rescheduling task, marking task as UP_FOR_RESCHEDULE" in output, output
    # ...and long-polls in each: one answer per state change, where poking every second
    # without `?wait=` would have asked at least 10 times.
    reads = gateway.status_reads() - reads_before
    print(f"status reads to wait out a 10 s job: {reads:.0f}")
    assert 1 <= reads <= 4, reads
    # The job's log in the wait task's log, and its result as the wait task's XCom.
    assert f"offload job {job['id']} succeeded; its log:" in output, output
    assert "[offload] hello from airflow" in output, output
    assert xcoms(airflow_env, DAG, job["labels"]["run_id"], "wait")["return_value"] == {"rows": 4}


def test_failing_job_fails_the_run_with_its_reason(gateway, airflow_env):
    code, output = dags_test(airflow_env, DAG, {"command": ["sh", "-c", "echo boom; exit 5"]})
    assert code == 1, output
    job = newest_job(gateway)
    assert (job["state"], job["exit_code"], job["reason"]) == ("failed", 5, "exited with code 5")
    assert f"offload job {job['id']} failed: exited with code 5" in output
    # The log comes into the task log before the task fails.
    assert "[offload] boom" in output, output


def test_timeout_stops_the_job_and_fails_the_run(gateway, airflow_env):
    code, output = dags_test(airflow_env, DAG, {"command": ["sh", "-c", "sleep 60"], "timeout_seconds": 2})
    assert code == 1, output
    job = newest_job(gateway)
    assert job["state"] == "failed" and job["reason"].startswith("timeout"), job
    assert "timeout: still running after 2 s" in output


def test_airflow_giving_up_cancels_the_job(gateway, airflow_env):
    conf = {"command": ["sh", "-c", "sleep 60"], "wait_timeout_seconds": 2}
    code, output = dags_test(airflow_env, DAG, conf)
    assert code == 1, output
    job = newest_job(gateway)
    assert "still running after 2 s: giving up" in output
    # The teardown's POST /cancel is answered before the workload has stopped.
    job = gateway.wait_for("the job to end", lambda: (j := gateway.request(f"/v1/jobs/{job['id']}"))["terminal"] and j)
    assert job["state"] == "cancelled", job


def test_a_retried_submit_finds_its_job_instead_of_launching_again(gateway, airflow_env):
    code, output = dags_test(airflow_env, DAG, {"command": ["sh", "-c", "echo once"]}, logical_date=LOGICAL_DATE)
    assert code == 0, output
    job = newest_job(gateway)
    # The same try of `submit` in the same run again: the same Idempotency-Key.
    code, output = tasks_test(airflow_env, DAG, "submit", LOGICAL_DATE)
    assert code == 0, output
    assert job["id"] in output, output
    assert [j["id"] for j in gateway.jobs(dag_id=DAG, run_id=job["labels"]["run_id"])] == [job["id"]]

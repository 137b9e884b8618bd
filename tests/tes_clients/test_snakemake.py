"""A Snakemake workflow of three rules run with snakemake-executor-plugin-tes against the real
gateway, its files in an S3 bucket that moto serves: Snakemake sends each job as a TES task,
the gateway's local provider runs it (Snakemake in the job fetching and storing its files
through the S3 storage plugin), and the workflow ends with the expected files in the bucket."""

import os
import pathlib
import subprocess
import sys
import time
import urllib.request

import boto3

from conftest import TOKEN, free_port, start

VENV = pathlib.Path(os.environ["OFFLOAD_SNAKEMAKE_VENV"])
MOTO_PYTHON = os.environ["OFFLOAD_MOTO_PYTHON"]

SNAKEFILE = """
rule all:
    input: "result.txt"

rule upper:
    input: "hello.txt"
    output: "upper.txt"
    shell: "tr a-z A-Z < {input} > {output}"

rule count:
    input: "upper.txt"
    output: "count.txt"
    shell: "wc -c < {input} | tr -d ' ' > {output}"

rule result:
    input: "upper.txt", "count.txt"
    output: "result.txt"
    shell: "cat {input} > {output}"
"""

DEFAULT_READ_PATHS = [
    "/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/sys",
    "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/uptime",
    "/proc/version", "/proc/filesystems", "/proc/sys",
]


def moto(tmp):
    port = free_port()
    log = open(tmp / "moto.log", "w")
    proc = subprocess.Popen([MOTO_PYTHON, "-m", "moto.server", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc, url
        except OSError:
            assert proc.poll() is None, "moto died: " + (tmp / "moto.log").read_text()
            assert time.time() < deadline, "moto did not start"
            time.sleep(0.2)


def test_a_three_rule_workflow_ends_with_its_outputs_in_the_bucket(tmp_path):
    moto_proc, endpoint = moto(tmp_path)
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket="snakemake")
    s3.put_object(Bucket="snakemake", Key="run/hello.txt", Body=b"hello tes\n")
    # The jobs run Snakemake from this venv on the host: its folder, and the Python
    # installation it was made from (its interpreter is a link into it), are readable by them.
    base = subprocess.run([str(VENV / "bin" / "python"), "-c", "import sys; print(sys.base_prefix)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    extra = [str(VENV.resolve())] + ([base] if not any(base.startswith(p + "/") or base == p
                                                       for p in DEFAULT_READ_PATHS) else [])
    read_paths = ", ".join(f'"{p}"' for p in DEFAULT_READ_PATHS + extra)
    gateway_dir = tmp_path / "gateway"
    gateway_dir.mkdir()
    env = os.environ.copy()
    env["PATH"] = f"{VENV}/bin:{env['PATH']}"
    gateway, url = start(gateway_dir, f"read_paths = [{read_paths}]\nmax_concurrency = 4\n", env=env)
    workflow = tmp_path / "workflow"
    workflow.mkdir()
    (workflow / "Snakefile").write_text(SNAKEFILE)
    try:
        run = subprocess.run(
            [str(VENV / "bin" / "snakemake"), "--executor", "tes",
             "--tes-url", f"{url}/ga4gh/tes", "--tes-token", TOKEN, "--jobs", "3",
             "--default-storage-provider", "s3", "--default-storage-prefix", "s3://snakemake/run",
             "--storage-s3-endpoint-url", endpoint, "--storage-s3-access-key", "testing",
             "--storage-s3-secret-key", "testing", "--container-image", "alpine",
             "--seconds-between-status-checks", "1"],
            cwd=workflow, capture_output=True, text=True, timeout=600,
            env={**os.environ, "GITHUB_WORKSPACE": str(gateway_dir)},
        )
        if run.returncode != 0:
            # The tasks as the gateway saw them, with their logs, say why.
            full = urllib.request.Request(f"{url}/ga4gh/tes/v1/tasks?view=FULL",
                                          headers={"Authorization": f"Bearer {TOKEN}"})
            tasks = urllib.request.urlopen(full).read().decode()
            raise AssertionError(run.stdout + run.stderr[-4000:] + "\ntasks: " + tasks)
        get = lambda key: s3.get_object(Bucket="snakemake", Key=key)["Body"].read()
        assert get("run/upper.txt") == b"HELLO TES\n"
        assert get("run/count.txt") == b"10\n"
        assert get("run/result.txt") == b"HELLO TES\n10\n"
        tasks = urllib.request.Request(f"{url}/ga4gh/tes/v1/tasks?view=MINIMAL",
                                       headers={"Authorization": f"Bearer {TOKEN}"})
        import json
        states = [t["state"] for t in json.load(urllib.request.urlopen(tasks))["tasks"]]
        assert states == ["COMPLETE"] * 3, states
    finally:
        gateway.terminate()
        gateway.wait(timeout=20)
        moto_proc.terminate()
        moto_proc.wait(timeout=20)

"""The TES clients' harness: the real `offload serve` binary, its local provider running real
processes with the binary itself as its filer, and the TES API at /ga4gh/tes/v1. The staging
allow-list lets tenant `clients` read and write one folder of the test's."""

import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
OFFLOAD = os.path.abspath(os.environ.get("OFFLOAD_BIN", ROOT / "target" / "debug" / "offload"))
TOKEN = "tes-clients-token-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, url, files):
        self.url = url
        #: A folder the tenant's tasks may read from and write to (file://).
        self.files = files


def start(work, extra_config="", env=None):
    """Starts `offload serve` in `work`; its URL."""
    port = free_port()
    (work / "offload.toml").write_text(
        f"""
listen = "127.0.0.1:{port}"
[store]
path = "{work}/offload.db"
synchronous_full = false
[[auth.tokens]]
token = "{TOKEN}"
tenant = "clients"
[providers.local]
kind = "local"
workdir = "{work}/local"
grace_seconds = 1
poll_interval_ms = 50
filer = "{OFFLOAD}"
{extra_config}
"""
    )
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen([OFFLOAD, "serve", "--config", "offload.toml"], cwd=work,
                            env=env or os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/readyz", timeout=1)
            break
        except OSError:
            assert proc.poll() is None, "offload serve died: " + (work / "serve.log").read_text()
            assert time.time() < deadline, "offload serve did not get ready"
            time.sleep(0.1)
    return proc, url


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    work = tmp_path_factory.mktemp("gateway")
    files = work / "files"
    files.mkdir()
    staging = f'[staging.tenants.clients]\nread = ["file://{files}/"]\nwrite = ["file://{files}/"]\n'
    proc, url = start(work, staging)
    yield Gateway(url, files)
    proc.terminate()
    proc.wait(timeout=20)

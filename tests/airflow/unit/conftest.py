"""Unit tests of the airflow-provider-offload package on whichever Airflow runs them (tests/run.sh
runs them on 2.11, 3.0, 3.1, 3.2 and 3.3): the hook, operator and trigger against a fake
gateway behind `httpx.MockTransport`, with no Airflow component running.

`FakeGateway` answers like the real one where the package depends on it: the Idempotency-Key
(1 to 255 visible ASCII characters; the same key with another body is a 409), a job name of
at most 253 characters, label selectors, long-polls that walk a job through its states, log
tails, cancels. Failures are scripted per route (`fail`)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

# Before Airflow is imported: a home of its own, unit test mode (operators may be executed
# outside a task), and the connection the package's default conn id names.
_HOME = tempfile.mkdtemp(prefix="offload-airflow-unit-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(_HOME, "dags")
from .fakes import GATEWAY, TOKEN, FakeGateway, RecordingLog  # noqa: E402

os.environ["AIRFLOW_CONN_OFFLOAD_DEFAULT"] = json.dumps({"conn_type": "offload", "host": GATEWAY, "password": TOKEN})

import httpx  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    """A FakeGateway behind every httpx client the package makes (the transports it builds
    are replaced; what it passes them, TLS settings included, is kept in `transports`)."""
    fake = FakeGateway()
    fake.transports = []  # type: ignore[attr-defined]

    def transport(**kwargs: Any) -> httpx.MockTransport:
        fake.transports.append(kwargs)  # type: ignore[attr-defined]
        return httpx.MockTransport(fake.handler)

    monkeypatch.setattr(httpx, "HTTPTransport", transport)
    monkeypatch.setattr(httpx, "AsyncHTTPTransport", transport)
    return fake


@pytest.fixture
def hook_log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    """What every OffloadHook logs (its retries)."""
    from offload_airflow.hook import OffloadHook

    log = RecordingLog()
    monkeypatch.setattr(OffloadHook, "log", property(lambda self: log))
    return log

"""OffloadHook and the provider info: the connection's settings and form, test_connection,
Retry-After, and what Airflow's provider manager makes of the package on this version."""

from __future__ import annotations

import json
import ssl
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from .fakes import FakeGateway, problem

from offload_airflow.hook import OffloadHook, retry_after


def with_connection(monkeypatch: pytest.MonkeyPatch, **extra: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OFFLOAD_DEFAULT", json.dumps(
        {"conn_type": "offload", "host": "https://gateway.test", "password": "unit-test-token", "extra": extra}))


def test_test_connection_checks_readiness_then_the_token(gateway: FakeGateway) -> None:
    ok, message = OffloadHook().test_connection()
    assert ok, message
    assert [(r.method, r.url.path, dict(r.url.params)) for r in gateway.requests] == [
        ("GET", "/readyz", {}), ("GET", "/v1/jobs", {"limit": "1"})]


def test_test_connection_reports_a_bad_token(gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OFFLOAD_DEFAULT", json.dumps(
        {"conn_type": "offload", "host": "http://gateway.test:8080", "password": "wrong-token"}))
    ok, message = OffloadHook().test_connection()
    assert not ok and "refused the token" in message and "401" in message


def test_test_connection_reports_a_gateway_that_is_not_ready(gateway: FakeGateway) -> None:
    gateway.fail("GET", r"^/readyz$", httpx.Response(503, text="the store does not answer"))
    ok, message = OffloadHook().test_connection()
    assert not ok and "not ready" in message and "503" in message


def test_tls_verification_ca_bundle_and_timeout_come_from_the_connection(
        gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    with_connection(monkeypatch, ca_bundle=certifi.where(), request_timeout=7)
    with OffloadHook().get_conn() as client:
        assert client.timeout.connect == 7 and client.timeout.read == 7 + 150
    assert isinstance(gateway.transports[-1]["verify"], ssl.SSLContext)  # type: ignore[attr-defined]
    with_connection(monkeypatch, verify=False)
    OffloadHook().get_conn().close()
    assert gateway.transports[-1]["verify"] is False  # type: ignore[attr-defined]
    # As the Airflow 2 form stores its fields.
    with_connection(monkeypatch, extra__offload__verify="false", extra__offload__request_timeout="3")
    with OffloadHook().get_conn() as client:
        assert client.timeout.connect == 3
    assert gateway.transports[-1]["verify"] is False  # type: ignore[attr-defined]
    with_connection(monkeypatch)
    OffloadHook().get_conn().close()
    assert gateway.transports[-1]["verify"] is True  # type: ignore[attr-defined]


def test_a_host_without_a_scheme(gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OFFLOAD_DEFAULT", "offload://:unit-test-token@gateway.test:8080")
    assert OffloadHook().gateway_url() == "http://gateway.test:8080"


def test_the_async_client_reads_the_same_connection(gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    with_connection(monkeypatch, request_timeout=5, max_outage_seconds=9)
    hook = OffloadHook()

    async def client_timeout() -> float | None:
        async with await hook.aget_conn() as client:
            return client.timeout.connect
    assert asyncio.run(client_timeout()) == 5 and hook.max_outage_seconds == 9


def test_retry_after_in_seconds_and_as_a_date() -> None:
    request = httpx.Request("GET", "http://gateway.test/")
    assert retry_after(httpx.Response(429, headers={"Retry-After": "3"}, request=request)) == 3
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after(httpx.Response(503, headers={"Retry-After": later}, request=request)) or 0) <= 30
    assert retry_after(httpx.Response(503, request=request)) is None


def test_the_pause_honours_retry_after(gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch,
                                       hook_log: Any) -> None:
    slept: list[float] = []
    monkeypatch.setattr("offload_airflow.hook.time.sleep", slept.append)
    gateway.fail("GET", r"^/v1/jobs$", problem(429, "too many", {"Retry-After": "7"}), problem(502, "bad gateway"))
    OffloadHook().find_jobs({"dag_id": "x"})
    # 7 s as asked, then the backoff's first second where the gateway asked for nothing.
    assert slept == [7.0, 1.0]


def test_the_provider_info() -> None:
    from offload_airflow import __version__, get_provider_info

    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-offload" and info["versions"] == [__version__]
    assert info["extra-links"] == ["offload_airflow.links.OffloadJobLink"]
    (connection,) = info["connection-types"]
    assert connection["connection-type"] == "offload"
    assert connection["hook-class-name"] == "offload_airflow.hook.OffloadHook"
    assert set(connection["conn-fields"]) == {"verify", "ca_bundle", "request_timeout", "max_outage_seconds"}
    assert all(field["label"] and field["schema"]["type"] for field in connection["conn-fields"].values())
    assert connection["ui-field-behaviour"]["relabeling"] == {"host": "Gateway URL", "password": "Token"}


def test_the_package_version_comes_from_one_place() -> None:
    from importlib.metadata import version

    from offload_airflow import __version__

    assert version("airflow-provider-offload") == __version__


def test_airflow_shows_the_connection_form_and_the_link() -> None:
    """What this Airflow's provider manager makes of the package: the connection type and its
    hook, the link, and the form: from the provider info on 3.2 and later, from the hook's
    methods before (which need the Flask AppBuilder UI: Airflow 2, or the fab provider)."""
    from airflow.providers_manager import ProvidersManager

    from offload_airflow.version_compat import AIRFLOW_V_3_0_PLUS, _airflow_version

    manager = ProvidersManager()
    assert "airflow-provider-offload" in manager.providers
    assert manager.hooks["offload"].hook_class_name == "offload_airflow.hook.OffloadHook"
    assert "offload_airflow.links.OffloadJobLink" in manager.extra_links_class_names
    try:
        import wtforms  # noqa: F401
        has_form_library = True
    except ImportError:
        has_form_library = False
    if _airflow_version() >= (3, 2, 0) or has_form_library:
        widgets = {name for name in manager.connection_form_widgets if name.startswith("extra__offload__")}
        assert widgets == {f"extra__offload__{n}" for n in ("verify", "ca_bundle", "request_timeout",
                                                            "max_outage_seconds")}
        behaviour = manager.field_behaviours["offload"]
        assert behaviour["relabeling"] == {"host": "Gateway URL", "password": "Token"}
        assert set(behaviour["hidden_fields"]) == {"schema", "login", "port"}
    else:
        # Airflow 3.0 and 3.1 without the fab provider show no provider's form fields; the
        # hook's methods are what they read once it is installed.
        assert AIRFLOW_V_3_0_PLUS
        assert OffloadHook.get_ui_field_behaviour()["relabeling"] == {"host": "Gateway URL", "password": "Token"}


def test_a_submit_from_a_traced_task_continues_its_trace(gateway: FakeGateway) -> None:
    """Within a span (as Airflow 3's task runner runs a task with `[traces] otel_on`), the
    submit carries the span's `traceparent`; outside one it carries none."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("worker.task") as span:
        OffloadHook().submit({"image": "alpine:3", "command": ["true"]}, "traced-1")
        context = span.get_span_context()
    OffloadHook().submit({"image": "alpine:3", "command": ["true"]}, "untraced-1")
    traced, untraced = gateway.submits()
    flags = int(context.trace_flags)
    assert flags & 1, "sampled"
    assert traced.headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    assert traced.headers["idempotency-key"] == "traced-1"
    assert "traceparent" not in untraced.headers

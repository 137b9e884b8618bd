"""The offload API as Airflow sees it: a connection type and the few calls the operator makes.

One hook serves the worker (synchronous calls) and the triggerer (the long-poll wait and
the cancel, which must not block its event loop), so both talk to the gateway the same way:

- a request the gateway asks to be sent again (429 or 503 with `Retry-After`), any other
  5xx, and a request that never got an answer are sent again, after `Retry-After` when the
  gateway gave one, else after a backoff from 1 s doubling to 30 s, for up to the
  connection's `max_outage_seconds` (300); a submit is sent again with the same
  Idempotency-Key, so it never makes a second job;
- 400, 401, 403 and 422 raise `OffloadRequestRefused`, an `AirflowFailException`: the same
  request cannot succeed on a later try, so the task fails without using its retries;
- any other error status raises `OffloadError`.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import httpx
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseHook

from offload_airflow.connection_form import (
    CONN_FIELDS,
    MAX_OUTAGE_SECONDS,
    REQUEST_TIMEOUT_SECONDS,
    UI_FIELD_BEHAVIOUR,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

#: The longest pause between two tries of a request without `Retry-After`.
MAX_BACKOFF_SECONDS = 30.0
#: The statuses after which the same request would be refused again.
REFUSED = frozenset({400, 401, 403, 422})

#: What `OffloadHook.await_job` calls after each answer that is not the last.
OnPoll = Callable[[httpx.AsyncClient, dict[str, Any]], Awaitable[None]]

class OffloadError(AirflowException):
    """The gateway answered with an error; the message carries its problem detail."""

    def __init__(self, response: httpx.Response):
        self.status = response.status_code
        super().__init__(f"{response.request.method} {response.request.url.path}: {describe(response)}")


class OffloadRequestRefused(OffloadError, AirflowFailException):
    """400, 401, 403 or 422: a request the gateway will refuse again. The task fails at once,
    without retries."""


class OffloadUnavailable(AirflowException):
    """The gateway did not answer, or answered 429 or 5xx, for longer than the outage limit."""


def describe(response: httpx.Response) -> str:
    """An RFC 9457 problem (or any error body) as one line, fields at fault included."""
    try:
        problem = response.json()
    except ValueError:
        return f"{response.status_code} {response.text.strip()[:500]}"
    if not isinstance(problem, dict):
        return f"{response.status_code} {response.text.strip()[:500]}"
    fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in problem.get("errors") or [])
    detail = problem.get("detail") or fields
    return f"{problem.get('status', response.status_code)} {problem.get('title', '')}: {detail}"


def trace_headers() -> dict[str, str]:
    """The W3C `traceparent` (and `tracestate`) of the span the task runs in, so that the
    gateway's trace of the submit continues the task's. Airflow 3's task runner runs each
    task in a `worker.TASK_ID` span when its tracing is on (`[traces] otel_on`); otherwise
    there is no span, or no OpenTelemetry, and nothing is sent."""
    try:
        from opentelemetry.propagate import inject
    except ImportError:
        return {}
    carrier: dict[str, str] = {}
    inject(carrier)
    return {name: value for name, value in carrier.items() if name in ("traceparent", "tracestate")}


def retryable(status: int) -> bool:
    """429 and 5xx: the gateway asks for the request again (or cannot answer it now)."""
    return status == 429 or status >= 500


def retry_after(response: httpx.Response) -> float | None:
    """The pause the gateway asked for: `Retry-After` in seconds, or as an HTTP date."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def checked(response: httpx.Response) -> Any:
    """The answer's body (JSON, or text), or the error it carries raised."""
    if response.is_error:
        if response.status_code in REFUSED:
            raise OffloadRequestRefused(response)
        raise OffloadError(response)
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def _flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("false", "0", "no", "off")


def _number(value: Any, default: float, name: str) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AirflowException(f"offload connection: {name} must be a number, not {value!r}") from None


class _Retry:
    """The pauses between the tries of one call, within its outage limit."""

    def __init__(self, limit: float):
        self.deadline = time.monotonic() + limit
        self.limit = limit
        self.backoff = 1.0

    def pause(self, response: httpx.Response | None, problem: str) -> float:
        """How long to wait before the next try; raises once the limit would be passed."""
        delay = retry_after(response) if response is not None else None
        if delay is None:
            delay, self.backoff = self.backoff, min(self.backoff * 2, MAX_BACKOFF_SECONDS)
        if time.monotonic() + delay > self.deadline:
            raise OffloadUnavailable(f"offload gateway unavailable for {self.limit:.0f} s: {problem}")
        return delay


class OffloadHook(BaseHook):
    """Talks to one offload gateway.

    The connection (type `offload`): Host is the gateway's URL (`https://offload.example.com`,
    or a host name, with Schema and Port if needed), Password its bearer token, and the
    extra may hold `verify` (check the gateway's TLS certificate; default true), `ca_bundle`
    (a PEM file of the CAs that sign it), `request_timeout` (seconds one request may take;
    default 30) and `max_outage_seconds` (how long a call goes on retrying; default 300).

    :param offload_conn_id: the connection's id.
    :param request_timeout: overrides the connection's `request_timeout`.
    :param max_outage_seconds: overrides the connection's `max_outage_seconds`.
    """

    conn_name_attr = "offload_conn_id"
    default_conn_name = "offload_default"
    conn_type = "offload"
    hook_name = "Offload"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The form's standard fields, for Airflow before 3.2 (3.2 and later read
        `ui-field-behaviour` from the provider info)."""
        return {key: value.copy() for key, value in UI_FIELD_BEHAVIOUR.items()}

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The form's own fields, for Airflow before 3.2 (3.2 and later read `conn-fields`
        from the provider info). Needs the Flask AppBuilder UI (Airflow 2, or the fab
        provider)."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, StringField
        from wtforms.validators import Optional

        def text(name: str) -> StringField:
            field = CONN_FIELDS[name]
            return StringField(lazy_gettext(field["label"]), widget=BS3TextFieldWidget(),
                               description=field["description"], validators=[Optional()])

        verify = CONN_FIELDS["verify"]
        return {
            "verify": BooleanField(lazy_gettext(verify["label"]), default=True, description=verify["description"]),
            "ca_bundle": text("ca_bundle"),
            "request_timeout": text("request_timeout"),
            "max_outage_seconds": text("max_outage_seconds"),
        }

    def __init__(
        self,
        offload_conn_id: str = default_conn_name,
        request_timeout: float | None = None,
        max_outage_seconds: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.offload_conn_id = offload_conn_id
        self._request_timeout = request_timeout
        self._max_outage_seconds = max_outage_seconds
        self.max_outage_seconds = MAX_OUTAGE_SECONDS if max_outage_seconds is None else max_outage_seconds

    # --- the connection ---

    def _settings(self, conn: Connection, extra: dict[str, Any]) -> dict[str, Any]:
        """httpx.Client's arguments for this connection (its outage limit kept on the hook)."""
        host = (conn.host or "").strip().rstrip("/")
        if not host:
            raise AirflowException(f"connection {self.offload_conn_id!r}: Host must be the gateway's URL")
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}" + (f":{conn.port}" if conn.port else "")

        def setting(name: str) -> Any:
            # The new UI stores a form field under its name, the old one with a prefix.
            value = extra.get(name)
            return extra.get(f"extra__offload__{name}") if value is None else value

        timeout = self._request_timeout
        if timeout is None:
            timeout = _number(setting("request_timeout"), REQUEST_TIMEOUT_SECONDS, "request_timeout")
        if self._max_outage_seconds is None:
            self.max_outage_seconds = _number(setting("max_outage_seconds"), MAX_OUTAGE_SECONDS, "max_outage_seconds")
        verify: bool | ssl.SSLContext = _flag(setting("verify"), True)
        if verify and (ca_bundle := setting("ca_bundle")):
            verify = ssl.create_default_context(cafile=str(ca_bundle))
        headers = {"Accept": "application/json"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        return {
            "base_url": host,
            "headers": headers,
            # A long-poll holds the request for up to `wait` seconds on top of the usual time.
            "timeout": httpx.Timeout(timeout, read=timeout + 150),
            "verify": verify,
        }

    def gateway_url(self) -> str:
        """The gateway's base URL, as the connection gives it."""
        conn = self.get_connection(self.offload_conn_id)
        return str(self._settings(conn, conn.extra_dejson)["base_url"])

    def get_conn(self) -> httpx.Client:
        conn = self.get_connection(self.offload_conn_id)
        settings = self._settings(conn, conn.extra_dejson)
        return httpx.Client(transport=httpx.HTTPTransport(verify=settings.pop("verify")), **settings)

    async def aget_conn(self) -> httpx.AsyncClient:
        # The compat helpers read the connection without blocking the event loop, on every
        # Airflow version (Airflow before 3.3.2 masks secrets with a blocking call).
        from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

        conn = await get_async_connection(self.offload_conn_id, hook=self)
        settings = self._settings(conn, await get_async_extra_dejson(conn))
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(verify=settings.pop("verify")), **settings)

    def test_connection(self) -> tuple[bool, str]:
        """What the connection form's Test button runs: the gateway's readiness (no token),
        then a one-job list with the token."""
        try:
            with self.get_conn() as client:
                ready = client.get("/readyz")
                if ready.is_error:
                    return False, f"the gateway is not ready: {describe(ready)}"
                listed = client.get("/v1/jobs", params={"limit": 1})
                if listed.is_error:
                    return False, f"the gateway refused the token: {describe(listed)}"
            return True, f"the gateway at {client.base_url} is ready and accepts the token"
        except Exception as e:  # noqa: BLE001 - the form shows any failure as text
            return False, f"{type(e).__name__}: {e}"

    # --- requests, with the retries the gateway asks for ---

    def _outage(self, outage: float | None) -> float:
        return self.max_outage_seconds if outage is None else min(outage, self.max_outage_seconds)

    def request(self, client: httpx.Client, method: str, path: str, *, retry: bool = True,
                outage: float | None = None, **kwargs: Any) -> Any:
        """One call, sent again on 429, 5xx or no answer within the outage limit (or
        `outage`, when shorter); with `retry=False`, sent once."""
        attempts = _Retry(self._outage(outage))
        while True:
            response: httpx.Response | None = None
            try:
                response = client.request(method, path, **kwargs)
                if not (retry and retryable(response.status_code)):
                    return checked(response)
                problem = describe(response)
            except httpx.TransportError as e:
                if not retry:
                    raise
                problem = repr(e)
            delay = attempts.pause(response, problem)
            self.log.warning("offload %s %s: %s; sending it again in %.1f s", method, path, problem, delay)
            time.sleep(delay)

    async def arequest(self, client: httpx.AsyncClient, method: str, path: str, *, retry: bool = True,
                       outage: float | None = None, **kwargs: Any) -> Any:
        """`request` for the event loop."""
        attempts = _Retry(self._outage(outage))
        while True:
            response: httpx.Response | None = None
            try:
                response = await client.request(method, path, **kwargs)
                if not (retry and retryable(response.status_code)):
                    return checked(response)
                problem = describe(response)
            except httpx.TransportError as e:
                if not retry:
                    raise
                problem = repr(e)
            delay = attempts.pause(response, problem)
            self.log.warning("offload %s %s: %s; sending it again in %.1f s", method, path, problem, delay)
            await asyncio.sleep(delay)

    # --- the calls ---

    def submit(self, spec: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """POST /v1/jobs; the same key returns the job it made before instead of a new one."""
        with self.get_conn() as client:
            headers = {"Idempotency-Key": idempotency_key, **trace_headers()}
            return self.request(client, "POST", "/v1/jobs", json=spec, headers=headers)

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self.get_conn() as client:
            return self.request(client, "GET", f"/v1/jobs/{job_id}")

    def find_jobs(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """The jobs carrying all these labels, newest first (at most 100)."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        with self.get_conn() as client:
            return self.request(client, "GET", "/v1/jobs", params={"labels": selector, "limit": 100})["jobs"]

    def logs(self, job_id: str, tail: int | None = None, outage: float | None = None) -> str:
        """The job's log as the gateway holds it (the provider's, or the stored tail once
        released): its last `tail` lines, or all of it."""
        params = {} if tail is None else {"tail": tail}
        with self.get_conn() as client:
            text = self.request(client, "GET", f"/v1/jobs/{job_id}/logs", params=params,
                                headers={"Accept": "text/plain"}, outage=outage)
        return text if isinstance(text, str) else ""

    def cancel(self, job_id: str) -> bool:
        """Asks the gateway to stop the job; False when it had already ended."""
        with self.get_conn() as client:
            try:
                self.request(client, "POST", f"/v1/jobs/{job_id}/cancel")
            except OffloadError as e:
                if e.status == 409:
                    return False
                raise
        return True

    async def acancel(self, job_id: str) -> bool:
        async with await self.aget_conn() as client:
            try:
                await self.arequest(client, "POST", f"/v1/jobs/{job_id}/cancel")
            except OffloadError as e:
                if e.status == 409:
                    return False
                raise
        return True

    async def await_job(
        self,
        job_id: str,
        wait_seconds: int = 30,
        on_poll: OnPoll | None = None,
    ) -> dict[str, Any]:
        """Long-polls `GET /v1/jobs/{id}?wait=` until the job ends; one request per state change.

        `on_poll(client, job)` runs after each answer that is not the last (the log's new
        lines are copied there). Each poll is retried as any call is (see the module), so the
        wait outlasts a gateway restarting.
        """
        async with await self.aget_conn() as client:
            while True:
                job = await self.arequest(client, "GET", f"/v1/jobs/{job_id}", params={"wait": wait_seconds})
                if job["terminal"]:
                    return job
                if on_poll is not None:
                    await on_poll(client, job)

"""The offload API as Airflow sees it: a connection type and the few calls the operator makes.

One hook serves the worker (synchronous calls) and the triggerer (the long-poll wait and
the cancel, which must not block its event loop), so both talk to the gateway the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException

#: How long a wait may last without the gateway answering before it gives up.
MAX_OUTAGE_SECONDS = 300

#: What `OffloadHook.await_job` calls after each answer that is not the last.
OnPoll = Callable[[httpx.AsyncClient, dict[str, Any]], Awaitable[None]]


class OffloadError(AirflowException):
    """The gateway refused a request; the message carries its problem detail."""

    def __init__(self, response: httpx.Response):
        self.status = response.status_code
        super().__init__(f"{response.request.method} {response.request.url.path}: {describe(response)}")


def describe(response: httpx.Response) -> str:
    """An RFC 9457 problem (or any error body) as one line, fields at fault included."""
    try:
        problem = response.json()
    except ValueError:
        return f"{response.status_code} {response.text.strip()[:500]}"
    fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in problem.get("errors", []))
    return f"{problem.get('status', response.status_code)} {problem.get('title', '')}: {problem.get('detail') or fields}"


def _checked(response: httpx.Response) -> Any:
    if response.is_error:
        raise OffloadError(response)
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


class OffloadHook(BaseHook):
    """Talks to one offload gateway: the connection's Host is its URL, Password its bearer token."""

    conn_name_attr = "offload_conn_id"
    default_conn_name = "offload_default"
    conn_type = "offload"
    hook_name = "offload"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "login", "port", "extra"],
            "relabeling": {"host": "Gateway URL", "password": "Token"},
            "placeholders": {"host": "http://offload.offload.svc:8080", "password": "a token from [auth] tokens"},
        }

    def __init__(self, offload_conn_id: str = default_conn_name, request_timeout: float = 30.0):
        super().__init__()
        self.offload_conn_id = offload_conn_id
        self.request_timeout = request_timeout

    def _client_options(self, conn) -> dict[str, Any]:
        host = (conn.host or "").rstrip("/")
        if not host:
            raise AirflowException(f"connection {self.offload_conn_id!r}: Host must be the gateway's URL")
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}" + (f":{conn.port}" if conn.port else "")
        headers = {"Accept": "application/json"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        # A long-poll holds the request for up to `wait` seconds on top of the usual time.
        timeout = httpx.Timeout(self.request_timeout, read=self.request_timeout + 150)
        return {"base_url": host, "headers": headers, "timeout": timeout}

    def get_conn(self) -> httpx.Client:
        conn = self.get_connection(self.offload_conn_id)
        return httpx.Client(transport=httpx.HTTPTransport(retries=3), **self._client_options(conn))

    async def aget_conn(self) -> httpx.AsyncClient:
        conn = await self.aget_connection(self.offload_conn_id)
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(retries=3), **self._client_options(conn))

    def submit(self, spec: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """POST /v1/jobs; the same key returns the job it made before instead of a new one."""
        with self.get_conn() as client:
            return _checked(client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": idempotency_key}))

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self.get_conn() as client:
            return _checked(client.get(f"/v1/jobs/{job_id}"))

    def find_jobs(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """The jobs carrying all these labels, newest first."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        with self.get_conn() as client:
            return _checked(client.get("/v1/jobs", params={"labels": selector, "limit": 100}))["jobs"]

    def logs(self, job_id: str) -> str:
        """The job's log as the gateway holds it (the provider's, or the stored tail once released)."""
        with self.get_conn() as client:
            return _checked(client.get(f"/v1/jobs/{job_id}/logs", headers={"Accept": "text/plain"}))

    def cancel(self, job_id: str) -> bool:
        """Asks the gateway to stop the job; False when it had already ended."""
        with self.get_conn() as client:
            return _cancelled(client.post(f"/v1/jobs/{job_id}/cancel"))

    async def acancel(self, job_id: str) -> bool:
        async with await self.aget_conn() as client:
            return _cancelled(await client.post(f"/v1/jobs/{job_id}/cancel"))

    async def await_job(
        self,
        job_id: str,
        wait_seconds: int = 30,
        on_poll: OnPoll | None = None,
    ) -> dict[str, Any]:
        """Long-polls `GET /v1/jobs/{id}?wait=` until the job ends; one request per state change.

        `on_poll(client, job)` runs after each answer that is not the last (the trigger copies
        the log's new lines there). Connection failures and 5xx answers (a gateway
        restarting, say) are retried with backoff for up to MAX_OUTAGE_SECONDS; a 4xx ends
        the wait at once.
        """
        loop = asyncio.get_running_loop()
        outage_since, backoff = None, 1.0
        async with await self.aget_conn() as client:
            while True:
                try:
                    response = await client.get(f"/v1/jobs/{job_id}", params={"wait": wait_seconds})
                    if response.status_code < 500:
                        job = _checked(response)
                        if job["terminal"]:
                            return job
                        outage_since, backoff = None, 1.0
                        if on_poll is not None:
                            await on_poll(client, job)
                        continue
                    problem = describe(response)
                except httpx.TransportError as e:
                    problem = repr(e)
                outage_since = outage_since or loop.time()
                if loop.time() - outage_since > MAX_OUTAGE_SECONDS:
                    raise AirflowException(f"offload gateway unreachable for {MAX_OUTAGE_SECONDS} s: {problem}")
                self.log.warning("waiting for offload job %s: %s; retrying in %.0f s", job_id, problem, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


class LogProgress:
    """A running job's log as the task log shows it: at each poll, the lines not shown yet.

    Each poll reads only the log's last `lines` lines (`GET .../logs?tail=`), so neither the
    read nor what reaches the task log grows with the log. The new lines are those after
    the longest overlap with the previous read; when there is none and the read was full,
    lines in between were not shown (the whole log still comes at the end). A line
    without its newline yet waits for the next poll.
    """

    def __init__(self, job_id: str, lines: int):
        self.job_id = job_id
        self.lines = lines
        self.seen: list[str] = []

    async def poll(self, client: httpx.AsyncClient) -> tuple[list[str], bool]:
        """The new lines, and whether some lines before them were skipped."""
        response = await client.get(
            f"/v1/jobs/{self.job_id}/logs", params={"tail": self.lines}, headers={"Accept": "text/plain"}
        )
        text = _checked(response)
        return self.update(text if isinstance(text, str) else "")

    def update(self, text: str) -> tuple[list[str], bool]:
        read = text.splitlines()
        full = len(read) >= self.lines
        if text and not text.endswith("\n"):
            read = read[:-1]
        for overlap in range(min(len(self.seen), len(read)), 0, -1):
            if self.seen[-overlap:] == read[:overlap]:
                new, skipped = read[overlap:], False
                break
        else:
            new, skipped = read, full and bool(read)
        self.seen = read
        return new, skipped


def log_progress(job_id: str, lines: int, log: Any) -> OnPoll | None:
    """An `await_job` `on_poll` that copies the job's new log lines into `log` (the task
    log), at most `lines` per poll; None when `lines` is 0. Best effort: a failed read is
    skipped and the wait goes on."""
    if lines <= 0:
        return None
    progress = LogProgress(job_id, lines)

    async def on_poll(client: httpx.AsyncClient, job: dict[str, Any]) -> None:
        try:
            new, skipped = await progress.poll(client)
        except Exception as e:  # noqa: BLE001
            log.debug("reading the log of offload job %s: %s", job_id, e)
            return
        if skipped:
            log.info("[offload] (earlier lines not shown; the whole log comes at the end)")
        for line in new:
            log.info("[offload] %s", line)

    return on_poll


def _cancelled(response: httpx.Response) -> bool:
    if response.status_code == 409:
        return False
    _checked(response)
    return True

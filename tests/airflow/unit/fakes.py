"""The fakes the unit tests share (see conftest.py): a gateway behind httpx.MockTransport,
a recording logger, a task instance and its context."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import httpx

GATEWAY = "http://gateway.test:8080"
TOKEN = "unit-test-token"


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A problem answer as the gateway writes it."""
    return httpx.Response(status, json={"type": "about:blank", "title": "error", "status": status, "detail": detail},
                          headers={"content-type": "application/problem+json", **(headers or {})})


class FakeGateway:
    """The gateway as the package sees it. Each job walks through `states` (one step per
    status read, the last one repeated) and has a log per step (`logs`)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.keys: dict[str, tuple[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.failures: list[tuple[str, re.Pattern[str], list[httpx.Response]]] = []
        self.script: dict[str, dict[str, Any]] = {}
        #: What the next submitted job does: states to walk through, logs, result, cost...
        self.next_job: dict[str, Any] = {}
        self.on_request: Callable[[httpx.Request], None] | None = None

    # --- scripting ---

    def fail(self, method: str, path: str, *responses: httpx.Response) -> None:
        """The next requests of `method` on paths matching `path` get these answers, in order."""
        self.failures.append((method, re.compile(path), list(responses)))

    def add_job(self, labels: dict[str, str], state: str = "succeeded", **fields: Any) -> dict[str, Any]:
        """A job some earlier try made."""
        job_id = str(uuid.uuid4())
        log = fields.pop("log", "")
        job = self._job(job_id, {"name": "earlier", "image": "alpine:3", "labels": labels}, labels)
        job.update(state=state, terminal=state in ("succeeded", "failed", "cancelled"), **fields)
        self.jobs[job_id] = job
        self.order.append(job_id)
        self.script[job_id] = {"states": [state], "logs": [log], "step": 0}
        return job

    def submits(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path == "/v1/jobs"]

    def reads(self, path_part: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET" and path_part in r.url.path]

    # --- the HTTP side ---

    def _job(self, job_id: str, spec: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
        now = datetime.now(timezone.utc).isoformat()
        return {"id": job_id, "state": "queued", "terminal": False, "provider": None, "provider_ref": None,
                "exit_code": None, "reason": None, "result": None, "labels": labels, "created_at": now,
                "started_at": None, "finished_at": None, "attempts": 0, "spec": spec, "cost": None}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)
        for method, pattern, responses in self.failures:
            if responses and request.method == method and pattern.search(request.url.path):
                return responses.pop(0)
        path, method = request.url.path, request.method
        if path == "/readyz":
            return httpx.Response(200, text="ready")
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return problem(401, "missing or bad token")
        if path == "/v1/jobs" and method == "POST":
            return self._submit(request)
        if path == "/v1/jobs" and method == "GET":
            return self._list(request)
        match = re.fullmatch(r"/v1/jobs/([^/]+)(/logs|/cancel)?", path)
        if not match or match.group(1) not in self.jobs:
            return problem(404, "no such job")
        job_id, sub = match.groups()
        if sub == "/logs":
            script = self.script[job_id]
            text = script["logs"][min(script["step"], len(script["logs"])) - 1] if script["step"] else script["logs"][0]
            if "tail" in request.url.params:
                lines = text.splitlines(keepends=True)
                text = "".join(lines[-int(request.url.params["tail"]):])
            return httpx.Response(200, text=text, headers={"content-type": "text/plain; charset=utf-8"})
        if sub == "/cancel":
            job = self.jobs[job_id]
            if job["terminal"]:
                return problem(409, "the job has ended")
            job.update(state="cancelled", terminal=True, reason="cancelled")
            return httpx.Response(202, json=job)
        return self._status(job_id)

    def _submit(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key", "")
        if not re.fullmatch(r"[\x21-\x7e]{1,255}", key):
            return problem(400, "Idempotency-Key: 1 to 255 visible ASCII characters")
        body = json.loads(request.content)
        if len(body.get("name") or "") > 253:
            return problem(422, "name: is longer than 253 characters")
        if key in self.keys:
            job_id, earlier = self.keys[key]
            if earlier != body:
                return problem(409, "the Idempotency-Key was used with another body")
            return httpx.Response(200, json=self.jobs[job_id])
        job_id = str(uuid.uuid4())
        plan = {"states": ["running", "succeeded"], "logs": ["", ""], "result": None, "exit_code": 0,
                "reason": None, "cost": None, "provider": "local", **copy.deepcopy(self.next_job)}
        job = self._job(job_id, body, body.get("labels", {}))
        self.jobs[job_id] = job
        self.order.append(job_id)
        self.keys[key] = (job_id, body)
        self.script[job_id] = {**plan, "step": 0}
        return httpx.Response(201, json=job)

    def _status(self, job_id: str) -> httpx.Response:
        job, script = self.jobs[job_id], self.script[job_id]
        if not job["terminal"]:
            state = script["states"][min(script["step"], len(script["states"]) - 1)]
            script["step"] += 1
            job["state"] = state
            if state in ("succeeded", "failed", "cancelled"):
                job.update(terminal=True, result=script.get("result"), provider=script.get("provider"),
                           cost=script.get("cost"), finished_at=datetime.now(timezone.utc).isoformat())
                job["exit_code"] = script.get("exit_code") if state != "cancelled" else None
                job["reason"] = script.get("reason") or (None if state == "succeeded" else f"exited with code {job['exit_code']}")
        return httpx.Response(200, json=job)

    def _list(self, request: httpx.Request) -> httpx.Response:
        wanted = dict(pair.split("=", 1) for pair in request.url.params.get("labels", "").split(",") if pair)
        found = [self.jobs[j] for j in reversed(self.order)
                 if all(self.jobs[j]["labels"].get(k) == v for k, v in wanted.items())]
        return httpx.Response(200, json={"jobs": found[: int(request.url.params.get("limit", 50))], "next_cursor": None})


class RecordingLog:
    """A logger that keeps what it is given, formatted."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _add(self, level: str, message: str, *args: Any, **_: Any) -> None:
        self.lines.append((level, message % args if args else message))

    def debug(self, message: str, *args: Any, **kw: Any) -> None:
        self._add("debug", message, *args, **kw)

    def info(self, message: str, *args: Any, **kw: Any) -> None:
        self._add("info", message, *args, **kw)

    def warning(self, message: str, *args: Any, **kw: Any) -> None:
        self._add("warning", message, *args, **kw)

    warn = warning

    def error(self, message: str, *args: Any, **kw: Any) -> None:
        self._add("error", message, *args, **kw)

    def exception(self, message: str, *args: Any, **kw: Any) -> None:
        self._add("error", message, *args, **kw)

    def text(self, level: str | None = None) -> str:
        return "\n".join(m for lv, m in self.lines if level is None or lv == level)


class FakeTI:
    """The task instance an operator sees in its context."""

    def __init__(self, dag_id: str, task_id: str, run_id: str = "manual__2026-01-02T03:04:05+00:00",
                 map_index: int = -1, try_number: int = 1):
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, run_id
        self.map_index, self.try_number = map_index, try_number
        self.start_date = datetime.now(timezone.utc)
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any, **_: Any) -> None:
        self.xcoms[key] = value


def context_for(operator: Any, try_number: int = 1, clear_number: int = 0, map_index: int = -1,
                run_id: str = "manual__2026-01-02T03:04:05+00:00") -> dict[str, Any]:
    ti = FakeTI(operator.dag_id, operator.task_id, run_id=run_id, map_index=map_index, try_number=try_number)
    return {"ti": ti, "task": operator, "dag_run": SimpleNamespace(clear_number=clear_number, run_id=run_id),
            "run_id": run_id, "params": {}}


def operator(**kwargs: Any) -> Any:
    """An OffloadJobOperator in a DAG of its own, its logger recording."""
    from airflow.providers.common.compat.sdk import DAG

    from offload_airflow.operator import OffloadJobOperator

    dag_id = kwargs.pop("dag_id", "unit")
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)):
        kwargs.setdefault("deferrable", False)
        kwargs.setdefault("wait_seconds", 0)
        op = OffloadJobOperator(task_id=kwargs.pop("task_id", "run"), image="alpine:3", **kwargs)
    record(op)
    return op


def record(node: Any) -> RecordingLog:
    """Makes an operator or trigger log into a RecordingLog (where each Airflow version keeps
    its logger: `_log`, or `_cached_logger` on Airflow 3.3)."""
    log = RecordingLog()
    object.__setattr__(node, "_log", log)
    object.__setattr__(node, "_cached_logger", log)
    return log


ONE_HOUR = timedelta(hours=1)

"""The gateway as OffloadExecutor sees it, behind httpx.MockTransport (see
test_executor_unit.py), and the pieces of Airflow an executor is handed: workloads, task
instances to adopt, a clock.

`ExecutorGateway` answers like the real gateway where the executor depends on it: the
Idempotency-Key (the same key and body: the same job, 200; another body: 409 naming the
job), label selectors, jobs newest first with a cursor, `/v1/changes` (each changed job once,
as it is now, oldest change first, `next_cursor` always, `more` when a page is full), cancels
(409 once a job has ended), log tails. Its jobs change only when a test says so
(`set_state`), and a change can be kept out of the feed (`told=False`), as PostgreSQL can
tell a change after a later one's position was passed."""

from __future__ import annotations

import itertools
import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from .fakes import TOKEN, problem

TERMINAL = ("succeeded", "failed", "cancelled")


class Clock:
    """time.monotonic and time.sleep for the executor's module: moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ExecutorGateway:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.bodies: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}
        self.logs: dict[str, str] = {}
        self.events: list[tuple[int, str]] = []
        self.requests: list[httpx.Request] = []
        self.failures: list[tuple[str, re.Pattern[str], list[Any]]] = []
        #: A submit the gateway commits, then whose answer is lost (a read timeout).
        self.lose_answers = 0
        #: Answers a submit with this problem instead (a refusal), when it returns one.
        self.refuse: Any = None
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)

    # --- scripting ---

    def fail(self, method: str, path: str, *answers: Any) -> None:
        """The next requests of `method` on paths matching `path` get these answers (a
        response, or an exception to raise), in order."""
        self.failures.append((method, re.compile(path), list(answers)))

    def add_job(self, labels: dict[str, str], state: str = "running", **fields: Any) -> dict[str, Any]:
        """A job made by someone else (an earlier scheduler)."""
        job = self._new_job({"image": "x", "labels": labels, "args": ["{}"]})
        self.set_state(job["id"], state, **fields)
        return job

    def set_state(self, job_id: str, state: str, told: bool = True, **fields: Any) -> None:
        job = self.jobs[job_id]
        job.update(state=state, terminal=state in TERMINAL, **fields)
        if state == "running" and job["started_at"] is None:
            job["started_at"] = datetime.now(timezone.utc).isoformat()
        if state in TERMINAL:
            job["finished_at"] = datetime.now(timezone.utc).isoformat()
        if told:
            self.events.append((next(self._seq), job_id))

    def submits(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path == "/v1/jobs"]

    def cancels(self) -> list[str]:
        return [r.url.path.split("/")[3] for r in self.requests if r.url.path.endswith("/cancel")]

    def reads(self) -> list[httpx.Request]:
        """Every GET: what a heartbeat's sync costs."""
        return [r for r in self.requests if r.method == "GET"]

    # --- the HTTP side ---

    def _new_job(self, body: dict[str, Any]) -> dict[str, Any]:
        # Ids grow with time, as UUID v7 do.
        job_id = f"{next(self._ids):08x}-0000-7000-8000-{uuid.uuid4().hex[:12]}"
        now = datetime.now(timezone.utc)
        job = {"id": job_id, "state": "queued", "terminal": False, "provider": "local", "attempts": 0,
               "exit_code": None, "reason": None, "labels": dict(body.get("labels") or {}),
               "created_at": now.isoformat(), "started_at": None, "finished_at": None}
        self.jobs[job_id] = job
        self.bodies[job_id] = body
        self.events.append((next(self._seq), job_id))
        return job

    def full(self, job_id: str) -> dict[str, Any]:
        """The job as `GET /v1/jobs/{id}` shows it: with its spec, secrets redacted."""
        spec = json.loads(json.dumps(self.bodies[job_id]))
        if "secret_env" in spec:
            spec["secret_env"] = {k: "<redacted>" for k in spec["secret_env"]}
        return {**self.jobs[job_id], "spec": spec}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for method, pattern, answers in self.failures:
            if answers and request.method == method and pattern.search(request.url.path):
                answer = answers.pop(0)
                if isinstance(answer, Exception):
                    raise answer
                return answer
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return problem(401, "missing or bad token")
        path, method = request.url.path, request.method
        if path == "/v1/jobs" and method == "POST":
            return self._submit(request)
        if path == "/v1/jobs" and method == "GET":
            return self._list(request)
        if path == "/v1/changes":
            return self._changes(request)
        match = re.fullmatch(r"/v1/jobs/([^/]+)(/logs|/cancel)?", path)
        if not match or match.group(1) not in self.jobs:
            return problem(404, "no such job")
        job_id, sub = match.groups()
        job = self.jobs[job_id]
        if sub == "/logs":
            text = self.logs.get(job_id, "")
            if "tail" in request.url.params:
                text = "".join(text.splitlines(keepends=True)[-int(request.url.params["tail"]):])
            return httpx.Response(200, text=text, headers={"content-type": "text/plain; charset=utf-8"})
        if sub == "/cancel":
            if job["terminal"]:
                return problem(409, "the job has ended")
            self.set_state(job_id, "cancelled", reason="cancelled")
            return httpx.Response(202, json=job)
        return httpx.Response(200, json=self.full(job_id))

    def _submit(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key", "")
        if not re.fullmatch(r"[\x21-\x7e]{1,255}", key):
            return problem(400, "Idempotency-Key: 1 to 255 visible ASCII characters")
        body = json.loads(request.content)
        if self.refuse is not None and (refusal := self.refuse(body)) is not None:
            return refusal
        if key in self.keys:
            job_id = self.keys[key]
            if self.bodies[job_id] != body:
                return httpx.Response(409, json={
                    "type": "about:blank", "title": "Conflict", "status": 409, "detail": "conflict",
                    "errors": [{"field": "Idempotency-Key",
                                "message": f"was already used for job {job_id} with a different body"}]},
                    headers={"content-type": "application/problem+json"})
            return httpx.Response(200, json=self.full(job_id))
        job = self._new_job(body)
        self.keys[key] = job["id"]
        if self.lose_answers:
            self.lose_answers -= 1
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return httpx.Response(201, json=self.full(job["id"]))

    def _selected(self, request: httpx.Request) -> list[dict[str, Any]]:
        wanted = dict(pair.split("=", 1) for pair in request.url.params.get("labels", "").split(",") if pair)
        return [job for job in self.jobs.values() if all(job["labels"].get(k) == v for k, v in wanted.items())]

    def _list(self, request: httpx.Request) -> httpx.Response:
        jobs = sorted(self._selected(request), key=lambda j: j["id"], reverse=True)
        if cursor := request.url.params.get("cursor"):
            jobs = [j for j in jobs if j["id"] < cursor]
        limit = int(request.url.params.get("limit", 50))
        page = jobs[:limit]
        more = len(jobs) > limit
        return httpx.Response(200, json={"jobs": [self.full(j["id"]) for j in page],
                                         "next_cursor": page[-1]["id"] if more else None})

    def _changes(self, request: httpx.Request) -> httpx.Response:
        after = int(request.url.params.get("after", 0))
        limit = int(request.url.params.get("limit", 500))
        selected = {job["id"] for job in self._selected(request)}
        latest: dict[str, int] = {}
        for seq, job_id in self.events:
            if seq > after and job_id in selected:
                latest[job_id] = seq
        ordered = sorted(latest.items(), key=lambda item: item[1])
        page = ordered[:limit]
        full = len(page) >= limit
        head = self.events[-1][0] if self.events else after
        next_cursor = page[-1][1] if full else max(head, after)
        return httpx.Response(200, json={"jobs": [dict(self.jobs[j]) for j, _ in page],
                                         "next_cursor": str(next_cursor), "more": full})


class AdoptableTI:
    """A task instance as `try_adopt_task_instances` gets it from the scheduler."""

    def __init__(self, dag_id: str, task_id: str, run_id: str = "manual__1", try_number: int = 1,
                 map_index: int = -1, external_executor_id: str | None = None):
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, run_id
        self.try_number, self.map_index = try_number, map_index
        self.external_executor_id = external_executor_id
        self.state = "running"

    @property
    def key(self) -> Any:
        from airflow.models.taskinstancekey import TaskInstanceKey

        return TaskInstanceKey(self.dag_id, self.task_id, self.run_id, self.try_number, self.map_index)


def workload(dag_id: str = "etl", task_id: str = "load", run_id: str = "manual__1", try_number: int = 1,
             map_index: int = -1, executor_config: dict[str, Any] | None = None, token: str | None = None) -> Any:
    """An ExecuteTask workload as the scheduler makes it (its token a fresh fake JWT)."""
    from airflow.executors import workloads

    ti_class = getattr(workloads, "TaskInstanceDTO", None) or workloads.TaskInstance
    fields: dict[str, Any] = dict(id=uuid.uuid4(), dag_version_id=uuid.uuid4(), task_id=task_id, dag_id=dag_id,
                                  run_id=run_id, try_number=try_number, map_index=map_index, pool_slots=1,
                                  queue="default", priority_weight=1, executor_config=executor_config)
    ti = ti_class(**fields)
    return workloads.ExecuteTask(
        ti=ti, dag_rel_path="etl.py", token=token or f"eyJfake.{uuid.uuid4().hex}.sig",
        bundle_info=workloads.BundleInfo(name="dags-folder"),
        log_path=f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/attempt={try_number}.log",
    )


def ago(seconds: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat()

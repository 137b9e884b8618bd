"""OffloadExecutor: every Airflow task a job on offload, with no change to the DAG.

An Airflow 3 executor (3.1 to 3.3), the peer of the Amazon provider's ECS executor: each
workload the scheduler hands it (`ExecuteTask`, and `ExecuteCallback` on 3.3) becomes one
job at the gateway, which runs the Task SDK's worker entry point
(`airflow.sdk.execution_time.execute_workload`) in the configured image, on whichever runtime
the gateway routes it to. Use it alone (`[core] executor =
offload_airflow.executor.OffloadExecutor`) or beside another executor (`[core] executor =
LocalExecutor,offload_airflow.executor.OffloadExecutor`, and `executor="OffloadExecutor"`
on the tasks that go to it).

**One workload, one job.** A job is submitted with an Idempotency-Key made from the task
instance and its try (`idempotency_key(..., scope="executor")`): a submit sent again after
a lost answer, a 429 or a 5xx gets the job it made. The job carries the task instance's
labels (`dag_id`, `task_id`, `run_id`, `map_index`, `try_number`, and `airflow_executor`,
the deployment, with which the executor finds its own jobs), and its id becomes the task
instance's `external_executor_id`, through which a restarted scheduler adopts the jobs of
the one that died (`try_adopt_task_instances`) instead of submitting them again. A try that
Airflow queues again without a new try number (a deferred task resumed, a sensor
rescheduled, a task requeued after `task_queued_timeout`) is another launch of the same
try: its key ends with the launch's number.

**The token.** The workload's execution-API token goes into the job's `secret_env`
(`OFFLOAD_AIRFLOW_TOKEN`): the gateway seals it and never shows it. The job's command is a
short launcher, `python -c LAUNCHER WORKLOAD_JSON`, which puts the token back into the
workload and calls `execute_workload`'s own `main` with `--json-string`, so the token is
on no command line and in no spec, and the task process does not inherit it.

**Cheap sync.** A heartbeat reads what changed since its cursor (`GET /v1/changes` for the
deployment's label), at most `MAX_SYNC_REQUESTS` (3) requests whatever the number of running
tasks; every `full_sync_seconds` a safety-net walk lists the deployment's jobs newest
first (one page per heartbeat, within the same budget), because on PostgreSQL a change can
be told after the cursor has passed its position. Submits (one per new workload) and cancels
(one per stop) come on top.

**Outcomes** are mapped as the ECS executor maps them: a job that succeeded is a success
(the task instance's own state is set by the task, through the execution API); a job that
failed is a failure with the gateway's reason (never started: image not pulled, no
provider; or the worker died), written into the task's log; a job cancelled at the gateway
by someone else is a failure saying so.

**Stops.** Every `STOP_CHECK_SECONDS` the executor reads the state of the task instances
whose jobs it follows from Airflow's database: a task instance that no longer wants its job
(marked failed or success, cleared, its DAG run timed out or failed, a newer try) has its
job cancelled, at once when the job has not started yet, else when the worker has not ended
it by itself within `stop_grace_seconds`. `revoke_task` and `terminate` cancel too. `end`
(the scheduler stopping) leaves running jobs to the next scheduler, which adopts them;
`[offload_executor] cancel_on_end = True` cancels them instead.

**Outages.** A gateway that answers 429 or 503 (or nothing) is waited out with backoff
(its Retry-After, else 1 s doubling to 30 s), every request held back meanwhile; a
workload it cannot place for `max_outage_seconds` fails, saying so. A refused submit (400,
422: an unknown `executor_config` key, a resource no provider has) fails its task at once
with the gateway's problem detail.

**Logs.** While a task runs, the UI reads its log through `get_task_log`, from the
gateway's log of the job (the worker writes Airflow's JSON log lines to its output), with
secrets masked as Airflow masks them. When a job ends and the scheduler's log folder has no
log for its try (the worker ran elsewhere, without remote logging), the executor writes the
job's log there, with why the job ended when it failed, so the UI shows it afterwards too.
"""

from __future__ import annotations

import concurrent.futures
import json
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from airflow.executors.base_executor import BaseExecutor

from offload_airflow.hook import OffloadHook, retry_after, retryable
from offload_airflow.operator import fit_name, idempotency_key
from offload_airflow.version_compat import (
    AIRFLOW_V_3_1_PLUS,
    AIRFLOW_V_3_3_PLUS,
    AIRFLOW_V_3_4_PLUS,
    airflow_version,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: The configuration section.
SECTION = "offload_executor"
#: The label every job of the executor carries; its value is `[offload_executor] deployment`.
DEPLOYMENT_LABEL = "airflow_executor"
#: The secret variable the token travels in.
TOKEN_VARIABLE = "OFFLOAD_AIRFLOW_TOKEN"
#: Gateway requests a heartbeat's sync makes at most, whatever the number of running tasks.
MAX_SYNC_REQUESTS = 3
#: How often the executor reads the state of the task instances it follows from the database.
STOP_CHECK_SECONDS = 2.0
#: With nothing to follow, how often the cursor is moved on (to stay near the head).
IDLE_POLL_SECONDS = 10.0
#: Jobs one page of `/v1/changes` holds at most, and one page of the safety-net walk.
CHANGES_PAGE = 1000
WALK_PAGE = 500
#: Submits sent at once (each in a thread of a pool of this size).
SUBMIT_CHUNK = 8
#: Launches of one try looked at, at most, to find the next one's key.
MAX_LAUNCHES = 1000
#: Launch numbers remembered (a try's last launch, for its next one's key).
LAUNCH_MEMORY = 10_000
#: How long the executor goes on retrying the read of an ended job's log for the task log.
LOG_COPY_SECONDS = 60.0
#: Backoff between tries after a gateway problem without Retry-After: 1 s doubling to this.
MAX_BACKOFF_SECONDS = 30.0
#: How often the executor logs what it did (heartbeats, requests, submits).
SUMMARY_SECONDS = 60.0
#: States a job is in before its workload runs.
NOT_STARTED = frozenset({"queued", "starting"})
#: Task instance states in which the task will not run in this job any more; the worker ends
#: by itself in these, so a running job gets `stop_grace_seconds` before it is cancelled.
STOPPED = frozenset({
    "success", "failed", "skipped", "upstream_failed", "removed", "restarting", "up_for_retry",
    "up_for_reschedule", "deferred",
})
#: States that may be a moment of the scheduler's own (a task instance being queued): a job
#: is cancelled for them only when they last `stop_grace_seconds`.
UNSURE = frozenset({"none", "scheduled"})
#: executor_config["offload"] keys the executor sets itself.
RESERVED = ("command", "args", "secret_env", "name")

#: The job's command after the interpreter: runs `execute_workload`'s own entry point with
#: `--json-string`, the token put back into the workload from the secret variable (and out
#: of the environment the task process inherits). Once the workload is done (its state
#: reported, its log written and uploaded), the process ends at once, its output flushed:
#: the interpreter's own teardown of Airflow's modules would keep the job, and its slot at
#: the runtime, for seconds more.
LAUNCHER = (
    "import json, logging, os, sys\n"
    "workload = json.loads(sys.argv[1])\n"
    f"workload['token'] = os.environ.pop({TOKEN_VARIABLE!r}, '')\n"
    "sys.argv = ['execute_workload', '--json-string', json.dumps(workload)]\n"
    "from airflow.sdk.execution_time.execute_workload import main\n"
    "main()\n"
    "logging.shutdown()\n"
    "sys.stdout.flush()\n"
    "sys.stderr.flush()\n"
    "os._exit(0)\n"
)

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class OffloadConfigError(Exception):
    """A task's executor_config the executor cannot turn into a job."""


def refuse_unsupported_airflow() -> None:
    """OffloadExecutor is written for the executor interface of Airflow 3.1 to 3.3."""
    if not AIRFLOW_V_3_1_PLUS or AIRFLOW_V_3_4_PLUS:
        from airflow.exceptions import AirflowConfigException

        raise AirflowConfigException(
            f"OffloadExecutor runs on Airflow 3.1, 3.2 and 3.3, and this is Airflow {airflow_version()}. "
            "On Airflow 2.11 and 3.0, run tasks on offload with OffloadJobOperator (offload_airflow.operator) "
            "and keep another executor."
        )


def problem_text(response: httpx.Response) -> str:
    """The gateway's problem detail as one line, with every field it names."""
    try:
        problem = response.json()
    except ValueError:
        return f"{response.status_code} {response.text.strip()[:500]}"
    if not isinstance(problem, dict):
        return f"{response.status_code} {response.text.strip()[:500]}"
    text = f"{problem.get('status', response.status_code)} {problem.get('title') or ''}".strip()
    detail = str(problem.get("detail") or "")
    told, named = [], []
    for error in problem.get("errors") or []:
        field_name, message = error.get("field"), str(error.get("message") or "")
        if message and message in detail:
            named.append(str(field_name))
        else:
            told.append(f"{field_name}: {message}")
    parts = [part for part in (detail, "; ".join(told)) if part]
    text += f": {'; '.join(parts)}" if parts else ""
    named = list(dict.fromkeys(named))
    if named:
        text += f" (field{'s' if len(named) > 1 else ''}: {', '.join(named)})"
    return text


def _json_option(raw: str | None, name: str, kind: type) -> Any:
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError as e:
        from airflow.exceptions import AirflowConfigException

        raise AirflowConfigException(f"[{SECTION}] {name} must be JSON ({e}): {raw!r}") from None
    if not isinstance(value, kind):
        from airflow.exceptions import AirflowConfigException

        raise AirflowConfigException(f"[{SECTION}] {name} must be a JSON {kind.__name__}: {raw!r}")
    return value


def _number_option(raw: str | None, name: str, default: float) -> float:
    if raw is None or str(raw).strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        from airflow.exceptions import AirflowConfigException

        raise AirflowConfigException(f"[{SECTION}] {name} must be a number: {raw!r}") from None


def _flag_option(raw: str | None, default: bool) -> bool:
    if raw is None or str(raw).strip() == "":
        return default
    return str(raw).strip().lower() in ("true", "1", "yes", "on")


def default_execution_api_server_url(get: Any) -> str:
    """`[core] execution_api_server_url`, or what Airflow makes of `[api] base_url` without it."""
    url = get("core", "execution_api_server_url", fallback=None)
    if url:
        return str(url)
    base_url = str(get("api", "base_url", fallback="/") or "/")
    if base_url.startswith("/"):
        base_url = f"http://localhost:8080{base_url}"
    return f"{base_url.rstrip('/')}/execution/"


@dataclass(frozen=True)
class Settings:
    """`[offload_executor]`, as the executor reads it once, at its start."""

    conn_id: str = OffloadHook.default_conn_name
    image: str = ""
    python: str = "python"
    provider: str = "auto"
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] | None = None
    routing: dict[str, Any] | None = None
    provider_options: dict[str, Any] | None = None
    timeout_seconds: int | None = None
    deployment: str = "airflow"
    execution_api_server_url: str = "http://localhost:8080/execution/"
    request_timeout: float = 10.0
    max_outage_seconds: float = 300.0
    full_sync_seconds: float = 30.0
    stop_grace_seconds: float = 60.0
    log_lines: int = 10_000
    copy_logs: bool = True
    cancel_on_end: bool = False
    task_queued_timeout: float = 600.0
    #: What the worker must share with the scheduler to find and parse the DAG: `[core]
    #: dags_folder`, `[core] executor` (the executors tasks name) and `[dag_processor]
    #: dag_bundle_config_list`, as environment variables (`env` overrides them).
    scheduler_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, conf: Any) -> Settings:
        def get(section: str, key: str, fallback: Any = None) -> Any:
            try:
                return conf.get(section, key, fallback=fallback)
            except Exception:  # noqa: BLE001 - an option that is not there
                return fallback

        def option(key: str) -> Any:
            return get(SECTION, key)

        env = _json_option(option("env"), "env", dict) or {}
        labels = _json_option(option("labels"), "labels", dict) or {}
        timeout = option("timeout_seconds")
        shared = {
            "AIRFLOW__CORE__DAGS_FOLDER": get("core", "dags_folder"),
            "AIRFLOW__CORE__EXECUTOR": get("core", "executor"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": get("dag_processor", "dag_bundle_config_list"),
        }
        return cls(
            conn_id=option("conn_id") or OffloadHook.default_conn_name,
            image=option("image") or f"apache/airflow:{airflow_version()}",
            python=option("python") or "python",
            provider=option("provider") or "auto",
            env={str(k): str(v) for k, v in env.items()},
            labels={str(k): str(v) for k, v in labels.items()},
            resources=_json_option(option("resources"), "resources", dict),
            routing=_json_option(option("routing"), "routing", dict),
            provider_options=_json_option(option("provider_options"), "provider_options", dict),
            timeout_seconds=int(_number_option(timeout, "timeout_seconds", 0)) or None,
            deployment=option("deployment") or "airflow",
            execution_api_server_url=option("execution_api_server_url") or default_execution_api_server_url(get),
            request_timeout=_number_option(option("request_timeout"), "request_timeout", 10.0),
            max_outage_seconds=_number_option(option("max_outage_seconds"), "max_outage_seconds", 300.0),
            full_sync_seconds=_number_option(option("full_sync_seconds"), "full_sync_seconds", 30.0),
            stop_grace_seconds=_number_option(option("stop_grace_seconds"), "stop_grace_seconds", 60.0),
            log_lines=int(_number_option(option("log_lines"), "log_lines", 10_000)),
            copy_logs=_flag_option(option("copy_logs"), True),
            cancel_on_end=_flag_option(option("cancel_on_end"), False),
            task_queued_timeout=_number_option(get("scheduler", "task_queued_timeout"), "task_queued_timeout", 600.0),
            scheduler_env={k: str(v) for k, v in shared.items() if v},
        )


@dataclass
class Launch:
    """A workload to submit: its job's body, key and what is needed to try again."""

    key: Any
    kind: str  # "task" or "callback"
    identity: list[Any]  # what the Idempotency-Key is made from, before the launch number
    spec: dict[str, Any]
    launch: int
    log_path: str | None
    queued_at: float  # monotonic, when the executor took the workload
    problem: str | None = None

    @property
    def idempotency_key(self) -> str:
        if self.kind == "task":
            dag_id, task_id, run_id, map_index, try_number = self.identity
            return idempotency_key(dag_id, task_id, run_id, map_index, try_number, scope="executor",
                                   launch=self.launch)
        return idempotency_key("", "", str(self.identity[0]), -1, 0, scope="executor-callback", launch=self.launch)

    def next_launch(self) -> None:
        self.launch += 1
        self.spec["labels"]["launch"] = str(self.launch)


@dataclass
class Followed:
    """A job the executor follows to its end."""

    key: Any
    job_id: str
    state: str
    log_path: str | None
    since: float  # monotonic, when the executor began to follow it
    started_at: str | None = None
    verified: bool = True  # its state has been read from the gateway at least once
    stop_reason: str | None = None  # why the executor stopped it (it then reports a success)
    stop_since: float | None = None
    cancel_sent: bool = False


@dataclass
class Outcome:
    """What one submit came to (in a pool thread; applied in the scheduler's)."""

    launch: Launch
    job: dict[str, Any] | None = None
    refused: str | None = None
    unavailable: str | None = None
    retry_after: float | None = None


@dataclass
class Walk:
    """The safety net under way: the deployment's jobs listed newest first, a page a heartbeat."""

    started: float
    oldest: str
    cursor: str | None = None
    seen: set[str] = field(default_factory=set)


class OffloadExecutor(BaseExecutor):
    """Runs every workload as a job on offload (see the module's documentation).

    Settings, in `[offload_executor]` (environment: `AIRFLOW__OFFLOAD_EXECUTOR__...`):
    `conn_id` (the gateway's connection, type `offload`; default `offload_default`),
    `image` (default `apache/airflow:<this version>`: it must hold this Airflow and the
    DAGs), `python` (the interpreter in the image; default `python`), `provider` (default
    `auto`), `env` and `labels` (JSON objects every job gets), `resources`, `routing`,
    `provider_options` (JSON objects, the job's defaults), `timeout_seconds`,
    `deployment` (the `airflow_executor` label's value, which sets the jobs of one Airflow
    apart from another's on the same gateway; default `airflow`),
    `execution_api_server_url` (the URL the jobs reach the API server at; default `[core]
    execution_api_server_url`), `request_timeout` (10), `max_outage_seconds` (300),
    `full_sync_seconds` (30), `stop_grace_seconds` (60), `log_lines` (10000),
    `copy_logs` (True), `cancel_on_end` (False).

    A task's `executor_config={"offload": {...}}` overrides the defaults for its job:
    `resources`, `provider`, `routing`, `timeout_seconds`, `image`, `env`, `labels`,
    `provider_options` (as `POST /v1/jobs` takes them; objects are merged one level deep
    into the defaults, and a key set to None drops the default). Any other key goes to the
    gateway as it is, which refuses what it does not know, naming it.
    """

    supports_ad_hoc_ti_run: bool = False
    supports_callbacks: bool = AIRFLOW_V_3_3_PLUS
    supports_multi_team: bool = False
    serve_logs: bool = False
    is_local: bool = False
    is_production: bool = True

    def __init__(self, *args: Any, **kwargs: Any):
        refuse_unsupported_airflow()
        super().__init__(*args, **kwargs)
        self.settings = Settings.load(getattr(self, "conf", None) or _global_conf())
        self.selector = f"{DEPLOYMENT_LABEL}={self.settings.deployment}"
        self._client: httpx.Client | None = None
        self._gateway_url = ""
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: OrderedDict[Any, Launch] = OrderedDict()
        self._followed: dict[str, Followed] = {}
        self._job_of: dict[Any, str] = {}
        self._unresolved: dict[Any, float] = {}  # adopted without a job id; looked up later
        self._to_verify: list[str] = []
        self._launches: OrderedDict[Any, int] = OrderedDict()
        self._cursor: str | None = None
        self._caught_up = False
        self._last_changes = 0.0
        self._walk: Walk | None = None
        self._next_walk = 0.0
        self._next_stop_check = 0.0
        self._backoff_until = 0.0
        self._backoff = 1.0
        self._outage_since: float | None = None
        self._outage_problem = ""
        self._log_queue: queue.Queue[tuple[str | None, str, list[str]] | None] = queue.Queue()
        self._log_thread: threading.Thread | None = None
        self._summary_at = time.monotonic()
        #: What the executor did, for its summary line and the benchmark: heartbeats, sync
        #: requests (and the most in one heartbeat), submits, cancels, log reads.
        self.counts = {"heartbeats": 0, "sync_requests": 0, "max_sync_requests": 0, "submits": 0,
                       "cancels": 0, "log_reads": 0}
        self._counted = dict(self.counts)
        self._lock = threading.Lock()

    # --- the gateway ---

    @property
    def client(self) -> httpx.Client:
        """One client for the executor's life (thread-safe), built at its first use."""
        with self._lock:
            if self._client is None:
                hook = OffloadHook(self.settings.conn_id, request_timeout=self.settings.request_timeout)
                client = hook.get_conn()
                client.timeout = httpx.Timeout(self.settings.request_timeout)
                self._gateway_url = str(client.base_url).rstrip("/")
                self._client = client
            return self._client

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def _gateway_ready(self) -> bool:
        return time.monotonic() >= self._backoff_until

    def _unavailable(self, problem: str, delay: float | None = None) -> None:
        """The gateway could not answer: hold every request back for a while."""
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        if delay is None:
            delay, self._backoff = self._backoff, min(self._backoff * 2, MAX_BACKOFF_SECONDS)
        self._backoff_until = now + delay
        self._outage_problem = problem
        self.log.warning("offload gateway: %s; next request in %.1f s", problem, delay)

    def _available(self) -> None:
        if self._outage_since is not None:
            self.log.info("offload gateway answers again after %.0f s", time.monotonic() - self._outage_since)
        self._outage_since = None
        self._backoff = 1.0

    def _sync_get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response | None:
        """One sync request; None when the gateway could not answer (then held back)."""
        self._count("sync_requests")
        try:
            response = self.client.get(path, params=params)
        except httpx.TransportError as e:
            self._unavailable(f"GET {path}: {e!r}")
            return None
        if retryable(response.status_code):
            self._unavailable(f"GET {path}: {problem_text(response)}", retry_after(response))
            return None
        self._available()
        return response

    # --- Airflow's side: lifecycle ---

    def start(self) -> None:
        self.log.info(
            "OffloadExecutor: gateway connection %r, deployment %r, image %r, provider %r, execution API at %s",
            self.settings.conn_id, self.settings.deployment, self.settings.image, self.settings.provider,
            self.settings.execution_api_server_url,
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(SUBMIT_CHUNK, thread_name_prefix="offload-submit")
        if self.settings.copy_logs:
            self._log_thread = threading.Thread(target=self._copy_logs, name="offload-logs", daemon=True)
            self._log_thread.start()

    def end(self) -> None:
        """The scheduler stops: running jobs are left to the next scheduler (which adopts them),
        or cancelled with `cancel_on_end`; workloads not submitted yet are dropped (their task
        instances are reset by the next scheduler)."""
        try:
            if self.settings.cancel_on_end:
                self._cancel_all("the scheduler stopped ([offload_executor] cancel_on_end)")
            elif self._followed:
                self.log.info("OffloadExecutor stops; %d offload jobs keep running for the next scheduler to adopt",
                              len(self._followed))
            self._log_summary(force=True)
        finally:
            self._close()

    def terminate(self) -> None:
        """Cancels every job the executor follows and drops what it has not submitted."""
        try:
            self._cancel_all("the executor was terminated")
        finally:
            self._close()

    def _cancel_all(self, why: str) -> None:
        self._pending.clear()
        for followed in list(self._followed.values()):
            if self._cancel(followed, why):
                self.log.info("cancelled offload job %s (%s): %s", followed.job_id, followed.key, why)

    def _close(self) -> None:
        if self._log_thread is not None:
            self._log_queue.put(None)
            self._log_thread.join(timeout=LOG_COPY_SECONDS)
            self._log_thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- Airflow's side: workloads in ---

    if not AIRFLOW_V_3_3_PLUS:

        def queue_workload(self, workload: Any, session: Session | None) -> None:
            """Airflow 3.1 and 3.2: tasks only (the worker runs callbacks from 3.3 on)."""
            from airflow.executors import workloads

            if not isinstance(workload, workloads.ExecuteTask):
                raise RuntimeError(f"OffloadExecutor cannot run workloads of type {type(workload).__name__} "
                                   f"on Airflow {airflow_version()}")
            self.queued_tasks[workload.ti.key] = workload

    def _process_workloads(self, workload_items: Sequence[Any]) -> None:
        from airflow.executors import workloads

        for workload in workload_items:
            key: Any
            if isinstance(workload, workloads.ExecuteTask):
                key = workload.ti.key
                self.queued_tasks.pop(key, None)
            elif AIRFLOW_V_3_3_PLUS and isinstance(workload, workloads.ExecuteCallback):
                key = workload.key
                self.queued_callbacks.pop(key, None)
            else:
                raise RuntimeError(f"OffloadExecutor cannot run workloads of type {type(workload).__name__}")
            self.running.add(key)
            try:
                self._pending[key] = self.launch_for(workload)
            except OffloadConfigError as e:
                self._fail_at_once(key, getattr(workload, "log_path", None), f"executor_config: {e}")

    def launch_for(self, workload: Any, launch: int | None = None) -> Launch:
        """The job that runs this workload, as the executor submits it."""
        from airflow.executors import workloads

        settings = self.settings
        if isinstance(workload, workloads.ExecuteTask):
            ti = workload.ti
            map_index = -1 if ti.map_index is None else int(ti.map_index)
            kind = "task"
            identity: list[Any] = [ti.dag_id, ti.task_id, ti.run_id, map_index, int(ti.try_number)]
            own_labels = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id,
                          "map_index": str(map_index), "try_number": str(ti.try_number)}
            name = f"{ti.dag_id}.{ti.task_id}" + (f"[{map_index}]" if map_index >= 0 else "")
            block = _offload_block(ti.executor_config)
            key = ti.key
        else:
            callback_id = str(workload.callback.id)
            kind = "callback"
            identity = [callback_id]
            own_labels = {"callback_id": callback_id}
            name = f"callback.{workload.display_name}"
            block = {}
            key = workload.key
        if launch is None:
            launch = self._launches.get(key, 0) + 1
        spec: dict[str, Any] = {
            "image": settings.image,
            "provider": settings.provider,
            "env": {**settings.scheduler_env, **settings.env},
            "labels": dict(settings.labels),
        }
        for option in ("resources", "routing", "provider_options"):
            if getattr(settings, option):
                spec[option] = dict(getattr(settings, option))
        if settings.timeout_seconds:
            spec["timeout_seconds"] = settings.timeout_seconds
        for option, value in block.items():
            if value is None:
                spec.pop(option, None)
            elif isinstance(value, dict) and isinstance(spec.get(option), dict):
                spec[option] = {**spec[option], **value}
            else:
                spec[option] = value
        env = spec.setdefault("env", {})
        if not isinstance(env, dict):
            raise OffloadConfigError(f"['offload']['env'] must be an object, not {env!r}")
        env.update({
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": settings.execution_api_server_url,
            "AIRFLOW_IS_EXECUTOR_CONTAINER": "true",
        })
        labels = spec.setdefault("labels", {})
        if not isinstance(labels, dict):
            raise OffloadConfigError(f"['offload']['labels'] must be an object, not {labels!r}")
        labels.update({**own_labels, DEPLOYMENT_LABEL: settings.deployment, "launch": str(launch)})
        spec["labels"] = {str(k): str(v) for k, v in labels.items()}
        spec["name"] = fit_name(name)
        spec["command"] = [settings.python, "-c", LAUNCHER]
        spec["args"] = [workload.model_dump_json(exclude={"token"})]
        spec["secret_env"] = {TOKEN_VARIABLE: workload.token}
        return Launch(key=key, kind=kind, identity=identity, spec=spec, launch=launch,
                      log_path=workload.log_path, queued_at=time.monotonic())

    # --- the heartbeat ---

    def sync(self) -> None:
        self._count("heartbeats")
        before = self.counts["sync_requests"]
        try:
            self._fail_overdue()
            if self._pending and self._gateway_ready():
                self._submit_due()
            if self._gateway_ready():
                self._poll()
            if time.monotonic() >= self._next_stop_check:
                self._next_stop_check = time.monotonic() + STOP_CHECK_SECONDS
                self._check_stops()
        except Exception:  # noqa: BLE001 - never take the scheduler down
            self.log.exception("OffloadExecutor: sync failed; trying again at the next heartbeat")
        used = self.counts["sync_requests"] - before
        self.counts["max_sync_requests"] = max(self.counts["max_sync_requests"], used)
        self._log_summary()

    def _log_summary(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._summary_at < SUMMARY_SECONDS:
            return
        delta = {k: self.counts[k] - self._counted.get(k, 0) for k in self.counts}
        self._summary_at, self._counted = now, dict(self.counts)
        if delta["heartbeats"] or force:
            self.log.info(
                "OffloadExecutor: %d heartbeats, %d sync requests (at most %d in one heartbeat), %d submits, "
                "%d cancels, %d log reads; following %d jobs, %d to submit; totals %s",
                delta["heartbeats"], delta["sync_requests"], self.counts["max_sync_requests"], delta["submits"],
                delta["cancels"], delta["log_reads"], len(self._followed), len(self._pending),
                json.dumps(self.counts, separators=(",", ":")),
            )

    # --- submits ---

    def _submit_due(self) -> None:
        launches = list(self._pending.values())
        pool = self._pool or concurrent.futures.ThreadPoolExecutor(SUBMIT_CHUNK)
        try:
            for start in range(0, len(launches), SUBMIT_CHUNK):
                chunk = launches[start:start + SUBMIT_CHUNK]
                outcomes = list(pool.map(self._post, chunk))
                for outcome in outcomes:
                    self._apply_outcome(outcome)
                if any(o.unavailable for o in outcomes):
                    worst = max((o.retry_after or 0.0 for o in outcomes if o.unavailable), default=0.0)
                    problem = next(o.unavailable for o in outcomes if o.unavailable)
                    self._unavailable(f"POST /v1/jobs: {problem}", worst or None)
                    return
            self._available()
        finally:
            if pool is not self._pool:
                pool.shutdown(wait=False)

    def _post(self, launch: Launch) -> Outcome:
        """Submits one launch (in a pool thread): the first free launch number of its try."""
        for _ in range(MAX_LAUNCHES):
            self._count("submits")
            try:
                response = self.client.post("/v1/jobs", json=launch.spec,
                                            headers={"Idempotency-Key": launch.idempotency_key})
            except httpx.TransportError as e:
                return Outcome(launch, unavailable=repr(e))
            if response.status_code in (200, 201):
                return Outcome(launch, job=response.json())
            if response.status_code == 409:
                # This key made a job with another body: an earlier launch of this try (a
                # workload queued again gets a new token). This launch takes the next key.
                launch.next_launch()
                continue
            if retryable(response.status_code):
                return Outcome(launch, unavailable=problem_text(response), retry_after=retry_after(response))
            return Outcome(launch, refused=problem_text(response))
        return Outcome(launch, refused=f"more than {MAX_LAUNCHES} launches of one try")

    def _apply_outcome(self, outcome: Outcome) -> None:
        launch = outcome.launch
        if self._pending.get(launch.key) is not launch:
            # Revoked (or stopped) while its submit was in flight: the job is not wanted.
            if outcome.job is not None:
                self._cancel_job(outcome.job["id"], "the task instance was revoked while its job was submitted")
            return
        if outcome.unavailable is not None:
            launch.problem = outcome.unavailable
            return
        del self._pending[launch.key]
        if outcome.refused is not None:
            self._fail_at_once(launch.key, launch.log_path, f"the offload gateway refused the job: {outcome.refused}")
            return
        job = outcome.job or {}
        self._remember_launch(launch.key, launch.launch)
        followed = Followed(key=launch.key, job_id=job["id"], state=job.get("state", "queued"),
                            log_path=launch.log_path, since=time.monotonic())
        self._follow(followed)
        self.running_state(launch.key, job["id"])
        self.log.info("offload job %s runs %s (launch %d)", job["id"], launch.key, launch.launch)
        if job.get("terminal"):
            self._finish(followed, job)

    def _remember_launch(self, key: Any, launch: int) -> None:
        self._launches[key] = launch
        self._launches.move_to_end(key)
        while len(self._launches) > LAUNCH_MEMORY:
            self._launches.popitem(last=False)

    def _follow(self, followed: Followed) -> None:
        self._followed[followed.job_id] = followed
        self._job_of[followed.key] = followed.job_id
        self.running.add(followed.key)

    def _fail_overdue(self) -> None:
        """Workloads the gateway could not take for `max_outage_seconds` fail, saying so."""
        now = time.monotonic()
        limit = self.settings.max_outage_seconds
        for key, launch in list(self._pending.items()):
            if now - launch.queued_at > limit:
                del self._pending[key]
                self._fail_at_once(key, launch.log_path,
                                   f"the offload gateway could not take the job for {limit:.0f} s "
                                   f"([{SECTION}] max_outage_seconds): {launch.problem or self._outage_problem}")
        for key, since in list(self._unresolved.items()):
            if now - since > limit:
                del self._unresolved[key]
                self.fail(key, info=f"the offload gateway could not be asked for this try's job for {limit:.0f} s")

    def _fail_at_once(self, key: Any, log_path: str | None, message: str) -> None:
        """A workload that will not run: failed now, and why in the task's log. (Not in the
        audit log through `log_task_event`: Airflow 3.3.2 cannot write those rows with
        SQLAlchemy 2.1, `INSERT INTO log DEFAULT VALUES`.)"""
        self.log.error("%s: %s", key, message)
        self.fail(key, info=message)
        self._write_notes(None, log_path, [message])

    # --- the sync ---

    def _poll(self) -> None:
        budget = MAX_SYNC_REQUESTS
        now = time.monotonic()
        walk_due = bool(self._followed) and (self._walk is not None or now >= self._next_walk)
        follow = bool(self._followed) or bool(self._unresolved) or not self._caught_up
        if follow or now - self._last_changes >= IDLE_POLL_SECONDS:
            pages = budget - 1 if walk_due else budget
            while pages > 0:
                pages -= 1
                budget -= 1
                more = self._read_changes()
                if more is None or not more:
                    break
        if walk_due and budget > 0 and self._gateway_ready() and (self._walk is not None or self._followed):
            budget -= 1
            self._walk_page()
        while budget > 0 and self._unresolved and self._gateway_ready():
            budget -= 1
            self._resolve(next(iter(self._unresolved)))
        while budget > 0 and self._to_verify and self._gateway_ready():
            budget -= 1
            self._verify(self._to_verify.pop(0))

    def _read_changes(self) -> bool | None:
        """One page of `/v1/changes`; whether more are waiting (None: no answer)."""
        params: dict[str, Any] = {"labels": self.selector, "limit": CHANGES_PAGE}
        if self._cursor is not None:
            params["after"] = self._cursor
        response = self._sync_get("/v1/changes", params)
        if response is None:
            return None
        if response.is_error:
            self.log.error("GET /v1/changes: %s", problem_text(response))
            return None
        page = response.json()
        self._last_changes = time.monotonic()
        for job in page.get("jobs") or []:
            followed = self._followed.get(job["id"])
            if followed is not None:
                self._observe(followed, job)
        self._cursor = str(page["next_cursor"])
        more = bool(page.get("more"))
        if not more:
            self._caught_up = True
        return more

    def _walk_page(self) -> None:
        """One page of the safety net: the deployment's jobs, newest first."""
        now = time.monotonic()
        if self._walk is None:
            if not self._followed:  # all ended while the changes were read
                return
            self._walk = Walk(started=now, oldest=min(self._followed))
        walk = self._walk
        params: dict[str, Any] = {"labels": self.selector, "limit": WALK_PAGE}
        if walk.cursor:
            params["cursor"] = walk.cursor
        response = self._sync_get("/v1/jobs", params)
        if response is None:
            return
        if response.is_error:
            self.log.error("GET /v1/jobs: %s", problem_text(response))
            self._walk, self._next_walk = None, now + self.settings.full_sync_seconds
            return
        page = response.json()
        jobs = page.get("jobs") or []
        for job in jobs:
            followed = self._followed.get(job["id"])
            if followed is not None:
                walk.seen.add(job["id"])
                self._observe(followed, job)
        cursor = page.get("next_cursor")
        if cursor and jobs and jobs[-1]["id"] >= walk.oldest:
            walk.cursor = str(cursor)
            return
        # The walk is over: a job followed since before it began that it did not meet is
        # read on its own (it has gone, or was not this deployment's).
        missed = [f.job_id for f in self._followed.values()
                  if f.since < walk.started and f.job_id not in walk.seen and f.job_id not in self._to_verify]
        self._to_verify.extend(missed)
        self._walk, self._next_walk = None, now + self.settings.full_sync_seconds

    def _verify(self, job_id: str) -> None:
        followed = self._followed.get(job_id)
        if followed is None:
            return
        response = self._sync_get(f"/v1/jobs/{job_id}")
        if response is None:
            self._to_verify.append(job_id)
            return
        if response.status_code == 404:
            self._finish(followed, {"id": job_id, "state": "failed", "terminal": True, "gone": True})
            return
        if response.is_error:
            self.log.error("GET /v1/jobs/%s: %s", job_id, problem_text(response))
            return
        job = response.json()
        if followed.log_path is None:
            followed.log_path = _log_path_of(job)
        self._observe(followed, job)

    def _resolve(self, key: Any) -> None:
        """An adopted task instance without a job id: its try's job, by labels."""
        response = self._sync_get("/v1/jobs", {"labels": self._labels_of(key), "limit": 100})
        if response is None:
            return
        del self._unresolved[key]
        jobs = response.json().get("jobs") if not response.is_error else []
        live = [job for job in jobs or [] if not job["terminal"]]
        if not live:
            self.fail(key, info="no offload job of this try was found after the scheduler that queued it died")
            return
        self.running_state(key, live[0]["id"])
        self._adopt_job(key, live[0])

    def _observe(self, followed: Followed, job: dict[str, Any]) -> None:
        followed.verified = True
        followed.state = job["state"]
        followed.started_at = job.get("started_at") or followed.started_at
        if job.get("terminal"):
            self._finish(followed, job)

    def _finish(self, followed: Followed, job: dict[str, Any]) -> None:
        """The job has ended: the workload's outcome into the event buffer."""
        self._followed.pop(followed.job_id, None)
        current = self._job_of.get(followed.key) == followed.job_id
        if current:
            del self._job_of[followed.key]
        notes: list[str] = []
        state, reason = job["state"], job.get("reason") or "no reason given"
        if followed.stop_reason is not None:
            outcome, info = "success", f"offload job {job['id']} stopped: {followed.stop_reason}"
        elif state == "succeeded":
            outcome, info = "success", None
        elif job.get("gone"):
            outcome, info = "failed", f"offload job {job['id']} is gone from the offload gateway"
        elif state == "cancelled":
            outcome, info = "failed", f"offload job {job['id']} was cancelled at the gateway: {reason}"
        elif job.get("started_at") is None and followed.started_at is None:
            outcome, info = "failed", f"offload job {job['id']} failed before it started: {reason}"
        else:
            outcome, info = "failed", f"offload job {job['id']} failed: {reason}"
        if info is not None and outcome == "failed":
            notes.append(info)
            late = self._late_start(followed, job)
            if late:
                notes.append(late)
        if current:
            if outcome == "success":
                self.success(followed.key, info=info)
            else:
                self.log.warning("%s: %s", followed.key, info)
                self.fail(followed.key, info=info)
        if self.settings.copy_logs and followed.log_path:
            self._log_queue.put((job["id"], followed.log_path, notes))

    def _late_start(self, followed: Followed, job: dict[str, Any]) -> str | None:
        """A job that started after its workload's token had expired says so (the token lives
        `[scheduler] task_queued_timeout` from the moment Airflow queued the task)."""
        created, started = _instant(job.get("created_at")), _instant(job.get("started_at"))
        if created is None or started is None:
            return None
        waited = (started - created).total_seconds()
        limit = self.settings.task_queued_timeout
        if waited < 0.8 * limit:
            return None
        return (f"the job started {waited:.0f} s after it was submitted, near or past the end of its execution API "
                f"token's life ([scheduler] task_queued_timeout = {limit:.0f} s): if the worker was refused by the "
                "API server (401), raise task_queued_timeout or start the runtime faster")

    # --- stops ---

    def _check_stops(self) -> None:
        """Cancels the jobs whose task instances no longer want them (see the module's doc)."""
        from airflow.models.taskinstancekey import TaskInstanceKey

        tracked: list[tuple[Any, Followed | Launch]] = [
            (f.key, f) for f in self._followed.values() if isinstance(f.key, TaskInstanceKey)
        ] + [(k, launch) for k, launch in self._pending.items() if isinstance(k, TaskInstanceKey)]
        if not tracked:
            return
        states = self.task_instance_states([key for key, _ in tracked])
        now = time.monotonic()
        for key, item in tracked:
            why = _not_wanted(key, states.get((key.dag_id, key.task_id, key.run_id, key.map_index)))
            if isinstance(item, Launch):
                if why is not None and why[1]:
                    # Not submitted yet: dropped, and the worker's "done" told (a cleared task
                    # instance is then scheduled again).
                    self._pending.pop(key, None)
                    self.log.info("%s: not submitted, %s", key, why[0])
                    self.success(key, info=f"not submitted: {why[0]}")
                continue
            followed = item
            if why is None:
                followed.stop_since = None
                continue
            if followed.cancel_sent:
                continue
            if followed.stop_since is None:
                followed.stop_since = now
            sure = why[1]
            waited = now - followed.stop_since
            if (sure and followed.state in NOT_STARTED) or waited >= self.settings.stop_grace_seconds:
                followed.stop_reason = why[0]
                if self._cancel(followed, why[0]):
                    self.log.info("cancelled offload job %s of %s: %s", followed.job_id, key, why[0])

    def task_instance_states(self, keys: Sequence[Any]) -> dict[tuple[str, str, str, int], tuple[int, str]]:
        """(try_number, state) of each task instance, by (dag_id, task_id, run_id, map_index),
        from Airflow's database (the executor runs in the scheduler)."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        found: dict[tuple[str, str, str, int], tuple[int, str]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            where = TaskInstance.filter_for_tis(chunk)
            if where is None:
                continue
            with create_session() as session:
                rows = session.execute(
                    select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id, TaskInstance.map_index,
                           TaskInstance.try_number, TaskInstance.state)
                    .where(where)
                ).all()
            for dag_id, task_id, run_id, map_index, try_number, state in rows:
                found[(dag_id, task_id, run_id, map_index)] = (
                    int(try_number or 0), str(getattr(state, "value", state) or "none"))
        return found

    def _cancel(self, followed: Followed, why: str) -> bool:
        followed.cancel_sent = True
        return self._cancel_job(followed.job_id, why)

    def _cancel_job(self, job_id: str, why: str) -> bool:
        """Asks the gateway to cancel a job; False when it had ended, or could not be asked."""
        self._count("cancels")
        try:
            response = self.client.post(f"/v1/jobs/{job_id}/cancel")
        except httpx.TransportError as e:
            self.log.warning("cancelling offload job %s (%s): %r; trying again later", job_id, why, e)
            self._retry_cancel(job_id)
            return False
        if response.status_code == 409:
            return False
        if response.is_error:
            self.log.warning("cancelling offload job %s (%s): %s", job_id, why, problem_text(response))
            if retryable(response.status_code):
                self._retry_cancel(job_id)
            return False
        return True

    def _retry_cancel(self, job_id: str) -> None:
        followed = self._followed.get(job_id)
        if followed is not None:
            followed.cancel_sent = False

    def revoke_task(self, *, ti: Any) -> None:
        """The scheduler takes the task instance back (queued for too long): its job is
        cancelled and forgotten; no event."""
        key = ti.key
        try:
            self._pending.pop(key, None)
            self._unresolved.pop(key, None)
            self.queued_tasks.pop(key, None)
            job_id = self._job_of.pop(key, None)
            if job_id is not None:
                self._followed.pop(job_id, None)
                if self._cancel_job(job_id, "revoked by the scheduler"):
                    self.log.info("cancelled offload job %s of %s: revoked by the scheduler", job_id, key)
        except Exception:  # noqa: BLE001 - revoke_task must not raise
            self.log.exception("revoking %s", key)
        finally:
            self.running.discard(key)

    # --- adoption ---

    def try_adopt_task_instances(self, tis: Sequence[Any]) -> Sequence[Any]:
        """Follows the jobs of task instances a dead scheduler queued: by their
        `external_executor_id` (the job id), or by their try's labels when the scheduler died
        before it recorded one. A task instance without a job is given back (the scheduler
        resets it): nothing is submitted twice."""
        not_adopted = []
        for ti in tis:
            key = ti.key
            try:
                if self._adopt(ti, key):
                    continue
            except Exception:  # noqa: BLE001 - one task instance's trouble is not the others'
                self.log.exception("adopting %s", key)
            not_adopted.append(ti)
        adopted = len(tis) - len(not_adopted)
        if adopted:
            self.log.info("OffloadExecutor adopted %d task instances; %d given back to the scheduler",
                          adopted, len(not_adopted))
        return not_adopted

    def _adopt(self, ti: Any, key: Any) -> bool:
        job_id = ti.external_executor_id
        if job_id and _UUID.fullmatch(str(job_id)):
            try:
                response = self.client.get(f"/v1/jobs/{job_id}")
            except httpx.TransportError:
                response = None
            if response is None or retryable(response.status_code):
                # Unreachable for now: followed all the same; the sync reads it when it can.
                followed = Followed(key=key, job_id=str(job_id), state="running", log_path=None,
                                    since=time.monotonic(), verified=False)
                self._follow(followed)
                self._to_verify.append(followed.job_id)
                return True
            if response.status_code == 404:
                return False
            job = response.json() if not response.is_error else None
            if job is None:
                return False
            self._adopt_job(key, job)
            return True
        # No job id recorded: the try's newest job that has not ended, if there is one.
        try:
            response = self.client.get("/v1/jobs", params={"labels": self._labels_of(key), "limit": 100})
        except httpx.TransportError:
            response = None
        if response is None or retryable(response.status_code):
            self.running.add(key)
            self._unresolved[key] = time.monotonic()
            return True
        jobs = response.json().get("jobs") if not response.is_error else []
        live = [job for job in jobs or [] if not job["terminal"]]
        if not live:
            return False
        self.running_state(key, live[0]["id"])
        self._adopt_job(key, live[0])
        return True

    def _adopt_job(self, key: Any, job: dict[str, Any]) -> None:
        try:
            launch = int((job.get("labels") or {}).get("launch") or 1)
        except ValueError:
            launch = 1
        self._remember_launch(key, launch)
        followed = Followed(key=key, job_id=job["id"], state=job["state"], log_path=_log_path_of(job),
                            since=time.monotonic(), started_at=job.get("started_at"))
        self._follow(followed)
        if job.get("terminal"):
            self._finish(followed, job)

    def _labels_of(self, key: Any) -> str:
        return ",".join([
            self.selector, f"dag_id={key.dag_id}", f"task_id={key.task_id}", f"run_id={key.run_id}",
            f"map_index={key.map_index}", f"try_number={key.try_number}",
        ])

    # --- logs ---

    def get_task_log(self, ti: Any, try_number: int) -> tuple[list[str], list[str]]:
        """The job's log as the gateway holds it (the last `log_lines` lines), masked; the UI
        shows it while the task runs. Never raises: a log that cannot be read is a message."""
        try:
            job = self._job_for(ti, try_number)
            if job is None:
                return [], []
            self._count("log_reads")
            response = self.client.get(f"/v1/jobs/{job['id']}/logs", params={"tail": self.settings.log_lines},
                                       headers={"Accept": "text/plain"})
            where = f"offload job {job['id']} ({job['state']}) at {self._gateway_url}/ui/jobs/{job['id']}"
            if response.is_error:
                return [f"{where}: its log could not be read: {problem_text(response)}"], []
            return [where], [mask_log(response.text)]
        except Exception as e:  # noqa: BLE001 - the log view must not fail on it
            return [f"offload: the job's log could not be read: {type(e).__name__}: {e}"], []

    def _job_for(self, ti: Any, try_number: int) -> dict[str, Any] | None:
        job_id = getattr(ti, "external_executor_id", None)
        if job_id and try_number == ti.try_number and _UUID.fullmatch(str(job_id)):
            response = self.client.get(f"/v1/jobs/{job_id}")
            if response.status_code != 404:
                return response.json() if not response.is_error else None
        from airflow.models.taskinstancekey import TaskInstanceKey

        key = TaskInstanceKey(ti.dag_id, ti.task_id, ti.run_id, try_number,
                              -1 if ti.map_index is None else ti.map_index)
        response = self.client.get("/v1/jobs", params={"labels": self._labels_of(key), "limit": 1})
        jobs = response.json().get("jobs") if not response.is_error else None
        return jobs[0] if jobs else None

    def _copy_logs(self) -> None:
        """The log thread: each ended job's log into the task's log file, when it has none."""
        while True:
            item = self._log_queue.get()
            if item is None:
                return
            job_id, log_path, notes = item
            try:
                self._write_notes(job_id, log_path, notes)
            except Exception:  # noqa: BLE001 - a log not written is not the scheduler's end
                self.log.exception("writing the log of offload job %s to %s", job_id, log_path)

    def _write_notes(self, job_id: str | None, log_path: str | None, notes: list[str]) -> None:
        """Writes the job's log (when the log folder has none for the try) and `notes` into the
        task's log file in `[logging] base_log_folder`, as Airflow's JSON lines."""
        if not log_path:
            return
        path = Path(_global_conf().get("logging", "base_log_folder")) / log_path
        path.parent.mkdir(parents=True, exist_ok=True)
        text = ""
        if job_id is not None and not path.exists():
            text = self._read_ended_log(job_id)
        lines = [_note_line(note) for note in notes]
        if not text and not lines:
            return
        if text and not text.endswith("\n"):
            text += "\n"
        with open(path, "a", encoding="utf-8") as out:
            out.write(text + "".join(line + "\n" for line in lines))

    def _read_ended_log(self, job_id: str) -> str:
        deadline = time.monotonic() + LOG_COPY_SECONDS
        delay = 1.0
        while True:
            self._count("log_reads")
            try:
                response = self.client.get(f"/v1/jobs/{job_id}/logs", params={"tail": self.settings.log_lines},
                                           headers={"Accept": "text/plain"})
                if not retryable(response.status_code):
                    if response.is_error:
                        return _note_line(f"the log of offload job {job_id} could not be read: "
                                          f"{problem_text(response)}") + "\n"
                    return mask_log(response.text)
                delay = retry_after(response) or delay
            except httpx.TransportError:
                pass
            if time.monotonic() + delay > deadline:
                return _note_line(f"the log of offload job {job_id} could not be read: the gateway did not answer") + "\n"
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    def debug_dump(self) -> None:
        super().debug_dump()
        self.log.info("offload: following %d jobs, %d to submit, %d to look up, cursor %s",
                      len(self._followed), len(self._pending), len(self._unresolved), self._cursor)


def _global_conf() -> Any:
    from airflow.configuration import conf

    return conf


def _offload_block(executor_config: Any) -> dict[str, Any]:
    """executor_config["offload"], checked for what the executor sets itself."""
    if not executor_config:
        return {}
    if not isinstance(executor_config, dict):
        return {}
    block = executor_config.get("offload")
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise OffloadConfigError(f"['offload'] must be an object, not {type(block).__name__}")
    for key in RESERVED:
        if key in block:
            raise OffloadConfigError(f"['offload']['{key}'] is set by the executor, not by a task")
    return dict(block)


def _not_wanted(key: Any, state: tuple[int, str] | None) -> tuple[str, bool] | None:
    """Why the task instance no longer wants this try's job, and whether that is sure (a
    state the scheduler never passes through while queueing); None while it wants it."""
    if state is None:
        return "the task instance is gone", True
    try_number, ti_state = state
    if try_number > key.try_number:
        return f"the task instance is at try {try_number}", True
    if ti_state in STOPPED:
        return f"the task instance is {ti_state}", True
    if ti_state in UNSURE:
        return f"the task instance is {ti_state}", False
    return None


def _log_path_of(job: dict[str, Any]) -> str | None:
    """The task's log path, from the workload in the job's arguments."""
    try:
        workload = json.loads(((job.get("spec") or {}).get("args") or [""])[0])
        path = workload.get("log_path")
        return str(path) if path else None
    except (ValueError, AttributeError, IndexError):
        return None


def _instant(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _note_line(message: str) -> str:
    """A line of Airflow's JSON task log."""
    return json.dumps({"timestamp": datetime.now(timezone.utc).isoformat(), "level": "error", "event": message,
                       "logger": "offload_airflow.executor"})


def mask_log(text: str) -> str:
    """A job's log with secrets masked as Airflow masks them: each JSON line's fields (a
    field named like a secret, and any value Airflow was told is one), other lines whole."""
    from airflow.providers.common.compat.sdk import redact

    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            out.append(json.dumps(redact(record), default=str))
        else:
            out.append(str(redact(line)))
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


__all__ = ["OffloadExecutor", "Settings", "mask_log", "problem_text", "refuse_unsupported_airflow"]

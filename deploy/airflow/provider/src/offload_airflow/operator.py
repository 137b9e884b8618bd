"""OffloadJobOperator: one Airflow task runs one container job on offload.

It submits with an Idempotency-Key that is a digest of the task instance and try (see
`idempotency_key`), so a POST that is sent again, or a try that runs again, gets the job it
already made. With `reattach_on_restart`, a new try first looks for a job of an earlier try
that is still going (its worker died, or the task was cleared) and follows that one instead
of starting another, and takes the result of one that already succeeded since the task
instance was last cleared; the earlier try's stop paths leave a running job to it
(`offload_airflow.lifecycle`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Container, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    AirflowTaskTimeout,
    BaseOperator,
    conf,
    mask_secret,
)

from offload_airflow.hook import OffloadHook
from offload_airflow.lifecycle import runs_again, task_instance_state
from offload_airflow.links import OffloadJobLink
from offload_airflow.logs import LogProgress, progress_poll, show
from offload_airflow.trigger import OffloadJobTrigger

try:
    from airflow.sdk.exceptions import TaskDeferralTimeout
except ImportError:
    try:  # Airflow 3.0 and 3.1
        from airflow.exceptions import TaskDeferralTimeout  # type: ignore[no-redef]
    except ImportError:  # Airflow 2: a task resumed past its execution_timeout gets AirflowTaskTimeout
        # from the worker before it resumes, then on_kill, which cancels the job.

        class TaskDeferralTimeout(Exception):  # type: ignore[no-redef]
            """Never raised on Airflow 2."""

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: How long a job may outlive its task's execution_timeout: its timeout_seconds is capped at
#: execution_timeout plus this, so that a job every cancel path missed (a trigger removed
#: before a triggerer ran it, a gateway unreachable at the cancel) still ends.
EXECUTION_TIMEOUT_GRACE_SECONDS = 120
#: The gateway's limit on a job's name (`model::limits::NAME`).
MAX_NAME_LENGTH = 253
#: How long the read of an ended job's log goes on retrying (429, 5xx) before the task goes
#: on without it.
FINAL_LOG_READ_SECONDS = 30.0


def idempotency_key(dag_id: str, task_id: str, run_id: str, map_index: int, try_number: int, *,
                    scope: str | None = None, launch: int = 1) -> str:
    """The Idempotency-Key of one try of a task instance: the SHA-256 (64 hex digits) of the
    JSON array `[dag_id, task_id, run_id, map_index, try_number]`, written compactly
    (`json.dumps(..., separators=(",", ":"))`). It fits the gateway's 255 characters however
    long the ids, and two task instances never share one (a dot in an id cannot shift one
    part into the next). deploy/airflow/dags/offload_job.py makes the same key.

    `scope` keeps another user of the same try apart (OffloadExecutor's job that runs the
    try, which may itself be an OffloadJobOperator submitting its own job): the array starts
    with it. `launch` (2, 3, ...) ends the array for the further launches of one try (a
    deferred task resumed, a sensor rescheduled); the first launch's key has none."""
    parts: list[object] = [dag_id, task_id, run_id, int(map_index), int(try_number)]
    if scope is not None:
        parts.insert(0, scope)
    if launch != 1:
        parts.append(int(launch))
    array = json.dumps(parts, separators=(",", ":"))
    return hashlib.sha256(array.encode()).hexdigest()


def fit_name(name: str, limit: int = MAX_NAME_LENGTH) -> str:
    """A job name the gateway takes: one longer than `limit` characters is cut, and ends with
    `-` and 8 hex digits of its SHA-256, so that two long names that differ only at the end
    stay apart (as the KubernetesPodOperator cuts pod names)."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class OffloadJobOperator(BaseOperator):
    """Runs a container job on offload and waits for it to end.

    The task succeeds when the job does and returns the job's `result` (its
    `offload-result:` line) as its XCom; it fails with the job's reason and the last lines
    of its log when the job fails or is cancelled, and is skipped when the job exits with
    one of `skip_on_exit_code`. The job's log is copied into the task log (`[offload] ...`
    lines): while the job runs, the new lines at each poll, and once it has ended the lines
    not shown yet. How the job ended never depends on reading its log: a log that cannot be
    read is a warning, and the task still takes the job's state.

    With `do_xcom_push` (the default), the task also pushes the job's id (XCom `job_id`) and,
    once the job has ended, where it ran and what it cost (`provider`, `cost_usd`: None when
    it never reached a provider). The "Offload Job" link (`OffloadJobLink`) leads to the
    job's page on the gateway's dashboard as soon as the job is submitted.

    `execution_timeout` bounds the whole wait, deferred or not: the deferral gets the time
    that is left as its timeout, and when it runs out the job is cancelled and the task
    fails with AirflowTaskTimeout, as it does when the worker waits. As a safety net the
    job's `timeout_seconds` is capped at execution_timeout plus
    EXECUTION_TIMEOUT_GRACE_SECONDS (120).

    Requests the gateway refuses for good (400, 401, 403, 422: a bad spec, a bad token)
    fail the task without retries; 429 and 5xx are sent again as the gateway asks (see
    `offload_airflow.hook`).

    :param image: the container image. (templated)
    :param command: the entrypoint; None for the image's own. (templated)
    :param args: the arguments. (templated)
    :param env: environment variables. (templated)
    :param secret_env: environment variables whose values are secrets: masked in Airflow's
        logs and rendered fields, never shown back by the gateway. (templated)
    :param container_resources: the job's `resources` (`cpu`, `memory`, `gpu`,
        `ephemeral_storage`); named so because BaseOperator's `resources` means something
        else. (templated)
    :param timeout_seconds: the job's own time limit from dispatch, enforced by the gateway
        (capped by execution_timeout, see above). (templated)
    :param provider: a provider configured on the gateway, or `auto` to let routing pick
        one. (templated)
    :param routing: how routing picks the provider, as `POST /v1/jobs` takes it: `prefer`
        (`cost` or `speed`), `spot` (`never`, `allowed`, `preferred`), `allow` and `deny`
        (lists of provider names or kinds), `max_hourly_usd`, `expected_duration_seconds`.
        (templated)
    :param labels: labels of your own; the operator adds `dag_id`, `task_id`, `run_id`,
        `map_index`, `try_number` and `clear_number`. (templated)
    :param provider_options: per-kind options, such as `{"ecs": {...}}`. (templated)
    :param name: the job's name; default `{dag_id}.{task_id}`. One longer than the gateway's
        253 characters is cut and ends with a hash (`fit_name`). (templated)
    :param offload_conn_id: the gateway's connection (type `offload`). (templated)
    :param deferrable: wait on the triggerer (no worker slot held) instead of in the worker.
        Default: `[operators] default_deferrable`.
    :param wait_seconds: how long each long-poll request may be held by the gateway (0 to
        120). (templated)
    :param reattach_on_restart: a new try follows a still-running job of an earlier try of
        this task instance (after a lost worker, a clear) instead of submitting a new one,
        and takes the result of one that succeeded since the task instance was last cleared;
        a stopped try leaves a running job to the try that follows. False: each try runs its
        own job; a stopped try cancels its job, and a new try cancels what earlier tries left
        running.
    :param get_logs: copy the job's log into the task log.
    :param log_lines: how many of the log's last lines each poll reads while the job runs (0:
        no lines while it runs, only at the end).
    :param max_log_lines: at most how many of the log's last lines are read once the job has
        ended (the lines among them not shown yet go into the task log).
    :param log_tail_lines: how many of the log's last lines go into the failure message.
    :param skip_on_exit_code: an exit code, or several, with which a failed job leaves the
        task skipped instead of failed. None: every failure fails the task.
    """

    template_fields: Sequence[str] = (
        "image", "command", "args", "env", "secret_env", "container_resources", "timeout_seconds", "provider",
        "routing", "labels", "provider_options", "name", "offload_conn_id", "wait_seconds",
    )
    template_fields_renderers = {
        "env": "json", "container_resources": "json", "routing": "json", "labels": "json", "provider_options": "json",
    }
    ui_color = "#d6eaf8"
    operator_extra_links = (OffloadJobLink(),)

    def __init__(
        self,
        *,
        image: str,
        command: list[str] | str | None = None,
        args: list[str] | str | None = None,
        env: dict[str, str] | None = None,
        secret_env: dict[str, str] | None = None,
        container_resources: dict[str, Any] | None = None,
        timeout_seconds: int | str | None = None,
        provider: str = "auto",
        routing: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        provider_options: dict[str, Any] | None = None,
        name: str | None = None,
        offload_conn_id: str = OffloadHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_seconds: int | str = 30,
        reattach_on_restart: bool = True,
        get_logs: bool = True,
        log_lines: int = 50,
        max_log_lines: int = 10_000,
        log_tail_lines: int = 20,
        skip_on_exit_code: int | Container[int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.image = image
        self.command = command
        self.args = args
        self.env = env
        self.secret_env = secret_env
        self.container_resources = container_resources
        self.timeout_seconds = timeout_seconds
        self.provider = provider
        self.routing = routing
        self.labels = labels
        self.provider_options = provider_options
        self.name = name
        self.offload_conn_id = offload_conn_id
        self.deferrable = deferrable
        self.wait_seconds = wait_seconds
        self.reattach_on_restart = reattach_on_restart
        self.get_logs = get_logs
        self.log_lines = log_lines
        self.max_log_lines = max_log_lines
        self.log_tail_lines = log_tail_lines
        self.skip_on_exit_code: Container[int] = (
            () if skip_on_exit_code is None
            else (skip_on_exit_code,) if isinstance(skip_on_exit_code, int)
            else skip_on_exit_code
        )
        # When the task instance fails for good, nobody will wait for its job any more.
        given: Any = self.on_failure_callback
        callbacks: list[Any] = list(given) if isinstance(given, (list, tuple)) else [] if given is None else [given]
        self.on_failure_callback = [*callbacks, cancel_unfinished_jobs]
        self.job_id: str | None = None
        self._task_labels: dict[str, str] | None = None
        self._cancelled = False

    @property
    def hook(self) -> OffloadHook:
        return OffloadHook(self.offload_conn_id)

    def execute(self, context: Context, deadline: str | None = None) -> Any:
        self._mask_secrets()
        ti = context["ti"]
        self._task_labels = task_labels = _task_labels(context)
        clear_number = _clear_number(context)
        job = self._follow_or_clean_up(task_labels, clear_number, ti.try_number)
        if job is None:
            map_index = -1 if ti.map_index is None else ti.map_index
            key = idempotency_key(ti.dag_id, ti.task_id, ti.run_id, map_index, ti.try_number)
            job = self.hook.submit(self._spec(task_labels, ti.try_number, clear_number), key)
            self.log.info("offload job %s: %s", job["id"], job["state"])
        elif job["terminal"]:
            self.log.info("offload job %s, submitted by try %s, already %s: this try takes its outcome",
                          job["id"], job["labels"].get("try_number"), job["state"])
        else:
            self.log.info("reattached to offload job %s (submitted by try %s): %s",
                          job["id"], job["labels"].get("try_number"), job["state"])
        self.job_id = job["id"]
        self._save_job(context, job["id"])
        if job["terminal"]:
            return self._finish(context, job, [])
        if self.deferrable:
            self._defer(job["id"], self._deadline(context, deadline))
        progress = LogProgress(job["id"], self.log_lines) if self.get_logs and self.log_lines > 0 else None
        try:
            job = asyncio.run(self.hook.await_job(job["id"], _seconds(self.wait_seconds, "wait_seconds"),
                                                  progress_poll(self.hook, progress, self.log)))
        except AirflowTaskTimeout:
            self._cancel("execution_timeout")
            raise
        return self._finish(context, job, progress.seen if progress else [])

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, deadline: str | None = None
    ) -> Any:
        """Where the task resumes once the trigger has seen the job end.

        Without an event the deferral was cut short (the process waiting on the trigger
        died): start over, which reattaches to the job and defers for the time left. So
        with an event about a job of another task instance (Airflow can hand a new trigger
        the id of a trigger it has just deleted, and the event of the old one with it).
        """
        if event is None:
            return self.execute(context, deadline)
        if not self._event_is_ours(context, event):
            self.log.warning("the trigger's event is about offload job %s, of another task instance: "
                             "following this task instance's job again", event.get("job_id"))
            return self.execute(context, deadline)
        self.job_id = event["job_id"]
        if "error" in event:
            failure = AirflowFailException if event.get("refused") else AirflowException
            raise failure(f"waiting for offload job {self.job_id}: {event['error']}")
        return self._finish(context, event["job"], event.get("log_seen") or [])

    def _event_is_ours(self, context: Context, event: dict[str, Any]) -> bool:
        """Whether the trigger's event is about a job of this task instance."""
        job = event.get("job")
        if job is None:
            try:
                job = self.hook.get_job(event["job_id"])
            except Exception:  # noqa: BLE001 - the event's own error says what went wrong
                return True
        labels = job.get("labels") or {}
        return all(labels.get(key) == value for key, value in _task_labels(context).items())

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        # A resumed try is a new process: the job's log it copies must be masked there too.
        self._mask_secrets()
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except TaskDeferralTimeout as e:
            # execution_timeout ran out while deferred: the job must not run on unwatched.
            self._task_labels = task_labels = _task_labels(context)
            if job := self._live_job(task_labels):
                self.job_id = job["id"]
                self._cancel("execution_timeout")
            raise AirflowTaskTimeout(
                f"execution_timeout ({self.execution_timeout}) passed while waiting for offload job "
                f"{self.job_id or '(none running)'}"
            ) from e

    def on_kill(self) -> None:
        """The worker was told to stop the task (execution_timeout, marked failed or success,
        cleared, SIGTERM): cancel the job unless a try will follow it.

        On Airflow 2 this is also where a deferred task resumed past its execution_timeout
        ends (the worker raises AirflowTaskTimeout before the task resumes): this process has
        not seen the job yet, so it looks the job up, and cancels it since the time is up."""
        if self._cancelled:
            return
        context = _current_context()
        if not self.job_id and context is not None:
            self._task_labels = _task_labels(context)
            if job := self._live_job(self._task_labels):
                self.job_id = job["id"]
        if not self.job_id:
            return
        if context is not None and self._past_execution_timeout(context):
            self._cancel("execution_timeout")
            return
        if self.reattach_on_restart and self._task_labels:
            labels = self._task_labels
            state = task_instance_state(
                labels["dag_id"], labels["task_id"], labels["run_id"], int(labels["map_index"])
            )
            if runs_again(state):
                self.log.info("offload job %s left running: the task instance is %s, and the try that "
                              "follows reattaches to the job", self.job_id, state)
                return
        self._cancel("the task was stopped")

    def _past_execution_timeout(self, context: Context) -> bool:
        deadline = self._deadline(context, None)
        return deadline is not None and datetime.now(timezone.utc) >= deadline

    def _mask_secrets(self) -> None:
        for value in (self.secret_env or {}).values():
            mask_secret(value)

    def _save_job(self, context: Context, job_id: str) -> None:
        """The link to the job (always), and its id as XCom (with do_xcom_push)."""
        try:
            OffloadJobLink.persist(context, self.hook.gateway_url(), job_id)
        except Exception as e:  # noqa: BLE001 - a link is not worth failing the task for
            self.log.warning("saving the link to offload job %s: %s", job_id, e)
        if self.do_xcom_push:
            context["ti"].xcom_push(key="job_id", value=job_id)

    def _cancel(self, why: str) -> None:
        if self.job_id and self.hook.cancel(self.job_id):
            self.log.info("cancelled offload job %s (%s)", self.job_id, why)
        self._cancelled = True

    def _deadline(self, context: Context, carried: str | None) -> datetime | None:
        """When execution_timeout runs out for this try, counted from its start."""
        if carried:
            return datetime.fromisoformat(carried)
        if not self.execution_timeout:
            return None
        started = getattr(context["ti"], "start_date", None) or datetime.now(timezone.utc)
        return started + self.execution_timeout

    def _defer(self, job_id: str, deadline: datetime | None) -> None:
        timeout = None
        if deadline is not None:
            timeout = deadline - datetime.now(timezone.utc)
            if timeout <= timedelta(0):
                self._cancel("execution_timeout")
                raise AirflowTaskTimeout(f"execution_timeout ({self.execution_timeout}) passed before waiting "
                                         f"for offload job {job_id}")
        trigger = OffloadJobTrigger(
            job_id, self.offload_conn_id, _seconds(self.wait_seconds, "wait_seconds"),
            self.log_lines if self.get_logs else 0, self.reattach_on_restart,
            list((self.secret_env or {}).values()),
        )
        self.defer(trigger=trigger, method_name="execute_complete",
                   kwargs={"deadline": deadline.isoformat() if deadline else None}, timeout=timeout)

    def _spec(self, task_labels: dict[str, str], try_number: int, clear_number: int) -> dict[str, Any]:
        routing = {k: v for k, v in (self.routing or {}).items() if v is not None}
        fields = {
            "name": fit_name(self.name or f"{task_labels['dag_id']}.{task_labels['task_id']}"),
            "image": self.image,
            "command": self.command,
            "args": self.args,
            "env": self.env,
            "secret_env": self.secret_env,
            "resources": self.container_resources,
            "timeout_seconds": self._job_timeout(),
            "provider": self.provider,
            "routing": routing or None,
            "labels": {**(self.labels or {}), **task_labels, "try_number": str(try_number),
                       "clear_number": str(clear_number)},
            "provider_options": self.provider_options,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def _job_timeout(self) -> int | None:
        """The job's timeout_seconds, capped by execution_timeout (the same for every run of a
        try, so that the Idempotency-Key keeps matching the body)."""
        own = None if self.timeout_seconds in (None, "") else _seconds(self.timeout_seconds, "timeout_seconds")
        if not self.execution_timeout:
            return own
        cap = math.ceil(self.execution_timeout.total_seconds()) + EXECUTION_TIMEOUT_GRACE_SECONDS
        return min(own, cap) if own else cap

    def _live_job(self, task_labels: dict[str, str]) -> dict[str, Any] | None:
        """The newest job of this task instance that runs and is not being cancelled, whichever
        try submitted it."""
        return next((job for job in self.hook.find_jobs(task_labels) if _live(job)), None)

    def _follow_or_clean_up(self, task_labels: dict[str, str], clear_number: int,
                            try_number: int) -> dict[str, Any] | None:
        """The job this try follows instead of submitting. With reattach: the newest live job
        of the task instance, else the newest one that succeeded since the task instance was
        last cleared (a try that ended badly after its job succeeded: its retry takes the
        result instead of running the work again). Without: none, after cancelling what
        earlier tries left running (the Idempotency-Key returns this try's own job anyway)."""
        jobs = self.hook.find_jobs(task_labels)
        if self.reattach_on_restart:
            live = next((job for job in jobs if _live(job)), None)
            if live is not None:
                return live
            return next((job for job in jobs if job["state"] == "succeeded"
                         and job["labels"].get("clear_number") == str(clear_number)), None)
        for job in jobs:
            if _live(job) and job["labels"].get("try_number") != str(try_number) and self.hook.cancel(job["id"]):
                self.log.info("cancelled offload job %s, left running by try %s", job["id"],
                              job["labels"].get("try_number"))
        return None

    def _final_log(self, job: dict[str, Any]) -> str | None:
        """The ended job's log (its last max_log_lines lines), or None when it cannot be read."""
        try:
            return self.hook.logs(job["id"], tail=max(self.max_log_lines, self.log_tail_lines, 1),
                                  outage=FINAL_LOG_READ_SECONDS)
        except Exception as e:  # noqa: BLE001 - the job's state decides, not its log
            self.log.warning("offload job %s %s, but its log could not be read (%s); the task takes the "
                             "job's state all the same", job["id"], job["state"], e)
            return None

    def _finish(self, context: Context, job: dict[str, Any], log_seen: list[str]) -> Any:
        """The job has ended (however the wait saw it): the rest of its log and its cost into
        the task log, its provider and cost as XCom, then the task's outcome."""
        succeeded = job["state"] == "succeeded"
        text = None
        if self.get_logs or (not succeeded and self.log_tail_lines > 0):
            text = self._final_log(job)
        if self.get_logs:
            self.log.info("offload job %s %s", job["id"], job["state"])
            if text is not None:
                new, skipped = LogProgress(job["id"], self.log_lines, log_seen).final(text)
                show(self.log, new, skipped)
        self._report_cost(context, job)
        if succeeded:
            return job.get("result")
        exit_code = job.get("exit_code")
        if job["state"] == "failed" and exit_code is not None and exit_code in self.skip_on_exit_code:
            raise AirflowSkipException(f"offload job {job['id']} exited with code {exit_code}: skipping the task")
        message = f"offload job {job['id']} {job['state']}: {job.get('reason') or 'no reason given'}"
        tail = text.splitlines()[-self.log_tail_lines:] if text and self.log_tail_lines > 0 else []
        if tail:
            message += "\nlast lines of its log:\n" + "\n".join(tail)
        raise AirflowException(message)

    def _report_cost(self, context: Context, job: dict[str, Any]) -> None:
        """Where the ended job ran and what it cost: one task log line, and with do_xcom_push
        XComs `provider` and `cost_usd` (the gateway's `cost.usd`; None when the job never
        reached a provider)."""
        cost = job.get("cost")
        provider = job.get("provider")
        if cost is None:
            self.log.info("[offload] job %s never dispatched, no cost", job["id"])
        else:
            self.log.info("[offload] job %s ran on %s: %s USD (estimated %s USD, billed %s s)%s", job["id"],
                          provider, _usd(cost.get("usd")), _usd(cost.get("estimated_usd")),
                          "unknown" if cost.get("billed_seconds") is None else cost["billed_seconds"],
                          _saved(cost))
        if self.do_xcom_push:
            ti = context["ti"]
            ti.xcom_push(key="cost_usd", value=None if cost is None or cost.get("usd") is None else float(cost["usd"]))
            ti.xcom_push(key="provider", value=provider)


def _saved(cost: dict[str, Any]) -> str:
    """What the same run would have cost at the reference provider, and what routing saved
    (the gateway's `cost.reference`), for the cost line; "" for a gateway that keeps none."""
    reference = cost.get("reference") or {}
    if reference.get("usd") is None or cost.get("usd") is None:
        return ""
    saved = float(reference["usd"]) - float(cost["usd"])
    return f"; {_usd(reference['usd'])} USD at reference {reference['provider']}, saved {_usd(saved)} USD"


def _usd(amount: float | None) -> str:
    """Dollars as the task log shows them, to a millionth (a short job can cost less than a cent)."""
    return "unknown" if amount is None else f"{amount:.6f}"


def _seconds(value: Any, name: str) -> int:
    """A templated number of seconds (a rendered template is a string)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AirflowFailException(f"{name} must be a whole number of seconds, not {value!r}") from None


def _live(job: dict[str, Any]) -> bool:
    return not job["terminal"] and job["state"] != "cancelling"


def _clear_number(context: Context) -> int:
    """How many times the DAG run has been cleared: a clear starts the task instance's jobs
    over (see `OffloadJobOperator._follow_or_clean_up`)."""
    dag_run = context.get("dag_run")
    return int(getattr(dag_run, "clear_number", 0) or 0)


def cancel_unfinished_jobs(context: Context) -> None:
    """on_failure_callback of every OffloadJobOperator: the task instance has failed for good
    (its try died with its worker, say, and no retry is left), so no try will follow its
    job: cancel whatever of it still runs. Airflow runs this in the worker, or in the DAG
    processor when the scheduler failed the task for a missing heartbeat."""
    task: Any = context["task"]
    labels = _task_labels(context)
    conn_id = getattr(task, "offload_conn_id", OffloadHook.default_conn_name)
    if "{{" in conn_id:  # the DAG processor's copy of the task is not rendered
        conn_id = task.render_template(conn_id, context)
    hook = OffloadHook(conn_id)
    for job in hook.find_jobs(labels):
        if not job["terminal"] and hook.cancel(job["id"]):
            task.log.info("cancelled offload job %s: task instance %s failed", job["id"], ".".join(labels.values()))


def _current_context() -> Context | None:
    """The running task's context, if Airflow has one at hand (None outside a task)."""
    try:
        from airflow.providers.common.compat.sdk import get_current_context

        return get_current_context()
    except Exception:  # noqa: BLE001
        return None


def _task_labels(context: Context) -> dict[str, str]:
    """The labels that tie a job to one task instance (every try of it)."""
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": str(ti.map_index),
    }

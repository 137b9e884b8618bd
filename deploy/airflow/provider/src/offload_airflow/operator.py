"""OffloadJobOperator: one Airflow task runs one container job on offload.

It submits with an Idempotency-Key made of dag, task, run, map index and try, so a POST
that is retried, or a try that runs again, gets the job it already made. With
`reattach_on_restart`, a new try first looks for a job of an earlier try that is still
going (its worker died, or the task was cleared) and follows that one instead of starting
another; the earlier try's stop paths leave such a job alone (`offload_airflow.lifecycle`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import BaseOperator, Context, conf
from airflow.sdk.exceptions import AirflowException, AirflowTaskTimeout, TaskDeferralTimeout
from airflow.sdk.log import mask_secret

from offload_airflow.hook import OffloadHook, log_progress
from offload_airflow.lifecycle import runs_again, task_instance_state
from offload_airflow.trigger import OffloadJobTrigger


#: How long a job may outlive its task's execution_timeout: its timeout_seconds is capped at
#: execution_timeout plus this, so that a job every cancel path missed (a trigger removed
#: before a triggerer ran it, a gateway unreachable at the cancel) still ends.
EXECUTION_TIMEOUT_GRACE_SECONDS = 120


class OffloadJobOperator(BaseOperator):
    """Runs a container job on offload and waits for it to end.

    The job's fields (image, command, args, env, secret_env, timeout_seconds, provider,
    labels, provider_options, name) are those of `POST /v1/jobs`; its `resources` are
    `container_resources` here, because BaseOperator's `resources` means something else. The task
    succeeds when the job does, returns the job's `result` (its `offload-result:` line) as
    XCom, and otherwise fails with the job's reason and the last lines of its log. While the
    job runs, each poll copies its new log lines into the task log (at most `log_lines`
    per poll); once it ends, its whole log follows. The job id is pushed as XCom `job_id`;
    once the job has ended (whether it succeeded or not), its provider and what it cost are
    pushed as XComs `provider` and `cost_usd` (None when it never reached a provider) and
    written as one line of the task log.

    `execution_timeout` bounds the whole wait, deferred or not: the deferral gets the time
    that is left as its timeout, and when it runs out the job is cancelled and the task
    fails with AirflowTaskTimeout, as it does when the worker waits. As a safety net the
    job's `timeout_seconds` is capped at execution_timeout plus
    EXECUTION_TIMEOUT_GRACE_SECONDS (120).

    :param deferrable: wait on the triggerer (no worker slot held) instead of in the worker.
    :param wait_seconds: how long each long-poll request may be held by the gateway.
    :param reattach_on_restart: a new try follows a still-running job of an earlier try of
        this task instance (after a lost worker, a clear) instead of submitting a new one,
        and a stopped try leaves the job to it. False: each try runs its own job; a stopped
        try cancels its job, and a new try cancels what earlier tries left running.
    :param log_tail_lines: how many lines of the log go into the failure message.
    :param log_lines: how many of the log's last lines each poll reads for the task log
        while the job runs (0: only the whole log at the end).
    """

    template_fields: Sequence[str] = (
        "image", "command", "args", "env", "secret_env", "container_resources", "labels", "name", "provider",
        "provider_options",
    )
    template_fields_renderers = {"env": "json", "container_resources": "json", "labels": "json", "provider_options": "json"}
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        image: str,
        command: list[str] | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        secret_env: dict[str, str] | None = None,
        container_resources: dict[str, Any] | None = None,
        timeout_seconds: int | None = None,
        provider: str = "auto",
        labels: dict[str, str] | None = None,
        provider_options: dict[str, Any] | None = None,
        name: str | None = None,
        offload_conn_id: str = OffloadHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_seconds: int = 30,
        reattach_on_restart: bool = True,
        log_tail_lines: int = 20,
        log_lines: int = 50,
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
        self.labels = labels
        self.provider_options = provider_options
        self.name = name
        self.offload_conn_id = offload_conn_id
        self.deferrable = deferrable
        self.wait_seconds = wait_seconds
        self.reattach_on_restart = reattach_on_restart
        self.log_tail_lines = log_tail_lines
        self.log_lines = log_lines
        # When the task instance fails for good, nobody will wait for its job any more.
        callbacks = self.on_failure_callback
        if not isinstance(callbacks, (list, tuple)):
            callbacks = [] if callbacks is None else [callbacks]
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
        job = self._follow_or_clean_up(task_labels, ti.try_number)
        if job is None:
            key = ".".join([*task_labels.values(), str(ti.try_number)])
            job = self.hook.submit(self._spec(task_labels, ti.try_number), key)
            self.log.info("offload job %s: %s", job["id"], job["state"])
        else:
            self.log.info("reattached to offload job %s (submitted by try %s): %s",
                          job["id"], job["labels"].get("try_number"), job["state"])
        self.job_id = job["id"]
        ti.xcom_push(key="job_id", value=job["id"])
        if job["terminal"]:
            return self._finish(context, job)
        if self.deferrable:
            self._defer(job["id"], self._deadline(context, deadline))
        try:
            progress = log_progress(job["id"], self.log_lines, self.log)
            job = asyncio.run(self.hook.await_job(job["id"], self.wait_seconds, progress))
        except AirflowTaskTimeout:
            self._cancel("execution_timeout")
            raise
        return self._finish(context, job)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, deadline: str | None = None
    ) -> Any:
        """Where the task resumes once the trigger has seen the job end.

        Without an event the deferral was cut short (the process waiting on the trigger
        died): start over, which reattaches to the job and defers for the time left.
        """
        if event is None:
            return self.execute(context, deadline)
        self.job_id = event["job_id"]
        if "error" in event:
            raise AirflowException(f"waiting for offload job {self.job_id}: {event['error']}")
        return self._finish(context, event["job"])

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
        cleared, SIGTERM): cancel the job unless a try will follow it."""
        if not self.job_id or self._cancelled:
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

    def _mask_secrets(self) -> None:
        for value in (self.secret_env or {}).values():
            mask_secret(value)

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
        self.defer(
            trigger=OffloadJobTrigger(job_id, self.offload_conn_id, self.wait_seconds, self.log_lines,
                                      self.reattach_on_restart, list((self.secret_env or {}).values())),
            method_name="execute_complete",
            kwargs={"deadline": deadline.isoformat() if deadline else None},
            timeout=timeout,
        )

    def _spec(self, task_labels: dict[str, str], try_number: int) -> dict[str, Any]:
        fields = {
            "name": self.name or f"{task_labels['dag_id']}.{task_labels['task_id']}",
            "image": self.image,
            "command": self.command,
            "args": self.args,
            "env": self.env,
            "secret_env": self.secret_env,
            "resources": self.container_resources,
            "timeout_seconds": self._job_timeout(),
            "provider": self.provider,
            "labels": {**(self.labels or {}), **task_labels, "try_number": str(try_number)},
            "provider_options": self.provider_options,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def _job_timeout(self) -> int | None:
        """The job's timeout_seconds, capped by execution_timeout (the same for every run of a
        try, so that the Idempotency-Key keeps matching the body)."""
        if not self.execution_timeout:
            return self.timeout_seconds
        cap = math.ceil(self.execution_timeout.total_seconds()) + EXECUTION_TIMEOUT_GRACE_SECONDS
        return min(self.timeout_seconds, cap) if self.timeout_seconds else cap

    def _live_job(self, task_labels: dict[str, str]) -> dict[str, Any] | None:
        """The newest job of this task instance that runs and is not being cancelled, whichever
        try submitted it."""
        return next((job for job in self.hook.find_jobs(task_labels) if _live(job)), None)

    def _follow_or_clean_up(self, task_labels: dict[str, str], try_number: int) -> dict[str, Any] | None:
        """The job this try follows instead of submitting: with reattach, the newest live job
        of the task instance; without, only this try's own (the Idempotency-Key returns it
        anyway), after cancelling what earlier tries left running."""
        if self.reattach_on_restart:
            return self._live_job(task_labels)
        for job in self.hook.find_jobs(task_labels):
            if _live(job) and job["labels"].get("try_number") != str(try_number) and self.hook.cancel(job["id"]):
                self.log.info("cancelled offload job %s, left running by try %s", job["id"],
                              job["labels"].get("try_number"))
        return None

    def _finish(self, context: Context, job: dict[str, Any]) -> Any:
        """The job has ended (however the wait saw it): its log and cost into the task log,
        its provider and cost as XCom, then the task's outcome."""
        log = self.hook.logs(job["id"])
        self.log.info("offload job %s %s; its log:", job["id"], job["state"])
        for line in log.splitlines():
            self.log.info("[offload] %s", line)
        self._report_cost(context, job)
        if job["state"] == "succeeded":
            return job.get("result")
        message = f"offload job {job['id']} {job['state']}: {job.get('reason') or 'no reason given'}"
        tail = log.splitlines()[-self.log_tail_lines:]
        if tail:
            message += "\nlast lines of its log:\n" + "\n".join(tail)
        raise AirflowException(message)

    def _report_cost(self, context: Context, job: dict[str, Any]) -> None:
        """Where the ended job ran and what it cost: one task log line, XComs `provider` and
        `cost_usd` (the gateway's `cost.usd`; None when the job never reached a provider)."""
        cost = job.get("cost")
        provider = job.get("provider")
        if cost is None:
            self.log.info("[offload] job %s never dispatched, no cost", job["id"])
        else:
            self.log.info("[offload] job %s ran on %s: %s USD (estimated %s USD, billed %s s)", job["id"],
                          provider, _usd(cost.get("usd")), _usd(cost.get("estimated_usd")),
                          "unknown" if cost.get("billed_seconds") is None else cost["billed_seconds"])
        ti = context["ti"]
        ti.xcom_push(key="cost_usd", value=None if cost is None or cost.get("usd") is None else float(cost["usd"]))
        ti.xcom_push(key="provider", value=provider)


def _usd(amount: float | None) -> str:
    """Dollars as the task log shows them, to a millionth (a short job can cost less than a cent)."""
    return "unknown" if amount is None else f"{amount:.6f}"


def _live(job: dict[str, Any]) -> bool:
    return not job["terminal"] and job["state"] != "cancelling"


def cancel_unfinished_jobs(context: Context) -> None:
    """on_failure_callback of every OffloadJobOperator: the task instance has failed for good
    (its try died with its worker, say, and no retry is left), so no try will follow its
    job: cancel whatever of it still runs. Airflow runs this in the worker, or in the DAG
    processor when the scheduler failed the task for a missing heartbeat."""
    task = context["task"]
    labels = _task_labels(context)
    hook = OffloadHook(getattr(task, "offload_conn_id", OffloadHook.default_conn_name))
    for job in hook.find_jobs(labels):
        if not job["terminal"] and hook.cancel(job["id"]):
            task.log.info("cancelled offload job %s: task instance %s failed", job["id"], ".".join(labels.values()))


def _task_labels(context: Context) -> dict[str, str]:
    """The labels that tie a job to one task instance (every try of it)."""
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": str(ti.map_index),
    }

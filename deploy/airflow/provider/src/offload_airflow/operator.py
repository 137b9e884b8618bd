"""OffloadJobOperator: one Airflow task runs one container job on offload.

It submits with an Idempotency-Key made of dag, task, run, map index and try, so a POST
that is retried, or a try that runs again, gets the job it already made. With
`reattach_on_restart`, a new try first looks for a job of an earlier try that is still
going (its worker died, say) and follows that one instead of starting another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context, conf
from airflow.sdk.exceptions import AirflowException, TaskDeferralError, TaskDeferralTimeout
from airflow.sdk.log import mask_secret

from offload_airflow.hook import OffloadHook
from offload_airflow.trigger import OffloadJobTrigger


class OffloadJobOperator(BaseOperator):
    """Runs a container job on offload and waits for it to end.

    The job's fields (image, command, args, env, secret_env, timeout_seconds, provider,
    labels, provider_options, name) are those of `POST /v1/jobs`; its `resources` are
    `container_resources` here, because BaseOperator's `resources` means something else. The task
    succeeds when the job does, returns the job's `result` (its `offload-result:` line) as
    XCom, and otherwise fails with the job's reason and the last lines of its log. The job's
    log is copied into the task log, and the job id is pushed as XCom `job_id`.

    :param deferrable: wait on the triggerer (no worker slot held) instead of in the worker.
    :param wait_seconds: how long each long-poll request may be held by the gateway.
    :param reattach_on_restart: follow a still-running job of an earlier try of this task
        instead of submitting a new one.
    :param log_tail_lines: how many lines of the log go into the failure message.
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
        self.job_id: str | None = None

    @property
    def hook(self) -> OffloadHook:
        return OffloadHook(self.offload_conn_id)

    def execute(self, context: Context) -> Any:
        for value in (self.secret_env or {}).values():
            mask_secret(value)
        ti = context["ti"]
        task_labels = _task_labels(context)
        job = self._live_job(task_labels) if self.reattach_on_restart else None
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
            return self._finish(job)
        if self.deferrable:
            self.defer(
                trigger=OffloadJobTrigger(job["id"], self.offload_conn_id, self.wait_seconds),
                method_name="execute_complete",
            )
        return self._finish(asyncio.run(self.hook.await_job(job["id"], self.wait_seconds)))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Where the task resumes once the trigger has seen the job end.

        Without an event the deferral was cut short (the process waiting on the trigger
        died): start over, which reattaches to the job.
        """
        if event is None:
            return self.execute(context)
        self.job_id = event["job_id"]
        if "error" in event:
            raise AirflowException(f"waiting for offload job {self.job_id}: {event['error']}")
        return self._finish(event["job"])

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (TaskDeferralTimeout, TaskDeferralError):
            # The deferral timed out (execution_timeout) or the trigger died: the task
            # fails, so the job must not run on unwatched.
            if job := self._live_job(_task_labels(context)):
                self.job_id = job["id"]
                self.on_kill()
            raise

    def on_kill(self) -> None:
        """The task is being stopped (timeout, SIGTERM, marked failed): stop the job as well."""
        if self.job_id and self.hook.cancel(self.job_id):
            self.log.info("cancelled offload job %s", self.job_id)

    def _spec(self, task_labels: dict[str, str], try_number: int) -> dict[str, Any]:
        fields = {
            "name": self.name or f"{task_labels['dag_id']}.{task_labels['task_id']}",
            "image": self.image,
            "command": self.command,
            "args": self.args,
            "env": self.env,
            "secret_env": self.secret_env,
            "resources": self.container_resources,
            "timeout_seconds": self.timeout_seconds,
            "provider": self.provider,
            "labels": {**(self.labels or {}), **task_labels, "try_number": str(try_number)},
            "provider_options": self.provider_options,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def _live_job(self, task_labels: dict[str, str]) -> dict[str, Any] | None:
        """The newest unfinished job of this task instance, whichever try submitted it."""
        return next((job for job in self.hook.find_jobs(task_labels) if not job["terminal"]), None)

    def _finish(self, job: dict[str, Any]) -> Any:
        log = self.hook.logs(job["id"])
        for line in log.splitlines():
            self.log.info("[offload] %s", line)
        if job["state"] == "succeeded":
            return job.get("result")
        message = f"offload job {job['id']} {job['state']}: {job.get('reason') or 'no reason given'}"
        tail = log.splitlines()[-self.log_tail_lines:]
        if tail:
            message += "\nlast lines of its log:\n" + "\n".join(tail)
        raise AirflowException(message)


def _task_labels(context: Context) -> dict[str, str]:
    """The labels that tie a job to one task instance (every try of it)."""
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": str(ti.map_index),
    }

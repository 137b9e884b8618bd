"""The deferred half of OffloadJobOperator: waits on the triggerer, so no worker slot is held."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk.log import amask_secret
from airflow.triggers.base import BaseTrigger, TriggerEvent

from offload_airflow.hook import OffloadHook, log_progress
from offload_airflow.lifecycle import UNKNOWN, atask_instance_state, runs_again

#: The message Airflow's triggerer cancels a trigger with when a user acted on its task.
_USER_ACTION_CANCEL = "__airflow_user_action__"
#: How long on_kill waits for Airflow to say what becomes of the task instance.
STATE_QUERY_SECONDS = 20


class OffloadJobTrigger(BaseTrigger):
    """Fires once the job has ended, with the job as the gateway reports it.

    While it waits, each poll copies the job's new log lines (at most `log_lines` of them)
    into the task log, so the task's log in the Airflow UI shows the job's progress.

    :param log_lines: how many of the log's last lines each poll reads; 0 turns it off.
    :param reattach_on_restart: the operator's setting; with it, `on_kill` leaves the job to
        the try that follows this one (see `offload_airflow.lifecycle`).
    :param secret_values: the job's `secret_env` values, masked in what the trigger logs as
        they are in the worker (Airflow stores trigger arguments encrypted).
    """

    def __init__(
        self,
        job_id: str,
        offload_conn_id: str = OffloadHook.default_conn_name,
        wait_seconds: int = 30,
        log_lines: int = 50,
        reattach_on_restart: bool = True,
        secret_values: list[str] | None = None,
    ):
        super().__init__()
        self.job_id = job_id
        self.offload_conn_id = offload_conn_id
        self.wait_seconds = wait_seconds
        self.log_lines = log_lines
        self.reattach_on_restart = reattach_on_restart
        self.secret_values = secret_values or []

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "offload_conn_id": self.offload_conn_id,
                "wait_seconds": self.wait_seconds,
                "log_lines": self.log_lines,
                "reattach_on_restart": self.reattach_on_restart,
                "secret_values": self.secret_values,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        for value in self.secret_values:
            await amask_secret(value)
        on_poll = log_progress(self.job_id, self.log_lines, self.log)
        try:
            job = await OffloadHook(self.offload_conn_id).await_job(self.job_id, self.wait_seconds, on_poll)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the task, which fails with it
            yield TriggerEvent({"job_id": self.job_id, "error": str(e)})
            return
        yield TriggerEvent({"job_id": self.job_id, "job": job})

    async def on_kill(self) -> None:
        """A user acted on the deferred task (marked it failed or success, cleared it, failed
        its DAG run), or another triggerer took this trigger over: cancel the job unless a
        try will follow it.

        Airflow 3.3's triggerer cancels the trigger again at each of its syncs (about every
        second) until the trigger is gone, also while `on_kill` runs; the first question to
        Airflow in a triggerer process can take seconds. So the work runs shielded, and only
        those repeated cancels are waited out (a shutdown or on_kill_timeout still ends it).
        """
        stop = asyncio.ensure_future(self._stop_job())
        while True:
            try:
                return await asyncio.shield(stop)
            except asyncio.CancelledError as e:
                if stop.done() or not (e.args and e.args[0] == _USER_ACTION_CANCEL):
                    raise

    async def _stop_job(self) -> None:
        ti = getattr(self, "task_instance", None)
        if self.reattach_on_restart and ti is not None:
            try:
                state = await asyncio.wait_for(
                    atask_instance_state(ti.dag_id, ti.task_id, ti.run_id, ti.map_index), STATE_QUERY_SECONDS
                )
            except TimeoutError:
                state = UNKNOWN
            if runs_again(state):
                self.log.info(
                    "offload job %s left running: the task instance is %s, and the try that follows "
                    "reattaches to the job", self.job_id, state,
                )
                return
        if await OffloadHook(self.offload_conn_id).acancel(self.job_id):
            self.log.info("cancelled offload job %s", self.job_id)

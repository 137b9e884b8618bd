"""The deferred half of OffloadJobOperator: waits on the triggerer, so no worker slot is held."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from offload_airflow.hook import OffloadHook
from offload_airflow.lifecycle import UNKNOWN, atask_instance_state, runs_again
from offload_airflow.logs import LogProgress, progress_poll
from offload_airflow.version_compat import AIRFLOW_V_3_3_PLUS

#: The message Airflow 3.3's triggerer cancels a trigger with when a user acted on its task.
_USER_ACTION_CANCEL = "__airflow_user_action__"
#: How long a stopping trigger waits for Airflow to say what becomes of the task instance.
STATE_QUERY_SECONDS = 20


async def _amask_secret(value: str) -> None:
    """Masks a value in what this process logs, without blocking the event loop."""
    try:
        from airflow.sdk.log import amask_secret  # Airflow 3.3 (Task SDK 1.3)
    except ImportError:
        from asgiref.sync import sync_to_async
        from airflow.providers.common.compat.sdk import mask_secret

        await sync_to_async(mask_secret)(value)
    else:
        await amask_secret(value)


class OffloadJobTrigger(BaseTrigger):
    """Fires once the job has ended, with the job as the gateway reports it.

    While it waits, each poll copies the job's new log lines (from the last `log_lines` of
    them) into the task log, so the task's log in the Airflow UI shows the job's progress;
    the event carries what was shown, so the task adds only the rest at the end.

    When a user stops the deferred task (marks it failed or success, clears it, fails its
    DAG run), the trigger cancels the job unless a try will follow it (see
    `offload_airflow.lifecycle`): in `on_kill` on Airflow 3.3 and later, in `cleanup` before
    (which runs on every exit, so it first asks Airflow whether the task instance is still
    deferred, as when a triggerer stops or hands the trigger over).

    :param job_id: the job to wait for.
    :param offload_conn_id: the gateway's connection.
    :param wait_seconds: how long each long-poll request may be held by the gateway.
    :param log_lines: how many of the log's last lines each poll reads; 0 turns it off.
    :param reattach_on_restart: the operator's setting; with it, a stopped trigger leaves
        the job to the try that follows this one.
    :param secret_values: the job's `secret_env` values, masked in what the trigger logs as
        they are in the worker (Airflow stores trigger arguments encrypted).
    :param log_seen: what the task log already shows of the job's log (from the worker).
    """

    def __init__(
        self,
        job_id: str,
        offload_conn_id: str = OffloadHook.default_conn_name,
        wait_seconds: int = 30,
        log_lines: int = 50,
        reattach_on_restart: bool = True,
        secret_values: list[str] | None = None,
        log_seen: list[str] | None = None,
    ):
        super().__init__()
        self.job_id = job_id
        self.offload_conn_id = offload_conn_id
        self.wait_seconds = wait_seconds
        self.log_lines = log_lines
        self.reattach_on_restart = reattach_on_restart
        self.secret_values = secret_values or []
        self.log_seen = log_seen or []
        self._fired = False

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
                "log_seen": self.log_seen,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        for value in self.secret_values:
            await _amask_secret(value)
        hook = OffloadHook(self.offload_conn_id)
        progress = LogProgress(self.job_id, self.log_lines, self.log_seen) if self.log_lines > 0 else None
        try:
            job = await hook.await_job(self.job_id, self.wait_seconds, progress_poll(hook, progress, self.log))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the task, which fails with it
            self.log.error("waiting for offload job %s: %s", self.job_id, e)
            self._fired = True
            yield TriggerEvent({"job_id": self.job_id, "error": str(e),
                                "refused": isinstance(e, AirflowFailException)})
            return
        self._fired = True
        yield TriggerEvent({"job_id": self.job_id, "job": job,
                            "log_seen": progress.seen if progress else self.log_seen})

    async def on_kill(self) -> None:
        """Airflow 3.3 and later: a user acted on the deferred task (marked it failed or
        success, cleared it, failed its DAG run), or another triggerer took this trigger
        over: cancel the job unless a try will follow it.

        Airflow 3.3's triggerer cancels the trigger again at each of its syncs (about every
        second) until the trigger is gone, also while `on_kill` runs; the first question to
        Airflow in a triggerer process can take seconds. So the work runs shielded, and only
        those repeated cancels are waited out (a shutdown or on_kill_timeout still ends it).
        """
        await self._shielded(self._stop_job(unknown="cancel"), _USER_ACTION_CANCEL)

    async def cleanup(self) -> None:
        """Before Airflow 3.3, the only hook a stopped trigger gets, on every exit: when it
        has not fired, the task instance's state tells a user's action (failed, success,
        cleared) from a triggerer stopping or handing the trigger over (still deferred). When
        Airflow does not answer (a triggerer shutting down), the job is left running."""
        if AIRFLOW_V_3_3_PLUS or self._fired:
            return
        await self._shielded(self._stop_job(unknown="leave"), None)

    @staticmethod
    async def _shielded(work: Any, repeated: str | None) -> None:
        stop = asyncio.ensure_future(work)
        while True:
            try:
                return await asyncio.shield(stop)
            except asyncio.CancelledError as e:
                if stop.done() or repeated is None or not (e.args and e.args[0] == repeated):
                    raise

    async def _stop_job(self, unknown: str) -> None:
        """Cancels the job unless a try follows it; `unknown` says what to do when Airflow
        cannot tell the task instance's state ("cancel" or "leave")."""
        ti = getattr(self, "task_instance", None)
        state: Any = UNKNOWN
        if ti is not None:
            try:
                state = await asyncio.wait_for(
                    atask_instance_state(ti.dag_id, ti.task_id, ti.run_id, ti.map_index), STATE_QUERY_SECONDS
                )
            except asyncio.TimeoutError:
                state = UNKNOWN
        if state == UNKNOWN and unknown == "leave":
            self.log.warning("offload job %s left running: Airflow did not say what became of the "
                             "task instance", self.job_id)
            return
        if state == "deferred" or (self.reattach_on_restart and runs_again(state)):
            self.log.info(
                "offload job %s left running: the task instance is %s, and the try that follows "
                "reattaches to the job", self.job_id, state,
            )
            return
        try:
            if await OffloadHook(self.offload_conn_id).acancel(self.job_id):
                self.log.info("cancelled offload job %s", self.job_id)
        except Exception as e:  # noqa: BLE001 - the job's timeout_seconds still ends it
            self.log.warning("cancelling offload job %s: %s", self.job_id, e)

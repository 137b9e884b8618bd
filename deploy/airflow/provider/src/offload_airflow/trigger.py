"""The deferred half of OffloadJobOperator: waits on the triggerer, so no worker slot is held."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from offload_airflow.hook import OffloadHook


class OffloadJobTrigger(BaseTrigger):
    """Fires once the job has ended, with the job as the gateway reports it."""

    def __init__(self, job_id: str, offload_conn_id: str = OffloadHook.default_conn_name, wait_seconds: int = 30):
        super().__init__()
        self.job_id = job_id
        self.offload_conn_id = offload_conn_id
        self.wait_seconds = wait_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"job_id": self.job_id, "offload_conn_id": self.offload_conn_id, "wait_seconds": self.wait_seconds},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            job = await OffloadHook(self.offload_conn_id).await_job(self.job_id, self.wait_seconds)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the task, which fails with it
            yield TriggerEvent({"job_id": self.job_id, "error": str(e)})
            return
        yield TriggerEvent({"job_id": self.job_id, "job": job})

    async def on_kill(self) -> None:
        """A user marked the deferred task failed or cleared it: stop the job too."""
        if await OffloadHook(self.offload_conn_id).acancel(self.job_id):
            self.log.info("cancelled offload job %s", self.job_id)

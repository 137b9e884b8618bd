"""The task's link to its job on the gateway's dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import TaskInstanceKey


class OffloadJobLink(BaseOperatorLink):
    """"Offload Job": the page of the task's job on the gateway's dashboard,
    `{gateway URL}/ui/jobs/{job id}`.

    The operator saves the link as XCom right after it submits (or reattaches to) the job,
    so it works while the task waits, deferred or not. Airflow 3 shows what that XCom holds
    (`xcom_key`, the key Airflow 3 reads a link from); Airflow 2 asks `get_link`, which
    reads the same XCom.
    """

    name = "Offload Job"
    #: The XCom key the link is kept under: the one Airflow 3 reads for this class.
    xcom_key = "_link_OffloadJobLink"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(ti_key=ti_key, key=self.xcom_key)
        return url if isinstance(url, str) else ""

    @classmethod
    def url(cls, gateway: str, job_id: str) -> str:
        """The dashboard's page of a job."""
        return f"{gateway.rstrip('/')}/ui/jobs/{job_id}"

    @classmethod
    def persist(cls, context: Any, gateway: str, job_id: str) -> None:
        """Saves the link of the task instance's job."""
        context["ti"].xcom_push(key=cls.xcom_key, value=cls.url(gateway, job_id))

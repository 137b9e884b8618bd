"""The Airflow version this package runs on, as the official providers test it: one flag per
version where something it uses differs (each provider keeps such a module of its own rather
than importing another provider's)."""

from __future__ import annotations


def _airflow_version() -> tuple[int, int, int]:
    from packaging.version import Version

    from airflow import __version__

    version = Version(__version__)
    return version.major, version.minor, version.micro


#: Airflow 3: the Task SDK, workers without database access, triggers asking Airflow over
#: the supervisor's channel.
AIRFLOW_V_3_0_PLUS: bool = _airflow_version() >= (3, 0, 0)
#: Airflow 3.1: the executor interface OffloadExecutor is written for (`queue_workload`,
#: `_process_workloads`, the Task SDK's `execute_workload` in the worker).
AIRFLOW_V_3_1_PLUS: bool = _airflow_version() >= (3, 1, 0)
#: Airflow 3.3: the triggerer calls a trigger's `on_kill` on a user's action (mark failed or
#: success, clear); before it, only `cleanup`, on every exit. The worker's `execute_workload`
#: also runs ExecuteCallback workloads (OffloadExecutor takes them from 3.3 on).
AIRFLOW_V_3_3_PLUS: bool = _airflow_version() >= (3, 3, 0)
#: Airflow 3.4: the executor interface changes (`executor_queues`, `supported_workload_types`).
AIRFLOW_V_3_4_PLUS: bool = _airflow_version() >= (3, 4, 0)


def airflow_version() -> str:
    """The running Airflow's version, as it spells it."""
    from airflow import __version__

    return str(__version__)


__all__ = ["AIRFLOW_V_3_0_PLUS", "AIRFLOW_V_3_1_PLUS", "AIRFLOW_V_3_3_PLUS", "AIRFLOW_V_3_4_PLUS", "airflow_version"]

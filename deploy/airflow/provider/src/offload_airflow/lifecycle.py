"""Who stops a job, and when: one rule shared by the operator, its trigger and its callback.

A job belongs to its task instance (dag, task, run, map index), not to one try of it. A
waiter that stops on purpose (a trigger killed by a user action, a worker told to stop)
asks Airflow what becomes of the task instance:

- it will run again (cleared, up for retry, restarting, or a newer try already runs or
  waits): leave the job alone; the next try reattaches to it and ends with its outcome, so
  a try never ends with a cancel made by its predecessor;
- it is done for good (failed, success, skipped, upstream_failed, removed), or Airflow
  cannot say: cancel the job, since nobody will wait for it.

Timeouts (execution_timeout, in the worker or as the deferral's timeout) always cancel:
the budget is spent, and the next try, if any, submits a new job. A try that dies without
a word (worker or triggerer killed) cancels nothing; the next try (or the same try's trigger
on another triggerer) follows the job, and when the task instance fails for good, the
operator's failure callback cancels whatever is still running.

A new try also takes the outcome of a job of its task instance that already succeeded,
instead of running the work again, when the DAG run has not been cleared since that job
was submitted (each job carries the run's `clear_number`): the earlier try failed after its
job succeeded (its worker died before it could finish, say). A clear starts over: the
next try submits a new job. Airflow 3.2 and later count every clear; Airflow 2.11, 3.0 and
3.1 count only the clears of a DAG run that had ended.

Where a stop is seen: in the worker, `OffloadJobOperator.on_kill`; on the triggerer,
`OffloadJobTrigger.on_kill` on Airflow 3.3 and later (called only on a user's action), and
`OffloadJobTrigger.cleanup` before 3.3 (called on every exit, so a task instance still
deferred means a triggerer stopping or handing the trigger over: the job is left running).
Airflow 3 answers the state question over the supervisor's channel, Airflow 2 from its
database.

With `reattach_on_restart=False` every stop cancels, and a new try cancels what earlier
tries left running before it submits its own job.
"""

from __future__ import annotations

from typing import Any

from offload_airflow.version_compat import AIRFLOW_V_3_0_PLUS

#: Task instance states after which another try (or the same try, resumed) follows the job.
RUNS_AGAIN = frozenset({
    None, "none", "scheduled", "queued", "running", "deferred", "up_for_retry", "up_for_reschedule",
    "restarting", "awaiting_input",
})

#: What `task_instance_state` returns when Airflow did not answer.
UNKNOWN = "<unknown>"


def _state_of(task_states: dict[str, Any], run_id: str, task_id: str, map_index: int) -> Any:
    states = task_states.get(run_id, {})
    key = task_id if map_index is None or map_index < 0 else f"{task_id}_{map_index}"
    if key not in states:
        return UNKNOWN
    state = states[key]
    return getattr(state, "value", state)


def task_instance_state(dag_id: str, task_id: str, run_id: str, map_index: int) -> Any:
    """The task instance's state as Airflow has it now, from a worker (task process or
    callback): over the supervisor's channel on Airflow 3, from the database on Airflow 2."""
    try:
        if not AIRFLOW_V_3_0_PLUS:
            return _state_from_database(dag_id, task_id, run_id, map_index)
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = RuntimeTaskInstance.get_task_states(
            dag_id=dag_id, map_index=map_index, task_ids=[task_id], run_ids=[run_id]
        )
        return _state_of(states, run_id, task_id, map_index)
    except Exception:  # noqa: BLE001 - no answer means "cannot say": the caller cancels
        return UNKNOWN


async def atask_instance_state(dag_id: str, task_id: str, run_id: str, map_index: int) -> Any:
    """`task_instance_state` from a trigger, without blocking the triggerer's event loop."""
    try:
        if not AIRFLOW_V_3_0_PLUS:
            from asgiref.sync import sync_to_async

            return await sync_to_async(_state_from_database)(dag_id, task_id, run_id, map_index)
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import GetTaskStates

        response = await task_runner.SUPERVISOR_COMMS.asend(
            GetTaskStates(dag_id=dag_id, map_index=map_index, task_ids=[task_id], run_ids=[run_id])
        )
        task_states = getattr(response, "task_states", None)
        if not isinstance(task_states, dict):
            return UNKNOWN
        return _state_of(task_states, run_id, task_id, map_index)
    except Exception:  # noqa: BLE001
        return UNKNOWN


def _state_from_database(dag_id: str, task_id: str, run_id: str, map_index: int) -> Any:
    """Airflow 2: workers, callbacks and the triggerer read the database."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        found = session.execute(
            select(TaskInstance.state).where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.task_id == task_id,
                TaskInstance.run_id == run_id,
                TaskInstance.map_index == map_index,
            )
        ).first()
    if found is None:
        return UNKNOWN
    state = found[0]
    return getattr(state, "value", state)


def runs_again(state: Any) -> bool:
    """Whether a try will follow the job after this one stops (see the module's doc)."""
    return state != UNKNOWN and state in RUNS_AGAIN

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

With `reattach_on_restart=False` every stop cancels, and a new try cancels what earlier
tries left running before it submits its own job.
"""

from __future__ import annotations

from typing import Any

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
    """The task instance's state as Airflow has it now, from a worker (task process or callback)."""
    try:
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
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import GetTaskStates

        response = await task_runner.SUPERVISOR_COMMS.asend(
            GetTaskStates(dag_id=dag_id, map_index=map_index, task_ids=[task_id], run_ids=[run_id])
        )
        return _state_of(response.task_states, run_id, task_id, map_index)
    except Exception:  # noqa: BLE001
        return UNKNOWN


def runs_again(state: Any) -> bool:
    """Whether a try will follow the job after this one stops (see the module's doc)."""
    return state != UNKNOWN and state in RUNS_AGAIN

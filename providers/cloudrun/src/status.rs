//! What Cloud Run says about a job of offload's: its execution's counts and times, the
//! task's last attempt for how a failed one ended, and the job's terminal condition while
//! it has no execution (an image that cannot be found fails the job before it starts one).
//!
//! It reads the clients' models; the tests write them as the Admin API's JSON, so the
//! published shapes are what they are held to.

use std::time::{Duration, SystemTime};

use google_cloud_run_v2::model::condition::{Reasons, State};
use google_cloud_run_v2::model::{Condition, Execution, Job, Task};
use offload_provider::{Phase, RunTimes};

/// `google.rpc.Code.DEADLINE_EXCEEDED`: a task attempt that ran past its timeout.
const DEADLINE_EXCEEDED: i32 = 4;

fn time(at: &Option<google_cloud_wkt::Timestamp>) -> Option<SystemTime> {
    let at = at.as_ref()?;
    let since = Duration::new(u64::try_from(at.seconds()).ok()?, at.nanos().max(0) as u32);
    Some(SystemTime::UNIX_EPOCH + since)
}

/// The execution's start and completion, as Cloud Run reports them.
pub fn ran(execution: &Execution) -> Option<RunTimes> {
    RunTimes::of(
        time(&execution.start_time),
        time(&execution.completion_time),
    )
}

/// Whether the execution has ended with a failed task, whose last attempt says how.
pub fn needs_task(execution: &Execution) -> bool {
    execution.completion_time.is_some() && execution.failed_count > 0
}

/// The message of the first failed condition, if any.
fn failed_condition(conditions: &[Condition]) -> Option<String> {
    conditions
        .iter()
        .find(|c| c.state == State::ConditionFailed)
        .map(|c| c.message.clone())
}

/// The phase of a job's execution. `task` is its task (for an execution that failed).
pub fn phase(execution: &Execution, task: Option<&Task>) -> Phase {
    if execution.completion_time.is_some() {
        if execution.succeeded_count > 0 && execution.failed_count == 0 {
            return Phase::Exited {
                exit_code: Some(0),
                reason: None,
            };
        }
        if execution.cancelled_count > 0 {
            return Phase::Exited {
                exit_code: None,
                reason: Some("execution cancelled".into()),
            };
        }
        return failed(execution, task);
    }
    if execution.running_count > 0 {
        return Phase::Running;
    }
    Phase::Starting {
        reason: failed_condition(&execution.conditions),
    }
}

/// How an execution whose task failed ended: the last attempt's exit code or signal, or its
/// status (a timeout is `DEADLINE_EXCEEDED`). An attempt that did not exit cleanly has
/// neither code nor signal set (both read 0).
fn failed(execution: &Execution, task: Option<&Task>) -> Phase {
    let attempt = task.and_then(|t| t.last_attempt_result.as_ref());
    let status = attempt.and_then(|a| a.status.as_ref());
    let message = status.map_or("", |s| s.message.as_str());
    let code = attempt.map_or(0, |a| a.exit_code);
    let signal = attempt.map_or(0, |a| a.term_signal);
    let exit_code = (code != 0).then_some(code);
    let reason = if status.is_some_and(|s| s.code == DEADLINE_EXCEEDED) {
        format!("timed out: {message}")
    } else if signal != 0 {
        format!("killed by signal {signal}")
    } else if code != 0 && !message.is_empty() {
        format!("exited with code {code}: {message}")
    } else if code != 0 {
        format!("exited with code {code}")
    } else if !message.is_empty() {
        message.to_string()
    } else {
        failed_condition(&execution.conditions).unwrap_or_else(|| "execution failed".into())
    };
    Phase::Exited {
        exit_code,
        reason: Some(reason),
    }
}

/// The phase of a job with no execution yet: its creation is still starting one, or its
/// terminal condition says why it could not. One still not started `pending` after its
/// creation has failed.
pub fn without_execution(job: &Job, now: SystemTime, pending: Duration) -> Phase {
    let condition = job.terminal_condition.as_ref();
    let message = condition.map_or(String::new(), |c| c.message.clone());
    if let Some(c) = condition.filter(|c| c.state == State::ConditionFailed) {
        let reason = match &c.reasons {
            Some(Reasons::Reason(r)) => r.name().unwrap_or("UNKNOWN"),
            _ => "",
        };
        let reason = match reason {
            "CONTAINER_MISSING"
            | "CONTAINER_PERMISSION_DENIED"
            | "CONTAINER_IMAGE_UNAUTHORIZED" => {
                format!("image pull failed: {message}")
            }
            "" => message,
            r => format!("{r}: {message}"),
        };
        return Phase::Exited {
            exit_code: None,
            reason: Some(reason),
        };
    }
    let waited = time(&job.create_time)
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default();
    if waited > pending {
        let why = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        return Phase::Exited {
            exit_code: None,
            reason: Some(format!(
                "no execution started {}s after the job was created{why}",
                pending.as_secs()
            )),
        };
    }
    Phase::Starting {
        reason: (!message.is_empty()).then_some(message),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn model<T: serde::de::DeserializeOwned>(json: Value) -> T {
        serde_json::from_value(json).unwrap()
    }

    fn ended(counts: Value) -> Execution {
        let mut e = json!({"startTime": "2026-12-02T10:00:00Z", "completionTime": "2026-12-02T10:01:00.500Z"});
        e.as_object_mut()
            .unwrap()
            .extend(counts.as_object().unwrap().clone());
        model(e)
    }

    #[test]
    fn counts_say_running_succeeded_or_cancelled() {
        assert_eq!(
            phase(&model(json!({"runningCount": 1})), None),
            Phase::Running
        );
        assert!(matches!(
            phase(&model(json!({})), None),
            Phase::Starting { .. }
        ));
        let ok = ended(json!({"succeededCount": 1}));
        assert_eq!(
            phase(&ok, None),
            Phase::Exited {
                exit_code: Some(0),
                reason: None
            }
        );
        assert_eq!(ran(&ok).unwrap().seconds(), 61);
        let cancelled = ended(json!({"cancelledCount": 1}));
        assert!(
            matches!(phase(&cancelled, None), Phase::Exited { exit_code: None, reason: Some(r) } if r.contains("cancelled"))
        );
    }

    #[test]
    fn a_failed_task_gives_its_exit_code_or_its_timeout() {
        let e = ended(json!({"failedCount": 1}));
        assert!(needs_task(&e));
        let task: Task = model(
            json!({"lastAttemptResult": {"exitCode": 3, "status": {"code": 2, "message": "Task failed"}}}),
        );
        assert_eq!(
            phase(&e, Some(&task)),
            Phase::Exited {
                exit_code: Some(3),
                reason: Some("exited with code 3: Task failed".into())
            }
        );
        let timed_out: Task = model(
            json!({"lastAttemptResult": {"status": {"code": 4, "message": "The configured timeout was reached."}}}),
        );
        assert!(
            matches!(phase(&e, Some(&timed_out)), Phase::Exited { exit_code: None, reason: Some(r) } if r.starts_with("timed out"))
        );
    }

    #[test]
    fn a_job_without_an_execution_fails_on_its_condition_or_its_wait() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_205_900); // 2026-12-02T10:05:00Z
        let missing: Job = model(
            json!({"createTime": "2026-12-02T10:00:00Z", "terminalCondition": {"type": "Ready",
            "state": "CONDITION_FAILED", "reason": "CONTAINER_MISSING", "message": "Image 'x' not found."}}),
        );
        assert!(
            matches!(without_execution(&missing, now, Duration::from_secs(600)),
            Phase::Exited { exit_code: None, reason: Some(r) } if r == "image pull failed: Image 'x' not found.")
        );
        let waiting: Job = model(
            json!({"createTime": "2026-12-02T10:00:00Z", "terminalCondition": {"type": "Ready", "state": "CONDITION_RECONCILING"}}),
        );
        assert!(matches!(
            without_execution(&waiting, now, Duration::from_secs(600)),
            Phase::Starting { .. }
        ));
        assert!(matches!(
            without_execution(&waiting, now, Duration::from_secs(60)),
            Phase::Exited { .. }
        ));
    }
}

//! A task's TES state, from its job's state and outcome. The job's states are finer in one
//! place only, `failed`, which TES splits by whose fault it was:
//!
//! - `EXECUTOR_ERROR`: an executor exited non-zero (the job has an exit code);
//! - `SYSTEM_ERROR`: anything else (a failed download or upload, a workload lost on its last
//!   attempt, a launch the provider refused, a timeout's stop): no exit code;
//! - `PREEMPTED`: preemptions (spot interruptions) that used up the job's attempts, by its
//!   reason ([`PREEMPTION_REASON`]).
//!
//! `PAUSED` is never used; `UNKNOWN` neither.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{Job, JobState};
use crate::store::ListQuery;

/// How the reason of a job that preemptions ended starts: a preempted workload is launched
/// again (QUEUED here meanwhile), and the job fails only when the preemptions past
/// `routing.max_preemptions` have used up its attempts (`engine::reconcile`'s `preempted`).
pub const PREEMPTION_REASON: &str = "preempted at ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TesState {
    Unknown,
    Queued,
    Initializing,
    Running,
    Paused,
    Complete,
    ExecutorError,
    SystemError,
    Canceled,
    Preempted,
    Canceling,
}

impl TesState {
    pub const ALL: [TesState; 11] = [
        TesState::Unknown,
        TesState::Queued,
        TesState::Initializing,
        TesState::Running,
        TesState::Paused,
        TesState::Complete,
        TesState::ExecutorError,
        TesState::SystemError,
        TesState::Canceled,
        TesState::Preempted,
        TesState::Canceling,
    ];

    pub fn of(job: &Job) -> TesState {
        match job.state {
            JobState::Queued => TesState::Queued,
            JobState::Starting => TesState::Initializing,
            JobState::Running => TesState::Running,
            JobState::Cancelling => TesState::Canceling,
            JobState::Cancelled => TesState::Canceled,
            JobState::Succeeded => TesState::Complete,
            JobState::Failed if job.exit_code.is_some() => TesState::ExecutorError,
            JobState::Failed
                if job
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(PREEMPTION_REASON)) =>
            {
                TesState::Preempted
            }
            JobState::Failed => TesState::SystemError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TesState::Unknown => "UNKNOWN",
            TesState::Queued => "QUEUED",
            TesState::Initializing => "INITIALIZING",
            TesState::Running => "RUNNING",
            TesState::Paused => "PAUSED",
            TesState::Complete => "COMPLETE",
            TesState::ExecutorError => "EXECUTOR_ERROR",
            TesState::SystemError => "SYSTEM_ERROR",
            TesState::Canceled => "CANCELED",
            TesState::Preempted => "PREEMPTED",
            TesState::Canceling => "CANCELING",
        }
    }

    pub fn parse(text: &str) -> Option<TesState> {
        TesState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Narrows a list to the jobs in this state; `false` when no job can be in it.
    pub fn filter(self, query: &mut ListQuery) -> bool {
        let failed = |query: &mut ListQuery, exit: bool| {
            query.state = Some(JobState::Failed);
            query.has_exit_code = Some(exit);
        };
        match self {
            TesState::Unknown | TesState::Paused => return false,
            TesState::Queued => query.state = Some(JobState::Queued),
            TesState::Initializing => query.state = Some(JobState::Starting),
            TesState::Running => query.state = Some(JobState::Running),
            TesState::Canceling => query.state = Some(JobState::Cancelling),
            TesState::Canceled => query.state = Some(JobState::Cancelled),
            TesState::Complete => query.state = Some(JobState::Succeeded),
            TesState::ExecutorError => failed(query, true),
            TesState::SystemError => {
                failed(query, false);
                query.reason_prefix = Some((PREEMPTION_REASON.into(), false));
            }
            TesState::Preempted => {
                failed(query, false);
                query.reason_prefix = Some((PREEMPTION_REASON.into(), true));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reason the engine ends a job with when preemptions used up its attempts is
    /// PREEMPTED; any other failure without an exit code is SYSTEM_ERROR.
    #[test]
    fn preemptions_that_end_a_job_are_preempted() {
        let spec: crate::model::JobSpec =
            serde_json::from_value(serde_json::json!({"image": "a", "command": ["true"]})).unwrap();
        let mut job = Job {
            id: uuid::Uuid::nil(),
            state: JobState::Failed,
            terminal: true,
            provider: None,
            provider_ref: None,
            exit_code: None,
            reason: None,
            result: None,
            labels: Default::default(),
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            attempts: 3,
            spec,
            cost: None,
            steps: vec![],
        };
        job.reason = Some("preempted at fargate (SpotInterruption) 3 times, on the last of 3 attempts".into());
        assert_eq!(TesState::of(&job), TesState::Preempted);
        job.reason = Some("workload lost on the last of 3 attempts".into());
        assert_eq!(TesState::of(&job), TesState::SystemError);
        job.exit_code = Some(2);
        assert_eq!(TesState::of(&job), TesState::ExecutorError);
    }
}

//! Why a Container Apps job is started at most once. `start` takes no idempotency token
//! and answers with no trace of an earlier start that ARM carried out but whose answer was
//! lost (the execution is listed some time after), so a start sent again may start a
//! second execution that no one follows or stops. Two rules keep it to one:
//!
//! - only the process that created a job starts it: the job carries its creator's mark
//!   (a tag, [`crate::job::STARTER_TAG`]), a random id per provider instance, and the
//!   create is create-only, so of two launches of one key only one makes the job. A
//!   launch that finds a job another process made (the gateway restarted, another replica
//!   adopted the job) never starts it: if no execution appears within
//!   `pending_timeout_seconds` of its creation, the job is lost and the engine makes a new
//!   attempt under a new key;
//! - that process sends the start once: it remembers the jobs it sent a start for until
//!   they are released, and forgets one only when Container Apps refused its start.

use std::collections::HashSet;
use std::sync::Mutex;

pub struct Starts {
    mark: String,
    sent: Mutex<HashSet<String>>,
}

impl Default for Starts {
    fn default() -> Starts {
        Starts {
            mark: uuid::Uuid::new_v4().simple().to_string(),
            sent: Mutex::default(),
        }
    }
}

impl Starts {
    /// This provider instance's mark, which the jobs it creates carry.
    pub fn mark(&self) -> &str {
        &self.mark
    }

    /// Whether this instance created `job`, so that it is the one to start it.
    pub fn mine(&self, job: &serde_json::Value) -> bool {
        job["tags"][crate::job::STARTER_TAG] == self.mark.as_str()
    }

    /// Whether the start of `name` may be sent now: none was; if so, it is noted as sent.
    pub fn claim(&self, name: &str) -> bool {
        self.sent.lock().unwrap().insert(name.to_string())
    }

    /// Container Apps refused the start of `name`: it was not carried out.
    pub fn refused(&self, name: &str) {
        self.sent.lock().unwrap().remove(name);
    }

    /// `name` is released: nothing will start it again.
    pub fn forget(&self, name: &str) {
        self.sent.lock().unwrap().remove(name);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_job_is_its_creators_and_its_start_is_claimed_once() {
        let (mine, other) = (Starts::default(), Starts::default());
        assert_ne!(mine.mark(), other.mark());
        let job = json!({"tags": {crate::job::STARTER_TAG: mine.mark()}});
        assert!(mine.mine(&job) && !other.mine(&job));
        assert!(
            !mine.mine(&json!({"tags": {}})),
            "an unmarked job is no one's"
        );
        assert!(mine.claim("j"));
        assert!(!mine.claim("j"), "sent already");
        mine.refused("j");
        assert!(mine.claim("j"), "a refused start was not carried out");
        mine.forget("j");
        assert!(mine.claim("j"));
    }
}

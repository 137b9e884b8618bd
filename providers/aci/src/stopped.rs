//! The logs of groups this process stopped, read just before the stop.
//!
//! Stopping a container group "terminates and recycles all the containers in the group"
//! (Microsoft's ACI docs): their log cannot be counted on afterwards. The engine cancels
//! (or times out) a job, then reads its log tail, then releases the workload later, so
//! `cancel` reads the log first and keeps it here, `logs` answers from it, and `release`
//! forgets it. Held in memory from a cancel to its release (seconds): a gateway restarted
//! in between reads the group's own log again, as it would without this.

//!
//! Bounded in bytes: each log's last [`PER_LOG`] bytes (the engine keeps a far shorter tail),
//! and [`TOTAL`] bytes in all; past that a log is not kept, and its group's own log is read
//! as it would be without this.

use std::collections::HashMap;
use std::sync::Mutex;

/// The end of each stopped group's log that is kept.
const PER_LOG: usize = 1 << 20;

/// Bytes kept in all.
const TOTAL: usize = 64 << 20;

#[derive(Default)]
pub struct StoppedLogs(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    logs: HashMap<String, String>,
    bytes: usize,
}

impl StoppedLogs {
    /// Keeps the end of `log` unless a longer copy is kept already: a log only grows until
    /// the stop, so a cancel repeated after a stop that went through (its answer lost)
    /// reads the recycled, shorter log and must not replace the real one.
    pub fn keep(&self, group: &str, log: String) {
        let log = match log.len() > PER_LOG {
            true => offload_provider::tail_str(&log, PER_LOG).to_string(),
            false => log,
        };
        let mut kept = self.0.lock().unwrap();
        let old = kept.logs.get(group).map_or(0, String::len);
        if old > log.len() || kept.bytes - old + log.len() > TOTAL {
            return;
        }
        kept.bytes = kept.bytes - old + log.len();
        kept.logs.insert(group.to_string(), log);
    }

    pub fn get(&self, group: &str) -> Option<String> {
        self.0.lock().unwrap().logs.get(group).cloned()
    }

    pub fn forget(&self, group: &str) {
        let mut kept = self.0.lock().unwrap();
        if let Some(log) = kept.logs.remove(group) {
            kept.bytes -= log.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_logs_are_bounded_in_bytes() {
        let stopped = StoppedLogs::default();
        stopped.keep("g0", "x".repeat(3 * PER_LOG));
        assert_eq!(stopped.get("g0").unwrap().len(), PER_LOG, "only the end of a long log");
        for i in 1..200 {
            stopped.keep(&format!("g{i}"), "y".repeat(PER_LOG));
        }
        assert!(stopped.0.lock().unwrap().bytes <= TOTAL);
        assert!(stopped.get("g199").is_none(), "kept past the bound");
        stopped.keep("g0", "short".into());
        assert_eq!(stopped.get("g0").unwrap().len(), PER_LOG, "a shorter copy replaced it");
        stopped.forget("g0");
        stopped.keep("g199", "z".repeat(10));
        assert_eq!(stopped.get("g199").as_deref(), Some("zzzzzzzzzz"), "room again");
    }
}

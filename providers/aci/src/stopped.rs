//! The logs of groups this process stopped, read just before the stop.
//!
//! Stopping a container group "terminates and recycles all the containers in the group"
//! (Microsoft's ACI docs): their log cannot be counted on afterwards. The engine cancels
//! (or times out) a job, then reads its log tail, then releases the workload later, so
//! `cancel` reads the log first and keeps it here, `logs` answers from it, and `release`
//! forgets it. Held in memory from a cancel to its release (seconds): a gateway restarted
//! in between reads the group's own log again, as it would without this.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct StoppedLogs(Mutex<HashMap<String, String>>);

impl StoppedLogs {
    /// Keeps `log` unless a longer copy is kept already: a log only grows until the stop,
    /// so a cancel repeated after a stop that went through (its answer lost) reads the
    /// recycled, shorter log and must not replace the real one.
    pub fn keep(&self, group: &str, log: String) {
        let mut kept = self.0.lock().unwrap();
        if kept.get(group).is_none_or(|old| old.len() <= log.len()) {
            kept.insert(group.to_string(), log);
        }
    }

    pub fn get(&self, group: &str) -> Option<String> {
        self.0.lock().unwrap().get(group).cloned()
    }

    pub fn forget(&self, group: &str) {
        self.0.lock().unwrap().remove(group);
    }
}

//! Which container of a task offload follows, for its log stream.
//!
//! Offload's own task definitions have one container, `main`; a job that runs an allowed
//! existing definition names its own (`provider_options.ecs.container`). Status needs no
//! memory for it: every task carries the one container override offload sent, naming it.
//! The log stream (`PREFIX/CONTAINER/TASK_ID`) is read with no task at hand, so the names
//! other than `main` are kept here: from the launch, and from every DescribeTasks answer
//! (a restarted gateway learns them again at its first poll round, before a job's end is
//! seen), until the task is released.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::taskdef::CONTAINER;

/// Task ARN → its followed container, for tasks whose container is not `main`.
#[derive(Default)]
pub struct Containers(Mutex<HashMap<String, String>>);

impl Containers {
    pub fn remember(&self, task_arn: &str, container: &str) {
        if container == CONTAINER {
            return;
        }
        let mut known = self.0.lock().unwrap();
        if known.get(task_arn).map(String::as_str) != Some(container) {
            known.insert(task_arn.to_string(), container.to_string());
        }
    }

    pub fn of(&self, task_arn: &str) -> String {
        let known = self.0.lock().unwrap();
        known
            .get(task_arn)
            .map_or(CONTAINER, String::as_str)
            .to_string()
    }

    pub fn forget(&self, task_arn: &str) {
        self.0.lock().unwrap().remove(task_arn);
    }
}

//! How many long-polls and log followers each tenant holds open. Each one is cheap, but
//! not free (a task, a connection, a watch on its job): one tenant must not be able to
//! hold so many that others' requests starve. Past the cap, a new one gets 429 with
//! Retry-After.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::ApiError;

pub struct Waiters {
    max_per_tenant: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open long-poll or follower; dropping it frees its place.
pub struct WaiterPlace {
    waiters: Arc<Waiters>,
    tenant: String,
}

impl Waiters {
    pub fn new(max_per_tenant: usize) -> Self {
        Waiters {
            max_per_tenant,
            open: Mutex::default(),
        }
    }

    /// Takes a place for `tenant`, or says it holds too many.
    pub fn enter(self: &Arc<Self>, tenant: &str) -> Result<WaiterPlace, ApiError> {
        let mut open = self.open.lock().unwrap();
        let n = open.entry(tenant.to_string()).or_insert(0);
        if *n >= self.max_per_tenant {
            return Err(ApiError::too_many(format!(
                "this tenant already holds {} long-polls and log followers open; close some or retry later",
                self.max_per_tenant
            )));
        }
        *n += 1;
        Ok(WaiterPlace {
            waiters: self.clone(),
            tenant: tenant.to_string(),
        })
    }
}

impl Drop for WaiterPlace {
    fn drop(&mut self) {
        let mut open = self.waiters.open.lock().unwrap();
        if let Some(n) = open.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

//! The wall clock that budgets read their days and months from: the system's, or in tests
//! one moved forward by hand, so that a test sees a budget's day end without waiting a day.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Mutex<Duration>>>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// The system's clock, moved forward by [`Clock::advance`].
    pub fn movable() -> Clock {
        Clock(Some(Arc::new(Mutex::new(Duration::zero()))))
    }

    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        match &self.0 {
            Some(offset) => now + *offset.lock().unwrap(),
            None => now,
        }
    }

    /// Moves a movable clock forward; panics on the system's.
    pub fn advance(&self, by: Duration) {
        let offset = self.0.as_ref().expect("only a movable clock moves");
        *offset.lock().unwrap() += by;
    }
}

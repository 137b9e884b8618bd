//! When a connection last had a request in flight. hyper closes an HTTP/1 connection whose
//! headers are slow, but has no idle timeout, and none at all for HTTP/2, where a client
//! that answers PINGs holds a connection for as long as it likes; the serve loop closes a
//! connection gracefully once it has been idle this long.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Activity {
    state: Mutex<(usize, Instant)>,
    ended: Notify,
}

/// One request in flight; dropping it ends it.
pub struct InFlight(Arc<Activity>);

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new((0, Instant::now())),
            ended: Notify::new(),
        })
    }

    pub fn start(self: &Arc<Self>) -> InFlight {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        state.1 = Instant::now();
        InFlight(self.clone())
    }

    /// Returns once no request has been in flight for `after`.
    pub async fn idle(&self, after: Duration) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let (in_flight, last) = *self.state.lock().unwrap();
            if in_flight > 0 {
                ended.await;
                continue;
            }
            if last.elapsed() >= after {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(last + after) => {}
                _ = ended => {}
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap();
        state.0 -= 1;
        state.1 = Instant::now();
        drop(state);
        self.0.ended.notify_waiters();
    }
}

//! The one watch over every pod offload manages, kept in a store that `observe` reads.
//!
//! kube's watcher resumes from its resourceVersion after a dropped connection and lists
//! again after a 410 Gone. As a safety net against a watch that silently misses an event,
//! a fresh watcher (with a fresh list) is started every `relist_every`; its store replaces
//! the old one once its first list is in.
//!
//! Until the first list since start is in, there is no view at all: an empty store then
//! would make every live pod look deleted (and its job lost and launched again) whenever
//! that list is slow, as it is on a large or busy API server right after a restart.
//!
//! Every pod the watch sees change is also sent to the subscribers ([`PodCache::changes`]),
//! so that its job learns of it at once rather than at the engine's next poll round.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use offload_provider::{ProviderError, Result};

pub struct PodCache {
    /// The newest store whose first list is complete; `None` until one is.
    current: Arc<RwLock<Option<Store<Pod>>>>,
    /// Each pod as the watch saw it change, for the subscribers.
    changed: tokio::sync::broadcast::Sender<Arc<Pod>>,
    task: tokio::task::JoinHandle<()>,
}

/// Pod changes a slow subscriber may fall behind by before it misses some (the engine's
/// poll rounds still see them).
const CHANGES: usize = 4096;

impl Drop for PodCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodCache {
    pub fn start(pods: Api<Pod>, selector: String, relist_every: Duration) -> PodCache {
        let (first, writer) = reflector::store();
        let current = Arc::new(RwLock::new(None));
        let shared = current.clone();
        let (changed, _) = tokio::sync::broadcast::channel(CHANGES);
        let tell = changed.clone();
        let task = tokio::spawn(async move {
            let (mut store, mut writer) = (first, writer);
            loop {
                let config = watcher::Config::default().labels(&selector);
                let events = watcher(pods.clone(), config)
                    .default_backoff()
                    .reflect(writer);
                let mut events = std::pin::pin!(events);
                let mut swapped = false;
                let until = tokio::time::sleep(relist_every);
                let mut until = std::pin::pin!(until);
                loop {
                    tokio::select! {
                        _ = &mut until => break,
                        event = events.next() => match event {
                            Some(Err(e)) => tracing::warn!(error = %e, "pod watch interrupted; it resumes or lists again"),
                            Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                                // Nobody subscribed yet is no error.
                                let _ = tell.send(Arc::new(pod));
                            }
                            Some(Ok(_)) => {}
                            None => break,
                        },
                    }
                    if !swapped && store.wait_until_ready().now_or_never().is_some() {
                        *shared.write().unwrap() = Some(store.clone());
                        swapped = true;
                    }
                }
                (store, writer) = reflector::store();
            }
        });
        PodCache {
            current,
            changed,
            task,
        }
    }

    /// Every pod the watch sees change from now on; a subscriber that falls more than
    /// [`CHANGES`] behind skips what it missed.
    pub fn changes(&self) -> impl futures::Stream<Item = Arc<Pod>> + Send + 'static {
        let rx = self.changed.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(pod) => return Some((pod, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// The newest complete view of the managed pods; a transient error (the engine polls
    /// again) while the first list since start is still in.
    pub fn store(&self) -> Result<Store<Pod>> {
        self.current.read().unwrap().clone().ok_or_else(|| {
            ProviderError::Transient(
                "watch cache not synced yet: the first list of pods since start is not in".into(),
            )
        })
    }
}

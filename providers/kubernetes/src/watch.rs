//! The one watch over every pod offload manages, kept in a store that `observe` reads.
//!
//! kube's watcher resumes from its resourceVersion after a dropped connection and lists
//! again after a 410 Gone. As a safety net against a watch that silently misses an event,
//! a fresh watcher (with a fresh list) is started every `relist_every`; its store replaces
//! the old one once its first list is in.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

pub struct PodCache {
    current: Arc<RwLock<Store<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodCache {
    pub fn start(pods: Api<Pod>, selector: String, relist_every: Duration) -> PodCache {
        let (first, writer) = reflector::store();
        let current = Arc::new(RwLock::new(first.clone()));
        let shared = current.clone();
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
                            Some(Ok(_)) => {}
                            None => break,
                        },
                    }
                    if !swapped && store.wait_until_ready().now_or_never().is_some() {
                        *shared.write().unwrap() = store.clone();
                        swapped = true;
                    }
                }
                (store, writer) = reflector::store();
            }
        });
        PodCache { current, task }
    }

    /// The newest complete view of the managed pods.
    pub fn store(&self) -> Store<Pod> {
        self.current.read().unwrap().clone()
    }
}

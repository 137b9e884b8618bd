//! Observing workloads a read apiece (Container Apps, ACI, a Cloud Run job without an
//! execution), where one workload's failed read must not blind the engine to the others:
//! a workload whose read failed is left out of the answer, which the engine counts as
//! unchanged and looks at again, and the call fails only when every read failed. A
//! throttled read stops the round (the rest would be throttled too): what was read so far
//! is the answer, or, if nothing was, the throttling is.

use std::future::Future;

use crate::{Handle, Observation, ProviderError, Result};

/// Each of `handles` read with `read`, in turn.
pub async fn observe<'a, F, Fut>(handles: &'a [Handle], mut read: F) -> Result<Vec<Observation>>
where
    F: FnMut(&'a Handle) -> Fut,
    Fut: Future<Output = Result<Observation>>,
{
    let mut seen = Vec::with_capacity(handles.len());
    let mut failed = None;
    for handle in handles {
        match read(handle).await {
            Ok(observation) => seen.push(observation),
            Err(e @ ProviderError::Throttled { .. }) => {
                failed = Some(e);
                break;
            }
            Err(e) => {
                tracing::warn!(key = %handle.key, workload = %handle.provider_ref, error = %e,
                    "could not read the workload: it is looked at again next round");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) if seen.is_empty() => Err(e),
        _ => Ok(seen),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Phase;

    fn handles(n: usize) -> Vec<Handle> {
        (0..n)
            .map(|i| Handle {
                key: format!("k-{i}"),
                provider_ref: format!("w-{i}"),
            })
            .collect()
    }

    /// A read of `h` that fails as `failing` says for its key, else sees it running.
    async fn read(h: &Handle, failing: &[(&str, ProviderError)]) -> Result<Observation> {
        match failing.iter().find(|(k, _)| *k == h.key) {
            Some((_, e)) => Err(e.clone()),
            None => Ok(Observation {
                handle: h.clone(),
                phase: Phase::Running,
                ran: None,
            }),
        }
    }

    fn keys(seen: &[Observation]) -> Vec<&str> {
        seen.iter().map(|o| o.handle.key.as_str()).collect()
    }

    fn transient(key: &str) -> (&str, ProviderError) {
        (key, ProviderError::Transient(format!("{key} failed")))
    }

    #[tokio::test]
    async fn a_failed_read_leaves_out_only_its_workload() {
        let hs = handles(3);
        let one = [transient("k-1")];
        let seen = observe(&hs, |h| read(h, &one)).await.unwrap();
        assert_eq!(keys(&seen), ["k-0", "k-2"]);
        let all = [transient("k-0"), transient("k-1"), transient("k-2")];
        let err = observe(&hs, |h| read(h, &all)).await.unwrap_err();
        assert_eq!(err, ProviderError::Transient("k-2 failed".into()));
        assert_eq!(observe(&[], |h| read(h, &[])).await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn throttling_stops_the_round() {
        let hs = handles(3);
        let throttled = ProviderError::Throttled {
            retry_after: Duration::from_secs(1),
        };
        let failing = [("k-1", throttled.clone())];
        let seen = observe(&hs, |h| read(h, &failing)).await.unwrap();
        assert_eq!(keys(&seen), ["k-0"], "k-2 is not read");
        let err = observe(&hs[1..], |h| read(h, &failing)).await.unwrap_err();
        assert_eq!(err, throttled);
    }
}

//! Prices read from the clouds' public catalogs, so that routing compares providers at what
//! the clouds charge today, not at figures typed from their pricing pages.
//!
//! A refresh (`offload prices refresh`, or the gateway's own with `[prices]
//! refresh_at_start` and `refresh_every_hours`) reads, for each configured provider's kind
//! and region, the figures its sheet uses from its cloud's catalog: the Azure Retail Prices
//! API for `aci` and `aca` ([`azure`]), the AWS price list for `ecs` ([`aws`]), the Google
//! Cloud Billing Catalog for `cloudrun` and GKE Autopilot `kubernetes` ([`google`], which
//! needs an API key and is skipped, saying so, without one). It writes them, each with its
//! catalog, SKU or meter, region and dates, to the price file ([`file`]), whole or not at
//! all: a refresh that fails anywhere keeps the last good file and sheets, and says why.
//! The providers' sheets use the file's figures over their defaults
//! ([`offload_provider::figures`]); a configured `price` still replaces a whole sheet.

mod aws;
mod azure;
pub mod file;
mod google;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use offload_provider::figures::{ReadFigure, ReadPrices};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, KindConfig};
use crate::engine::Engine;

/// Refreshes, by outcome (`ok` or `failed`).
const REFRESHES: &str = "offload_price_refreshes_total";

/// How long one request to a catalog may take (the AWS offer file is a few megabytes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One provider kind in one region whose figures a refresh reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Want {
    kind: &'static str,
    region: String,
}

/// What a catalog read: its figures, and the figures it was asked for and does not give
/// (which keep their defaults).
#[derive(Default)]
struct Read {
    figures: Vec<ReadFigure>,
    missing: Vec<String>,
}

/// What a refresh read and wrote.
pub struct Refreshed {
    pub figures: ReadPrices,
    /// What was not read, and why: a catalog skipped, a figure a catalog does not give.
    pub notes: Vec<String>,
}

/// The kinds and regions of the configured providers whose sheets can use read figures.
fn wants(config: &Config) -> BTreeSet<Want> {
    config
        .providers
        .values()
        .filter_map(|p| {
            let (kind, region) = match &p.kind {
                #[cfg(feature = "ecs")]
                KindConfig::Ecs(c) => ("ecs", &c.region),
                #[cfg(feature = "aci")]
                KindConfig::Aci(c) => ("aci", &c.location),
                #[cfg(feature = "aca")]
                KindConfig::Aca(c) => ("aca", &c.location),
                #[cfg(feature = "cloudrun")]
                KindConfig::Cloudrun(c) => ("cloudrun", &c.region),
                #[cfg(feature = "kubernetes")]
                KindConfig::Kubernetes(c) => ("kubernetes", &c.gke.region),
                _ => return None,
            };
            Some(Want {
                kind,
                region: region.clone(),
            })
        })
        .collect()
}

/// Reads every catalog the configured providers need and writes the price file. Fails, and
/// writes nothing, when any catalog it asked fails (network, an answer it cannot read), or
/// when there is no `prices.file`.
pub async fn refresh(config: &Config) -> Result<Refreshed, String> {
    let path = config
        .prices
        .file
        .as_deref()
        .ok_or("prices.file is not set: there is nowhere to keep the figures read")?;
    // The last good file: figures of a catalog skipped now stay as it has them, and a file
    // that is not a price file fails the refresh, naming the key.
    let before = file::load(path)?;
    let wants = wants(config);
    let p = &config.prices;
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("offload/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let of = |kinds: &[&str]| -> Vec<Want> {
        wants
            .iter()
            .filter(|w| kinds.contains(&w.kind))
            .cloned()
            .collect()
    };
    let (azure_wants, aws_wants, google_wants) = (
        of(&["aci", "aca"]),
        of(&["ecs"]),
        of(&["cloudrun", "kubernetes"]),
    );
    let mut notes = vec![];
    let mut skipped = vec![];
    let google_key = match &p.google_api_key {
        None if !google_wants.is_empty() => {
            notes.push(format!(
                "{}: skipped, no API key (prices.google_api_key or OFFLOAD_PRICES__GOOGLE_API_KEY): {} keep the file's figures or their defaults",
                google::SOURCE,
                google_wants
                    .iter()
                    .map(|w| format!("{} in {}", w.kind, w.region))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            skipped = google_wants.clone();
            None
        }
        key => key.as_deref(),
    };
    let (from_azure, from_aws, from_google) = tokio::join!(
        azure::read(&http, &p.azure_url, &azure_wants, &now),
        aws::read(&http, &p.aws_url, &aws_wants, &now),
        async {
            match google_key {
                Some(key) => google::read(&http, &p.google_url, key, &google_wants, &now).await,
                None => Ok(Read::default()),
            }
        },
    );
    let mut figures = vec![];
    let mut failed = vec![];
    let answers = [
        (azure::SOURCE, from_azure),
        (aws::SOURCE, from_aws),
        (google::SOURCE, from_google),
    ];
    for (source, read) in answers {
        match read {
            Ok(read) => {
                figures.extend(read.figures);
                notes.extend(read.missing);
            }
            Err(e) => failed.push(format!("{source}: {e}")),
        }
    }
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    figures.extend(
        before
            .all()
            .filter(|f| {
                skipped
                    .iter()
                    .any(|w| w.kind == f.kind && w.region == f.region)
            })
            .cloned(),
    );
    let figures = ReadPrices::new(figures)?;
    file::save(path, &figures, &now)?;
    Ok(Refreshed { figures, notes })
}

/// The wait before retrying a failed refresh, doubled at each failure in a row up to
/// [`RETRY_MOST`] (and never past the next period's).
const RETRY_FIRST: Duration = Duration::from_secs(60);
const RETRY_MOST: Duration = Duration::from_secs(3600);

/// The gateway's own refreshes: at once when `refresh_at_start`, then every
/// `refresh_every_hours`, each repricing the engine's providers when it succeeds and
/// keeping their sheets when it fails, to be retried (a catalog that did not answer);
/// until `stop`.
pub async fn keep_fresh(engine: Arc<Engine>, config: Config, stop: CancellationToken) {
    let every = Duration::from_secs(config.prices.refresh_every_hours.saturating_mul(3600));
    let once = || async {
        match refresh(&config).await {
            Ok(r) => {
                metrics::counter!(REFRESHES, "outcome" => "ok").increment(1);
                for note in &r.notes {
                    tracing::warn!("price refresh: {note}");
                }
                tracing::info!(
                    figures = r.figures.all().count(),
                    "price refresh: read the catalogs; repricing the providers"
                );
                engine.reprice(&r.figures);
                true
            }
            Err(e) => {
                metrics::counter!(REFRESHES, "outcome" => "failed").increment(1);
                tracing::warn!("price refresh failed, keeping the last good prices: {e}");
                engine.price_refreshed(Some(e));
                false
            }
        }
    };
    let retry = Retry { first: RETRY_FIRST, most: RETRY_MOST };
    let first = config.prices.refresh_at_start;
    schedule(first, every, retry, stop, once, tokio::time::sleep).await
}

/// When to run a failed refresh again.
#[derive(Clone, Copy)]
struct Retry {
    first: Duration,
    most: Duration,
}

/// Runs `once` at once when `first`, then every `every` (never again when it is zero),
/// until `stop`. A run that fails (`once` answers false) is run again after `retry.first`,
/// doubled at each failure in a row up to `retry.most`, and never later than the period
/// would have run it; with no period, until one succeeds. Each wait is a `sleep`.
async fn schedule<F, Fut, S, Slept>(
    first: bool,
    every: Duration,
    retry: Retry,
    stop: CancellationToken,
    mut once: F,
    sleep: S,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
    S: Fn(Duration) -> Slept,
    Slept: std::future::Future<Output = ()>,
{
    let mut wait = match (first, every.is_zero()) {
        (true, _) => Duration::ZERO,
        (false, true) => return,
        (false, false) => every,
    };
    let mut failed = 0u32;
    loop {
        if !wait.is_zero() {
            tokio::select! {
                biased; // a stop wins
                _ = stop.cancelled() => return,
                _ = sleep(wait) => {}
            }
        }
        let ok = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            ok = once() => ok,
        };
        wait = if ok {
            failed = 0;
            if every.is_zero() {
                return;
            }
            every
        } else {
            let backoff = retry.first.saturating_mul(1 << failed.min(16)).min(retry.most);
            failed += 1;
            match every.is_zero() {
                true => backoff,
                false => backoff.min(every),
            }
        };
    }
}

/// GETs `request` and reads its JSON answer as `T`; an error says which key of the answer
/// could not be read. `what` names the request in errors (never its URL, which may hold an
/// API key).
async fn fetch<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, String> {
    let answer = request
        .send()
        .await
        .map_err(|e| format!("{what}: {}", e.without_url()))?;
    let status = answer.status();
    let body = answer
        .bytes()
        .await
        .map_err(|e| format!("{what}: {}", e.without_url()))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.chars().take(300).collect();
        return Err(format!("{what}: {status}: {text}"));
    }
    let mut json = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        format!("{what}: the answer's {path}: {}", e.into_inner())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;

    const RETRY: Retry = Retry {
        first: Duration::from_secs(60),
        most: Duration::from_secs(3600),
    };

    /// Runs `schedule` in the background on the real clock: when each run was, and the
    /// task.
    fn runs(
        first: bool,
        every: Duration,
        stop: &CancellationToken,
    ) -> (
        mpsc::UnboundedReceiver<Instant>,
        tokio::task::JoinHandle<()>,
    ) {
        let (ran, runs) = mpsc::unbounded_channel();
        let once = move || {
            let ran = ran.clone();
            async move { ran.send(Instant::now()).is_ok() }
        };
        let task = tokio::spawn(schedule(first, every, RETRY, stop.clone(), once, tokio::time::sleep));
        (runs, task)
    }

    /// The waits `schedule` asks for, in seconds, over `n` runs (of which those `fails`
    /// says fail), or until it ends by itself; each wait ends at once.
    async fn waits(first: bool, every: Duration, n: usize, fails: fn(usize) -> bool) -> Vec<u64> {
        let stop = CancellationToken::new();
        let waited = Arc::new(Mutex::new(vec![]));
        let mut runs = 0;
        let once = || {
            runs += 1;
            if runs == n {
                stop.cancel();
            }
            let ok = !fails(runs - 1);
            async move { ok }
        };
        let sleep = |d: Duration| {
            waited.lock().unwrap().push(d.as_secs());
            async {}
        };
        schedule(first, every, RETRY, stop.clone(), once, sleep).await;
        let waited = waited.lock().unwrap().clone();
        waited
    }

    /// The task's end, which must come (a bound, not a pause: it ends at once).
    async fn ended(task: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the schedule ended")
            .unwrap();
    }

    #[tokio::test]
    async fn refreshes_run_at_start_then_each_period_until_stopped() {
        let every = Duration::from_millis(300);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let (mut ran, task) = runs(true, every, &stop);
        let first = ran.recv().await.unwrap();
        assert!(first - started < every, "at start: {:?}", first - started);
        let second = ran.recv().await.unwrap();
        assert!(
            second - first >= every,
            "a period later: {:?}",
            second - first
        );
        stop.cancel();
        ended(task).await;
        // Its sender gone with the task, nothing more ran or will.
        assert_eq!(ran.recv().await, None);

        // No period: only the one at start, and the task ends by itself.
        let stop = CancellationToken::new();
        let (mut ran, task) = runs(true, Duration::ZERO, &stop);
        ended(task).await;
        assert!(ran.recv().await.is_some());
        assert_eq!(ran.recv().await, None);
        // Neither at start nor periodically: nothing runs.
        let (mut ran, task) = runs(false, Duration::ZERO, &stop);
        ended(task).await;
        assert_eq!(ran.recv().await, None);
    }

    /// A failed refresh is run again after a minute, two, four..., not a period later; a
    /// success goes back to the period.
    #[tokio::test]
    async fn a_failed_refresh_is_retried_with_backoff_before_the_next_period() {
        let day = Duration::from_secs(24 * 3600);
        // Fails three times, then succeeds, then fails once more, then succeeds.
        let fails = |n| n < 3 || n == 4;
        assert_eq!(waits(true, day, 6, fails).await, [60, 120, 240, 86_400, 60]);
        // With no period, a failure at start is retried (at most an hour apart) until one
        // succeeds, and then nothing more runs.
        assert_eq!(
            waits(true, Duration::ZERO, 100, |n| n < 9).await,
            [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
        );
        // A period shorter than the backoff bounds it.
        assert_eq!(waits(true, Duration::from_secs(100), 4, |_| true).await, [60, 100, 100]);
        // Not at start: the period first.
        assert_eq!(waits(false, day, 2, |_| true).await, [86_400, 60]);
    }
}

//! Load benchmark: durable submits per second and status reads per second (with p50/p99
//! latency) through the real HTTP stack, against an in-process gateway with the sim
//! provider and `synchronous_full` on. The client runs on the same cores, so the figures
//! are a floor. Prints figures; asserts nothing. `cargo bench --bench load [-- SECONDS]`.

#[path = "../common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Gateway, TOKEN_A};
use serde_json::json;

const CLIENTS: usize = 64;

async fn hammer<F, Fut>(seconds: f64, f: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let f = f.clone();
            tokio::spawn(async move {
                let mut latencies = vec![];
                let mut i = 0;
                while Instant::now() < until {
                    let started = Instant::now();
                    f(c * 1_000_000 + i).await;
                    latencies.push(started.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn report(what: &str, seconds: f64, latencies: &[Duration]) {
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{what:<14} {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests, {CLIENTS} clients)",
        latencies.len() as f64 / seconds,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.len()
    );
}

#[tokio::main]
async fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let gw = Arc::new(
        Gateway::start_with("true", "[providers.sim]\nkind = \"sim\"\nstart_ms = 3600000\nmax_concurrency = 100000\npoll_interval_ms = 600000\n").await,
    );
    let spec = json!({"image": "img", "provider": "sim", "labels": {"dag_id": "bench"}});
    let g = gw.clone();
    let submits = hammer(seconds, move |_| {
        let (g, spec) = (g.clone(), spec.clone());
        async move {
            let (status, _) = g.submit(TOKEN_A, spec).await;
            assert_eq!(status, 201);
        }
    })
    .await;
    report("durable submit", seconds, &submits);

    let (_, page) = gw.get(TOKEN_A, "/v1/jobs?limit=500").await;
    let ids: Arc<Vec<String>> = Arc::new(
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect(),
    );
    let g = gw.clone();
    let reads = hammer(seconds, move |i| {
        let (g, ids) = (g.clone(), ids.clone());
        async move {
            let (status, _) = g
                .get(TOKEN_A, &format!("/v1/jobs/{}", ids[i % ids.len()]))
                .await;
            assert_eq!(status, 200);
        }
    })
    .await;
    report("status read", seconds, &reads);
}

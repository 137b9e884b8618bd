//! Cloud calls per job on ECS: the real `offload serve` (release build) on the ECS provider
//! against moto's ECS and CloudWatch Logs server, whose request recorder counts every call
//! the gateway makes. Each job's task runs 30 s (the benchmark stops it in moto 30 s after
//! the gateway launched it); the job alone, 20 at once and 200 at once, each on a fresh
//! moto and gateway after one warm-up job (whose calls, and the gateway's one-time ones,
//! are counted apart), with:
//!
//! - the default poll bounds (`poll_interval_ms = 500`, `max_poll_interval_ms = 4000`);
//! - `max_poll_interval_ms = 15000` and the run time known (`expected_duration_seconds =
//!   30` in the spec, as a DAG task's history would give it).
//!
//! Also how long after its task stopped each job was seen ended (through a long poll).
//! Part of `cargo bench --bench load`; needs target/moto-venv, which tests/run.sh installs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::common::{config_text, free_port, wait_ready, Binary, TOKEN_A};
use crate::moto;
use serde_json::{json, Value};

/// The calls a fresh gateway makes once: its first health check, and the task
/// definition's lookup and registration.
const ONE_TIME: [&str; 3] = ["ListTasks", "DescribeTaskDefinition", "RegisterTaskDefinition"];

/// How long each job's task runs.
const RUN: Duration = Duration::from_secs(30);

struct Outcome {
    /// The calls a fresh gateway makes once ([`ONE_TIME`]).
    setup: usize,
    calls: BTreeMap<String, usize>,
    /// From the task's stop in moto to the job's end seen through the API, per job.
    lags: Vec<Duration>,
}

async fn job(http: &reqwest::Client, base: &str, id: &str, wait: u32) -> Value {
    http.get(format!("{base}/v1/jobs/{id}?wait={wait}"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Runs `jobs` jobs of [`RUN`] each at once and counts what the gateway asked moto.
async fn scenario(jobs: usize, settings: &str, expected: Option<u64>) -> Outcome {
    let moto = std::sync::Arc::new(moto::Moto::start());
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let provider = moto.gateway_provider(&format!(
        "log_group = \"{}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/offload-execution\"\n\
         max_concurrency = {jobs}\n{settings}",
        moto.aws.log_group
    ));
    let config = dir.path().join("offload.toml");
    std::fs::write(&config, config_text(dir.path(), &listen, &provider)).unwrap();
    let log = dir.path().join("serve.log");
    moto.reset_recording().await;
    let server = Binary::start(&config, &log);
    let http = reqwest::Client::new();
    wait_ready(&http, &base, &log).await;

    let mut spec = json!({"image": "alpine:3", "command": ["sh", "-c", "sleep 30"], "provider": "fargate"});
    if let Some(seconds) = expected {
        spec["routing"] = json!({"expected_duration_seconds": seconds});
    }
    // One job that ends at once, to get the fresh gateway's one-time calls done: those are
    // counted apart, the warm-up job's own not at all.
    let warm_up = json!({"image": "alpine:3", "command": ["sh", "-c", "sleep 30"], "provider": "fargate"});
    let r = http.post(format!("{base}/v1/jobs")).bearer_auth(TOKEN_A).json(&warm_up).send().await.unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let arn = loop {
        if let Some(arn) = job(&http, &base, &id, 0).await["provider_ref"].as_str() {
            break arn.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    moto.stop(&arn, Some(0), Some("EssentialContainerExited"), "warm-up").await;
    while job(&http, &base, &id, 30).await["terminal"] != true {}
    let setup = moto
        .recorded()
        .await
        .iter()
        .filter(|(action, _)| ONE_TIME.contains(&action.as_str()))
        .count();
    moto.reset_recording().await;

    let runs = (0..jobs).map(|_| {
        let (http, base, spec, moto) = (http.clone(), base.clone(), spec.clone(), moto.clone());
        async move {
            let r = http.post(format!("{base}/v1/jobs")).bearer_auth(TOKEN_A).json(&spec).send().await.unwrap();
            assert_eq!(r.status(), 201);
            let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
            // Launched: the gateway has the task's ARN.
            let arn = loop {
                let j = job(&http, &base, &id, 0).await;
                if let Some(arn) = j["provider_ref"].as_str() {
                    break arn.to_string();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let launched = Instant::now();
            // The task's run: nothing to wait on but the clock.
            tokio::time::sleep_until((launched + RUN).into()).await;
            moto.stop(&arn, Some(0), Some("EssentialContainerExited"), "Essential container in task exited").await;
            let stopped = Instant::now();
            loop {
                let j = job(&http, &base, &id, 30).await;
                if j["terminal"] == true {
                    assert_eq!(j["state"], "succeeded", "{j}");
                    return stopped.elapsed();
                }
            }
        }
    });
    let lags = futures::future::join_all(runs).await;
    let mut calls = BTreeMap::new();
    for (action, _) in moto.recorded().await {
        *calls.entry(action).or_default() += 1;
    }
    server.kill9();
    Outcome { setup, calls, lags }
}

/// The section of BENCHMARKS.md on calls per job, as printed while it runs.
pub async fn section() -> String {
    let configurations: [(&str, &str, Option<u64>); 2] = [
        ("defaults (500 ms, bound 4 s)", "", None),
        ("bound 15 s, run time known", "max_poll_interval_ms = 15000\n", Some(30)),
    ];
    let mut table = String::new();
    for (name, settings, expected) in configurations {
        for jobs in [1, 20, 200] {
            let o = scenario(jobs, settings, expected).await;
            let total: usize = o.calls.values().sum();
            let mut lags = o.lags.clone();
            lags.sort();
            let (median, worst) = (lags[lags.len() / 2], lags[lags.len() - 1]);
            let breakdown = o.calls.iter().map(|(a, n)| format!("{a} {n}")).collect::<Vec<_>>().join(", ");
            let line = format!(
                "| {name} | {jobs} | {:.2} | {:.2} | {:.1} | {:.1} | {breakdown} |",
                total as f64 / jobs as f64,
                (total + o.setup) as f64 / jobs as f64,
                median.as_secs_f64(),
                worst.as_secs_f64()
            );
            println!("{line}");
            writeln!(table, "{line}").unwrap();
        }
    }
    format!(
        "## Cloud calls per job: ECS\n\nThe real `offload serve` (release build) on the ECS provider against moto's \
         server; every job's task runs {} s; calls counted by moto's request recorder, each scenario on a \
         fresh moto and gateway. Each gateway first runs one warm-up job, and the calls counted are \
         those after it; \"with setup\" adds back the fresh gateway's one-time calls (its first health \
         check, the task definition's lookup and registration). \"End seen\" is from the task's stop in moto to \
         the job's end answered by a long poll.\n\n\
         | configuration | jobs at once | calls per job | with setup | end seen after, median s | worst s | calls |\n\
         |---|---|---|---|---|---|---|\n{table}",
        RUN.as_secs()
    )
}

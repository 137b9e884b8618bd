//! Crash safety with the real `offload serve` binary: a client submits jobs in a stream
//! while the server is SIGKILLed at random moments and restarted. Afterwards every job
//! that got a 201 (or 200) exists, and no job was launched twice: the sim provider's
//! record shows it, and so do the tasks moto holds for the ECS provider.

mod common;
#[cfg(feature = "ecs")]
#[path = "../providers/ecs/tests/common/mod.rs"]
mod moto;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{config_text, free_port, wait_ready, Binary, TOKEN_A};
use serde_json::json;

const ROUNDS: usize = 4;

/// Submits a stream of jobs to `provider` through the real binary, SIGKILLing it
/// ROUNDS times at pseudo-random moments and restarting it; then waits until every
/// acknowledged job satisfies `settled`. Returns the acknowledged ids by idempotency key.
async fn submit_through_crashes(
    dir: &std::path::Path,
    providers: &str,
    provider: &str,
    settled: impl Fn(&serde_json::Value) -> bool,
) -> BTreeMap<String, String> {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.join("offload.toml");
    std::fs::write(
        &config,
        config_text(dir, &format!("127.0.0.1:{port}"), providers),
    )
    .unwrap();
    let log = dir.join("serve.log");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Every id the server acknowledged, by the idempotency key that made it.
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut next_key = 0usize;
    let mut pending: Option<String> = None;
    let mut seed = 0x2545F4914F6CDD1Du64;
    for round in 0..=ROUNDS {
        let server = Binary::start(&config, &log);
        wait_ready(&http, &url, &log).await;
        // Submit until a pseudo-random moment, then SIGKILL mid-stream (not in the last round).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let burst = 20 + (seed % 40) as usize;
        let kill_at = tokio::time::Instant::now() + Duration::from_millis(100 + seed % 700);
        let mut sent = 0;
        while sent < burst && (round == ROUNDS || tokio::time::Instant::now() < kill_at) {
            let key = pending.take().unwrap_or_else(|| {
                next_key += 1;
                format!("job-{next_key}")
            });
            let spec = json!({"image": "img", "command": ["true"], "provider": provider, "labels": {"key": key}});
            let response = http
                .post(format!("{url}/v1/jobs"))
                .bearer_auth(TOKEN_A)
                .header("Idempotency-Key", &key)
                .json(&spec)
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 201 || r.status() == 200 => {
                    let body: serde_json::Value = r.json().await.unwrap();
                    let id = body["id"].as_str().unwrap().to_string();
                    if let Some(before) = acknowledged.insert(key.clone(), id.clone()) {
                        assert_eq!(before, id, "key {key} acknowledged as two jobs");
                    }
                    sent += 1;
                }
                Ok(r) => panic!(
                    "submit answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                // The server died under this request: retry the same key after the restart.
                Err(_) => {
                    pending = Some(key);
                    break;
                }
            }
        }
        if round < ROUNDS {
            server.kill9();
            continue;
        }
        // Last round: everything acknowledged must exist and settle.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        for (key, id) in &acknowledged {
            loop {
                let r = http
                    .get(format!("{url}/v1/jobs/{id}"))
                    .bearer_auth(TOKEN_A)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "acknowledged job {id} ({key}) is gone");
                let job: serde_json::Value = r.json().await.unwrap();
                if settled(&job) {
                    assert_eq!(job["labels"]["key"], key.as_str());
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "job {id} never settled: {job}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        drop(server);
    }
    assert!(
        acknowledged.len() >= 40,
        "too few submits to mean anything: {}",
        acknowledged.len()
    );
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_submits_loses_nothing_and_launches_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("sim-record.jsonl");
    let providers = format!(
        r#"
[providers.sim]
kind = "sim"
start_ms = 100
run_ms = 400
poll_interval_ms = 50
max_concurrency = 50
record = "{}"
faults = {{ throttle = 0.1, throttle_retry_ms = 50, transient = 0.1 }}
"#,
        record.display()
    );
    let acknowledged = submit_through_crashes(dir.path(), &providers, "sim", |job| {
        job["terminal"] == true && {
            assert_eq!(job["state"], "succeeded", "{job}");
            true
        }
    })
    .await;

    let records = offload_sim::read_record(&record).unwrap();
    let mut created_keys = BTreeSet::new();
    let mut created_per_job: BTreeMap<String, usize> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.op == offload_sim::RecordOp::Created)
    {
        assert!(
            created_keys.insert(r.key.clone()),
            "launch key {} created twice",
            r.key
        );
        *created_per_job.entry(r.job_id.clone()).or_default() += 1;
    }
    for id in acknowledged.values() {
        assert_eq!(
            created_per_job.get(id),
            Some(&1),
            "job {id} was not launched exactly once"
        );
    }
    let adopted = records
        .iter()
        .filter(|r| r.op == offload_sim::RecordOp::Adopted)
        .count();
    println!(
        "crash test: {} jobs acknowledged across {ROUNDS} kill -9s, {} launches, {adopted} re-adopted after a crash",
        acknowledged.len(),
        created_keys.len()
    );
}

/// The same against moto's ECS: after the kill -9s, moto holds exactly one task per job.
#[cfg(feature = "ecs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_submits_starts_one_ecs_task_per_job() {
    let moto = moto::Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let providers = moto.gateway_provider("max_concurrency = 200\npoll_interval_ms = 100");
    // moto keeps tasks RUNNING: a job has settled once the gateway follows its task.
    let acknowledged = submit_through_crashes(dir.path(), &providers, "fargate", |job| {
        job["state"] == "running"
    })
    .await;
    // What moto holds, not its request recorder, which can drop a request now and then
    // under concurrent writes (a RunTask it never recorded, for a task it holds).
    let held = moto.tasks_by_tag("offload:job-id").await;
    for id in acknowledged.values() {
        assert_eq!(held.get(id), Some(&1), "job {id}: not exactly one ECS task");
    }
    assert_eq!(held.len(), acknowledged.len(), "tasks for jobs nobody acknowledged: {held:?}");
    println!(
        "ECS crash test: {} jobs across {ROUNDS} kill -9s, one task each",
        acknowledged.len()
    );
}

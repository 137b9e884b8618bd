//! The engine under races and faults, through the public API with sim providers whose
//! faults are deterministic (`provider_options.sim`): capacity answers, stops that fail,
//! lost workloads, a job committed but never poked, log followers among busy neighbours,
//! shutdown with waiters, and a stream of jobs with every fault on at once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Gateway, TOKEN_A};
use reqwest::Method;
use serde_json::{json, Value};

fn sim(provider: &str, options: Value) -> Value {
    json!({"image": "img", "provider": provider, "provider_options": {"sim": options}})
}

async fn submitted(gw: &Gateway, spec: Value) -> String {
    let (status, job) = gw.submit(TOKEN_A, spec).await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_string()
}

async fn cancel(gw: &Gateway, id: &str) -> u16 {
    gw.req(Method::POST, &format!("/v1/jobs/{id}/cancel"), TOKEN_A)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn auto_with_one_feasible_provider_waits_out_no_capacity() {
    let gw = Gateway::start(
        r#"
[providers.only]
kind = "sim"
start_ms = 10
run_ms = 10
poll_interval_ms = 20
"#,
    )
    .await;
    let id = submitted(&gw, sim("auto", json!({"capacity_errors": 2}))).await;
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let reasons = gw.event_reasons(TOKEN_A, &id).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("nowhere else to go, waiting")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn auto_moves_on_from_a_full_provider_when_another_fits() {
    let gw = Gateway::start(
        r#"
[providers.cheap]
kind = "sim"
start_ms = 10
run_ms = 10
poll_interval_ms = 20
price = { vcpu_hour = 0.01 }
[providers.dear]
kind = "sim"
start_ms = 10
run_ms = 10
poll_interval_ms = 20
price = { vcpu_hour = 1.0 }
"#,
    )
    .await;
    // Each provider refuses each new launch key once: the job moves from the cheap one to
    // the dear one, which refuses too, and with nowhere else to go it waits there.
    let id = submitted(&gw, sim("auto", json!({"capacity_errors": 1}))).await;
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    assert_eq!(
        (job["state"].as_str(), job["provider"].as_str()),
        (Some("succeeded"), Some("dear")),
        "{job}"
    );
    let reasons = gw.event_reasons(TOKEN_A, &id).await;
    let moved = reasons
        .iter()
        .position(|r| r.contains("no capacity at cheap") && r.contains("failing over (hop 1"));
    let waited = reasons
        .iter()
        .position(|r| r.contains("no capacity at dear") && r.contains("waiting"));
    assert!(moved.is_some() && waited > moved, "{reasons:?}");
}

#[tokio::test]
async fn cancel_while_launches_find_no_capacity_ends_cancelled() {
    let gw = Gateway::start(
        r#"
[providers.full]
kind = "sim"
poll_interval_ms = 20
"#,
    )
    .await;
    let id = submitted(&gw, sim("full", json!({"capacity_errors": 1000000}))).await;
    gw.wait_state(TOKEN_A, &id, "starting", 10).await;
    let before = gw
        .metric("offload_provider_calls_total{provider=\"full\",call=\"launch\"}")
        .await;
    assert_eq!(cancel(&gw, &id).await, 202);
    let job = gw.wait_terminal(TOKEN_A, &id, 10).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    let after = gw
        .metric("offload_provider_calls_total{provider=\"full\",call=\"launch\"}")
        .await;
    assert!(
        after - before <= 2.0,
        "launched {} more times after the cancel",
        after - before
    );
    let (_, providers) = gw.get(TOKEN_A, "/v1/providers").await;
    assert_eq!(providers[0]["active"], 0, "{providers}");
}

#[tokio::test]
async fn a_stop_the_runtime_answers_not_found_ends_the_cancel() {
    let gw = Gateway::start(
        r#"
[providers.forgetful]
kind = "sim"
start_ms = 10
run_ms = 60000
poll_interval_ms = 20
"#,
    )
    .await;
    let id = submitted(&gw, sim("forgetful", json!({"cancel_error": "not_found"}))).await;
    gw.wait_state(TOKEN_A, &id, "running", 10).await;
    assert_eq!(cancel(&gw, &id).await, 202);
    let job = gw.wait_terminal(TOKEN_A, &id, 10).await;
    assert_eq!(job["state"], "cancelled", "{job}");
}

#[tokio::test]
async fn a_stop_that_keeps_failing_backs_off_instead_of_hammering() {
    let gw = Gateway::start(
        r#"
[providers.stuck]
kind = "sim"
start_ms = 10
run_ms = 60000
poll_interval_ms = 20
"#,
    )
    .await;
    let id = submitted(&gw, sim("stuck", json!({"cancel_error": "transient"}))).await;
    gw.wait_state(TOKEN_A, &id, "running", 10).await;
    assert_eq!(cancel(&gw, &id).await, 202);
    let calls = "offload_provider_calls_total{provider=\"stuck\",call=\"cancel\"}";
    // Backoff of 1, 2, 4 s...: the fourth try comes 7 s after the first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.metric(calls).await < 3.0 {
        assert!(Instant::now() < deadline, "the stop was not retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let third = Instant::now();
    while gw.metric(calls).await < 4.0 {
        assert!(
            Instant::now() < deadline,
            "the stop was not retried a fourth time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        third.elapsed() >= Duration::from_secs(2),
        "retried after {:?}: no backoff",
        third.elapsed()
    );
    let (_, job) = gw.get(TOKEN_A, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "cancelling", "{job}");
}

/// A workload that ends by itself while its stop keeps failing has nothing left to stop:
/// the job ends cancelled once the end is seen, rather than staying `cancelling` with the
/// stop retried ever less often (a long-poll on it waited 107 s in a schemathesis run);
/// and so does one whose workload its provider lost.
#[tokio::test]
async fn a_cancelled_job_whose_workload_ends_while_its_stop_fails_ends_cancelled() {
    let gw = Gateway::start(
        r#"
[providers.unstoppable]
kind = "sim"
start_ms = 10
run_ms = 1500
poll_interval_ms = 20
"#,
    )
    .await;
    // Its own provider name: the metrics of the test process are shared, and the backoff
    // test counts the cancel calls of "stuck".
    let id = submitted(&gw, sim("unstoppable", json!({"cancel_error": "transient"}))).await;
    gw.wait_state(TOKEN_A, &id, "running", 10).await;
    assert_eq!(cancel(&gw, &id).await, 202);
    let job = gw.wait_terminal(TOKEN_A, &id, 10).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    // The same for a workload its provider loses while the stop fails (schemathesis's
    // second find). Lost 3 s into its run, well after the cancel: a workload lost at once
    // used up the job's attempts before a loaded machine's cancel came (409).
    let id = submitted(&gw, sim("unstoppable", json!({"cancel_error": "transient", "run_ms": 600000, "lost_after_ms": 3000}))).await;
    gw.wait_state(TOKEN_A, &id, "running", 10).await;
    assert_eq!(cancel(&gw, &id).await, 202);
    let job = gw.wait_terminal(TOKEN_A, &id, 10).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    // Its stop never succeeds and its run is ten minutes: what ended it is the loss.
    let at = |field: &str| chrono::DateTime::parse_from_rfc3339(job[field].as_str().unwrap()).unwrap();
    assert!(at("finished_at") - at("started_at") >= chrono::Duration::milliseconds(2900), "{job}");
}

#[tokio::test]
async fn a_lost_workload_is_stopped_and_deleted_before_the_next_attempt() {
    let gw = Gateway::start(
        r#"
[providers.leaky]
kind = "sim"
start_ms = 10
run_ms = 10
poll_interval_ms = 20
record = "$DIR/record.jsonl"
"#,
    )
    .await;
    let id = submitted(&gw, sim("leaky", json!({"lost": true}))).await;
    let job = gw.wait_terminal(TOKEN_A, &id, 20).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempts"], 3, "{job}");
    let record = offload_sim::read_record(&gw.dir.path().join("record.jsonl")).unwrap();
    let ops: Vec<(String, offload_sim::RecordOp)> =
        record.iter().map(|r| (r.key.clone(), r.op)).collect();
    for attempt in 1..=2 {
        let key = format!("offload-{}-{attempt}", id.replace('-', ""));
        let next = format!("offload-{}-{}", id.replace('-', ""), attempt + 1);
        let released = ops
            .iter()
            .position(|(k, op)| *k == key && *op == offload_sim::RecordOp::Released);
        let successor = ops
            .iter()
            .position(|(k, op)| *k == next && *op == offload_sim::RecordOp::Created);
        assert!(
            released.is_some() && released < successor,
            "attempt {attempt} not released before attempt {}: {ops:?}",
            attempt + 1
        );
    }
}

#[tokio::test]
async fn a_committed_job_that_no_poke_reached_is_dispatched_by_the_sweep() {
    let gw = Gateway::start(
        r#"
[providers.sim]
kind = "sim"
start_ms = 10
run_ms = 10
poll_interval_ms = 20
"#,
    )
    .await;
    // A job committed by a request whose handler never got to poke the engine: written
    // straight into the store, as the commit would have left it.
    let id = uuid::Uuid::now_v7();
    let spec = json!({"image": "img", "provider": "sim", "command": [], "args": [], "env": {},
        "secret_env": {}, "resources": {"cpu": 0.25, "memory": "512Mi"}, "labels": {},
        "provider_options": {}});
    let db = rusqlite::Connection::open(gw.dir.path().join("offload.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let created = chrono::Utc::now().timestamp_millis() - 5_000;
    db.execute(
        "INSERT INTO jobs (id, tenant, state, labels, spec, secret_env, created_at) VALUES (?1, 'a', 'queued', '{}', ?2, '', ?3)",
        rusqlite::params![id.to_string(), spec.to_string(), created],
    )
    .unwrap();
    let job = gw.wait_terminal(TOKEN_A, &id.to_string(), 20).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

#[tokio::test]
async fn a_log_follower_reads_its_provider_at_a_bounded_rate_among_busy_neighbours() {
    let gw = Gateway::start(
        r#"
[providers.followed]
kind = "sim"
start_ms = 10
run_ms = 4000
poll_interval_ms = 20
[providers.busy]
kind = "sim"
start_ms = 10
run_ms = 30
poll_interval_ms = 20
max_concurrency = 100
"#,
    )
    .await;
    let id = submitted(&gw, sim("followed", json!({}))).await;
    gw.wait_state(TOKEN_A, &id, "running", 10).await;
    let follow = gw
        .req(
            Method::GET,
            &format!("/v1/jobs/{id}/logs?follow=true"),
            TOKEN_A,
        )
        .send();
    let follower = tokio::spawn(async move { follow.await.unwrap().text().await.unwrap() });
    let started = Instant::now();
    // Neighbours change state many times a second while the followed job runs.
    let mut neighbours = vec![];
    while started.elapsed() < Duration::from_secs(3) {
        neighbours.push(submitted(&gw, sim("busy", json!({}))).await);
    }
    let text = follower.await.unwrap();
    assert!(text.contains("sim: exiting with 0"), "{text}");
    let elapsed = started.elapsed().as_secs_f64();
    let reads = gw
        .metric("offload_provider_calls_total{provider=\"followed\",call=\"logs\"}")
        .await;
    // One read a second, one per change of its own job, the tail at its end.
    assert!(
        reads <= elapsed + 8.0,
        "{reads} log reads in {elapsed:.1} s while {} neighbours ran",
        neighbours.len()
    );
    for n in &neighbours {
        gw.wait_terminal(TOKEN_A, n, 30).await;
    }
}

#[tokio::test]
async fn shutdown_answers_long_polls_and_closes_followers_at_once() {
    let mut gw = Gateway::start(
        r#"
[providers.sim]
kind = "sim"
start_ms = 10
run_ms = 600000
poll_interval_ms = 20
"#,
    )
    .await;
    let polled = submitted(&gw, sim("sim", json!({}))).await;
    let followed = submitted(&gw, sim("sim", json!({}))).await;
    gw.wait_state(TOKEN_A, &polled, "running", 10).await;
    gw.wait_state(TOKEN_A, &followed, "running", 10).await;
    let poll = gw
        .req(Method::GET, &format!("/v1/jobs/{polled}?wait=100"), TOKEN_A)
        .send();
    let follow = gw
        .req(
            Method::GET,
            &format!("/v1/jobs/{followed}/logs?follow=true"),
            TOKEN_A,
        )
        .send();
    let poll = tokio::spawn(poll);
    let follow = tokio::spawn(async move { follow.await.unwrap().text().await });
    // Both wait on their jobs once the engine has waiters on the two.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .metric("offload_engine_entries{map=\"watched_jobs\"}")
        .await
        < 2.0
    {
        assert!(
            Instant::now() < deadline,
            "the long-poll and follower never parked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !poll.is_finished(),
        "the long-poll answered before the shutdown"
    );
    let started = Instant::now();
    gw.server.take().unwrap().shutdown().await.unwrap();
    let took = started.elapsed();
    let answer = poll.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    let _ = follow.await.unwrap();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
}

#[tokio::test]
async fn a_stream_of_jobs_with_every_fault_on_at_once_all_end_cleanly() {
    let gw = Gateway::start(
        r#"
[providers.chaos]
kind = "sim"
start_ms = 20
run_ms = 150
poll_interval_ms = 20
max_concurrency = 10
record = "$DIR/record.jsonl"
seed = 7
faults = { throttle = 0.1, throttle_retry_ms = 50, transient = 0.1, capacity = 0.1, lost = 0.1 }
"#,
    )
    .await;
    let mut ids = vec![];
    for i in 0..60 {
        let mut spec = sim("chaos", json!({}));
        if i % 5 == 1 {
            spec = sim("chaos", json!({"run_ms": 60000}));
            spec["timeout_seconds"] = json!(1);
        }
        if i % 7 == 2 {
            spec = sim("chaos", json!({"capacity_errors": 3}));
        }
        let id = submitted(&gw, spec).await;
        if i % 4 == 3 {
            assert!(matches!(cancel(&gw, &id).await, 202 | 409));
        }
        ids.push(id);
    }
    let mut states: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        let job = gw.wait_terminal(TOKEN_A, id, 120).await;
        *states
            .entry(job["state"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(states.values().sum::<usize>(), ids.len(), "{states:?}");
    assert!(
        states.get("cancelled").copied().unwrap_or(0) >= 10,
        "{states:?}"
    );
    // No launch key made two workloads.
    let record = offload_sim::read_record(&gw.dir.path().join("record.jsonl")).unwrap();
    let mut created: HashMap<&str, usize> = HashMap::new();
    for r in record
        .iter()
        .filter(|r| r.op == offload_sim::RecordOp::Created)
    {
        *created.entry(r.key.as_str()).or_default() += 1;
    }
    assert!(created.values().all(|n| *n == 1), "a key was created twice");
    // Every place is free and the engine's per-job maps are empty again.
    let (_, providers) = gw.get(TOKEN_A, "/v1/providers").await;
    assert_eq!(providers[0]["active"], 0, "{providers}");
    let deadline = Instant::now() + Duration::from_secs(30);
    for map in [
        "observations",
        "launch_errors",
        "capacity_waits",
        "reconcile_errors",
    ] {
        let sample = format!("offload_engine_entries{{map=\"{map}\"}}");
        while gw.metric(&sample).await > 0.0 {
            assert!(
                Instant::now() < deadline,
                "{map} still holds entries of ended jobs"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn an_answered_observe_round_is_the_health_check() {
    let gw = Gateway::start(
        r#"
[providers.observed]
kind = "sim"
start_ms = 0
run_ms = 3000
poll_interval_ms = 50
health_check_seconds = 1
"#,
    )
    .await;
    let checks = || gw.metric(r#"offload_provider_calls_total{provider="observed",call="check"}"#);
    let id = submitted(&gw, sim("observed", json!({}))).await;
    gw.wait_state(TOKEN_A, &id, "running", 10).await;
    let during = checks().await;
    assert!(during >= 1.0, "the check at start is counted");
    gw.wait_terminal(TOKEN_A, &id, 10).await;
    // Three seconds of answered observe rounds, the health interval one second: no checks.
    assert_eq!(checks().await, during, "a check ran while observe rounds answered");
    // With nothing to observe, the check runs on its interval again.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while checks().await < during + 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "no health check once idle");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

//! Routing that moves jobs on, through the HTTP API on sim providers: failover for want of
//! capacity (at launch, and a workload that is never placed) as new attempts up to
//! `routing.max_hops`, a reroute after `routing.max_wait_seconds` without a place, the
//! expected duration learned from a DAG task's past runs, and the billed time taken from
//! the runtime's own start and stop times.

mod common;

use common::{Gateway, TOKEN_A, TOKEN_B};
use reqwest::Method;
use serde_json::{json, Value};

fn spec(extra: Value) -> Value {
    let mut s = json!({"image": "alpine", "command": ["true"], "resources": {"cpu": 1}});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

async fn submitted(gw: &Gateway, token: &str, spec: Value) -> String {
    let (status, job) = gw.submit(token, spec).await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_string()
}

async fn quote(gw: &Gateway, token: &str, spec: Value) -> Value {
    let r = gw
        .req(Method::POST, "/v1/quotes", token)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

fn first(quote: &Value) -> &str {
    quote["candidates"][0]["provider"].as_str().unwrap()
}

/// Three providers, cheapest first by name order of price: `a` and `b` answer every
/// launch "no capacity", `c` runs everything.
const FULL_THEN_ROOM: &str = r#"
[providers.a]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 20
faults = { capacity = 1.0 }
price = { vcpu_hour = 1.0 }
[providers.b]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 20
faults = { capacity = 1.0 }
price = { vcpu_hour = 2.0 }
[providers.c]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 20
price = { vcpu_hour = 3.0 }
"#;

#[tokio::test]
async fn no_capacity_fails_over_hop_by_hop_as_new_attempts() {
    let gw = Gateway::start(FULL_THEN_ROOM).await;
    let id = submitted(&gw, TOKEN_A, spec(json!({}))).await;
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["provider"], "c", "{job}");
    assert_eq!(job["attempts"], 3, "one attempt per provider tried: {job}");
    assert_eq!(job["cost"]["provider"], "c", "{job}");
    assert_eq!(job["cost"]["earlier_usd"], 0.0, "the refused launches ran nothing: {job}");
    let reasons = gw.event_reasons(TOKEN_A, &id).await;
    let at = |needle: &str| {
        reasons
            .iter()
            .position(|r| r.contains(needle))
            .unwrap_or_else(|| panic!("no event with {needle:?}: {reasons:?}"))
    };
    let hops = [
        at("dispatched to a (attempt 1)"),
        at("no capacity at a (simulated capacity shortage); failing over (hop 1 of at most 3)"),
        at("dispatched to b (attempt 2)"),
        at("no capacity at b (simulated capacity shortage); failing over (hop 2 of at most 3)"),
        at("dispatched to c (attempt 3)"),
    ];
    assert!(hops.windows(2).all(|w| w[0] < w[1]), "{reasons:?}");
    // The dispatch after a hop is counted as a failover where it went.
    let failovers = gw
        .metric(r#"offload_jobs_routed_total{provider="c",reason="failover"}"#)
        .await;
    assert!(failovers >= 1.0, "{}", gw.metrics_text().await);
}

#[tokio::test]
async fn past_max_hops_a_job_waits_where_it_is_and_a_cancel_still_ends_it() {
    let gw = Gateway::start(&format!("{FULL_THEN_ROOM}\n[routing]\nmax_hops = 1\n")).await;
    let id = submitted(&gw, TOKEN_A, spec(json!({}))).await;
    let reasons = gw
        .wait_for_event(TOKEN_A, &id, 20, "nowhere else to go")
        .await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no capacity at a") && r.contains("hop 1 of at most 1")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no capacity at b") && r.contains("nowhere else to go, waiting")),
        "{reasons:?}"
    );
    assert!(!reasons.iter().any(|r| r.contains("dispatched to c")), "{reasons:?}");
    let (_, job) = gw.get(TOKEN_A, &format!("/v1/jobs/{id}")).await;
    assert_eq!((job["state"].as_str(), job["terminal"].as_bool()), (Some("starting"), Some(false)));
    let r = gw
        .req(Method::POST, &format!("/v1/jobs/{id}/cancel"), TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let job = gw.wait_terminal(TOKEN_A, &id, 20).await;
    assert_eq!(job["state"], "cancelled", "{job}");
}

#[tokio::test]
async fn a_workload_that_is_never_placed_is_stopped_and_the_job_fails_over() {
    let gw = Gateway::start(&format!(
        r#"
[providers.a]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 20
record = "$DIR/a.jsonl"
faults = {{ unschedulable = 1.0 }}
price = {{ vcpu_hour = 1.0 }}
[providers.b]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 20
price = {{ vcpu_hour = 2.0 }}
"#
    ))
    .await;
    let id = submitted(&gw, TOKEN_A, spec(json!({}))).await;
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    assert_eq!(
        (job["state"].as_str(), job["provider"].as_str(), job["attempts"].as_u64()),
        (Some("succeeded"), Some("b"), Some(2)),
        "{job}"
    );
    let reasons = gw.event_reasons(TOKEN_A, &id).await;
    assert!(
        reasons.iter().any(|r| r.contains("no capacity at a (simulated: no node can place it); stopped it, failing over (hop 1")),
        "{reasons:?}"
    );
    // The unplaced workload was stopped and deleted at a before b launched the job.
    let record = offload_sim::read_record(&gw.dir.path().join("a.jsonl")).unwrap();
    let ops: Vec<_> = record.iter().map(|r| format!("{:?}", r.op)).collect();
    assert_eq!(ops, ["Created", "Cancelled", "Released"], "{record:?}");
}

#[tokio::test]
async fn a_never_placed_workload_with_nowhere_else_to_go_waits_instead_of_failing() {
    let gw = Gateway::start(
        r#"
[providers.only]
kind = "sim"
start_ms = 0
poll_interval_ms = 20
"#,
    )
    .await;
    let s = spec(json!({"provider_options": {"sim": {"unschedulable_ms": 600000}}}));
    let id = submitted(&gw, TOKEN_A, s).await;
    gw.wait_for_event(TOKEN_A, &id, 20, "nowhere else to go").await;
    let (_, job) = gw.get(TOKEN_A, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "starting", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
}

#[tokio::test]
async fn a_job_that_waited_past_max_wait_for_a_place_is_routed_to_a_provider_with_room() {
    let gw = Gateway::start(
        r#"
[providers.cheap]
kind = "sim"
start_ms = 0
run_ms = 60000
max_concurrency = 1
poll_interval_ms = 20
price = { vcpu_hour = 1.0 }
[providers.dear]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 20
price = { vcpu_hour = 2.0 }
[routing]
max_wait_seconds = 2
"#,
    )
    .await;
    let holder = submitted(&gw, TOKEN_A, spec(json!({}))).await;
    gw.wait_for(TOKEN_A, &holder, 20, "running at cheap", |j| {
        j["state"] == "running" && j["provider"] == "cheap"
    })
    .await;
    // Cheap is full; the next job waits for it, then moves on after max_wait_seconds.
    let named = submitted(&gw, TOKEN_A, spec(json!({"provider": "cheap"}))).await;
    let started = std::time::Instant::now();
    let id = submitted(&gw, TOKEN_A, spec(json!({}))).await;
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    let waited = started.elapsed();
    assert_eq!(job["provider"], "dear", "{job}");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(waited >= std::time::Duration::from_secs(2), "moved after {waited:?}");
    let reasons = gw.event_reasons(TOKEN_A, &id).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("waited 2 s for a place at cheap; dispatched to dear")),
        "{reasons:?}"
    );
    // A job that names its provider keeps waiting there.
    let (_, job) = gw.get(TOKEN_A, &format!("/v1/jobs/{named}")).await;
    assert_eq!((job["state"].as_str(), job["provider"].as_str()), (Some("queued"), None), "{job}");
}

#[tokio::test]
async fn the_expected_duration_comes_from_the_dag_tasks_recent_runs() {
    // cheap bills at least 10 minutes; fast bills by the second at twice the price: for
    // the default 600 s cheap wins, for a job of a few seconds fast does.
    let gw = Gateway::start(
        r#"
[providers.cheap]
kind = "sim"
start_ms = 0
run_ms = 1000
poll_interval_ms = 20
price = { vcpu_hour = 1.0, min_billed_seconds = 600 }
[providers.fast]
kind = "sim"
start_ms = 0
run_ms = 1000
poll_interval_ms = 20
price = { vcpu_hour = 2.0 }
"#,
    )
    .await;
    let labels = |task: &str| json!({"labels": {"dag_id": "etl", "task_id": task}});
    let q = quote(&gw, TOKEN_A, spec(labels("load"))).await;
    assert_eq!((q["duration_source"].as_str(), q["expected_duration_seconds"].as_u64()), (Some("default"), Some(600)), "{q}");
    assert_eq!(first(&q), "cheap", "{q}");
    for run_ms in [1000, 3000, 2000] {
        let mut s = spec(labels("load"));
        s["provider_options"] = json!({"sim": {"run_ms": run_ms}});
        let id = submitted(&gw, TOKEN_A, s).await;
        let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    // A failed run does not count.
    let mut s = spec(labels("load"));
    s["provider_options"] = json!({"sim": {"run_ms": 20000, "exit_code": 1, "start_ms": 0}});
    s["timeout_seconds"] = json!(1);
    let id = submitted(&gw, TOKEN_A, s).await;
    assert_eq!(gw.wait_terminal(TOKEN_A, &id, 30).await["state"], "failed");

    let q = quote(&gw, TOKEN_A, spec(labels("load"))).await;
    assert_eq!(q["duration_source"], "history", "{q}");
    let median = q["expected_duration_seconds"].as_u64().unwrap();
    assert!((2..=3).contains(&median), "the median of about 1, 3 and 2 s: {q}");
    assert_eq!(first(&q), "fast", "{q}");
    assert_eq!(q["candidates"][0]["billed_seconds"].as_u64(), Some(median), "{q}");
    // The spec's own figure wins; another task, or another tenant, has no history.
    let mut s = spec(labels("load"));
    s["routing"] = json!({"expected_duration_seconds": 600});
    assert_eq!(quote(&gw, TOKEN_A, s).await["duration_source"], "spec");
    assert_eq!(quote(&gw, TOKEN_A, spec(labels("other"))).await["duration_source"], "default");
    assert_eq!(quote(&gw, TOKEN_B, spec(labels("load"))).await["duration_source"], "default");
    // A submit routes by the same estimate.
    let id = submitted(&gw, TOKEN_A, spec(labels("load"))).await;
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    assert_eq!(job["provider"], "fast", "{job}");
}

#[tokio::test]
async fn billed_time_is_what_the_runtime_reports_not_when_the_gateway_looked() {
    // Polled every 3 s, a 1.2 s run is seen late or not at all; the sim reports when it
    // ran, as ECS and Kubernetes do, and that is what is billed.
    let gw = Gateway::start(
        r#"
[providers.slowpoll]
kind = "sim"
start_ms = 0
run_ms = 1200
poll_interval_ms = 3000
price = { vcpu_hour = 3.6 }
"#,
    )
    .await;
    let id = submitted(&gw, TOKEN_A, spec(json!({}))).await;
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["cost"]["billed_seconds"], 2, "{job}");
    let usd = job["cost"]["usd"].as_f64().unwrap();
    assert!((usd - 0.002).abs() < 1e-12, "3.6 USD/h for 2 s: {job}");
}

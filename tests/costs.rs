//! Each job's cost (the estimate stored at dispatch, what it cost once ended) and
//! `GET /v1/costs`, through the HTTP API, on sim providers whose prices make the sums easy.
//! Jobs run well under every billing minimum, so what they cost does not depend on timing.

mod common;

use common::{Gateway, TOKEN_A, TOKEN_B};
use reqwest::Method;
use serde_json::{json, Value};

/// `permin`: $3.60 per vCPU-hour ($0.001 per vCPU-second), at least 60 s; `halfmin`:
/// $7.20, at least 30 s in 30 s steps; `solo`: $36, at least 60 s, one job at a time.
const PROVIDERS: &str = r#"
[providers.halfmin]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 50
price = { vcpu_hour = 7.2, min_billed_seconds = 30, billing_increment_seconds = 30 }
[providers.permin]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 50
price = { vcpu_hour = 3.6, min_billed_seconds = 60 }
[providers.solo]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 50
max_concurrency = 1
price = { vcpu_hour = 36.0, min_billed_seconds = 60 }
"#;

fn spec(provider: &str, cpu: u32, dag: Option<&str>, expected: Option<u64>) -> Value {
    let mut s = json!({"image": "alpine", "command": ["true"], "resources": {"cpu": cpu},
        "provider": provider});
    if let Some(d) = dag {
        s["labels"] = json!({"dag_id": d});
    }
    if let Some(e) = expected {
        s["routing"] = json!({"expected_duration_seconds": e});
    }
    s
}

async fn submit(gw: &Gateway, spec: Value) -> String {
    let (status, job) = gw.submit(TOKEN_A, spec).await;
    assert_eq!(status, 201, "{job}");
    assert!(job["cost"].is_null(), "no cost before dispatch: {job}");
    job["id"].as_str().unwrap().to_string()
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

/// Checks a job's cost: its provider, hourly price, estimate, and (once ended) billed
/// seconds and dollars.
fn check(job: &Value, provider: &str, hourly: f64, estimated: f64, billed: u64, usd: f64) {
    let c = &job["cost"];
    assert_eq!(c["provider"], provider, "{job}");
    assert!(close(&c["hourly_usd"], hourly), "{job}");
    assert!(close(&c["estimated_usd"], estimated), "{job}");
    assert_eq!(c["billed_seconds"], billed, "{job}");
    assert!(close(&c["usd"], usd), "{job}");
}

async fn costs(gw: &Gateway, query: &str) -> (u16, Value) {
    gw.get(TOKEN_A, &format!("/v1/costs?{query}")).await
}

fn group<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("no group {key:?}: {report}"))
}

fn check_group(report: &Value, key: &str, jobs: u64, usd: f64, estimated: f64) {
    let g = group(report, key);
    assert_eq!(g["jobs"], jobs, "{key}: {report}");
    assert!(close(&g["usd"], usd), "{key}: {report}");
    assert!(close(&g["estimated_usd"], estimated), "{key}: {report}");
}

#[tokio::test]
async fn each_job_costs_its_billed_time_and_reports_add_them_up() {
    let gw = Gateway::start(PROVIDERS).await;

    // 1 vCPU expected for 120 s: permin $0.12, halfmin $0.24, solo $1.20; it runs
    // 0.2 s, billed as permin's minute: $0.06.
    let etl_auto = submit(&gw, spec("auto", 1, Some("etl"), Some(120))).await;
    // 2 vCPUs named at halfmin ($14.40 an hour): expected 120 s is $0.48; billed 30 s,
    // $0.12.
    let etl_named = submit(&gw, spec("halfmin", 2, Some("etl"), Some(120))).await;
    // 1 vCPU for the default 600 s: permin $0.60; billed a minute, $0.06.
    let ml = submit(&gw, spec("auto", 1, Some("ml"), None)).await;

    let job = gw.wait_terminal(TOKEN_A, &etl_auto, 20).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    check(&job, "permin", 3.6, 0.12, 60, 0.06);
    let job = gw.wait_terminal(TOKEN_A, &etl_named, 20).await;
    check(&job, "halfmin", 14.4, 0.48, 30, 0.12);
    let job = gw.wait_terminal(TOKEN_A, &ml, 20).await;
    check(&job, "permin", 3.6, 0.6, 60, 0.06);

    // solo takes one job at a time: a long one holds it, the next waits in the queue.
    let mut long = spec("solo", 1, None, None);
    long["provider_options"] = json!({"sim": {"run_ms": 60000}});
    let long = submit(&gw, long).await;
    let job = gw.wait_state(TOKEN_A, &long, "running", 20).await;
    // The estimate is there from dispatch; what it cost, only once it ends.
    assert!(close(&job["cost"]["estimated_usd"], 6.0), "{job}");
    assert!(job["cost"]["usd"].is_null(), "{job}");
    assert!(job["cost"]["billed_seconds"].is_null(), "{job}");
    let waiting = submit(&gw, spec("solo", 1, Some("etl"), None)).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let job = gw.wait_state(TOKEN_A, &waiting, "queued", 1).await;
    assert!(job["cost"].is_null(), "{job}");
    for id in [&waiting, &long] {
        let r = gw
            .req(Method::POST, &format!("/v1/jobs/{id}/cancel"), TOKEN_A)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    // Cancelled while queued: never dispatched, so no cost (0 in reports).
    let job = gw.wait_terminal(TOKEN_A, &waiting, 20).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(job["cost"].is_null(), "{job}");
    // Stopped after a moment of running: billed solo's minute, $0.60.
    let job = gw.wait_terminal(TOKEN_A, &long, 20).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    check(&job, "solo", 36.0, 6.0, 60, 0.6);

    // By hand: etl = 0.06 + 0.12 + 0 (estimated 0.12 + 0.48); ml = 0.06 (0.60);
    // no dag_id = 0.60 (6.00).
    let (status, report) = costs(&gw, "group_by=label:dag_id").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["groups"].as_array().unwrap().len(), 3, "{report}");
    check_group(&report, "", 1, 0.6, 6.0);
    check_group(&report, "etl", 3, 0.18, 0.6);
    check_group(&report, "ml", 1, 0.06, 0.6);
    assert!(close(&report["total_usd"], 0.84), "{report}");

    let (status, report) = costs(&gw, "group_by=provider").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["groups"].as_array().unwrap().len(), 4, "{report}");
    check_group(&report, "", 1, 0.0, 0.0);
    check_group(&report, "halfmin", 1, 0.12, 0.48);
    check_group(&report, "permin", 2, 0.12, 0.72);
    check_group(&report, "solo", 1, 0.6, 6.0);
    assert!(close(&report["total_usd"], 0.84), "{report}");

    // The period is [since, until); another tenant sees none of it.
    let (status, report) = costs(
        &gw,
        "group_by=provider&since=2020-01-01T00:00:00Z&until=2021-01-01T00:00:00%2B01:00",
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"groups": [], "total_usd": 0.0, "total_reference_usd": 0.0, "total_saved_usd": 0.0})
    );
    let (status, report) = gw.get(TOKEN_B, "/v1/costs?group_by=provider").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"groups": [], "total_usd": 0.0, "total_reference_usd": 0.0, "total_saved_usd": 0.0})
    );

    for (query, field) in [
        ("group_by=dag_id", "group_by"),
        ("group_by=label:", "group_by"),
        ("group_by=provider&since=yesterday", "since"),
        ("group_by=provider&until=2024-13-01T00:00:00Z", "until"),
    ] {
        let (status, problem) = costs(&gw, query).await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let (status, _) = gw.get(TOKEN_A, "/v1/costs").await;
    assert_eq!(status, 400, "group_by is required");

    // Metrics: the dispatches by provider and how it was chosen, and the dollars spent.
    let m = |p: &str| format!("offload_jobs_routed_total{{provider=\"{p}\",reason=");
    assert_eq!(gw.metric(&format!("{}\"auto\"", m("permin"))).await, 2.0);
    assert_eq!(gw.metric(&format!("{}\"named\"", m("halfmin"))).await, 1.0);
    assert_eq!(gw.metric(&format!("{}\"named\"", m("solo"))).await, 1.0);
    let spent = |p: &str| format!("offload_cost_usd_total{{provider=\"{p}\"}}");
    assert!((gw.metric(&spent("permin")).await - 0.12).abs() < 1e-9);
    assert!((gw.metric(&spent("solo")).await - 0.6).abs() < 1e-9);
}

/// Every attempt's cost is counted once, at the provider that ran it, and the same in every
/// account: each job's `cost.usd`, `GET /v1/costs` by provider and the
/// `offload_cost_usd_total` metric, to the micro-dollar. The histories: attempts lost after
/// running (each costs its billed minute) until the job fails, plain runs, and cancels at
/// once and while running. (A job cancelled in the queue after a lost attempt is
/// `engine::store_faults`'s.)
#[tokio::test]
async fn every_attempt_is_counted_where_it_ran_in_every_account() {
    let gw = Gateway::start(
        r#"
[providers.acct-cheap]
kind = "sim"
start_ms = 0
run_ms = 300
poll_interval_ms = 20
price = { vcpu_hour = 3.6, min_billed_seconds = 60 }
[providers.acct-dear]
kind = "sim"
start_ms = 0
run_ms = 300
poll_interval_ms = 20
price = { vcpu_hour = 36.0, min_billed_seconds = 60 }
"#,
    )
    .await;
    let sim = |provider: &str, options: Value| {
        let mut s = spec(provider, 1, None, None);
        s["provider_options"] = json!({"sim": options});
        s
    };
    let cancel = |id: String| {
        let path = format!("/v1/jobs/{id}/cancel");
        let req = gw.req(Method::POST, &path, TOKEN_A);
        async move { assert_eq!(req.send().await.unwrap().status().as_u16(), 202) }
    };
    let mut ids = vec![];
    // Lost after running, every attempt: three billed attempts, then failed.
    for provider in ["acct-cheap", "acct-dear"] {
        ids.push(submit(&gw, sim(provider, json!({"lost_after_ms": 300}))).await);
    }
    // Stopped while running: a billed minute.
    let stopped = submit(&gw, sim("acct-dear", json!({"run_ms": 60000}))).await;
    gw.wait_state(TOKEN_A, &stopped, "running", 20).await;
    cancel(stopped.clone()).await;
    ids.push(stopped);
    // Plain runs, and cancels at once (of jobs that would run a minute, so that the cancel
    // never comes after their end: queued, starting or running, whichever it meets).
    for i in 0..6 {
        let provider = ["acct-cheap", "acct-dear"][i % 2];
        let run_ms = if i % 3 == 0 { 60_000 } else { 50 * i };
        let id = submit(&gw, sim(provider, json!({"run_ms": run_ms}))).await;
        if i % 3 == 0 {
            cancel(id.clone()).await;
        }
        ids.push(id);
    }
    let micro = |x: f64| (x * 1e6).round() as i64;
    let mut spent: std::collections::BTreeMap<String, f64> = Default::default();
    let mut total = 0.0;
    for id in &ids {
        let job = gw.wait_terminal(TOKEN_A, id, 60).await;
        let Some(cost) = job["cost"].as_object() else {
            continue; // cancelled before dispatch
        };
        let earlier = cost.get("earlier").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut attempts = 0.0;
        for a in &earlier {
            let usd = a["usd"].as_f64().unwrap();
            *spent.entry(a["provider"].as_str().unwrap().into()).or_default() += usd;
            attempts += usd;
        }
        let job_usd = cost["usd"].as_f64().unwrap();
        assert_eq!(micro(cost["earlier_usd"].as_f64().unwrap()), micro(attempts), "{job}");
        *spent.entry(cost["provider"].as_str().unwrap().into()).or_default() += job_usd - attempts;
        total += job_usd;
    }
    for (id, usd) in [(&ids[0], 0.18), (&ids[1], 1.8)] {
        let lost = gw.wait_terminal(TOKEN_A, id, 1).await;
        assert_eq!(lost["state"], "failed", "{lost}");
        assert_eq!(lost["cost"]["earlier"].as_array().unwrap().len(), 2, "{lost}");
        assert_eq!(micro(lost["cost"]["usd"].as_f64().unwrap()), micro(usd), "{lost}");
    }

    let (status, report) = costs(&gw, "group_by=provider").await;
    assert_eq!(status, 200, "{report}");
    for (provider, usd) in &spent {
        let g = group(&report, provider);
        assert_eq!(micro(g["usd"].as_f64().unwrap()), micro(*usd), "{provider}: {report}");
        let metric = format!("offload_cost_usd_total{{provider=\"{provider}\"}}");
        assert_eq!(micro(gw.metric(&metric).await), micro(*usd), "{provider}: the metric");
    }
    assert_eq!(micro(report["total_usd"].as_f64().unwrap()), micro(total), "{report}");
}

/// `save-cheap`: $3.60 per vCPU-hour, at least 60 s; `save-half`: $7.20, at least 30 s in
/// 30 s steps; `save-dear`: $36, at least 60 s. Every job runs 200 ms, so each bills its
/// minimum.
const SAVINGS: &str = r#"
[providers.save-cheap]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 50
price = { vcpu_hour = 3.6, min_billed_seconds = 60 }
[providers.save-half]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 50
price = { vcpu_hour = 7.2, min_billed_seconds = 30, billing_increment_seconds = 30 }
[providers.save-dear]
kind = "sim"
start_ms = 0
run_ms = 200
poll_interval_ms = 50
price = { vcpu_hour = 36.0, min_billed_seconds = 60 }
"#;

/// Each job carries what the same run would have cost at its reference (the dearest
/// provider that could run it, or the one it named, or `routing.reference_provider`),
/// under that provider's own billing rules; the cost report's `reference_usd` and
/// `saved_usd`, and `offload_reference_usd_total` less `offload_cost_usd_total`, add up
/// the same figures to the micro-dollar.
#[tokio::test]
async fn savings_are_measured_against_the_reference_and_add_up_everywhere() {
    let gw = Gateway::start(SAVINGS).await;
    // auto: to save-cheap ($0.06 for its minute), against save-dear's minute ($0.60).
    let auto = submit(&gw, spec("auto", 1, Some("etl"), None)).await;
    // Named: its own reference, nothing saved.
    let named = submit(&gw, spec("save-half", 1, Some("ml"), None)).await;
    let auto = gw.wait_terminal(TOKEN_A, &auto, 20).await;
    let named = gw.wait_terminal(TOKEN_A, &named, 20).await;
    check(&auto, "save-cheap", 3.6, 0.6, 60, 0.06);
    assert_eq!(auto["cost"]["reference"]["provider"], "save-dear", "{auto}");
    assert!(close(&auto["cost"]["reference"]["hourly_usd"], 36.0), "{auto}");
    assert!(close(&auto["cost"]["reference"]["usd"], 0.6), "{auto}");
    assert_eq!(named["cost"]["reference"]["provider"], "save-half", "{named}");
    // Its 30 s at $7.20 an hour, as it cost.
    assert!(close(&named["cost"]["reference"]["usd"], 0.06), "{named}");
    assert!(close(&named["cost"]["usd"], 0.06), "{named}");

    let (status, report) = costs(&gw, "group_by=label:dag_id").await;
    assert_eq!(status, 200, "{report}");
    let etl = group(&report, "etl");
    assert!(close(&etl["reference_usd"], 0.6) && close(&etl["saved_usd"], 0.54), "{report}");
    let ml = group(&report, "ml");
    assert!(close(&ml["reference_usd"], 0.06) && close(&ml["saved_usd"], 0.0), "{report}");
    assert!(close(&report["total_reference_usd"], 0.66), "{report}");
    assert!(close(&report["total_saved_usd"], 0.54), "{report}");
    let (_, by_provider) = costs(&gw, "group_by=provider").await;
    assert!(close(&by_provider["total_saved_usd"], 0.54), "{by_provider}");
    let mut metric_saved = 0.0;
    for provider in ["save-cheap", "save-half"] {
        metric_saved += gw.metric(&format!("offload_reference_usd_total{{provider=\"{provider}\"}}")).await
            - gw.metric(&format!("offload_cost_usd_total{{provider=\"{provider}\"}}")).await;
    }
    assert!((metric_saved - 0.54).abs() < 1e-9, "{metric_saved}");

    // With routing.reference_provider, savings are measured against it.
    let gw = Gateway::start(&format!("[routing]\nreference_provider = \"save-half\"\n{SAVINGS}")).await;
    let id = submit(&gw, spec("auto", 1, None, None)).await;
    let job = gw.wait_terminal(TOKEN_A, &id, 20).await;
    assert_eq!(job["cost"]["provider"], "save-cheap", "{job}");
    assert_eq!(job["cost"]["reference"]["provider"], "save-half", "{job}");
    assert!(close(&job["cost"]["reference"]["usd"], 0.06), "{job}");
    let (_, report) = costs(&gw, "group_by=provider").await;
    assert!(close(&report["total_saved_usd"], 0.0), "{report}");
}

//! The API contract, end to end over HTTP against an in-process gateway with the local
//! and sim providers: every endpoint, the error paths, tenants, idempotency, routing.

mod common;

use std::time::Duration;

use common::{Gateway, TOKEN_A, TOKEN_B};
use reqwest::Method;
use serde_json::{json, Value};

const PROVIDERS: &str = r#"
[providers.local]
kind = "local"
allow_several_tenants = true
workdir = "$DIR/local"
grace_seconds = 1
poll_interval_ms = 100
[providers.sim]
kind = "sim"
start_ms = 20
run_ms = 100
poll_interval_ms = 50
price = { vcpu_hour = 1.0 }
"#;

fn sh(script: &str) -> Value {
    json!({"image": "alpine", "command": ["sh", "-c", script], "provider": "local"})
}

#[tokio::test]
async fn submit_get_logs_events_and_result() {
    let gw = Gateway::start(PROVIDERS).await;
    let mut spec =
        sh("echo hi; echo \"secret=$PW\" >&2; echo 'offload-result: {\"n\": 1}'; exit 3");
    spec["secret_env"] = json!({"PW": "hunter2"});
    spec["labels"] = json!({"dag_id": "etl"});
    let (status, job) = gw.submit(TOKEN_A, spec).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    assert_eq!(job["state"], "queued");
    assert_eq!(job["spec"]["secret_env"]["PW"], "<redacted>");

    let job = gw.wait_terminal(TOKEN_A, &id, 20).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["exit_code"], 3);
    assert_eq!(job["reason"], "exited with code 3");
    assert_eq!(job["result"], json!({"n": 1}));
    assert_eq!(job["provider"], "local");
    assert_eq!(job["attempts"], 1);
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    assert!(!job.to_string().contains("hunter2"), "secret echoed: {job}");

    let logs = gw
        .req(Method::GET, &format!("/v1/jobs/{id}/logs"), TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(logs.headers()["content-type"], "text/plain; charset=utf-8");
    let text = logs.text().await.unwrap();
    assert!(
        text.starts_with("hi\n") && text.contains("offload-result"),
        "{text}"
    );
    let tail = gw
        .req(Method::GET, &format!("/v1/jobs/{id}/logs?tail=1"), TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(tail.text().await.unwrap(), "offload-result: {\"n\": 1}\n");

    let (_, events) = gw.get(TOKEN_A, &format!("/v1/jobs/{id}/events")).await;
    let states: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"queued"));
    assert!(states.contains(&"starting"));
    assert_eq!(states.last(), Some(&"failed"));

    // The log survives the workload's release at the provider.
    let workload = gw
        .dir
        .path()
        .join("local")
        .join(format!("offload-{}-1", id.replace('-', "")));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while workload.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "workload never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = gw
        .req(Method::GET, &format!("/v1/jobs/{id}/logs"), TOKEN_A)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("hi\n"), "{text}");
}

#[tokio::test]
async fn idempotency_key_returns_the_same_job_or_conflicts() {
    let gw = Gateway::start(PROVIDERS).await;
    let post = |spec: Value, key: &str| {
        gw.req(Method::POST, "/v1/jobs", TOKEN_A)
            .header("Idempotency-Key", key.to_string())
            .json(&spec)
            .send()
    };
    let first = post(sh("true"), "run-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post(sh("true"), "run-1").await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    let conflict = post(sh("false"), "run-1").await.unwrap();
    assert_eq!(conflict.status(), 409);
    assert_eq!(
        conflict.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = conflict.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    // Keys are per tenant.
    let other = gw
        .req(Method::POST, "/v1/jobs", TOKEN_B)
        .header("Idempotency-Key", "run-1")
        .json(&sh("true"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 201);
}

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_naming_the_field() {
    let gw = Gateway::start(PROVIDERS).await;
    // (body, content type, status, the field the problem names)
    let cases: [(&str, &str, u16, Option<&str>); 10] = [
        ("{\"image\": ", "application/json", 400, None),
        ("{\"image\": 5}", "application/json", 422, Some("image")),
        (
            "{\"image\": \"a\", \"resources\": {\"cpu\": \"x\"}}",
            "application/json",
            422,
            Some("resources.cpu"),
        ),
        (
            "{\"image\": \"a\", \"colour\": 1}",
            "application/json",
            422,
            Some("colour"),
        ),
        (
            "{\"resources\": {}}",
            "application/json",
            422,
            Some("image"),
        ),
        (
            "{\"image\": \"a\", \"provider\": \"mars\"}",
            "application/json; charset=utf-8",
            422,
            Some("provider"),
        ),
        ("{\"image\": \"a\"}", "text/plain", 415, None),
        // Objects only: serde would take a struct's fields as an array, the schema not.
        (
            "{\"image\": \"a\", \"routing\": [null, null]}",
            "application/json",
            422,
            Some("routing"),
        ),
        (
            "{\"image\": \"a\", \"resources\": [1]}",
            "application/json",
            422,
            Some("resources"),
        ),
        (
            "{\"image\": \"a\", \"resources\": {\"gpu\": [1]}}",
            "application/json",
            422,
            Some("resources.gpu"),
        ),
    ];
    for (body, content_type, status, field) in cases {
        let r = gw
            .req(Method::POST, "/v1/jobs", TOKEN_A)
            .header("content-type", content_type)
            .body(body)
            .send();
        let (s, p) = problem(r.await.unwrap()).await;
        assert_eq!(
            (s, p["errors"][0]["field"].as_str()),
            (status, field),
            "{body}: {p}"
        );
    }
    let huge = format!("{{\"image\": \"{}\"}}", "x".repeat(100_000));
    let r = gw
        .req(Method::POST, "/v1/jobs", TOKEN_A)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 413);

    let (s, p) = gw.submit(TOKEN_A, json!({"image": "a", "command": ["x"], "resources": {"memory": "lots"}, "timeout_seconds": 0})).await;
    assert_eq!(s, 422);
    let fields: Vec<_> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["timeout_seconds", "resources.memory"]);
    let (s, p) = gw
        .submit(
            TOKEN_A,
            json!({"image": "a", "command": ["x"], "provider": "mars"}),
        )
        .await;
    assert_eq!(
        (s, p["errors"][0]["field"].as_str()),
        (422, Some("provider")),
        "{p}"
    );
    let (s, p) = gw
        .submit(
            TOKEN_A,
            json!({"image": "a", "command": ["x"], "resources": {"gpu": {"count": 1}}}),
        )
        .await;
    assert_eq!(
        (s, p["errors"][0]["field"].as_str()),
        (422, Some("provider")),
        "{p}"
    );
    assert!(p["detail"].as_str().unwrap().contains("GPU"), "{p}");
    let (s, p) = gw.submit(TOKEN_A, json!({"image": "a", "provider": "sim", "provider_options": {"sim": {"run_ms": "soon"}}})).await;
    assert_eq!(
        (s, p["errors"][0]["field"].as_str()),
        (422, Some("provider")),
        "{p}"
    );

    for (path, field) in [
        ("/v1/jobs/not-a-uuid", "id"),
        ("/v1/jobs?state=done", "state"),
        ("/v1/jobs?limit=0", "limit"),
        ("/v1/jobs?labels=novalue", "labels"),
        ("/v1/jobs?cursor=zzz", "cursor"),
    ] {
        let (s, p) = problem(gw.req(Method::GET, path, TOKEN_A).send().await.unwrap()).await;
        assert_eq!(
            (s, p["errors"][0]["field"].as_str()),
            (400, Some(field)),
            "{path}: {p}"
        );
    }
    let (s, _) = problem(
        gw.req(Method::GET, "/v1/nothing", TOKEN_A)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    let unknown = format!("/v1/jobs/{}", uuid::Uuid::now_v7());
    assert_eq!(
        problem(gw.req(Method::GET, &unknown, TOKEN_A).send().await.unwrap())
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn tokens_and_tenants() {
    let gw = Gateway::start(PROVIDERS).await;
    let none = gw
        .http
        .get(format!("{}/v1/jobs", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = gw
        .req(Method::GET, "/v1/jobs", "tenant-a-token-012345678X")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let (_, job) = gw.submit(TOKEN_A, sh("sleep 5")).await;
    let id = job["id"].as_str().unwrap();
    for path in [
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{id}/events"),
        format!("/v1/jobs/{id}/logs"),
    ] {
        let r = gw.req(Method::GET, &path, TOKEN_B).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = gw
        .req(Method::POST, &format!("/v1/jobs/{id}/cancel"), TOKEN_B)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (_, page) = gw.get(TOKEN_B, "/v1/jobs").await;
    assert_eq!(page["jobs"], json!([]));
    let (_, page) = gw.get(TOKEN_A, "/v1/jobs").await;
    assert_eq!(page["jobs"][0]["id"], job["id"]);
    let r = gw
        .req(Method::POST, &format!("/v1/jobs/{id}/cancel"), TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn list_filters_by_state_provider_labels_and_pages() {
    let gw = Gateway::start(PROVIDERS).await;
    let mut ids = vec![];
    for i in 0..5 {
        let spec = json!({"image": "img", "provider": "sim", "labels": {"dag_id": if i % 2 == 0 { "etl" } else { "ml" }, "env": "prod"}});
        let (s, job) = gw.submit(TOKEN_A, spec).await;
        assert_eq!(s, 201, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        gw.wait_terminal(TOKEN_A, id, 20).await;
    }
    let (_, page) = gw.get(TOKEN_A, "/v1/jobs?labels=dag_id=etl,env=prod").await;
    let got: Vec<_> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, vec![ids[4].clone(), ids[2].clone(), ids[0].clone()]);
    let (_, page) = gw
        .get(TOKEN_A, "/v1/jobs?state=succeeded&provider=sim&limit=2")
        .await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, next) = gw
        .get(
            TOKEN_A,
            &format!("/v1/jobs?state=succeeded&provider=sim&limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(next["jobs"][0]["id"].as_str().unwrap(), ids[2]);
    let (_, none) = gw.get(TOKEN_A, "/v1/jobs?state=running").await;
    assert_eq!(none["jobs"], json!([]));
}

#[tokio::test]
async fn cancel_is_idempotent_then_conflicts_once_ended() {
    let gw = Gateway::start(PROVIDERS).await;
    let (_, job) = gw
        .submit(
            TOKEN_A,
            // Ignoring SIGTERM keeps the job cancelling until SIGKILL after the grace period.
            sh("trap '' TERM; echo $$; sleep 60"),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    gw.wait_state(TOKEN_A, id, "running", 20).await;
    let pid = job_pid(&gw, id).await;
    let cancel = || {
        gw.req(Method::POST, &format!("/v1/jobs/{id}/cancel"), TOKEN_A)
            .send()
    };
    assert_eq!(cancel().await.unwrap().status(), 202);
    assert_eq!(cancel().await.unwrap().status(), 202);
    let job = gw.wait_terminal(TOKEN_A, id, 20).await;
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["reason"], "cancelled by tenant a");
    assert!(!process_alive(&pid), "process {pid} outlived the cancel");
    let (s, p) = problem(cancel().await.unwrap()).await;
    assert_eq!(s, 409, "{p}");

    // A queued job that never launched ends at once.
    let (_, queued) = gw.submit(TOKEN_A, json!({"image": "i", "provider": "sim", "provider_options": {"sim": {"start_ms": 60000}}})).await;
    let qid = queued["id"].as_str().unwrap();
    assert_eq!(
        gw.req(Method::POST, &format!("/v1/jobs/{qid}/cancel"), TOKEN_A)
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        gw.wait_terminal(TOKEN_A, qid, 20).await["state"],
        "cancelled"
    );
}

/// The pid a running job printed as its first line (`echo $$`).
async fn job_pid(gw: &Gateway, id: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = gw
            .req(Method::GET, &format!("/v1/jobs/{id}/logs"), TOKEN_A)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if let Some(pid) = log.lines().next() {
            return pid.trim().to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "the job printed no pid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn process_alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}

#[tokio::test]
async fn timeout_stops_the_job_and_fails_it() {
    let gw = Gateway::start(PROVIDERS).await;
    let mut spec = sh("echo $$; sleep 60");
    spec["timeout_seconds"] = json!(1);
    let (_, job) = gw.submit(TOKEN_A, spec).await;
    let id = job["id"].as_str().unwrap().to_string();
    let pid = job_pid(&gw, &id).await;
    let job = gw.wait_terminal(TOKEN_A, &id, 20).await;
    assert_eq!(job["state"], "failed");
    assert!(
        job["reason"].as_str().unwrap().starts_with("timeout"),
        "{job}"
    );
    assert!(!process_alive(&pid), "process {pid} outlived the timeout");
}

#[tokio::test]
async fn a_name_in_env_and_secret_env_takes_the_secret_value() {
    let gw = Gateway::start(PROVIDERS).await;
    let mut spec = sh("echo \"pw=$PW\"");
    spec["env"] = json!({"PW": "in-the-open"});
    spec["secret_env"] = json!({"PW": "from-the-secret"});
    let (status, job) = gw.submit(TOKEN_A, spec).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        gw.wait_terminal(TOKEN_A, id, 20).await["state"],
        "succeeded"
    );
    let text = gw
        .req(Method::GET, &format!("/v1/jobs/{id}/logs"), TOKEN_A)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "pw=from-the-secret\n");
}

#[tokio::test]
async fn env_is_passed_and_follow_streams_until_the_end() {
    let gw = Gateway::start(PROVIDERS).await;
    let mut spec = sh("for i in 1 2 3; do echo \"$GREETING $i\"; sleep 0.3; done");
    spec["env"] = json!({"GREETING": "hello"});
    let (_, job) = gw.submit(TOKEN_A, spec).await;
    let id = job["id"].as_str().unwrap();
    let started = std::time::Instant::now();
    let r = gw
        .req(
            Method::GET,
            &format!("/v1/jobs/{id}/logs?follow=true"),
            TOKEN_A,
        )
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert_eq!(text, "hello 1\nhello 2\nhello 3\n");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "returned before the job ended"
    );
    assert_eq!(
        gw.wait_terminal(TOKEN_A, id, 10).await["state"],
        "succeeded"
    );
}

#[tokio::test]
async fn ops_endpoints_need_no_token_and_providers_report_health() {
    let gw = Gateway::start(PROVIDERS).await;
    let (_, job) = gw
        .submit(TOKEN_A, json!({"image": "i", "provider": "sim"}))
        .await;
    gw.wait_terminal(TOKEN_A, job["id"].as_str().unwrap(), 20)
        .await;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            gw.http
                .get(format!("{}{path}", gw.url))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    let metrics = gw.metrics_text().await;
    assert!(
        metrics.contains("offload_jobs{provider=\"sim\",state=\"succeeded\"}"),
        "{metrics}"
    );
    // The recorder is the test process's, shared with the other tests' gateways: at least
    // this job's end.
    let ended = metrics
        .lines()
        .find_map(|l| l.strip_prefix("offload_jobs_ended_total{provider=\"sim\",state=\"succeeded\"} "))
        .and_then(|n| n.trim().parse::<f64>().ok());
    assert!(ended.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(
        metrics.contains("offload_provider_calls_total{provider=\"sim\",call=\"launch\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("offload_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    let doc: Value = gw
        .http
        .get(format!("{}/openapi.json", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/jobs"]["post"].is_object());
    let (s, providers) = gw.get(TOKEN_A, "/v1/providers").await;
    assert_eq!(s, 200);
    let names: Vec<_> = providers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["kind"].as_str().unwrap(),
                p["healthy"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("local", "local", true), ("sim", "sim", true)]);
    assert_eq!(
        gw.http
            .get(format!("{}/v1/providers", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn auto_routes_to_the_cheapest_and_around_capacity_and_lost_workloads_retry() {
    let gw = Gateway::start(
        r#"
[providers.cheap]
kind = "sim"
start_ms = 0
run_ms = 50
poll_interval_ms = 50
faults = { capacity = 1.0 }
[providers.dear]
kind = "sim"
start_ms = 0
run_ms = 50
poll_interval_ms = 50
price = { vcpu_hour = 2.0 }
[providers.flaky]
kind = "sim"
start_ms = 0
run_ms = 50
poll_interval_ms = 50
price = { vcpu_hour = 5.0 }
faults = { lost = 1.0 }
"#,
    )
    .await;
    let (_, job) = gw.submit(TOKEN_A, json!({"image": "i"})).await;
    let job = gw
        .wait_terminal(TOKEN_A, job["id"].as_str().unwrap(), 20)
        .await;
    assert_eq!(
        (
            job["state"].as_str(),
            job["provider"].as_str(),
            job["attempts"].as_u64()
        ),
        (Some("succeeded"), Some("dear"), Some(2))
    );
    let (_, events) = gw
        .get(
            TOKEN_A,
            &format!("/v1/jobs/{}/events", job["id"].as_str().unwrap()),
        )
        .await;
    assert!(
        events.to_string().contains("no capacity at cheap"),
        "{events}"
    );

    let (_, lost) = gw
        .submit(TOKEN_A, json!({"image": "i", "provider": "flaky"}))
        .await;
    let lost = gw
        .wait_terminal(TOKEN_A, lost["id"].as_str().unwrap(), 20)
        .await;
    assert_eq!(lost["state"], "failed");
    assert_eq!(lost["attempts"], 3);
    assert!(
        lost["reason"].as_str().unwrap().contains("workload lost"),
        "{lost}"
    );
}

#[tokio::test]
async fn a_provider_limit_holds_jobs_queued() {
    let gw = Gateway::start(
        r#"
[providers.one]
kind = "sim"
max_concurrency = 1
start_ms = 0
run_ms = 300
poll_interval_ms = 20
"#,
    )
    .await;
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(
            gw.submit(TOKEN_A, json!({"image": "i"})).await.1["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut max_live = 0;
    for _ in 0..100 {
        let (_, page) = gw.get(TOKEN_A, "/v1/jobs").await;
        let live = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["state"] == "running" || j["state"] == "starting")
            .count();
        max_live = max_live.max(live);
        if page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["terminal"] == true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(max_live, 1);
    for id in &ids {
        assert_eq!(
            gw.wait_terminal(TOKEN_A, id, 20).await["state"],
            "succeeded"
        );
    }
}

#[tokio::test]
async fn long_poll_answers_when_the_job_changes_state() {
    let gw = Gateway::start(PROVIDERS).await;
    let (_, job) = gw.submit(TOKEN_A, sh("sleep 1")).await;
    let id = job["id"].as_str().unwrap();
    gw.wait_state(TOKEN_A, id, "running", 20).await;
    let started = std::time::Instant::now();
    let (status, job) = gw.get(TOKEN_A, &format!("/v1/jobs/{id}?wait=30")).await;
    assert_eq!(status, 200);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "held past the change"
    );
    // A terminal job answers at once; a bad wait names the field.
    let (_, again) = gw.get(TOKEN_A, &format!("/v1/jobs/{id}?wait=30")).await;
    assert_eq!(again["state"], "succeeded");
    let (status, problem) = gw
        .get(TOKEN_A, &format!("/v1/jobs/{id}?wait=forever"))
        .await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (400, Some("wait"))
    );
    // With no change, the wait runs out and the job comes back as it is.
    let (_, slow) = gw.submit(TOKEN_A, sh("sleep 30")).await;
    let slow_id = slow["id"].as_str().unwrap();
    gw.wait_state(TOKEN_A, slow_id, "running", 20).await;
    let started = std::time::Instant::now();
    let (_, still) = gw.get(TOKEN_A, &format!("/v1/jobs/{slow_id}?wait=1")).await;
    assert_eq!(still["state"], "running");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let cancel = gw
        .req(Method::POST, &format!("/v1/jobs/{slow_id}/cancel"), TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    gw.wait_terminal(TOKEN_A, slow_id, 20).await;
}

#[tokio::test]
async fn a_label_key_with_quotes_and_backslashes_is_matched_not_an_error() {
    let gw = Gateway::start(PROVIDERS).await;
    let key = "we\"ird\\key\u{15}";
    let mut spec = json!({"image": "i", "provider": "sim"});
    spec["labels"] = json!({ key: "v" });
    let (status, job) = gw.submit(TOKEN_A, spec).await;
    assert_eq!(status, 201, "{job}");
    let r = gw
        .req(Method::GET, "/v1/jobs", TOKEN_A)
        .query(&[("labels", format!("{key}=v"))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["jobs"][0]["id"], job["id"]);
}

/// The served document bounds CPU and memory strings as it bounds CPU numbers: against the
/// default sim provider (16 vCPUs, 64 GiB), a string the document calls valid is accepted
/// and one it calls invalid is refused, around the bounds and with the values schemathesis
/// found accepted by the document and refused by the server (`"191"`, `"874.10096T"`).
#[tokio::test]
async fn the_served_document_bounds_cpu_and_memory_strings_as_the_server_does() {
    let gw = Gateway::start("[providers.sim]\nkind = \"sim\"\nstart_ms = 0\nrun_ms = 10\n").await;
    let doc: Value = gw
        .http
        .get(format!("{}/openapi.json", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resources = &doc["components"]["schemas"]["ResourceSpec"]["properties"];
    let patterns = |schema: &Value| -> Vec<regex::Regex> {
        let mut all = vec![schema["pattern"].as_str().unwrap().to_string()];
        for extra in schema["allOf"].as_array().into_iter().flatten() {
            all.push(extra["pattern"].as_str().unwrap().to_string());
        }
        all.iter().map(|p| regex::Regex::new(p).unwrap()).collect()
    };
    let cpu = patterns(&resources["cpu"]["oneOf"][1]);
    let memory = patterns(&resources["memory"]);
    let cases = [
        ("cpu", "191"),
        ("cpu", "16"),
        ("cpu", "16.000001"),
        ("cpu", "16000m"),
        ("cpu", "16001m"),
        ("cpu", "0.5"),
        ("memory", "874.10096T"),
        ("memory", "64Gi"),
        ("memory", "64.0000001Gi"),
        ("memory", "68719476736"),
        ("memory", "68719476736.000000001"),
        ("memory", "68.719476736G"),
        ("memory", "68.7194767361G"),
        ("memory", "0.0625Ti"),
        ("memory", "512Mi"),
    ];
    for (field, value) in cases {
        let rules = if field == "cpu" { &cpu } else { &memory };
        let valid = rules.iter().all(|r| r.is_match(value));
        let spec = json!({"image": "img", "command": ["true"], "resources": {field: value}});
        let (status, body) = gw.submit(TOKEN_A, spec).await;
        assert_eq!(
            valid,
            status == 201,
            "{field} {value:?}: the document says {}, the server answered {status} {body}",
            if valid { "valid" } else { "invalid" }
        );
    }
}

/// `GET /v1/changes`: the caller's jobs of a selector that changed since a cursor, each
/// once as it is now, paged, and nothing of another tenant's; a follower of many jobs reads
/// every end with a call per page, not a read per job.
#[tokio::test]
async fn changes_tell_a_follower_every_end_since_its_cursor() {
    let gw = Gateway::start("[providers.sim]\nkind = \"sim\"\nstart_ms = 0\nrun_ms = 100\npoll_interval_ms = 20\n").await;
    let spec = |run: &str| json!({"image": "img", "command": ["true"], "labels": {"run": run}});
    let changes = |token: &'static str, query: String| {
        let gw = &gw;
        async move { gw.get(token, &format!("/v1/changes?{query}")).await }
    };
    // Before any job: nothing, and a cursor to start from.
    let (status, feed) = changes(TOKEN_A, "labels=run=r1".into()).await;
    assert_eq!(status, 200, "{feed}");
    assert_eq!(feed["jobs"], json!([]));
    let mut cursor = feed["next_cursor"].as_str().unwrap().to_string();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let (status, job) = gw.submit(TOKEN_A, spec("r1")).await;
        assert_eq!(status, 201, "{job}");
        ids.insert(job["id"].as_str().unwrap().to_string());
    }
    gw.submit(TOKEN_A, spec("r2")).await;
    gw.submit(TOKEN_B, spec("r1")).await;
    // Follow until every job of run r1 is seen ended: pages of two.
    let mut ended = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ended.len() < ids.len() {
        assert!(std::time::Instant::now() < deadline, "ended: {ended:?}");
        let (status, feed) = changes(TOKEN_A, format!("labels=run=r1&limit=2&after={cursor}")).await;
        assert_eq!(status, 200, "{feed}");
        let jobs = feed["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 2, "{feed}");
        for job in jobs {
            let id = job["id"].as_str().unwrap().to_string();
            assert!(ids.contains(&id), "not one of ours: {job}");
            assert!(job.get("spec").is_none(), "{job}");
            if job["terminal"] == true {
                assert_eq!(job["state"], "succeeded", "{job}");
                ended.insert(id);
            }
        }
        cursor = feed["next_cursor"].as_str().unwrap().to_string();
        if feed["more"] != true {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // Another tenant hears nothing of these.
    let (_, feed) = changes(TOKEN_B, "labels=run=r1".into()).await;
    assert!(feed["jobs"].as_array().unwrap().iter().all(|j| !ids.contains(j["id"].as_str().unwrap())));
    for (query, field) in [("after=-1", "after"), ("after=x", "after"), ("limit=0", "limit"), ("labels=nokey", "labels")] {
        let (status, problem) = changes(TOKEN_A, query.into()).await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
}

/// A page of changes holds about 1 MiB of jobs at most, however many its limit allows:
/// jobs with labels at their limits fill it long before 1,000 of them.
#[tokio::test]
async fn a_page_of_changes_is_bounded_in_bytes() {
    let gw = Gateway::start("[providers.sim]\nkind = \"sim\"\nstart_ms = 0\nrun_ms = 100000\n").await;
    let mut labels = serde_json::Map::new();
    labels.insert("run".into(), json!("big"));
    for i in 0..63 {
        labels.insert(format!("k{i:02}"), json!("v".repeat(1024)));
    }
    for _ in 0..20 {
        let (status, job) = gw
            .submit(TOKEN_A, json!({"image": "img", "command": ["true"], "labels": labels}))
            .await;
        assert_eq!(status, 201, "{job}");
    }
    let (mut after, mut seen, mut pages) = ("0".to_string(), 0, 0);
    loop {
        let response = gw
            .req(Method::GET, &format!("/v1/changes?labels=run=big&limit=1000&after={after}"), TOKEN_A)
            .send()
            .await
            .unwrap();
        let body = response.bytes().await.unwrap();
        assert!(body.len() < (1 << 20) + 100_000, "a page of {} bytes", body.len());
        let feed: Value = serde_json::from_slice(&body).unwrap();
        seen += feed["jobs"].as_array().unwrap().len();
        pages += 1;
        after = feed["next_cursor"].as_str().unwrap().to_string();
        if feed["more"] != true {
            break;
        }
    }
    assert!(pages > 1, "all in one page");
    assert!(seen >= 20, "{seen} jobs seen");
}

//! What a tenant, a job or another user of the host can reach of what is not theirs: the
//! store's files, the gateway's own paths, the end of a log, another tenant's share.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Gateway, TOKEN_A, TOKEN_B};
use reqwest::Method;
use serde_json::{json, Value};

const PROVIDERS: &str = r#"
[providers.local]
kind = "local"
workdir = "$DIR/local"
grace_seconds = 1
poll_interval_ms = 50
[providers.sim]
kind = "sim"
start_ms = 10
run_ms = 600000
poll_interval_ms = 20
"#;

fn sh(script: &str) -> Value {
    json!({"image": "alpine", "command": ["sh", "-c", script], "provider": "local"})
}

/// The database, its WAL and its key hold every tenant's specs and log tails: only the
/// gateway's user may read them.
#[tokio::test]
async fn the_store_files_are_private_to_the_gateways_user() {
    if std::env::var("OFFLOAD_TEST_STORE").as_deref() == Ok("postgres") {
        return;
    }
    let gw = Gateway::start(PROVIDERS).await;
    // A write makes SQLite create its WAL.
    gw.submitted(json!({"image": "i", "provider": "sim"})).await;
    for name in ["offload.db", "offload.db-wal", "offload.db.key"] {
        let path = gw.dir.path().join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
    }
}

/// `tail=N` of a running job whose output is past what one read returns gives the end of
/// the log, not lines from its beginning.
#[tokio::test]
async fn tail_of_a_long_running_log_is_its_end() {
    let gw = Gateway::start(PROVIDERS).await;
    let id = gw
        .submitted(sh("seq 1 400000; echo the-end; sleep 60"))
        .await;
    gw.wait_state(TOKEN_A, &id, "running", 20).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = gw
            .req(Method::GET, &format!("/v1/jobs/{id}/logs?tail=2"), TOKEN_A)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text == "400000\nthe-end\n" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tail=2 answered {:?}",
            &text[..text.len().min(200)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A provider error a tenant sees names no path of the gateway's host.
#[tokio::test]
async fn errors_name_no_server_paths() {
    let gw = Gateway::start(PROVIDERS).await;
    let id = gw.submitted(sh("echo hi; sleep 60")).await;
    let key = gw.launched(&id).await;
    gw.wait_state(TOKEN_A, &id, "running", 20).await;
    // The log file turns into something no read can take.
    let log = gw.dir.path().join("local").join(&key).join("output.log");
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    let r = gw
        .req(Method::GET, &format!("/v1/jobs/{id}/logs"), TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let problem: Value = r.json().await.unwrap();
    let root = gw.dir.path().display().to_string();
    let detail = problem["detail"].as_str().unwrap();
    assert!(!detail.contains(&root), "{detail}");
    assert!(!detail.contains("/local/"), "{detail}");
}

/// Reads `path` as a stream until its first bytes arrive; how long that took.
async fn first_bytes(gw: &Gateway, token: &str, path: &str) -> Duration {
    use futures::StreamExt;
    let started = tokio::time::Instant::now();
    let r = gw.req(Method::GET, path, token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    loop {
        let chunk = body.next().await.expect("the follow ended").unwrap();
        if !chunk.is_empty() {
            return started.elapsed();
        }
    }
}

/// A tenant holding many log followers on one provider takes at most its share of the
/// provider's follower reads: another tenant's follower gets its first bytes at once.
#[tokio::test]
async fn one_tenants_followers_do_not_starve_anothers() {
    let gw = Gateway::start(
        r#"
[providers.sim]
kind = "sim"
start_ms = 10
run_ms = 600000
poll_interval_ms = 20
follower_reads_per_second = 2
"#,
    )
    .await;
    let spec = json!({"image": "i", "provider": "sim"});
    let a = gw.submitted(spec.clone()).await;
    gw.wait_state(TOKEN_A, &a, "running", 10).await;
    let (status, b) = gw.submit(TOKEN_B, spec).await;
    assert_eq!(status, 201);
    let b = b["id"].as_str().unwrap().to_string();
    gw.wait_state(TOKEN_B, &b, "running", 10).await;
    // Forty followers of tenant A, each wanting a read at once and again every second:
    // twenty times the provider's follower budget.
    let mut held = vec![];
    for _ in 0..40 {
        let r = gw
            .req(Method::GET, &format!("/v1/jobs/{a}/logs?follow=true"), TOKEN_A)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let waited = first_bytes(&gw, TOKEN_B, &format!("/v1/jobs/{b}/logs?follow=true")).await;
    assert!(
        waited < Duration::from_secs(5),
        "tenant B's follower waited {waited:?} behind tenant A's"
    );
    drop(held);
}

/// The dashboard's live view of a job reads its log as a follower does, and counts against
/// the tenant's cap on long-polls and followers.
#[tokio::test]
async fn dashboard_live_views_count_against_the_waiter_cap() {
    let gw = Gateway::start(
        r#"
[http]
max_waiters_per_tenant = 2
[providers.sim]
kind = "sim"
start_ms = 10
run_ms = 600000
poll_interval_ms = 20
"#,
    )
    .await;
    let id = gw.submitted(json!({"image": "i", "provider": "sim"})).await;
    gw.wait_state(TOKEN_A, &id, "running", 10).await;
    let cookie = gw.dashboard_session(TOKEN_A).await;
    let live = || {
        gw.http
            .get(format!("{}/ui/jobs/{id}/live", gw.url))
            .header(reqwest::header::COOKIE, &cookie)
            .send()
    };
    assert_eq!(live().await.unwrap().status(), 200);
    let mut held = vec![];
    for _ in 0..2 {
        let r = gw
            .req(Method::GET, &format!("/v1/jobs/{id}/logs?follow=true"), TOKEN_A)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let refused = live().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    drop(held);
}

/// In a followed log, a line that starts with `[offload] ` is the gateway's: a job's line
/// that would pass for one (after any number of `>`) gets one more `>`, however the output
/// is cut into reads, and the gateway's own line (a failed read) carries the mark.
#[tokio::test]
async fn a_job_cannot_forge_the_gateways_lines_in_a_followed_log() {
    let gw = Gateway::start(PROVIDERS).await;
    let script = "echo '[offload] the job succeeded'; echo '>[offload] quoted'; \
                  printf '[off'; sleep 1; printf 'load] split\\n'; echo 'not [offload] '; sleep 60";
    let id = gw.submitted(sh(script)).await;
    let key = gw.launched(&id).await;
    gw.wait_state(TOKEN_A, &id, "running", 20).await;
    use futures::StreamExt;
    let r = gw
        .req(Method::GET, &format!("/v1/jobs/{id}/logs?follow=true"), TOKEN_A)
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !text.contains("not [offload] ") {
        assert!(tokio::time::Instant::now() < deadline, "{text:?}");
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // A read that fails: the gateway's own line, marked.
    let log = gw.dir.path().join("local").join(&key).join("output.log");
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), body.next())
        .await
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[..4],
        &[
            ">[offload] the job succeeded",
            ">>[offload] quoted",
            ">[offload] split",
            "not [offload] ",
        ],
        "{text:?}"
    );
    let gateway: Vec<&&str> = lines.iter().filter(|l| l.starts_with("[offload] ")).collect();
    assert_eq!(gateway.len(), 1, "{text:?}");
    assert!(gateway[0].starts_with("[offload] reading the log failed"), "{text:?}");
}

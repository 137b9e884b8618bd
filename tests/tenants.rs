//! What a tenant, a job or another user of the host can reach of what is not theirs: the
//! store's files, the gateway's own paths, the end of a log, another tenant's share.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Gateway, TOKEN_A};
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

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
allow_several_tenants = true
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
/// gateway's user may read them. On SQLite whatever `OFFLOAD_TEST_STORE` says: the files
/// are SQLite's.
#[tokio::test]
async fn the_store_files_are_private_to_the_gateways_user() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::config_text(dir.path(), "127.0.0.1:0", PROVIDERS);
    let gw = Gateway::start_text(dir, &text, offload::clock::Clock::system()).await;
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
            .req(
                Method::GET,
                &format!("/v1/jobs/{a}/logs?follow=true"),
                TOKEN_A,
            )
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
            .req(
                Method::GET,
                &format!("/v1/jobs/{id}/logs?follow=true"),
                TOKEN_A,
            )
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
        .req(
            Method::GET,
            &format!("/v1/jobs/{id}/logs?follow=true"),
            TOKEN_A,
        )
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
    let gateway: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("[offload] "))
        .collect();
    assert_eq!(gateway.len(), 1, "{text:?}");
    assert!(
        gateway[0].starts_with("[offload] reading the log failed"),
        "{text:?}"
    );
}

/// A `local` job of one tenant, run beside another tenant's, tries what the issue saw
/// work: reading the other job's secret environment, the gateway's database and key,
/// writing the other job's exit code and output, and its own pid file with a foreign pid
/// so that its release signals an unrelated process group. None of it may work.
#[tokio::test]
async fn a_local_job_reaches_nothing_of_another_tenants_nor_the_gateways() {
    let gw = Gateway::start(PROVIDERS).await;
    let mut other = sh("sleep 60");
    other["secret_env"] = json!({"SECRET_B": "hunter2-of-b"});
    let (status, b) = gw.submit(TOKEN_B, other).await;
    assert_eq!(status, 201, "{b}");
    let b = b["id"].as_str().unwrap().to_string();
    let b_key = gw
        .wait_for(TOKEN_B, &b, 20, "running", |j| j["state"] == "running")
        .await["provider_ref"]
        .as_str()
        .unwrap()
        .to_string();
    // An unrelated process group the job will try to have the gateway kill.
    let mut victim = std::process::Command::new("sleep");
    victim.arg("300");
    std::os::unix::process::CommandExt::process_group(&mut victim, 0);
    let mut victim = victim.spawn().unwrap();
    let root = gw.dir.path();
    let script = r#"
for f in /proc/[0-9]*/environ; do
  tr '\0' '\n' < "$f" 2>/dev/null | grep -q '^SECRET_B=' && echo "LEAK environ $f"
done
head -c 16 "$DB" 2>/dev/null | grep -q SQLite && echo "LEAK database"
[ -n "$(cat "$DB.key" 2>/dev/null)" ] && echo "LEAK key"
echo 0 2>/dev/null > "$OTHER/exit_code" && echo "LEAK exit_code"
echo 'offload-result: {"forged": true}' 2>/dev/null >> "$OTHER/output.log" && echo "LEAK output"
echo "$VICTIM" 2>/dev/null > ../pid && echo "LEAK pid"
echo done
"#;
    let mut spec = sh(script);
    spec["env"] = json!({
        "DB": root.join("offload.db").display().to_string(),
        "OTHER": root.join("local").join(&b_key).display().to_string(),
        "VICTIM": victim.id().to_string(),
    });
    let a = gw.submitted(spec).await;
    let job = gw.wait_terminal(TOKEN_A, &a, 30).await;
    let log = gw
        .req(Method::GET, &format!("/v1/jobs/{a}/logs"), TOKEN_A)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("done"), "{job} {log}");
    assert!(!log.contains("LEAK"), "{log}");
    // Released, the job's group is gone, and the unrelated process is not.
    let dir = root
        .join("local")
        .join(job["provider_ref"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while dir.exists() {
        assert!(tokio::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the unrelated process was killed"
    );
    let _ = victim.kill();
    let _ = victim.wait();
    // The other tenant's job is untouched: still running, its log its own.
    let (_, b_job) = gw.get(TOKEN_B, &format!("/v1/jobs/{b}")).await;
    assert_eq!(b_job["state"], "running", "{b_job}");
}

/// A provider's places go to tenants by fair share: behind tenant a's burst of 200 jobs
/// for 4 places, tenant b's one job gets one of the next places to free, not the place
/// after a's last (it used to wait behind all of them, oldest first whoever sent them).
#[tokio::test]
async fn a_tenants_job_is_not_queued_behind_another_tenants_burst() {
    let gw = Gateway::start(
        "[providers.fair]\nkind = \"sim\"\nstart_ms = 0\nrun_ms = 300\npoll_interval_ms = 20\nmax_concurrency = 4\n",
    )
    .await;
    let job = json!({"image": "img", "command": ["true"], "labels": {"burst": "yes"}});
    let mut burst = vec![];
    for _ in 0..200 {
        let (status, body) = gw.submit(TOKEN_A, job.clone()).await;
        assert_eq!(status, 201, "{body}");
        burst.push(body["id"].as_str().unwrap().to_string());
    }
    let (status, body) = gw.submit(TOKEN_B, job.clone()).await;
    assert_eq!(status, 201, "{body}");
    let b = body["id"].as_str().unwrap().to_string();
    let submitted_b = chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).unwrap();
    let done = gw.wait_terminal(TOKEN_B, &b, 60).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let dispatched = |events: &Value| {
        events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"].as_str().unwrap_or_default().starts_with("dispatched"))
            .map(|e| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap())
    };
    let (_, events) = gw.get(TOKEN_B, &format!("/v1/jobs/{b}/events")).await;
    let b_dispatched = dispatched(&events).unwrap();
    // a's jobs dispatched after b came and before b was: those that were taking the places
    // as b's first reconcile ran, and no more.
    let mut ahead = 0;
    for id in &burst {
        let (_, events) = gw.get(TOKEN_A, &format!("/v1/jobs/{id}/events")).await;
        if let Some(at) = dispatched(&events) {
            if at > submitted_b && at < b_dispatched {
                ahead += 1;
            }
        }
    }
    assert!(ahead <= 8, "{ahead} of tenant a's jobs were dispatched between b's submit and its dispatch");
    for id in &burst {
        gw.req(Method::POST, &format!("/v1/jobs/{id}/cancel"), TOKEN_A).send().await.unwrap();
    }
}

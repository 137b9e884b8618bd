//! Failed authentication and the dashboard's sessions: wrong tokens are limited per client
//! address and logged (never the token), sign-in needs the form's CSRF token, and a
//! session is a random id that sign-out and expiry end.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{config_text, free_port, wait_ready, Binary, Gateway, TOKEN_A, TOKEN_B};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;

const SIM: &str = r#"
[auth]
failures_per_minute = 5
session_seconds = 3
[providers.sim]
kind = "sim"
"#;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// Wrong bearer tokens from one address past its budget get 429 with Retry-After; a right
/// token from there, and wrong ones from elsewhere, are answered as before; each refusal is
/// an audit line that names the address and never the token.
#[tokio::test]
async fn failed_tokens_are_limited_per_address_and_logged_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("offload.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), &format!("127.0.0.1:{port}"), SIM),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let _server = Binary::start(&config, &log);
    wait_ready(&reqwest::Client::new(), &url, &log).await;

    let guesser = client_from("127.0.0.2");
    let mut statuses = vec![];
    for i in 0..20 {
        let r = guesser
            .get(format!("{url}/v1/providers"))
            .bearer_auth(format!("wrong-token-{i:04}-0123456789"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .is_ok());
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // The dashboard's sign-in shares the budget of the address.
    let (cookie, csrf) = signin_form(&guesser, &url).await;
    let signin = guesser
        .post(format!("{url}/ui/signin"))
        .header(COOKIE, cookie)
        .form(&[("token", "wrong-token-signin-0123456789"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), 429);
    let right = guesser
        .get(format!("{url}/v1/providers"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let elsewhere = client_from("127.0.0.3")
        .get(format!("{url}/v1/providers"))
        .bearer_auth("wrong-token-elsewhere-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 401);

    let text = std::fs::read_to_string(&log).unwrap();
    let audit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("offload::audit"))
        .collect();
    assert!(audit.len() >= 21, "{} audit lines:\n{text}", audit.len());
    assert!(audit.iter().any(|l| l.contains("127.0.0.2")), "{text}");
    assert!(
        !text.contains("wrong-token"),
        "a token reached the log:\n{text}"
    );
}

/// The CSRF token of a fresh sign-in form, and the cookie that goes with it.
async fn signin_form(http: &reqwest::Client, base: &str) -> (String, String) {
    let r = http.get(format!("{base}/ui/signin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let page = r.text().await.unwrap();
    let csrf = regex::Regex::new(r#"name="csrf" value="([^"]+)""#)
        .unwrap()
        .captures(&page)
        .expect("the sign-in form has a CSRF token")[1]
        .to_string();
    (cookie, csrf)
}

/// The session cookie a sign-in answer sets.
fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("offload_session=") && c.len() > "offload_session=".len())
}

/// Whether `cookie` opens the jobs page (rather than being sent to sign in).
async fn signed_in(http: &reqwest::Client, base: &str, cookie: &str) -> bool {
    let r = http
        .get(format!("{base}/ui/jobs"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        200 => true,
        303 => {
            assert_eq!(r.headers()[LOCATION], "/ui/signin");
            false
        }
        other => panic!("the jobs page answered {other}"),
    }
}

#[tokio::test]
async fn signin_needs_the_forms_csrf_token_and_the_cookie_is_a_session_not_the_token() {
    let gw = Gateway::start(SIM).await;
    let http = client_from("127.0.0.1");
    // A page elsewhere posting a token: no CSRF token, no session.
    let forged = http
        .post(format!("{}/ui/signin", gw.url))
        .header("origin", "https://elsewhere.example")
        .form(&[("token", TOKEN_A)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(session_cookie(&forged).is_none());

    let (cookie, csrf) = signin_form(&http, &gw.url).await;
    let r = http
        .post(format!("{}/ui/signin", gw.url))
        .header(COOKIE, &cookie)
        .form(&[("token", TOKEN_A), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = session_cookie(&r).expect("a session cookie");
    use base64::Engine as _;
    let value = session.trim_start_matches("offload_session=");
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .unwrap_or_default();
    assert!(!value.contains(TOKEN_A) && decoded != TOKEN_A.as_bytes());
    assert!(signed_in(&http, &gw.url, &session).await);
}

#[tokio::test]
async fn signout_revokes_the_session_and_sessions_expire() {
    let gw = Gateway::start(SIM).await;
    let http = client_from("127.0.0.1");
    let sign_in = || async {
        let (cookie, csrf) = signin_form(&http, &gw.url).await;
        let r = http
            .post(format!("{}/ui/signin", gw.url))
            .header(COOKIE, &cookie)
            .form(&[("token", TOKEN_A), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        session_cookie(&r).expect("a session cookie")
    };
    let session = sign_in().await;
    let page = http
        .get(format!("{}/ui/jobs", gw.url))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = regex::Regex::new(r#"name="csrf" value="([^"]+)""#)
        .unwrap()
        .captures(&page)
        .unwrap()[1]
        .to_string();
    let out = http
        .post(format!("{}/ui/signout", gw.url))
        .header(COOKIE, &session)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    // The cookie replayed after sign-out opens nothing.
    assert!(!signed_in(&http, &gw.url, &session).await);

    // Another session ends by itself after session_seconds.
    let session = sign_in().await;
    assert!(signed_in(&http, &gw.url, &session).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while signed_in(&http, &gw.url, &session).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A gateway whose tokens come from `auth.tokens_file` (checked every `check` seconds),
/// which holds tenant a's token at first, in the Secret's form.
struct FileGateway {
    url: String,
    tokens: std::path::PathBuf,
    log: std::path::PathBuf,
    server: Binary,
    _dir: tempfile::TempDir,
}

impl FileGateway {
    async fn start(check: u64) -> FileGateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tokens = dir.path().join("tokens");
        write_tokens(&tokens, &format!(r#"[{{token = "{TOKEN_A}", tenant = "a"}}]"#));
        let config = dir.path().join("offload.toml");
        std::fs::write(
            &config,
            format!(
                r#"
listen = "127.0.0.1:{port}"
[store]
path = "{db}"
synchronous_full = false
[auth]
tokens_file = "{tokens}"
tokens_file_check_seconds = {check}
[providers.sim]
kind = "sim"
"#,
                db = dir.path().join("offload.db").display(),
                tokens = tokens.display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("serve.log");
        let server = Binary::start_with(&config, &log, &[("OFFLOAD_LOG", "info")]);
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&reqwest::Client::new(), &url, &log).await;
        FileGateway { url, tokens, log, server, _dir: dir }
    }

    /// The status of `GET /v1/providers` with `token`.
    async fn status(&self, token: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{}/v1/providers", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Waits until `token` is answered `status`; panics with the log after 20 s.
    async fn wait_status(&self, token: &str, status: u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.status(token).await != status {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a token was never answered {status}; the log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Replaces the file whole, as the kubelet does a mounted Secret (a new file renamed over
/// the old), so a reader never sees half of it.
fn write_tokens(path: &std::path::Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// Rotating tokens without a restart: a token removed from `auth.tokens_file` is refused
/// from then on, its dashboard session ends with it, a new one works; a file with a
/// mistake keeps the tokens in force and the log says why (never a token).
#[tokio::test]
async fn a_token_removed_from_the_tokens_file_stops_working_and_its_sessions_end() {
    let gw = FileGateway::start(1).await;
    assert_eq!(gw.status(TOKEN_A).await, 200);
    assert_eq!(gw.status(TOKEN_B).await, 401);
    let http = client_from("127.0.0.1");
    let (cookie, csrf) = signin_form(&http, &gw.url).await;
    let r = http
        .post(format!("{}/ui/signin", gw.url))
        .header(COOKIE, &cookie)
        .form(&[("token", TOKEN_A), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let session = session_cookie(&r).expect("a session cookie");
    assert!(signed_in(&http, &gw.url, &session).await);

    // A removed, B added: B works and A is refused, its session too.
    write_tokens(
        &gw.tokens,
        &format!("[[tokens]]\ntoken = \"{TOKEN_B}\"\ntenant = \"b\"\n"),
    );
    gw.wait_status(TOKEN_B, 200).await;
    assert_eq!(gw.status(TOKEN_A).await, 401);
    assert!(!signed_in(&http, &gw.url, &session).await);

    // A file with a mistake (a token too short) keeps B, and the log names the key.
    write_tokens(&gw.tokens, r#"[{token = "too-short", tenant = "a"}]"#);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !gw.log_text().contains("tokens[0].token must have at least 16 characters") {
        assert!(tokio::time::Instant::now() < deadline, "no refusal logged:\n{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.status(TOKEN_B).await, 200);
    assert_eq!(gw.status("too-short").await, 401);
    // One that is not TOML at all, the same.
    write_tokens(&gw.tokens, "[{token = \"");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while gw.log_text().matches("the tokens file was not taken").count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no refusal logged:\n{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.status(TOKEN_B).await, 200);

    let log = gw.log_text();
    for token in [TOKEN_A, TOKEN_B] {
        assert!(!log.contains(token), "a token reached the log:\n{log}");
    }
    drop(gw.server);
}

/// SIGHUP reads the tokens file at once, however long till its next check; its tokens'
/// admin flags count.
#[tokio::test]
async fn sighup_reads_the_tokens_file_again() {
    let gw = FileGateway::start(3600).await;
    assert_eq!(gw.status(TOKEN_B).await, 401);
    write_tokens(
        &gw.tokens,
        &format!(
            r#"[{{token = "{TOKEN_A}", tenant = "a"}}, {{token = "{TOKEN_B}", tenant = "b", admin = true}}]"#
        ),
    );
    let pid = gw.server.child.id().to_string();
    let hup = std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(hup.success());
    gw.wait_status(TOKEN_B, 200).await;
    assert_eq!(gw.status(TOKEN_A).await, 200);
    assert!(gw.log_text().contains("read the tokens file again"), "{}", gw.log_text());
    // The file's admin flag holds as `auth.tokens`' does: only B may remove budgets.
    let delete = |token: &'static str| {
        reqwest::Client::new()
            .delete(format!("{}/v1/budgets?tenant=nobody", gw.url))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(delete(TOKEN_B).await.unwrap().status(), 404);
    assert_eq!(delete(TOKEN_A).await.unwrap().status(), 403);
}

/// The dashboard's address with or without its trailing slash leads to the jobs page
/// (through sign-in), not to the API's JSON 404.
#[tokio::test]
async fn the_dashboard_answers_with_and_without_a_trailing_slash() {
    let gw = Gateway::start(SIM).await;
    let http = client_from("127.0.0.1");
    for path in ["/ui", "/ui/"] {
        let r = http.get(format!("{}{path}", gw.url)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()[LOCATION], "/ui/jobs", "{path}");
    }
}

/// A token removed while its requests hold on ends them: a long-poll is answered 401 and a
/// followed log ends at once, not when their wait would have run out.
#[tokio::test]
async fn a_removed_token_ends_its_long_polls_and_log_followers() {
    let gw = FileGateway::start(3600).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/jobs", gw.url))
        .bearer_auth(TOKEN_A)
        .json(&serde_json::json!({"image": "a", "command": ["true"], "provider_options": {"sim": {"run_ms": 600000}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    // Running, so that the long-poll below has no change to answer until the job ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job: serde_json::Value = http
            .get(format!("{}/v1/jobs/{id}", gw.url))
            .bearer_auth(TOKEN_A)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["state"] == "running" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let long_poll = tokio::spawn(
        http.get(format!("{}/v1/jobs/{id}?wait=120", gw.url))
            .bearer_auth(TOKEN_A)
            .send(),
    );
    let follow = http
        .get(format!("{}/v1/jobs/{id}/logs?follow=true", gw.url))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let followed = tokio::spawn(follow.bytes());

    write_tokens(&gw.tokens, &format!("[[tokens]]\ntoken = \"{TOKEN_B}\"\ntenant = \"b\"\n"));
    let pid = gw.server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        (long_poll.await.unwrap().unwrap(), followed.await.unwrap())
    })
    .await
    .unwrap_or_else(|_| panic!("a request of the removed token still holds on; the log:\n{}", gw.log_text()));
    let (polled, _log) = ended;
    assert_eq!(polled.status(), 401);
    let problem: serde_json::Value = polled.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("no longer accepted"), "{problem}");
}

//! Starts a gateway for a test, in this process or as the real binary, and talks to it.

#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

pub const TOKEN_A: &str = "tenant-a-token-0123456789";
pub const TOKEN_B: &str = "tenant-b-token-0123456789";

/// Config text for a test gateway in `dir` listening on a free port; `providers` is
/// appended as TOML.
pub fn config_text(dir: &std::path::Path, listen: &str, providers: &str) -> String {
    config_text_sync(dir, listen, "false", providers)
}

fn config_text_sync(
    dir: &std::path::Path,
    listen: &str,
    synchronous_full: &str,
    providers: &str,
) -> String {
    format!(
        r#"
listen = "{listen}"
body_limit_bytes = 65536
[store]
path = "{db}"
synchronous_full = {synchronous_full}
[engine]
release_after_seconds = 1
orphan_sweep_seconds = 1
queued_sweep_seconds = 1
[[auth.tokens]]
token = "{TOKEN_A}"
tenant = "a"
[[auth.tokens]]
token = "{TOKEN_B}"
tenant = "b"
{providers}
"#,
        db = dir.join("offload.db").display(),
    )
}

pub struct Gateway {
    pub url: String,
    pub http: reqwest::Client,
    pub server: Option<offload::server::Server>,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    pub async fn start(providers: &str) -> Gateway {
        Gateway::start_with("false", providers).await
    }

    /// Starts a gateway with `store.synchronous_full` set as given (`"true"` or `"false"`).
    pub async fn start_with(synchronous_full: &str, providers: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let providers = providers.replace("$DIR", &dir.path().display().to_string());
        let text = config_text_sync(dir.path(), "127.0.0.1:0", synchronous_full, &providers);
        let config = offload::config::Config::from_toml(&text).unwrap();
        let server = offload::server::Server::start(config).await.unwrap();
        Gateway {
            url: format!("http://{}", server.addr),
            http: reqwest::Client::new(),
            server: Some(server),
            dir,
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token)
    }

    pub async fn submit(&self, token: &str, spec: Value) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::POST, "/v1/jobs", token)
            .json(&spec)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::GET, path, token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls the job until `done(job)`; panics after `secs`.
    pub async fn wait_for(
        &self,
        token: &str,
        id: &str,
        secs: u64,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, job) = self.get(token, &format!("/v1/jobs/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} not {what} after {secs} s: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_terminal(&self, token: &str, id: &str, secs: u64) -> Value {
        self.wait_for(token, id, secs, "terminal", |job| job["terminal"] == true)
            .await
    }

    pub async fn wait_state(&self, token: &str, id: &str, state: &str, secs: u64) -> Value {
        self.wait_for(token, id, secs, state, |job| job["state"] == state)
            .await
    }
}

impl Gateway {
    /// The job's event reasons, oldest first.
    pub async fn event_reasons(&self, token: &str, id: &str) -> Vec<String> {
        let (status, events) = self.get(token, &format!("/v1/jobs/{id}/events")).await;
        assert_eq!(status, 200, "{events}");
        events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Polls the job's events until one contains `needle`; the reasons then.
    pub async fn wait_for_event(
        &self,
        token: &str,
        id: &str,
        secs: u64,
        needle: &str,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let reasons = self.event_reasons(token, id).await;
            if reasons.iter().any(|r| r.contains(needle)) {
                return reasons;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} has no event with {needle:?} after {secs} s: {reasons:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/metrics`, as text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of a Prometheus sample whose name and labels start with `prefix`
    /// (`offload_provider_calls_total{call="logs",provider="x"`), or 0 when absent.
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

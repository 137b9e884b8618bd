//! Starts a gateway for a test, in this process or as the real binary, and talks to it.

#![allow(dead_code)]

pub mod exported;

use std::time::Duration;

use serde_json::Value;

pub const TOKEN_A: &str = "tenant-a-token-0123456789";
pub const TOKEN_B: &str = "tenant-b-token-0123456789";
/// An admin's token (`admin = true`), of tenant `ops`: it may set every tenant's budgets.
pub const TOKEN_ADMIN: &str = "admin-token-0123456789abc";

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
    let store = format!(
        "path = \"{}\"\nsynchronous_full = {synchronous_full}",
        dir.join("offload.db").display()
    );
    config_with_store(listen, &store, providers)
}

/// The key every test replica seals secrets with.
pub const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Config text for a replica on the PostgreSQL database at `url`, with a 3 s lease.
pub fn config_text_pg(listen: &str, url: &str, providers: &str) -> String {
    let store = format!("url = \"{url}\"\nsecret_key = \"{SECRET_KEY}\"\nlease_seconds = 3");
    config_with_store(listen, &store, providers)
}

fn config_with_store(listen: &str, store: &str, providers: &str) -> String {
    format!(
        r#"
listen = "{listen}"
body_limit_bytes = 65536
[store]
{store}
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
[[auth.tokens]]
token = "{TOKEN_ADMIN}"
tenant = "ops"
admin = true
{providers}
"#
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

    /// Starts a gateway with `store.synchronous_full` set as given (`"true"` or `"false"`),
    /// on SQLite; or, with `OFFLOAD_TEST_STORE=postgres`, on a fresh schema of the
    /// PostgreSQL database at DATABASE_URL, so that a suite runs against either store.
    pub async fn start_with(synchronous_full: &str, providers: &str) -> Gateway {
        Gateway::start_clocked(synchronous_full, providers, offload::clock::Clock::system()).await
    }

    /// [`Gateway::start_with`] with budgets' days and months read from `clock`.
    pub async fn start_clocked(
        synchronous_full: &str,
        providers: &str,
        clock: offload::clock::Clock,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let text = match std::env::var("OFFLOAD_TEST_STORE").as_deref() {
            Ok("postgres") => {
                let (_admin, _schema, url) = pg::fresh_schema().await;
                config_text_pg("127.0.0.1:0", &url, providers)
            }
            Ok("sqlite") | Err(_) => {
                config_text_sync(dir.path(), "127.0.0.1:0", synchronous_full, providers)
            }
            Ok(other) => panic!("OFFLOAD_TEST_STORE={other:?}: use sqlite or postgres"),
        };
        Gateway::start_text(dir, &text, clock).await
    }

    /// A gateway on the config `text`, in which `$DIR` names `dir`.
    pub async fn start_text(
        dir: tempfile::TempDir,
        text: &str,
        clock: offload::clock::Clock,
    ) -> Gateway {
        let text = text.replace("$DIR", &dir.path().display().to_string());
        let config = offload::config::Config::from_toml(&text).unwrap();
        let server = offload::server::Server::start_with_clock(config, clock)
            .await
            .unwrap();
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

    /// Waits until every configured provider's health check has passed (a provider is
    /// unhealthy until its first check, and routing ranks healthy providers first).
    pub async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, providers) = self.get(TOKEN_A, "/v1/providers").await;
            assert_eq!(status, 200, "{providers}");
            if providers
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["healthy"] == true)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "providers not healthy: {providers}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Submits `spec` as tenant A, which must be accepted; the job's id.
    pub async fn submitted(&self, spec: Value) -> String {
        let (status, job) = self.submit(TOKEN_A, spec).await;
        assert_eq!(status, 201, "{job}");
        job["id"].as_str().unwrap().to_string()
    }

    /// Signs in to the dashboard with `token`, as a browser does (the form's CSRF token
    /// and its cookie); the session cookie, as a `Cookie` header's value.
    pub async fn dashboard_session(&self, token: &str) -> String {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let first_cookie = |r: &reqwest::Response| {
            r.headers()[reqwest::header::SET_COOKIE]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string()
        };
        let form = http
            .get(format!("{}/ui/signin", self.url))
            .send()
            .await
            .unwrap();
        let signin_cookie = first_cookie(&form);
        let page = form.text().await.unwrap();
        let csrf = page
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the sign-in form has a CSRF token")
            .to_string();
        let signed_in = http
            .post(format!("{}/ui/signin", self.url))
            .header(reqwest::header::COOKIE, signin_cookie)
            .form(&[("token", token), ("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), 303);
        first_cookie(&signed_in)
    }

    /// Waits for tenant A's job to be launched; its workload's `provider_ref`.
    pub async fn launched(&self, id: &str) -> String {
        let job = self
            .wait_for(TOKEN_A, id, 20, "launched", |j| {
                j["provider_ref"].is_string()
            })
            .await;
        job["provider_ref"].as_str().unwrap().to_string()
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
        sample(&self.metrics_text().await, prefix)
    }
}

/// The sum of the samples in Prometheus text `metrics` whose name and labels start with
/// `prefix`, or 0 when there are none.
pub fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A real `offload serve` process, killed when dropped.
pub struct Binary {
    pub child: std::process::Child,
}

impl Binary {
    /// Starts `offload serve --config CONFIG`, its stderr appended to `log`, with `env` set.
    pub fn start(config: &std::path::Path, log: &std::path::Path) -> Binary {
        Binary::start_with(config, log, &[])
    }

    pub fn start_with(
        config: &std::path::Path,
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Binary {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_offload"))
            .args(["serve", "--config"])
            .arg(config)
            .env("OFFLOAD_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting offload serve");
        Binary { child }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `url` answers `/readyz` with 200; panics with the server's log after 10 s.
/// Waits until `ok()` (a test peer's state, say); panics after 20 s, naming `what`.
pub async fn until(what: &str, ok: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_ready(http: &reqwest::Client, url: &str, log: &std::path::Path) {
    for _ in 0..200 {
        if http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "offload serve did not become ready; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL database for the tests that need one: DATABASE_URL, which the test command
/// sets to a throwaway server (tests/pg.sh), with a fresh schema per test.
pub mod pg {
    use uuid::Uuid;

    pub fn database_url() -> String {
        std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "DATABASE_URL is not set: the PostgreSQL store's tests need a server. Run them as \
                 `tests/pg.sh run cargo test --workspace --test store_contract` (or another suite), which starts a \
                 throwaway PostgreSQL, or set DATABASE_URL to a database they may create schemas in"
            )
        })
    }

    /// `url` with its connections' search_path set to `schema`.
    pub fn with_schema(url: &str, schema: &str) -> String {
        let joiner = if url.contains('?') { '&' } else { '?' };
        format!("{url}{joiner}options=-c%20search_path%3D{schema}")
    }

    pub async fn admin_client(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to DATABASE_URL {url}: {e:?}"));
        tokio::spawn(connection);
        client
    }

    /// A new, empty schema, an admin connection, and a URL whose connections use the schema.
    pub async fn fresh_schema() -> (tokio_postgres::Client, String, String) {
        let url = database_url();
        let admin = admin_client(&url).await;
        let schema = format!("test_{}", Uuid::now_v7().simple());
        admin
            .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .await
            .unwrap();
        let url = with_schema(&url, &schema);
        (admin, schema, url)
    }
}

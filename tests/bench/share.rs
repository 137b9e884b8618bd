//! Spend and share at scale, against the real `offload serve` (release build, sim provider,
//! `synchronous_full` on), for each store (PostgreSQL too when DATABASE_URL names one, as
//! `tests/pg.sh run` sets it):
//!
//! - durable submits (`POST /v1/jobs`) with 100 budgets configured, two of which hold each
//!   job (its tenant's, and its `dag_id`'s), against the same gateway with none: budgets
//!   are charged in the store at each job's dispatch, so what they cost shows here;
//! - fair share: tenant b's one job, sent after tenant a's burst of jobs for a provider of
//!   8 places whose jobs run 500 ms: how long from its submit to its start.
//!
//! Prints the figures and writes them to BENCHMARKS.md's "Budgets and fair share"; asserts
//! nothing. Under `cargo test` it is a smoke run (small figures, nothing written).
//! `cargo bench --bench share [-- SECONDS [BURST]]` (defaults 5 s and 100,000 jobs).

#[path = "../common/mod.rs"]
mod common;
mod harness;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{TOKEN_A, TOKEN_B};
use harness::{hammer, CLIENTS};
use serde_json::{json, Value};

/// 8 places, jobs of 500 ms.
const NARROW: &str = "[providers.sim]\nkind = \"sim\"\nstart_ms = 0\nrun_ms = 500\nmax_concurrency = 8\n\
                      poll_interval_ms = 100\n";

/// 100 budgets of tenant a, none of which refuses anything: one for the tenant, 99 for
/// `dag_id` values, half of them refusing at submit and half holding jobs at dispatch.
fn budgets() -> String {
    let mut text = "[[budgets]]\ntenant = \"a\"\nusd_per_month = 1000000000\n".to_string();
    for i in 0..99 {
        let action = if i % 2 == 0 { "refuse" } else { "wait" };
        write!(
            text,
            "[[budgets]]\ntenant = \"a\"\nlabel = \"dag_id=bench-{i}\"\nusd_per_day = 1000000\naction = \"{action}\"\n"
        )
        .unwrap();
    }
    text
}

/// Durable submits of jobs of `dag_id=bench-7`, per second.
async fn submits(base: &str, seconds: f64) -> harness::Load {
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let spec = json!({"image": "img", "provider": "sim", "labels": {"dag_id": "bench-7"}});
    let base = base.to_string();
    hammer(seconds, move |_| {
        let (h, b, s) = (http.clone(), base.clone(), spec.clone());
        async move {
            let r = h.post(format!("{b}/v1/jobs")).bearer_auth(TOKEN_A).json(&s).send().await.unwrap();
            assert_eq!(r.status(), 201);
            r.bytes().await.unwrap();
        }
    })
    .await
}

/// Tenant a's burst of `burst` jobs, then tenant b's one: how long a's burst took to send,
/// and b's job from its submit to its start.
async fn behind_a_burst(base: &str, burst: usize) -> (Duration, f64) {
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let spec = json!({"image": "img", "provider": "sim"});
    let started = Instant::now();
    harness::burst(&http, base, "/v1/jobs", TOKEN_A, &spec, burst).await;
    let sending = started.elapsed();
    let r = http.post(format!("{base}/v1/jobs")).bearer_auth(TOKEN_B).json(&spec).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let at = |job: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(job[field].as_str().unwrap()).unwrap()
    };
    let submitted = at(&job, "created_at");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let job: Value = http
            .get(format!("{base}/v1/jobs/{id}?wait=60"))
            .bearer_auth(TOKEN_B)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["started_at"].is_string() {
            let waited = at(&job, "started_at") - submitted;
            return (sending, waited.num_milliseconds() as f64 / 1e3);
        }
        assert!(Instant::now() < deadline, "tenant b's job never started: {job}");
    }
}

#[tokio::main]
async fn main() {
    let harness::Args { benchmark, seconds, burst } = harness::args();
    let (stores, unmeasured) = harness::stores();
    let mut lines = vec![];
    for (store, url) in stores {
        let url = url.as_deref();
        let variants = [
            ("durable submits, no budgets", harness::ROOMY.to_string()),
            ("durable submits, 100 budgets", format!("{}{}", harness::ROOMY, budgets())),
        ];
        let mut rates = harness::in_turn(ROUNDS, url, &variants, |_, base| async move { submits(&base, seconds).await }).await;
        let spread = |loads: &[harness::Load]| {
            format!("{:.0}-{:.0}/s", loads[0].per_second, loads[loads.len() - 1].per_second)
        };
        let (none, with) = (harness::median(&mut rates[0]), harness::median(&mut rates[1]));
        lines.push(format!(
            "{store}: durable submits with 100 budgets (two holding each job) {:.0}/s (p99 {:.1} ms; runs {}; \
             server CPU {:.0} µs a submit), without any {:.0}/s (p99 {:.1} ms; runs {}; {:.0} µs): {:.2} of the rate \
             without (medians of {ROUNDS} runs each, taken in turn)",
            with.per_second, with.p99_ms, spread(&rates[1]), with.server_cpu_us,
            none.per_second, none.p99_ms, spread(&rates[0]), none.server_cpu_us,
            with.per_second / none.per_second
        ));

        let dir = tempfile::tempdir().unwrap();
        let (server, base) = harness::serve(dir.path(), url, NARROW).await;
        let (sending, waited) = behind_a_burst(&base, burst).await;
        lines.push(format!(
            "{store}: tenant b's one job, sent after tenant a's {burst} jobs (sent in {:.1} s) for 8 places \
             of 500 ms jobs, started {waited:.2} s after its submit",
            sending.as_secs_f64()
        ));
        server.kill9();
        println!("{}", lines[lines.len() - 2..].join("\n"));
    }
    lines.extend(unmeasured);
    harness::report(benchmark, "share", HEADER, seconds, &lines);
}

const HEADER: &str = "## Budgets and fair share";

/// Runs of each variant of the submit rate.
const ROUNDS: usize = 3;

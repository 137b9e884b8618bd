//! GA4GH TES at scale, against the real `offload serve` (release build, sim provider,
//! `synchronous_full` on), for each store (PostgreSQL too when DATABASE_URL names one, as
//! `tests/pg.sh run` sets it):
//!
//! - creating tasks (`POST /ga4gh/tes/v1/tasks`, one executor) against durable submits of
//!   the same container (`POST /v1/jobs`), each on a fresh gateway and database, in turn;
//!   the issue asks for at least half the rate;
//! - a page of `GET /ga4gh/tes/v1/tasks?view=MINIMAL` (256 tasks, the default) with
//!   100,000 tasks in the store, at rest (the server under a tenth of a core): the first
//!   page, and one from the middle of the list (by the token of the page before); the
//!   issue asks for under 10 ms.
//!
//! Prints the figures and writes them to BENCHMARKS.md's "GA4GH TES"; asserts nothing.
//! Without `--bench` it is a smoke run (small figures, nothing written).
//! `cargo bench --bench tes [-- SECONDS [TASKS]]` (defaults 5 s and 100,000 tasks).

#[path = "../common/mod.rs"]
mod common;
mod harness;

use std::time::{Duration, Instant};

use common::TOKEN_A;
use harness::{hammer, CLIENTS};
use serde_json::{json, Value};

const HEADER: &str = "## GA4GH TES";

/// Runs of each rate, taken in turn.
const ROUNDS: usize = 3;

/// Page reads timed at each place in the list.
const READS: usize = 200;

/// The same container, as a job and as a task.
fn job() -> Value {
    json!({"image": "img", "command": ["true"], "provider": "sim"})
}

fn task() -> Value {
    json!({"name": "bench", "executors": [{"image": "img", "command": ["true"]}]})
}

/// Creates (or submits) `body` at `path`, per second.
async fn rate(base: &str, path: &str, body: Value, seconds: f64) -> harness::Load {
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let url = format!("{base}{path}");
    hammer(seconds, move |_| {
        let (h, u, b) = (http.clone(), url.clone(), body.clone());
        async move {
            let r = h.post(u).bearer_auth(TOKEN_A).json(&b).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.bytes().await.unwrap();
        }
    })
    .await
}

/// The p50 and p99 of `READS` reads, one at a time, of the MINIMAL page at `query`, in ms;
/// and the page's size.
async fn page(http: &reqwest::Client, base: &str, query: &str) -> (f64, f64, usize) {
    let url = format!("{base}/ga4gh/tes/v1/tasks?view=MINIMAL{query}");
    let mut took = vec![];
    let mut size = 0;
    for _ in 0..READS {
        let started = Instant::now();
        let r = http.get(&url).bearer_auth(TOKEN_A).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        took.push(started.elapsed());
        size = body["tasks"].as_array().map_or(0, Vec::len);
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(took[took.len() / 2]), harness::p99(&took), size)
}

/// The query of the page after `pages` pages of MINIMAL tasks: `&page_token=...`, or
/// nothing for the first.
async fn page_after(http: &reqwest::Client, base: &str, pages: usize) -> String {
    let mut query = String::new();
    for _ in 0..pages {
        let url = format!("{base}/ga4gh/tes/v1/tasks?view=MINIMAL{query}");
        let body: Value = http.get(url).bearer_auth(TOKEN_A).send().await.unwrap().json().await.unwrap();
        query = format!("&page_token={}", body["next_page_token"].as_str().expect("a next page"));
    }
    query
}

#[tokio::main]
async fn main() {
    let harness::Args { benchmark, seconds, burst: tasks } = harness::args();
    let (stores, unmeasured) = harness::stores();
    let mut lines = vec![];
    for (store, url) in stores {
        let url = url.as_deref();
        let variants = [
            ("durable submits (POST /v1/jobs)", harness::ROOMY.to_string()),
            ("TES tasks (POST /ga4gh/tes/v1/tasks)", harness::ROOMY.to_string()),
        ];
        let mut rates = harness::in_turn(ROUNDS, url, &variants, |i, base| async move {
            let (path, body) = [("/v1/jobs", job()), ("/ga4gh/tes/v1/tasks", task())][i].clone();
            rate(&base, path, body, seconds).await
        })
        .await;
        let (jobs, created) = (harness::median(&mut rates[0]), harness::median(&mut rates[1]));
        lines.push(format!(
            "{store}: TES tasks created {:.0}/s (p99 {:.1} ms), durable `/v1` submits of the same container {:.0}/s \
             (p99 {:.1} ms): {:.2} of the rate (medians of {ROUNDS} runs each, taken in turn)",
            created.per_second, created.p99_ms, jobs.per_second, jobs.p99_ms,
            created.per_second / jobs.per_second
        ));

        let dir = tempfile::tempdir().unwrap();
        let (server, base) = harness::serve(dir.path(), url, harness::ROOMY).await;
        let http = reqwest::Client::new();
        let started = Instant::now();
        harness::burst(&http, &base, "/ga4gh/tes/v1/tasks", TOKEN_A, &task(), tasks).await;
        let filled = started.elapsed();
        // Read at rest, not racing the dispatch of the burst.
        harness::until_quiet(server.child.id()).await;
        let (first_p50, first_p99, first_size) = page(&http, &base, "").await;
        let middle = page_after(&http, &base, tasks / 256 / 2).await;
        let (mid_p50, mid_p99, mid_size) = page(&http, &base, &middle).await;
        lines.push(format!(
            "{store}: a page of `GET /ga4gh/tes/v1/tasks?view=MINIMAL` ({first_size} tasks) with {tasks} in the store \
             (created in {:.1} s): first page p50 {first_p50:.2} ms, p99 {first_p99:.2} ms; a page from the middle \
             ({mid_size} tasks) p50 {mid_p50:.2} ms, p99 {mid_p99:.2} ms ({READS} reads of each, one at a time)",
            filled.as_secs_f64()
        ));
        server.kill9();
        println!("{}", lines[lines.len() - 2..].join("\n"));
    }
    lines.extend(unmeasured);
    harness::report(benchmark, "tes", HEADER, seconds, &lines);
}

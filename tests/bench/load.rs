//! Load benchmark against the real `offload serve` binary (release build, sim provider,
//! `synchronous_full` on), with a Rust HTTP client on its own runtime as the load
//! generator, on the same cores. In one run, for each store (SQLite; PostgreSQL too when
//! DATABASE_URL names one, as `tests/pg.sh run` sets it):
//!
//! - the `/healthz` ceiling of this HTTP stack on this machine;
//! - status reads (`GET /v1/jobs/{id}`, authenticated) and their ratio to the ceiling;
//! - durable submits (`POST /v1/jobs`);
//! - dispatch: a burst of submits to a sim provider with room for all, and how long until
//!   every one is `starting` or later;
//! - the server's resident memory per live job;
//! - long-poll fan-out: the CPU that 10,000 open long-polls cost while nothing changes,
//!   and how soon each answers after its own job changes;
//! - reads, lists, cost reports and `/metrics` before and after a million ended jobs are
//!   added to the store (`ended`);
//!
//! and the cloud calls per job on ECS, Kubernetes and ACI against their test peers (`calls`).
//!
//! Prints the figures and writes them to BENCHMARKS.md; asserts nothing. Under `cargo
//! test` it is a smoke run (see `main`).
//! `cargo bench --bench load [-- SECONDS [BURST]]` (defaults 5 s and 100,000 jobs).

mod calls;
mod ended;
mod harness;
#[path = "../common/mod.rs"]
mod common;
#[path = "../../providers/aci/tests/fake_arm/mod.rs"]
mod fake_arm;
#[path = "../../providers/kubernetes/tests/fake/mod.rs"]
mod fake_kube;
#[path = "../../providers/cloudrun/tests/fake_run/mod.rs"]
mod fake_run;
#[path = "../../providers/ecs/tests/common/mod.rs"]
mod moto;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, wait_ready, Binary, SECRET_KEY, TOKEN_A};
use harness::{config, hammer, Load, CLIENTS};
use serde_json::{json, Value};

/// A sim provider with room for every job, whose jobs take an hour to start (so all stay
/// live), and room for the long-poll fan-out's connections and waiters.
const SIM: &str = "[providers.sim]\nkind = \"sim\"\nstart_ms = 3600000\nmax_concurrency = 1000000\npoll_interval_ms = 1000\n\
                   [http]\nmax_connections = 12000\nmax_connections_per_address = 12000\nmax_waiters_per_tenant = 20000\n";

struct Figure {
    what: String,
    load: Load,
}

/// A page of tenant a's jobs.
async fn jobs(http: &reqwest::Client, base: &str, query: &str) -> Value {
    let r = http
        .get(format!("{base}/v1/jobs?{query}"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

/// Waits until no job is queued (every one dispatched), at most five minutes.
async fn until_dispatched(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let page = jobs(http, base, "state=queued&limit=1").await;
        if page["jobs"].as_array().unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Concurrent long-polls in the fan-out figure.
const LONG_POLLS: usize = 10_000;
/// Of those, how many jobs are changed (cancelled), one at a time.
const CHANGED: usize = 100;

/// Long-poll fan-out: the server's CPU at rest; then one `?wait=30` on each of `ids` at
/// once, and the server's CPU while nothing changes; then [`CHANGED`] of those jobs cancelled one after another, each
/// long-poll's answer timed from its own job's cancel, and the others left waiting.
async fn long_polls(base: &str, pid: u32, ids: &[String]) -> String {
    let http = reqwest::Client::builder().pool_max_idle_per_host(ids.len()).build().unwrap();
    // What the server spends at rest with these live jobs (its pollers), for comparison,
    // once done with the burst's backlog.
    harness::until_quiet(pid).await;
    let (before, at) = (harness::cpu(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let resting = (harness::cpu(pid) - before).as_secs_f64() / at.elapsed().as_secs_f64();
    let polls: Vec<_> = ids
        .iter()
        .map(|id| {
            let (h, url) = (http.clone(), format!("{base}/v1/jobs/{id}?wait=30"));
            tokio::spawn(async move {
                let r = h.get(url).bearer_auth(TOKEN_A).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                Instant::now()
            })
        })
        .collect();
    let watched = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(r#"offload_engine_entries{map="watched_jobs"} "#))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as usize
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if watched(&text) >= ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "only {} long-polls open", watched(&text));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (before, at) = (harness::cpu(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = (harness::cpu(pid) - before).as_secs_f64() / at.elapsed().as_secs_f64();

    let (mut latencies, mut after_commit) = (vec![], vec![]);
    let mut polls: Vec<_> = polls.into_iter().map(Some).collect();
    for (n, id) in ids.iter().take(CHANGED).enumerate() {
        let sent = Instant::now();
        let r = http.post(format!("{base}/v1/jobs/{id}/cancel")).bearer_auth(TOKEN_A).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let committed = Instant::now();
        let answered = polls[n].take().unwrap().await.unwrap();
        latencies.push(answered.saturating_duration_since(sent));
        after_commit.push(answered.saturating_duration_since(committed));
    }
    let still: usize = polls.iter().flatten().filter(|p| !p.is_finished()).count();
    for p in polls.into_iter().flatten() {
        p.abort();
    }
    latencies.sort();
    after_commit.sort();
    let ms = |d: &[Duration], at: usize| d[at].as_secs_f64() * 1e3;
    format!(
        "{} concurrent `?wait=30` long-polls: the server used {:.1}% of one core while nothing changed, against {:.1}% at rest without them; {CHANGED} of their jobs cancelled one at a time: each long-poll answered {:.1} ms (median) and {:.1} ms (worst) after its own job's cancel was sent, {:.1} ms and {:.1} ms after the cancel's answer (the change committed), and {still} of the other {} were still waiting",
        ids.len(),
        idle * 100.0,
        resting * 100.0,
        ms(&latencies, CHANGED / 2),
        ms(&latencies, CHANGED - 1),
        ms(&after_commit, CHANGED / 2),
        ms(&after_commit, CHANGED - 1),
        ids.len() - CHANGED,
    )
}

async fn run(store: &str, url: Option<&str>, seconds: f64, burst: usize, ended_jobs: u64) -> (Vec<Figure>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let store_table = match url {
        Some(url) => format!("url = \"{url}\"\nsecret_key = \"{SECRET_KEY}\""),
        None => format!("path = \"{}\"\nsynchronous_full = true", dir.path().join("offload.db").display()),
    };
    let text = config(&listen, &store_table, "", SIM);
    let config = dir.path().join("offload.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("serve.log");
    let server = Binary::start(&config, &log);
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    wait_ready(&http, &base, &log).await;
    let mut figures = vec![];
    let mut notes = vec![];
    let mut record = |what: &str, load: Load| {
        println!(
            "{store:<10} {what:<16} {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  worst second's p99 {:>6.2} ms",
            load.per_second, load.p50_ms, load.p99_ms, load.worst_second_p99_ms
        );
        figures.push(Figure { what: what.into(), load });
    };

    let (h, b) = (http.clone(), base.clone());
    let ceiling = hammer(seconds, move |_| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let r = h.get(format!("{b}/healthz")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    })
    .await;
    record("/healthz", ceiling);

    let spec = json!({"image": "img", "provider": "sim", "labels": {"dag_id": "bench"}});
    let (h, b, s) = (http.clone(), base.clone(), spec.clone());
    let pid = server.child.id();
    let mark = harness::CpuMark::now(pid);
    let submits = hammer(seconds, move |_| {
        let (h, b, s) = (h.clone(), b.clone(), s.clone());
        async move {
            let r = h.post(format!("{b}/v1/jobs")).bearer_auth(TOKEN_A).json(&s).send().await.unwrap();
            assert_eq!(r.status(), 201);
            r.bytes().await.unwrap();
        }
    })
    .await;
    let submitted = submits.requests;
    record("durable submit", submits);
    // Reads are measured with the engine at rest, not racing the dispatch of those jobs:
    // every one dispatched, the newest 500 (the ones read) launched, and the server quiet
    // (the launches' writes of the older ones done too).
    until_dispatched(&http, &base).await;
    harness::until_quiet(pid).await;
    let (all, writer) = mark.per_request(submitted);
    notes.push(format!(
        "{store}: each durable submit took {all:.0} µs of the gateway's CPU (every thread; its dispatch and launch \
         included, counted until the server was quiet){}",
        match url {
            None => format!(", {writer:.0} µs of it on SQLite's writer thread"),
            Some(_) => ", PostgreSQL's own processes not counted".to_string(),
        }
    ));
    let deadline = Instant::now() + Duration::from_secs(300);
    let page = loop {
        let page = jobs(&http, &base, "limit=500").await;
        let launched = page["jobs"].as_array().unwrap().iter().all(|j| j["provider_ref"].is_string());
        if launched || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ids: Arc<Vec<String>> = Arc::new(
        page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect(),
    );
    println!("{store}: measuring status reads");
    let status_reads = || {
        let (h, b, ids) = (http.clone(), base.clone(), ids.clone());
        hammer(seconds, move |i| {
            let (h, b, ids) = (h.clone(), b.clone(), ids.clone());
            async move {
                let r = h
                    .get(format!("{b}/v1/jobs/{}", ids[i % ids.len()]))
                    .bearer_auth(TOKEN_A)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        })
    };
    let reads = status_reads().await;
    record("status read", reads);
    notes.push(format!(
        "{store}: status reads at {:.2} of the /healthz ceiling",
        reads.per_second / ceiling.per_second
    ));

    // Dispatch: a burst, then until no job is queued.
    let started = Instant::now();
    let burst_ids = harness::burst(&http, &base, "/v1/jobs", TOKEN_A, &spec, burst).await;
    let submitted = started.elapsed();
    until_dispatched(&http, &base).await;
    let dispatched = started.elapsed();
    let memory = rss(server.child.id());
    // Every job is live: the sim's start takes an hour.
    let live = burst + (submits.per_second * seconds) as usize;
    let line = format!(
        "{store}: a burst of {burst} submits took {:.1} s; every job dispatched {:.1} s after the first ({:.1} s after the last answer): {:.0} dispatched/s; RSS {:.0} MB with {live} live jobs ({:.1} KB each)",
        submitted.as_secs_f64(),
        dispatched.as_secs_f64(),
        (dispatched - submitted).as_secs_f64(),
        burst as f64 / dispatched.as_secs_f64(),
        memory as f64 / 1e6,
        memory as f64 / 1024.0 / live as f64,
    );
    println!("{line}");
    notes.push(line);

    let line = dashboard(&http, &base, live).await;
    println!("{store}: {line}");
    notes.push(format!("{store}: {line}"));

    let line = long_polls(&base, server.child.id(), &burst_ids[..LONG_POLLS.min(burst_ids.len())]).await;
    println!("{store}: {line}");
    notes.push(format!("{store}: {line}"));

    let db_path = dir.path().join("offload.db");
    let db = match url {
        Some(url) => ended::Db::Postgres(url),
        None => ended::Db::Sqlite(&db_path),
    };
    let read = || async {
        let load = status_reads().await;
        (load.per_second, load.p99_ms)
    };
    notes.extend(ended::section(store, db, &base, ended_jobs, read).await);
    server.kill9();
    (figures, notes)
}

/// The dashboard's jobs page (`/ui/jobs`, signed in), newest first and filtered, read one
/// after another with `live` jobs in the store: its p50 and p99.
async fn dashboard(http: &reqwest::Client, base: &str, live: usize) -> String {
    let cookie = dashboard_session(base).await;
    let mut figures = vec![];
    for query in ["", "?state=starting&provider=sim"] {
        let mut took = vec![];
        for _ in 0..200 {
            let started = Instant::now();
            let r = http.get(format!("{base}/ui/jobs{query}")).header("cookie", &cookie).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
            took.push(started.elapsed().as_secs_f64() * 1e3);
        }
        took.sort_by(f64::total_cmp);
        figures.push(format!("`/ui/jobs{query}` p50 {:.1} ms, p99 {:.1} ms", took[100], took[197]));
    }
    format!("the dashboard's jobs page with {live} jobs in the store, 200 reads each: {}", figures.join("; "))
}

/// Signs in to the dashboard as tenant A, as a browser does (the form's CSRF token and its
/// cookie); the session cookie.
async fn dashboard_session(base: &str) -> String {
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
    let form = http.get(format!("{base}/ui/signin")).send().await.unwrap();
    let signin_cookie = first_cookie(&form);
    let page = form.text().await.unwrap();
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-in form has a CSRF token")
        .to_string();
    let signed_in = http
        .post(format!("{base}/ui/signin"))
        .header(reqwest::header::COOKIE, signin_cookie)
        .form(&[("token", TOKEN_A), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    first_cookie(&signed_in)
}

/// The heading of BENCHMARKS.md's hand-written profiles, which a new run keeps.
const PROFILES: &str = "## Profiles";

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too, without it, and
    // then it is a smoke run that keeps the benchmark working: small figures, no cloud
    // calls, nothing written.
    let harness::Args { benchmark, seconds, burst } = harness::args();
    let mut table = String::new();
    let mut notes = vec![];
    let mut stores = vec![("sqlite", None)];
    let pg = match std::env::var("DATABASE_URL") {
        Ok(_) => Some(common::pg::fresh_schema().await.2),
        Err(_) => None,
    };
    if let Some(url) = &pg {
        stores.push(("postgresql", Some(url.as_str())));
    }
    for (store, url) in stores {
        let (figures, n) = run(store, url, seconds, burst, if benchmark { 1_000_000 } else { 1_000 }).await;
        let ceiling = figures[0].load.per_second;
        for Figure { what, load } in figures {
            writeln!(
                table,
                "| {store} | {what} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                load.per_second,
                load.per_second / ceiling,
                load.p50_ms,
                load.p99_ms,
                load.worst_second_p99_ms
            )
            .unwrap();
        }
        notes.extend(n);
    }
    let machine = harness::machine();
    // OFFLOAD_BENCH_NO_CLOUD=1 leaves the cloud calls out (for a quick look at the rest).
    let calls = match std::env::var_os("OFFLOAD_BENCH_NO_CLOUD") {
        _ if !benchmark => return println!("smoke run of the benchmark: done (cargo bench --bench load measures)"),
        Some(_) => String::new(),
        None => calls::section().await,
    };
    let doc = format!(
        "# Benchmarks\n\nWritten by `cargo bench --bench load` (tests/bench/load.rs) on {}, {machine}: the real \
         `offload serve` (release build) with the sim provider and `synchronous_full` on, and a \
         Rust client with {CLIENTS} connections on the same cores (so every figure is a floor). \
         {seconds} s per figure. PostgreSQL: {}.\n\n| store | what | per second | of the /healthz ceiling | p50 ms | p99 ms | worst second's p99 ms |\n|---|---|---|---|---|---|---|\n{table}\n{}\n{calls}",
        chrono::Utc::now().format("%Y-%m-%d"),
        if pg.is_some() { "the throwaway server of `tests/pg.sh run` (fsync and synchronous_commit on)" } else { "not measured (no DATABASE_URL)" },
        notes.iter().map(|n| format!("- {n}\n")).collect::<String>()
    );
    // The profiles below the figures are written by hand (perf, see there): kept as they are.
    let profiles = std::fs::read_to_string("BENCHMARKS.md")
        .ok()
        .and_then(|old| old.find(PROFILES).map(|at| old[at..].to_string()))
        .unwrap_or_default();
    std::fs::write("BENCHMARKS.md", format!("{doc}\n{profiles}")).unwrap();
    println!("wrote BENCHMARKS.md");
}

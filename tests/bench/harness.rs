//! What the benchmarks share: the gateway's configuration in them, and the load generator
//! (`hammer`), a Rust HTTP client of `CLIENTS` connections on the same cores as the server.

// Each benchmark uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{free_port, wait_ready, Binary, SECRET_KEY, TOKEN_A, TOKEN_B};

pub const CLIENTS: usize = 64;

/// A priced sim provider with room for every job, whose jobs take an hour to start (so
/// that all stay live and each is dispatched, and charged, once).
pub const ROOMY: &str = "[providers.sim]\nkind = \"sim\"\nstart_ms = 3600000\nmax_concurrency = 1000000\n\
                     poll_interval_ms = 1000\nprice = { vcpu_hour = 0.05, gb_hour = 0.005 }\n";


/// The gateway's configuration in the benchmark: its defaults but for the `store` and
/// `engine` settings given, one tenant's token, and the providers (and any other tables).
pub fn config(listen: &str, store: &str, engine: &str, providers: &str) -> String {
    format!(
        "listen = \"{listen}\"\n[store]\n{store}\n[engine]\n{engine}\n\
         [[auth.tokens]]\ntoken = \"{TOKEN_A}\"\ntenant = \"a\"\n{providers}"
    )
}

/// A gateway on `store` (SQLite in `dir`, or a fresh schema of the PostgreSQL at `url`)
/// with tenants a and b and `tables`.
pub async fn serve(dir: &std::path::Path, url: Option<&str>, tables: &str) -> (Binary, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let store = match url {
        Some(_) => {
            let url = crate::common::pg::fresh_schema().await.2;
            format!("url = \"{url}\"\nsecret_key = \"{SECRET_KEY}\"")
        }
        None => format!("path = \"{}\"\nsynchronous_full = true", dir.join("offload.db").display()),
    };
    let tables = format!("[[auth.tokens]]\ntoken = \"{TOKEN_B}\"\ntenant = \"b\"\n{tables}");
    let path = dir.join("offload.toml");
    std::fs::write(&path, config(&listen, &store, "", &tables)).unwrap();
    let log = dir.join("serve.log");
    let server = Binary::start(&path, &log);
    let base = format!("http://{listen}");
    wait_ready(&reqwest::Client::new(), &base, &log).await;
    (server, base)
}

/// What `hammer` measured: requests per second, and latency percentiles over the whole run
/// and within its worst second (a stall of tens of milliseconds, such as a map that
/// rehashes every live job at once, shows there and hardly in the whole run's p99).
#[derive(Clone, Copy)]
pub struct Load {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub worst_second_p99_ms: f64,
    /// How many requests were answered.
    pub requests: usize,
    /// The server's CPU (every thread) per request, in µs, the work it set off included:
    /// measured by [`in_turn`] until the server is quiet again, else 0.
    pub server_cpu_us: f64,
    /// The part of it of SQLite's writer thread (0 on PostgreSQL).
    pub writer_cpu_us: f64,
}

/// The 99th percentile of `latencies` (sorted), in ms.
pub fn p99(latencies: &[Duration]) -> f64 {
    latencies[((latencies.len() as f64 * 0.99) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3
}

pub async fn hammer<F, Fut>(seconds: f64, f: F) -> Load
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let f = f.clone();
            tokio::spawn(async move {
                let mut latencies = vec![];
                let mut i = 0;
                while Instant::now() < until {
                    let started = Instant::now();
                    f(c * 10_000_000 + i).await;
                    latencies.push((started - start, started.elapsed()));
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut all = vec![];
    let mut seconds_apart: Vec<Vec<Duration>> = vec![vec![]; seconds.ceil() as usize + 1];
    for t in tasks {
        for (at, took) in t.await.unwrap() {
            all.push(took);
            seconds_apart[at.as_secs() as usize].push(took);
        }
    }
    all.sort();
    let worst_second_p99_ms = seconds_apart
        .iter_mut()
        .filter(|s| s.len() >= 100)
        .map(|s| {
            s.sort();
            p99(s)
        })
        .fold(0.0, f64::max);
    Load {
        per_second: all.len() as f64 / seconds,
        p50_ms: all[all.len() / 2].as_secs_f64() * 1e3,
        p99_ms: p99(&all),
        worst_second_p99_ms,
        requests: all.len(),
        server_cpu_us: 0.0,
        writer_cpu_us: 0.0,
    }
}

/// `n` submits of `body` to `path` (`/v1/jobs`, or TES's `/ga4gh/tes/v1/tasks`) as
/// `token`, sent over `CLIENTS` connections at once, each answered with success and an id:
/// the ids.
pub async fn burst(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &'static str,
    body: &serde_json::Value,
    n: usize,
) -> Vec<String> {
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (h, url, s, sent) = (http.clone(), format!("{base}{path}"), body.clone(), sent.clone());
            tokio::spawn(async move {
                let mut ids = vec![];
                while sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                    let r = h.post(&url).bearer_auth(token).json(&s).send().await.unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    ids.push(r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string());
                }
                ids
            })
        })
        .collect();
    let mut ids = vec![];
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    ids
}

/// Ends the benchmark `bench` (tests/bench/BENCH.rs): a smoke run says so; one that
/// measures writes `lines` to BENCHMARKS.md as the section `header` (in place of the one
/// there, else at the end), saying what measured them and where.
pub fn report(benchmark: bool, bench: &str, header: &str, seconds: f64, lines: &[String]) {
    if !benchmark {
        return println!("smoke run of the {bench} benchmark: done (cargo bench --bench {bench} measures)");
    }
    let section = format!(
        "{header}\n\nWritten by `cargo bench --bench {bench}` (tests/bench/{bench}.rs) on {}, {}: the real \
         `offload serve` (release build) with the sim provider and `synchronous_full` on, a Rust client with \
         {CLIENTS} connections on the same cores, {seconds} s per rate.\n\n{}",
        chrono::Utc::now().format("%Y-%m-%d"),
        machine(),
        lines.iter().map(|l| format!("- {l}\n")).collect::<String>()
    );
    let old = std::fs::read_to_string("BENCHMARKS.md").unwrap_or_default();
    let new = match old.find(header) {
        Some(at) => {
            let end = old[at + header.len()..].find("\n## ").map_or(old.len(), |n| at + header.len() + n + 1);
            // The blank line before the next section stays.
            let gap = if end < old.len() { "\n" } else { "" };
            format!("{}{section}{gap}{}", &old[..at], &old[end..])
        }
        None => format!("{}\n\n{section}", old.trim_end()),
    };
    std::fs::write("BENCHMARKS.md", new).unwrap();
    println!("wrote BENCHMARKS.md");
}

/// Waits until the server uses under a tenth of one core over a second (its engine done
/// with a backlog), at most two minutes.
pub async fn until_quiet(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let (before, at) = (cpu(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(1)).await;
        if (cpu(pid) - before).as_secs_f64() / at.elapsed().as_secs_f64() < 0.1 {
            return;
        }
    }
}

/// The server's CPU time so far (user and system), from /proc.
pub fn cpu(pid: u32) -> Duration {
    ticks(&format!("/proc/{pid}/stat"))
}

/// The server's CPU time at a moment, all of it and its SQLite writer thread's: what the
/// requests after it cost is measured from it.
pub struct CpuMark {
    pid: u32,
    all: Duration,
    writer: Duration,
}

impl CpuMark {
    pub fn now(pid: u32) -> CpuMark {
        CpuMark { pid, all: cpu(pid), writer: thread_cpu(pid, "sqlite-writer") }
    }

    /// The CPU since the mark per request of `requests`, in µs: every thread's, and SQLite's
    /// writer thread's (0 on PostgreSQL).
    pub fn per_request(&self, requests: usize) -> (f64, f64) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / requests as f64;
        (per(cpu(self.pid) - self.all), per(thread_cpu(self.pid, "sqlite-writer") - self.writer))
    }
}

/// The CPU time so far of the server's threads named `name` (a thread's name is its first
/// 15 bytes, as /proc keeps it), from /proc.
fn thread_cpu(pid: u32, name: &str) -> Duration {
    let name: String = name.chars().take(15).collect();
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
        .map(|t| ticks(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// The user and system time in a /proc `stat` file.
fn ticks(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The fields after the command's closing parenthesis, from the state on: utime and
    // stime are the 12th and 13th of them, in clock ticks (100 a second on Linux). They are
    // found by place: some before them are not numbers (the state) or are negative (the
    // terminal's group, -1 for a server), so none may be skipped.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

/// The stores a benchmark measures, each with its URL: SQLite (none), and PostgreSQL when
/// DATABASE_URL names one (as `tests/pg.sh run` sets it); else a line saying it was not.
pub fn stores() -> (Vec<(&'static str, Option<String>)>, Option<String>) {
    match std::env::var("DATABASE_URL") {
        Ok(url) => (vec![("sqlite", None), ("postgresql", Some(url))], None),
        Err(_) => (vec![("sqlite", None)], Some("postgresql: not measured (no DATABASE_URL)".into())),
    }
}

/// `rounds` runs of each variant (a name, and the gateway's tables) in turn, each on a
/// fresh gateway and database of the store at `url`, loaded by `measure` (given the
/// variant's place and the gateway's base URL): each variant's loads. Rates on this kind
/// of machine move by a fifth from one run to the next, so benchmarks compare medians of
/// runs taken in turn.
pub async fn in_turn<F, Fut>(rounds: usize, url: Option<&str>, variants: &[(&str, String)], measure: F) -> Vec<Vec<Load>>
where
    F: Fn(usize, String) -> Fut,
    Fut: std::future::Future<Output = Load>,
{
    let mut loads = vec![vec![]; variants.len()];
    for _ in 0..rounds {
        for (i, (name, tables)) in variants.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let (server, base) = serve(dir.path(), url, tables).await;
            let pid = server.child.id();
            let mark = CpuMark::now(pid);
            let mut load = measure(i, base).await;
            // What the requests set off (a dispatch, a launch) runs on after the last answer.
            until_quiet(pid).await;
            (load.server_cpu_us, load.writer_cpu_us) = mark.per_request(load.requests);
            println!(
                "{:<10} {name:<36} {:>7.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  worst second's p99 {:>6.2} ms  \
                 server CPU {:>4.0} µs a request (SQLite's writer {:>3.0})",
                if url.is_some() { "postgresql" } else { "sqlite" },
                load.per_second, load.p50_ms, load.p99_ms, load.worst_second_p99_ms, load.server_cpu_us,
                load.writer_cpu_us
            );
            loads[i].push(load);
            server.kill9();
        }
    }
    loads
}

/// The run of median rate among `loads`.
pub fn median(loads: &mut [Load]) -> Load {
    loads.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    loads[loads.len() / 2]
}

/// What a benchmark was asked: `--bench` (given by `cargo bench`; without it, as under
/// `cargo test --all-targets`, a smoke run of small figures that writes nothing), then
/// SECONDS per figure and the BURST's size.
pub struct Args {
    pub benchmark: bool,
    pub seconds: f64,
    pub burst: usize,
}

pub fn args() -> Args {
    let benchmark = std::env::args().any(|a| a == "--bench");
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or(if benchmark { 5.0 } else { 0.3 });
    let burst = args.next().and_then(|s| s.parse().ok()).unwrap_or(if benchmark { 100_000 } else { 300 });
    Args { benchmark, seconds, burst }
}

/// This machine, as a benchmark names it: "2 cores, AMD EPYC".
pub fn machine() -> String {
    format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
            .unwrap_or_default()
    )
}

//! Several real `offload serve` replicas on one PostgreSQL database and one shared sim
//! record (the simulated runtime all of them launch on):
//!
//! - chaos: a client submits through all three while random replicas are SIGKILLed and
//!   restarted, again and again; then every acknowledged job exists and succeeded, no
//!   launch key created two workloads (the record), each killed replica's unfinished jobs
//!   were adopted within the lease and a renewal (measured and printed), and none is stuck;
//! - any replica answers for any job: a long-poll on one wakes for a job another runs, and
//!   a cancel sent to one stops a job another owns;
//! - fencing: a replica paused (SIGSTOP) past its lease writes nothing to the jobs another
//!   adopted meanwhile, and carries on under a new id once it wakes;
//! - PostgreSQL stopped for a while under load: writes get a clear 503, `/readyz` goes
//!   unready, and everything recovers by itself once it is back; nothing acknowledged is
//!   lost.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{config_text_pg, free_port, wait_ready, Binary, TOKEN_A};
use offload_sim::RecordOp;
use serde_json::{json, Value};

/// The lease the replicas run with (`store.lease_seconds` in [`config_text_pg`]).
const LEASE: Duration = Duration::from_secs(3);

/// One replica slot: its port and config; the process while it runs.
struct Replica {
    url: String,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    host: String,
    process: Option<Binary>,
    /// The replica id the running process registered under.
    id: String,
}

impl Replica {
    async fn start(&mut self, http: &reqwest::Client) {
        let env = [("HOSTNAME", self.host.as_str()), ("OFFLOAD_LOG", "warn")];
        self.process = Some(Binary::start_with(&self.config, &self.log, &env));
        wait_ready(http, &self.url, &self.log).await;
        let ready = http.get(format!("{}/readyz", self.url)).send().await.unwrap();
        let text = ready.text().await.unwrap();
        self.id = text
            .trim()
            .strip_prefix("ready as replica ")
            .unwrap_or_else(|| panic!("/readyz answered {text:?}"))
            .to_string();
    }

    fn kill9(&mut self) {
        self.process.take().expect("running").kill9();
    }
}

struct Cluster {
    replicas: Vec<Replica>,
    record: std::path::PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` replicas on a fresh schema, each with one sim provider `sim` on one record.
    async fn start(n: usize, sim: &str) -> (Cluster, String) {
        let (admin, _schema, url) = common::pg::fresh_schema().await;
        drop(admin);
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record.jsonl");
        // Room for every job the tests send, unless a test says otherwise.
        let places = match sim.contains("max_concurrency") {
            true => "",
            false => "max_concurrency = 10000\n",
        };
        let providers = format!(
            "[providers.sim]\nkind = \"sim\"\nrecord = \"{}\"\n{places}{sim}\n",
            record.display()
        );
        // Longer than any long-poll the tests send (`?wait=` up to 20 s).
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut replicas = vec![];
        for i in 0..n {
            let port = free_port();
            let config = dir.path().join(format!("r{i}.toml"));
            let listen = format!("127.0.0.1:{port}");
            std::fs::write(&config, config_text_pg(&listen, &url, &providers)).unwrap();
            let mut r = Replica {
                url: format!("http://{listen}"),
                config,
                log: dir.path().join(format!("r{i}.log")),
                host: format!("r{i}"),
                process: None,
                id: String::new(),
            };
            r.start(&http).await;
            replicas.push(r);
        }
        let cluster = Cluster {
            replicas,
            record,
            http,
            _dir: dir,
        };
        (cluster, url)
    }

    async fn submit(&self, i: usize, key: &str, spec: &Value) -> Result<String, String> {
        let r = self
            .http
            .post(format!("{}/v1/jobs", self.replicas[i].url))
            .bearer_auth(TOKEN_A)
            .header("Idempotency-Key", key)
            .json(spec)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        match status {
            200 | 201 => Ok(body["id"].as_str().unwrap().to_string()),
            _ => Err(format!("{status}: {body}")),
        }
    }

    async fn get(&self, i: usize, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.replicas[i].url))
            .bearer_auth(TOKEN_A)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// Replica `i`'s samples of the metric whose name and labels start with `prefix`.
    async fn metric(&self, i: usize, prefix: &str) -> f64 {
        let url = format!("{}/metrics", self.replicas[i].url);
        let r = self.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "/metrics of replica {i}");
        common::sample(&r.text().await.unwrap(), prefix)
    }

    /// Every job of tenant a, through replica `i`.
    async fn all_jobs(&self, i: usize) -> BTreeMap<String, Value> {
        let mut jobs = BTreeMap::new();
        let mut cursor = String::new();
        loop {
            let page = self.get(i, &format!("/v1/jobs?limit=500{cursor}")).await;
            for j in page["jobs"].as_array().unwrap() {
                jobs.insert(j["id"].as_str().unwrap().to_string(), j.clone());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return jobs,
            }
        }
    }

    /// Waits until no job of tenant a is unfinished; panics after `secs`.
    async fn settle(&self, secs: u64) -> BTreeMap<String, Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let jobs = self.all_jobs(0).await;
            let open: Vec<_> = jobs.values().filter(|j| j["terminal"] != true).collect();
            if open.is_empty() {
                return jobs;
            }
            assert!(
                Instant::now() < deadline,
                "{} jobs still unfinished after {secs} s, e.g. {}",
                open.len(),
                open[0]
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How many workloads each launch key created, from the shared record.
    fn created(&self) -> BTreeMap<String, usize> {
        let mut created = BTreeMap::new();
        for r in offload_sim::read_record(&self.record).unwrap() {
            if r.op == RecordOp::Created {
                *created.entry(r.key).or_default() += 1;
            }
        }
        created
    }
}

fn spec(n: usize) -> Value {
    json!({"image": "img", "command": ["true"], "provider": "sim", "labels": {"n": n.to_string()}})
}

/// The tests here start and stop replicas and the database: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Submits a stream of jobs through every replica in turn until `stop`, sending a job the
/// replica did not acknowledge (it died under the request, or said 503) again, with the
/// same key, to the next one. The acknowledged ids by key, and how many sends failed.
async fn submit_until(
    http: reqwest::Client,
    urls: Vec<String>,
    stop: tokio_util::sync::CancellationToken,
) -> (BTreeMap<String, String>, usize) {
    let mut acknowledged = BTreeMap::new();
    let (mut n, mut turn, mut failed) = (0usize, 0usize, 0usize);
    while !stop.is_cancelled() {
        let url = &urls[turn % urls.len()];
        turn += 1;
        let key = format!("job-{n}");
        let sent = http
            .post(format!("{url}/v1/jobs"))
            .bearer_auth(TOKEN_A)
            .header("Idempotency-Key", &key)
            .json(&spec(n))
            .send()
            .await;
        let id = match sent {
            Ok(r) if r.status() == 200 || r.status() == 201 => {
                let body: Value = r.json().await.unwrap();
                body["id"].as_str().unwrap().to_string()
            }
            Ok(r) if r.status() == 503 => {
                failed += 1;
                continue;
            }
            Ok(r) => panic!("submit answered {}: {}", r.status(), r.text().await.unwrap()),
            Err(_) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if let Some(before) = acknowledged.insert(key.clone(), id.clone()) {
            assert_eq!(before, id, "{key} acknowledged as two jobs");
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (acknowledged, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_at_random_lose_nothing_and_launch_nothing_twice() {
    const KILLS: usize = 20;
    let _one = SERIAL.lock().await;
    let (mut cluster, _) =
        Cluster::start(3, "start_ms = 200\nrun_ms = 1500\npoll_interval_ms = 100").await;
    let n = cluster.replicas.len();
    let stop = tokio_util::sync::CancellationToken::new();
    let urls = cluster.replicas.iter().map(|r| r.url.clone()).collect();
    let submitter = tokio::spawn(submit_until(cluster.http.clone(), urls, stop.clone()));
    // When each replica id was killed.
    let mut killed: Vec<(String, chrono::DateTime<chrono::Utc>)> = vec![];
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(300 + next() % 700)).await;
        let victim = (next() % n as u64) as usize;
        let id = cluster.replicas[victim].id.clone();
        cluster.replicas[victim].kill9();
        killed.push((id, chrono::Utc::now()));
        tokio::time::sleep(Duration::from_millis(next() % 300)).await;
        let http = cluster.http.clone();
        cluster.replicas[victim].start(&http).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let (acknowledged, refused) = submitter.await.unwrap();
    let chaos = started.elapsed();
    let jobs = cluster.settle(90).await;

    // Every acknowledged job exists and succeeded.
    for (k, id) in &acknowledged {
        let job = jobs.get(id).unwrap_or_else(|| panic!("{k} ({id}) was acknowledged and lost"));
        assert_eq!(job["state"], "succeeded", "{k}: {job}");
    }
    // No launch key ever created two workloads, and every job ran.
    let created = cluster.created();
    let twice: Vec<_> = created.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "launch keys created twice: {twice:?}");
    for id in acknowledged.values() {
        let key = format!("offload-{}-1", id.replace('-', ""));
        assert!(created.contains_key(&key), "job {id} never launched as {key}");
    }
    // Each killed replica's unfinished jobs were adopted, within the lease and a renewal.
    let mut first_adoption: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    let mut adopted = 0;
    for id in acknowledged.values() {
        let events = cluster.get(0, &format!("/v1/jobs/{id}/events")).await;
        for e in events.as_array().unwrap() {
            let reason = e["reason"].as_str().unwrap_or_default();
            if let Some(from) = reason
                .split(" from ")
                .nth(1)
                .and_then(|r| r.strip_suffix(", whose lease had lapsed"))
            {
                adopted += 1;
                let at: chrono::DateTime<chrono::Utc> = e["at"].as_str().unwrap().parse().unwrap();
                let first = first_adoption.entry(from.to_string()).or_insert(at);
                *first = (*first).min(at);
            }
        }
    }
    let mut delays = vec![];
    for (id, at) in &killed {
        if let Some(adopted_at) = first_adoption.get(id) {
            delays.push((*adopted_at - *at).num_milliseconds());
        }
    }
    delays.sort();
    println!(
        "chaos: {} jobs acknowledged through {n} replicas in {chaos:?}, {KILLS} SIGKILLs, \
         {refused} submits sent again, {adopted} jobs adopted; adoption after a kill (ms, \
         lease {} ms): min {:?} median {:?} max {:?} over {} kills",
        acknowledged.len(),
        LEASE.as_millis(),
        delays.first(),
        delays.get(delays.len() / 2),
        delays.last(),
        delays.len()
    );
    assert!(acknowledged.len() >= 100, "too few jobs to say anything");
    assert!(
        delays.len() >= KILLS / 2,
        "only {} of {KILLS} kills left jobs to adopt",
        delays.len()
    );
    let bound = (LEASE + LEASE / 3 * 2 + Duration::from_secs(3)).as_millis() as i64;
    assert!(
        delays.iter().all(|d| *d <= bound),
        "an adoption came later than the lease, a renewal round and slack ({bound} ms): {delays:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_answers_for_any_job() {
    let _one = SERIAL.lock().await;
    let (cluster, _) =
        Cluster::start(2, "start_ms = 100\nrun_ms = 60000\npoll_interval_ms = 50").await;
    // Submitted to replica 0, which owns it; watched and cancelled through replica 1.
    let id = cluster.submit(0, "one", &spec(1)).await.unwrap();
    let job = cluster.get(1, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["id"], id.as_str());
    // A long-poll on replica 1 answers when replica 0's engine moves the job on.
    let mut state = job["state"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while state != "running" {
        assert!(Instant::now() < deadline, "not running: {state}");
        let job = cluster.get(1, &format!("/v1/jobs/{id}?wait=10")).await;
        state = job["state"].as_str().unwrap().to_string();
    }
    let waited = Instant::now();
    let cancel = tokio::spawn({
        let (http, url) = (cluster.http.clone(), cluster.replicas[1].url.clone());
        let id = id.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            http.post(format!("{url}/v1/jobs/{id}/cancel"))
                .bearer_auth(TOKEN_A)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    // Replica 1 takes the cancel; replica 0 stops the workload; a long-poll on 1 sees it.
    let job = cluster.get(1, &format!("/v1/jobs/{id}?wait=20")).await;
    assert_eq!(cancel.await.unwrap(), 202);
    assert!(
        ["cancelling", "cancelled"].contains(&job["state"].as_str().unwrap()),
        "{job}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = cluster.get(1, &format!("/v1/jobs/{id}?wait=5")).await;
        if job["state"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "not cancelled: {job}");
    }
    println!("cancel through another replica took {:?}", waited.elapsed());
    let events = cluster.get(1, &format!("/v1/jobs/{id}/events")).await;
    let reasons: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("cancel requested by tenant a")),
        "{reasons:?}"
    );
    let log = cluster
        .http
        .get(format!("{}/v1/jobs/{id}/logs", cluster.replicas[1].url))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(log.status(), 200);
    // Each replica counts both live replicas (what the providers' rate budgets are divided
    // by).
    for r in &cluster.replicas {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = cluster
                .http
                .get(format!("{}/metrics", r.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if metrics.lines().any(|l| l == "offload_replicas_live 2") {
                break;
            }
            let live: Vec<_> = metrics.lines().filter(|l| l.starts_with("offload_replicas")).collect();
            assert!(
                Instant::now() < deadline,
                "{} counts {live:?}; its log: {}",
                r.url,
                std::fs::read_to_string(&r.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Stopped once, at the workload's one key.
    let record = offload_sim::read_record(&cluster.record).unwrap();
    let cancels = record.iter().filter(|r| r.op == RecordOp::Cancelled).count();
    assert_eq!(cancels, 1, "{record:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_its_lease_writes_nothing_to_jobs_another_adopted() {
    let _one = SERIAL.lock().await;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (mut cluster, _) =
        Cluster::start(2, "start_ms = 100\nrun_ms = 8000\npoll_interval_ms = 50").await;
    let mut ids = vec![];
    for i in 0..10 {
        ids.push(cluster.submit(0, &format!("p{i}"), &spec(i)).await.unwrap());
    }
    let (owner, adopter) = (cluster.replicas[0].id.clone(), cluster.replicas[1].id.clone());
    let state = |job: &Value| job["state"].as_str().unwrap_or_default().to_string();
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(20);
        while state(&cluster.get(1, &format!("/v1/jobs/{id}")).await) != "running" {
            assert!(Instant::now() < deadline, "{id} not running");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let pid = Pid::from_raw(cluster.replicas[0].process.as_ref().unwrap().child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let paused = Instant::now();
    // Replica 1 adopts them once the lease lapses and follows them to their end.
    let adopted = format!("adopted by replica {adopter} from {owner}, whose lease had lapsed");
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = cluster.get(1, &format!("/v1/jobs/{id}?wait=5")).await;
            if job["terminal"] == true {
                assert_eq!(job["state"], "succeeded", "{job}");
                break;
            }
            assert!(Instant::now() < deadline, "not ended while 0 was paused: {job}");
        }
        let events = cluster.get(1, &format!("/v1/jobs/{id}/events")).await;
        assert!(
            events.as_array().unwrap().iter().any(|e| e["reason"] == adopted.as_str()),
            "{events}"
        );
    }
    let mut before = vec![];
    for id in &ids {
        before.push(cluster.get(1, &format!("/v1/jobs/{id}/events")).await);
    }
    let paused_for = paused.elapsed();
    assert!(paused_for > LEASE, "paused only {paused_for:?}");
    println!("paused for {paused_for:?}: every job adopted and ended at the other replica");
    kill(pid, Signal::SIGCONT).unwrap();
    // Awake, replica 0 must find its lease gone: it carries on under a new id...
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = cluster
            .http
            .get(format!("{}/readyz", cluster.replicas[0].url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if !ready.contains(&owner) {
            break;
        }
        assert!(Instant::now() < deadline, "still {ready:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and it changed none of the jobs that were its own (their histories are as they
    // were, some seconds on), nor launched anything again.
    tokio::time::sleep(LEASE).await;
    for (id, events) in ids.iter().zip(&before) {
        let now = cluster.get(0, &format!("/v1/jobs/{id}/events")).await;
        assert_eq!(&now, events, "job {id} changed after its old owner woke");
    }
    let twice: Vec<_> = cluster.created().into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "{twice:?}");
    // The lapse is counted where it happened, once, for the alert on lost leases.
    assert_eq!(cluster.metric(0, "offload_lease_lapses_total").await, 1.0);
    assert_eq!(cluster.metric(1, "offload_lease_lapses_total").await, 0.0);
    cluster.replicas[0].kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_a_while_is_a_clear_503_and_everything_recovers_by_itself() {
    let _one = SERIAL.lock().await;
    let dir = std::env::var("OFFLOAD_PG_DIR").expect(
        "OFFLOAD_PG_DIR is not set: this test stops and starts the throwaway server of \
         `tests/pg.sh run`, so run it that way",
    );
    let (cluster, _) =
        Cluster::start(2, "start_ms = 100\nrun_ms = 500\npoll_interval_ms = 50").await;
    let mut acknowledged = BTreeSet::new();
    for i in 0..20 {
        acknowledged.insert(cluster.submit(i % 2, &format!("b{i}"), &spec(i)).await.unwrap());
    }
    let pg = |what: &str| {
        let out = std::process::Command::new("tests/pg.sh")
            .args([what, &dir])
            .output()
            .unwrap();
        assert!(out.status.success(), "tests/pg.sh {what}: {}", String::from_utf8_lossy(&out.stderr));
    };
    pg("pause");
    let down = Instant::now();
    let mut refusals = BTreeSet::new();
    let mut unready = false;
    let mut n = 20;
    while down.elapsed() < Duration::from_secs(10) {
        match cluster.submit(n % 2, &format!("b{n}"), &spec(n)).await {
            Ok(id) => {
                acknowledged.insert(id);
                n += 1;
            }
            Err(e) => {
                refusals.insert(e.split(':').next().unwrap().to_string());
            }
        }
        let ready = cluster
            .http
            .get(format!("{}/readyz", cluster.replicas[0].url))
            .send()
            .await
            .unwrap();
        unready |= ready.status() == 503;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        refusals.into_iter().collect::<Vec<_>>(),
        ["503"],
        "submits while PostgreSQL is down get a 503, nothing else"
    );
    assert!(unready, "/readyz stayed ready without its store");
    // /metrics still answers without the store, and each replica counted what its database
    // did not answer, for the alert on store errors.
    for i in 0..2 {
        let errors = cluster.metric(i, "offload_store_errors_total{error=\"db\"}").await;
        assert!(errors >= 1.0, "replica {i} counted {errors} store errors");
    }
    pg("resume");
    // Both replicas come back by themselves: ready, taking submits, ending every job.
    for r in &cluster.replicas {
        wait_ready(&cluster.http, &r.url, &r.log).await;
    }
    for i in 0..10 {
        let k = format!("after-{i}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let id = loop {
            match cluster.submit(i % 2, &k, &spec(i)).await {
                Ok(id) => break id,
                Err(e) => assert!(Instant::now() < deadline, "still refused: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        acknowledged.insert(id);
    }
    let jobs = cluster.settle(60).await;
    for id in &acknowledged {
        let job = jobs.get(id).unwrap_or_else(|| panic!("{id} was acknowledged and lost"));
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let twice: Vec<_> = cluster.created().into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "{twice:?}");
}

/// Polls job `id` through replica `i` until it has ended, for at most `secs`.
async fn ended(cluster: &Cluster, i: usize, id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let job = cluster.get(i, &format!("/v1/jobs/{id}?wait=2")).await;
        if job["terminal"] == true {
            return job;
        }
        assert!(Instant::now() < deadline, "not ended within {secs} s: {job}");
    }
}

/// A job the store says is a replica's is driven by that replica even when it never heard
/// of it: here the owner is changed under a running job, as an adoption whose answer was
/// lost with its connection (after it had committed) leaves it. The replica's sweep of its
/// own jobs finds it and follows it to its end; before, only a restart would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_replica_owns_without_knowing_it_is_driven_to_its_end() {
    let _one = SERIAL.lock().await;
    let (cluster, url) =
        Cluster::start(2, "start_ms = 0\nrun_ms = 3000\npoll_interval_ms = 50").await;
    let id = cluster.submit(1, "unknown-owner", &spec(0)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.get(1, &format!("/v1/jobs/{id}")).await["state"] != "running" {
        assert!(Instant::now() < deadline, "{id} not running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = common::pg::admin_client(&url).await;
    let moved = admin
        .execute(
            "UPDATE jobs SET owner = $1 WHERE id = $2::text::uuid",
            &[&cluster.replicas[0].id, &id],
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let job = ended(&cluster, 0, &id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

/// A provider's `max_concurrency` holds for the cluster, not for each replica: two replicas
/// sharing 4 places never run more than 4 jobs at once between them (each job's place is
/// held from its dispatch to its end; both are in its events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_holds_across_replicas() {
    let _one = SERIAL.lock().await;
    let (cluster, _) = Cluster::start(
        2,
        "start_ms = 0\nrun_ms = 1000\npoll_interval_ms = 50\nmax_concurrency = 4",
    )
    .await;
    // Both replicas have renewed since both started (every third of the 3 s lease).
    tokio::time::sleep(LEASE).await;
    let mut ids = vec![];
    for i in 0..24 {
        ids.push(cluster.submit(i % 2, &format!("c{i}"), &spec(i)).await.unwrap());
    }
    let jobs = cluster.settle(120).await;
    let mut edges = vec![];
    for id in &ids {
        assert_eq!(jobs[id]["state"], "succeeded", "{}", jobs[id]);
        let events = cluster.get(0, &format!("/v1/jobs/{id}/events")).await;
        let at = |e: &Value| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap();
        let events = events.as_array().unwrap();
        let dispatched = events
            .iter()
            .find(|e| e["reason"].as_str().unwrap_or_default().starts_with("dispatched"))
            .map(at)
            .unwrap();
        let finished = chrono::DateTime::parse_from_rfc3339(jobs[id]["finished_at"].as_str().unwrap()).unwrap();
        edges.push((dispatched, 1));
        edges.push((finished, -1));
    }
    // Ends before starts at the same instant: a place freed and taken again.
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    assert!(most <= 4, "{most} jobs held places at once; the cluster has 4");
}

/// A timeout that passed while no replica owned the job is enforced when another adopts
/// it: the workloads ran past their jobs' limit (their owner was killed before it could stop
/// them), and the adopter, finding them ended (or ending), ends the jobs `failed` for their
/// timeout, as a stop at the deadline would have; one that the adopter's poller saw ended
/// before its first reconcile used to end `succeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_that_passed_while_nobody_owned_the_job_fails_it() {
    let _one = SERIAL.lock().await;
    let (mut cluster, _) =
        Cluster::start(2, "start_ms = 0\nrun_ms = 2500\npoll_interval_ms = 50").await;
    let mut ids = vec![];
    for i in 0..8 {
        let mut timed = spec(i);
        timed["timeout_seconds"] = json!(1);
        ids.push(cluster.submit(0, &format!("timed-{i}"), &timed).await.unwrap());
    }
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.get(0, &format!("/v1/jobs/{id}")).await["state"] != "running" {
            assert!(Instant::now() < deadline, "{id} not running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.replicas[0].kill9();
    for id in &ids {
        let job = ended(&cluster, 1, id, 30).await;
        assert_eq!(job["state"], "failed", "{job}");
        assert!(job["reason"].as_str().unwrap().starts_with("timeout"), "{job}");
    }
}

/// A rolling upgrade's moment: the next release has expanded the schema (a version of its
/// own, which only adds) while this release's replicas run. A replica of this release
/// restarted then starts on it, and jobs submitted to either replica end, read from the
/// other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarts_and_works_beside_others_on_the_next_releases_expanded_schema() {
    let _serial = SERIAL.lock().await;
    let (mut cluster, url) = Cluster::start(2, "run_ms = 200").await;
    let admin = common::pg::admin_client(&url).await;
    admin
        .batch_execute(
            "ALTER TABLE jobs ADD COLUMN next_release_note text;
             CREATE TABLE next_release_things (id bigint PRIMARY KEY);
             INSERT INTO offload_migrations (version, name, breaking)
                 SELECT max(version) + 1, 'next_release', false FROM offload_migrations",
        )
        .await
        .unwrap();
    cluster.replicas[0].kill9();
    let http = cluster.http.clone();
    cluster.replicas[0].start(&http).await;
    for (i, other) in [(0, 1), (1, 0)] {
        let id = cluster.submit(i, &format!("upgrade-{i}"), &spec(i)).await.unwrap();
        let job = ended(&cluster, other, &id, 30).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
}

//! Cloud calls per job: the real `offload serve` (release build) on each cloud provider
//! against its test peer, which counts every call the gateway makes: moto's ECS and
//! CloudWatch Logs server (its request recorder), the fake Kubernetes API server, the fake
//! ARM and the fake Cloud Run APIs (each records the requests it answers). Each job's workload runs 30 s (the
//! benchmark ends it in the peer 30 s after the gateway launched it); the job alone, 20 at
//! once and 200 at once, each on a fresh peer and gateway (on its defaults) after one
//! warm-up job, whose calls and the gateway's one-time ones are counted apart.
//!
//! ECS is measured three ways: on the defaults (`poll_interval_ms = 500`, ECS's bound of
//! 16 s), nothing known of the run time; the same with the run time known
//! (`expected_duration_seconds = 30` in the spec, as a DAG task's history would give it);
//! and with a tighter bound (`max_poll_interval_ms = 4000`), for the end seen sooner.
//!
//! Also how long after its workload ended each job was seen ended (through a long poll).
//! Part of `cargo bench --bench load`; needs target/moto-venv, which tests/run.sh installs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::common::{free_port, wait_ready, Binary, TOKEN_A};
use crate::{fake_arm, fake_kube, fake_run, moto};
use serde_json::{json, Value};

/// How long each job's workload runs.
const RUN: Duration = Duration::from_secs(30);

/// `engine.release_after_seconds` in the benchmark: a workload seen ended is released this
/// long after; the counts wait three times as long for those calls.
const RELEASE: Duration = Duration::from_secs(1);

/// A cloud's test peer, as the benchmark drives it.
trait Peer: Sync {
    /// The provider's name in the gateway's configuration.
    const PROVIDER: &'static str;
    /// The calls a fresh gateway makes once (its first health check, a watch's first list,
    /// a task definition's lookup and registration), by the names [`Peer::calls`] gives.
    const ONE_TIME: &'static [&'static str];
    /// The call that releases an ended workload, by the name [`Peer::calls`] gives; `None`
    /// where release asks the cloud nothing.
    const RELEASE_CALL: Option<&'static str>;
    /// The `[providers.PROVIDER]` table for a gateway on this peer, with `settings` added.
    fn provider(&self, settings: &str) -> String;
    /// The workload `name` is running (moto starts its tasks running by itself).
    async fn runs(&self, name: &str);
    /// The workload `name` exits 0.
    async fn exits(&self, name: &str);
    /// Every call the peer has answered, by name, oldest first.
    async fn calls(&self) -> Vec<String>;
}

impl Peer for moto::Moto {
    const PROVIDER: &'static str = "fargate";
    const ONE_TIME: &'static [&'static str] =
        &["ListTasks", "DescribeTaskDefinition", "RegisterTaskDefinition"];
    // A stopped task goes by itself.
    const RELEASE_CALL: Option<&'static str> = None;

    fn provider(&self, settings: &str) -> String {
        self.gateway_provider(&format!(
            "log_group = \"{}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/offload-execution\"\n{settings}",
            self.aws.log_group
        ))
    }

    async fn runs(&self, _name: &str) {}

    async fn exits(&self, name: &str) {
        self.stop(name, Some(0), Some("EssentialContainerExited"), "Essential container in task exited")
            .await;
    }

    async fn calls(&self) -> Vec<String> {
        self.recorded().await.into_iter().map(|(action, _)| action).collect()
    }
}

/// The fake API server and the kubeconfig that points at it.
struct Kube(fake_kube::FakeApi, tempfile::TempDir);

impl Peer for Kube {
    const PROVIDER: &'static str = "gke";
    const ONE_TIME: &'static [&'static str] = &["list pods", "watch pods"];
    const RELEASE_CALL: Option<&'static str> = Some("delete pod");

    fn provider(&self, settings: &str) -> String {
        format!(
            "[providers.gke]\nkind = \"kubernetes\"\nkubeconfig = \"{}\"\ncontext = \"fake\"\nnamespace = \"jobs\"\n{settings}",
            self.0.kubeconfig(self.1.path()).display()
        )
    }

    async fn runs(&self, name: &str) {
        self.0.set_status(name, json!({"phase": "Running"}));
    }

    async fn exits(&self, name: &str) {
        self.0.set_status(
            name,
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "main", "image": "alpine:3",
                "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}]}),
        );
    }

    /// "METHOD /api/v1/namespaces/NS/KIND[/NAME[/SUB]][?QUERY]", named for what it does.
    async fn calls(&self) -> Vec<String> {
        let name = |request: &str| {
            let (method, target) = request.split_once(' ').unwrap_or((request, ""));
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let parts: Vec<&str> = path.trim_matches('/').split('/').skip(4).collect();
            let watch = query.split('&').any(|p| p == "watch=true" || p == "watch=1");
            match (method, parts.as_slice(), watch) {
                ("GET", ["pods"], true) => "watch pods".to_string(),
                ("GET", ["pods"], false) => "list pods".to_string(),
                ("POST", [kind], _) => format!("create {}", kind.trim_end_matches('s')),
                ("GET", [kind, _], _) => format!("get {}", kind.trim_end_matches('s')),
                ("DELETE", [kind, _], _) => format!("delete {}", kind.trim_end_matches('s')),
                ("GET", ["pods", _, "log"], _) => "read log".to_string(),
                _ => request.to_string(),
            }
        };
        self.0.requests().iter().map(|r| name(r)).collect()
    }
}

impl Peer for fake_arm::FakeArm {
    const PROVIDER: &'static str = "aci";
    const ONE_TIME: &'static [&'static str] = &["list groups"];
    const RELEASE_CALL: Option<&'static str> = Some("delete group");

    fn provider(&self, settings: &str) -> String {
        format!(
            "[providers.aci]\nkind = \"aci\"\nsubscription_id = \"00000000-0000-0000-0000-000000000000\"\n\
             resource_group = \"offload\"\nlocation = \"westeurope\"\nendpoint = \"{}\"\naccess_token = \"{}\"\n{settings}",
            self.url,
            fake_arm::TOKEN
        )
    }

    async fn runs(&self, name: &str) {
        self.set_state(name, "Running", json!({"currentState": {"state": "Running"}}));
    }

    async fn exits(&self, name: &str) {
        self.set_state(
            name,
            "Succeeded",
            json!({"restartCount": 0, "currentState": {"state": "Terminated", "exitCode": 0,
                "detailStatus": "Completed"}}),
        );
    }

    /// ".../containerGroups[/NAME[/stop | /containers/C/logs]]?api-version=...", named.
    async fn calls(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|(method, uri, _)| {
                let path = uri.split('?').next().unwrap_or_default();
                let after = path.split_once("/containerGroups").map_or("", |(_, rest)| rest);
                let parts: Vec<&str> = after.split('/').filter(|p| !p.is_empty()).collect();
                match (method.as_str(), parts.as_slice()) {
                    ("GET", []) => "list groups".to_string(),
                    ("GET", [_]) => "get group".to_string(),
                    ("PUT", [_]) => "create group".to_string(),
                    ("DELETE", [_]) => "delete group".to_string(),
                    ("POST", [_, "stop"]) => "stop group".to_string(),
                    ("GET", [_, "containers", _, "logs"]) => "read log".to_string(),
                    _ => format!("{method} {uri}"),
                }
            })
            .collect()
    }
}

/// The fake Cloud Run APIs, in a region with [`FOREIGN`] executions of others' jobs.
struct CloudRun(fake_run::FakeRun);

/// Other teams' executions in the Cloud Run region: three pages of the region's list.
const FOREIGN: usize = 1000;

impl Peer for CloudRun {
    const PROVIDER: &'static str = "cloudrun";
    const ONE_TIME: &'static [&'static str] = &["list jobs"];
    const RELEASE_CALL: Option<&'static str> = Some("delete job");

    fn provider(&self, settings: &str) -> String {
        format!(
            "[providers.cloudrun]\nkind = \"cloudrun\"\nproject = \"{}\"\nregion = \"{}\"\nendpoint = \"{url}\"\n\
             logging_endpoint = \"{url}\"\naccess_token = \"{}\"\n{settings}",
            fake_run::PROJECT,
            fake_run::REGION,
            fake_run::TOKEN,
            url = self.0.url,
        )
    }

    async fn runs(&self, name: &str) {
        self.0.run(name);
    }

    async fn exits(&self, name: &str) {
        self.0.exit(name, 0);
    }

    /// ".../locations/R/jobs[/J[/executions[/E[/tasks]]]]", and Cloud Logging's list, named.
    async fn calls(&self) -> Vec<String> {
        self.0
            .requests()
            .iter()
            .map(|(method, uri, _)| {
                let path = uri.split('?').next().unwrap_or_default();
                let after = path.split_once("/jobs").map(|(_, rest)| rest);
                let parts: Vec<&str> = after.unwrap_or_default().split('/').filter(|p| !p.is_empty()).collect();
                match (method.as_str(), after.is_some(), parts.as_slice()) {
                    ("GET", true, []) => "list jobs".to_string(),
                    ("POST", true, []) => "create job".to_string(),
                    ("GET", true, [_]) => "get job".to_string(),
                    ("DELETE", true, [_]) => "delete job".to_string(),
                    ("GET", true, ["-", "executions"]) => "list the region's executions".to_string(),
                    ("GET", true, [_, "executions"]) => "list a job's executions".to_string(),
                    ("GET", true, [_, "executions", _, "tasks"]) => "list tasks".to_string(),
                    ("POST", false, _) if path.ends_with("entries:list") => "read log".to_string(),
                    _ => format!("{method} {uri}"),
                }
            })
            .collect()
    }
}

struct Outcome {
    /// The calls a fresh gateway makes once ([`Peer::ONE_TIME`]).
    setup: usize,
    calls: BTreeMap<String, usize>,
    /// From the workload's end in the peer to the job's end seen through the API, per job.
    lags: Vec<Duration>,
}

async fn job(http: &reqwest::Client, base: &str, id: &str, wait: u32) -> Value {
    http.get(format!("{base}/v1/jobs/{id}?wait={wait}"))
        .bearer_auth(TOKEN_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Submits `spec` and waits for the gateway to have launched it: the job's id and its
/// workload's name at the peer.
async fn launched(http: &reqwest::Client, base: &str, spec: &Value) -> (String, String) {
    let r = http.post(format!("{base}/v1/jobs")).bearer_auth(TOKEN_A).json(spec).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    loop {
        if let Some(name) = job(http, base, &id, 0).await["provider_ref"].as_str() {
            return (id, name.to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits through long polls for the job's end, which must be a success.
async fn succeeded(http: &reqwest::Client, base: &str, id: &str) {
    loop {
        let j = job(http, base, id, 30).await;
        if j["terminal"] == true {
            return assert_eq!(j["state"], "succeeded", "{j}");
        }
    }
}

/// Runs `jobs` jobs of [`RUN`] each at once and counts what the gateway asked the peer.
async fn scenario<P: Peer>(peer: &P, jobs: usize, settings: &str, expected: Option<u64>) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    // The gateway on its defaults, with room for every job, but that a workload seen ended
    // is released after 1 s, not 10 s (the calls are the same, and sooner counted).
    let config = dir.path().join("offload.toml");
    let store = format!("path = \"{}\"", dir.path().join("offload.db").display());
    let provider = peer.provider(&format!("max_concurrency = {jobs}\n{settings}"));
    let engine = format!("release_after_seconds = {}", RELEASE.as_secs());
    std::fs::write(&config, crate::harness::config(&listen, &store, &engine, &provider)).unwrap();
    let log = dir.path().join("serve.log");
    let server = Binary::start(&config, &log);
    let http = reqwest::Client::new();
    wait_ready(&http, &base, &log).await;

    let mut spec = json!({"image": "alpine:3", "command": ["sh", "-c", "sleep 30"], "provider": P::PROVIDER});
    // One job that ends at once, to get the fresh gateway's one-time calls done: those are
    // counted apart, the warm-up job's own not at all.
    let (id, name) = launched(&http, &base, &spec).await;
    peer.runs(&name).await;
    peer.exits(&name).await;
    succeeded(&http, &base, &id).await;
    tokio::time::sleep(RELEASE * 3).await;
    let before = peer.calls().await;
    let setup = before.iter().filter(|c| P::ONE_TIME.contains(&c.as_str())).count();

    if let Some(seconds) = expected {
        spec["routing"] = json!({"expected_duration_seconds": seconds});
    }
    let runs = (0..jobs).map(|_| {
        let (http, base, spec) = (&http, &base, &spec);
        async move {
            let (id, name) = launched(http, base, spec).await;
            let started = Instant::now();
            peer.runs(&name).await;
            // The workload's run: nothing to wait on but the clock.
            tokio::time::sleep_until((started + RUN).into()).await;
            peer.exits(&name).await;
            let ended = Instant::now();
            succeeded(http, base, &id).await;
            ended.elapsed()
        }
    });
    let lags = futures::future::join_all(runs).await;
    // Let the gateway release the workloads it has just seen end: those calls count too,
    // however long the provider's client budget makes them wait.
    if let Some(release) = P::RELEASE_CALL {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let calls = peer.calls().await;
            let released = calls[before.len()..].iter().filter(|c| c.as_str() == release).count();
            if released >= jobs {
                break;
            }
            assert!(Instant::now() < deadline, "only {released} of {jobs} workloads released in 120 s");
            tokio::time::sleep(RELEASE / 4).await;
        }
    }
    tokio::time::sleep(RELEASE * 3).await;
    let mut calls = BTreeMap::new();
    for call in peer.calls().await.into_iter().skip(before.len()) {
        *calls.entry(call).or_default() += 1;
    }
    server.kill9();
    Outcome { setup, calls, lags }
}

/// A table row for one scenario, printed as it comes.
fn row(name: &str, jobs: usize, o: Outcome) -> String {
    let total: usize = o.calls.values().sum();
    let mut lags = o.lags;
    lags.sort();
    let (median, worst) = (lags[lags.len() / 2], lags[lags.len() - 1]);
    let breakdown = o.calls.iter().map(|(a, n)| format!("{a} {n}")).collect::<Vec<_>>().join(", ");
    let line = format!(
        "| {name} | {jobs} | {:.2} | {:.2} | {:.1} | {:.1} | {breakdown} |",
        total as f64 / jobs as f64,
        (total + o.setup) as f64 / jobs as f64,
        median.as_secs_f64(),
        worst.as_secs_f64()
    );
    println!("{line}");
    line
}

/// The section of BENCHMARKS.md on calls per job, as printed while it runs.
pub async fn section() -> String {
    let mut table = String::new();
    let configurations: [(&str, &str, Option<u64>); 3] = [
        ("ECS, defaults (500 ms, bound 16 s)", "", None),
        ("ECS, defaults, run time known", "", Some(30)),
        ("ECS, bound 4 s", "max_poll_interval_ms = 4000\n", None),
    ];
    for (name, settings, expected) in configurations {
        for jobs in [1, 20, 200] {
            let moto = moto::Moto::start();
            moto.reset_recording().await;
            writeln!(table, "{}", row(name, jobs, scenario(&moto, jobs, settings, expected).await)).unwrap();
        }
    }
    for jobs in [1, 20, 200] {
        let kube = Kube(fake_kube::FakeApi::start().await, tempfile::tempdir().unwrap());
        writeln!(table, "{}", row("Kubernetes, defaults", jobs, scenario(&kube, jobs, "", None).await)).unwrap();
    }
    for jobs in [1, 20, 200] {
        let arm = fake_arm::FakeArm::start().await;
        writeln!(table, "{}", row("ACI, defaults", jobs, scenario(&arm, jobs, "", None).await)).unwrap();
    }
    for jobs in [1, 20, 200] {
        let run = CloudRun(fake_run::FakeRun::start().await);
        run.0.foreign(FOREIGN);
        let name = format!("Cloud Run, defaults, {FOREIGN} other executions in the region");
        writeln!(table, "{}", row(&name, jobs, scenario(&run, jobs, "", None).await)).unwrap();
    }
    format!(
        "## Cloud calls per job\n\nThe real `offload serve` (release build, on its defaults but for the \
         configuration named) on each cloud provider against its test peer: moto's ECS and CloudWatch Logs \
         server, the fake Kubernetes API server, the fake ARM, the fake Cloud Run APIs (with {FOREIGN} executions \
         of other jobs in the region, three pages of its list); every job's workload runs {} s; calls counted \
         by the peer, each scenario on a fresh peer and gateway. Each gateway first runs one warm-up job, and \
         the calls counted are those after it, until every job has ended and its workload been released \
         (1 s after its end, or later if the provider's client budget holds the call back), and 3 s more; \
         \"with setup\" adds back the fresh gateway's one-time calls (its first health check, a watch's first \
         list and watch, a task definition's lookup and registration). \"End seen\" is from the workload's end \
         in the peer to the job's end answered by a long poll.\n\n\
         | configuration | jobs at once | calls per job | with setup | end seen after, median s | worst s | calls |\n\
         |---|---|---|---|---|---|---|\n{table}",
        RUN.as_secs()
    )
}

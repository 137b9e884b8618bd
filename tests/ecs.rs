//! 200 concurrent jobs through the gateway on the ECS provider, against moto's server
//! (started by the ECS provider's own harness): every job ends with its task's exit code,
//! and moto's request recorder counts the ECS calls it took to follow them.

#![cfg(feature = "ecs")]

mod common;
#[path = "../providers/ecs/tests/common/mod.rs"]
mod moto;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Gateway, TOKEN_A};
use serde_json::json;

const JOBS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_jobs_are_followed_with_batched_describe_tasks() {
    let moto = moto::Moto::start();
    let providers = moto.gateway_provider(&format!(
        "log_group = \"{}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/offload-execution\"\n\
         max_concurrency = {JOBS}\npoll_interval_ms = 500",
        moto.aws.log_group
    ));
    let gw = Gateway::start(&providers).await;
    moto.reset_recording().await;
    let started = Instant::now();

    let submits = (0..JOBS).map(|i| {
        gw.submit(
            TOKEN_A,
            json!({"image": "alpine:3", "command": ["sh", "-c", format!("echo {i}")], "provider": "fargate"}),
        )
    });
    let ids: Vec<String> = futures::future::join_all(submits)
        .await
        .into_iter()
        .map(|(status, job)| {
            assert_eq!(status, 201, "{job}");
            job["id"].as_str().unwrap().to_string()
        })
        .collect();

    // moto starts tasks RUNNING; wait for the gateway to see all of them so.
    let mut jobs = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while jobs.len() < JOBS {
        assert!(
            Instant::now() < deadline,
            "only {} of {JOBS} jobs running",
            jobs.len()
        );
        for id in &ids {
            if !jobs.contains_key(id) {
                let job = gw.get(TOKEN_A, &format!("/v1/jobs/{id}")).await.1;
                if job["state"] == "running" {
                    jobs.insert(
                        id.clone(),
                        job["provider_ref"].as_str().unwrap().to_string(),
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Three in four succeed; the rest exit 1.
    for (n, arn) in jobs.values().enumerate() {
        let code = if n % 4 == 3 { 1 } else { 0 };
        moto.stop(
            arn,
            Some(code),
            Some("EssentialContainerExited"),
            "Essential container in task exited",
        )
        .await;
    }
    let mut ended = BTreeMap::new();
    while ended.len() < JOBS {
        assert!(
            Instant::now() < deadline,
            "only {} of {JOBS} jobs ended",
            ended.len()
        );
        for id in &ids {
            if !ended.contains_key(id) {
                let job = gw.get(TOKEN_A, &format!("/v1/jobs/{id}")).await.1;
                if job["terminal"] == true {
                    ended.insert(id.clone(), job);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    let failed: Vec<_> = ended.values().filter(|j| j["state"] == "failed").collect();
    assert_eq!(failed.len(), JOBS / 4);
    assert!(failed.iter().all(|j| j["exit_code"] == 1
        && j["reason"] == "exited with code 1: Essential container in task exited"));
    assert!(ended
        .values()
        .filter(|j| j["state"] == "succeeded")
        .all(|j| j["exit_code"] == 0));

    let recorded = moto.recorded().await;
    let mut calls: BTreeMap<&str, usize> = BTreeMap::new();
    for (action, _) in &recorded {
        *calls.entry(action.as_str()).or_default() += 1;
    }
    let batches: Vec<usize> = recorded
        .iter()
        .filter(|(a, _)| a == "DescribeTasks")
        .map(|(_, body)| body["tasks"].as_array().map_or(0, Vec::len))
        .collect();
    let described: usize = batches.iter().sum();
    println!(
        "{JOBS} jobs on moto in {:.1} s: {calls:?}; DescribeTasks carried {:.1} tasks per call on average (at most {})",
        elapsed.as_secs_f64(),
        described as f64 / batches.len() as f64,
        batches.iter().max().unwrap()
    );
    // One task per job, as moto holds them (its recorder can drop a request now and then).
    let held = moto.tasks_by_tag("offload:job-id").await;
    assert_eq!(held.len(), JOBS, "{held:?}");
    assert!(held.values().all(|&n| n == 1), "{held:?}");
    assert!(
        calls.get("ListTasks").copied().unwrap_or(0) < 10,
        "fresh launches look nothing up; ListTasks is the health check only"
    );
    assert_eq!(
        calls["RegisterTaskDefinition"], 1,
        "one task definition for one image and size"
    );
    assert!(batches.iter().all(|&n| n <= 100), "{batches:?}");
    // Following each job on its own would take a DescribeTasks per job per round; batched,
    // a round of 200 live tasks is two calls.
    assert!(
        calls["DescribeTasks"] < JOBS,
        "{} DescribeTasks calls for {JOBS} jobs",
        calls["DescribeTasks"]
    );
}

/// A job alone whose run time is known costs few calls: after the look that sees it
/// running, the next comes when it is expected to end, not every few seconds in between
/// (before, a 6 s job alone took six DescribeTasks). The health check is the one at start:
/// answered observe rounds stand for it. The 6 s sleep is the task's run, which moto does
/// not play by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_alone_with_a_known_run_time_is_looked_at_when_it_should_end() {
    let moto = moto::Moto::start();
    let providers = moto.gateway_provider(&format!(
        "log_group = \"{}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/offload-execution\"\n\
         max_poll_interval_ms = 15000",
        moto.aws.log_group
    ));
    let gw = Gateway::start(&providers).await;
    moto.reset_recording().await;
    let (status, job) = gw
        .submit(
            TOKEN_A,
            json!({"image": "alpine:3", "provider": "fargate", "routing": {"expected_duration_seconds": 6}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let job = gw.wait_state(TOKEN_A, id, "running", 30).await;
    let arn = job["provider_ref"].as_str().unwrap().to_string();
    // The task runs its 6 s (nothing to wait on but the clock), then stops.
    tokio::time::sleep(Duration::from_secs(6)).await;
    moto.stop(&arn, Some(0), Some("EssentialContainerExited"), "done").await;
    let job = gw.wait_terminal(TOKEN_A, id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");

    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for (action, _) in moto.recorded().await {
        *calls.entry(action).or_default() += 1;
    }
    println!("one 6 s job: {calls:?}");
    assert_eq!(calls.get("RunTask"), Some(&1), "{calls:?}");
    assert!(calls["DescribeTasks"] <= 3, "one look to see it running, one at its expected end, one spare: {calls:?}");
    assert_eq!(calls.get("GetLogEvents"), Some(&1), "the tail in one call: {calls:?}");
    assert!(
        calls.get("ListTasks").copied().unwrap_or(0) <= 1,
        "no health check but the one at start: observe rounds answer: {calls:?}"
    );
}

/// A 30 s job alone, on the defaults and with nothing known of its run time, costs no more
/// calls than Airflow's EcsRunTaskOperator alone (8, measured on moto): each look comes
/// twice as long after the last, up to ECS's bound of 16 s, so the end is seen at the sixth
/// DescribeTasks, 31.5 s after the launch. The one-time calls of a fresh gateway (its
/// first health check, the task definition's lookup and registration) are counted apart.
/// The 30 s sleep is the task's run, which moto does not play by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_job_alone_on_the_defaults_costs_no_more_calls_than_the_operator() {
    let moto = moto::Moto::start();
    let providers = moto.gateway_provider(&format!(
        "log_group = \"{}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/offload-execution\"",
        moto.aws.log_group
    ));
    let gw = Gateway::start(&providers).await;
    moto.reset_recording().await;
    let (status, job) = gw
        .submit(TOKEN_A, json!({"image": "alpine:3", "provider": "fargate"}))
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let arn = loop {
        let job = gw.get(TOKEN_A, &format!("/v1/jobs/{id}")).await.1;
        if let Some(arn) = job["provider_ref"].as_str() {
            break arn.to_string();
        }
        assert!(Instant::now() < deadline, "not launched: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(30)).await;
    moto.stop(&arn, Some(0), Some("EssentialContainerExited"), "done").await;
    let job = gw.wait_terminal(TOKEN_A, id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");

    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for (action, _) in moto.recorded().await {
        *calls.entry(action).or_default() += 1;
    }
    println!("one 30 s job on the defaults: {calls:?}");
    let one_time = ["ListTasks", "DescribeTaskDefinition", "RegisterTaskDefinition"];
    assert!(
        calls.get("ListTasks").copied().unwrap_or(0) <= 1,
        "no health check but the one at start: {calls:?}"
    );
    let per_job: usize = calls
        .iter()
        .filter(|(action, _)| !one_time.contains(&action.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert!(per_job <= 8, "{per_job} calls: {calls:?}");
    assert_eq!(calls.get("GetLogEvents"), Some(&1), "the tail in one call: {calls:?}");
}

/// Jobs whose ends are seen in the same round have their log tails read together: one
/// FilterLogEvents for their streams instead of a GetLogEvents each (before, ten jobs
/// ending at once took ten), and each job keeps its own tail and result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tails_of_jobs_that_end_together_are_read_in_one_call() {
    let moto = moto::Moto::start();
    let (calls, _) = end_together(&moto, 10, || async {}).await;
    let filtered = calls.get("FilterLogEvents").copied().unwrap_or(0);
    let read = filtered + calls.get("GetLogEvents").copied().unwrap_or(0);
    assert!(filtered >= 1, "{calls:?}");
    // The ten ends may fall into two rounds, or three; never one call per job.
    assert!(read <= 3, "{read} log reads for 10 tails: {calls:?}");
}

/// When CloudWatch refuses the tails read together (a stream that does not exist), each
/// is read on its own, and every job still keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_refused_together_are_read_one_by_one() {
    let moto = moto::Moto::start();
    let refused = json!({"__type": "ResourceNotFoundException",
                         "message": "The specified log stream does not exist."});
    let refuse = || moto.fault("FilterLogEvents", 1, 400, refused.clone());
    let (calls, metrics) = end_together(&moto, 3, refuse).await;
    assert_eq!(calls.get("GetLogEvents"), Some(&3), "{calls:?}");
    // A refusal that only says "read them one by one" is not a provider error.
    let errors: Vec<_> = metrics
        .lines()
        .filter(|l| l.starts_with("offload_provider_errors_total") && l.contains("call=\"tails\""))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// Runs `n` jobs on a gateway on `moto`, writes each task's log (its number and an
/// `offload-result:` line), calls `before_stop`, then stops every task at once; checks
/// that each job succeeds with its own result, and returns the calls moto recorded after
/// the tasks were running.
async fn end_together<F: std::future::Future<Output = ()>>(
    moto: &moto::Moto,
    n: usize,
    before_stop: impl FnOnce() -> F,
) -> (BTreeMap<String, usize>, String) {
    let providers = moto.gateway_provider(&format!(
        "log_group = \"{}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/offload-execution\"\n\
         max_concurrency = {n}",
        moto.aws.log_group
    ));
    let gw = Gateway::start(&providers).await;
    let mut jobs = vec![];
    for _ in 0..n {
        let (status, job) = gw
            .submit(TOKEN_A, json!({"image": "alpine:3", "provider": "fargate"}))
            .await;
        assert_eq!(status, 201, "{job}");
        jobs.push(job["id"].as_str().unwrap().to_string());
    }
    let mut arns = vec![];
    for id in &jobs {
        let job = gw.wait_state(TOKEN_A, id, "running", 60).await;
        arns.push(job["provider_ref"].as_str().unwrap().to_string());
    }
    moto.reset_recording().await;
    for (i, arn) in arns.iter().enumerate() {
        let task_id = arn.rsplit('/').next().unwrap();
        let result = format!("offload-result: {{\"n\": {i}}}");
        moto.write_log(
            &format!("offload/main/{task_id}"),
            &[&format!("job {i}"), &result],
        )
        .await;
    }
    before_stop().await;
    for arn in &arns {
        moto.stop(arn, Some(0), Some("EssentialContainerExited"), "done")
            .await;
    }
    for (i, id) in jobs.iter().enumerate() {
        let job = gw.wait_terminal(TOKEN_A, id, 60).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["result"], json!({"n": i}), "job {i} kept another's tail: {job}");
    }
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for (action, _) in moto.recorded().await {
        *calls.entry(action).or_default() += 1;
    }
    println!("{n} jobs ending together: {calls:?}");
    (calls, gw.metrics_text().await)
}

/// Fargate Spot through the gateway: a task ECS stops with `SpotInterruption` is a
/// preemption. A spot job interrupted twice on the Fargate Spot provider runs a third
/// time on the on-demand one and succeeds, each task one attempt, its cost that of all
/// three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fargate_spot_task_interrupted_twice_ends_on_demand() {
    let moto = moto::Moto::start();
    let settings = format!(
        "log_group = \"{}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/offload-execution\"\n\
         poll_interval_ms = 100\nmax_poll_interval_ms = 200",
        moto.aws.log_group
    );
    let spot = moto
        .gateway_provider(&format!("{settings}\ncapacity = [{{ provider = \"FARGATE_SPOT\", weight = 1 }}]"))
        .replace("[providers.fargate]", "[providers.fargate-spot]");
    let gw = Gateway::start(&(spot + &moto.gateway_provider(&settings))).await;
    let (status, job) = gw
        .submit(TOKEN_A, json!({"image": "alpine:3", "command": ["true"], "routing": {"spot": "preferred"}}))
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let mut ran_on = vec![];
    for attempt in 1..=3 {
        let job = gw
            .wait_for(TOKEN_A, &id, 30, "the attempt's task", |j| {
                j["attempts"] == attempt && j["state"] == "running"
            })
            .await;
        let arn = job["provider_ref"].as_str().unwrap().to_string();
        ran_on.push(job["provider"].as_str().unwrap().to_string());
        match attempt {
            3 => moto.stop(&arn, Some(0), Some("EssentialContainerExited"), "done").await,
            _ => moto.stop(&arn, Some(0), Some("SpotInterruption"), "Your Spot Task was interrupted.").await,
        }
    }
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 3, "{job}");
    assert_eq!(ran_on, ["fargate-spot", "fargate-spot", "fargate"]);
    let earlier = job["cost"]["earlier"].as_array().unwrap();
    assert_eq!(earlier.len(), 2, "{job}");
    assert!(earlier.iter().all(|a| a["provider"] == "fargate-spot" && a["preempted"] == true), "{job}");
    let reasons = gw.event_reasons(TOKEN_A, &id).await;
    let interruptions = reasons
        .iter()
        .filter(|r| r.starts_with("preempted at fargate-spot") && r.contains("Fargate Spot interruption"))
        .count();
    assert_eq!(interruptions, 2, "{reasons:?}");
    let runs: Vec<_> = moto
        .recorded()
        .await
        .into_iter()
        .filter(|(action, _)| action == "RunTask")
        .collect();
    assert_eq!(runs.len(), 3, "one task per attempt: {runs:?}");
}

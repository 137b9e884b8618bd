//! Spot capacity: a preemption is the runtime's doing, not the job's failure. A preempted
//! job is launched again as a new attempt, on spot until `routing.max_preemptions`, then
//! where nothing is spot; every attempt's cost stays in the job's.

mod common;
#[cfg(feature = "aci")]
#[path = "../providers/aci/tests/fake_arm/mod.rs"]
mod fake_arm;

use common::{Gateway, TOKEN_A};
use serde_json::{json, Value};

/// `spotty` is spot, cheap, and preempts every workload halfway through its run; `steady`
/// is on-demand and dearer. Both bill a minute at least.
const PROVIDERS: &str = r#"
[providers.spotty]
kind = "sim"
spot = true
start_ms = 0
run_ms = 400
poll_interval_ms = 20
faults = { preempt = 1.0 }
price = { vcpu_hour = 3.6, min_billed_seconds = 60 }
[providers.steady]
kind = "sim"
start_ms = 0
run_ms = 400
poll_interval_ms = 20
price = { vcpu_hour = 7.2, min_billed_seconds = 60 }
"#;

fn spot_job() -> Value {
    json!({"image": "img", "command": ["true"], "resources": {"cpu": 1},
           "routing": {"spot": "preferred"}})
}

/// Preempted twice on spot, a job ends `succeeded` on on-demand with three attempts, and
/// the cost of all three: each preemption an event and a count in
/// `offload_preemptions_total`.
#[tokio::test]
async fn a_spot_job_preempted_twice_succeeds_on_demand_with_every_attempts_cost() {
    let gw = Gateway::start(PROVIDERS).await;
    let (status, job) = gw.submit(TOKEN_A, spot_job()).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 3, "{job}");
    assert_eq!(job["provider"], "steady", "{job}");
    let earlier = job["cost"]["earlier"].as_array().unwrap();
    assert_eq!(earlier.len(), 2, "{job}");
    for attempt in earlier {
        assert_eq!(attempt["provider"], "spotty", "{job}");
        assert_eq!(attempt["preempted"], true, "{job}");
        // A minute at $3.60 a vCPU-hour.
        assert!((attempt["usd"].as_f64().unwrap() - 0.06).abs() < 1e-9, "{job}");
    }
    // And its own minute on steady, $0.12.
    assert!((job["cost"]["usd"].as_f64().unwrap() - 0.24).abs() < 1e-9, "{job}");
    let reasons = gw.event_reasons(TOKEN_A, &id).await;
    let preemptions: Vec<_> = reasons.iter().filter(|r| r.starts_with("preempted at spotty")).collect();
    assert_eq!(preemptions.len(), 2, "{reasons:?}");
    assert!(preemptions[1].contains("where nothing is spot"), "{reasons:?}");
    assert_eq!(gw.metric("offload_preemptions_total{provider=\"spotty\"}").await, 2.0);
}

/// A job's timeout counts from its first dispatch, whatever attempts follow: preempted
/// again and again (here up to 10 times on spot), it fails for its timeout a second after
/// it was first dispatched, where each new attempt used to start the count again.
#[tokio::test]
async fn the_timeout_counts_from_the_first_dispatch_across_preemptions() {
    // Its own provider names: the metric of the test above counts `spotty`'s preemptions.
    let providers = PROVIDERS.replace("spotty", "spotty-timed");
    let gw = Gateway::start(&format!("[routing]\nmax_preemptions = 10\n{providers}")).await;
    let mut job = spot_job();
    job["timeout_seconds"] = json!(1);
    let (status, job) = gw.submit(TOKEN_A, job).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["reason"].as_str().unwrap().starts_with("timeout"), "{job}");
    assert!(job["attempts"].as_u64().unwrap() < 10, "{job}");
}

/// Preempted past the preemptions allowed on spot, where there is nowhere else to go, a
/// job ends `failed` once its attempts are used up, instead of being launched again for
/// ever (each preemption past them counts as a lost workload does).
#[tokio::test]
async fn preemptions_past_those_allowed_use_up_the_attempts_and_fail_the_job() {
    let gw = Gateway::start(
        "[providers.evicting]\nkind = \"sim\"\nstart_ms = 0\nrun_ms = 400\npoll_interval_ms = 20\n",
    )
    .await;
    let job = json!({"image": "img", "command": ["true"],
                     "provider_options": {"sim": {"preempt_after_ms": 0}}});
    let (status, job) = gw.submit(TOKEN_A, job).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = gw.wait_terminal(TOKEN_A, &id, 30).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["reason"].as_str().unwrap().contains("preempted"), "{job}");
    // Two preemptions allowed, then the three attempts of engine.max_attempts.
    assert_eq!(job["attempts"], 5, "{job}");
}

/// The same on ACI, through the real client against the fake ARM: a Spot group that Azure
/// evicts (and restarts, as it does, with no state saying so) is a preemption; twice, and
/// the job runs on the Regular provider, its cost that of all three groups.
#[cfg(feature = "aci")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aci_spot_group_evicted_twice_ends_on_a_regular_one() {
    let arm = fake_arm::FakeArm::start().await;
    let provider = |name: &str, priority: &str| {
        format!(
            "[providers.{name}]\nkind = \"aci\"\nsubscription_id = \"00000000-0000-0000-0000-000000000000\"\n\
             resource_group = \"offload\"\nlocation = \"westeurope\"\nendpoint = \"{}\"\naccess_token = \"{}\"\n\
             priority = \"{priority}\"\npoll_interval_ms = 50\n",
            arm.url,
            fake_arm::TOKEN
        )
    };
    let gw = Gateway::start(&(provider("aci-spot", "Spot") + &provider("aci", "Regular"))).await;
    let (status, job) = gw.submit(TOKEN_A, spot_job()).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let running = json!({"restartCount": 0, "currentState": {"state": "Running"}});
    let mut groups = vec![];
    for attempt in 1..=3 {
        let job = gw
            .wait_for(TOKEN_A, &id, 20, "the attempt's group", |j| {
                j["attempts"] == attempt && j["provider_ref"].is_string()
            })
            .await;
        let group = job["provider_ref"].as_str().unwrap().to_string();
        arm.set_state(&group, "Running", running.clone());
        gw.wait_state(TOKEN_A, &id, "running", 20).await;
        match attempt {
            3 => arm.set_state(&group, "Succeeded", json!({"restartCount": 0, "currentState":
                {"state": "Terminated", "exitCode": 0, "detailStatus": "Completed"}})),
            _ => arm.evict(&group),
        }
        groups.push((job["provider"].as_str().unwrap().to_string(), group));
    }
    let job = gw.wait_terminal(TOKEN_A, &id, 20).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 3, "{job}");
    let providers: Vec<&str> = groups.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(providers, ["aci-spot", "aci-spot", "aci"]);
    let earlier = job["cost"]["earlier"].as_array().unwrap();
    assert_eq!(earlier.len(), 2, "{job}");
    let mut earlier_usd = 0.0;
    for attempt in earlier {
        assert_eq!((attempt["provider"].as_str(), attempt["preempted"].as_bool()), (Some("aci-spot"), Some(true)), "{job}");
        earlier_usd += attempt["usd"].as_f64().unwrap();
    }
    let cost = &job["cost"];
    assert!((cost["earlier_usd"].as_f64().unwrap() - earlier_usd).abs() < 1e-12, "{job}");
    let own = cost["hourly_usd"].as_f64().unwrap() * cost["billed_seconds"].as_f64().unwrap() / 3600.0;
    // Kept to the micro-dollar, as every cost is.
    assert!((cost["usd"].as_f64().unwrap() - offload::model::usd(own + earlier_usd)).abs() < 1e-9, "{job}");
    let reasons = gw.event_reasons(TOKEN_A, &id).await;
    let evictions = reasons.iter().filter(|r| r.starts_with("preempted at aci-spot") && r.contains("ACI Spot eviction")).count();
    assert_eq!(evictions, 2, "{reasons:?}");
    assert_eq!(gw.metric("offload_preemptions_total{provider=\"aci-spot\"}").await, 2.0);
    // The evicted groups, which Azure had restarted, are deleted: the job runs once.
    for (_, group) in &groups[..2] {
        common::until(&format!("{group} deleted"), || arm.group(group).is_none()).await;
    }
}

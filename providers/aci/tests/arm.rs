//! The ACI provider through the real azure_mgmt_containerinstance client against the fake
//! ARM server in tests/fake_arm (no ACI emulator exists).

mod fake_arm;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fake_arm::{FakeArm, Fault};
use offload_aci::Aci;
use offload_provider::conformance::launch;
use offload_provider::{
    Gpu, Handle, LogQuery, Phase, Provider, ProviderError, Resources, StepRole,
    WorkloadSpec,
};
use serde_json::{json, Value};

async fn provider(arm: &FakeArm, extra: Value) -> Aci {
    let base = json!({
        "subscription_id": "00000000-0000-0000-0000-000000000000",
        "resource_group": "offload",
        "location": "westeurope",
        "endpoint": arm.url,
        "access_token": fake_arm::TOKEN,
        "tags": {"team": "data"},
    });
    offload_provider::conformance::config::<offload_aci::Config>(base, extra)
        .build()
        .await
        .unwrap()
}

fn spec() -> WorkloadSpec {
    WorkloadSpec {
        name: None,
        image: "alpine:3".into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo hi".into()],
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        resources: Resources {
            cpu: 1.0,
            memory_bytes: 1536 << 20,
            gpu: None,
            ephemeral_storage_bytes: None,
        },
        timeout_seconds: None,
        labels: BTreeMap::from([("dag_id".into(), "etl".into())]),
        provider_options: None,
        steps: None,
    }
}

async fn phase(aci: &Aci, handle: &Handle) -> Phase {
    aci.observe(std::slice::from_ref(handle))
        .await
        .unwrap()
        .pop()
        .unwrap()
        .phase
}

fn terminated(code: i32, detail: &str) -> Value {
    json!({"restartCount": 0, "currentState": {"state": "Terminated", "exitCode": code, "detailStatus": detail}})
}

fn puts(arm: &FakeArm) -> Vec<Value> {
    arm.requests()
        .into_iter()
        .filter(|(m, _, _)| m == "PUT")
        .filter_map(|(_, _, b)| b)
        .collect()
}

#[tokio::test]
async fn a_group_runs_and_ends_with_its_exit_code() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    aci.check()
        .await
        .expect("the token and api-version are accepted");
    let ok = aci.launch(&launch("offload-a-1", spec())).await.unwrap();
    assert_eq!(ok.provider_ref, "offload-a-1");
    assert_eq!(phase(&aci, &ok).await, Phase::Starting { reason: None });
    arm.set_state(
        "offload-a-1",
        "Running",
        json!({"currentState": {"state": "Running"}}),
    );
    assert_eq!(phase(&aci, &ok).await, Phase::Running);
    arm.set_state("offload-a-1", "Succeeded", terminated(0, "Completed"));
    assert_eq!(
        phase(&aci, &ok).await,
        Phase::Exited {
            exit_code: Some(0),
            reason: None
        }
    );

    let bad = aci.launch(&launch("offload-b-1", spec())).await.unwrap();
    arm.set_state("offload-b-1", "Failed", terminated(2, "Error"));
    assert_eq!(
        phase(&aci, &bad).await,
        Phase::Exited {
            exit_code: Some(2),
            reason: Some("exited with code 2: Error".into())
        }
    );
    let oom = aci.launch(&launch("offload-c-1", spec())).await.unwrap();
    arm.set_state("offload-c-1", "Failed", terminated(137, "OOMKilled"));
    assert_eq!(
        phase(&aci, &oom).await,
        Phase::Exited {
            exit_code: Some(137),
            reason: Some("OOMKilled: OOMKilled".into())
        }
    );

    // The PUT: restartPolicy Never, sizes, env with the secret as secureValue, tags.
    let body = &puts(&arm)[0];
    let container = &body["properties"]["containers"][0]["properties"];
    assert_eq!(body["properties"]["restartPolicy"], "Never");
    assert_eq!(body["location"], "westeurope");
    assert_eq!(
        container["resources"]["requests"],
        json!({"cpu": 1.0, "memoryInGB": 1.5})
    );
    assert_eq!(container["command"], json!(["sh", "-c", "echo hi"]));
    assert_eq!(
        container["environmentVariables"],
        json!([{"name": "GREETING", "value": "hello"}, {"name": "TOKEN", "secureValue": "s3cr3t"}])
    );
    assert_eq!(
        body["tags"]["offload-job-id"],
        "0193f0c2-0000-7000-8000-000000000001"
    );
    assert_eq!(body["tags"]["label-dag_id"], "etl");
    assert_eq!(body["tags"]["team"], "data");
}

#[tokio::test]
async fn the_published_examples_parse_into_observations() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    let handle = aci.launch(&launch("offload-e-1", spec())).await.unwrap();
    arm.serve_example("offload-e-1", "ContainerGroupsGet_Succeeded.json");
    assert_eq!(
        phase(&aci, &handle).await,
        Phase::Running,
        "provisioned, no container ended yet"
    );
    arm.serve_example("offload-e-1", "ContainerGroupsGet_Failed.json");
    assert_eq!(
        phase(&aci, &handle).await,
        Phase::Exited {
            exit_code: None,
            reason: Some("FailedMount: Output: mount error(2): Permission denied".into())
        }
    );
    // ContainerListLogs.json's shape carries the log.
    arm.append_log("offload-e-1", "log content");
    let chunk = aci.logs(&handle, &Default::default()).await.unwrap();
    assert_eq!(chunk.text, "log content");
}

#[tokio::test]
async fn secure_values_are_never_echoed() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    let handle = aci.launch(&launch("offload-s-1", spec())).await.unwrap();
    let observed = format!(
        "{:?}",
        aci.observe(std::slice::from_ref(&handle)).await.unwrap()
    );
    assert!(!observed.contains("s3cr3t"));
    let logged = launch("offload-s-2", spec());
    assert!(
        !format!("{logged:?}").contains("s3cr3t"),
        "a launch's Debug (what logs see) hides secrets"
    );
    // ARM itself never returns a secureValue, and the provider reads nothing else back.
    let get = arm
        .requests()
        .into_iter()
        .filter(|(m, _, _)| m == "GET")
        .count();
    assert!(get >= 1);
}

#[tokio::test]
async fn gpu_requests_need_an_allowed_sku() {
    let arm = FakeArm::start().await;
    let mut gpu = spec();
    gpu.resources.gpu = Some(Gpu {
        count: 1,
        kind: Some("V100".into()),
    });
    // The default: no GPU SKUs (ACI GPU was retired), so routing sends GPU work elsewhere.
    let plain = provider(&arm, json!({})).await;
    let err = plain.validate(&gpu).unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("no GPU SKUs")),
        "{err:?}"
    );
    let allowed = provider(&arm, json!({"gpu_skus": ["V100"]})).await;
    allowed
        .launch(&launch("offload-g-1", gpu.clone()))
        .await
        .unwrap();
    let body = &puts(&arm)[0];
    assert_eq!(
        body["properties"]["containers"][0]["properties"]["resources"]["requests"]["gpu"],
        json!({"count": 1, "sku": "V100"})
    );
    gpu.resources.gpu = Some(Gpu {
        count: 1,
        kind: Some("K80".into()),
    });
    let err = allowed.validate(&gpu).unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("K80 is not one of V100")),
        "{err:?}"
    );
    let mut big = spec();
    big.resources.cpu = 8.0;
    let err = allowed.validate(&big).unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("limit of 4")),
        "{err:?}"
    );
}

#[tokio::test]
async fn throttling_is_waited_out_then_reported() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    let handle = aci.launch(&launch("offload-t-1", spec())).await.unwrap();
    // One 429 with Retry-After: the SDK waits it out and the call succeeds.
    arm.throttle(1, 1);
    let started = Instant::now();
    assert_eq!(phase(&aci, &handle).await, Phase::Starting { reason: None });
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    // More than the SDK retries: the engine is told to back off.
    arm.throttle(10, 0);
    let err = aci.observe(&[handle]).await.unwrap_err();
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
}

#[tokio::test]
async fn a_relaunch_after_a_crash_reuses_the_group() {
    let arm = FakeArm::start().await;
    let first = provider(&arm, json!({})).await;
    let handle = first.launch(&launch("offload-k-1", spec())).await.unwrap();
    let second = provider(&arm, json!({})).await;
    assert_eq!(
        second.launch(&launch("offload-k-1", spec())).await.unwrap(),
        handle
    );
    assert_eq!(puts(&arm).len(), 1);
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_not_sent_again() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    // ACI creates the group; the answer is lost on the way back.
    arm.fault("PUT", "/offload-r-1", 1, Fault::Drop);
    let mut fresh = launch("offload-r-1", spec());
    fresh.fresh = true;
    let err = aci.launch(&fresh).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    assert_eq!(puts(&arm).len(), 1, "the create is sent once");
    // The engine launches the key again: the group is found and adopted, not replaced.
    let handle = aci.launch(&launch("offload-r-1", spec())).await.unwrap();
    assert_eq!(handle.provider_ref, "offload-r-1");
    assert_eq!(puts(&arm).len(), 1);
    assert_eq!(arm.replaced(), 0);
}

#[tokio::test]
async fn two_replicas_racing_one_key_create_one_group() {
    let arm = FakeArm::start().await;
    let (a, b) = (
        provider(&arm, json!({})).await,
        provider(&arm, json!({})).await,
    );
    // Each replica believes it stored the key a moment ago (one lost its lease while
    // paused): both launch it as fresh, at once.
    let mut fresh = launch("offload-r-2", spec());
    fresh.fresh = true;
    let (from_a, from_b) = futures::join!(a.launch(&fresh), b.launch(&fresh));
    assert_eq!(from_a.unwrap(), from_b.unwrap());
    assert_eq!(
        arm.replaced(),
        0,
        "the second create did not replace the first"
    );
    assert!(arm.group("offload-r-2").is_some());
}

#[tokio::test]
async fn one_groups_failed_read_leaves_only_it_out_of_a_round() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    let a = aci.launch(&launch("offload-f-1", spec())).await.unwrap();
    let b = aci.launch(&launch("offload-f-2", spec())).await.unwrap();
    arm.set_state(
        "offload-f-2",
        "Running",
        json!({"currentState": {"state": "Running"}}),
    );
    let refused = Fault::Refuse(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
    );
    arm.fault("GET", "/offload-f-1", 100, refused);
    let seen = aci.observe(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((&seen[0].handle, &seen[0].phase), (&b, &Phase::Running));
    // When every read fails, the round fails.
    let err = aci.observe(std::slice::from_ref(&a)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn a_read_that_never_answers_times_out_and_is_sent_again() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({"request_timeout_seconds": 1})).await;
    let handle = aci.launch(&launch("offload-h-1", spec())).await.unwrap();
    arm.fault("GET", "/offload-h-1", 1, Fault::Hang);
    let started = Instant::now();
    let seen = tokio::time::timeout(
        Duration::from_secs(30),
        aci.observe(std::slice::from_ref(&handle)),
    )
    .await
    .expect("the hung read timed out");
    assert_eq!(seen.unwrap()[0].phase, Phase::Starting { reason: None });
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the first read waited its timeout"
    );
}

#[tokio::test]
async fn cancel_release_and_the_orphan_listing() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    let a = aci.launch(&launch("offload-x-1", spec())).await.unwrap();
    let b = aci.launch(&launch("offload-x-2", spec())).await.unwrap();
    let managed: Vec<String> = aci
        .managed()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.key)
        .collect();
    assert_eq!(managed, ["offload-x-1", "offload-x-2"]);
    aci.cancel(&a, "cancelled by tenant dev").await.unwrap();
    let calls: Vec<String> = arm
        .requests()
        .into_iter()
        .map(|(m, p, _)| format!("{m} {}", p.split('?').next().unwrap()))
        .collect();
    assert!(calls
        .iter()
        .any(|c| c.starts_with("POST") && c.ends_with("/containerGroups/offload-x-1/stop")));
    assert!(
        !calls.iter().any(|c| c.starts_with("DELETE")),
        "cancel only stops: {calls:#?}"
    );
    assert_eq!(
        phase(&aci, &a).await,
        Phase::Exited {
            exit_code: None,
            reason: Some("container group stopped".into())
        }
    );
    aci.release(&a).await.unwrap();
    aci.release(&b).await.unwrap();
    assert!(arm.group("offload-x-1").is_none() && arm.group("offload-x-2").is_none());
    // Both are idempotent (DELETE of a group already gone is a 204).
    aci.release(&b).await.unwrap();
    aci.cancel(&a, "again").await.unwrap();
}

#[tokio::test]
async fn a_cancelled_group_keeps_its_log_tail_until_release() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    let handle = aci.launch(&launch("offload-y-1", spec())).await.unwrap();
    arm.set_state(
        "offload-y-1",
        "Running",
        json!({"currentState": {"state": "Running"}}),
    );
    arm.append_log("offload-y-1", "step 1\nstep 2\n");
    // What the engine does on a cancel or a timeout: cancel, read the tail, release later.
    aci.cancel(&handle, "timeout: still running after 60 s")
        .await
        .unwrap();
    let group = arm.group("offload-y-1").expect("a cancelled group is kept");
    assert_eq!(group["properties"]["instanceView"]["state"], "Stopped");
    let tail = LogQuery {
        cursor: None,
        tail_bytes: Some(7),
    };
    assert_eq!(aci.logs(&handle, &tail).await.unwrap().text, "step 2\n");
    assert_eq!(
        aci.logs(&handle, &LogQuery::default()).await.unwrap().text,
        "step 1\nstep 2\n"
    );
    // ACI recycles a stopped group's containers: its own log API has nothing left, so the
    // tail above is the copy read before the stop (another gateway process sees none).
    let other = provider(&arm, json!({})).await;
    assert_eq!(other.logs(&handle, &tail).await.unwrap().text, "");
    // A cancel repeated after the stop does not replace the copy with the empty log.
    aci.cancel(&handle, "again").await.unwrap();
    assert_eq!(aci.logs(&handle, &tail).await.unwrap().text, "step 2\n");

    aci.release(&handle).await.unwrap();
    assert!(arm.group("offload-y-1").is_none());
    assert_eq!(aci.logs(&handle, &tail).await.unwrap().text, "");
}

#[tokio::test]
async fn a_group_that_ended_keeps_its_log_through_a_cancel() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    let handle = aci.launch(&launch("offload-y-2", spec())).await.unwrap();
    arm.set_state("offload-y-2", "Succeeded", terminated(0, "Completed"));
    arm.append_log("offload-y-2", "done\n");
    aci.cancel(&handle, "cancelled by tenant dev")
        .await
        .unwrap();
    // A stop leaves a group that already ended as it is.
    let other = provider(&arm, json!({})).await;
    assert_eq!(
        other
            .logs(&handle, &LogQuery::default())
            .await
            .unwrap()
            .text,
        "done\n"
    );
    assert_eq!(
        phase(&aci, &handle).await,
        Phase::Exited {
            exit_code: Some(0),
            reason: None
        }
    );
}

#[tokio::test]
async fn a_job_cannot_choose_subnets_identities_or_registries() {
    let arm = FakeArm::start().await;
    let aci = provider(
        &arm,
        json!({"subnet_ids": ["/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/jobs"],
               "managed_identity": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/jobs"}),
    )
    .await;
    for options in [
        json!({"subnet_ids": ["/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/admin"]}),
        json!({"managed_identity": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/admin"}),
        json!({"registries": [{"server": "r.azurecr.io", "identity": "admin"}]}),
        json!("anything"),
    ] {
        let mut refused = spec();
        refused.provider_options = Some(options.clone());
        for err in [
            aci.validate(&refused).unwrap_err(),
            aci.launch(&launch("offload-z-2", refused))
                .await
                .unwrap_err(),
        ] {
            assert!(
                matches!(&err, ProviderError::InvalidSpec(m) if m.starts_with("provider_options.aci: ACI takes no per-job options")),
                "{options}: {err:?}"
            );
        }
    }
    assert!(arm.group("offload-z-2").is_none());
    // No options (or an empty object): the group gets the operator's subnet and identity.
    let mut plain = spec();
    plain.provider_options = Some(json!({}));
    aci.launch(&launch("offload-z-1", plain)).await.unwrap();
    let body = &puts(&arm)[0];
    assert_eq!(
        body["properties"]["subnetIds"][0]["id"],
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/jobs"
    );
    assert!(body["identity"]["userAssignedIdentities"]
        .as_object()
        .unwrap()
        .contains_key("/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/jobs"));
}

#[tokio::test]
async fn logs_follow_with_the_cursor() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    let handle = aci.launch(&launch("offload-l-1", spec())).await.unwrap();
    offload_provider::conformance::log_cursor_follows(&aci, &handle, |text| {
        arm.append_log("offload-l-1", text);
        async {}
    })
    .await;
}

#[tokio::test]
async fn reads_for_200_groups_stay_inside_the_arm_budget() {
    let arm = FakeArm::start().await;
    // The provider's defaults against a bucket like ARM's: 250, refilled at 25 per second.
    let aci = provider(&arm, json!({})).await;
    let started = Instant::now();
    let mut handles = vec![];
    for i in 0..200 {
        handles.push(
            aci.launch(&launch(&format!("offload-n-{i}"), spec()))
                .await
                .unwrap(),
        );
    }
    let seen = aci.observe(&handles).await.unwrap();
    assert_eq!(seen.len(), 200);
    let elapsed = started.elapsed().as_secs_f64();
    let reads = arm.requests().iter().filter(|(m, _, _)| m == "GET").count();
    println!(
        "200 groups launched and observed once in {elapsed:.1} s: {reads} reads, {:.1}/s",
        reads as f64 / elapsed
    );
    assert_eq!(
        reads, 400,
        "one GET per launch (the adoption check) and one per group per round"
    );
    assert_eq!(
        arm.over_budget(),
        0,
        "no read went over the subscription's budget"
    );
}

/// A Spot group that Azure evicted (and restarted, as it does, with no state saying so)
/// is a preemption: its container's restart count went up though offload's groups never
/// restart. A Regular group with a restart is not, nor a Spot group that finished its
/// work after one.
#[tokio::test]
async fn a_spot_groups_eviction_is_a_preemption() {
    let arm = FakeArm::start().await;
    let spot = provider(&arm, json!({"priority": "Spot"})).await;
    let evicted = spot.launch(&launch("offload-s-1", spec())).await.unwrap();
    arm.set_state("offload-s-1", "Running", json!({"restartCount": 0, "currentState": {"state": "Running"}}));
    assert_eq!(phase(&spot, &evicted).await, Phase::Running);
    arm.evict("offload-s-1");
    match phase(&spot, &evicted).await {
        Phase::Preempted { reason } => assert!(reason.starts_with("ACI Spot eviction"), "{reason}"),
        other => panic!("{other:?}"),
    }
    arm.set_state("offload-s-1", "Succeeded", json!({"restartCount": 1, "currentState":
        {"state": "Terminated", "exitCode": 0, "detailStatus": "Completed"}}));
    assert_eq!(phase(&spot, &evicted).await, Phase::Exited { exit_code: Some(0), reason: None });

    let regular = provider(&arm, json!({})).await;
    let restarted = regular.launch(&launch("offload-r-1", spec())).await.unwrap();
    arm.set_state("offload-r-1", "Running", json!({"restartCount": 1, "currentState": {"state": "Running"}}));
    assert_eq!(phase(&regular, &restarted).await, Phase::Running);
}

/// A TES-shaped job ([`offload_provider::conformance::tes_plan`]).
fn steps_spec() -> WorkloadSpec {
    WorkloadSpec {
        steps: Some(offload_provider::conformance::tes_plan("echo hi; exit 3")),
        command: vec![],
        args: vec![],
        ..spec()
    }
}

async fn steps_provider(arm: &FakeArm) -> Aci {
    provider(
        arm,
        json!({"filer_image": "offload:1", "filer_secrets": {"AZURE_STORAGE_ACCOUNT_KEY": "k3y"}}),
    )
    .await
}

fn ran(code: i32, start: &str, end: &str) -> Value {
    json!({"state": "Terminated", "exitCode": code, "startTime": start, "finishTime": end})
}

/// A job of several steps is one group: every step but the last an init container, in
/// order, the last `main` with the group's resources; all mount the shared folders as
/// emptyDir volumes; the filer's alone get the deployment's secrets (as secure values, so
/// never shown); an executor's working directory goes through the shell, ACI having none.
#[tokio::test]
async fn steps_are_init_containers_in_order_sharing_empty_dirs() {
    let arm = FakeArm::start().await;
    let aci = steps_provider(&arm).await;
    let job = steps_spec();
    aci.validate(&job).unwrap();
    let handle = aci.launch(&launch("offload-st-1", job)).await.unwrap();
    let body = puts(&arm).pop().unwrap();
    let props = &body["properties"];
    let init = props["initContainers"].as_array().unwrap();
    let names: Vec<&Value> = init.iter().map(|c| &c["name"]).collect();
    assert_eq!(names, ["step-0", "step-1", "step-2"]);
    assert_eq!(props["containers"][0]["name"], "main");
    let images: Vec<&Value> = init.iter().map(|c| &c["properties"]["image"]).collect();
    assert_eq!(images, ["offload:1", "alpine", "busybox"]);
    assert_eq!(props["containers"][0]["properties"]["image"], "offload:1");
    assert_eq!(
        props["containers"][0]["properties"]["resources"],
        json!({"requests": {"cpu": 1.0, "memoryInGB": 1.5}})
    );
    assert_eq!(props["volumes"], json!([{"name": "steps-0", "emptyDir": {}}]));
    for c in init.iter().chain(props["containers"].as_array().unwrap()) {
        assert_eq!(
            c["properties"]["volumeMounts"],
            json!([{"name": "steps-0", "mountPath": "/data"}])
        );
    }
    assert_eq!(body["tags"]["offload-steps"], "stage_in,executor,executor,stage_out");
    assert_eq!(
        init[0]["properties"]["command"],
        json!(["offload", "filer", "stage-in"])
    );
    let env = |c: &Value| -> BTreeMap<String, Value> {
        c["properties"]["environmentVariables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
            .collect()
    };
    let filer = env(&init[0]);
    assert_eq!(filer["AZURE_STORAGE_ACCOUNT_KEY"]["secureValue"], "k3y");
    assert_eq!(filer["OFFLOAD_FILER_ROOT"]["value"], "/");
    assert!(!filer.contains_key("TOKEN"), "the filer gets no job secret");
    let first = env(&init[1]);
    assert_eq!(first["TOKEN"]["secureValue"], "s3cr3t");
    assert!(!first.contains_key("AZURE_STORAGE_ACCOUNT_KEY"), "executors get no filer secret");
    assert_eq!(first["OFFLOAD_WORKDIR"]["value"], "/data");
    let command = &init[1]["properties"]["command"];
    assert_eq!(command[0], "/bin/sh");
    assert!(command[2].as_str().unwrap().contains(r#"cd "$OFFLOAD_WORKDIR""#));
    let shown = format!("{:?}", aci.observe(std::slice::from_ref(&handle)).await.unwrap());
    assert!(!shown.contains("k3y") && !shown.contains("s3cr3t"));

    // All went well, the second executor's error ignored: its code is kept all the same.
    arm.set_step_state("offload-st-1", "step-0", ran(0, "2026-12-08T10:00:00Z", "2026-12-08T10:00:02Z"));
    arm.set_step_state("offload-st-1", "step-1", ran(0, "2026-12-08T10:00:03Z", "2026-12-08T10:00:05Z"));
    arm.set_step_state("offload-st-1", "step-2", ran(0, "2026-12-08T10:00:06Z", "2026-12-08T10:00:07Z"));
    arm.append_container_log("offload-st-1", "step-2", "hi\noffload-step-exit: 3\n");
    arm.set_state("offload-st-1", "Succeeded", terminated(0, "Completed"));
    assert_eq!(phase(&aci, &handle).await, Phase::Exited { exit_code: Some(0), reason: None });
    let runs = aci.step_runs(&handle, 1 << 16).await.unwrap();
    use StepRole::*;
    let roles: Vec<_> = runs.iter().map(|r| r.role).collect();
    assert_eq!(roles, [StageIn, Executor, Executor, StageOut]);
    let codes: Vec<_> = runs.iter().map(|r| r.exit_code).collect();
    assert_eq!(codes, [Some(0), Some(0), Some(3), Some(0)]);
    assert_eq!(runs[2].log, "hi\noffload-step-exit: 3\n");
    let at = |t: &str| offload_provider::rfc3339(t);
    assert_eq!(runs[1].started, at("2026-12-08T10:00:03Z"));
    assert_eq!(runs[1].finished, at("2026-12-08T10:00:05Z"));
}

/// The first step that exits non-zero ends the group: an executor's code is the job's; a
/// filer's failure is no code of the job's, and its reason is the filer's own line, from
/// its init container's log.
#[tokio::test]
async fn a_failed_step_ends_the_group_and_a_failed_filer_says_why() {
    let arm = FakeArm::start().await;
    let aci = steps_provider(&arm).await;
    let executor = aci.launch(&launch("offload-sf-1", steps_spec())).await.unwrap();
    arm.set_step_state("offload-sf-1", "step-0", ran(0, "2026-12-08T10:00:00Z", "2026-12-08T10:00:01Z"));
    arm.set_step_state("offload-sf-1", "step-1", ran(5, "2026-12-08T10:00:02Z", "2026-12-08T10:00:03Z"));
    arm.set_state("offload-sf-1", "Failed", json!({"currentState": {"state": "Waiting"}}));
    assert_eq!(
        phase(&aci, &executor).await,
        Phase::Exited { exit_code: Some(5), reason: Some("exited with code 5".into()) }
    );
    let codes = offload_provider::conformance::step_codes(&aci, &executor).await;
    assert_eq!(codes, [Some(0), Some(5), None, None]);

    let filer = aci.launch(&launch("offload-sf-2", steps_spec())).await.unwrap();
    arm.set_step_state("offload-sf-2", "step-0", ran(1, "2026-12-08T10:00:00Z", "2026-12-08T10:00:01Z"));
    arm.append_container_log(
        "offload-sf-2",
        "step-0",
        "reading\noffload-filer: az://box/in.txt: the blob does not exist\n",
    );
    arm.set_state("offload-sf-2", "Failed", json!({"currentState": {"state": "Waiting"}}));
    // A log that cannot be read leaves the group's own reason, and the round whole.
    arm.fault("GET", "/containers/step-0/logs", 1, Fault::Refuse(axum::http::StatusCode::BAD_REQUEST, "BadRequest"));
    assert_eq!(
        phase(&aci, &filer).await,
        Phase::Exited {
            exit_code: None,
            reason: Some("staging the inputs failed: its container step-0 exited with code 1".into()),
        }
    );
    assert_eq!(
        phase(&aci, &filer).await,
        Phase::Exited {
            exit_code: None,
            reason: Some("staging the inputs failed: az://box/in.txt: the blob does not exist".into()),
        }
    );
}

#[tokio::test]
async fn steps_need_the_filer_image_for_files() {
    let arm = FakeArm::start().await;
    let aci = provider(&arm, json!({})).await;
    match aci.validate(&steps_spec()) {
        Err(ProviderError::InvalidSpec(why)) => {
            assert!(why.starts_with("steps: ") && why.contains("filer_image"), "{why}")
        }
        other => panic!("not refused: {other:?}"),
    }
    assert!(aci.launch(&launch("offload-nf-1", steps_spec())).await.is_err());
    assert!(puts(&arm).is_empty(), "nothing was created");
}

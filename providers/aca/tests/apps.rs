//! The Container Apps provider through the real `azure_mgmt_app` client against the fake
//! ARM (and Log Analytics) server in tests/fake_apps; no Container Apps emulator exists.

mod fake_apps;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fake_apps::{FakeApps, Fault};
use offload_aca::Aca;
use offload_provider::conformance::launch;
use offload_provider::{
    Gpu, Handle, Launch, LogQuery, Phase, Provider, ProviderError, Resources, WorkloadSpec,
};
use serde_json::{json, Value};

const ENVIRONMENT: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/offload/providers/Microsoft.App/managedEnvironments/batch";

async fn provider(apps: &FakeApps, extra: Value) -> Aca {
    let base = json!({
        "subscription_id": "00000000-0000-0000-0000-000000000000",
        "resource_group": "offload",
        "location": "westus3",
        "environment_id": ENVIRONMENT,
        "endpoint": apps.url,
        "access_token": fake_apps::TOKEN,
        "tags": {"team": "data"},
        "gpu_profiles": [{"name": "gpu-t4", "type": "Consumption-GPU-NC8as-T4"}],
        "log_analytics": {"workspace_id": fake_apps::WORKSPACE, "endpoint": apps.url},
    });
    offload_provider::conformance::config::<offload_aca::Config>(base, extra)
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
            cpu: 0.3,
            memory_bytes: 1536 << 20,
            gpu: None,
            ephemeral_storage_bytes: None,
        },
        timeout_seconds: Some(600),
        labels: BTreeMap::from([("dag_id".into(), "etl".into())]),
        provider_options: None,
        steps: None,
    }
}

fn gpu_spec(kind: Option<&str>) -> WorkloadSpec {
    WorkloadSpec {
        resources: Resources {
            cpu: 4.0,
            memory_bytes: 16 << 30,
            gpu: Some(Gpu {
                count: 1,
                kind: kind.map(str::to_string),
            }),
            ephemeral_storage_bytes: None,
        },
        ..spec()
    }
}

/// Launches as the engine does: again, not fresh, after each `Throttled` (what a launch
/// answers while its job is still provisioning). The fake finishes provisioning at the
/// first read after the PUT, so this ends.
async fn launched(aca: &Aca, launch: &Launch) -> Result<Handle, ProviderError> {
    let mut launch = launch.clone();
    loop {
        match aca.launch(&launch).await {
            Err(ProviderError::Throttled { .. }) => launch.fresh = false,
            answered => return answered,
        }
    }
}

async fn phase(aca: &Aca, handle: &Handle) -> Phase {
    aca.observe(std::slice::from_ref(handle))
        .await
        .unwrap()
        .pop()
        .unwrap()
        .phase
}

fn calls(apps: &FakeApps, method: &str, suffix: &str) -> usize {
    apps.requests()
        .iter()
        .filter(|(m, path, _)| m == method && path.split('?').next().unwrap().ends_with(suffix))
        .count()
}

#[tokio::test]
async fn a_job_runs_once_and_ends_with_its_exit_code() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({})).await;
    aca.check()
        .await
        .expect("the token and api-version are accepted");
    let mut fresh = launch("offload-a-1", spec());
    fresh.fresh = true;
    let ok = launched(&aca, &fresh).await.unwrap();
    let name = ok.provider_ref.clone();
    assert!(name.len() < 32 && name.starts_with("offload-"), "{name}");
    // Created, provisioned (a read of the job), then started once.
    assert_eq!(calls(&apps, "PUT", &name), 1);
    assert_eq!(calls(&apps, "POST", "/start"), 1);
    assert_eq!(apps.executions(&name).len(), 1);
    assert!(matches!(phase(&aca, &ok).await, Phase::Starting { .. }));
    apps.set_execution(&name, "Running", json!({"status": "Running"}));
    assert_eq!(phase(&aca, &ok).await, Phase::Running);
    apps.set_execution(
        &name,
        "Succeeded",
        json!({"status": "Succeeded", "code": 0, "additionalInformation": "Completed"}),
    );
    let seen = aca
        .observe(std::slice::from_ref(&ok))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        seen.phase,
        Phase::Exited {
            exit_code: Some(0),
            reason: None
        }
    );
    assert!(
        seen.ran.is_some(),
        "the execution's start and end times are its billed run"
    );

    let bad = launched(&aca, &launch("offload-b-1", spec()))
        .await
        .unwrap();
    apps.set_execution(
        &bad.provider_ref,
        "Failed",
        json!({"status": "Failed", "code": 3, "additionalInformation": "Error"}),
    );
    assert_eq!(
        phase(&aca, &bad).await,
        Phase::Exited {
            exit_code: Some(3),
            reason: Some("exited with code 3: Error".into())
        }
    );

    // The job: manual, no retries, the replica timeout beyond the engine's, sizes rounded
    // to the Consumption pair, env, the secret as a secret reference, the key and labels as tags.
    let job = apps.job(&name).unwrap();
    let props = &job["properties"];
    assert_eq!(props["environmentId"], ENVIRONMENT);
    assert_eq!(props["workloadProfileName"], "Consumption");
    let config = &props["configuration"];
    assert_eq!(config["triggerType"], "Manual");
    assert_eq!(config["replicaRetryLimit"], 0);
    assert_eq!(config["replicaTimeout"], 660);
    assert_eq!(
        config["manualTriggerConfig"],
        json!({"replicaCompletionCount": 1, "parallelism": 1})
    );
    let container = &props["template"]["containers"][0];
    assert_eq!(container["image"], "alpine:3");
    assert_eq!(container["command"], json!(["sh", "-c"]));
    assert_eq!(container["args"], json!(["echo hi"]));
    assert_eq!(
        container["resources"],
        json!({"cpu": 0.75, "memory": "1.5Gi"})
    );
    assert_eq!(
        container["env"],
        json!([{"name": "GREETING", "value": "hello"}, {"name": "TOKEN", "secretRef": "env-0"}])
    );
    assert_eq!(
        config["secrets"],
        json!([{"name": "env-0", "value": "s3cr3t"}])
    );
    assert_eq!(job["tags"]["offload-launch-key"], "offload-a-1");
    assert_eq!(job["tags"]["label-dag_id"], "etl");
    assert_eq!(job["tags"]["team"], "data");
    assert_eq!(job["tags"]["managed-by"], "offload");
}

#[tokio::test]
async fn secrets_go_in_as_job_secrets_never_as_plain_values() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({"registries": [{"server": "r.azurecr.io", "username": "u", "password": "registry-password"}]})).await;
    let handle = launched(&aca, &launch("offload-s-1", spec()))
        .await
        .unwrap();
    let job = apps.job(&handle.provider_ref).unwrap();
    let config = &job["properties"]["configuration"];
    // The job's secrets hold the values (ARM never returns them); the container and the
    // registry only name them.
    assert_eq!(
        config["secrets"],
        json!([{"name": "env-0", "value": "s3cr3t"}, {"name": "registry-0", "value": "registry-password"}])
    );
    assert_eq!(
        config["registries"][0],
        json!({"server": "r.azurecr.io", "username": "u", "passwordSecretRef": "registry-0"})
    );
    let container = job["properties"]["template"]["containers"][0].to_string();
    assert!(
        !container.contains("s3cr3t") && !container.contains("registry-password"),
        "{container}"
    );
    assert_eq!(
        aca.managed().await.unwrap(),
        vec![handle],
        "found again by its tags, key and all"
    );
}

#[tokio::test]
async fn a_replica_past_its_timeout_fails_with_deadline_exceeded() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({})).await;
    let handle = launched(&aca, &launch("offload-d-1", spec()))
        .await
        .unwrap();
    // What Container Apps reports when `replicaTimeout` runs out.
    apps.set_execution(
        &handle.provider_ref,
        "Failed",
        json!({"status": "Failed", "additionalInformation": "DeadlineExceeded"}),
    );
    assert_eq!(
        phase(&aca, &handle).await,
        Phase::Exited {
            exit_code: None,
            reason: Some("DeadlineExceeded".into())
        }
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_after_the_pending_timeout() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({"pending_timeout_seconds": 0})).await;
    let handle = launched(&aca, &launch("offload-p-1", spec()))
        .await
        .unwrap();
    apps.set_execution(
        &handle.provider_ref,
        "Processing",
        json!({"status": "Waiting", "additionalInformation": "ImagePullBackOff"}),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    match phase(&aca, &handle).await {
        Phase::Exited {
            exit_code: None,
            reason: Some(r),
        } => assert!(r.starts_with("image pull failed: ImagePullBackOff"), "{r}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn gpu_jobs_go_to_a_gpu_profile_and_others_are_refused_by_name() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({})).await;
    let caps = aca.capabilities();
    assert_eq!(caps.gpu_kinds, vec!["nvidia-tesla-t4".to_string()]);
    let handle = launched(
        &aca,
        &launch("offload-g-1", gpu_spec(Some("nvidia-tesla-t4"))),
    )
    .await
    .unwrap();
    let job = apps.job(&handle.provider_ref).unwrap();
    assert_eq!(job["properties"]["workloadProfileName"], "gpu-t4");
    assert_eq!(
        job["properties"]["template"]["containers"][0]["resources"],
        json!({"cpu": 4.0, "memory": "16Gi"})
    );
    // Any kind: the one the profiles have.
    aca.validate(&gpu_spec(None)).unwrap();

    let refused = |spec: WorkloadSpec| match aca.validate(&spec) {
        Err(ProviderError::InvalidSpec(why)) => why,
        other => panic!("{other:?}"),
    };
    assert!(refused(gpu_spec(Some("nvidia-tesla-a100")))
        .starts_with("resources.gpu.kind: nvidia-tesla-a100 is not one of nvidia-tesla-t4"));
    let mut two = gpu_spec(None);
    two.resources.gpu.as_mut().unwrap().count = 2;
    assert!(refused(two).starts_with("resources.gpu.count: 2 GPUs"));
    let mut big = gpu_spec(None);
    big.resources.cpu = 12.0;
    assert!(refused(big).starts_with("resources.cpu: 12 exceeds the 8 vCPU"));
    let mut cpu = spec();
    cpu.resources.cpu = 6.0;
    assert!(refused(cpu)
        .contains("more than Container Apps' Consumption profile allows (4 vCPU with 8 GiB)"));
    let mut options = spec();
    options.provider_options = Some(json!({"workloadProfileName": "other"}));
    assert!(refused(options).starts_with("provider_options.aca:"));

    // Without GPU profiles, no GPU work at all.
    let plain = provider(&apps, json!({"gpu_profiles": []})).await;
    assert!(plain.capabilities().gpu_kinds.is_empty());
    assert!(
        matches!(plain.validate(&gpu_spec(None)), Err(ProviderError::InvalidSpec(w)) if w.starts_with("resources.gpu:"))
    );
}

#[tokio::test]
async fn a_relaunch_after_a_crash_adopts_instead_of_starting_twice() {
    let apps = FakeApps::start().await;
    let first = provider(&apps, json!({})).await;
    let handle = launched(&first, &launch("offload-k-1", spec()))
        .await
        .unwrap();
    // A gateway restarted after the start: the same key finds the job and its execution.
    let second = provider(&apps, json!({})).await;
    assert_eq!(
        launched(&second, &launch("offload-k-1", spec()))
            .await
            .unwrap(),
        handle
    );
    assert_eq!(calls(&apps, "PUT", &handle.provider_ref), 1);
    assert_eq!(calls(&apps, "POST", "/start"), 1, "started once");
    assert_eq!(apps.executions(&handle.provider_ref).len(), 1);
}

#[tokio::test]
async fn a_job_another_process_created_is_never_started_and_is_lost_after_the_pending_timeout() {
    let apps = FakeApps::start().await;
    let first = provider(&apps, json!({"pending_timeout_seconds": 0})).await;
    // A gateway creates the job, which is still provisioning, and dies before its start.
    let mut fresh = launch("offload-c-1", spec());
    fresh.fresh = true;
    let err = first.launch(&fresh).await.unwrap_err();
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
    let name = offload_aca::job_name("offload-c-1");
    // The gateway that takes over never starts it: the dead one may have sent its start.
    let second = provider(&apps, json!({"pending_timeout_seconds": 0})).await;
    let handle = launched(&second, &launch("offload-c-1", spec()))
        .await
        .unwrap();
    assert_eq!(handle.provider_ref, name);
    assert_eq!(calls(&apps, "PUT", &name), 1, "not created again");
    assert_eq!(calls(&apps, "POST", "/start"), 0, "not started");
    assert!(apps.executions(&name).is_empty());
    // No execution came within the pending timeout: the engine makes a new attempt.
    match phase(&second, &handle).await {
        Phase::Lost { reason } => assert!(reason.contains("no execution"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let patient = provider(&apps, json!({})).await;
    assert!(
        matches!(phase(&patient, &handle).await, Phase::Starting { .. }),
        "within the pending timeout it is still starting"
    );
}

#[tokio::test]
async fn a_start_whose_answer_is_lost_is_never_sent_again() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({})).await;
    // Container Apps starts the execution; the answer is lost on the way back.
    apps.fault("POST", "/start", 1, Fault::Drop);
    let handle = launched(&aca, &launch("offload-r-1", spec()))
        .await
        .unwrap();
    let name = &handle.provider_ref;
    assert_eq!(calls(&apps, "POST", "/start"), 1, "the start is sent once");
    assert_eq!(apps.executions(name).len(), 1);
    // Launching the key again (the engine's retry, the execution not yet listed) starts
    // nothing either.
    assert_eq!(
        launched(&aca, &launch("offload-r-1", spec()))
            .await
            .unwrap(),
        handle
    );
    assert_eq!(calls(&apps, "POST", "/start"), 1);
    assert!(matches!(phase(&aca, &handle).await, Phase::Starting { .. }));
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_not_sent_again_and_the_job_starts_once() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({})).await;
    let name = offload_aca::job_name("offload-r-2");
    apps.fault("PUT", &name, 1, Fault::Drop);
    let mut fresh = launch("offload-r-2", spec());
    fresh.fresh = true;
    let err = aca.launch(&fresh).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    // The engine launches the key again: the job is found, not replaced, and started.
    let handle = launched(&aca, &launch("offload-r-2", spec()))
        .await
        .unwrap();
    assert_eq!(calls(&apps, "PUT", &name), 1, "the create is sent once");
    assert_eq!(apps.replaced(), 0);
    assert_eq!(calls(&apps, "POST", "/start"), 1);
    assert_eq!(apps.executions(&handle.provider_ref).len(), 1);
}

#[tokio::test]
async fn two_replicas_racing_one_key_create_and_start_one_job_once() {
    let apps = FakeApps::start().await;
    let (a, b) = (
        provider(&apps, json!({})).await,
        provider(&apps, json!({})).await,
    );
    // Each replica believes it stored the key a moment ago (one lost its lease while
    // paused): both launch it as fresh, at once.
    let mut fresh = launch("offload-r-3", spec());
    fresh.fresh = true;
    let (from_a, from_b) = futures::join!(launched(&a, &fresh), launched(&b, &fresh));
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    assert_eq!(from_a, from_b);
    let name = &from_a.provider_ref;
    assert_eq!(
        apps.replaced(),
        0,
        "the second create did not replace the first"
    );
    assert_eq!(calls(&apps, "POST", "/start"), 1);
    assert_eq!(apps.executions(name).len(), 1, "one execution");
}

#[tokio::test]
async fn one_jobs_failed_read_leaves_only_it_out_of_a_round() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({})).await;
    let a = launched(&aca, &launch("offload-f-1", spec()))
        .await
        .unwrap();
    let b = launched(&aca, &launch("offload-f-2", spec()))
        .await
        .unwrap();
    apps.set_execution(&b.provider_ref, "Running", json!({"status": "Running"}));
    let refused = Fault::Refuse(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
    );
    apps.fault(
        "GET",
        &format!("{}/executions", a.provider_ref),
        100,
        refused,
    );
    let seen = aca.observe(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((&seen[0].handle, &seen[0].phase), (&b, &Phase::Running));
    // When every read fails, the round fails.
    let err = aca.observe(std::slice::from_ref(&a)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn a_read_that_never_answers_times_out_and_is_sent_again() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({"request_timeout_seconds": 1})).await;
    let handle = launched(&aca, &launch("offload-h-1", spec()))
        .await
        .unwrap();
    apps.fault("GET", "/executions", 1, Fault::Hang);
    let started = Instant::now();
    let seen = tokio::time::timeout(
        Duration::from_secs(30),
        aca.observe(std::slice::from_ref(&handle)),
    )
    .await
    .expect("the hung read timed out");
    assert!(matches!(seen.unwrap()[0].phase, Phase::Starting { .. }));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the first read waited its timeout"
    );
}

#[tokio::test]
async fn a_chatty_jobs_tail_is_the_end_of_its_log() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({})).await;
    let handle = launched(&aca, &launch("offload-v-1", spec()))
        .await
        .unwrap();
    let mut text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
    text.push_str("offload-result: {\"rows\": 100000}\n");
    apps.append_log(&handle.provider_ref, &text);
    let tail = LogQuery {
        cursor: None,
        tail_bytes: Some(64 << 10),
    };
    let chunk = aca.logs(&handle, &tail).await.unwrap();
    assert!(
        chunk
            .text
            .ends_with("line 99999\noffload-result: {\"rows\": 100000}\n"),
        "{}",
        &chunk.text[chunk.text.len().saturating_sub(200)..]
    );
    assert!(
        chunk.text.len() > 60 << 10 && chunk.text.len() <= 64 << 10,
        "{}",
        chunk.text.len()
    );
    // Its cursor is the end: a follower from it reads only what comes after.
    let on = LogQuery {
        cursor: chunk.cursor.clone(),
        tail_bytes: None,
    };
    assert_eq!(aca.logs(&handle, &on).await.unwrap().text, "");
    apps.append_log(&handle.provider_ref, "one more\n");
    assert_eq!(aca.logs(&handle, &on).await.unwrap().text, "one more\n");
}

#[tokio::test]
async fn throttling_is_waited_out_then_reported() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({})).await;
    let handle = launched(&aca, &launch("offload-t-1", spec()))
        .await
        .unwrap();
    // One 429 with Retry-After: the SDK waits it out and the call succeeds.
    apps.throttle(1, 1);
    let started = Instant::now();
    assert!(matches!(phase(&aca, &handle).await, Phase::Starting { .. }));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    // More than the SDK retries: the engine is told to back off.
    apps.throttle(10, 0);
    let err = aca.observe(&[handle]).await.unwrap_err();
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
}

#[tokio::test]
async fn cancel_stops_the_execution_and_release_and_the_orphan_sweep_delete_the_job() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({})).await;
    let handle = launched(&aca, &launch("offload-x-1", spec()))
        .await
        .unwrap();
    apps.set_execution(
        &handle.provider_ref,
        "Running",
        json!({"status": "Running"}),
    );
    aca.cancel(&handle, "cancelled by the user").await.unwrap();
    assert_eq!(
        apps.executions(&handle.provider_ref)[0]["properties"]["status"],
        "Stopped"
    );
    assert_eq!(
        phase(&aca, &handle).await,
        Phase::Exited {
            exit_code: None,
            reason: Some("execution stopped".into())
        }
    );
    // A second cancel, after the stop went through, is no error.
    aca.cancel(&handle, "again").await.unwrap();

    let other = launched(&aca, &launch("offload-y-1", spec()))
        .await
        .unwrap();
    let mut managed = aca.managed().await.unwrap();
    managed.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(managed, vec![handle.clone(), other.clone()]);
    aca.release(&handle).await.unwrap();
    aca.release(&handle)
        .await
        .expect("a job already gone is no error");
    assert_eq!(apps.jobs(), vec![other.provider_ref.clone()]);
    assert!(matches!(phase(&aca, &handle).await, Phase::Lost { .. }));
}

#[tokio::test]
async fn logs_follow_with_the_cursor() {
    let apps = FakeApps::start().await;
    let aca = provider(&apps, json!({})).await;
    let handle = launched(&aca, &launch("offload-l-1", spec()))
        .await
        .unwrap();
    offload_provider::conformance::log_cursor_follows(&aca, &handle, |text| {
        apps.append_log(&handle.provider_ref, text);
        async {}
    })
    .await;
    // Without a workspace the log cannot be read, and the error says why.
    let blind = provider(&apps, json!({"log_analytics": null})).await;
    let err = blind.logs(&handle, &Default::default()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Config(ref w) if w.contains("log_analytics")),
        "{err:?}"
    );
}

#[tokio::test]
async fn reads_for_200_jobs_stay_inside_the_arm_budget() {
    let apps = FakeApps::start().await;
    // The provider's defaults against a bucket like ARM's: 250, refilled at 25 per second.
    let aca = provider(&apps, json!({})).await;
    let launches = (0..200).map(|i| {
        let mut l = launch(&format!("offload-n-{i}"), spec());
        l.fresh = true;
        l
    });
    let launches: Vec<_> = launches.collect();
    let handles: Vec<Handle> =
        futures::future::join_all(launches.iter().map(|l| launched(&aca, l)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let started = Instant::now();
    let seen = aca.observe(&handles).await.unwrap();
    assert_eq!(seen.len(), 200);
    let reads = apps
        .requests()
        .iter()
        .filter(|(m, _, _)| m == "GET")
        .count();
    println!(
        "200 jobs launched and observed once: {reads} reads, the round in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        reads, 400,
        "one read per launch (its provisioning) and one per job per round"
    );
    assert_eq!(
        apps.over_budget(),
        0,
        "no read went over the subscription's budget"
    );
}

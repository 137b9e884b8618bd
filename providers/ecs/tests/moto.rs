//! The ECS provider driven through the real aws-sdk-ecs and aws-sdk-cloudwatchlogs clients
//! against moto's server (one per test). moto does not run containers: a test moves each
//! task and sets its exit code, stop code and reason, as ECS would.

mod common;

use std::collections::BTreeMap;

use common::Moto;
use offload_provider::conformance::launch;
use offload_provider::{Handle, LogQuery, Phase, Provider, ProviderError, Resources, WorkloadSpec};
use serde_json::json;

fn spec(image: &str, cpu: f64, memory_mib: u64) -> WorkloadSpec {
    WorkloadSpec {
        name: None,
        image: image.into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo hi".into()],
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        resources: Resources {
            cpu,
            memory_bytes: memory_mib << 20,
            gpu: None,
            ephemeral_storage_bytes: None,
        },
        timeout_seconds: None,
        labels: BTreeMap::from([("dag_id".into(), "etl".into())]),
        provider_options: None,
    }
}

async fn phase(ecs: &offload_ecs::Ecs, handle: &Handle) -> Option<Phase> {
    let mut seen = ecs.observe(std::slice::from_ref(handle)).await.unwrap();
    seen.pop().map(|o| o.phase)
}

#[tokio::test]
async fn a_task_runs_and_ends_with_its_exit_code_and_reason() {
    let moto = Moto::start();
    let ecs = moto.config(json!({})).build().await.unwrap();
    ecs.check().await.expect("moto is reachable");

    let ok = ecs
        .launch(&launch("offload-a-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    assert!(ok
        .provider_ref
        .starts_with("arn:aws:ecs:us-east-1:123456789012:task/"));
    moto.set_status(&ok.provider_ref, "PENDING").await;
    assert_eq!(
        phase(&ecs, &ok).await,
        Some(Phase::Starting { reason: None })
    );
    moto.set_status(&ok.provider_ref, "RUNNING").await;
    assert_eq!(phase(&ecs, &ok).await, Some(Phase::Running));
    moto.stop(
        &ok.provider_ref,
        Some(0),
        Some("EssentialContainerExited"),
        "Essential container in task exited",
    )
    .await;
    assert_eq!(
        phase(&ecs, &ok).await,
        Some(Phase::Exited {
            exit_code: Some(0),
            reason: None
        })
    );

    let bad = ecs
        .launch(&launch("offload-b-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    moto.stop(
        &bad.provider_ref,
        Some(3),
        Some("EssentialContainerExited"),
        "Essential container in task exited",
    )
    .await;
    assert_eq!(
        phase(&ecs, &bad).await,
        Some(Phase::Exited {
            exit_code: Some(3),
            reason: Some("exited with code 3: Essential container in task exited".into())
        })
    );

    let pull = ecs
        .launch(&launch("offload-c-1", spec("nope:404", 0.25, 512)))
        .await
        .unwrap();
    moto.stop(
        &pull.provider_ref,
        None,
        Some("TaskFailedToStart"),
        "CannotPullContainerError: pull access denied for nope",
    )
    .await;
    assert_eq!(
        phase(&ecs, &pull).await,
        Some(Phase::Exited {
            exit_code: None,
            reason: Some(
                "failed to start: CannotPullContainerError: pull access denied for nope".into()
            )
        })
    );

    let spot = ecs
        .launch(&launch("offload-d-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    moto.stop(
        &spot.provider_ref,
        Some(0),
        Some("SpotInterruption"),
        "Your Spot Task was interrupted.",
    )
    .await;
    assert_eq!(
        phase(&ecs, &spot).await,
        Some(Phase::Exited {
            exit_code: None,
            reason: Some("Fargate Spot interruption: Your Spot Task was interrupted.".into())
        })
    );

    // What RunTask carried: the command, env (secret included), tags and the idempotency key.
    let recorded = moto.recorded().await;
    let (_, run) = recorded.iter().find(|(a, _)| a == "RunTask").unwrap();
    assert_eq!(run["clientToken"], "offload-a-1");
    assert_eq!(run["startedBy"], "offload-a-1");
    assert_eq!(run["launchType"], "FARGATE");
    assert_eq!(run["propagateTags"], "TASK_DEFINITION");
    let container = &run["overrides"]["containerOverrides"][0];
    assert_eq!(container["name"], "main");
    assert_eq!(container["command"], json!(["sh", "-c", "echo hi"]));
    assert_eq!(
        container["environment"],
        json!([{"name": "GREETING", "value": "hello"}, {"name": "TOKEN", "value": "s3cr3t"}])
    );
    let tags: BTreeMap<String, String> = run["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().into(),
                t["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        tags["offload:job-id"],
        "0193f0c2-0000-7000-8000-000000000001"
    );
    assert_eq!(tags["offload:launch-key"], "offload-a-1");
    assert_eq!(tags["dag_id"], "etl");
}

#[tokio::test]
async fn task_definitions_are_registered_once_per_image_and_size() {
    let moto = Moto::start();
    let ecs = moto.config(json!({})).build().await.unwrap();
    let a = ecs
        .launch(&launch("offload-a-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    let b = ecs
        .launch(&launch("offload-b-1", spec("alpine:3", 0.2, 400)))
        .await
        .unwrap();
    let c = ecs
        .launch(&launch("offload-c-1", spec("alpine:3", 1.0, 3000)))
        .await
        .unwrap();
    assert_ne!(a.provider_ref, b.provider_ref);
    assert_eq!(
        moto.count("RegisterTaskDefinition").await,
        2,
        "0.2 vCPU/400 MiB rounds up to 0.25/512"
    );

    // A new gateway (an empty cache) finds the definitions by family and tag.
    let again = moto.config(json!({})).build().await.unwrap();
    again
        .launch(&launch("offload-d-1", spec("alpine:3", 1.0, 3000)))
        .await
        .unwrap();
    assert_eq!(moto.count("RegisterTaskDefinition").await, 2);

    let recorded = moto.recorded().await;
    let definitions: Vec<_> = recorded
        .iter()
        .filter(|(a, _)| a == "RunTask")
        .map(|(_, body)| body["taskDefinition"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(definitions[0], definitions[1]);
    assert_ne!(definitions[0], definitions[2]);
    assert_eq!(definitions[2], definitions[3]);
    let (_, register) = recorded
        .iter()
        .find(|(a, _)| a == "RegisterTaskDefinition")
        .unwrap();
    assert_eq!(
        (register["cpu"].as_str(), register["memory"].as_str()),
        (Some("256"), Some("512"))
    );
    assert_eq!(register["networkMode"], "awsvpc");
    assert_eq!(
        register["containerDefinitions"][0]["logConfiguration"]["logDriver"],
        "awslogs"
    );
    assert_eq!(register["runtimePlatform"]["cpuArchitecture"], "X86_64");
    let _ = c;
}

#[tokio::test]
async fn a_relaunch_after_a_crash_finds_the_task_instead_of_starting_another() {
    let moto = Moto::start();
    let first = moto.config(json!({})).build().await.unwrap();
    let mut fresh = launch("offload-k-1", spec("alpine:3", 0.25, 512));
    fresh.fresh = true;
    let handle = first.launch(&fresh).await.unwrap();
    assert_eq!(
        moto.count("ListTasks").await,
        0,
        "a fresh key needs no lookup"
    );
    drop(first);
    // The gateway restarts and launches the same key again (its answer was never stored).
    let second = moto.config(json!({})).build().await.unwrap();
    let again = second
        .launch(&launch("offload-k-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    assert_eq!(again, handle);
    // Even once the task has stopped.
    moto.stop(
        &handle.provider_ref,
        Some(0),
        Some("EssentialContainerExited"),
        "",
    )
    .await;
    let third = second
        .launch(&launch("offload-k-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    assert_eq!(third, handle);
    assert_eq!(moto.count("RunTask").await, 1);
}

#[tokio::test]
async fn throttling_and_capacity_errors_become_the_traits_errors() {
    let moto = Moto::start();
    let ecs = moto.config(json!({})).build().await.unwrap();
    // More throttles than the SDK's own retries absorb.
    let throttled = json!({"__type": "ThrottlingException", "message": "Rate exceeded"});
    moto.fault("RunTask", 5, 400, throttled).await;
    let err = ecs
        .launch(&launch("offload-t-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
    moto.clear_faults().await;

    let full = json!({"tasks": [], "failures": [{"arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/x",
        "reason": "Capacity is unavailable at this time. Please try again later or in a different availability zone"}]});
    moto.fault("RunTask", 1, 200, full).await;
    let err = ecs
        .launch(&launch("offload-t-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Capacity(r) if r.contains("Capacity is unavailable")),
        "{err:?}"
    );

    // An answer the SDK cannot read: a transient error that does not echo the body (a
    // RunTask answer carries the job's env, secrets included).
    moto.fault(
        "RunTask",
        3,
        200,
        json!({"tasks": [{"containers": [{"cpu": 0}], "overrides": {"containerOverrides":
        [{"environment": [{"name": "TOKEN", "value": "s3cr3t"}]}]}}]}),
    )
    .await;
    let err = ecs
        .launch(&launch("offload-t-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Transient(m) if m.contains("RunTask")),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains("s3cr3t"), "{err:?}");
    moto.clear_faults().await;

    // Once ECS answers again, the same key launches.
    ecs.launch(&launch("offload-t-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    assert_eq!(
        moto.count("RunTask").await,
        1,
        "faults are answered before moto sees them"
    );

    moto.fault(
        "DescribeTasks",
        5,
        400,
        json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
    )
    .await;
    let handle = Handle {
        key: "k".into(),
        provider_ref: "arn:aws:ecs:us-east-1:123456789012:task/offload/x".into(),
    };
    let err = ecs.observe(&[handle]).await.unwrap_err();
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
}

#[tokio::test]
async fn invalid_specs_are_refused_before_any_call() {
    let moto = Moto::start();
    let ecs = moto.config(json!({})).build().await.unwrap();
    let mut gpu = spec("alpine:3", 1.0, 2048);
    gpu.resources.gpu = Some(offload_provider::Gpu {
        count: 1,
        kind: None,
    });
    let err = ecs.validate(&gpu).unwrap_err();
    assert_eq!(
        err,
        ProviderError::InvalidSpec("resources.gpu: Fargate has no GPUs".into())
    );
    let err = ecs.validate(&spec("alpine:3", 32.0, 2048)).unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("0.25 to 16 vCPU")),
        "{err:?}"
    );
    let mut options = spec("alpine:3", 1.0, 2048);
    options.provider_options = Some(json!({"task_defintion": "x"}));
    let err = ecs.validate(&options).unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(m) if m.contains("task_defintion")),
        "{err:?}"
    );
    assert!(ecs.launch(&launch("offload-g-1", gpu)).await.is_err());
    assert_eq!(
        moto.count("RunTask").await + moto.count("ListTasks").await,
        0
    );
}

#[tokio::test]
async fn an_existing_task_definition_can_be_named() {
    let moto = Moto::start();
    let ecs = moto.config(json!({})).build().await.unwrap();
    let first = ecs
        .launch(&launch("offload-a-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    let recorded = moto.recorded().await;
    let family = recorded
        .iter()
        .find(|(a, _)| a == "RegisterTaskDefinition")
        .unwrap()
        .1["family"]
        .as_str()
        .unwrap()
        .to_string();
    let mut named = spec("ignored:1", 0.25, 512);
    named.provider_options = Some(json!({"task_definition": family}));
    ecs.launch(&launch("offload-b-1", named)).await.unwrap();
    assert_eq!(moto.count("RegisterTaskDefinition").await, 1);
    let _ = first;
}

#[tokio::test]
async fn cancel_stops_the_task_with_the_reason() {
    let moto = Moto::start();
    let ecs = moto.config(json!({})).build().await.unwrap();
    let handle = ecs
        .launch(&launch("offload-x-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    ecs.cancel(&handle, "cancelled by tenant dev")
        .await
        .unwrap();
    assert!(matches!(
        phase(&ecs, &handle).await,
        Some(Phase::Exited { .. })
    ));
    let recorded = moto.recorded().await;
    let (_, stop) = recorded.iter().find(|(a, _)| a == "StopTask").unwrap();
    assert_eq!(stop["task"], handle.provider_ref.as_str());
    assert_eq!(stop["reason"], "cancelled by tenant dev");
    // Cancelling again is no error.
    ecs.cancel(&handle, "cancelled by tenant dev")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_task_missing_from_describe_tasks_fails_after_the_retries() {
    let moto = Moto::start();
    let ecs = moto
        .config(json!({"missing_retries": 2}))
        .build()
        .await
        .unwrap();
    let ghost = Handle {
        key: "offload-ghost-1".into(),
        provider_ref: "arn:aws:ecs:us-east-1:123456789012:task/offload/0000".into(),
    };
    assert_eq!(phase(&ecs, &ghost).await, None);
    assert_eq!(phase(&ecs, &ghost).await, None);
    assert!(matches!(
        phase(&ecs, &ghost).await,
        Some(Phase::Exited { exit_code: None, reason: Some(r) }) if r.contains("missing from DescribeTasks 3 times")
    ));
}

#[tokio::test]
async fn logs_come_from_cloudwatch_and_follow_with_the_cursor() {
    let moto = Moto::start();
    let ecs = moto.config(json!({})).build().await.unwrap();
    let handle = ecs
        .launch(&launch("offload-l-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    assert_eq!(
        ecs.logs(&handle, &LogQuery::default()).await.unwrap().text,
        "",
        "no stream yet"
    );

    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.aws.endpoint)
        .load()
        .await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&shared);
    let task_id = handle.provider_ref.rsplit('/').next().unwrap();
    let stream = format!("offload/main/{task_id}");
    logs.create_log_stream()
        .log_group_name(&moto.aws.log_group)
        .log_stream_name(&stream)
        .send()
        .await
        .unwrap();
    // The awslogs driver writes one event per line.
    let (group, stream) = (moto.aws.log_group.clone(), stream.clone());
    let mut clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    offload_provider::conformance::log_cursor_follows(&ecs, &handle, |text| {
        let events = text
            .lines()
            .map(|line| {
                clock += 1;
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .message(line)
                    .timestamp(clock)
                    .build()
                    .unwrap()
            })
            .collect();
        let put = logs
            .put_log_events()
            .log_group_name(&group)
            .log_stream_name(&stream)
            .set_log_events(Some(events));
        async move {
            put.send().await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn one_describe_tasks_call_covers_a_hundred_tasks() {
    let moto = Moto::start();
    let ecs = moto.config(json!({})).build().await.unwrap();
    let mut handles = vec![];
    for i in 0..250 {
        handles.push(
            ecs.launch(&launch(
                &format!("offload-n-{i}"),
                spec("alpine:3", 0.25, 512),
            ))
            .await
            .unwrap(),
        );
    }
    moto.reset_recording().await;
    let seen = ecs.observe(&handles).await.unwrap();
    assert_eq!(seen.len(), 250);
    assert!(seen.iter().all(|o| o.phase == Phase::Running));
    let recorded = moto.recorded().await;
    let sizes: Vec<usize> = recorded
        .iter()
        .filter(|(a, _)| a == "DescribeTasks")
        .map(|(_, body)| body["tasks"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
}

//! The ECS provider driven through the real aws-sdk-ecs and aws-sdk-cloudwatchlogs clients
//! against moto's server (one per test). moto does not run containers: a test moves each
//! task and sets its exit code, stop code and reason, as ECS would.

mod common;

use std::collections::BTreeMap;

use common::Moto;
use offload_provider::conformance::launch;
use offload_provider::{
    Handle, LogQuery, Phase, Provider, ProviderError, Resources, StepRole,
    WorkloadSpec,
};
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
        steps: None,
    }
}

async fn phase(ecs: &offload_ecs::Ecs, handle: &Handle) -> Option<Phase> {
    let mut seen = ecs.observe(std::slice::from_ref(handle)).await.unwrap();
    seen.pop().map(|o| o.phase)
}

/// Clients of the test's moto, as the provider's own are made.
async fn aws(moto: &Moto) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.aws.endpoint)
        .load()
        .await
}

/// A task's log stream, written the way the awslogs driver does: `offload/CONTAINER/TASK_ID`
/// in the provider's group, one event per line.
struct TaskLog {
    logs: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    /// The last event's timestamp (ms); each line is 1 ms after the one before.
    clock: i64,
}

impl TaskLog {
    async fn create(moto: &Moto, handle: &Handle, container: &str) -> TaskLog {
        let logs = aws_sdk_cloudwatchlogs::Client::new(&aws(moto).await);
        let task_id = handle.provider_ref.rsplit('/').next().unwrap();
        let stream = format!("offload/{container}/{task_id}");
        // The peer makes the stream of a container that logs with awslogs when its task
        // starts, as the driver does; other containers' streams are made here.
        let made = logs
            .create_log_stream()
            .log_group_name(&moto.aws.log_group)
            .log_stream_name(&stream)
            .send()
            .await;
        if let Err(e) = made {
            let exists = e
                .as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception());
            assert!(exists, "{e:?}");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        TaskLog {
            logs,
            group: moto.aws.log_group.clone(),
            stream,
            // Room for a long log before now (CloudWatch refuses events from the future).
            clock: now - 600_000,
        }
    }

    /// One PutLogEvents of these lines (at most 10,000, as one call takes).
    fn append<S: Into<String>>(
        &mut self,
        lines: impl IntoIterator<Item = S>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let events = lines
            .into_iter()
            .map(|line| {
                self.clock += 1;
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .message(line)
                    .timestamp(self.clock)
                    .build()
                    .unwrap()
            })
            .collect();
        let put = self
            .logs
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events));
        async move {
            put.send().await.unwrap();
        }
    }
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
    // Not the job's failure: a preemption, which the engine runs again as a new attempt.
    assert_eq!(
        phase(&ecs, &spot).await,
        Some(Phase::Preempted {
            reason: "Fargate Spot interruption: Your Spot Task was interrupted.".into()
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

/// Registers `etl`, an existing task definition with a sidecar first and the job's
/// container `app` second, logging where the provider reads logs.
async fn register_etl(moto: &Moto) {
    use aws_sdk_ecs::types::{
        Compatibility, ContainerDefinition, LogConfiguration, LogDriver, NetworkMode,
    };
    let container = |name: &str, image: &str, essential: bool| {
        ContainerDefinition::builder()
            .name(name)
            .image(image)
            .memory(256)
            .essential(essential)
            .log_configuration(
                LogConfiguration::builder()
                    .log_driver(LogDriver::Awslogs)
                    .options("awslogs-group", &moto.aws.log_group)
                    .options("awslogs-region", "us-east-1")
                    .options("awslogs-stream-prefix", "offload")
                    .build()
                    .unwrap(),
            )
            .build()
    };
    aws_sdk_ecs::Client::new(&aws(moto).await)
        .register_task_definition()
        .family("etl")
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu("256")
        .memory("512")
        .task_role_arn("arn:aws:iam::123456789012:role/etl")
        .container_definitions(container("sidecar", "fluent-bit:3", false))
        .container_definitions(container("app", "etl:7", true))
        .send()
        .await
        .unwrap();
}

/// An existing task definition the operator allows runs with the job's container: its
/// override, its exit code (not the sidecar's) and its log stream.
#[tokio::test]
async fn an_allowed_task_definition_runs_and_is_followed_by_its_named_container() {
    let moto = Moto::start();
    register_etl(&moto).await;
    let ecs = moto
        .config(json!({"allowed_task_definitions": ["etl"]}))
        .build()
        .await
        .unwrap();
    let mut named = spec("ignored:1", 0.25, 512);
    named.provider_options = Some(json!({"task_definition": "etl", "container": "app"}));
    let handle = ecs.launch(&launch("offload-e-1", named)).await.unwrap();
    let recorded = moto.recorded().await;
    let (_, run) = recorded.iter().find(|(a, _)| a == "RunTask").unwrap();
    assert_eq!(run["taskDefinition"], "etl");
    assert_eq!(run["overrides"]["containerOverrides"][0]["name"], "app");
    assert_eq!(
        moto.count("RegisterTaskDefinition").await,
        1,
        "only the test's"
    );

    let mut log = TaskLog::create(&moto, &handle, "app").await;
    log.append(["working", "offload-result: {\"rows\": 3}"])
        .await;
    moto.stop_containers(
        &handle.provider_ref,
        json!({"sidecar": 0, "app": 4}),
        "Essential container in task exited",
    )
    .await;
    assert_eq!(
        phase(&ecs, &handle).await,
        Some(Phase::Exited {
            exit_code: Some(4),
            reason: Some("exited with code 4: Essential container in task exited".into())
        })
    );
    let tail = LogQuery {
        cursor: None,
        tail_bytes: Some(1 << 16),
    };
    assert_eq!(
        ecs.logs(&handle, &tail).await.unwrap().text,
        "working\noffload-result: {\"rows\": 3}\n"
    );

    // A gateway that restarted learns the container again from its first poll round.
    let restarted = moto
        .config(json!({"allowed_task_definitions": ["etl"]}))
        .build()
        .await
        .unwrap();
    phase(&restarted, &handle).await;
    assert_eq!(
        restarted.logs(&handle, &tail).await.unwrap().text,
        "working\noffload-result: {\"rows\": 3}\n"
    );
}

/// What a job's options would choose (a task definition, with its roles and containers, or
/// a task role) must be on the operator's allow-list: refused at submit, naming the field.
#[tokio::test]
async fn tenant_options_choose_only_what_the_operator_allows() {
    let moto = Moto::start();
    let refused = |ecs: &offload_ecs::Ecs, options: serde_json::Value| {
        let mut job = spec("alpine:3", 0.25, 512);
        job.provider_options = Some(options);
        match ecs.validate(&job) {
            Err(ProviderError::InvalidSpec(why)) => why,
            other => panic!("{other:?}"),
        }
    };
    let role = "arn:aws:iam::123456789012:role/etl";

    // By default, nothing.
    let strict = moto.config(json!({})).build().await.unwrap();
    assert_eq!(
        refused(&strict, json!({"task_definition": "etl"})),
        "provider_options.ecs.task_definition: \"etl\" is not in allowed_task_definitions"
    );
    assert_eq!(
        refused(&strict, json!({"task_role_arn": role})),
        format!("provider_options.ecs.task_role_arn: \"{role}\" is not in allowed_task_roles")
    );
    assert_eq!(
        refused(&strict, json!({"container": "app"})),
        "provider_options.ecs.container: only with task_definition (offload's own task definitions have one container, main)"
    );
    assert_eq!(
        refused(&strict, json!({"task_definition": "etl", "container": "app/x"})),
        "provider_options.ecs.container: \"app/x\" is not a container name (1 to 255 letters, digits, - and _)"
    );
    let mut launched = spec("alpine:3", 0.25, 512);
    launched.provider_options = Some(json!({"task_role_arn": role}));
    let err = strict
        .launch(&launch("offload-r-1", launched.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidSpec(_)), "{err:?}");
    assert_eq!(
        moto.count("RunTask").await + moto.count("ListTasks").await,
        0
    );

    // Listed: a family (any revision), one revision, and an ARN with any revision.
    let report = "arn:aws:ecs:us-east-1:123456789012:task-definition/report";
    let ecs = moto
        .config(json!({
            "allowed_task_definitions": ["etl", "load:3", format!("{report}:*")],
            "allowed_task_roles": [role],
        }))
        .build()
        .await
        .unwrap();
    let allowed = |name: &str| {
        let mut job = spec("alpine:3", 0.25, 512);
        job.provider_options = Some(json!({"task_definition": name, "container": "app"}));
        ecs.validate(&job).map(|_| ())
    };
    let report_7 = format!("{report}:7");
    for name in ["etl", "etl:12", "load:3", report_7.as_str()] {
        assert_eq!(allowed(name), Ok(()), "{name}");
    }
    for name in [
        "etl2",
        "load",
        "load:4",
        "report:7",
        "arn:aws:ecs:us-east-1:999999999999:task-definition/report:7",
        "arn:aws:ecs:us-east-1:123456789012:task-definition/etl:1",
        "offload-0123456789abcdef",
    ] {
        assert_eq!(
            allowed(name),
            Err(ProviderError::InvalidSpec(format!(
                "provider_options.ecs.task_definition: {name:?} is not in allowed_task_definitions"
            )))
        );
    }
    assert!(refused(
        &ecs,
        json!({"task_role_arn": "arn:aws:iam::123456789012:role/admin"})
    )
    .contains("is not in allowed_task_roles"));

    // An allowed task role runs the job's code: a task override of offload's definition.
    ecs.launch(&launch("offload-r-1", launched)).await.unwrap();
    let recorded = moto.recorded().await;
    let (_, run) = recorded.iter().find(|(a, _)| a == "RunTask").unwrap();
    assert_eq!(run["overrides"]["taskRoleArn"], role);
    assert!(run["taskDefinition"].as_str().unwrap().contains("offload-"));
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

/// ECS forgets stopped tasks after a while; StopTask then answers "The referenced task was
/// not found." A cancel of such a task has nothing left to stop: no error to retry forever.
#[tokio::test]
async fn cancelling_a_task_ecs_no_longer_knows_is_no_error() {
    let moto = Moto::start();
    let ecs = moto.config(json!({})).build().await.unwrap();
    let forgotten = Handle {
        key: "offload-gone-1".into(),
        provider_ref: "arn:aws:ecs:us-east-1:123456789012:task/offload/0123456789abcdef".into(),
    };
    ecs.cancel(&forgotten, "cancelled by tenant dev")
        .await
        .unwrap();
    assert_eq!(moto.count("StopTask").await, 1);
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
        "nothing written yet"
    );

    let mut log = TaskLog::create(&moto, &handle, "main").await;
    offload_provider::conformance::log_cursor_follows(&ecs, &handle, |text| {
        log.append(text.lines())
    })
    .await;
}

/// A launched task and its (empty) log stream.
async fn task_with_log(moto: &Moto) -> (offload_ecs::Ecs, Handle, TaskLog) {
    let ecs = moto.config(json!({})).build().await.unwrap();
    let handle = ecs
        .launch(&launch("offload-l-1", spec("alpine:3", 0.25, 512)))
        .await
        .unwrap();
    let log = TaskLog::create(moto, &handle, "main").await;
    (ecs, handle, log)
}

/// A log shorter than the tail asked for is read whole in one call: the page is short, so
/// there is nothing before it to ask for.
#[tokio::test]
async fn a_short_log_is_one_call() {
    let moto = Moto::start();
    let (ecs, handle, mut log) = task_with_log(&moto).await;
    log.append(["hello", "offload-result: {\"rows\": 3}"]).await;
    moto.reset_recording().await;
    let query = LogQuery {
        cursor: None,
        tail_bytes: Some(64 << 10),
    };
    let tail = ecs.logs(&handle, &query).await.unwrap();
    assert_eq!(tail.text, "hello\noffload-result: {\"rows\": 3}\n");
    assert_eq!(moto.count("GetLogEvents").await, 1);
}

/// The tail kept when a job ends (and the `offload-result:` line in it) is the end of the
/// log, however long: read backward from the end, one call for a tail that fits in one.
#[tokio::test]
async fn a_log_tail_is_the_end_of_a_long_log_read_backward() {
    let moto = Moto::start();
    let (ecs, handle, mut log) = task_with_log(&moto).await;
    // 110,000 lines: more than 10 of CloudWatch's pages of 10,000 events.
    let lines: Vec<String> = (0..110_000).map(|i| format!("line {i:06}")).collect();
    for batch in lines.chunks(10_000) {
        log.append(batch.iter().cloned()).await;
    }
    let whole: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let tail = |bytes: usize| LogQuery {
        cursor: None,
        tail_bytes: Some(bytes),
    };

    moto.reset_recording().await;
    let small = ecs.logs(&handle, &tail(64)).await.unwrap();
    assert_eq!(small.text, whole[whole.len() - 64..]);
    assert!(small.text.ends_with("line 109999\n"), "{:?}", small.text);
    assert_eq!(
        moto.count("GetLogEvents").await,
        1,
        "one call for a small tail"
    );

    // 200,000 bytes take a second page of 10,000 events (120,000 bytes each), no more.
    moto.reset_recording().await;
    let long = ecs.logs(&handle, &tail(200_000)).await.unwrap();
    assert_eq!(long.text, whole[whole.len() - 200_000..]);
    assert_eq!(moto.count("GetLogEvents").await, 2);

    // The cursor still lets a follower read on from the end.
    let follow = LogQuery {
        cursor: small.cursor,
        tail_bytes: None,
    };
    assert_eq!(ecs.logs(&handle, &follow).await.unwrap().text, "");
    log.append(["offload-result: {\"rows\": 3}"]).await;
    assert_eq!(
        ecs.logs(&handle, &follow).await.unwrap().text,
        "offload-result: {\"rows\": 3}\n"
    );
}

/// The tails of several ended tasks come from one FilterLogEvents call, each its own
/// stream's end (a task that wrote nothing has an empty one); an answer CloudWatch cuts
/// into pages is not used, so that no tail is taken from part of a log, nor is a refusal
/// for a stream that does not exist (a task whose container never started).
#[tokio::test]
async fn the_tails_of_several_tasks_are_read_in_one_call() {
    let moto = Moto::start();
    let ecs = moto.config(json!({})).build().await.unwrap();
    let mut handles = vec![];
    let mut logs = vec![];
    for n in 0..3 {
        let handle = ecs
            .launch(&launch(&format!("offload-t-{n}"), spec("alpine:3", 0.25, 512)))
            .await
            .unwrap();
        if n < 2 {
            let mut log = TaskLog::create(&moto, &handle, "main").await;
            log.append([format!("job {n}"), format!("offload-result: {{\"n\": {n}}}")])
                .await;
            logs.push(log);
        }
        handles.push(handle);
    }
    assert_eq!(ecs.capabilities().max_tail_batch, 100);
    moto.reset_recording().await;
    let tails = ecs.tails(&handles, 64 << 10).await.unwrap();
    assert_eq!(
        tails[&handles[0].key],
        "job 0\noffload-result: {\"n\": 0}\n"
    );
    assert_eq!(
        tails[&handles[1].key],
        "job 1\noffload-result: {\"n\": 1}\n"
    );
    assert_eq!(tails[&handles[2].key], "", "nothing written");
    assert_eq!(moto.count("FilterLogEvents").await, 1);
    assert_eq!(moto.count("GetLogEvents").await, 0);
    // At most `max_bytes` of each, from its end.
    let short = ecs.tails(&handles[..2], 10).await.unwrap();
    assert_eq!(short[&handles[1].key], " {\"n\": 1}\n");

    // More events than one answer holds: CloudWatch hands back a nextToken, and no tail
    // is taken from it.
    let lines: Vec<String> = (0..10_000).map(|i| format!("line {i}")).collect();
    logs[0].append(lines).await;
    let tails = ecs.tails(&handles, 64 << 10).await.unwrap();
    assert!(tails.is_empty(), "{:?}", tails.keys());

    let (cluster, _) = handles[1].provider_ref.rsplit_once('/').unwrap();
    let never_started = Handle {
        key: "offload-t-9".into(),
        provider_ref: format!("{cluster}/0000000000000000000000000000dead"),
    };
    let both = [handles[1].clone(), never_started.clone()];
    assert!(ecs.tails(&both, 64 << 10).await.unwrap().is_empty());
    let alone = ecs.logs(&never_started, &LogQuery::default()).await.unwrap();
    assert_eq!(alone.text, "");
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

/// A TES-shaped job ([`offload_provider::conformance::tes_plan`]).
fn steps_spec(second: &str) -> WorkloadSpec {
    WorkloadSpec {
        steps: Some(offload_provider::conformance::tes_plan(second)),
        command: vec![],
        args: vec![],
        ..spec("alpine", 0.5, 1024)
    }
}

const FILER_SECRET: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:filer";

async fn steps_provider(moto: &Moto) -> offload_ecs::Ecs {
    moto.config(json!({
        "filer_image": "offload:1",
        "filer_secrets": {"AWS_ACCESS_KEY_ID": FILER_SECRET},
    }))
    .build()
    .await
    .unwrap()
}

/// A job of several steps is one task with a container per step, in order: each waits for
/// the one before it to exit 0, only the last is essential, every one mounts the shared
/// folders, and the filer's alone get the deployment's secrets. Commands and environments
/// travel as overrides (the followed executor's first), so a second task of the same shape
/// registers nothing.
#[tokio::test]
async fn steps_are_dependent_containers_of_one_task() {
    let moto = Moto::start();
    let ecs = steps_provider(&moto).await;
    let job = steps_spec("echo hi; exit 3");
    ecs.validate(&job).unwrap();
    let handle = ecs.launch(&launch("offload-s-1", job)).await.unwrap();

    let recorded = moto.recorded().await;
    let (_, def) = recorded.iter().find(|(a, _)| a == "RegisterTaskDefinition").unwrap();
    let containers = def["containerDefinitions"].as_array().unwrap();
    let field = |name: &str| containers.iter().map(|c| c[name].clone()).collect::<Vec<_>>();
    assert_eq!(field("name"), ["stage-in", "exec-0", "exec-1", "stage-out"]);
    assert_eq!(field("image"), ["offload:1", "alpine", "busybox", "offload:1"]);
    assert_eq!(field("essential"), [false, false, false, true]);
    assert_eq!(field("memory"), vec![json!(null); 4], "each step has the whole task's memory");
    let after = |name: &str| json!([{"containerName": name, "condition": "SUCCESS"}]);
    assert_eq!(
        field("dependsOn"),
        [json!(null), after("stage-in"), after("exec-0"), after("exec-1")]
    );
    let mount = json!([{"sourceVolume": "steps-0", "containerPath": "/data", "readOnly": false}]);
    assert_eq!(field("mountPoints"), [mount.clone(), mount.clone(), mount.clone(), mount]);
    assert_eq!(def["volumes"], json!([{"name": "steps-0"}]));
    assert_eq!(field("workingDirectory")[1], "/data");
    let secret = json!([{"name": "AWS_ACCESS_KEY_ID", "valueFrom": FILER_SECRET}]);
    assert_eq!(field("secrets"), [secret.clone(), json!(null), json!(null), secret]);

    let (_, run) = recorded.iter().find(|(a, _)| a == "RunTask").unwrap();
    let overrides = run["overrides"]["containerOverrides"].as_array().unwrap();
    let by_name = |name: &str| overrides.iter().find(|o| o["name"] == name).unwrap();
    assert_eq!(overrides[0]["name"], "exec-1", "the followed container's comes first");
    assert_eq!(by_name("stage-in")["command"], json!(["offload", "filer", "stage-in"]));
    assert_eq!(by_name("exec-0")["command"], json!(["sort", "/data/in.txt"]));
    assert_eq!(by_name("exec-1")["command"][0], "/bin/sh");
    let env = |name: &str| -> BTreeMap<String, String> {
        by_name(name)["environment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().into(), p["value"].as_str().unwrap().into()))
            .collect()
    };
    assert_eq!(env("exec-0")["TOKEN"], "s3cr3t", "executors get the job's secret env");
    assert_eq!(env("exec-1")["OFFLOAD_STDOUT"], "/data/out.txt");
    assert_eq!(env("stage-in")["OFFLOAD_FILER_ROOT"], "/");
    assert!(!env("stage-in").contains_key("TOKEN"), "the filer gets no job secret");
    assert!(env("stage-in").contains_key("OFFLOAD_FILER_PLAN"));

    let other = steps_spec("echo another command");
    ecs.launch(&launch("offload-s-2", other)).await.unwrap();
    assert_eq!(moto.count("RegisterTaskDefinition").await, 1, "one definition per shape");

    // All went well, the second executor's error ignored: its code is kept all the same.
    let mut log = TaskLog::create(&moto, &handle, "exec-1").await;
    log.append(["hi", "offload-step-exit: 3"]).await;
    let codes = json!({"stage-in": 0, "exec-0": 0, "exec-1": 0, "stage-out": 0});
    moto.stop_containers(&handle.provider_ref, codes, "Essential container in task exited")
        .await;
    assert_eq!(
        phase(&ecs, &handle).await,
        Some(Phase::Exited { exit_code: Some(0), reason: None })
    );
    let runs = ecs.step_runs(&handle, 1 << 16).await.unwrap();
    let roles: Vec<_> = runs.iter().map(|r| r.role).collect();
    use StepRole::*;
    assert_eq!(roles, [StageIn, Executor, Executor, StageOut]);
    let codes: Vec<_> = runs.iter().map(|r| r.exit_code).collect();
    assert_eq!(codes, [Some(0), Some(0), Some(3), Some(0)]);
    assert_eq!(runs[2].log, "hi\noffload-step-exit: 3\n");
}

/// The first step that exits non-zero ends the task (the ones after it never start): an
/// executor's code is the job's; a filer's failure is no code of the job's, and its reason
/// is the filer's own line, from its log.
#[tokio::test]
async fn a_failed_step_ends_the_task_and_a_failed_filer_says_why() {
    let moto = Moto::start();
    let ecs = steps_provider(&moto).await;
    let executor = ecs.launch(&launch("offload-f-1", steps_spec("true"))).await.unwrap();
    moto.stop_containers(
        &executor.provider_ref,
        json!({"stage-in": 0, "exec-0": 5}),
        "Essential container in task exited",
    )
    .await;
    assert_eq!(
        phase(&ecs, &executor).await,
        Some(Phase::Exited { exit_code: Some(5), reason: Some("exited with code 5".into()) })
    );
    let codes = offload_provider::conformance::step_codes(&ecs, &executor).await;
    assert_eq!(codes, [Some(0), Some(5), None, None]);

    let filer = ecs.launch(&launch("offload-f-2", steps_spec("true"))).await.unwrap();
    let mut log = TaskLog::create(&moto, &filer, "stage-in").await;
    log.append(["reading", "offload-filer: s3://bucket/in.txt: the object does not exist"])
        .await;
    moto.stop_containers(&filer.provider_ref, json!({"stage-in": 1}), "").await;
    // A log that cannot be read leaves the task's own reason, and the round whole.
    let refused = json!({"__type": "InvalidParameterException", "message": "no"});
    moto.fault("GetLogEvents", 1, 400, refused).await;
    assert_eq!(
        phase(&ecs, &filer).await,
        Some(Phase::Exited {
            exit_code: None,
            reason: Some("staging the inputs failed: its container stage-in exited with code 1".into())
        })
    );
    assert_eq!(
        phase(&ecs, &filer).await,
        Some(Phase::Exited {
            exit_code: None,
            reason: Some(
                "staging the inputs failed: s3://bucket/in.txt: the object does not exist".into()
            )
        })
    );
}

/// What a job of steps cannot have here is refused before any call, naming the field.
#[tokio::test]
async fn steps_this_provider_cannot_run_are_refused_naming_the_field() {
    let moto = Moto::start();
    let no_filer = moto.config(json!({})).build().await.unwrap();
    let refusal = |r: offload_provider::Result<()>| match r {
        Err(ProviderError::InvalidSpec(why)) => why,
        other => panic!("not refused: {other:?}"),
    };
    let why = refusal(no_filer.validate(&steps_spec("true")));
    assert!(why.starts_with("steps: ") && why.contains("filer_image"), "{why}");

    let ecs = moto
        .config(json!({"filer_image": "offload:1", "allowed_task_definitions": ["etl"]}))
        .build()
        .await
        .unwrap();
    let mut named = steps_spec("true");
    named.provider_options = Some(json!({"task_definition": "etl"}));
    let why = refusal(ecs.validate(&named));
    assert!(why.starts_with("provider_options.ecs.task_definition: "), "{why}");

    let long = "x".repeat(9000);
    let why = refusal(ecs.validate(&steps_spec(&long)));
    assert!(why.starts_with("steps: ") && why.contains("8192"), "{why}");
    moto.reset_recording().await;
    assert!(ecs.launch(&launch("offload-l-1", steps_spec(&long))).await.is_err());
    assert_eq!(moto.count("RunTask").await, 0);
}

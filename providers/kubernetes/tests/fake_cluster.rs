//! The Kubernetes provider through the real kube client and watcher against the fake API
//! server in tests/fake (no real API server can run on these machines).

mod fake;

use std::collections::BTreeMap;
use std::time::Duration;

use fake::FakeApi;
use offload_kubernetes::Kubernetes;
use offload_provider::conformance::launch;
use offload_provider::{Gpu, Handle, Phase, Provider, ProviderError, Resources, WorkloadSpec};
use serde_json::{json, Value};

struct Cluster {
    api: FakeApi,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl Cluster {
    async fn start() -> Cluster {
        let api = FakeApi::start().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.kubeconfig(dir.path());
        Cluster {
            api,
            _dir: dir,
            kubeconfig,
        }
    }

    async fn provider(&self, extra: Value) -> Kubernetes {
        let base = json!({
            "kubeconfig": self.kubeconfig,
            "context": "fake",
            "namespace": "jobs",
            "calls_per_second": 1000,
            "burst": 1000,
        });
        let config: offload_kubernetes::Config = offload_provider::conformance::config(base, extra);
        config.build().await.unwrap()
    }
}

fn spec() -> WorkloadSpec {
    WorkloadSpec {
        name: None,
        image: "alpine:3".into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo hi".into()],
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        resources: Resources {
            cpu: 0.5,
            memory_bytes: 256 << 20,
            gpu: None,
            ephemeral_storage_bytes: None,
        },
        timeout_seconds: Some(600),
        labels: BTreeMap::from([("run_id".into(), "manual__2026-01-02T03:04:05+00:00".into())]),
        provider_options: None,
        steps: None,
    }
}

fn terminated(phase: &str, code: i32, reason: &str) -> Value {
    json!({"phase": phase, "containerStatuses": [{"name": "main", "image": "alpine:3", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": reason}}}]})
}

/// Observes until `want` holds for every handle (the watch is asynchronous; until its
/// first list is in, observe answers with a transient error and the engine polls again).
async fn until(k8s: &Kubernetes, handles: &[Handle], want: impl Fn(&Phase) -> bool) -> Vec<Phase> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen = match k8s.observe(handles).await {
            Ok(seen) => seen,
            Err(ProviderError::Transient(_)) => vec![],
            Err(e) => panic!("observe failed: {e}"),
        };
        if seen.len() == handles.len() && seen.iter().all(|o| want(&o.phase)) {
            return seen.into_iter().map(|o| o.phase).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting; last saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_launch_creates_the_pod_and_its_secret() {
    let cluster = Cluster::start().await;
    let k8s = cluster
        .provider(json!({"service_account": "jobs", "image_pull_secrets": ["registry"]}))
        .await;
    let handle = k8s.launch(&launch("offload-abc-1", spec())).await.unwrap();
    assert_eq!(handle.provider_ref, "offload-abc-1");
    let pod = cluster.api.pod("offload-abc-1").unwrap();
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "offload");
    assert_eq!(
        labels["offload.dev/job-id"],
        "0193f0c2-0000-7000-8000-000000000001"
    );
    assert_eq!(
        labels["offload.dev/label-run_id"],
        "manual__2026-01-02T03-04-05-00-00"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["activeDeadlineSeconds"], 600);
    assert_eq!(spec["serviceAccountName"], "jobs");
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "registry"}]));
    let container = &spec["containers"][0];
    assert_eq!(container["command"], json!(["sh", "-c"]));
    assert_eq!(container["args"], json!(["echo hi"]));
    assert_eq!(
        container["resources"]["requests"],
        json!({"cpu": "500m", "memory": "268435456"})
    );
    assert_eq!(
        container["resources"]["limits"],
        container["resources"]["requests"]
    );
    let env = container["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "GREETING", "value": "hello"})));
    assert!(
        env.contains(&json!({"name": "TOKEN", "valueFrom": {"secretKeyRef":
        {"name": "offload-abc-1-env", "key": "TOKEN", "optional": false}}}))
    );
    assert!(
        !pod.to_string().contains("s3cr3t"),
        "the secret value is not in the pod"
    );

    let secret = cluster.api.secret("offload-abc-1-env").unwrap();
    assert_eq!(secret["stringData"], json!({"TOKEN": "s3cr3t"}));
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        pod["metadata"]["uid"]
    );
    // Released, the Secret goes with its pod (the garbage collector's work): one call.
    let before = cluster.api.requests().len();
    k8s.release(&handle).await.unwrap();
    assert!(cluster.api.pod("offload-abc-1").is_none());
    assert!(cluster.api.secret("offload-abc-1-env").is_none());
    assert_eq!(
        cluster.api.requests()[before..],
        ["DELETE /api/v1/namespaces/jobs/pods/offload-abc-1?"]
    );
}

#[tokio::test]
async fn gpu_and_spot_work_lands_on_the_right_nodes() {
    let cluster = Cluster::start().await;
    let k8s = cluster
        .provider(json!({"gpu_kinds": ["nvidia-tesla-t4"], "gke": {"spot": true, "compute_class": "Accelerator"}}))
        .await;
    let mut gpu = spec();
    gpu.resources.gpu = Some(Gpu {
        count: 2,
        kind: Some("nvidia-tesla-t4".into()),
    });
    k8s.launch(&launch("offload-gpu-1", gpu.clone()))
        .await
        .unwrap();
    let pod = cluster.api.pod("offload-gpu-1").unwrap();
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "2"
    );
    assert_eq!(
        pod["spec"]["nodeSelector"],
        json!({"cloud.google.com/gke-accelerator": "nvidia-tesla-t4", "cloud.google.com/gke-spot": "true",
               "cloud.google.com/compute-class": "Accelerator"})
    );
    let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
    assert!(tolerations.iter().any(|t| t["key"] == "nvidia.com/gpu"));
    assert!(tolerations
        .iter()
        .any(|t| t["key"] == "cloud.google.com/gke-spot"));
    // A GPU kind the cluster does not have is refused before any call.
    gpu.resources.gpu = Some(Gpu {
        count: 1,
        kind: Some("nvidia-h100-80gb".into()),
    });
    assert!(k8s.validate(&gpu).is_err());
    assert!(k8s.capabilities().spot);
    assert!(k8s.price_sheet(&Default::default()).sheet.gpu_hour.contains_key("nvidia-tesla-t4"));
}

#[tokio::test]
async fn tenants_choose_secrets_and_nodes_only_from_the_allow_lists() {
    let cluster = Cluster::start().await;
    let toleration =
        json!({"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"});
    let k8s = cluster
        .provider(json!({
            "node_selector": {"cloud.google.com/gke-nodepool": "default"},
            "allowed_secrets": [{"name": "db-creds", "keys": ["PASSWORD"]}, {"name": "shared-config"}],
            "allowed_node_selectors": {"cloud.google.com/gke-nodepool": ["batch", "gpu"]},
            "allowed_tolerations": [toleration],
        }))
        .await;
    let mut allowed = spec();
    allowed.provider_options = Some(json!({
        "env_from_secrets": ["shared-config", {"name": "db-creds", "keys": ["PASSWORD"]}],
        "node_selector": {"cloud.google.com/gke-nodepool": "batch"},
        "tolerations": [toleration],
    }));
    k8s.validate(&allowed).unwrap();
    k8s.launch(&launch("offload-o-1", allowed)).await.unwrap();
    let pod = cluster.api.pod("offload-o-1").unwrap();
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["envFrom"],
        json!([{"secretRef": {"name": "shared-config", "optional": false}}])
    );
    assert!(container["env"].as_array().unwrap().contains(&json!({"name": "PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "PASSWORD", "optional": false}}})));
    assert_eq!(
        pod["spec"]["nodeSelector"],
        json!({"cloud.google.com/gke-nodepool": "batch"})
    );
    assert_eq!(pod["spec"]["tolerations"], json!([toleration]));

    // Anything else is refused at submit (validate) and at launch, naming the field, and
    // no pod is created.
    for (options, field) in [
        (
            json!({"env_from_secrets": ["offload-tokens"]}),
            "env_from_secrets[0]",
        ),
        (
            json!({"env_from_secrets": ["db-creds"]}),
            "env_from_secrets[0]",
        ),
        (
            json!({"env_from_secrets": [{"name": "db-creds", "keys": ["ADMIN"]}]}),
            "env_from_secrets[0].keys[0]",
        ),
        (
            json!({"node_selector": {"cloud.google.com/gke-nodepool": "prod"}}),
            "node_selector[\"cloud.google.com/gke-nodepool\"]",
        ),
        (
            json!({"node_selector": {"kubernetes.io/hostname": "node-1"}}),
            "node_selector[\"kubernetes.io/hostname\"]",
        ),
        (
            json!({"tolerations": [{"operator": "Exists"}]}),
            "tolerations[0]",
        ),
    ] {
        let mut refused = spec();
        refused.provider_options = Some(options.clone());
        let field = format!("provider_options.kubernetes.{field}: ");
        for err in [
            k8s.validate(&refused).unwrap_err(),
            k8s.launch(&launch("offload-o-2", refused))
                .await
                .unwrap_err(),
        ] {
            assert!(
                matches!(&err, ProviderError::InvalidSpec(m) if m.starts_with(&field)),
                "{options}: {err:?}"
            );
        }
    }
    assert!(cluster.api.pod("offload-o-2").is_none());

    // The defaults allow none of it.
    let strict = cluster.provider(json!({})).await;
    let mut secret = spec();
    secret.provider_options = Some(json!({"env_from_secrets": ["shared-config"]}));
    assert!(
        matches!(strict.validate(&secret), Err(ProviderError::InvalidSpec(m))
        if m == "provider_options.kubernetes.env_from_secrets[0]: secret \"shared-config\" is not in allowed_secrets")
    );
}

#[tokio::test]
async fn the_watch_drives_every_state_without_a_request_per_job() {
    let cluster = Cluster::start().await;
    let k8s = cluster.provider(json!({})).await;
    let mut handles = vec![];
    for i in 0..20 {
        handles.push(
            k8s.launch(&launch(&format!("offload-w-{i}"), spec()))
                .await
                .unwrap(),
        );
    }
    until(&k8s, &handles, |p| matches!(p, Phase::Starting { .. })).await;
    for h in &handles {
        cluster
            .api
            .set_status(&h.provider_ref, json!({"phase": "Running"}));
    }
    until(&k8s, &handles, |p| *p == Phase::Running).await;
    let outcomes = [
        terminated("Succeeded", 0, "Completed"),
        terminated("Failed", 3, "Error"),
        terminated("Failed", 137, "OOMKilled"),
        json!({"phase": "Failed", "reason": "DeadlineExceeded", "message": "Pod was active on the node longer than the specified deadline"}),
        json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
    ];
    for (h, status) in handles.iter().zip(outcomes.iter().cycle()) {
        cluster.api.set_status(&h.provider_ref, status.clone());
    }
    let phases = until(&k8s, &handles, Phase::is_final).await;
    assert_eq!(
        phases[0],
        Phase::Exited {
            exit_code: Some(0),
            reason: None
        }
    );
    assert_eq!(
        phases[1],
        Phase::Exited {
            exit_code: Some(3),
            reason: Some("exited with code 3".into())
        }
    );
    assert_eq!(
        phases[2],
        Phase::Exited {
            exit_code: Some(137),
            reason: Some("OOMKilled".into())
        }
    );
    assert_eq!(
        phases[3],
        Phase::Exited {
            exit_code: None,
            reason: Some(
                "DeadlineExceeded: Pod was active on the node longer than the specified deadline"
                    .into()
            )
        }
    );
    assert_eq!(
        phases[4],
        Phase::Exited {
            exit_code: None,
            reason: Some("Evicted: The node was low on resource: memory.".into())
        }
    );

    // Following 20 pods took one list and watch requests, no GET per pod.
    let requests = cluster.api.requests();
    let per_pod_gets = requests
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces/jobs/pods/"))
        .count();
    assert_eq!(per_pod_gets, 0, "{requests:#?}");
    let lists = requests
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces/jobs/pods?"))
        .count();
    assert!(lists <= 3, "{lists} list/watch requests: {requests:#?}");
}

#[tokio::test]
async fn the_watch_survives_a_dropped_connection_and_a_410() {
    let cluster = Cluster::start().await;
    let k8s = cluster.provider(json!({})).await;
    let handles = [k8s.launch(&launch("offload-r-1", spec())).await.unwrap()];
    until(&k8s, &handles, |p| matches!(p, Phase::Starting { .. })).await;

    cluster.api.drop_watches();
    cluster
        .api
        .set_status("offload-r-1", json!({"phase": "Running"}));
    until(&k8s, &handles, |p| *p == Phase::Running).await;

    let lists_before = relists(&cluster.api);
    cluster.api.expire_history();
    cluster.api.drop_watches();
    cluster
        .api
        .set_status("offload-r-1", terminated("Succeeded", 0, "Completed"));
    until(&k8s, &handles, Phase::is_final).await;
    assert!(
        relists(&cluster.api) > lists_before,
        "a 410 makes the watcher list again"
    );
}

#[tokio::test]
async fn a_fresh_list_now_and_then_is_the_safety_net() {
    let cluster = Cluster::start().await;
    let k8s = cluster.provider(json!({"relist_seconds": 1})).await;
    let handles = [k8s.launch(&launch("offload-s-1", spec())).await.unwrap()];
    until(&k8s, &handles, |p| matches!(p, Phase::Starting { .. })).await;
    let before = relists(&cluster.api);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        relists(&cluster.api) >= before + 2,
        "{:#?}",
        cluster.api.requests()
    );
    cluster
        .api
        .set_status("offload-s-1", json!({"phase": "Running"}));
    until(&k8s, &handles, |p| *p == Phase::Running).await;
}

fn relists(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces/jobs/pods?") && !r.contains("watch=true"))
        .count()
}

#[tokio::test]
async fn no_pod_is_lost_while_the_first_list_after_a_restart_is_slow() {
    let cluster = Cluster::start().await;
    let before = cluster.provider(json!({})).await;
    let handles = [before
        .launch(&launch("offload-slow-1", spec()))
        .await
        .unwrap()];
    cluster
        .api
        .set_status("offload-slow-1", json!({"phase": "Running"}));
    drop(before);
    // The gateway restarts while the API server takes its time to list.
    cluster.api.hold_lists();
    let k8s = cluster.provider(json!({})).await;
    // Many more poll rounds than a pod may be missing for before it counts as lost.
    let mut answers = vec![];
    for _ in 0..20 {
        answers.push(k8s.observe(&handles).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = answers.iter().position(|a| {
        a.as_ref()
            .is_ok_and(|seen| seen.iter().any(|o| matches!(o.phase, Phase::Lost { .. })))
    });
    assert_eq!(lost, None, "a running pod was declared lost: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Err(ProviderError::Transient(m)) if m.contains("not synced"))),
        "until the first list is in, the engine is told to poll again: {answers:?}"
    );
    assert!(
        matches!(k8s.managed().await, Err(ProviderError::Transient(_))),
        "the orphan sweep gets no empty listing either"
    );
    cluster.api.release_lists();
    until(&k8s, &handles, |p| *p == Phase::Running).await;
    assert_eq!(k8s.managed().await.unwrap(), handles);
}

#[tokio::test]
async fn a_relaunch_after_a_crash_adopts_the_pod() {
    let cluster = Cluster::start().await;
    let first = cluster.provider(json!({})).await;
    let handle = first.launch(&launch("offload-k-1", spec())).await.unwrap();
    drop(first);
    let second = cluster.provider(json!({})).await;
    let again = second.launch(&launch("offload-k-1", spec())).await.unwrap();
    assert_eq!(again, handle);
    let creates = cluster
        .api
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /api/v1/namespaces/jobs/pods"))
        .count();
    assert_eq!(creates, 2, "the second create got 409 AlreadyExists");
}

#[tokio::test]
async fn cancel_deletes_gracefully_and_release_cleans_up() {
    let cluster = Cluster::start().await;
    let k8s = cluster.provider(json!({"grace_seconds": 15})).await;
    let handle = k8s.launch(&launch("offload-c-1", spec())).await.unwrap();
    k8s.cancel(&handle, "cancelled by tenant dev")
        .await
        .unwrap();
    let pod = cluster
        .api
        .pod("offload-c-1")
        .expect("graceful: still there");
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 15);
    // The kubelet stops it: the pod fails with SIGTERM's code and goes.
    cluster
        .api
        .set_status("offload-c-1", terminated("Failed", 143, "Error"));
    until(&k8s, std::slice::from_ref(&handle), Phase::is_final).await;
    k8s.release(&handle).await.unwrap();
    assert!(cluster.api.pod("offload-c-1").is_none());
    assert!(cluster.api.secret("offload-c-1-env").is_none());
    // Both are idempotent.
    k8s.cancel(&handle, "again").await.unwrap();
    k8s.release(&handle).await.unwrap();
}

#[tokio::test]
async fn a_pod_stuck_pending_fails_with_its_reason() {
    let cluster = Cluster::start().await;
    let k8s = cluster
        .provider(json!({"pending_timeout_seconds": 0}))
        .await;
    let handles = [k8s.launch(&launch("offload-p-1", spec())).await.unwrap()];
    cluster.api.set_status(
        "offload-p-1",
        json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "nope", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImagePull", "message": "pull access denied for nope"}}}]}),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let phases = until(&k8s, &handles, Phase::is_final).await;
    assert_eq!(
        phases[0],
        Phase::Exited {
            exit_code: None,
            reason: Some("ErrImagePull: pull access denied for nope".into())
        }
    );
}

#[tokio::test]
async fn logs_come_from_the_pod_log_api_with_a_cursor() {
    let cluster = Cluster::start().await;
    let k8s = cluster.provider(json!({})).await;
    let handle = k8s.launch(&launch("offload-l-1", spec())).await.unwrap();
    offload_provider::conformance::log_cursor_follows(&k8s, &handle, |text| {
        cluster.api.append_log("offload-l-1", text);
        async {}
    })
    .await;
}

/// Pods of a wave end together, and each end reads its log tail for the job's result: on
/// the API call budget (here 1 a second, burst 1) 20 reads would take 19 s at least, and
/// the last job's end would be seen that late. Log reads have a budget of their own.
#[tokio::test]
async fn a_wave_of_log_reads_does_not_wait_on_the_api_call_budget() {
    let cluster = Cluster::start().await;
    let k8s = cluster
        .provider(json!({"calls_per_second": 1, "burst": 1}))
        .await;
    // The launch's create takes the call budget's one token.
    let handle = k8s.launch(&launch("offload-w-1", spec())).await.unwrap();
    cluster.api.append_log("offload-w-1", "offload-result: {}\n");
    let started = std::time::Instant::now();
    let whole = Default::default();
    let reads = (0..20).map(|_| k8s.logs(&handle, &whole));
    for chunk in futures::future::join_all(reads).await {
        assert_eq!(chunk.unwrap().text, "offload-result: {}\n");
    }
    let took = started.elapsed();
    // Half the time the shared budget would need, so the bound holds on a slow machine.
    assert!(took < Duration::from_secs(10), "20 log reads took {took:?}");
    // A log budget that would allow no read is refused at startup, naming its settings.
    let refused = offload_kubernetes::Config::check(&serde_json::from_value(json!({
        "log_burst": 0
    })).unwrap());
    assert_eq!(refused.unwrap_err(), "log_reads_per_second and log_burst must be at least 1");
}

#[tokio::test]
async fn the_fake_keeps_kubernetes_conventions() {
    // The fake itself, through the real client: what the provider relies on.
    let cluster = Cluster::start().await;
    let kubeconfig = kube::config::Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "jobs");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "labels": {"a": "1"}},
        "spec": {"containers": [{"name": "main", "image": "alpine"}]}
    }))
    .unwrap();
    let created = pods.create(&Default::default(), &pod).await.unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let err = pods.create(&Default::default(), &pod).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"));
    let err = pods.get("nope").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"));
    let selected = pods
        .list(&kube::api::ListParams::default().labels("a=1"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let none = pods
        .list(&kube::api::ListParams::default().labels("a=2"))
        .await
        .unwrap();
    assert!(none.items.is_empty());
    let rv: u64 = selected.metadata.resource_version.unwrap().parse().unwrap();
    assert!(rv >= 1);
    cluster.api.append_log("p", "hello\n");
    let text = pods.logs("p", &Default::default()).await.unwrap();
    assert_eq!(text, "hello\n");
}

fn step(role: &str, command: &[&str]) -> offload_provider::Step {
    serde_json::from_value(json!({
        "role": role, "image": "alpine:3", "command": command, "workdir": null, "env": {},
        "stdin": null, "stdout": null, "stderr": null, "ignore_error": false,
    }))
    .unwrap()
}

fn terminated_at(name: &str, code: i32, message: &str) -> Value {
    json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "message": message,
            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:02Z"}}})
}

/// A workload of several steps is one pod: the filer and every executor but the last are
/// init containers in order, the last is `main`; each mounts the shared emptyDir volumes at
/// the task's folders; the filer runs the filer image with the deployment's Secret, which
/// the executors do not get; an executor that ignores errors or redirects runs through sh.
/// How each step went comes from the containers' statuses and logs; a failed filer is no
/// exit code of the job's, and its reason is its own line.
#[tokio::test]
async fn steps_are_init_containers_in_order_sharing_empty_dirs() {
    let cluster = Cluster::start().await;
    let k8s = cluster
        .provider(json!({"filer_image": "offload:latest", "filer_secret": "filer-credentials"}))
        .await;
    let mut plain = spec();
    plain.command.clear();
    plain.args.clear();
    let mut second = step("executor", &["sh", "-c", "cat /vol/A/x"]);
    second.ignore_error = true;
    second.stdout = Some("/vol/A/out.txt".into());
    second.workdir = Some("/vol/A".into());
    plain.steps = Some(offload_provider::StepPlan {
        steps: vec![
            step("stage_in", &["filer", "stage-in"]),
            step("executor", &["sh", "-c", "echo x > /vol/A/x"]),
            second,
            step("stage_out", &["filer", "stage-out"]),
        ],
        volumes: vec!["/data".into(), "/vol/A".into()],
    });
    k8s.validate(&plain).unwrap();
    let handle = k8s.launch(&launch("offload-steps-1", plain.clone())).await.unwrap();
    let pod = cluster.api.pod("offload-steps-1").unwrap();
    let spec = &pod["spec"];
    let names = |list: &Value| -> Vec<String> {
        list.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&spec["initContainers"]), ["step-0", "step-1", "step-2"]);
    assert_eq!(names(&spec["containers"]), ["main"]);
    assert_eq!(
        spec["volumes"],
        json!([{"name": "steps-0", "emptyDir": {}}, {"name": "steps-1", "emptyDir": {}}])
    );
    let mounts = json!([{"name": "steps-0", "mountPath": "/data"}, {"name": "steps-1", "mountPath": "/vol/A"}]);
    for c in spec["initContainers"].as_array().unwrap().iter().chain([&spec["containers"][0]]) {
        assert_eq!(c["volumeMounts"], mounts, "{c}");
    }
    let filer = &spec["initContainers"][0];
    assert_eq!(filer["image"], "offload:latest");
    assert_eq!(filer["command"], json!(["offload", "filer", "stage-in"]));
    assert_eq!(filer["envFrom"], json!([{"secretRef": {"name": "filer-credentials", "optional": false}}]));
    assert_eq!(filer["terminationMessagePolicy"], "FallbackToLogsOnError");
    let executor = &spec["initContainers"][1];
    assert_eq!(executor["image"], "alpine:3");
    assert_eq!(executor["command"], json!(["sh", "-c", "echo x > /vol/A/x"]));
    assert!(executor.get("envFrom").is_none(), "{executor}");
    assert!(executor["env"].as_array().unwrap().iter().any(|e| e["name"] == "GREETING"));
    let wrapped = &spec["initContainers"][2];
    assert_eq!(wrapped["workingDir"], "/vol/A");
    assert_eq!(wrapped["command"][0], "/bin/sh");
    assert_eq!(wrapped["command"].as_array().unwrap()[4..], json!(["sh", "-c", "cat /vol/A/x"]).as_array().unwrap()[..]);
    assert!(wrapped["command"][2].as_str().unwrap().contains(r#"> "$OFFLOAD_STDOUT""#));
    assert_eq!(spec["containers"][0]["command"], json!(["offload", "filer", "stage-out"]));
    assert_eq!(
        pod["metadata"]["annotations"]["offload.dev/steps"],
        "stage_in,executor,executor,stage_out"
    );

    // All ended: each step's code (the wrapped one's own), times and log.
    cluster.api.append_container_log("offload-steps-1", "step-1", "one\n");
    cluster
        .api
        .append_container_log("offload-steps-1", "step-2", "no\noffload-step-exit: 3\n");
    cluster.api.append_log("offload-steps-1", "offload-output: {}\n");
    cluster.api.set_status(
        "offload-steps-1",
        json!({"phase": "Succeeded",
            "initContainerStatuses": [terminated_at("step-0", 0, ""), terminated_at("step-1", 0, ""), terminated_at("step-2", 0, "")],
            "containerStatuses": [terminated_at("main", 0, "")]}),
    );
    until(&k8s, std::slice::from_ref(&handle), |p| p.is_final()).await;
    let runs = k8s.step_runs(&handle, 1024).await.unwrap();
    let codes: Vec<_> = runs.iter().map(|r| r.exit_code).collect();
    assert_eq!(codes, [Some(0), Some(0), Some(3), Some(0)]);
    assert_eq!(runs[1].log, "one\n");
    assert_eq!(runs[3].log, "offload-output: {}\n");
    assert!(runs[1].finished > runs[1].started);

    // A filer that failed: no exit code of the job's, and the filer's own line.
    let failing = k8s.launch(&launch("offload-steps-2", plain.clone())).await.unwrap();
    cluster.api.set_status(
        "offload-steps-2",
        json!({"phase": "Failed",
            "initContainerStatuses": [terminated_at("step-0", 1, "some output\noffload-filer: s3://b/k: not found\n")]}),
    );
    let phases = until(&k8s, &[failing], |p| p.is_final()).await;
    assert_eq!(
        phases[0],
        Phase::Exited { exit_code: None, reason: Some("staging the inputs failed: s3://b/k: not found".into()) }
    );
    // An executor that failed: its exit code.
    let exec_failed = k8s.launch(&launch("offload-steps-3", plain.clone())).await.unwrap();
    cluster.api.set_status(
        "offload-steps-3",
        json!({"phase": "Failed",
            "initContainerStatuses": [terminated_at("step-0", 0, ""), terminated_at("step-1", 7, "")]}),
    );
    let phases = until(&k8s, &[exec_failed], |p| p.is_final()).await;
    assert_eq!(phases[0], Phase::Exited { exit_code: Some(7), reason: Some("exited with code 7".into()) });

    // Without a filer image, a plan with a filer is refused naming steps.
    let bare = cluster.provider(json!({})).await;
    let err = bare.validate(&plain).unwrap_err().to_string();
    assert!(err.contains("steps") && err.contains("filer_image"), "{err}");
}

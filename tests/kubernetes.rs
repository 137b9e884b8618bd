//! Jobs through the gateway on the Kubernetes provider, against the fake API server of
//! providers/kubernetes/tests/fake (the test plays the kubelet): the watch drives the job
//! to its end, cancel deletes the pod, release and the orphan sweep (every second in the
//! test harness) clean up. The provider is given no `namespace`: its pods go to the
//! kubeconfig context's (`jobs`), as in a pod they go to the pod's own.

mod common;
#[cfg(feature = "kubernetes")]
#[path = "../providers/kubernetes/tests/fake/mod.rs"]
mod fake;

#[cfg(feature = "kubernetes")]
mod on_the_fake {
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use super::common::{Gateway, TOKEN_A};
    use super::fake::FakeApi;

    async fn start() -> (FakeApi, tempfile::TempDir, Gateway) {
        start_polling_every(100).await
    }

    async fn start_polling_every(ms: u64) -> (FakeApi, tempfile::TempDir, Gateway) {
        let api = FakeApi::start().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.kubeconfig(dir.path());
        let gw = Gateway::start(&format!(
            r#"
[providers.gke]
kind = "kubernetes"
kubeconfig = "{}"
context = "fake"
poll_interval_ms = {ms}
"#,
            kubeconfig.display()
        ))
        .await;
        (api, dir, gw)
    }

    async fn job(gw: &Gateway, id: &str) -> Value {
        gw.get(TOKEN_A, &format!("/v1/jobs/{id}")).await.1
    }

    async fn until(gw: &Gateway, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let j = job(gw, id).await;
            if ok(&j) {
                return j;
            }
            assert!(Instant::now() < deadline, "waiting for {what}: {j}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn terminated(phase: &str, code: i32) -> Value {
        json!({"phase": phase, "containerStatuses": [{"name": "main", "image": "alpine:3", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": code}}}]})
    }

    /// Waits up to `secs` for `ok`; how long it took.
    async fn within(gw: &Gateway, id: &str, secs: u64, ok: impl Fn(&Value) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            let j = job(gw, id).await;
            if ok(&j) {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(secs), "not within {secs} s: {j}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watch_pushes_a_pods_start_and_end_to_its_job_without_a_poll_round() {
        // Poll rounds 30 s apart: only the watch's push can move the job sooner.
        let (api, _dir, gw) = start_polling_every(30_000).await;
        let (status, created) = gw
            .submit(TOKEN_A, json!({"image": "alpine:3", "command": ["true"], "provider": "gke"}))
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap();
        let pod = until(&gw, id, "the pod", |j| j["provider_ref"].is_string()).await;
        let pod = pod["provider_ref"].as_str().unwrap().to_string();
        api.set_status(&pod, json!({"phase": "Running"}));
        let running = within(&gw, id, 5, |j| j["state"] == "running").await;
        api.set_status(&pod, terminated("Failed", 3));
        let ended = within(&gw, id, 5, |j| j["terminal"] == true).await;
        let done = job(&gw, id).await;
        assert_eq!((done["state"].as_str(), done["exit_code"].as_i64()), (Some("failed"), Some(3)));
        println!("pushed by the watch: running seen after {running:?}, the end after {ended:?}");
    }

    /// A pod Kubernetes takes down for reasons of its own (a GKE Spot node's shutdown: the
    /// DisruptionTarget condition) is a preemption, not the job's failure: the job runs
    /// again in a new pod, a new attempt, and ends with the outcome of that one; the
    /// preempted attempt is an event and stays in its cost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_taken_down_by_a_node_shutdown_runs_again_as_a_new_attempt() {
        let (api, _dir, gw) = start().await;
        let (status, created) = gw
            .submit(TOKEN_A, json!({"image": "alpine:3", "command": ["true"], "provider": "gke"}))
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap();
        let first = until(&gw, id, "the pod", |j| j["provider_ref"].is_string()).await;
        let first = first["provider_ref"].as_str().unwrap().to_string();
        api.set_status(&first, json!({"phase": "Running"}));
        until(&gw, id, "running", |j| j["state"] == "running").await;
        api.set_status(
            &first,
            json!({"phase": "Failed", "reason": "Terminated",
                   "message": "Pod was terminated in response to imminent node shutdown.",
                   "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                                   "message": "Pod was terminated in response to imminent node shutdown."}]}),
        );
        let again = until(&gw, id, "a second pod", |j| {
            j["attempts"] == 2 && j["provider_ref"].as_str().is_some_and(|p| p != first)
        })
        .await;
        let second = again["provider_ref"].as_str().unwrap().to_string();
        api.set_status(&second, terminated("Succeeded", 0));
        let done = until(&gw, id, "the end", |j| j["terminal"] == true).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 2, "{done}");
        let earlier = done["cost"]["earlier"].as_array().unwrap();
        assert_eq!(earlier.len(), 1, "{done}");
        assert_eq!(earlier[0]["preempted"], true, "{done}");
        let reasons = gw.event_reasons(TOKEN_A, id).await;
        assert!(
            reasons.iter().any(|r| r.starts_with("preempted at gke") && r.contains("TerminationByKubelet")),
            "{reasons:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_runs_as_a_pod_and_is_released() {
        let (api, _dir, gw) = start().await;
        let (status, created) = gw
            .submit(
                TOKEN_A,
                json!({"image": "alpine:3", "command": ["sh", "-c", "echo hi"], "provider": "gke",
                                    "secret_env": {"TOKEN": "s3cr3t"}}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap();
        let started = until(&gw, id, "the pod", |j| j["provider_ref"].is_string()).await;
        let pod = started["provider_ref"].as_str().unwrap().to_string();
        assert!(api.pod(&pod).is_some() && api.secret(&format!("{pod}-env")).is_some());
        api.set_status(&pod, json!({"phase": "Running"}));
        until(&gw, id, "running", |j| j["state"] == "running").await;
        api.append_log(&pod, "hi\noffload-result: {\"n\": 1}\n");
        api.set_status(&pod, terminated("Succeeded", 0));
        let done = until(&gw, id, "the end", |j| j["terminal"] == true).await;
        assert_eq!(
            (done["state"].as_str(), done["exit_code"].as_i64()),
            (Some("succeeded"), Some(0))
        );
        assert_eq!(done["result"], json!({"n": 1}));
        // Released once the outcome and log tail are stored: pod and Secret are gone.
        let deadline = Instant::now() + Duration::from_secs(20);
        while api.pod(&pod).is_some() {
            assert!(Instant::now() < deadline, "the pod was not released");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(api.secret(&format!("{pod}-env")).is_none());
        // The log tail was stored before the pod went.
        let logs = gw
            .req(
                reqwest::Method::GET,
                &format!("/v1/jobs/{id}/logs"),
                TOKEN_A,
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(logs, "hi\noffload-result: {\"n\": 1}\n");
        // Status came from the watch: the pod itself was never fetched.
        let requests = api.requests();
        assert!(requests.iter().any(
            |r| r.starts_with("GET /api/v1/namespaces/jobs/pods?") && r.contains("watch=true")
        ));
        assert!(
            !requests.iter().any(|r| r
                .starts_with(&format!("GET /api/v1/namespaces/jobs/pods/{pod}"))
                && !r.contains("/log")),
            "{requests:#?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_deletes_the_pod_and_the_sweep_removes_orphans() {
        let (api, _dir, gw) = start().await;
        let (_, created) = gw
            .submit(
                TOKEN_A,
                json!({"image": "alpine:3", "command": ["sleep", "600"], "provider": "gke"}),
            )
            .await;
        let id = created["id"].as_str().unwrap();
        let j = until(&gw, id, "the pod", |j| j["provider_ref"].is_string()).await;
        let pod = j["provider_ref"].as_str().unwrap().to_string();
        api.set_status(&pod, json!({"phase": "Running"}));
        until(&gw, id, "running", |j| j["state"] == "running").await;
        let r = gw
            .req(
                reqwest::Method::POST,
                &format!("/v1/jobs/{id}/cancel"),
                TOKEN_A,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let deadline = Instant::now() + Duration::from_secs(20);
        while api
            .pod(&pod)
            .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_null())
        {
            assert!(Instant::now() < deadline, "the pod was not deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The kubelet stops the container.
        api.set_status(&pod, terminated("Failed", 143));
        let done = until(&gw, id, "cancelled", |j| j["terminal"] == true).await;
        assert_eq!(done["state"], "cancelled");

        // A managed pod no job owns (its gateway's database is gone, say) is swept.
        let stray = "offload-0193f0c2000070008000000000000099-1";
        let k = kube_client(&api, _dir.path()).await;
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": stray, "labels": {"app.kubernetes.io/managed-by": "offload"}},
            "spec": {"containers": [{"name": "main", "image": "alpine:3"}]}
        }))
        .unwrap();
        k.create(&Default::default(), &pod).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while api.pod(stray).is_some() {
            assert!(Instant::now() < deadline, "the orphan was not swept");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A pod without offload's label is not offload's to sweep.
        let foreign: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "someone-else"},
            "spec": {"containers": [{"name": "main", "image": "alpine:3"}]}
        }))
        .unwrap();
        k.create(&Default::default(), &foreign).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(api.pod("someone-else").is_some());
    }

    async fn kube_client(
        api: &FakeApi,
        dir: &std::path::Path,
    ) -> kube::Api<k8s_openapi::api::core::v1::Pod> {
        let file = kube::config::Kubeconfig::read_from(api.kubeconfig(dir)).unwrap();
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .unwrap();
        kube::Api::namespaced(kube::Client::try_from(config).unwrap(), "jobs")
    }
}

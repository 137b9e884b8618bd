//! Jobs through the gateway on the Container Apps provider, against the fake ARM and Log
//! Analytics server of providers/aca/tests/fake_apps (the test plays Container Apps): a job
//! runs to its exit code with its log, a timeout and a cancel stop its execution, release
//! deletes the job; and `auto` sends GPU work to Container Apps or GKE by the two
//! providers' shipped price sheets.

mod common;
#[cfg(feature = "aca")]
#[path = "../providers/aca/tests/fake_apps/mod.rs"]
mod fake_apps;
#[cfg(all(feature = "aca", feature = "kubernetes"))]
#[path = "../providers/kubernetes/tests/fake/mod.rs"]
mod fake_kube;

#[cfg(feature = "aca")]
mod on_the_fake {
    use reqwest::Method;
    use serde_json::json;

    use super::common::{until, Gateway, TOKEN_A};
    use super::fake_apps::{self, FakeApps};

    const ENVIRONMENT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/batch/providers/Microsoft.App/managedEnvironments/batch";

    /// The `[providers.apps]` table for `apps`, with T4 and A100 profiles.
    pub fn provider(apps: &FakeApps) -> String {
        format!(
            r#"
[providers.apps]
kind = "aca"
subscription_id = "00000000-0000-0000-0000-000000000000"
resource_group = "batch"
location = "eastus"
environment_id = "{ENVIRONMENT}"
endpoint = "{url}"
access_token = "{token}"
poll_interval_ms = 100
max_poll_interval_ms = 200
gpu_profiles = [{{ name = "gpu-t4", type = "Consumption-GPU-NC8as-T4" }}, {{ name = "gpu-a100", type = "Consumption-GPU-NC24-A100" }}]
log_analytics = {{ workspace_id = "{workspace}", endpoint = "{url}" }}
"#,
            url = apps.url,
            token = fake_apps::TOKEN,
            workspace = fake_apps::WORKSPACE,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_runs_to_its_exit_code_with_its_log_and_is_released() {
        let apps = FakeApps::start().await;
        let gw = Gateway::start(&provider(&apps)).await;
        let id = gw
            .submitted(
                json!({"image": "alpine:3", "command": ["sh", "-c", "echo hi"], "provider": "apps",
            "secret_env": {"TOKEN": "s3cr3t"}}),
            )
            .await;
        let name = gw.launched(&id).await;
        apps.set_execution(&name, "Running", json!({"status": "Running"}));
        gw.wait_state(TOKEN_A, &id, "running", 20).await;
        apps.append_log(&name, "hello from container apps\n");
        apps.set_execution(
            &name,
            "Succeeded",
            json!({"status": "Succeeded", "code": 0, "additionalInformation": "Completed"}),
        );
        let job = gw.wait_terminal(TOKEN_A, &id, 20).await;
        assert_eq!(
            (job["state"].as_str(), job["exit_code"].as_i64()),
            (Some("succeeded"), Some(0)),
            "{job}"
        );
        let log = gw
            .req(Method::GET, &format!("/v1/jobs/{id}/logs"), TOKEN_A)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(log, "hello from container apps\n");
        // Released a second after its end: the job is deleted.
        until("the job's release", || apps.job(&name).is_none()).await;
        assert!(!gw
            .get(TOKEN_A, &format!("/v1/jobs/{id}"))
            .await
            .1
            .to_string()
            .contains("s3cr3t"));

        let id = gw
            .submitted(json!({"image": "alpine:3", "provider": "apps"}))
            .await;
        let name = gw.launched(&id).await;
        apps.set_execution(
            &name,
            "Failed",
            json!({"status": "Failed", "code": 3, "additionalInformation": "Error"}),
        );
        let job = gw.wait_terminal(TOKEN_A, &id, 20).await;
        assert_eq!(
            (job["state"].as_str(), job["exit_code"].as_i64()),
            (Some("failed"), Some(3)),
            "{job}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timeout_and_a_cancel_stop_the_execution() {
        let apps = FakeApps::start().await;
        let gw = Gateway::start(&provider(&apps)).await;
        // Long enough for the job's provisioning: a launch answers `Throttled` (2 s) until
        // it is done, and the timeout counts from the dispatch.
        let timed = gw
            .submitted(json!({"image": "alpine:3", "provider": "apps", "timeout_seconds": 5}))
            .await;
        let cancelled = gw
            .submitted(json!({"image": "alpine:3", "provider": "apps"}))
            .await;
        let timed_name = gw.launched(&timed).await;
        let cancelled_name = gw.launched(&cancelled).await;
        for name in [&timed_name, &cancelled_name] {
            apps.set_execution(name, "Running", json!({"status": "Running"}));
        }
        gw.wait_state(TOKEN_A, &cancelled, "running", 20).await;
        let r = gw
            .req(
                Method::POST,
                &format!("/v1/jobs/{cancelled}/cancel"),
                TOKEN_A,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        for (id, state, reason, name) in [
            (
                &timed,
                "failed",
                "timeout: still running after 5 s",
                &timed_name,
            ),
            (&cancelled, "cancelled", "cancelled by", &cancelled_name),
        ] {
            // The stop as ARM saw it: the job is deleted a second after it ends, its
            // executions with it, so its execution may be gone by the time this looks.
            let stop = format!("/jobs/{name}/executions/");
            let stopped = || {
                apps.requests().iter().any(|(m, path, _)| {
                    m == "POST" && path.contains(&stop) && path.contains("/stop?")
                })
            };
            until(&format!("{state}: the execution's stop"), stopped).await;
            let job = gw.wait_terminal(TOKEN_A, id, 20).await;
            assert_eq!(job["state"], state, "{job}");
            assert!(
                job["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(reason),
                "{job}"
            );
        }
    }
}

/// `auto` with Container Apps and GKE side by side, both with T4 and A100 GPUs, on their
/// shipped price sheets: a T4 job is cheaper on GKE Autopilot (0.35 $/h for the GPU and
/// cheaper vCPUs), an A100 job on Container Apps (1.90 $/h against 2.93), and it runs there.
#[cfg(all(feature = "aca", feature = "kubernetes"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sends_gpu_work_where_the_price_sheets_say() {
    use common::TOKEN_A;
    use serde_json::json;

    let apps = fake_apps::FakeApps::start().await;
    let api = fake_kube::FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let gw = common::Gateway::start(&format!(
        "{}\n[providers.gke]\nkind = \"kubernetes\"\nkubeconfig = \"{}\"\ncontext = \"fake\"\nnamespace = \"jobs\"\n\
         gpu_kinds = [\"nvidia-tesla-t4\", \"nvidia-tesla-a100\"]\n",
        on_the_fake::provider(&apps),
        kubeconfig.display()
    ))
    .await;
    gw.wait_healthy().await;
    let gpu = |kind: &str| {
        json!({"image": "trainer:1", "resources": {"cpu": 4, "memory": "16Gi", "gpu": {"count": 1, "kind": kind}},
               "routing": {"expected_duration_seconds": 3600}})
    };
    let order = |quote: &serde_json::Value| -> Vec<String> {
        quote["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["provider"].as_str().unwrap().to_string())
            .collect()
    };
    for (kind, cheapest) in [
        ("nvidia-tesla-t4", ["gke", "apps"]),
        ("nvidia-tesla-a100", ["apps", "gke"]),
    ] {
        let r = gw
            .req(reqwest::Method::POST, "/v1/quotes", TOKEN_A)
            .json(&gpu(kind))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let quote: serde_json::Value = r.json().await.unwrap();
        assert_eq!(order(&quote), cheapest, "{kind}: {quote}");
    }
    let (status, job) = gw.submit(TOKEN_A, gpu("nvidia-tesla-a100")).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let job = gw
        .wait_for(TOKEN_A, id, 20, "launched", |j| {
            j["provider_ref"].is_string()
        })
        .await;
    assert_eq!(job["provider"], "apps", "{job}");
    let created = apps.job(job["provider_ref"].as_str().unwrap()).unwrap();
    assert_eq!(created["properties"]["workloadProfileName"], "gpu-a100");
}

//! Jobs through the gateway on the Cloud Run provider, against the fake Google APIs of
//! providers/cloudrun/tests/fake_run (the test plays Cloud Run): a job runs to its exit
//! code with its log and its secret in Secret Manager, a timeout and a cancel cancel its
//! execution, release deletes the job and its secrets; and `auto` sends GPU work among
//! Cloud Run, Container Apps and GKE by their shipped price sheets.

mod common;
#[cfg(feature = "aca")]
#[path = "../providers/aca/tests/fake_apps/mod.rs"]
mod fake_apps;
#[cfg(all(feature = "cloudrun", feature = "kubernetes"))]
#[path = "../providers/kubernetes/tests/fake/mod.rs"]
mod fake_kube;
#[cfg(feature = "cloudrun")]
#[path = "../providers/cloudrun/tests/fake_run/mod.rs"]
mod fake_run;

#[cfg(feature = "cloudrun")]
mod on_the_fake {
    use reqwest::Method;
    use serde_json::json;

    use super::common::{until, Gateway, TOKEN_A};
    use super::fake_run::{self, FakeRun};

    /// The `[providers.run]` table for `run`.
    pub fn provider(run: &FakeRun) -> String {
        format!(
            r#"
[providers.run]
kind = "cloudrun"
project = "{project}"
region = "{region}"
endpoint = "{url}"
logging_endpoint = "{url}"
secret_manager = {{ endpoint = "{url}" }}
access_token = "{token}"
poll_interval_ms = 100
max_poll_interval_ms = 200
"#,
            project = fake_run::PROJECT,
            region = fake_run::REGION,
            url = run.url,
            token = fake_run::TOKEN,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_runs_to_its_exit_code_with_its_log_and_is_released() {
        let run = FakeRun::start().await;
        let gw = Gateway::start(&provider(&run)).await;
        let id = gw
            .submitted(
                json!({"image": "alpine:3", "command": ["sh", "-c", "echo hi"], "provider": "run",
                   "secret_env": {"TOKEN": "s3cr3t"}}),
            )
            .await;
        let job_id = gw.launched(&id).await;
        assert!(!run.job(&job_id).unwrap().to_string().contains("s3cr3t"));
        assert_eq!(
            run.secret(&format!("{job_id}-env-0")),
            Some(vec!["s3cr3t".to_string()])
        );
        run.run(&job_id);
        gw.wait_state(TOKEN_A, &id, "running", 20).await;
        run.append_log(&job_id, "hello from cloud run\n");
        run.exit(&job_id, 0);
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
        assert_eq!(log, "hello from cloud run\n");
        until("the job's release", || run.job(&job_id).is_none()).await;
        until("its secret's deletion", || run.secrets().is_empty()).await;

        let id = gw
            .submitted(json!({"image": "alpine:3", "provider": "run"}))
            .await;
        let job_id = gw.launched(&id).await;
        run.run(&job_id);
        run.exit(&job_id, 3);
        let job = gw.wait_terminal(TOKEN_A, &id, 20).await;
        assert_eq!(
            (job["state"].as_str(), job["exit_code"].as_i64()),
            (Some("failed"), Some(3)),
            "{job}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timeout_and_a_cancel_cancel_the_execution() {
        let run = FakeRun::start().await;
        let gw = Gateway::start(&provider(&run)).await;
        let timed = gw
            .submitted(json!({"image": "alpine:3", "provider": "run", "timeout_seconds": 1}))
            .await;
        let cancelled = gw
            .submitted(json!({"image": "alpine:3", "provider": "run"}))
            .await;
        let timed_job = gw.launched(&timed).await;
        let cancelled_job = gw.launched(&cancelled).await;
        for job in [&timed_job, &cancelled_job] {
            run.run(job);
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
        for (id, state, reason, job) in [
            (
                &timed,
                "failed",
                "timeout: still running after 1 s",
                &timed_job,
            ),
            (&cancelled, "cancelled", "cancelled by", &cancelled_job),
        ] {
            let cancel_sent = || {
                run.requests().iter().any(|(m, p, _)| {
                    m == "POST"
                        && p.contains(&format!("/jobs/{job}/executions/"))
                        && p.contains(":cancel")
                })
            };
            until(&format!("{state}: the execution's cancel"), cancel_sent).await;
            let ended = gw.wait_terminal(TOKEN_A, id, 20).await;
            assert_eq!(ended["state"], state, "{ended}");
            assert!(
                ended["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(reason),
                "{ended}"
            );
        }
    }
}

/// `auto` with Cloud Run, Container Apps and GKE side by side, on their shipped price
/// sheets, for an hour of GPU work at 4 vCPU and 16 GiB: an L4 costs less on GKE Autopilot
/// (0.96 $/h against Cloud Run's 1.05), a T4 too (Cloud Run has none), an A100 on
/// Container Apps; an L4 job that may not go to Kubernetes runs on Cloud Run with its GPU.
#[cfg(all(feature = "cloudrun", feature = "aca", feature = "kubernetes"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sends_gpu_work_where_the_price_sheets_say() {
    use common::TOKEN_A;
    use serde_json::json;

    let run = fake_run::FakeRun::start().await;
    let apps = fake_apps::FakeApps::start().await;
    let api = fake_kube::FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let gw = common::Gateway::start(&format!(
        "{}\n[providers.apps]\nkind = \"aca\"\nsubscription_id = \"00000000-0000-0000-0000-000000000000\"\n\
         resource_group = \"batch\"\nlocation = \"eastus\"\nenvironment_id = \"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/batch/providers/Microsoft.App/managedEnvironments/batch\"\n\
         endpoint = \"{}\"\naccess_token = \"{}\"\n\
         gpu_profiles = [{{ name = \"gpu-t4\", type = \"Consumption-GPU-NC8as-T4\" }}, {{ name = \"gpu-a100\", type = \"Consumption-GPU-NC24-A100\" }}]\n\
         [providers.gke]\nkind = \"kubernetes\"\nkubeconfig = \"{}\"\ncontext = \"fake\"\nnamespace = \"jobs\"\n\
         gpu_kinds = [\"nvidia-tesla-t4\", \"nvidia-tesla-a100\", \"nvidia-l4\"]\n",
        on_the_fake::provider(&run),
        apps.url,
        fake_apps::TOKEN,
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
        ("nvidia-l4", vec!["gke", "run"]),
        ("nvidia-tesla-t4", vec!["gke", "apps"]),
        ("nvidia-tesla-a100", vec!["apps", "gke"]),
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
    let mut spec = gpu("nvidia-l4");
    spec["routing"]["deny"] = json!(["kubernetes"]);
    let (status, job) = gw.submit(TOKEN_A, spec).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let job = gw
        .wait_for(TOKEN_A, id, 20, "launched", |j| {
            j["provider_ref"].is_string()
        })
        .await;
    assert_eq!(job["provider"], "run", "{job}");
    let created = run.job(job["provider_ref"].as_str().unwrap()).unwrap();
    assert_eq!(
        created["template"]["template"]["nodeSelector"]["accelerator"],
        "nvidia-l4"
    );
}

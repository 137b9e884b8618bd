//! The Cloud Run provider through the real `google-cloud-run-v2`, `google-cloud-logging-v2`
//! and `google-cloud-secretmanager-v1` clients against the fake Google APIs in
//! tests/fake_run; no Cloud Run emulator exists.

mod fake_run;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fake_run::FakeRun;
use offload_cloudrun::CloudRun;
use offload_provider::conformance::launch;
use offload_provider::{
    Gpu, Handle, LogQuery, Phase, Provider, ProviderError, Resources, WorkloadSpec,
};
use serde_json::{json, Value};

async fn provider(run: &FakeRun, extra: Value) -> CloudRun {
    let base = json!({
        "project": fake_run::PROJECT,
        "region": fake_run::REGION,
        "endpoint": run.url,
        "logging_endpoint": run.url,
        "secret_manager": {"endpoint": run.url},
        "access_token": fake_run::TOKEN,
        "service_account": "runner@batch-prod.iam.gserviceaccount.com",
        "labels": {"team": "data"},
    });
    offload_provider::conformance::config::<offload_cloudrun::Config>(base, extra)
        .build()
        .await
        .unwrap()
}

fn spec() -> WorkloadSpec {
    WorkloadSpec {
        name: None,
        image: "us-docker.pkg.dev/batch-prod/jobs/etl:1".into(),
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

fn gpu_spec(count: u32, kind: Option<&str>) -> WorkloadSpec {
    WorkloadSpec {
        resources: Resources {
            cpu: 2.0,
            memory_bytes: 8 << 30,
            gpu: Some(Gpu {
                count,
                kind: kind.map(str::to_string),
            }),
            ephemeral_storage_bytes: None,
        },
        ..spec()
    }
}

async fn phase(cloudrun: &CloudRun, handle: &Handle) -> Phase {
    cloudrun
        .observe(std::slice::from_ref(handle))
        .await
        .unwrap()
        .pop()
        .unwrap()
        .phase
}

fn calls(run: &FakeRun, method: &str, contains: &str) -> usize {
    run.requests()
        .iter()
        .filter(|(m, p, _)| m == method && p.contains(contains))
        .count()
}

#[tokio::test]
async fn a_job_runs_once_and_ends_with_its_exit_code() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let handle = cloudrun
        .launch(&launch("offload-a-1", spec()))
        .await
        .unwrap();
    assert_eq!(handle.provider_ref, offload_cloudrun::job_id("offload-a-1"));
    let job = run.job(&handle.provider_ref).expect("the job was created");
    assert_eq!(job["labels"]["offload-launch-key"], "offload-a-1");
    assert_eq!(job["labels"]["managed-by"], "offload");
    assert_eq!(job["labels"]["team"], "data");
    let task = &job["template"]["template"];
    assert_eq!(task["maxRetries"], 0);
    assert_eq!(task["timeout"], "660s");
    assert_eq!(
        task["serviceAccount"],
        "runner@batch-prod.iam.gserviceaccount.com"
    );
    // 0.3 vCPU with 1.5 GiB runs at 1 vCPU: fractional CPU holds at most 1 GiB.
    assert_eq!(
        task["containers"][0]["resources"]["limits"],
        json!({"cpu": "1", "memory": "1536Mi"})
    );
    // The create started the execution: no `jobs:run` was sent.
    assert_eq!(calls(&run, "POST", ":run"), 0);
    assert!(run.execution(&handle.provider_ref).is_some());
    assert!(matches!(
        phase(&cloudrun, &handle).await,
        Phase::Starting { .. }
    ));
    run.run(&handle.provider_ref);
    assert_eq!(phase(&cloudrun, &handle).await, Phase::Running);
    run.exit(&handle.provider_ref, 0);
    let seen = cloudrun
        .observe(std::slice::from_ref(&handle))
        .await
        .unwrap();
    assert_eq!(
        seen[0].phase,
        Phase::Exited {
            exit_code: Some(0),
            reason: None
        }
    );
    assert!(seen[0].ran.is_some(), "an ended execution reports its run");

    let failing = cloudrun
        .launch(&launch("offload-b-1", spec()))
        .await
        .unwrap();
    run.run(&failing.provider_ref);
    run.exit(&failing.provider_ref, 3);
    assert_eq!(
        phase(&cloudrun, &failing).await,
        Phase::Exited {
            exit_code: Some(3),
            reason: Some("exited with code 3: The container exited with an error.".into())
        }
    );
}

#[tokio::test]
async fn a_round_costs_one_list_however_many_jobs_it_follows() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let mut handles = vec![];
    for i in 0..120 {
        handles.push(
            cloudrun
                .launch(&launch(&format!("offload-r-{i}"), spec()))
                .await
                .unwrap(),
        );
        run.run(&handles[i].provider_ref);
    }
    let before = run.requests().len();
    let seen = cloudrun.observe(&handles).await.unwrap();
    assert!(seen.iter().all(|o| o.phase == Phase::Running));
    let round: Vec<_> = run.requests()[before..].to_vec();
    assert_eq!(
        round.len(),
        1,
        "one page of the region's executions: {round:?}"
    );
    assert!(round[0].1.contains("/jobs/-/executions"), "{round:?}");
}

/// In a region busy with others' executions (1,000, three pages of the list), a round of
/// fewer jobs than that reads each job's own executions, one call each; a round of more
/// lists the region, so a round costs the fewer of the two.
#[tokio::test]
async fn a_rounds_cost_does_not_grow_with_the_regions_other_executions() {
    let run = FakeRun::start().await;
    run.foreign(1000);
    let cloudrun = provider(&run, json!({})).await;
    let mut handles = vec![];
    for i in 0..5 {
        handles.push(cloudrun.launch(&launch(&format!("offload-busy-{i}"), spec())).await.unwrap());
        run.run(&handles[i].provider_ref);
    }
    let round = |handles: Vec<Handle>| {
        let (run, cloudrun) = (&run, &cloudrun);
        async move {
            let before = run.requests().len();
            let seen = cloudrun.observe(&handles).await.unwrap();
            assert!(seen.iter().all(|o| o.phase == Phase::Running), "{seen:?}");
            assert_eq!(seen.len(), handles.len());
            run.requests()[before..].iter().map(|(_, path, _)| path.clone()).collect::<Vec<_>>()
        }
    };
    // The first round lists the region, and learns its size: three pages.
    let first = round(handles.clone()).await;
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first.iter().all(|p| p.contains("/jobs/-/executions")), "{first:?}");
    // Two jobs: two calls, each for its own job's executions.
    let two = round(handles[..2].to_vec()).await;
    assert_eq!(two.len(), 2, "{two:?}");
    for (path, handle) in two.iter().zip(&handles) {
        assert!(path.contains(&format!("/jobs/{}/executions", handle.provider_ref)), "{path}");
    }
    // Five: the three pages again.
    let five = round(handles.clone()).await;
    assert_eq!(five.len(), 3, "{five:?}");
    // A job read alone whose execution ended is seen so, and one whose job is gone is lost.
    run.exit(&handles[0].provider_ref, 0);
    let seen = cloudrun.observe(std::slice::from_ref(&handles[0])).await.unwrap();
    assert!(matches!(seen[0].phase, Phase::Exited { exit_code: Some(0), .. }), "{:?}", seen[0].phase);
    cloudrun.release(&handles[1]).await.unwrap();
    let seen = cloudrun.observe(std::slice::from_ref(&handles[1])).await.unwrap();
    assert!(matches!(seen[0].phase, Phase::Lost { .. }), "{:?}", seen[0].phase);
}

#[tokio::test]
async fn secrets_go_to_secret_manager_never_into_the_job() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let handle = cloudrun
        .launch(&launch("offload-s-1", spec()))
        .await
        .unwrap();
    let job = run.job(&handle.provider_ref).unwrap();
    assert!(!job.to_string().contains("s3cr3t"), "{job}");
    let secret = format!("{}-env-0", handle.provider_ref);
    let env = &job["template"]["template"]["containers"][0]["env"];
    assert!(
        env.as_array().unwrap().contains(&json!({"name": "TOKEN",
            "valueSource": {"secretKeyRef": {"secret": secret, "version": "1"}}})),
        "{env}"
    );
    assert_eq!(run.secret(&secret), Some(vec!["s3cr3t".to_string()]));
    assert!(!run.requests().iter().any(|(_, p, _)| p.contains("s3cr3t")));
    cloudrun.release(&handle).await.unwrap();
    assert!(
        run.secrets().is_empty(),
        "release deletes the secrets: {:?}",
        run.secrets()
    );

    // Without Secret Manager, secret_env is refused by name rather than written in plain.
    let plain = provider(&run, json!({"secret_manager": null})).await;
    let err = plain
        .launch(&launch("offload-s-2", spec()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidSpec(w) if w.starts_with("secret_env:")),
        "{err:?}"
    );
    assert!(run.job(&offload_cloudrun::job_id("offload-s-2")).is_none());
}

#[tokio::test]
async fn a_task_past_its_timeout_fails_as_timed_out() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let handle = cloudrun
        .launch(&launch("offload-o-1", spec()))
        .await
        .unwrap();
    run.run(&handle.provider_ref);
    run.time_out(&handle.provider_ref);
    assert!(matches!(phase(&cloudrun, &handle).await,
            Phase::Exited { exit_code: None, reason: Some(r) } if r == "timed out: The configured timeout was reached."),);
}

#[tokio::test]
async fn an_image_that_cannot_be_found_fails_the_job_with_cloud_runs_reason() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let missing = "us-docker.pkg.dev/batch-prod/jobs/nope:1";
    run.missing_image(missing);
    let spec = WorkloadSpec {
        image: missing.into(),
        ..spec()
    };
    let handle = cloudrun.launch(&launch("offload-i-1", spec)).await.unwrap();
    assert!(run.execution(&handle.provider_ref).is_none());
    assert_eq!(
        phase(&cloudrun, &handle).await,
        Phase::Exited {
            exit_code: None,
            reason: Some(format!("image pull failed: Image '{missing}' not found."))
        }
    );
    // A cancel of a job with no execution deletes it, so that it cannot start later.
    cloudrun
        .cancel(&handle, "cancelled by the user")
        .await
        .unwrap();
    assert!(run.job(&handle.provider_ref).is_none());
}

#[tokio::test]
async fn gpu_jobs_get_an_l4_at_its_minimums_and_others_are_refused_by_name() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    assert_eq!(
        cloudrun.capabilities().gpu_kinds,
        vec!["nvidia-l4".to_string()]
    );
    let handle = cloudrun
        .launch(&launch("offload-g-1", gpu_spec(1, Some("nvidia-l4"))))
        .await
        .unwrap();
    let task = &run.job(&handle.provider_ref).unwrap()["template"]["template"];
    assert_eq!(task["nodeSelector"]["accelerator"], "nvidia-l4");
    assert_eq!(task["gpuZonalRedundancyDisabled"], true);
    assert_eq!(
        task["containers"][0]["resources"]["limits"],
        json!({"cpu": "4", "memory": "16384Mi", "nvidia.com/gpu": "1"})
    );
    let billed = cloudrun.billed_resources(&gpu_spec(1, None).resources);
    assert_eq!((billed.cpu, billed.memory_bytes), (4.0, 16 << 30));

    for (spec, field) in [
        (gpu_spec(2, None), "resources.gpu.count:"),
        (
            gpu_spec(1, Some("nvidia-tesla-a100")),
            "resources.gpu.kind:",
        ),
    ] {
        let err = cloudrun.validate(&spec).unwrap_err();
        assert!(
            matches!(&err, ProviderError::InvalidSpec(w) if w.starts_with(field)),
            "{err:?}"
        );
    }
    let no_gpus = provider(&run, json!({"gpu_kinds": []})).await;
    assert!(no_gpus.validate(&gpu_spec(1, None)).is_err());
}

#[tokio::test]
async fn a_relaunch_after_a_crash_adopts_the_job_instead_of_starting_twice() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let first = cloudrun
        .launch(&launch("offload-c-1", spec()))
        .await
        .unwrap();
    let creates = calls(&run, "POST", "/jobs?");
    // Not fresh: the provider looks first and finds the job.
    let again = cloudrun
        .launch(&launch("offload-c-1", spec()))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(calls(&run, "POST", "/jobs?"), creates, "no second create");
    // Fresh (the engine's claim says nothing was sent) but the create had gone through:
    // Cloud Run's ALREADY_EXISTS is adopted, and no second execution starts.
    let fresh = offload_provider::Launch {
        fresh: true,
        ..launch("offload-c-1", spec())
    };
    assert_eq!(cloudrun.launch(&fresh).await.unwrap(), first);
    assert_eq!(run.jobs().len(), 1);
    assert_eq!(calls(&run, "POST", ":run"), 0);
}

#[tokio::test]
async fn throttling_is_waited_out_then_reported() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let handle = cloudrun
        .launch(&launch("offload-t-1", spec()))
        .await
        .unwrap();
    run.throttle(1, 1);
    let started = Instant::now();
    assert!(matches!(
        phase(&cloudrun, &handle).await,
        Phase::Starting { .. }
    ));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    run.throttle(10, 0);
    let err = cloudrun.observe(&[handle]).await.unwrap_err();
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
}

#[tokio::test]
async fn cancel_stops_the_execution_and_release_and_the_orphan_sweep_delete_the_job() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let handle = cloudrun
        .launch(&launch("offload-x-1", spec()))
        .await
        .unwrap();
    run.run(&handle.provider_ref);
    cloudrun
        .cancel(&handle, "cancelled by the user")
        .await
        .unwrap();
    assert_eq!(
        run.execution(&handle.provider_ref).unwrap()["cancelledCount"],
        1
    );
    assert_eq!(
        phase(&cloudrun, &handle).await,
        Phase::Exited {
            exit_code: None,
            reason: Some("execution cancelled".into())
        }
    );
    cloudrun
        .cancel(&handle, "again")
        .await
        .expect("a second cancel is no error");

    let other = cloudrun
        .launch(&launch("offload-y-1", spec()))
        .await
        .unwrap();
    let mut managed = cloudrun.managed().await.unwrap();
    managed.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(managed, vec![handle.clone(), other.clone()]);
    cloudrun.release(&handle).await.unwrap();
    cloudrun
        .release(&handle)
        .await
        .expect("a job already gone is no error");
    assert_eq!(run.jobs(), vec![other.provider_ref.clone()]);
    assert!(matches!(
        phase(&cloudrun, &handle).await,
        Phase::Lost { .. }
    ));
    cloudrun.check().await.unwrap();
}

#[tokio::test]
async fn logs_follow_with_the_cursor() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let handle = cloudrun
        .launch(&launch("offload-l-1", spec()))
        .await
        .unwrap();
    offload_provider::conformance::log_cursor_follows(&cloudrun, &handle, |text| {
        run.append_log(&handle.provider_ref, text);
        async {}
    })
    .await;
}

#[tokio::test]
async fn a_wrong_token_is_a_config_error() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({"access_token": "wrong"})).await;
    let err = cloudrun.check().await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Config(w) if w.contains("UNAUTHENTICATED")),
        "{err:?}"
    );
}

/// A launch with two secrets, so that one can fail after the other was made.
fn two_secrets(key: &str) -> offload_provider::Launch {
    let mut l = launch(key, spec());
    l.secret_env.insert("PASSWORD".into(), "hunter2".into());
    l
}

#[tokio::test]
async fn a_release_that_failed_half_way_deletes_the_rest_when_it_is_tried_again() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let handle = cloudrun.launch(&two_secrets("offload-s-3")).await.unwrap();
    let job = &handle.provider_ref;
    assert_eq!(run.secrets().len(), 2, "{:?}", run.secrets());
    // The first release deletes the job and one secret, then fails.
    let second = run
        .secrets()
        .into_iter()
        .find(|s| s.ends_with("-env-1"))
        .unwrap();
    run.fail(
        "DELETE",
        &format!("/secrets/{second}"),
        1,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
    );
    cloudrun.release(&handle).await.unwrap_err();
    assert!(run.job(job).is_none());
    assert_eq!(run.secrets(), vec![second.clone()]);
    // Tried again, it deletes what is left.
    cloudrun.release(&handle).await.unwrap();
    assert!(run.secrets().is_empty(), "{:?}", run.secrets());
}

#[tokio::test]
async fn a_launch_refused_after_some_secrets_were_made_deletes_them() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let job = offload_cloudrun::job_id("offload-s-4");
    // The second secret's version is refused: the first is made, with its version.
    run.fail(
        "POST",
        &format!("/secrets/{job}-env-1:addVersion"),
        1,
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
    );
    let err = cloudrun
        .launch(&two_secrets("offload-s-4"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Config(_)), "{err:?}");
    assert!(run.job(&job).is_none());
    assert!(run.secrets().is_empty(), "{:?}", run.secrets());
    // The same when Cloud Run refuses the job after the secrets were made.
    run.fail(
        "POST",
        "/jobs?",
        1,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
    );
    let err = cloudrun
        .launch(&two_secrets("offload-s-4"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidSpec(_)), "{err:?}");
    assert!(run.secrets().is_empty(), "{:?}", run.secrets());
}

#[tokio::test]
async fn the_orphan_sweep_finds_secrets_no_job_owns() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    // The job's create fails with an internal error (it may have been made, so its secrets
    // stay), and Cloud Run had not made it: its job ends unlaunched.
    run.fail(
        "POST",
        "/jobs?",
        1,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
    );
    let err = cloudrun
        .launch(&two_secrets("offload-s-5"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    let job = offload_cloudrun::job_id("offload-s-5");
    assert!(run.job(&job).is_none());
    assert_eq!(run.secrets().len(), 2);
    // The sweep lists them under their launch key, and releasing that deletes them.
    let live = cloudrun
        .launch(&launch("offload-s-6", spec()))
        .await
        .unwrap();
    let mut managed = cloudrun.managed().await.unwrap();
    managed.sort_by(|a, b| a.key.cmp(&b.key));
    let orphan = Handle {
        key: "offload-s-5".into(),
        provider_ref: job.clone(),
    };
    assert_eq!(managed, vec![orphan.clone(), live.clone()]);
    cloudrun.release(&orphan).await.unwrap();
    assert_eq!(run.secrets(), vec![format!("{}-env-0", live.provider_ref)]);
}

#[tokio::test]
async fn a_chatty_jobs_tail_is_the_end_of_its_log() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    let handle = cloudrun
        .launch(&launch("offload-v-1", spec()))
        .await
        .unwrap();
    let mut text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
    text.push_str("offload-result: {\"rows\": 100000}\n");
    run.append_log(&handle.provider_ref, &text);
    let tail = LogQuery {
        cursor: None,
        tail_bytes: Some(64 << 10),
    };
    let chunk = cloudrun.logs(&handle, &tail).await.unwrap();
    assert!(
        chunk
            .text
            .ends_with("line 99999\noffload-result: {\"rows\": 100000}\n"),
        "{}",
        &chunk.text[chunk.text.len().saturating_sub(200)..]
    );
    assert!(
        chunk.text.len() > 32 << 10 && chunk.text.len() <= 64 << 10,
        "{}",
        chunk.text.len()
    );
    // Its cursor is the end: a follower from it reads only what comes after.
    let on = LogQuery {
        cursor: chunk.cursor.clone(),
        tail_bytes: None,
    };
    assert_eq!(cloudrun.logs(&handle, &on).await.unwrap().text, "");
    run.append_log(&handle.provider_ref, "one more\n");
    assert_eq!(
        cloudrun.logs(&handle, &on).await.unwrap().text,
        "one more\n"
    );
}

#[tokio::test]
async fn one_jobs_failed_read_leaves_only_it_out_of_a_round() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({})).await;
    // Two jobs with no execution (their images are missing): each is read on its own.
    run.missing_image("us-docker.pkg.dev/batch-prod/jobs/gone:1");
    let gone = WorkloadSpec {
        image: "us-docker.pkg.dev/batch-prod/jobs/gone:1".into(),
        ..spec()
    };
    let a = cloudrun
        .launch(&launch("offload-f-1", gone.clone()))
        .await
        .unwrap();
    let b = cloudrun.launch(&launch("offload-f-2", gone)).await.unwrap();
    run.fail(
        "GET",
        &format!("/jobs/{}", a.provider_ref),
        100,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
    );
    let seen = cloudrun.observe(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].handle, b);
    assert!(
        matches!(seen[0].phase, Phase::Exited { .. }),
        "{:?}",
        seen[0].phase
    );
    // When every read fails, the round fails.
    let err = cloudrun
        .observe(std::slice::from_ref(&a))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn a_call_that_never_answers_times_out() {
    let run = FakeRun::start().await;
    let cloudrun = provider(&run, json!({"request_timeout_seconds": 1})).await;
    let handle = cloudrun
        .launch(&launch("offload-h-1", spec()))
        .await
        .unwrap();
    run.hang("GET", "/jobs/-/executions", 1);
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        cloudrun.observe(std::slice::from_ref(&handle)),
    )
    .await
    .expect("the hung call timed out");
    assert!(
        matches!(answer, Err(ProviderError::Transient(_))),
        "{answer:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(matches!(
        phase(&cloudrun, &handle).await,
        Phase::Starting { .. }
    ));
}

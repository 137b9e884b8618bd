//! Contract checks that every provider's tests run against its real client and peer, so
//! the engine's assumptions are tested the same way for each runtime.

use std::future::Future;

use std::collections::BTreeMap;

use crate::{Handle, Launch, LogQuery, Provider, WorkloadSpec};

/// A provider's config for a test: the test peer's settings in `base`, with the keys of
/// `extra` (a JSON object) on top.
pub fn config<C: serde::de::DeserializeOwned>(
    mut base: serde_json::Value,
    extra: serde_json::Value,
) -> C {
    let extra = extra
        .as_object()
        .expect("extra settings are a JSON object")
        .clone();
    base.as_object_mut()
        .expect("base settings are a JSON object")
        .extend(extra);
    serde_json::from_value(base).expect("a valid provider config")
}

/// A step of `role` running `command` in `image`, with one variable of its own
/// (`GREETING=hello`) and nothing else set.
pub fn step(role: crate::StepRole, image: &str, command: &[&str]) -> crate::Step {
    crate::Step {
        role,
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        workdir: None,
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        stdin: None,
        stdout: None,
        stderr: None,
        ignore_error: false,
        host_reads: vec![],
        host_writes: vec![],
    }
}

/// A TES task's steps: its inputs staged in, two executors (the first sorting a file in its
/// working directory, the second running `sh -c second`, ignoring errors and sending its
/// stdout to a file), its outputs staged out, `/data` shared.
pub fn tes_plan(second: &str) -> crate::StepPlan {
    use crate::StepRole;
    let mut stage_in = step(StepRole::StageIn, "", &["filer", "stage-in"]);
    stage_in.env = BTreeMap::from([("OFFLOAD_FILER_PLAN".into(), "{\"inputs\":[]}".into())]);
    let mut first = step(StepRole::Executor, "alpine", &["sort", "/data/in.txt"]);
    first.workdir = Some("/data".into());
    let mut last = step(StepRole::Executor, "busybox", &["sh", "-c", second]);
    last.ignore_error = true;
    last.stdout = Some("/data/out.txt".into());
    let mut stage_out = stage_in.clone();
    stage_out.role = StepRole::StageOut;
    stage_out.command = vec!["filer".into(), "stage-out".into()];
    crate::StepPlan {
        steps: vec![stage_in, first, last, stage_out],
        volumes: vec!["/data".into()],
    }
}

/// Each step's exit code, in order, as the provider tells how a workload's steps went.
pub async fn step_codes(provider: &dyn Provider, handle: &Handle) -> Vec<Option<i32>> {
    let runs = provider.step_runs(handle, 4096).await.expect("the steps are read");
    runs.iter().map(|r| r.exit_code).collect()
}

/// A launch of `spec` under `key`, for a job with a fixed id and one secret,
/// `TOKEN=s3cr3t`, which a provider must pass to the workload and show nowhere else. It is
/// not `fresh`, so the provider looks for a workload to adopt, as after a crash.
pub fn launch(key: &str, spec: WorkloadSpec) -> Launch {
    Launch {
        key: key.into(),
        job_id: "0193f0c2-0000-7000-8000-000000000001".into(),
        attempt: 1,
        spec,
        secret_env: BTreeMap::from([("TOKEN".into(), "s3cr3t".into())]),
        fresh: false,
    }
}

/// Logs follow with the cursor: reading on from a chunk's cursor returns only what came
/// after it, and `tail_bytes` returns the last bytes. `append` writes text (whole lines)
/// to the workload's log, the way its runtime would.
pub async fn log_cursor_follows<F, Fut>(provider: &dyn Provider, handle: &Handle, mut append: F)
where
    F: FnMut(&'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    append("one\ntwo\n").await;
    let first = provider.logs(handle, &LogQuery::default()).await.unwrap();
    assert_eq!(first.text, "one\ntwo\n");
    append("three\n").await;
    let next = LogQuery {
        cursor: first.cursor,
        tail_bytes: None,
    };
    assert_eq!(provider.logs(handle, &next).await.unwrap().text, "three\n");
    let tail = LogQuery {
        cursor: None,
        tail_bytes: Some(6),
    };
    assert_eq!(provider.logs(handle, &tail).await.unwrap().text, "three\n");
}

//! Google Cloud Run provider: each attempt of a job is one Cloud Run job, whose creation
//! starts its one execution. This is Google's serverless container runtime with GPUs
//! (NVIDIA L4), and the one beside Cloud Composer.
//!
//! - launch: create the job (its id from the launch key, which its labels carry) with a
//!   `startExecutionToken`, so the create that makes it also starts it. `jobs:run` has no
//!   request id; a create sent again is refused (`ALREADY_EXISTS`) and the job is adopted;
//! - observe: one list of the region's executions per round (`jobs/-/executions`), so the
//!   cost of a round does not grow with the jobs in it; but a round of fewer jobs than that
//!   list took pages (a region busy with others' executions) lists each job's own instead,
//!   one call each, so that its cost does not grow with the region's other executions
//!   either; a failed execution's task for its exit code; a job without an execution yet
//!   for why it has none;
//! - cancel: cancel the execution; release: delete the job (and its secrets);
//! - logs: Cloud Logging (`logs`); `managed` lists jobs labelled `managed-by=offload`;
//! - `secret_env`: Secret Manager references (`secrets`), never plain values.
//!
//! A job sets nothing through `provider_options.cloudrun`: the project, region, service
//! account and GPU settings are the operator's. The Google clients stay inside `api`.

mod api;
mod config;
mod job;
mod logs;
mod pricing;
mod secrets;
mod sizing;
mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use google_cloud_gax::error::rpc::Code;
use google_cloud_run_v2::model::{Execution, Job, Task};
use offload_provider::figures::{Pricing, ReadPrices};
use offload_provider::{
    Capabilities, Handle, Launch, LogChunk, LogQuery, Observation, Phase, Provider,
    ProviderError, Resources, Result, WorkloadSpec,
};

pub use config::{Config, SecretManager};
pub use job::id as job_id;
pub use sizing::GPU_KINDS;

/// Executions per page of a round's list.
const EXECUTIONS_PAGE: i32 = 500;

impl Config {
    /// The clients, with Application Default Credentials unless `access_token` is given;
    /// nothing is called until needed.
    pub async fn build(&self) -> std::result::Result<CloudRun, String> {
        self.check()?;
        Ok(CloudRun {
            api: api::Clients::new(self).await?,
            config: self.clone(),
            region_pages: AtomicUsize::new(0),
        })
    }
}

pub struct CloudRun {
    api: api::Clients,
    config: Config,
    /// The pages the last list of the region's executions took (0 before the first).
    region_pages: AtomicUsize,
}

/// The last segment of a resource name (`projects/p/locations/l/jobs/j` → `j`).
fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

impl CloudRun {
    fn job_name(&self, id: &str) -> String {
        format!("{}/jobs/{id}", self.config.parent())
    }

    /// The job as Cloud Run reports it, or `None` when there is none.
    async fn get_job(&self, id: &str) -> Result<Option<Job>> {
        let got =
            api::patiently(|| self.api.jobs.get_job().set_name(self.job_name(id)).send()).await;
        api::not_found_is_none("get job", got)
    }

    /// The job found under a launch key, if it is that key's.
    fn adopt(&self, job: &Job, launch: &Launch, handle: Handle) -> Result<Handle> {
        if job.labels.get(job::KEY_LABEL) != Some(&launch.key) {
            return Err(ProviderError::Config(format!(
                "Cloud Run job {} exists for another launch key than {}",
                handle.provider_ref, launch.key
            )));
        }
        tracing::info!(job = %handle.provider_ref, "adopting the Cloud Run job this launch key created");
        Ok(handle)
    }

    /// Every execution in the region, by its job's id; and the pages that took.
    async fn executions(&self) -> Result<(HashMap<String, Execution>, usize)> {
        let mut by_job = HashMap::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            pages += 1;
            let page = api::patiently(|| {
                self.api
                    .executions
                    .list_executions()
                    .set_parent(self.job_name("-"))
                    .set_page_size(EXECUTIONS_PAGE)
                    .set_page_token(token.clone())
                    .send()
            })
            .await
            .map_err(|e| api::classify("list executions", e))?;
            for execution in page.executions {
                by_job.insert(short(&execution.job).to_string(), execution);
            }
            if page.next_page_token.is_empty() {
                return Ok((by_job, pages));
            }
            token = page.next_page_token;
        }
    }

    /// The execution of the job `id` (a job of offload's has one), in one call.
    async fn execution_of(&self, id: &str) -> Result<Option<Execution>> {
        let listed = api::patiently(|| {
            self.api
                .executions
                .list_executions()
                .set_parent(self.job_name(id))
                .send()
        })
        .await;
        let listed = api::not_found_is_none("list the job's executions", listed)?;
        Ok(listed.and_then(|page| page.executions.into_iter().next()))
    }

    /// The task of a failed execution (a job of offload's has one task).
    async fn task(&self, execution: &str) -> Result<Option<Task>> {
        let tasks = api::patiently(|| self.api.tasks.list_tasks().set_parent(execution).send())
            .await
            .map_err(|e| api::classify("list tasks", e))?;
        Ok(tasks.tasks.into_iter().next())
    }

    fn refusal(&self, spec: &WorkloadSpec, secret_env: bool) -> Result<sizing::Size> {
        let settings = "the project, region, service account and GPU settings";
        let options = spec.provider_options.as_ref();
        if let Some(why) =
            offload_provider::options_refusal("cloudrun", "Cloud Run", settings, options)
        {
            return Err(ProviderError::InvalidSpec(why));
        }
        if secret_env && self.api.secrets.is_none() {
            return Err(ProviderError::InvalidSpec(
                "secret_env: this Cloud Run provider has no secret_manager configured, and a job \
                 resource would show the values to anyone who can read it"
                    .into(),
            ));
        }
        sizing::size(&self.config, &spec.resources)
    }

    /// A handle's phase from its execution in the round's list, or without one.
    async fn observe_one(
        &self,
        handle: &Handle,
        execution: Option<&Execution>,
    ) -> Result<Observation> {
        let pending = Duration::from_secs(self.config.pending_timeout_seconds);
        let (phase, ran) = match execution {
            Some(execution) => {
                let task = match status::needs_task(execution) {
                    true => self.task(&execution.name).await?,
                    false => None,
                };
                let phase = status::phase(execution, task.as_ref());
                let ran = phase.is_final().then(|| status::ran(execution)).flatten();
                (phase, ran)
            }
            // Not listed: not started yet, failed before it started, or gone.
            None => match self.get_job(&handle.provider_ref).await? {
                None => (
                    Phase::Lost {
                        reason: format!("Cloud Run job {} was deleted", handle.provider_ref),
                    },
                    None,
                ),
                Some(job) => (
                    status::without_execution(&job, SystemTime::now(), pending),
                    None,
                ),
            },
        };
        Ok(Observation {
            handle: handle.clone(),
            phase,
            ran,
        })
    }

    /// A launch that failed with `error` deletes the secrets it made; a failure to delete
    /// them leaves them to the orphan sweep. Returns `error`.
    async fn unlaunched(&self, job: &str, error: ProviderError) -> ProviderError {
        if let Some(sm) = &self.api.secrets {
            if let Err(e) = secrets::delete(sm, &self.config.project, job).await {
                tracing::warn!(job, error = %e, "could not delete the secrets of a failed launch: the orphan sweep will");
            }
        }
        error
    }

    /// The jobs labelled `managed-by=offload`.
    async fn managed_jobs(&self) -> Result<Vec<Handle>> {
        let mut handles = vec![];
        let mut token = String::new();
        loop {
            let page = api::patiently(|| {
                self.api
                    .jobs
                    .list_jobs()
                    .set_parent(self.config.parent())
                    .set_page_token(token.clone())
                    .send()
            })
            .await
            .map_err(|e| api::classify("list jobs", e))?;
            for job in &page.jobs {
                if job.labels.get(job::MANAGED_BY_LABEL).map(String::as_str) != Some("offload") {
                    continue;
                }
                if let Some(key) = job.labels.get(job::KEY_LABEL) {
                    handles.push(Handle {
                        key: key.clone(),
                        provider_ref: short(&job.name).to_string(),
                    });
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(handles);
            }
            token = page.next_page_token;
        }
    }
}

#[async_trait::async_trait]
impl Provider for CloudRun {
    fn kind(&self) -> &'static str {
        "cloudrun"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_cpu: sizing::MAX_CPU,
            max_memory_bytes: sizing::MAX_MEMORY_BYTES,
            gpu_kinds: self.config.gpu_kinds.clone(),
            spot: false,
            arch: vec!["x86_64".into()],
            max_observe_batch: 1_000,
            max_tail_batch: 0,
        }
    }

    fn price_sheet(&self, read: &ReadPrices) -> Pricing {
        pricing::sheet(&self.config, read)
    }

    /// The size the task runs at: what Cloud Run bills.
    fn billed_resources(&self, resources: &Resources) -> Resources {
        match sizing::size(&self.config, resources) {
            Ok(size) => size.billed(resources),
            Err(_) => resources.clone(),
        }
    }

    fn validate(&self, spec: &WorkloadSpec) -> Result<()> {
        offload_provider::refuse_steps(self.kind(), spec)?;
        // `secret_env` is not part of the spec here; `launch` checks it.
        self.refusal(spec, false).map(|_| ())?;
        let timeout_only = Launch {
            key: String::new(),
            job_id: String::new(),
            attempt: 0,
            spec: spec.clone(),
            secret_env: Default::default(),
            fresh: true,
        };
        job::check(&timeout_only)
    }

    async fn launch(&self, launch: &Launch) -> Result<Handle> {
        let size = self.refusal(&launch.spec, !launch.secret_env.is_empty())?;
        let id = job::id(&launch.key);
        let handle = Handle {
            key: launch.key.clone(),
            provider_ref: id.clone(),
        };
        if !launch.fresh {
            if let Some(existing) = self.get_job(&id).await? {
                return self.adopt(&existing, launch, handle);
            }
        }
        let refs = match &self.api.secrets {
            Some(sm) if !launch.secret_env.is_empty() => {
                match secrets::put(sm, &self.config.project, &id, launch).await {
                    Ok(refs) => refs,
                    // No job was made (it is made after its secrets): none can use them.
                    Err(e) => return Err(self.unlaunched(&id, e).await),
                }
            }
            _ => vec![],
        };
        let body = job::body(&self.config, launch, &size, &refs)?;
        let created = api::patiently(|| {
            self.api
                .jobs
                .create_job()
                .set_parent(self.config.parent())
                .set_job_id(&id)
                .set_job(body.clone())
                .send()
        })
        .await;
        match created {
            Ok(operation) => {
                tracing::info!(job = %id, operation = %operation.name, "created the Cloud Run job, which starts its execution");
                Ok(handle)
            }
            Err(e) if api::code(&e) == Some(Code::AlreadyExists) => {
                match self.get_job(&id).await? {
                    Some(existing) => self.adopt(&existing, launch, handle),
                    None => Err(ProviderError::Transient(format!(
                        "Cloud Run job {id} exists and then does not"
                    ))),
                }
            }
            // A failure that says nothing of whether the job was made leaves its secrets
            // to it (a relaunch adopts it), or, if it was not, to the orphan sweep.
            Err(e) => match api::classify("create job", e) {
                e @ ProviderError::Transient(_) => Err(e),
                refused if refs.is_empty() => Err(refused),
                refused => Err(self.unlaunched(&id, refused).await),
            },
        }
    }

    /// One list of the region's executions, then a read of each job that needs one: a
    /// failed execution's task, or a job not listed; a job whose read fails is left out.
    /// Fewer jobs than the region's list took pages last time are read one by one instead.
    async fn observe(&self, handles: &[Handle]) -> Result<Vec<Observation>> {
        if handles.len() < self.region_pages.load(Ordering::Relaxed) {
            return offload_provider::one_by_one::observe(handles, |handle| async move {
                let execution = self.execution_of(&handle.provider_ref).await?;
                self.observe_one(handle, execution.as_ref()).await
            })
            .await;
        }
        let (executions, pages) = self.executions().await?;
        self.region_pages.store(pages, Ordering::Relaxed);
        offload_provider::one_by_one::observe(handles, |handle| {
            self.observe_one(handle, executions.get(&handle.provider_ref))
        })
        .await
    }

    /// Cancels the job's execution; the job stays until `release` deletes it. A job whose
    /// execution has not been created yet is deleted, so that it cannot start after.
    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<()> {
        let id = &handle.provider_ref;
        let Some(job) = self.get_job(id).await? else {
            return Ok(());
        };
        match job
            .latest_created_execution
            .as_ref()
            .map(|e| e.name.as_str())
        {
            Some(execution) if !execution.is_empty() => {
                tracing::info!(job = %id, execution, reason, "cancelling the Cloud Run execution");
                let name = format!("{}/executions/{}", self.job_name(id), short(execution));
                let sent = api::patiently(|| {
                    self.api
                        .executions
                        .cancel_execution()
                        .set_name(name.clone())
                        .send()
                })
                .await;
                api::not_found_is_none("cancel execution", sent).map(|_| ())
            }
            _ => {
                tracing::info!(job = %id, reason, "deleting the Cloud Run job before its execution starts");
                self.release(handle).await
            }
        }
    }

    async fn logs(&self, handle: &Handle, query: &LogQuery) -> Result<LogChunk> {
        logs::read(&self.api.logging, &self.config, &handle.provider_ref, query).await
    }

    async fn release(&self, handle: &Handle) -> Result<()> {
        let sent = api::patiently(|| {
            self.api
                .jobs
                .delete_job()
                .set_name(self.job_name(&handle.provider_ref))
                .send()
        })
        .await;
        api::not_found_is_none("delete job", sent)?;
        if let Some(sm) = &self.api.secrets {
            secrets::delete(sm, &self.config.project, &handle.provider_ref).await?;
        }
        Ok(())
    }

    async fn check(&self) -> Result<()> {
        api::patiently(|| {
            self.api
                .jobs
                .list_jobs()
                .set_parent(self.config.parent())
                .set_page_size(1)
                .send()
        })
        .await
        .map(|_| ())
        .map_err(|e| api::classify("list jobs", e))
    }

    /// Jobs labelled `managed-by=offload`, and the launch keys of secrets offload made
    /// whose job is gone (a launch that never made it, a release that failed half-way).
    async fn managed(&self) -> Result<Vec<Handle>> {
        let mut handles = self.managed_jobs().await?;
        if let Some(sm) = &self.api.secrets {
            for key in secrets::orphans(sm, &self.config.project).await? {
                if !handles.iter().any(|h| h.key == key) {
                    handles.push(Handle {
                        provider_ref: job::id(&key),
                        key,
                    });
                }
            }
        }
        Ok(handles)
    }
}

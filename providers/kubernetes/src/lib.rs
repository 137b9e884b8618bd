//! Kubernetes provider: each attempt of a job is one pod, followed by one watch.
//!
//! One `kube::runtime::watcher` over `app.kubernetes.io/managed-by=offload` keeps a
//! reflector store of every managed pod (see `watch`), and `observe` answers from that
//! store: following N jobs costs no request per job. Launch creates the pod named by the launch key (409 AlreadyExists means adopt it)
//! and a Secret for `secret_env` owned by the pod; cancel deletes the pod with a grace
//! period; release deletes the finished pod and its Secret; `managed` lists the watched
//! pods for the engine's orphan sweep. What a job may add through
//! `provider_options.kubernetes` (Secrets, node labels, tolerations) is limited to the
//! operator's allow-lists (see `options`).

mod config;
mod options;
mod pod;
mod pricing;
mod status;
mod steps;
mod watch;

use std::collections::HashMap;
use std::sync::Mutex;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, LogParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client};
use offload_provider::budget::Budget;
use offload_provider::figures::{Pricing, ReadPrices};
use offload_provider::{
    Capabilities, Handle, Launch, LogChunk, LogQuery, Observation, ObservationStream, Phase,
    Provider, ProviderError, Result, StepRun, WorkloadSpec,
};

pub use config::{AllowedSecret, Config, Gke};

/// Poll rounds a pod may be missing from the watch before its job counts it lost.
const MISSING_ROUNDS: u32 = 5;

impl Config {
    /// Connects as kube's `Config::infer` does, or with the configured kubeconfig and
    /// context, and starts the watch.
    pub async fn build(&self) -> std::result::Result<Kubernetes, String> {
        self.check()?;
        // kube's TLS uses rustls' process-wide provider, which rustls cannot pick on its own
        // once another crate in the binary (the AWS SDK) enables a second one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kube_config = match &self.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
                let options = kube::config::KubeConfigOptions {
                    context: self.context.clone(),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| format!("no Kubernetes configuration found: {e}"))?,
        };
        let namespace = (self.namespace.clone())
            .unwrap_or_else(|| kube_config.default_namespace.clone());
        let config = Config {
            namespace: Some(namespace.clone()),
            ..self.clone()
        };
        let client = Client::try_from(kube_config).map_err(|e| e.to_string())?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let cache = watch::PodCache::start(
            pods.clone(),
            format!("{}=offload", pod::MANAGED_BY),
            std::time::Duration::from_secs(self.relist_seconds.max(1)),
        );
        Ok(Kubernetes {
            secrets: Api::namespaced(client, &namespace),
            pods,
            cache,
            limiter: Budget::per_second(self.calls_per_second, self.burst),
            log_limiter: Budget::per_second(self.log_reads_per_second, self.log_burst),
            missing: Mutex::default(),
            namespace,
            config,
        })
    }
}

pub struct Kubernetes {
    /// Where its pods go: `namespace`, or the kube configuration's (its config says the same).
    namespace: String,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    cache: watch::PodCache,
    /// The API server calls this gateway may make, shared among the replicas.
    limiter: Budget,
    /// The pod log reads, apart (see `Config::log_reads_per_second`).
    log_limiter: Budget,
    /// Pod name → poll rounds in a row it was absent from the watch's store.
    missing: Mutex<HashMap<String, u32>>,
    config: Config,
}

/// Kubernetes API errors translated into what the engine must do next.
fn classify(op: &str, err: kube::Error) -> ProviderError {
    match &err {
        kube::Error::Api(status) => {
            let text = format!("{op}: {} ({})", status.message, status.reason);
            match status.code {
                404 => ProviderError::NotFound(text),
                429 => ProviderError::Throttled {
                    retry_after: std::time::Duration::from_secs(1),
                },
                401 | 403 => ProviderError::Config(text),
                400 | 409 | 422 => ProviderError::InvalidSpec(text),
                _ => ProviderError::Transient(text),
            }
        }
        _ => ProviderError::Transient(format!("{op}: {err}")),
    }
}

impl Kubernetes {
    /// The job's `provider_options.kubernetes`, once its resources fit and each of its
    /// choices is one the config allows.
    fn checked_options(&self, spec: &WorkloadSpec) -> Result<options::Options> {
        if let Some(why) = self.capabilities().refusal(&spec.resources) {
            return Err(ProviderError::InvalidSpec(why));
        }
        if let Some(why) = spec.steps.as_ref().and_then(|p| steps::refusal(&self.config, p)) {
            return Err(ProviderError::InvalidSpec(why));
        }
        options::Options::allowed(spec.provider_options.as_ref(), &self.config)
    }

    async fn ready(&self) {
        self.limiter.ready().await;
    }

    async fn delete(&self, name: &str, grace: u32) -> Result<()> {
        self.ready().await;
        match self
            .pods
            .delete(name, &DeleteParams::default().grace_period(grace))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify("delete pod", e) {
                ProviderError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Creates the attempt's Secret, owned by its pod; one already there is fine.
    async fn ensure_secret(&self, launch: &Launch, pod: &Pod) -> Result<()> {
        if launch.secret_env.is_empty() {
            return Ok(());
        }
        self.ready().await;
        match self
            .secrets
            .create(
                &PostParams::default(),
                &pod::secret(&self.config, launch, pod),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(classify("create secret", e)),
        }
    }
}

#[async_trait::async_trait]
impl Provider for Kubernetes {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn set_replicas(&self, live: usize) {
        self.limiter.set_replicas(live);
        self.log_limiter.set_replicas(live);
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_cpu: self.config.max_cpu,
            max_memory_bytes: self.config.max_memory_bytes,
            gpu_kinds: self.config.gpu_kinds.clone(),
            spot: self.config.gke.spot,
            arch: vec!["x86_64".into()],
            // observe reads the watch's store: any batch is free.
            max_observe_batch: 10_000,
            max_tail_batch: 0,
        }
    }

    fn price_sheet(&self, read: &ReadPrices) -> Pricing {
        pricing::sheet(&self.config, read)
    }

    fn validate(&self, spec: &WorkloadSpec) -> Result<()> {
        self.checked_options(spec).map(|_| ())
    }

    fn runs_steps(&self) -> bool {
        true
    }

    /// From the pod the watch holds, and each step's container log.
    async fn step_runs(&self, handle: &Handle, tail_bytes: usize) -> Result<Vec<StepRun>> {
        let key = ObjectRef::new(&handle.provider_ref).within(&self.namespace);
        let Some(pod) = self.cache.store()?.get(&key) else {
            return Ok(vec![]);
        };
        let read = |container: String| async move {
            self.log_limiter.ready().await;
            let params = LogParams {
                container: Some(container),
                ..LogParams::default()
            };
            self.pods
                .logs(&handle.provider_ref, &params)
                .await
                .unwrap_or_default()
        };
        Ok(steps::runs(&pod, tail_bytes, read).await)
    }

    async fn launch(&self, launch: &Launch) -> Result<Handle> {
        let options = self.checked_options(&launch.spec)?;
        let wanted = pod::build(&self.config, launch, &options)?;
        let name = wanted.metadata.name.clone().unwrap_or_default();
        self.ready().await;
        let created = match self.pods.create(&PostParams::default(), &wanted).await {
            Ok(created) => created,
            // The pod of this launch key exists: a relaunch after a crash adopts it.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::info!(pod = %name, "adopting the pod this launch key created");
                self.ready().await;
                self.pods
                    .get(&name)
                    .await
                    .map_err(|e| classify("get pod", e))?
            }
            Err(e) => return Err(classify("create pod", e)),
        };
        self.ensure_secret(launch, &created).await?;
        Ok(Handle {
            key: launch.key.clone(),
            provider_ref: name,
        })
    }

    /// The watch's pod changes as observations: a pod is named by its launch key.
    fn subscribe(&self) -> Option<ObservationStream> {
        let limit = chrono::Duration::seconds(self.config.pending_timeout_seconds as i64);
        let observations = self.cache.changes().filter_map(move |pod| async move {
            let name = pod.metadata.name.clone()?;
            Some(Observation {
                handle: Handle {
                    key: name.clone(),
                    provider_ref: name,
                },
                phase: status::phase(&pod, chrono::Utc::now(), limit),
                ran: status::ran(&pod),
            })
        });
        Some(observations.boxed())
    }

    async fn observe(&self, handles: &[Handle]) -> Result<Vec<Observation>> {
        let now = chrono::Utc::now();
        let limit = chrono::Duration::seconds(self.config.pending_timeout_seconds as i64);
        let store = self.cache.store()?;
        let mut missing = self.missing.lock().unwrap();
        let mut seen = vec![];
        for handle in handles {
            let key = ObjectRef::new(&handle.provider_ref).within(&self.namespace);
            let (phase, ran) = match store.get(&key) {
                Some(pod) => {
                    missing.remove(&handle.provider_ref);
                    (status::phase(&pod, now, limit), status::ran(&pod))
                }
                None => {
                    let rounds = missing.entry(handle.provider_ref.clone()).or_default();
                    *rounds += 1;
                    if *rounds <= MISSING_ROUNDS {
                        continue;
                    }
                    missing.remove(&handle.provider_ref);
                    let phase = Phase::Lost {
                        reason: format!("pod {} was deleted", handle.provider_ref),
                    };
                    (phase, None)
                }
            };
            seen.push(Observation {
                handle: handle.clone(),
                phase,
                ran,
            });
        }
        Ok(seen)
    }

    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<()> {
        tracing::info!(pod = %handle.provider_ref, reason, "deleting the pod");
        self.delete(&handle.provider_ref, self.config.grace_seconds)
            .await
    }

    async fn logs(&self, handle: &Handle, query: &LogQuery) -> Result<LogChunk> {
        self.log_limiter.ready().await;
        let params = LogParams {
            container: Some(pod::CONTAINER.into()),
            ..LogParams::default()
        };
        let text = match self.pods.logs(&handle.provider_ref, &params).await {
            Ok(text) => text,
            Err(e) => match classify("pod log", e) {
                // No container yet (or no pod any more): nothing to read.
                ProviderError::NotFound(_) | ProviderError::InvalidSpec(_) => String::new(),
                other => return Err(other),
            },
        };
        Ok(LogChunk::from_whole(&text, query))
    }

    /// Deletes the pod. Its Secret (`secret_env`) is owned by it, so Kubernetes' garbage
    /// collector deletes the Secret with the pod, at no call of ours.
    async fn release(&self, handle: &Handle) -> Result<()> {
        self.delete(&handle.provider_ref, 0).await
    }

    /// Every pod the watch sees (they all carry the managed-by label); no API call.
    async fn managed(&self) -> Result<Vec<Handle>> {
        Ok(self
            .cache
            .store()?
            .state()
            .iter()
            .filter_map(|pod| pod.metadata.name.clone())
            .map(|name| Handle {
                key: name.clone(),
                provider_ref: name,
            })
            .collect())
    }

    async fn check(&self) -> Result<()> {
        self.ready().await;
        self.pods
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map(|_| ())
            .map_err(|e| classify("list pods", e))
    }
}

//! `[providers.NAME]` settings for `kind = "kubernetes"`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "KubernetesConfig")]
pub struct Config {
    /// A kubeconfig file; without it, kube's inference (KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; its current context when unset.
    pub context: Option<String>,
    /// Where jobs' pods go; without it, the kube configuration's namespace: in a pod, the
    /// pod's own (its service account's), else the kubeconfig context's, else `default`.
    pub namespace: Option<String>,
    /// The pods' service account (Workload Identity / IRSA for the jobs' own cloud access).
    pub service_account: Option<String>,
    /// Secrets (of type `kubernetes.io/dockerconfigjson`) the pods pull their images with.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    /// Node labels every pod must match.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations on every pod.
    #[serde(default)]
    #[schemars(schema_with = "tolerations")]
    pub tolerations: Vec<Toleration>,
    /// An affinity on every pod, as a pod spec's `affinity`.
    #[serde(default)]
    #[schemars(schema_with = "affinity")]
    pub affinity: Option<Affinity>,
    /// Extra labels on every pod.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on every pod.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// GKE's scheduling settings.
    #[serde(default)]
    pub gke: Gke,
    /// Existing Secrets a job may name in `provider_options.kubernetes.env_from_secrets`:
    /// `{name, keys}`, where `keys` empty or absent allows the whole Secret and otherwise
    /// only those keys, named one by one. None by default: a pod can read any Secret of its
    /// namespace, the gateway's own tokens and other jobs' `-env` Secrets included.
    #[serde(default)]
    pub allowed_secrets: Vec<AllowedSecret>,
    /// Node labels a job may set in `provider_options.kubernetes.node_selector`, each with
    /// the values it may take (`{"cloud.google.com/gke-nodepool" = ["batch", "gpu"]}`).
    /// None by default.
    #[serde(default)]
    pub allowed_node_selectors: BTreeMap<String, Vec<String>>,
    /// Tolerations a job may add in `provider_options.kubernetes.tolerations`; a job's
    /// toleration must equal one of these field for field. None by default.
    #[serde(default)]
    #[schemars(schema_with = "tolerations")]
    pub allowed_tolerations: Vec<Toleration>,
    /// GPU kinds (`cloud.google.com/gke-accelerator` values) the cluster has.
    #[serde(default)]
    pub gpu_kinds: Vec<String>,
    /// The most vCPUs one pod may ask for (GKE Autopilot's general-purpose limit by
    /// default).
    #[serde(default = "default_max_cpu")]
    pub max_cpu: f64,
    /// The most memory one pod may ask for, in bytes.
    #[serde(default = "default_max_memory")]
    pub max_memory_bytes: u64,
    /// A pod stuck pending on an image pull or config error fails after this; one
    /// unschedulable this long is reported as "no capacity", which fails an `auto` job
    /// over to another provider (or leaves it waiting to be placed).
    #[serde(default = "default_pending")]
    pub pending_timeout_seconds: u64,
    /// A fresh watch (with a fresh list) is started this often, as a safety net.
    #[serde(default = "default_relist")]
    pub relist_seconds: u64,
    /// The grace period of a cancelled pod, in seconds.
    #[serde(default = "default_grace")]
    pub grace_seconds: u32,
    /// API calls per second at most, log reads apart: a client-side limit (kube has none).
    #[serde(default = "default_rate")]
    pub calls_per_second: u32,
    /// The most API calls at once, the bucket `calls_per_second` refills.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// A limit of their own on pod log reads. The API server counts `pods/log` as a
    /// long-running request, outside its in-flight limits and its priority and fairness
    /// (the kubelet of each pod's node serves the log), and ends come in waves: a DAG's
    /// tasks often end together, and each end reads its pod's log tail for the result.
    #[serde(default = "default_log_rate")]
    pub log_reads_per_second: u32,
    /// The most pod log reads at once, the bucket `log_reads_per_second` refills.
    #[serde(default = "default_log_burst")]
    pub log_burst: u32,
    /// The image the filer steps of a job with inputs or outputs run (the gateway's own
    /// image, which has `offload`); without it, such jobs are refused.
    pub filer_image: Option<String>,
    /// The filer's program in that image, before `filer stage-in` or `filer stage-out`.
    #[serde(default = "offload_provider::steps::default_filer_command")]
    pub filer_command: Vec<String>,
    /// A Secret whose keys (`AWS_ACCESS_KEY_ID`, ...) the filer steps alone get as their
    /// environment: the deployment's credentials for the object stores. The executors of
    /// the same pod do not get it.
    pub filer_secret: Option<String>,
}

/// A pod toleration's schema, as Kubernetes writes it (k8s-openapi's types have none).
fn tolerations(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "key": { "type": "string" },
                "operator": { "enum": ["Exists", "Equal"] },
                "value": { "type": "string" },
                "effect": { "enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"] },
                "tolerationSeconds": { "type": "integer" }
            },
            "additionalProperties": false
        }
    })
}

/// A pod affinity's schema: a table as a pod spec's `affinity` (nodeAffinity,
/// podAffinity, podAntiAffinity), which Kubernetes checks.
fn affinity(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "nodeAffinity": { "type": "object" },
            "podAffinity": { "type": "object" },
            "podAntiAffinity": { "type": "object" }
        },
        "additionalProperties": false
    })
}

/// A Secret jobs may use for their environment (see `Config::allowed_secrets`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedSecret {
    /// The Secret's name, in the jobs' namespace.
    pub name: String,
    /// The keys jobs may read, one by one; empty: the whole Secret.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// GKE's scheduling knobs, and where its prices are.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gke {
    /// Run on Spot capacity (`cloud.google.com/gke-spot`).
    #[serde(default)]
    pub spot: bool,
    /// An Autopilot compute class (`cloud.google.com/compute-class`).
    pub compute_class: Option<String>,
    /// The cluster's region, whose Autopilot prices the sheet uses (and `offload prices
    /// refresh` reads).
    #[serde(default = "default_gke_region")]
    pub region: String,
}

impl Default for Gke {
    fn default() -> Self {
        Gke {
            spot: false,
            compute_class: None,
            region: default_gke_region(),
        }
    }
}

/// The region the built-in Autopilot prices are for ([`crate::pricing`]).
fn default_gke_region() -> String {
    "us-central1".into()
}

fn default_max_cpu() -> f64 {
    // GKE Autopilot's general-purpose limit per pod.
    28.0
}
fn default_max_memory() -> u64 {
    80 << 30
}
fn default_pending() -> u64 {
    300
}
fn default_relist() -> u64 {
    600
}
fn default_grace() -> u32 {
    30
}
fn default_rate() -> u32 {
    20
}
fn default_burst() -> u32 {
    50
}
fn default_log_rate() -> u32 {
    50
}
fn default_log_burst() -> u32 {
    250
}

impl Config {
    pub fn check(&self) -> Result<(), String> {
        if self.calls_per_second == 0 || self.burst == 0 {
            return Err("calls_per_second and burst must be at least 1".into());
        }
        if self.log_reads_per_second == 0 || self.log_burst == 0 {
            return Err("log_reads_per_second and log_burst must be at least 1".into());
        }
        if self.namespace.as_deref() == Some("") {
            return Err("namespace: must not be empty".into());
        }
        if let Some((label, _)) = self
            .allowed_node_selectors
            .iter()
            .find(|(_, values)| values.is_empty())
        {
            return Err(format!(
                "allowed_node_selectors.{label:?}: list the values jobs may choose"
            ));
        }
        Ok(())
    }
}

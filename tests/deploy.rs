//! The deployment artifacts:
//!
//! - Kubernetes: `kubectl kustomize` renders the base, each overlay, and overlays made as
//!   the docs say (components composed, the config replaced); every object must parse into
//!   its `k8s-openapi` type and serialise back unchanged (so a misspelt field fails), no
//!   Secret is rendered (applying must never overwrite a real one), every overlay sets the
//!   image, and the config in the ConfigMap loads as an offload config with the
//!   Deployment's environment;
//! - the compose demo's config, its Prometheus with the shipped alert rules, its Grafana
//!   with the shipped dashboard;
//! - the alert rules and the dashboard, with promtool, against the metrics the gateway
//!   exports;
//! - the cloud roles and policies against the calls each provider makes.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::{apps, autoscaling, core, policy, rbac};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

/// The Kustomize tree, from the repository's root.
const KUSTOMIZE: &str = "deploy/kubernetes";

fn render(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("kubectl is needed to render the manifests (Debian/Google package `kubectl`)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect()
}

/// Parses `doc` as `T` and checks that nothing was lost on the way.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let object: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", doc["kind"], doc["metadata"]["name"]));
    assert_eq!(
        &serde_json::to_value(&object).unwrap(),
        doc,
        "fields dropped: unknown or misspelt"
    );
    object
}

fn probe_path(probe: &Option<core::v1::Probe>) -> Option<&str> {
    probe.as_ref()?.http_get.as_ref()?.path.as_deref()
}

struct Rendered {
    deployment: apps::v1::Deployment,
    service_account: core::v1::ServiceAccount,
    service: core::v1::Service,
    config: core::v1::ConfigMap,
    pvc: Option<core::v1::PersistentVolumeClaim>,
    hpa: autoscaling::v2::HorizontalPodAutoscaler,
    pdb: policy::v1::PodDisruptionBudget,
    kinds: Vec<String>,
}

impl Rendered {
    fn pod(&self) -> core::v1::PodSpec {
        self.deployment.spec.clone().template.spec.unwrap()
    }

    fn env(&self) -> Vec<core::v1::EnvVar> {
        self.pod().containers[0].env.clone().unwrap_or_default()
    }

    fn image(&self) -> String {
        self.pod().containers[0].image.clone().unwrap()
    }

    /// The config in the ConfigMap, with the tokens the Secret gives. (No other variable
    /// of the Deployment's would make it fail: [`parse_all`] checks that none names a
    /// provider.)
    fn loaded_config(&self) -> Result<offload::config::Config, String> {
        let text = &self.config.data.as_ref().unwrap()["offload.toml"];
        let with_tokens =
            format!("{text}\n[[auth.tokens]]\ntoken = \"0123456789abcdef\"\ntenant = \"t\"\n");
        offload::config::Config::from_toml(&with_tokens).map_err(|e| e.to_string())
    }
}

fn parse_all(dir: &str) -> Rendered {
    let (mut deployment, mut service_account, mut service, mut config) = (None, None, None, None);
    let (mut pvc, mut hpa, mut pdb, mut kinds) = (None, None, None, vec![]);
    for doc in render(dir) {
        let kind = doc["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "Deployment" => deployment = Some(typed(&doc)),
            // The gateway's; the jobs' own (offload-job) has no rights and no token.
            "ServiceAccount" if doc["metadata"]["name"] == "offload" => {
                service_account = Some(typed(&doc))
            }
            "ServiceAccount" => {
                let jobs: core::v1::ServiceAccount = typed(&doc);
                assert_eq!(jobs.metadata.name.as_deref(), Some("offload-job"));
                assert_eq!(jobs.automount_service_account_token, Some(false));
            }
            "ConfigMap" => config = Some(typed(&doc)),
            "PersistentVolumeClaim" => pvc = Some(typed(&doc)),
            "Service" => service = Some(typed(&doc)),
            "Role" => drop(typed::<rbac::v1::Role>(&doc)),
            "RoleBinding" => drop(typed::<rbac::v1::RoleBinding>(&doc)),
            "HorizontalPodAutoscaler" => {
                let parsed: autoscaling::v2::HorizontalPodAutoscaler = typed(&doc);
                assert_eq!(parsed.spec.scale_target_ref.name, "offload");
                hpa = Some(parsed);
            }
            "PodDisruptionBudget" => pdb = Some(typed(&doc)),
            // A Secret applied with the manifests would overwrite the real one each time.
            other => panic!("unexpected kind {other} in {dir}"),
        }
        kinds.push(kind);
    }
    let r = Rendered {
        deployment: deployment.expect("a Deployment"),
        service_account: service_account.expect("a ServiceAccount"),
        service: service.expect("a Service"),
        config: config.expect("a ConfigMap"),
        pvc,
        hpa: hpa.expect("a HorizontalPodAutoscaler"),
        pdb: pdb.expect("a PodDisruptionBudget"),
        kinds,
    };
    // The Deployment mounts the ConfigMap rendered (its name carries the content's hash).
    let volumes = r.pod().volumes.unwrap_or_default();
    let mounted = volumes.iter().find_map(|v| v.config_map.as_ref()).map(|c| c.name.clone());
    assert_eq!(mounted, r.config.metadata.name, "{dir}: the Deployment mounts another ConfigMap");
    // Only a config's own providers are configured from the environment: a variable for a
    // provider the config lacks would make a provider without a kind, and the gateway
    // would not start.
    let providers: Vec<String> = r.env().into_iter().map(|e| e.name).filter(|n| n.starts_with("OFFLOAD_PROVIDERS__")).collect();
    assert!(providers.is_empty(), "{dir}: {providers:?}");
    r
}

/// What every overlay must have: the image it sets (the base's `offload:latest` can be
/// pulled from nowhere), the tokens from the Secret `offload-tokens` it does not render,
/// and a config that loads.
fn assert_deployable(dir: &str, r: &Rendered) {
    let kustomization: Value = serde_norway::from_str(
        &std::fs::read_to_string(format!("{dir}/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let image = &kustomization["images"][0];
    assert_eq!(image["name"], "offload", "{dir}");
    assert_eq!(
        r.image(),
        format!("{}:{}", image["newName"].as_str().unwrap(), image["newTag"].as_str().unwrap()),
        "{dir}"
    );
    // The tokens file is the Secret's key, in a folder mounted whole (a subPath mount
    // would never see the Secret's updates, and tokens would not rotate).
    let file = r.env().into_iter().find(|e| e.name == "OFFLOAD_AUTH__TOKENS_FILE");
    assert_eq!(
        file.and_then(|e| e.value).as_deref(),
        Some("/etc/offload-tokens/tokens"),
        "{dir}"
    );
    let pod = r.pod();
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("offload-tokens"))
        .unwrap_or_else(|| panic!("{dir}: no volume of the Secret offload-tokens"));
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .unwrap_or_else(|| panic!("{dir}: the Secret offload-tokens is not mounted"));
    assert_eq!((mount.mount_path.as_str(), mount.sub_path.as_deref()), ("/etc/offload-tokens", None), "{dir}");
    r.loaded_config().unwrap_or_else(|e| panic!("{dir}: {e}"));
}

#[test]
fn base_renders_valid_objects_with_probes_and_a_locked_down_pod() {
    let r = parse_all(&format!("{KUSTOMIZE}/base"));
    assert_eq!(r.kinds.len(), 10, "{:?}", r.kinds);
    assert!(r.pvc.is_some(), "the SQLite store's volume");
    // The name the overlays' `images:` replace.
    assert_eq!(r.image(), "offload:latest");
    let template = r.deployment.spec.clone().template;
    let annotations = template.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    let pod = r.pod();
    assert_eq!(pod.service_account_name.as_deref(), Some("offload"));
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let container = &pod.containers[0];
    assert_eq!(probe_path(&container.readiness_probe), Some("/readyz"));
    assert_eq!(probe_path(&container.liveness_probe), Some("/healthz"));
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(
        (
            security.read_only_root_filesystem,
            security.allow_privilege_escalation
        ),
        (Some(true), Some(false))
    );
    assert!(container.resources.as_ref().unwrap().requests.is_some());

    // In-cluster clients (Airflow) reach the gateway at http://offload.NAMESPACE (port 80).
    let service = r.service.spec.clone().unwrap();
    assert_eq!(r.service.metadata.name.as_deref(), Some("offload"));
    let port = &service.ports.unwrap()[0];
    assert_eq!((port.port, port.target_port.clone()), (80, Some(IntOrString::String("http".into()))));
    assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8080);

    // The shipped config loads, once the tokens the Secret provides are added.
    let config = r.loaded_config().unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    // Jobs run as pods, never in the gateway's container.
    assert_eq!(config.providers.len(), 1);
    assert!(matches!(
        config.providers["cluster"].kind,
        offload::config::KindConfig::Kubernetes(_)
    ));
    let toml = &r.config.data.unwrap()["offload.toml"];
    assert!(
        offload::config::Config::from_toml(toml).is_err(),
        "must refuse to start without tokens"
    );
}

/// The GKE settings of the gke component.
fn assert_gke(dir: &str, r: &Rendered) {
    let annotations = r.service_account.metadata.annotations.clone().unwrap();
    assert!(
        annotations["iam.gke.io/gcp-service-account"].ends_with(".iam.gserviceaccount.com"),
        "{dir}"
    );
    assert_eq!(
        r.pod().node_selector.unwrap()["iam.gke.io/gke-metadata-server-enabled"],
        "true",
        "{dir}"
    );
}

#[test]
fn gke_overlay_adds_workload_identity() {
    let dir = format!("{KUSTOMIZE}/overlays/gke");
    let r = parse_all(&dir);
    assert_deployable(&dir, &r);
    assert_gke(&dir, &r);
    assert!(r.image().starts_with("us-docker.pkg.dev/"), "Artifact Registry");
    assert_eq!(
        r.pvc.unwrap().spec.unwrap().storage_class_name.as_deref(),
        Some("standard-rwo")
    );
}

/// The value of the env var `name`, when it comes from a Secret: (secret, key).
fn secret_ref<'a>(env: &'a [core::v1::EnvVar], name: &str) -> Option<(&'a str, &'a str)> {
    let r = env
        .iter()
        .find(|e| e.name == name)?
        .value_from
        .as_ref()?
        .secret_key_ref
        .as_ref()?;
    Some((r.name.as_str(), r.key.as_str()))
}

/// The postgres component's changes to the base.
fn assert_postgres(dir: &str, r: &Rendered) {
    // The base's objects but the SQLite volume's claim.
    assert!(r.pvc.is_none(), "{dir}: {:?}", r.kinds);
    assert_eq!(r.kinds.len(), 9, "{dir}: {:?}", r.kinds);

    let spec = r.deployment.spec.clone();
    assert_eq!(spec.replicas, Some(2));
    // A new pod is ready before an old one goes: never fewer than two serving.
    let strategy = spec.strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));

    let pod = r.pod();
    let container = &pod.containers[0];
    let env = r.env();
    assert_eq!(
        secret_ref(&env, "OFFLOAD_STORE__URL"),
        Some(("offload-postgres", "url"))
    );
    assert_eq!(
        secret_ref(&env, "OFFLOAD_STORE__SECRET_KEY"),
        Some(("offload-postgres", "secret_key"))
    );
    // No SQLite volume is left, nor its mount.
    let volumes = pod.volumes.unwrap_or_default();
    assert!(
        volumes.iter().all(|v| v.persistent_volume_claim.is_none()),
        "{:?}",
        volumes.iter().map(|v| &v.name).collect::<Vec<_>>()
    );
    assert!(!volumes.iter().any(|v| v.name == "data"));
    let mounts = container.volume_mounts.as_ref().unwrap();
    assert!(
        mounts
            .iter()
            .all(|m| volumes.iter().any(|v| v.name == m.name)),
        "a mount without its volume"
    );
    assert!(!mounts.iter().any(|m| m.mount_path == "/var/lib/offload"));

    let hpa = &r.hpa.spec;
    assert!(hpa.min_replicas.unwrap_or(1) >= 2);
    assert!(hpa.max_replicas > hpa.min_replicas.unwrap());
    let cpu = hpa.metrics.as_ref().unwrap().iter().any(|m| {
        m.resource
            .as_ref()
            .is_some_and(|res| res.name == "cpu" && res.target.type_ == "Utilization")
    });
    assert!(cpu, "the HPA scales on CPU utilisation");
    let pdb = r.pdb.spec.clone().unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert_eq!(pdb.max_unavailable, None);
}

#[test]
fn postgres_overlay_runs_two_replicas_on_postgres() {
    let dir = format!("{KUSTOMIZE}/overlays/postgres");
    let r = parse_all(&dir);
    assert_deployable(&dir, &r);
    assert_postgres(&dir, &r);

    // The Secret the Deployment reads is not rendered (applying the overlay must never
    // overwrite the real one); its example has the keys the Deployment names.
    let text =
        std::fs::read_to_string(format!("{KUSTOMIZE}/components/postgres/secret.example.yaml"))
            .unwrap();
    let example: core::v1::Secret = typed(&serde_norway::from_str::<Value>(&text).unwrap());
    assert_eq!(example.metadata.name.as_deref(), Some("offload-postgres"));
    let keys: Vec<&String> = example.string_data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["secret_key", "url"]);
}

/// GKE and PostgreSQL compose: the overlay that has both components has what each gives.
#[test]
fn gke_and_postgres_compose() {
    let dir = format!("{KUSTOMIZE}/overlays/gke-postgres");
    let r = parse_all(&dir);
    assert_deployable(&dir, &r);
    assert_gke(&dir, &r);
    assert_postgres(&dir, &r);
}

/// An overlay of the operator's own, made next to the shipped ones (Kustomize takes no
/// absolute paths), deleted when dropped.
fn own_overlay(kustomization: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("test-overlay-")
        .tempdir_in(KUSTOMIZE)
        .unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), kustomization).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// docs/deploying.md's overlay for a config of one's own: the ConfigMap replaced with
/// `behavior: replace` by a config that runs jobs on ECS, with no `[providers.cluster]`;
/// the Deployment mounts it, and it loads with the Deployment's environment.
#[test]
fn an_own_config_replaces_the_base_config() {
    let config = "listen = \"0.0.0.0:8080\"\n[providers.fargate]\nkind = \"ecs\"\ncluster = \"batch\"\nsubnets = [\"subnet-1\"]\n";
    let overlay = own_overlay(
        "resources:\n  - ../base\nconfigMapGenerator:\n  - name: offload-config\n    behavior: replace\n    files:\n      - offload.toml\nimages:\n  - name: offload\n    newName: registry.example.com/offload\n    newTag: \"0.1.0\"\n",
        &[("offload.toml", config)],
    );
    let dir = overlay.path().to_str().unwrap();
    let r = parse_all(dir);
    assert_deployable(dir, &r);
    assert_eq!(r.config.data.as_ref().unwrap()["offload.toml"], config);
    let loaded = r.loaded_config().unwrap();
    assert_eq!(loaded.providers.keys().collect::<Vec<_>>(), ["fargate"]);
}

/// The AWS credential components of docs/providers/ecs.md: IRSA's annotation on EKS, and
/// the projected web identity token elsewhere (GKE), each composing with the others.
#[test]
fn the_aws_credential_components_give_the_gateway_a_role() {
    let overlay = own_overlay(
        "resources:\n  - ../base\ncomponents:\n  - ../components/aws-irsa\n  - ../components/postgres\n",
        &[],
    );
    let r = parse_all(overlay.path().to_str().unwrap());
    let annotations = r.service_account.metadata.annotations.clone().unwrap();
    assert!(annotations["eks.amazonaws.com/role-arn"].starts_with("arn:aws:iam::"));

    let overlay = own_overlay(
        "resources:\n  - ../base\ncomponents:\n  - ../components/gke\n  - ../components/aws-web-identity\n  - ../components/postgres\n",
        &[],
    );
    let r = parse_all(overlay.path().to_str().unwrap());
    assert_gke("gke with aws-web-identity", &r);
    let env: BTreeMap<String, Option<String>> =
        r.env().into_iter().map(|e| (e.name, e.value)).collect();
    let token = env["AWS_WEB_IDENTITY_TOKEN_FILE"].clone().unwrap();
    assert!(env["AWS_ROLE_ARN"].as_deref().unwrap().starts_with("arn:aws:iam::"));
    let pod = r.pod();
    let mount = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| token.starts_with(&format!("{}/", m.mount_path)))
        .expect("the token file's volume is mounted");
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == mount.name).unwrap();
    let source = volume.projected.unwrap().sources.unwrap()[0]
        .service_account_token
        .clone()
        .unwrap();
    assert_eq!(source.audience.as_deref(), Some("sts.amazonaws.com"));
    assert_eq!(format!("{}/{}", mount.mount_path, source.path), token);
}

/// The compose demo: two gateways on one PostgreSQL, and Prometheus scraping both.
#[test]
fn the_compose_config_loads() {
    let compose: Value =
        serde_norway::from_str(&std::fs::read_to_string("deploy/compose/compose.yaml").unwrap())
            .unwrap();
    let services = compose["services"].as_object().unwrap();
    let gateways: Vec<&String> = services
        .keys()
        .filter(|name| name.starts_with("offload-"))
        .collect();
    assert_eq!(gateways, ["offload-1", "offload-2"]);
    assert!(services["postgres"]["image"]
        .as_str()
        .unwrap()
        .starts_with("postgres:16"));
    assert!(services["postgres"]["healthcheck"]["test"]
        .to_string()
        .contains("pg_isready"));
    let url = "postgres://offload:offload@postgres:5432/offload";
    let mut host_ports = vec![];
    for name in &gateways {
        let gateway = &services[name.as_str()];
        let env = &gateway["environment"];
        assert_eq!(env["OFFLOAD_STORE__URL"], url, "{name}");
        // One key for all: what one replica sealed, another must open.
        assert_eq!(
            env["OFFLOAD_STORE__SECRET_KEY"],
            services["offload-1"]["environment"]["OFFLOAD_STORE__SECRET_KEY"],
            "{name}"
        );
        assert_eq!(
            gateway["depends_on"]["postgres"]["condition"], "service_healthy",
            "{name}"
        );
        let ports = gateway["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1, "{name}");
        let port = ports[0].as_str().unwrap();
        assert!(port.ends_with(":8080"), "{name}: {port}");
        host_ports.push(port.split(':').next().unwrap().to_string());
    }
    assert_eq!(host_ports, ["8081", "8082"]);

    // The store comes from the environment in compose; add it as a [store] table, which
    // the file itself must therefore not have.
    let toml = std::fs::read_to_string("deploy/compose/offload.toml").unwrap();
    let key = services["offload-1"]["environment"]["OFFLOAD_STORE__SECRET_KEY"]
        .as_str()
        .unwrap();
    let with_store = format!("{toml}\n[store]\nurl = \"{url}\"\nsecret_key = \"{key}\"\n");
    let config = offload::config::Config::from_toml(&with_store).unwrap();
    assert_eq!(config.store.url.as_deref(), Some(url));
    assert!(
        config.store.secret_box().is_ok(),
        "the demo key must be 32 bytes, base64"
    );
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert!(!config.auth.tokens.is_empty());
    assert_eq!(config.providers.len(), 2);
    assert!(config
        .providers
        .values()
        .all(|p| matches!(p.kind, offload::config::KindConfig::Sim(_))));
    assert!(
        offload::config::Config::from_toml(&format!("{toml}\n[store]\nurl = \"{url}\"\n")).is_err(),
        "PostgreSQL without a shared secret key must be refused"
    );

    // Prometheus scrapes both replicas, by their service names on the listen port.
    assert!(services["prometheus"]["image"]
        .as_str()
        .unwrap()
        .starts_with("prom/prometheus"));
    let prometheus: Value =
        serde_norway::from_str(&std::fs::read_to_string("deploy/compose/prometheus.yml").unwrap())
            .unwrap();
    let mut targets: Vec<&str> = prometheus["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|job| job["metrics_path"].as_str().unwrap_or("/metrics") == "/metrics")
        .flat_map(|job| job["static_configs"].as_array().unwrap())
        .flat_map(|c| c["targets"].as_array().unwrap())
        .map(|t| t.as_str().unwrap())
        .collect();
    targets.sort();
    assert_eq!(targets, ["offload-1:8080", "offload-2:8080"]);

    // Every file a service mounts is in the repository, and Prometheus loads the shipped
    // alert rules and Grafana the shipped dashboard from where they are mounted.
    let mut mounts = BTreeMap::new();
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let volume = volume.as_str().unwrap();
            let (from, to) = volume.split_once(':').unwrap();
            if from.starts_with('.') {
                let path = std::path::Path::new("deploy/compose").join(from);
                assert!(path.exists(), "{name} mounts {from}, which does not exist");
                let to = to.trim_end_matches(":ro").to_string();
                mounts.insert(to, path.canonicalize().unwrap());
            }
        }
    }
    let canonical = |p: &str| std::path::Path::new(p).canonicalize().unwrap();
    let rule_files: Vec<&str> = prometheus["rule_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(rule_files, ["/etc/prometheus/offload-alerts.yml"]);
    assert_eq!(mounts[rule_files[0]], canonical("deploy/prometheus/offload-alerts.yml"));
    let provisioning: Value = serde_norway::from_str(
        &std::fs::read_to_string("deploy/compose/grafana/dashboards.yml").unwrap(),
    )
    .unwrap();
    let folder = provisioning["providers"][0]["options"]["path"].as_str().unwrap();
    assert_eq!(
        mounts[&format!("{folder}/offload.json")],
        canonical("deploy/grafana/offload.json")
    );
    let datasources: Value = serde_norway::from_str(
        &std::fs::read_to_string("deploy/compose/grafana/datasources.yml").unwrap(),
    )
    .unwrap();
    assert_eq!(datasources["datasources"][0]["url"], "http://prometheus:9090");
}

#[test]
fn the_example_config_loads_with_every_provider_kind() {
    let text = std::fs::read_to_string("deploy/offload.example.toml").unwrap();
    let config = offload::config::Config::from_toml(&text).unwrap();
    let kinds: Vec<String> = config
        .providers
        .values()
        .map(|p| {
            format!("{:?}", p.kind)
                .split('(')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        ["Aci", "Cloudrun", "Aca", "Ecs", "Kubernetes", "Local", "Sim"],
        "{kinds:?}"
    );
}

/// The example's `fargate` provider takes the jobs the example's routing sends it: with
/// `routing.default_spot = "never"`, a provider with a FARGATE_SPOT share would refuse
/// every job that does not allow spot, even one that names it (issue 38).
#[cfg(feature = "ecs")]
#[test]
fn the_example_fargate_provider_takes_jobs_that_allow_no_spot() {
    let text = std::fs::read_to_string("deploy/offload.example.toml").unwrap();
    let config = offload::config::Config::from_toml(&text).unwrap();
    assert_eq!(config.routing.default_spot, offload::model::SpotPolicy::Never);
    let offload::config::KindConfig::Ecs(fargate) = &config.providers["fargate"].kind else {
        panic!("the example's fargate provider is not ECS");
    };
    assert!(!fargate.spot(), "the example's fargate provider has spot capacity");
}

/// The IAM policy grants exactly the calls the ECS provider makes (and the PassRole and
/// TagResource those calls need), so a new call cannot ship without its permission.
#[test]
fn the_ecs_policy_grants_the_calls_the_provider_makes() {
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string("deploy/aws/offload-ecs-policy.json").unwrap(),
    )
    .unwrap();
    let mut granted: Vec<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap().to_string()).collect(),
            _ => vec![],
        })
        .collect();
    granted.sort();
    // Every SDK operation named in the provider's source: `.run_task()`, `.get_log_events()`...
    let mut called = vec!["ecs:TagResource".to_string(), "iam:PassRole".to_string()];
    for file in std::fs::read_dir("providers/ecs/src").unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        for (op, action) in [
            ("run_task()", "ecs:RunTask"),
            ("describe_tasks()", "ecs:DescribeTasks"),
            ("stop_task()", "ecs:StopTask"),
            ("list_tasks()", "ecs:ListTasks"),
            ("register_task_definition()", "ecs:RegisterTaskDefinition"),
            ("describe_task_definition()", "ecs:DescribeTaskDefinition"),
            ("get_log_events()", "logs:GetLogEvents"),
            ("filter_log_events()", "logs:FilterLogEvents"),
        ] {
            if text.contains(&format!(".{op}")) && !called.iter().any(|c| c == action) {
                called.push(action.to_string());
            }
        }
    }
    called.sort();
    assert_eq!(granted, called);
}

/// The `Actions` of the Azure custom role in `role`, sorted, must be exactly `fixed` and
/// the action of each (marker, action) in `calls`, every marker still found in the
/// provider files `sources`: a call dropped from the provider fails here until this test
/// and the role drop its permission too.
fn assert_role_allows_exactly(
    role: &str,
    sources: &[&str],
    fixed: &[&'static str],
    calls: &[(&str, &'static str)],
) {
    // Azure's role definitions are JSON (`Actions`), Google's custom roles YAML
    // (`includedPermissions`).
    let text = std::fs::read_to_string(role).unwrap();
    let (role, field): (Value, &str) = match role.ends_with(".yaml") {
        true => (serde_norway::from_str(&text).unwrap(), "includedPermissions"),
        false => (serde_json::from_str(&text).unwrap(), "Actions"),
    };
    let mut allowed: Vec<&str> = role[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    allowed.sort();
    let source: String = sources
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    let mut needed = fixed.to_vec();
    for &(call, action) in calls {
        assert!(
            source.contains(call),
            "the provider no longer calls {call}: update this test"
        );
        needed.push(action);
    }
    needed.sort();
    // One action can cover several calls (a GET and a list are both `read`).
    needed.dedup();
    assert_eq!(allowed, needed);
}

/// The Azure role allows exactly the container group operations the ACI provider calls,
/// plus subnet join and identity assign (needed when `subnet_ids` / `managed_identity` are set).
#[test]
fn the_aci_role_allows_the_calls_the_provider_makes() {
    assert_role_allows_exactly(
        "deploy/azure/offload-aci-role.json",
        &["providers/aci/src/arm.rs"],
        &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
            "Microsoft.Network/virtualNetworks/subnets/join/action",
        ],
        &[
            (".get(", "Microsoft.ContainerInstance/containerGroups/read"),
            (
                ".create_or_update(",
                "Microsoft.ContainerInstance/containerGroups/write",
            ),
            (
                ".delete(",
                "Microsoft.ContainerInstance/containerGroups/delete",
            ),
            (
                ".stop(",
                "Microsoft.ContainerInstance/containerGroups/stop/action",
            ),
            (
                ".list_logs(",
                "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
            ),
        ],
    );
}

/// The Azure role allows exactly what the Container Apps provider does: the jobs calls in
/// `arm.rs` (stopping one execution by name, listing executions rather than getting one,
/// and no operation-status polling: provisioning is watched by GETs of the job); the job
/// body's environment and user-assigned identity, which ARM checks as linked access
/// (join, assign); and the Log Analytics query, on the default table, a custom (`_CL`)
/// table, which the legacy table-level permissions grant only as all custom tables.
#[test]
fn the_aca_role_allows_the_calls_the_provider_makes() {
    assert_role_allows_exactly(
        "deploy/azure/offload-aca-role.json",
        &[
            "providers/aca/src/arm.rs",
            "providers/aca/src/job.rs",
            "providers/aca/src/logs.rs",
            "providers/aca/src/config.rs",
        ],
        &[],
        &[
            (".get(", "Microsoft.App/jobs/read"),
            (".list_by_resource_group(", "Microsoft.App/jobs/read"),
            (".create_or_update(", "Microsoft.App/jobs/write"),
            (".delete(", "Microsoft.App/jobs/delete"),
            (".start(", "Microsoft.App/jobs/start/action"),
            (
                ".stop_execution(",
                "Microsoft.App/jobs/stop/execution/action",
            ),
            (
                ".jobs_executions_client()",
                "Microsoft.App/jobs/executions/read",
            ),
            (
                "\"environmentId\"",
                "Microsoft.App/managedEnvironments/join/action",
            ),
            (
                "\"userAssignedIdentities\"",
                "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
            ),
            (
                "/v1/workspaces/",
                "Microsoft.OperationalInsights/workspaces/read",
            ),
            (
                "/v1/workspaces/",
                "Microsoft.OperationalInsights/workspaces/query/read",
            ),
            (
                "\"ContainerAppConsoleLogs_CL\".into()",
                "Microsoft.OperationalInsights/workspaces/query/Tables.Custom/read",
            ),
        ],
    );
}

/// The Google role allows exactly what the Cloud Run provider calls: the jobs, executions
/// and tasks calls, the log read and the Secret Manager calls. `run.jobs.run` is for the
/// execution a create starts (`startExecutionToken`), not for a call of its own.
#[cfg(feature = "cloudrun")]
#[test]
fn the_cloudrun_role_allows_the_calls_the_provider_makes() {
    assert_role_allows_exactly(
        "deploy/gcp/offload-cloudrun-role.yaml",
        &[
            "providers/cloudrun/src/lib.rs",
            "providers/cloudrun/src/job.rs",
            "providers/cloudrun/src/logs.rs",
            "providers/cloudrun/src/secrets.rs",
        ],
        &[],
        &[
            (".create_job()", "run.jobs.create"),
            ("\"startExecutionToken\"", "run.jobs.run"),
            (".get_job()", "run.jobs.get"),
            (".list_jobs()", "run.jobs.list"),
            (".delete_job()", "run.jobs.delete"),
            (".list_executions()", "run.executions.list"),
            (".cancel_execution()", "run.executions.cancel"),
            (".list_tasks()", "run.tasks.list"),
            (".list_log_entries()", "logging.logEntries.list"),
            (".create_secret()", "secretmanager.secrets.create"),
            (".add_secret_version()", "secretmanager.versions.add"),
            (".delete_secret()", "secretmanager.secrets.delete"),
            (".list_secrets()", "secretmanager.secrets.list"),
        ],
    );
}

/// Runs promtool (Debian's `prometheus` package, which tests/run.sh installs) with `args`
/// in deploy/prometheus; panics with its output unless it succeeds.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus"))
        .output()
        .expect("promtool is needed to check the alert rules (Debian package `prometheus`; tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `offload_*` series names a PromQL expression reads.
fn offload_series(expr: &str) -> Vec<String> {
    regex::Regex::new(r"\boffload_[a-z0-9_]+")
        .unwrap()
        .find_iter(expr)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// The alert rules' expressions, by alert name.
fn alert_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("deploy/prometheus/offload-alerts.yml").unwrap();
    let rules: Value = serde_norway::from_str(&text).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| (r["alert"].as_str().unwrap().to_string(), r["expr"].as_str().unwrap().to_string()))
        .collect()
}

/// The dashboard's queries, by panel title.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/offload.json").unwrap())
            .unwrap();
    let mut queries = vec![];
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap().to_string();
            queries.push((title, target["expr"].as_str().unwrap().to_string()));
        }
    }
    queries
}

/// The alert rules are valid, and each fires on the series it is for and not before its
/// time (`promtool test rules` on offload-alerts.test.yml); the dashboard's queries are
/// valid PromQL (checked as recording rules, Grafana's variables given values).
#[test]
fn the_alert_rules_and_the_dashboard_queries_pass_promtool() {
    promtool(&["check", "rules", "offload-alerts.yml"]);
    promtool(&["test", "rules", "offload-alerts.test.yml"]);

    let rules: Vec<Value> = dashboard_queries()
        .into_iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$__range", "6h")
                .replace("$job", ".*");
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_norway::to_string(&groups).unwrap()).unwrap();
    promtool(&["check", "rules", file.to_str().unwrap()]);
}

/// The rules and the dashboard read only metrics the gateway exports (as its source
/// records them), and the dashboard shows every metric an alert watches.
#[test]
fn the_alert_rules_and_the_dashboard_read_only_exported_metrics() {
    let exported = common::exported::series();
    let unknown = |queries: &[(String, String)]| -> Vec<String> {
        queries
            .iter()
            .flat_map(|(what, expr)| {
                offload_series(expr)
                    .into_iter()
                    .filter(|s| !exported.contains(s))
                    .map(move |s| format!("{what}: {s}"))
            })
            .collect()
    };
    let (rules, dashboard) = (alert_rules(), dashboard_queries());
    assert_eq!(unknown(&rules), Vec::<String>::new(), "the gateway exports {exported:?}");
    assert_eq!(unknown(&dashboard), Vec::<String>::new(), "the gateway exports {exported:?}");
    let shown: Vec<String> = dashboard.iter().flat_map(|(_, e)| offload_series(e)).collect();
    for (alert, expr) in &rules {
        for series in offload_series(expr) {
            assert!(shown.contains(&series), "{alert} watches {series}, which no panel shows");
        }
    }
    // Every alert but Prometheus' own (up) watches one of the gateway's metrics.
    for (alert, expr) in &rules {
        assert!(alert == "OffloadDown" || !offload_series(expr).is_empty(), "{alert}: {expr}");
    }
}

/// A `.dockerignore` pattern as Docker matches it (a port of moby/patternmatcher's
/// translation to a regular expression): from the context's root, `*` and `?` within one
/// folder, `**/` any number of folders, a leading `/` ignored.
fn dockerignore_regex(pattern: &str) -> regex::Regex {
    let pattern = pattern.trim_start_matches('/');
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                re += match chars.peek() {
                    None if pattern == "**" => ".*",
                    None => "(/.*)?",
                    Some(_) => "(.*/)?",
                };
            }
            '*' => re += "[^/]*",
            '?' => re += "[^/]",
            c => re += &regex::escape(&c.to_string()),
        }
    }
    regex::Regex::new(&(re + "$")).unwrap()
}

/// The Docker build context leaves out build output, test environments and a local store
/// with its key, and keeps every file the image's build reads: the workspace's manifests and
/// sources, the files they name (the bench target, `include_str!`/`include_bytes!` files
/// under src/), and what the Dockerfile copies.
#[test]
fn the_docker_build_context_has_what_the_build_reads_and_nothing_of_target() {
    let text = std::fs::read_to_string(".dockerignore").unwrap();
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(!patterns.iter().any(|p| p.starts_with('!')), "exceptions are not modelled here");
    let regexes: Vec<regex::Regex> = patterns.iter().map(|p| dockerignore_regex(p)).collect();
    // Docker leaves out a path when it, or a folder it is in, matches.
    let excluded = |path: &str| {
        let parts: Vec<&str> = path.split('/').collect();
        (1..=parts.len()).any(|n| {
            let prefix = parts[..n].join("/");
            regexes.iter().any(|r| r.is_match(&prefix))
        })
    };
    for path in [
        "target/debug/offload",
        "target/airflow-venv/bin/python",
        "providers/ecs/target/debug/x",
        ".git/HEAD",
        "tests/ui/node_modules/playwright-core/index.js",
        "deploy/airflow/provider/src/__pycache__/x.pyc",
        "offload.db",
        "offload.db-wal",
        "offload.db.key",
        "offload.db.lock",
        "offload-data/local/offload-1/stdout",
    ] {
        assert!(excluded(path), "{path} would be sent to the Docker build");
    }

    let mut read = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    let (members, target_paths) = workspace_manifest();
    read.extend(target_paths);
    for member in members {
        read.push(format!("{member}/Cargo.toml"));
        read.extend(files_under(&format!("{member}/src")));
    }
    let includes = regex::Regex::new(r#"include_(?:str|bytes)!\("([^"]+)"\)"#).unwrap();
    for file in files_under("src") {
        let source = std::fs::read_to_string(&file).unwrap_or_default();
        let dir = std::path::Path::new(&file).parent().unwrap();
        for c in includes.captures_iter(&source) {
            read.push(dir.join(&c[1]).to_str().unwrap().to_string());
        }
    }
    let dockerfile = std::fs::read_to_string("deploy/docker/Dockerfile").unwrap();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        read.extend(words[1..words.len() - 1].iter().map(|w| w.to_string()));
    }
    for path in &read {
        assert!(
            std::path::Path::new(path).exists(),
            "{path}: the build reads it, and it is not in the repository"
        );
        assert!(!excluded(path.trim_start_matches("./")), "{path} is left out of the Docker build");
    }
}

/// From the workspace's Cargo.toml: its members' folders, and the `path`s of the targets it
/// declares (cargo refuses a manifest whose declared target's file is missing).
fn workspace_manifest() -> (Vec<String>, Vec<String>) {
    use figment::providers::{Format, Toml};
    let manifest: Value = figment::Figment::from(Toml::file("Cargo.toml")).extract().unwrap();
    let members = manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let paths = ["bench", "test", "bin", "example"]
        .iter()
        .flat_map(|kind| manifest[*kind].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["path"].as_str().map(str::to_string))
        .collect();
    (members, paths)
}

/// Every file under `dir`, as a path from the repository's root.
fn files_under(dir: &str) -> Vec<String> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let path = path.to_str().unwrap().to_string();
        if std::path::Path::new(&path).is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

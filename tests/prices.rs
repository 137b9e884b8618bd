//! Prices read from the clouds' catalogs (`offload prices refresh`, and the gateway's own
//! refresh), against recorded answers of the Azure Retail Prices API, the AWS price list
//! and the Google Cloud Billing Catalog, served in their published shapes by a local
//! server (tests/prices/SOURCE.md says where each figure came from): each figure is read,
//! normalised by its unit and written with its source; the gateway's sheets use the file
//! over their defaults, a configured `price` still wins, and `GET /v1/providers` says where
//! each figure came from; a refresh that fails keeps the last good file and sheets and says
//! why; a malformed price file fails the start and the refresh, naming the key; without a
//! Google API key that catalog is skipped, and the refresh says so.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use offload::config::Config;
use serde_json::Value;

use common::{Gateway, TOKEN_A};

const GOOGLE_KEY: &str = "test-billing-api-key";

/// How the recorded catalogs misbehave.
#[derive(Clone, Copy, PartialEq)]
enum Broken {
    /// The Azure API answers 503.
    AzureDown,
    /// The Azure API's first item has its price as a string.
    AzureGarbled,
}

#[derive(Default)]
struct Shared {
    url: Mutex<String>,
    /// Each request's path and query, in order.
    requests: Mutex<Vec<String>>,
    broken: Mutex<Option<Broken>>,
}

/// The recorded catalogs on a local port.
struct Catalogs {
    url: String,
    shared: Arc<Shared>,
}

impl Catalogs {
    async fn start() -> Catalogs {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        *shared.url.lock().unwrap() = url.clone();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Catalogs { url, shared }
    }

    fn break_as(&self, broken: Option<Broken>) {
        *self.shared.broken.lock().unwrap() = broken;
    }

    fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

fn json(text: &str) -> Response {
    ([("content-type", "application/json")], text.to_string()).into_response()
}

/// The recorded answer to `uri`, as the catalog it names would give it.
async fn answer(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    shared.requests.lock().unwrap().push(uri.to_string());
    let broken = *shared.broken.lock().unwrap();
    match uri.path() {
        "/api/retail/prices" => {
            let filter = param("$filter");
            let page = match broken {
                Some(Broken::AzureDown) => {
                    return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
                }
                _ if filter.contains("'Container Instances'") && filter.contains("'eastus'") => {
                    match param("$skip").as_str() {
                        "" => include_str!("prices/azure-container-instances-eastus-page1.json"),
                        _ => include_str!("prices/azure-container-instances-eastus-page2.json"),
                    }
                }
                _ if filter.contains("'Azure Container Apps'")
                    && filter.contains("'westeurope'") =>
                {
                    include_str!("prices/azure-container-apps-westeurope.json")
                }
                _ => {
                    r#"{"BillingCurrency":"USD","CustomerEntityId":"Default","CustomerEntityType":"Retail","Items":[],"NextPageLink":null,"Count":0}"#
                }
            };
            let url = shared.url.lock().unwrap().clone();
            let mut page = page.replace("https://prices.azure.com:443", &url);
            if broken == Some(Broken::AzureGarbled) {
                page = page.replacen("\"retailPrice\": 0.0405", "\"retailPrice\": \"0.0405\"", 1);
            }
            json(&page)
        }
        "/offers/v1.0/aws/AmazonECS/current/region_index.json" => {
            json(include_str!("prices/aws-amazonecs-region-index.json"))
        }
        "/offers/v1.0/aws/AmazonECS/20261101000000/eu-central-1/index.json" => {
            json(include_str!("prices/aws-amazonecs-eu-central-1.json"))
        }
        path if path.starts_with("/v1/services/") => {
            if param("key") != GOOGLE_KEY {
                // Google's answer does not quote the key; this one does, to show that an
                // answer that did would not put it in an error.
                let message = format!(
                    "API key not valid ({}). Please pass a valid API key.",
                    param("key")
                );
                let body = serde_json::json!({"error": {"code": 400, "message": message,
                    "status": "INVALID_ARGUMENT"}});
                return (StatusCode::BAD_REQUEST, body.to_string()).into_response();
            }
            let first: Value =
                serde_json::from_str(include_str!("prices/google-cloud-run-skus-page1.json"))
                    .unwrap();
            match (path, param("pageToken")) {
                ("/v1/services/152E-C115-5142/skus", token) if token.is_empty() => {
                    json(include_str!("prices/google-cloud-run-skus-page1.json"))
                }
                ("/v1/services/152E-C115-5142/skus", token) if token == first["nextPageToken"] => {
                    json(include_str!("prices/google-cloud-run-skus-page2.json"))
                }
                ("/v1/services/CCD8-9BF1-090E/skus", _) => {
                    json(include_str!("prices/google-kubernetes-engine-skus.json"))
                }
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The `[prices]` section for `catalogs`, keeping the file in `dir`.
fn prices_section(catalogs: &Catalogs, dir: &std::path::Path, extra: &str) -> String {
    let url = &catalogs.url;
    format!(
        r#"
[prices]
file = "{}"
azure_url = "{url}"
aws_url = "{url}"
google_url = "{url}"
{extra}
"#,
        dir.join("prices.json").display()
    )
}

/// A provider of each kind whose prices are read, in the regions recorded.
const PROVIDERS: &str = r#"
[providers.aci]
kind = "aci"
subscription_id = "s"
resource_group = "g"
location = "eastus"
gpu_skus = ["V100"]
[providers.aca]
kind = "aca"
subscription_id = "s"
resource_group = "g"
location = "westeurope"
environment_id = "e"
gpu_profiles = [{ name = "t4", type = "Consumption-GPU-NC8as-T4" }]
[providers.fargate]
kind = "ecs"
cluster = "c"
subnets = ["subnet-1"]
region = "eu-central-1"
[providers.run]
kind = "cloudrun"
project = "p"
region = "us-central1"
[providers.gke]
kind = "kubernetes"
gke = { region = "asia-east1" }
"#;

fn config(catalogs: &Catalogs, dir: &std::path::Path, extra: &str) -> Config {
    Config::from_toml(&format!(
        "{}{PROVIDERS}",
        prices_section(catalogs, dir, extra)
    ))
    .unwrap()
}

fn with_key() -> String {
    format!("google_api_key = \"{GOOGLE_KEY}\"")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn a_refresh_reads_each_catalog_and_writes_each_figure_with_its_source() {
    let catalogs = Catalogs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&catalogs, dir.path(), &with_key());
    let refreshed = offload::prices::refresh(&config).await.unwrap();
    let figure = |kind: &str, region: &str, name: &str| {
        refreshed
            .figures
            .all()
            .find(|f| f.kind == kind && f.region == region && f.figure == name)
            .unwrap_or_else(|| panic!("no {kind} {region} {name}"))
            .clone()
    };
    let expected = [
        // Azure, per hour, per GB-hour, per 100 seconds (the second page), per second.
        ("aci", "eastus", "vcpu_hour", 0.0405),
        ("aci", "eastus", "gb_hour", 0.00445),
        ("aci", "eastus", "spot_vcpu_hour", 0.01215),
        ("aci", "eastus", "spot_gb_hour", 0.001335),
        ("aci", "eastus", "gpu_hour.V100", 0.085 * 36.0),
        ("aca", "westeurope", "vcpu_hour", 0.000034 * 3600.0),
        ("aca", "westeurope", "gb_hour", 0.000004 * 3600.0),
        (
            "aca",
            "westeurope",
            "gpu_hour.nvidia-tesla-t4",
            0.000088 * 3600.0,
        ),
        // AWS, per hour.
        ("ecs", "eu-central-1", "vcpu_hour", 0.04656),
        ("ecs", "eu-central-1", "gb_hour", 0.00511),
        // Google: Cloud Run per second (the memory on the second page), Autopilot per
        // mCPU-hour and GiB-hour.
        ("cloudrun", "us-central1", "vcpu_hour", 0.000018 * 3600.0),
        ("cloudrun", "us-central1", "gb_hour", 0.000002 * 3600.0),
        ("kubernetes", "asia-east1", "vcpu_hour", 0.0515),
        ("kubernetes", "asia-east1", "gb_hour", 0.0056998),
    ];
    for (kind, region, name, usd) in expected {
        let f = figure(kind, region, name);
        assert!(close(f.usd_per_hour, usd), "{kind} {region} {name}: {f:?}");
    }
    assert_eq!(refreshed.figures.all().count(), expected.len());
    let vcpu = figure("aci", "eastus", "vcpu_hour");
    assert_eq!(vcpu.source, "azure-retail-prices");
    assert!(
        vcpu.sku.starts_with("Standard vCPU Duration (SKU Standard"),
        "{}",
        vcpu.sku
    );
    assert_eq!(vcpu.quoted, "0.0405 USD per 1 Hour");
    assert_eq!(vcpu.effective, "2021-06-08T00:00:00Z");
    let fargate = figure("ecs", "eu-central-1", "vcpu_hour");
    assert_eq!(fargate.source, "aws-price-list");
    assert_eq!(
        fargate.sku,
        "B2RJ3SVDA6ZNPXQZ (EUC1-Fargate-vCPU-Hours:perCPU)"
    );
    assert_eq!(fargate.quoted, "0.0465600000 USD per hours");
    let autopilot = figure("kubernetes", "asia-east1", "vcpu_hour");
    assert_eq!(autopilot.source, "google-cloud-billing");
    assert_eq!(
        autopilot.sku,
        "6D3A-87E1-2B40 (Autopilot Pod mCPU Requests (asia-east1))"
    );
    assert_eq!(autopilot.effective, "2026-11-30T08:00:00.000Z");
    // What the catalogs do not give is said, and keeps its default.
    let notes = refreshed.notes.join("\n");
    for absent in [
        "\"K80 vGPU Duration\"",
        "\"Standard NC A100 v4 GPU Usage\"",
        "Fargate-ARM-vCPU-Hours:perCPU",
        "\"Autopilot Spot Pod mCPU Requests (asia-east1)\"",
    ] {
        assert!(notes.contains(absent), "{absent} not in {notes}");
    }
    // The file has what the refresh read.
    let path = dir.path().join("prices.json");
    assert_eq!(
        offload::prices::file::load(&path).unwrap(),
        refreshed.figures
    );
    // Paged answers were followed: Azure's NextPageLink and Google's nextPageToken.
    let requests = catalogs.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("%24skip=3") || r.contains("$skip=3")),
        "{requests:?}"
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.starts_with("/v1/services/152E-C115-5142/skus"))
            .count(),
        2
    );
}

#[tokio::test]
async fn without_a_google_key_that_catalog_is_skipped_and_said_and_its_figures_kept() {
    let catalogs = Catalogs::start().await;
    let dir = tempfile::tempdir().unwrap();
    offload::prices::refresh(&config(&catalogs, dir.path(), &with_key()))
        .await
        .unwrap();
    let before = catalogs.requests().len();
    let refreshed = offload::prices::refresh(&config(&catalogs, dir.path(), ""))
        .await
        .unwrap();
    let notes = refreshed.notes.join("\n");
    assert!(
        notes.contains("google-cloud-billing: skipped, no API key")
            && notes.contains("cloudrun in us-central1, kubernetes in asia-east1"),
        "{notes}"
    );
    let asked: Vec<String> = catalogs.requests()[before..].to_vec();
    assert!(
        asked.iter().all(|r| !r.starts_with("/v1/services/")),
        "{asked:?}"
    );
    // The figures the last keyed refresh read for Google's kinds are still there.
    let run = refreshed
        .figures
        .all()
        .find(|f| f.kind == "cloudrun" && f.figure == "vcpu_hour")
        .expect("Cloud Run's figure kept");
    assert_eq!(run.source, "google-cloud-billing");
    // With neither a key nor an earlier refresh, they are simply absent.
    let fresh = tempfile::tempdir().unwrap();
    let alone = offload::prices::refresh(&config(&catalogs, fresh.path(), ""))
        .await
        .unwrap();
    assert!(alone
        .figures
        .all()
        .all(|f| f.source != "google-cloud-billing"));
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_file_and_says_why() {
    let catalogs = Catalogs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&catalogs, dir.path(), &with_key());
    offload::prices::refresh(&config).await.unwrap();
    let path = dir.path().join("prices.json");
    let good = std::fs::read(&path).unwrap();

    catalogs.break_as(Some(Broken::AzureDown));
    let e = offload::prices::refresh(&config).await.err().unwrap();
    assert!(
        e.contains("azure-retail-prices") && e.contains("503"),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good);

    // An answer that is not in the catalog's shape names the key it could not read.
    catalogs.break_as(Some(Broken::AzureGarbled));
    let e = offload::prices::refresh(&config).await.err().unwrap();
    assert!(
        e.contains("azure-retail-prices") && e.contains("Items[0].retailPrice"),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good);

    // A wrong Google key is the catalog's refusal, said as it is.
    catalogs.break_as(None);
    let wrong = Config::from_toml(&format!(
        "{}{PROVIDERS}",
        prices_section(&catalogs, dir.path(), "google_api_key = \"AIza-wrong-key\"")
    ))
    .unwrap();
    let e = offload::prices::refresh(&wrong).await.err().unwrap();
    assert!(
        e.contains("google-cloud-billing") && e.contains("API key not valid"),
        "{e}"
    );
    assert!(!e.contains("AIza-wrong-key"), "the key is never shown: {e}");
    assert!(e.contains("(<the API key>)"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), good);
}

#[tokio::test]
async fn a_malformed_price_file_fails_the_start_and_the_refresh_naming_the_key() {
    let catalogs = Catalogs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&catalogs, dir.path(), &with_key());
    offload::prices::refresh(&config).await.unwrap();
    let path = dir.path().join("prices.json");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    file["figures"][2]["usd_per_hour"] = "cheap".into();
    std::fs::write(&path, file.to_string()).unwrap();

    let e = offload::prices::refresh(&config).await.err().unwrap();
    assert!(e.contains("figures[2].usd_per_hour"), "{e}");
    let mut serving = config.clone();
    serving.providers.retain(|name, _| name == "fargate");
    serving.store.path = dir.path().join("offload.db");
    let e = offload::server::Server::start(serving)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("figures[2].usd_per_hour") && e.contains("prices.json"),
        "{e}"
    );
}

/// Providers the gateway can build without their clouds (nothing is launched here): a
/// Container Instances one, an ECS one, and a simulator with a configured price, beside
/// the catalogs' `[prices]`.
fn gateway_providers(catalogs: &Catalogs, dir: &std::path::Path, extra: &str) -> String {
    format!(
        r#"{}
[providers.aci]
kind = "aci"
subscription_id = "s"
resource_group = "g"
location = "eastus"
gpu_skus = ["K80"]
endpoint = "http://127.0.0.1:9"
access_token = "t"
[providers.fargate]
kind = "ecs"
cluster = "c"
subnets = ["subnet-1"]
region = "eu-central-1"
endpoint_url = "http://127.0.0.1:9"
[providers.cheap]
kind = "sim"
price = {{ vcpu_hour = 0.01 }}
"#,
        prices_section(catalogs, dir, &format!("{}\n{extra}", with_key()))
    )
}

/// `GET /v1/providers` once the gateway's first price refresh has ended, well or not.
async fn after_refresh(gw: &Gateway) -> std::collections::BTreeMap<String, Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let listed = providers(gw).await;
        if listed.values().all(|p| !p["price_refresh"].is_null()) {
            return listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no price refresh ended: {listed:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `GET /v1/providers`, by name.
async fn providers(gw: &Gateway) -> std::collections::BTreeMap<String, Value> {
    let (status, list) = gw.get(TOKEN_A, "/v1/providers").await;
    assert_eq!(status, 200);
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
        .collect()
}

#[tokio::test]
async fn a_refresh_at_start_reprices_the_providers_and_a_configured_price_still_wins() {
    let catalogs = Catalogs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&gateway_providers(
        &catalogs,
        dir.path(),
        "refresh_at_start = true",
    ))
    .await;
    // The refresh runs once the gateway has started; wait for it.
    let listed = after_refresh(&gw).await;
    for (name, p) in &listed {
        assert_eq!(p["price_refresh"]["ok"], true, "{name}: {p}");
        assert!(p["price_refresh"].get("error").is_none(), "{name}: {p}");
    }
    let aci = &listed["aci"];
    assert!(
        close(aci["prices"]["vcpu_hour"].as_f64().unwrap(), 0.0405),
        "{aci}"
    );
    assert!(
        close(aci["prices"]["gb_hour"].as_f64().unwrap(), 0.00445),
        "{aci}"
    );
    assert_eq!(
        aci["price_sources"]["gb_hour"]["sku"]
            .as_str()
            .unwrap()
            .split(" (")
            .next(),
        Some("Standard Memory Duration")
    );
    assert_eq!(aci["price_sources"]["vcpu_hour"]["region"], "eastus");
    let fargate = &listed["fargate"];
    assert!(
        close(fargate["prices"]["vcpu_hour"].as_f64().unwrap(), 0.04656),
        "{fargate}"
    );
    assert_eq!(
        fargate["price_sources"]["vcpu_hour"]["source"],
        "aws-price-list"
    );
    // The sim's configured price is the config's, whatever was read.
    assert_eq!(
        listed["cheap"]["price_sources"]["vcpu_hour"]["source"],
        "config"
    );
    assert_eq!(listed["cheap"]["prices"]["vcpu_hour"], 0.01);
    // A quote uses the figures read: 1 CPU and 2 GiB on Fargate in Frankfurt for an hour
    // (ACI's figures read for East US are its defaults: they would not tell).
    let (status, quote) = {
        let r = gw
            .req(reqwest::Method::POST, "/v1/quotes", TOKEN_A)
            .json(&serde_json::json!({"image": "alpine", "provider": "fargate",
                "resources": {"cpu": 1, "memory": "2Gi"},
                "routing": {"expected_duration_seconds": 3600}}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{quote}");
    let hourly = quote["candidates"][0]["hourly_usd"].as_f64().unwrap();
    assert!(close(hourly, 0.04656 + 2.0 * 0.00511), "{quote}");
    // The file was written, and the refresh counted.
    let file = offload::prices::file::load(&dir.path().join("prices.json")).unwrap();
    assert!(file
        .all()
        .any(|f| f.kind == "aci" && f.figure == "vcpu_hour"));
    assert!(
        gw.metric("offload_price_refreshes_total{outcome=\"ok\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_gateway_starts_with_the_files_figures_and_a_failed_refresh_keeps_them() {
    let catalogs = Catalogs::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The last good file, from a refresh before the catalogs went down.
    let config = config(&catalogs, dir.path(), &with_key());
    offload::prices::refresh(&config).await.unwrap();
    let path = dir.path().join("prices.json");
    let good = std::fs::read(&path).unwrap();
    catalogs.break_as(Some(Broken::AzureDown));
    let gw = Gateway::start(&gateway_providers(
        &catalogs,
        dir.path(),
        "refresh_at_start = true",
    ))
    .await;
    let listed = after_refresh(&gw).await;
    // It failed, and says so beside each provider, which keeps the file's prices.
    for (name, p) in &listed {
        assert_eq!(p["price_refresh"]["ok"], false, "{name}: {p}");
        let error = p["price_refresh"]["error"].as_str().unwrap();
        assert!(
            error.contains("azure-retail-prices") && error.contains("503"),
            "{error}"
        );
    }
    assert_eq!(
        gw.metric("offload_price_refreshes_total{outcome=\"failed\"}")
            .await,
        1.0
    );
    // The dashboard says so too, and where the figures came from.
    let cookie = gw.dashboard_session(TOKEN_A).await;
    let page = gw
        .http
        .get(format!("{}/ui/providers", gw.url))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("failed, these are the last good prices"),
        "{page}"
    );
    assert!(
        page.contains("read from azure-retail-prices (gb_hour, vcpu_hour)"),
        "{page}"
    );
    assert!(page.contains("default (gpu_hour.K80)"), "{page}");
    let listed = providers(&gw).await;
    let aci = &listed["aci"];
    assert!(
        close(aci["prices"]["vcpu_hour"].as_f64().unwrap(), 0.0405),
        "{aci}"
    );
    assert_eq!(
        aci["price_sources"]["vcpu_hour"]["source"],
        "azure-retail-prices"
    );
    // A figure no catalog gave is the provider's default, and says so.
    assert_eq!(
        aci["price_sources"]["gpu_hour.K80"],
        serde_json::json!({"source": "default"})
    );
    assert_eq!(aci["prices"]["gpu_hour"]["K80"], 1.71);
    assert_eq!(std::fs::read(&path).unwrap(), good);
}

/// `offload prices refresh` as an operator runs it: the Google key from the environment,
/// the figures as a table and where they went; a failure exits 1 and says the file was
/// kept; the key shows nowhere.
#[tokio::test]
async fn the_refresh_command_prints_what_it_read_and_fails_keeping_the_file() {
    let catalogs = Catalogs::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("offload.toml");
    std::fs::write(
        &file,
        format!("{}{PROVIDERS}", prices_section(&catalogs, dir.path(), "")),
    )
    .unwrap();
    let run = || async {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_offload"))
            .args(["prices", "refresh", "--config"])
            .arg(&file)
            .env("OFFLOAD_PRICES__GOOGLE_API_KEY", GOOGLE_KEY)
            .env("NO_COLOR", "1")
            .output()
            .await
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, stdout, stderr) = run().await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let prices = dir.path().join("prices.json");
    assert!(
        stdout.contains(&format!("wrote 14 figures to {}", prices.display())),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("kubernetes  asia-east1") && l.contains(" vcpu_hour "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        row.contains("0.051500") && row.contains("google-cloud-billing"),
        "{row}"
    );
    // What was not read is said on stderr: a figure keeps its default.
    assert!(
        stderr.contains("\"K80 vGPU Duration\": gpu_hour.K80 keeps its default"),
        "{stderr}"
    );
    let good = std::fs::read(&prices).unwrap();

    catalogs.break_as(Some(Broken::AzureDown));
    let (code, stdout, stderr) = run().await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "the price refresh failed, {} is kept as it was",
            prices.display()
        )) && stderr.contains("503"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&prices).unwrap(), good);
    assert!(!stdout.contains(GOOGLE_KEY) && !stderr.contains(GOOGLE_KEY));
    // The key went to the catalog, and only there.
    assert!(catalogs
        .requests()
        .iter()
        .any(|r| r.contains(&format!("key={GOOGLE_KEY}"))));
}

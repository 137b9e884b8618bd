//! Routing and cost, through the HTTP API: which provider `auto` picks (feasibility, then
//! estimated cost with billing minimums, spot, allow/deny, price caps, speed), the 422 that
//! names each provider's reason, and `POST /v1/quotes`.

mod common;

use common::{Gateway, TOKEN_A};
use reqwest::Method;
use serde_json::{json, Value};

/// Five providers, in configured (name) order: `box` (local, dear), `cheap` (cheapest per
/// hour, but billed at least 10 minutes, at most 4 vCPUs), `fast` (twice the price, per
/// second), `gpu` (an L4, dearer still) and `spotty` (spot, between cheap and fast).
const PROVIDERS: &str = r#"
[providers.box]
kind = "local"
allow_several_tenants = true
workdir = "$DIR/local"
price = { vcpu_hour = 10.0 }
[providers.cheap]
kind = "sim"
start_ms = 0
run_ms = 60000
max_cpu = 4.0
max_concurrency = 4
poll_interval_ms = 50
price = { vcpu_hour = 1.0, min_billed_seconds = 600, billing_increment_seconds = 60 }
[providers.fast]
kind = "sim"
start_ms = 0
run_ms = 60000
poll_interval_ms = 50
price = { vcpu_hour = 2.0 }
[providers.gpu]
kind = "sim"
start_ms = 0
run_ms = 60000
poll_interval_ms = 50
gpu_kinds = ["nvidia-l4"]
price = { vcpu_hour = 3.0, gpu_hour = { "nvidia-l4" = 1.0 } }
[providers.spotty]
kind = "sim"
start_ms = 0
run_ms = 60000
poll_interval_ms = 50
spot = true
price = { vcpu_hour = 1.5 }
"#;

fn spec(routing: Value) -> Value {
    let mut s = json!({"image": "alpine", "command": ["true"], "resources": {"cpu": 1}});
    if !routing.is_null() {
        s["routing"] = routing;
    }
    s
}

async fn quote(gw: &Gateway, spec: Value) -> (u16, Value) {
    let r = gw
        .req(Method::POST, "/v1/quotes", TOKEN_A)
        .json(&spec)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn order(quote: &Value) -> Vec<String> {
    quote["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["provider"].as_str().unwrap().to_string())
        .collect()
}

fn reason<'a>(quote: &'a Value, provider: &str) -> &'a str {
    quote["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["provider"] == provider)
        .and_then(|e| e["reason"].as_str())
        .unwrap_or_else(|| panic!("{provider} not excluded: {quote}"))
}

/// Submits `spec` and waits until it is dispatched; the provider it went to.
async fn routed_to(gw: &Gateway, spec: Value) -> String {
    let (status, job) = gw.submit(TOKEN_A, spec).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let job = gw
        .wait_for(TOKEN_A, id, 20, "dispatched", |j| j["provider"].is_string())
        .await;
    job["provider"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_table_of_choices() {
    let gw = Gateway::start(PROVIDERS).await;
    let cases: Vec<(&str, Value, Value, &str)> = vec![
        (
            "default: 600 s, cheapest per job",
            json!({"cpu": 1}),
            Value::Null,
            "cheap",
        ),
        (
            "a short job: cheap's 10-minute minimum loses to per-second billing",
            json!({"cpu": 1}),
            json!({"expected_duration_seconds": 60}),
            "fast",
        ),
        ("too big for cheap", json!({"cpu": 8}), Value::Null, "fast"),
        (
            "GPU work goes where the GPU is",
            json!({"cpu": 1, "gpu": {"count": 1, "kind": "nvidia-l4"}}),
            Value::Null,
            "gpu",
        ),
        (
            "spot allowed and cheapest",
            json!({"cpu": 1}),
            json!({"spot": "allowed", "expected_duration_seconds": 60}),
            "spotty",
        ),
        (
            "spot allowed but dearer",
            json!({"cpu": 1}),
            json!({"spot": "allowed"}),
            "cheap",
        ),
        (
            "spot preferred though dearer",
            json!({"cpu": 1}),
            json!({"spot": "preferred"}),
            "spotty",
        ),
        (
            "allow by name",
            json!({"cpu": 1}),
            json!({"allow": ["gpu"]}),
            "gpu",
        ),
        (
            "allow by kind",
            json!({"cpu": 1}),
            json!({"allow": ["local"]}),
            "box",
        ),
        (
            "deny by name",
            json!({"cpu": 1}),
            json!({"deny": ["cheap"]}),
            "fast",
        ),
        (
            "deny by kind",
            json!({"cpu": 1}),
            json!({"deny": ["sim"]}),
            "box",
        ),
        (
            "a price cap leaves the cheap one even for a short job",
            json!({"cpu": 1}),
            json!({"max_hourly_usd": 1.2, "expected_duration_seconds": 60}),
            "cheap",
        ),
    ];
    for (what, resources, routing, expected) in cases {
        let mut s = spec(routing);
        s["resources"] = resources;
        let (status, q) = quote(&gw, s.clone()).await;
        assert_eq!(status, 200, "{what}: {q}");
        assert_eq!(order(&q)[0], expected, "{what}: {q}");
        assert_eq!(routed_to(&gw, s).await, expected, "{what}");
    }
}

#[tokio::test]
async fn quotes_best_first_with_estimates_and_the_excluded() {
    let gw = Gateway::start(PROVIDERS).await;
    let (status, q) = quote(&gw, spec(Value::Null)).await;
    assert_eq!(status, 200, "{q}");
    assert_eq!(order(&q), ["cheap", "fast", "gpu", "box"], "{q}");
    let first = &q["candidates"][0];
    assert_eq!(
        (
            first["kind"].as_str(),
            first["spot"].as_bool(),
            first["billed_seconds"].as_u64()
        ),
        (Some("sim"), Some(false), Some(600))
    );
    assert!(
        (first["hourly_usd"].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "{q}"
    );
    assert!(
        (first["estimated_usd"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-9,
        "{q}"
    );
    assert!(reason(&q, "spotty").contains("spot"), "{q}");
    assert_eq!(q["excluded"].as_array().unwrap().len(), 1, "{q}");

    // A short job: the minimum and the increment round cheap's 61 s up to 600 s.
    let (_, q) = quote(&gw, spec(json!({"expected_duration_seconds": 61}))).await;
    assert_eq!(order(&q), ["fast", "gpu", "cheap", "box"], "{q}");
    let cheap = q["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "cheap")
        .unwrap();
    assert_eq!(cheap["billed_seconds"], 600);
    assert_eq!(q["candidates"][0]["billed_seconds"], 61);

    let (_, q) = quote(&gw, spec(json!({"max_hourly_usd": 2.5, "deny": ["box"]}))).await;
    assert_eq!(order(&q), ["cheap", "fast"], "{q}");
    assert!(reason(&q, "gpu").contains("max_hourly_usd"), "{q}");
    assert!(reason(&q, "box").contains("routing.deny"), "{q}");

    // A quote creates nothing, and needs a token.
    let (_, jobs) = gw.get(TOKEN_A, "/v1/jobs").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");
    let r = gw
        .http
        .post(format!("{}/v1/quotes", gw.url))
        .json(&spec(Value::Null))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn no_feasible_provider_is_a_422_naming_each_reason() {
    let gw = Gateway::start(PROVIDERS).await;
    let mut s = spec(json!({"allow": ["cheap", "spotty"]}));
    s["resources"]["cpu"] = json!(8);
    for (status, p) in [gw.submit(TOKEN_A, s.clone()).await, quote(&gw, s).await] {
        assert_eq!(status, 422, "{p}");
        let errors = p["errors"].as_array().unwrap();
        let by: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e["field"].as_str().unwrap(), e["message"].as_str().unwrap()))
            .collect();
        assert_eq!(by.len(), 5, "{p}");
        for ((field, message), name) in by.iter().zip(["box", "cheap", "fast", "gpu", "spotty"]) {
            assert_eq!(*field, "provider");
            assert!(
                message.starts_with(&format!("{name} cannot run this job: ")),
                "{message}"
            );
        }
        assert!(by[0].1.contains("routing.allow"), "{p}");
        assert!(by[1].1.contains("cpu 8 exceeds"), "{p}");
        assert!(by[4].1.contains("spot"), "{p}");
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains("cheap cannot run this job"),
            "{p}"
        );
    }

    // Named providers: the routing block still applies.
    for (routing, provider, why) in [
        (Value::Null, "spotty", "spot"),
        (json!({"max_hourly_usd": 1.0}), "fast", "max_hourly_usd"),
        (json!({"deny": ["sim"]}), "fast", "routing.deny"),
        (json!({"allow": ["cheap"]}), "fast", "routing.allow"),
    ] {
        let mut s = spec(routing);
        s["provider"] = json!(provider);
        let (status, p) = gw.submit(TOKEN_A, s).await;
        assert_eq!(status, 422, "{p}");
        assert_eq!(p["errors"].as_array().unwrap().len(), 1, "{p}");
        assert_eq!(p["errors"][0]["field"], "provider", "{p}");
        assert!(
            p["errors"][0]["message"].as_str().unwrap().contains(why),
            "{p}"
        );
    }
    let mut s = spec(json!({"spot": "allowed"}));
    s["provider"] = json!("spotty");
    assert_eq!(routed_to(&gw, s).await, "spotty");

    // Bad routing fields are named.
    for (routing, field) in [
        (json!({"allow": ["mars"]}), "routing.allow[0]"),
        (json!({"deny": ["sim", "Bad Name"]}), "routing.deny[1]"),
        (json!({"max_hourly_usd": 0}), "routing.max_hourly_usd"),
        (
            json!({"expected_duration_seconds": 0}),
            "routing.expected_duration_seconds",
        ),
        (
            json!({"expected_duration_seconds": 604801}),
            "routing.expected_duration_seconds",
        ),
    ] {
        let (status, p) = gw.submit(TOKEN_A, spec(routing.clone())).await;
        assert_eq!(
            (status, p["errors"][0]["field"].as_str()),
            (422, Some(field)),
            "{routing}: {p}"
        );
    }
    for bad in [
        json!({"prefer": "price"}),
        json!({"spot": "sometimes"}),
        json!({"colour": "red"}),
    ] {
        let (status, p) = gw.submit(TOKEN_A, spec(bad.clone())).await;
        assert_eq!(status, 422, "{bad}: {p}");
    }
}

/// Submits `spec` and waits until it runs; the provider it went to.
async fn running_at(gw: &Gateway, spec: Value) -> String {
    let (status, job) = gw.submit(TOKEN_A, spec).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let job = gw
        .wait_for(TOKEN_A, id, 20, "running", |j| j["state"] == "running")
        .await;
    job["provider"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn speed_prefers_the_quickest_start_learned_from_recent_starts() {
    let gw = Gateway::start(
        r#"
[providers.slow]
kind = "sim"
start_ms = 1600
run_ms = 60000
poll_interval_ms = 50
price = { vcpu_hour = 1.0 }
[providers.quick]
kind = "sim"
start_ms = 0
run_ms = 60000
max_concurrency = 2
poll_interval_ms = 50
price = { vcpu_hour = 2.0 }
"#,
    )
    .await;
    let speedy = || spec(json!({"prefer": "speed"}));
    // Nothing measured yet: a tie on start latency, which cost breaks.
    let (_, q) = quote(&gw, speedy()).await;
    assert_eq!(order(&q), ["slow", "quick"], "{q}");
    for name in ["slow", "quick"] {
        let mut s = spec(Value::Null);
        s["provider"] = json!(name);
        assert_eq!(running_at(&gw, s).await, name);
    }
    let (_, providers) = gw.get(TOKEN_A, "/v1/providers").await;
    let latency = |name: &str| {
        providers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["start_latency_ms"].as_u64())
            .unwrap_or_else(|| panic!("no start latency for {name}: {providers}"))
    };
    assert!(latency("slow") >= 1600, "{providers}");
    assert!(latency("quick") < 1000, "{providers}");
    // Learned: speed takes quick, cost still takes slow.
    let (_, q) = quote(&gw, speedy()).await;
    assert_eq!(order(&q), ["quick", "slow"], "{q}");
    let (_, q) = quote(&gw, spec(Value::Null)).await;
    assert_eq!(order(&q), ["slow", "quick"], "{q}");
    assert_eq!(running_at(&gw, speedy()).await, "quick");
    // quick is full now (2 of 2): however fast it starts, slow starts sooner.
    let (_, q) = quote(&gw, speedy()).await;
    assert_eq!(order(&q), ["slow", "quick"], "{q}");
}

#[tokio::test]
async fn configured_defaults_for_spot_and_duration() {
    let gw = Gateway::start(&format!(
        "{PROVIDERS}\n[routing]\ndefault_spot = \"allowed\"\ndefault_duration_seconds = 60\n"
    ))
    .await;
    // 60 s: spotty (1.5/h, per second) beats fast (2/h) and gpu (3/h); cheap, billed 10
    // minutes, comes last (after box, which costs the same but has more free places).
    let (_, q) = quote(&gw, spec(Value::Null)).await;
    assert_eq!(order(&q), ["spotty", "fast", "gpu", "box", "cheap"], "{q}");
    assert_eq!(q["candidates"][0]["billed_seconds"], 60);
    // The spec's own choice wins over the defaults.
    let (_, q) = quote(
        &gw,
        spec(json!({"spot": "never", "expected_duration_seconds": 600})),
    )
    .await;
    assert_eq!(order(&q)[0], "cheap", "{q}");
    assert!(reason(&q, "spotty").contains("spot"), "{q}");
}

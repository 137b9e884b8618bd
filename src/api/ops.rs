//! The endpoints for operators and machines: liveness, readiness, Prometheus metrics,
//! the providers, and the OpenAPI document. Only `/v1/providers` needs a token.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::auth::Tenant;
use super::error::ApiError;
use super::AppState;
use crate::model::{JobState, ProviderInfo};
use crate::store::StoreResult;

const LATENCY: &str = "offload_http_request_duration_seconds";

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &buckets)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (in tests); ours then only renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The methods the latency metric names; any other is counted as "other", so that a
/// client cannot add a series by inventing a method.
static METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::CONNECT,
    Method::TRACE,
];

/// Records each request's latency by method, route and status: every label from a fixed
/// set (routes are the router's templates, "unmatched" for the rest).
pub async fn track_latency(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = METHODS
        .iter()
        .find(|m| *m == req.method())
        .map_or("other", |m| m.as_str());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    crate::telemetry::name_current_span(|| format!("{method} {route}"));
    let response = next.run(req).await;
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::histogram!(LATENCY, &labels).record(started.elapsed().as_secs_f64());
    response
}

#[utoipa::path(
    get, path = "/healthz", tag = "ops",
    summary = "Liveness",
    description = "Answers while the process serves, whatever the store's state: for a liveness probe. No token.",
    responses((status = 200, description = "The process is up", body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    summary = "Readiness",
    description = "200 while the store answers, 503 while it does not: for a readiness probe and a load balancer. No token.",
    responses((status = 200, description = "The store answers: `ready`, and with several replicas `ready as replica ID`", body = String), (status = 503, description = "The store does not answer"))
)]
pub async fn readyz(State(state): State<AppState>) -> Result<String, ApiError> {
    state.store.ping().await?;
    Ok(match state.store.replica() {
        Some(id) => format!("ready as replica {id}\n"),
        None => "ready\n".into(),
    })
}

#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    summary = "Metrics",
    description = "The gateway's metrics in the Prometheus text format: jobs by state, dispatch and provider calls, spend, budgets, requests. No token.",
    responses((status = 200, description = "Prometheus text format", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // While the store does not answer, the process's own metrics (its store errors among
    // them) still do; the store's gauges keep their last values.
    if let Err(e) = store_gauges(&state).await {
        tracing::warn!(error = %e, "/metrics: the store did not answer; its gauges keep their last values");
    }
    for (map, n) in state.engine.entries() {
        metrics::gauge!("offload_engine_entries", "map" => map).set(n as f64);
    }
    for p in state.engine.providers() {
        let healthy = if p.healthy { 1.0 } else { 0.0 };
        metrics::gauge!("offload_provider_healthy", "provider" => p.name).set(healthy);
    }
    let body = prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The gauges read from the store: `offload_jobs` by provider and state, and
/// `offload_oldest_queued_seconds`, how long the oldest job this replica holds queued
/// (waiting for its dispatch or for a place at its provider) has waited since its submit.
async fn store_gauges(state: &AppState) -> StoreResult<()> {
    let counts = state.store.counts().await?;
    let mut providers: Vec<String> = state
        .engine
        .slots()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    providers.push(String::new());
    for provider in &providers {
        for job_state in JobState::ALL {
            let n = counts
                .iter()
                .find(|(p, s, _)| p == provider && *s == job_state)
                .map_or(0, |c| c.2);
            let labels = [
                ("provider", provider.clone()),
                ("state", job_state.as_str().to_string()),
            ];
            metrics::gauge!("offload_jobs", &labels).set(n as f64);
        }
    }
    let now = chrono::Utc::now();
    let oldest = match state.store.queued(now, 1).await?.pop() {
        // Gone between the two reads (dispatched, or purged): 0, as for none.
        Some(id) => state.store.get(id).await?.map(|rec| rec.job.created_at),
        None => None,
    };
    let waited = oldest.map_or(0.0, |at| (now - at).num_milliseconds().max(0) as f64 / 1000.0);
    metrics::gauge!("offload_oldest_queued_seconds").set(waited);
    Ok(())
}

#[utoipa::path(
    get, path = "/v1/providers", tag = "providers",
    summary = "List providers",
    description = "Each configured provider: its kind, health, load and queue, start latency, capabilities, prices and where each price came from, and the calls made to it.",
    responses((status = 200, body = Vec<ProviderInfo>)),
    security(("bearer" = []))
)]
pub async fn providers(State(state): State<AppState>, _tenant: Tenant) -> Json<Vec<ProviderInfo>> {
    Json(state.engine.providers())
}

pub async fn openapi_json(State(state): State<AppState>) -> Response {
    (StatusCode::OK, Json(super::doc::served(&state.engine))).into_response()
}

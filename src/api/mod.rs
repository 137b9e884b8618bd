//! The HTTP API (axum): routes, auth, body parsing, errors, and the OpenAPI document.

pub(crate) mod auth;
pub(crate) mod body;
mod budgets;
mod changes;
mod deadline;
pub mod doc;
pub(crate) mod error;
mod failures;
pub(crate) mod jobs;
pub(crate) mod listing;
mod marks;
pub(crate) mod ops;
pub mod request_id;
pub mod tokens_file;
mod ui;
mod waiters;

pub use auth::Tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use tokio_util::sync::CancellationToken;

use crate::config::{AuthConfig, HttpConfig};
use crate::engine::Engine;
use crate::store::snapshots::Snapshots;
use crate::store::Store;
pub use ops::prometheus;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Each job's status answer, for plain reads (`store` is this, as a [`Store`]).
    pub snapshots: Arc<Snapshots>,
    pub engine: Arc<Engine>,
    /// The accepted bearer tokens, which `auth.tokens_file` may replace while serving.
    tokens: Arc<Tokens>,
    /// Failed authentications per client address (`auth.failures_per_minute`).
    failures: Arc<failures::Failures>,
    /// The dashboard's sessions.
    sessions: Arc<ui::sessions::Sessions>,
    /// Cancelled when the server starts to shut down: long-polls answer and log followers
    /// close at once, so that shutdown fits in a pod's grace period.
    pub draining: CancellationToken,
    waiters: Arc<waiters::Waiters>,
    /// The TES API's settings.
    pub tes: Arc<crate::config::TesConfig>,
}

impl AppState {
    pub fn new(
        snapshots: Arc<Snapshots>,
        engine: Arc<Engine>,
        tokens: Arc<Tokens>,
        auth: &AuthConfig,
        draining: CancellationToken,
        max_waiters_per_tenant: usize,
        tes: crate::config::TesConfig,
    ) -> Self {
        AppState {
            store: snapshots.clone(),
            snapshots,
            engine,
            tokens,
            failures: Arc::new(failures::Failures::new(auth.failures_per_minute)),
            sessions: Arc::new(ui::sessions::Sessions::new(Duration::from_secs(
                auth.session_seconds,
            ))),
            draining,
            waiters: Arc::new(waiters::Waiters::new(max_waiters_per_tenant)),
            tes: Arc::new(tes),
        }
    }
}

pub fn router(state: AppState, http: &HttpConfig, body_limit: usize) -> Router {
    prometheus();
    Router::new()
        .route("/v1/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/quotes", post(jobs::quote))
        .route("/v1/costs", get(jobs::costs))
        .route("/v1/changes", get(changes::changes))
        .route(
            "/v1/budgets",
            get(budgets::list).put(budgets::put).delete(budgets::delete),
        )
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/v1/jobs/{id}/logs", get(jobs::job_logs))
        .route("/v1/jobs/{id}/events", get(jobs::job_events))
        .route("/v1/providers", get(ops::providers))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi_json))
        .nest("/ga4gh/tes/v1", crate::tes::router())
        .fallback(|| async { error::ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(error::problems_only))
        // The dashboard's pages answer in HTML, errors too.
        .merge(ui::router())
        .layer(axum::middleware::from_fn(ops::track_latency))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            deadline::BodyLimits {
                deadline: Duration::from_secs(http.body_timeout_seconds),
                max_bytes: body_limit,
            },
            deadline::read_whole_body,
        ))
        // Outermost, so that every answer and every line logged on the way has the id.
        .layer(axum::middleware::from_fn(request_id::tag))
        .with_state(state)
}

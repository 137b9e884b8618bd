//! What every fake ARM server in the tests does as ARM does for every call, whichever
//! resource provider it fakes: it checks the bearer token and the api-version, answers 429
//! with Retry-After when a test asks, keeps a read bucket like the subscription's (250,
//! refilled at 25 per second; an empty bucket answers 429) and sends
//! `x-ms-ratelimit-remaining-subscription-reads` from it, and records every request.
//! Errors have ARM's shape: `{"error": {"code", "message"}}`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The bearer token the fakes accept.
pub const TOKEN: &str = "fake-arm-token";

/// One request as the fake saw it: method, path and query, JSON body.
pub type Recorded = (String, String, Option<Value>);

struct Ledger {
    api_version: &'static str,
    throttle: u32,
    retry_after: u64,
    read_budget: f64,
    refilled_at: Option<Instant>,
    over_budget: u32,
    requests: Vec<Recorded>,
}

/// ARM's gate in front of a fake's routes.
#[derive(Clone)]
pub struct Gate(Arc<Mutex<Ledger>>);

pub fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

impl Gate {
    /// A gate that takes only `api_version`.
    pub fn new(api_version: &'static str) -> Gate {
        Gate(Arc::new(Mutex::new(Ledger {
            api_version,
            throttle: 0,
            retry_after: 0,
            read_budget: 250.0,
            refilled_at: None,
            over_budget: 0,
            requests: vec![],
        })))
    }

    /// `router` behind this gate.
    pub fn guard<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router.layer(middleware::from_fn_with_state(self.clone(), gate))
    }

    /// The next `times` requests get 429 with `Retry-After: seconds`.
    pub fn throttle(&self, times: u32, seconds: u64) {
        let mut ledger = self.0.lock().unwrap();
        ledger.throttle = times;
        ledger.retry_after = seconds;
    }

    /// Reads ARM would have refused with 429 because the subscription's bucket was empty.
    pub fn over_budget(&self) -> u32 {
        self.0.lock().unwrap().over_budget
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().requests.clone()
    }
}

async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let uri = request.uri().clone();
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let (throttled, remaining, api_version) = {
        let mut ledger = gate.0.lock().unwrap();
        ledger.requests.push((
            method.clone(),
            uri.to_string(),
            serde_json::from_slice(&bytes).ok(),
        ));
        let now = Instant::now();
        let since = ledger
            .refilled_at
            .map_or(f64::INFINITY, |t| (now - t).as_secs_f64());
        ledger.read_budget = (ledger.read_budget + 25.0 * since).min(250.0);
        ledger.refilled_at = Some(now);
        let mut throttled = (ledger.throttle > 0).then(|| {
            ledger.throttle -= 1;
            ledger.retry_after
        });
        if method == "GET" && throttled.is_none() {
            if ledger.read_budget < 1.0 {
                ledger.over_budget += 1;
                throttled = Some(1);
            } else {
                ledger.read_budget -= 1.0;
            }
        }
        (
            throttled,
            ledger.read_budget.floor() as u64,
            ledger.api_version,
        )
    };
    let bearer = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {TOKEN}")) {
        return arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        );
    }
    let version = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("api-version="));
    if version != Some(api_version) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            "The api-version is invalid.",
        );
    }
    if let Some(seconds) = throttled {
        let mut response = arm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The request is being throttled.",
        );
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
        return response;
    }
    let mut response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    response.headers_mut().insert(
        "x-ms-ratelimit-remaining-subscription-reads",
        HeaderValue::from(remaining),
    );
    response
}

//! What every fake ARM server in the tests does as ARM does for every call, whichever
//! resource provider it fakes: it checks the bearer token and the api-version, answers 429
//! with Retry-After when a test asks, keeps a read bucket like the subscription's (250,
//! refilled at 25 per second; an empty bucket answers 429) and sends
//! `x-ms-ratelimit-remaining-subscription-reads` from it, and records every request.
//! Errors have ARM's shape: `{"error": {"code", "message"}}`.
//!
//! A create that must not replace sends `If-None-Match: *`, and ARM answers 412
//! `PreconditionFailed` when the resource exists ([`create_only`], [`precondition_failed`]);
//! each fake's PUT honours it.
//!
//! The faults a test injects ([`Gate::fault`]) are what a network and a busy service do to
//! a request: an answer lost after the service carried the request out (a proxy cutting
//! the connection), an answer that never comes, an error answer. A lost answer closes the
//! connection without a byte of it, which only a server that owns its connections can do:
//! serve the fake with [`serve`].

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The bearer token the fakes accept.
pub const TOKEN: &str = "fake-arm-token";

/// One request as the fake saw it: method, path and query, JSON body.
pub type Recorded = (String, String, Option<Value>);

/// What happens to a request a test picked out.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Carried out, and then the connection is closed without an answer.
    Drop,
    /// Neither carried out nor answered: the connection is held until the client gives up.
    Hang,
    /// Not carried out: answered with this status and ARM error code.
    Refuse(StatusCode, &'static str),
}

struct Rule {
    method: &'static str,
    suffix: String,
    times: u32,
    fault: Fault,
}

struct Ledger {
    api_version: &'static str,
    faults: Vec<Rule>,
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
            faults: vec![],
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

    /// The next `times` requests with this method whose path ends with `suffix` meet
    /// `fault` (after the token, api-version and throttling checks, as a request that got
    /// through ARM's front door).
    pub fn fault(&self, method: &'static str, suffix: &str, times: u32, fault: Fault) {
        self.0.lock().unwrap().faults.push(Rule {
            method,
            suffix: suffix.to_string(),
            times,
            fault,
        });
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
    let fault = {
        let mut ledger = gate.0.lock().unwrap();
        let rule = ledger
            .faults
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && uri.path().ends_with(&r.suffix));
        rule.map(|r| {
            r.times -= 1;
            r.fault
        })
    };
    match fault {
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::Refuse(status, code)) => {
            return arm_error(status, code, "The request failed; try again later.")
        }
        Some(Fault::Drop) | None => {}
    }
    let mut response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    if matches!(fault, Some(Fault::Drop)) {
        response.extensions_mut().insert(Dropped);
    }
    response.headers_mut().insert(
        "x-ms-ratelimit-remaining-subscription-reads",
        HeaderValue::from(remaining),
    );
    response
}

/// Whether a PUT asks to create only (`If-None-Match: *`).
pub fn create_only(headers: &HeaderMap) -> bool {
    headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "*")
}

/// ARM's answer to a create-only PUT of a resource that exists.
pub fn precondition_failed(resource: &str) -> Response {
    arm_error(
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailed",
        &format!("The resource '{resource}' already exists: the If-None-Match condition failed."),
    )
}

/// The mark of an answer the fault [`Fault::Drop`] loses.
#[derive(Clone, Copy, Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the answer was dropped")
    }
}

impl std::error::Error for Dropped {}

/// Serves `app` on `listener` as `axum::serve` does, except that an answer marked lost
/// ([`Fault::Drop`]) is not sent: its connection is closed instead, so the client sees the
/// connection end before any answer, as when a proxy cuts it.
pub fn serve(listener: tokio::net::TcpListener, app: Router) -> tokio::task::JoinHandle<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower::ServiceExt;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let app = app.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let app = app.clone();
                        async move {
                            let response = app
                                .oneshot(request.map(axum::body::Body::new))
                                .await
                                .unwrap_or_else(|never| match never {});
                            match response.extensions().get::<Dropped>() {
                                Some(dropped) => Err(*dropped),
                                None => Ok(response),
                            }
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

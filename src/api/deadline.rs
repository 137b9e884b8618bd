//! Reads each request's body in full before its handler, within a total deadline and the
//! size limit. A deadline between chunks (tower-http's body timeout) lets a client that
//! sends a byte every few seconds hold a request, and its connection, for as long as it
//! likes; here the whole body must arrive within `http.body_timeout_seconds` of the
//! headers. Past the deadline the answer is 408, past the limit 413, both problems, on
//! every route (the dashboard's forms too). Bodies are small JSON or forms, so holding one
//! whole costs what the extractors did anyway.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::error::ApiError;

/// The body's deadline and size limit.
#[derive(Clone, Copy)]
pub struct BodyLimits {
    pub deadline: Duration,
    pub max_bytes: usize,
}

pub async fn read_whole_body(
    State(limits): State<BodyLimits>,
    req: Request,
    next: Next,
) -> Response {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than the configured limit",
        )
        .into_response()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, limits.max_bytes);
    let bytes = match tokio::time::timeout(limits.deadline, limited.collect()).await {
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} seconds",
                    limits.deadline.as_secs()
                ),
            )
            .into_response()
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body could not be read: {e}"),
            )
            .into_response()
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

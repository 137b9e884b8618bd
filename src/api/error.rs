//! RFC 9457 problem details: every error the API returns, with the fields at fault.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::FieldError;
use crate::store::StoreError;

/// An `application/problem+json` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request fields at fault, when there are any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// This occurrence: `urn:offload:request:` and the request's id, as answered in
    /// `X-Request-Id` and logged as `request_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    errors: Vec<FieldError>,
    /// Seconds to send as Retry-After.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            errors: vec![],
            retry_after: None,
        }
    }

    /// 429: the client holds too much at once; it may retry after a second.
    pub fn too_many(detail: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, detail)
        }
    }

    /// 429: the client has failed to authenticate too often; it may retry after `wait`.
    pub fn too_many_failures(wait: std::time::Duration) -> Self {
        ApiError {
            retry_after: Some(wait.as_secs() + 1),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentications from this address; retry later",
            )
        }
    }

    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: format!("invalid fields: {}", fields.join(", ")),
            errors,
            retry_after: None,
        }
    }

    /// 422: the spec is valid but no configured provider can run it; `errors` has each
    /// provider's reason (or the fields at fault).
    pub fn unroutable(errors: Vec<FieldError>) -> Self {
        let why: Vec<_> = errors
            .iter()
            .map(|e| match e.field.as_str() {
                "provider" => e.message.clone(),
                field => format!("{field}: {}", e.message),
            })
            .collect();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: format!(
                "no configured provider can run this job: {}",
                why.join("; ")
            ),
            errors,
            retry_after: None,
        }
    }

    pub fn field(status: StatusCode, error: FieldError) -> Self {
        ApiError {
            status,
            detail: format!("{}: {}", error.field, error.message),
            errors: vec![error],
            retry_after: None,
        }
    }

    /// 422 or 429 (with Retry-After): a budget refuses the job.
    pub fn budget(refusal: crate::engine::budgets::Refusal) -> Self {
        let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        ApiError {
            retry_after: refusal.retry_after,
            ..ApiError::new(status, refusal.detail)
        }
    }

    /// The same problem with another status (TES answers a 400 where `/v1` answers 422).
    pub fn with_status(self, status: StatusCode) -> Self {
        ApiError { status, ..self }
    }

    /// The same problem with each field renamed by `rename` (in `errors` and in `detail`).
    pub fn map_fields(mut self, rename: impl Fn(&str) -> String) -> Self {
        for e in &mut self.errors {
            let renamed = rename(&e.field);
            self.detail = self.detail.replace(&e.field, &renamed);
            e.field = renamed;
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Refused(why) = &e {
            // Sent again it would fail again: not the 503 that asks for a retry.
            tracing::warn!(error = %e, "the store refused a request's write");
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the job store cannot hold this request: {why}"),
            );
        }
        tracing::error!(error = %e, "store error");
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the job store is unavailable; retry later",
            )
        }
    }
}

/// Makes every error answer a problem: axum's own (a wrong method, a query it could not
/// parse) come as plain text, and clients parse one error format, not two. Headers such
/// as `Allow` stay.
pub async fn problems_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        t => t.to_string(),
    };
    let mut problem = ApiError::new(status, detail).into_response();
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(n, _)| *n != header::CONTENT_TYPE && *n != header::CONTENT_LENGTH)
    {
        problem.headers_mut().insert(name.clone(), value.clone());
    }
    problem
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("Error").into(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
            instance: super::request_id::current().map(|id| format!("urn:offload:request:{id}")),
        };
        let body = serde_json::to_vec(&problem).expect("problems serialise");
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

//! A request id for every request, so that one request's answer, its problem details and
//! the log lines it caused can be found together: the client's `X-Request-Id` when it sent
//! a usable one, else the trace id of its W3C `traceparent`, else a new one. It is answered
//! in `X-Request-Id`, is the `instance` of any problem (`urn:offload:request:ID`), and is
//! the `request_id` of every log line written while the request is handled.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The middleware: names the request, handles it inside a `request` span, answers the id.
pub async fn tag(req: Request, next: Next) -> Response {
    let id = sent(req.headers()).unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    // `otel.*` are for the traces, which name the span for its route once routing has
    // found it (`ops::track_latency`).
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = req.uri().path(),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if crate::telemetry::enabled() {
        crate::telemetry::continue_trace(&span, req.headers());
    }
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(req).instrument(span.clone()))
        .await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    // `sent` and the uuid only give header-safe characters.
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// The id the client sent: `X-Request-Id` of 1 to 128 letters, digits and `-._~`, else the
/// trace id of a well-formed `traceparent`.
fn sent(headers: &HeaderMap) -> Option<String> {
    let usable = |id: &str| {
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    };
    if let Some(id) = headers.get(HEADER).and_then(|v| v.to_str().ok()) {
        if usable(id) {
            return Some(id.to_string());
        }
    }
    trace_id(headers.get("traceparent")?.to_str().ok()?)
}

/// The trace id of a W3C `traceparent` (`00-TRACEID-PARENTID-FLAGS`), if well formed and
/// not all zeros.
pub fn trace_id(traceparent: &str) -> Option<String> {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [version, trace, parent, flags]
            if hex(version, 2)
                && *version != "ff"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0') =>
        {
            Some(trace.to_ascii_lowercase())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_clients_id_then_the_trace_id_then_none() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(sent(&headers(&[(HEADER, "abc-1.2_3~")])).as_deref(), Some("abc-1.2_3~"));
        assert_eq!(
            sent(&headers(&[(HEADER, "a b"), ("traceparent", tp)])).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(sent(&headers(&[(HEADER, &"x".repeat(129))])), None);
        assert_eq!(sent(&headers(&[("traceparent", "00-abc-def-01")])), None);
        let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert_eq!(sent(&headers(&[("traceparent", zeros)])), None);
        assert_eq!(sent(&HeaderMap::new()), None);
    }
}

//! What the gateway tells its operators about itself, read as their tools read it: the log
//! as JSON lines piped to a parser, and the request id that ties an answer, its problem
//! details and its log lines together.

mod common;

use common::{config_text, free_port, wait_ready, Binary, TOKEN_A};
use serde_json::{json, Value};

const SIM: &str = "[providers.sim]\nkind = \"sim\"\n";

/// A real `offload serve` on `extra` config, logging at `filter`; its log's path.
async fn serve(dir: &std::path::Path, extra: &str, filter: &str) -> (Binary, String, std::path::PathBuf) {
    let port = free_port();
    let config = dir.join("offload.toml");
    let text = format!("{}\n{extra}\n", config_text(dir, &format!("127.0.0.1:{port}"), SIM));
    std::fs::write(&config, text).unwrap();
    let log = dir.join("serve.log");
    let server = Binary::start_with(&config, &log, &[("OFFLOAD_LOG", filter)]);
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&reqwest::Client::new(), &url, &log).await;
    (server, url, log)
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_string()
}

/// Every request is answered with its id: the client's `X-Request-Id`, else its
/// `traceparent`'s trace id, else a new one. A problem's `instance` names it, and with
/// `log.format = "json"` every line is a JSON object a pipeline can parse, the lines a
/// request caused carrying its id (and a job's id where there is one), with no escape codes.
#[tokio::test]
async fn json_log_lines_carry_the_request_and_job_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url, log) = serve(dir.path(), "[log]\nformat = \"json\"", "info,offload::api=debug").await;
    let http = reqwest::Client::new();

    let r = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(TOKEN_A)
        .header("x-request-id", "req-logs-1")
        .json(&json!({"image": "a", "command": ["true"], "provider_options": {"sim": {"run_ms": 10}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(request_id(&r), "req-logs-1");
    let job: Value = r.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(TOKEN_A)
        .header("x-request-id", "not usable: it has spaces")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"image": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(request_id(&r), trace);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["instance"], format!("urn:offload:request:{trace}"));
    assert_eq!(problem["errors"][0]["field"], "image");

    // Neither sent: a new id, different for each request, in the header and the problem.
    let mut made = vec![];
    for _ in 0..2 {
        let r = http
            .get(format!("{url}/v1/jobs/00000000-0000-0000-0000-000000000000"))
            .bearer_auth(TOKEN_A)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let id = request_id(&r);
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["instance"], format!("urn:offload:request:{id}"));
        made.push(id);
    }
    assert_ne!(made[0], made[1]);
    drop(server);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\x1b'), "escape codes in the log:\n{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        let time = line["time"].as_str().unwrap_or_else(|| panic!("no time: {line}"));
        chrono::DateTime::parse_from_rfc3339(time).unwrap();
        for key in ["level", "severity", "target", "message"] {
            assert!(line[key].is_string(), "no {key}: {line}");
        }
    }
    assert!(lines.iter().any(|l| l["message"] == "offload is serving"
        && l["level"] == "INFO"
        && l["severity"] == "INFO"
        && l["fields"]["addr"].is_string()));
    let accepted = lines
        .iter()
        .find(|l| l["message"] == "accepted")
        .unwrap_or_else(|| panic!("no line for the accepted job:\n{text}"));
    assert_eq!(accepted["request_id"], "req-logs-1");
    assert_eq!(accepted["job_id"], job_id.as_str());
    assert_eq!(accepted["level"], "DEBUG");
    assert_eq!(accepted["fields"]["method"], "POST");
    assert_eq!(accepted["fields"]["path"], "/v1/jobs");
}

/// The default text log, written to a file, has no colour codes.
#[tokio::test]
async fn a_text_log_to_a_file_has_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _url, log) = serve(dir.path(), "", "info").await;
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("offload is serving"), "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
}

/// A format that is neither fails the start, naming the key.
#[test]
fn an_unknown_log_format_names_the_key() {
    let err = offload::config::Config::from_toml("[log]\nformat = \"yaml\"\n").err().unwrap();
    assert!(err.0.contains("log.format") && err.0.contains("yaml"), "{}", err.0);
}

/// An OTLP/HTTP receiver, as a collector answers: each `POST /v1/traces` body decoded as an
/// `ExportTraceServiceRequest`, its spans kept with their resource's `service.name`.
mod receiver {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    #[derive(Clone, Default)]
    pub struct Received(pub Arc<Mutex<Vec<(String, Span)>>>);

    pub async fn start() -> (String, Received) {
        let received = Received::default();
        let kept = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                                Any::StringValue(s) => Some(s.clone()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            for span in scope.spans {
                                kept.0.lock().unwrap().push((service.clone(), span));
                            }
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, received)
    }

    /// A span's attribute as text (integers too).
    pub fn attribute(span: &Span, key: &str) -> Option<String> {
        let value = span.attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()?;
        Some(match value {
            Any::StringValue(s) => s.clone(),
            Any::IntValue(i) => i.to_string(),
            Any::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
    }
}

/// The first span named `name` that `pick` takes, once it has arrived; fails after 30 s
/// with the gateway's log.
async fn span(
    received: &receiver::Received,
    log: &std::path::Path,
    name: &str,
    pick: impl Fn(&opentelemetry_proto::tonic::trace::v1::Span) -> bool,
) -> (String, opentelemetry_proto::tonic::trace::v1::Span) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let found = received.0.lock().unwrap().iter().find(|(_, s)| s.name == name && pick(s)).cloned();
        if let Some(found) = found {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {name:?} span arrived among {:?}; the gateway's log:\n{}",
            received.0.lock().unwrap().iter().map(|(_, s)| s.name.clone()).collect::<Vec<_>>(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// With `telemetry.otlp_endpoint` set, one submit that sends a `traceparent` gives a trace
/// that continues the caller's: the request's server span (named for its route, with its
/// status), its store commit within it; then the job's dispatch, its provider call (with the
/// provider, the call and its outcome) and the store's batches, each decoded here from
/// what the gateway sent over OTLP/HTTP.
#[tokio::test]
async fn a_submit_is_traced_over_otlp_from_the_callers_trace_to_the_provider_call() {
    let (collector, received) = receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("offload.toml");
    let text = format!(
        "{}\n[telemetry]\notlp_endpoint = \"{collector}\"\nservice_name = \"offload-under-test\"\n",
        config_text(dir.path(), &format!("127.0.0.1:{port}"), SIM)
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("serve.log");
    // The SDK's batch processor sends every 100 ms rather than every 5 s.
    let _server = Binary::start_with(&config, &log, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&reqwest::Client::new(), &url, &log).await;

    let (trace, caller) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(TOKEN_A)
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"image": "a", "command": ["true"], "provider": "sim", "provider_options": {"sim": {"run_ms": 10}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let job: Value = r.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();

    let (service, request) = span(&received, &log, "POST /v1/jobs", |s| hex(&s.trace_id) == trace).await;
    assert_eq!(service, "offload-under-test");
    assert_eq!(hex(&request.parent_span_id), caller, "the caller's span is the parent");
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(receiver::attribute(&request, "http.response.status_code").as_deref(), Some("201"));
    assert_eq!(receiver::attribute(&request, "request_id").as_deref(), Some(trace));
    let (_, commit) = span(&received, &log, "store commit", |s| s.parent_span_id == request.span_id).await;
    assert_eq!(receiver::attribute(&commit, "job").as_deref(), Some(job_id.as_str()));
    assert!(commit.end_time_unix_nano >= commit.start_time_unix_nano);

    let (_, dispatch) = span(&received, &log, "dispatch", |s| receiver::attribute(s, "job").as_deref() == Some(job_id.as_str())).await;
    let (_, launch) = span(&received, &log, "launch sim", |s| s.parent_span_id == dispatch.span_id).await;
    assert_eq!(receiver::attribute(&launch, "provider").as_deref(), Some("sim"));
    assert_eq!(receiver::attribute(&launch, "call").as_deref(), Some("launch"));
    assert_eq!(receiver::attribute(&launch, "outcome").as_deref(), Some("ok"));
    let (_, batch) = span(&received, &log, "store batch", |s| receiver::attribute(s, "outcome").as_deref() == Some("committed")).await;
    assert_eq!(receiver::attribute(&batch, "store").as_deref(), Some("sqlite"));
    assert!(receiver::attribute(&batch, "writes").unwrap().parse::<u64>().unwrap() >= 1);

    // A request without a traceparent starts a trace of its own.
    let r = reqwest::Client::new().get(format!("{url}/v1/providers")).bearer_auth(TOKEN_A).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, own) = span(&received, &log, "GET /v1/providers", |_| true).await;
    assert!(own.parent_span_id.is_empty(), "a root span");
    assert_ne!(hex(&own.trace_id), trace);
}

/// A collector address that is not http(s) fails the start, naming the key.
#[test]
fn a_bad_otlp_endpoint_names_the_key() {
    for (value, says) in [("ftp://collector:4318", "not http or https"), ("collector:4318", "collector")] {
        let text = format!("[telemetry]\notlp_endpoint = \"{value}\"\n");
        let err = offload::config::Config::from_toml(&text).err().unwrap();
        assert!(err.0.starts_with("telemetry.otlp_endpoint: ") && err.0.contains(says), "{}", err.0);
    }
    let err = offload::config::Config::from_toml("[telemetry]\nsample_ratio = 1.5\n").err().unwrap();
    assert!(err.0.starts_with("telemetry.sample_ratio: "), "{}", err.0);
}

/// A collector that does not answer costs spans, not requests: with the endpoint on a
/// closed port, a job is submitted and run as ever.
#[tokio::test]
async fn a_collector_that_is_down_loses_spans_not_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let extra = format!("[telemetry]\notlp_endpoint = \"http://127.0.0.1:{closed}\"");
    let (_server, url, _log) = serve(dir.path(), &extra, "warn").await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let r = http
            .post(format!("{url}/v1/jobs"))
            .bearer_auth(TOKEN_A)
            .json(&json!({"image": "a", "command": ["true"], "provider_options": {"sim": {"run_ms": 10}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let mut job: Value = r.json().await.unwrap();
        let id = job["id"].as_str().unwrap().to_string();
        for _ in 0..3 {
            if job["terminal"] == true {
                break;
            }
            let read = http.get(format!("{url}/v1/jobs/{id}?wait=20")).bearer_auth(TOKEN_A);
            job = read.send().await.unwrap().json().await.unwrap();
        }
        let ended = job;
        assert_eq!(ended["state"], "succeeded", "{ended}");
    }
}

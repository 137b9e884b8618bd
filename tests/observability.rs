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

//! Slow and abusive clients, over raw TCP where a well-behaved HTTP client would hide the
//! behaviour: headers that never finish, a body that never comes, more connections than
//! the cap, more long-polls than a tenant may hold, bodies nested too deep.

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, TOKEN_A};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: &str = r#"
[http]
header_timeout_seconds = 1
body_timeout_seconds = 1
idle_timeout_seconds = 2
max_connections = 64
max_connections_per_address = 64
max_waiters_per_tenant = 2
[providers.sim]
kind = "sim"
start_ms = 10
run_ms = 600000
poll_interval_ms = 20
"#;

async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection (at most 15 s).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = vec![];
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open: {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn headers_that_never_finish_are_cut_off() {
    let gw = Gateway::start(LIMITS).await;
    let mut slow = connect(&gw).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut slow).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_body_that_never_comes_gets_a_4xx() {
    let gw = Gateway::start(LIMITS).await;
    let mut slow = connect(&gw).await;
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"image\":"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut slow).await;
    let status: u16 = answer[9..12].parse().unwrap();
    assert!((400..500).contains(&status), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[tokio::test]
async fn past_the_connection_cap_a_client_gets_503_with_retry_after() {
    let gw = Gateway::start(&LIMITS.replace("max_connections = 64", "max_connections = 4")).await;
    // Four connections that made an authenticated request and keep their connection open:
    // none of them may be closed to make room.
    let mut held = vec![];
    for _ in 0..4 {
        let mut c = connect(&gw).await;
        let request = format!(
            "GET /v1/providers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\r\n"
        );
        c.write_all(request.as_bytes()).await.unwrap();
        let mut buf = [0u8; 4096];
        let n = c.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
        held.push(c);
    }
    let mut fifth = connect(&gw).await;
    let answer = read_to_close(&mut fifth).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    drop(held);
    // The places come back once those connections close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw.http.get(format!("{}/healthz", gw.url)).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the connection places never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_tenant_holds_at_most_its_share_of_long_polls() {
    let gw = Gateway::start(LIMITS).await;
    let (status, job) = gw
        .submit(TOKEN_A, json!({"image": "i", "provider": "sim"}))
        .await;
    assert_eq!(status, 201);
    let id = job["id"].as_str().unwrap().to_string();
    gw.wait_state(TOKEN_A, &id, "running", 10).await;
    // Two long-polls, sent and left waiting.
    let mut held = vec![];
    for _ in 0..2 {
        let mut c = connect(&gw).await;
        let request = format!(
            "GET /v1/jobs/{id}?wait=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\r\n"
        );
        c.write_all(request.as_bytes()).await.unwrap();
        held.push(c);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let third = gw
            .req(Method::GET, &format!("/v1/jobs/{id}?wait=1"), TOKEN_A)
            .send()
            .await
            .unwrap();
        if third.status() == 429 {
            assert_eq!(third.headers()["retry-after"], "1");
            let body: serde_json::Value = third.json().await.unwrap();
            assert!(
                body["detail"].as_str().unwrap().contains("long-polls"),
                "{body}"
            );
            break;
        }
        // The two were not parked yet; this one was answered at its own wait.
        assert!(
            Instant::now() < deadline,
            "a third long-poll was never refused"
        );
    }
    // Closing one frees its place.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = gw
            .req(Method::GET, &format!("/v1/jobs/{id}?wait=0"), TOKEN_A)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 200, "a plain read needs no place");
        let polled = gw
            .req(Method::GET, &format!("/v1/jobs/{id}?wait=1"), TOKEN_A)
            .send()
            .await
            .unwrap();
        if polled.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed long-poll's place never came back"
        );
    }
}

#[tokio::test]
async fn provider_options_nested_too_deep_are_refused_by_name() {
    let gw = Gateway::start(LIMITS).await;
    let mut deep = json!("x");
    for _ in 0..20 {
        deep = json!({ "a": deep });
    }
    let (status, problem) = gw
        .submit(
            TOKEN_A,
            json!({"image": "i", "provider": "sim", "provider_options": {"sim": deep}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["errors"][0]["field"], "provider_options",
        "{problem}"
    );
}

#[tokio::test]
async fn json_nested_past_serdes_limit_is_a_400_and_whole_floats_count_as_integers() {
    let gw = Gateway::start(LIMITS).await;
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let body = format!(r#"{{"image": "i", "provider": "sim", "labels": {deep}}}"#);
    let r = gw
        .req(Method::POST, "/v1/jobs", TOKEN_A)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("recursion limit"),
        "{problem}"
    );

    let (status, job) = gw
        .submit(
            TOKEN_A,
            json!({"image": "i", "provider": "sim", "timeout_seconds": 4312.0,
                   "resources": {"gpu": null, "cpu": 2.0}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["spec"]["timeout_seconds"], 4312);
    let (status, problem) = gw
        .submit(
            TOKEN_A,
            json!({"image": "i", "provider": "sim", "timeout_seconds": 4312.5}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["errors"][0]["field"], "timeout_seconds",
        "{problem}"
    );
}

/// Whatever methods clients invent, the latency metric records the standard ones by name
/// and the rest as "other": a client without a token cannot grow `/metrics`.
#[tokio::test]
async fn invented_methods_add_no_metric_series() {
    let gw = Gateway::start(LIMITS).await;
    for i in 0..50 {
        let method = Method::from_bytes(format!("XYZ{i}").as_bytes()).unwrap();
        let r = gw
            .http
            .request(method, format!("{}/healthz", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let text = gw.metrics_text().await;
    assert!(!text.contains("method=\"XYZ"), "invented methods became series");
    assert!(
        text.lines().any(|l| l.starts_with("offload_http_request_duration_seconds_count")
            && l.contains("method=\"other\"")
            && l.contains("route=\"/healthz\"")),
        "no series for other methods"
    );
}

/// A label filter longer than a spec can have labels is a 400 naming `labels`, not a
/// database error.
#[tokio::test]
async fn a_label_filter_past_the_limit_is_a_400() {
    let gw = Gateway::start(LIMITS).await;
    let selector: Vec<String> = (0..1000).map(|i| format!("k{i}=v")).collect();
    let r = gw
        .req(
            Method::GET,
            &format!("/v1/jobs?labels={}", selector.join(",")),
            TOKEN_A,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "labels", "{problem}");
    let ok: Vec<String> = (0..64).map(|i| format!("k{i}=v")).collect();
    let r = gw
        .req(Method::GET, &format!("/v1/jobs?labels={}", ok.join(",")), TOKEN_A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A list page stops at its byte budget, however many jobs it may hold, and hands a cursor
/// on: following the cursors gives every job once.
#[tokio::test]
async fn list_pages_are_bounded_in_bytes() {
    let gw = Gateway::start(LIMITS).await;
    let value = "x".repeat(30_000);
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let (status, job) = gw
            .submit(
                TOKEN_A,
                json!({"image": "i", "provider": "sim", "env": {"A": value, "B": value}}),
            )
            .await;
        assert_eq!(status, 201, "{job}");
        ids.insert(job["id"].as_str().unwrap().to_string());
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=500&cursor={c}"),
            None => "/v1/jobs?limit=500".to_string(),
        };
        let r = gw.req(Method::GET, &path, TOKEN_A).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        assert!(
            body.len() <= (1 << 20) + 200_000,
            "a page of {} bytes",
            body.len()
        );
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for job in page["jobs"].as_array().unwrap() {
            assert!(seen.insert(job["id"].as_str().unwrap().to_string()), "a job twice");
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert!(pages > 1, "one page of {} jobs of 60 KB", ids.len());
}

/// A client connecting from `ip` (any loopback address).
async fn connect_from(gw: &Gateway, ip: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket
        .connect(gw.url.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap()
}

/// Sends a sign-in whose body never finishes: a connection held open without a token.
async fn slow_signin(c: &mut TcpStream) {
    c.write_all(b"POST /ui/signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nt")
        .await
        .unwrap();
}

/// The answer to one request on a fresh connection.
async fn ask(gw: &Gateway, request: String) -> String {
    let mut c = connect(gw).await;
    c.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Connections held by clients without a token never shut out health checks and
/// authenticated requests: at the cap, the oldest of them makes room.
#[tokio::test]
async fn unauthenticated_connections_leave_room_for_health_and_tokens() {
    let gw = Gateway::start(
        &LIMITS
            .replace("max_connections = 64", "max_connections = 4")
            .replace("body_timeout_seconds = 1", "body_timeout_seconds = 60")
            .replace("idle_timeout_seconds = 2", "idle_timeout_seconds = 60"),
    )
    .await;
    let mut held = vec![];
    for _ in 0..4 {
        let mut c = connect(&gw).await;
        slow_signin(&mut c).await;
        held.push(c);
    }
    let health = ask(&gw, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let authed = ask(
        &gw,
        format!("GET /v1/providers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(authed.starts_with("HTTP/1.1 200"), "{authed}");
    // The oldest held ones were closed to make that room.
    let closed = read_to_close(&mut held[0]).await;
    assert!(!closed.contains("200 OK"), "{closed}");
}

/// One address holds at most its share of the connections; past it, its own oldest
/// connection without a token makes room, and other addresses are not touched.
#[tokio::test]
async fn connections_are_capped_per_address() {
    let gw = Gateway::start(
        &LIMITS
            .replace("max_connections_per_address = 64", "max_connections_per_address = 2")
            .replace("body_timeout_seconds = 1", "body_timeout_seconds = 60")
            .replace("idle_timeout_seconds = 2", "idle_timeout_seconds = 60"),
    )
    .await;
    let mut other = connect_from(&gw, "127.0.0.3").await;
    slow_signin(&mut other).await;
    let mut first = connect_from(&gw, "127.0.0.2").await;
    slow_signin(&mut first).await;
    let mut second = connect_from(&gw, "127.0.0.2").await;
    slow_signin(&mut second).await;
    let mut third = connect_from(&gw, "127.0.0.2").await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = third.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    let closed = read_to_close(&mut first).await;
    assert!(closed.is_empty(), "{closed}");
    // The other address's connection is still open: its body can still be sent.
    let rest = format!("oken={}", "x".repeat(94));
    other.write_all(rest.as_bytes()).await.unwrap();
    let answer = read_to_close_or_first(&mut other).await;
    assert!(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 403"), "{answer}");
}

/// The first bytes of an answer, waiting at most 15 s.
async fn read_to_close_or_first(stream: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The body deadline is a total: a body that trickles in, a byte at a time within the
/// deadline, is cut off at the deadline with a 408 problem, on the dashboard's sign-in too.
#[tokio::test]
async fn a_trickling_body_gets_a_408_problem_at_the_total_deadline() {
    let gw = Gateway::start(&LIMITS.replace("body_timeout_seconds = 1", "body_timeout_seconds = 2")).await;
    let mut c = connect(&gw).await;
    c.write_all(b"POST /ui/signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = vec![];
    let mut buf = [0u8; 4096];
    loop {
        assert!(started.elapsed() < Duration::from_secs(15), "never cut off");
        let _ = c.write_all(b"t").await;
        match tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

/// A connection with no request in flight is closed after the idle timeout, whether it
/// never sent anything or speaks HTTP/2 and answers every PING.
#[tokio::test]
async fn idle_connections_are_closed_in_http1_and_http2() {
    let gw = Gateway::start(LIMITS).await;
    let mut silent = connect(&gw).await;
    let started = Instant::now();
    read_to_close(&mut silent).await;
    assert!(started.elapsed() < Duration::from_secs(10));

    // HTTP/2 with prior knowledge: the preface, empty SETTINGS, then only frames that keep
    // the connection alive (SETTINGS and PING acknowledgements, PINGs of its own).
    let mut h2 = connect(&gw).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    let mut goaway = false;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the idle HTTP/2 connection stayed open"
        );
        let mut head = [0u8; 9];
        let read = tokio::time::timeout(Duration::from_millis(300), h2.read_exact(&mut head)).await;
        let Ok(read) = read else {
            let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00offload!";
            if h2.write_all(ping).await.is_err() {
                break;
            }
            continue;
        };
        if read.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if h2.read_exact(&mut payload).await.is_err() {
            break;
        }
        match (head[3], head[4] & 1) {
            (0x4, 0) => h2.write_all(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00").await.unwrap(),
            (0x6, 0) => {
                let mut ack = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00".to_vec();
                ack.extend_from_slice(&payload);
                h2.write_all(&ack).await.unwrap();
            }
            (0x7, _) => goaway = true,
            _ => {}
        }
    }
    assert!(goaway, "closed without a GOAWAY");
}

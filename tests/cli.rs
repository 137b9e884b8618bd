//! The real binary as a newcomer uses it: `offload serve` on its defaults (no config file),
//! `offload run` exiting with the job's exit code and saying where it ran and what it cost,
//! `offload quote` and `offload costs`, `offload list` and `offload providers` as tables,
//! `offload config check` (which creates nothing), the gateway's flags only on the commands
//! that talk to it, the metrics the alert rules watch, and a graceful stop on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_offload");

/// Starts `offload serve` in `dir` on a free port with `args`; its URL once it answers.
fn serve(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let serve = Command::new(BIN)
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env("OFFLOAD_LISTEN", format!("127.0.0.1:{port}"))
        // An OFFLOAD_* variable that names no config key is not configuration.
        .env("OFFLOAD_UNRELATED", "x")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = Instant::now();
    while Command::new(BIN)
        .args(["providers", "--url", &url])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(
            ready.elapsed() < Duration::from_secs(20),
            "offload serve did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (serve, url)
}

/// Runs the CLI against `url`: its exit code, stdout and stderr.
fn cli(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("OFFLOAD_URL", url)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn serve_on_defaults_run_a_job_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut serve, url) = serve(dir.path(), &[]);
    assert!(
        dir.path().join("offload.db").exists(),
        "the default store is ./offload.db"
    );

    let run = Command::new(BIN)
        .args([
            "run",
            "--url",
            &url,
            "alpine",
            "--",
            "sh",
            "-c",
            "echo hi from the job; exit 4",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hi from the job\n");
    assert_eq!(
        run.status.code(),
        Some(4),
        "stderr: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("exited with code 4"));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("ran on local: 0.000000 USD"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let list = Command::new(BIN)
        .args(["list", "--url", &url, "--state", "failed"])
        .output()
        .unwrap();
    let rows: Vec<Vec<String>> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0], ["ID", "STATE", "PROVIDER", "NAME"]);
    assert_eq!(rows[1][1..], ["failed", "local", "alpine"]);
    // The providers as a table too, like every other listing; as JSON with --json.
    let (_, table, _) = cli(&url, &["providers"]);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows[0],
        ["NAME", "KIND", "HEALTH", "ACTIVE", "WAITING", "MAX", "CALLS", "ERRORS"],
        "{table}"
    );
    assert_eq!(rows[1][..3], ["local", "local", "ok"], "{table}");
    let (_, json, _) = cli(&url, &["providers", "--json"]);
    let providers: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(providers[0]["name"], "local", "{json}");
    let bad = Command::new(BIN)
        .args(["get", "--url", &url, "nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("id:"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let check = Command::new(BIN)
        .args(["config", "check"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(check.status.success());
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        "ok    local (local)\n"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "offload serve ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "offload serve exited with {status} on SIGTERM"
    );
}

#[test]
fn config_check_names_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[providers.x]\nkind = \"local\"\ngrace_secs = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("grace_secs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `offload submit` always sends an Idempotency-Key (one of its own when none is given),
/// and sends the job again, with the same key, when the gateway answers 503: a submit
/// whose answer was lost after the gateway committed it then gets that job back instead of
/// making a second one.
#[test]
fn submit_always_sends_a_key_and_retries_with_the_same_one() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // A stand-in gateway: 503 with Retry-After: 0 to the first submit, 201 to the next.
    let server = std::thread::spawn(move || {
        let mut keys = vec![];
        for answer in 0..2 {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut key) = (0, None);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "idempotency-key" => key = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            keys.push(key);
            let (status, body) = match answer {
                0 => ("503 Service Unavailable\r\nRetry-After: 0", r#"{"detail":"store unavailable"}"#.to_string()),
                _ => ("201 Created", r#"{"id":"01a24f9d-762f-7139-9daf-536197e3f4c6","state":"queued"}"#.to_string()),
            };
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
        keys
    });
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.json");
    std::fs::write(&spec, r#"{"image": "alpine", "command": ["true"]}"#).unwrap();
    let (code, stdout, stderr) = cli(&url, &["submit", spec.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("01a24f9d-762f-7139-9daf-536197e3f4c6"), "{stdout}");
    let keys = server.join().unwrap();
    assert!(keys[0].as_deref().is_some_and(|k| !k.is_empty()), "no Idempotency-Key: {keys:?}");
    assert_eq!(keys[0], keys[1], "the retry used another key");
}

/// A start that fails on its database names the database without its password, in
/// whichever form the password was given.
#[test]
fn a_failed_start_never_shows_the_database_password() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "postgres://offload:hunter2@127.0.0.1:1/offload",
        "postgres://offload@127.0.0.1:1/offload?connect_timeout=2&password=hunter2",
        "host=127.0.0.1 port=1 user=offload password=hunter2 dbname=offload",
        "host=127.0.0.1 port=1 password='hunter2 x' dbname=offload",
    ] {
        let out = Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env("OFFLOAD_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("OFFLOAD_STORE__URL", url)
            .env(
                "OFFLOAD_STORE__SECRET_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {stderr}");
        assert!(stderr.contains("<redacted>"), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{url}: {stderr}");
    }
}

/// Logs written to a file or a pipe (systemd, Kubernetes, a log shipper) carry no terminal
/// colour codes.
#[test]
fn logs_to_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let mut serve = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("OFFLOAD_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("offload is serving")
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "offload serve did not start: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    serve.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a log file: {text:?}");
}

#[test]
fn quote_run_and_costs_say_where_jobs_go_and_what_they_cost() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("offload.toml");
    std::fs::write(
        &config,
        r#"
[providers.cheap]
kind = "sim"
start_ms = 0
run_ms = 300
poll_interval_ms = 20
price = { vcpu_hour = 3.6 }
[providers.dear]
kind = "sim"
price = { vcpu_hour = 7.2 }
[providers.spotty]
kind = "sim"
spot = true
start_ms = 0
run_ms = 300
poll_interval_ms = 20
price = { vcpu_hour = 1.8 }
"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (mut serve, url) = serve(dir.path(), &["--config", config]);

    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"image": "alpine", "resources": {"cpu": 1}, "routing": {"expected_duration_seconds": 10}}"#,
    )
    .unwrap();
    let (code, out, err) = cli(&url, &["quote", spec.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines[0], "expected duration: 10 s (from spec)", "{out}");
    assert!(lines[2].starts_with("cheap ") && lines[2].ends_with(" 0.010000"), "{out}");
    assert!(lines[3].starts_with("dear ") && lines[3].ends_with(" 0.020000"), "{out}");

    // Each run says where it ran and what it cost; the report adds them up by label.
    let mut ids = vec![];
    for dag in ["etl", "etl", "ml"] {
        let label = format!("dag_id={dag}");
        let (code, _, err) = cli(&url, &["run", "-l", &label, "alpine", "--", "true"]);
        assert_eq!(code, Some(0), "{err}");
        let line = err.lines().find(|l| l.contains(" ran on ")).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains("ran on cheap: ") && line.contains(" USD (estimated "), "{line}");
        // Against the dearest that could have run it (the spot provider could not).
        assert!(line.contains(" USD at reference dear, saved "), "{line}");
        ids.push(line.split_whitespace().nth(2).unwrap().to_string());
    }
    let usd = |id: &str| {
        let (_, job, _) = cli(&url, &["get", id]);
        let job: serde_json::Value = serde_json::from_str(&job).unwrap();
        job["cost"]["usd"].as_f64().unwrap()
    };
    let each: Vec<f64> = ids.iter().map(|id| usd(id)).collect();
    assert!(each.iter().all(|u| *u > 0.0), "{each:?}");
    let (code, out, err) = cli(&url, &["costs", "--group-by", "label:dag_id", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(report["total_usd"].as_f64().unwrap(), each.iter().sum()), "{report}");
    assert_eq!(report["groups"][0]["key"], "etl", "{report}");
    assert_eq!(report["groups"][0]["jobs"], 2, "{report}");
    assert!(close(report["groups"][0]["usd"].as_f64().unwrap(), each[0] + each[1]), "{report}");
    let (_, table, _) = cli(&url, &["costs", "--group-by", "label:dag_id"]);
    let rows: Vec<_> = table.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect();
    assert_eq!(rows[0], ["GROUP", "JOBS", "USD", "ESTIMATED", "USD"], "{table}");
    assert_eq!((rows[1][0], rows[1][1]), ("etl", "2"), "{table}");
    assert_eq!((rows[2][0], rows[2][1]), ("ml", "1"), "{table}");
    assert_eq!(rows[3][0], "TOTAL", "{table}");
    // --spot and --prefer become the job's routing: spot allowed, the cheapest is the
    // spot provider the runs above (spot never, the default) were kept from.
    let (code, _, err) = cli(&url, &["run", "--spot", "preferred", "--prefer", "speed", "alpine", "--", "true"]);
    assert_eq!(code, Some(0), "{err}");
    let line = err.lines().find(|l| l.contains(" ran on ")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("ran on spotty: "), "{line}");
    let (_, job, _) = cli(&url, &["get", line.split_whitespace().nth(2).unwrap()]);
    let job: serde_json::Value = serde_json::from_str(&job).unwrap();
    assert_eq!(job["spec"]["routing"], serde_json::json!({"spot": "preferred", "prefer": "speed"}), "{job}");
    let (code, _, err) = cli(&url, &["run", "--spot", "sometimes", "alpine", "--", "true"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--spot") && err.contains("never, allowed, preferred"), "{err}");
    serve.kill().unwrap();
    serve.wait().unwrap();
}

/// `offload config check` of an ECS provider with no credentials and no `log_group`: it
/// warns that jobs there will have no log nor `offload-result`, and names the missing
/// credentials as an auth error, not as a passing fault.
#[cfg(feature = "ecs")]
#[test]
fn config_check_of_ecs_warns_without_a_log_group_and_names_missing_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("offload.toml");
    std::fs::write(
        &config,
        "[providers.fargate]\nkind = \"ecs\"\ncluster = \"batch\"\nsubnets = [\"subnet-1\"]\nendpoint_url = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    // No credentials anywhere the AWS SDK looks (not the environment, no profile, no
    // instance metadata) unless `credentials` are given; the endpoint refuses connections.
    let check = |credentials: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .args(["config", "check", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(credentials.iter().copied())
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
        let stdout = text(&out.stdout);
        let line = stdout.lines().find(|l| l.starts_with("FAIL  fargate (ecs)"));
        (line.unwrap_or_else(|| panic!("{stdout}")).to_string(), text(&out.stderr))
    };
    let (line, stderr) = check(&[]);
    assert!(
        stderr.contains("WARN") && stderr.contains("log_group"),
        "no warning about the missing log_group: {stderr}"
    );
    assert!(line.contains("auth or config error") && line.contains("credentials"), "{line}");
    assert!(!line.contains("transient"), "{line}");
    // With credentials, the endpoint that does not answer is a passing fault.
    let keys = [("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "secret")];
    let (line, _) = check(&keys);
    assert!(line.contains("transient error"), "{line}");
}

/// `offload config check` changes nothing: run where no gateway ever ran, on the defaults
/// (the local provider, `./offload.db`), it leaves the folder as empty as it found it.
#[test]
fn config_check_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok    local (local)\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "config check left {left:?}");
}

/// The gateway's `--url` and `--token` belong to the commands that talk to a gateway: the
/// others refuse them rather than ignore them (`offload migrate --url postgres://...` once
/// migrated whatever `store.url` said), and `migrate` needs no secret key, which seals
/// jobs' secrets and has nothing to do with the schema.
#[test]
fn only_client_commands_take_the_gateway_url_and_token() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["migrate", "--url", "postgres://offload@127.0.0.1:1/offload"][..],
        &["serve", "--url", "http://127.0.0.1:1"],
        &["config", "check", "--token", "0123456789abcdef"],
        &["store", "copy", "--from", "a.db", "--to", "postgres://x", "--url", "http://x"],
    ] {
        let out = Command::new(BIN).args(args).current_dir(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("unexpected argument"), "{args:?}: {stderr}");
    }
    let out = Command::new(BIN)
        .arg("migrate")
        .current_dir(dir.path())
        .env("OFFLOAD_STORE__URL", "postgres://offload@127.0.0.1:1/offload?connect_timeout=2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("secret_key"), "{stderr}");
    assert!(stderr.contains("connecting to PostgreSQL"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "migrate made files");
}

/// The metrics the alert rules watch, from the real binary: a provider whose health check
/// fails is `offload_provider_healthy 0` and a healthy one 1; a job waiting for a place
/// shows in `offload_oldest_queued_seconds`; the store's error counter is there from 0.
#[cfg(feature = "ecs")]
#[tokio::test]
async fn metrics_say_which_provider_is_unhealthy_and_how_long_the_oldest_job_waited() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("offload.toml");
    // One place at `sim`, taken by a job that runs for ten minutes; ECS at an endpoint that
    // refuses connections.
    std::fs::write(
        &config,
        "[providers.sim]\nkind = \"sim\"\nstart_ms = 0\nrun_ms = 600000\nmax_concurrency = 1\n\
         [providers.fargate]\nkind = \"ecs\"\ncluster = \"c\"\nsubnets = [\"s\"]\nendpoint_url = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let (mut serve, url) = serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, r#"{"image": "alpine", "provider": "sim"}"#).unwrap();
    for _ in 0..2 {
        let (code, _, err) = cli(&url, &["submit", spec.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{err}");
    }
    let http = reqwest::Client::new();
    let started = Instant::now();
    let metrics = loop {
        let text = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        let waited = common::sample(&text, "offload_oldest_queued_seconds ");
        let sim = common::sample(&text, "offload_provider_healthy{provider=\"sim\"}");
        if waited >= 1.0 && sim == 1.0 {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metrics.contains("offload_provider_healthy{provider=\"fargate\"} 0"), "{metrics}");
    assert!(metrics.contains("offload_store_errors_total{error=\"db\"} 0"), "{metrics}");
    serve.kill().unwrap();
    serve.wait().unwrap();
}

/// Runs `offload ARGS` against `url` with its standard output on a terminal (a pty that
/// `script` opens); what the terminal got.
fn on_a_terminal(url: &str, args: &[&str]) -> String {
    let mut line = BIN.to_string();
    for a in args {
        line += &format!(" '{a}'");
    }
    line += &format!(" --url {url}");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A job's output and name reach a terminal with their control characters escaped, so a
/// job cannot clear the screen, set the title or write the clipboard (OSC 52); to a pipe
/// they pass unchanged.
#[test]
fn a_terminal_gets_a_jobs_control_characters_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut serve, url) = serve(dir.path(), &[]);
    let script = r"printf '\033]52;c;aGk=\007\033[2J\033]0;pwned\007done\n'";
    let run = Command::new(BIN)
        .args(["run", "--url", &url, "alpine", "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0));
    // To a pipe, the bytes the job wrote.
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "\x1b]52;c;aGk=\x07\x1b[2J\x1b]0;pwned\x07done\n"
    );
    let (_, list, _) = cli(&url, &["list"]);
    // Under the header, the newest job first.
    let id = list.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap().to_string();
    let shown = on_a_terminal(&url, &["logs", &id]);
    assert!(!shown.contains('\x1b') && !shown.contains('\x07'), "{shown:?}");
    assert!(shown.contains("^[]52;c;aGk=^G^[[2J^[]0;pwned^Gdone"), "{shown:?}");

    // A name with an escape sequence, in `offload list`.
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"image": "alpine", "name": "evil\u001b]0;title\u0007", "command": ["true"]}"#,
    )
    .unwrap();
    let (code, _, err) = cli(&url, &["submit", spec.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let listed = on_a_terminal(&url, &["list"]);
    assert!(listed.contains("evil^[]0;title^G"), "{listed:?}");
    assert!(!listed.contains('\x1b'), "{listed:?}");
    serve.kill().unwrap();
    let _ = serve.wait();
}

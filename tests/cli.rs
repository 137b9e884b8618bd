//! The real binary as a newcomer uses it: `offload serve` on its defaults (no config file),
//! `offload run` exiting with the job's exit code, `offload config check`, and a graceful
//! stop on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_offload");

#[test]
fn serve_on_defaults_run_a_job_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut serve = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("OFFLOAD_LISTEN", format!("127.0.0.1:{port}"))
        // An OFFLOAD_* variable that names no config key is not configuration.
        .env("OFFLOAD_UNRELATED", "x")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
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

    let list = Command::new(BIN)
        .args(["list", "--url", &url, "--state", "failed"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 1);
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

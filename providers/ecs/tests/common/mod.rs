//! moto's ECS and CloudWatch Logs server (tests/moto_peer.py), started per test on
//! loopback from the venv that tests/run.sh installs, and the calls that steer it.
//! Shared by the provider's tests and the gateway's (`tests/ecs.rs`), which use parts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
pub struct Resources {
    pub endpoint: String,
    pub region: String,
    pub subnet: String,
    pub security_group: String,
    pub cluster: String,
    pub log_group: String,
}

pub struct Moto {
    pub aws: Resources,
    child: Child,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The workspace root: the nearest folder above this crate with the moto peer in it.
fn workspace() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .find(|dir| dir.join(PEER).exists())
        .expect("the workspace root")
        .to_path_buf()
}

const PEER: &str = "providers/ecs/tests/moto_peer.py";

fn python() -> PathBuf {
    match std::env::var_os("OFFLOAD_MOTO_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => workspace().join("target/moto-venv/bin/python"),
    }
}

impl Moto {
    pub fn start() -> Moto {
        // The SDK's credential chain reads these; moto accepts any.
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        let python = python();
        assert!(
            python.exists(),
            "{} is missing: tests/run.sh installs moto[server] there (or set OFFLOAD_MOTO_PYTHON)",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let mut child = Command::new(&python)
            .arg(workspace().join(PEER))
            .current_dir(dir.path())
            .env("MOTO_RECORDER_FILEPATH", dir.path().join("recording"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start moto_peer.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let aws: Resources = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "moto did not start: {}",
                std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
            )
        });
        Moto {
            aws,
            child,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// The provider's settings for this moto, with `extra` on top.
    pub fn config(&self, extra: Value) -> offload_ecs::Config {
        let base = json!({
            "endpoint_url": self.aws.endpoint,
            "region": self.aws.region,
            "cluster": self.aws.cluster,
            "subnets": [self.aws.subnet],
            "security_groups": [self.aws.security_group],
            "log_group": self.aws.log_group,
            "execution_role_arn": "arn:aws:iam::123456789012:role/offload-execution",
            "calls_per_second": 1000,
            "burst": 1000,
        });
        offload_provider::conformance::config(base, extra)
    }

    /// `[providers.fargate]` for a gateway's config, pointing at this moto, plus `extra` lines.
    pub fn gateway_provider(&self, extra: &str) -> String {
        let aws = &self.aws;
        format!(
            "[providers.fargate]\nkind = \"ecs\"\nendpoint_url = \"{}\"\nregion = \"{}\"\ncluster = \"{}\"\n\
             subnets = [\"{}\"]\nsecurity_groups = [\"{}\"]\n{extra}\n",
            aws.endpoint, aws.region, aws.cluster, aws.subnet, aws.security_group
        )
    }

    async fn post(&self, path: &str, body: Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.aws.endpoint))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {:?}",
            response.text().await
        );
    }

    /// Moves a task to STOPPED with this exit code, stop code and reason.
    pub async fn stop(
        &self,
        arn: &str,
        exit_code: Option<i32>,
        stop_code: Option<&str>,
        reason: &str,
    ) {
        self.post(
            "/offload-test/task",
            json!({"arn": arn, "last_status": "STOPPED", "exit_code": exit_code,
                   "stop_code": stop_code, "reason": reason}),
        )
        .await;
    }

    /// Moves a task to STOPPED (its essential container exited) with an exit code per
    /// container name, e.g. `{"sidecar": 0, "app": 4}`.
    pub async fn stop_containers(&self, arn: &str, exit_codes: Value, reason: &str) {
        self.post(
            "/offload-test/task",
            json!({"arn": arn, "last_status": "STOPPED", "exit_codes": exit_codes,
                   "stop_code": "EssentialContainerExited", "reason": reason}),
        )
        .await;
    }

    pub async fn set_status(&self, arn: &str, status: &str) {
        self.post(
            "/offload-test/task",
            json!({"arn": arn, "last_status": status}),
        )
        .await;
    }

    /// Writes `lines` to `stream` in the log group, as a task's awslogs driver would.
    pub async fn write_log(&self, stream: &str, lines: &[&str]) {
        self.post(
            "/offload-test/log",
            json!({"stream": stream, "lines": lines}),
        )
        .await;
    }

    /// The next `times` calls of `action` get this answer instead of moto's.
    pub async fn fault(&self, action: &str, times: u32, status: u16, body: Value) {
        self.post(
            "/offload-test/fault",
            json!({"target": action, "times": times, "status": status, "body": body}),
        )
        .await;
    }

    pub async fn clear_faults(&self) {
        self.post("/offload-test/faults/clear", json!({})).await;
    }

    pub async fn reset_recording(&self) {
        self.post("/moto-api/recorder/reset-recording", json!({}))
            .await;
    }

    /// The ECS calls moto recorded, as (action, request body) pairs.
    pub async fn recorded(&self) -> Vec<(String, Value)> {
        let text = self
            .http
            .get(format!(
                "{}/moto-api/recorder/download-recording",
                self.aws.endpoint
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|entry| {
                let target = entry["headers"]["X-Amz-Target"].as_str()?.to_string();
                let action = target.rsplit('.').next()?.to_string();
                let body = entry["body"].as_str().unwrap_or_default();
                let body = if entry["body_encoded"].as_bool() == Some(true) {
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .unwrap_or_default();
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                } else {
                    serde_json::from_str(body).unwrap_or(Value::Null)
                };
                Some((action, body))
            })
            .collect()
    }

    /// One ECS API call straight to moto (which checks no signature), for what moto holds.
    async fn ecs(&self, action: &str, body: Value) -> Value {
        self.http
            .post(&self.aws.endpoint)
            .header(
                "X-Amz-Target",
                format!("AmazonEC2ContainerServiceV20141113.{action}"),
            )
            .header("Content-Type", "application/x-amz-json-1.1")
            // moto picks the service by the credential scope (and checks no signature).
            .header(
                "Authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=testing/20260101/{}/ecs/aws4_request, SignedHeaders=host, Signature=0",
                    self.aws.region
                ),
            )
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Every task moto holds in the cluster, running or stopped, by the value of its tag
    /// `tag`: what was really started, whatever the request recorder saw.
    pub async fn tasks_by_tag(&self, tag: &str) -> BTreeMap<String, usize> {
        let mut arns = vec![];
        for status in ["RUNNING", "STOPPED"] {
            let listed = self
                .ecs("ListTasks", json!({"cluster": self.aws.cluster, "desiredStatus": status}))
                .await;
            arns.extend(listed["taskArns"].as_array().cloned().unwrap_or_default());
        }
        let mut by_tag = BTreeMap::new();
        for chunk in arns.chunks(100) {
            let described = self
                .ecs(
                    "DescribeTasks",
                    json!({"cluster": self.aws.cluster, "tasks": chunk, "include": ["TAGS"]}),
                )
                .await;
            for task in described["tasks"].as_array().cloned().unwrap_or_default() {
                let value = task["tags"]
                    .as_array()
                    .and_then(|tags| tags.iter().find(|t| t["key"] == tag))
                    .and_then(|t| t["value"].as_str())
                    .unwrap_or_default()
                    .to_string();
                *by_tag.entry(value).or_default() += 1;
            }
        }
        by_tag
    }

    pub async fn count(&self, action: &str) -> usize {
        self.recorded()
            .await
            .iter()
            .filter(|(a, _)| a == action)
            .count()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

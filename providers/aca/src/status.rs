//! What a job's execution says about its job: the execution's status, and the container's
//! own status and exit code from `detailedStatus` where the API version reports them.
//!
//! The container's status wins when it has ended: Microsoft's published list example shows
//! an execution still `Running` with its end time set and every container `Succeeded` with
//! code 0.

use std::time::{Duration, SystemTime};

use offload_provider::{Phase, RunTimes};
use serde_json::Value;

use crate::job::CONTAINER;

/// A container's `additionalInformation` or status that means its image cannot be pulled.
const PULL_ERRORS: [&str; 3] = ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"];

fn time(value: &Value) -> Option<SystemTime> {
    offload_provider::rfc3339(value.as_str()?)
}

/// The execution's start and end, as Container Apps reports them.
pub fn ran(execution: &Value) -> Option<RunTimes> {
    let props = &execution["properties"];
    RunTimes::of(time(&props["startTime"]), time(&props["endTime"]))
}

/// The container's entry in the execution's detailed status.
fn container(execution: &Value) -> Option<&Value> {
    let replicas = execution["properties"]["detailedStatus"]["replicas"].as_array()?;
    let containers: Vec<&Value> = replicas
        .iter()
        .flat_map(|r| r["containers"].as_array().into_iter().flatten())
        .collect();
    containers
        .iter()
        .find(|c| c["name"] == CONTAINER)
        .or(containers.first())
        .copied()
}

pub fn phase(execution: &Value, now: SystemTime, pending_timeout: Duration) -> Phase {
    let props = &execution["properties"];
    let status = props["status"].as_str().unwrap_or("");
    let container = container(execution);
    let container_status = container.and_then(|c| c["status"].as_str()).unwrap_or("");
    let info = container
        .and_then(|c| c["additionalInformation"].as_str())
        .unwrap_or("");
    let code = container.and_then(|c| c["code"].as_i64()).map(|c| c as i32);

    let container_ended = matches!(container_status, "Succeeded" | "Failed" | "Terminated");
    if container_ended || matches!(status, "Succeeded" | "Failed" | "Degraded") {
        let reason = match (code, status) {
            (Some(0), _) => None,
            (None, "Succeeded") if !container_ended => None,
            (Some(c), _) if info.is_empty() || info == "Completed" => {
                Some(format!("exited with code {c}"))
            }
            (Some(c), _) => Some(format!("exited with code {c}: {info}")),
            (None, _) if !info.is_empty() => Some(info.to_string()),
            (None, s) => Some(format!("execution {}", s.to_lowercase())),
        };
        let exit_code = code.or((status == "Succeeded").then_some(0));
        return Phase::Exited { exit_code, reason };
    }
    if status == "Stopped" {
        return Phase::Exited {
            exit_code: None,
            reason: Some("execution stopped".into()),
        };
    }
    if let Some(pull) = PULL_ERRORS
        .iter()
        .find(|e| info.contains(*e) || container_status.contains(*e))
    {
        let why = format!("{pull}: {info}").trim_end_matches(": ").to_string();
        let started = time(&props["startTime"]);
        let stuck = started
            .and_then(|s| now.duration_since(s).ok())
            .unwrap_or_default();
        if *pull == "InvalidImageName" || stuck > pending_timeout {
            return Phase::Exited {
                exit_code: None,
                reason: Some(format!("image pull failed: {why}")),
            };
        }
        return Phase::Starting { reason: Some(why) };
    }
    match status {
        "Running" if container_status != "Waiting" => Phase::Running,
        _ => Phase::Starting {
            reason: (!info.is_empty()).then(|| info.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(status: &str, container: Value) -> Value {
        json!({"name": "e", "properties": {"status": status, "startTime": "2026-12-02T10:00:00+00:00",
               "detailedStatus": {"replicas": [{"name": "e-0", "containers": [container]}]}}})
    }

    fn now() -> SystemTime {
        time(&json!("2026-12-02T10:01:00Z")).unwrap()
    }

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[test]
    fn the_published_list_example_is_a_success_though_its_execution_says_running() {
        let example: Value =
            serde_json::from_str(include_str!("../tests/fixtures/Job_Executions_Get.json"))
                .unwrap();
        let execution = &example["responses"]["200"]["body"]["value"][0];
        assert_eq!(
            phase(execution, now(), FIVE_MINUTES),
            Phase::Exited {
                exit_code: Some(0),
                reason: None
            }
        );
        assert_eq!(ran(execution).unwrap().seconds(), 600);
    }

    #[test]
    fn exit_codes_pull_errors_and_stops() {
        let failed = at(
            "Failed",
            json!({"name": "main", "status": "Failed", "code": 3, "additionalInformation": "Error"}),
        );
        assert_eq!(
            phase(&failed, now(), FIVE_MINUTES),
            Phase::Exited {
                exit_code: Some(3),
                reason: Some("exited with code 3: Error".into())
            }
        );
        let pulling = at(
            "Processing",
            json!({"name": "main", "status": "Waiting", "additionalInformation": "ImagePullBackOff"}),
        );
        assert!(
            matches!(phase(&pulling, now(), FIVE_MINUTES), Phase::Starting { reason: Some(r) } if r.contains("ImagePullBackOff"))
        );
        assert!(
            matches!(phase(&pulling, now(), Duration::from_secs(30)), Phase::Exited { exit_code: None, reason: Some(r) } if r.starts_with("image pull failed"))
        );
        let stopped = at("Stopped", json!({"name": "main", "status": "Running"}));
        assert!(matches!(
            phase(&stopped, now(), FIVE_MINUTES),
            Phase::Exited {
                exit_code: None,
                ..
            }
        ));
        let running = at("Running", json!({"name": "main", "status": "Running"}));
        assert_eq!(phase(&running, now(), FIVE_MINUTES), Phase::Running);
    }
}

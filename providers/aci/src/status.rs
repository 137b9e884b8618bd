//! What a container group GET says about its job: ARM's provisioning state, the group's
//! instance view and the container's current state, with the reason taken from events. A
//! group of several steps ended with the first of them that exited non-zero, if one did.
//!
//! A Spot group's eviction: Azure gives no state for it, and restarts an evicted group by
//! itself ("the container groups hosting the customer workloads are automatically
//! restarted", Microsoft Learn, "Azure Container Instances Spot Containers"). The groups
//! offload makes have `restartPolicy: Never`, so nothing else restarts their container:
//! a Spot group's container with a `restartCount` above 0 was evicted, a preemption
//! (unless it has since finished its work: exit code 0).

use offload_provider::Phase;
use serde_json::Value;

use crate::group::CONTAINER;

pub fn phase(group: &Value) -> Phase {
    let props = &group["properties"];
    let container = props["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == CONTAINER).or(cs.first()))
        .map(|c| &c["properties"]);
    let view = container.map(|c| &c["instanceView"]);
    let current = view.map(|v| &v["currentState"]);
    let container_state = current.and_then(|c| c["state"].as_str()).unwrap_or("");
    let provisioning = props["provisioningState"].as_str().unwrap_or("");
    let group_state = props["instanceView"]["state"].as_str().unwrap_or("");
    let restarts = view.and_then(|v| v["restartCount"].as_u64()).unwrap_or(0);
    let succeeded = container_state == "Terminated"
        && current.and_then(|c| c["exitCode"].as_i64()) == Some(0);
    if props["priority"] == "Spot" && restarts > 0 && !succeeded {
        return Phase::Preempted {
            reason: format!(
                "ACI Spot eviction: Azure restarted the container group ({restarts} restart{})",
                if restarts == 1 { "" } else { "s" }
            ),
        };
    }

    // A group of several steps ended with the first that exited non-zero, if one did.
    if let Some((role, container, code)) = crate::steps::failed(group) {
        return match role.is_filer() {
            // What the filer said is in its log, which the provider reads for the reason.
            true => Phase::Exited {
                exit_code: None,
                reason: Some(offload_provider::steps::filer_failure(
                    role,
                    &format!("its container {container} exited with code {code}"),
                )),
            },
            false => Phase::Exited {
                exit_code: Some(code),
                reason: Some(format!("exited with code {code}")),
            },
        };
    }
    if container_state == "Terminated" {
        let current = current.unwrap();
        let exit_code = current["exitCode"].as_i64().map(|c| c as i32);
        let detail = current["detailStatus"].as_str().unwrap_or("");
        let reason = match exit_code {
            Some(0) => None,
            _ if detail.contains("OOM") || detail.contains("OutOfMemory") => {
                Some(format!("OOMKilled: {detail}"))
            }
            Some(code) if detail.is_empty() => Some(format!("exited with code {code}")),
            Some(code) => Some(format!("exited with code {code}: {detail}")),
            None => {
                Some(last_event(group).unwrap_or_else(|| "terminated without an exit code".into()))
            }
        };
        return Phase::Exited { exit_code, reason };
    }
    if provisioning == "Failed" || group_state == "Failed" {
        return Phase::Exited {
            exit_code: None,
            reason: Some(last_event(group).unwrap_or_else(|| "container group failed".into())),
        };
    }
    if group_state == "Stopped" || provisioning == "Canceled" {
        return Phase::Exited {
            exit_code: None,
            reason: Some("container group stopped".into()),
        };
    }
    if container_state == "Running" || group_state == "Running" || provisioning == "Succeeded" {
        return Phase::Running;
    }
    Phase::Starting {
        reason: last_event(group),
    }
}

/// The newest event of the group or its container, as "Name: message".
fn last_event(group: &Value) -> Option<String> {
    let props = &group["properties"];
    let mut events: Vec<&Value> = props["instanceView"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for c in props["containers"].as_array().into_iter().flatten() {
        events.extend(
            c["properties"]["instanceView"]["events"]
                .as_array()
                .into_iter()
                .flatten(),
        );
    }
    events
        .into_iter()
        .max_by_key(|e| e["lastTimestamp"].as_str().unwrap_or("").to_string())
        .map(|e| {
            let name = e["name"].as_str().unwrap_or("");
            let message = e["message"].as_str().unwrap_or("");
            format!("{name}: {message}")
                .trim_matches(|c| c == ':' || c == ' ')
                .to_string()
        })
}

//! A fake Azure Resource Manager for container groups. No ACI emulator exists, so this
//! serves the shapes of Microsoft's published examples (tests/fixtures, copied from
//! Azure/azure-rest-api-specs), behind ARM's gate for every call (`offload_arm::fake`:
//! token, api-version, throttling, the read bucket, the record of requests). It keeps
//! groups that a test moves through Pending → Running → Terminated (each of a group's init
//! containers too, with a log of its own), never returns a
//! `secureValue` (as ARM does not), and lists groups without their instance view (as the
//! published list example shows them). A stop does
//! what Microsoft's docs say ACI's does: it recycles the containers of a group still
//! running (their log goes with them) and leaves a group that already ended as it is.
//!
//! A PUT of a group that exists replaces it (200), as ACI's does; with `If-None-Match: *` it
//! is refused with 412 `PreconditionFailed` instead (ARM's conditional create, which
//! Bicep's `@onlyIfNotExists()` sends; no ACI document confirms that ACI honours it). It is
//! served with `offload_arm::fake::serve`, so that a test can lose an answer after the fake
//! carried the request out ([`FakeArm::fault`]).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
pub use offload_arm::fake::Fault;
pub use offload_arm::fake::TOKEN;
use offload_arm::fake::{arm_error, create_only, precondition_failed, Gate};
use serde_json::{json, Value};

pub const API_VERSION: &str = "2024-10-01-preview";
const GROUPS: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups";

#[derive(Default)]
struct Inner {
    groups: BTreeMap<String, Value>,
    /// What the next GETs of a group return instead (a published example).
    examples: BTreeMap<String, Value>,
    /// By group and container.
    logs: BTreeMap<(String, String), String>,
    /// PUTs that replaced a group that existed.
    replaced: u32,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

pub struct FakeArm {
    pub url: String,
    shared: Shared,
    gate: Gate,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeArm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A published example the fake serves, by its file name in tests/fixtures (built in, so
/// that the fake works from any crate that includes it, the gateway's benchmark too).
pub fn fixture(name: &str) -> Value {
    let text = match name {
        "ContainerGroupsGet_Succeeded.json" => {
            include_str!("../fixtures/ContainerGroupsGet_Succeeded.json")
        }
        "ContainerGroupsGet_Failed.json" => {
            include_str!("../fixtures/ContainerGroupsGet_Failed.json")
        }
        "ContainerListLogs.json" => include_str!("../fixtures/ContainerListLogs.json"),
        other => panic!("the fake serves no example {other}"),
    };
    serde_json::from_str(text).unwrap()
}

/// A group as GET returns it: ARM's shape, without secure values.
fn shown(group: &Value) -> Value {
    let mut group = group.clone();
    let props = &mut group["properties"];
    let (containers, init) = (props["containers"].take(), props["initContainers"].take());
    let mut lists = [containers, init];
    for c in lists.iter_mut().flat_map(|l| l.as_array_mut().into_iter().flatten()) {
        for e in c["properties"]["environmentVariables"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            e.as_object_mut().unwrap().remove("secureValue");
        }
    }
    let [containers, init] = lists;
    group["properties"]["containers"] = containers;
    if !init.is_null() {
        group["properties"]["initContainers"] = init;
    }
    group
}

async fn put_group(
    State(shared): State<Shared>,
    Path((sub, rg, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = shared.0.lock().unwrap();
    let existed = inner.groups.contains_key(&name);
    if existed && create_only(&headers) {
        return precondition_failed(&format!(
            "Microsoft.ContainerInstance/containerGroups/{name}"
        ));
    }
    if existed {
        inner.replaced += 1;
    }
    let mut group = body;
    group["id"] = json!(format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}"));
    group["name"] = json!(name);
    group["type"] = json!("Microsoft.ContainerInstance/containerGroups");
    group["properties"]["provisioningState"] = json!("Pending");
    group["properties"]["instanceView"] = json!({"state": "Pending", "events": []});
    inner.groups.insert(name, group.clone());
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(shown(&group))).into_response()
}

async fn get_group(
    State(shared): State<Shared>,
    Path((_sub, _rg, name)): Path<(String, String, String)>,
) -> Response {
    let inner = shared.0.lock().unwrap();
    if let Some(example) = inner.examples.get(&name) {
        return Json(example.clone()).into_response();
    }
    match inner.groups.get(&name) {
        Some(group) => Json(shown(group)).into_response(),
        None => arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.ContainerInstance/containerGroups/{name}' was not found."
            ),
        ),
    }
}

async fn delete_group(
    State(shared): State<Shared>,
    Path((_sub, _rg, name)): Path<(String, String, String)>,
) -> Response {
    match shared.0.lock().unwrap().groups.remove(&name) {
        Some(group) => Json(shown(&group)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn stop_group(
    State(shared): State<Shared>,
    Path((_sub, _rg, name)): Path<(String, String, String)>,
) -> Response {
    let mut guard = shared.0.lock().unwrap();
    let inner = &mut *guard;
    let Some(group) = inner.groups.get_mut(&name) else {
        return arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", "not found");
    };
    let state = &mut group["properties"]["instanceView"]["state"];
    if *state != "Succeeded" && *state != "Failed" {
        *state = json!("Stopped");
        inner.logs.retain(|(group, _), _| *group != name);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A list carries no instance view, as in the published ContainerGroupsListByResourceGroup
/// example: no group state, no container state or exit code (only `provisioningState`).
async fn list_groups(State(shared): State<Shared>) -> Response {
    let inner = shared.0.lock().unwrap();
    let listed = inner.groups.values().map(|group| {
        let mut group = shown(group);
        group["properties"]
            .as_object_mut()
            .unwrap()
            .remove("instanceView");
        for c in group["properties"]["containers"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            c["properties"]
                .as_object_mut()
                .unwrap()
                .remove("instanceView");
        }
        group
    });
    Json(json!({"value": listed.collect::<Vec<_>>()})).into_response()
}

async fn container_logs(
    State(shared): State<Shared>,
    Path((_sub, _rg, name, container)): Path<(String, String, String, String)>,
) -> Response {
    let inner = shared.0.lock().unwrap();
    if !inner.groups.contains_key(&name) {
        return arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", "not found");
    }
    // ContainerListLogs.json's shape.
    let mut body = fixture("ContainerListLogs.json")["responses"]["200"]["body"].clone();
    body["content"] = json!(inner.logs.get(&(name, container)).cloned().unwrap_or_default());
    Json(body).into_response()
}

impl FakeArm {
    pub async fn start() -> FakeArm {
        let shared = Shared::default();
        let gate = Gate::new(API_VERSION);
        let app = Router::new()
            .route(GROUPS, get(list_groups))
            .route(
                &format!("{GROUPS}/{{name}}"),
                get(get_group).put(put_group).delete(delete_group),
            )
            .route(&format!("{GROUPS}/{{name}}/stop"), post(stop_group))
            .route(
                &format!("{GROUPS}/{{name}}/containers/{{container}}/logs"),
                get(container_logs),
            )
            .with_state(shared.clone());
        let app = gate.guard(app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = offload_arm::fake::serve(listener, app);
        FakeArm {
            url,
            shared,
            gate,
            server,
        }
    }

    pub fn group(&self, name: &str) -> Option<Value> {
        self.shared.0.lock().unwrap().groups.get(name).cloned()
    }

    /// Moves a group on: its state, and its container's current state.
    pub fn set_state(&self, name: &str, group_state: &str, container: Value) {
        let mut inner = self.shared.0.lock().unwrap();
        let group = inner.groups.get_mut(name).expect("no such group");
        group["properties"]["provisioningState"] = json!("Succeeded");
        group["properties"]["instanceView"]["state"] = json!(group_state);
        group["properties"]["containers"][0]["properties"]["instanceView"] = container;
    }

    /// Sets the current state of one of a group's containers, `main` or an init container.
    pub fn set_step_state(&self, name: &str, container: &str, state: Value) {
        let mut inner = self.shared.0.lock().unwrap();
        let group = inner.groups.get_mut(name).expect("no such group");
        let props = &mut group["properties"];
        let mut all = ["initContainers", "containers"].map(|list| props[list].take());
        let found = all
            .iter_mut()
            .flat_map(|l| l.as_array_mut().into_iter().flatten())
            .find(|c| c["name"] == container)
            .expect("no such container");
        found["properties"]["instanceView"] = json!({"restartCount": 0, "currentState": state});
        let [init, containers] = all;
        props["initContainers"] = init;
        props["containers"] = containers;
    }

    /// Evicts a Spot group as Azure does: no state says so, the group is restarted, and its
    /// container's `restartCount` goes up.
    pub fn evict(&self, name: &str) {
        let mut inner = self.shared.0.lock().unwrap();
        let group = inner.groups.get_mut(name).expect("no such group");
        assert_eq!(group["properties"]["priority"], "Spot", "only Spot groups are evicted");
        group["properties"]["instanceView"]["state"] = json!("Running");
        let view = &mut group["properties"]["containers"][0]["properties"]["instanceView"];
        let restarts = view["restartCount"].as_u64().unwrap_or(0) + 1;
        *view = json!({"restartCount": restarts, "currentState": {"state": "Running"},
                       "previousState": {"state": "Terminated", "detailStatus": "Killed"}});
    }

    /// GETs of `name` answer with this published example's body.
    pub fn serve_example(&self, name: &str, file: &str) {
        let body = fixture(file)["responses"]["200"]["body"].clone();
        self.shared
            .0
            .lock()
            .unwrap()
            .examples
            .insert(name.to_string(), body);
    }

    /// Adds to the log of the group's `main` container.
    pub fn append_log(&self, name: &str, text: &str) {
        self.append_container_log(name, "main", text);
    }

    pub fn append_container_log(&self, name: &str, container: &str, text: &str) {
        self.shared
            .0
            .lock()
            .unwrap()
            .logs
            .entry((name.to_string(), container.to_string()))
            .or_default()
            .push_str(text);
    }

    /// The next `times` requests get 429 with `Retry-After: seconds`.
    pub fn throttle(&self, times: u32, seconds: u64) {
        self.gate.throttle(times, seconds);
    }

    /// How many PUTs replaced a group that existed.
    pub fn replaced(&self) -> u32 {
        self.shared.0.lock().unwrap().replaced
    }

    /// The next `times` requests with this method whose path ends with `suffix` meet
    /// `fault`.
    pub fn fault(&self, method: &'static str, suffix: &str, times: u32, fault: Fault) {
        self.gate.fault(method, suffix, times, fault);
    }

    /// Reads ARM would have refused with 429 because the subscription's bucket was empty.
    pub fn over_budget(&self) -> u32 {
        self.gate.over_budget()
    }

    /// (method, path and query, JSON body) of every request.
    pub fn requests(&self) -> Vec<(String, String, Option<Value>)> {
        self.gate.requests()
    }
}

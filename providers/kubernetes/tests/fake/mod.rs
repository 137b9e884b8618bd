//! A fake Kubernetes API server for pods and secrets, faithful to the conventions the
//! real client and watcher rely on: a resourceVersion counter, uid and
//! creationTimestamp on create, list + watch from a resourceVersion (with BOOKMARK events,
//! and an ERROR 410 Expired for a version older than the kept history), equality label
//! selectors, `Status` objects for AlreadyExists / NotFound, `/log` as text/plain with
//! `follow`, graceful deletion (deletionTimestamp first, removal when the test says the
//! kubelet is done), and garbage collection of objects owned by a removed pod.
//!
//! A test scripts the pod lifecycle (status, log, removal) and can drop every watch,
//! expire the history or hold every list (a slow API server), and reads back every request
//! the server answered.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

type Params = Query<BTreeMap<String, String>>;

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    pods: BTreeMap<String, Value>,
    secrets: BTreeMap<String, Value>,
    /// Pod changes kept for watches that resume from a version.
    history: Vec<Change>,
    /// Versions at or below this are gone: a watch from one gets 410.
    expired_below: u64,
    logs: BTreeMap<String, String>,
    requests: Vec<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch.
    disconnect: watch::Sender<u64>,
    /// While true, lists wait (a slow API server); watches are not held.
    lists_held: watch::Sender<bool>,
}

pub struct FakeApi {
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Equality-based selectors: `a=b`, `a==b`, `a!=b`, comma-separated.
fn matches(selector: Option<&String>, object: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let labels = &object["metadata"]["labels"];
    selector.split(',').all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            let v = v.trim_start_matches('=');
            labels[k.trim()].as_str() == Some(v.trim())
        } else {
            labels.get(term.trim()).is_some()
        }
    })
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }
}

impl Shared {
    /// Stores a pod change and tells the watches.
    fn record(&self, inner: &mut Inner, kind: &'static str, object: Value) {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let change = Change { rv, kind, object };
        inner.history.push(change.clone());
        let _ = self.changes.send(change);
    }

    fn remove_pod(&self, inner: &mut Inner, name: &str) -> Option<Value> {
        let mut pod = inner.pods.remove(name)?;
        let rv = inner.bump();
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        // The garbage collector: secrets owned by this pod go with it.
        let uid = pod["metadata"]["uid"].clone();
        inner.secrets.retain(|_, s| {
            !s["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
        });
        self.record(inner, "DELETED", pod.clone());
        Some(pod)
    }
}

async fn record_request(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let line = format!(
        "{} {}",
        request.method(),
        request.uri().path_and_query().map_or("", |p| p.as_str())
    );
    shared.inner.lock().unwrap().requests.push(line);
    next.run(request).await
}

async fn list_or_watch(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
    Query(params): Params,
) -> Response {
    if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch_pods(shared, ns, params);
    }
    let mut held = shared.lists_held.subscribe();
    let _ = held.wait_for(|held| !held).await;
    let inner = shared.inner.lock().unwrap();
    let selected: Vec<Value> = inner
        .pods
        .values()
        .filter(|p| p["metadata"]["namespace"] == ns.as_str())
        .filter(|p| matches(params.get("labelSelector"), p))
        .cloned()
        .collect();
    let start: usize = params
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = selected.iter().skip(start).take(limit).cloned().collect();
    let mut metadata = json!({"resourceVersion": inner.rv.to_string()});
    if start + page.len() < selected.len() {
        metadata["continue"] = json!((start + page.len()).to_string());
    }
    Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": page}))
        .into_response()
}

fn watch_pods(shared: Arc<Shared>, ns: String, params: BTreeMap<String, String>) -> Response {
    let selector = params.get("labelSelector").cloned();
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(300u64);
    let from: Option<u64> = params
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .filter(|rv| *rv > 0);
    let mut changes = shared.changes.subscribe();
    let mut disconnect = shared.disconnect.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let line = |kind: &str, object: &Value| {
        let mut text = json!({"type": kind, "object": object}).to_string();
        text.push('\n');
        Bytes::from(text)
    };
    // What the watch starts with, under the lock, so nothing falls between it and the feed.
    let (backlog, mut last) = {
        let inner = shared.inner.lock().unwrap();
        match from {
            Some(rv) if rv < inner.expired_below => {
                let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {rv} ({})", inner.expired_below),
                    "reason": "Expired", "code": 410});
                (vec![line("ERROR", &gone)], u64::MAX)
            }
            Some(rv) => (
                inner
                    .history
                    .iter()
                    .filter(|c| c.rv > rv && c.object["metadata"]["namespace"] == ns.as_str())
                    .filter(|c| matches(selector.as_ref(), &c.object))
                    .map(|c| line(c.kind, &c.object))
                    .collect(),
                inner.rv,
            ),
            // No version: every current object as ADDED, then changes.
            None => (
                inner
                    .pods
                    .values()
                    .filter(|p| {
                        p["metadata"]["namespace"] == ns.as_str() && matches(selector.as_ref(), p)
                    })
                    .map(|p| line("ADDED", p))
                    .collect(),
                inner.rv,
            ),
        }
    };
    tokio::spawn(async move {
        for chunk in backlog {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        if last == u64::MAX {
            return; // 410: the client must list again.
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            let chunk = tokio::select! {
                // A dropped connection delivers nothing more, even a change already sent.
                biased;
                _ = disconnect.changed() => return,
                _ = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => {
                    let rv = shared.inner.lock().unwrap().rv;
                    line("BOOKMARK", &json!({"kind": "Pod", "apiVersion": "v1",
                                             "metadata": {"resourceVersion": rv.to_string()}}))
                }
                change = changes.recv() => match change {
                    Ok(c) if c.rv > last => {
                        last = c.rv;
                        if c.object["metadata"]["namespace"] != ns.as_str() || !matches(selector.as_ref(), &c.object) {
                            continue;
                        }
                        line(c.kind, &c.object)
                    }
                    Ok(_) => continue,
                    Err(_) => return,
                },
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn create_pod(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
    Json(mut pod): Json<Value>,
) -> Response {
    let mut inner = shared.inner.lock().unwrap();
    let Some(name) = pod["metadata"]["name"].as_str().map(str::to_string) else {
        return status(
            422,
            "Invalid",
            "Pod \"\" is invalid: metadata.name: Required value".into(),
        );
    };
    if inner.pods.contains_key(&name) {
        return status(
            409,
            "AlreadyExists",
            format!("pods \"{name}\" already exists"),
        );
    }
    let rv = inner.bump();
    let meta = &mut pod["metadata"];
    meta["namespace"] = json!(ns);
    meta["uid"] = json!(uuid::Uuid::now_v7().to_string());
    meta["creationTimestamp"] = json!(now());
    meta["resourceVersion"] = json!(rv.to_string());
    pod["status"] = json!({"phase": "Pending"});
    inner.pods.insert(name, pod.clone());
    shared.record(&mut inner, "ADDED", pod.clone());
    (StatusCode::CREATED, Json(pod)).into_response()
}

async fn get_pod(
    State(shared): State<Arc<Shared>>,
    Path((_ns, name)): Path<(String, String)>,
) -> Response {
    match shared.inner.lock().unwrap().pods.get(&name) {
        Some(pod) => Json(pod.clone()).into_response(),
        None => status(404, "NotFound", format!("pods \"{name}\" not found")),
    }
}

async fn delete_pod(
    State(shared): State<Arc<Shared>>,
    Path((_ns, name)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let grace = options["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| {
            params
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse().ok())
        })
        .unwrap_or(30);
    let mut inner = shared.inner.lock().unwrap();
    if !inner.pods.contains_key(&name) {
        return status(404, "NotFound", format!("pods \"{name}\" not found"));
    }
    if grace == 0 {
        let pod = shared.remove_pod(&mut inner, &name).unwrap();
        return Json(pod).into_response();
    }
    // Graceful: marked now, removed once the kubelet has stopped it (`FakeApi::remove_pod`).
    let rv = inner.bump();
    let pod = inner.pods.get_mut(&name).unwrap();
    if pod["metadata"]["deletionTimestamp"].is_null() {
        pod["metadata"]["deletionTimestamp"] = json!(now());
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    }
    pod["metadata"]["resourceVersion"] = json!(rv.to_string());
    let pod = pod.clone();
    shared.record(&mut inner, "MODIFIED", pod.clone());
    (StatusCode::OK, Json(pod)).into_response()
}

async fn pod_log(
    State(shared): State<Arc<Shared>>,
    Path((_ns, name)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    // Each container has its log; `main`'s is the pod's own, as a test appends it.
    let log_key = match params.get("container").map(String::as_str) {
        Some(c) if c != "main" => format!("{name}/{c}"),
        _ => name.clone(),
    };
    let (exists, text) = {
        let inner = shared.inner.lock().unwrap();
        (
            inner.pods.contains_key(&name),
            inner.logs.get(&log_key).cloned().unwrap_or_default(),
        )
    };
    if !exists {
        return status(404, "NotFound", format!("pods \"{name}\" not found"));
    }
    if params.get("follow").is_none_or(|f| f != "true") {
        return ([(header::CONTENT_TYPE, "text/plain")], text).into_response();
    }
    // Follow: what there is, then what the test appends, until the pod ends or is gone.
    let stream = futures::stream::unfold(
        (shared, name, 0usize, false),
        |(shared, name, sent, done)| async move {
            if done {
                return None;
            }
            loop {
                let (text, ended) = {
                    let inner = shared.inner.lock().unwrap();
                    let phase = inner
                        .pods
                        .get(&name)
                        .map(|p| p["status"]["phase"].as_str().unwrap_or("").to_string());
                    let ended = phase
                        .as_deref()
                        .is_none_or(|p| p == "Succeeded" || p == "Failed");
                    (inner.logs.get(&name).cloned().unwrap_or_default(), ended)
                };
                if text.len() > sent || ended {
                    let chunk = Bytes::from(text[sent..].to_string());
                    return Some((
                        Ok::<_, Infallible>(chunk),
                        (shared, name, text.len(), ended),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn create_secret(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
    Json(mut secret): Json<Value>,
) -> Response {
    let mut inner = shared.inner.lock().unwrap();
    let name = secret["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if inner.secrets.contains_key(&name) {
        return status(
            409,
            "AlreadyExists",
            format!("secrets \"{name}\" already exists"),
        );
    }
    let rv = inner.bump();
    secret["metadata"]["namespace"] = json!(ns);
    secret["metadata"]["uid"] = json!(uuid::Uuid::now_v7().to_string());
    secret["metadata"]["creationTimestamp"] = json!(now());
    secret["metadata"]["resourceVersion"] = json!(rv.to_string());
    inner.secrets.insert(name, secret.clone());
    (StatusCode::CREATED, Json(secret)).into_response()
}

async fn delete_secret(
    State(shared): State<Arc<Shared>>,
    Path((_ns, name)): Path<(String, String)>,
) -> Response {
    match shared.inner.lock().unwrap().secrets.remove(&name) {
        Some(secret) => Json(secret).into_response(),
        None => status(404, "NotFound", format!("secrets \"{name}\" not found")),
    }
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let (changes, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            inner: Mutex::default(),
            changes,
            disconnect: watch::channel(0).0,
            lists_held: watch::channel(false).0,
        });
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/pods",
                get(list_or_watch).post(create_pod),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(get_pod).delete(delete_pod),
            )
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .route(
                "/api/v1/namespaces/{ns}/secrets",
                axum::routing::post(create_secret),
            )
            .route(
                "/api/v1/namespaces/{ns}/secrets/{name}",
                axum::routing::delete(delete_secret),
            )
            .layer(middleware::from_fn_with_state(
                shared.clone(),
                record_request,
            ))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeApi {
            url,
            shared,
            server,
        }
    }

    /// A kubeconfig with one context, `fake`, pointing here.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: jobs\nusers:\n- name: fake\n  user: {{}}\n",
            self.url
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        self.shared.inner.lock().unwrap().pods.get(name).cloned()
    }

    pub fn secret(&self, name: &str) -> Option<Value> {
        self.shared.inner.lock().unwrap().secrets.get(name).cloned()
    }

    /// What the kubelet would report: replaces the pod's status.
    pub fn set_status(&self, name: &str, status: Value) {
        let shared = &self.shared;
        let mut inner = shared.inner.lock().unwrap();
        let rv = inner.bump();
        let pod = inner.pods.get_mut(name).expect("no such pod");
        pod["status"] = status;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let pod = pod.clone();
        shared.record(&mut inner, "MODIFIED", pod);
    }

    /// Appends to the log of one container of a pod other than `main` (an init container).
    pub fn append_container_log(&self, name: &str, container: &str, text: &str) {
        self.append_log(&format!("{name}/{container}"), text);
    }

    pub fn append_log(&self, name: &str, text: &str) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner
            .logs
            .entry(name.to_string())
            .or_default()
            .push_str(text);
    }

    /// The kubelet is done with a pod being deleted (or it is removed by force).
    pub fn remove_pod(&self, name: &str) {
        let shared = &self.shared;
        let mut inner = shared.inner.lock().unwrap();
        shared.remove_pod(&mut inner, name);
    }

    /// Ends every open watch, as a dropped connection or an API server restart would.
    pub fn drop_watches(&self) {
        self.shared.disconnect.send_modify(|n| *n += 1);
    }

    /// Lists wait until `release_lists`, as on an API server slow to list.
    pub fn hold_lists(&self) {
        self.shared.lists_held.send_replace(true);
    }

    pub fn release_lists(&self) {
        self.shared.lists_held.send_replace(false);
    }

    /// Forgets the change history (etcd compaction): a watch resuming from any version
    /// seen so far gets 410 Gone and must list again.
    pub fn expire_history(&self) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.expired_below = inner.rv + 1;
        inner.history.clear();
    }

    pub fn requests(&self) -> Vec<String> {
        self.shared.inner.lock().unwrap().requests.clone()
    }
}

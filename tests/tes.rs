//! The GA4GH TES API end to end over HTTP, against an in-process gateway whose local
//! provider runs real processes (and the real `offload` binary as its filer): tasks
//! created, read in every view, listed with every filter and paged, cancelled; executors
//! in order sharing volumes; inputs and outputs staged from and to the local filesystem, a
//! local HTTP server and moto's S3; malformed tasks refused naming their fields; tenants
//! kept apart.

mod common;
#[cfg(feature = "aci")]
#[path = "../providers/aci/tests/fake_arm/mod.rs"]
mod fake_arm;
#[cfg(feature = "ecs")]
#[path = "../providers/ecs/tests/common/mod.rs"]
mod moto;

use std::time::Duration;

use common::{Gateway, TOKEN_A, TOKEN_B};
use reqwest::Method;
use serde_json::{json, Value};

const TES: &str = "/ga4gh/tes/v1";

/// A local provider with the real binary as its filer, and `staging` appended.
fn providers(staging: &str) -> String {
    format!(
        r#"
[providers.local]
kind = "local"
allow_several_tenants = true
workdir = "$DIR/local"
grace_seconds = 1
poll_interval_ms = 50
filer = "{}"
{staging}
"#,
        env!("CARGO_BIN_EXE_offload")
    )
}

async fn create(gw: &Gateway, token: &str, task: Value) -> (u16, Value) {
    let r = gw
        .req(Method::POST, &format!("{TES}/tasks"), token)
        .json(&task)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn created(gw: &Gateway, task: Value) -> String {
    let (status, body) = create(gw, TOKEN_A, task).await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn task(gw: &Gateway, id: &str, view: &str) -> Value {
    let (status, body) = gw.get(TOKEN_A, &format!("{TES}/tasks/{id}?view={view}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

const ENDED: [&str; 5] = ["COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"];

/// Polls the task until its state has ended; its FULL view then.
async fn ended(gw: &Gateway, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let t = task(gw, id, "MINIMAL").await;
        if ENDED.contains(&t["state"].as_str().unwrap()) {
            return task(gw, id, "FULL").await;
        }
        assert!(tokio::time::Instant::now() < deadline, "task {id} did not end: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn echo(name: &str) -> Value {
    json!({"name": name, "executors": [{"image": "alpine", "command": ["echo", "hello"]}]})
}

#[tokio::test]
async fn a_task_is_a_job_created_read_in_every_view_and_completed() {
    let gw = Gateway::start(&providers("")).await;
    let (status, info) = gw.get(TOKEN_A, &format!("{TES}/service-info")).await;
    assert_eq!(status, 200);
    assert_eq!(info["type"], json!({"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}));
    assert!(info["tesResources_backend_parameters"]
        .as_array()
        .unwrap()
        .contains(&json!("provider")));

    let mut t = echo("first");
    t["description"] = json!("says hello");
    t["tags"] = json!({"project": "x", "empty": ""});
    t["resources"] = json!({"cpu_cores": 1, "ram_gb": 0.5, "backend_parameters": {"VmSize": "big"}});
    let id = created(&gw, t).await;
    assert_eq!(task(&gw, &id, "MINIMAL").await.as_object().unwrap().len(), 2);
    let full = ended(&gw, &id).await;
    assert_eq!(full["state"], "COMPLETE", "{full}");
    assert_eq!(full["name"], "first");
    assert_eq!(full["description"], "says hello");
    assert_eq!(full["tags"], json!({"project": "x", "empty": ""}));
    assert_eq!(full["executors"][0]["command"], json!(["echo", "hello"]));
    assert_eq!(full["resources"]["cpu_cores"], 1);
    assert_eq!(full["resources"]["ram_gb"], 0.5);
    // An unsupported parameter is neither stored nor returned.
    assert!(full["resources"].get("backend_parameters").is_none(), "{full}");
    let log = &full["logs"][0];
    assert_eq!(log["logs"][0]["exit_code"], 0);
    assert_eq!(log["logs"][0]["stdout"], "hello\n");
    assert!(log["start_time"].is_string() && log["end_time"].is_string());
    // BASIC leaves out the executors' output and the system logs.
    let basic = task(&gw, &id, "BASIC").await;
    assert!(basic["logs"][0]["logs"][0].get("stdout").is_none(), "{basic}");
    assert!(basic["logs"][0].get("system_logs").is_none(), "{basic}");
    assert_eq!(basic["name"], "first");

    // The same job on /v1: its name, its tags as labels, its cost like any job's.
    let (status, job) = gw.get(TOKEN_A, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(job["spec"]["name"], "first");
    assert_eq!(job["labels"]["project"], "x");
    assert!(job["cost"]["usd"].is_number(), "{job}");
    let (_, costs) = gw.get(TOKEN_A, "/v1/costs?group_by=label:project").await;
    assert_eq!(costs["groups"][0]["key"], "x", "{costs}");
    assert_eq!(costs["groups"][0]["jobs"], 1);

    // Another tenant reaches nothing of it.
    let (status, _) = gw.get(TOKEN_B, &format!("{TES}/tasks/{id}")).await;
    assert_eq!(status, 404);
    let (_, listed) = gw.get(TOKEN_B, &format!("{TES}/tasks")).await;
    assert_eq!(listed["tasks"], json!([]));
    let r = gw
        .req(Method::POST, &format!("{TES}/tasks/{id}:cancel"), TOKEN_B)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (status, _) = gw.get("wrong-token-0123456789", &format!("{TES}/tasks")).await;
    assert_eq!(status, 401);

    // A task is read with GET, cancelled with POST to its :cancel: each refuses the
    // other's methods with its own Allow.
    for (method, path, allow) in [
        (Method::POST, format!("{TES}/tasks/{id}"), "GET,HEAD"),
        (Method::DELETE, format!("{TES}/tasks/{id}"), "GET,HEAD"),
        (Method::GET, format!("{TES}/tasks/{id}:cancel"), "POST"),
        (Method::PUT, format!("{TES}/tasks/{id}:cancel"), "POST"),
    ] {
        let r = gw.req(method.clone(), &path, TOKEN_A).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
    }
}

#[tokio::test]
async fn malformed_tasks_are_refused_naming_the_field() {
    let gw = Gateway::start(&providers("")).await;
    let cases = [
        (json!({"executors": []}), "executors"),
        (json!({"name": "x"}), "executors"),
        (
            json!({"executors": [{"image": "a", "command": ["true"]}],
                   "inputs": [{"url": "ftp://host/file", "path": "/data/f"}]}),
            "inputs[0].url",
        ),
        (
            json!({"executors": [{"image": "a", "command": ["true"]}],
                   "inputs": [{"content": "x", "path": "data/f"}]}),
            "inputs[0].path",
        ),
        (
            json!({"executors": [{"image": "a", "command": ["true"], "workdir": "rel"}]}),
            "executors[0].workdir",
        ),
        (
            json!({"executors": [{"image": "a", "command": ["true"]}],
                   "outputs": [{"url": "s3://b/o", "path": "/out/x"}]}),
            "outputs[0].url",
        ),
        (
            json!({"executors": [{"image": "a", "command": ["true"]}],
                   "resources": {"backend_parameters": {"INVALID": "x"}, "backend_parameters_strict": true}}),
            "resources.backend_parameters.INVALID",
        ),
        (
            json!({"executors": [{"image": "a", "command": ["true"]}], "resources": {"ram_gb": -1}}),
            "resources.ram_gb",
        ),
        (
            json!({"executors": [{"image": "a", "command": ["true"]}], "resources": {"zones": ["moon"]}}),
            "resources.zones[0]",
        ),
        (
            json!({"executors": [{"image": "a", "command": "true"}]}),
            "executors[0].command",
        ),
        (
            json!({"executors": [{"image": "a", "command": ["true"]}],
                   "inputs": [{"url": "file:///etc/passwd", "path": "/data/p"}]}),
            "inputs[0].url",
        ),
        // serde's derive would take a struct as an array of its fields; the schema does not.
        (
            json!({"executors": [{"image": "a", "command": ["true"]}], "resources": [null, null]}),
            "resources",
        ),
        (json!({"executors": [["a", ["true"]]]}), "executors[0]"),
        (
            json!({"executors": [{"image": "a", "command": ["true"]}], "inputs": [["/data/x"]]}),
            "inputs[0]",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = create(&gw, TOKEN_A, body.clone()).await;
        assert_eq!(status, 400, "{body}: {problem}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{body}: wanted {field} in {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{problem}");
    }
    let (status, problem) = gw.get(TOKEN_A, &format!("{TES}/tasks?page_size=5000")).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "page_size");
    let (status, _) = gw.get(TOKEN_A, &format!("{TES}/tasks?state=DONE")).await;
    assert_eq!(status, 400);
    let (status, _) = gw.get(TOKEN_A, &format!("{TES}/tasks/not-a-task")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn listing_filters_by_name_state_and_tags_pages_and_views() {
    let gw = Gateway::start(&providers("")).await;
    let mut a = echo("e70dda48-ComplianceTest");
    a["tags"] = json!({"foo": "bar", "baz": "bat", "lorem": "ipsum"});
    let a = created(&gw, a).await;
    let mut b = echo("ComplianceTest-f9327c19");
    b["tags"] = json!({"abcxyz": ""});
    let b = created(&gw, b).await;
    let c = created(
        &gw,
        json!({"name": "fails", "executors": [{"image": "a", "command": ["sh", "-c", "exit 4"]}]}),
    )
    .await;
    for id in [&a, &b, &c] {
        ended(&gw, id).await;
    }
    let ids = |page: &Value| -> Vec<String> {
        page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let list = |q: &str| {
        let gw = &gw;
        let q = q.to_string();
        async move {
            let (status, page) = gw.get(TOKEN_A, &format!("{TES}/tasks?{q}")).await;
            assert_eq!(status, 200, "{q}: {page}");
            page
        }
    };
    assert_eq!(ids(&list("").await), [c.clone(), b.clone(), a.clone()]);
    assert_eq!(ids(&list("name_prefix=e70dda48").await), [a.clone()]);
    assert_eq!(ids(&list("name_prefix=f9327c19").await), Vec::<String>::new());
    assert_eq!(ids(&list("state=COMPLETE").await), [b.clone(), a.clone()]);
    assert_eq!(ids(&list("state=EXECUTOR_ERROR").await), [c.clone()]);
    assert_eq!(ids(&list("state=SYSTEM_ERROR").await), Vec::<String>::new());
    assert_eq!(ids(&list("state=PAUSED").await), Vec::<String>::new());
    // Keys and values zipped; a key without a value matches any value.
    assert_eq!(
        ids(&list("tag_key=foo&tag_key=lorem&tag_key=baz&tag_value=bar&tag_value=ipsum").await),
        [a.clone()]
    );
    assert_eq!(ids(&list("tag_key=foo&tag_key=extra&tag_value=bar").await), Vec::<String>::new());
    assert_eq!(ids(&list("tag_key=foo&tag_value=wrong").await), Vec::<String>::new());
    assert_eq!(ids(&list("tag_key=abcxyz").await), [b.clone()]);
    // Pages.
    let first = list("page_size=2").await;
    assert_eq!(ids(&first), [c.clone(), b.clone()]);
    let token = first["next_page_token"].as_str().unwrap();
    let second = list(&format!("page_size=2&page_token={token}")).await;
    assert_eq!(ids(&second), [a.clone()]);
    assert!(second.get("next_page_token").is_none(), "{second}");
    // Views.
    let minimal = list("view=MINIMAL").await;
    assert_eq!(minimal["tasks"][0].as_object().unwrap().len(), 2, "{minimal}");
    let basic = list("view=BASIC&name_prefix=fails").await;
    assert_eq!(basic["tasks"][0]["logs"][0]["logs"][0]["exit_code"], 4, "{basic}");
    assert!(basic["tasks"][0]["logs"][0]["logs"][0].get("stdout").is_none());
    let full = list("view=FULL&name_prefix=fails").await;
    assert_eq!(full["tasks"][0]["logs"][0]["system_logs"], json!(["exited with code 4"]));
}

#[tokio::test]
async fn executors_run_in_order_sharing_volumes_and_stop_at_the_first_failure() {
    let gw = Gateway::start(&providers("")).await;
    let id = created(
        &gw,
        json!({
            "name": "pipeline",
            "volumes": ["/vol/A"],
            "inputs": [{"content": "in\n", "path": "/data/in.txt"}],
            "executors": [
                {"image": "alpine", "command": ["sh", "-c", "cat /data/in.txt > /vol/A/one; echo $X"], "env": {"X": "first"}},
                {"image": "ubuntu", "command": ["ERROR"], "ignore_error": true},
                {"image": "alpine", "command": ["sh", "-c", "cat /vol/A/one; pwd"], "workdir": "/vol/A",
                 "stdout": "/vol/A/out.txt"},
                {"image": "alpine", "command": ["sh", "-c", "cat < /vol/A/out.txt; exit 2"], "stdin": "/vol/A/one"},
                {"image": "alpine", "command": ["echo", "never"]},
            ],
        }),
    )
    .await;
    let full = ended(&gw, &id).await;
    assert_eq!(full["state"], "EXECUTOR_ERROR", "{full}");
    let logs = full["logs"][0]["logs"].as_array().unwrap();
    let codes: Vec<&Value> = logs.iter().map(|l| &l["exit_code"]).collect();
    assert_eq!(codes, [&json!(0), &json!(127), &json!(0), &json!(2)], "{full}");
    assert_eq!(logs[0]["stdout"], "first\n");
    assert!(logs[1]["stdout"].as_str().unwrap().contains("ERROR"), "{full}");
    assert_eq!(logs[2]["stdout"], "", "stdout went to its file");
    assert_eq!(logs[3]["stdout"], "in\n/vol/A\n");
    for l in logs {
        assert!(l["start_time"].as_str().unwrap() <= l["end_time"].as_str().unwrap());
    }

    // The compliance suite's pair: without ignore_error the first failure stops the rest.
    let stop = created(
        &gw,
        json!({"executors": [
            {"image": "alpine", "command": ["ERROR"], "ignore_error": false},
            {"image": "alpine", "command": ["echo", "hello"]},
        ]}),
    )
    .await;
    let go_on = created(
        &gw,
        json!({"executors": [
            {"image": "alpine", "command": ["ERROR"], "ignore_error": true},
            {"image": "alpine", "command": ["echo", "hello"]},
        ]}),
    )
    .await;
    let stopped = ended(&gw, &stop).await;
    assert_eq!(stopped["state"], "EXECUTOR_ERROR");
    assert_eq!(stopped["logs"][0]["logs"].as_array().unwrap().len(), 1);
    let went_on = ended(&gw, &go_on).await;
    assert_eq!(went_on["state"], "COMPLETE", "{went_on}");
    assert_eq!(went_on["logs"][0]["logs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_cancelled_task_ends_canceled() {
    let gw = Gateway::start(&providers("")).await;
    let id = created(
        &gw,
        json!({"executors": [{"image": "a", "command": ["sleep", "30"]}], "volumes": ["/v"]}),
    )
    .await;
    gw.wait_state(TOKEN_A, &id, "running", 30).await;
    assert_eq!(task(&gw, &id, "MINIMAL").await["state"], "RUNNING");
    for _ in 0..2 {
        let r = gw
            .req(Method::POST, &format!("{TES}/tasks/{id}:cancel"), TOKEN_A)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({}));
    }
    assert_eq!(ended(&gw, &id).await["state"], "CANCELED");
    let (_, page) = gw.get(TOKEN_A, &format!("{TES}/tasks?state=CANCELED")).await;
    assert_eq!(page["tasks"][0]["id"], json!(id));
}

/// A small HTTP server on loopback that answers `body` to every GET.
async fn http_server(body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn inputs_and_outputs_are_staged_from_files_and_http_within_the_allow_lists() {
    let shared = tempfile::tempdir().unwrap();
    let src = shared.path().join("src");
    let dst = shared.path().join("dst");
    std::fs::create_dir_all(src.join("ref")).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("ref/r1"), "r1\n").unwrap();
    let web = http_server("from the web\n").await;
    let staging = format!(
        "[staging]\nallow_private_addresses = true\n[staging.tenants.a]\nread = [\"file://{}\", \"{web}/\"]\nwrite = [\"file://{}\"]\n",
        src.display(),
        dst.display()
    );
    let gw = Gateway::start(&providers(&staging)).await;
    let file = |p: &std::path::Path| format!("file://{}", p.display());
    let id = created(
        &gw,
        json!({
            "inputs": [
                {"url": file(&src.join("a.txt")), "path": "/data/a.txt"},
                {"url": file(&src.join("ref")), "path": "/data/ref", "type": "DIRECTORY"},
                {"url": format!("{web}/page"), "path": "/data/page.txt"},
                {"content": "inline\n", "path": "/data/inline.txt"},
            ],
            "outputs": [
                {"url": file(&dst.join("all.txt")), "path": "/out/all.txt"},
                {"url": file(&dst.join("many")), "path": "/out/*.part", "path_prefix": "/out"},
            ],
            "executors": [{"image": "alpine", "command": ["sh", "-c",
                "cat /data/a.txt /data/ref/r1 /data/page.txt /data/inline.txt > /out/all.txt; echo 1 > /out/x.part; echo 2 > /out/y.part"]}],
        }),
    )
    .await;
    let full = ended(&gw, &id).await;
    assert_eq!(full["state"], "COMPLETE", "{full}");
    assert_eq!(
        std::fs::read_to_string(dst.join("all.txt")).unwrap(),
        "alpha\nr1\nfrom the web\ninline\n"
    );
    assert_eq!(std::fs::read_to_string(dst.join("many/x.part")).unwrap(), "1\n");
    let outputs = &full["logs"][0]["outputs"];
    assert_eq!(outputs.as_array().unwrap().len(), 3, "{full}");
    assert_eq!(outputs[0]["url"], json!(file(&dst.join("all.txt"))));
    assert_eq!(outputs[0]["path"], "/out/all.txt");
    assert_eq!(outputs[0]["size_bytes"], "29");
    assert_eq!(outputs[2]["url"], json!(file(&dst.join("many/y.part"))));
    // The filer steps are not executors.
    assert_eq!(full["logs"][0]["logs"].as_array().unwrap().len(), 1);

    // A download that fails is a SYSTEM_ERROR naming the URL and the cause; the task's
    // record stays.
    let missing = file(&src.join("missing.txt"));
    let failed = created(
        &gw,
        json!({"inputs": [{"url": missing, "path": "/data/m"}],
               "executors": [{"image": "a", "command": ["true"]}]}),
    )
    .await;
    let full = ended(&gw, &failed).await;
    assert_eq!(full["state"], "SYSTEM_ERROR", "{full}");
    let why = full["logs"][0]["system_logs"][0].as_str().unwrap();
    assert!(why.starts_with("staging the inputs failed: ") && why.contains(&missing), "{why}");
    assert!(full["logs"][0]["logs"].as_array().unwrap().is_empty(), "{full}");
}

#[tokio::test]
async fn http_inputs_never_reach_loopback_unless_the_operator_allows() {
    let staging = "[staging.tenants.a]\nread = [\"http://127.0.0.1/\", \"http://localhost/\"]\n";
    let gw = Gateway::start(&providers(staging)).await;
    for url in ["http://127.0.0.1/x", "http://localhost/x"] {
        let (status, problem) = create(
            &gw,
            TOKEN_A,
            json!({"inputs": [{"url": url, "path": "/data/x"}],
                   "executors": [{"image": "a", "command": ["true"]}]}),
        )
        .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["errors"][0]["field"], "inputs[0].url", "{problem}");
        assert!(problem["errors"][0]["message"].as_str().unwrap().contains("allow_private_addresses"));
    }
}

/// Inputs from and outputs to an S3 bucket that moto serves, with the deployment's
/// credentials (the gateway's AWS_* variables), never the task's.
#[cfg(feature = "ecs")]
#[tokio::test]
async fn inputs_and_outputs_are_staged_through_moto_s3() {
    let moto = moto::Moto::start();
    let endpoint = moto.aws.endpoint.clone();
    std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_DEFAULT_REGION", &moto.aws.region);
    let http = reqwest::Client::new();
    let put = |path: &str, body: &'static str| http.put(format!("{endpoint}/{path}")).body(body).send();
    assert!(put("tes-bucket", "").await.unwrap().status().is_success());
    assert!(put("tes-bucket/in/a.txt", "alpha\n").await.unwrap().status().is_success());
    assert!(put("tes-bucket/in/dir/b.txt", "beta\n").await.unwrap().status().is_success());
    let staging = "[staging.tenants.a]\nread = [\"s3://tes-bucket/in/\"]\nwrite = [\"s3://tes-bucket/out/\"]\n";
    let gw = Gateway::start(&providers(staging)).await;
    let id = created(
        &gw,
        json!({
            "inputs": [
                {"url": "s3://tes-bucket/in/a.txt", "path": "/data/a.txt"},
                {"url": "s3://tes-bucket/in/dir", "path": "/data/dir", "type": "DIRECTORY"},
            ],
            "outputs": [
                {"url": "s3://tes-bucket/out/joined.txt", "path": "/data/joined.txt"},
                {"url": "s3://tes-bucket/out/copy", "path": "/data/dir", "type": "DIRECTORY"},
            ],
            "executors": [{"image": "alpine", "command": ["sh", "-c", "cat /data/a.txt /data/dir/b.txt > /data/joined.txt"]}],
        }),
    )
    .await;
    let full = ended(&gw, &id).await;
    assert_eq!(full["state"], "COMPLETE", "{full}");
    // Read back as the deployment would: signed, with its credentials.
    let bucket = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name("tes-bucket")
        .build()
        .unwrap();
    let read = |key: &'static str| {
        let bucket = &bucket;
        async move {
            use object_store::ObjectStore;
            let got = bucket.get(&key.into()).await.unwrap().bytes().await.unwrap();
            String::from_utf8(got.to_vec()).unwrap()
        }
    };
    assert_eq!(read("out/joined.txt").await, "alpha\nbeta\n");
    assert_eq!(read("out/copy/b.txt").await, "beta\n");
    let urls: Vec<&str> = full["logs"][0]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls, ["s3://tes-bucket/out/joined.txt", "s3://tes-bucket/out/copy/b.txt"]);

    // Outside the allow-list: refused at submit.
    let (status, problem) = create(
        &gw,
        TOKEN_A,
        json!({"outputs": [{"url": "s3://tes-bucket/elsewhere/x", "path": "/data/x"}],
               "executors": [{"image": "a", "command": ["true"]}]}),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "outputs[0].url");
    // An object that is not there: SYSTEM_ERROR naming the URL.
    let id = created(
        &gw,
        json!({"inputs": [{"url": "s3://tes-bucket/in/none.txt", "path": "/data/n"}],
               "executors": [{"image": "a", "command": ["true"]}]}),
    )
    .await;
    let full = ended(&gw, &id).await;
    assert_eq!(full["state"], "SYSTEM_ERROR", "{full}");
    let why = full["logs"][0]["system_logs"][0].as_str().unwrap();
    assert!(why.contains("s3://tes-bucket/in/none.txt"), "{why}");
}

/// On ECS (moto's), a task of several executors is one ECS task of dependent containers:
/// each step's exit code and log are the task's executor logs, an ignored error is kept,
/// and a filer that fails makes a SYSTEM_ERROR whose system log is the filer's own line.
#[cfg(feature = "ecs")]
#[tokio::test]
async fn on_ecs_executors_are_dependent_containers_whose_logs_are_kept() {
    let moto = moto::Moto::start();
    let providers = moto.gateway_provider(&format!(
        "log_group = \"{}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/offload-execution\"\n\
         filer_image = \"offload:1\"\npoll_interval_ms = 100",
        moto.aws.log_group
    ));
    let gw = Gateway::start(&providers).await;
    let task = |name: &str| {
        json!({
            "name": name,
            "inputs": [{"content": "b\na\n", "path": "/data/in.txt"}],
            "executors": [
                {"image": "alpine", "command": ["sort", "/data/in.txt"]},
                {"image": "alpine", "command": ["sh", "-c", "echo hi; exit 4"], "ignore_error": true},
            ],
            "resources": {"backend_parameters": {"provider": "fargate"}},
        })
    };
    let fine = created(&gw, task("fine")).await;
    let broken = created(&gw, task("broken")).await;
    // moto starts tasks RUNNING: each task's ARN, once the gateway has seen it so.
    let arn = |id: String| {
        let gw = &gw;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let job = gw.get(TOKEN_A, &format!("/v1/jobs/{id}")).await.1;
                if job["state"] == "running" {
                    return job["provider_ref"].as_str().unwrap().to_string();
                }
                assert!(tokio::time::Instant::now() < deadline, "not running: {job}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (fine_arn, broken_arn) = (arn(fine.clone()).await, arn(broken.clone()).await);
    let stream = |container: &str, arn: &str| {
        format!("offload/{container}/{}", arn.rsplit('/').next().unwrap())
    };
    moto.write_log(&stream("exec-0", &fine_arn), &["a", "b"]).await;
    moto.write_log(&stream("exec-1", &fine_arn), &["hi", "offload-step-exit: 4"]).await;
    let codes = json!({"stage-in": 0, "exec-0": 0, "exec-1": 0});
    moto.stop_containers(&fine_arn, codes, "Essential container in task exited").await;
    moto.write_log(
        &stream("stage-in", &broken_arn),
        &["offload-filer: content of /data/in.txt: No space left on device"],
    )
    .await;
    moto.stop_containers(&broken_arn, json!({"stage-in": 1}), "").await;

    let full = ended(&gw, &fine).await;
    assert_eq!(full["state"], "COMPLETE", "{full}");
    let logs = full["logs"][0]["logs"].as_array().unwrap();
    let codes: Vec<&Value> = logs.iter().map(|l| &l["exit_code"]).collect();
    assert_eq!(codes, [&json!(0), &json!(4)], "{full}");
    assert_eq!(logs[0]["stdout"], "a\nb\n");
    assert!(logs[1]["stdout"].as_str().unwrap().starts_with("hi\n"), "{full}");

    let full = ended(&gw, &broken).await;
    assert_eq!(full["state"], "SYSTEM_ERROR", "{full}");
    assert_eq!(
        full["logs"][0]["system_logs"],
        json!(["staging the inputs failed: content of /data/in.txt: No space left on device"]),
        "{full}"
    );
}

/// On ACI (against the fake ARM), a task of several executors is one container group of
/// init containers: each executor's log has its exit code, start and end as the group's
/// instance view tells them, and its output from its container's log.
#[cfg(feature = "aci")]
#[tokio::test]
async fn on_aci_executors_are_init_containers_whose_times_and_logs_are_kept() {
    let arm = fake_arm::FakeArm::start().await;
    let providers = format!(
        "[providers.aci]\nkind = \"aci\"\nsubscription_id = \"00000000-0000-0000-0000-000000000000\"\n\
         resource_group = \"offload\"\nlocation = \"westeurope\"\nendpoint = \"{}\"\naccess_token = \"{}\"\n\
         filer_image = \"offload:1\"\npoll_interval_ms = 50\n",
        arm.url,
        fake_arm::TOKEN
    );
    let gw = Gateway::start(&providers).await;
    let id = created(
        &gw,
        json!({
            "inputs": [{"content": "b\na\n", "path": "/data/in.txt"}],
            "executors": [
                {"image": "alpine", "command": ["sort", "in.txt"], "workdir": "/data"},
                {"image": "alpine", "command": ["echo", "done"]},
            ],
            "resources": {"backend_parameters": {"provider": "aci"}},
        }),
    )
    .await;
    let job = gw
        .wait_for(TOKEN_A, &id, 20, "the task's group", |j| j["provider_ref"].is_string())
        .await;
    let group = job["provider_ref"].as_str().unwrap().to_string();
    let ran = |code: i32, from: &str, to: &str| {
        json!({"state": "Terminated", "exitCode": code, "startTime": from, "finishTime": to})
    };
    arm.set_step_state(&group, "step-0", ran(0, "2026-12-08T10:00:00Z", "2026-12-08T10:00:01Z"));
    arm.set_step_state(&group, "step-1", ran(0, "2026-12-08T10:00:02Z", "2026-12-08T10:00:04Z"));
    arm.append_container_log(&group, "step-1", "a\nb\n");
    arm.append_log(&group, "done\n");
    let main = ran(0, "2026-12-08T10:00:05Z", "2026-12-08T10:00:06Z");
    arm.set_state(&group, "Succeeded", json!({"restartCount": 0, "currentState": main}));
    let full = ended(&gw, &id).await;
    assert_eq!(full["state"], "COMPLETE", "{full}");
    let logs = full["logs"][0]["logs"].as_array().unwrap();
    let seen: Vec<(i64, &str, &str, &str)> = logs
        .iter()
        .map(|l| {
            let text = |k: &str| l[k].as_str().unwrap_or_default();
            (l["exit_code"].as_i64().unwrap(), &text("start_time")[..19], &text("end_time")[..19], text("stdout"))
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, "2026-12-08T10:00:02", "2026-12-08T10:00:04", "a\nb\n"),
            (0, "2026-12-08T10:00:05", "2026-12-08T10:00:06", "done\n"),
        ],
        "{full}"
    );
}

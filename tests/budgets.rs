//! Budgets through the HTTP API, on sim providers whose prices make the sums exact: a job
//! over its tenant's budget waits with a reason naming the budget and runs once the day
//! ends (a movable clock) or the budget is removed; `action = "refuse"` answers 429 with
//! Retry-After; an estimate above a limit is refused with 422; the figures of
//! `GET /v1/budgets` equal the jobs' costs; only an admin's token sets budgets; a hard
//! budget stops running jobs; and two replicas on one PostgreSQL never admit past a limit
//! together.

mod common;

use common::{config_text_pg, pg, Gateway, TOKEN_A, TOKEN_ADMIN, TOKEN_B};
use offload::clock::Clock;
use reqwest::Method;
use serde_json::{json, Value};

/// `permin`: $3.60 per vCPU-hour, at least 60 s, so each one-vCPU job here (expected to
/// take 10 s) is estimated at, and costs, $0.06 exactly.
const PERMIN: &str = r#"
[providers.permin]
kind = "sim"
start_ms = 0
run_ms = 100
poll_interval_ms = 20
price = { vcpu_hour = 3.6, min_billed_seconds = 60 }
"#;

const JOB_USD: f64 = 0.06;

fn job(dag: &str) -> Value {
    json!({"image": "alpine", "command": ["true"], "resources": {"cpu": 1},
           "labels": {"dag_id": dag}, "routing": {"expected_duration_seconds": 10}})
}

async fn submitted(gw: &Gateway, token: &str, spec: Value) -> String {
    let (status, job) = gw.submit(token, spec).await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_string()
}

async fn put_budget(gw: &Gateway, token: &str, budget: Value) -> (u16, Value) {
    let r = gw
        .req(Method::PUT, "/v1/budgets", token)
        .json(&budget)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The budget `id` as `GET /v1/budgets` shows it to `token`.
async fn budget(gw: &Gateway, token: &str, id: &str) -> Value {
    let (status, list) = gw.get(token, "/v1/budgets").await;
    assert_eq!(status, 200, "{list}");
    list["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no budget {id} in {list}"))
}

fn period<'a>(budget: &'a Value, kind: &str) -> &'a Value {
    budget["periods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["period"] == kind)
        .unwrap_or_else(|| panic!("no {kind} period in {budget}"))
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

/// Waits until `GET /v1/budgets` shows `id`'s `kind` period as `done` says.
async fn wait_budget(gw: &Gateway, id: &str, kind: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let b = budget(gw, TOKEN_ADMIN, id).await;
        if done(period(&b, kind)) {
            return b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "budget {id} never got there: {b}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Tenant `a` may spend $0.15 a day: of three $0.06 jobs, two run and the third waits
/// `queued`, its reason naming the budget and when the day ends; the budget then shows
/// $0.12 spent, exactly what the two cost, and nothing committed. Once the day ends, the
/// third runs, and the new day's figures hold its cost only, the month's all three.
#[tokio::test]
async fn a_job_over_its_budget_waits_and_runs_once_the_day_ends() {
    let clock = Clock::movable();
    let config =
        format!("[[budgets]]\ntenant = \"a\"\nusd_per_day = 0.15\nusd_per_month = 10\n{PERMIN}");
    let gw = Gateway::start_clocked("false", &config, clock.clone()).await;
    let mut ids = vec![];
    for dag in ["etl", "etl", "report"] {
        ids.push(submitted(&gw, TOKEN_A, job(dag)).await);
    }
    // Two end, one waits: whichever the engine took first.
    let mut ended = vec![];
    let mut waiting = None;
    for id in &ids {
        let job = gw
            .wait_for(TOKEN_A, id, 20, "ended or waiting for its budget", |j| {
                j["state"] == "succeeded"
                    || (j["state"] == "queued"
                        && j["reason"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("waiting for budget")))
            })
            .await;
        match job["state"].as_str() {
            Some("succeeded") => ended.push(job),
            _ => waiting = Some(job),
        }
    }
    assert_eq!(ended.len(), 2, "{ended:?} {waiting:?}");
    let waiting = waiting.expect("one job waits");
    let reason = waiting["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("waiting for budget a: its day limit of $0.15 is reached until "),
        "{reason}"
    );
    let end_of_day = (clock.now().date_naive() + chrono::Days::new(1)).format("%Y-%m-%dT00:00:00Z");
    assert!(reason.contains(&end_of_day.to_string()), "{reason}");

    // The budget's figures are the jobs' costs, exactly, once the two are settled.
    let costs: f64 = ended
        .iter()
        .map(|j| j["cost"]["usd"].as_f64().unwrap())
        .sum();
    assert!((costs - 2.0 * JOB_USD).abs() < 1e-9, "{ended:?}");
    let b = wait_budget(&gw, "a", "day", |p| close(&p["committed_usd"], 0.0)).await;
    let day = period(&b, "day");
    assert!(close(&day["spent_usd"], costs), "{b}");
    assert!(close(&day["limit_usd"], 0.15), "{b}");
    assert!(close(&day["left_usd"], 0.15 - costs), "{b}");
    assert_eq!(b["source"], "config", "{b}");
    // Still waiting: a budget round (every second) found no room.
    let id = waiting["id"].as_str().unwrap();
    let (_, still) = gw.get(TOKEN_A, &format!("/v1/jobs/{id}")).await;
    assert_eq!(still["state"], "queued", "{still}");

    clock.advance(chrono::Duration::days(1));
    let third = gw.wait_terminal(TOKEN_A, id, 20).await;
    assert_eq!(third["state"], "succeeded", "{third}");
    let reasons = gw.event_reasons(TOKEN_A, id).await;
    assert!(reasons.iter().any(|r| r == reason), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("dispatched to permin")),
        "{reasons:?}"
    );
    let b = wait_budget(&gw, "a", "day", |p| close(&p["committed_usd"], 0.0)).await;
    assert!(close(&period(&b, "day")["spent_usd"], JOB_USD), "{b}");
    // The month (unless the day moved into a new one) holds all three.
    if clock.now().format("%Y-%m").to_string() == chrono::Utc::now().format("%Y-%m").to_string() {
        assert!(
            close(&period(&b, "month")["spent_usd"], 3.0 * JOB_USD),
            "{b}"
        );
    }
}

/// A budget on one label holds back only the jobs that carry it; removing the budget
/// (an admin's DELETE) lets its waiting job run at once.
#[tokio::test]
async fn a_label_budget_holds_only_its_jobs_and_removing_it_frees_them() {
    let config =
        format!("[[budgets]]\ntenant = \"a\"\nlabel = \"dag_id=etl\"\nusd_per_day = 0.1\n{PERMIN}");
    let gw = Gateway::start(&config).await;
    let first = submitted(&gw, TOKEN_A, job("etl")).await;
    assert_eq!(
        gw.wait_terminal(TOKEN_A, &first, 20).await["state"],
        "succeeded"
    );
    let second = submitted(&gw, TOKEN_A, job("etl")).await;
    let waiting = gw
        .wait_for(TOKEN_A, &second, 20, "waiting for its budget", |j| {
            j["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("waiting for budget a/dag_id=etl"))
        })
        .await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    // Other DAGs of the tenant, and other tenants, are not held back.
    for (token, dag) in [(TOKEN_A, "report"), (TOKEN_B, "etl")] {
        let id = submitted(&gw, token, job(dag)).await;
        assert_eq!(gw.wait_terminal(token, &id, 20).await["state"], "succeeded");
    }
    assert_eq!(
        gw.get(TOKEN_A, &format!("/v1/jobs/{second}")).await.1["state"],
        "queued"
    );
    // The gauge shows the share used (this budget's id is this test's alone: metrics are
    // the process's).
    let used = "offload_budget_used_ratio{budget=\"a/dag_id=etl\",period=\"day\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gw.metric(used).await != 0.6 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            gw.metrics_text().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let path = "/v1/budgets?tenant=a&label=dag_id%3Detl";
    let r = gw.req(Method::DELETE, path, TOKEN_A).send().await.unwrap();
    assert_eq!(r.status(), 403, "only an admin removes a budget");
    let r = gw
        .req(Method::DELETE, path, TOKEN_ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let job = gw.wait_terminal(TOKEN_A, &second, 20).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let r = gw
        .req(Method::DELETE, path, TOKEN_ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// `action = "refuse"`: once the day's spend and commitments leave too little for a job,
/// its submit is refused with 429, a reason naming the budget and Retry-After at the end of
/// the day; and a job whose estimate alone is above a limit is refused with 422 whatever
/// the action, since it could never run.
#[tokio::test]
async fn a_refusing_budget_answers_429_and_an_estimate_above_a_limit_422() {
    let config = format!(
        "[[budgets]]\ntenant = \"b\"\nusd_per_day = 0.1\naction = \"refuse\"\n\
         [[budgets]]\ntenant = \"a\"\nusd_per_day = 0.05\n{PERMIN}"
    );
    let clock = Clock::movable();
    let gw = Gateway::start_clocked("false", &config, clock.clone()).await;
    let first = submitted(&gw, TOKEN_B, job("etl")).await;
    assert_eq!(
        gw.wait_terminal(TOKEN_B, &first, 20).await["state"],
        "succeeded"
    );
    let r = gw
        .req(Method::POST, "/v1/jobs", TOKEN_B)
        .json(&job("etl"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let midnight = (clock.now().date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let expected = (midnight - clock.now()).num_seconds();
    assert!(
        (retry - expected).abs() <= 2,
        "Retry-After {retry}, {expected} s to midnight"
    );
    let problem: Value = r.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("budget b has reached its day limit of $0.10"),
        "{problem}"
    );

    let (status, problem) = gw.submit(TOKEN_A, job("etl")).await;
    assert_eq!(status, 422, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("estimate of $0.060000 is more than budget a's day limit of $0.05"),
        "{problem}"
    );
    // The next day, tenant b's jobs are taken again.
    clock.advance(chrono::Duration::days(1));
    submitted(&gw, TOKEN_B, job("etl")).await;
}

/// Only an admin's token sets budgets; every tenant reads its own, an admin all of them;
/// a bad budget is refused naming the field.
#[tokio::test]
async fn admins_set_budgets_and_tenants_read_their_own() {
    let gw = Gateway::start(PERMIN).await;
    let budget_b = json!({"tenant": "b", "usd_per_month": 100});
    let (status, problem) = put_budget(&gw, TOKEN_B, budget_b.clone()).await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("admin"),
        "{problem}"
    );
    let (status, set) = put_budget(&gw, TOKEN_ADMIN, budget_b).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["id"], "b");
    assert_eq!(set["source"], "api");
    assert!(close(&period(&set, "month")["left_usd"], 100.0), "{set}");
    let (status, _) = put_budget(
        &gw,
        TOKEN_ADMIN,
        json!({"tenant": "a", "label": "dag_id=report", "usd_per_day": 1}),
    )
    .await;
    assert_eq!(status, 200);

    let ids = |list: &Value| -> Vec<String> {
        list["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&gw.get(TOKEN_A, "/v1/budgets").await.1),
        ["a/dag_id=report"]
    );
    assert_eq!(ids(&gw.get(TOKEN_B, "/v1/budgets").await.1), ["b"]);
    assert_eq!(
        ids(&gw.get(TOKEN_B, "/v1/budgets?tenant=a").await.1),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&gw.get(TOKEN_ADMIN, "/v1/budgets").await.1),
        ["a/dag_id=report", "b"]
    );
    assert_eq!(
        ids(&gw.get(TOKEN_ADMIN, "/v1/budgets?tenant=b").await.1),
        ["b"]
    );

    for (bad, field) in [
        (json!({"tenant": "a", "usd_per_day": -1}), "usd_per_day"),
        (json!({"tenant": "a"}), "usd_per_day"),
        (
            json!({"tenant": "a", "label": "no-equals", "usd_per_day": 1}),
            "label",
        ),
        (json!({"tenant": "", "usd_per_day": 1}), "tenant"),
    ] {
        let (status, problem) = put_budget(&gw, TOKEN_ADMIN, bad.clone()).await;
        assert_eq!(status, 422, "{bad}: {problem}");
        assert!(problem.to_string().contains(field), "{bad}: {problem}");
    }
}

/// A hard budget stops its running jobs once what they have cost so far reaches the
/// limit, with a reason naming it; a job of another tenant runs on.
#[tokio::test]
async fn a_hard_budget_stops_running_jobs_at_its_limit() {
    // $1 a second; each job expects 1 s ($1), and runs a minute unless stopped.
    let config = r#"
[[budgets]]
tenant = "a"
usd_per_day = 3
hard = true
[providers.dear]
kind = "sim"
start_ms = 0
run_ms = 60000
poll_interval_ms = 50
price = { vcpu_hour = 3600 }
"#;
    let gw = Gateway::start(config).await;
    let mut spec = job("etl");
    spec["routing"] = json!({"expected_duration_seconds": 1});
    let a = submitted(&gw, TOKEN_A, spec.clone()).await;
    let b = submitted(&gw, TOKEN_B, spec).await;
    let job = gw.wait_terminal(TOKEN_A, &a, 30).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        job["reason"]
            .as_str()
            .unwrap()
            .contains("budget a (hard) reached its day limit of $3.00"),
        "{job}"
    );
    // It ran about 3 s: what it cost is near the limit, not a minute's $60.
    let usd = job["cost"]["usd"].as_f64().unwrap();
    assert!((3.0..10.0).contains(&usd), "{job}");
    let (_, other) = gw.get(TOKEN_B, &format!("/v1/jobs/{b}")).await;
    assert_eq!(other["state"], "running", "{other}");
}

/// A config budget that is wrong names itself: `budgets[N].field`.
#[test]
fn a_bad_config_budget_is_named_by_its_index_and_field() {
    let text = |budgets: &str| {
        format!("[[auth.tokens]]\ntoken = \"{TOKEN_A}\"\ntenant = \"a\"\n{budgets}")
    };
    let err = offload::config::Config::from_toml(&text(
        "[[budgets]]\ntenant = \"a\"\nusd_per_day = 1\n[[budgets]]\ntenant = \"b\"\nusd_per_day = -2\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("budgets[1].usd_per_day"), "{err}");
    let err = offload::config::Config::from_toml(&text(
        "[[budgets]]\ntenant = \"a\"\nusd_per_day = 1\n[[budgets]]\ntenant = \"a\"\nusd_per_month = 2\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("budgets[1]") && err.contains("a"), "{err}");
}

/// Two replicas on one PostgreSQL database share a budget's figures: twenty jobs submitted
/// through both at once against room for five, and exactly five run; the rest wait.
#[tokio::test]
async fn two_replicas_never_admit_past_a_limit_together() {
    let (_admin, _schema, url) = pg::fresh_schema().await;
    // Each job takes a place for a second, so all are admitted while the others run.
    let providers = format!(
        "[[budgets]]\ntenant = \"a\"\nusd_per_day = 0.3\n{}",
        PERMIN.replace("run_ms = 100", "run_ms = 1000")
    );
    let text = config_text_pg("127.0.0.1:0", &url, &providers);
    let one = Gateway::start_text(tempfile::tempdir().unwrap(), &text, Clock::system()).await;
    let two = Gateway::start_text(tempfile::tempdir().unwrap(), &text, Clock::system()).await;
    let submits = (0..20).map(|i| {
        let gw = if i % 2 == 0 { &one } else { &two };
        async move { submitted(gw, TOKEN_A, job("etl")).await }
    });
    let ids = futures::future::join_all(submits).await;
    let mut succeeded = 0;
    let mut waiting = 0;
    for id in &ids {
        let job = one
            .wait_for(TOKEN_A, id, 30, "ended or waiting for its budget", |j| {
                j["state"] == "succeeded"
                    || j["reason"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("waiting for budget a"))
            })
            .await;
        match job["state"].as_str() {
            Some("succeeded") => succeeded += 1,
            Some("queued") => waiting += 1,
            _ => panic!("{job}"),
        }
    }
    assert_eq!((succeeded, waiting), (5, 15));
    let b = wait_budget(&one, "a", "day", |p| close(&p["committed_usd"], 0.0)).await;
    assert!(close(&period(&b, "day")["spent_usd"], 5.0 * JOB_USD), "{b}");
}

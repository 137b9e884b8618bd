//! `offload store copy`: a SQLite store's jobs, events and idempotency keys copied into an
//! empty PostgreSQL store read back the same through the `Store` trait. Needs `DATABASE_URL`
//! (`tests/pg.sh run cargo test --test store_copy` starts a throwaway server and sets it) and
//! fails without it; each test gets a schema of its own, as in tests/store_contract.rs.

use std::path::Path;

use chrono::Utc;
use offload::model::{JobCost, JobSpec, JobState};
use offload::store::copy::{copy_sqlite_to_postgres, Copied};
use offload::store::postgres::PostgresStore;
use offload::store::secrets::SecretBox;
use offload::store::sqlite::SqliteStore;
use offload::store::{JobRecord, ListQuery, NewJob, Patch, Store, Submitted};
use uuid::Uuid;

mod common;
use common::pg::fresh_schema;

fn test_box() -> SecretBox {
    SecretBox::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
}

const SECRET: &str = "s3cret-value-42";

fn spec(image: &str, secret: Option<&str>) -> JobSpec {
    let mut spec = serde_json::json!({
        "image": image,
        "env": {"MODE": "full"},
        "labels": {"dag_id": "etl", "task_id": "load"},
    });
    if let Some(secret) = secret {
        spec["secret_env"] = serde_json::json!({"TOKEN": secret});
    }
    serde_json::from_value(spec).unwrap()
}

fn new_job(tenant: &str, key: Option<&str>, spec: JobSpec) -> NewJob {
    NewJob {
        id: Uuid::now_v7(),
        tenant: tenant.into(),
        spec,
        idempotency_key: key.map(String::from),
        created_at: Utc::now(),
    }
}

async fn created(store: &dyn Store, new: NewJob) -> Uuid {
    match store.submit(new).await.unwrap() {
        Submitted::Created(rec) => rec.job.id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

async fn update(store: &dyn Store, id: Uuid, expect: &[JobState], patch: Patch) {
    store
        .update(id, expect, patch)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("job {id} was not in {expect:?}"));
}

/// A record without its owner, which only the PostgreSQL store sets (and leaves NULL for
/// copied jobs).
fn without_owner(mut rec: JobRecord) -> JobRecord {
    rec.owner = None;
    rec
}


async fn drop_schema(admin: &tokio_postgres::Client, schema: &str) {
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

async fn count(admin: &tokio_postgres::Client, schema: &str, table: &str) -> i64 {
    admin
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".{table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Writes to the SQLite file behind the store's back (the store is closed).
fn raw_sqlite(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    conn
}

/// A URL nothing listens on: the refusals below come before the target is touched.
const NOWHERE: &str = "postgres://offload@127.0.0.1:1/nowhere?connect_timeout=1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_event_and_key_reads_back_the_same_from_postgres() {
    let (admin, schema, url) = fresh_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offload.db");
    let store = SqliteStore::open(&path, false, test_box()).unwrap();

    // A job with a key and a secret, taken through a run.
    let keyed_spec = spec("etl:1", Some(SECRET));
    let keyed = created(&store, new_job("a", Some("nightly-1"), keyed_spec.clone())).await;
    let t = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let starting = Patch {
        state: Some(JobState::Starting),
        provider: Some("local".into()),
        attempts: Some(1),
        launch_key: Some(format!("{keyed}-1")),
        dispatched_at: Some(t(1_700_000_000_123)),
        cost: Some(JobCost {
            provider: "local".into(),
            hourly_usd: 0.1,
            estimated_usd: 0.0166,
            billed_seconds: None,
            usd: None,
            earlier_usd: 0.0,
            earlier: vec![],
            reference: None,
        }),
        ..Patch::default()
    };
    update(&store, keyed, &[JobState::Queued], starting).await;
    let running = Patch {
        state: Some(JobState::Running),
        provider_ref: Some(Some("pid-42".into())),
        started_at: Some(t(1_700_000_001_456)),
        ..Patch::default()
    };
    update(&store, keyed, &[JobState::Starting], running).await;
    let noted = Patch {
        event: Some("image pulled".into()),
        ..Patch::default()
    };
    update(&store, keyed, &[], noted).await;

    // The same key in another tenant is another job.
    let other_tenant = created(
        &store,
        new_job("b", Some("nightly-1"), spec("etl:1", Some("b's"))),
    )
    .await;

    // A job without a key or secrets that ran to the end and was released.
    let finished = created(&store, new_job("a", None, spec("report:2", None))).await;
    let done = Patch {
        state: Some(JobState::Succeeded),
        provider: Some("sim".into()),
        provider_ref: Some(None),
        attempts: Some(2),
        exit_code: Some(0),
        reason: Some("exited with code 0".into()),
        result: Some(serde_json::json!({"rows": 10, "ok": true, "x": 0.1})),
        started_at: Some(t(1_700_000_010_000)),
        finished_at: Some(t(1_700_000_070_001)),
        cancel_requested_by: Some("alice".into()),
        log_tail: Some("line 1\nline 2\n".into()),
        released: Some(true),
        excluded: Some(vec!["ecs".into(), "aci".into()]),
        cost: Some(JobCost {
            provider: "sim".into(),
            hourly_usd: 0.1,
            estimated_usd: 0.0166,
            billed_seconds: Some(61),
            usd: Some(0.25),
            earlier_usd: 0.125,
            earlier: vec![offload::model::AttemptCost { provider: "ecs".into(), billed_seconds: 60, usd: 0.125, preempted: true }],
            reference: Some(offload::model::ReferenceCost { provider: "ecs".into(), hourly_usd: 0.2, usd: Some(0.5) }),
        }),
        ..Patch::default()
    };
    update(&store, finished, &[JobState::Queued], done).await;

    // NUL characters where PostgreSQL's jsonb and text cannot hold them.
    let mut nul_spec = spec("img", Some("with\0nul"));
    nul_spec.labels.insert("odd".into(), "x\0y".into());
    nul_spec.env.insert("NUL".into(), "a\0b".into());
    let nul = created(&store, new_job("a", Some("k\0"), nul_spec.clone())).await;
    let nul_result = Patch {
        result: Some(serde_json::json!({"s": "nul\0here"})),
        event: Some("noted".into()),
        ..Patch::default()
    };
    update(&store, nul, &[], nul_result).await;

    // A job whose secrets an offload from before sealing wrote in the clear.
    let legacy = created(&store, new_job("a", None, spec("old", Some("x")))).await;
    drop(store);
    {
        let conn = raw_sqlite(&path);
        conn.execute(
            "UPDATE jobs SET secret_env = '{\"TOKEN\":\"in the clear\"}' WHERE id = ?1",
            [legacy.to_string()],
        )
        .unwrap();
        // What PostgreSQL cannot hold: a key and an event of a job not in the file.
        let ghost = Uuid::now_v7().to_string();
        conn.execute(
            "INSERT INTO idempotency (tenant, key, job_id) VALUES ('a', 'ghost', ?1)",
            [&ghost],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO events (job_id, at, state, reason) VALUES (?1, 1, 'queued', 'ghost')",
            [&ghost],
        )
        .unwrap();
    }
    let ids = [keyed, other_tenant, finished, nul, legacy];

    let copied = copy_sqlite_to_postgres(&path, &url).await.unwrap();

    let sqlite = SqliteStore::open(&path, false, test_box()).unwrap();
    let postgres = PostgresStore::connect(&url, test_box()).await.unwrap();
    let mut events = 0;
    let mut max_seq = 0;
    for id in ids {
        let want = sqlite.get(id).await.unwrap().expect("in SQLite");
        let got = postgres.get(id).await.unwrap().expect("copied");
        assert_eq!(
            got.owner, None,
            "a copied job has no owner, so it is adopted"
        );
        assert_eq!(without_owner(got), without_owner(want), "job {id}");
        let want = sqlite.events(id).await.unwrap();
        assert_eq!(postgres.events(id).await.unwrap(), want, "events of {id}");
        events += want.len();
        max_seq = max_seq.max(want.iter().map(|e| e.seq).max().unwrap());
        assert_eq!(
            postgres.secrets(id).await.unwrap(),
            sqlite.secrets(id).await.unwrap(),
            "secrets of {id}"
        );
        assert_eq!(
            postgres.log_tail(id).await.unwrap(),
            sqlite.log_tail(id).await.unwrap(),
            "log tail of {id}"
        );
    }
    assert_eq!(
        copied,
        Copied {
            jobs: ids.len() as u64,
            events: events as u64,
            idempotency_keys: 3,
        }
    );
    assert_eq!(count(&admin, &schema, "jobs").await, ids.len() as i64);
    assert_eq!(count(&admin, &schema, "events").await, events as i64);

    // The secrets open with the same key on the other side.
    assert_eq!(postgres.secrets(keyed).await.unwrap()["TOKEN"], SECRET);
    assert_eq!(postgres.secrets(nul).await.unwrap()["TOKEN"], "with\0nul");
    assert_eq!(
        postgres.secrets(legacy).await.unwrap()["TOKEN"],
        "in the clear"
    );
    assert!(postgres.secrets(finished).await.unwrap().is_empty());
    let got = postgres.get(keyed).await.unwrap().unwrap();
    assert_eq!(
        (
            got.job.state,
            got.job.provider_ref.as_deref(),
            got.job.attempts
        ),
        (JobState::Running, Some("pid-42"), 1)
    );
    let got = postgres.get(finished).await.unwrap().unwrap();
    assert!(got.released && got.job.terminal);
    assert_eq!(got.excluded, vec!["ecs".to_string(), "aci".to_string()]);

    // Idempotency keys still find their jobs, per tenant.
    for (tenant, key, same_spec, id) in [
        ("a", "nightly-1", keyed_spec.clone(), keyed),
        ("b", "nightly-1", spec("etl:1", Some("b's")), other_tenant),
        ("a", "k\0", nul_spec, nul),
    ] {
        let again = postgres
            .submit(new_job(tenant, Some(key), same_spec))
            .await
            .unwrap();
        assert!(
            matches!(&again, Submitted::Existing(rec) if rec.job.id == id),
            "{tenant}/{key:?}: {again:?}"
        );
    }
    let conflict = postgres
        .submit(new_job("a", Some("nightly-1"), spec("etl:2", Some(SECRET))))
        .await
        .unwrap();
    assert!(
        matches!(conflict, Submitted::Conflict(id) if id == keyed),
        "{conflict:?}"
    );

    // Label selectors (the jsonb column the copy wrote) match.
    let by_labels = |labels: Vec<(&str, &str)>| ListQuery {
        labels: labels
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        limit: 100,
        ..ListQuery::default()
    };
    let mut listed: Vec<Uuid> = postgres
        .list(
            "a",
            &by_labels(vec![("dag_id", "etl"), ("task_id", "load")]),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    listed.sort();
    let mut want = vec![keyed, finished, nul, legacy];
    want.sort();
    assert_eq!(listed, want);
    let odd = postgres
        .list("a", &by_labels(vec![("odd", "x\0y")]))
        .await
        .unwrap();
    assert_eq!(odd.iter().map(|j| j.id).collect::<Vec<_>>(), vec![nul]);

    // New events come after the copied ones.
    let fresh = created(&postgres, new_job("a", None, spec("new", None))).await;
    let fresh_events = postgres.events(fresh).await.unwrap();
    assert!(
        fresh_events[0].seq > max_seq,
        "a new event took seq {} at or below the copied {max_seq}",
        fresh_events[0].seq
    );

    // A second copy is refused, and changes nothing.
    drop(sqlite);
    let refused = copy_sqlite_to_postgres(&path, &url).await.unwrap_err();
    let shown = format!("{refused:#}");
    assert!(shown.contains("already has jobs"), "{shown}");
    assert_eq!(count(&admin, &schema, "jobs").await, ids.len() as i64 + 1);

    drop(postgres);
    drop_schema(&admin, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_part_way_leaves_the_target_empty() {
    let (admin, schema, url) = fresh_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offload.db");
    drop(SqliteStore::open(&path, false, test_box()).unwrap());
    let spec_text = serde_json::to_string(&spec("img", None)).unwrap();
    let insert = "INSERT INTO jobs (id, tenant, state, labels, spec, secret_env, created_at) \
                  VALUES (?1, 'a', ?2, '{}', ?3, '', ?4)";
    {
        let mut conn = raw_sqlite(&path);
        let tx = conn.transaction().unwrap();
        // More than one batch of good jobs, then one the copy refuses (ids sort last).
        for _ in 0..1200 {
            tx.execute(
                insert,
                rusqlite::params![
                    Uuid::now_v7().to_string(),
                    "queued",
                    spec_text,
                    Utc::now().timestamp_millis()
                ],
            )
            .unwrap();
        }
        tx.execute(
            insert,
            rusqlite::params![
                "ffffffff-ffff-7fff-bfff-ffffffffffff",
                "exploded",
                spec_text,
                1i64
            ],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let failed = copy_sqlite_to_postgres(&path, &url).await.unwrap_err();
    let shown = format!("{failed:#}");
    assert!(shown.contains("exploded"), "{shown}");
    assert_eq!(
        count(&admin, &schema, "jobs").await,
        0,
        "a failed copy kept jobs"
    );

    // Once the file is mended, the copy goes through.
    raw_sqlite(&path)
        .execute("DELETE FROM jobs WHERE state = 'exploded'", [])
        .unwrap();
    let copied = copy_sqlite_to_postgres(&path, &url).await.unwrap();
    assert_eq!(
        copied,
        Copied {
            jobs: 1200,
            events: 0,
            idempotency_keys: 0
        }
    );
    assert_eq!(count(&admin, &schema, "jobs").await, 1200);
    drop_schema(&admin, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_it_cannot_copy_are_refused_before_the_target_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let shown = |e: anyhow::Error| format!("{e:#}");

    let missing = dir.path().join("missing.db");
    let e = shown(
        copy_sqlite_to_postgres(&missing, NOWHERE)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("no such file"), "{e}");

    // A gateway running on the file.
    let path = dir.path().join("offload.db");
    let store = SqliteStore::open(&path, false, test_box()).unwrap();
    created(&store, new_job("a", None, spec("img", None))).await;
    let e = shown(copy_sqlite_to_postgres(&path, NOWHERE).await.unwrap_err());
    assert!(e.contains("running offload gateway"), "{e}");
    drop(store);

    // Another schema version than the one a store writes now, older or newer.
    let current: i64 = raw_sqlite(&path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    for version in [current - 1, current + 1] {
        raw_sqlite(&path)
            .pragma_update(None, "user_version", version)
            .unwrap();
        let e = shown(copy_sqlite_to_postgres(&path, NOWHERE).await.unwrap_err());
        assert!(e.contains(&format!("schema version {version}")), "{e}");
    }

    // Not an offload store at all.
    let empty = dir.path().join("empty.db");
    raw_sqlite(&empty)
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let e = shown(copy_sqlite_to_postgres(&empty, NOWHERE).await.unwrap_err());
    assert!(e.contains("not an offload SQLite store"), "{e}");

    // Sanity: with the right version back, it gets as far as the target (which is not
    // there).
    raw_sqlite(&path)
        .pragma_update(None, "user_version", current)
        .unwrap();
    let e = shown(copy_sqlite_to_postgres(&path, NOWHERE).await.unwrap_err());
    assert!(e.contains("migrations"), "{e}");
}

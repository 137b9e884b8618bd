//! One contract, two stores: every check here runs against SQLite and against PostgreSQL,
//! so that a gateway behaves the same on either. The PostgreSQL checks need `DATABASE_URL`
//! (`tests/pg.sh run cargo test ...` starts a throwaway server and sets it) and fail without
//! it; each check gets a schema of its own, so they run in parallel.
//!
//! Then what only PostgreSQL has: migrations under a lock, the change feed, and a server
//! that goes away and comes back under a live store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use offload::model::{CostGroup, JobCost, JobSpec, JobState, REDACTED};
use offload::store::postgres::{configure, migrate, Change, PostgresOptions, PostgresStore};
use offload::store::secrets::SecretBox;
use offload::store::sqlite::SqliteStore;
use offload::store::{
    CostGrouping, CostQuery, ListQuery, NewJob, Patch, Store, StoreError, Submitted,
};
use uuid::Uuid;

mod common;
use common::pg::fresh_schema;

fn test_box() -> SecretBox {
    SecretBox::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
}

const SECRET: &str = "s3cret-value-42";

fn spec(image: &str, secret: &str) -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "image": image,
        "secret_env": {"TOKEN": secret},
        "env": {"MODE": "full"},
        "labels": {"dag_id": "etl", "env": "prod"},
    }))
    .unwrap()
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

fn job(tenant: &str, key: Option<&str>) -> NewJob {
    new_job(tenant, key, spec("img", SECRET))
}

async fn created(store: &dyn Store, new: NewJob) -> Uuid {
    match store.submit(new).await.unwrap() {
        Submitted::Created(rec) => rec.job.id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// A store under test, and a way to look at what it keeps at rest.
struct Fixture {
    store: Arc<dyn Store>,
    at_rest: AtRest,
}

enum AtRest {
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        admin: tokio_postgres::Client,
        schema: String,
    },
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offload.db");
        let store = SqliteStore::open(&path, true, test_box()).unwrap();
        Fixture {
            store: Arc::new(store),
            at_rest: AtRest::Sqlite { path, _dir: dir },
        }
    }

    async fn postgres() -> Fixture {
        let (admin, schema, url) = fresh_schema().await;
        let store = PostgresStore::connect(&url, test_box()).await.unwrap();
        Fixture {
            store: Arc::new(store),
            at_rest: AtRest::Postgres { admin, schema },
        }
    }

    /// Whether `needle` is anywhere in what the store keeps at rest.
    async fn at_rest_contains(&self, needle: &str) -> bool {
        match &self.at_rest {
            AtRest::Sqlite { path, .. } => {
                let mut bytes = std::fs::read(path).unwrap();
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                bytes.extend(std::fs::read(wal).unwrap_or_default());
                bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            }
            AtRest::Postgres { admin, schema } => {
                let rows = admin
                    .query(
                        &format!(
                            "SELECT secret_env, jobs::text FROM \"{schema}\".jobs
                             UNION ALL SELECT '', events::text FROM \"{schema}\".events"
                        ),
                        &[],
                    )
                    .await
                    .unwrap();
                assert!(!rows.is_empty());
                rows.iter().any(|r| {
                    let (sealed, row): (String, String) = (r.get(0), r.get(1));
                    sealed.contains(needle) || row.contains(needle)
                })
            }
        }
    }

    /// The sealed secrets column as stored, when the store is PostgreSQL.
    async fn stored_secret_env(&self, id: Uuid) -> Option<String> {
        match &self.at_rest {
            AtRest::Sqlite { .. } => None,
            AtRest::Postgres { admin, schema } => Some(
                admin
                    .query_one(
                        &format!("SELECT secret_env FROM \"{schema}\".jobs WHERE id = $1"),
                        &[&id],
                    )
                    .await
                    .unwrap()
                    .get(0),
            ),
        }
    }

    async fn finish(self) {
        if let AtRest::Postgres { admin, schema } = &self.at_rest {
            admin
                .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await
                .unwrap();
        }
    }
}

/// Each check below, run once on each store.
macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture = super::Fixture::sqlite().await;
                    super::$check(&fixture).await;
                    fixture.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture = super::Fixture::postgres().await;
                    super::$check(&fixture).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

contract!(
    submit_honours_idempotency_keys_per_tenant,
    idempotent_retries_compare_secrets_until_they_are_deleted,
    updates_are_compare_and_set_with_their_events,
    list_filters_by_state_provider_and_labels_and_pages_newest_first,
    secrets_are_sealed_at_rest_and_deleted_on_release,
    unfinished_queued_and_counts,
    concurrent_submits_all_land,
    concurrent_submits_with_one_key_make_one_job,
    every_field_round_trips,
    cost_reports_group_finished_jobs,
    nul_characters_are_stored,
    unknown_jobs,
    retention_purges_only_jobs_ended_and_released_before,
    labels_at_every_limit_in_characters_and_bytes_reach_every_state,
    owned_pages_through_the_jobs_the_engine_has_work_for,
    cost_reports_count_each_attempt_where_it_ran,
    changes_since_a_position_tell_each_changed_job_once_as_it_is_now,
    list_filters_by_name_prefix_label_keys_exit_codes_and_reasons,
    a_charge_takes_every_period_or_none,
    a_dispatch_from_a_stale_record_is_refused,
    the_write_that_ends_a_job_settles_its_charges,
);

/// A job's charge to its budgets' periods is all or none: one that fits every period raises
/// each and answers its figures; one that would take any past its limit raises none (not
/// even those it fits) and names that period as it stands; a job charged before is not
/// charged again. Concurrent charges never take a period past its limit.
async fn a_charge_takes_every_period_or_none(f: &Fixture) {
    use offload::store::ledger::{Charge, Charged, Spend};
    let ledger = f.store.ledger();
    let charge = |budget: &str, limit: i64| Charge { budget: budget.into(), period: "day:2026-12-07".into(), limit };
    let spend = |budget: &str, spent: i64, committed: i64| Spend {
        budget: budget.into(),
        period: "day:2026-12-07".into(),
        spent,
        committed,
    };
    let (one, two, three) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let both = [charge("tenant=a", 100), charge("tenant=a,dag_id=etl", 50)];
    assert_eq!(
        ledger.charge(one, 30, &both).await.unwrap(),
        Charged::Admitted(vec![spend("tenant=a", 0, 30), spend("tenant=a,dag_id=etl", 0, 30)])
    );
    // 30 more fits the tenant's 100 but not the DAG's 50: nothing is raised.
    assert_eq!(ledger.charge(two, 30, &both).await.unwrap(), Charged::Over(spend("tenant=a,dag_id=etl", 0, 30)));
    assert_eq!(ledger.charge(one, 30, &both).await.unwrap(), Charged::Admitted(vec![]), "charged before");
    // Charged before under fewer budgets (one made since): still nothing more.
    let and_new = [charge("tenant=a", 100), charge("tenant=a,dag_id=etl", 50), charge("tenant=a,dag_id=new", 100)];
    assert_eq!(ledger.charge(one, 30, &and_new).await.unwrap(), Charged::Admitted(vec![]), "charged before");
    let mut now = ledger.spend(&["day:2026-12-07".to_string()]).await.unwrap();
    // A store may have made the new budget's row, at nothing.
    now.retain(|s| s != &spend("tenant=a,dag_id=new", 0, 0));
    now.sort_by(|a, b| a.budget.cmp(&b.budget));
    assert_eq!(now, vec![spend("tenant=a", 0, 30), spend("tenant=a,dag_id=etl", 0, 30)]);
    assert_eq!(
        ledger.charge(three, 20, &both).await.unwrap(),
        Charged::Admitted(vec![spend("tenant=a", 0, 50), spend("tenant=a,dag_id=etl", 0, 50)])
    );
    // Twenty at once for the tenant's 50 left: exactly five of 10 go through.
    let only = [charge("tenant=a", 100)];
    let admitted = futures::future::join_all((0..20).map(|_| ledger.charge(Uuid::now_v7(), 10, &only)))
        .await
        .into_iter()
        .filter(|c| matches!(c.as_ref().unwrap(), Charged::Admitted(_)))
        .count();
    assert_eq!(admitted, 5);
}

async fn retention_purges_only_jobs_ended_and_released_before(f: &Fixture) {
    let store = &*f.store;
    let long_ago = Utc::now() - chrono::Duration::days(40);
    let end = |when, released| Patch {
        state: Some(JobState::Succeeded),
        finished_at: Some(when),
        released: Some(released),
        ..Patch::default()
    };
    let old = [
        created(store, job("a", Some("old-1"))).await,
        created(store, job("a", Some("old-2"))).await,
    ];
    for id in old {
        store.update(id, &[], end(long_ago, true)).await.unwrap().unwrap();
    }
    let unreleased = created(store, job("a", None)).await;
    store.update(unreleased, &[], end(long_ago, false)).await.unwrap().unwrap();
    let recent = created(store, job("a", None)).await;
    store.update(recent, &[], end(Utc::now(), true)).await.unwrap().unwrap();
    let live = created(store, job("a", Some("live"))).await;

    let before = Utc::now() - chrono::Duration::days(30);
    assert_eq!(store.purge(before, 1).await.unwrap(), 1, "one batch of one");
    assert_eq!(store.purge(before, 10).await.unwrap(), 1);
    assert_eq!(store.purge(before, 10).await.unwrap(), 0);
    for id in old {
        assert!(store.get(id).await.unwrap().is_none());
        assert!(store.events(id).await.unwrap().is_empty(), "its events went too");
    }
    for id in [unreleased, recent, live] {
        assert!(store.get(id).await.unwrap().is_some(), "{id} kept");
    }
    // The purged jobs' idempotency keys are free again; a live job's is not.
    assert!(matches!(store.submit(job("a", Some("old-1"))).await.unwrap(), Submitted::Created(_)));
    assert!(matches!(
        store.submit(job("a", Some("live"))).await.unwrap(),
        Submitted::Existing(rec) if rec.job.id == live
    ));
}

async fn submit_honours_idempotency_keys_per_tenant(f: &Fixture) {
    let store = &*f.store;
    let Submitted::Created(first) = store.submit(job("a", Some("k"))).await.unwrap() else {
        panic!("not created")
    };
    assert_eq!(first.job.state, JobState::Queued);
    assert!(!first.job.terminal);
    assert_eq!(first.tenant, "a");
    assert_eq!(first.job.spec.secret_env["TOKEN"], REDACTED);
    assert_eq!(first.job.spec.env["MODE"], "full");
    assert_eq!(first.job.labels["dag_id"], "etl");
    assert_eq!(first.job.attempts, 0);
    assert!(!first.released);
    assert_eq!(
        store.get(first.job.id).await.unwrap().as_ref(),
        Some(&*first)
    );

    let again = store.submit(job("a", Some("k"))).await.unwrap();
    assert!(
        matches!(&again, Submitted::Existing(j) if **j == *first),
        "{again:?}"
    );
    let other_spec = store
        .submit(new_job("a", Some("k"), spec("other", SECRET)))
        .await
        .unwrap();
    assert!(
        matches!(other_spec, Submitted::Conflict(id) if id == first.job.id),
        "{other_spec:?}"
    );
    // Another tenant's key is another key.
    let b = created(store, job("b", Some("k"))).await;
    assert_ne!(b, first.job.id);
    // Without a key, every submit is a new job.
    let (x, y) = (
        created(store, job("a", None)).await,
        created(store, job("a", None)).await,
    );
    assert_ne!(x, y);
    assert_eq!(store.secrets(first.job.id).await.unwrap()["TOKEN"], SECRET);
    let events = store.events(first.job.id).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].state, events[0].reason.as_deref()),
        (JobState::Queued, Some("submitted"))
    );
}

async fn idempotent_retries_compare_secrets_until_they_are_deleted(f: &Fixture) {
    let store = &*f.store;
    let id = created(store, job("a", Some("k"))).await;
    let other_secret = store
        .submit(new_job("a", Some("k"), spec("img", "another")))
        .await
        .unwrap();
    assert!(
        matches!(other_secret, Submitted::Conflict(c) if c == id),
        "{other_secret:?}"
    );
    let released = Patch {
        state: Some(JobState::Succeeded),
        released: Some(true),
        ..Patch::default()
    };
    store.update(id, &[], released).await.unwrap().unwrap();
    // Once the secrets are deleted, only their names are compared.
    for secret in [SECRET, "another"] {
        let retried = store
            .submit(new_job("a", Some("k"), spec("img", secret)))
            .await
            .unwrap();
        assert!(
            matches!(&retried, Submitted::Existing(j) if j.job.id == id),
            "{retried:?}"
        );
    }
    let mut renamed = spec("img", SECRET);
    renamed.secret_env = BTreeMap::from([("OTHER".to_string(), SECRET.to_string())]);
    assert!(matches!(
        store.submit(new_job("a", Some("k"), renamed)).await.unwrap(),
        Submitted::Conflict(c) if c == id
    ));
}

async fn updates_are_compare_and_set_with_their_events(f: &Fixture) {
    let store = &*f.store;
    let id = created(store, job("a", None)).await;
    let starting = Patch {
        state: Some(JobState::Starting),
        provider: Some("local".into()),
        ..Patch::default()
    };
    let after = store
        .update(id, &[JobState::Queued], starting.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.job.state, after.job.provider.as_deref()),
        (JobState::Starting, Some("local"))
    );
    assert!(
        store
            .update(id, &[JobState::Queued], starting)
            .await
            .unwrap()
            .is_none(),
        "a stale compare-and-set was applied"
    );
    // A CAS that does not apply writes nothing, not even its event.
    let stale = Patch {
        state: Some(JobState::Cancelled),
        event: Some("stale".into()),
        ..Patch::default()
    };
    assert!(store
        .update(id, &[JobState::Running, JobState::Queued], stale)
        .await
        .unwrap()
        .is_none());
    // Any of several expected states.
    let running = Patch {
        state: Some(JobState::Running),
        provider_ref: Some(Some("pod-1".into())),
        ..Patch::default()
    };
    let after = store
        .update(id, &[JobState::Queued, JobState::Starting], running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.job.provider_ref.as_deref(), Some("pod-1"));
    // An event without a change of state; and a patch that keeps the state adds none.
    let noted = Patch {
        event: Some("image pulled".into()),
        ..Patch::default()
    };
    store.update(id, &[], noted).await.unwrap().unwrap();
    let same_state = Patch {
        state: Some(JobState::Running),
        reason: Some("still running".into()),
        ..Patch::default()
    };
    store.update(id, &[], same_state).await.unwrap().unwrap();
    // An empty patch is a compare: the job when its state matches, None when not.
    assert!(store
        .update(id, &[JobState::Running], Patch::default())
        .await
        .unwrap()
        .is_some());
    assert!(store
        .update(id, &[JobState::Queued], Patch::default())
        .await
        .unwrap()
        .is_none());
    let failed = Patch {
        state: Some(JobState::Failed),
        exit_code: Some(3),
        reason: Some("exited with code 3".into()),
        provider_ref: Some(None),
        ..Patch::default()
    };
    let after = store.update(id, &[], failed).await.unwrap().unwrap();
    assert!(after.job.terminal);
    assert_eq!(after.job.provider_ref, None, "provider_ref was not cleared");
    assert_eq!(after.job.exit_code, Some(3));
    assert_eq!(after.job.reason.as_deref(), Some("exited with code 3"));
    let events: Vec<_> = store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.state, e.reason))
        .collect();
    assert_eq!(
        events,
        vec![
            (JobState::Queued, Some("submitted".into())),
            (JobState::Starting, None),
            (JobState::Running, None),
            (JobState::Running, Some("image pulled".into())),
            (JobState::Failed, Some("exited with code 3".into())),
        ]
    );
    let all = store.events(id).await.unwrap();
    assert!(all
        .windows(2)
        .all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at));
}

/// The write that ends a charged job settles its charges in the same transaction: each of
/// its periods has the job's cost spent and its estimate no longer committed, with no
/// round of [`Ledger::settle`] (which used to look over every live charge each second).
/// Other jobs' charges, and writes that do not end a job, leave the figures alone.
async fn the_write_that_ends_a_job_settles_its_charges(f: &Fixture) {
    use offload::store::ledger::{Charge, Charged, Spend};
    let (store, ledger) = (&*f.store, f.store.ledger());
    let period = "day:2026-12-07".to_string();
    let charge = |budget: &str| Charge { budget: budget.into(), period: period.clone(), limit: 1_000_000 };
    let both = [charge("tenant=a"), charge("tenant=a,dag_id=etl")];
    let (ends, runs_on) = (created(store, job("a", None)).await, created(store, job("a", None)).await);
    assert!(matches!(ledger.charge(ends, 300, &both).await.unwrap(), Charged::Admitted(_)));
    assert!(matches!(ledger.charge(runs_on, 500, &both[..1]).await.unwrap(), Charged::Admitted(_)));
    let spend = || async {
        let mut now = ledger.spend(std::slice::from_ref(&period)).await.unwrap();
        now.sort_by(|a, b| a.budget.cmp(&b.budget));
        now
    };
    let row = |budget: &str, spent: i64, committed: i64| Spend { budget: budget.into(), period: period.clone(), spent, committed };
    let started = Patch { state: Some(JobState::Running), ..Patch::default() };
    store.update(ends, &[JobState::Queued], started).await.unwrap().unwrap();
    assert_eq!(spend().await, [row("tenant=a", 0, 800), row("tenant=a,dag_id=etl", 0, 300)], "not ended yet");
    let cost = offload::model::JobCost {
        provider: "a".into(),
        hourly_usd: 0.1,
        estimated_usd: 0.0003,
        billed_seconds: Some(2),
        usd: Some(0.000042),
        earlier_usd: 0.0,
        earlier: vec![],
        reference: None,
    };
    let ended = Patch { state: Some(JobState::Succeeded), cost: Some(cost), ..Patch::default() };
    store.update(ends, &[JobState::Running], ended).await.unwrap().unwrap();
    assert_eq!(spend().await, [row("tenant=a", 42, 500), row("tenant=a,dag_id=etl", 42, 0)]);
    assert_eq!(ledger.settle(100).await.unwrap(), 0, "nothing left to settle");
    // Written again once ended (its release, say): not settled twice.
    let released = Patch { released: Some(true), ..Patch::default() };
    store.update(ends, &[], released).await.unwrap().unwrap();
    assert_eq!(spend().await, [row("tenant=a", 42, 500), row("tenant=a,dag_id=etl", 42, 0)]);
    let cancelled = Patch { state: Some(JobState::Cancelled), ..Patch::default() };
    store.update(runs_on, &[JobState::Queued], cancelled).await.unwrap().unwrap();
    assert_eq!(spend().await, [row("tenant=a", 42, 0), row("tenant=a,dag_id=etl", 42, 0)], "a job that cost nothing");
}

/// A dispatch is written for the attempts its record showed: once the job was dispatched
/// and queued again since (a failover), the same state no longer lets a stale record
/// through, and nothing changes.
async fn a_dispatch_from_a_stale_record_is_refused(f: &Fixture) {
    let store = &*f.store;
    let id = created(store, job("a", None)).await;
    let dispatch = |attempts_before: u32, provider: &str| Patch {
        state: Some(JobState::Starting),
        provider: Some(provider.into()),
        attempts: Some(attempts_before + 1),
        if_attempts: Some(attempts_before),
        event: Some(format!("dispatched to {provider}")),
        ..Patch::default()
    };
    store.update(id, &[JobState::Queued], dispatch(0, "a")).await.unwrap().unwrap();
    let failover = Patch {
        state: Some(JobState::Queued),
        excluded: Some(vec!["a".into()]),
        ..Patch::default()
    };
    store.update(id, &[JobState::Starting], failover).await.unwrap().unwrap();
    // Queued again, as the stale record says, but at one attempt, not none.
    let stale = store.update(id, &[JobState::Queued], dispatch(0, "a")).await.unwrap();
    assert!(stale.is_none(), "{stale:?}");
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!((job.job.state, job.job.attempts, job.excluded.clone()), (JobState::Queued, 1, vec!["a".to_string()]));
    let after = store.update(id, &[JobState::Queued], dispatch(1, "b")).await.unwrap().unwrap();
    assert_eq!((after.job.attempts, after.job.provider.as_deref()), (2, Some("b")));
    let reasons: Vec<_> = store.events(id).await.unwrap().into_iter().filter_map(|e| e.reason).collect();
    assert_eq!(reasons, ["submitted", "dispatched to a", "dispatched to b"]);
}

async fn list_filters_by_state_provider_and_labels_and_pages_newest_first(f: &Fixture) {
    let store = &*f.store;
    let mut ids = vec![];
    for i in 0..25 {
        let mut s = spec("img", SECRET);
        s.labels.insert("n".into(), (i % 5).to_string());
        if i % 2 == 0 {
            s.labels.insert("dag_id".into(), "other".into());
        }
        ids.push(created(store, new_job("a", None, s)).await);
    }
    created(store, job("b", None)).await;
    let page_all = |q: ListQuery| async move {
        let mut q = ListQuery { limit: 4, ..q };
        let mut seen = vec![];
        loop {
            let page = store.list("a", &q).await.unwrap();
            assert!(page.len() <= 4);
            let Some(last) = page.last() else { break };
            q.before = Some(last.id);
            seen.extend(page.into_iter().map(|j| j.id));
        }
        seen
    };
    let all = page_all(ListQuery::default()).await;
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(all, newest_first);
    let etl = page_all(ListQuery {
        labels: vec![("dag_id".into(), "etl".into())],
        ..ListQuery::default()
    })
    .await;
    assert_eq!(etl.len(), 12);
    let both = page_all(ListQuery {
        labels: vec![("dag_id".into(), "etl".into()), ("n".into(), "1".into())],
        ..ListQuery::default()
    })
    .await;
    // i in 0..25 with i odd and i % 5 == 1: 1, 11, 21.
    assert_eq!(both, vec![ids[21], ids[11], ids[1]]);
    for (labels, what) in [
        (vec![("dag_id".into(), "nope".into())], "an unknown value"),
        (vec![("nope".into(), "etl".into())], "an unknown key"),
        (
            vec![
                ("dag_id".into(), "etl".into()),
                ("dag_id".into(), "other".into()),
            ],
            "two values for one key",
        ),
    ] {
        let q = ListQuery {
            labels,
            limit: 100,
            ..ListQuery::default()
        };
        assert!(
            store.list("a", &q).await.unwrap().is_empty(),
            "{what} matched"
        );
    }
    // The same selector twice is the selector once.
    let twice = ListQuery {
        labels: vec![("n".into(), "0".into()), ("n".into(), "0".into())],
        limit: 100,
        ..ListQuery::default()
    };
    assert_eq!(store.list("a", &twice).await.unwrap().len(), 5);
    // State and provider.
    let moved = Patch {
        state: Some(JobState::Starting),
        provider: Some("ecs".into()),
        ..Patch::default()
    };
    store.update(ids[3], &[], moved).await.unwrap().unwrap();
    let q = ListQuery {
        state: Some(JobState::Starting),
        limit: 100,
        ..ListQuery::default()
    };
    let starting: Vec<_> = store.list("a", &q).await.unwrap();
    assert_eq!(starting.len(), 1);
    assert_eq!(starting[0].id, ids[3]);
    assert_eq!(starting[0].provider.as_deref(), Some("ecs"));
    let q = ListQuery {
        provider: Some("ecs".into()),
        labels: vec![("n".into(), "3".into())],
        limit: 100,
        ..ListQuery::default()
    };
    assert_eq!(store.list("a", &q).await.unwrap().len(), 1);
    let q = ListQuery {
        provider: Some("local".into()),
        limit: 100,
        ..ListQuery::default()
    };
    assert!(store.list("a", &q).await.unwrap().is_empty());
    // A tenant never sees another's jobs.
    let q = ListQuery {
        limit: 100,
        ..ListQuery::default()
    };
    assert_eq!(store.list("b", &q).await.unwrap().len(), 1);
    assert!(store.list("c", &q).await.unwrap().is_empty());
    let one = ListQuery {
        limit: 1,
        ..ListQuery::default()
    };
    assert_eq!(store.list("a", &one).await.unwrap()[0].id, ids[24]);
}

async fn secrets_are_sealed_at_rest_and_deleted_on_release(f: &Fixture) {
    let store = &*f.store;
    let id = created(store, job("a", Some("k"))).await;
    assert!(
        !f.at_rest_contains(SECRET).await,
        "the secret is at rest in the clear"
    );
    if let Some(sealed) = f.stored_secret_env(id).await {
        assert!(sealed.starts_with("v1:"), "{sealed}");
    }
    assert_eq!(store.secrets(id).await.unwrap()["TOKEN"], SECRET);
    // Ending the job keeps them (the workload may still need launching again) ...
    let ended = Patch {
        state: Some(JobState::Succeeded),
        ..Patch::default()
    };
    store.update(id, &[], ended).await.unwrap().unwrap();
    assert_eq!(store.secrets(id).await.unwrap()["TOKEN"], SECRET);
    // ... releasing its workload deletes them.
    let released = Patch {
        released: Some(true),
        ..Patch::default()
    };
    let after = store.update(id, &[], released).await.unwrap().unwrap();
    assert!(after.released);
    assert!(store.secrets(id).await.unwrap().is_empty());
    if let Some(sealed) = f.stored_secret_env(id).await {
        assert_eq!(sealed, "");
    }
    // Secrets of jobs without any are empty, and so are an unknown job's.
    let none = created(
        store,
        new_job("a", None, spec("img", SECRET).without_secrets()),
    )
    .await;
    assert!(store.secrets(none).await.unwrap().is_empty());
    assert!(store.secrets(Uuid::now_v7()).await.unwrap().is_empty());
}

trait WithoutSecrets {
    fn without_secrets(self) -> Self;
}

impl WithoutSecrets for JobSpec {
    fn without_secrets(mut self) -> Self {
        self.secret_env.clear();
        self
    }
}

async fn unfinished_queued_and_counts(f: &Fixture) {
    let store = &*f.store;
    let mut ids = vec![];
    for _ in 0..6 {
        ids.push(created(store, job("a", None)).await);
    }
    // Apart by more than SQLite's millisecond, so that "before" is never a tie.
    let pause = || tokio::time::sleep(Duration::from_millis(5));
    pause().await;
    let cutoff = Utc::now();
    pause().await;
    let late = created(store, job("a", None)).await;
    pause().await;
    let set = |state, provider: Option<&str>, provider_ref: Option<&str>, released| Patch {
        state: Some(state),
        provider: provider.map(String::from),
        provider_ref: provider_ref.map(|r| Some(r.to_string())),
        released,
        ..Patch::default()
    };
    // ids[0], ids[1]: queued. ids[2]: running. ids[3]: ended, its workload still there.
    // ids[4]: ended and released. ids[5]: failed before it reached a provider.
    let patches = [
        (2, set(JobState::Running, Some("local"), Some("p2"), None)),
        (3, set(JobState::Succeeded, Some("local"), Some("p3"), None)),
        (
            4,
            set(JobState::Failed, Some("ecs"), Some("p4"), Some(true)),
        ),
        (5, set(JobState::Failed, None, None, None)),
    ];
    for (i, patch) in patches {
        store.update(ids[i], &[], patch).await.unwrap().unwrap();
    }
    let unfinished: Vec<Uuid> = store
        .unfinished()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job.id)
        .collect();
    assert_eq!(unfinished, vec![ids[0], ids[1], ids[2], ids[3], late]);
    assert_eq!(
        store.queued(cutoff, 100).await.unwrap(),
        vec![ids[0], ids[1]],
        "queued before the cutoff, oldest first"
    );
    assert_eq!(store.queued(cutoff, 1).await.unwrap(), vec![ids[0]]);
    assert_eq!(
        store.queued(Utc::now(), 100).await.unwrap(),
        vec![ids[0], ids[1], late]
    );
    // Jobs not yet released (ids[4], released, is not counted), by provider and state.
    let mut counts = store.counts().await.unwrap();
    counts.sort_by_key(|(p, s, _)| (p.clone(), s.as_str()));
    assert_eq!(
        counts,
        vec![
            ("".to_string(), JobState::Failed, 1),
            ("".to_string(), JobState::Queued, 3),
            ("local".to_string(), JobState::Running, 1),
            ("local".to_string(), JobState::Succeeded, 1),
        ]
    );
    store.ping().await.unwrap();
}

async fn concurrent_submits_all_land(f: &Fixture) {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = f.store.clone();
            tokio::spawn(async move {
                let key = format!("key-{i}");
                match store.submit(job("a", Some(&key))).await.unwrap() {
                    Submitted::Created(rec) => rec.job.id,
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    let mut ids = vec![];
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let q = ListQuery {
        limit: 1000,
        ..ListQuery::default()
    };
    let mut listed: Vec<Uuid> = f
        .store
        .list("a", &q)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    ids.sort();
    listed.sort();
    assert_eq!(listed, ids);
    assert_eq!(f.store.unfinished().await.unwrap().len(), 50);
}

async fn concurrent_submits_with_one_key_make_one_job(f: &Fixture) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = f.store.clone();
            tokio::spawn(async move { store.submit(job("a", Some("same"))).await.unwrap() })
        })
        .collect();
    let (mut made, mut found) = (vec![], vec![]);
    for t in tasks {
        match t.await.unwrap() {
            Submitted::Created(rec) => made.push(rec.job.id),
            Submitted::Existing(rec) => found.push(rec.job.id),
            Submitted::Conflict(id) => panic!("conflict with {id}"),
        }
    }
    assert_eq!(made.len(), 1, "one job per key");
    assert_eq!(found.len(), 49);
    assert!(found.iter().all(|id| *id == made[0]));
    let q = ListQuery {
        limit: 1000,
        ..ListQuery::default()
    };
    assert_eq!(f.store.list("a", &q).await.unwrap().len(), 1);
}

async fn every_field_round_trips(f: &Fixture) {
    let store = &*f.store;
    let mut s = spec("img", SECRET);
    s.provider_options.insert(
        "sim".into(),
        serde_json::json!({"n": 1.5, "big": 12345678901234567u64, "list": [1, "x", null]}),
    );
    s.timeout_seconds = Some(90);
    s.resources.cpu = 0.1;
    let id = created(store, new_job("a", Some("k"), s.clone())).await;
    let t = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let patch = Patch {
        state: Some(JobState::Cancelling),
        provider: Some("kubernetes".into()),
        provider_ref: Some(Some("ns/pod".into())),
        attempts: Some(3),
        launch_key: Some(format!("{id}-3")),
        dispatched_at: Some(t(1_700_000_000_123)),
        first_dispatched_at: Some(t(1_699_999_000_001)),
        exit_code: Some(-9),
        reason: Some("cancelled by a user".into()),
        result: Some(serde_json::json!({"rows": 10, "ok": true, "x": 0.1})),
        started_at: Some(t(1_700_000_001_456)),
        finished_at: Some(t(1_700_000_002_789)),
        cancel_requested_by: Some("alice".into()),
        log_tail: Some("line 1\nline 2\n".into()),
        released: Some(false),
        excluded: Some(vec!["ecs".into(), "aci".into()]),
        // A new job has made none: the patch applies.
        if_attempts: Some(0),
        cost: Some(JobCost {
            provider: "kubernetes".into(),
            hourly_usd: 0.1,
            estimated_usd: 0.0166,
            billed_seconds: Some(61),
            usd: Some(0.25),
            earlier_usd: 0.125,
            earlier: vec![offload::model::AttemptCost { provider: "ecs".into(), billed_seconds: 60, usd: 0.125, preempted: true }],
            reference: Some(offload::model::ReferenceCost { provider: "ecs".into(), hourly_usd: 0.2, usd: Some(0.5) }),
        }),
        steps: Some(vec![offload::model::steps::StepLog {
            role: offload_provider::StepRole::StageIn,
            exit_code: Some(1),
            started_at: Some(t(1_700_000_001_500)),
            finished_at: None,
            log: "offload-filer: s3://b/k: not found\n".into(),
        }]),
        event: None,
        from_any_replica: false,
    };
    let after = store.update(id, &[], patch).await.unwrap().unwrap();
    let got = store.get(id).await.unwrap().unwrap();
    assert_eq!(after, got);
    assert_eq!(got.job.state, JobState::Cancelling);
    assert_eq!(got.job.provider.as_deref(), Some("kubernetes"));
    assert_eq!(got.job.provider_ref.as_deref(), Some("ns/pod"));
    assert_eq!(got.job.attempts, 3);
    assert_eq!(got.launch_key, Some(format!("{id}-3")));
    assert_eq!(got.dispatched_at, Some(t(1_700_000_000_123)));
    assert_eq!(got.first_dispatched_at, Some(t(1_699_999_000_001)));
    assert_eq!(got.job.exit_code, Some(-9));
    assert_eq!(got.job.reason.as_deref(), Some("cancelled by a user"));
    assert_eq!(
        got.job.result,
        Some(serde_json::json!({"rows": 10, "ok": true, "x": 0.1}))
    );
    assert_eq!(got.job.started_at, Some(t(1_700_000_001_456)));
    assert_eq!(got.job.finished_at, Some(t(1_700_000_002_789)));
    assert_eq!(got.cancel_requested_by.as_deref(), Some("alice"));
    assert_eq!(got.excluded, vec!["ecs".to_string(), "aci".to_string()]);
    assert!(!got.released);
    let cost = got.job.cost.as_ref().unwrap();
    assert_eq!(cost.provider, "kubernetes");
    assert_eq!((cost.hourly_usd, cost.estimated_usd), (0.1, 0.0166));
    assert_eq!((cost.billed_seconds, cost.usd), (Some(61), Some(0.25)));
    assert_eq!(cost.earlier_usd, 0.125);
    assert_eq!(got.job.steps.len(), 1);
    assert_eq!(got.job.steps[0].exit_code, Some(1));
    assert_eq!(got.job.steps[0].started_at, Some(t(1_700_000_001_500)));
    assert_eq!(got.job.steps[0].log, "offload-filer: s3://b/k: not found\n");
    assert_eq!(got.job.spec, s.redacted());
    assert_eq!(
        store.log_tail(id).await.unwrap().as_deref(),
        Some("line 1\nline 2\n")
    );
    // The spec read back is the spec sent: the same key and spec is the same job.
    assert!(matches!(
        store.submit(new_job("a", Some("k"), s)).await.unwrap(),
        Submitted::Existing(j) if j.job.id == id
    ));
    // Fields a patch leaves out stay as they are.
    let later = Patch {
        state: Some(JobState::Cancelled),
        ..Patch::default()
    };
    let after = store.update(id, &[], later).await.unwrap().unwrap();
    assert_eq!(after.job.exit_code, Some(-9));
    assert_eq!(after.excluded.len(), 2);
    assert_eq!(after.launch_key, Some(format!("{id}-3")));
    assert_eq!(after.job.cost, got.job.cost);
    assert_eq!(after.job.steps, got.job.steps);
}

/// What TES lists by: a name's prefix (taken as text, `%` and `_` too), labels present
/// whatever their value, an exit code or none, a reason that starts (or does not start)
/// with a text.
async fn list_filters_by_name_prefix_label_keys_exit_codes_and_reasons(f: &Fixture) {
    let store = &*f.store;
    let mut ids = vec![];
    for (name, label, exit, reason) in [
        ("alpha_1", Some(""), Some(0), Some("exited with code 0")),
        ("alpha%2", None, None, Some("Fargate Spot interruption: gone")),
        ("beta", Some("x"), None, None),
    ] {
        let mut s = spec("img", SECRET);
        s.name = Some(name.into());
        if let Some(v) = label {
            s.labels.insert("tag".into(), v.into());
        }
        let id = created(store, new_job("a", None, s)).await;
        let patch = Patch {
            exit_code: exit,
            reason: reason.map(String::from),
            ..Patch::default()
        };
        store.update(id, &[], patch).await.unwrap().unwrap();
        ids.push(id);
    }
    let list = |q: ListQuery| async move {
        let q = ListQuery { limit: 10, ..q };
        let mut got: Vec<Uuid> = store.list("a", &q).await.unwrap().into_iter().map(|j| j.id).collect();
        got.reverse();
        got
    };
    let prefix = |p: &str| ListQuery { name_prefix: Some(p.into()), ..ListQuery::default() };
    assert_eq!(list(prefix("alpha")).await, [ids[0], ids[1]]);
    assert_eq!(list(prefix("alpha%")).await, [ids[1]]);
    assert_eq!(list(prefix("alpha_")).await, [ids[0]]);
    assert_eq!(list(prefix("lpha")).await, Vec::<Uuid>::new());
    let keys = ListQuery { label_keys: vec!["tag".into()], ..ListQuery::default() };
    assert_eq!(list(keys).await, [ids[0], ids[2]]);
    let coded = ListQuery { has_exit_code: Some(true), ..ListQuery::default() };
    assert_eq!(list(coded).await, [ids[0]]);
    let spot = ListQuery {
        has_exit_code: Some(false),
        reason_prefix: Some(("Fargate Spot".into(), true)),
        ..ListQuery::default()
    };
    assert_eq!(list(spot).await, [ids[1]]);
    let other = ListQuery {
        has_exit_code: Some(false),
        reason_prefix: Some(("Fargate Spot".into(), false)),
        ..ListQuery::default()
    };
    assert_eq!(list(other).await, [ids[2]]);
    assert!(store.list("b", &keys_of("tag")).await.unwrap().is_empty());
}

fn keys_of(key: &str) -> ListQuery {
    ListQuery { label_keys: vec![key.into()], limit: 10, ..ListQuery::default() }
}

/// Labels as large as validation lets them be, in characters and in bytes (a character of
/// four bytes, and CJK of three), go through a job's whole life: submitted, listed by
/// selector, dispatched, ended in each terminal state, read back as run times and costs.
/// On PostgreSQL the index of a DAG task's runs held the labels' values themselves, so a
/// `dag_id` of 1,000 CJK characters made its row too big for a B-tree and the job could
/// never be ended `succeeded`.
async fn labels_at_every_limit_in_characters_and_bytes_reach_every_state(f: &Fixture) {
    use offload::model::limits;
    let store = &*f.store;
    // Random characters of a range, which no compression shrinks (a database may compress a
    // long index entry, and a repeated character would fit).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |range: std::ops::Range<u32>, n: usize| -> String {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from_u32(range.start + (seed % u64::from(range.end - range.start)) as u32)
                    .unwrap()
            })
            .collect()
    };
    let shapes = [
        0x61..0x7b,        // a-z: one byte a character
        0x4e00..0x9fff,    // CJK: three bytes
        0x20000..0x2a6df,  // CJK Extension B: four bytes
    ];
    for (n, range) in shapes.into_iter().enumerate() {
        let mut labels = BTreeMap::new();
        labels.insert("dag_id".to_string(), random(range.clone(), limits::LABEL_VALUE));
        labels.insert("task_id".to_string(), random(range.clone(), limits::LABEL_VALUE));
        // As many more labels at their limits as the spec's own limit in bytes leaves room
        // for.
        let mut s = spec("img", SECRET);
        for i in labels.len()..limits::LABELS {
            let key = format!("{i:02}{}", random(range.clone(), limits::LABEL_KEY - 2));
            let mut more = labels.clone();
            more.insert(key, random(range.clone(), limits::LABEL_VALUE));
            s.labels = more.clone();
            if s.validate().is_err() {
                break;
            }
            labels = more;
        }
        s.labels = labels.clone();
        s.validate().expect("labels at the limits are valid");
        for end in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
            let id = created(store, new_job("a", Some(&format!("{n}-{end:?}")), s.clone())).await;
            let selector: Vec<(String, String)> = labels.clone().into_iter().take(3).collect();
            let listed = store
                .list(
                    "a",
                    &ListQuery {
                        labels: selector,
                        limit: 10,
                        ..ListQuery::default()
                    },
                )
                .await
                .unwrap();
            assert!(listed.iter().any(|j| j.id == id), "shape {n}: not listed by its labels");
            let dispatch = Patch {
                state: Some(JobState::Starting),
                provider: Some("local".into()),
                attempts: Some(1),
                launch_key: Some(format!("offload-{}-1", id.simple())),
                dispatched_at: Some(Utc::now()),
                ..Patch::default()
            };
            store.update(id, &[JobState::Queued], dispatch).await.unwrap().unwrap();
            let started = Utc::now() - chrono::Duration::seconds(3);
            let ended = Patch {
                state: Some(end),
                started_at: Some(started),
                finished_at: Some(started + chrono::Duration::seconds(3)),
                reason: Some("done".into()),
                ..Patch::default()
            };
            let after = store
                .update(id, &[JobState::Starting], ended)
                .await
                .unwrap_or_else(|e| panic!("shape {n}: ending the job {end:?}: {e}"));
            assert_eq!(after.map(|r| r.job.state), Some(end), "shape {n}");
        }
        let runs = store
            .run_durations("a", &labels["dag_id"], &labels["task_id"], 5)
            .await
            .unwrap();
        assert_eq!(runs, [3], "shape {n}: the succeeded run, read back by its DAG task");
        let costs = store
            .costs(
                "a",
                &CostQuery {
                    group_by: CostGrouping::Label("dag_id".into()),
                    since: Utc::now() - chrono::Duration::hours(1),
                    until: Utc::now() + chrono::Duration::hours(1),
                },
            )
            .await
            .unwrap();
        assert!(
            costs.iter().any(|g| g.key == labels["dag_id"] && g.jobs == 3),
            "shape {n}: costs by dag_id"
        );
    }
}

/// The sweep of a replica's own jobs pages through every job its engine still has work
/// for (as `unfinished` finds them), in id order, and nothing else.
async fn owned_pages_through_the_jobs_the_engine_has_work_for(f: &Fixture) {
    let store = &*f.store;
    let mut ids = vec![];
    for _ in 0..5 {
        ids.push(created(store, job("t", None)).await);
    }
    // Ended and released: nothing left to do. Ended with a workload not yet released: its
    // release is left.
    let ended = |released| Patch {
        state: Some(JobState::Succeeded),
        provider_ref: Some(Some("w".into())),
        released: Some(released),
        ..Patch::default()
    };
    store.update(ids[1], &[], ended(true)).await.unwrap().unwrap();
    store.update(ids[2], &[], ended(false)).await.unwrap().unwrap();
    let first = store.owned(None, 2).await.unwrap();
    assert_eq!(first, [ids[0], ids[2]]);
    let rest = store.owned(first.last().copied(), 2).await.unwrap();
    assert_eq!(rest, [ids[3], ids[4]]);
    assert!(store.owned(Some(ids[4]), 2).await.unwrap().is_empty());
    let mut unfinished: Vec<Uuid> = store.unfinished().await.unwrap().iter().map(|r| r.job.id).collect();
    unfinished.sort();
    assert_eq!(unfinished, [ids[0], ids[2], ids[3], ids[4]]);
}

/// Over random attempt histories (up to four attempts over four providers), a cost report
/// by provider counts each attempt at the provider that ran it, to the micro-dollar, and
/// its total is the sum of the jobs' costs; `jobs` counts each job at its last provider.
/// Earlier attempts used to be counted at the last attempt's provider.
async fn cost_reports_count_each_attempt_where_it_ran(f: &Fixture) {
    use offload::model::{usd, AttemptCost};
    let store = &*f.store;
    let providers = ["aca", "ecs", "gke", "run"];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut spent: BTreeMap<&str, f64> = BTreeMap::new();
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0.0;
    let at = Utc::now();
    for _ in 0..120 {
        let attempts: Vec<(&str, f64)> = (0..=next(4))
            .map(|_| (providers[next(4) as usize], usd(next(10_000_000) as f64 / 1e6)))
            .collect();
        let (final_provider, final_usd) = *attempts.last().unwrap();
        let earlier: Vec<AttemptCost> = attempts[..attempts.len() - 1]
            .iter()
            .map(|(p, u)| AttemptCost {
                provider: p.to_string(),
                billed_seconds: 1,
                usd: *u,
                preempted: false,
            })
            .collect();
        let earlier_usd = usd(earlier.iter().map(|a| a.usd).sum());
        let job_usd = usd(earlier_usd + final_usd);
        for (p, u) in &attempts {
            *spent.entry(p).or_default() += u;
        }
        *last.entry(final_provider).or_default() += 1;
        total += job_usd;
        let id = created(store, job("a", None)).await;
        let patch = Patch {
            state: Some(JobState::Failed),
            provider: Some(final_provider.into()),
            finished_at: Some(at),
            cost: Some(JobCost {
                provider: final_provider.into(),
                hourly_usd: 1.0,
                estimated_usd: 0.0,
                billed_seconds: Some(1),
                usd: Some(job_usd),
                earlier_usd,
                earlier,
                reference: None,
            }),
            ..Patch::default()
        };
        store.update(id, &[], patch).await.unwrap().unwrap();
    }
    let query = CostQuery {
        group_by: CostGrouping::Provider,
        since: at - chrono::Duration::seconds(1),
        until: at + chrono::Duration::seconds(1),
    };
    let report = store.costs("a", &query).await.unwrap();
    let micro = |x: f64| (x * 1e6).round() as i64;
    for group in &report {
        let p = group.key.as_str();
        assert_eq!(micro(group.usd), micro(spent[p]), "{p}: {report:?}");
        assert_eq!(group.jobs, last.get(p).copied().unwrap_or(0), "{p}");
    }
    assert_eq!(report.len(), spent.len(), "{report:?}");
    let reported: f64 = report.iter().map(|g| g.usd).sum();
    assert_eq!(micro(reported), micro(total));
}

/// A reader following many jobs (the Airflow executor) asks what changed since its last
/// position: each of its tenant's jobs that match the selector once, as it is now, in the
/// order of its latest change, pages cut at the limit and continued from `next`.
async fn changes_since_a_position_tell_each_changed_job_once_as_it_is_now(f: &Fixture) {
    use offload::store::ChangesQuery;
    let store = &*f.store;
    let labelled = |tenant: &str, exec: &str| {
        let mut s = spec("img", SECRET);
        s.labels = BTreeMap::from([("exec".to_string(), exec.to_string())]);
        new_job(tenant, None, s)
    };
    let ours = vec![("exec".to_string(), "x".to_string())];
    let query = |after, limit| ChangesQuery {
        after,
        labels: ours.clone(),
        limit,
    };
    let j1 = created(store, labelled("a", "x")).await;
    let j2 = created(store, labelled("a", "y")).await;
    let j3 = created(store, labelled("b", "x")).await;
    let page = store.changed_since("a", &query(0, 100)).await.unwrap();
    let ids: Vec<Uuid> = page.jobs.iter().map(|(j, _)| j.id).collect();
    assert_eq!(ids, [j1], "the tenant's jobs that match, and only those");
    assert!(!page.more);
    for id in [j2, j3, j1] {
        let start = Patch {
            state: Some(JobState::Starting),
            ..Patch::default()
        };
        store.update(id, &[], start).await.unwrap().unwrap();
    }
    let page2 = store.changed_since("a", &query(page.next, 100)).await.unwrap();
    assert_eq!(page2.jobs.len(), 1);
    assert_eq!((page2.jobs[0].0.id, page2.jobs[0].0.state), (j1, JobState::Starting));
    // Nothing new: an empty page, the position unchanged.
    let empty = store.changed_since("a", &query(page2.next, 100)).await.unwrap();
    assert!(empty.jobs.is_empty() && !empty.more);
    assert_eq!(empty.next, page2.next);
    // Pages of two over five new jobs: each once, in order.
    let mut made = vec![];
    for _ in 0..5 {
        made.push(created(store, labelled("a", "x")).await);
    }
    let (mut seen, mut after) = (vec![], page2.next);
    loop {
        let page = store.changed_since("a", &query(after, 2)).await.unwrap();
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.iter().map(|(j, _)| j.id));
        after = page.next;
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, made);
}

async fn cost_reports_group_finished_jobs(f: &Fixture) {
    let store = &*f.store;
    let t = |s: i64| chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap();
    // (tenant, dag_id label, provider, estimated, usd, finished at)
    let rows: [(&str, Option<&str>, Option<&str>, f64, f64, i64); 7] = [
        ("a", Some("etl"), Some("ecs"), 0.5, 0.25, 10),
        ("a", Some("etl"), Some("aci"), 1.0, 2.0, 20),
        ("a", Some("ml"), Some("ecs"), 4.0, 8.0, 30),
        ("a", None, Some("aci"), 0.125, 0.5, 40),
        // Never dispatched: no cost, provider "".
        ("a", Some("ml"), None, 0.0, 0.0, 50),
        // Outside the period, and another tenant.
        ("a", Some("etl"), Some("ecs"), 16.0, 32.0, 100),
        ("b", Some("etl"), Some("ecs"), 64.0, 128.0, 10),
    ];
    for (tenant, dag, provider, estimated, usd, at) in rows {
        let mut s = spec("img", SECRET);
        s.labels.clear();
        if let Some(d) = dag {
            s.labels.insert("dag_id".into(), d.into());
        }
        let id = created(store, new_job(tenant, None, s)).await;
        let patch = Patch {
            state: Some(JobState::Succeeded),
            provider: provider.map(String::from),
            finished_at: Some(t(at)),
            cost: provider.map(|p| JobCost {
                provider: p.into(),
                hourly_usd: 1.0,
                estimated_usd: estimated,
                billed_seconds: Some(1),
                usd: Some(usd),
                earlier_usd: 0.0,
                earlier: vec![],
                // Twice the price: each job saved what it cost.
                reference: Some(offload::model::ReferenceCost {
                    provider: "dear".into(),
                    hourly_usd: 2.0,
                    usd: Some(2.0 * usd),
                }),
            }),
            ..Patch::default()
        };
        store.update(id, &[], patch).await.unwrap().unwrap();
    }
    // A job still running has no finished_at and is not counted.
    created(store, job("a", None)).await;
    let g = |key: &str, jobs: u64, usd: f64, estimated_usd: f64| CostGroup {
        key: key.into(),
        jobs,
        usd,
        estimated_usd,
        reference_usd: 2.0 * usd,
        saved_usd: usd,
    };
    let query = |group_by| CostQuery {
        group_by,
        since: t(10),
        until: t(100),
    };
    let by_dag = store
        .costs("a", &query(CostGrouping::Label("dag_id".into())))
        .await
        .unwrap();
    assert_eq!(
        by_dag,
        vec![
            g("", 1, 0.5, 0.125),
            g("etl", 2, 2.25, 1.5),
            g("ml", 2, 8.0, 4.0),
        ]
    );
    let by_provider = store
        .costs("a", &query(CostGrouping::Provider))
        .await
        .unwrap();
    assert_eq!(
        by_provider,
        vec![
            g("", 1, 0.0, 0.0),
            g("aci", 2, 2.5, 1.125),
            g("ecs", 2, 8.25, 4.5),
        ]
    );
    let none = store
        .costs("a", &query(CostGrouping::Label("no-such".into())))
        .await
        .unwrap();
    assert_eq!(none, vec![g("", 5, 10.75, 5.625)]);
    assert!(store
        .costs("c", &query(CostGrouping::Provider))
        .await
        .unwrap()
        .is_empty());
}

async fn nul_characters_are_stored(f: &Fixture) {
    let store = &*f.store;
    let mut s = spec("img", "with\0nul");
    s.env.insert("NUL".into(), "a\0b".into());
    s.labels.insert("odd".into(), "x\0y".into());
    let id = created(store, new_job("a", Some("k\0"), s.clone())).await;
    let got = store.get(id).await.unwrap().unwrap();
    assert_eq!(got.job.spec, s.redacted());
    assert_eq!(store.secrets(id).await.unwrap()["TOKEN"], "with\0nul");
    assert!(matches!(
        store.submit(new_job("a", Some("k\0"), s)).await.unwrap(),
        Submitted::Existing(j) if j.job.id == id
    ));
    let q = ListQuery {
        labels: vec![("odd".into(), "x\0y".into())],
        limit: 10,
        ..ListQuery::default()
    };
    assert_eq!(store.list("a", &q).await.unwrap().len(), 1);
    let patch = Patch {
        state: Some(JobState::Failed),
        reason: Some("bad\0reason".into()),
        log_tail: Some("binary \0 output\n".into()),
        result: Some(serde_json::json!({"s": "nul\0here"})),
        ..Patch::default()
    };
    let after = store.update(id, &[], patch).await.unwrap().unwrap();
    assert_eq!(
        after.job.result,
        Some(serde_json::json!({"s": "nul\0here"}))
    );
    assert!(after.job.reason.unwrap().starts_with("bad"));
    assert!(store
        .log_tail(id)
        .await
        .unwrap()
        .unwrap()
        .starts_with("binary "));
}

async fn unknown_jobs(f: &Fixture) {
    let store = &*f.store;
    let id = Uuid::now_v7();
    assert_eq!(store.get(id).await.unwrap(), None);
    assert!(store.events(id).await.unwrap().is_empty());
    assert_eq!(store.log_tail(id).await.unwrap(), None);
    let patch = Patch {
        state: Some(JobState::Failed),
        event: Some("x".into()),
        ..Patch::default()
    };
    assert!(store.update(id, &[], patch).await.unwrap().is_none());
    assert!(store
        .update(id, &[], Patch::default())
        .await
        .unwrap()
        .is_none());
}

// What only PostgreSQL has.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_starting_together_migrate_once() {
    let (admin, schema, url) = fresh_schema().await;
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url, test_box()).await })
        })
        .collect();
    let mut stores = vec![];
    for s in starts {
        stores.push(s.await.unwrap().unwrap());
    }
    let versions: Vec<i32> = admin
        .query(
            &format!("SELECT version FROM \"{schema}\".offload_migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // One version per migration file the code ships.
    let shipped = migration_files();
    assert_eq!(versions, (1..=shipped.len() as i32).collect::<Vec<i32>>(), "each migration applied once");
    assert!(migrate(&url).await.unwrap().is_empty());
    // Every replica sees every other's writes.
    let id = created(&stores[0], job("a", None)).await;
    assert!(stores[5].get(id).await.unwrap().is_some());
    // A database from a newer offload is refused rather than misread.
    admin
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".offload_migrations (version, name) VALUES (999, 'future')"
        ))
        .await
        .unwrap();
    let refused = PostgresStore::connect(&url, test_box())
        .await
        .err()
        .unwrap();
    assert!(refused.to_string().contains("newer"), "{refused}");
    // migrate on an empty schema applies everything.
    let (_admin2, _schema2, url2) = fresh_schema().await;
    assert_eq!(
        migrate(&url2).await.unwrap(),
        shipped
    );
    for s in [&schema, &_schema2] {
        admin
            .batch_execute(&format!("DROP SCHEMA \"{s}\" CASCADE"))
            .await
            .unwrap();
    }
}

/// Expand, then contract: this release runs on a database the next release has migrated,
/// for the next release's version only adds (here a column with no default and a table,
/// as such a migration may), beside stores that opened it before; it refuses one migrated
/// two releases on, or by a version that says it breaks older code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_release_runs_on_the_next_releases_expanded_schema_and_no_further() {
    let (admin, schema, url) = fresh_schema().await;
    let before = PostgresStore::connect(&url, test_box()).await.unwrap();
    let newest: i32 = admin
        .query_one(&format!("SELECT max(version) FROM \"{schema}\".offload_migrations"), &[])
        .await
        .unwrap()
        .get(0);
    // What the next release's expand migration does, and how it records itself.
    admin
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".jobs ADD COLUMN next_release_note text;
             CREATE TABLE \"{schema}\".next_release_things (id bigint PRIMARY KEY);
             INSERT INTO \"{schema}\".offload_migrations (version, name, breaking)
                 VALUES ({}, 'next_release', false)",
            newest + 1
        ))
        .await
        .unwrap();
    let after = PostgresStore::connect(&url, test_box()).await.unwrap();
    assert!(migrate(&url).await.unwrap().is_empty(), "nothing of ours to apply");
    // Jobs written through either store are read and updated through the other.
    let a = created(&before, job("a", None)).await;
    let b = created(&after, job("a", None)).await;
    assert!(after.get(a).await.unwrap().is_some());
    assert!(before.get(b).await.unwrap().is_some());

    // Two releases on (its contract may drop what this one reads): refused, naming both.
    admin
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".offload_migrations (version, name, breaking)
                 VALUES ({}, 'release_after_next', false)",
            newest + 2
        ))
        .await
        .unwrap();
    let refused = PostgresStore::connect(&url, test_box()).await.err().unwrap().to_string();
    assert!(
        refused.contains(&format!("needs an offload of schema version {}", newest + 1)),
        "{refused}"
    );
    // The next release's version, had it said it breaks older code: refused too.
    admin
        .batch_execute(&format!(
            "DELETE FROM \"{schema}\".offload_migrations WHERE version > {newest};
             INSERT INTO \"{schema}\".offload_migrations (version, name, breaking)
                 VALUES ({}, 'next_release', true)",
            newest + 1
        ))
        .await
        .unwrap();
    let refused = PostgresStore::connect(&url, test_box()).await.err().unwrap().to_string();
    assert!(refused.contains("run a newer offload"), "{refused}");
    drop((before, after));
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

async fn next_change(feed: &mut (impl futures::Stream<Item = Change> + Unpin)) -> Change {
    tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("no change notice within 10 s")
        .expect("the change feed ended")
}

/// Waits for a notice about `id`, skipping other jobs' (other tests share the channel).
async fn change_of(feed: &mut (impl futures::Stream<Item = Change> + Unpin), id: Uuid) {
    loop {
        if next_change(feed).await == Change::Job(id) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_change_feed_tells_of_every_committed_write() {
    let (admin, schema, url) = fresh_schema().await;
    let store = PostgresStore::connect(&url, test_box()).await.unwrap();
    let other_replica = PostgresStore::connect(&url, test_box()).await.unwrap();
    let mut feed = Box::pin(other_replica.listen());
    assert_eq!(next_change(&mut feed).await, Change::Resync);
    let id = created(&store, job("a", None)).await;
    change_of(&mut feed, id).await;
    let running = Patch {
        state: Some(JobState::Running),
        ..Patch::default()
    };
    store.update(id, &[], running).await.unwrap().unwrap();
    change_of(&mut feed, id).await;
    // A compare-and-set that did not apply changed nothing and tells nothing; the next
    // write's notice is the next one about this job.
    let stale = Patch {
        state: Some(JobState::Failed),
        ..Patch::default()
    };
    assert!(store
        .update(id, &[JobState::Queued], stale)
        .await
        .unwrap()
        .is_none());
    let second = created(&store, job("a", None)).await;
    loop {
        match next_change(&mut feed).await {
            Change::Job(j) if j == second => break,
            Change::Job(j) => assert_ne!(j, id, "a notice for a write that did not happen"),
            Change::Resync | Change::Down | Change::Poke { .. } => {}
        }
    }
    drop(feed);
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

/// A statement that writes many jobs (the submits' and the engine's batches are such)
/// sends one notice per 200 of them, not one per row, and the feed still names every job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_statement_announces_its_jobs_two_hundred_to_a_notice() {
    let (admin, schema, url) = fresh_schema().await;
    let store = Arc::new(PostgresStore::connect(&url, test_box()).await.unwrap());
    let ids: Vec<Uuid> = futures::future::join_all((0..450).map(|_| {
        let store = store.clone();
        async move { created(&*store, job("a", None)).await }
    }))
    .await;
    // The notices as they are sent, on a connection of the test's own.
    let (listener, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    listener.batch_execute("LISTEN offload_jobs").await.unwrap();
    let other_replica = PostgresStore::connect(&url, test_box()).await.unwrap();
    let mut feed = Box::pin(other_replica.listen());
    assert_eq!(next_change(&mut feed).await, Change::Resync);

    let touched = admin
        .execute(
            &format!("UPDATE \"{schema}\".jobs SET labels = labels WHERE id = ANY($1)"),
            &[&ids],
        )
        .await
        .unwrap();
    assert_eq!(touched, 450);

    // Other tests share the channel: only the notices naming these jobs count.
    let mut unseen: std::collections::HashSet<Uuid> = ids.iter().copied().collect();
    let mut ours = vec![];
    while !unseen.is_empty() {
        let payload = tokio::time::timeout(Duration::from_secs(10), notices.recv())
            .await
            .unwrap_or_else(|_| panic!("{} jobs never announced", unseen.len()))
            .unwrap();
        let named: Vec<Uuid> = payload.split(' ').map(|id| id.parse().unwrap()).collect();
        let fresh = named.iter().filter(|id| unseen.remove(id)).count();
        if fresh > 0 {
            assert!(
                named.iter().all(|id| ids.contains(id)),
                "one statement's notice named another's job"
            );
            ours.push(named.len());
        }
    }
    ours.sort_unstable();
    assert_eq!(ours, vec![50, 200, 200], "450 jobs in notices of up to 200");

    let mut unseen: std::collections::HashSet<Uuid> = ids.iter().copied().collect();
    while !unseen.is_empty() {
        if let Change::Job(id) = next_change(&mut feed).await {
            unseen.remove(&id);
        }
    }
    drop(feed);
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_is_a_db_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://offload@127.0.0.1:{port}/offload");
    let err = PostgresStore::connect(&url, test_box())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    assert!(migrate(&url).await.is_err());
    let bad = PostgresStore::connect("not a url at all", test_box())
        .await
        .err()
        .unwrap();
    assert!(matches!(bad, StoreError::Db(_)), "{bad:?}");
}

/// A PostgreSQL of this test's own, from tests/pg.sh, that it can stop and start.
struct PrivateServer {
    url: String,
    dir: String,
}

impl PrivateServer {
    fn pg_sh(args: &[&str]) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pg.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .args(args)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tests/pg.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn start() -> PrivateServer {
        let exports = PrivateServer::pg_sh(&["start"]);
        let value = |name: &str| {
            exports
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {exports:?}"))
                .to_string()
        };
        PrivateServer {
            url: value("DATABASE_URL"),
            dir: value("OFFLOAD_PG_DIR"),
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        PrivateServer::pg_sh(&["stop", &self.dir]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_is_a_db_error_and_the_store_recovers_by_itself() {
    let server = tokio::task::spawn_blocking(PrivateServer::start)
        .await
        .unwrap();
    let store = PostgresStore::connect(&server.url, test_box())
        .await
        .unwrap();
    let mut feed = Box::pin(store.listen());
    assert_eq!(next_change(&mut feed).await, Change::Resync);
    let first = created(&store, job("a", Some("k"))).await;
    change_of(&mut feed, first).await;

    let dir = server.dir.clone();
    tokio::task::spawn_blocking(move || PrivateServer::pg_sh(&["pause", &dir]))
        .await
        .unwrap();
    for _ in 0..3 {
        let err = store.submit(job("a", None)).await.err().unwrap();
        assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    }
    assert!(matches!(store.get(first).await, Err(StoreError::Db(_))));
    assert!(matches!(store.ping().await, Err(StoreError::Db(_))));
    assert!(matches!(store.unfinished().await, Err(StoreError::Db(_))));

    let dir = server.dir.clone();
    tokio::task::spawn_blocking(move || PrivateServer::pg_sh(&["resume", &dir]))
        .await
        .unwrap();
    // The pool replaces its dead connections by itself; give it a moment, no more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.get(first).await.unwrap().unwrap().job.id, first);
    let second = created(&store, job("a", None)).await;
    assert!(matches!(
        store.submit(job("a", Some("k"))).await.unwrap(),
        Submitted::Existing(j) if j.job.id == first
    ));
    // The change feed said it was down (once for each try to reconnect), then that it
    // listens again, before its next notices.
    assert_eq!(next_change(&mut feed).await, Change::Down);
    loop {
        match next_change(&mut feed).await {
            Change::Down => {}
            change => break assert_eq!(change, Change::Resync),
        }
    }
    let third = created(&store, job("a", None)).await;
    loop {
        match next_change(&mut feed).await {
            Change::Job(j) if j == third => break,
            Change::Job(j) => assert_eq!(j, second, "an unexpected notice"),
            Change::Resync | Change::Down | Change::Poke { .. } => {}
        }
    }
    drop(store);
    drop(server);
}

// Replicas on one database: leases, fencing, adoption, pokes.

async fn replica(url: &str) -> PostgresStore {
    let options = PostgresOptions {
        lease: Duration::from_secs(3),
        ..PostgresOptions::default()
    };
    PostgresStore::connect_with(url, test_box(), options)
        .await
        .unwrap()
}

/// Ends `store`'s lease now, as if its replica had been paused past it.
async fn lapse(admin: &tokio_postgres::Client, schema: &str, store: &PostgresStore) {
    let id = store.replica().unwrap();
    let n = admin
        .execute(
            &format!("UPDATE \"{schema}\".replicas SET lease_until = now() - interval '1 second' WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "replica {id} is registered");
}

/// Every replica adopts at every lease renewal, so adoption reads the jobs it takes, not
/// every unfinished job to ask whether its owner is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_adoption_reads_only_the_jobs_it_takes() {
    let (admin, schema, url) = fresh_schema().await;
    let (a, b) = (replica(&url).await, replica(&url).await);
    created(&a, job("t", None)).await;
    // 60,000 unfinished jobs: all but three are live replica a's; those three are owned by
    // a replica that is gone.
    let jobs = format!("\"{schema}\".jobs");
    let a_id = a.replica().unwrap();
    admin
        .batch_execute(&format!(
            "INSERT INTO {jobs} (id, tenant, state, provider, spec, labels, created_at, owner)
             SELECT ('00000000-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid, 't', 'starting',
                 'sim', (SELECT spec FROM {jobs} LIMIT 1), '{{}}', now(),
                 CASE WHEN i % 20000 = 0 THEN 'gone-replica' ELSE '{a_id}' END
             FROM generate_series(1, 60000) AS i;
             ANALYZE {jobs};
             SELECT pg_stat_force_next_flush();"
        ))
        .await
        .unwrap();
    // Scans of jobs, and the rows they read.
    let counters = || async {
        let row = admin
            .query_one(
                "SELECT seq_scan + COALESCE(idx_scan, 0), seq_tup_read + COALESCE(idx_tup_fetch, 0)
                 FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'jobs'",
                &[&schema],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    let before = counters().await;
    a.renew_lease(&BTreeMap::new()).await.unwrap();
    let adopted = b.adopt(10).await.unwrap();
    let gone: Vec<String> = (1..=3).map(|i| format!("00000000-0000-7000-8000-{:012}", i * 20000)).collect();
    let ids: Vec<String> = adopted.iter().map(|r| r.job.id.to_string()).collect();
    assert_eq!(ids, gone, "the gone replica's jobs, and only those");
    // PostgreSQL counts the scans when b's connection next reports its statistics (within
    // about 10 s of going idle).
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = counters().await;
        if now.0 != before.0 {
            break now;
        }
        assert!(Instant::now() < deadline, "the adoption's scans were never counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let read = after.1 - before.1;
    assert!(read < 1_000, "adopting 3 jobs read {read} rows of 60,001");
    drop(admin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_replica_whose_jobs_were_adopted_cannot_write_them() {
    let (admin, schema, url) = fresh_schema().await;
    let (a, b) = (replica(&url).await, replica(&url).await);
    let (a_id, b_id) = (a.replica().unwrap(), b.replica().unwrap());
    assert_ne!(a_id, b_id);
    let id = created(&a, job("t", None)).await;
    assert_eq!(a.get(id).await.unwrap().unwrap().owner.as_deref(), Some(a_id.as_str()));
    let lease = b.renew_lease(&BTreeMap::new()).await.unwrap();
    assert_eq!((lease.live, lease.renewed_as), (2, None));
    assert_eq!(lease.leader, b_id < a_id, "the smallest live id leads");
    assert!(b.adopt(10).await.unwrap().is_empty(), "a's lease is live");

    lapse(&admin, &schema, &a).await;
    let adopted = b.adopt(10).await.unwrap();
    assert_eq!(adopted.len(), 1);
    assert_eq!((adopted[0].job.id, adopted[0].owner.as_deref()), (id, Some(b_id.as_str())));
    let events = b.events(id).await.unwrap();
    let last = events.last().unwrap().reason.clone().unwrap();
    assert_eq!(last, format!("adopted by replica {b_id} from {a_id}, whose lease had lapsed"));
    assert!(b.adopt(10).await.unwrap().is_empty(), "adopted once");

    // a wakes: its engine's writes are fenced off, a cancel (any replica's) is not.
    let start = Patch {
        state: Some(JobState::Starting),
        launch_key: Some("k-1".into()),
        ..Patch::default()
    };
    assert!(a.update(id, &[JobState::Queued], start.clone()).await.unwrap().is_none());
    let got = b.get(id).await.unwrap().unwrap();
    assert_eq!((got.job.state, got.launch_key), (JobState::Queued, None));
    assert_eq!(b.events(id).await.unwrap().len(), events.len(), "no event from a fenced write");
    assert!(a.unfinished().await.unwrap().is_empty());
    assert!(a.queued(Utc::now() + chrono::Duration::seconds(1), 10).await.unwrap().is_empty());
    assert_eq!(b.unfinished().await.unwrap().len(), 1);
    // b owns it: its writes apply.
    assert!(b.update(id, &[JobState::Queued], start).await.unwrap().is_some());
    let cancel = Patch {
        state: Some(JobState::Cancelling),
        from_any_replica: true,
        ..Patch::default()
    };
    assert!(a.update(id, &[JobState::Starting], cancel).await.unwrap().is_some());

    // a's next renewal finds its lease gone and carries on under a new id.
    let lease = a.renew_lease(&BTreeMap::new()).await.unwrap();
    let new_id = lease.renewed_as.expect("a new id");
    assert_ne!(new_id, a_id);
    assert_eq!((a.replica(), lease.live), (Some(new_id), 2));
    drop(admin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stopping_replica_gives_its_jobs_up_at_once_and_pokes_reach_owners() {
    let (_admin, _schema, url) = fresh_schema().await;
    let (a, b) = (replica(&url).await, replica(&url).await);
    let mut feed = b.changes().unwrap();
    assert_eq!(next_change(&mut feed).await, Change::Resync);
    let ids = [created(&a, job("t", None)).await, created(&a, job("t", None)).await];
    a.release_lease().await.unwrap();
    let mut adopted: Vec<Uuid> = b.adopt(1).await.unwrap().iter().map(|r| r.job.id).collect();
    adopted.extend(b.adopt(10).await.unwrap().iter().map(|r| r.job.id));
    adopted.sort();
    assert_eq!(adopted, ids, "in batches of the size asked, each job once");
    assert_eq!(b.renew_lease(&BTreeMap::new()).await.unwrap().live, 1);
    // A poke from another replica reaches the owner's feed, naming it.
    let c = replica(&url).await;
    let rec = c.get(ids[0]).await.unwrap().unwrap();
    c.poke_owner(&rec).await.unwrap();
    let owner = b.replica().unwrap();
    loop {
        match next_change(&mut feed).await {
            Change::Poke { owner: o, id } => {
                assert_eq!((o, id), (owner, ids[0]));
                break;
            }
            Change::Job(_) | Change::Resync | Change::Down => {}
        }
    }
}

/// Updates that arrive together are committed together (`store::postgres::updates`), and
/// each is still answered for itself: one whose expectation no longer holds gets `None`,
/// and one that PostgreSQL refuses (a NUL in a text array, which it cannot hold) fails
/// alone, its batch run again update by update, while the others land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_updates_committed_together_are_each_answered_for_themselves() {
    let (admin, _schema, url) = fresh_schema().await;
    let store = replica(&url).await;
    let mut ids = vec![];
    for _ in 0..64 {
        ids.push(created(&store, job("t", None)).await);
    }
    let patch = |n: usize| Patch {
        state: Some(JobState::Starting),
        launch_key: Some(format!("k-{n}")),
        excluded: (n == 7).then(|| vec!["bad\0name".to_string()]),
        ..Patch::default()
    };
    let answers = futures::future::join_all(ids.iter().enumerate().map(|(n, id)| {
        // Job 3 is expected to be somewhere it is not.
        let expect = if n == 3 { JobState::Running } else { JobState::Queued };
        let store = &store;
        async move { store.update(*id, &[expect], patch(n)).await }
    }))
    .await;
    for (n, answer) in answers.iter().enumerate() {
        match n {
            3 => assert!(matches!(answer, Ok(None)), "{answer:?}"),
            // Refused: sent again, it would fail again.
            7 => assert!(matches!(answer, Err(StoreError::Refused(_))), "{answer:?}"),
            _ => {
                let rec = answer.as_ref().unwrap().as_ref().unwrap();
                assert_eq!((rec.job.id, rec.job.state), (ids[n], JobState::Starting));
                assert_eq!(rec.launch_key, Some(format!("k-{n}")));
            }
        }
    }
    for (n, id) in ids.iter().enumerate() {
        let state = store.get(*id).await.unwrap().unwrap().job.state;
        let expected = if n == 3 || n == 7 { JobState::Queued } else { JobState::Starting };
        assert_eq!(state, expected, "job {n}");
    }
    // A job updated twice at once (usually in one batch, as two statements of its
    // transaction): the second update expects what the first wrote, and sees it; each
    // writes its event, in order.
    let to = |state, why: &str| Patch {
        state: Some(state),
        event: Some(why.to_string()),
        ..Patch::default()
    };
    let (first, second, other) = futures::join!(
        store.update(ids[10], &[JobState::Starting], to(JobState::Running, "first")),
        store.update(ids[10], &[JobState::Running], to(JobState::Cancelling, "second")),
        store.update(ids[11], &[JobState::Starting], to(JobState::Running, "other")),
    );
    assert_eq!(first.unwrap().unwrap().job.state, JobState::Running);
    assert_eq!(second.unwrap().expect("the second update saw the first").job.state, JobState::Cancelling);
    assert_eq!(other.unwrap().unwrap().job.state, JobState::Running);
    let events: Vec<_> = store.events(ids[10]).await.unwrap().into_iter().map(|e| (e.state, e.reason)).collect();
    assert_eq!(
        events[2..],
        [
            (JobState::Running, Some("first".to_string())),
            (JobState::Cancelling, Some("second".to_string())),
        ]
    );
    drop(admin);
}

/// A list filtered by state reads the (tenant, state, id) index however the states are
/// spread. With most jobs long since succeeded and the newest ones still starting,
/// PostgreSQL's planner would walk the primary key back through every newer job instead,
/// filtering (in the benchmark, with a million ended jobs: 30-57 ms a page, against 0.5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lists_by_state_read_the_state_index_when_the_newest_jobs_are_in_other_states() {
    let (admin, schema, url) = fresh_schema().await;
    let store = PostgresStore::connect(&url, test_box()).await.unwrap();
    created(&store, job("t", None)).await;
    // 100,000 jobs that succeeded long ago (ids below any v7 id), then 12,000 newer ones
    // still starting but for one in 2,000, that succeeded; then the planner's statistics.
    let jobs = format!("\"{schema}\".jobs");
    admin
        .batch_execute(&format!(
            "INSERT INTO {jobs} (id, tenant, state, provider, spec, labels, created_at, released)
             SELECT ('00000000-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid, 't', 'succeeded',
                 'sim', (SELECT spec FROM {jobs} LIMIT 1), '{{}}', now() - interval '20 days', true
             FROM generate_series(1, 100000) AS i;
             INSERT INTO {jobs} (id, tenant, state, provider, spec, labels, created_at)
             SELECT ('00000001-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid, 't',
                 CASE WHEN i % 2000 = 0 THEN 'succeeded' ELSE 'starting' END,
                 'sim', (SELECT spec FROM {jobs} LIMIT 1), '{{}}', now()
             FROM generate_series(1, 12000) AS i;
             ANALYZE {jobs};"
        ))
        .await
        .unwrap();
    let index_scans = || async {
        admin
            .query_one(
                "SELECT idx_scan FROM pg_stat_user_indexes
                 WHERE schemaname = $1 AND indexrelname = 'jobs_by_state'",
                &[&schema],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = index_scans().await;
    let query = ListQuery {
        state: Some(JobState::Succeeded),
        limit: 100,
        ..ListQuery::default()
    };
    let page = store.list("t", &query).await.unwrap();
    let newer = |i: u32| format!("00000001-0000-7000-8000-{i:012}");
    let older = |i: u32| format!("00000000-0000-7000-8000-{i:012}");
    let expected: Vec<String> = [12000, 10000, 8000, 6000, 4000, 2000]
        .into_iter()
        .map(newer)
        .chain((99907..=100000).rev().map(older))
        .collect();
    let ids: Vec<String> = page.iter().map(|j| j.id.to_string()).collect();
    assert_eq!(ids, expected, "the newest 100 succeeded, newest first");
    // PostgreSQL counts index scans when the store's connection next reports its
    // statistics (within about 10 s of going idle).
    let deadline = Instant::now() + Duration::from_secs(30);
    while index_scans().await == before {
        assert!(
            Instant::now() < deadline,
            "the list did not read jobs_by_state (the planner took another way)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(admin);
}

/// A replica frozen inside a transaction (SIGSTOP, a stalled VM) holds row locks; to the
/// server it is a session idle in a transaction. The gateway's sessions end such a session
/// after `idle_in_transaction_timeout`, so that the other replicas' writes to those rows
/// (a cancel, here) go through instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_frozen_replica_inside_a_transaction_does_not_stop_the_others_writes() {
    let (_admin, schema, url) = fresh_schema().await;
    let options = PostgresOptions {
        idle_in_transaction_timeout: Duration::from_secs(1),
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect_with(&url, test_box(), options.clone())
        .await
        .unwrap();
    let id = created(&store, job("t", None)).await;
    // The frozen replica: a session with the gateway's settings that locked the job's row
    // and then sent nothing more.
    let (frozen, connection) = configure(&url, &options)
        .unwrap()
        .connect()
        .await
        .unwrap();
    tokio::spawn(connection);
    frozen
        .batch_execute(&format!(
            "BEGIN; SELECT * FROM \"{schema}\".jobs WHERE id = '{id}' FOR UPDATE"
        ))
        .await
        .unwrap();
    let cancel = Patch {
        state: Some(JobState::Cancelled),
        from_any_replica: true,
        ..Patch::default()
    };
    let started = Instant::now();
    let done = tokio::time::timeout(Duration::from_secs(20), store.update(id, &[], cancel))
        .await
        .expect("the cancel waited 20 s on the frozen replica's lock");
    assert_eq!(done.unwrap().unwrap().job.state, JobState::Cancelled);
    println!("the cancel went through after {:?}", started.elapsed());
    assert!(
        frozen.simple_query("SELECT 1").await.is_err(),
        "the frozen session was not ended"
    );
}

/// The lease is renewed on a connection of its own: with every pooled connection busy (here
/// the pool's one, waiting for a row lock), a renewal still goes through at once, where it
/// used to wait for the pool and could let the lease lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_busy_pool_does_not_hold_up_the_lease() {
    let (admin, schema, url) = fresh_schema().await;
    let options = PostgresOptions {
        pool_size: 1,
        lease: Duration::from_secs(3),
        lock_timeout: Duration::from_secs(30),
        ..PostgresOptions::default()
    };
    let store = Arc::new(
        PostgresStore::connect_with(&url, test_box(), options)
            .await
            .unwrap(),
    );
    let id = created(&*store, job("t", None)).await;
    admin
        .batch_execute(&format!(
            "BEGIN; SELECT * FROM \"{schema}\".jobs WHERE id = '{id}' FOR UPDATE"
        ))
        .await
        .unwrap();
    // The pool's one connection waits on the lock.
    let blocked = {
        let store = store.clone();
        tokio::spawn(async move {
            let patch = Patch {
                state: Some(JobState::Cancelled),
                from_any_replica: true,
                ..Patch::default()
            };
            store.update(id, &[], patch).await
        })
    };
    let waiting = Instant::now() + Duration::from_secs(10);
    loop {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) > 0 {
            break;
        }
        assert!(Instant::now() < waiting, "the update never waited on the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let renewal = tokio::time::timeout(Duration::from_secs(2), store.renew_lease(&BTreeMap::new()))
        .await
        .expect("the renewal waited for the busy pool");
    assert_eq!(renewal.unwrap().renewed_as, None);
    assert!(store.lease_left().unwrap() > Duration::from_secs(2));
    admin.batch_execute("COMMIT").await.unwrap();
    blocked.await.unwrap().unwrap();
}

/// Adopted rows are taken in one by one: one that cannot be read (a spec this version
/// cannot parse) is ended `failed` with why, and released, and the others are adopted as
/// usual, where the whole batch used to be lost, already owned by the adopter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_adopted_job_that_cannot_be_read_fails_alone() {
    let (admin, schema, url) = fresh_schema().await;
    let (a, b) = (replica(&url).await, replica(&url).await);
    let ids = [
        created(&a, job("t", None)).await,
        created(&a, job("t", None)).await,
        created(&a, job("t", None)).await,
    ];
    admin
        .execute(
            &format!("UPDATE \"{schema}\".jobs SET spec = '{{\"image\": 5}}' WHERE id = $1"),
            &[&ids[1]],
        )
        .await
        .unwrap();
    lapse(&admin, &schema, &a).await;
    let adopted: Vec<Uuid> = b.adopt(10).await.unwrap().iter().map(|r| r.job.id).collect();
    assert_eq!(adopted, [ids[0], ids[2]]);
    let row = admin
        .query_one(
            &format!("SELECT state, reason, released, owner FROM \"{schema}\".jobs WHERE id = $1"),
            &[&ids[1]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    let reason: String = row.get(1);
    assert!(reason.contains("cannot be read"), "{reason}");
    assert!(row.get::<_, bool>(2), "released, for the orphan sweep to remove its workload");
    assert_eq!(row.get::<_, Option<String>>(3), b.replica());
    assert!(b.unfinished().await.unwrap().iter().all(|r| r.job.id != ids[1]));
}

/// Each renewal says how many places the replica holds at each provider, and tells it what
/// the others hold: the live ones, and one whose lease lapsed a moment ago (its workloads
/// run until they are adopted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_renewals_tell_each_replica_the_places_the_others_hold() {
    let (admin, schema, url) = fresh_schema().await;
    let (a, b, c) = (replica(&url).await, replica(&url).await, replica(&url).await);
    let held = |n: usize| BTreeMap::from([("sim".to_string(), n)]);
    a.renew_lease(&held(5)).await.unwrap();
    b.renew_lease(&held(2)).await.unwrap();
    let lease = c.renew_lease(&held(1)).await.unwrap();
    assert_eq!(lease.live, 3);
    assert_eq!(lease.held_elsewhere, held(7));
    let mut ids = [a.replica().unwrap(), b.replica().unwrap(), c.replica().unwrap()];
    ids.sort();
    assert_eq!(lease.rank, ids.iter().position(|id| *id == c.replica().unwrap()).unwrap());
    lapse(&admin, &schema, &a).await;
    let lease = c.renew_lease(&held(1)).await.unwrap();
    assert_eq!(lease.live, 2);
    assert_eq!(lease.held_elsewhere, held(7), "a's workloads still run until adopted");
}

/// When the change feed's connection breaks, the feed says so (`Down`) before it listens
/// again (`Resync`): a cache of job snapshots keeps nothing in between, since another
/// replica's change could not reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_change_feed_says_when_it_is_down_and_when_it_listens_again() {
    let (admin, _schema, url) = fresh_schema().await;
    let name = format!("feed-{}", Uuid::now_v7().simple());
    let url = format!("{url}&application_name={name}");
    let store = PostgresStore::connect(&url, test_box()).await.unwrap();
    let mut feed = store.changes().unwrap();
    assert_eq!(next_change(&mut feed).await, Change::Resync);
    let ended = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND query LIKE 'LISTEN%'",
            &[&name],
        )
        .await
        .unwrap();
    assert_eq!(ended.get::<_, i64>(0), 1, "the feed's connection");
    assert_eq!(next_change(&mut feed).await, Change::Down);
    assert_eq!(next_change(&mut feed).await, Change::Resync);
    let id = created(&store, job("t", None)).await;
    change_of(&mut feed, id).await;
}

/// TLS to PostgreSQL as `sslmode` asks: the throwaway server is given a certificate for
/// `localhost` signed by a CA the test makes; `verify-full` with that CA connects (and the
/// session is encrypted), with another CA or to a host name the certificate does not name
/// it is refused with an error that says why; `verify-ca` checks the CA only; `disable`
/// connects in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_follows_sslmode_and_sslrootcert() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = PathBuf::from(std::env::var("OFFLOAD_PG_DIR").expect(
        "OFFLOAD_PG_DIR is not set: this test gives the throwaway server of `tests/pg.sh run` a \
         certificate, so run it that way",
    ));
    let ca = |name: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    };
    let (ours, other) = (ca("offload test CA"), ca("another CA"));
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ours)
        .unwrap();
    // The files, owned by the server's user (a key must be, with mode 0600).
    let owner = std::fs::metadata(dir.join("data")).unwrap();
    let files = dir.join(format!("tls-{}", Uuid::now_v7().simple()));
    std::fs::create_dir(&files).unwrap();
    let write = |name: &str, text: String| {
        let path = files.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        path
    };
    let cert = write("server.crt", server.pem());
    let key = write("server.key", server_key.serialize_pem());
    let ours_pem = write("ca.pem", ours.pem());
    let other_pem = write("other.pem", other.pem());
    std::os::unix::fs::chown(&files, Some(owner.uid()), Some(owner.gid())).unwrap();
    let url = common::pg::database_url();
    let admin = common::pg::admin_client(&url).await;
    for statement in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        admin.simple_query(&statement).await.unwrap();
    }
    // New sessions read the reloaded settings.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = common::pg::admin_client(&url).await;
        let ssl: String = fresh.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        if ssl == "on" {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not turn ssl on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = |host: &str, params: String| {
        let base = url.replacen("127.0.0.1", host, 1);
        let joiner = if base.contains('?') { '&' } else { '?' };
        format!("{base}{joiner}{params}")
    };
    let encrypted = |url: String| async move {
        let target = configure(&url, &PostgresOptions::default())?;
        let (client, connection) = target.connect().await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text += &format!(": {cause}");
                source = cause.source();
            }
            StoreError::Db(text)
        })?;
        tokio::spawn(connection);
        let row = client
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .unwrap();
        Ok::<bool, StoreError>(row.get(0))
    };
    let root = |path: &PathBuf| format!("sslrootcert={}", path.display());
    let full = |path: &PathBuf| format!("sslmode=verify-full&{}", root(path));
    let ca_only = |path: &PathBuf| format!("sslmode=verify-ca&{}", root(path));
    assert!(encrypted(at("localhost", full(&ours_pem))).await.unwrap());
    let refused = encrypted(at("localhost", full(&other_pem))).await.unwrap_err().to_string();
    assert!(refused.contains("invalid peer certificate") && refused.contains("UnknownIssuer"), "{refused}");
    let refused = encrypted(at("127.0.0.1", full(&ours_pem))).await.unwrap_err().to_string();
    assert!(refused.contains("not valid for name \"127.0.0.1\""), "{refused}");
    assert!(encrypted(at("127.0.0.1", ca_only(&ours_pem))).await.unwrap());
    assert!(encrypted(at("localhost", ca_only(&other_pem))).await.is_err());
    assert!(!encrypted(at("localhost", "sslmode=disable".into())).await.unwrap());
    assert!(encrypted(at("localhost", "sslmode=require".into())).await.unwrap());
    // The whole store over verified TLS.
    let (_admin, _schema, schema_url) = fresh_schema().await;
    let verified = format!("{}&{}", schema_url.replacen("127.0.0.1", "localhost", 1), full(&ours_pem));
    let store = PostgresStore::connect(&verified, test_box()).await.unwrap();
    let id = created(&store, job("t", None)).await;
    assert!(store.get(id).await.unwrap().is_some());
}

/// The PostgreSQL migrations the code ships, by file name without `.sql`, in order.
fn migration_files() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/postgres/migrations");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The sweep that settles the charges no job's end settled (a job charged in the instant
/// after it ended) locks the periods it settles in (budget, period) order before anything
/// else, as a charge and the trigger that settles at a job's end do: otherwise a sweep
/// holding one period and waiting for another, and an end holding that one and waiting for
/// the first, would wait on each other until PostgreSQL killed one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_sweep_locks_the_periods_in_order_first() {
    use offload::store::ledger::{Charge, Charged};
    let (admin, schema, url) = fresh_schema().await;
    let store = PostgresStore::connect(&url, test_box()).await.unwrap();
    let ledger = store.ledger();
    let charge = |period: &str| Charge { budget: "tenant=a".into(), period: period.into(), limit: 1_000_000 };
    let (first, second) = ("day:2026-12-08", "month:2026-12");
    // The later period's row made first, so that a scan meets it first.
    let early = created(&store, job("a", None)).await;
    assert!(matches!(ledger.charge(early, 10, &[charge(second)]).await.unwrap(), Charged::Admitted(_)));
    // A job charged after it ended: nothing but the sweep settles its charges.
    let late = created(&store, job("a", None)).await;
    let ended = Patch { state: Some(JobState::Cancelled), ..Patch::default() };
    store.update(late, &[JobState::Queued], ended).await.unwrap().unwrap();
    assert!(matches!(ledger.charge(late, 300, &[charge(first), charge(second)]).await.unwrap(), Charged::Admitted(_)));

    // Another transaction holds the first period, as an end settling in it would.
    let (mut holder, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let holding = holder.transaction().await.unwrap();
    let xid: String = holding
        .query_one(
            &format!("SELECT pg_current_xact_id()::text FROM \"{schema}\".budget_spend WHERE period = $1 FOR UPDATE"),
            &[&first],
        )
        .await
        .unwrap()
        .get(0);
    let sweep = tokio::spawn(async move { store.ledger().settle(100).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid' AND transactionid::text = $1",
                &[&xid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the sweep never waited for the first period");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Waiting for the first period, the sweep holds nothing after it.
    let second_free = admin
        .query(
            &format!("SELECT 1 FROM \"{schema}\".budget_spend WHERE period = $1 FOR UPDATE NOWAIT"),
            &[&second],
        )
        .await;
    holding.commit().await.unwrap();
    assert!(second_free.is_ok(), "the sweep took the second period before the first: {second_free:?}");
    assert_eq!(sweep.await.unwrap().unwrap(), 2, "both of the ended job's charges settled");
}

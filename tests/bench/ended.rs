//! A million ended jobs in the store: do reads, lists, cost reports and `/metrics` slow
//! down? Measured on the benchmark's running server before and after 1,000,000 ended and
//! released jobs of the same tenant (finished 20 days ago, a minute each, in the sim
//! provider, with a cost) are written straight into its database, in batches of 100,000,
//! as the store would have kept them (their event rows left out: nothing here reads them).
//!
//! Status reads are a throughput figure (the benchmark's 64 clients); every other request
//! is timed one at a time, [`SAMPLES`] times, as a dashboard or a cost report would send
//! it.

use std::time::{Duration, Instant};

use crate::common::TOKEN_A;

/// Ended jobs per insert statement (and transaction).
const BATCH: u64 = 100_000;
/// Requests per timed endpoint.
const SAMPLES: usize = 20;

/// Where the server keeps its jobs.
pub enum Db<'a> {
    Sqlite(&'a std::path::Path),
    Postgres(&'a str),
}

/// The requests timed one at a time, by what they are.
fn requests(now: chrono::DateTime<chrono::Utc>) -> Vec<(&'static str, String)> {
    let long_ago = (now - chrono::Duration::days(40)).format("%Y-%m-%dT%H:%M:%SZ");
    vec![
        ("list, newest 100", "/v1/jobs?limit=100".into()),
        ("list, newest 100 succeeded", "/v1/jobs?state=succeeded&limit=100".into()),
        ("cost report by provider, last 7 days (the default)", "/v1/costs?group_by=provider".into()),
        (
            "cost report by provider, last 40 days (the million in it)",
            format!("/v1/costs?group_by=provider&since={long_ago}"),
        ),
        (
            "cost report by DAG, last 40 days",
            format!("/v1/costs?group_by=label:dag_id&since={long_ago}"),
        ),
        ("/metrics", "/metrics".into()),
    ]
}

/// Median and worst of [`SAMPLES`] requests to `path`, in ms.
async fn timed(http: &reqwest::Client, base: &str, path: &str) -> (f64, f64) {
    let mut all = vec![];
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let r = http.get(format!("{base}{path}")).bearer_auth(TOKEN_A).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.bytes().await.unwrap();
        all.push(started.elapsed());
    }
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(all[SAMPLES / 2]), ms(all[SAMPLES - 1]))
}

/// Writes `jobs` ended jobs; how long it took.
async fn write(db: &Db<'_>, jobs: u64) -> Duration {
    let started = Instant::now();
    let finished = chrono::Utc::now() - chrono::Duration::days(20);
    let cost = r#"{"provider":"sim","hourly_usd":0.05,"estimated_usd":0.001,"billed_seconds":60,"usd":0.001,"earlier_usd":0}"#;
    match db {
        Db::Sqlite(path) => {
            let path = path.to_path_buf();
            let t0 = finished.timestamp_millis();
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_secs(60)).unwrap();
                let spec: String = conn.query_row("SELECT spec FROM jobs LIMIT 1", [], |r| r.get(0)).unwrap();
                for lo in (0..jobs).step_by(BATCH as usize) {
                    conn.execute(
                        "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
                         INSERT INTO jobs (id, tenant, state, provider, provider_ref, attempts, launch_key, \
                            dispatched_at, exit_code, reason, labels, spec, secret_env, created_at, started_at, \
                            finished_at, released, cost) \
                         SELECT printf('00000000-0000-7000-8000-%012d', i), 'a', 'succeeded', 'sim', 'sim-' || i, 1, \
                            'offload-old-' || i, ?3 + i, 0, 'exited with code 0', '{\"dag_id\":\"old\"}', ?4, '', \
                            ?3 + i, ?3 + i, ?3 + i + 60000, 1, ?5 FROM n",
                        rusqlite::params![lo as i64, ((lo + BATCH).min(jobs) - 1) as i64, t0, spec, cost],
                    )
                    .unwrap();
                }
            })
            .await
            .unwrap();
        }
        Db::Postgres(url) => {
            let client = crate::common::pg::admin_client(url).await;
            let spec: String = client.query_one("SELECT spec::text FROM jobs LIMIT 1", &[]).await.unwrap().get(0);
            let t0 = finished.to_rfc3339();
            for lo in (0..jobs).step_by(BATCH as usize) {
                client
                    .execute(
                        "INSERT INTO jobs (id, tenant, state, provider, provider_ref, attempts, launch_key, \
                            dispatched_at, exit_code, reason, labels, spec, secret_env, created_at, started_at, \
                            finished_at, released, cost) \
                         SELECT ('00000000-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid, 'a', 'succeeded', \
                            'sim', 'sim-' || i, 1, 'offload-old-' || i, t, 0, 'exited with code 0', \
                            '{\"dag_id\":\"old\"}'::jsonb, $1::text::json, '', t, t, t + interval '1 minute', true, \
                            $2::text::jsonb \
                         FROM generate_series($3::bigint, $4::bigint) AS i, \
                            LATERAL (SELECT $5::text::timestamptz + i * interval '1 millisecond' AS t) AS at",
                        &[&spec, &cost, &(lo as i64), &(((lo + BATCH).min(jobs) - 1) as i64), &t0],
                    )
                    .await
                    .unwrap();
            }
            // What autovacuum's analyze would soon do after a million new rows.
            client.batch_execute("ANALYZE jobs").await.unwrap();
        }
    }
    started.elapsed()
}

/// The figures before and after `jobs` ended jobs (a million in the benchmark), as lines
/// for BENCHMARKS.md. `read` measures status reads (per second, p99 ms) of jobs the server
/// knows.
pub async fn section<R, Fut>(store: &str, db: Db<'_>, base: &str, jobs: u64, read: R) -> Vec<String>
where
    R: Fn() -> Fut,
    Fut: std::future::Future<Output = (f64, f64)>,
{
    let http = reqwest::Client::new();
    let now = chrono::Utc::now();
    let measure = || async {
        let reads = read().await;
        let mut timed_all = vec![];
        for (what, path) in requests(now) {
            timed_all.push((what, timed(&http, base, &path).await));
        }
        (reads, timed_all)
    };
    let (reads_before, before) = measure().await;
    let took = write(&db, jobs).await;
    println!("{store}: wrote {jobs} ended jobs in {:.1} s", took.as_secs_f64());
    let (reads_after, after) = measure().await;
    let mut lines = vec![format!(
        "{store}, with {jobs} ended jobs added (written in {:.0} s): status reads {:.0}/s (p99 {:.1} ms) before, \
         {:.0}/s (p99 {:.1} ms) after",
        took.as_secs_f64(),
        reads_before.0,
        reads_before.1,
        reads_after.0,
        reads_after.1
    )];
    for ((what, (b50, bmax)), (_, (a50, amax))) in before.iter().zip(&after) {
        lines.push(format!(
            "{store}, with {jobs} ended jobs added: {what}: {b50:.1} ms median ({bmax:.1} worst of {SAMPLES}) before, \
             {a50:.1} ms ({amax:.1}) after"
        ));
    }
    for line in &lines {
        println!("{line}");
    }
    lines
}

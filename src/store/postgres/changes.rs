//! What changed of a tenant's jobs since a position in the history of events, for readers
//! that follow many jobs with one call (the Airflow executor's heartbeat). Each state change
//! appends an event, whose `seq` PostgreSQL takes from a sequence when it is written: two
//! transactions can commit in the other order, so a reader may see an event only after a
//! later one. Readers that need every change also list what they follow now and then.

use std::borrow::Cow;
use std::collections::BTreeMap;

use tokio_postgres::types::{Json, ToSql};

use super::{columns, get, pg, record, text, PostgresStore};
use crate::store::{ChangesPage, ChangesQuery, StoreResult, CHANGES_SCAN};

impl PostgresStore {
    pub(super) async fn changes_of(
        &self,
        tenant: &str,
        q: &ChangesQuery,
    ) -> StoreResult<ChangesPage> {
        let mut labels: BTreeMap<Cow<str>, Cow<str>> = BTreeMap::new();
        let mut contradictory = false;
        for (k, v) in &q.labels {
            contradictory |= labels.insert(text(k), text(v)).is_some_and(|old| old != text(v));
        }
        let client = self.client().await?;
        let window = client
            .prepare_cached(
                "SELECT max(seq), count(*) FROM \
                 (SELECT seq FROM events WHERE seq > $1 ORDER BY seq LIMIT $2) AS scanned",
            )
            .await
            .map_err(|e| pg("preparing", e))?;
        let row = client
            .query_one(&window, &[&q.after, &(CHANGES_SCAN as i64)])
            .await
            .map_err(|e| pg("reading the events", e))?;
        let (last, scanned): (Option<i64>, i64) = (get(&row, 0)?, get(&row, 1)?);
        let Some(last) = last else {
            return Ok(ChangesPage {
                jobs: vec![],
                next: q.after,
                more: false,
            });
        };
        let more_scanned = scanned as usize >= CHANGES_SCAN;
        if contradictory {
            // Two selectors on one key with different values match nothing.
            return Ok(ChangesPage {
                jobs: vec![],
                next: last,
                more: more_scanned,
            });
        }
        let tenant = text(tenant);
        let labels = Json(labels);
        let limit = q.limit.max(1) as i64;
        let sql = format!(
            "SELECT {}, max(e.seq) AS latest FROM events e JOIN jobs ON jobs.id = e.job_id \
             WHERE e.seq > $1 AND e.seq <= $2 AND jobs.tenant = $3 \
               AND jobs.labels @> $4::jsonb \
             GROUP BY jobs.id ORDER BY latest LIMIT $5",
            columns("jobs")
        );
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(|e| pg("preparing", e))?;
        let params: [&(dyn ToSql + Sync); 5] = [&q.after, &last, &tenant, &labels, &limit];
        let rows = client
            .query(&stmt, &params)
            .await
            .map_err(|e| pg("reading changed jobs", e))?;
        let latest_column = super::JOB_COLUMNS.len();
        let mut jobs = Vec::with_capacity(rows.len());
        let mut latest = q.after;
        for row in &rows {
            latest = get(row, latest_column)?;
            jobs.push((record(row)?.job, latest));
        }
        let full = jobs.len() as i64 >= limit;
        Ok(ChangesPage {
            jobs,
            next: if full { latest } else { last },
            more: full || more_scanned,
        })
    }
}

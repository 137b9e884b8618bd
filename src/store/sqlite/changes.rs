//! What changed of a tenant's jobs since a position in the history of events, for readers
//! that follow many jobs with one call (the Airflow executor's heartbeat). Each state change
//! appends an event, whose `seq` grows with each write: the writer thread commits in order,
//! so a position read is never passed by an event committed later.

use rusqlite::{params_from_iter, Connection};

use super::{record, JOB_COLUMNS};
use crate::store::{ChangesPage, ChangesQuery, CHANGES_SCAN};

pub(super) fn changed_since(
    conn: &Connection,
    tenant: &str,
    q: &ChangesQuery,
) -> rusqlite::Result<ChangesPage> {
    // The window: the next CHANGES_SCAN events, whoever's.
    let (last, scanned): (Option<i64>, i64) = conn
        .prepare_cached(
            "SELECT max(seq), count(*) FROM \
             (SELECT seq FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
        )?
        .query_row((q.after, CHANGES_SCAN as i64), |r| Ok((r.get(0)?, r.get(1)?)))?;
    let Some(last) = last else {
        return Ok(ChangesPage {
            jobs: vec![],
            next: q.after,
            more: false,
        });
    };
    let columns = JOB_COLUMNS
        .split(',')
        .map(|c| format!("j.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = format!(
        "SELECT {columns}, max(e.seq) AS latest FROM events e JOIN jobs j ON j.id = e.job_id \
         WHERE e.seq > ?1 AND e.seq <= ?2 AND j.tenant = ?3"
    );
    let mut values: Vec<rusqlite::types::Value> = vec![q.after.into(), last.into(), tenant.to_string().into()];
    for (k, v) in &q.labels {
        values.push(k.clone().into());
        values.push(v.clone().into());
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM json_each(j.labels) WHERE key = ?{} AND value = ?{})",
            values.len() - 1,
            values.len()
        );
    }
    sql += &format!(" GROUP BY j.id ORDER BY latest LIMIT {}", q.limit.max(1));
    let mut stmt = conn.prepare(&sql)?;
    let latest_column = JOB_COLUMNS.split(',').count();
    let rows = stmt.query_map(params_from_iter(values), |row| {
        Ok((record(row)?.job, row.get::<_, i64>(latest_column)?))
    })?;
    let rows: Vec<_> = rows.collect::<rusqlite::Result<_>>()?;
    let full = rows.len() >= q.limit.max(1);
    let next = match (full, rows.last()) {
        // Cut short: the next page goes on after the last job's latest change here.
        (true, Some((_, latest))) => *latest,
        _ => last,
    };
    Ok(ChangesPage {
        jobs: rows,
        next,
        more: full || scanned as usize >= CHANGES_SCAN,
    })
}

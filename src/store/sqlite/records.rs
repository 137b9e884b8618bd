//! Job rows read back: the columns, the conversions of times and JSON, a row into a
//! `JobRecord` (parsed off the writer thread), events, and the list query.

use super::*;

pub(super) const JOB_COLUMNS: &str = "id, tenant, state, provider, provider_ref, attempts, launch_key, dispatched_at, \
    exit_code, reason, result, labels, spec, created_at, started_at, finished_at, cancel_requested_by, \
    released, excluded, cost, first_dispatched_at, steps";

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn time(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(|m| Utc.timestamp_millis_opt(m).single())
}

pub(super) fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    idx: usize,
    text: &str,
) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A job's row as read, its JSON, id and times not yet parsed. The writer reads the row
/// back after each write, and its caller parses it: off the one thread that every write
/// waits for.
pub(super) struct RawRecord {
    pub(super) id: String,
    pub(super) tenant: String,
    pub(super) state: String,
    pub(super) provider: Option<String>,
    pub(super) provider_ref: Option<String>,
    pub(super) attempts: u32,
    pub(super) launch_key: Option<String>,
    pub(super) dispatched_at: Option<i64>,
    pub(super) exit_code: Option<i32>,
    pub(super) reason: Option<String>,
    pub(super) result: Option<String>,
    pub(super) labels: String,
    pub(super) spec: String,
    pub(super) created_at: Option<i64>,
    pub(super) started_at: Option<i64>,
    pub(super) finished_at: Option<i64>,
    pub(super) cancel_requested_by: Option<String>,
    pub(super) released: bool,
    pub(super) excluded: String,
    pub(super) cost: Option<String>,
    pub(super) first_dispatched_at: Option<i64>,
    pub(super) steps: Option<String>,
}

impl RawRecord {
    /// Reads a row of `JOB_COLUMNS`.
    pub(super) fn read(row: &Row) -> rusqlite::Result<RawRecord> {
        Ok(RawRecord {
            id: row.get(0)?,
            tenant: row.get(1)?,
            state: row.get(2)?,
            provider: row.get(3)?,
            provider_ref: row.get(4)?,
            attempts: row.get(5)?,
            launch_key: row.get(6)?,
            dispatched_at: row.get(7)?,
            exit_code: row.get(8)?,
            reason: row.get(9)?,
            result: row.get(10)?,
            labels: row.get(11)?,
            spec: row.get(12)?,
            created_at: row.get(13)?,
            started_at: row.get(14)?,
            finished_at: row.get(15)?,
            cancel_requested_by: row.get(16)?,
            released: row.get(17)?,
            excluded: row.get(18)?,
            cost: row.get(19)?,
            first_dispatched_at: row.get(20)?,
            steps: row.get(21)?,
        })
    }

    /// The record; an error names the column (its index in `JOB_COLUMNS`) that does not
    /// parse.
    pub(super) fn parse(self) -> rusqlite::Result<JobRecord> {
        let state = JobState::parse(&self.state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("unknown state {}", self.state).into(),
            )
        })?;
        let job = Job {
            id: self.id.parse().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            state,
            terminal: state.is_terminal(),
            provider: self.provider,
            provider_ref: self.provider_ref,
            attempts: self.attempts,
            exit_code: self.exit_code,
            reason: self.reason,
            result: self.result.map(|r| parse_json(10, &r)).transpose()?,
            labels: parse_json(11, &self.labels)?,
            spec: parse_json(12, &self.spec)?,
            created_at: time(self.created_at).unwrap_or_default(),
            started_at: time(self.started_at),
            finished_at: time(self.finished_at),
            cost: self.cost.map(|c| parse_json(19, &c)).transpose()?,
            steps: self
                .steps
                .map(|s| parse_json(20, &s))
                .transpose()?
                .unwrap_or_default(),
        };
        Ok(JobRecord {
            job,
            tenant: self.tenant,
            launch_key: self.launch_key,
            dispatched_at: time(self.dispatched_at),
            first_dispatched_at: time(self.first_dispatched_at),
            cancel_requested_by: self.cancel_requested_by,
            released: self.released,
            excluded: parse_json(18, &self.excluded)?,
            owner: None,
        })
    }
}

pub(super) fn record(row: &Row) -> rusqlite::Result<JobRecord> {
    RawRecord::read(row)?.parse()
}

pub(super) fn raw_record(conn: &Connection, id: &str) -> rusqlite::Result<Option<RawRecord>> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], RawRecord::read)
        .optional()
}

pub(super) fn get_record(conn: &Connection, id: &str) -> rusqlite::Result<Option<JobRecord>> {
    raw_record(conn, id)?.map(RawRecord::parse).transpose()
}

pub(super) fn add_event(
    conn: &Connection,
    id: &str,
    at: DateTime<Utc>,
    state: JobState,
    reason: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO events (job_id, at, state, reason) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![id, ms(at), state.as_str(), reason])?;
    Ok(())
}

pub(super) fn list(conn: &Connection, tenant: &str, q: &ListQuery) -> rusqlite::Result<Vec<Job>> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = ?1");
    let mut values: Vec<String> = vec![tenant.to_string()];
    if let Some(s) = q.state {
        values.push(s.as_str().into());
        sql += &format!(" AND state = ?{}", values.len());
    }
    if let Some(p) = &q.provider {
        values.push(p.clone());
        sql += &format!(" AND provider = ?{}", values.len());
    }
    // Matched through json_each, not a JSON path built from the key: a key may hold any
    // character, quotes and backslashes included.
    for (k, v) in &q.labels {
        values.push(k.clone());
        values.push(v.clone());
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM json_each(labels) WHERE key = ?{} AND value = ?{})",
            values.len() - 1,
            values.len()
        );
    }
    for k in &q.label_keys {
        values.push(k.clone());
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM json_each(labels) WHERE key = ?{})",
            values.len()
        );
    }
    // Compared as text, not with LIKE, whose `%` and `_` a prefix may hold.
    if let Some(prefix) = &q.name_prefix {
        values.push(prefix.clone());
        sql += &format!(
            " AND substr(json_extract(spec, '$.name'), 1, length(?{0})) = ?{0}",
            values.len()
        );
    }
    match q.has_exit_code {
        Some(true) => sql += " AND exit_code IS NOT NULL",
        Some(false) => sql += " AND exit_code IS NULL",
        None => {}
    }
    if let Some((prefix, starts)) = &q.reason_prefix {
        values.push(prefix.clone());
        let test = format!("substr(reason, 1, length(?{0})) = ?{0}", values.len());
        sql += &match starts {
            true => format!(" AND {test}"),
            false => format!(" AND (reason IS NULL OR NOT {test})"),
        };
    }
    if let Some(before) = q.before {
        values.push(before.to_string());
        sql += &format!(" AND id < ?{}", values.len());
    }
    sql += &format!(" ORDER BY id DESC LIMIT {}", q.limit);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), record)?;
    rows.map(|r| r.map(|rec| rec.job)).collect()
}

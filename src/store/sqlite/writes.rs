//! The statements that write jobs: a submit (with its idempotency key and sealed
//! secrets) and a patch's UPDATE, shaped by what the patch sets.

use super::records::{add_event, json_err, parse_json, raw_record};
use super::*;

/// A submit's columns, serialised before it reaches the writer thread.
pub(super) struct SubmitRow {
    pub(super) new: NewJob,
    pub(super) spec: String,
    pub(super) labels: String,
    /// The sealed secrets, or "" for none (none given, or deleted once the job ended).
    pub(super) sealed: String,
}

impl SubmitRow {
    pub(super) fn of(new: NewJob, secrets: &SecretBox) -> rusqlite::Result<SubmitRow> {
        Ok(SubmitRow {
            spec: serde_json::to_string(&new.spec.redacted()).map_err(json_err)?,
            labels: serde_json::to_string(&new.spec.labels).map_err(json_err)?,
            sealed: match new.spec.secret_env.is_empty() {
                true => String::new(),
                false => secrets.seal(new.id, &new.spec.secret_env),
            },
            new,
        })
    }
}

/// Inserts the job and its first event; the row as stored (`RETURNING`, no read-back).
pub(super) fn insert_job(conn: &Connection, row: &SubmitRow) -> rusqlite::Result<RawRecord> {
    let new = &row.new;
    let id = new.id.to_string();
    let record = conn
        .prepare_cached(&format!(
            "INSERT INTO jobs (id, tenant, state, labels, spec, secret_env, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING {JOB_COLUMNS}"
        ))?
        .query_row(
            params![
                id,
                new.tenant,
                JobState::Queued.as_str(),
                row.labels,
                row.spec,
                row.sealed,
                ms(new.created_at)
            ],
            RawRecord::read,
        )?;
    add_event(
        conn,
        &id,
        new.created_at,
        JobState::Queued,
        Some("submitted"),
    )?;
    Ok(record)
}

/// What the writer hands back for a submit: the new job's row (for its caller to parse), or
/// the answer to a key used before.
pub(super) enum SubmitOutcome {
    Created(RawRecord),
    Repeated(Submitted),
}

pub(super) fn submit(
    conn: &Connection,
    row: &SubmitRow,
    secrets: &SecretBox,
) -> rusqlite::Result<SubmitOutcome> {
    let new = &row.new;
    if let Some(key) = &new.idempotency_key {
        let existing: Option<String> = conn
            .prepare_cached("SELECT job_id FROM idempotency WHERE tenant = ?1 AND key = ?2")?
            .query_row([&new.tenant, key], |r| r.get(0))
            .optional()?;
        if let Some(job_id) = existing {
            let record = get_record(conn, &job_id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            let stored = stored_secrets(conn, &record.job.id, secrets)?;
            // Once a job's secrets are deleted, only their names can be compared.
            let same = record.job.spec == new.spec.redacted()
                && stored.is_none_or(|s| s == new.spec.secret_env);
            return Ok(SubmitOutcome::Repeated(if same {
                Submitted::Existing(Box::new(record))
            } else {
                Submitted::Conflict(record.job.id)
            }));
        }
        conn.prepare_cached("INSERT INTO idempotency (tenant, key, job_id) VALUES (?1, ?2, ?3)")?
            .execute(params![new.tenant, key, new.id.to_string()])?;
    }
    Ok(SubmitOutcome::Created(insert_job(conn, row)?))
}

/// A job's secret values; `None` once they are deleted.
pub(super) fn stored_secrets(
    conn: &Connection,
    id: &Uuid,
    secrets: &SecretBox,
) -> rusqlite::Result<Option<BTreeMap<String, String>>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT secret_env FROM jobs WHERE id = ?1")?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?;
    match text.as_deref() {
        None | Some("") => Ok(None),
        // Written in the clear by an offload from before sealing.
        Some(plain) if plain.starts_with('{') => parse_json(0, plain).map(Some),
        Some(sealed) => secrets.open(*id, sealed).map(Some).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        }),
    }
}

/// An update's statement and values, built (its JSON serialised) before it reaches the
/// writer thread.
pub(super) struct PatchRow {
    /// `UPDATE jobs SET ... WHERE id = ?1 RETURNING ...`, or `None` for a patch that sets
    /// nothing (an event alone).
    pub(super) sql: Option<String>,
    pub(super) values: Vec<Value>,
    pub(super) state: Option<JobState>,
    /// [`Patch::if_attempts`].
    pub(super) if_attempts: Option<u32>,
    /// The event's reason, should the patch add one.
    pub(super) event: Option<String>,
    pub(super) explicit_event: bool,
}

impl PatchRow {
    pub(super) fn of(patch: Patch) -> rusqlite::Result<PatchRow> {
        let text = |v: Option<String>| v.map_or(Value::Null, Value::Text);
        let mut sets: Vec<(&str, Value)> = vec![];
        if let Some(s) = patch.state {
            sets.push(("state", Value::Text(s.as_str().into())));
        }
        if let Some(v) = patch.provider {
            sets.push(("provider", Value::Text(v)));
        }
        if let Some(v) = patch.provider_ref {
            sets.push(("provider_ref", text(v)));
        }
        if let Some(v) = patch.attempts {
            sets.push(("attempts", Value::Integer(v.into())));
        }
        if let Some(v) = patch.launch_key {
            sets.push(("launch_key", Value::Text(v)));
        }
        if let Some(v) = patch.dispatched_at {
            sets.push(("dispatched_at", Value::Integer(ms(v))));
        }
        if let Some(v) = patch.first_dispatched_at {
            sets.push(("first_dispatched_at", Value::Integer(ms(v))));
        }
        if let Some(v) = patch.exit_code {
            sets.push(("exit_code", Value::Integer(v.into())));
        }
        if let Some(v) = patch.reason.clone() {
            sets.push(("reason", Value::Text(v)));
        }
        if let Some(v) = &patch.result {
            sets.push(("result", json_value(v)?));
        }
        if let Some(v) = patch.started_at {
            sets.push(("started_at", Value::Integer(ms(v))));
        }
        if let Some(v) = patch.finished_at {
            sets.push(("finished_at", Value::Integer(ms(v))));
        }
        if let Some(v) = patch.cancel_requested_by {
            sets.push(("cancel_requested_by", Value::Text(v)));
        }
        if let Some(v) = patch.log_tail {
            sets.push(("log_tail", Value::Text(v)));
        }
        if let Some(v) = patch.released {
            sets.push(("released", Value::Integer(v.into())));
            if v {
                // The workload is gone; nothing needs the job's secrets any more.
                sets.push(("secret_env", Value::Text(String::new())));
            }
        }
        if let Some(v) = &patch.excluded {
            sets.push(("excluded", json_value(v)?));
        }
        if let Some(v) = &patch.cost {
            sets.push(("cost", json_value(v)?));
        }
        if let Some(v) = &patch.steps {
            sets.push(("steps", json_value(v)?));
        }
        let sql = (!sets.is_empty()).then(|| {
            let clause: Vec<String> = sets
                .iter()
                .enumerate()
                .map(|(i, (col, _))| format!("{col} = ?{}", i + 2))
                .collect();
            format!(
                "UPDATE jobs SET {} WHERE id = ?1 RETURNING {JOB_COLUMNS}",
                clause.join(", ")
            )
        });
        Ok(PatchRow {
            sql,
            values: sets.into_iter().map(|(_, v)| v).collect(),
            state: patch.state,
            if_attempts: patch.if_attempts,
            explicit_event: patch.event.is_some(),
            event: patch.event.or(patch.reason),
        })
    }
}

/// A value serialised as JSON text, for a column.
pub(super) fn json_value<T: serde::Serialize>(v: &T) -> rusqlite::Result<Value> {
    serde_json::to_string(v).map(Value::Text).map_err(json_err)
}

pub(super) fn update(
    conn: &Connection,
    id: Uuid,
    expect: &[JobState],
    patch: &PatchRow,
) -> rusqlite::Result<Option<RawRecord>> {
    let id = id.to_string();
    // The state (and the attempts, for a dispatch) decide; the whole row is read once,
    // after the change.
    let current: Option<(String, u32)> = conn
        .prepare_cached("SELECT state, attempts FROM jobs WHERE id = ?1")?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((current, attempts)) = current else {
        return Ok(None);
    };
    if patch.if_attempts.is_some_and(|n| n != attempts) {
        return Ok(None);
    }
    let current = JobState::parse(&current).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown state {current}").into(),
        )
    })?;
    if !expect.is_empty() && !expect.contains(&current) {
        return Ok(None);
    }
    let row = match &patch.sql {
        // A patch's shape repeats (a dispatch, a launch, an end): its statement is cached.
        Some(sql) => {
            let mut values: Vec<&dyn ToSql> = vec![&id];
            values.extend(patch.values.iter().map(|v| v as &dyn ToSql));
            conn.prepare_cached(sql)?
                .query_row(values.as_slice(), RawRecord::read)
                .optional()?
        }
        None => raw_record(conn, &id)?,
    };
    let state_changed = patch.state.is_some_and(|s| s != current);
    if state_changed || patch.explicit_event {
        let state = patch.state.unwrap_or(current);
        add_event(conn, &id, Utc::now(), state, patch.event.as_deref())?;
    }
    Ok(row)
}

//! A job's log, read from Log Analytics, where the environment sends its containers'
//! console output.
//!
//! Container Apps keeps no log of its own that ARM serves: Microsoft documents reading a
//! job's console log with a Log Analytics query (table `ContainerAppConsoleLogs_CL`, or
//! `ContainerAppConsoleLogs` for environments that log through Azure Monitor). The other
//! way, the environment's log stream that `az containerapp job logs show` follows, is a
//! preview of the CLI extension and serves only a running replica. So: one query through
//! the Log Analytics query API per read: for a follower, the rows of this job after the
//! cursor, oldest first; for a tail with no cursor (the log kept when a job ends, whose
//! last line may be its `offload-result:`), the rows newest first, only as many as the tail
//! holds (a running sum of their lengths, `row_cumsum`, over rows ordered by time), however
//! long the log. Lines reach the workspace some time after they are written (Azure
//! Monitor's ingestion takes seconds to minutes), so the tail read when a job ends can
//! miss its last lines.

use std::sync::Arc;

use azure_core::auth::TokenCredential;
use offload_provider::timed_log::{self, Cursor};
use offload_provider::{LogChunk, LogQuery, ProviderError, Result};
use serde_json::{json, Value};

use crate::config::LogAnalytics;

/// The most rows one follower's read returns; the cursor carries on from the last.
const MAX_ROWS: usize = 5_000;

pub struct Logs {
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    config: LogAnalytics,
}

/// The columns that hold the replica's name and the line, by table. A replica's name
/// starts with its execution's, which starts with the job's name and `-` (the jobs
/// quickstart filters on `ContainerGroupName_s startswith` the execution); the job name
/// column some queries use is in no Microsoft document.
fn columns(table: &str) -> (&'static str, &'static str) {
    if table.ends_with("_CL") {
        ("ContainerGroupName_s", "Log_s")
    } else {
        ("ContainerGroupName", "Log")
    }
}

/// Only names Container Apps could have made go into a query.
fn plain(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Logs {
    /// `http` has the provider's timeouts.
    pub fn new(
        config: LogAnalytics,
        credential: Arc<dyn TokenCredential>,
        http: reqwest::Client,
    ) -> Logs {
        Logs {
            http,
            credential,
            config,
        }
    }

    /// The KQL for `job`'s last rows, newest first, as far as the one that brings their
    /// characters (each line's and a newline) to `max`. A character is at least a byte,
    /// so those rows hold at least the last `max` bytes.
    fn tail_query(&self, job: &str, max: usize) -> String {
        let (replica_column, log_column) = columns(&self.config.table);
        format!(
            "{} | where {replica_column} startswith '{job}-' | order by TimeGenerated desc \
             | extend total = row_cumsum(strlen({log_column}) + 1) \
             | where total - strlen({log_column}) - 1 < {max} | project TimeGenerated, {log_column}",
            self.config.table,
        )
    }

    /// The KQL for `job`'s rows from `cursor` on.
    fn query(&self, job: &str, cursor: Option<&Cursor>) -> String {
        let (replica_column, log_column) = columns(&self.config.table);
        let from = cursor.map_or(String::new(), |c| {
            format!("| where TimeGenerated >= datetime({}) ", c.at)
        });
        format!(
            "{} | where {replica_column} startswith '{job}-' {from}| order by TimeGenerated asc \
             | project TimeGenerated, {log_column} | take {}",
            self.config.table,
            MAX_ROWS + cursor.map_or(0, |c| c.seen)
        )
    }

    pub async fn read(&self, job: &str, query: &LogQuery) -> Result<LogChunk> {
        if !plain(job) {
            return Err(ProviderError::InvalidSpec(format!("job name {job:?}")));
        }
        let cursor = query.cursor.as_deref().and_then(Cursor::parse);
        let tail = match (&cursor, query.tail_bytes) {
            (None, Some(max)) => Some(max),
            _ => None,
        };
        let kql = match tail {
            Some(max) => self.tail_query(job, max),
            None => self.query(job, cursor.as_ref()),
        };
        let endpoint = self.config.endpoint.trim_end_matches('/');
        // The query API's audience is the Log Analytics resource, whichever host serves it.
        let token = self
            .credential
            .get_token(&[&format!("{endpoint}/.default")])
            .await
            .map_err(|e| ProviderError::Config(format!("log analytics token: {e}")))?;
        let response = self
            .http
            .post(format!(
                "{endpoint}/v1/workspaces/{}/query",
                self.config.workspace_id
            ))
            .bearer_auth(token.token.secret())
            .json(&json!({"query": kql}))
            .send()
            .await
            .map_err(|e| ProviderError::Transient(format!("log analytics query: {e}")))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            200 => {}
            429 => {
                return Err(ProviderError::Throttled {
                    retry_after: std::time::Duration::from_secs(10),
                })
            }
            401 | 403 => {
                return Err(ProviderError::Config(format!(
                    "log analytics query: {status} {}",
                    body["error"]
                )))
            }
            _ => {
                return Err(ProviderError::Transient(format!(
                    "log analytics query: {status} {}",
                    body["error"]
                )))
            }
        }
        let log_column = columns(&self.config.table).1;
        Ok(match tail {
            Some(max) => timed_log::tail(rows(&body, log_column), max),
            None => timed_log::chunk(rows(&body, log_column), cursor, query.tail_bytes),
        })
    }
}

/// The rows of a query's answer, `(instant, line)`, in its order, from the columns it
/// names.
fn rows<'a>(body: &'a Value, log_column: &str) -> impl Iterator<Item = (&'a str, &'a str)> {
    let table = &body["tables"][0];
    let index = |name: &str| {
        table["columns"]
            .as_array()
            .and_then(|cs| cs.iter().position(|c| c["name"] == name))
    };
    let columns = index("TimeGenerated").zip(index(log_column));
    table["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |row| {
            let (at_i, log_i) = columns?;
            Some((
                row[at_i].as_str().unwrap_or_default(),
                row[log_i].as_str().unwrap_or_default(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(rows: &[(&str, &str)]) -> Value {
        json!({"tables": [{"name": "PrimaryResult",
            "columns": [{"name": "TimeGenerated", "type": "datetime"}, {"name": "Log_s", "type": "string"}],
            "rows": rows.iter().map(|(t, l)| json!([t, l])).collect::<Vec<_>>()}]})
    }

    #[test]
    fn lines_come_from_the_columns_the_answer_names_and_carry_the_cursor_on() {
        let mut body = answer(&[("2026-12-02T10:00:01Z", "b"), ("2026-12-02T10:00:02Z", "c")]);
        // The columns in another order than the query projected them.
        body["tables"][0]["columns"]
            .as_array_mut()
            .unwrap()
            .reverse();
        for row in body["tables"][0]["rows"].as_array_mut().unwrap() {
            row.as_array_mut().unwrap().reverse();
        }
        let cursor = Cursor::parse("2026-12-02T10:00:01Z/1");
        let next = timed_log::chunk(rows(&body, "Log_s"), cursor, None);
        assert_eq!(next.text, "c\n");
        assert_eq!(next.cursor.as_deref(), Some("2026-12-02T10:00:02Z/1"));
        assert_eq!(rows(&json!({"tables": []}), "Log_s").count(), 0);
    }

    #[test]
    fn only_names_container_apps_makes_reach_a_query() {
        assert!(plain("offload-0a1b2c") && plain("offload-0a1b2c-x7k2p"));
        assert!(!plain("x' or 1 == 1 //") && !plain(""));
    }
}

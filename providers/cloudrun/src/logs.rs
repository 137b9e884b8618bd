//! A job's log, read from Cloud Logging, where Cloud Run writes each task's stdout and
//! stderr as entries of the monitored resource `cloud_run_job`.
//!
//! One `entries.list` per page, filtered to the job (a job of offload's is one attempt):
//! for a follower, oldest first and, with a cursor, from the cursor's instant on; for a
//! tail with no cursor (the log kept when a job ends, whose last line may be its
//! `offload-result:`), newest first (`timestamp desc`), only as many pages as the tail
//! needs, however long the log. Entries reach Cloud Logging a few seconds after they are
//! written, so the tail read when a job ends can miss its last lines.

use google_cloud_logging_v2::client::LoggingServiceV2;
use google_cloud_logging_v2::model::LogEntry;
use offload_provider::timed_log::{self, Cursor};
use offload_provider::{LogChunk, LogQuery, Result};

use crate::api::{self, classify};
use crate::config::Config;

/// Entries per page: Cloud Logging's most (a larger page size is refused).
const PAGE_SIZE: i32 = 1_000;
/// The most pages one read takes; the cursor carries on from the last entry.
const MAX_PAGES: usize = 5;

/// The filter for `job`'s entries from `cursor` on. Job ids and RFC 3339 instants (checked
/// by [`Cursor::parse`]) hold no quote, so nothing else reaches the filter.
pub fn filter(config: &Config, job: &str, cursor: Option<&Cursor>) -> String {
    let mut filter = format!(
        "resource.type=\"cloud_run_job\" AND resource.labels.job_name=\"{job}\" AND resource.labels.location=\"{}\"",
        config.region
    );
    if let Some(c) = cursor {
        filter.push_str(&format!(" AND timestamp>=\"{}\"", c.at));
    }
    filter
}

pub async fn read(
    logging: &LoggingServiceV2,
    config: &Config,
    job: &str,
    query: &LogQuery,
) -> Result<LogChunk> {
    let cursor = query.cursor.as_deref().and_then(Cursor::parse);
    if let (None, Some(max)) = (&cursor, query.tail_bytes) {
        let rows = lines(logging, config, job, None, "timestamp desc", Some(max)).await?;
        return Ok(timed_log::tail(
            rows.iter().map(|(at, line)| (at.as_str(), line.as_str())),
            max,
        ));
    }
    let rows = lines(logging, config, job, cursor.as_ref(), "timestamp asc", None).await?;
    Ok(timed_log::chunk(
        rows.iter().map(|(at, line)| (at.as_str(), line.as_str())),
        cursor,
        query.tail_bytes,
    ))
}

/// Up to [`MAX_PAGES`] pages of `job`'s lines (`(instant, line)`) from `cursor` on, in
/// `order`, or fewer once they hold `enough` bytes.
async fn lines(
    logging: &LoggingServiceV2,
    config: &Config,
    job: &str,
    cursor: Option<&Cursor>,
    order: &str,
    enough: Option<usize>,
) -> Result<Vec<(String, String)>> {
    let filter = filter(config, job, cursor);
    let mut rows: Vec<(String, String)> = vec![];
    let mut bytes = 0;
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let page = api::patiently(|| {
            logging
                .list_log_entries()
                .set_resource_names([format!("projects/{}", config.project)])
                .set_filter(filter.clone())
                .set_order_by(order)
                .set_page_size(PAGE_SIZE)
                .set_page_token(token.clone())
                .send()
        })
        .await
        .map_err(|e| classify("list log entries", e))?;
        for (at, line) in page.entries.into_iter().filter_map(line) {
            bytes += line.len() + 1;
            rows.push((at, line));
        }
        if page.next_page_token.is_empty() || enough.is_some_and(|max| bytes >= max) {
            break;
        }
        token = page.next_page_token;
    }
    Ok(rows)
}

/// An entry's instant and line: its text, or its JSON's `message` (else the JSON itself).
fn line(entry: LogEntry) -> Option<(String, String)> {
    let at = entry.timestamp.map(String::from)?;
    let line = match (entry.text_payload(), entry.json_payload()) {
        (Some(text), _) => text.clone(),
        (None, Some(json)) => match json.get("message").and_then(|m| m.as_str()) {
            Some(message) => message.to_string(),
            None => serde_json::to_string(json.as_ref()).unwrap_or_default(),
        },
        (None, None) => return None,
    };
    Some((at, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_names_the_job_and_the_cursors_instant() {
        let config: Config =
            serde_json::from_value(serde_json::json!({"project": "p", "region": "europe-west4"}))
                .unwrap();
        let cursor = Cursor::parse("2026-12-02T10:00:01.5Z/2").unwrap();
        assert_eq!(
            filter(&config, "offload-0a", Some(&cursor)),
            "resource.type=\"cloud_run_job\" AND resource.labels.job_name=\"offload-0a\" \
             AND resource.labels.location=\"europe-west4\" AND timestamp>=\"2026-12-02T10:00:01.5Z\""
        );
    }
}

//! A task's log from CloudWatch Logs (the `awslogs` driver writes one event per line).
//!
//! Followers read forward: the cursor is CloudWatch's forward token, so each read goes on
//! where the last one stopped. A tail with no cursor (the log kept when a job ends, whose
//! last `offload-result:` line is the job's result) is the end of the log, however long:
//! it is read backward from the newest event, only as far as the tail needs (one call for
//! a log, or a tail, of up to 10,000 events), and its cursor lets a follower go on from the end.
//! The tails of tasks seen ended in the same round are read together: one FilterLogEvents
//! call names up to 100 streams and answers with their events, oldest first, whole when it
//! hands back no `nextToken`. An answer that is not whole (long logs, or CloudWatch cutting
//! its search into pages), or a refusal because one of the streams does not exist, leaves
//! each tail to be read on its own as above.

use std::collections::HashMap;

use aws_sdk_cloudwatchlogs::operation::get_log_events::GetLogEventsOutput;
use aws_sdk_cloudwatchlogs::types::OutputLogEvent;
use aws_sdk_cloudwatchlogs::Client;
use offload_provider::budget::Budget;
use offload_provider::{tail_str, LogChunk, LogQuery, ProviderError, Result};

use crate::errors::classify;

/// Pages read per call; a follower calls again for the rest.
const MAX_PAGES: usize = 10;
/// The most events one GetLogEvents call returns.
const MAX_EVENTS_PER_CALL: usize = 10_000;
/// The most log streams one FilterLogEvents call may name.
pub const MAX_STREAMS_PER_FILTER: usize = 100;

/// The last `max` bytes of each of `streams` (launch key, stream name) in `group`, by key,
/// from one FilterLogEvents call; none at all when its answer is not the whole of them or
/// one of the streams does not exist.
pub async fn tails(
    logs: &Client,
    limiter: &Budget,
    group: &str,
    streams: &[(String, String)],
    max: usize,
) -> Result<HashMap<String, String>> {
    limiter.ready().await;
    let answer = logs
        .filter_log_events()
        .log_group_name(group)
        .set_log_stream_names(Some(streams.iter().map(|(_, s)| s.clone()).collect()))
        .send()
        .await;
    let answer = match answer.map_err(|e| classify("FilterLogEvents", e)) {
        Ok(answer) => answer,
        // One stream not made (a task whose container never started) fails the call.
        Err(ProviderError::NotFound(_)) => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    if answer.next_token().is_some() {
        return Ok(HashMap::new());
    }
    let mut texts: HashMap<&str, String> = HashMap::new();
    for event in answer.events() {
        let text = texts
            .entry(event.log_stream_name().unwrap_or_default())
            .or_default();
        text.push_str(event.message().unwrap_or_default());
        text.push('\n');
    }
    Ok(streams
        .iter()
        .map(|(key, stream)| {
            let text = texts.get(stream.as_str()).map_or("", |t| tail_str(t, max));
            (key.clone(), text.to_string())
        })
        .collect())
}

/// One task's log stream.
pub struct Stream<'a> {
    pub logs: &'a Client,
    pub limiter: &'a Budget,
    pub group: &'a str,
    pub name: &'a str,
}

impl Stream<'_> {
    pub async fn read(&self, query: &LogQuery) -> Result<LogChunk> {
        let (chunk, max) = match (&query.cursor, query.tail_bytes) {
            (None, Some(max)) => (self.backward(max).await?, max),
            (cursor, max) => (
                self.forward(cursor.clone()).await?,
                max.unwrap_or(usize::MAX),
            ),
        };
        Ok(LogChunk {
            text: tail_str(&chunk.text, max).to_string(),
            cursor: chunk.cursor,
        })
    }

    /// Up to [`MAX_PAGES`] pages after `cursor` (from the start without one).
    async fn forward(&self, mut cursor: Option<String>) -> Result<LogChunk> {
        let mut text = String::new();
        for _ in 0..MAX_PAGES {
            let Some(page) = self.page(cursor.clone(), true, None).await? else {
                break;
            };
            push_lines(&mut text, page.events());
            let next = page.next_forward_token().map(str::to_string);
            // CloudWatch says "the end" by handing back the token it was given.
            let end = page.events().is_empty() || next == cursor;
            cursor = next.or(cursor);
            if end {
                break;
            }
        }
        Ok(LogChunk { text, cursor })
    }

    /// At least the last `max` bytes (or the whole log), newest page first. The cursor is
    /// the newest page's forward token; none when the log is empty (a follower then reads
    /// from the start, which is the same place).
    async fn backward(&self, max: usize) -> Result<LogChunk> {
        // Every event is at least one byte and its newline.
        let limit = max.div_ceil(2).clamp(1, MAX_EVENTS_PER_CALL) as i32;
        let (mut pages, mut bytes) = (Vec::new(), 0);
        let (mut cursor, mut token) = (None, None);
        for _ in 0..MAX_PAGES {
            let Some(page) = self.page(token.clone(), false, Some(limit)).await? else {
                break;
            };
            if page.events().is_empty() {
                break;
            }
            if cursor.is_none() {
                cursor = page.next_forward_token().map(str::to_string);
            }
            let mut text = String::new();
            push_lines(&mut text, page.events());
            bytes += text.len();
            pages.push(text);
            let back = page.next_backward_token().map(str::to_string);
            // A page shorter than asked for holds the stream's first event: nothing is left.
            let short = page.events().len() < limit as usize;
            if short || bytes >= max || back.is_none() || back == token {
                break;
            }
            token = back;
        }
        pages.reverse();
        Ok(LogChunk {
            text: pages.concat(),
            cursor,
        })
    }

    /// One GetLogEvents call; `None` when the stream does not exist (the task has not
    /// written anything yet).
    async fn page(
        &self,
        token: Option<String>,
        from_head: bool,
        limit: Option<i32>,
    ) -> Result<Option<GetLogEventsOutput>> {
        self.limiter.ready().await;
        let page = self
            .logs
            .get_log_events()
            .log_group_name(self.group)
            .log_stream_name(self.name)
            .start_from_head(from_head)
            .set_next_token(token)
            .set_limit(limit)
            .send()
            .await;
        match page.map_err(|e| classify("GetLogEvents", e)) {
            Ok(page) => Ok(Some(page)),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn push_lines(text: &mut String, events: &[OutputLogEvent]) {
    for event in events {
        text.push_str(event.message().unwrap_or_default());
        text.push('\n');
    }
}

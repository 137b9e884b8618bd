//! A task's log from CloudWatch Logs (the `awslogs` driver writes one event per line).
//! The cursor is CloudWatch's forward token, so follow mode reads on where it stopped.

use aws_sdk_cloudwatchlogs::Client;
use governor::DefaultDirectRateLimiter;
use offload_provider::{tail_str, LogChunk, LogQuery, ProviderError, Result};

use crate::errors::classify;

/// Pages read per call; a follower calls again for the rest.
const MAX_PAGES: usize = 10;

pub async fn read(
    logs: &Client,
    limiter: &DefaultDirectRateLimiter,
    group: &str,
    stream: &str,
    query: &LogQuery,
) -> Result<LogChunk> {
    let mut cursor = query.cursor.clone();
    let mut text = String::new();
    for _ in 0..MAX_PAGES {
        limiter.until_ready().await;
        let page = logs
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(cursor.clone())
            .send()
            .await;
        let page = match page.map_err(|e| classify("GetLogEvents", e)) {
            Ok(page) => page,
            // No stream yet: the task has not written anything.
            Err(ProviderError::NotFound(_)) => break,
            Err(e) => return Err(e),
        };
        for event in page.events() {
            text.push_str(event.message().unwrap_or_default());
            text.push('\n');
        }
        let next = page.next_forward_token().map(str::to_string);
        // CloudWatch says "the end" by handing back the token it was given.
        let end = page.events().is_empty() || next == cursor;
        cursor = next.or(cursor);
        if end {
            break;
        }
    }
    if let Some(max) = query.tail_bytes {
        text = tail_str(&text, max).to_string();
    }
    Ok(LogChunk { text, cursor })
}

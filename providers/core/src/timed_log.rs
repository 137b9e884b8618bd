//! Reading a log that a runtime keeps as timestamped lines in a query service (Azure's Log
//! Analytics, Google's Cloud Logging): a follower reads a page at a time, oldest first; a
//! tail with no cursor (the log kept when a job ends, whose last `offload-result:` line is
//! the job's result) reads newest first, only as far as the tail needs, since a chatty
//! job's log is far longer than what one read returns.
//!
//! Such services filter by time, not by position, and several lines can share an instant,
//! so the cursor is the instant of the last line read and how many lines of that instant
//! were read: the next query starts at that instant again and skips those.

use crate::{tail_str, LogChunk};

/// Where a read carries on: the RFC 3339 instant of the last line read, and how many lines
/// of that instant were read.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub at: String,
    pub seen: usize,
}

impl Cursor {
    /// The cursor a chunk gave, or `None` for one this module did not write. Its instant is
    /// checked to be RFC 3339, since callers put it into a query.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (at, seen) = text.rsplit_once('/')?;
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Cursor {
            at: at.to_string(),
            seen: seen.parse().ok()?,
        })
    }

    pub fn text(&self) -> String {
        format!("{}/{}", self.at, self.seen)
    }
}

/// The lines of a query's answer (`(instant, line)`, oldest first, starting at the
/// cursor's instant) after `cursor`, as text with a newline after each, and where to carry
/// on. With `tail_bytes`, only that much of the end.
pub fn chunk<'a>(
    rows: impl IntoIterator<Item = (&'a str, &'a str)>,
    cursor: Option<Cursor>,
    tail_bytes: Option<usize>,
) -> LogChunk {
    let mut last = cursor;
    let mut skip = last.as_ref().map_or(0, |c| c.seen);
    let mut text = String::new();
    for (at, line) in rows {
        if skip > 0 && last.as_ref().is_some_and(|c| c.at == at) {
            skip -= 1;
            continue;
        }
        skip = 0;
        text.push_str(line);
        if !line.ends_with('\n') {
            text.push('\n');
        }
        last = Some(match last {
            Some(c) if c.at == at => Cursor {
                at: c.at,
                seen: c.seen + 1,
            },
            _ => Cursor {
                at: at.to_string(),
                seen: 1,
            },
        });
    }
    let text = match tail_bytes {
        Some(max) => tail_str(&text, max).to_string(),
        None => text,
    };
    LogChunk {
        text,
        cursor: last.map(|c| c.text()),
    }
}

/// The end of a log from its lines newest first (`(instant, line)`, as a query ordered by
/// time descending answers): the last `max` bytes, oldest first, with a newline after
/// each line, and a cursor at the end, so that a follower from it reads only what comes
/// after. The cursor counts the lines of the newest instant among `rows`, so `rows` should
/// hold all of that instant's lines.
pub fn tail<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>, max: usize) -> LogChunk {
    let mut newest: Option<Cursor> = None;
    let mut kept: Vec<&str> = vec![];
    let mut bytes = 0;
    for (at, line) in rows {
        match &mut newest {
            None => {
                newest = Some(Cursor {
                    at: at.to_string(),
                    seen: 1,
                })
            }
            Some(c) if c.at == at => c.seen += 1,
            Some(_) if bytes >= max => break,
            Some(_) => {}
        }
        if bytes < max {
            bytes += line.len() + usize::from(!line.ends_with('\n'));
            kept.push(line);
        }
    }
    let mut text = String::with_capacity(bytes);
    for line in kept.iter().rev() {
        text.push_str(line);
        if !line.ends_with('\n') {
            text.push('\n');
        }
    }
    LogChunk {
        text: tail_str(&text, max).to_string(),
        cursor: newest.map(|c| c.text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_carries_on_after_lines_of_the_same_instant() {
        let first = chunk(
            [("2026-12-02T10:00:00Z", "a"), ("2026-12-02T10:00:01Z", "b")],
            None,
            None,
        );
        assert_eq!(first.text, "a\nb\n");
        assert_eq!(first.cursor.as_deref(), Some("2026-12-02T10:00:01Z/1"));
        // The next query starts at that instant again: its first line was read already.
        let cursor = Cursor::parse(first.cursor.as_deref().unwrap());
        let next = chunk(
            [
                ("2026-12-02T10:00:01Z", "b"),
                ("2026-12-02T10:00:01Z", "c"),
                ("2026-12-02T10:00:02Z", "d"),
            ],
            cursor,
            None,
        );
        assert_eq!(next.text, "c\nd\n");
        assert_eq!(next.cursor.as_deref(), Some("2026-12-02T10:00:02Z/1"));
        // Nothing new keeps the cursor where it was.
        let cursor = Cursor::parse(next.cursor.as_deref().unwrap());
        let none = chunk([("2026-12-02T10:00:02Z", "d")], cursor, None);
        assert_eq!(
            (none.text.as_str(), none.cursor.as_deref()),
            ("", Some("2026-12-02T10:00:02Z/1"))
        );
    }

    #[test]
    fn a_tail_is_the_end_in_order_with_a_cursor_after_the_newest_instant() {
        let newest_first = [
            ("2026-12-02T10:00:03Z", "result"),
            ("2026-12-02T10:00:03Z", "e"),
            ("2026-12-02T10:00:02Z", "d"),
            ("2026-12-02T10:00:01Z", "c"),
            ("2026-12-02T10:00:00Z", "b"),
        ];
        let chunk = tail(newest_first, 7);
        assert_eq!(chunk.text, "result\n");
        let chunk = tail(newest_first, 8);
        assert_eq!(chunk.text, "\nresult\n", "the last 8 bytes, cut in a line");
        assert_eq!(chunk.cursor.as_deref(), Some("2026-12-02T10:00:03Z/2"));
        let chunk = tail(newest_first, 100);
        assert_eq!(chunk.text, "b\nc\nd\ne\nresult\n");
        // A follower from the cursor skips both lines of the newest instant.
        let cursor = Cursor::parse(chunk.cursor.as_deref().unwrap());
        let next = super::chunk(
            [
                ("2026-12-02T10:00:03Z", "e"),
                ("2026-12-02T10:00:03Z", "result"),
                ("2026-12-02T10:00:04Z", "after"),
            ],
            cursor,
            None,
        );
        assert_eq!(next.text, "after\n");
        let empty = tail([], 10);
        assert_eq!((empty.text.as_str(), empty.cursor), ("", None));
    }

    #[test]
    fn only_cursors_with_an_rfc3339_instant_are_taken() {
        assert!(Cursor::parse("2026-12-02T10:00:01.123456789Z/3").is_some());
        assert!(Cursor::parse("2026-12-02T10:00:01Z\") OR true/1").is_none());
        assert!(Cursor::parse("17").is_none());
    }
}

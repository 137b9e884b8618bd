//! Reading a log that a runtime keeps as timestamped lines in a query service (Azure's Log
//! Analytics, Google's Cloud Logging), a page at a time, oldest first.
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
    fn only_cursors_with_an_rfc3339_instant_are_taken() {
        assert!(Cursor::parse("2026-12-02T10:00:01.123456789Z/3").is_some());
        assert!(Cursor::parse("2026-12-02T10:00:01Z\") OR true/1").is_none());
        assert!(Cursor::parse("17").is_none());
    }
}

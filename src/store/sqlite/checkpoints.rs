//! Checkpoints of the SQLite write-ahead log, off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the log past its
//! threshold: while it copies pages into the database file and syncs it, every write
//! queued behind that commit waits (the worst submit latencies of a busy gateway). The
//! writer turns it off and counts its commits; this thread copies what was committed, once
//! a second and only after a commit, beside the writer: a PASSIVE checkpoint takes no lock
//! that the writer or a reader waits for.
//!
//! But the log starts again from its beginning only when a write begins with every frame
//! copied, and a writer committing hundreds of times a second adds frames while each pass
//! copies: on its own the log grew for as long as the writes came (1.9 GB in 24 s of
//! durable submits). So once the log is past [`LOG_LIMIT`], this thread copies pass after
//! pass until a pass finds few new frames, then asks the writer to copy the rest itself
//! after its next batch's answers (about a millisecond), so that its next write starts the
//! log again: under that load the file stays at about 120 MB.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::Connection;

/// How often the log is copied into the database while commits come.
pub(super) const EVERY: Duration = Duration::from_secs(1);
/// The log's size past which it is made to start again.
pub(super) const LOG_LIMIT: u64 = 64 << 20;
/// Passes in a row that may copy, at most, while the log is past its limit.
const PASSES: usize = 8;
/// Frames few enough for the writer to copy between two batches (512 kB of 4 kB pages).
const HANDOVER: i64 = 128;

/// What the writer and this thread share.
#[derive(Default)]
struct Shared {
    commits: AtomicU64,
    catch_up: AtomicBool,
}

/// The checkpointer thread: it ends when this is dropped (with the store).
pub(super) struct Checkpoints {
    shared: Arc<Shared>,
    _stop: mpsc::Sender<()>,
}

/// The writer's side: told of each commit, and copies the log's last frames when asked.
pub(super) struct Committed(Arc<Shared>);

impl Checkpoints {
    /// Starts checkpointing on `conn`, a read-write connection of its own, every `every`;
    /// `limit` is the log's size (bytes) past which it is made to start again.
    pub(super) fn start(
        conn: Connection,
        every: Duration,
        limit: u64,
    ) -> std::io::Result<Checkpoints> {
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = mpsc::channel();
        let ours = shared.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoints".into())
            .spawn(move || run(conn, &ours, every, limit, &stopped))?;
        Ok(Checkpoints {
            shared,
            _stop: stop,
        })
    }

    /// The writer's handle.
    pub(super) fn committed(&self) -> Committed {
        Committed(self.shared.clone())
    }
}

impl Committed {
    /// Called by the writer after each commit, on its own connection.
    pub(super) fn after_commit(&self, conn: &Connection) {
        self.0.commits.fetch_add(1, Ordering::Relaxed);
        if self.0.catch_up.swap(false, Ordering::Relaxed) {
            if let Err(e) = checkpoint(conn) {
                tracing::warn!(error = %e, "sqlite checkpoint on the writer failed; the log grows on");
            }
        }
    }
}

/// Sets up the writer's connection for this thread: no checkpoint inside a commit, and
/// the log's file cut back to four times `limit` when the log starts again. Not to the
/// limit itself: a busy log ends each second a little past it, and a file cut shorter than
/// that grows again with every commit after it starts again, each growth a change of the
/// file's size that its sync must write too (twice the p99 of durable submits, measured).
pub(super) fn prepare_writer(conn: &Connection, limit: u64) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let kept = i64::try_from(limit.saturating_mul(4)).unwrap_or(i64::MAX);
    conn.pragma_update(None, "journal_size_limit", kept)
}

/// A PASSIVE checkpoint: the frames in the log as it began.
fn checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
}

fn run(
    conn: Connection,
    shared: &Shared,
    every: Duration,
    limit: u64,
    stopped: &mpsc::Receiver<()>,
) {
    let page: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap_or(4096);
    // A frame is a page and its 24-byte header.
    let limit_frames = i64::try_from(limit).unwrap_or(i64::MAX) / (page + 24);
    let mut copied = 0;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        let committed = shared.commits.load(Ordering::Relaxed);
        if committed == copied {
            continue;
        }
        copied = committed;
        // Past the limit, passes follow one another while each finds many frames new (those
        // committed during the pass before); then the writer copies the few left. After
        // PASSES passes it copies whatever is left: a longer pause of the writes once,
        // rather than a log that grows on.
        let mut last = None;
        for pass in 1..=PASSES {
            let log = match checkpoint(&conn) {
                Ok(log) => log,
                Err(e) => {
                    tracing::warn!(error = %e, "sqlite checkpoint failed; the log keeps the commits");
                    break;
                }
            };
            if log <= limit_frames {
                break;
            }
            let new = last.map_or(log, |last| log.saturating_sub(last));
            if new <= HANDOVER || pass == PASSES {
                shared.catch_up.store(true, Ordering::Relaxed);
                break;
            }
            last = Some(log);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_commit_reaches_the_database_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db.sqlite");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        prepare_writer(&writer, LOG_LIMIT).unwrap();
        writer.execute_batch("CREATE TABLE t (x)").unwrap();
        let checkpoints =
            Checkpoints::start(Connection::open(&path).unwrap(), EVERY, LOG_LIMIT).unwrap();
        let db_len = || std::fs::metadata(&path).unwrap().len();
        let before = db_len();
        // 80 kB in the log; in WAL mode only a checkpoint writes the database file.
        writer
            .execute_batch(&"INSERT INTO t VALUES (randomblob(4000));".repeat(20))
            .unwrap();
        checkpoints.committed().after_commit(&writer);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db_len() < before + 80_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the commit was not copied into the database within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log's checkpoint sequence number (bytes 12-15 of its header, big-endian): one
    /// more each time the log starts again from its beginning.
    fn restarts(wal: &std::path::Path) -> u32 {
        use std::io::Read;
        let mut header = [0; 16];
        match std::fs::File::open(wal).and_then(|mut f| f.read_exact(&mut header)) {
            Ok(()) => u32::from_be_bytes(header[12..].try_into().unwrap()),
            Err(_) => 0,
        }
    }

    #[test]
    fn the_log_starts_again_while_the_writes_keep_coming() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db.sqlite");
        let wal = tmp.path().join("db.sqlite-wal");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "synchronous", "FULL").unwrap();
        let limit = 1 << 20;
        prepare_writer(&writer, limit).unwrap();
        writer.execute_batch("CREATE TABLE t (x)").unwrap();
        let checkpoints = Checkpoints::start(
            Connection::open(&path).unwrap(),
            Duration::from_millis(20),
            limit,
        )
        .unwrap();
        let committed = checkpoints.committed();
        let first = restarts(&wal);
        // Commits of 80 kB one after the other, never waiting for the checkpoints, as a busy
        // gateway's writer does: without the writer's catch-up, no write ever begins with
        // every frame copied, and the log grows by all it carries.
        let (mut written, mut largest) = (0u64, 0u64);
        while restarts(&wal) < first + 3 || written < 16 << 20 {
            assert!(
                written < 64 << 20,
                "{} MB through the log and it started again {} times (its file {} MB)",
                written >> 20,
                restarts(&wal) - first,
                largest >> 20
            );
            writer
                .execute_batch(&format!(
                    "BEGIN;{}COMMIT",
                    "INSERT INTO t VALUES (randomblob(4000));".repeat(20)
                ))
                .unwrap();
            committed.after_commit(&writer);
            written += 80_000;
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        // Cut back (to four times the limit) as it starts again, the file never holds what
        // it carried.
        assert!(
            largest < written / 2,
            "the log's file reached {largest} bytes with {written} written"
        );
    }
}

//! Checkpoints of the SQLite write-ahead log, off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the log past its
//! threshold: while it copies pages into the database file and syncs it, every write
//! queued behind that commit waits (the worst submit latencies of a busy gateway). The
//! writer turns it off and counts its commits; this thread copies what was committed, once
//! a second and only after a commit, beside the writer: a PASSIVE checkpoint takes no lock
//! that the writer or a reader waits for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::Connection;

/// How often the log is copied into the database while commits come.
const EVERY: Duration = Duration::from_secs(1);

/// The checkpointer thread: it ends when this is dropped (with the store).
pub(super) struct Checkpoints {
    commits: Arc<AtomicU64>,
    _stop: mpsc::Sender<()>,
}

impl Checkpoints {
    /// Starts checkpointing on `conn`, a read-write connection of its own.
    pub(super) fn start(conn: Connection) -> std::io::Result<Checkpoints> {
        let commits = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = mpsc::channel();
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoints".into())
            .spawn(move || run(conn, &counted, &stopped))?;
        Ok(Checkpoints {
            commits,
            _stop: stop,
        })
    }

    /// The count the writer adds one to after each commit.
    pub(super) fn commits(&self) -> Arc<AtomicU64> {
        self.commits.clone()
    }
}

fn run(conn: Connection, commits: &AtomicU64, stopped: &mpsc::Receiver<()>) {
    let mut copied = 0;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        let committed = commits.load(Ordering::Relaxed);
        if committed == copied {
            continue;
        }
        copied = committed;
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "sqlite checkpoint failed; the log keeps the commits");
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
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE t (x)").unwrap();
        let checkpoints = Checkpoints::start(Connection::open(&path).unwrap()).unwrap();
        let db_len = || std::fs::metadata(&path).unwrap().len();
        let before = db_len();
        // 80 kB in the log; in WAL mode only a checkpoint writes the database file.
        writer
            .execute_batch(&"INSERT INTO t VALUES (randomblob(4000));".repeat(20))
            .unwrap();
        checkpoints.commits().fetch_add(1, Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db_len() < before + 80_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the commit was not copied into the database within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

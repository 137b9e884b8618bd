//! The writer thread: it owns the only write connection, takes every write that is
//! waiting, runs them in one transaction (each in its own savepoint should one fail),
//! commits once, and only then answers each caller (group commit).

use super::*;

/// The most writes one transaction takes before it commits.
pub(super) const MAX_BATCH: usize = 1024;

/// A write waiting for the writer thread. It may run twice (see `run_batch`), so it keeps
/// what it was given and its latest outcome, and answers its caller once, after the
/// batch's commit.
pub(super) trait Write: Send {
    /// Runs the write in the batch's transaction; `false` if it failed (its outcome, kept
    /// for its caller, says why).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: the write's outcome if its batch committed, else the batch's
    /// error.
    fn answer(self: Box<Self>, batch: Option<&StoreError>);
}

pub(super) struct Op<T, F> {
    pub(super) f: F,
    pub(super) outcome: Option<StoreResult<T>>,
    pub(super) tx: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send, F: FnMut(&Connection) -> rusqlite::Result<T> + Send> Write for Op<T, F> {
    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = (self.f)(conn).map_err(db);
        let ran = outcome.is_ok();
        self.outcome = Some(outcome);
        ran
    }

    fn answer(self: Box<Self>, batch: Option<&StoreError>) {
        let _ = self.tx.send(match (batch, self.outcome) {
            (None, Some(outcome)) => outcome,
            (Some(e), _) => Err(StoreError::Db(e.to_string())),
            (None, None) => Err(StoreError::Db("the write was not run".into())),
        });
    }
}

/// Runs a statement the writer runs again and again (its plan is cached).
pub(super) fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(db)
}

/// Runs the write in its own savepoint: should it fail, what it wrote is undone and the
/// transaction goes on. `Err` only when the savepoint itself fails.
pub(super) fn in_savepoint(conn: &Connection, write: &mut dyn Write) -> StoreResult<()> {
    exec(conn, "SAVEPOINT op")?;
    match write.run(conn) {
        true => exec(conn, "RELEASE op"),
        false => conn.execute_batch("ROLLBACK TO op; RELEASE op").map_err(db),
    }
}

pub(super) fn write_loop(
    conn: Connection,
    rx: mpsc::Receiver<Box<dyn Write>>,
    committed: &Committed,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let span = tracing::debug_span!("store batch", store = "sqlite", writes = batch.len(), outcome = tracing::field::Empty);
        let outcome = span.in_scope(|| run_batch(&conn, &mut batch));
        span.record("outcome", if outcome.is_ok() { "committed" } else { "failed" });
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "sqlite batch failed; none of its writes were kept");
        }
        for write in batch {
            write.answer(outcome.as_ref().err());
        }
        // After the answers: a checkpoint the writer runs delays no caller of this batch.
        if outcome.is_ok() {
            committed.after_commit(&conn);
        }
    }
}

/// Runs one batch in one transaction: all of its writes are kept, or none. The writes run
/// first as they are, without savepoints (a savepoint copies each page that a write
/// changes, the better part of a small write's cost). Should one of them fail, the
/// transaction is rolled back and the whole batch run again with each write in its own
/// savepoint, so that the failed write alone is undone and the others are kept.
pub(super) fn run_batch(conn: &Connection, batch: &mut [Box<dyn Write>]) -> StoreResult<()> {
    run_in_transaction(conn, batch, false).unwrap_or_else(|| {
        let _ = conn.execute_batch("ROLLBACK");
        run_in_transaction(conn, batch, true).unwrap_or_else(|| {
            Err(StoreError::Db(
                "a write failed outside its savepoint".into(),
            ))
        })
    })
}

/// Runs the batch's writes in one transaction and commits it; `None` when a write failed
/// outside a savepoint (the transaction, still open, then holds part of it). Should the
/// transaction end early (SQLite rolls back by itself on a full disk or an I/O error), the
/// writes after that point are not run at all, for outside a transaction each would be
/// kept on its own while its caller is told the batch failed.
pub(super) fn run_in_transaction(
    conn: &Connection,
    batch: &mut [Box<dyn Write>],
    savepoints: bool,
) -> Option<StoreResult<()>> {
    // Whether the batch's transaction is still open, as it must be before each write.
    let open = || match conn.is_autocommit() {
        false => Ok(()),
        true => Err(StoreError::Db(
            "the transaction was rolled back in the middle of a batch".into(),
        )),
    };
    let mut outcome = exec(conn, "BEGIN IMMEDIATE");
    for write in batch.iter_mut() {
        outcome = outcome.and_then(|()| open());
        if outcome.is_err() {
            break;
        }
        match savepoints {
            true => outcome = in_savepoint(conn, write.as_mut()),
            false if write.run(conn) => {}
            false => return None,
        }
    }
    outcome = outcome
        .and_then(|()| open())
        .and_then(|()| exec(conn, "COMMIT"));
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    Some(outcome)
}

//! The changes other replicas make, as PostgreSQL announces them (`NOTIFY` on
//! `offload_jobs`, and the pokes on `offload_pokes`), turned into a stream.

use super::*;

pub(super) async fn listen_loop(config: Target, tx: tokio::sync::mpsc::Sender<Change>) {
    let first = Duration::from_millis(100);
    let mut backoff = first;
    loop {
        let started = std::time::Instant::now();
        match listen_once(&config, &tx).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "the PostgreSQL change feed broke; reconnecting"),
        }
        if tx.send(Change::Down).await.is_err() {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            // It had been listening a while: a new outage, not more of the last one.
            backoff = first;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = tx.closed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Listens on one connection until it fails (`Err`) or nobody reads the feed (`Ok`).
pub(super) async fn listen_once(
    config: &Target,
    tx: &tokio::sync::mpsc::Sender<Change>,
) -> Result<(), String> {
    let (client, mut connection) = config
        .connect()
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    // Drives the connection and hands its notifications on, waiting for room in the
    // channel: a slow reader slows the feed rather than losing notices.
    let (notices, mut notified) = tokio::sync::mpsc::channel::<Change>(1024);
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let changes: Vec<Change> = match n.channel() {
                        POKES => n
                            .payload()
                            .split_once(' ')
                            .and_then(|(owner, id)| {
                                Some(Change::Poke {
                                    owner: owner.to_string(),
                                    id: id.parse().ok()?,
                                })
                            })
                            .into_iter()
                            .collect(),
                        // Each notice names the jobs one statement changed (up to 200).
                        _ => n
                            .payload()
                            .split(' ')
                            .filter_map(|id| id.parse::<Uuid>().ok().map(Change::Job))
                            .collect(),
                    };
                    for change in changes {
                        if notices.send(change).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{e}")),
            }
        }
        Err("the connection closed".to_string())
    });
    let _stop_driver = AbortOnDrop(driver.abort_handle());
    // Resync goes out once LISTEN has answered, and before any notice of this
    // connection: notices that come while LISTEN answers wait for it.
    let mut early = vec![];
    let listen = format!("LISTEN {CHANNEL}; LISTEN {POKES}");
    {
        let listening = client.batch_execute(&listen);
        tokio::pin!(listening);
        loop {
            tokio::select! {
                listened = &mut listening => {
                    listened.map_err(|e| format!("LISTEN: {e}"))?;
                    break;
                }
                Some(change) = notified.recv() => early.push(change),
            }
        }
    }
    let changes = std::iter::once(Change::Resync).chain(early);
    for change in changes {
        if tx.send(change).await.is_err() {
            return Ok(());
        }
    }
    loop {
        tokio::select! {
            change = notified.recv() => match change {
                Some(change) => {
                    if tx.send(change).await.is_err() {
                        return Ok(());
                    }
                }
                None => break,
            },
            () = tx.closed() => return Ok(()),
        }
    }
    drop(client);
    match driver.await {
        Ok(outcome) => outcome,
        Err(e) => Err(e.to_string()),
    }
}

/// Aborts a task when dropped, so that a listener that returns early leaves no task behind.
pub(super) struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

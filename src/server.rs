//! Puts the pieces together: store, engine, API, and their orderly start and stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::{Config, DEV_TOKEN};
use crate::engine::Engine;
use crate::config::StoreConfig;
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::snapshots::Snapshots;

/// Bytes of job status snapshots kept in memory at most (a job's is about 1 KiB); past it,
/// the oldest jobs' are dropped, and a read of a job without one reads the store.
const SNAPSHOT_BYTES: usize = 128 << 20;
use crate::store::{sqlite::SqliteStore, Store};

/// The store the configuration names: PostgreSQL at `store.url`, else SQLite at
/// `store.path`.
pub async fn open_store(config: &StoreConfig) -> anyhow::Result<Arc<dyn Store>> {
    let secrets = config.secret_box()?;
    Ok(match &config.url {
        Some(url) => {
            let options = PostgresOptions {
                lease: Duration::from_secs(config.lease_seconds),
                statement_timeout: Duration::from_secs(config.statement_timeout_seconds),
                lock_timeout: Duration::from_secs(config.lock_timeout_seconds),
                idle_in_transaction_timeout: Duration::from_secs(
                    config.idle_in_transaction_timeout_seconds,
                ),
                ..PostgresOptions::default()
            };
            let shown = crate::config::redact_password(url);
            Arc::new(
                PostgresStore::connect_with(url, secrets, options)
                    .await
                    .with_context(|| format!("connecting to the store at {shown}"))?,
            )
        }
        None => Arc::new(
            SqliteStore::open(&config.path, config.synchronous_full, secrets)
                .with_context(|| format!("opening the store at {}", config.path.display()))?,
        ),
    })
}

/// A running gateway.
pub struct Server {
    pub addr: SocketAddr,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Opens the store, resumes the engine and starts listening.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        Server::start_with_clock(config, crate::clock::Clock::system()).await
    }

    /// [`Server::start`] with budgets' days and months read from `clock` (a test's).
    pub async fn start_with_clock(config: Config, clock: crate::clock::Clock) -> anyhow::Result<Server> {
        // The recorder first, so that what the store and the engine count from their start
        // is kept.
        crate::api::ops::prometheus();
        crate::store::StoreError::count_from_zero();
        let snapshots = Arc::new(Snapshots::new(open_store(&config.store).await?, SNAPSHOT_BYTES));
        let engine = Engine::with_clock(&config, snapshots.clone(), clock)
            .await
            .map_err(anyhow::Error::msg)?;
        let engine_done = engine.start().await.context("resuming unfinished jobs")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        for (name, p) in &config.providers {
            if matches!(&p.kind, crate::config::KindConfig::Local(l) if l.allow_non_loopback)
                && !config.listen.ip().is_loopback()
            {
                tracing::warn!(provider = %name, "the local provider runs tenants' jobs as this gateway's user, on a non-loopback address (allow_non_loopback)");
            }
        }
        if config.auth.tokens.is_empty() && config.auth.tokens_file.is_none() {
            tracing::warn!("no auth.tokens configured: accepting the dev token {DEV_TOKEN:?} (tenant \"dev\") on loopback only");
        }
        let stop = CancellationToken::new();
        let tokens = Arc::new(api::Tokens::new(&config.tokens()?));
        api::tokens_file::follow(&config, tokens.clone(), stop.clone())
            .context("catching SIGHUP")?;
        let app = api::router(
            AppState::new(
                snapshots,
                engine.clone(),
                tokens,
                &config.auth,
                stop.clone(),
                config.http.max_waiters_per_tenant,
                config.tes.clone(),
            ),
            &config.http,
            config.body_limit_bytes,
        );
        let prices = &config.prices;
        if prices.refresh_at_start || prices.refresh_every_hours > 0 {
            tokio::spawn(crate::prices::keep_fresh(
                engine.clone(),
                config.clone(),
                stop.clone(),
            ));
        }
        let stopped = stop.clone();
        let http = config.http.clone();
        // Said before the first request can be answered: a client that saw /readyz answer
        // finds the line in the log.
        tracing::info!(%addr, "offload is serving");
        let done = tokio::spawn(async move {
            let drain = Duration::from_secs(http.drain_seconds);
            crate::http::serve(listener, app, &http, stopped, drain).await;
            engine.stop();
            let _ = engine_done.await;
            // Other replicas adopt this one's jobs at once rather than after the lease.
            if let Err(e) = engine.release_lease().await {
                tracing::warn!(error = %e, "could not give up the lease; others adopt after it lapses");
            }
            Ok(())
        });
        Ok(Server { addr, stop, done })
    }

    /// Stops accepting requests, lets the ones in flight finish, and stops the engine.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.done.await?
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        }
        self.shutdown().await
    }
}

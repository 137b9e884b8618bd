//! Where and how the store connects: the pool's settings and the URL's, TLS as its
//! `sslmode` asks.

use super::*;

/// How the store connects; the defaults suit one gateway on a small machine.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The most connections this gateway holds.
    pub pool_size: usize,
    /// How long a new connection may take (unless the URL sets `connect_timeout`).
    pub connect_timeout: Duration,
    /// How long a call waits for a free connection before it fails.
    pub wait_timeout: Duration,
    /// How long this replica's lease lasts without renewal (`store.lease_seconds`).
    pub lease: Duration,
    /// PostgreSQL's `statement_timeout` for the gateway's sessions: no statement runs
    /// longer (`store.statement_timeout_seconds`).
    pub statement_timeout: Duration,
    /// `lock_timeout`: no statement waits longer for a row another session holds
    /// (`store.lock_timeout_seconds`).
    pub lock_timeout: Duration,
    /// `idle_in_transaction_session_timeout`: a session that holds a transaction open and
    /// sends nothing (its process frozen, say) is ended, and its locks released, after this
    /// (`store.idle_in_transaction_timeout_seconds`).
    pub idle_in_transaction_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        let store = crate::config::StoreConfig::default();
        PostgresOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(store.lease_seconds),
            statement_timeout: Duration::from_secs(store.statement_timeout_seconds),
            lock_timeout: Duration::from_secs(store.lock_timeout_seconds),
            idle_in_transaction_timeout: Duration::from_secs(
                store.idle_in_transaction_timeout_seconds,
            ),
        }
    }
}

/// Where and how the gateway connects to PostgreSQL: the connection's settings, and the
/// TLS its `sslmode` asks for.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

impl Target {
    /// One connection, driven by a task of its own.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
            >,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(self.tls.clone()).await
    }
}

/// The connection settings from `url`, with this store's defaults where it names none, the
/// session settings every connection of the gateway's has (its timeouts), and its TLS.
pub fn configure(url: &str, options_of: &PostgresOptions) -> StoreResult<Target> {
    let options = options_of;
    let mut conn = conninfo::ConnInfo::parse(url);
    let tls = tls::Tls::take_from(&mut conn)
        .and_then(|tls| tls.connector())
        .map_err(|e| StoreError::Db(format!("the PostgreSQL URL: {e}")))?;
    let mut config = tokio_postgres::Config::from_str(&conn.to_string()).map_err(|e| {
        pg(
            "the PostgreSQL URL (postgres://user:password@host:port/database)",
            e,
        )
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("offload");
    }
    // Notice a peer that vanished without a word (a failover, a cut network) within a
    // minute rather than the kernel's two hours.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(30));
    }
    config.keepalives_idle(Duration::from_secs(30));
    // The server's side of each session: no statement runs or waits for a lock without
    // end, and a session whose process froze inside a transaction (a SIGSTOP, a stalled
    // VM) is ended, so that its row locks cannot hold other replicas' writes. The server
    // also drops a connection whose peer stops reading (a frozen listener would otherwise
    // pin the NOTIFY queue until every notifying write failed): its `tcp_user_timeout`
    // counts the time its data waits unacknowledged, zero-window probes included.
    let ms = |d: Duration| d.as_millis().max(1);
    let mut options = config.get_options().map(str::to_string).unwrap_or_default();
    for (name, value) in [
        ("statement_timeout", ms(options_of.statement_timeout)),
        ("lock_timeout", ms(options_of.lock_timeout)),
        (
            "idle_in_transaction_session_timeout",
            ms(options_of.idle_in_transaction_timeout),
        ),
        ("tcp_user_timeout", 30_000),
    ] {
        if !options.contains(name) {
            options.push_str(&format!(" -c {name}={value}"));
        }
    }
    config.options(options.trim());
    Ok(Target { config, tls })
}

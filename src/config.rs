//! The gateway's configuration: one TOML file plus `OFFLOAD_` environment overrides
//! (`OFFLOAD_LISTEN`, `OFFLOAD_STORE__PATH`, ...), validated as a whole before anything
//! runs. Providers are named instances, so one deployment can have two of a kind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use offload_provider::{PriceSheet, Provider};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{limits, SpotPolicy};
use crate::store::secrets::SecretBox;

pub mod reference;
pub mod schema;

/// The token accepted when no tokens are configured; only allowed on a loopback address.
pub const DEV_TOKEN: &str = "offload-dev-token";
pub const DEV_TENANT: &str = "dev";

/// The top-level keys of [`Config`], which `OFFLOAD_` environment overrides may name.
const CONFIG_KEYS: [&str; 15] = [
    "log",
    "telemetry",
    "tenants",
    "budgets",
    "prices",
    "listen",
    "staging",
    "tes",
    "http",
    "store",
    "auth",
    "engine",
    "routing",
    "body_limit_bytes",
    "providers",
];

/// offload.toml, the gateway's configuration. Every key is optional: with none, the gateway
/// listens on 127.0.0.1:8080, keeps its store in ./offload.db, runs jobs on the local
/// provider and accepts the dev token.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "offload.toml")]
pub struct Config {
    /// The address the API and the dashboard listen on. A non-loopback address needs
    /// `auth.tokens` or `auth.tokens_file`, and no `local` provider unless it allows it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `[store]`: where jobs are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[auth]`: bearer tokens, their tenants, and the dashboard's sessions.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[engine]`: how jobs are driven to their end.
    #[serde(default)]
    pub engine: EngineConfig,
    /// `[routing]`: the defaults of a job spec's `routing` block.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The largest request body, in bytes; a larger one is answered 413.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// `[http]`: limits on what one client may hold.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[providers.NAME]`: the runtimes jobs run on, each a named instance of a `kind`
    /// (the name is what a job's `provider` says). Names are 1 to 40 of a-z, 0-9 and '-',
    /// and not `auto`. With none configured, one `local` provider named `local`.
    #[serde(default = "default_providers")]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `[tenants.NAME]`: how each tenant shares the providers' places.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// `[[budgets]]`: spend limits per tenant or per label value, per day and per month.
    #[serde(default)]
    pub budgets: Vec<crate::model::budget::Budget>,
    /// `[prices]`: the price file, and reading it from the clouds' catalogs.
    #[serde(default)]
    pub prices: PricesConfig,
    #[serde(default)]
    pub staging: StagingConfig,
    #[serde(default)]
    pub tes: TesConfig,
    /// `[log]`: the gateway's own log.
    #[serde(default)]
    pub log: crate::logging::LogConfig,
    /// `[telemetry]`: traces to an OpenTelemetry collector.
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryConfig,
}

/// `[prices]`: where the figures read from the clouds' price catalogs are kept, when they
/// are read again, and where the catalogs are (see [`crate::prices`]).
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PricesConfig {
    /// The price file: `offload prices refresh` (and the gateway's own refreshes) write the
    /// figures read from the clouds' catalogs to it, whole or not at all, and the gateway
    /// reads it at start; the providers' sheets use its figures over their defaults. A file
    /// that is not a price file fails the start, naming the key; none yet: the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Read the catalogs once the gateway has started, in the background (the sheets are
    /// the file's until it ends); needs `file`.
    pub refresh_at_start: bool,
    /// Read them again every this many hours while the gateway runs (`24`: daily); `0`:
    /// never. A refresh that fails keeps the last good file and prices, says so in the log
    /// and in `GET /v1/providers` (`price_refresh`), and is tried again a minute later, then
    /// two, four... up to an hour apart, never later than the next period (with no period,
    /// until one at start succeeds); needs `file`.
    pub refresh_every_hours: u64,
    /// The Google Cloud Billing Catalog API's key (`cloudrun`, and `kubernetes` on GKE
    /// Autopilot); best given as `OFFLOAD_PRICES__GOOGLE_API_KEY`. Never logged nor shown;
    /// without one that catalog is skipped, the refresh says so, and those providers keep
    /// the file's figures or their defaults.
    #[serde(skip_serializing)]
    pub google_api_key: Option<String>,
    /// Where the Azure Retail Prices API is (`aci`, `aca`; no credentials).
    pub azure_url: String,
    /// Where the AWS Price List Bulk API's offer files are (`ecs`; no credentials).
    pub aws_url: String,
    /// Where the Google Cloud Billing Catalog API is.
    pub google_url: String,
}

impl Default for PricesConfig {
    fn default() -> Self {
        PricesConfig {
            file: None,
            refresh_at_start: false,
            refresh_every_hours: 0,
            google_api_key: None,
            azure_url: "https://prices.azure.com".into(),
            aws_url: "https://pricing.us-east-1.amazonaws.com".into(),
            google_url: "https://cloudbilling.googleapis.com".into(),
        }
    }
}

impl std::fmt::Debug for PricesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PricesConfig")
            .field("file", &self.file)
            .field("refresh_at_start", &self.refresh_at_start)
            .field("refresh_every_hours", &self.refresh_every_hours)
            .field(
                "google_api_key",
                &self.google_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("azure_url", &self.azure_url)
            .field("aws_url", &self.aws_url)
            .field("google_url", &self.google_url)
            .finish()
    }
}

/// `[staging]`: what the filer may reach for each tenant's inputs and outputs. It acts with
/// the deployment's credentials, so nothing is reachable unless listed here.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StagingConfig {
    /// Whether `http(s)` inputs may reach loopback, link-local (cloud metadata) and private
    /// addresses.
    pub allow_private_addresses: bool,
    /// Per tenant: the URL prefixes (`s3://bucket/in/`, `https://example.org/data/`,
    /// `file:///srv/shared/`) its jobs' inputs may be read from (`read`) and outputs
    /// written to (`write`).
    pub tenants: BTreeMap<String, TenantStaging>,
}

/// `[staging.tenants.NAME]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TenantStaging {
    /// URL prefixes the tenant's jobs' inputs may be read from.
    pub read: Vec<String>,
    /// URL prefixes the tenant's jobs' outputs may be written to.
    pub write: Vec<String>,
}

impl StagingConfig {
    /// What `tenant`'s jobs may reach.
    pub fn policy(&self, tenant: &str) -> crate::staging::Policy {
        let lists = self.tenants.get(tenant).cloned().unwrap_or_default();
        crate::staging::Policy {
            read: lists.read,
            write: lists.write,
            private_addresses: self.allow_private_addresses,
        }
    }
}

/// `[tes]`: the GA4GH TES API at `/ga4gh/tes/v1`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TesConfig {
    /// `service-info`'s `id`: this service, in reverse domain notation.
    pub service_id: String,
    /// `service-info`'s `organization`: who runs this gateway, and their web site.
    pub organization_name: String,
    pub organization_url: String,
    /// The tenant a TES request without an `Authorization` header acts for; unset, such a
    /// request gets 401 as on `/v1`. For TES clients that send no token (the GA4GH
    /// compliance suite); only allowed on a loopback address.
    pub anonymous_tenant: Option<String>,
    /// The `storage` that `service-info` lists (where this deployment's tasks keep files).
    pub storage: Vec<String>,
}

impl Default for TesConfig {
    fn default() -> Self {
        TesConfig {
            service_id: "org.offload.tes".into(),
            organization_name: "offload".into(),
            organization_url: "http://localhost/".into(),
            anonymous_tenant: None,
            storage: vec![],
        }
    }
}

/// `[tenants.NAME]`: a tenant's share of each provider's places. A tenant not named has
/// weight 1 and no limit of its own.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Its weight in the fair share of each provider's places: a freed place goes to the
    /// waiting tenant that holds the fewest for its weight.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The most places it holds at each provider at once, whatever is free.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
}

fn default_weight() -> u32 {
    1
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}

fn default_body_limit() -> usize {
    1 << 20
}

fn default_providers() -> BTreeMap<String, ProviderConfig> {
    let local = ProviderConfig {
        kind: KindConfig::Local(offload_local::Config::default()),
        max_concurrency: default_concurrency(),
        poll_interval_ms: default_poll_ms(),
        max_poll_interval_ms: None,
        price: None,
        follower_reads_per_second: default_follower_reads(),
        health_check_seconds: default_health_check(),
        call_timeout_seconds: default_call_timeout(),
    };
    BTreeMap::from([("local".to_string(), local)])
}

/// `[store]`: where jobs are kept: a SQLite file for one gateway, or a PostgreSQL
/// database that several replicas share.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database (WAL mode), when `url` is not set. It is created mode 0600, and
    /// so are its WAL, shared-memory and lock files, for it holds every tenant's specs and
    /// log tails; the lock file `PATH.lock` beside it stops a second gateway from opening
    /// it.
    #[serde(default = "default_db")]
    pub path: PathBuf,
    /// A PostgreSQL database (`postgres://user:password@host:port/database`) shared by
    /// several replicas, instead of the SQLite file at `path`. TLS as its `sslmode` and
    /// `sslrootcert` say (`verify-full` for a managed database). Needs `secret_key` or
    /// `secret_key_file`, the same on every replica.
    #[serde(default)]
    pub url: Option<String>,
    /// With `url`: how long a replica's lease on its jobs lasts without renewal, in seconds
    /// (at least 3); it renews every third of it, and once it lapses the other replicas
    /// adopt its jobs.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    /// Jobs that ended (and whose workloads were released) longer ago than this many days
    /// are deleted, with their events and idempotency keys, once an hour, by one replica
    /// (the leader); unset, every job is kept.
    #[serde(default)]
    pub retention_days: Option<u64>,
    /// SQLite: sync every commit to disk (it survives power loss); `false`, a commit
    /// survives a crash of the process only. Group commit keeps syncing cheap.
    #[serde(default = "yes")]
    pub synchronous_full: bool,
    /// The key that seals `secret_env` at rest: 32 bytes, base64-encoded (`openssl rand
    /// -base64 32`). Best given as `OFFLOAD_STORE__SECRET_KEY` from a secret store.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// Where the key is kept when `secret_key` is not given: created on first start with a
    /// random key, mode 0600. Unset, the database's path with `.key` appended
    /// (`offload.db.key`).
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// With `url`: PostgreSQL's `statement_timeout` on the gateway's sessions, in seconds
    /// (migrations run without one).
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_seconds: u64,
    /// With `url`: `lock_timeout`, how long a statement waits for rows another session
    /// holds before it fails (and the write is retried), in seconds.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_seconds: u64,
    /// With `url`: `idle_in_transaction_session_timeout`, after which PostgreSQL ends a
    /// session that holds a transaction open and sends nothing (a frozen replica), so that
    /// its locks cannot stop the others' writes; in seconds.
    #[serde(default = "default_idle_in_transaction_timeout")]
    pub idle_in_transaction_timeout_seconds: u64,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("path", &self.path)
            .field("url", &self.url.as_deref().map(redact_password))
            .field("lease_seconds", &self.lease_seconds)
            .field("retention_days", &self.retention_days)
            .field("synchronous_full", &self.synchronous_full)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("secret_key_file", &self.secret_key_file)
            .field("statement_timeout_seconds", &self.statement_timeout_seconds)
            .field("lock_timeout_seconds", &self.lock_timeout_seconds)
            .field(
                "idle_in_transaction_timeout_seconds",
                &self.idle_in_transaction_timeout_seconds,
            )
            .finish()
    }
}

impl StoreConfig {
    /// What seals secrets at rest: the configured key, else the key file's.
    pub fn secret_box(&self) -> Result<SecretBox, ConfigError> {
        match &self.secret_key {
            Some(key) => SecretBox::from_base64(key)
                .map_err(|e| ConfigError(format!("store.secret_key: {e}"))),
            None => SecretBox::from_file(&self.key_file())
                .map_err(|e| ConfigError(format!("store.secret_key_file: {e}"))),
        }
    }

    /// Whether the key that would seal secrets is good, making nothing: the configured key,
    /// or the key file when there is one (a missing one is made at the first start).
    pub fn check_secret_key(&self) -> Result<(), ConfigError> {
        match self.secret_key.is_some() || self.key_file().exists() {
            true => self.secret_box().map(drop),
            false => Ok(()),
        }
    }

    /// `secret_key_file`, or the database's path with `.key` appended.
    fn key_file(&self) -> PathBuf {
        self.secret_key_file.clone().unwrap_or_else(|| {
            let mut name = self.path.as_os_str().to_owned();
            name.push(".key");
            PathBuf::from(name)
        })
    }
}

fn default_db() -> PathBuf {
    PathBuf::from("offload.db")
}

fn default_lease() -> u64 {
    15
}

fn default_statement_timeout() -> u64 {
    60
}

fn default_lock_timeout() -> u64 {
    10
}

fn default_idle_in_transaction_timeout() -> u64 {
    10
}

/// A database connection string with every password in it replaced, for logs, errors and
/// `Debug`: the URL's `user:password@`, its `password=` (or `sslpassword=`) query
/// parameters, and the `password=` pairs of the `key=value` form (quoted or not), as
/// tokio-postgres and libpq read them.
pub fn redact_password(url: &str) -> String {
    crate::store::postgres::conninfo::ConnInfo::parse(url).redacted()
}

fn yes() -> bool {
    true
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_db(),
            url: None,
            lease_seconds: default_lease(),
            retention_days: None,
            synchronous_full: true,
            secret_key: None,
            secret_key_file: None,
            statement_timeout_seconds: default_statement_timeout(),
            lock_timeout_seconds: default_lock_timeout(),
            idle_in_transaction_timeout_seconds: default_idle_in_transaction_timeout(),
        }
    }
}

/// `[http]`: limits on what one client may hold.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// A request's headers must arrive within this many seconds of its first byte, or the
    /// connection is closed.
    pub header_timeout_seconds: u64,
    /// A request's body must arrive in full within this many seconds of its headers (408
    /// otherwise): a total, not a gap between bytes.
    pub body_timeout_seconds: u64,
    /// A connection with no request in flight for this many seconds is closed, HTTP/1 and
    /// HTTP/2 alike (PINGs do not keep an HTTP/2 connection open).
    pub idle_timeout_seconds: u64,
    /// Open connections at most. At the cap, a new connection closes the oldest one that
    /// has made no authenticated request; when every one has, it is answered 503 with
    /// Retry-After and closed.
    pub max_connections: usize,
    /// Open connections from one client address at most; past it, that address's oldest
    /// connection without an authenticated request is closed to make room (or the new one
    /// is answered 503).
    pub max_connections_per_address: usize,
    /// Long-polls (`?wait=`), log followers and dashboard live views one tenant may hold
    /// open at once; past it, 429 with `Retry-After: 1`.
    pub max_waiters_per_tenant: usize,
    /// On shutdown, how many seconds requests in flight get to finish.
    pub drain_seconds: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_seconds: 10,
            body_timeout_seconds: 30,
            idle_timeout_seconds: 60,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            max_waiters_per_tenant: 1_000,
            drain_seconds: 20,
        }
    }
}

/// `[auth]`: who may call the API, as which tenant.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The bearer tokens, each with its tenant. With neither these nor `tokens_file`, the
    /// dev token `offload-dev-token` (tenant `dev`, an admin's) is accepted, and only on a loopback
    /// address.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// A file of bearer tokens, instead of `tokens`, read again when it changes (checked
    /// every `tokens_file_check_seconds`) and on SIGHUP, so tokens rotate without a
    /// restart. It holds what the `offload-tokens` Kubernetes Secret's key `tokens` holds,
    /// a TOML list of `{token, tenant, admin}` tables as `OFFLOAD_AUTH__TOKENS` takes it (mount
    /// the Secret as a volume), or a TOML document of `[[tokens]]` tables. A token removed
    /// from it stops working at once: its dashboard sessions end, its open long-polls are
    /// answered 401 and its log followers end. A file that cannot be read, has a mistake
    /// or holds no token leaves the tokens in force as they were, and the log says why. The gateway does not start without a good one.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// How often, in seconds, `tokens_file` is read to see whether it changed.
    #[serde(default = "default_tokens_file_check")]
    pub tokens_file_check_seconds: u64,
    /// Failed authentications (a wrong bearer token, or one at the dashboard's sign-in) one
    /// client address (an IPv6 /64) may make per minute, up to this many at once; past
    /// them, 429 with Retry-After.
    #[serde(default = "default_failures")]
    pub failures_per_minute: u32,
    /// How long a dashboard session lasts after its sign-in, in seconds.
    #[serde(default = "default_session")]
    pub session_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens: vec![],
            tokens_file: None,
            tokens_file_check_seconds: default_tokens_file_check(),
            failures_per_minute: default_failures(),
            session_seconds: default_session(),
        }
    }
}

fn default_tokens_file_check() -> u64 {
    5
}

/// What `auth.tokens_file` holds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenConfig>,
}

impl AuthConfig {
    /// The tokens `tokens_file` holds now, each checked as `tokens` are; the error names
    /// the file and what is wrong in it (its line, or the key).
    pub fn read_tokens_file(path: &Path) -> Result<Vec<TokenConfig>, ConfigError> {
        let text = std::fs::read(path).map_err(|e| {
            ConfigError(format!("auth.tokens_file {}: {e}", path.display()))
        })?;
        AuthConfig::parse_tokens_file(path, &text)
    }

    /// The tokens of `text`, read from `tokens_file` at `path`, as [`Self::read_tokens_file`].
    pub fn parse_tokens_file(path: &Path, text: &[u8]) -> Result<Vec<TokenConfig>, ConfigError> {
        let wrong = |why: String| ConfigError(format!("auth.tokens_file {}: {why}", path.display()));
        let text = std::str::from_utf8(text).map_err(|e| wrong(format!("not UTF-8: {e}")))?;
        // The Secret's form, a bare list (`[{token = ..., tenant = ...}]`), is the value
        // of `tokens`; a document starts with `[[tokens]]` (or `tokens = `).
        let mut document = text.to_string();
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                at += line.len();
                continue;
            }
            if l.starts_with('[') && !l.starts_with("[[") {
                // On the list's own line, so that a mistake's line number stays right.
                document.insert_str(at, "tokens = ");
            }
            break;
        }
        let file: TokensFile = Figment::from(Toml::string(&document)).extract().map_err(|e| {
            // figment says where in the document ("for key `tokens.0.tenant`"); the
            // "in <string>" of a parse error would only confuse.
            wrong(e.to_string().replace(" in TOML source string", ""))
        })?;
        if file.tokens.is_empty() {
            return Err(wrong("holds no token".into()));
        }
        check_tokens(&file.tokens, "tokens").map_err(|e| wrong(e.0))?;
        Ok(file.tokens)
    }
}

/// The rules every set of tokens keeps, wherever it comes from: `key` names the list.
fn check_tokens(tokens: &[TokenConfig], key: &str) -> Result<(), ConfigError> {
    for (i, t) in tokens.iter().enumerate() {
        if t.token.len() < 16 {
            return Err(ConfigError(format!(
                "{key}[{i}].token must have at least 16 characters"
            )));
        }
        if t.tenant.is_empty() {
            return Err(ConfigError(format!("{key}[{i}].tenant must not be empty")));
        }
        if let Some(first) = tokens[..i].iter().position(|o| o.token == t.token) {
            return Err(ConfigError(format!(
                "{key}[{i}].token is the same as {key}[{first}].token"
            )));
        }
    }
    Ok(())
}

fn default_failures() -> u32 {
    30
}

fn default_session() -> u64 {
    12 * 3600
}

/// A bearer token and the tenant it acts for.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The token, at least 16 characters (`openssl rand -hex 24`). Never logged or shown.
    pub token: String,
    /// The tenant whose jobs the token sees and submits.
    pub tenant: String,
    /// Whether the token may also set and remove every tenant's budgets
    /// (`PUT`/`DELETE /v1/budgets`) and read them all.
    #[serde(default)]
    pub admin: bool,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// `[engine]`: how jobs are driven to their end.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Launches a job may have for workloads that got lost (each lost workload takes
    /// another); moves to another provider for want of capacity do not count.
    pub max_attempts: u32,
    /// Transient launch errors in a row before the job fails.
    pub launch_retries: u32,
    /// How much of a finished job's log is kept in the store, in bytes.
    pub log_tail_bytes: usize,
    /// How long a finished workload is kept at its provider before it is released
    /// (deleted), in seconds, so that log followers can read its end.
    pub release_after_seconds: u64,
    /// Reconciles running at once: more lets dispatch keep pace with a burst of submits,
    /// at some cost to their intake on few cores. Each provider holds at most an equal
    /// share of them, so that a provider whose calls are slow keeps only its share
    /// waiting on it.
    pub reconcile_concurrency: usize,
    /// How often, in seconds, each provider's managed workloads (those that can be
    /// listed: Kubernetes pods, ACI groups) are checked; one no job owns (its job is gone,
    /// it is not the job's current attempt, or it was released already) is released.
    pub orphan_sweep_seconds: u64,
    /// How often, in seconds, the store is swept for jobs queued longer than this that the
    /// engine does not have in hand (so a committed job is dispatched even if the poke
    /// after its commit was lost), and for a page of 10,000 of the replica's other
    /// unfinished jobs, the next page each time.
    pub queued_sweep_seconds: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_attempts: 3,
            launch_retries: 8,
            log_tail_bytes: 64 << 10,
            release_after_seconds: 10,
            reconcile_concurrency: 256,
            orphan_sweep_seconds: 300,
            queued_sweep_seconds: 10,
        }
    }
}

/// `[routing]`: the defaults of a job spec's `routing` block.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Whether spot providers may run a job whose spec does not say (`routing.spot`):
    /// `never`, `allowed` or `preferred`.
    pub default_spot: SpotPolicy,
    /// The expected run time of a job whose spec does not say
    /// (`routing.expected_duration_seconds`) and whose DAG task (`dag_id` and `task_id`
    /// labels) has no successful run yet, for its cost estimate: 1 to 604800.
    pub default_duration_seconds: u64,
    /// An `auto` job that has waited this many seconds for a place at the provider it was
    /// routed to is routed again among the providers with room.
    pub max_wait_seconds: u64,
    /// How many times a "no capacity" answer may move an `auto` job to the next-best
    /// provider (a new attempt each time); past it the job waits where it is.
    pub max_hops: u32,
    /// How many times a job may be preempted on spot capacity; each preemption launches
    /// it again (a new attempt), on spot until this many, after that only where nothing is
    /// spot.
    pub max_preemptions: u32,
    /// The provider an `auto` job's savings are measured against, when it can run the
    /// job; unset (or when it cannot), the dearest that can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_provider: Option<String>,
    /// Zones by name, each with the providers (names or kinds) in it, for a spec's
    /// `routing.zones` (a TES task's `resources.zones`): `{ "eu-west-1" = ["fargate"] }`.
    pub zones: BTreeMap<String, Vec<String>>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default_spot: SpotPolicy::Never,
            default_duration_seconds: 600,
            max_wait_seconds: 60,
            max_hops: 3,
            max_preemptions: 2,
            reference_provider: None,
            zones: BTreeMap::new(),
        }
    }
}

/// `[providers.NAME]`: the settings every kind shares, plus the kind's own.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ProviderConfig {
    /// The kind of runtime, whose own settings go beside the shared ones.
    #[serde(flatten)]
    pub kind: KindConfig,
    /// Jobs that may hold a place (starting, running, cancelling) at once; the rest wait
    /// queued.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// How soon a live workload is observed after its launch, in milliseconds (at least
    /// 10); each workload's interval then doubles with each look, so that an end is seen
    /// within about as long as the workload has run. The workloads due are observed
    /// together in batched calls.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// The longest interval between two observations of a live workload, in milliseconds:
    /// the longest its end can go unseen by polling (Kubernetes pushes ends at once). A
    /// running workload whose run time is known is next observed when it is expected to
    /// end, within this bound. Unset: the kind's own bound where it has one (`ecs`, `aci`
    /// and `aca`, whose looks are billed or budgeted reads: see their tables), else 8 times
    /// `poll_interval_ms`; never below `poll_interval_ms`.
    #[serde(default)]
    pub max_poll_interval_ms: Option<u64>,
    /// The provider's price sheet, which replaces the kind's own default sheet whole,
    /// billing rules included.
    #[serde(default)]
    pub price: Option<PriceSheet>,
    /// Log reads per second that all of this provider's log followers (`logs?follow=true`,
    /// `offload run`, the dashboard's live views) may make together, a budget apart from
    /// the engine's own calls, shared fairly by tenant.
    #[serde(default = "default_follower_reads")]
    pub follower_reads_per_second: u32,
    /// How often, in seconds, the provider's health check (ECS: ListTasks; Kubernetes: a
    /// pod list; ACI: a group list) runs while no observe round has answered; an answered
    /// round counts as a passed check, so a busy provider costs no health calls.
    #[serde(default = "default_health_check")]
    pub health_check_seconds: u64,
    /// How long one call to this provider (a launch, a look, a log read, a stop) may take,
    /// in seconds, before the engine counts it a passing fault and tries again later. With
    /// several replicas it is at most half of `store.lease_seconds`, and a replica makes a
    /// call that changes a workload only while its lease surely outlasts it.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_seconds: u64,
}

fn default_health_check() -> u64 {
    30
}

fn default_call_timeout() -> u64 {
    10
}

fn default_follower_reads() -> u32 {
    5
}

fn default_concurrency() -> usize {
    16
}

fn default_poll_ms() -> u64 {
    500
}

/// How far a workload's poll interval stretches while nothing changes, unless
/// `max_poll_interval_ms` says (whose doc comment says this number).
const MAX_POLL_STRETCH: u64 = 8;

/// The kinds with a `max_poll_interval_ms` default of their own, where each look is a
/// billed or budgeted read and workloads take tens of seconds to start.
pub(crate) const OWN_POLL_BOUNDS: &[(&str, u64)] = &[
    #[cfg(feature = "ecs")]
    ("ecs", offload_ecs::MAX_POLL_INTERVAL_MS),
    #[cfg(feature = "aci")]
    ("aci", offload_aci::MAX_POLL_INTERVAL_MS),
    #[cfg(feature = "aca")]
    ("aca", offload_aca::MAX_POLL_INTERVAL_MS),
];

impl ProviderConfig {
    /// How long one call to the provider may take: `call_timeout_seconds`, and with a store
    /// shared by replicas (`lease` given) at most half the lease, so that a replica whose
    /// lease was renewed a moment ago can always make a call and finish it within the lease.
    pub fn call_deadline(&self, lease: Option<std::time::Duration>) -> std::time::Duration {
        let own = std::time::Duration::from_secs(self.call_timeout_seconds);
        lease.map_or(own, |lease| own.min(lease / 2))
    }

    /// `max_poll_interval_ms`, or its default.
    pub fn max_poll_interval_ms(&self) -> u64 {
        self.max_poll_interval_ms.unwrap_or_else(|| {
            self.kind
                .max_poll_interval_ms()
                .unwrap_or(self.poll_interval_ms * MAX_POLL_STRETCH)
                .max(self.poll_interval_ms)
        })
    }
}

/// A provider's kind, with its own settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum KindConfig {
    Local(offload_local::Config),
    Sim(offload_sim::Config),
    #[cfg(feature = "ecs")]
    Ecs(offload_ecs::Config),
    #[cfg(feature = "kubernetes")]
    Kubernetes(offload_kubernetes::Config),
    #[cfg(feature = "aci")]
    Aci(offload_aci::Config),
    #[cfg(feature = "aca")]
    Aca(offload_aca::Config),
    #[cfg(feature = "cloudrun")]
    Cloudrun(offload_cloudrun::Config),
}

impl KindConfig {
    /// The kind's tag, as `kind = "..."` names it.
    pub fn name(&self) -> &'static str {
        match self {
            KindConfig::Local(_) => "local",
            KindConfig::Sim(_) => "sim",
            #[cfg(feature = "ecs")]
            KindConfig::Ecs(_) => "ecs",
            #[cfg(feature = "kubernetes")]
            KindConfig::Kubernetes(_) => "kubernetes",
            #[cfg(feature = "aci")]
            KindConfig::Aci(_) => "aci",
            #[cfg(feature = "aca")]
            KindConfig::Aca(_) => "aca",
            #[cfg(feature = "cloudrun")]
            KindConfig::Cloudrun(_) => "cloudrun",
        }
    }

    /// The kind's own default for `max_poll_interval_ms`, where its cloud's costs call for one.
    fn max_poll_interval_ms(&self) -> Option<u64> {
        OWN_POLL_BOUNDS
            .iter()
            .find(|(kind, _)| *kind == self.name())
            .map(|(_, bound)| *bound)
    }

    pub async fn build(&self) -> Result<Arc<dyn Provider>, String> {
        Ok(match self {
            KindConfig::Local(c) => Arc::new(c.build().map_err(|e| e.to_string())?),
            KindConfig::Sim(c) => Arc::new(c.build().map_err(|e| e.to_string())?),
            #[cfg(feature = "ecs")]
            KindConfig::Ecs(c) => Arc::new(c.build().await?),
            #[cfg(feature = "kubernetes")]
            KindConfig::Kubernetes(c) => Arc::new(c.build().await?),
            #[cfg(feature = "aci")]
            KindConfig::Aci(c) => Arc::new(c.build().await?),
            #[cfg(feature = "aca")]
            KindConfig::Aca(c) => Arc::new(c.build().await?),
            #[cfg(feature = "cloudrun")]
            KindConfig::Cloudrun(c) => Arc::new(c.build().await?),
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads `file` (when given) and the environment. With neither, the defaults: listen on
    /// 127.0.0.1:8080, store in `./offload.db`, the local provider, the dev token.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let config: Config = Config::figment(file)?
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The `[store]` section alone, as [`Config::load`] reads it, for the commands that
    /// need nothing else (`offload migrate`): the rest of the configuration, the rules for
    /// serving among it (a secret key with PostgreSQL), is not read.
    pub fn load_store(file: Option<&Path>) -> Result<StoreConfig, ConfigError> {
        Config::figment(file)?
            .focus("store")
            .extract()
            .map_err(|e| ConfigError(format!("store: {e}")))
    }

    /// The file (when given) and the environment, merged.
    fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut figment =
            Figment::from(Serialized::default("listen", default_listen().to_string()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only variables that name a config section count: OFFLOAD_URL, OFFLOAD_TOKEN (the
        // CLI's), OFFLOAD_LOG (the log's filter; `OFFLOAD_LOG__FORMAT` is `log.format`) and
        // any other OFFLOAD_* are not configuration.
        let env = Env::prefixed("OFFLOAD_")
            .filter(|key| {
                let first = key.as_str().split("__").next().unwrap_or_default();
                !key.as_str().eq_ignore_ascii_case("log")
                    && CONFIG_KEYS.iter().any(|k| first.eq_ignore_ascii_case(k))
            })
            .split("__");
        Ok(figment.merge(env))
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Err((key, why)) = self.telemetry.check() {
            return Err(ConfigError(format!("telemetry.{key}: {why}")));
        }
        if self.auth.tokens.is_empty()
            && self.auth.tokens_file.is_none()
            && !self.listen.ip().is_loopback()
        {
            return Err(ConfigError(format!(
                "auth.tokens is empty, and the dev token is only allowed on a loopback address, not {}",
                self.listen
            )));
        }
        if !self.auth.tokens.is_empty() && self.auth.tokens_file.is_some() {
            return Err(ConfigError(
                "auth.tokens and auth.tokens_file: give the tokens in one of them".into(),
            ));
        }
        check_tokens(&self.auth.tokens, "auth.tokens")?;
        if self.auth.failures_per_minute == 0
            || self.auth.session_seconds == 0
            || self.auth.tokens_file_check_seconds == 0
        {
            return Err(ConfigError(
                "auth.failures_per_minute, auth.session_seconds and auth.tokens_file_check_seconds must be at least 1".into(),
            ));
        }
        self.check_tokens(&self.tokens()?)?;
        let mut budget_ids = std::collections::BTreeSet::new();
        for (i, b) in self.budgets.iter().enumerate() {
            if let Err(errors) = b.validate() {
                let e = &errors[0];
                return Err(ConfigError(format!("budgets[{i}].{}: {}", e.field, e.message)));
            }
            if !budget_ids.insert(b.id()) {
                return Err(ConfigError(format!(
                    "budgets[{i}]: a second budget for tenant {:?}{}; one budget per tenant and label",
                    b.tenant,
                    b.label.as_deref().map(|l| format!(" and label {l:?}")).unwrap_or_default()
                )));
            }
        }
        for (name, t) in &self.tenants {
            if t.weight == 0 || t.max_concurrency == Some(0) {
                return Err(ConfigError(format!(
                    "tenants.{name}: weight and max_concurrency must be at least 1"
                )));
            }
        }
        if self.providers.is_empty() {
            return Err(ConfigError(
                "providers: configure at least one provider".into(),
            ));
        }
        for (name, p) in &self.providers {
            let ok = !name.is_empty()
                && name.len() <= 40
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok || name == "auto" {
                return Err(ConfigError(format!(
                    "providers.{name}: names are 1 to 40 of a-z, 0-9 and '-', and not \"auto\""
                )));
            }
            if p.max_concurrency == 0 {
                return Err(ConfigError(format!(
                    "providers.{name}.max_concurrency must be at least 1"
                )));
            }
            if p.call_timeout_seconds == 0 {
                return Err(ConfigError(format!(
                    "providers.{name}.call_timeout_seconds must be at least 1"
                )));
            }
            if p.poll_interval_ms < 10 {
                return Err(ConfigError(format!(
                    "providers.{name}.poll_interval_ms must be at least 10"
                )));
            }
            if p.max_poll_interval_ms() < p.poll_interval_ms {
                return Err(ConfigError(format!(
                    "providers.{name}.max_poll_interval_ms must be at least poll_interval_ms ({})",
                    p.poll_interval_ms
                )));
            }
            if let KindConfig::Local(local) = &p.kind {
                let key = self.store.secret_key_file.clone().unwrap_or_else(|| {
                    let mut name = self.store.path.as_os_str().to_owned();
                    name.push(".key");
                    PathBuf::from(name)
                });
                let database = self.store.url.is_none().then_some(&self.store.path);
                for (what, path) in database
                    .map(|d| ("the database", d))
                    .into_iter()
                    .chain([("the secret key file", &key)])
                {
                    if local.exposes(path) {
                        return Err(ConfigError(format!(
                            "providers.{name}: {what} {} lies under one of read_paths, where every local job could read it",
                            path.display()
                        )));
                    }
                }
                if !self.listen.ip().is_loopback() && !local.allow_non_loopback {
                    return Err(ConfigError(format!(
                        "providers.{name}: the local provider runs jobs as the gateway's own user, \
                         able to read its store, config and tokens; it is only allowed on a loopback \
                         address, not {}, unless providers.{name}.allow_non_loopback = true",
                        self.listen
                    )));
                }
            }
            let checked: Result<(), String> = match &p.kind {
                #[cfg(feature = "ecs")]
                KindConfig::Ecs(c) => c.check(),
                #[cfg(feature = "kubernetes")]
                KindConfig::Kubernetes(c) => c.check(),
                #[cfg(feature = "aci")]
                KindConfig::Aci(c) => c.check(),
                #[cfg(feature = "aca")]
                KindConfig::Aca(c) => c.check(),
                #[cfg(feature = "cloudrun")]
                KindConfig::Cloudrun(c) => c.check(),
                _ => Ok(()),
            };
            checked.map_err(|e| ConfigError(format!("providers.{name}.{e}")))?;
        }
        let h = &self.http;
        if h.header_timeout_seconds == 0
            || h.body_timeout_seconds == 0
            || h.idle_timeout_seconds == 0
            || h.max_connections == 0
            || h.max_connections_per_address == 0
            || h.max_waiters_per_tenant == 0
        {
            return Err(ConfigError(
                "http.header_timeout_seconds, body_timeout_seconds, idle_timeout_seconds, max_connections, max_connections_per_address and max_waiters_per_tenant must be at least 1".into(),
            ));
        }
        if self.store.url.is_some()
            && self.store.secret_key.is_none()
            && self.store.secret_key_file.is_none()
        {
            return Err(ConfigError(
                "store.url: replicas on PostgreSQL must share the key that seals secret_env: set store.secret_key (OFFLOAD_STORE__SECRET_KEY) or store.secret_key_file".into(),
            ));
        }
        if self.store.lease_seconds < 3 {
            return Err(ConfigError("store.lease_seconds must be at least 3".into()));
        }
        let s = &self.store;
        for (key, value) in [
            ("statement_timeout_seconds", s.statement_timeout_seconds),
            ("lock_timeout_seconds", s.lock_timeout_seconds),
            ("idle_in_transaction_timeout_seconds", s.idle_in_transaction_timeout_seconds),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("store.{key} must be at least 1")));
            }
        }
        for (zone, members) in &self.routing.zones {
            for name in members {
                let known = self.providers.iter().any(|(n, p)| {
                    n == name || p.kind.name() == name
                });
                if !known {
                    return Err(ConfigError(format!(
                        "routing.zones.{zone}: {name:?} is neither a configured provider nor a configured kind"
                    )));
                }
            }
        }
        for (tenant, lists) in &self.staging.tenants {
            for (list, prefixes) in [("read", &lists.read), ("write", &lists.write)] {
                for (i, prefix) in prefixes.iter().enumerate() {
                    if let Some(why) = crate::staging::prefix_problem(prefix) {
                        return Err(ConfigError(format!(
                            "staging.tenants.{tenant}.{list}[{i}]: {why}"
                        )));
                    }
                }
            }
        }
        if self.tes.anonymous_tenant.is_some() && !self.listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "tes.anonymous_tenant lets any client act for a tenant without a token; it is only allowed on a loopback address, not {}",
                self.listen
            )));
        }
        if self.store.retention_days == Some(0) {
            return Err(ConfigError(
                "store.retention_days must be at least 1 (leave it out to keep every job)".into(),
            ));
        }
        let p = &self.prices;
        if (p.refresh_at_start || p.refresh_every_hours > 0) && p.file.is_none() {
            return Err(ConfigError(
                "prices.refresh_at_start and prices.refresh_every_hours need prices.file, where the figures read are kept".into(),
            ));
        }
        for (key, url) in [
            ("azure_url", &p.azure_url),
            ("aws_url", &p.aws_url),
            ("google_url", &p.google_url),
        ] {
            let parsed = reqwest::Url::parse(url).map_err(|e| ConfigError(format!("prices.{key}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError(format!("prices.{key}: {url} is not an http(s) URL")));
            }
        }
        if self.engine.max_attempts == 0 || self.engine.reconcile_concurrency == 0 {
            return Err(ConfigError(
                "engine.max_attempts and engine.reconcile_concurrency must be at least 1".into(),
            ));
        }
        if !(1..=limits::EXPECTED_DURATION_SECONDS).contains(&self.routing.default_duration_seconds)
        {
            return Err(ConfigError(format!(
                "routing.default_duration_seconds must be from 1 to {}",
                limits::EXPECTED_DURATION_SECONDS
            )));
        }
        if let Some(name) = &self.routing.reference_provider {
            if !self.providers.contains_key(name) {
                return Err(ConfigError(format!(
                    "routing.reference_provider: {name:?} is not a configured provider"
                )));
            }
        }
        Ok(())
    }

    /// The bearer tokens accepted at start: `auth.tokens`, `auth.tokens_file`'s, or with
    /// neither the dev token (an admin's: it is only accepted on loopback).
    pub fn tokens(&self) -> Result<Vec<TokenConfig>, ConfigError> {
        match &self.auth.tokens_file {
            Some(path) => AuthConfig::read_tokens_file(path),
            None if self.auth.tokens.is_empty() => Ok(vec![TokenConfig {
                token: DEV_TOKEN.into(),
                tenant: DEV_TENANT.into(),
                admin: true,
            }]),
            None => Ok(self.auth.tokens.clone()),
        }
    }

    /// Whether the rest of the configuration allows these tokens, at start and whenever
    /// `auth.tokens_file` is read again: a `local` provider runs one tenant's jobs unless
    /// it allows several.
    pub fn check_tokens(&self, tokens: &[TokenConfig]) -> Result<(), ConfigError> {
        let tenants: std::collections::BTreeSet<&str> =
            tokens.iter().map(|t| t.tenant.as_str()).collect();
        for (name, p) in &self.providers {
            if let KindConfig::Local(local) = &p.kind {
                if tenants.len() > 1 && !local.allow_several_tenants {
                    return Err(ConfigError(format!(
                        "providers.{name}: the local provider runs every tenant's jobs on this host, \
                         as the gateway's user, kept apart only by its sandbox; with {} tenants \
                         configured it is refused unless providers.{name}.allow_several_tenants = true",
                        tenants.len()
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_holds_the_secrets_list_or_a_document_and_its_mistakes_name_the_key() {
        let path = Path::new("/run/tokens");
        let parse = |text: &str| AuthConfig::parse_tokens_file(path, text.as_bytes());
        let secret = "# rotated 2026-12-07\n[{token = \"tenant-a-token-0123456789\", tenant = \"a\"},\n {token = \"tenant-b-token-0123456789\", tenant = \"b\"}]\n";
        let tokens = parse(secret).unwrap();
        assert_eq!(
            tokens.iter().map(|t| t.tenant.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let document = "[[tokens]]\ntoken = \"tenant-a-token-0123456789\"\ntenant = \"a\"\n";
        assert_eq!(parse(document).unwrap().len(), 1);

        let short = parse("[{token = \"short\", tenant = \"a\"}]").unwrap_err().0;
        assert!(short.contains("/run/tokens") && short.contains("tokens[0].token"), "{short}");
        assert!(!short.contains("short\""), "the token reached the error: {short}");
        let missing = parse("[{token = \"tenant-a-token-0123456789\"}]").unwrap_err().0;
        assert!(missing.contains("tenant"), "{missing}");
        let unknown = parse("[{token = \"tenant-a-token-0123456789\", tenant = \"a\", tennant = \"b\"}]")
            .unwrap_err()
            .0;
        assert!(unknown.contains("tennant"), "{unknown}");
        assert!(parse("[{token = ").unwrap_err().0.contains("/run/tokens"));
        assert!(parse("").unwrap_err().0.contains("tokens"));
        assert!(parse("[]").unwrap_err().0.contains("holds no token"));
        let twice = parse("[{token = \"tenant-a-token-0123456789\", tenant = \"a\"}, {token = \"tenant-a-token-0123456789\", tenant = \"b\"}]")
            .unwrap_err()
            .0;
        assert!(twice.contains("tokens[1].token is the same as tokens[0].token"), "{twice}");
    }

    #[test]
    fn tokens_and_a_tokens_file_are_refused_together() {
        let e = Config::from_toml(
            "[auth]\ntokens_file = \"/nonexistent\"\n[[auth.tokens]]\ntoken = \"tenant-a-token-0123456789\"\ntenant = \"a\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("auth.tokens_file"), "{e}");
        let e = Config::from_toml("[auth]\ntokens_file = \"/nonexistent/tokens\"\n").unwrap_err();
        assert!(e.to_string().contains("auth.tokens_file /nonexistent/tokens"), "{e}");
    }

    #[test]
    fn defaults_give_a_local_provider_and_the_dev_token() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen, default_listen());
        assert!(matches!(c.providers["local"].kind, KindConfig::Local(_)));
        let tokens = c.tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!((tokens[0].token.as_str(), tokens[0].tenant.as_str()), (DEV_TOKEN, DEV_TENANT));
        assert!(tokens[0].admin, "the dev token, on loopback only, is an admin's");
    }

    #[test]
    fn named_instances_with_shared_and_kind_settings() {
        let c = Config::from_toml(
            r#"
            [providers.fast]
            kind = "sim"
            max_concurrency = 4
            run_ms = 10
            price = { vcpu_hour = 0.5 }
            [providers.box]
            kind = "local"
            grace_seconds = 2
            "#,
        )
        .unwrap();
        assert_eq!(c.providers["fast"].max_concurrency, 4);
        assert!(matches!(&c.providers["fast"].kind, KindConfig::Sim(s) if s.run_ms == 10));
        assert!(matches!(&c.providers["box"].kind, KindConfig::Local(l) if l.grace_seconds == 2));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| Config::from_toml(t).unwrap_err().to_string();
        assert!(err("[providers.x]\nkind = \"sim\"\nrun_mss = 1").contains("run_mss"));
        assert!(err("[providers.x]\nkind = \"nope\"").contains("nope"));
        assert!(err("listen = \"0.0.0.0:8080\"").contains("auth.tokens"));
        assert!(err("[[auth.tokens]]\ntoken = \"short\"\ntenant = \"a\"")
            .contains("auth.tokens[0].token"));
        assert!(err("[providers.auto]\nkind = \"local\"").contains("providers.auto"));
        assert!(
            err("[providers.x]\nkind = \"local\"\nmax_concurrency = 0").contains("max_concurrency")
        );
        let remote = "listen = \"0.0.0.0:8080\"\n[[auth.tokens]]\ntoken = \"0123456789abcdef\"\ntenant = \"t\"\n";
        assert!(
            err(remote).contains("allow_non_loopback"),
            "the default local provider on 0.0.0.0"
        );
        let allowed =
            format!("{remote}[providers.local]\nkind = \"local\"\nallow_non_loopback = true\n");
        assert!(Config::from_toml(&allowed).is_ok());
        let two = "[[auth.tokens]]\ntoken = \"0123456789abcdef\"\ntenant = \"a\"\n[[auth.tokens]]\ntoken = \"fedcba9876543210\"\ntenant = \"b\"\n";
        assert!(
            err(two).contains("allow_several_tenants"),
            "the default local provider with two tenants"
        );
        let exposed = "[store]\npath = \"/etc/offload.db\"\n";
        assert!(err(exposed).contains("the database /etc/offload.db"));
        assert!(err("[routing]\ndefault_duration_seconds = 0").contains("default_duration_seconds"));
        assert!(err("[routing]\ndefault_spot = \"sometimes\"").contains("sometimes"));
        assert!(err("[store]\nurl = \"postgres://db/offload\"").contains("store.secret_key"));
        assert!(err("[store]\nlease_seconds = 1").contains("lease_seconds"));
    }

    #[test]
    fn a_database_password_never_shows() {
        let store = StoreConfig {
            url: Some("postgres://offload:hunter2@db:5432/offload".into()),
            secret_key: Some("k".into()),
            ..StoreConfig::default()
        };
        let shown = format!("{store:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("\"k\""), "{shown}");
        assert!(shown.contains("postgres://offload:<redacted>@db:5432/offload"), "{shown}");
        assert_eq!(redact_password("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact_password("postgres://u@db/x"), "postgres://u@db/x");
    }

    /// Every form a PostgreSQL connection string can carry a password in: the URL's
    /// userinfo (a password holding '@' too), its query parameters, and the `key=value`
    /// form, quoted or not.
    #[test]
    fn every_form_of_a_database_password_is_redacted() {
        let cases = [
            ("postgres://u:hunter2@db/x", "postgres://u:<redacted>@db/x"),
            ("postgres://u:hun@ter2@db/x", "postgres://u:<redacted>@db/x"),
            (
                "postgres://u@db/x?sslmode=require&password=hunter2",
                "postgres://u@db/x?sslmode=require&password=<redacted>",
            ),
            (
                "postgresql://db/x?PASSWORD=hunter2&user=u",
                "postgresql://db/x?PASSWORD=<redacted>&user=u",
            ),
            (
                "postgres://u:hunter2@db/x?sslpassword=hunter2",
                "postgres://u:<redacted>@db/x?sslpassword=<redacted>",
            ),
            (
                "host=db user=u password=hunter2 dbname=x",
                "host=db user=u password=<redacted> dbname=x",
            ),
            (
                "host=db password = hunter2",
                "host=db password=<redacted>",
            ),
            (
                "host=db password='hunter2 with \\' quote' dbname=x",
                "host=db password=<redacted> dbname=x",
            ),
            ("host=db user=u", "host=db user=u"),
        ];
        for (url, shown) in cases {
            let redacted = redact_password(url);
            assert_eq!(redacted, shown, "{url}");
            assert!(!redacted.contains("hunter2"), "{url}");
        }
    }

    #[test]
    fn routing_defaults_and_overrides() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.routing.default_spot, SpotPolicy::Never);
        assert_eq!(c.routing.default_duration_seconds, 600);
        let c = Config::from_toml(
            "[routing]\ndefault_spot = \"preferred\"\ndefault_duration_seconds = 60",
        )
        .unwrap();
        assert_eq!(c.routing.default_spot, SpotPolicy::Preferred);
        assert_eq!(c.routing.default_duration_seconds, 60);
    }

    #[test]
    fn the_poll_bound_defaults_by_kind_and_never_below_the_interval() {
        let bound = |t: &str| Config::from_toml(t).unwrap().providers["x"].max_poll_interval_ms();
        assert_eq!(bound("[providers.x]\nkind = \"sim\"\npoll_interval_ms = 100"), 800);
        assert_eq!(
            bound("[providers.x]\nkind = \"sim\"\nmax_poll_interval_ms = 9000"),
            9000
        );
        #[cfg(feature = "ecs")]
        {
            let ecs = "[providers.x]\nkind = \"ecs\"\ncluster = \"c\"\nsubnets = [\"s\"]\n";
            assert_eq!(bound(ecs), offload_ecs::MAX_POLL_INTERVAL_MS);
            assert_eq!(bound(&format!("{ecs}poll_interval_ms = 20000")), 20000);
            assert_eq!(bound(&format!("{ecs}max_poll_interval_ms = 2000")), 2000);
        }
        #[cfg(feature = "aci")]
        assert_eq!(
            bound("[providers.x]\nkind = \"aci\"\nsubscription_id = \"s\"\nresource_group = \"g\"\nlocation = \"l\""),
            offload_aci::MAX_POLL_INTERVAL_MS
        );
        #[cfg(feature = "aca")]
        assert_eq!(
            bound("[providers.x]\nkind = \"aca\"\nsubscription_id = \"s\"\nresource_group = \"g\"\nlocation = \"l\"\nenvironment_id = \"e\""),
            offload_aca::MAX_POLL_INTERVAL_MS
        );
    }

    #[test]
    fn a_bad_prices_section_is_refused_naming_the_key_and_the_api_key_never_shows() {
        let err = |text: &str| Config::from_toml(text).err().unwrap().to_string();
        let e = err("[prices]\nrefresh_every_hours = 24");
        assert!(e.contains("prices.refresh_every_hours") && e.contains("prices.file"), "{e}");
        let e = err("[prices]\nfile = \"p.json\"\nazure_url = \"ftp://prices.example\"");
        assert!(e.contains("prices.azure_url: ftp:"), "{e}");
        let e = err("[prices]\ngoogle_url = \"not a url\"");
        assert!(e.contains("prices.google_url: "), "{e}");
        let e = err("[prices]\nrefresh_daily = true");
        assert!(e.contains("refresh_daily"), "{e}");
        let c = Config::from_toml(
            "[prices]\nfile = \"p.json\"\nrefresh_at_start = true\ngoogle_api_key = \"AIza-secret\"",
        )
        .unwrap();
        assert_eq!(c.prices.google_api_key.as_deref(), Some("AIza-secret"));
        assert!(!format!("{c:?}").contains("AIza-secret"));
        assert!(!serde_json::to_string(&c.prices).unwrap().contains("AIza-secret"));
    }
}

//! The command line: `offload serve` runs the gateway, `config check`, `migrate`, `store
//! copy` and `prices refresh` work on its configuration, store and price file; every other
//! command is a client of a running
//! gateway at `--url` (`OFFLOAD_URL`) with `--token` (`OFFLOAD_TOKEN`), which only those
//! commands take.

mod client;
mod terminal;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, DEV_TOKEN};
use crate::model::{Job, JobSpec, ResourceSpec};
use client::Client;

#[derive(Parser)]
#[command(
    name = "offload",
    version,
    about = "Run container jobs on serverless runtimes from schedulers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the commands that talk to a gateway find it: only they take these.
#[derive(Args)]
struct Gateway {
    /// The gateway to talk to.
    #[arg(long, env = "OFFLOAD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The bearer token (the dev token of a gateway with no tokens configured by default).
    #[arg(long, env = "OFFLOAD_TOKEN", default_value = DEV_TOKEN, hide_default_value = true, hide_env_values = true)]
    token: String,
}

impl Gateway {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.url, &self.token)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (defaults: 127.0.0.1:8080, ./offload.db, the local provider).
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Submit a job, stream its logs and exit with its exit code, like `docker run`.
    Run {
        #[command(flatten)]
        gateway: Gateway,
        /// A provider's name, or `auto` (the gateway routes the job).
        #[arg(long, default_value = "auto")]
        provider: String,
        /// Whether spot providers may run the job (the job's `routing.spot`); unset: the
        /// gateway's `routing.default_spot`.
        #[arg(long, value_enum)]
        spot: Option<crate::model::SpotPolicy>,
        /// What `auto` routing weighs first (the job's `routing.prefer`).
        #[arg(long, value_enum)]
        prefer: Option<crate::model::Prefer>,
        #[arg(long, default_value_t = 0.25)]
        cpu: f64,
        #[arg(long, default_value = "512Mi")]
        memory: String,
        /// KEY=VALUE, repeatable.
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// KEY=VALUE, repeatable: the job's labels (`dag_id=etl`), which cost reports
        /// group by.
        #[arg(long = "label", short = 'l')]
        label: Vec<String>,
        #[arg(long)]
        timeout: Option<u64>,
        image: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Submit a job spec (JSON) from a file, or `-` for standard input.
    Submit {
        #[command(flatten)]
        gateway: Gateway,
        file: PathBuf,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Where a job spec (JSON, from a file or `-`) would run and what it would cost
    /// there, best first, without submitting it.
    Quote {
        #[command(flatten)]
        gateway: Gateway,
        file: PathBuf,
        /// Print the gateway's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What the jobs that finished in a period cost, by provider or by a label.
    Costs {
        #[command(flatten)]
        gateway: Gateway,
        /// `provider`, or `label:KEY` (`label:dag_id`).
        #[arg(long, default_value = "provider")]
        group_by: String,
        /// RFC 3339; default: 7 days ago.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339; default: now.
        #[arg(long)]
        until: Option<String>,
        /// Print the gateway's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a job.
    Get {
        #[command(flatten)]
        gateway: Gateway,
        id: String,
    },
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        gateway: Gateway,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        /// Label selector: `dag_id=etl,env=prod`.
        #[arg(long, short = 'l')]
        labels: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Print a job's log.
    Logs {
        #[command(flatten)]
        gateway: Gateway,
        id: String,
        #[arg(long, short)]
        follow: bool,
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        gateway: Gateway,
        id: String,
    },
    /// Show the configured providers, their health, load and calls.
    Providers {
        #[command(flatten)]
        gateway: Gateway,
        /// Print the gateway's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the OpenAPI document (YAML): `/v1`'s, or with `--tes` the TES API's.
    Openapi {
        #[arg(long)]
        tes: bool,
    },
    /// Apply the PostgreSQL schema versions the database at `store.url` (from the config
    /// or OFFLOAD_STORE__URL) lacks; the gateway also does at start, under the same lock.
    Migrate {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Store tools.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// The filer step of a job with inputs or outputs (`stage-in` or `stage-out`), which a
    /// provider runs with the plan in OFFLOAD_FILER_PLAN; not for people.
    #[command(hide = true)]
    Filer {
        #[arg(value_parser = ["stage-in", "stage-out"])]
        verb: String,
    },
    /// Price tools.
    Prices {
        #[command(subcommand)]
        command: PricesCommand,
    },
}

#[derive(Subcommand)]
enum PricesCommand {
    /// Read the configured providers' prices from their clouds' public catalogs into
    /// `prices.file`, which the gateway's sheets use over their defaults; a refresh that
    /// fails anywhere keeps the file as it was and exits 1.
    Refresh {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy a SQLite store's jobs, events and idempotency keys into an empty PostgreSQL
    /// database (migrated first). Stop the gateway first; the gateways on PostgreSQL need
    /// the SQLite gateway's secret key (`store.secret_key`, or the key file `offload.db.key`).
    Copy {
        /// The SQLite database file.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL URL (postgres://user:password@host:port/database).
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration, build every provider and run its health check, creating
    /// nothing (no store, no key file, no work folder).
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of offload.toml (draft 7), from which editors (Taplo, Even
    /// Better TOML) complete and check a config file that names it in a `#:schema` line.
    Schema,
    /// Print docs/configuration.md, the reference of every key, made from the schema.
    Reference,
}

/// Runs the command line; returns the process exit code.
pub async fn main() -> anyhow::Result<i32> {
    let command = Cli::parse().command;
    if !matches!(command, Command::Serve { .. }) {
        crate::logging::init(&Default::default(), &Default::default())?;
    }
    match command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            crate::logging::init(&config.log, &config.telemetry)?;
            let served = match crate::server::Server::start(config).await {
                Ok(server) => server.run_until_signal().await,
                Err(e) => Err(e),
            };
            crate::telemetry::flush();
            served?;
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => return config_check(config).await,
        Command::Config {
            command: ConfigCommand::Schema,
        } => print!("{}", crate::config::schema::schema_json()),
        Command::Config {
            command: ConfigCommand::Reference,
        } => print!("{}", crate::config::reference::page()),
        Command::Openapi { tes: false } => print!("{}", crate::api::doc::openapi_yaml()),
        Command::Openapi { tes: true } => print!("{}", crate::tes::doc::openapi_yaml()),
        Command::Filer { verb } => return Ok(crate::staging::filer::main(&verb).await),
        Command::Store {
            command: StoreCommand::Copy { from, to },
        } => {
            let c = crate::store::copy::copy_sqlite_to_postgres(&from, &to).await?;
            println!(
                "copied {} jobs, {} events and {} idempotency keys",
                c.jobs, c.events, c.idempotency_keys
            );
        }
        Command::Prices {
            command: PricesCommand::Refresh { config },
        } => prices_refresh(&Config::load(config.as_deref())?).await?,
        Command::Migrate { config } => {
            let url = Config::load_store(config.as_deref())?
                .url
                .context("store.url is not set: only a PostgreSQL store has migrations to run")?;
            let applied = crate::store::postgres::migrate(&url).await?;
            match applied.is_empty() {
                true => println!("the schema is up to date"),
                false => applied.iter().for_each(|m| println!("applied {m}")),
            }
        }
        Command::Run {
            gateway,
            provider,
            spot,
            prefer,
            cpu,
            memory,
            env,
            label,
            timeout,
            image,
            command,
        } => {
            let spec = JobSpec {
                name: None,
                image,
                command,
                args: vec![],
                env: pairs("--env", &env)?,
                secret_env: BTreeMap::new(),
                resources: ResourceSpec {
                    cpu,
                    memory,
                    ..ResourceSpec::default()
                },
                timeout_seconds: timeout,
                provider,
                routing: (spot.is_some() || prefer.is_some()).then(|| crate::model::RoutingSpec {
                    spot,
                    prefer,
                    ..Default::default()
                }),
                labels: pairs("--label", &label)?,
                priority: 0,
                provider_options: BTreeMap::new(),
                description: None,
                steps: None,
            };
            return run(&gateway.client()?, &spec).await;
        }
        Command::Submit {
            gateway,
            file,
            idempotency_key,
        } => {
            let spec = read_spec(&file)?;
            print_json(&gateway.client()?.submit(&spec, idempotency_key.as_deref()).await?)?;
        }
        Command::Quote {
            gateway,
            file,
            json,
        } => {
            let quote = gateway.client()?.post_json("/v1/quotes", &read_spec(&file)?).await?;
            match json {
                true => print_json(&quote)?,
                false => print!("{}", on_stdout(&quote_table(&quote))),
            }
        }
        Command::Costs {
            gateway,
            group_by,
            since,
            until,
            json,
        } => {
            let mut query = vec![("group_by", group_by)];
            query.extend(since.map(|s| ("since", s)));
            query.extend(until.map(|u| ("until", u)));
            let report = gateway.client()?.get_json("/v1/costs", &query).await?;
            match json {
                true => print_json(&report)?,
                false => print!("{}", on_stdout(&cost_table(&report))),
            }
        }
        Command::Get { gateway, id } => print_json(&gateway.client()?.job(&id).await?)?,
        Command::List {
            gateway,
            state,
            provider,
            labels,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(state.map(|s| ("state", s)));
            query.extend(provider.map(|p| ("provider", p)));
            query.extend(labels.map(|l| ("labels", l)));
            let page: serde_json::Value = gateway.client()?.get_json("/v1/jobs", &query).await?;
            print!("{}", on_stdout(&job_table(&page)));
        }
        Command::Logs {
            gateway,
            id,
            follow,
            tail,
        } => {
            let tty = std::io::stdout().is_terminal();
            gateway
                .client()?
                .stream_logs(&id, follow, tail, std::io::stdout(), tty)
                .await?;
        }
        Command::Cancel { gateway, id } => print_json(&gateway.client()?.cancel(&id).await?)?,
        Command::Providers { gateway, json } => {
            let providers = gateway.client()?.get_json("/v1/providers", &[]).await?;
            match json {
                true => print_json(&providers)?,
                false => print!("{}", on_stdout(&provider_table(&providers))),
            }
        }
    }
    Ok(0)
}

/// Text for standard output, escaped if that is a terminal (see `terminal`).
fn on_stdout(text: &str) -> std::borrow::Cow<'_, str> {
    terminal::shown(text, std::io::stdout().is_terminal())
}

/// Text for standard error, escaped if that is a terminal: errors quote the gateway's
/// problems, which may quote a tenant's text.
pub fn on_stderr(text: &str) -> std::borrow::Cow<'_, str> {
    terminal::shown(text, std::io::stderr().is_terminal())
}

/// `KEY=VALUE` arguments of `flag` as a map.
fn pairs(flag: &str, args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    args.iter()
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("{flag} {pair:?} is not KEY=VALUE"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// A job spec from a file, or from standard input for `-`.
fn read_spec(file: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).context("the spec is not JSON")
}

/// `POST /v1/quotes`' answer as a table, best first, then the excluded with their reasons.
fn quote_table(quote: &serde_json::Value) -> String {
    let mut out = format!(
        "expected duration: {} s (from {})\n{:<24} {:<12} {:<5} {:>12} {:>10} {:>14}\n",
        quote["expected_duration_seconds"],
        quote["duration_source"].as_str().unwrap_or("?"),
        "PROVIDER",
        "KIND",
        "SPOT",
        "USD/HOUR",
        "BILLED S",
        "ESTIMATED USD"
    );
    for c in quote["candidates"].as_array().into_iter().flatten() {
        out += &format!(
            "{:<24} {:<12} {:<5} {:>12.6} {:>10} {:>14.6}\n",
            c["provider"].as_str().unwrap_or(""),
            c["kind"].as_str().unwrap_or(""),
            if c["spot"] == true { "yes" } else { "no" },
            c["hourly_usd"].as_f64().unwrap_or(0.0),
            c["billed_seconds"].as_u64().unwrap_or(0),
            c["estimated_usd"].as_f64().unwrap_or(0.0),
        );
    }
    for e in quote["excluded"].as_array().into_iter().flatten() {
        out += &format!(
            "not {}: {}\n",
            e["provider"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or("")
        );
    }
    out
}

/// `GET /v1/jobs`' page as a table, newest first.
fn job_table(page: &serde_json::Value) -> String {
    let mut out = format!("{:<36}  {:<10} {:<10} {}\n", "ID", "STATE", "PROVIDER", "NAME");
    for job in page["jobs"].as_array().into_iter().flatten() {
        out += &format!(
            "{:<36}  {:<10} {:<10} {}\n",
            job["id"].as_str().unwrap_or(""),
            job["state"].as_str().unwrap_or(""),
            job["provider"].as_str().unwrap_or("-"),
            job["spec"]["name"]
                .as_str()
                .or(job["spec"]["image"].as_str())
                .unwrap_or("")
        );
    }
    out
}

/// `GET /v1/providers`' answer as a table of health, load and calls; why a provider is
/// unhealthy, which can be long, on a line of its own under its row.
fn provider_table(providers: &serde_json::Value) -> String {
    let row = |cells: [&str; 8]| {
        format!(
            "{:<24} {:<12} {:<6} {:>7} {:>8} {:>6} {:>8} {:>8}\n",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
        )
    };
    let mut out = row(["NAME", "KIND", "HEALTH", "ACTIVE", "WAITING", "MAX", "CALLS", "ERRORS"]);
    for p in providers.as_array().into_iter().flatten() {
        let n = |key: &str| p[key].as_u64().unwrap_or(0).to_string();
        let why = p["health_error"].as_str();
        out += &row([
            p["name"].as_str().unwrap_or(""),
            p["kind"].as_str().unwrap_or(""),
            if why.is_none() { "ok" } else { "FAIL" },
            &n("active"),
            &n("waiting"),
            &n("max_concurrency"),
            &n("calls"),
            &n("errors"),
        ]);
        if let Some(why) = why {
            out += &format!("  {why}\n");
        }
    }
    out
}

/// `GET /v1/costs`' answer as a table with its total.
fn cost_table(report: &serde_json::Value) -> String {
    let mut out = format!(
        "{:<32} {:>8} {:>14} {:>14}\n",
        "GROUP", "JOBS", "USD", "ESTIMATED USD"
    );
    for g in report["groups"].as_array().into_iter().flatten() {
        let key = g["key"].as_str().unwrap_or("");
        out += &format!(
            "{:<32} {:>8} {:>14.6} {:>14.6}\n",
            if key.is_empty() { "(none)" } else { key },
            g["jobs"].as_u64().unwrap_or(0),
            g["usd"].as_f64().unwrap_or(0.0),
            g["estimated_usd"].as_f64().unwrap_or(0.0),
        );
    }
    out += &format!(
        "{:<32} {:>8} {:>14.6}\n",
        "TOTAL",
        "",
        report["total_usd"].as_f64().unwrap_or(0.0)
    );
    out
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Loads the configuration, builds every provider and runs its health check, making
/// nothing where the gateway would: the store is a throwaway one with a throwaway key (the
/// configured key is checked, not made), and the local providers work in a throwaway folder.
async fn config_check(path: Option<PathBuf>) -> anyhow::Result<i32> {
    let mut config = Config::load(path.as_deref())?;
    config.store.check_secret_key()?;
    let dir = std::env::temp_dir().join(format!("offload-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (name, p) in config.providers.iter_mut() {
        if let crate::config::KindConfig::Local(local) = &mut p.kind {
            local.workdir = dir.join(name);
        }
    }
    let checked = check_providers(&config, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let failed = checked?;
    Ok(if failed { 1 } else { 0 })
}

/// Prints each provider's health check; whether any failed.
async fn check_providers(config: &Config, dir: &std::path::Path) -> anyhow::Result<bool> {
    let store = std::sync::Arc::new(crate::store::sqlite::SqliteStore::open(
        &dir.join("check.db"),
        false,
        crate::store::secrets::SecretBox::random(),
    )?);
    let engine = crate::engine::Engine::new(config, store)
        .await
        .map_err(anyhow::Error::msg)?;
    engine.check_providers().await;
    let mut failed = false;
    for p in engine.providers() {
        match &p.health_error {
            None => println!("ok    {} ({})", p.name, p.kind),
            Some(e) => {
                failed = true;
                println!("FAIL  {} ({}): {e}", p.name, p.kind);
            }
        }
    }
    Ok(failed)
}

/// `offload prices refresh`: reads the catalogs, prints each figure read and what was not
/// read, and writes the price file; an error (the file kept as it was) otherwise.
async fn prices_refresh(config: &Config) -> anyhow::Result<()> {
    let file = config.prices.file.as_deref().map(|f| f.display().to_string());
    let refreshed = crate::prices::refresh(config).await.map_err(|e| match &file {
        Some(file) => anyhow::anyhow!("the price refresh failed, {file} is kept as it was: {e}"),
        None => anyhow::anyhow!("{e}"),
    })?;
    print!("{}", on_stdout(&figure_table(&refreshed.figures)));
    for note in &refreshed.notes {
        eprintln!("offload: {}", on_stderr(note));
    }
    println!(
        "wrote {} figures to {}",
        refreshed.figures.all().count(),
        file.unwrap_or_default()
    );
    Ok(())
}

/// The figures of a price file as a table.
fn figure_table(figures: &offload_provider::figures::ReadPrices) -> String {
    let mut out = format!(
        "{:<11} {:<16} {:<26} {:>12}  {:<21} {}\n",
        "KIND", "REGION", "FIGURE", "USD/HOUR", "SOURCE", "SKU"
    );
    for f in figures.all() {
        out += &format!(
            "{:<11} {:<16} {:<26} {:>12.6}  {:<21} {}\n",
            f.kind, f.region, f.figure, f.usd_per_hour, f.source, f.sku
        );
    }
    out
}

/// Where an ended job ran and what it cost.
fn where_and_cost(job: &Job) -> String {
    match &job.cost {
        Some(c) => {
            let usd = c.usd.unwrap_or(0.0);
            let saved = match c.reference.as_ref().and_then(|r| Some((&r.provider, r.usd?))) {
                Some((at, reference)) => format!(
                    "; {reference:.6} USD at reference {at}, saved {:.6} USD",
                    reference - usd
                ),
                None => String::new(),
            };
            format!(
                "ran on {}: {usd:.6} USD (estimated {:.6} USD, billed {} s){saved}",
                c.provider,
                c.estimated_usd,
                c.billed_seconds.unwrap_or(0)
            )
        }
        None => "never reached a provider: no cost".into(),
    }
}

/// Submits, waits for the start (with a spinner on a terminal), streams the log, and
/// returns the job's exit code, saying at the end where it ran and what it cost.
async fn run(client: &Client, spec: &JobSpec) -> anyhow::Result<i32> {
    let job: Job =
        serde_json::from_value(client.submit(&serde_json::to_value(spec)?, None).await?)?;
    let id = job.id.to_string();
    let spinner = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let mut job = job;
    while matches!(
        job.state,
        crate::model::JobState::Queued | crate::model::JobState::Starting
    ) {
        if let Some(bar) = &spinner {
            bar.set_message(format!("{id}: {}", job.state.as_str()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        job = serde_json::from_value(client.job(&id).await?)?;
    }
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    client
        .stream_logs(&id, true, None, std::io::stdout(), std::io::stdout().is_terminal())
        .await?;
    loop {
        job = serde_json::from_value(client.job(&id).await?)?;
        if job.terminal {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("offload: job {id} {}", where_and_cost(&job));
    match (job.state, job.exit_code) {
        (crate::model::JobState::Succeeded, _) => Ok(0),
        (state, code) => {
            eprintln!(
                "offload: job {id} {}: {}",
                state.as_str(),
                on_stderr(job.reason.as_deref().unwrap_or("no reason given"))
            );
            Ok(code.filter(|c| *c != 0).unwrap_or(1))
        }
    }
}

//! The gateway's own log, to standard error: text for a person (coloured only on a
//! terminal), or JSON lines for a log pipeline (`log.format = "json"`), filtered by
//! `OFFLOAD_LOG`; beside it, when configured, the traces ([`crate::telemetry`]). Started
//! once, by `offload serve` after it has read its configuration, by the other commands
//! at once.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// `[log]`: how the gateway writes its log. Which lines are written is `OFFLOAD_LOG`'s
/// (an `EnvFilter` directive such as `info` or `info,offload::api=debug`; `info` unset).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text`: a line for a person, coloured on a terminal only. `json`: one JSON object
    /// per line with `time` (RFC 3339), `level`, `severity` (Cloud Logging's name of the
    /// level), `target`, `message`, `fields` (the line's and its spans' other fields), and
    /// `request_id`, `job_id` and `provider` where they apply.
    pub format: LogFormat,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Starts the log in `config`'s format, and the traces `telemetry` asks for (within the
/// Tokio runtime). Once per process; a second call changes nothing.
pub fn init(config: &LogConfig, telemetry: &crate::telemetry::TelemetryConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("OFFLOAD_LOG").unwrap_or_else(|_| "info".into());
    let mut layers = vec![output(config.format).with_filter(filter).boxed()];
    layers.extend(crate::telemetry::layer(telemetry)?);
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(())
}

fn output(format: LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => layer
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .boxed(),
    }
}

/// A JSON object per line. Spans' fields (a request's `request_id`) are kept by
/// [`JsonFields`] as JSON text in each span, read back here.
struct JsonLines;

/// The fields lifted from `fields` to the top of a line, and their names there.
const LIFTED: [(&str, &str); 3] = [
    ("request_id", "request_id"),
    ("job", "job_id"),
    ("provider", "provider"),
];

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(formatted) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(map)) = serde_json::from_str(&formatted.fields) {
                    // `otel.*` name a span for the traces, not the line.
                    fields.extend(map.into_iter().filter(|(k, _)| !k.starts_with("otel.")));
                }
            }
        }
        event.record(&mut Fields(&mut fields));
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "time".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("severity".into(), severity(meta.level()).into());
        line.insert("target".into(), meta.target().into());
        line.insert(
            "message".into(),
            fields.remove("message").unwrap_or_else(|| "".into()),
        );
        for (field, name) in LIFTED {
            if let Some(value) = fields.remove(field) {
                line.insert(name.into(), value);
            }
        }
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Cloud Logging's `severity` for a level.
fn severity(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "ERROR",
        tracing::Level::WARN => "WARNING",
        tracing::Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

/// An event's fields as JSON values: numbers and booleans as such, the rest as text.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

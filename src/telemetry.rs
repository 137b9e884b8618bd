//! Traces: with `telemetry.otlp_endpoint` set, the gateway's spans go to an OpenTelemetry
//! collector over OTLP/HTTP (protobuf), so that a slow submit or a slow cloud shows where
//! its time went: a span per request (continuing the caller's W3C `traceparent`), and
//! within it or on its own, spans for the store's commits and batches, each dispatch, and
//! each provider call (provider, call, outcome). Off by default, and then free: the spans
//! below a request's are at `debug`, which nothing else listens to at the default filter.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::{Layer, Registry};

/// `[telemetry]`: where traces go.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// An OpenTelemetry collector's OTLP/HTTP address, as `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// takes it (`http://127.0.0.1:4318`): spans are sent, in batches, as protobuf to its
    /// `/v1/traces`. Unset: no traces.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the spans.
    pub service_name: String,
    /// The share of traces kept among those that start here, 0 to 1. A request that
    /// continues a caller's trace follows the caller's choice (`traceparent`'s flag).
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "offload".into(),
            sample_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    /// The `(key, problem)` of a bad setting.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(endpoint) = &self.otlp_endpoint {
            match reqwest::Url::parse(endpoint) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => return Err(("otlp_endpoint", format!("{:?} is not http or https", url.scheme()))),
                Err(e) => return Err(("otlp_endpoint", format!("{endpoint:?}: {e}"))),
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(("sample_ratio", format!("{} is not between 0 and 1", self.sample_ratio)));
        }
        Ok(())
    }
}

/// The exporter's pipeline, kept to be flushed when the gateway stops.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether traces are being sent: requests then read their caller's `traceparent`.
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// The layer that turns the gateway's spans into OpenTelemetry's, or `None` when no
/// endpoint is set. Must run within the Tokio runtime (its client sends from it).
pub fn layer(config: &TelemetryConfig) -> anyhow::Result<Option<Box<dyn Layer<Registry> + Send + Sync>>> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Client(tokio::runtime::Handle::current(), reqwest::Client::new()))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
        .build();
    let tracer = provider.tracer("offload");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = PROVIDER.set(provider);
    // The gateway's own spans, `debug` ones included, and its lines at `info` and above as
    // their spans' events; not the libraries' (hyper, the cloud SDKs).
    let ours = filter_fn(|meta| {
        meta.target().starts_with("offload")
            && (meta.is_span() || *meta.level() <= tracing::Level::INFO)
    });
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(ours)
            .boxed(),
    ))
}

/// Sends the spans not sent yet; for the end of `offload serve`.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "could not send the last spans");
        }
    }
}

/// The caller's trace, from its request's `traceparent`, made the parent of `span`.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

/// Names the current span in the traces (a request's, for its route, known only once
/// routing has found it, after the span has started).
pub fn name_current_span(name: impl FnOnce() -> String) {
    if enabled() {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        tracing::Span::current().context().span().update_name(name());
    }
}

/// The exporter's HTTP client: the gateway's reqwest, run on the gateway's runtime (the
/// SDK's batch processor sends from a thread of its own, outside any runtime).
#[derive(Debug)]
struct Client(tokio::runtime::Handle, reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: axum::http::Request<bytes::Bytes>,
    ) -> Result<axum::http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.1.clone();
        let request = reqwest::Request::try_from(request)?;
        self.0
            .spawn(async move {
                let response = client.execute(request).await?;
                let mut answer = axum::http::Response::builder().status(response.status().as_u16());
                for (name, value) in response.headers() {
                    answer = answer.header(name.as_str(), value.as_bytes());
                }
                let body = response.bytes().await?;
                Ok::<_, opentelemetry_http::HttpError>(answer.body(body)?)
            })
            .await?
    }
}

//! Google Cloud calls through the official clients (`google-cloud-run-v2`,
//! `google-cloud-logging-v2`, `google-cloud-secretmanager-v1`), which speak HTTP/JSON: the
//! clients, their credentials, and what a Google error means to the engine.
//!
//! Long-running operations (a job's create and delete, an execution's cancel) are sent and
//! not waited for: what they lead to is read back from the job and its execution, as the
//! engine reads every change.

use std::time::Duration;

use google_cloud_auth::credentials::{
    CacheableResource, Credentials, CredentialsProvider, EntityTag,
};
use google_cloud_auth::errors::CredentialsError;
use google_cloud_gax::error::rpc::{Code, StatusDetails};
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_logging_v2::client::LoggingServiceV2;
use google_cloud_run_v2::client::{Executions, Jobs, Tasks};
use google_cloud_secretmanager_v1::client::SecretManagerService;
use offload_provider::{ProviderError, SecretString};

use crate::config::Config;

/// How long a 429 without a Retry-After or a RetryInfo is waited out.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(10);
/// How many 429s in a row a call waits out before the engine is told to back off, and the
/// longest one wait.
const THROTTLED_RETRIES: u32 = 3;
const MAX_THROTTLED_WAIT: Duration = Duration::from_secs(30);

/// A bearer token given in the configuration, for test servers and tokens obtained
/// elsewhere. Sent as it is; the header is marked sensitive so it is never logged.
#[derive(Debug)]
struct FixedToken(SecretString);

impl CredentialsProvider for FixedToken {
    async fn headers(
        &self,
        _: http::Extensions,
    ) -> Result<CacheableResource<http::HeaderMap>, CredentialsError> {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", self.0 .0))
            .map_err(|e| CredentialsError::from_msg(false, format!("access_token: {e}")))?;
        value.set_sensitive(true);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        Ok(CacheableResource::New {
            entity_tag: EntityTag::new(),
            data: headers,
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        None
    }
}

/// The clients this provider calls.
pub struct Clients {
    pub jobs: Jobs,
    pub executions: Executions,
    pub tasks: Tasks,
    pub logging: LoggingServiceV2,
    pub secrets: Option<SecretManagerService>,
}

/// Builds a client of one kind with the configuration's endpoint, credentials and attempt
/// timeout and a short retry policy: the engine retries what is left.
macro_rules! client {
    ($kind:ty, $endpoint:expr, $credentials:expr, $timeout:expr) => {{
        let mut builder = <$kind>::builder()
            .with_endpoint($endpoint)
            .with_attempt_timeout($timeout)
            .with_retry_policy(Aip194Strict.with_attempt_limit(3));
        if let Some(credentials) = $credentials.clone() {
            builder = builder.with_credentials(credentials);
        }
        builder
            .build()
            .await
            .map_err(|e| format!("{}: {e}", stringify!($kind)))?
    }};
}

impl Clients {
    /// Application Default Credentials unless `access_token` is given. ADC finds Workload
    /// Identity on GKE and Cloud Composer, the metadata server, a key file or gcloud's
    /// login; no token is fetched until a call needs one.
    pub async fn new(config: &Config) -> Result<Clients, String> {
        let credentials: Option<Credentials> =
            config.access_token.clone().map(|t| FixedToken(t).into());
        let timeout = Duration::from_secs(config.request_timeout_seconds);
        let secrets = match &config.secret_manager {
            Some(sm) => Some(client!(
                SecretManagerService,
                &sm.endpoint,
                credentials,
                timeout
            )),
            None => None,
        };
        Ok(Clients {
            jobs: client!(Jobs, &config.endpoint, credentials, timeout),
            executions: client!(Executions, &config.endpoint, credentials, timeout),
            tasks: client!(Tasks, &config.endpoint, credentials, timeout),
            logging: client!(
                LoggingServiceV2,
                &config.logging_endpoint,
                credentials,
                timeout
            ),
            secrets,
        })
    }
}

/// The status code of a service's error answer, if it is one.
pub fn code(err: &google_cloud_gax::error::Error) -> Option<Code> {
    err.status().map(|s| s.code)
}

/// How long a throttled call waits: the answer's Retry-After, else its RetryInfo.
fn retry_after(err: &google_cloud_gax::error::Error) -> Duration {
    let header = err
        .http_headers()
        .and_then(|h| h.get(http::header::RETRY_AFTER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let info = err.status().and_then(|s| {
        s.details.iter().find_map(|d| match d {
            StatusDetails::RetryInfo(info) => info.retry_delay.as_ref().map(|d| {
                Duration::from_secs(d.seconds().max(0) as u64)
                    + Duration::from_nanos(d.nanos().max(0) as u64)
            }),
            _ => None,
        })
    });
    header.or(info).unwrap_or(DEFAULT_RETRY_AFTER)
}

fn throttled(err: &google_cloud_gax::error::Error) -> bool {
    code(err) == Some(Code::ResourceExhausted) || err.http_status_code() == Some(429)
}

/// Sends the request `call` makes, and again after each 429's Retry-After (the clients'
/// retry policies do not retry 429s), up to [`THROTTLED_RETRIES`] times. A throttled call
/// was not carried out, so sending it again is safe for every call, creates included.
pub async fn patiently<T, F, Fut>(mut call: F) -> Result<T, google_cloud_gax::error::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, google_cloud_gax::error::Error>>,
{
    let mut left = THROTTLED_RETRIES;
    loop {
        match call().await {
            Err(e) if left > 0 && throttled(&e) => {
                left -= 1;
                tokio::time::sleep(retry_after(&e).min(MAX_THROTTLED_WAIT)).await;
            }
            answered => return answered,
        }
    }
}

/// What a Google error means to the engine.
pub fn classify(op: &str, err: google_cloud_gax::error::Error) -> ProviderError {
    let Some(status) = err.status() else {
        if err.http_status_code() == Some(429) {
            return ProviderError::Throttled {
                retry_after: retry_after(&err),
            };
        }
        if err.is_authentication() {
            return ProviderError::Config(format!("{op}: {err}"));
        }
        return ProviderError::Transient(format!("{op}: {err}"));
    };
    let text = format!("{op}: {} {}", status.code.name(), status.message);
    match status.code {
        Code::ResourceExhausted => ProviderError::Throttled {
            retry_after: retry_after(&err),
        },
        Code::PermissionDenied | Code::Unauthenticated => ProviderError::Config(text),
        Code::NotFound => ProviderError::NotFound(text),
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::OutOfRange => ProviderError::InvalidSpec(text),
        _ => ProviderError::Transient(text),
    }
}

/// A read of something that is not there: `None`, not an error.
pub fn not_found_is_none<T>(
    op: &str,
    result: Result<T, google_cloud_gax::error::Error>,
) -> offload_provider::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if code(&e) == Some(Code::NotFound) => Ok(None),
        Err(e) => Err(classify(op, e)),
    }
}

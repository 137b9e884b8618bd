//! How an Azure provider reaches ARM and Log Analytics: one HTTP client with the
//! provider's timeouts for every request (a token's included), and two ways to send
//! through a generated `azure_mgmt_*` client.
//!
//! - [`Sending::Again`]: reads, stops and deletes, which are safe to send again. The SDK's
//!   retry policy resends them after a 429 (waiting out its Retry-After), a 5xx, a timeout
//!   or a lost connection.
//! - [`Sending::Once`]: creates and starts, which are not. A create that ARM carried out and
//!   whose answer was lost, sent again, replaces what it made (a container group restarts),
//!   and a start sent again starts a second execution. They are sent once, and a create
//!   also asks ARM not to replace (`If-None-Match: *`): two launches of one key make one
//!   resource, the second refused with 412 `PreconditionFailed` ([`exists`]). ARM's
//!   contract has resource providers honour that header or refuse it; that Container
//!   Apps and ACI honour it is not confirmed by any document of theirs, so the providers
//!   also read before they create.

use std::sync::Arc;

use azure_core::auth::TokenCredential;
use azure_core::headers::HeaderName;
use azure_core::{
    ClientOptions, Context, Method, Policy, PolicyResult, Request, RetryOptions, TransportOptions,
    Url,
};
use azure_identity::{DefaultAzureCredential, TokenCredentialOptions};
use offload_provider::timeouts::Timeouts;
use offload_provider::SecretString;

use crate::FixedToken;

/// How a request is sent through a generated client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// Sent again by the SDK's retry policy when it fails in passing.
    Again,
    /// Sent once; a PUT creates only (`If-None-Match: *`).
    Once,
}

/// A provider's way to Azure: ARM's endpoint, the credential and the HTTP client.
pub struct Azure {
    endpoint: Url,
    credential: Arc<dyn TokenCredential>,
    http: reqwest::Client,
}

impl Azure {
    /// `access_token` when the configuration gives one (test servers, tokens obtained
    /// elsewhere), else DefaultAzureCredential's chain: environment, workload identity,
    /// managed identity, Azure CLI. Nothing is called until a token is needed.
    pub fn new(
        endpoint: &str,
        access_token: Option<&SecretString>,
        timeouts: Timeouts,
    ) -> Result<Azure, String> {
        let endpoint = Url::parse(endpoint).map_err(|e| format!("endpoint: {e}"))?;
        // As azure_core's own client: no idle connections kept (hyperium/hyper#2312).
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let credential: Arc<dyn TokenCredential> = match access_token {
            Some(token) => Arc::new(FixedToken(token.clone())),
            None => {
                let transport: Arc<dyn azure_core::HttpClient> = Arc::new(http.clone());
                Arc::new(
                    DefaultAzureCredential::create(TokenCredentialOptions::from(transport))
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        Ok(Azure {
            endpoint,
            credential,
            http,
        })
    }

    pub fn credential(&self) -> Arc<dyn TokenCredential> {
        self.credential.clone()
    }

    /// The HTTP client, for the calls no generated client makes (Log Analytics queries).
    pub fn http(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// A generated client, made by its `Client::new`, that sends as `sending` says.
    pub fn client<C>(
        &self,
        sending: Sending,
        new: impl FnOnce(Url, Arc<dyn TokenCredential>, Vec<String>, ClientOptions) -> C,
    ) -> Result<C, String> {
        // The scope the generated builders ask for: the endpoint's `/.default`.
        let scope = self
            .endpoint
            .join(azure_core::auth::DEFAULT_SCOPE_SUFFIX)
            .map_err(|e| format!("endpoint: {e}"))?;
        let transport: Arc<dyn azure_core::HttpClient> = Arc::new(self.http.clone());
        let mut options = ClientOptions::new(TransportOptions::new(transport));
        options = match sending {
            Sending::Again => options.retry(crate::retry()),
            Sending::Once => {
                options.per_call_policies_mut().push(Arc::new(CreateOnly));
                options.retry(RetryOptions::none())
            }
        };
        Ok(new(
            self.endpoint.clone(),
            self.credential.clone(),
            vec![scope.to_string()],
            options,
        ))
    }
}

/// Adds `If-None-Match: *` to a PUT.
#[derive(Debug)]
struct CreateOnly;

#[async_trait::async_trait]
impl Policy for CreateOnly {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if *request.method() == Method::Put {
            request.insert_header(HeaderName::from_static("if-none-match"), "*");
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// Whether ARM refused a create-only PUT because the resource exists.
pub fn exists(err: &azure_core::Error) -> bool {
    err.as_http_error()
        .is_some_and(|http| u16::from(http.status()) == 412)
}

/// Whether ARM answered with a refusal, so that the request was not carried out: a 4xx
/// other than 408 (a request that timed out may have been carried out). A 429 is ARM's
/// throttling, which turns requests away before they reach the service. A 5xx, a timeout or
/// a lost connection say nothing about whether it was.
pub fn refused(err: &azure_core::Error) -> bool {
    err.as_http_error().is_some_and(|http| {
        let status = u16::from(http.status());
        (400..500).contains(&status) && status != 408
    })
}

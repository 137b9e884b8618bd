//! A small HTTP client of the gateway's API for the CLI; problem+json answers become
//! errors that print their detail and fields.

use std::io::Write;

use anyhow::{anyhow, Context};
use futures::StreamExt;
use reqwest::Response;

use super::terminal::Sink;

/// How many times a submit is sent before its last answer is taken as it is.
const SUBMIT_TRIES: u32 = 5;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(url: &str, token: &str) -> anyhow::Result<Client> {
        Ok(Client {
            http: reqwest::Client::builder().build()?,
            base: url.trim_end_matches('/').to_string(),
            token: token.into(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn check(response: reqwest::Result<Response>) -> anyhow::Result<Response> {
        let response = response
            .context("the gateway did not answer (is `offload serve` running at OFFLOAD_URL?)")?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let mut message = format!(
            "{status}: {}",
            body["detail"].as_str().unwrap_or("no detail")
        );
        for e in body["errors"].as_array().into_iter().flatten() {
            message += &format!(
                "\n  {}: {}",
                e["field"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            );
        }
        Err(anyhow!(message))
    }

    pub async fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<serde_json::Value> {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .query(query)
            .send()
            .await;
        Ok(Self::check(response).await?.json().await?)
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let request = self.http.post(self.url(path)).bearer_auth(&self.token);
        Ok(Self::check(request.json(body).send().await).await?.json().await?)
    }

    pub async fn job(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        self.get_json(&format!("/v1/jobs/{id}"), &[]).await
    }

    /// Submits `spec` under an idempotency key (`key`, or a new one), sending it again with
    /// the same key while the gateway answers 429 or 503, or does not answer at all, up to
    /// [`SUBMIT_TRIES`] times: an answer lost after the gateway committed the job then
    /// returns that job, never a second one.
    pub async fn submit(
        &self,
        spec: &serde_json::Value,
        key: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let key = key.map_or_else(|| format!("offload-cli-{}", uuid::Uuid::now_v7()), String::from);
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = self
                .http
                .post(self.url("/v1/jobs"))
                .bearer_auth(&self.token)
                .header("Idempotency-Key", &key)
                .json(spec)
                .send()
                .await;
            let wait = match &sent {
                Ok(r) if matches!(r.status().as_u16(), 429 | 503) => r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map_or(std::time::Duration::from_secs(1), std::time::Duration::from_secs),
                Err(e) if !e.is_builder() => std::time::Duration::from_secs(1),
                _ => return Ok(Self::check(sent).await?.json().await?),
            };
            if tries >= SUBMIT_TRIES {
                return Ok(Self::check(sent).await?.json().await?);
            }
            tokio::time::sleep(wait.min(std::time::Duration::from_secs(10))).await;
        }
    }

    pub async fn cancel(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let response = self
            .http
            .post(self.url(&format!("/v1/jobs/{id}/cancel")))
            .bearer_auth(&self.token)
            .send()
            .await;
        let response = Self::check(response).await?;
        Ok(response.json().await?)
    }

    /// Writes the job's log to `out`, its control characters escaped when `out` is a
    /// terminal (`terminal`).
    pub async fn stream_logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
        out: impl Write,
        terminal: bool,
    ) -> anyhow::Result<()> {
        let mut query = vec![("follow", follow.to_string())];
        query.extend(tail.map(|t| ("tail", t.to_string())));
        let response = self
            .http
            .get(self.url(&format!("/v1/jobs/{id}/logs")))
            .bearer_auth(&self.token)
            .query(&query)
            .send()
            .await;
        let mut body = Self::check(response).await?.bytes_stream();
        let mut sink = Sink::new(out, terminal);
        while let Some(chunk) = body.next().await {
            sink.write(&chunk?)?;
        }
        sink.finish()?;
        Ok(())
    }
}

//! Keeps the accepted bearer tokens in step with `auth.tokens_file`, so that tokens rotate
//! without a restart. The file is read every `auth.tokens_file_check_seconds` and on
//! SIGHUP; when what it holds differs from what was last read, its tokens replace the
//! accepted ones, after the same checks as at start. Reading the path each time sees a
//! Kubernetes Secret's update (a symlink swap in the mounted volume) as any other change. A
//! file that cannot be read or has a mistake leaves the tokens as they were, and the log
//! says why, once for each content (again on each SIGHUP). The tokens themselves are never
//! logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::Tokens;
use crate::config::{AuthConfig, Config, ConfigError, TokenConfig};

/// Counts each read of the file that changed the tokens (`outcome="applied"`) or that was
/// refused (`outcome="refused"`: unreadable, or a mistake in it).
const RELOADS: &str = "offload_tokens_file_reloads_total";

/// Starts following the file (when `auth.tokens_file` is set) until `stop`. SIGHUP is
/// caught either way: without a file there is nothing to read again, which is logged.
pub fn follow(config: &Config, tokens: Arc<Tokens>, stop: CancellationToken) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let Some(path) = config.auth.tokens_file.clone() else {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = hangup.recv() => tracing::info!("SIGHUP: auth.tokens_file is not set; nothing to read again"),
                }
            }
        });
        return Ok(());
    };
    let mut file = TokensFile {
        path,
        config: config.clone(),
        tokens,
        last: None,
    };
    let every = Duration::from_secs(config.auth.tokens_file_check_seconds);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => false,
                _ = hangup.recv() => true,
            };
            file.read(forced).await;
        }
    });
    Ok(())
}

struct TokensFile {
    path: PathBuf,
    /// What the tokens are checked against (a `local` provider's one tenant).
    config: Config,
    tokens: Arc<Tokens>,
    /// The SHA-256 of what the file held at the last read, or of why it could not be read:
    /// the same again is not looked at twice.
    last: Option<[u8; 32]>,
}

impl TokensFile {
    async fn read(&mut self, forced: bool) {
        let read = tokio::fs::read(&self.path).await;
        let seen = match &read {
            Ok(text) => super::ui::sessions::digest(text),
            Err(e) => super::ui::sessions::digest(e.to_string().as_bytes()),
        };
        if !forced && self.last == Some(seen) {
            return;
        }
        let first = self.last.is_none();
        self.last = Some(seen);
        let checked = read
            .map_err(|e| ConfigError(format!("auth.tokens_file {}: {e}", self.path.display())))
            .and_then(|text| AuthConfig::parse_tokens_file(&self.path, &text))
            .and_then(|tokens| self.config.check_tokens(&tokens).map(|_| tokens));
        match checked {
            Ok(tokens) => self.apply(&tokens, first),
            Err(e) => {
                metrics::counter!(RELOADS, "outcome" => "refused").increment(1);
                tracing::error!(error = %e, "the tokens file was not taken: the tokens in force stay as they were");
            }
        }
    }

    fn apply(&self, tokens: &[TokenConfig], first: bool) {
        let (added, removed) = self.tokens.replace(tokens);
        if first && added == 0 && removed == 0 {
            // What the gateway started with.
            return;
        }
        metrics::counter!(RELOADS, "outcome" => "applied").increment(1);
        let tenants: std::collections::BTreeSet<&str> =
            tokens.iter().map(|t| t.tenant.as_str()).collect();
        tracing::info!(
            tokens = tokens.len(),
            tenants = tenants.len(),
            added,
            removed,
            file = %self.path.display(),
            "read the tokens file again"
        );
    }
}

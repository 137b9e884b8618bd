//! Serves the API over TCP with the limits a shared endpoint needs and `axum::serve` does
//! not set, so that no client, least of all one without a token, can hold the gateway:
//!
//! - a deadline for each request's headers (HTTP/1; a slowloris client otherwise holds a
//!   connection forever), and an idle timeout for every connection (HTTP/1 and HTTP/2,
//!   whose keep-alive PINGs also detect a peer that has gone);
//! - caps on open connections, in all and per client address, where a connection that
//!   made an authenticated request is never closed to make room (`conns`); past them a
//!   client gets a clear 503 problem with Retry-After, not a hang;
//! - a graceful shutdown that lets requests in flight finish.
//!
//! The body's total deadline and size limit are layers of the router (`api::deadline`).

mod conns;
mod idle;

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use conns::Client;
use conns::Conns;
use idle::Activity;

use crate::config::HttpConfig;

/// What a client past the connection caps is told before its connection is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 99\r\n\r\n{\"type\":\"about:blank\",\"title\":\"Service Unavailable\",\"status\":503,\"detail\":\"too many connections\"}";

/// How often an HTTP/2 connection is PINGed, and how long the answer may take before the
/// connection counts as gone.
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop`, then waits (at most `drain`) for the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpConfig,
    stop: CancellationToken,
    drain: Duration,
) {
    let conns = Conns::new(limits.max_connections, limits.max_connections_per_address);
    let idle_after = Duration::from_secs(limits.idle_timeout_seconds);
    let tracker = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_timeout_seconds));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING_EVERY))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(place) = conns.admit(peer.ip()) else {
            metrics::counter!("offload_http_connections_refused_total").increment(1);
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = stream.write_all(BUSY).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let (client, watch) = (place.client.clone(), activity.clone());
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(move |req: Request<Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(client.clone());
                    req
                })
                .map_future(move |handled| {
                    let in_flight = watch.start();
                    async move {
                        let response = handled.await;
                        drop(in_flight);
                        response
                    }
                }),
        );
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let stop = stop.clone();
        tracker.spawn(async move {
            tokio::pin!(connection);
            let idle = activity.idle(idle_after);
            tokio::pin!(idle);
            let mut closing = false;
            loop {
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    // Closed at once: another client needs the place.
                    _ = place.evicted.cancelled() => break,
                    _ = &mut idle, if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = stop.cancelled(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(place);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?drain,
            "requests still in flight after the drain period; closing"
        );
    }
}

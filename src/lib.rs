//! offload: a gateway that takes container jobs from schedulers over HTTP and runs them on
//! serverless container runtimes, following each to its end and keeping the outcome.
//!
//! Data flows one way: [`api`] -> [`store`] -> [`engine`] -> provider -> observations ->
//! [`store`] -> [`api`]. The API never calls out to a provider; the engine owns every call.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod http;
pub mod logging;
pub mod model;
pub mod prices;
pub mod server;
pub mod staging;
pub mod store;
pub mod telemetry;
pub mod tes;

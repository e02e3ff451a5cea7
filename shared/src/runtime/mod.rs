//! What every function's `main` sets up: configuration and tracing.

pub mod calls;
pub mod config;
pub mod metrics;
pub mod routes;
pub mod telemetry;

//! Application services: what the functions are made of, written against the ports.

pub mod auth;
pub mod breakers;
pub mod budget;
pub mod estimates;
pub mod lifecycle;
pub mod outbox;
pub mod problem;
pub mod processing;
pub mod quota_cache;
pub mod realtime;
pub mod sqs_batch;
pub mod uploads;

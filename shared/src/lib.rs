//! Prism's shared library: domain types (jobs, envelopes, classification),
//! the ports functions depend on, their AWS adapters and in-memory fakes.

pub mod auth;
pub mod aws;
pub mod commands;
pub mod config;
pub mod envelope;
pub mod error;
#[cfg(feature = "ffmpeg")]
pub mod ffmpeg;
pub mod job;
pub mod lifecycle;
pub mod limits;
pub mod memory;
pub mod ports;
pub mod processing;
pub mod realtime;
pub mod results;
pub mod sniff;
pub mod sqs_batch;
pub mod telemetry;
pub mod testing;
pub mod text;
pub mod uploads;
pub mod uri;

pub use bytes;
pub use envelope::{Envelope, JobEventEnvelope};
pub use error::{BlobError, ConfigError, QueueError, Retryable, StoreError};
pub use job::{Job, JobEvent, JobId, JobStatus, Modality, Priority};
pub use uri::S3Uri;

//! Prism's shared library, one folder per layer:
//!
//! * [`domain`]: jobs and their state machine, envelopes, commands, results,
//!   limits: plain data and rules, nothing of AWS;
//! * [`ports`]: the small traits the application needs from the outside
//!   (job store, connection store, blob store, queue, event bus, notifier)
//!   and their errors, each retryable or permanent;
//! * [`app`]: the services functions are made of: the job lifecycle, a
//!   processor's run, the SQS batch helper, realtime delivery, uploads, tokens;
//! * [`content`]: what content is (sniffing) and text analysis; the ffmpeg runner;
//! * [`aws`]: one adapter per port, named by the port it serves;
//! * [`runtime`]: configuration from the environment and tracing set-up;
//! * `testing` (feature `test-util`): in-memory fakes of every port and sample events.

pub mod app;
#[cfg(feature = "aws")]
pub mod aws;
pub mod content;
pub mod domain;
pub mod ports;
pub mod runtime;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use bytes;
pub use domain::envelope::{Envelope, JobEventEnvelope};
pub use domain::job::{Job, JobEvent, JobId, JobStatus, Modality, Priority};
pub use domain::uri::S3Uri;
pub use ports::error::{BlobError, ConfigError, QueueError, Retryable, StoreError};

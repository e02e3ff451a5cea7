//! Errors of the ports, each saying whether trying again can help.

use crate::domain::job::JobId;
use crate::domain::uri::S3Uri;

/// An error from below (an SDK, a socket) kept whole for its message and source chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether an operation that failed may succeed if tried again later.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the job first; reload and apply again.
    #[error("job {0} was changed concurrently")]
    Conflict(JobId),
    #[error("stored item is not a valid {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("job store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store refuses this write whatever happens: an event over
    /// [`crate::domain::limits::MAX_EVENT_BYTES`], or an item the service rejects.
    #[error("job store refused the write: {0}")]
    Rejected(String),
}

impl Retryable for StoreError {
    fn is_retryable(&self) -> bool {
        !matches!(self, Self::Corrupt { .. } | Self::Rejected(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no object at {0}")]
    NotFound(S3Uri),
    #[error("{uri} has {size} bytes, over the limit of {limit}")]
    TooLarge { uri: S3Uri, size: u64, limit: u64 },
    #[error("blob store unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

impl Retryable for BlobError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("not an SQS queue ARN: {0:?}")]
    BadArn(String),
    #[error("queue unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// One message of a batch the queue would not take: permanent when the
    /// message itself is at fault (too large, bad characters), passing when
    /// the queue is.
    #[error("message refused ({code}): {message}")]
    Refused { code: String, message: String, sender_fault: bool },
}

impl Retryable for QueueError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::BadArn(_) => false,
            Self::Unavailable(_) => true,
            Self::Refused { sender_fault, .. } => !sender_fault,
        }
    }
}

/// Pausing, resuming or reading a lane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No mapping or queue by that id: the configuration names one that is gone.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The role may not do this: a permission missing from template.yaml.
    #[error("not allowed: {0}")]
    Denied(String),
    #[error("lane control unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

impl Retryable for ControlError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A required setting that is missing or malformed: the function must not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Publishing a batch of events stopped; the first `published` of them went out.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("event bus unavailable after {published} events: {source}")]
    Unavailable {
        published: usize,
        #[source]
        source: BoxError,
    },
    /// The bus refuses this event whatever happens (too large, malformed).
    #[error("event bus refused event {published}: {reason}")]
    Refused { published: usize, reason: String },
}

impl PublishError {
    /// Where publishing failed: every event before this index was published
    /// (some after it may have been too; publishing is at least once).
    pub fn published(&self) -> usize {
        match self {
            Self::Unavailable { published, .. } | Self::Refused { published, .. } => *published,
        }
    }
}

impl Retryable for PublishError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The client went away; its connection and subscriptions should be forgotten.
    #[error("connection {0} is gone")]
    Gone(String),
    #[error("message of {0} bytes is over the WebSocket message limit")]
    TooLarge(usize),
    #[error("WebSocket management API unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

impl Retryable for NotifyError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

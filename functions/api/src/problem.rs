//! Errors as RFC 9457 problems (`application/problem+json`) with stable codes.

use prism_shared::app::auth::AuthError;
use prism_shared::app::lifecycle::LifecycleError;
use prism_shared::app::problem::Problem;
use prism_shared::{BlobError, QueueError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Not JSON, or not the shape of any request.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("no such job")]
    NotFound,
    #[error("no such schedule")]
    NoSchedule,
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{size} bytes is over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// A format Prism recognises but cannot process.
    #[error("{0}")]
    Unsupported(String),
    /// The owner has as many jobs queued or processing as its quota allows.
    #[error("{active} jobs are queued or processing, the most an owner may have; retry when some have finished")]
    QuotaExceeded { active: u32 },
    /// The submission would take the owner past its bytes for today.
    #[error("{bytes} more bytes would pass the owner's quota of {limit} bytes per day (UTC); retry after {retry_after_s} s")]
    BytesQuotaExceeded { bytes: u64, limit: u64, retry_after_s: u64 },
    /// Well-formed, but asks for something that cannot be done.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::NotFound(_) => Self::NotFound,
            LifecycleError::Refused { job, .. } => Self::Conflict(format!("job is already {}", job.status)),
            LifecycleError::Store(e) => Self::Store(e),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound | Self::NoSchedule | Self::NoRoute(_) => 404,
            Self::Conflict(_) => 409,
            Self::TooLarge { .. } => 413,
            Self::Unsupported(_) => 415,
            Self::QuotaExceeded { .. } | Self::BytesQuotaExceeded { .. } => 429,
            Self::Invalid(_) => 422,
            Self::Store(_) | Self::Blob(_) | Self::Queue(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "job_not_found",
            Self::NoSchedule => "schedule_not_found",
            Self::NoRoute(_) => "no_route",
            Self::Conflict(_) => "conflict",
            Self::TooLarge { .. } => "payload_too_large",
            Self::Unsupported(_) => "unsupported_format",
            Self::QuotaExceeded { .. } | Self::BytesQuotaExceeded { .. } => "quota_exceeded",
            Self::Invalid(_) => "invalid_request",
            Self::Store(_) | Self::Blob(_) | Self::Queue(_) => "unavailable",
        }
    }

    /// When to try again (`Retry-After`, seconds), for a quota.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            // Small jobs finish in seconds.
            Self::QuotaExceeded { .. } => Some(10),
            Self::BytesQuotaExceeded { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }

    /// A JSON body that failed to parse: bad syntax is 400, the wrong shape or values 422.
    pub fn from_json(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Data => Self::Invalid(format!("invalid request: {e}")),
            _ => Self::BadRequest(format!("request body is not valid JSON: {e}")),
        }
    }

    pub fn problem(&self) -> Problem {
        Problem::new(self.code(), self.status(), self.to_string())
    }
}

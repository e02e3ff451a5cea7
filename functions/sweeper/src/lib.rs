//! sweeper: the backstop that keeps the promise "no job stays queued or
//! processing forever". Every job that is not terminal sits in a sparse
//! index by its last change; fired on a schedule, the sweeper reads the jobs
//! idle longer than the shortest budget and ends those past theirs:
//!
//! - queued and never uploaded, past the upload budget: `upload_expired`;
//! - queued with its input, or processing, with nothing recorded for longer
//!   than the idle budget: `stalled` (a message lost between a write and its
//!   send, a function that timed out mid-way, a step that vanished);
//! - with a cancellation asked for: `cancelled`, as asked.
//!
//! The decision is taken on the job as read, and stored only if the job has
//! not changed since (a conditional write on its sequence number), so a job
//! that makes progress meanwhile is never ended by the sweep. A stuck job is
//! therefore terminal within its budget plus one sweep period.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prism_shared::app::lifecycle::{self, LifecycleError};
use prism_shared::domain::job::JobFailure;
use prism_shared::{ConfigError, Job, JobEvent, JobStatus, Retryable, runtime::config};
use serde::Serialize;

pub const SOURCE: &str = "sweeper";
/// Jobs looked at per sweep; the next sweep takes the rest.
const PER_SWEEP: u32 = 500;

#[derive(Debug, Clone)]
pub struct Config {
    /// How long a job waits for its upload.
    pub upload_wait: Duration,
    /// How long a queued or processing job may go without any recorded change.
    pub idle: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            upload_wait: Duration::from_secs(config::parsed_or("UPLOAD_WAIT_SECONDS", 20 * 60)?),
            idle: Duration::from_secs(config::parsed_or("STALLED_AFTER_SECONDS", 60 * 60)?),
        })
    }
}

pub type Deps = prism_shared::ports::Deps<Config>;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Store(#[from] prism_shared::StoreError),
}

impl Retryable for SweepError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Lifecycle(e) => e.is_retryable(),
            Self::Store(e) => e.is_retryable(),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Swept {
    pub examined: usize,
    pub ended: usize,
}

/// What becomes of a job that has been idle: `None` while within its budget.
pub fn verdict(job: &Job, now: DateTime<Utc>, config: &Config) -> Option<JobEvent> {
    let idle = (now - job.updated_at).to_std().unwrap_or_default();
    let awaiting_upload = job.status == JobStatus::Queued && job.input.is_none();
    let budget = if awaiting_upload { config.upload_wait } else { config.idle };
    if job.status.is_terminal() || idle < budget {
        return None;
    }
    if job.cancel_requested {
        return Some(JobEvent::Cancelled);
    }
    let failure = if awaiting_upload {
        JobFailure::new("upload_expired", format!("no upload arrived within {} s of the job's creation", budget.as_secs()))
    } else {
        let what = if job.status == JobStatus::Queued { "queued" } else { "processing" };
        JobFailure::new("stalled", format!("{what} with nothing recorded for {} s; nothing was left to move it", idle.as_secs()))
    };
    Some(JobEvent::Failed(failure))
}

pub async fn handle(deps: &Deps) -> Result<Swept, SweepError> {
    let now = Utc::now();
    let shortest = deps.config.upload_wait.min(deps.config.idle);
    let since = now - chrono::Duration::from_std(shortest).unwrap_or_else(|_| chrono::Duration::zero());
    let idle = deps.jobs.idle(since, PER_SWEEP).await?;
    let mut swept = Swept { examined: idle.len(), ended: 0 };
    for job in idle {
        let Some(event) = verdict(&job, now, &deps.config) else { continue };
        match lifecycle::record_on(deps.jobs.as_ref(), &job, SOURCE, event.clone()).await {
            Ok(Some(_)) => {
                tracing::warn!(job_id = %job.id, status = %job.status, phase = %job.phase, ended = event.event_type(), "swept an idle job");
                swept.ended += 1;
            }
            // It moved on since it was read: not idle after all.
            Ok(None) | Err(LifecycleError::Refused { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(examined = swept.examined, ended = swept.ended, "sweep done");
    Ok(swept)
}

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
//! A queued job whose lane an operator paused is not stalled: it waits for the
//! lane, however long, and the sweep leaves it (`held`). Whether a lane is
//! paused is read from its event-source mapping, the one place that says so.
//!
//! The decision is taken on the job as read, and stored only if the job has
//! not changed since (a conditional write on its sequence number), so a job
//! that makes progress meanwhile is never ended by the sweep. A stuck job is
//! therefore terminal within its budget plus one sweep period.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prism_shared::app::lifecycle::{self, LifecycleError};
use prism_shared::domain::job::JobFailure;
use prism_shared::domain::lanes::{self, LaneMapping};
use prism_shared::ports::error::ControlError;
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
    /// The lanes an operator may pause (`LANES`, as `ops` reads it).
    pub lanes: Vec<LaneMapping>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            upload_wait: Duration::from_secs(config::parsed_or("UPLOAD_WAIT_SECONDS", 20 * 60)?),
            idle: Duration::from_secs(config::parsed_or("STALLED_AFTER_SECONDS", 60 * 60)?),
            lanes: config::lanes()?,
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
    #[error(transparent)]
    Lanes(#[from] ControlError),
}

impl Retryable for SweepError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Lifecycle(e) => e.is_retryable(),
            Self::Store(e) => e.is_retryable(),
            Self::Lanes(e) => e.is_retryable(),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Swept {
    pub examined: usize,
    pub ended: usize,
    /// Past their budget, but waiting in a paused lane.
    pub held: usize,
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
    let mut swept = Swept { examined: idle.len(), ..Swept::default() };
    let mut paused = PausedLanes::default();
    let mut unreadable_lane = None;
    for job in idle {
        let Some(event) = verdict(&job, now, &deps.config) else { continue };
        if matches!(event, JobEvent::Failed(_)) {
            match paused.holds(deps, &job).await {
                Ok(false) => {}
                Ok(true) => {
                    swept.held += 1;
                    continue;
                }
                // A lane that cannot be read holds its jobs (they may be
                // waiting on purpose); the sweep goes on with the others and
                // ends in an error, for the function's error alarm.
                Err(e) => {
                    tracing::error!(job_id = %job.id, error = %e, "cannot tell whether the job's lane is paused; leaving it");
                    swept.held += 1;
                    unreadable_lane.get_or_insert(e);
                    continue;
                }
            }
        }
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
    tracing::info!(examined = swept.examined, ended = swept.ended, held = swept.held, "sweep done");
    match unreadable_lane {
        Some(e) => Err(e.into()),
        None => Ok(swept),
    }
}

/// Lanes' paused states, each read at most once per sweep.
#[derive(Debug, Default)]
struct PausedLanes(std::collections::HashMap<String, bool>);

impl PausedLanes {
    /// Whether `job` waits in a paused lane: queued, classified, its lane's mapping disabled.
    async fn holds(&mut self, deps: &Deps, job: &Job) -> Result<bool, ControlError> {
        let Some(lane) = lanes::lane_of(&deps.config.lanes, job) else { return Ok(false) };
        if let Some(paused) = self.0.get(&lane.lane) {
            return Ok(*paused);
        }
        let paused = deps.lanes.state(&lane.mapping_id).await?.paused();
        self.0.insert(lane.lane.clone(), paused);
        Ok(paused)
    }
}

//! schedules: fires the schedules that are due. Ticked by EventBridge
//! Scheduler (every minute on AWS; a template parameter), it reads the due
//! schedules from a sparse index, oldest slot first, and for each one:
//!
//! 1. creates the slot's job, its id derived from the schedule and the slot,
//!    so a slot fired twice (two ticks racing, a tick retried) finds the job
//!    the first firing made, and only while the schedule still waits for the
//!    slot, in the same write: once a delete has returned, no firing that
//!    read the schedule before it can start a job;
//! 2. attaches the stored object and sends the job to classify, as
//!    `POST /v1/jobs` with a `source` does (an object gone by then fails the
//!    job as `input_missing`);
//! 3. moves the schedule to its next slot, only if it still waits for the
//!    one it fired.
//!
//! A failure leaves the schedule due, so the next tick fires that slot again
//! and finds whatever the failed attempt already made.

use chrono::{DateTime, Utc};
use prism_shared::app::lifecycle::{self, LifecycleError};
use prism_shared::domain::commands::{Command, StoredJob};
use prism_shared::domain::envelope::new_trace_id;
use prism_shared::domain::job::{InputObject, JobFailure};
use prism_shared::domain::schedule::Schedule;
use prism_shared::ports::SlotStart;
use prism_shared::{
    BlobError, ConfigError, Envelope, Job, JobEvent, JobEventEnvelope, JobStatus, QueueError, Retryable, StoreError, runtime::config,
};
use serde::Serialize;

pub const SOURCE: &str = "schedules";
/// Schedules fired per tick; the next tick takes the rest.
const PER_TICK: u32 = 200;

#[derive(Debug, Clone)]
pub struct Config {
    pub classify_queue_url: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { classify_queue_url: config::required("CLASSIFY_QUEUE_URL")? })
    }
}

pub type Deps = prism_shared::ports::Deps<Config>;

#[derive(Debug, thiserror::Error)]
pub enum FireError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Retryable for FireError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Lifecycle(e) => e.is_retryable(),
            Self::Store(e) => e.is_retryable(),
            Self::Blob(e) => e.is_retryable(),
            Self::Queue(e) => e.is_retryable(),
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tick {
    pub due: usize,
    pub fired: usize,
    /// Left due for the next tick.
    pub failed: usize,
}

/// Fires every due schedule. Only reading the due list can fail the tick;
/// a schedule that fails to fire is logged and stays due.
pub async fn handle(deps: &Deps) -> Result<Tick, StoreError> {
    let now = Utc::now();
    let due = deps.schedules.due(now, PER_TICK).await?;
    let mut tick = Tick { due: due.len(), ..Tick::default() };
    for schedule in &due {
        match fire(deps, schedule, now).await {
            Ok(true) => tick.fired += 1,
            Ok(false) => tracing::info!(owner = %schedule.owner, name = %schedule.name, "slot already fired elsewhere"),
            Err(e) => {
                tick.failed += 1;
                tracing::warn!(owner = %schedule.owner, name = %schedule.name, error = %e, retryable = e.is_retryable(), "firing failed; due again next tick");
            }
        }
    }
    tracing::info!(due = tick.due, fired = tick.fired, failed = tick.failed, "tick");
    Ok(tick)
}

/// Fires `schedule`'s due slot; `false` when another firing moved it on
/// first or the schedule was deleted.
async fn fire(deps: &Deps, schedule: &Schedule, now: DateTime<Utc>) -> Result<bool, FireError> {
    let Some(slot) = schedule.next_at else { return Ok(false) };
    let Some(job) = start_job(deps, schedule, slot, now).await? else { return Ok(false) };
    tracing::info!(owner = %schedule.owner, name = %schedule.name, %slot, job_id = %job.id, "fired");
    Ok(deps.schedules.advance(&schedule.fired_at(slot, job.id, now), slot).await?)
}

/// The slot's job, created once, with its object attached and on its way to
/// classify; `None` when the schedule no longer waits for the slot.
async fn start_job(deps: &Deps, schedule: &Schedule, slot: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<Job>, FireError> {
    let spec = &schedule.job;
    let mut job = Job::new(schedule.job_id(slot), schedule.owner.clone(), spec.priority, spec.source.clone(), new_trace_id(), now);
    job.workflow = spec.workflow.clone();
    job.metadata = spec.metadata.clone();
    job.metadata.insert("schedule".into(), schedule.name.clone());
    job.metadata.insert("schedule_slot".into(), slot.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let envelope = JobEventEnvelope::for_job(SOURCE, &job, job.created_event());
    let job = match deps.schedules.start_slot(schedule, slot, &job, &envelope).await? {
        SlotStart::New => job,
        SlotStart::Existing => deps.jobs.get(&job.id).await?.ok_or_else(|| StoreError::Conflict(job.id.clone()))?,
        SlotStart::Withdrawn => return Ok(None),
    };
    if job.status != JobStatus::Queued || job.modality.is_some() {
        return Ok(Some(job));
    }
    let job = match &job.input {
        Some(_) => job,
        None => {
            let event = match deps.blobs.stat(&spec.source).await {
                Ok(meta) => JobEvent::Uploaded { input: InputObject { uri: spec.source.clone(), size: meta.size, etag: meta.etag } },
                Err(BlobError::NotFound(uri)) => {
                    JobEvent::Failed(JobFailure::new("input_missing", format!("the scheduled object {uri} no longer exists")))
                }
                Err(e) => return Err(e.into()),
            };
            match lifecycle::record(deps.jobs.as_ref(), &job.id, SOURCE, event).await {
                Ok(recorded) => recorded.job().clone(),
                Err(LifecycleError::Refused { job, .. }) => *job,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if let (JobStatus::Queued, Some(input)) = (job.status, &job.input) {
        // Sent again by a retried firing: classify ignores a job already past it.
        let classify = Command::Classify { input: input.clone(), stored: StoredJob::of(&job) };
        let command = Envelope::new(SOURCE, &job.trace_id, Some(job.id.clone()), None, classify);
        deps.queue.send(&deps.config.classify_queue_url, command.to_json()).await?;
    }
    Ok(Some(job))
}

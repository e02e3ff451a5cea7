//! Recording job events: read, apply through the state machine, commit
//! conditionally, and start again if another writer got there first; then
//! publish the stored event.
//!
//! The store is written first and the bus second, so the bus never carries an
//! event the log lacks. If publishing fails, the caller's message is retried,
//! finds the event already applied, and publishes the log's latest event
//! again; subscribers dedupe by sequence number and backfill any gap from the
//! log, so a lost publish delays an update but never loses it.

use chrono::Utc;

use crate::envelope::JobEventEnvelope;
use crate::error::{PublishError, Retryable, StoreError};
use crate::job::{Applied, Job, JobEvent, JobId, TransitionError};
use crate::ports::{Created, EventBus, JobStore};

/// How many times a conflicting write is recomputed before giving up.
const MAX_CONFLICTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("job {0} does not exist")]
    NotFound(JobId),
    #[error("job {id}: {error}")]
    Refused { id: JobId, error: TransitionError, job: Box<Job> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("job event stored but not published: {0}")]
    Publish(#[from] PublishError),
}

impl Retryable for LifecycleError {
    fn is_retryable(&self) -> bool {
        match self {
            // The job may not be visible yet to an eventually consistent reader.
            Self::NotFound(_) => true,
            Self::Refused { .. } => false,
            Self::Store(e) => e.is_retryable(),
            Self::Publish(e) => e.is_retryable(),
        }
    }
}

/// What recording an event did, with the job as it now stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    Changed(Job, Box<JobEventEnvelope>),
    AlreadyApplied(Job),
}

impl Recorded {
    pub fn job(&self) -> &Job {
        match self {
            Self::Changed(job, _) | Self::AlreadyApplied(job) => job,
        }
    }
}

/// Stores a new job with its first event and publishes the event; a job that
/// already existed (a retried request) is returned as it stands.
pub async fn create(store: &dyn JobStore, bus: &dyn EventBus, job: &Job, event: &JobEventEnvelope) -> Result<Created, LifecycleError> {
    let created = store.create(job, event).await?;
    if created == Created::New {
        bus.publish(event).await?;
    }
    Ok(created)
}

/// Applies `event` to job `id`, stores the change with its event, then publishes it.
pub async fn record(
    store: &dyn JobStore,
    bus: &dyn EventBus,
    id: &JobId,
    source: &str,
    event: JobEvent,
) -> Result<Recorded, LifecycleError> {
    let recorded = record_unpublished(store, id, source, event).await?;
    match &recorded {
        Recorded::Changed(_, envelope) => bus.publish(envelope).await?,
        // A redelivery: the first attempt may have died between storing and
        // publishing, so the latest event goes out again (subscribers dedupe).
        Recorded::AlreadyApplied(job) => {
            if let Some(latest) = store.events(id, job.seq.saturating_sub(1), 1).await?.pop() {
                bus.publish(&latest).await?;
            }
        }
    }
    Ok(recorded)
}

/// Asks for a job to be cancelled: a queued job is cancelled at once, a running
/// one at its processor's next checkpoint. A finished job refuses, even though
/// the state machine would take a repeated cancel as a redelivery.
pub async fn request_cancel(store: &dyn JobStore, bus: &dyn EventBus, job: &Job, source: &str) -> Result<Job, LifecycleError> {
    if job.status.is_terminal() {
        let error = TransitionError::Terminal { status: job.status };
        return Err(LifecycleError::Refused { id: job.id.clone(), error, job: Box::new(job.clone()) });
    }
    // A queued job has nothing running to stop: it ends now, with the
    // terminal `job.cancelled` that followers wait for. (Should it start
    // meanwhile, its processor finds it cancelled at its next write.)
    let event = if job.status == crate::job::JobStatus::Queued { JobEvent::Cancelled } else { JobEvent::CancelRequested };
    Ok(record(store, bus, &job.id, source, event).await?.job().clone())
}

async fn record_unpublished(store: &dyn JobStore, id: &JobId, source: &str, event: JobEvent) -> Result<Recorded, LifecycleError> {
    let mut last_conflict = None;
    for _ in 0..MAX_CONFLICTS {
        let mut job = store.get(id).await?.ok_or_else(|| LifecycleError::NotFound(id.clone()))?;
        match job.apply(&event, Utc::now()) {
            Ok(Applied::AlreadyApplied) => return Ok(Recorded::AlreadyApplied(job)),
            Ok(Applied::Changed) => {}
            Err(error) => {
                return Err(LifecycleError::Refused { id: id.clone(), error, job: Box::new(job) });
            }
        }
        let envelope = JobEventEnvelope::for_job(source, &job, event.clone());
        match store.commit(&job, &envelope).await {
            Ok(()) => return Ok(Recorded::Changed(job, Box::new(envelope))),
            Err(e @ StoreError::Conflict(_)) => last_conflict = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_conflict.unwrap_or_else(|| StoreError::Conflict(id.clone())).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobFailure, JobStatus, Priority};
    use crate::memory::{MemoryEventBus, MemoryJobStore};

    async fn stored_job(store: &MemoryJobStore) -> Job {
        let upload = "s3://b/uploads/o/k".parse().expect("uri");
        let job = Job::new(JobId::new_random(), "o".into(), Priority::High, upload, "t".into(), Utc::now());
        let ev = JobEventEnvelope::for_job("test", &job, job.created_event());
        assert_eq!(store.create(&job, &ev).await.expect("create"), Created::New);
        assert!(matches!(store.create(&job, &ev).await.expect("create"), Created::Existing(_)));
        job
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_each_get_their_own_sequence_number() {
        let store = std::sync::Arc::new(MemoryJobStore::default());
        let bus = std::sync::Arc::new(MemoryEventBus::default());
        let job = stored_job(&store).await;
        record(store.as_ref(), bus.as_ref(), &job.id, "t", JobEvent::Started { phase: "p".into() }).await.expect("start");
        let writers: Vec<_> = (0..20u8)
            .map(|i| {
                let (store, bus, id) = (store.clone(), bus.clone(), job.id.clone());
                tokio::spawn(async move {
                    let event = JobEvent::Progress { phase: "p".into(), progress: i, eta_s: None };
                    record(store.as_ref(), bus.as_ref(), &id, "t", event).await
                })
            })
            .collect();
        for w in writers {
            w.await.expect("join").expect("progress");
        }
        let events = store.events(&job.id, 0, 100).await.expect("events");
        let seqs: Vec<u64> = events.iter().filter_map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=22).collect::<Vec<_>>());
        assert_eq!(store.events(&job.id, 20, 100).await.expect("events").len(), 2);
        assert_eq!(store.get(&job.id).await.expect("get").expect("job").seq, 22);
        let mut published: Vec<u64> = bus.published().iter().filter_map(|e| e.seq).collect();
        published.sort_unstable();
        assert_eq!(published, (2..=22).collect::<Vec<_>>(), "every stored change is published once");
    }

    #[tokio::test]
    async fn a_failed_publish_is_retryable_and_the_redelivery_publishes_again() {
        let (store, bus) = (MemoryJobStore::default(), MemoryEventBus::default());
        let job = stored_job(&store).await;
        bus.fail_next(1);
        let err = record(&store, &bus, &job.id, "t", JobEvent::Cancelled).await.expect_err("publish fails");
        assert!(matches!(err, LifecycleError::Publish(_)) && err.is_retryable());
        assert_eq!(store.get(&job.id).await.expect("get").expect("job").status, JobStatus::Cancelled, "stored first");
        let again = record(&store, &bus, &job.id, "t", JobEvent::Cancelled).await.expect("redelivery");
        assert!(matches!(again, Recorded::AlreadyApplied(_)));
        let published = bus.published();
        assert_eq!(published.len(), 1);
        assert_eq!((published[0].seq, published[0].body.clone()), (Some(2), JobEvent::Cancelled));
    }

    #[tokio::test]
    async fn finished_jobs_refuse_cancellation() {
        let (store, bus) = (MemoryJobStore::default(), MemoryEventBus::default());
        let job = stored_job(&store).await;
        let requested = request_cancel(&store, &bus, &job, "t").await.expect("queued jobs cancel at once");
        assert_eq!(requested.status, JobStatus::Cancelled);
        assert_eq!(bus.published().last().map(|e| e.body.clone()), Some(JobEvent::Cancelled), "ending with the terminal event");
        let err = request_cancel(&store, &bus, &requested, "t").await.expect_err("finished");
        assert!(matches!(err, LifecycleError::Refused { error: TransitionError::Terminal { status: JobStatus::Cancelled }, .. }));
    }

    #[tokio::test]
    async fn refused_transitions_write_nothing() {
        let (store, bus) = (MemoryJobStore::default(), MemoryEventBus::default());
        let job = stored_job(&store).await;
        record(&store, &bus, &job.id, "t", JobEvent::Failed(JobFailure::new("x", "y"))).await.expect("fail");
        let err = record(&store, &bus, &job.id, "t", JobEvent::Started { phase: "p".into() }).await.expect_err("refused");
        assert!(matches!(err, LifecycleError::Refused { error: TransitionError::Terminal { status: JobStatus::Failed }, .. }));
        assert_eq!(store.events(&job.id, 0, 100).await.expect("events").len(), 2);
    }
}

//! Recording job events: read, apply through the state machine, commit
//! conditionally, and start again if another writer got there first.
//!
//! Writers only write the log. Publishing follows from it: the table's stream
//! hands every stored `EVT#` item to the `publish` function, so an event is
//! published at least once whatever its writer does after the write (times
//! out, crashes, loses its message). There is no second write that could
//! disagree with the first.

use chrono::Utc;

use crate::domain::envelope::JobEventEnvelope;
use crate::domain::job::{Applied, Job, JobEvent, JobId, TransitionError};
use crate::ports::error::{Retryable, StoreError};
use crate::ports::{Created, JobStore};

/// How many times a conflicting write is recomputed before giving up.
const MAX_CONFLICTS: usize = 8;

/// A pause before recomputing after conflict number `attempt` (from 0): random
/// in 0..=2^attempt ms, at most 128 ms ("full jitter"). Writers that collided
/// would otherwise read and write again in step and collide again: twenty on
/// one job lost eight rounds in a row on a loaded CI machine.
async fn conflict_pause(attempt: usize) {
    let ceiling_ms = 1u64 << attempt.min(7);
    tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=ceiling_ms))).await;
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("job {0} does not exist")]
    NotFound(JobId),
    #[error("job {id}: {error}")]
    Refused { id: JobId, error: TransitionError, job: Box<Job> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Retryable for LifecycleError {
    fn is_retryable(&self) -> bool {
        match self {
            // The job may not be visible yet to an eventually consistent reader.
            Self::NotFound(_) => true,
            Self::Refused { .. } => false,
            Self::Store(e) => e.is_retryable(),
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

/// Stores a new job with its first event; a job that already existed (a
/// retried request) is returned as it stands.
pub async fn create(store: &dyn JobStore, job: &Job, event: &JobEventEnvelope) -> Result<Created, LifecycleError> {
    Ok(store.create(job, event).await?)
}

/// Applies `event` to job `id` and stores the change with its event, retrying
/// on conflicts with concurrent writers.
pub async fn record(store: &dyn JobStore, id: &JobId, source: &str, event: JobEvent) -> Result<Recorded, LifecycleError> {
    let mut last_conflict = None;
    for attempt in 0..MAX_CONFLICTS {
        if last_conflict.is_some() {
            conflict_pause(attempt).await;
        }
        let mut job = store.get(id).await?.ok_or_else(|| LifecycleError::NotFound(id.clone()))?;
        match job.apply(&event, Utc::now()) {
            Ok(Applied::AlreadyApplied) => return Ok(Recorded::AlreadyApplied(job)),
            Ok(Applied::Changed) => {}
            // Refused on what may be a stale job (a writer died between its two
            // writes): decide again on the job caught up with its log. Only
            // refusals pay for the extra read.
            Err(_) if store.roll_forward(id).await? => continue,
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

/// Applies `event` to `job` exactly as it was read, and stores the change only
/// if nothing else changed the job since: `Ok(None)` when something did. For
/// decisions taken on what a job looked like (the sweeper ending a job that
/// was idle), which must not land on a job that has moved on.
pub async fn record_on(store: &dyn JobStore, job: &Job, source: &str, event: JobEvent) -> Result<Option<Job>, LifecycleError> {
    let mut next = job.clone();
    match next.apply(&event, Utc::now()) {
        Ok(Applied::AlreadyApplied) => return Ok(None),
        Ok(Applied::Changed) => {}
        Err(error) => return Err(LifecycleError::Refused { id: job.id.clone(), error, job: Box::new(job.clone()) }),
    }
    let envelope = JobEventEnvelope::for_job(source, &next, event);
    match store.commit(&next, &envelope).await {
        Ok(()) => Ok(Some(next)),
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Asks for a job to be cancelled: a queued job is cancelled at once, a running
/// one at its processor's next checkpoint. A finished job refuses, even though
/// the state machine would take a repeated cancel as a redelivery.
pub async fn request_cancel(store: &dyn JobStore, job: &Job, source: &str) -> Result<Job, LifecycleError> {
    if job.status.is_terminal() {
        let error = TransitionError::Terminal { status: job.status };
        return Err(LifecycleError::Refused { id: job.id.clone(), error, job: Box::new(job.clone()) });
    }
    // A queued job has nothing running to stop: it ends now, with the
    // terminal `job.cancelled` that followers wait for. (Should it start
    // meanwhile, its processor finds it cancelled at its next write.)
    let event = if job.status == crate::domain::job::JobStatus::Queued { JobEvent::Cancelled } else { JobEvent::CancelRequested };
    Ok(record(store, &job.id, source, event).await?.job().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{JobFailure, JobStatus, Priority};
    use crate::testing::memory::MemoryJobStore;

    async fn stored_job(store: &MemoryJobStore) -> Job {
        let upload = "s3://b/uploads/o/k".parse().expect("uri");
        let job = Job::new(JobId::new_random(), "o".into(), Priority::High, upload, "t".into(), Utc::now());
        let ev = JobEventEnvelope::for_job("test", &job, job.created_event());
        assert_eq!(create(store, &job, &ev).await.expect("create"), Created::New);
        assert!(matches!(create(store, &job, &ev).await.expect("create"), Created::Existing(_)));
        job
    }

    async fn logged(store: &MemoryJobStore, id: &JobId) -> Vec<JobEventEnvelope> {
        store.events(id, 0, 1000).await.expect("events")
    }

    #[tokio::test]
    async fn a_writer_dying_between_its_two_writes_loses_nothing_the_next_writer_rolls_forward() {
        let store = MemoryJobStore::default();
        let job = stored_job(&store).await;
        store.die_between_writes(1);
        let died = record(&store, &job.id, "t", JobEvent::Started { phase: "p".into() }).await.expect_err("the writer died");
        assert!(died.is_retryable(), "{died}");
        assert_eq!(store.get(&job.id).await.expect("get").expect("job").seq, 1, "the job is behind its log");
        assert_eq!(logged(&store, &job.id).await.len(), 2, "the event is logged (and so published from the stream)");
        let progress = JobEvent::Progress { phase: "p".into(), progress: 50, eta_s: None, counts: None };
        let Recorded::Changed(after, _) = record(&store, &job.id, "t", progress).await.expect("next write") else { panic!("not recorded") };
        assert_eq!((after.seq, after.status), (3, JobStatus::Processing), "rolled forward past the dead writer's event, then written");
        let seqs: Vec<Option<u64>> = logged(&store, &job.id).await.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![Some(1), Some(2), Some(3)], "one log, no gap, nothing twice");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_each_get_their_own_sequence_number() {
        let store = std::sync::Arc::new(MemoryJobStore::default());
        let job = stored_job(&store).await;
        record(store.as_ref(), &job.id, "t", JobEvent::Started { phase: "p".into() }).await.expect("start");
        let writers: Vec<_> = (0..20u8)
            .map(|i| {
                let (store, id) = (store.clone(), job.id.clone());
                tokio::spawn(async move {
                    let event = JobEvent::Progress { phase: "p".into(), progress: i, eta_s: None, counts: None };
                    record(store.as_ref(), &id, "t", event).await
                })
            })
            .collect();
        for w in writers {
            w.await.expect("join").expect("progress");
        }
        let seqs: Vec<u64> = logged(&store, &job.id).await.iter().filter_map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=22).collect::<Vec<_>>());
        assert_eq!(store.events(&job.id, 20, 100).await.expect("events").len(), 2);
        assert_eq!(store.get(&job.id).await.expect("get").expect("job").seq, 22);
    }

    #[tokio::test]
    async fn a_redelivered_event_is_applied_once() {
        let store = MemoryJobStore::default();
        let job = stored_job(&store).await;
        let first = record(&store, &job.id, "t", JobEvent::Cancelled).await.expect("cancel");
        assert!(matches!(first, Recorded::Changed(..)));
        let again = record(&store, &job.id, "t", JobEvent::Cancelled).await.expect("redelivery");
        assert!(matches!(again, Recorded::AlreadyApplied(_)));
        let log = logged(&store, &job.id).await;
        assert_eq!(log.iter().map(|e| e.body.event_type()).collect::<Vec<_>>(), ["job.created", "job.cancelled"]);
    }

    #[tokio::test]
    async fn finished_jobs_refuse_cancellation() {
        let store = MemoryJobStore::default();
        let job = stored_job(&store).await;
        let requested = request_cancel(&store, &job, "t").await.expect("queued jobs cancel at once");
        assert_eq!(requested.status, JobStatus::Cancelled);
        assert_eq!(
            logged(&store, &job.id).await.last().map(|e| e.body.clone()),
            Some(JobEvent::Cancelled),
            "ending with the terminal event"
        );
        let err = request_cancel(&store, &requested, "t").await.expect_err("finished");
        assert!(matches!(err, LifecycleError::Refused { error: TransitionError::Terminal { status: JobStatus::Cancelled }, .. }));
    }

    #[tokio::test]
    async fn refused_transitions_write_nothing() {
        let store = MemoryJobStore::default();
        let job = stored_job(&store).await;
        record(&store, &job.id, "t", JobEvent::Failed(JobFailure::new("x", "y"))).await.expect("fail");
        let err = record(&store, &job.id, "t", JobEvent::Started { phase: "p".into() }).await.expect_err("refused");
        assert!(matches!(err, LifecycleError::Refused { error: TransitionError::Terminal { status: JobStatus::Failed }, .. }));
        assert_eq!(logged(&store, &job.id).await.len(), 2);
    }
}

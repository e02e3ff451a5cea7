//! Recording job events: apply them through the state machine to the job as
//! last read or written, commit them with it in one conditional write, and
//! read and start again if another writer got there first.
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

/// What recording events did, with the job as it now stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Stored, with the events that changed the job (those already applied
    /// are left out).
    Changed(Job, Vec<JobEventEnvelope>),
    AlreadyApplied(Job),
}

impl Recorded {
    pub fn job(&self) -> &Job {
        match self {
            Self::Changed(job, _) | Self::AlreadyApplied(job) => job,
        }
    }
}

/// Applies `events` in order to a copy of `job`: the job after them and the
/// envelopes of those that changed it, or the first refusal (and `job`
/// untouched).
fn apply_all(job: &Job, source: &str, events: &[JobEvent]) -> Result<(Job, Vec<JobEventEnvelope>), TransitionError> {
    let (mut next, now) = (job.clone(), Utc::now());
    let mut envelopes = Vec::with_capacity(events.len());
    for event in events {
        if next.apply(event, now)? == Applied::Changed {
            envelopes.push(JobEventEnvelope::for_job(source, &next, event.clone()));
        }
    }
    Ok((next, envelopes))
}

/// Stores a new job with its first events (`job` is the job after them); a
/// job that already existed (a retried request) is returned as it stands.
pub async fn create(store: &dyn JobStore, job: &Job, events: &[JobEventEnvelope]) -> Result<Created, LifecycleError> {
    Ok(store.create(job, events).await?)
}

/// Applies `event` to job `id` and stores the change with its event, retrying
/// on conflicts with concurrent writers.
pub async fn record(store: &dyn JobStore, id: &JobId, source: &str, event: JobEvent) -> Result<Recorded, LifecycleError> {
    record_from(store, id, None, source, &[event]).await
}

/// Applies `events` to job `id`, in order and all or none, and stores them
/// with the job in one write, retrying on conflicts with concurrent writers.
/// `known` is the job as the caller last read or wrote it: the first attempt
/// is computed on it and reads nothing. If the job moved since, the write
/// conflicts (or the copy refuses), and the job is read again.
pub async fn record_from(
    store: &dyn JobStore,
    id: &JobId,
    mut known: Option<Job>,
    source: &str,
    events: &[JobEvent],
) -> Result<Recorded, LifecycleError> {
    let mut last_conflict = None;
    for attempt in 0..MAX_CONFLICTS {
        if last_conflict.is_some() {
            conflict_pause(attempt).await;
        }
        let (job, read) = match known.take() {
            Some(job) => (job, false),
            None => (store.get(id).await?.ok_or_else(|| LifecycleError::NotFound(id.clone()))?, true),
        };
        let (next, envelopes) = match apply_all(&job, source, events) {
            Ok(applied) => applied,
            // Decided on the caller's copy, which may be stale: decide again on the stored job.
            Err(_) if !read => continue,
            Err(error) => return Err(LifecycleError::Refused { id: id.clone(), error, job: Box::new(job) }),
        };
        if envelopes.is_empty() {
            return Ok(Recorded::AlreadyApplied(job));
        }
        match store.commit(&next, &envelopes).await {
            Ok(()) => return Ok(Recorded::Changed(next, envelopes)),
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
    record_all_on(store, job, source, &[event]).await
}

/// [`record_on`] for several events, stored together or not at all.
pub async fn record_all_on(store: &dyn JobStore, job: &Job, source: &str, events: &[JobEvent]) -> Result<Option<Job>, LifecycleError> {
    let (next, envelopes) = apply_all(job, source, events).map_err(|error| LifecycleError::Refused {
        id: job.id.clone(),
        error,
        job: Box::new(job.clone()),
    })?;
    if envelopes.is_empty() {
        return Ok(None);
    }
    match store.commit(&next, &envelopes).await {
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
        assert_eq!(create(store, &job, std::slice::from_ref(&ev)).await.expect("create"), Created::New);
        assert!(matches!(create(store, &job, &[ev]).await.expect("create"), Created::Existing(_)));
        job
    }

    async fn logged(store: &MemoryJobStore, id: &JobId) -> Vec<JobEventEnvelope> {
        store.events(id, 0, 1000).await.expect("events")
    }

    #[tokio::test]
    async fn several_events_are_stored_together_in_order_and_a_refused_one_stores_none() {
        let store = MemoryJobStore::default();
        let job = stored_job(&store).await;
        let started = JobEvent::Started { phase: "p".into() };
        let progress = JobEvent::Progress { phase: "p".into(), progress: 50, eta_s: None, counts: None };
        let Recorded::Changed(after, envelopes) =
            record_from(&store, &job.id, None, "t", &[started.clone(), progress]).await.expect("record")
        else {
            panic!("not recorded")
        };
        assert_eq!(envelopes.iter().map(|e| e.seq).collect::<Vec<_>>(), [Some(2), Some(3)], "one seq each");
        assert_eq!((after.seq, after.status, after.progress), (3, JobStatus::Processing, 50));
        assert_eq!(logged(&store, &job.id).await.len(), 3);

        // A start already applied is left out; a terminal event after it is stored alone.
        let recorded = record_from(&store, &job.id, Some(after.clone()), "t", &[started, JobEvent::Cancelled]).await.expect("record");
        let Recorded::Changed(ended, envelopes) = recorded else { panic!("not recorded") };
        assert_eq!((envelopes.len(), ended.seq, ended.status), (1, 4, JobStatus::Cancelled));

        // On a copy that is behind, the write conflicts, the job is read again and the events refused on it: nothing stored.
        let later = JobEvent::Progress { phase: "p".into(), progress: 60, eta_s: None, counts: None };
        let refused = record_from(&store, &job.id, Some(after), "t", &[later]).await.expect_err("refused");
        assert!(matches!(refused, LifecycleError::Refused { error: TransitionError::Terminal { status: JobStatus::Cancelled }, .. }));
        assert_eq!(logged(&store, &job.id).await.len(), 4);
    }

    #[tokio::test]
    async fn a_change_computed_before_the_job_was_watched_is_redone_on_the_watched_job() {
        let store = MemoryJobStore::default();
        let job = stored_job(&store).await;
        // A subscription marks the job after this writer read it.
        assert!(store.watch(&job.id).await.expect("watch").is_some_and(|j| j.watched));
        assert!(!job.watched);
        let started = [JobEvent::Started { phase: "p".into() }];
        assert_eq!(record_all_on(&store, &job, "t", &started).await.expect("record"), None, "the stale write conflicts");
        let Recorded::Changed(after, _) = record_from(&store, &job.id.clone(), Some(job), "t", &started).await.expect("record") else {
            panic!("not recorded")
        };
        assert!(after.watched, "redone on the job as it now stands, so its event goes to the fan-out");
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

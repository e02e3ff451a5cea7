//! The ports: what functions need from the outside world, as small traits.
//! AWS adapters live in [`crate::aws`], in-memory fakes in [`crate::testing::memory`].

pub mod error;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use self::error::{BlobError, ControlError, NotifyError, PublishError, QueueError, StoreError};
use chrono::NaiveDate;

use crate::domain::breakers::{Breaker, Dependency};
use crate::domain::dead_letters::DeadLetter;
use crate::domain::envelope::JobEventEnvelope;
use crate::domain::job::{Job, JobId, JobStatus, Modality};
use crate::domain::lanes::{MappingState, QueueDepth};
use crate::domain::quotas::OwnerQuota;
use crate::domain::schedule::Schedule;
use crate::domain::uri::S3Uri;

/// What [`JobStore::create`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New,
    /// A job with that id was already stored (a retried request or a redelivered event).
    Existing(Box<Job>),
}

/// What [`ScheduleStore::start_slot`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotStart {
    /// The slot's job was created.
    New,
    /// An earlier firing of the slot created it: carry on with that job.
    Existing,
    /// The schedule was deleted, or moved past the slot, first: no job.
    Withdrawn,
}

/// What `GET /v1/jobs` asks for: an owner's jobs, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub status: Option<JobStatus>,
    pub modality: Option<Modality>,
    /// Only jobs created at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only the root jobs of workflow runs.
    pub runs_only: bool,
    pub limit: u32,
    /// Where the previous page ended (opaque to clients).
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub jobs: Vec<Job>,
    /// Present when more jobs may follow.
    pub cursor: Option<String>,
}

/// The sort key of a job in the owner indexes: creation time, then id.
pub fn owner_sort_key(job: &Job) -> String {
    format!("{}#{}", job.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), job.id)
}

/// The seq of the first of a change's `events`, checked as every store
/// checks a change: each event within the size limit, and the events one by
/// one in order up to `job.seq`.
pub fn first_seq_of_change(job: &Job, events: &[JobEventEnvelope]) -> Result<u64, StoreError> {
    for event in events {
        crate::domain::limits::check_event_size(event)?;
    }
    let first = (job.seq + 1).checked_sub(events.len() as u64).filter(|first| *first >= 1 && !events.is_empty());
    match first {
        Some(first) if events.iter().zip(first..).all(|(e, seq)| e.seq == Some(seq)) => Ok(first),
        _ => Err(StoreError::Corrupt {
            what: "change",
            reason: format!("events {:?} do not end job {} at seq {}", events.iter().map(|e| e.seq).collect::<Vec<_>>(), job.id, job.seq),
        }),
    }
}

/// Jobs and their append-only event logs.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// Stores a new job with its first events (seq 1 on), unless a job with
    /// its id exists.
    async fn create(&self, job: &Job, events: &[JobEventEnvelope]) -> Result<Created, StoreError>;

    async fn get(&self, id: &JobId) -> Result<Option<Job>, StoreError>;

    /// Stores `job` with the events that brought it to `job.seq` (one or
    /// more, in order), all or nothing, only if the stored job is still at
    /// the seq before the first of them; otherwise [`StoreError::Conflict`].
    ///
    /// The change is also refused if the job's [`Job::watched`] is no longer
    /// what `job` says: a writer that missed a new subscription reads the
    /// job again, so every event stored after [`JobStore::watch`] is marked
    /// for the fan-out.
    async fn commit(&self, job: &Job, events: &[JobEventEnvelope]) -> Result<(), StoreError>;

    /// Marks the job watched (a live subscription follows it) and returns it
    /// as it stands after the mark; `None` if there is no such job. Events
    /// up to the returned `seq` are the subscriber's to replay from the log;
    /// every later one reaches the fan-out.
    async fn watch(&self, id: &JobId) -> Result<Option<Job>, StoreError>;

    /// The job's events with `seq > after_seq`, in order, at most `limit`.
    async fn events(&self, id: &JobId, after_seq: u64, limit: u32) -> Result<Vec<JobEventEnvelope>, StoreError>;

    /// Jobs not yet terminal whose last change was before `since`, oldest
    /// first, at most `limit`: what the sweeper looks at, through an index
    /// that holds only such jobs (never a scan).
    async fn idle(&self, since: chrono::DateTime<chrono::Utc>, limit: u32) -> Result<Vec<Job>, StoreError>;

    /// How many of an owner's jobs are queued or processing, counted up to
    /// `at_most` (the quota it is checked against) through an index of the
    /// owner's unfinished jobs, in one query: eventually consistent, so a
    /// burst may pass a quota by a few.
    async fn active_count(&self, owner: &str, at_most: u32) -> Result<u32, StoreError>;

    /// An owner's unexpired jobs, newest first, through the owner indexes (never a scan).
    async fn list(&self, owner: &str, query: &ListQuery, now: chrono::DateTime<chrono::Utc>) -> Result<Page, StoreError>;
}

/// What a HEAD of an object tells (the ETag without its quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub etag: String,
}

/// The first bytes of an object and its total size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub bytes: Bytes,
    pub size: u64,
}

/// Object storage (S3).
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// At most `len` leading bytes (a ranged GET) and the object's size.
    async fn read_head(&self, uri: &S3Uri, len: usize) -> Result<ObjectHead, BlobError>;

    /// The whole object, refused with [`BlobError::TooLarge`] above `limit` bytes.
    async fn read_all(&self, uri: &S3Uri, limit: u64) -> Result<Bytes, BlobError>;

    /// The whole object streamed into the file at `path` (created or
    /// truncated); refused above `limit` bytes. Returns the bytes written.
    async fn download(&self, uri: &S3Uri, path: &std::path::Path, limit: u64) -> Result<u64, BlobError> {
        let body = self.read_all(uri, limit).await?;
        tokio::fs::write(path, &body).await.map_err(|e| BlobError::Unavailable(Box::new(e)))?;
        Ok(body.len() as u64)
    }

    /// Stores the object; returns what a HEAD of it would now tell (the
    /// write's answer carries the ETag, so no HEAD is needed).
    async fn write(&self, uri: &S3Uri, body: Bytes, content_type: &str) -> Result<ObjectMeta, BlobError>;

    async fn stat(&self, uri: &S3Uri) -> Result<ObjectMeta, BlobError>;

    /// A URL through which anyone holding it may PUT the object until it
    /// expires; with `content_length`, only a body of exactly that size.
    async fn presign_put(&self, uri: &S3Uri, expires_in: Duration, content_length: Option<u64>) -> Result<String, BlobError>;

    /// A URL through which anyone holding it may GET the object until it expires.
    async fn presign_get(&self, uri: &S3Uri, expires_in: Duration) -> Result<String, BlobError>;
}

/// Schedules, one item each in the table, found by when they are due.
#[async_trait]
pub trait ScheduleStore: Send + Sync + std::fmt::Debug {
    /// Stores a new schedule; `false` when its owner already has one by that name.
    async fn create(&self, schedule: &Schedule) -> Result<bool, StoreError>;

    async fn get(&self, owner: &str, name: &str) -> Result<Option<Schedule>, StoreError>;

    /// An owner's schedules, by name.
    async fn list(&self, owner: &str) -> Result<Vec<Schedule>, StoreError>;

    /// `false` when there was none by that name.
    async fn delete(&self, owner: &str, name: &str) -> Result<bool, StoreError>;

    /// Schedules due at `now`, soonest first, at most `limit`, through an
    /// index that holds only schedules with a next firing (never a scan).
    async fn due(&self, now: chrono::DateTime<chrono::Utc>, limit: u32) -> Result<Vec<Schedule>, StoreError>;

    /// Creates `job`, the job of `schedule`'s `slot`, with its first event,
    /// only while the stored schedule still waits for that slot, as one
    /// write: a schedule deleted before it starts no job, and one deleted
    /// after it had fired (a delete never races a job into existence).
    async fn start_slot(
        &self,
        schedule: &Schedule,
        slot: chrono::DateTime<chrono::Utc>,
        job: &Job,
        created: &JobEventEnvelope,
    ) -> Result<SlotStart, StoreError>;

    /// Stores `next` only if the stored schedule still waits for `slot`:
    /// `false` when another firing took the slot first, or it was deleted.
    async fn advance(&self, next: &Schedule, slot: chrono::DateTime<chrono::Utc>) -> Result<bool, StoreError>;
}

/// Finished jobs' processing times against the classifier's uncalibrated
/// estimates, per modality and day (see [`crate::domain::estimates`]).
#[async_trait]
pub trait EstimateStore: Send + Sync + std::fmt::Debug {
    /// Adds a finished job to its modality's totals of `day`.
    async fn add(
        &self,
        modality: crate::domain::job::Modality,
        day: chrono::NaiveDate,
        job: crate::domain::estimates::EstimateTotals,
    ) -> Result<(), StoreError>;

    /// The calibration the window of days up to `today` gives.
    async fn calibration(&self, today: chrono::NaiveDate) -> Result<crate::domain::estimates::Calibration, StoreError>;
}

/// The dependencies' circuit breakers, shared by every instance.
#[async_trait]
pub trait BreakerStore: Send + Sync + std::fmt::Debug {
    async fn get(&self, dependency: Dependency) -> Result<Option<Breaker>, StoreError>;

    /// Every breaker ever changed, closed ones included.
    async fn all(&self) -> Result<Vec<Breaker>, StoreError>;

    /// Stores `next` only over the version it was made from
    /// (`next.version - 1`; none stored for version 1): `false` when another
    /// instance changed the breaker first.
    async fn put(&self, next: &Breaker) -> Result<bool, StoreError>;
}

/// Message queues (SQS).
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    async fn send(&self, queue_url: &str, body: String) -> Result<(), QueueError> {
        self.send_after(queue_url, body, Duration::ZERO).await
    }

    /// Sends a message that stays invisible for `delay` (at most 15 minutes,
    /// SQS's limit): a workflow step's retry waiting out its backoff.
    async fn send_after(&self, queue_url: &str, body: String, delay: Duration) -> Result<(), QueueError>;

    /// Sends `bodies` to `queue_url` in as few requests as the queue takes
    /// (SQS: ten messages, 256 KiB a request); one answer per body, in
    /// order, so one refused message fails only its own sender.
    async fn send_batch(&self, queue_url: &str, bodies: Vec<String>) -> Vec<Result<(), QueueError>> {
        let mut answers = Vec::with_capacity(bodies.len());
        for body in bodies {
            answers.push(self.send(queue_url, body).await);
        }
        answers
    }

    /// Makes a received message visible again after `delay`: the backoff of a failed attempt.
    async fn retry_later(&self, queue_arn: &str, receipt_handle: &str, delay: Duration) -> Result<(), QueueError>;

    /// Sends `body` again to the queue `queue_arn`, visible after `delay` (at
    /// most 15 minutes), as a new message: work put back without spending
    /// one of its receives.
    async fn send_again(&self, queue_arn: &str, body: String, delay: Duration) -> Result<(), QueueError>;
}

/// Where stored job events are published: an SNS topic that the progress
/// fan-out (and later the workflow engine) subscribes to. Only the `publish`
/// function holds one; it reads the events from the table's stream.
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes `events` in order, stopping at the first that fails
    /// ([`PublishError::published`] says how many went out before it).
    async fn publish(&self, events: &[Publication]) -> Result<(), PublishError>;
}

/// A job event on its way to the topic, with what subscriptions filter on
/// beyond the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub event: JobEventEnvelope,
    /// Whether the job was watched when the event was stored: only these
    /// reach the live fan-out (see [`Job::watched`]).
    pub watched: bool,
}

/// An open WebSocket connection and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Connection {
    pub connection_id: String,
    pub owner: String,
    pub connected_at: chrono::DateTime<chrono::Utc>,
    /// Unix seconds; API Gateway closes connections after two hours, and TTL deletes the item.
    pub expires_at: i64,
}

/// A connection's interest in one job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub connection_id: String,
    pub job_id: JobId,
    pub expires_at: i64,
    /// Whether the client asked for the job's `job.log` events too.
    #[serde(default)]
    pub logs: bool,
}

/// Who follows a job, and how far all of them have been sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanOutState {
    pub subscriptions: Vec<Subscription>,
    /// The sequence number up to which the job's events have been pushed to
    /// every subscription (0 before the first fan-out).
    pub sent_seq: u64,
}

/// WebSocket connections and their job subscriptions.
#[async_trait]
pub trait ConnectionStore: Send + Sync + std::fmt::Debug {
    async fn connect(&self, connection: &Connection) -> Result<(), StoreError>;

    async fn connection(&self, connection_id: &str) -> Result<Option<Connection>, StoreError>;

    /// Forgets the connection and every subscription it had.
    async fn disconnect(&self, connection_id: &str) -> Result<(), StoreError>;

    async fn subscribe(&self, subscription: &Subscription) -> Result<(), StoreError>;

    async fn unsubscribe(&self, connection_id: &str, job_id: &JobId) -> Result<(), StoreError>;

    /// The job's subscriptions and its fan-out cursor, read together by key
    /// (never a scan): all a fan-out needs before it pushes.
    async fn fan_out_state(&self, job_id: &JobId) -> Result<FanOutState, StoreError>;

    /// Records that every event up to `sent_seq` has been pushed. The cursor
    /// only moves forward: a slower sender that finishes later leaves it be.
    async fn advance_fan_out(&self, job_id: &JobId, sent_seq: u64) -> Result<(), StoreError>;
}

/// Pushes messages to WebSocket clients (API Gateway's `@connections` API).
#[async_trait]
pub trait Notifier: Send + Sync + std::fmt::Debug {
    async fn send(&self, connection_id: &str, message: Bytes) -> Result<(), NotifyError>;
}

/// Per-owner quotas and the bytes each owner submitted per day (see [`crate::domain::quotas`]).
#[async_trait]
pub trait QuotaStore: Send + Sync + std::fmt::Debug {
    /// The owner's own quota, when an operator set one.
    async fn quota(&self, owner: &str) -> Result<Option<OwnerQuota>, StoreError>;
    async fn set_quota(&self, owner: &str, quota: &OwnerQuota) -> Result<(), StoreError>;
    /// Counts `bytes` against the owner's `day` unless that would take it past
    /// `limit`: `false` (nothing counted) when it would.
    async fn charge_bytes(&self, owner: &str, day: NaiveDate, bytes: u64, limit: u64) -> Result<bool, StoreError>;
    /// The bytes counted against the owner's `day`.
    async fn bytes_used(&self, owner: &str, day: NaiveDate) -> Result<u64, StoreError>;
}

/// Dead letters kept for operators (see [`crate::domain::dead_letters`]).
#[async_trait]
pub trait DeadLetterStore: Send + Sync + std::fmt::Debug {
    /// Keeps `letter`; `false` when one with its message id is already kept (a redelivery).
    async fn keep(&self, letter: &DeadLetter) -> Result<bool, StoreError>;
    /// Every kept letter, oldest first, up to `limit`.
    async fn list(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError>;
    /// Forgets a letter (redriven or moot); forgetting one already gone is not an error.
    async fn forget(&self, letter: &DeadLetter) -> Result<(), StoreError>;
}

/// Pauses and resumes lanes (their event-source mappings) and reads their queues' depth.
#[async_trait]
pub trait LaneControl: Send + Sync + std::fmt::Debug {
    async fn state(&self, mapping_id: &str) -> Result<MappingState, ControlError>;
    /// Enables or disables the mapping; returns the state Lambda reports right after.
    async fn set_enabled(&self, mapping_id: &str, enabled: bool) -> Result<MappingState, ControlError>;
    async fn depth(&self, queue_url: &str) -> Result<QueueDepth, ControlError>;
}

/// What a function that keeps jobs, reads and writes blobs and sends
/// commands is handed at start: the three ports and its own typed settings.
/// Each such function crate names it `pub type Deps = ports::Deps<Config>;`.
#[derive(Debug, Clone)]
pub struct Deps<C> {
    pub jobs: Arc<dyn JobStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn Queue>,
    /// On the same table as the jobs; only `api` and `schedules` use it.
    pub schedules: Arc<dyn ScheduleStore>,
    /// Only `sweeper` uses it: a job waiting in a paused lane is not stalled.
    pub lanes: Arc<dyn LaneControl>,
    /// Only `dead-letter` uses it: it keeps each dead letter for operators.
    pub dead_letters: Arc<dyn DeadLetterStore>,
    /// Only `api` uses it: per-owner quotas and the bytes submitted per day.
    pub quotas: Arc<dyn QuotaStore>,
    /// The processors' circuit breakers, and when they open.
    pub breakers: Arc<dyn BreakerStore>,
    pub breaker_policy: crate::domain::breakers::BreakerPolicy,
    /// `classify` reads the calibration of its estimates from it; the
    /// processors add each job they complete.
    pub estimates: Arc<dyn EstimateStore>,
    pub config: C,
}

/// What the WebSocket functions (`ws`, `progress`) are handed: the job
/// store, the connection store and notifier, a queue for retries, and their
/// own settings. Each names it `pub type Deps = ports::RealtimeDeps<Config>;`.
#[derive(Debug, Clone)]
pub struct RealtimeDeps<C> {
    pub jobs: Arc<dyn JobStore>,
    pub connections: Arc<dyn ConnectionStore>,
    pub notifier: Arc<dyn Notifier>,
    pub queue: Arc<dyn Queue>,
    pub config: C,
}

/// What `publish` is handed: the event bus (no other function holds one),
/// a queue for the records it dead-letters, and its settings.
#[derive(Debug, Clone)]
pub struct PublishDeps<C> {
    pub bus: Arc<dyn EventBus>,
    pub queue: Arc<dyn Queue>,
    pub config: C,
}

/// What `ops`, the operator API, is handed: the lanes' controls, the kept
/// dead letters, the jobs they name and a queue to send them back to, the
/// owners' quotas, and its settings. (`sweeper` reads lanes too, through [`Deps::lanes`].)
#[derive(Debug, Clone)]
pub struct OpsDeps<C> {
    pub lanes: Arc<dyn LaneControl>,
    pub dead_letters: Arc<dyn DeadLetterStore>,
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<dyn Queue>,
    pub quotas: Arc<dyn QuotaStore>,
    pub breakers: Arc<dyn BreakerStore>,
    pub config: C,
}

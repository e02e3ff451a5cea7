//! In-memory fakes of the ports, with the same semantics as the AWS adapters
//! (conditional commits, ranged reads, size limits), for unit tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use chrono::NaiveDate;

use crate::domain::breakers::{Breaker, Dependency};
use crate::domain::dead_letters::DeadLetter;
use crate::domain::envelope::JobEventEnvelope;
use crate::domain::job::{Job, JobId};
use crate::domain::lanes::{MappingState, QueueDepth};
use crate::domain::quotas::OwnerQuota;
use crate::domain::schedule::Schedule;
use crate::domain::uri::S3Uri;
use crate::ports::QuotaStore;
use crate::ports::error::{BlobError, ControlError, NotifyError, PublishError, QueueError, StoreError};
use crate::ports::{
    BlobStore, BreakerStore, Connection, ConnectionStore, Created, DeadLetterStore, EventBus, FanOutState, JobStore, LaneControl,
    ListQuery, Notifier, ObjectHead, ObjectMeta, Page, Publication, Queue, ScheduleStore, SlotStart, Subscription, owner_sort_key,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not hide the state from the others.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A job and its event log by sequence number.
type JobWithLog = (Job, BTreeMap<u64, JobEventEnvelope>);

/// Writes a change as the table does, all or nothing: the change's events
/// into their log slots and the job, only if the job is still at the
/// sequence number before them and its watched mark is what the writer saw.
#[derive(Debug, Default)]
pub struct MemoryJobStore {
    jobs: Mutex<HashMap<JobId, JobWithLog>>,
    reads: Mutex<usize>,
}

impl MemoryJobStore {
    /// How many times a job was read (each a `GetItem` on DynamoDB).
    pub fn reads(&self) -> usize {
        *lock(&self.reads)
    }

    /// Moves a job past its retention, as if it were older than [`crate::domain::job::RETENTION`].
    pub fn expire(&self, id: &JobId) {
        if let Some((job, _)) = lock(&self.jobs).get_mut(id) {
            job.expires_at = chrono::Utc::now().timestamp() - 1;
        }
    }

    /// Moves a job's last change back by `by`, as if nothing had happened to it since.
    pub fn age(&self, id: &JobId, by: chrono::Duration) {
        if let Some((job, _)) = lock(&self.jobs).get_mut(id) {
            job.updated_at -= by;
        }
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create(&self, job: &Job, events: &[JobEventEnvelope]) -> Result<Created, StoreError> {
        self.create_now(job, events)
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        *lock(&self.reads) += 1;
        Ok(lock(&self.jobs).get(id).map(|(job, _)| job.clone()))
    }

    async fn commit(&self, job: &Job, events: &[JobEventEnvelope]) -> Result<(), StoreError> {
        let previous = crate::ports::first_seq_of_change(job, events)? - 1;
        // All or nothing, under one lock, as the table's transaction.
        let mut jobs = lock(&self.jobs);
        let Some((stored, log)) = jobs.get_mut(&job.id) else { return Err(StoreError::Conflict(job.id.clone())) };
        if stored.seq != previous || stored.watched != job.watched {
            return Err(StoreError::Conflict(job.id.clone()));
        }
        *stored = job.clone();
        log.extend(events.iter().map(|e| (e.seq.unwrap_or_default(), e.clone())));
        Ok(())
    }

    async fn watch(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        Ok(lock(&self.jobs).get_mut(id).map(|(job, _)| {
            job.watched = true;
            job.clone()
        }))
    }

    async fn events(&self, id: &JobId, after_seq: u64, limit: u32) -> Result<Vec<JobEventEnvelope>, StoreError> {
        Ok(lock(&self.jobs)
            .get(id)
            .map(|(_, events)| events.range(after_seq + 1..).take(limit as usize).map(|(_, e)| e.clone()).collect())
            .unwrap_or_default())
    }

    async fn idle(&self, since: chrono::DateTime<chrono::Utc>, limit: u32) -> Result<Vec<Job>, StoreError> {
        let mut idle: Vec<Job> =
            lock(&self.jobs).values().map(|(job, _)| job).filter(|j| !j.status.is_terminal() && j.updated_at < since).cloned().collect();
        idle.sort_by_key(|j| j.updated_at);
        idle.truncate(limit as usize);
        Ok(idle)
    }

    async fn active_count(&self, owner: &str, at_most: u32) -> Result<u32, StoreError> {
        let jobs = lock(&self.jobs);
        let active = jobs.values().filter(|(j, _)| j.owner == owner && !j.status.is_terminal()).count();
        Ok((active as u32).min(at_most))
    }

    async fn list(&self, owner: &str, query: &ListQuery, now: chrono::DateTime<chrono::Utc>) -> Result<Page, StoreError> {
        let jobs = lock(&self.jobs);
        let mut matching: Vec<(String, &Job)> = jobs
            .values()
            .map(|(job, _)| (owner_sort_key(job), job))
            .filter(|(_, j)| j.owner == owner && !j.is_expired(now))
            .filter(|(_, j)| query.status.is_none_or(|s| j.status == s) && query.modality.is_none_or(|m| j.modality == Some(m)))
            .filter(|(_, j)| query.since.is_none_or(|t| j.created_at >= t) && (!query.runs_only || j.workflow.is_some()))
            .filter(|(sort, _)| query.cursor.as_ref().is_none_or(|c| sort < c))
            .collect();
        matching.sort_by(|a, b| b.0.cmp(&a.0));
        let more = matching.len() > query.limit as usize;
        matching.truncate(query.limit as usize);
        let cursor = more.then(|| matching.last().map(|(sort, _)| sort.clone())).flatten();
        Ok(Page { jobs: matching.into_iter().map(|(_, j)| j.clone()).collect(), cursor })
    }
}

#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    objects: Mutex<HashMap<S3Uri, (Bytes, String)>>,
}

impl MemoryBlobStore {
    /// A stored body's size and a made-up ETag (derived from its length).
    fn meta(body: &Bytes) -> ObjectMeta {
        ObjectMeta { size: body.len() as u64, etag: format!("{:x}", body.len()) }
    }

    pub fn insert(&self, uri: &S3Uri, body: impl Into<Bytes>) {
        lock(&self.objects).insert(uri.clone(), (body.into(), "application/octet-stream".into()));
    }

    pub fn object(&self, uri: &S3Uri) -> Option<(Bytes, String)> {
        lock(&self.objects).get(uri).cloned()
    }
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn read_head(&self, uri: &S3Uri, len: usize) -> Result<ObjectHead, BlobError> {
        let (body, _) = self.object(uri).ok_or_else(|| BlobError::NotFound(uri.clone()))?;
        Ok(ObjectHead { size: body.len() as u64, bytes: body.slice(..len.min(body.len())) })
    }

    async fn read_all(&self, uri: &S3Uri, limit: u64) -> Result<Bytes, BlobError> {
        let (body, _) = self.object(uri).ok_or_else(|| BlobError::NotFound(uri.clone()))?;
        if body.len() as u64 > limit {
            return Err(BlobError::TooLarge { uri: uri.clone(), size: body.len() as u64, limit });
        }
        Ok(body)
    }

    async fn write(&self, uri: &S3Uri, body: Bytes, content_type: &str) -> Result<ObjectMeta, BlobError> {
        let meta = Self::meta(&body);
        lock(&self.objects).insert(uri.clone(), (body, content_type.to_owned()));
        Ok(meta)
    }

    async fn stat(&self, uri: &S3Uri) -> Result<ObjectMeta, BlobError> {
        let (body, _) = self.object(uri).ok_or_else(|| BlobError::NotFound(uri.clone()))?;
        Ok(Self::meta(&body))
    }

    async fn presign_put(&self, uri: &S3Uri, expires_in: Duration, _content_length: Option<u64>) -> Result<String, BlobError> {
        Ok(format!("memory://{}/{}?method=PUT&expires={}", uri.bucket, uri.key, expires_in.as_secs()))
    }

    async fn presign_get(&self, uri: &S3Uri, expires_in: Duration) -> Result<String, BlobError> {
        Ok(format!("memory://{}/{}?method=GET&expires={}", uri.bucket, uri.key, expires_in.as_secs()))
    }
}

/// A message the fake queue was asked to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub queue_url: String,
    pub body: String,
    /// How long the message stays invisible after sending.
    pub delay: Duration,
}

#[derive(Debug, Default)]
pub struct MemoryQueue {
    sent: Mutex<Vec<SentMessage>>,
    batches: Mutex<Vec<usize>>,
    retries: Mutex<Vec<(String, Duration)>>,
}

impl MemoryQueue {
    pub fn sent(&self) -> Vec<SentMessage> {
        lock(&self.sent).clone()
    }

    /// How many messages each `send_batch` carried, in order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        lock(&self.batches).clone()
    }

    /// `(receipt_handle, delay)` of every message put back for a later retry.
    pub fn retries(&self) -> Vec<(String, Duration)> {
        lock(&self.retries).clone()
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send_after(&self, queue_url: &str, body: String, delay: Duration) -> Result<(), QueueError> {
        lock(&self.sent).push(SentMessage { queue_url: queue_url.to_owned(), body, delay });
        Ok(())
    }

    async fn send_batch(&self, queue_url: &str, bodies: Vec<String>) -> Vec<Result<(), QueueError>> {
        lock(&self.batches).push(bodies.len());
        let mut sent = lock(&self.sent);
        bodies
            .into_iter()
            .map(|body| {
                sent.push(SentMessage { queue_url: queue_url.to_owned(), body, delay: Duration::ZERO });
                Ok(())
            })
            .collect()
    }

    async fn retry_later(&self, _queue_arn: &str, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        lock(&self.retries).push((receipt_handle.to_owned(), delay));
        Ok(())
    }

    /// Recorded as sent to the queue's ARN.
    async fn send_again(&self, queue_arn: &str, body: String, delay: Duration) -> Result<(), QueueError> {
        self.send_after(queue_arn, body, delay.min(Duration::from_secs(900))).await
    }
}

/// Estimate totals by modality and day.
#[derive(Debug, Default)]
pub struct MemoryEstimates {
    days: Mutex<BTreeMap<(String, chrono::NaiveDate), crate::domain::estimates::EstimateTotals>>,
    adds: Mutex<usize>,
}

impl MemoryEstimates {
    /// How many times totals were added (each a write on DynamoDB).
    pub fn adds(&self) -> usize {
        *lock(&self.adds)
    }
}

#[async_trait]
impl crate::ports::EstimateStore for MemoryEstimates {
    async fn add(
        &self,
        modality: crate::domain::job::Modality,
        day: chrono::NaiveDate,
        job: crate::domain::estimates::EstimateTotals,
    ) -> Result<(), StoreError> {
        *lock(&self.adds) += 1;
        let mut days = lock(&self.days);
        let totals = days.entry((modality.to_string(), day)).or_default();
        totals.estimated_s += job.estimated_s;
        totals.actual_s += job.actual_s;
        totals.jobs += job.jobs;
        Ok(())
    }

    async fn calibration(&self, today: chrono::NaiveDate) -> Result<crate::domain::estimates::Calibration, StoreError> {
        let days = lock(&self.days);
        let within = days.iter().filter(|((_, day), _)| crate::domain::estimates::in_window(*day, today));
        Ok(crate::domain::estimates::Calibration::from_totals(within.filter_map(|((m, _), t)| Some((m.parse().ok()?, *t)))))
    }
}

/// Circuit breakers by dependency, with the store's version check.
#[derive(Debug, Default)]
pub struct MemoryBreakers {
    breakers: Mutex<BTreeMap<Dependency, Breaker>>,
}

#[async_trait]
impl BreakerStore for MemoryBreakers {
    async fn get(&self, dependency: Dependency) -> Result<Option<Breaker>, StoreError> {
        Ok(lock(&self.breakers).get(&dependency).cloned())
    }

    async fn all(&self) -> Result<Vec<Breaker>, StoreError> {
        Ok(lock(&self.breakers).values().cloned().collect())
    }

    async fn put(&self, next: &Breaker) -> Result<bool, StoreError> {
        let mut all = lock(&self.breakers);
        let stored = all.get(&next.dependency).map_or(0, |b| b.version);
        if stored + 1 != next.version {
            return Ok(false);
        }
        all.insert(next.dependency, next.clone());
        Ok(true)
    }
}

#[derive(Debug, Default)]
pub struct MemoryEventBus {
    published: Mutex<Vec<Publication>>,
    /// Event type and how many more times offering it fails.
    failing: Mutex<Option<(&'static str, usize)>>,
}

impl MemoryEventBus {
    pub fn published(&self) -> Vec<JobEventEnvelope> {
        lock(&self.published).iter().map(|p| p.event.clone()).collect()
    }

    /// What was published, with the marks subscriptions filter on.
    pub fn publications(&self) -> Vec<Publication> {
        lock(&self.published).clone()
    }

    /// Makes the next `times` offers of an `event_type` event fail as an unreachable topic would.
    pub fn fail_on(&self, event_type: &'static str, times: usize) {
        *lock(&self.failing) = Some((event_type, times));
    }
}

#[async_trait]
impl EventBus for MemoryEventBus {
    async fn publish(&self, events: &[Publication]) -> Result<(), PublishError> {
        let mut failing = lock(&self.failing);
        for (published, event) in events.iter().enumerate() {
            if let Some((event_type, left)) = failing.as_mut()
                && *event_type == event.event.body.event_type()
                && *left > 0
            {
                *left -= 1;
                return Err(PublishError::Unavailable { published, source: "topic unreachable (fake)".into() });
            }
            lock(&self.published).push(event.clone());
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct MemoryConnections {
    connections: Mutex<HashMap<String, Connection>>,
    /// By job, then connection.
    subscriptions: Mutex<BTreeMap<(JobId, String), Subscription>>,
    fan_out_cursors: Mutex<HashMap<JobId, u64>>,
}

#[async_trait]
impl ConnectionStore for MemoryConnections {
    async fn connect(&self, connection: &Connection) -> Result<(), StoreError> {
        lock(&self.connections).insert(connection.connection_id.clone(), connection.clone());
        Ok(())
    }

    async fn connection(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        Ok(lock(&self.connections).get(connection_id).cloned())
    }

    async fn disconnect(&self, connection_id: &str) -> Result<(), StoreError> {
        lock(&self.connections).remove(connection_id);
        lock(&self.subscriptions).retain(|(_, c), _| c != connection_id);
        Ok(())
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let key = (subscription.job_id.clone(), subscription.connection_id.clone());
        lock(&self.subscriptions).insert(key, subscription.clone());
        Ok(())
    }

    async fn unsubscribe(&self, connection_id: &str, job_id: &JobId) -> Result<(), StoreError> {
        lock(&self.subscriptions).remove(&(job_id.clone(), connection_id.to_owned()));
        Ok(())
    }

    async fn fan_out_state(&self, job_id: &JobId) -> Result<FanOutState, StoreError> {
        let subscriptions = lock(&self.subscriptions).iter().filter(|((j, _), _)| j == job_id).map(|(_, s)| s.clone()).collect();
        Ok(FanOutState { subscriptions, sent_seq: lock(&self.fan_out_cursors).get(job_id).copied().unwrap_or(0) })
    }

    async fn advance_fan_out(&self, job_id: &JobId, sent_seq: u64) -> Result<(), StoreError> {
        let mut cursors = lock(&self.fan_out_cursors);
        let cursor = cursors.entry(job_id.clone()).or_default();
        *cursor = (*cursor).max(sent_seq);
        Ok(())
    }
}

/// Records what was pushed to each connection; connections marked gone refuse.
#[derive(Debug, Default)]
pub struct MemoryNotifier {
    sent: Mutex<Vec<(String, Bytes)>>,
    gone: Mutex<Vec<String>>,
    throttled: Mutex<HashMap<String, usize>>,
}

impl MemoryNotifier {
    /// Makes the next `n` pushes to `connection_id` fail as a throttled API would.
    pub fn throttle_next(&self, connection_id: &str, n: usize) {
        lock(&self.throttled).insert(connection_id.to_owned(), n);
    }

    pub fn mark_gone(&self, connection_id: &str) {
        lock(&self.gone).push(connection_id.to_owned());
    }

    /// Every message pushed to `connection_id`, as JSON.
    pub fn messages(&self, connection_id: &str) -> Vec<serde_json::Value> {
        lock(&self.sent)
            .iter()
            .filter(|(c, _)| c == connection_id)
            .map(|(_, m)| serde_json::from_slice(m).unwrap_or_else(|e| panic!("pushed message is not JSON: {e}")))
            .collect()
    }
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn send(&self, connection_id: &str, message: Bytes) -> Result<(), NotifyError> {
        if lock(&self.gone).iter().any(|c| c == connection_id) {
            return Err(NotifyError::Gone(connection_id.to_owned()));
        }
        if let Some(left) = lock(&self.throttled).get_mut(connection_id).filter(|n| **n > 0) {
            *left -= 1;
            return Err(NotifyError::Unavailable("throttled (fake)".into()));
        }
        lock(&self.sent).push((connection_id.to_owned(), message));
        Ok(())
    }
}

impl MemoryJobStore {
    fn create_now(&self, job: &Job, events: &[JobEventEnvelope]) -> Result<Created, StoreError> {
        if crate::ports::first_seq_of_change(job, events)? != 1 {
            return Err(StoreError::Corrupt { what: "change", reason: "a new job starts its log at seq 1".into() });
        }
        let mut jobs = lock(&self.jobs);
        if let Some((existing, _)) = jobs.get(&job.id) {
            return Ok(Created::Existing(Box::new(existing.clone())));
        }
        jobs.insert(job.id.clone(), (job.clone(), events.iter().map(|e| (e.seq.unwrap_or_default(), e.clone())).collect()));
        Ok(Created::New)
    }
}

/// Schedules by owner and name, starting their slots' jobs in `jobs`.
#[derive(Debug)]
pub struct MemoryScheduleStore {
    schedules: Mutex<BTreeMap<(String, String), Schedule>>,
    jobs: std::sync::Arc<MemoryJobStore>,
}

impl MemoryScheduleStore {
    pub fn new(jobs: std::sync::Arc<MemoryJobStore>) -> Self {
        Self { schedules: Mutex::default(), jobs }
    }
}

#[async_trait]
impl ScheduleStore for MemoryScheduleStore {
    async fn create(&self, schedule: &Schedule) -> Result<bool, StoreError> {
        let mut all = lock(&self.schedules);
        let key = (schedule.owner.clone(), schedule.name.clone());
        if all.contains_key(&key) {
            return Ok(false);
        }
        all.insert(key, schedule.clone());
        Ok(true)
    }

    async fn get(&self, owner: &str, name: &str) -> Result<Option<Schedule>, StoreError> {
        Ok(lock(&self.schedules).get(&(owner.to_owned(), name.to_owned())).cloned())
    }

    async fn list(&self, owner: &str) -> Result<Vec<Schedule>, StoreError> {
        Ok(lock(&self.schedules).values().filter(|s| s.owner == owner).cloned().collect())
    }

    async fn delete(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.schedules).remove(&(owner.to_owned(), name.to_owned())).is_some())
    }

    async fn due(&self, now: chrono::DateTime<chrono::Utc>, limit: u32) -> Result<Vec<Schedule>, StoreError> {
        let mut due: Vec<Schedule> = lock(&self.schedules).values().filter(|s| s.next_at.is_some_and(|t| t <= now)).cloned().collect();
        due.sort_by_key(|s| s.next_at);
        due.truncate(limit as usize);
        Ok(due)
    }

    async fn start_slot(
        &self,
        schedule: &Schedule,
        slot: chrono::DateTime<chrono::Utc>,
        job: &Job,
        created: &JobEventEnvelope,
    ) -> Result<SlotStart, StoreError> {
        // Held across the job's creation: a delete waits for it, as in one transaction.
        let all = lock(&self.schedules);
        let waiting = all.get(&(schedule.owner.clone(), schedule.name.clone())).is_some_and(|s| s.next_at == Some(slot));
        if lock(&self.jobs.jobs).contains_key(&job.id) {
            return Ok(SlotStart::Existing);
        }
        if !waiting {
            return Ok(SlotStart::Withdrawn);
        }
        Ok(match self.jobs.create_now(job, std::slice::from_ref(created))? {
            Created::New => SlotStart::New,
            Created::Existing(_) => SlotStart::Existing,
        })
    }

    async fn advance(&self, next: &Schedule, slot: chrono::DateTime<chrono::Utc>) -> Result<bool, StoreError> {
        let mut all = lock(&self.schedules);
        match all.get_mut(&(next.owner.clone(), next.name.clone())) {
            Some(stored) if stored.next_at == Some(slot) => {
                *stored = next.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Event-source mappings (enabled unless disabled) and queue depths set by the test.
#[derive(Debug, Default)]
pub struct MemoryLaneControl {
    disabled: Mutex<std::collections::HashSet<String>>,
    depths: Mutex<HashMap<String, QueueDepth>>,
    /// Mapping ids that answer `NotFound`.
    missing: Mutex<std::collections::HashSet<String>>,
}

impl MemoryLaneControl {
    pub fn set_depth(&self, queue_url: &str, depth: QueueDepth) {
        lock(&self.depths).insert(queue_url.to_owned(), depth);
    }

    /// The mapping is deleted: every call about it fails.
    pub fn remove(&self, mapping_id: &str) {
        lock(&self.missing).insert(mapping_id.to_owned());
    }

    fn check(&self, mapping_id: &str) -> Result<(), ControlError> {
        if lock(&self.missing).contains(mapping_id) { Err(ControlError::NotFound(mapping_id.to_owned())) } else { Ok(()) }
    }
}

#[async_trait]
impl LaneControl for MemoryLaneControl {
    async fn state(&self, mapping_id: &str) -> Result<MappingState, ControlError> {
        self.check(mapping_id)?;
        Ok(if lock(&self.disabled).contains(mapping_id) { MappingState::Disabled } else { MappingState::Enabled })
    }

    async fn set_enabled(&self, mapping_id: &str, enabled: bool) -> Result<MappingState, ControlError> {
        self.check(mapping_id)?;
        let mut disabled = lock(&self.disabled);
        // Lambda answers an update with the transition under way.
        Ok(if enabled {
            disabled.remove(mapping_id);
            MappingState::Enabling
        } else {
            disabled.insert(mapping_id.to_owned());
            MappingState::Disabling
        })
    }

    async fn depth(&self, queue_url: &str) -> Result<QueueDepth, ControlError> {
        Ok(lock(&self.depths).get(queue_url).copied().unwrap_or_default())
    }
}

/// Dead letters in memory, keyed as the table keys them.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    letters: Mutex<BTreeMap<(String, String), DeadLetter>>,
}

#[async_trait]
impl DeadLetterStore for MemoryDeadLetters {
    async fn keep(&self, letter: &DeadLetter) -> Result<bool, StoreError> {
        let key = (letter.dlq.clone(), letter.message_id.clone());
        let mut letters = lock(&self.letters);
        if letters.contains_key(&key) {
            return Ok(false);
        }
        letters.insert(key, letter.clone());
        Ok(true)
    }

    async fn list(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let mut all: Vec<DeadLetter> = lock(&self.letters).values().cloned().collect();
        all.sort_by(|a, b| a.dead_lettered_at.cmp(&b.dead_lettered_at).then_with(|| a.message_id.cmp(&b.message_id)));
        all.truncate(limit as usize);
        Ok(all)
    }

    async fn forget(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        lock(&self.letters).remove(&(letter.dlq.clone(), letter.message_id.clone()));
        Ok(())
    }
}

/// Quotas and daily byte counts in memory.
#[derive(Debug, Default)]
pub struct MemoryQuotas {
    quotas: Mutex<HashMap<String, OwnerQuota>>,
    bytes: Mutex<HashMap<(String, NaiveDate), u64>>,
}

#[async_trait]
impl QuotaStore for MemoryQuotas {
    async fn quota(&self, owner: &str) -> Result<Option<OwnerQuota>, StoreError> {
        Ok(lock(&self.quotas).get(owner).copied())
    }

    async fn set_quota(&self, owner: &str, quota: &OwnerQuota) -> Result<(), StoreError> {
        lock(&self.quotas).insert(owner.to_owned(), *quota);
        Ok(())
    }

    async fn charge_bytes(&self, owner: &str, day: NaiveDate, bytes: u64, limit: u64) -> Result<bool, StoreError> {
        let mut counts = lock(&self.bytes);
        let used = counts.entry((owner.to_owned(), day)).or_default();
        if used.saturating_add(bytes) > limit {
            return Ok(false);
        }
        *used += bytes;
        Ok(true)
    }

    async fn bytes_used(&self, owner: &str, day: NaiveDate) -> Result<u64, StoreError> {
        Ok(lock(&self.bytes).get(&(owner.to_owned(), day)).copied().unwrap_or_default())
    }
}

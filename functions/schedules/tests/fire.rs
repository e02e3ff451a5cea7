//! Ticks against in-memory ports: each due slot starts one job, once.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use prism_shared::domain::schedule::{Schedule, ScheduledJob, When};
use prism_shared::ports::{JobStore, ScheduleStore, SlotStart};
use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore, MemoryQueue, MemoryScheduleStore};
use prism_shared::{Job, JobEventEnvelope, JobStatus, Priority, S3Uri, StoreError};
use schedules::{Config, Deps, Tick, handle};

struct World {
    jobs: Arc<MemoryJobStore>,
    blobs: Arc<MemoryBlobStore>,
    queue: Arc<MemoryQueue>,
    schedules: Arc<MemoryScheduleStore>,
    deps: Deps,
}

fn world() -> World {
    let jobs = Arc::new(MemoryJobStore::default());
    let (blobs, queue, schedules) =
        (Arc::new(MemoryBlobStore::default()), Arc::new(MemoryQueue::default()), Arc::new(MemoryScheduleStore::new(jobs.clone())));
    let config = Config { classify_queue_url: "http://sqs/classify".into() };
    let deps = Deps {
        jobs: jobs.clone(),
        blobs: blobs.clone(),
        queue: queue.clone(),
        schedules: schedules.clone(),
        lanes: Arc::new(prism_shared::testing::memory::MemoryLaneControl::default()),
        dead_letters: std::sync::Arc::new(prism_shared::testing::memory::MemoryDeadLetters::default()),
        quotas: std::sync::Arc::new(prism_shared::testing::memory::MemoryQuotas::default()),
        breakers: std::sync::Arc::new(prism_shared::testing::memory::MemoryBreakers::default()),
        breaker_policy: prism_shared::domain::breakers::BreakerPolicy::default(),
        estimates: std::sync::Arc::new(prism_shared::testing::memory::MemoryEstimates::default()),
        config,
    };
    World { jobs, blobs, queue, schedules, deps }
}

fn source() -> S3Uri {
    "s3://b/uploads/tester/report.txt".parse().expect("uri")
}

async fn schedule(w: &World, when: When) -> Schedule {
    let job = ScheduledJob { source: source(), priority: Priority::Low, workflow: None, metadata: Default::default() };
    let schedule = Schedule::new("tester".into(), "nightly".into(), when, job, Utc::now());
    assert!(w.schedules.create(&schedule).await.expect("create"));
    schedule
}

#[tokio::test]
async fn a_due_one_time_schedule_starts_one_job_on_its_object_and_is_done() {
    let w = world();
    w.blobs.insert(&source(), b"numbers".to_vec());
    let at = Utc::now() - Duration::seconds(1);
    let s = schedule(&w, When::At(at)).await;
    assert_eq!(handle(&w.deps).await.expect("tick"), Tick { due: 1, fired: 1, failed: 0 });
    let job = w.jobs.get(&s.job_id(at)).await.expect("store").expect("the slot's job");
    assert_eq!((job.status, job.priority), (JobStatus::Queued, Priority::Low));
    assert_eq!(job.input.map(|i| i.uri), Some(source()));
    assert_eq!(job.metadata.get("schedule").map(String::as_str), Some("nightly"));
    assert_eq!(w.queue.sent().len(), 1, "sent to classify");
    assert_eq!(handle(&w.deps).await.expect("tick"), Tick::default(), "nothing is due any more");
    let stored = w.schedules.get("tester", "nightly").await.expect("get").expect("kept");
    assert_eq!((stored.next_at, stored.fired, stored.last_job), (None, 1, Some(s.job_id(at))));
}

#[tokio::test]
async fn two_ticks_firing_the_same_slot_start_one_job() {
    let w = world();
    w.blobs.insert(&source(), b"numbers".to_vec());
    let start = Utc::now() - Duration::seconds(35);
    let s = schedule(&w, When::Every { start, every_s: 10 }).await;
    let (a, b) = tokio::join!(handle(&w.deps), handle(&w.deps));
    assert_eq!(a.expect("tick").fired + b.expect("tick").fired, 1, "one advance wins the slot");
    let job = w.jobs.get(&s.job_id(start)).await.expect("store").expect("job");
    assert_eq!(w.jobs.events(&job.id, 0, 10).await.expect("events").iter().filter(|e| e.body.event_type() == "job.created").count(), 1);
    let stored = w.schedules.get("tester", "nightly").await.expect("get").expect("kept");
    assert_eq!(stored.next_at, Some(start + Duration::seconds(40)), "missed slots are skipped, not fired in a burst");
}

#[tokio::test]
async fn an_object_gone_by_its_slot_fails_that_job_and_the_schedule_goes_on() {
    let w = world();
    let at = Utc::now() - Duration::seconds(1);
    let s = schedule(&w, When::At(at)).await;
    handle(&w.deps).await.expect("tick");
    let job = w.jobs.get(&s.job_id(at)).await.expect("store").expect("job");
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.map(|e| e.code), Some("input_missing".into()));
    assert!(w.queue.sent().is_empty());
}

/// The schedule store with a delete landing between a tick's read of the
/// due schedules and its firing of them.
#[derive(Debug)]
struct DeletedAfterRead(Arc<MemoryScheduleStore>);

#[async_trait::async_trait]
impl ScheduleStore for DeletedAfterRead {
    async fn create(&self, schedule: &Schedule) -> Result<bool, StoreError> {
        self.0.create(schedule).await
    }
    async fn get(&self, owner: &str, name: &str) -> Result<Option<Schedule>, StoreError> {
        self.0.get(owner, name).await
    }
    async fn list(&self, owner: &str) -> Result<Vec<Schedule>, StoreError> {
        self.0.list(owner).await
    }
    async fn delete(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        self.0.delete(owner, name).await
    }
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>, StoreError> {
        let due = self.0.due(now, limit).await?;
        for s in &due {
            assert!(self.0.delete(&s.owner, &s.name).await?, "deleted");
        }
        Ok(due)
    }
    async fn start_slot(&self, s: &Schedule, slot: DateTime<Utc>, job: &Job, created: &JobEventEnvelope) -> Result<SlotStart, StoreError> {
        self.0.start_slot(s, slot, job, created).await
    }
    async fn advance(&self, next: &Schedule, slot: DateTime<Utc>) -> Result<bool, StoreError> {
        self.0.advance(next, slot).await
    }
}

#[tokio::test]
async fn a_schedule_deleted_after_a_tick_read_it_starts_no_job() {
    let mut w = world();
    w.blobs.insert(&source(), b"numbers".to_vec());
    let start = Utc::now() - Duration::seconds(5);
    let s = schedule(&w, When::Every { start, every_s: 10 }).await;
    w.deps.schedules = Arc::new(DeletedAfterRead(w.schedules.clone()));
    assert_eq!(handle(&w.deps).await.expect("tick"), Tick { due: 1, fired: 0, failed: 0 });
    assert_eq!(w.jobs.get(&s.job_id(start)).await.expect("store"), None, "no job for a deleted schedule");
    assert!(w.queue.sent().is_empty());
}

//! Ticks against in-memory ports: each due slot starts one job, once.

use std::sync::Arc;

use chrono::{Duration, Utc};
use prism_shared::domain::schedule::{Schedule, ScheduledJob, When};
use prism_shared::ports::{JobStore, ScheduleStore};
use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore, MemoryQueue, MemoryScheduleStore};
use prism_shared::{JobStatus, Priority, S3Uri};
use schedules::{Config, Deps, Tick, handle};

struct World {
    jobs: Arc<MemoryJobStore>,
    blobs: Arc<MemoryBlobStore>,
    queue: Arc<MemoryQueue>,
    schedules: Arc<MemoryScheduleStore>,
    deps: Deps,
}

fn world() -> World {
    let (jobs, blobs, queue, schedules) = (
        Arc::new(MemoryJobStore::default()),
        Arc::new(MemoryBlobStore::default()),
        Arc::new(MemoryQueue::default()),
        Arc::new(MemoryScheduleStore::default()),
    );
    let config = Config { classify_queue_url: "http://sqs/classify".into() };
    let deps = Deps {
        jobs: jobs.clone(),
        blobs: blobs.clone(),
        queue: queue.clone(),
        schedules: schedules.clone(),
        lanes: Arc::new(prism_shared::testing::memory::MemoryLaneControl::default()),
        dead_letters: std::sync::Arc::new(prism_shared::testing::memory::MemoryDeadLetters::default()),
        quotas: std::sync::Arc::new(prism_shared::testing::memory::MemoryQuotas::default()),
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

//! The sweeper against an in-memory store: what it ends, what it leaves.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prism_shared::app::lifecycle;
use prism_shared::domain::job::InputObject;
use prism_shared::ports::JobStore;
use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore};
use prism_shared::testing::{memory_deps, queued_job};
use prism_shared::{JobEvent, JobStatus};
use sweeper::{Config, Deps, Swept, handle};

fn deps(jobs: &Arc<MemoryJobStore>) -> Deps {
    let config = Config { upload_wait: Duration::from_secs(900), idle: Duration::from_secs(3600) };
    memory_deps(jobs.clone(), Arc::new(MemoryBlobStore::default()), config)
}

#[tokio::test]
async fn idle_jobs_end_with_a_reason_and_busy_or_finished_ones_are_left_alone() {
    let jobs = Arc::new(MemoryJobStore::default());
    let hour = chrono::Duration::hours(1);
    // Never uploaded, 20 minutes old.
    let (never_uploaded, _) = queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-000000000001", "a.txt").await;
    jobs.age(&never_uploaded, chrono::Duration::minutes(20));
    // Processing, nothing recorded for over an hour (its processor timed out mid-way).
    let (stuck, upload) = queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-000000000002", "b.txt").await;
    let input = InputObject { uri: upload, size: 3, etag: "e".into() };
    lifecycle::record(jobs.as_ref(), &stuck, "t", JobEvent::Uploaded { input }).await.expect("uploaded");
    lifecycle::record(jobs.as_ref(), &stuck, "t", JobEvent::Started { phase: "reading".into() }).await.expect("started");
    jobs.age(&stuck, hour + chrono::Duration::minutes(1));
    // Processing for hours but reporting progress a minute ago: alive.
    let (busy, _) = queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-000000000003", "c.txt").await;
    lifecycle::record(jobs.as_ref(), &busy, "t", JobEvent::Started { phase: "reading".into() }).await.expect("started");
    jobs.age(&busy, chrono::Duration::minutes(1));
    // Cancelled while running, and its processor never came back.
    let (abandoned, _) = queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-000000000004", "d.txt").await;
    lifecycle::record(jobs.as_ref(), &abandoned, "t", JobEvent::Started { phase: "reading".into() }).await.expect("started");
    lifecycle::record(jobs.as_ref(), &abandoned, "t", JobEvent::CancelRequested).await.expect("cancel asked");
    jobs.age(&abandoned, hour * 2);
    // Finished long ago.
    let (done, _) = queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-000000000005", "e.txt").await;
    lifecycle::record(jobs.as_ref(), &done, "t", JobEvent::Cancelled).await.expect("cancelled");
    jobs.age(&done, hour * 5);

    let swept = handle(&deps(&jobs)).await.expect("sweep");
    assert_eq!(swept, Swept { examined: 3, ended: 3 }, "the busy and the finished jobs are not even read");

    let status = |id| {
        let jobs = jobs.clone();
        async move { jobs.get(&id).await.expect("get").expect("job") }
    };
    let never = status(never_uploaded.clone()).await;
    assert_eq!((never.status, never.error.map(|e| e.code)), (JobStatus::Failed, Some("upload_expired".into())));
    let stuck = status(stuck.clone()).await;
    assert_eq!((stuck.status, stuck.error.as_ref().map(|e| e.code.as_str())), (JobStatus::Failed, Some("stalled")));
    assert!(stuck.error.expect("error").message.contains("processing"));
    assert_eq!(status(busy).await.status, JobStatus::Processing);
    assert_eq!(status(abandoned).await.status, JobStatus::Cancelled);
    assert_eq!(status(done).await.status, JobStatus::Cancelled);
    // A second sweep finds nothing left to end.
    assert_eq!(handle(&deps(&jobs)).await.expect("sweep").ended, 0);
}

#[tokio::test]
async fn a_job_that_moves_while_being_swept_is_not_ended() {
    let jobs = Arc::new(MemoryJobStore::default());
    let (id, _) = queued_job(jobs.as_ref(), "0196f0a0-0000-7000-8000-000000000006", "f.txt").await;
    jobs.age(&id, chrono::Duration::hours(2));
    let seen = jobs.get(&id).await.expect("get").expect("job");
    // Its upload lands after the sweeper read it and before it writes.
    let input = InputObject { uri: seen.upload.clone(), size: 3, etag: "e".into() };
    lifecycle::record(jobs.as_ref(), &id, "intake", JobEvent::Uploaded { input }).await.expect("uploaded");
    let config = Config { upload_wait: Duration::from_secs(900), idle: Duration::from_secs(3600) };
    let event = sweeper::verdict(&seen, Utc::now(), &config).expect("idle as read");
    assert_eq!(lifecycle::record_on(jobs.as_ref(), &seen, "sweeper", event).await.expect("no error"), None);
    assert_eq!(jobs.get(&id).await.expect("get").expect("job").status, JobStatus::Queued);
}

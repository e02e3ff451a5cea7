//! The sweeper against an in-memory store: what it ends, what it leaves.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prism_shared::app::lifecycle;
use prism_shared::domain::job::{Classification, InputObject};
use prism_shared::domain::lanes;
use prism_shared::ports::JobStore;
use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore, MemoryLaneControl};
use prism_shared::testing::{memory_deps, queued_job};
use prism_shared::{JobEvent, JobStatus, Modality};
use sweeper::{Config, Deps, Swept, handle};

const LANES: &str = "text-normal m-text-normal http://sqs/text-normal\nimage-normal m-image-normal http://sqs/image-normal";

fn config() -> Config {
    Config { upload_wait: Duration::from_secs(900), idle: Duration::from_secs(3600), lanes: lanes::parse(LANES).expect("lanes") }
}

fn deps(jobs: &Arc<MemoryJobStore>) -> Deps {
    memory_deps(jobs.clone(), Arc::new(MemoryBlobStore::default()), config())
}

/// A job classified as `modality` and waiting in its normal lane, idle for two hours.
async fn waiting_in_lane(jobs: &MemoryJobStore, id: &str, modality: Modality) -> prism_shared::JobId {
    let (id, upload) = queued_job(jobs, id, "w.bin").await;
    let input = InputObject { uri: upload, size: 3, etag: "e".into() };
    lifecycle::record(jobs, &id, "t", JobEvent::Uploaded { input }).await.expect("uploaded");
    let classified = Classification { modality, mime: "application/octet-stream".into(), confidence: 1.0, estimated_seconds: 1.0 };
    lifecycle::record(jobs, &id, "t", JobEvent::Classified(classified)).await.expect("classified");
    jobs.age(&id, chrono::Duration::hours(2));
    id
}

#[tokio::test]
async fn a_job_waiting_in_a_paused_lane_is_held_while_one_in_a_running_lane_is_stalled() {
    let jobs = Arc::new(MemoryJobStore::default());
    let held = waiting_in_lane(&jobs, "0196f0a0-0000-7000-8000-000000000011", Modality::Text).await;
    let stalled = waiting_in_lane(&jobs, "0196f0a0-0000-7000-8000-000000000012", Modality::Image).await;
    let deps = deps(&jobs);
    deps.lanes.set_enabled("m-text-normal", false).await.expect("pause");

    let swept = handle(&deps).await.expect("sweep");
    assert_eq!(swept, Swept { examined: 2, ended: 1, held: 1 });
    assert_eq!(jobs.get(&held).await.expect("get").expect("job").status, JobStatus::Queued);
    assert_eq!(jobs.get(&stalled).await.expect("get").expect("job").error.map(|e| e.code), Some("stalled".into()));

    // Resumed, and still nothing moved it: now it is stalled.
    deps.lanes.set_enabled("m-text-normal", true).await.expect("resume");
    assert_eq!(handle(&deps).await.expect("sweep"), Swept { examined: 1, ended: 1, held: 0 });
}

#[tokio::test]
async fn a_lane_that_cannot_be_read_holds_its_jobs_and_fails_the_sweep_after_the_others() {
    let jobs = Arc::new(MemoryJobStore::default());
    let unknowable = waiting_in_lane(&jobs, "0196f0a0-0000-7000-8000-000000000013", Modality::Text).await;
    let stalled = waiting_in_lane(&jobs, "0196f0a0-0000-7000-8000-000000000014", Modality::Image).await;
    let control = Arc::new(MemoryLaneControl::default());
    control.remove("m-text-normal");
    let mut deps = deps(&jobs);
    deps.lanes = control;

    assert!(handle(&deps).await.is_err(), "the sweep reports the lane it could not read");
    assert_eq!(jobs.get(&unknowable).await.expect("get").expect("job").status, JobStatus::Queued);
    assert_eq!(jobs.get(&stalled).await.expect("get").expect("job").status, JobStatus::Failed, "the others were still swept");
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
    assert_eq!(swept, Swept { examined: 3, ended: 3, held: 0 }, "the busy and the finished jobs are not even read");

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
    let event = sweeper::verdict(&seen, Utc::now(), &config()).expect("idle as read");
    assert_eq!(lifecycle::record_on(jobs.as_ref(), &seen, "sweeper", event).await.expect("no error"), None);
    assert_eq!(jobs.get(&id).await.expect("get").expect("job").status, JobStatus::Queued);
}

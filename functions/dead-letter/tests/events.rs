//! Dead letters fail the job they name; garbage is logged and acknowledged.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use chrono::Utc;
use dead_letter::{Deps, handle};
use prism_shared::app::lifecycle;
use prism_shared::domain::joblog::{LogLevel, LogLine};
use prism_shared::ports::{DeadLetterStore, JobStore};
use prism_shared::testing::memory::{MemoryBlobStore, MemoryDeadLetters, MemoryJobStore};
use prism_shared::testing::{memory_deps, sample_event};
use prism_shared::{Job, JobEvent, JobEventEnvelope, JobId, JobStatus, Priority};

#[tokio::test]
async fn fails_the_job_a_dead_letter_names() {
    let event: SqsEvent = sample_event("sqs-dead-letters.json");
    let jobs = Arc::new(MemoryJobStore::default());
    let id: JobId = "0196f0a0-0000-7000-8000-00000000c1a5".parse().expect("id");
    let job = Job::new(id.clone(), "default".into(), Priority::Normal, "s3://b/uploads/k".parse().expect("uri"), "t".into(), Utc::now());
    jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
    let deps: Deps = memory_deps(jobs.clone(), Arc::new(MemoryBlobStore::default()), ());
    let response = handle(&deps, event).await;
    assert!(response.batch_item_failures.is_empty());
    let job = jobs.get(&id).await.expect("store").expect("job");
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.expect("error");
    assert_eq!(error.code, "retries_exhausted");
    assert!(error.message.contains("prism-dev-text"), "{}", error.message);
}

#[tokio::test]
async fn an_upload_notification_that_exhausted_intake_fails_the_job_of_its_upload() {
    let mut event: SqsEvent = sample_event("s3-object-created-via-sqs.json");
    for record in &mut event.records {
        record.event_source_arn = Some("arn:aws:sqs:us-east-1:000000000000:prism-dev-intake-dlq".into());
    }
    let jobs = Arc::new(MemoryJobStore::default());
    let deps: Deps = memory_deps(jobs.clone(), Arc::new(MemoryBlobStore::default()), ());
    let response = handle(&deps, event).await;
    assert!(response.batch_item_failures.is_empty());
    // A drop intake never got to: its job is created as intake would, and ended.
    let uri = prism_shared::S3Uri::new("prism-dev-000000000000-uploads", "uploads/alice/meeting notes.txt");
    let id = JobId::for_object(&uri, "0123456789abcdef0123456789abcdef");
    let job = jobs.get(&id).await.expect("store").expect("the upload has a job");
    assert_eq!((job.status, job.owner.as_str()), (JobStatus::Failed, "alice"));
    let error = job.error.expect("error");
    assert_eq!(error.code, "retries_exhausted");
    assert!(error.message.contains("prism-dev-intake"), "{}", error.message);
}

#[tokio::test]
async fn each_dead_letter_is_kept_once_with_its_source_queue_and_the_last_attempts_reason() {
    let mut event: SqsEvent = sample_event("sqs-dead-letters.json");
    event.records.truncate(1);
    event.records[0].attributes.insert("DeadLetterQueueSourceArn".into(), "arn:aws:sqs:us-east-1:000000000000:prism-dev-text-bulk".into());
    event.records[0].attributes.insert("ApproximateReceiveCount".into(), "4".into());
    let jobs = Arc::new(MemoryJobStore::default());
    let id: JobId = "0196f0a0-0000-7000-8000-00000000c1a5".parse().expect("id");
    let job = Job::new(id.clone(), "carol".into(), Priority::Low, "s3://b/uploads/k".parse().expect("uri"), "t".into(), Utc::now());
    jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
    let attempt = LogLine::new(LogLevel::Warn, "attempt 3 failed: blob store unavailable: SlowDown", Utc::now());
    lifecycle::record(jobs.as_ref(), &id, "process-text", JobEvent::Started { phase: "reading".into() }).await.expect("started");
    lifecycle::record(jobs.as_ref(), &id, "process-text", JobEvent::Logged { lines: vec![attempt] }).await.expect("logged");
    let mut deps: Deps = memory_deps(jobs.clone(), Arc::new(MemoryBlobStore::default()), ());
    let letters = Arc::new(MemoryDeadLetters::default());
    deps.dead_letters = letters.clone();

    for _ in 0..2 {
        // Delivered twice, as SQS may.
        assert!(handle(&deps, event.clone()).await.batch_item_failures.is_empty());
    }
    let kept = letters.list(10).await.expect("list");
    assert_eq!(kept.len(), 1, "kept once: {kept:?}");
    let letter = &kept[0];
    assert_eq!((letter.dlq.as_str(), letter.source_queue.as_deref()), ("prism-dev-text-dlq", Some("prism-dev-text-bulk")));
    assert_eq!((letter.jobs.clone(), letter.owner.as_deref(), letter.receive_count), (vec![id.clone()], Some("carol"), 4));
    assert_eq!(letter.reason, "attempt 3 failed: blob store unavailable: SlowDown");
    assert_eq!(letter.body, event.records[0].body.clone().expect("body"));
    let error = jobs.get(&id).await.expect("store").expect("job").error.expect("failed");
    assert!(error.message.ends_with("given up: attempt 3 failed: blob store unavailable: SlowDown"), "{}", error.message);
}

//! The sample S3-via-SQS event, round-tripped and run through the handler with fakes.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use intake::{Config, Deps, handle};
use prism_shared::domain::commands::Command;
use prism_shared::ports::JobStore;
use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore, MemoryQueue};
use prism_shared::testing::sample_event;
use prism_shared::{Envelope, JobId, JobStatus, S3Uri, domain::envelope};

fn deps() -> (Deps, Arc<MemoryJobStore>, Arc<MemoryQueue>) {
    let (jobs, queue) = (Arc::new(MemoryJobStore::default()), Arc::new(MemoryQueue::default()));
    let config =
        Config { classify_queue_url: "http://sqs/classify".into(), classify_fast_queue_url: Some("http://sqs/classify-fast".into()) };
    let deps = Deps {
        jobs: jobs.clone(),
        blobs: Arc::new(MemoryBlobStore::default()),
        queue: queue.clone(),
        schedules: Arc::new(prism_shared::testing::memory::MemoryScheduleStore::new(jobs.clone())),
        lanes: std::sync::Arc::new(prism_shared::testing::memory::MemoryLaneControl::default()),
        dead_letters: std::sync::Arc::new(prism_shared::testing::memory::MemoryDeadLetters::default()),
        quotas: std::sync::Arc::new(prism_shared::testing::memory::MemoryQuotas::default()),
        breakers: std::sync::Arc::new(prism_shared::testing::memory::MemoryBreakers::default()),
        breaker_policy: prism_shared::domain::breakers::BreakerPolicy::default(),
        estimates: std::sync::Arc::new(prism_shared::testing::memory::MemoryEstimates::default()),
        config,
    };
    (deps, jobs, queue)
}

#[tokio::test]
async fn an_upload_becomes_one_job_even_when_delivered_twice() {
    let event: SqsEvent = sample_event("s3-object-created-via-sqs.json");
    let (deps, jobs, queue) = deps();

    let response = handle(&deps, event.clone()).await;
    assert!(response.batch_item_failures.is_empty());

    // The key is URL-encoded in the notification ('+' is a space).
    let uri = S3Uri::new("prism-dev-000000000000-uploads", "uploads/alice/meeting notes.txt");
    let id = JobId::for_object(&uri, "0123456789abcdef0123456789abcdef");
    let job = jobs.get(&id).await.expect("store").expect("job created");
    assert_eq!(job.owner, "alice");
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.input.as_ref().map(|i| i.size), Some(18));

    // One classify command (the s3:TestEvent record is acknowledged, not a job).
    let sent = queue.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue_url, "http://sqs/classify");
    let command: Envelope<Command> = envelope::decode(&sent[0].body).expect("envelope");
    assert_eq!(command.job_id, Some(id.clone()));
    assert!(matches!(command.body, Command::Classify { ref input, .. } if input.uri == uri));

    // Redelivered: same job, no new events.
    let events_before = jobs.events(&id, 0, 100).await.expect("events").len();
    let response = handle(&deps, event).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(jobs.events(&id, 0, 100).await.expect("events").len(), events_before);
}

#[tokio::test]
async fn a_malformed_body_is_reported_as_a_failed_item_and_backed_off() {
    let mut event: SqsEvent = sample_event("s3-object-created-via-sqs.json");
    event.records[0].body = Some("{\"Records\": 42}".into());
    let (deps, _, queue) = deps();
    let response = handle(&deps, event).await;
    let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    assert_eq!(failed, ["7b1d3f0e-3c2a-4d8e-9b5e-0a1f2c3d4e5f"]);
    assert_eq!(queue.retries().len(), 1);
}

#[tokio::test]
async fn a_batch_of_ten_uploads_sends_its_ten_classify_commands_in_one_request() {
    let sample: SqsEvent = sample_event("s3-object-created-via-sqs.json");
    let mut event = SqsEvent::default();
    event.records = (0..10)
        .map(|i| {
            let mut msg = sample.records[0].clone();
            msg.message_id = Some(format!("m{i}"));
            msg.body = msg.body.map(|body| body.replace("meeting+notes.txt", &format!("note-{i}.txt")));
            msg
        })
        .collect();
    let (deps, _, queue) = deps();
    let response = handle(&deps, event).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(queue.batch_sizes(), [10], "one request carried the batch's commands");
    let mut keys: Vec<String> = queue
        .sent()
        .iter()
        .map(|sent| match envelope::decode::<Command>(&sent.body).expect("envelope").body {
            Command::Classify { input, .. } => input.uri.key,
            other => panic!("not a classify command: {other:?}"),
        })
        .collect();
    keys.sort();
    let expected: Vec<String> = (0..10).map(|i| format!("uploads/alice/note-{i}.txt")).collect();
    assert_eq!(keys, expected);
}

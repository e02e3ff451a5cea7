//! The progress function on a sample batch of job events, against in-memory ports.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use chrono::Utc;
use prism_shared::app::lifecycle;
use prism_shared::ports::{Connection, ConnectionStore, JobStore, Subscription};
use prism_shared::testing::memory::{MemoryConnections, MemoryJobStore, MemoryNotifier, MemoryQueue};
use prism_shared::testing::sample_event;
use prism_shared::{Job, JobEvent, JobEventEnvelope, JobId, Priority};
use progress::{Deps, handle};

const JOB: &str = "0196f0a0-0000-7000-8000-0000000000ab";

#[tokio::test]
async fn pushes_a_batch_to_subscribers_and_reports_only_the_malformed_message() {
    let (jobs, connections, notifier, queue) = (
        Arc::new(MemoryJobStore::default()),
        Arc::new(MemoryConnections::default()),
        Arc::new(MemoryNotifier::default()),
        Arc::new(MemoryQueue::default()),
    );
    let id: JobId = JOB.parse().expect("id");
    let job = Job::new(id.clone(), "alice".into(), Priority::Normal, "s3://b/uploads/k".parse().expect("uri"), "t".into(), Utc::now());
    jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
    lifecycle::record(jobs.as_ref(), &id, "t", JobEvent::Started { phase: "reading".into() }).await.expect("start");
    lifecycle::record(jobs.as_ref(), &id, "t", JobEvent::Progress { phase: "analysing".into(), progress: 40, eta_s: None, counts: None })
        .await
        .expect("progress");
    for connection_id in ["early", "current", "gone"] {
        let connection = Connection { connection_id: connection_id.into(), owner: "alice".into(), connected_at: Utc::now(), expires_at: 0 };
        connections.connect(&connection).await.expect("connect");
        let sub = Subscription { connection_id: connection_id.into(), job_id: id.clone(), expires_at: 0, logs: false };
        connections.subscribe(&sub).await.expect("subscribe");
    }
    notifier.mark_gone("gone");
    let deps = Deps { jobs, connections: connections.clone(), notifier: notifier.clone(), queue: queue.clone(), config: () };

    let response = handle(&deps, sample_event::<SqsEvent>("sqs-job-events.json")).await;

    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, vec!["7b2e5c3a-4d8f-4e5a-9f3c-9a0b1c2d3e4f"], "only the malformed message goes back");
    let retries = queue.retries();
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].1, std::time::Duration::ZERO, "a message that is not an event never will be: no backoff, on to the DLQ");
    let seqs = |c: &str| notifier.messages(c).iter().map(|m| m["seq"].as_u64().expect("seq")).collect::<Vec<_>>();
    // The burst's progress event is the last of it, so nothing is coalesced;
    // seq 1, never fanned out before, is read from the log.
    assert_eq!(seqs("early"), vec![1, 2, 3]);
    assert_eq!(seqs("current"), vec![1, 2, 3]);
    assert_eq!(connections.connection("gone").await.expect("read"), None);
    // A redelivered batch sends nothing twice.
    let again = handle(&deps, sample_event::<SqsEvent>("sqs-job-events.json")).await;
    assert_eq!(again.batch_item_failures.len(), 1);
    assert_eq!(seqs("current"), vec![1, 2, 3]);
}

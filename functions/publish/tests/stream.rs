//! The publish function on a sample stream batch, against an in-memory bus.

use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use prism_shared::testing::memory::{MemoryEventBus, MemoryQueue};
use prism_shared::testing::sample_event;
use publish::{Config, Deps, handle};

const SAMPLE: &str = "dynamodb-stream-job-events.json";
const DLQ: &str = "http://sqs.local/000000000000/prism-dev-publish-dlq";

fn deps(bus: &Arc<MemoryEventBus>, queue: &Arc<MemoryQueue>) -> Deps {
    Deps { bus: bus.clone(), queue: queue.clone(), config: Config { dead_letter_queue_url: DLQ.into() } }
}

fn failures(response: &aws_lambda_events::streams::DynamoDbEventResponse) -> Vec<String> {
    response.batch_item_failures.iter().filter_map(|f| f.item_identifier.clone()).collect()
}

#[tokio::test]
async fn publishes_the_inserted_job_events_in_order_and_nothing_else() {
    let (bus, queue) = (Arc::new(MemoryEventBus::default()), Arc::new(MemoryQueue::default()));
    let response = handle(&deps(&bus, &queue), sample_event::<Event>(SAMPLE)).await;
    assert!(failures(&response).is_empty());
    assert!(queue.sent().is_empty());
    let published: Vec<(Option<u64>, &str)> = bus.published().iter().map(|e| (e.seq, e.body.event_type())).collect();
    assert_eq!(published, [(Some(2), "job.started"), (Some(3), "job.cancelled")], "the job item's MODIFY is not an event");
}

#[tokio::test]
async fn a_failed_publish_checkpoints_at_the_first_unpublished_event() {
    let (bus, queue) = (Arc::new(MemoryEventBus::default()), Arc::new(MemoryQueue::default()));
    let deps = deps(&bus, &queue);
    let event = sample_event::<Event>(SAMPLE);
    // The topic takes `job.started`, then throttles `job.cancelled`, which
    // comes after a record that is not an event.
    bus.fail_on("job.cancelled", 1);
    let response = handle(&deps, event.clone()).await;
    assert_eq!(failures(&response), ["1100000000017454423012"], "the stream resumes at the unpublished event, not before");
    // The event source retries from that record: the terminal event goes out.
    let mut retry = event;
    retry.records.drain(..2);
    assert!(failures(&handle(&deps, retry).await).is_empty());
    let seqs: Vec<Option<u64>> = bus.published().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [Some(2), Some(3)]);
}

#[tokio::test]
async fn an_event_that_can_never_be_published_is_dead_lettered_and_the_batch_goes_on() {
    let (bus, queue) = (Arc::new(MemoryEventBus::default()), Arc::new(MemoryQueue::default()));
    let mut event = sample_event::<Event>(SAMPLE);
    // The first event is corrupt: retrying it would hold back every later event of the shard.
    event.records.swap(0, 2);
    let broken = event.records[0].change.new_image.get_mut("seq").expect("seq");
    *broken = serde_dynamo::AttributeValue::S("not a number".into());
    let response = handle(&deps(&bus, &queue), event).await;
    assert!(failures(&response).is_empty(), "nothing to retry");
    assert_eq!(bus.published().iter().map(|e| e.seq).collect::<Vec<_>>(), [Some(2)], "the events after it went out");
    let dead = queue.sent();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].queue_url, DLQ);
    let body: serde_json::Value = serde_json::from_str(&dead[0].body).expect("json");
    assert!(body["error"].as_str().expect("error").contains("EVT#0000000003"), "{body}");
    assert_eq!(body["record"]["dynamodb"]["SequenceNumber"], "1100000000017454423012");
}

#[tokio::test]
async fn an_event_stored_while_its_job_was_watched_is_published_for_the_fan_out_and_only_that_one() {
    let (bus, queue) = (Arc::new(MemoryEventBus::default()), Arc::new(MemoryQueue::default()));
    let mut event = sample_event::<Event>(SAMPLE);
    // The job was watched by the time its terminal event was stored.
    let cancelled = event
        .records
        .iter_mut()
        .find(|r| r.change.new_image.get("event_type").is_some_and(|t| *t == serde_dynamo::AttributeValue::S("job.cancelled".into())));
    cancelled.expect("the sample's job.cancelled").change.new_image.insert("watched".into(), serde_dynamo::AttributeValue::Bool(true));
    assert!(failures(&handle(&deps(&bus, &queue), event).await).is_empty());
    let marked: Vec<(&str, bool)> = bus.publications().iter().map(|p| (p.event.body.event_type(), p.watched)).collect();
    assert_eq!(marked, [("job.started", false), ("job.cancelled", true)]);
}

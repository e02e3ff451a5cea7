//! Fault injection on the local cloud: the failures a job system meets on AWS
//! (a throttled topic, a throttled WebSocket push, a message that always
//! fails, every message delivered twice), injected into the functions' own
//! AWS calls and event sources, and what Prism promises despite them: every
//! subscriber sees every event and the end, every job ends once, nothing is
//! recorded twice.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{JOB_TIMEOUT, TestCloud, images, text_read_by_its_processor};
use prism_cloud::EmulatorChoice;
use prism_cloud::live::{LiveConnection, is_terminal};
use prism_cloud::proxy::{FaultAction, FaultPlan, FaultRule};
use prism_shared::JobId;
use prism_shared::app::realtime::ClientMessage;
use serde_json::Value;

// Each fault test runs on both emulator setups (see `common::on_both_setups`).
on_both_setups!(
    a_terminal_event_whose_publish_fails_still_reaches_subscribers,
    a_throttled_connection_still_gets_every_event,
    a_message_that_always_fails_ends_its_job_through_the_dlq_while_the_rest_complete,
    every_message_delivered_twice_records_nothing_twice,
    a_function_killed_mid_job_has_its_message_redelivered_and_the_job_ends_once,
    a_dynamodb_outage_under_a_processor_delays_its_job_which_still_ends_once,
);

const TEXT: &[u8] = b"Faults are injected into this job's path. It must still end, once, and be seen ending.\n";

fn fail(function: &str, operation: &str, times: u64) -> FaultRule {
    FaultRule {
        function: Some(function.into()),
        operation: operation.into(),
        body_contains: None,
        uri_contains: None,
        after: 0,
        times,
        action: FaultAction::Fail { status: None, code: None },
    }
}

/// A subscription that only listens: it never re-subscribes, never replays,
/// never polls REST, so it sees exactly what the live path delivers.
struct Listener {
    connection: LiveConnection,
}

impl Listener {
    /// Connected and subscribed (the snapshot has arrived) before the job runs.
    async fn subscribe(tc: &TestCloud, id: &JobId) -> Self {
        let url = tc.cloud.info.websocket_url.clone().expect("the template has a WebSocket API");
        let mut connection = LiveConnection::connect(&url, Some(&tc.token("tester"))).await.expect("connect");
        connection.send(&ClientMessage::Subscribe { job_id: id.clone(), after_seq: 0, logs: false }).await.expect("subscribe");
        loop {
            let message = connection.next(Duration::from_secs(10)).await.expect("socket").expect("a snapshot in time");
            if message["type"] == "snapshot" {
                return Self { connection };
            }
        }
    }

    /// Every event message until the terminal one (or the timeout).
    async fn until_the_end(mut self) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
        let mut events = Vec::new();
        while let Some(message) =
            self.connection.next(deadline.saturating_duration_since(tokio::time::Instant::now())).await.expect("socket")
        {
            if message["type"] == "event" {
                events.push(message.clone());
                if is_terminal(&message) {
                    break;
                }
            }
        }
        events
    }
}

/// Runs one text job with a listener subscribed before its upload; returns
/// what the listener was pushed and the job's log.
async fn follow_one_job(tc: &TestCloud) -> (Vec<Value>, Vec<Value>) {
    let (job, upload_url) = tc.api.create("notes.txt", None).await.expect("create");
    let listener = Listener::subscribe(tc, &job.id).await;
    tc.api.upload(&upload_url, TEXT.to_vec()).await.expect("upload");
    let pushed = listener.until_the_end().await;
    (pushed, tc.api.events(&job.id, 0).await.expect("events"))
}

/// Every seq of the job's log is among those pushed or superseded, and the
/// last pushed event is the log's terminal one. Duplicates are allowed:
/// delivery is at least once and clients drop repeats by seq.
fn assert_covers_the_log(pushed: &[Value], log: &[Value]) {
    let logged: BTreeSet<u64> = log.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    let mut covered: BTreeSet<u64> = pushed.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    covered.extend(pushed.iter().flat_map(|e| e["superseded"].as_array().cloned().unwrap_or_default()).filter_map(|s| s.as_u64()));
    assert_eq!(covered, logged, "pushed {pushed:?}");
    let last = pushed.last().expect("something was pushed");
    assert_eq!(
        (last["seq"].clone(), last["event_type"].clone()),
        (log.last().expect("log")["seq"].clone(), log.last().expect("log")["event_type"].clone())
    );
}

async fn a_terminal_event_whose_publish_fails_still_reaches_subscribers(emulator: EmulatorChoice) {
    // Three failures: the SDK's own three attempts, so the function sees the throttled topic.
    let rule = FaultRule { body_contains: Some("job.completed".into()), ..fail("publish", "sns:PublishBatch", 3) };
    let tc = TestCloud::with_faults(emulator, FaultPlan { faults: vec![rule], ..FaultPlan::default() }).await;
    let (pushed, log) = follow_one_job(&tc).await;
    assert_eq!(log.last().map(|e| e["event_type"].clone()), Some("job.completed".into()));
    assert_covers_the_log(&pushed, &log);
    assert!(tc.log("publish").contains("topic unavailable"), "the fault was met: {}", tc.log("publish"));
    tc.finish().await;
}

async fn a_throttled_connection_still_gets_every_event(emulator: EmulatorChoice) {
    // The push of the job's last event gets a bare 429, which the SDK does not
    // retry itself: nothing after it could bring that event along.
    let rule = FaultRule {
        body_contains: Some("job.completed".into()),
        action: FaultAction::Fail { status: Some(429), code: None },
        ..fail("progress", "execute-api:PostToConnection", 1)
    };
    let tc = TestCloud::with_faults(emulator, FaultPlan { faults: vec![rule], ..FaultPlan::default() }).await;
    let (pushed, log) = follow_one_job(&tc).await;
    assert_covers_the_log(&pushed, &log);
    assert!(tc.log("progress").contains("fan-out failed"), "the fault was met: {:?}", tc.cloud.proxies.calls());
    tc.finish().await;
}

async fn a_message_that_always_fails_ends_its_job_through_the_dlq_while_the_rest_complete(emulator: EmulatorChoice) {
    let rule = FaultRule { uri_contains: Some("poison.txt".into()), ..fail("process-text", "s3:GetObject", 1000) };
    let tc = TestCloud::with_faults(emulator, FaultPlan { faults: vec![rule], ..FaultPlan::default() }).await;
    let mut ids = Vec::new();
    for name in ["a.txt", "poison.txt", "b.txt", "c.txt"] {
        let text = if name == "poison.txt" { text_read_by_its_processor("Its every read fails.") } else { TEXT.to_vec() };
        ids.push((name, tc.api.submit(name, text, None).await.expect("submit").id));
    }
    for (name, id) in &ids {
        let job = tc.api.wait(id, JOB_TIMEOUT).await.expect("ended in time");
        let events = tc.api.events(id, 0).await.expect("events");
        let terminal: Vec<&Value> = events.iter().filter(|e| is_terminal(e)).collect();
        assert_eq!(terminal.len(), 1, "{name}: one end");
        if *name == "poison.txt" {
            assert_eq!(job.status.as_str(), "failed");
            let error = job.error.expect("a reason");
            assert_eq!(error.code, "retries_exhausted");
            assert!(error.message.contains("text"), "names the queue it kept failing in: {}", error.message);
        } else {
            assert_eq!(job.status.as_str(), "completed", "{name}: {:?}", job.error);
        }
    }
    tc.finish().await;
}

async fn every_message_delivered_twice_records_nothing_twice(emulator: EmulatorChoice) {
    let plan = FaultPlan { duplicate_deliveries: true, ..FaultPlan::default() };
    let tc = TestCloud::with_faults(emulator, plan).await;
    let png = images::png(640, 480);
    let files: Vec<(&str, Vec<u8>)> = vec![("one.txt", TEXT.to_vec()), ("two.txt", TEXT.repeat(3)), ("picture.png", png)];
    let mut ids = Vec::new();
    for (name, bytes) in files {
        ids.push((name, tc.api.submit(name, bytes, None).await.expect("submit").id));
    }
    for (name, id) in &ids {
        let job = tc.api.wait(id, JOB_TIMEOUT).await.expect("ended in time");
        assert_eq!(job.status.as_str(), "completed", "{name}: {:?}", job.error);
        let events = tc.api.events(id, 0).await.expect("events");
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for e in &events {
            *counts.entry(e["event_type"].as_str().expect("type").to_owned()).or_default() += 1;
        }
        for once in ["job.created", "job.uploaded", "job.classified", "job.started", "job.completed"] {
            assert_eq!(counts.get(once), Some(&1), "{name}: {once} recorded once, log {counts:?}");
        }
        let outputs: Vec<&str> = job.outputs.iter().map(|o| o.name.as_str()).collect();
        let distinct: BTreeSet<&str> = outputs.iter().copied().collect();
        assert_eq!(outputs.len(), distinct.len(), "{name}: outputs listed once: {outputs:?}");
    }
    // The fault really doubled the deliveries: intake took each notification twice.
    let intake = tc.log("intake");
    for (name, id) in &ids {
        let received = intake.lines().filter(|l| l.contains("upload received") && l.contains(id.as_str())).count();
        assert!(received >= 2, "{name}: intake saw its upload {received} times");
    }
    tc.finish().await;
}

async fn a_function_killed_mid_job_has_its_message_redelivered_and_the_job_ends_once(emulator: EmulatorChoice) {
    // process-text dies as it writes its outputs: the job is `processing`,
    // its invocation gone with the process.
    let rule = FaultRule { action: FaultAction::Crash, ..fail("process-text", "s3:PutObject", 1) };
    let tc = TestCloud::with_faults(emulator, FaultPlan { faults: vec![rule], ..FaultPlan::default() }).await;
    // The lane's messages come back 5 s after a failed delivery instead of
    // the template's 180, so the redelivery happens within the test.
    let sqs = tc.cloud.clients().sqs;
    let lane = sqs.get_queue_url().queue_name("prism-test-text-normal").send().await.expect("queue").queue_url.expect("url");
    sqs.set_queue_attributes()
        .queue_url(&lane)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "5")
        .send()
        .await
        .expect("visibility timeout");
    // A receive takes the queue's timeout when it starts: the pollers' long
    // polls already waiting would hand the message out with the old one.
    tokio::time::sleep(Duration::from_secs(prism_cloud::esm::WAIT_SECONDS as u64 + 1)).await;

    let id = tc.api.submit("notes.txt", TEXT.to_vec(), None).await.expect("submit").id;
    let job = tc.api.wait(&id, JOB_TIMEOUT).await.expect("ended in time");
    assert_eq!(job.status.as_str(), "completed", "{:?}", job.error);
    let events = tc.api.events(&id, 0).await.expect("events");
    let completed = events.iter().filter(|e| e["event_type"] == "job.completed").count();
    assert_eq!(completed, 1, "one end: {events:?}");
    let outputs: Vec<&str> = job.outputs.iter().map(|o| o.name.as_str()).collect();
    let distinct: BTreeSet<&str> = outputs.iter().copied().collect();
    assert_eq!(outputs.len(), distinct.len(), "outputs listed once: {outputs:?}");
    // The fault was met: the first attempt's process died by SIGKILL.
    let log = tc.log("process-text");
    assert!(log.contains("signal: 9"), "process-text was killed: {log}");
    tc.finish().await;
}

async fn a_dynamodb_outage_under_a_processor_delays_its_job_which_still_ends_once(emulator: EmulatorChoice) {
    // DynamoDB answers process-text nothing but 503 for 4 s from its first
    // call. Whether the SDK's own retries outlast it or a delivery fails and
    // comes back after its backoff depends on their jitter; either way the
    // job cannot complete before the outage ends, and must complete once.
    let outage = Duration::from_secs(4);
    let rule = FaultRule { action: FaultAction::Outage { ms: outage.as_millis() as u64 }, ..fail("process-text", "dynamodb:*", 1) };
    let tc = TestCloud::with_faults(emulator, FaultPlan { faults: vec![rule], ..FaultPlan::default() }).await;
    let submitted = std::time::Instant::now();
    let id = tc.api.submit("notes.txt", TEXT.to_vec(), None).await.expect("submit").id;
    let job = tc.api.wait(&id, JOB_TIMEOUT).await.expect("ended in time");
    assert_eq!(job.status.as_str(), "completed", "{:?}", job.error);
    assert!(submitted.elapsed() >= outage, "the job waited out the outage: ended after {:?}", submitted.elapsed());
    let events = tc.api.events(&id, 0).await.expect("events");
    for once in ["job.started", "job.completed"] {
        assert_eq!(events.iter().filter(|e| e["event_type"] == once).count(), 1, "{once} once: {events:?}");
    }
    tc.finish().await;
}

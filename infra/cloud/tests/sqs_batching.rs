//! The SQS event source's batching window against a fake queue (under the
//! SDK) and a function whose runtime is a script: as on Lambda, the window
//! opens when a batch's first message arrives and closes when it has run
//! its length, to the millisecond, not when whole-second long polls happen
//! to end.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use prism_cloud::esm::{Delivery, Pollers};
use prism_cloud::provision::SqsSource;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod common;
use common::{FakeJsonService, epoch_ms, invocations, recording_function};

const WINDOW: Duration = Duration::from_secs(1);

/// A queue whose messages arrive at set times after it is made, and whose
/// `ReceiveMessage` long-polls as SQS's does: it answers as soon as a
/// message is there, or after its wait.
#[derive(Debug, Clone)]
struct FakeQueue {
    made: Instant,
    /// (arrives after, body), in order of arrival; taken when received.
    arrivals: Arc<Mutex<VecDeque<(Duration, &'static str)>>>,
}

impl FakeQueue {
    fn take_arrived(&self, most: usize) -> Vec<&'static str> {
        let mut arrivals = self.arrivals.lock().expect("lock");
        let ready = arrivals.iter().take_while(|(at, _)| self.made + *at <= Instant::now()).count().min(most);
        arrivals.drain(..ready).map(|(_, body)| body).collect()
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.arrivals.lock().expect("lock").front().map(|(at, _)| self.made + *at)
    }

    async fn receive(&self, most: usize, wait: Duration) -> Vec<&'static str> {
        let gives_up = Instant::now() + wait;
        loop {
            let got = self.take_arrived(most);
            if !got.is_empty() || Instant::now() >= gives_up {
                return got;
            }
            let next = self.next_arrival().map_or(gives_up, |at| at.min(gives_up));
            tokio::time::sleep_until(next).await;
        }
    }
}

impl FakeQueue {
    /// What the queue answers `operation` with.
    async fn answer(self, operation: String, body: Value) -> Value {
        match operation.as_str() {
            "ReceiveMessage" => {
                let most = body["MaxNumberOfMessages"].as_u64().unwrap_or(1) as usize;
                let wait = Duration::from_secs(body["WaitTimeSeconds"].as_u64().unwrap_or(0));
                let messages: Vec<Value> = self
                    .receive(most, wait)
                    .await
                    .into_iter()
                    .map(|b| json!({"MessageId": b, "ReceiptHandle": b, "Body": b, "Attributes": {"ApproximateReceiveCount": "1"}}))
                    .collect();
                json!({ "Messages": messages })
            }
            "DeleteMessageBatch" => {
                let ids: Vec<Value> = body["Entries"].as_array().into_iter().flatten().map(|e| json!({"Id": e["Id"]})).collect();
                json!({ "Successful": ids, "Failed": [] })
            }
            other => json!({"__type": "UnsupportedOperation", "message": other}),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batching_window_opens_at_a_batchs_first_message_and_runs_its_length() {
    let shutdown = CancellationToken::new();
    let (dir, function) = recording_function("sqs-recorder", &shutdown).await;
    // `a` comes 1.5 s into an idle long poll and `b` 300 ms later: one batch
    // when the window closes, 1 s after `a`. `c` comes after that batch and
    // waits out a window of its own.
    let arrivals = [(1_500, "a"), (1_800, "b"), (2_900, "c")];
    let queue = FakeQueue {
        made: Instant::now(),
        arrivals: Arc::new(Mutex::new(arrivals.iter().map(|&(ms, body)| (Duration::from_millis(ms), body)).collect())),
    };
    let started_ms = epoch_ms();
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .http_client(FakeJsonService::new(move |operation, body| queue.clone().answer(operation, body)))
        .build();
    let source = SqsSource {
        mapping_id: "mapping".into(),
        enabled: true,
        queue_url: "http://sqs.local/000000000000/q".into(),
        queue_arn: "arn:aws:sqs:us-east-1:000000000000:q".into(),
        batch_size: 10,
        batching_window: WINDOW,
        report_batch_item_failures: true,
        max_concurrency: None,
    };
    let (_enable, enabled) = tokio::sync::watch::channel(true);
    let pollers = Pollers { sqs: aws_sdk_sqs::Client::from_conf(config), region: "us-east-1".into(), delivery: Delivery::Once, enabled };
    prism_cloud::esm::start(source, function, 1, pollers, shutdown.clone());

    let log = dir.join("invocations");
    let deadline = Instant::now() + Duration::from_secs(15);
    while invocations(&log).iter().map(|i| i.records.len()).sum::<usize>() < arrivals.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let runs: Vec<(Vec<String>, u128)> = invocations(&log).into_iter().map(|i| (i.records, i.began - started_ms)).collect();
    let batches: Vec<&[String]> = runs.iter().map(|(records, _)| records.as_slice()).collect();
    assert_eq!(batches, [&["a", "b"][..], &["c"][..]], "batches, with when each began (ms): {runs:?}");
    // Each batch goes when its window closes: `a` + 1 s, `c` + 1 s. The
    // slack covers the script runtime's start of an invocation (curl, date).
    for ((_, began), opened) in runs.iter().zip([1_500, 2_900]) {
        let closes = opened + WINDOW.as_millis();
        assert!((closes..closes + 400).contains(began), "a batch began at {began} ms, its window closed at {closes} ms: {runs:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

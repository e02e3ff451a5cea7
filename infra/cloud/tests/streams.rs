//! The DynamoDB Streams event source against a fake stream (under the SDK)
//! and a function whose runtime is a script: records reach the function in
//! order, once, filtered, and the shard is read while a batch runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodbstreams::config::{BehaviorVersion, Credentials, Region};
use prism_cloud::provision::{StartingPosition, StreamSource};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod common;
use common::{FakeJsonService, epoch_ms, invocations, recording_function};

const STREAM_ARN: &str = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/1";
/// Pages of four records the stream holds by default: sequence numbers 1
/// to 16, inserts at the odd ones, modifications at the even ones.
const PAGES: u64 = 4;
/// How long each `GetRecords` takes.
const READ_TAKES: Duration = Duration::from_millis(100);

/// A stream record; `padding` bytes of text in its new image.
fn record(seq: u64, padding: usize) -> Value {
    json!({
        "eventID": format!("e{seq}"),
        "eventName": if seq % 2 == 1 { "INSERT" } else { "MODIFY" },
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": {"pk": {"S": format!("k{seq}")}},
            "NewImage": {"pk": {"S": format!("k{seq}")}, "pad": {"S": "x".repeat(padding)}},
            "SequenceNumber": seq.to_string(),
            "SizeBytes": 10,
            "StreamViewType": "NEW_IMAGE"
        }
    })
}

/// One shard of `pages` pages of four records, each padded by `padding`
/// bytes; remembers when each `GetRecords` began.
#[derive(Debug, Clone)]
struct FakeStream {
    pages: u64,
    padding: usize,
    reads_began: Arc<Mutex<Vec<u128>>>,
}

impl FakeStream {
    fn new(pages: u64, padding: usize) -> Self {
        Self { pages, padding, reads_began: Arc::default() }
    }

    /// The SDK's client, talking to this stream.
    fn client(&self) -> aws_sdk_dynamodbstreams::Client {
        let config = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .http_client(FakeJsonService::new({
                let stream = self.clone();
                move |operation, body| stream.clone().answer(operation, body)
            }))
            .build();
        aws_sdk_dynamodbstreams::Client::from_conf(config)
    }
}

impl FakeStream {
    /// What the stream answers `operation` with.
    async fn answer(self, operation: String, body: Value) -> Value {
        match operation.as_str() {
            "DescribeStream" => json!({"StreamDescription": {
                "StreamArn": STREAM_ARN, "StreamStatus": "ENABLED", "Shards": [{"ShardId": "shard-1"}]
            }}),
            "GetShardIterator" => json!({"ShardIterator": "page-0"}),
            "GetRecords" => {
                let page: u64 =
                    body["ShardIterator"].as_str().and_then(|s| s.strip_prefix("page-")).and_then(|n| n.parse().ok()).unwrap_or(0);
                self.reads_began.lock().expect("lock").push(epoch_ms());
                tokio::time::sleep(READ_TAKES).await;
                let records: Vec<Value> = if page < self.pages {
                    (page * 4 + 1..=page * 4 + 4).map(|seq| record(seq, self.padding)).collect()
                } else {
                    Vec::new()
                };
                json!({"Records": records, "NextShardIterator": format!("page-{}", (page + 1).min(self.pages))})
            }
            other => json!({"__type": "UnknownOperationException", "message": other}),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_is_read_while_a_batch_runs_and_its_wanted_records_arrive_in_order_once() {
    let shutdown = CancellationToken::new();
    let (dir, function) = recording_function("stream-recorder", &shutdown).await;
    let stream = FakeStream::new(PAGES, 0);
    let source = StreamSource {
        stream_arn: STREAM_ARN.into(),
        starting_position: StartingPosition::TrimHorizon,
        batch_size: 4,
        batching_window: Duration::ZERO,
        filters: vec![json!({"eventName": ["INSERT"]})],
        report_batch_item_failures: false,
        bisect_on_error: false,
        max_retry_attempts: None,
    };
    prism_cloud::streams::start(source, function, stream.client(), shutdown.clone()).await.expect("poller started");

    let inserts: Vec<u64> = (1..=PAGES * 4).filter(|seq| seq % 2 == 1).collect();
    let runs = delivered(&dir.join("invocations"), inserts.len()).await;
    shutdown.cancel();

    let all: Vec<u64> = runs.iter().flat_map(common::Invocation::numbers).collect();
    assert_eq!(all, inserts, "the inserts, in order, each once; the modifications filtered out");
    let reads = stream.reads_began.lock().expect("lock").clone();
    assert!(
        reads.iter().any(|read| runs.iter().any(|run| run.began < *read && *read < run.ended)),
        "a read began while a batch ran: reads at {reads:?}, runs {:?}",
        runs.iter().map(|r| (r.began, r.ended)).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The records `log` shows delivered once there are `count` (or 20 s have
/// passed), and a moment later, for anything delivered twice to show.
async fn delivered(log: &std::path::Path, count: usize) -> Vec<common::Invocation> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while invocations(log).iter().map(|i| i.records.len()).sum::<usize>() < count && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    invocations(log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_cut_where_it_would_pass_lambdas_six_mb_payload() {
    let shutdown = CancellationToken::new();
    let (dir, function) = recording_function("stream-big-records", &shutdown).await;
    // Eight records of 1.6 MB: three fit in 6 MB, four do not.
    let stream = FakeStream::new(2, 1_600_000);
    let source = StreamSource {
        stream_arn: STREAM_ARN.into(),
        starting_position: StartingPosition::TrimHorizon,
        batch_size: 4,
        batching_window: Duration::ZERO,
        filters: Vec::new(),
        report_batch_item_failures: false,
        bisect_on_error: false,
        max_retry_attempts: None,
    };
    prism_cloud::streams::start(source, function, stream.client(), shutdown.clone()).await.expect("poller started");
    let runs = delivered(&dir.join("invocations"), 8).await;
    shutdown.cancel();

    let batches: Vec<Vec<u64>> = runs.iter().map(common::Invocation::numbers).collect();
    assert_eq!(batches, [vec![1, 2, 3], vec![4, 5, 6], vec![7, 8]], "batches cut at 6 MB, each delivered once, in order");
    let _ = std::fs::remove_dir_all(dir);
}

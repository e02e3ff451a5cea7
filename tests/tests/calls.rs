//! What one small text job costs in AWS calls, counted at the functions'
//! endpoints: every function's calls from submission to the last fan-out,
//! through the API, dropped into the bucket and inline, with nobody watching;
//! and what its live fan-out costs when somebody does.
//!
//! The job runs alone, so nothing is shared with another job's batches, and
//! it may meet instances that have not yet read what they cache for a while
//! (the owner's quota, the breakers, the estimate calibration: three reads).
//! This is the most a small job costs; the load run, with warm instances and
//! the publisher's batches shared, measures the average (and holds it to the
//! goal of 20).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use common::{JOB_TIMEOUT, TestCloud};
use prism_cloud::EmulatorChoice;
use prism_cloud::live::{LiveConnection, Watch};
use prism_shared::aws::{DynamoConnectionStore, DynamoJobStore};
use prism_shared::ports::{ConnectionStore, JobStore};
use prism_shared::{JobId, JobStatus, S3Uri};

/// The calls a small text job may make alone, every function together:
/// through the API, and dropped into the bucket. Each path makes one write
/// per change, and the publisher at most one `PublishBatch` per change (it
/// publishes the changes the stream hands it together in one): five
/// changes through the API (created, uploaded, classified, started, ended),
/// four for a drop (created uploaded in one). The text itself is read once,
/// by classify: it travels on to the processor with its command.
const BUDGET_THROUGH_API: u64 = 22;
const BUDGET_DROPPED: u64 = 17;
/// Inline text is processed in the request and stored in one write: its
/// object (one `PutObject`, whose answer names the ETag), the job's whole
/// life (one transaction), the owner's quota and active jobs (two reads)
/// and a `PublishBatch`, two if the stream hands the write over in two reads.
const BUDGET_INLINE: u64 = 6;

type Calls = BTreeMap<(String, String, String), u64>;

/// The calls made since `before`, once they have stopped: the stream's
/// publisher and the fan-out run after the job ends.
async fn settled_calls_since(tc: &TestCloud, before: &Calls) -> Calls {
    let delta = || -> Calls {
        tc.cloud
            .proxies
            .calls()
            .into_iter()
            .map(|(key, n)| {
                let was = before.get(&key).copied().unwrap_or(0);
                (key, n - was)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    let started = Instant::now();
    let (mut last, mut since) = (delta(), Instant::now());
    while since.elapsed() < Duration::from_secs(3) && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = delta();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

async fn wait_terminal(store: &DynamoJobStore, id: &JobId) {
    let started = Instant::now();
    loop {
        if let Some(job) = store.get(id).await.expect("get")
            && job.status.is_terminal()
        {
            assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
            return;
        }
        assert!(started.elapsed() < JOB_TIMEOUT, "job {id} did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn table(path: &str, calls: &Calls) -> String {
    let mut by_function: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for ((function, service, operation), n) in calls {
        let binary = function.strip_prefix("prism-test-").unwrap_or(function);
        *by_function.entry(binary).or_default().entry(format!("{service}:{operation}")).or_default() += n;
    }
    let mut out = format!("\n{path}: {} calls\n", calls.values().sum::<u64>());
    for (function, operations) in by_function {
        let line: Vec<String> = operations.iter().map(|(op, n)| format!("{op} {n}")).collect();
        out.push_str(&format!("  {function} ({}): {}\n", operations.values().sum::<u64>(), line.join(", ")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_text_job_alone_stays_within_its_call_budget_either_way_it_arrives() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let store = DynamoJobStore::new(tc.cloud.clients().dynamodb, &tc.cloud.info.table);
    let text = b"A small text job. A few words to count.\nLine two.\n".to_vec();

    let through_api = async |name: &str| {
        let before = tc.cloud.proxies.calls();
        let (job, url) = tc.api.create(name, None).await.expect("create");
        tc.api.upload(&url, text.clone()).await.expect("upload");
        wait_terminal(&store, &job.id).await;
        settled_calls_since(&tc, &before).await
    };
    let dropped = async |name: &str| {
        let before = tc.cloud.proxies.calls();
        let key = format!("uploads/tester/{name}");
        let s3 = tc.cloud.clients().s3;
        let put = s3.put_object().bucket(&tc.cloud.info.bucket).key(&key).body(ByteStream::from(text.clone())).send().await.expect("put");
        let id = JobId::for_object(&S3Uri::new(&tc.cloud.info.bucket, key), put.e_tag().expect("etag").trim_matches('"'));
        wait_terminal(&store, &id).await;
        settled_calls_since(&tc, &before).await
    };
    let inline = async |name: &str| {
        let before = tc.cloud.proxies.calls();
        let body = serde_json::json!({ "file_name": name, "text": String::from_utf8_lossy(&text) });
        let created = tc.api.request(reqwest::Method::POST, "/v1/jobs").json(&body).send().await.expect("answered");
        assert_eq!(created.status(), 201, "created");
        let answer: serde_json::Value = created.json().await.expect("the job");
        let id: JobId = answer["job"]["id"].as_str().expect("an id").parse().expect("a job id");
        wait_terminal(&store, &id).await;
        settled_calls_since(&tc, &before).await
    };
    let (through_api, dropped) = (through_api("small.txt").await, dropped("small.txt").await);
    let inline = inline("inline.txt").await;

    let report = table("through the API", &through_api) + &table("dropped into the bucket", &dropped) + &table("inline", &inline);
    eprintln!("{report}");
    for (calls, budget) in [(&through_api, BUDGET_THROUGH_API), (&dropped, BUDGET_DROPPED), (&inline, BUDGET_INLINE)] {
        assert!(calls.values().sum::<u64>() <= budget, "over the budget of {budget}:{report}");
    }
    // The text is smaller than classify's sniffing read, so it travels with
    // its command: the processor reads nothing back from the bucket.
    for (path, calls) in [("through the API", &through_api), ("dropped", &dropped)] {
        let reads: Vec<_> =
            calls.iter().filter(|((function, _, operation), _)| function.ends_with("-process-text") && operation == "GetObject").collect();
        assert!(reads.is_empty(), "{path}: the processor read the input it was handed: {reads:?}");
    }
    let s3_by_api: Vec<_> = inline.iter().filter(|((function, service, _), _)| function.ends_with("-api") && service == "s3").collect();
    assert_eq!(s3_by_api.len(), 1, "the inline text's object is written and not read back: {s3_by_api:?}");
    tc.finish().await;
}

/// A watched job's events reach `progress`, and each fan-out reads what it
/// needs (the job's subscriptions and how far they have been sent) in one
/// Query, pushes, and advances the cursor with one write: no `GetItem`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_jobs_fan_out_reads_its_subscriptions_and_cursor_in_one_query_and_advances_the_cursor_to_the_end() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let store = DynamoJobStore::new(tc.cloud.clients().dynamodb, &tc.cloud.info.table);
    let url = tc.cloud.info.websocket_url.clone().expect("the template has a WebSocket API");
    let (job, upload_url) = tc.api.create("watched.txt", None).await.expect("create");
    let mut connection = LiveConnection::connect(&url, Some(&tc.token("tester"))).await.expect("connect");
    let mut watch = Watch::new([(job.id.clone(), 0)]);
    watch.run(&mut connection, Some(1), &mut |_, _| {}).await.expect("the snapshot and the replay");

    let before = tc.cloud.proxies.calls();
    tc.api.upload(&upload_url, b"Watched live. A few words to count.\n".to_vec()).await.expect("upload");
    tokio::time::timeout(JOB_TIMEOUT, watch.run(&mut connection, None, &mut |_, _| {})).await.expect("in time").expect("followed");
    let calls = settled_calls_since(&tc, &before).await;
    let report = table("watched", &calls);
    eprintln!("{report}");

    let progress = |operation: &str| {
        calls.iter().filter(|((function, _, op), _)| function.ends_with("-progress") && op == operation).map(|(_, n)| n).sum::<u64>()
    };
    assert!(progress("UpdateItem") >= 1, "the fan-out advanced its cursor:{report}");
    assert!(progress("Query") >= 1, "the fan-out read the job's subscriptions:{report}");
    assert_eq!(progress("GetItem"), 0, "the cursor is read with the subscriptions, not on its own:{report}");

    // Written and read at one key on the emulated table: the cursor is at the
    // job's last event, beside the subscription that is still open.
    let last_seq = store.get(&job.id).await.expect("get").expect("job").seq;
    let state = DynamoConnectionStore::new(tc.cloud.clients().dynamodb, &tc.cloud.info.table).fan_out_state(&job.id).await.expect("state");
    assert_eq!((state.sent_seq, state.subscriptions.len()), (last_seq, 1), "{state:?}");
    connection.close().await;
    tc.finish().await;
}

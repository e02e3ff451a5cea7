//! The first slice end to end: text submitted through the API or dropped
//! into the bucket becomes a completed job, bad input ends failed with a
//! reason, and failing messages end in the DLQ with the job failed.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::QueueAttributeName;
use common::{JOB_TIMEOUT, TestCloud};
use prism_cloud::EmulatorChoice;
use prism_shared::aws::DynamoJobStore;
use prism_shared::domain::commands::Command;
use prism_shared::domain::job::InputObject;
use prism_shared::ports::{EstimateStore, JobStore};
use prism_shared::{Envelope, Job, JobId, JobStatus, Modality, S3Uri};
use serde_json::Value;

const NOTES: &[u8] = b"Prism turns every file into a job.\nIt counts words, lines and bytes.\nThird line without newline";

fn text_result(job: &Job) -> Value {
    assert_eq!(job.status, JobStatus::Completed, "job {} ended {:?} ({:?})", job.id, job.status, job.error);
    assert_eq!(job.modality, Some(Modality::Text));
    serde_json::to_value(job.result.as_ref().expect("result")).expect("json")
}

/// Puts an object straight into the bucket and returns the job intake derives for it.
async fn drop_into_bucket(tc: &TestCloud, key: &str, body: &[u8]) -> JobId {
    let s3 = tc.cloud.clients().s3;
    let out =
        s3.put_object().bucket(&tc.cloud.info.bucket).key(key).body(ByteStream::from(body.to_vec())).send().await.expect("put object");
    let etag = out.e_tag().expect("etag").trim_matches('"').to_owned();
    JobId::for_object(&S3Uri::new(&tc.cloud.info.bucket, key), &etag)
}

/// The job store behind the cloud, to read jobs of any owner.
fn store(tc: &TestCloud) -> DynamoJobStore {
    DynamoJobStore::new(tc.cloud.clients().dynamodb, &tc.cloud.info.table)
}

/// Waits for a job that may not exist yet (intake creates it asynchronously).
async fn wait_for(tc: &TestCloud, id: &JobId) -> Job {
    let started = Instant::now();
    let store = store(tc);
    loop {
        if let Some(job) = store.get(id).await.expect("store")
            && job.status.is_terminal()
        {
            return job;
        }
        assert!(started.elapsed() < JOB_TIMEOUT, "job {id} did not finish in {JOB_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_slice(emulator: EmulatorChoice) {
    let tc = TestCloud::start(emulator).await;

    // Through the API: create the job, PUT to the presigned URL, wait.
    let job = tc.api.submit("notes.txt", NOTES.to_vec(), None).await.expect("submit");
    assert_eq!(job.status, JobStatus::Queued);
    let done = tc.api.wait(&job.id, JOB_TIMEOUT).await.expect("wait");
    let r = text_result(&done);
    assert_eq!((r["words"].as_u64(), r["lines"].as_u64(), r["bytes"].as_u64()), (Some(17), Some(3), Some(NOTES.len() as u64)));
    assert_eq!(r["encoding"], "utf8");
    let events = tc.api.events(&job.id, 0).await.expect("events");
    let types: Vec<&str> = events.iter().filter_map(|e| e["event_type"].as_str()).collect();
    let expected =
        ["job.created", "job.uploaded", "job.classified", "job.started", "job.progress", "job.log", "job.progress", "job.completed"];
    assert_eq!(types, expected, "the processor's log line is flushed at its next checkpoint");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    // The processor wrote the job's end as a CloudWatch embedded metric. The
    // line reaches the log through the instance's output pipe, which may be
    // a moment behind the job's state: it is waited for, up to 10 s.
    let ended_metric = |log: &str| -> Option<serde_json::Value> {
        log.lines()
            .filter(|l| l.contains(r#""_aws""#) && l.contains("JobsEnded"))
            .find_map(|l| serde_json::from_str(&l[l.find('{')?..]).ok())
    };
    let started = Instant::now();
    while ended_metric(&tc.log("process-text")).is_none() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = tc.log("process-text");
    let metric = ended_metric(&log).unwrap_or_else(|| panic!("no JobsEnded metric in process-text's log:\n{log}"));
    assert_eq!(
        (metric["Modality"].as_str(), metric["Status"].as_str(), metric["Lane"].as_str(), metric["JobsEnded"].as_f64()),
        (Some("text"), Some("completed"), Some("text-normal"), Some(1.0))
    );
    // And classify counted it into its lane.
    let classify = tc.log("classify");
    assert!(
        classify.lines().any(|l| l.contains(r#""_aws""#) && l.contains(r#""JobsQueued":1"#) && l.contains(r#""Lane":"text-normal""#)),
        "no JobsQueued metric for text-normal in classify's log"
    );
    assert_eq!(metric["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Prism");
    assert!(metric["ProcessingMs"].as_f64().is_some_and(|ms| ms >= 0.0), "{metric}");
    // Each invocation wrote the AWS calls it made (after posting its
    // response): together, every call the local cloud saw at its endpoint.
    let counted = || {
        tc.cloud
            .proxies
            .calls()
            .into_iter()
            .filter(|((function, _, _), _)| function == "prism-test-process-text")
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let written = || -> u64 {
        let log = tc.log("process-text");
        let lines = log.lines().filter(|l| l.contains(r#""_aws""#) && l.contains("AwsCalls"));
        lines.filter_map(|l| serde_json::from_str::<serde_json::Value>(&l[l.find('{')?..]).ok()?["AwsCalls"].as_f64()).sum::<f64>() as u64
    };
    let started = Instant::now();
    while written() != counted() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(written(), counted(), "calls written as metrics, calls seen by the endpoint");
    assert!(counted() > 0);
    // Its time went into the day's text totals that calibrate the classifier's estimates.
    let estimates = prism_shared::aws::DynamoEstimateStore::new(tc.cloud.clients().dynamodb, tc.cloud.info.table.clone());
    let text_jobs = || async {
        let calibration = estimates.calibration(chrono::Utc::now().date_naive()).await.expect("calibration");
        calibration.totals(Modality::Text).jobs
    };
    let started = Instant::now();
    while text_jobs().await == 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(text_jobs().await, 1, "one completed text job counted once");

    // Straight into the bucket: an operator's drop, owner from the key prefix.
    let dropped = drop_into_bucket(&tc, "uploads/alice/report.txt", "one two three\nfour".as_bytes()).await;
    let done = wait_for(&tc, &dropped).await;
    assert_eq!(done.owner, "alice");
    assert_eq!(text_result(&done)["words"], 4);

    // The same notification delivered again finds the same job and changes nothing.
    let before = store(&tc).events(&dropped, 0, 100).await.expect("events").len();
    let notification = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-25T20:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:test"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": tc.cloud.info.bucket, "arn": "arn:aws:s3:::x"},
               "object": {"key": "uploads/alice/report.txt", "size": 18, "eTag": done.input.as_ref().expect("input").etag}}
    }]});
    let sqs = tc.cloud.clients().sqs;
    let intake_url = sqs.get_queue_url().queue_name("prism-test-intake").send().await.expect("queue").queue_url.expect("url");
    let intake_calls = || {
        tc.cloud.proxies.calls().into_iter().filter(|((function, _, _), _)| function == "prism-test-intake").map(|(_, n)| n).sum::<u64>()
    };
    let calls_before = intake_calls();
    sqs.send_message().queue_url(&intake_url).message_body(notification.to_string()).send().await.expect("send");
    // Read and acknowledged: intake made its calls for it and the queue holds nothing, seen or unseen.
    let started = Instant::now();
    loop {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&intake_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("attributes");
        let held: u64 = attributes.attributes().into_iter().flatten().filter_map(|(_, n)| n.parse::<u64>().ok()).sum();
        if held == 0 && intake_calls() > calls_before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the duplicate was not consumed: {held} held, {} intake calls",
            intake_calls()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store(&tc).events(&dropped, 0, 100).await.expect("events").len(), before, "a duplicate notification changed the job");

    // Encodings: Latin-1 without BOM, UTF-16LE with BOM.
    let latin = tc.api.submit("latin.txt", b"caf\xe9 cr\xe8me br\xfbl\xe9e\n".to_vec(), None).await.expect("submit");
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend("hello wide world".encode_utf16().flat_map(u16::to_le_bytes));
    let wide = tc.api.submit("wide.txt", utf16, None).await.expect("submit");
    tc.api.wait(&latin.id, JOB_TIMEOUT).await.expect("wait");
    // The snapshot links the text, converted to UTF-8, for download.
    let snapshot: Value =
        tc.api.request(reqwest::Method::GET, &format!("/v1/jobs/{}", latin.id)).send().await.expect("get").json().await.expect("json");
    let url = snapshot["links"][0]["url"].as_str().expect("a link to the text output");
    let text = reqwest::get(url).await.expect("download").text().await.expect("text");
    assert_eq!(text, "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e\n");
    let latin = text_result(&tc.api.job(&latin.id).await.expect("job"));
    assert_eq!((latin["encoding"].as_str(), latin["words"].as_u64(), latin["chars"].as_u64()), (Some("latin1"), Some(3), Some(18)));
    let wide = text_result(&tc.api.wait(&wide.id, JOB_TIMEOUT).await.expect("wait"));
    assert_eq!((wide["encoding"].as_str(), wide["words"].as_u64(), wide["chars"].as_u64()), (Some("utf16le"), Some(3), Some(16)));

    // Bad input ends failed with a reason, never stuck.
    let empty = tc.api.submit("empty.txt", Vec::new(), None).await.expect("submit");
    let empty = tc.api.wait(&empty.id, JOB_TIMEOUT).await.expect("wait");
    assert_eq!(empty.status, JobStatus::Failed);
    assert_eq!(empty.error.as_ref().map(|e| e.message.as_str()), Some("empty upload"));
    let noise = tc.api.submit("noise.txt", vec![0, 1, 2, 3, 0xFF, 0, 7, 9, 0, 0], None).await.expect("submit");
    let noise = tc.api.wait(&noise.id, JOB_TIMEOUT).await.expect("wait");
    assert_eq!(noise.error.as_ref().map(|e| e.code.as_str()), Some("unsupported_content"));

    // Stopped as Lambda stops instances: each runtime registered its
    // graceful-shutdown extension, so each got SIGTERM, ran its hook and exited.
    let binaries: Vec<String> = tc.cloud.binaries().map(str::to_owned).collect();
    let dir = tc.stop_keeping_state().await;
    for binary in binaries {
        let log = std::fs::read_to_string(dir.join("logs").join(format!("{binary}.log"))).unwrap_or_default();
        let hooks = log.lines().filter(|l| l.contains("SIGTERM: stopping")).count();
        let exits = log.lines().filter(|l| l.contains("[prism] instance stopped after SIGTERM")).count();
        assert!(hooks > 0 && exits == hooks, "{binary}: {hooks} hooks ran, {exits} instances exited on SIGTERM\n{log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_slice_on_localstack_and_moto() {
    text_slice(EmulatorChoice::Localstack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_slice_on_moto_alone() {
    text_slice(EmulatorChoice::Moto).await;
}

/// A message that keeps failing is retried with backoff, lands in its DLQ
/// after maxReceiveCount, and its job ends failed; garbage lands there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_messages_end_in_the_dlq_and_fail_their_job() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let sqs = tc.cloud.clients().sqs;
    let text_url = sqs.get_queue_url().queue_name("prism-test-text-normal").send().await.expect("queue").queue_url.expect("url");
    let classify_url = sqs.get_queue_url().queue_name("prism-test-classify").send().await.expect("queue").queue_url.expect("url");

    // A queued job told to process an input in a bucket that does not exist
    // (and that its policy does not cover: AccessDenied, as on AWS): every
    // attempt fails with a retryable error.
    let (victim, _upload_url) = tc.api.create("pending.txt", None).await.expect("create");
    let command = Envelope::new(
        "test",
        &victim.trace_id,
        Some(victim.id.clone()),
        None,
        Command::Process {
            input: InputObject { uri: S3Uri::new("no-such-bucket-anywhere", "uploads/x.txt"), size: 1, etag: "e".into() },
            modality: Modality::Text,
            mime: "text/plain".into(),
            action: None,
            stored: None,
            content: None,
        },
    );
    sqs.send_message().queue_url(&text_url).message_body(command.to_json()).send().await.expect("send");
    sqs.send_message().queue_url(&classify_url).message_body("this is not an envelope").send().await.expect("send");

    let started = Instant::now();
    let failed = wait_for(&tc, &victim.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    let error = failed.error.expect("error");
    assert_eq!(error.code, "retries_exhausted", "{error:?}");
    assert!(error.message.contains("prism-test-text"), "{}", error.message);
    // Three attempts with 2 s and 4 s backoff between them: not a hot loop.
    assert!(started.elapsed() >= Duration::from_secs(6), "gave up after {:?}", started.elapsed());
    let attempts = tc.log("process-text").matches("message failed").count();
    assert_eq!(attempts, 3, "process-text attempts");

    let deadline = Instant::now() + JOB_TIMEOUT;
    while !tc.log("dead-letter").contains("this is not an envelope") {
        assert!(Instant::now() < deadline, "garbage never reached the dead-letter consumer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tc.finish_denying(|(_, action, resource)| action == "s3:GetObject" && resource.contains("no-such-bucket-anywhere")).await;
}

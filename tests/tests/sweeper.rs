//! The paths that used to leave a job queued or processing forever, each made
//! to happen on the local cloud with an injected fault, and each ending the
//! job within the sweeper's bound (its budget plus one period; here 3 s and
//! 1 s, fired by the local cloud's scheduler as EventBridge Scheduler would).

mod common;

use std::time::{Duration, Instant};

use common::TestCloud;
use prism_cloud::EmulatorChoice;
use prism_cloud::proxy::{FaultAction, FaultPlan, FaultRule};
use prism_shared::{JobId, S3Uri};
use serde_json::json;

/// Budget plus period, with room for a slow machine.
const BOUND: Duration = Duration::from_secs(20);

fn failing(function: &str, operation: &str, body_contains: &str) -> FaultRule {
    FaultRule {
        function: Some(function.into()),
        operation: operation.into(),
        body_contains: Some(body_contains.into()),
        uri_contains: None,
        after: 0,
        times: 1000,
        action: FaultAction::Fail { status: None, code: None },
    }
}

async fn ends_by_the_sweep(tc: &TestCloud, id: &JobId, code: &str) {
    let started = Instant::now();
    let job = tc.api.wait(id, BOUND).await.expect("terminal within the sweeper's bound");
    assert_eq!(job.status.as_str(), "failed");
    assert_eq!(job.error.as_ref().map(|e| e.code.as_str()), Some(code), "{:?}", job.error);
    let events = tc.api.events(id, 0).await.expect("events");
    let last = events.last().expect("events");
    assert_eq!((last["event_type"].as_str(), last["source"].as_str()), (Some("job.failed"), Some("sweeper")));
    eprintln!("{id} ended as {code} {:?} after the wait began", started.elapsed());
}

#[tokio::test]
async fn every_stuck_path_ends_within_the_sweepers_bound() {
    let faults = FaultPlan {
        faults: vec![
            // Inline text: the one write of its whole life fails.
            failing("api", "dynamodb:TransactWriteItems", "job.completed"),
            // A `source` submission: the upload is recorded, the classify command is lost.
            failing("api", "sqs:SendMessage", "job.classify"),
        ],
        ..FaultPlan::default()
    };
    let parameters = [("SweepSchedule", "rate(1 second)"), ("UploadWaitSeconds", "3"), ("StalledAfterSeconds", "3")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
    let tc = TestCloud::with(EmulatorChoice::Localstack, faults, parameters).await;

    // 1. A job whose upload never comes.
    let (never_uploaded, _) = tc.api.create("never.txt", None).await.expect("create");

    // 2. Inline text, processed in the request, used to be able to stop half
    // way (a timeout after `job.started`). Its whole life is one write now:
    // when that write fails there is no job at all, half done or otherwise.
    let inline = tc.api.request(reqwest::Method::POST, "/v1/jobs").json(&json!({"text": "three small words"})).send().await.expect("send");
    assert_eq!(inline.status().as_u16(), 503, "the request fails");
    let listed: serde_json::Value =
        tc.api.request(reqwest::Method::GET, "/v1/jobs").send().await.expect("list").json().await.expect("json");
    let ids: Vec<&str> = listed["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["id"].as_str()).collect();
    assert_eq!(ids, [never_uploaded.id.as_str()], "no job of the failed inline request, in any state");

    // 3. An object already uploaded, submitted as `source`, whose classify command is lost.
    let bucket = tc.cloud.info.bucket.clone();
    let clients = tc.cloud.clients();
    let key = "uploads/tester/already/there.txt";
    let put = clients.s3.put_object().bucket(&bucket).key(key).body(b"words already here".to_vec().into()).send().await.expect("put");
    // The drop also gets a job of its own from intake (a derived id), which completes: not the one to follow.
    let etag = put.e_tag().expect("etag").trim_matches('"').to_owned();
    let dropped = JobId::for_object(&S3Uri::new(&bucket, key), &etag);
    let source = tc
        .api
        .request(reqwest::Method::POST, "/v1/jobs")
        .json(&json!({"source": format!("s3://{bucket}/{key}")}))
        .send()
        .await
        .expect("send");
    assert_eq!(source.status().as_u16(), 503, "the command could not be sent");
    let resp = tc.api.request(reqwest::Method::GET, "/v1/jobs?status=queued").send().await.expect("list");
    let queued: serde_json::Value = resp.json().await.expect("json");
    let lost_command: JobId = queued["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["upload"].as_str().is_some_and(|u| u.ends_with(key)) && j["id"].as_str() != Some(dropped.as_str()))
        .and_then(|j| j["id"].as_str())
        .expect("the job with the lost command is queued")
        .parse()
        .expect("id");

    ends_by_the_sweep(&tc, &never_uploaded.id, "upload_expired").await;
    ends_by_the_sweep(&tc, &lost_command, "stalled").await;
    tc.finish().await;
}

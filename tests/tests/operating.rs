//! The operator surface end to end (issue 18): a paused lane holds its jobs
//! queued while another lane keeps completing, and resuming drains it; an
//! owner's token is refused on the operator routes.

mod common;

use std::time::{Duration, Instant};

use common::openapi::OpenApi;
use common::{JOB_TIMEOUT, TestCloud};
use prism_cloud::{EmulatorChoice, PrismClient};
use prism_shared::{JobStatus, Modality};
use serde_json::Value;

fn lane<'a>(lanes: &'a [Value], name: &str) -> &'a Value {
    lanes.iter().find(|l| l["lane"] == name).unwrap_or_else(|| panic!("no lane {name} in {lanes:?}"))
}

/// Waits until `name` has `waiting` messages in its queue.
async fn until_waiting(operator: &PrismClient, name: &str, waiting: u64) -> Value {
    let started = Instant::now();
    loop {
        let lanes = operator.lanes().await.expect("lanes");
        let lane = lane(&lanes, name).clone();
        if lane["waiting"] == waiting {
            return lane;
        }
        assert!(started.elapsed() < JOB_TIMEOUT, "{name} never had {waiting} waiting: {lane}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_paused_lane_holds_its_jobs_queued_while_another_lane_completes_and_resuming_drains_it() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let operator = tc.operator();

    let paused = operator.set_lanes_paused("text-bulk", true).await.expect("pause");
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0]["paused"], true, "{paused:?}");

    let held = tc.api.submit("held.txt", b"waits for its lane".to_vec(), Some("batch")).await.expect("submit bulk");
    let served = tc.api.submit("served.txt", b"goes through".to_vec(), Some("normal")).await.expect("submit normal");
    let done = tc.api.wait(&served.id, JOB_TIMEOUT).await.expect("normal lane job ends");
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);

    // The bulk job was classified into its lane and its message waits there, undelivered.
    let bulk = until_waiting(&operator, "text-bulk", 1).await;
    assert_eq!((bulk["paused"].as_bool(), bulk["in_flight"].as_u64()), (Some(true), Some(0)), "{bulk}");
    let waiting = tc.api.job(&held.id).await.expect("job");
    assert_eq!((waiting.status, waiting.modality), (JobStatus::Queued, Some(Modality::Text)));
    let health: Value = tc.operator().request(reqwest::Method::GET, "/v1/health").send().await.expect("health").json().await.expect("json");
    assert_eq!(lane(health["lanes"].as_array().expect("operator view"), "text-bulk")["paused"], true);
    let spec = OpenApi::load();
    spec.check("GET", "/v1/health", 200, "application/json", &health);
    spec.check("POST", "/v1/ops/lanes/{lane}/pause", 200, "application/json", &serde_json::json!({ "lanes": paused }));

    let resumed = operator.set_lanes_paused("text", false).await.expect("resume the modality");
    assert_eq!(resumed.len(), 3, "text has three lanes");
    assert!(resumed.iter().all(|l| l["paused"] == false), "{resumed:?}");
    let drained = tc.api.wait(&held.id, JOB_TIMEOUT).await.expect("bulk job ends after resume");
    assert_eq!(drained.status, JobStatus::Completed, "{:?}", drained.error);
    until_waiting(&operator, "text-bulk", 0).await;
    tc.finish().await;
}

#[tokio::test]
async fn an_owner_token_is_refused_on_operator_routes() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let spec = OpenApi::load();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/ops/lanes"),
        (reqwest::Method::POST, "/v1/ops/lanes/text-bulk/pause"),
        (reqwest::Method::POST, "/v1/ops/lanes/text-bulk/resume"),
    ] {
        let owner = tc.api.request(method.clone(), path).send().await.expect("send");
        assert_eq!(owner.status(), 403, "{method} {path}");
        let problem: Value = owner.json().await.expect("problem");
        assert_eq!(problem["code"], "forbidden");
        spec.check(method.as_str(), &path.replace("text-bulk", "{lane}"), 403, "application/problem+json", &problem);
        assert_eq!(tc.anonymous().request(method.clone(), path).send().await.expect("send").status(), 401, "{method} {path}");
    }
    // An owner sees health without the lanes; the refused pause changed nothing.
    let health: Value = tc.api.request(reqwest::Method::GET, "/v1/health").send().await.expect("health").json().await.expect("json");
    assert_eq!(health, serde_json::json!({"status": "ok"}));
    let lanes = tc.operator().lanes().await.expect("lanes");
    assert!(lanes.iter().all(|l| l["paused"] == false), "{lanes:?}");
    tc.finish().await;
}

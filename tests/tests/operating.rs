//! The operator surface end to end (issue 18): a paused lane holds its jobs
//! queued while another lane keeps completing, and resuming drains it; a job
//! whose message went to the DLQ is listed with its reason, redriven after
//! the cause is removed, and completes once; an owner's token is refused on
//! the operator routes. And (issue 14) a dependency's circuit breaker opens
//! on its failures, holds work back without spending retries, and closes
//! through a probe.

mod common;

use std::time::{Duration, Instant};

use common::openapi::OpenApi;
use common::{JOB_TIMEOUT, TestCloud, text_read_by_its_processor};
use prism_cloud::proxy::{FaultAction, FaultPlan, FaultRule};
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

    let submitted = std::time::SystemTime::now();
    let held = tc.api.submit("held.txt", b"waits for its lane".to_vec(), Some("batch")).await.expect("submit bulk");
    let served = tc.api.submit("served.txt", b"goes through".to_vec(), Some("normal")).await.expect("submit normal");
    let done = tc.api.wait(&served.id, JOB_TIMEOUT).await.expect("normal lane job ends");
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);

    // The bulk job was classified into its lane and its message waits there, undelivered.
    let bulk = until_waiting(&operator, "text-bulk", 1).await;
    assert_eq!((bulk["paused"].as_bool(), bulk["in_flight"].as_u64()), (Some(true), Some(0)), "{bulk}");
    let waiting = tc.api.job(&held.id).await.expect("job");
    assert_eq!((waiting.status, waiting.modality), (JobStatus::Queued, Some(Modality::Text)));
    assert_eq!(waiting.phase, "waiting: lane text-bulk is paused");
    // `prism stats`'s oldest message: the held one's, no older than its submission.
    let queue_url = bulk["queue_url"].as_str().expect("the lane's queue");
    let oldest = |now| prism_cloud::emulator::oldest_message_age(&tc.cloud.info.endpoint, queue_url, now);
    let now = std::time::SystemTime::now();
    let age = oldest(now).await.expect("listed").expect("one message waits");
    assert!(age <= now.duration_since(submitted).expect("later"), "{age:?} is older than the submission");
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
    assert_eq!(oldest(std::time::SystemTime::now()).await.expect("listed"), None, "a drained lane has no oldest message");
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

fn count(events: &[Value], event_type: &str) -> usize {
    events.iter().filter(|e| e["event_type"] == event_type).count()
}

#[tokio::test]
async fn a_dead_lettered_job_is_listed_with_its_reason_redriven_after_the_fix_and_completes_once() {
    // Reading the input keeps failing, as while a bucket policy is wrong.
    let broken_reads = FaultRule {
        function: Some("process-text".into()),
        operation: "s3:GetObject".into(),
        body_contains: None,
        uri_contains: Some("poison.txt".into()),
        after: 0,
        times: 10_000,
        action: FaultAction::Fail { status: Some(403), code: Some("AccessDenied".into()) },
    };
    let tc = TestCloud::with_faults(EmulatorChoice::Localstack, FaultPlan { faults: vec![broken_reads], ..FaultPlan::default() }).await;
    let operator = tc.operator();
    let poison = tc.api.submit("poison.txt", text_read_by_its_processor("fine text, unreadable for now"), None).await.expect("submit");
    let failed = tc.api.wait(&poison.id, JOB_TIMEOUT).await.expect("ends through the DLQ");
    assert_eq!(failed.error.as_ref().map(|e| e.code.as_str()), Some("retries_exhausted"), "{:?}", failed.error);

    let listed = operator.dead_letters(Some("text")).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let letter = &listed[0];
    assert_eq!(letter["jobs"], serde_json::json!([poison.id.as_str()]));
    assert_eq!(letter["owner"], "tester");
    let reason = letter["reason"].as_str().expect("reason");
    assert!(reason.starts_with("attempt ") && reason.contains("failed") && reason.contains("AccessDenied"), "{reason}");
    assert!(letter["source_queue"].as_str().is_some_and(|q| q.ends_with("-text-normal")), "{letter}");
    assert!(letter["receive_count"].as_u64().is_some_and(|n| n >= 1), "{letter}");
    OpenApi::load().check("GET", "/v1/ops/dead-letters", 200, "application/json", &serde_json::json!({ "dead_letters": listed }));

    tc.cloud.proxies.clear_faults();
    let outcome = operator.redrive("text", Some(poison.id.as_str())).await.expect("redrive");
    assert_eq!(outcome["redriven"].as_array().map(Vec::len), Some(1), "{outcome}");
    OpenApi::load().check("POST", "/v1/ops/dead-letters/{queue}/redrive", 200, "application/json", &outcome);
    let done = tc.api.wait(&poison.id, JOB_TIMEOUT).await.expect("ends after the redrive");
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);

    // Once: a second redrive finds nothing, and the log has one of each end.
    let again = operator.redrive("text", None).await.expect("redrive again");
    assert_eq!(again["redriven"], serde_json::json!([]), "{again}");
    assert!(operator.dead_letters(None).await.expect("list").is_empty());
    let events = tc.api.events(&poison.id, 0).await.expect("events");
    let ends = [count(&events, "job.failed"), count(&events, "job.redriven"), count(&events, "job.completed")];
    assert_eq!(ends, [1, 1, 1], "failed, redriven, completed: {events:#?}");
    tc.finish_denying(|(function, action, _)| function.ends_with("process-text") && action == "s3:GetObject").await;
}

#[tokio::test]
async fn an_owner_over_its_own_bytes_quota_gets_429_while_another_owner_is_served() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let spec = OpenApi::load();
    let set = tc
        .operator()
        .request(reqwest::Method::PUT, "/v1/ops/quotas/alice")
        .json(&serde_json::json!({"max_bytes_per_day": 100}))
        .send()
        .await
        .expect("set quota");
    assert_eq!(set.status(), 200);
    let view: Value = set.json().await.expect("json");
    spec.check("PUT", "/v1/ops/quotas/{owner}", 200, "application/json", &view);
    assert_eq!(view["in_force"]["max_bytes_per_day"], 100);

    let (alice, bob) = (tc.client_for("alice"), tc.client_for("bob"));
    let sixty = serde_json::json!({"text": "x".repeat(60)});
    let post = |client: &PrismClient| client.request(reqwest::Method::POST, "/v1/jobs").json(&sixty).send();
    assert_eq!(post(&alice).await.expect("first").status(), 201);
    let over = post(&alice).await.expect("second");
    assert_eq!(over.status(), 429);
    let retry_after = over.headers()["retry-after"].to_str().expect("ascii").parse::<u64>().expect("seconds");
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    let problem: Value = over.json().await.expect("problem");
    spec.check("POST", "/v1/jobs", 429, "application/problem+json", &problem);
    assert_eq!(problem["code"], "quota_exceeded");
    assert_eq!(post(&bob).await.expect("bob").status(), 201, "another owner is served");

    let seen: Value =
        tc.operator().request(reqwest::Method::GET, "/v1/ops/quotas/alice").send().await.expect("get").json().await.expect("json");
    assert_eq!(seen["bytes_today"], 60, "{seen}");
    tc.finish().await;
}

#[tokio::test]
async fn a_breaker_opened_by_a_failing_dependency_makes_work_wait_then_recovers_through_half_open() {
    // S3 answers process-text's reads with 503s for two attempts (the SDK
    // tries each read 3 times): two failures within the window open the S3
    // breaker (the threshold is set to 2).
    let outage = FaultRule {
        function: Some("process-text".into()),
        operation: "s3:GetObject".into(),
        body_contains: None,
        uri_contains: None,
        after: 0,
        times: 6,
        action: FaultAction::Fail { status: Some(503), code: Some("ServiceUnavailable".into()) },
    };
    let parameters = [("BreakerThreshold", "2"), ("BreakerCoolDownSeconds", "8")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
    let tc = TestCloud::with(EmulatorChoice::Localstack, FaultPlan { faults: vec![outage], ..FaultPlan::default() }, parameters).await;
    let operator = tc.operator();
    let s3_breaker = async || -> Value {
        let health: Value = operator.request(reqwest::Method::GET, "/v1/health").send().await.expect("health").json().await.expect("json");
        OpenApi::load().check("GET", "/v1/health", 200, "application/json", &health);
        health["breakers"].as_array().expect("breakers").iter().find(|b| b["dependency"] == "s3").expect("s3").clone()
    };
    assert_eq!(s3_breaker().await["state"], "closed");

    let first = tc.api.submit("first.txt", text_read_by_its_processor("read while S3 is down"), None).await.expect("submit");
    let started = Instant::now();
    let open = loop {
        let breaker = s3_breaker().await;
        if breaker["state"] == "open" {
            break breaker;
        }
        assert!(started.elapsed() < JOB_TIMEOUT, "the breaker never opened: {breaker}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(open["last_error"].as_str().is_some_and(|e| e.contains("ServiceUnavailable")), "{open}");
    let second = tc.api.submit("second.txt", text_read_by_its_processor("arrives while the breaker is open"), None).await.expect("submit");

    for job in [&first, &second] {
        let done = tc.api.wait(&job.id, JOB_TIMEOUT).await.expect("ends once S3 is back");
        assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);
    }
    let closed = s3_breaker().await;
    assert_eq!((closed["state"].as_str(), closed["opened"].as_u64()), (Some("closed"), Some(0)), "{closed}");
    // Stored versions: failed, opened, half-open (the probe), closed.
    let stored = tc
        .cloud
        .clients()
        .dynamodb
        .get_item()
        .table_name(&tc.cloud.info.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("BREAKER".into()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("s3".into()))
        .send()
        .await
        .expect("get")
        .item
        .expect("the breaker is stored");
    assert_eq!(stored["version"].as_n().map(String::as_str), Ok("4"), "closed -> open -> half_open -> closed: {stored:?}");

    // The failed attempts are the outage's two; waiting spent none, and each
    // job's phase said what it waited for (the first job's next attempt came
    // 4 s after its second failure, within the 8 s cool-down).
    for job in [&first, &second] {
        let events = tc.api.events(&job.id, 0).await.expect("events");
        let lines: Vec<String> = events
            .iter()
            .filter(|e| e["event_type"] == "job.log")
            .flat_map(|e| e["payload"]["lines"].as_array().cloned().unwrap_or_default())
            .filter_map(|l| l["message"].as_str().map(str::to_owned))
            .collect();
        let failed = if job.id == first.id { 2 } else { 0 };
        assert_eq!(lines.iter().filter(|l| l.contains(" failed: ")).count(), failed, "{lines:#?}");
        let phases: Vec<&str> = events.iter().filter_map(|e| e["payload"]["phase"].as_str()).collect();
        assert!(phases.contains(&"waiting: s3 unavailable"), "{phases:?}");
    }
    assert!(operator.dead_letters(None).await.expect("list").is_empty(), "nothing dead-lettered");
    tc.finish().await;
}

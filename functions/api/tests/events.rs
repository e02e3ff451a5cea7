//! The sample API Gateway events, round-tripped and run through the handler
//! with fakes: every route, its auth, owner isolation and its problems.

use std::sync::Arc;
use std::time::Duration;

use api::{Config, Deps, handle};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use chrono::Utc;
use prism_shared::app::auth::TokenKey;
use prism_shared::domain::limits::SizeLimits;
use prism_shared::ports::JobStore;
use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore, MemoryQueue};
use prism_shared::testing::sample_event;
use prism_shared::{Job, JobEventEnvelope, JobId, Priority};
use serde_json::Value;

const JOB: &str = "0196f0a0-0000-7000-8000-00000000c1a5";

fn key() -> TokenKey {
    TokenKey::new(&[42u8; 32]).expect("key")
}

fn deps() -> (Deps, Arc<MemoryJobStore>, Arc<MemoryQueue>) {
    let (jobs, queue) = (Arc::new(MemoryJobStore::default()), Arc::new(MemoryQueue::default()));
    let limits = SizeLimits { text: 1000, ..SizeLimits::default() };
    let deps = Deps {
        jobs: jobs.clone(),
        blobs: Arc::new(MemoryBlobStore::default()),
        queue: queue.clone(),
        schedules: Arc::new(prism_shared::testing::memory::MemoryScheduleStore::new(jobs.clone())),
        lanes: std::sync::Arc::new(prism_shared::testing::memory::MemoryLaneControl::default()),
        dead_letters: std::sync::Arc::new(prism_shared::testing::memory::MemoryDeadLetters::default()),
        quotas: std::sync::Arc::new(prism_shared::testing::memory::MemoryQuotas::default()),
        breakers: std::sync::Arc::new(prism_shared::testing::memory::MemoryBreakers::default()),
        breaker_policy: prism_shared::domain::breakers::BreakerPolicy::default(),
        estimates: std::sync::Arc::new(prism_shared::testing::memory::MemoryEstimates::default()),
        config: Config {
            bucket: "prism-dev-000000000000-uploads".into(),
            classify_queue_url: "http://sqs/classify".into(),
            upload_url_ttl: Duration::from_secs(900),
            sync_text_max_bytes: 100,
            limits,
            token_key: key(),
            quotas: prism_shared::domain::quotas::Quotas { max_active_jobs: 3, max_bytes_per_day: 0 },
            lanes: prism_shared::domain::lanes::parse("text-bulk m-text-bulk http://sqs/text-bulk").expect("lanes"),
        },
    };
    (deps, jobs, queue)
}

/// A sample event acting for `owner` (None: no Authorization header).
fn event(name: &str, owner: Option<&str>) -> ApiGatewayV2httpRequest {
    let mut e: ApiGatewayV2httpRequest = sample_event(name);
    if let Some(owner) = owner {
        let token = key().issue(owner, chrono::Duration::hours(1), Utc::now()).expect("token");
        e.headers.insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    e
}

fn with_body(mut e: ApiGatewayV2httpRequest, body: Value) -> ApiGatewayV2httpRequest {
    e.body = Some(body.to_string());
    e
}

fn body(resp: &ApiGatewayV2httpResponse) -> Value {
    match &resp.body {
        Some(Body::Text(t)) => serde_json::from_str(t).expect("json body"),
        other => panic!("unexpected body {other:?}"),
    }
}

async fn stored_job(jobs: &MemoryJobStore, owner: &str) -> Job {
    let id: JobId = JOB.parse().expect("id");
    let job =
        Job::new(id, owner.into(), Priority::Low, format!("s3://b/uploads/{owner}/{JOB}/y").parse().expect("uri"), "t".into(), Utc::now());
    jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
    job
}

#[tokio::test]
async fn submit_creates_a_queued_job_with_a_safe_upload_key() {
    let (deps, jobs, _) = deps();
    let resp = handle(&deps, event("apigw-submit-job.json", Some("alice"))).await;
    assert_eq!(resp.status_code, 201);
    let b = body(&resp);
    assert_eq!(b["job"]["status"], "queued");
    assert_eq!(b["job"]["priority"], "high");
    assert_eq!(b["upload"]["method"], "PUT");
    let id: JobId = b["job"]["id"].as_str().expect("id").parse().expect("uuid");
    let job = jobs.get(&id).await.expect("store").expect("stored");
    // "../notes.txt" lost its directory part; the key is the owner's.
    assert_eq!(job.upload.key, format!("uploads/alice/{id}/notes.txt"));
}

#[tokio::test]
async fn every_owner_route_needs_a_valid_token() {
    let (deps, _, _) = deps();
    for name in
        ["apigw-submit-job.json", "apigw-get-job.json", "apigw-get-job-events.json", "apigw-cancel-job.json", "apigw-list-jobs.json"]
    {
        let resp = handle(&deps, event(name, None)).await;
        assert_eq!(resp.status_code, 401, "{name}");
        assert_eq!(resp.headers["www-authenticate"], "Bearer");
        assert_eq!(body(&resp)["code"], "unauthorized");
        let mut forged = event(name, Some("alice"));
        forged.headers.insert("authorization", "Bearer a.b.c".parse().expect("header"));
        assert_eq!(handle(&deps, forged).await.status_code, 401, "{name}");
    }
}

#[tokio::test]
async fn another_owners_job_is_not_found_on_every_route() {
    let (deps, jobs, _) = deps();
    stored_job(&jobs, "alice").await;
    for name in ["apigw-get-job.json", "apigw-get-job-events.json", "apigw-cancel-job.json"] {
        assert_eq!(handle(&deps, event(name, Some("alice"))).await.status_code / 100, 2, "{name} as alice");
    }
    let stored = jobs.get(&JOB.parse().expect("id")).await.expect("store").expect("job");
    assert_eq!(stored.status.as_str(), "cancelled");
    for name in ["apigw-get-job.json", "apigw-get-job-events.json", "apigw-cancel-job.json"] {
        let resp = handle(&deps, event(name, Some("bob"))).await;
        assert_eq!(resp.status_code, 404, "{name} as bob");
        assert_eq!(resp.headers["content-type"], "application/problem+json");
    }
    let list = body(&handle(&deps, event("apigw-list-jobs.json", Some("bob"))).await);
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(0));
    let list = body(&handle(&deps, event("apigw-list-jobs.json", Some("alice"))).await);
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn cancelling_twice_is_a_conflict() {
    let (deps, jobs, _) = deps();
    stored_job(&jobs, "alice").await;
    let first = handle(&deps, event("apigw-cancel-job.json", Some("alice"))).await;
    assert_eq!((first.status_code, body(&first)["status"].clone()), (202, Value::from("cancelled")));
    let again = handle(&deps, event("apigw-cancel-job.json", Some("alice"))).await;
    assert_eq!((again.status_code, body(&again)["code"].clone()), (409, Value::from("conflict")));
}

#[tokio::test]
async fn idempotency_keys_return_the_same_job() {
    let (deps, _, _) = deps();
    let mut req = event("apigw-submit-job.json", Some("alice"));
    req.headers.insert("idempotency-key", "order-17".parse().expect("header"));
    let first = handle(&deps, req.clone()).await;
    let again = handle(&deps, req).await;
    assert_eq!((first.status_code, again.status_code), (201, 200));
    assert_eq!(body(&first)["job"]["id"], body(&again)["job"]["id"]);
    assert!(body(&again)["upload"]["url"].is_string(), "a retry still gets somewhere to upload");
}

#[tokio::test]
async fn small_inline_text_is_processed_in_the_request() {
    let (deps, _, _) = deps();
    let resp = handle(&deps, with_body(event("apigw-submit-job.json", Some("alice")), serde_json::json!({"text": "one two three"}))).await;
    assert_eq!(resp.status_code, 201);
    let b = body(&resp);
    assert_eq!(b["job"]["status"], "completed");
    assert_eq!(b["job"]["result"]["words"], 3);
    assert!(b.get("upload").is_none());
}

#[tokio::test]
async fn existing_objects_must_be_the_owners() {
    let (deps, _, queue) = deps();
    let src = |key: &str| serde_json::json!({"source": format!("s3://prism-dev-000000000000-uploads/{key}")});
    let resp = handle(&deps, with_body(event("apigw-submit-job.json", Some("alice")), src("uploads/bob/x.txt"))).await;
    assert_eq!((resp.status_code, body(&resp)["code"].clone()), (403, Value::from("forbidden")));
    let resp = handle(&deps, with_body(event("apigw-submit-job.json", Some("alice")), src("uploads/alice/missing.txt"))).await;
    assert_eq!(resp.status_code, 422);
    assert!(queue.sent().is_empty());
}

#[tokio::test]
async fn bad_requests_are_problems_with_stable_codes() {
    let (deps, _, _) = deps();
    let submit = || event("apigw-submit-job.json", Some("alice"));
    let mut syntax = submit();
    syntax.body = Some("{not json".into());
    assert_eq!(handle(&deps, syntax).await.status_code, 400);
    let unknown_priority = handle(&deps, with_body(submit(), serde_json::json!({"priority": "whenever"}))).await;
    assert_eq!((unknown_priority.status_code, body(&unknown_priority)["code"].clone()), (422, Value::from("invalid_request")));
    let too_big = handle(&deps, with_body(submit(), serde_json::json!({"size": 1u64 << 40}))).await;
    assert_eq!((too_big.status_code, body(&too_big)["code"].clone()), (413, Value::from("payload_too_large")));
    let big_text = handle(&deps, with_body(submit(), serde_json::json!({"text": "x".repeat(2000)}))).await;
    assert_eq!(big_text.status_code, 413);
}

#[tokio::test]
async fn batches_answer_per_item() {
    let (deps, _, _) = deps();
    let mut req = event("apigw-submit-batch.json", Some("alice"));
    let resp = handle(&deps, req.clone()).await;
    assert_eq!(resp.status_code, 200);
    let statuses: Vec<u64> = body(&resp)["results"].as_array().expect("results").iter().filter_map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses, [201, 201, 422]);
    req.body = Some(serde_json::json!({"items": vec![serde_json::json!({}); 101]}).to_string());
    assert_eq!(handle(&deps, req).await.status_code, 422);
}

#[tokio::test]
async fn a_retried_batch_with_an_idempotency_key_finds_the_jobs_the_first_made() {
    let (deps, _, _) = deps();
    let mut req = event("apigw-submit-batch.json", Some("alice"));
    req.headers.insert("idempotency-key", "batch-7".parse().expect("header"));
    let ids = |resp: &ApiGatewayV2httpResponse| -> Vec<(u64, Option<String>)> {
        body(resp)["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| (r["status"].as_u64().unwrap_or(0), r["job"]["id"].as_str().map(str::to_owned)))
            .collect()
    };
    let first = ids(&handle(&deps, req.clone()).await);
    let again = ids(&handle(&deps, req.clone()).await);
    assert_eq!(first.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [201, 201, 422]);
    assert_eq!(again.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [200, 200, 422], "the retry found every job");
    let job_ids = |r: &[(u64, Option<String>)]| r.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
    assert_eq!(job_ids(&first), job_ids(&again));
    assert_ne!(first[0].1, first[1].1, "each item has its own job");
    // Without the key, the same batch makes new jobs.
    req.headers.remove("idempotency-key");
    let fresh = ids(&handle(&deps, req).await);
    assert_ne!(job_ids(&fresh)[0], job_ids(&first)[0]);
}

#[tokio::test]
async fn a_retried_source_submission_sends_its_job_on_again_until_it_is_classified() {
    let (deps, jobs, queue) = deps();
    let uri: prism_shared::S3Uri = "s3://prism-dev-000000000000-uploads/uploads/alice/in.txt".parse().expect("uri");
    deps.blobs.write(&uri, bytes::Bytes::from_static(b"some words"), "text/plain").await.expect("object");
    let mut request = with_body(event("apigw-submit-job.json", Some("alice")), serde_json::json!({"source": uri.to_string()}));
    request.headers.insert("idempotency-key", "k-1".parse().expect("header"));
    let first = handle(&deps, request.clone()).await;
    assert_eq!(first.status_code, 201);
    // Whether or not the first attempt's command went out (it may have died
    // before sending), the retry sends the job on: classify ignores repeats.
    let retry = handle(&deps, request.clone()).await;
    assert_eq!(retry.status_code, 200);
    let commands = queue.sent();
    assert_eq!(commands.len(), 2);
    assert!(commands.iter().all(|c| c.queue_url == "http://sqs/classify" && c.body.contains("job.classify")));
    // Once classified, a retry sends nothing more.
    let id: prism_shared::JobId = body(&retry)["job"]["id"].as_str().expect("id").parse().expect("id");
    let classification = prism_shared::domain::job::Classification {
        modality: prism_shared::Modality::Text,
        mime: "text/plain".into(),
        confidence: 1.0,
        estimated_seconds: 1.0,
    };
    prism_shared::app::lifecycle::record(jobs.as_ref(), &id, "test", prism_shared::JobEvent::Classified(classification))
        .await
        .expect("classified");
    assert_eq!(handle(&deps, request).await.status_code, 200);
    assert_eq!(queue.sent().len(), 2);
}

/// Arbitrary request bodies and query strings on every route: each gets an
/// answer below 500 (a problem or a job), never a panic or an internal error.
#[test]
fn arbitrary_bodies_and_queries_never_get_a_5xx() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let (deps, _, _) = deps();
    let samples =
        ["apigw-submit-job.json", "apigw-submit-batch.json", "apigw-list-jobs.json", "apigw-get-job-events.json", "apigw-cancel-job.json"];
    let body = prop_oneof![
        ".{0,200}",
        "\\{\"(file_name|text|source|priority|size|metadata|items)\": (\"[^\"]{0,40}\"|-?[0-9]{1,25}|\\{\\}|\\[\\]|null|true)\\}",
    ];
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config::with_cases(400));
    runner
        .run(&(0..samples.len(), body, "[a-z]{0,8}", ".{0,30}"), |(sample, body, param, value)| {
            let mut request = with_body(event(samples[sample], Some("alice")), Value::Null);
            request.body = Some(body);
            request.query_string_parameters = std::collections::HashMap::from([(param, value)]).into();
            let response = runtime.block_on(handle(&deps, request));
            prop_assert!(response.status_code < 500, "answered {}", response.status_code);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn job_logs_page_by_event_up_to_the_cap_ending_with_the_dropped_count() {
    use prism_shared::app::processing::Run;
    use prism_shared::domain::joblog::{LogLevel, MAX_LOG_LINES};
    let (deps, jobs, _) = deps();
    let job = stored_job(&jobs, "alice").await;
    let run = Run::start(jobs.as_ref(), deps.blobs.as_ref(), "test", job.id.clone(), "working").await.expect("start").expect("started");
    let run = run.writing_every(std::time::Duration::ZERO);
    // Three flushes of 50 lines: the job keeps 99 of them and says how many it dropped.
    for flush in 0..3 {
        for line in 0..50 {
            run.log(LogLevel::Info, format!("line {}", flush * 50 + line), &[("flush", flush.into())]);
        }
        run.checkpoint("working", 10 + flush as u8, None).await.expect("checkpoint");
    }
    run.complete(prism_shared::domain::results::JobResult::Text(Default::default()), Vec::new()).await.expect("complete");

    let first = body(&handle(&deps, event("apigw-get-job-logs.json", Some("alice"))).await);
    let lines = first["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 99, "two whole events: 50 lines, then the 49 that fit before the cap");
    assert_eq!((lines[0]["message"].as_str(), lines[0]["level"].as_str()), (Some("line 0"), Some("info")));
    assert_eq!(lines[98]["message"], "line 98");
    let next = first["next_after"].as_u64().expect("a next page");
    assert_eq!(lines[98]["seq"].as_u64(), Some(next));

    let mut request = event("apigw-get-job-logs.json", Some("alice"));
    request.query_string_parameters = std::collections::HashMap::from([("after".to_owned(), next.to_string())]).into();
    let second = body(&handle(&deps, request).await);
    let lines = second["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0]["message"].as_str(), lines[0]["level"].as_str()), (Some("51 lines dropped"), Some("warn")));
    assert_eq!(second["next_after"], Value::Null);
    assert_eq!(second["log_lines"].as_u64(), Some(u64::from(MAX_LOG_LINES)));
    assert_eq!(handle(&deps, event("apigw-get-job-logs.json", Some("bob"))).await.status_code, 404, "another owner's logs");
}

#[tokio::test]
async fn a_submission_named_as_a_format_prism_cannot_decode_is_refused_before_any_upload() {
    let (deps, _, _) = deps();
    for name in ["IMG_0001.HEIC", "photo.avif"] {
        let resp = handle(&deps, with_body(event("apigw-submit-job.json", Some("alice")), serde_json::json!({"file_name": name}))).await;
        assert_eq!(resp.status_code, 415, "{name}");
        let problem = body(&resp);
        assert_eq!(problem["code"], "unsupported_format");
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains("convert to JPEG, PNG or WebP")), "{problem}");
    }
}

#[tokio::test]
async fn an_owner_at_its_quota_of_active_jobs_gets_429_with_retry_after_while_others_are_served() {
    let (deps, jobs, _) = deps();
    let submit =
        |owner: &str| handle(&deps, with_body(event("apigw-submit-job.json", Some(owner)), serde_json::json!({"file_name": "a.txt"})));
    let mut made = Vec::new();
    for _ in 0..3 {
        let resp = submit("alice").await;
        assert_eq!(resp.status_code, 201);
        made.push(body(&resp)["job"]["id"].as_str().expect("id").parse::<JobId>().expect("uuid"));
    }
    let refused = submit("alice").await;
    assert_eq!(refused.status_code, 429);
    assert_eq!(refused.headers["retry-after"], "10");
    assert_eq!(body(&refused)["code"], "quota_exceeded");
    assert_eq!(submit("bob").await.status_code, 201, "another owner is served");

    // A finished job frees its place.
    let job = jobs.get(&made[0]).await.expect("store").expect("job");
    prism_shared::app::lifecycle::request_cancel(jobs.as_ref(), &job, "test").await.expect("cancelled");
    assert_eq!(submit("alice").await.status_code, 201);
}

#[tokio::test]
async fn an_owner_past_its_own_daily_bytes_gets_429_until_midnight_while_others_are_served() {
    let (deps, _, _) = deps();
    let own = prism_shared::domain::quotas::OwnerQuota { max_active_jobs: None, max_bytes_per_day: Some(100) };
    deps.quotas.set_quota("alice", &own).await.expect("set");
    let submit = |owner: &str, body: Value| handle(&deps, with_body(event("apigw-submit-job.json", Some(owner)), body));
    let sixty = serde_json::json!({"file_name": "a.txt", "size": 60});

    assert_eq!(submit("alice", sixty.clone()).await.status_code, 201);
    let over = submit("alice", sixty.clone()).await;
    assert_eq!((over.status_code, body(&over)["code"].as_str()), (429, Some("quota_exceeded")));
    let retry_after: u64 = over.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=86_400).contains(&retry_after), "until the next UTC day: {retry_after}");
    assert_eq!(submit("bob", sixty.clone()).await.status_code, 201, "another owner is served");
    // Within what is left, it passes; an upload that does not say its size cannot be counted.
    assert_eq!(submit("alice", serde_json::json!({"file_name": "b.txt", "size": 40})).await.status_code, 201);
    let undeclared = submit("alice", serde_json::json!({"file_name": "c.txt"})).await;
    assert_eq!(undeclared.status_code, 422);
    assert!(body(&undeclared)["detail"].as_str().is_some_and(|d| d.contains("size")));
    let used = deps.quotas.bytes_used("alice", prism_shared::domain::quotas::day_of(Utc::now())).await.expect("used");
    assert_eq!(used, 100, "the refused submissions counted nothing");
}

#[tokio::test]
async fn a_job_waiting_in_a_paused_lane_says_so_in_its_phase() {
    use prism_shared::app::lifecycle;
    use prism_shared::domain::job::{Classification, InputObject};
    let (deps, jobs, _) = deps();
    let job = stored_job(&jobs, "alice").await;
    let input = InputObject { uri: job.upload.clone(), size: 3, etag: "e".into() };
    lifecycle::record(jobs.as_ref(), &job.id, "t", prism_shared::JobEvent::Uploaded { input }).await.expect("uploaded");
    let classified =
        Classification { modality: prism_shared::Modality::Text, mime: "text/plain".into(), confidence: 1.0, estimated_seconds: 1.0 };
    lifecycle::record(jobs.as_ref(), &job.id, "t", prism_shared::JobEvent::Classified(classified)).await.expect("classified");
    async fn phase(deps: &Deps) -> String {
        let request = event("apigw-get-job.json", Some("alice"));
        body(&handle(deps, request).await)["phase"].as_str().expect("phase").to_owned()
    }
    assert_eq!(phase(&deps).await, "classified");
    deps.lanes.set_enabled("m-text-bulk", false).await.expect("pause");
    assert_eq!(phase(&deps).await, "waiting: lane text-bulk is paused");
    deps.lanes.set_enabled("m-text-bulk", true).await.expect("resume");
    assert_eq!(phase(&deps).await, "classified");
}

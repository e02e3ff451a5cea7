//! The operator routes through the handler with fakes: who may use them,
//! pausing a lane or a modality, and the health view.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::encodings::Body;
use chrono::Utc;
use ops::{Config, Deps, handle};
use prism_shared::app::auth::TokenKey;
use prism_shared::app::lifecycle;
use prism_shared::domain::dead_letters::DeadLetter;
use prism_shared::domain::job::JobFailure;
use prism_shared::domain::lanes::{self, QueueDepth};
use prism_shared::domain::quotas::Quotas;
use prism_shared::domain::results::{JobResult, TextResult};
use prism_shared::ports::{DeadLetterStore, JobStore};
use prism_shared::testing::memory::{MemoryDeadLetters, MemoryJobStore, MemoryLaneControl, MemoryQueue, MemoryQuotas};
use prism_shared::testing::queued_job;
use prism_shared::{JobEvent, JobId, JobStatus};
use serde_json::Value;

const LANES: &str = "
    text-fast m-text-fast http://sqs/text-fast
    text-bulk m-text-bulk http://sqs/text-bulk
    video-fast m-video-fast http://sqs/video-fast
    video-bulk m-video-bulk http://sqs/video-bulk
";

fn key() -> TokenKey {
    TokenKey::new(&[42u8; 32]).expect("key")
}

fn deps() -> (Deps, Arc<MemoryLaneControl>) {
    let world = world();
    (world.deps, world.lanes)
}

struct World {
    deps: Deps,
    lanes: Arc<MemoryLaneControl>,
    jobs: Arc<MemoryJobStore>,
    queue: Arc<MemoryQueue>,
    letters: Arc<MemoryDeadLetters>,
}

fn world() -> World {
    let (lanes, jobs, queue, letters) = (
        Arc::new(MemoryLaneControl::default()),
        Arc::new(MemoryJobStore::default()),
        Arc::new(MemoryQueue::default()),
        Arc::new(MemoryDeadLetters::default()),
    );
    let redrive_queues = [("prism-dev-text-bulk", "http://sqs/text-bulk")].map(|(k, v)| (k.to_owned(), v.to_owned())).into();
    let quota_defaults = Quotas { max_active_jobs: 1000, max_bytes_per_day: 0 };
    let config = Config { lanes: lanes::parse(LANES).expect("lanes"), redrive_queues, quota_defaults, token_key: key() };
    let quotas = Arc::new(MemoryQuotas::default());
    let breakers = Arc::new(prism_shared::testing::memory::MemoryBreakers::default());
    let deps =
        Deps { lanes: lanes.clone(), dead_letters: letters.clone(), jobs: jobs.clone(), queue: queue.clone(), quotas, breakers, config };
    World { deps, lanes, jobs, queue, letters }
}

enum As {
    Nobody,
    Owner,
    Operator,
}

fn request(route: &str, lane: Option<&str>, who: As) -> ApiGatewayV2httpRequest {
    let mut req = ApiGatewayV2httpRequest::default();
    req.route_key = Some(route.to_owned());
    if let Some(lane) = lane {
        // Each route has one path parameter: a lane, or a dead-letter queue.
        let name = ["queue", "owner"].into_iter().find(|p| route.contains(&format!("{{{p}}}"))).unwrap_or("lane");
        req.path_parameters.insert(name.into(), lane.into());
    }
    let token = match who {
        As::Nobody => None,
        As::Owner => Some(key().issue("alice", chrono::Duration::hours(1), Utc::now()).expect("token")),
        As::Operator => Some(key().issue_operator("oncall", chrono::Duration::hours(1), Utc::now()).expect("token")),
    };
    if let Some(token) = token {
        req.headers.insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    req
}

async fn call(deps: &Deps, req: ApiGatewayV2httpRequest) -> (i64, Value) {
    let resp = handle(deps, req).await;
    let body = match resp.body {
        Some(Body::Text(t)) => serde_json::from_str(&t).expect("json"),
        other => panic!("unexpected body {other:?}"),
    };
    (resp.status_code, body)
}

fn paused(body: &Value) -> Vec<(String, bool)> {
    body["lanes"]
        .as_array()
        .expect("lanes")
        .iter()
        .map(|l| (l["lane"].as_str().expect("lane").to_owned(), l["paused"].as_bool().expect("paused")))
        .collect()
}

#[tokio::test]
async fn an_owner_token_is_refused_on_every_operator_route() {
    let (deps, control) = deps();
    for (route, lane) in [
        ("GET /v1/ops/lanes", None),
        ("POST /v1/ops/lanes/{lane}/pause", Some("text-bulk")),
        ("POST /v1/ops/lanes/{lane}/resume", Some("text-bulk")),
        ("GET /v1/ops/dead-letters", None),
        ("POST /v1/ops/dead-letters/{queue}/redrive", Some("text")),
        ("GET /v1/ops/quotas/{owner}", Some("alice")),
        ("PUT /v1/ops/quotas/{owner}", Some("alice")),
    ] {
        let (status, problem) = call(&deps, request(route, lane, As::Owner)).await;
        assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden")), "{route}");
        assert_eq!(call(&deps, request(route, lane, As::Nobody)).await.0, 401, "{route}");
    }
    use prism_shared::ports::LaneControl;
    assert!(!control.state("m-text-bulk").await.expect("state").paused(), "the refused pause changed nothing");
}

#[tokio::test]
async fn pausing_a_modality_pauses_each_of_its_lanes_and_resuming_one_lane_resumes_only_it() {
    let (deps, _) = deps();
    let (status, body) = call(&deps, request("POST /v1/ops/lanes/{lane}/pause", Some("video"), As::Operator)).await;
    assert_eq!(status, 200);
    assert_eq!(paused(&body), [("video-fast".to_owned(), true), ("video-bulk".to_owned(), true)]);
    call(&deps, request("POST /v1/ops/lanes/{lane}/resume", Some("video-fast"), As::Operator)).await;
    let (_, all) = call(&deps, request("GET /v1/ops/lanes", None, As::Operator)).await;
    assert_eq!(
        paused(&all),
        [
            ("text-fast".to_owned(), false),
            ("text-bulk".to_owned(), false),
            ("video-fast".to_owned(), false),
            ("video-bulk".to_owned(), true)
        ]
    );
    let (status, problem) = call(&deps, request("POST /v1/ops/lanes/{lane}/pause", Some("vid"), As::Operator)).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("lane_not_found")));
}

#[tokio::test]
async fn health_is_public_and_shows_lanes_with_their_depth_only_to_an_operator() {
    let (deps, control) = deps();
    control.set_depth("http://sqs/text-bulk", QueueDepth { waiting: 7, in_flight: 2 });
    call(&deps, request("POST /v1/ops/lanes/{lane}/pause", Some("text-bulk"), As::Operator)).await;
    let sample: ApiGatewayV2httpRequest = prism_shared::testing::sample_event("apigw-health.json");
    assert_eq!(call(&deps, sample).await, (200, serde_json::json!({"status": "ok"})));
    for who in [As::Nobody, As::Owner] {
        let (status, body) = call(&deps, request("GET /v1/health", None, who)).await;
        assert_eq!((status, body), (200, serde_json::json!({"status": "ok"})));
    }
    let (_, body) = call(&deps, request("GET /v1/health", None, As::Operator)).await;
    let bulk = body["lanes"].as_array().expect("lanes").iter().find(|l| l["lane"] == "text-bulk").expect("text-bulk").clone();
    assert_eq!(
        bulk,
        serde_json::json!({"lane": "text-bulk", "queue_url": "http://sqs/text-bulk", "state": "disabled", "paused": true, "waiting": 7, "in_flight": 2})
    );
    let states: Vec<(&str, &str)> = body["breakers"]
        .as_array()
        .expect("breakers")
        .iter()
        .map(|b| (b["dependency"].as_str().expect("d"), b["state"].as_str().expect("s")))
        .collect();
    assert_eq!(states, [("s3", "closed"), ("ffmpeg", "closed")], "every dependency, closed until one opens");
}

#[tokio::test]
async fn a_mapping_that_is_gone_is_a_server_error_not_a_missing_lane() {
    let (deps, control) = deps();
    control.remove("m-text-fast");
    let (status, problem) = call(&deps, request("POST /v1/ops/lanes/{lane}/pause", Some("text-fast"), As::Operator)).await;
    assert_eq!((status, problem["code"].as_str()), (500, Some("misconfigured")));
}

/// A job whose message went to the DLQ, ended by `end` (as `dead-letter`
/// fails it, or as a late attempt completed it), and its kept dead letter.
async fn dead_lettered(world: &World, id: &str, message_id: &str, end: JobEvent) -> JobId {
    let (id, _) = queued_job(world.jobs.as_ref(), id, "poison.txt").await;
    lifecycle::record(world.jobs.as_ref(), &id, "t", JobEvent::Started { phase: "reading".into() }).await.expect("started");
    lifecycle::record(world.jobs.as_ref(), &id, "t", end).await.expect("ended");
    let letter = DeadLetter {
        message_id: message_id.into(),
        dlq: "prism-dev-text-dlq".into(),
        source_queue: Some("prism-dev-text-bulk".into()),
        jobs: vec![id.clone()],
        owner: Some("default".into()),
        reason: "attempt 3 failed: S3 said SlowDown".into(),
        receive_count: 3,
        dead_lettered_at: Utc::now(),
        body: format!("{{\"job\": \"{id}\"}}"),
    };
    world.letters.keep(&letter).await.expect("kept");
    id
}

fn given_up() -> JobEvent {
    JobEvent::Failed(JobFailure::new(JobFailure::RETRIES_EXHAUSTED, "gave up"))
}

#[tokio::test]
async fn dead_letters_are_listed_with_their_job_owner_and_reason_by_queue() {
    let world = world();
    let id = dead_lettered(&world, "0196f0a0-0000-7000-8000-0000000000d1", "m-1", given_up()).await;
    let (status, body) = call(&world.deps, request("GET /v1/ops/dead-letters", None, As::Operator)).await;
    assert_eq!(status, 200);
    let listed = &body["dead_letters"][0];
    assert_eq!(listed["jobs"], serde_json::json!([id.as_str()]));
    assert_eq!((listed["owner"].as_str(), listed["reason"].as_str()), (Some("default"), Some("attempt 3 failed: S3 said SlowDown")));
    assert_eq!((listed["receive_count"].as_u64(), listed["source_queue"].as_str()), (Some(3), Some("prism-dev-text-bulk")));
    assert!(listed.get("body").is_none(), "the message body is not shown");
    let mut other_queue = request("GET /v1/ops/dead-letters", None, As::Operator);
    other_queue.query_string_parameters =
        [("queue".to_owned(), "image".to_owned())].into_iter().collect::<std::collections::HashMap<_, _>>().into();
    assert_eq!(call(&world.deps, other_queue).await.1["dead_letters"], serde_json::json!([]));
}

#[tokio::test]
async fn a_redrive_queues_the_job_again_sends_the_letter_back_and_forgets_it_once() {
    let world = world();
    let id = dead_lettered(&world, "0196f0a0-0000-7000-8000-0000000000d2", "m-2", given_up()).await;
    let (status, body) = call(&world.deps, request("POST /v1/ops/dead-letters/{queue}/redrive", Some("text"), As::Operator)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redriven"].as_array().map(Vec::len), Some(1), "{body}");
    let job = world.jobs.get(&id).await.expect("get").expect("job");
    assert_eq!((job.status, job.error), (JobStatus::Queued, None));
    let sent = world.queue.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue_url, "http://sqs/text-bulk");
    assert!(world.letters.list(10).await.expect("list").is_empty(), "forgotten once sent");
    // A second redrive finds nothing: the message is not sent twice.
    let (_, again) = call(&world.deps, request("POST /v1/ops/dead-letters/{queue}/redrive", Some("text"), As::Operator)).await;
    assert_eq!(again["redriven"], serde_json::json!([]));
    assert_eq!(world.queue.sent().len(), 1);
}

#[tokio::test]
async fn a_letter_whose_job_ended_another_way_is_discarded_without_running_it_again() {
    let world = world();
    // A late attempt completed it while a duplicate of its message went to the DLQ.
    let completed = JobEvent::Completed { result: JobResult::Text(TextResult::default()), outputs: Vec::new() };
    let id = dead_lettered(&world, "0196f0a0-0000-7000-8000-0000000000d3", "m-3", completed).await;
    let (_, body) = call(&world.deps, request("POST /v1/ops/dead-letters/{queue}/redrive", Some("text"), As::Operator)).await;
    assert_eq!(body["discarded"].as_array().map(Vec::len), Some(1), "{body}");
    assert!(world.queue.sent().is_empty(), "nothing sent");
    assert_eq!(world.jobs.get(&id).await.expect("get").expect("job").status, JobStatus::Completed);
    assert!(world.letters.list(10).await.expect("list").is_empty());
}

#[tokio::test]
async fn an_operator_sets_an_owners_quota_and_a_field_left_out_keeps_the_default() {
    let world = world();
    let mut put = request("PUT /v1/ops/quotas/{owner}", Some("alice"), As::Operator);
    put.body = Some(r#"{"max_bytes_per_day": 5000000}"#.into());
    let (status, body) = call(&world.deps, put).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["in_force"], serde_json::json!({"max_active_jobs": 1000, "max_bytes_per_day": 5_000_000}));
    assert_eq!(body["own"], serde_json::json!({"max_bytes_per_day": 5_000_000}));
    let (_, bob) = call(&world.deps, request("GET /v1/ops/quotas/{owner}", Some("bob"), As::Operator)).await;
    assert_eq!(bob["in_force"], serde_json::json!({"max_active_jobs": 1000, "max_bytes_per_day": 0}), "another owner keeps the defaults");
    let mut misspelt = request("PUT /v1/ops/quotas/{owner}", Some("alice"), As::Operator);
    misspelt.body = Some(r#"{"max_bytes": 1}"#.into());
    assert_eq!(call(&world.deps, misspelt).await.0, 422);
    assert_eq!(call(&world.deps, request("GET /v1/ops/quotas/{owner}", Some("../x"), As::Operator)).await.0, 422);
}

//! The sample API Gateway events, round-tripped and run through the handler with fakes.

use std::sync::Arc;
use std::time::Duration;

use api::{Config, Deps, handle};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use chrono::Utc;
use prism_shared::memory::{MemoryBlobStore, MemoryJobStore};
use prism_shared::ports::JobStore;
use prism_shared::testing::sample_event;
use prism_shared::{Job, JobEventEnvelope, JobId, Priority};
use serde_json::Value;

fn deps() -> (Deps, Arc<MemoryJobStore>) {
    let jobs = Arc::new(MemoryJobStore::default());
    let deps = Deps {
        jobs: jobs.clone(),
        blobs: Arc::new(MemoryBlobStore::default()),
        config: Config { bucket: "prism-dev-000000000000-uploads".into(), upload_url_ttl: Duration::from_secs(900) },
    };
    (deps, jobs)
}

fn body(resp: &ApiGatewayV2httpResponse) -> Value {
    match &resp.body {
        Some(Body::Text(t)) => serde_json::from_str(t).expect("json body"),
        other => panic!("unexpected body {other:?}"),
    }
}

#[tokio::test]
async fn submit_creates_a_queued_job_with_a_safe_upload_key() {
    let (deps, jobs) = deps();
    let resp = handle(&deps, sample_event("apigw-submit-job.json")).await;
    assert_eq!(resp.status_code, 201);
    let b = body(&resp);
    assert_eq!(b["job"]["status"], "queued");
    assert_eq!(b["job"]["priority"], "high");
    assert_eq!(b["upload"]["method"], "PUT");
    let id: JobId = b["job"]["id"].as_str().expect("id").parse().expect("uuid");
    let job = jobs.get(&id).await.expect("store").expect("stored");
    // "../notes.txt" lost its directory part.
    assert_eq!(job.upload.key, format!("uploads/default/{id}/notes.txt"));
}

#[tokio::test]
async fn get_returns_the_job_and_its_events_and_404s_otherwise() {
    let (deps, jobs) = deps();
    let get: ApiGatewayV2httpRequest = sample_event("apigw-get-job.json");
    let resp = handle(&deps, get.clone()).await;
    assert_eq!(resp.status_code, 404);
    assert_eq!(resp.headers["content-type"], "application/problem+json");
    assert_eq!(body(&resp)["code"], "job_not_found");

    let id: JobId = "0196f0a0-0000-7000-8000-00000000c1a5".parse().expect("id");
    let job =
        Job::new(id.clone(), "default".into(), Priority::Low, "s3://b/uploads/default/x/y".parse().expect("uri"), "t".into(), Utc::now());
    jobs.create(&job, &JobEventEnvelope::for_job("test", &job, job.created_event())).await.expect("create");
    let resp = handle(&deps, get).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(body(&resp)["id"], "0196f0a0-0000-7000-8000-00000000c1a5");

    let events = handle(&deps, sample_event("apigw-get-job-events.json")).await;
    assert_eq!(events.status_code, 200);
    assert_eq!(body(&events)["events"].as_array().map(Vec::len), Some(0), "after=1 skips job.created");
}

#[tokio::test]
async fn a_bad_body_is_a_400_problem() {
    let (deps, _) = deps();
    let mut req: ApiGatewayV2httpRequest = sample_event("apigw-submit-job.json");
    req.body = Some("{\"priority\": \"whenever\"}".into());
    let resp = handle(&deps, req).await;
    assert_eq!(resp.status_code, 400);
    assert_eq!(body(&resp)["status"], 400);
}

//! The operator routes through the handler with fakes: who may use them,
//! pausing a lane or a modality, and the health view.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::encodings::Body;
use chrono::Utc;
use ops::{Config, Deps, handle};
use prism_shared::app::auth::TokenKey;
use prism_shared::domain::lanes::{self, QueueDepth};
use prism_shared::testing::memory::MemoryLaneControl;
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
    let control = Arc::new(MemoryLaneControl::default());
    let config = Config { lanes: lanes::parse(LANES).expect("lanes"), token_key: key() };
    (Deps { lanes: control.clone(), config }, control)
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
        req.path_parameters.insert("lane".into(), lane.into());
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
    assert_eq!(bulk, serde_json::json!({"lane": "text-bulk", "state": "disabled", "paused": true, "waiting": 7, "in_flight": 2}));
}

#[tokio::test]
async fn a_mapping_that_is_gone_is_a_server_error_not_a_missing_lane() {
    let (deps, control) = deps();
    control.remove("m-text-fast");
    let (status, problem) = call(&deps, request("POST /v1/ops/lanes/{lane}/pause", Some("text-fast"), As::Operator)).await;
    assert_eq!((status, problem["code"].as_str()), (500, Some("misconfigured")));
}

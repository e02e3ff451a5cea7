//! The WebSocket routes on sample events, against in-memory ports.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use chrono::Utc;
use prism_shared::app::auth::TokenKey;
use prism_shared::app::lifecycle;
use prism_shared::ports::{ConnectionStore, JobStore};
use prism_shared::testing::memory::{MemoryConnections, MemoryJobStore, MemoryNotifier, MemoryQueue};
use prism_shared::testing::sample_event;
use prism_shared::{Job, JobEvent, JobEventEnvelope, JobId, JobStatus, Priority};
use serde_json::{Value, json};
use ws::{Config, Deps, handle};

const CONNECTION: &str = "Tf2x1dP1IAMCJ8g=";
const JOB: &str = "0196f0a0-0000-7000-8000-0000000000ab";

struct World {
    deps: Deps,
    jobs: Arc<MemoryJobStore>,
    connections: Arc<MemoryConnections>,
    notifier: Arc<MemoryNotifier>,
    key: TokenKey,
}

impl World {
    async fn new() -> Self {
        let key = TokenKey::new(&[7u8; 32]).expect("key");
        let (jobs, connections, notifier) =
            (Arc::new(MemoryJobStore::default()), Arc::new(MemoryConnections::default()), Arc::new(MemoryNotifier::default()));
        let deps = Deps {
            jobs: jobs.clone(),
            connections: connections.clone(),
            notifier: notifier.clone(),
            queue: Arc::new(MemoryQueue::default()),
            config: Config { token_key: key.clone() },
        };
        let world = Self { deps, jobs, connections, notifier, key };
        world.job(JOB, "alice").await;
        world
    }

    async fn job(&self, id: &str, owner: &str) -> Job {
        let id: JobId = id.parse().expect("id");
        let upload = format!("s3://b/uploads/{owner}/{id}/notes.txt").parse().expect("uri");
        let job = Job::new(id, owner.into(), Priority::Normal, upload, "t".into(), Utc::now());
        self.jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
        job
    }

    async fn record(&self, event: JobEvent) {
        let id: JobId = JOB.parse().expect("id");
        lifecycle::record(self.jobs.as_ref(), &id, "test", event).await.expect("record");
    }

    async fn connect(&self, token: Option<String>) -> i64 {
        let mut event: ApiGatewayWebsocketProxyRequest = sample_event("apigw-ws-connect.json");
        event.query_string_parameters = match token {
            Some(t) => [("token".to_owned(), t)].into_iter().collect::<std::collections::HashMap<_, _>>().into(),
            None => Default::default(),
        };
        handle(&self.deps, event).await.expect("connect").status_code
    }

    fn token(&self, owner: &str) -> String {
        self.key.issue(owner, chrono::Duration::minutes(10), Utc::now()).expect("token")
    }

    async fn send(&self, route: &str, body: Value) {
        let mut event: ApiGatewayWebsocketProxyRequest = sample_event("apigw-ws-subscribe.json");
        event.request_context.route_key = Some(route.into());
        event.body = Some(body.to_string());
        assert_eq!(handle(&self.deps, event).await.expect("message").status_code, 200);
    }

    fn received(&self) -> Vec<Value> {
        self.notifier.messages(CONNECTION)
    }
}

#[tokio::test]
async fn connections_need_a_valid_token() {
    let w = World::new().await;
    assert_eq!(w.connect(None).await, 401);
    assert_eq!(w.connect(Some("not-a-token".into())).await, 401);
    assert_eq!(w.connections.connection(CONNECTION).await.expect("read"), None);
    assert_eq!(w.connect(Some(w.token("alice"))).await, 200);
    let connection = w.connections.connection(CONNECTION).await.expect("read").expect("recorded");
    assert_eq!(connection.owner, "alice");
    assert!(connection.expires_at - Utc::now().timestamp() > 7000, "two hours");
}

#[tokio::test]
async fn subscribing_sends_the_snapshot_and_the_events_after_after_seq() {
    let w = World::new().await;
    w.record(JobEvent::Started { phase: "reading".into() }).await;
    w.record(JobEvent::Progress { phase: "analysing".into(), progress: 40, eta_s: None, counts: None }).await;
    w.connect(Some(w.token("alice"))).await;
    w.send("subscribe", json!({"action": "subscribe", "job_id": JOB, "after_seq": 1})).await;
    let got = w.received();
    assert_eq!(got[0]["type"], "snapshot");
    assert_eq!(got[0]["job"]["seq"], 3);
    let events: Vec<(&str, u64)> =
        got[1..].iter().map(|m| (m["event_type"].as_str().expect("type"), m["seq"].as_u64().expect("seq"))).collect();
    assert_eq!(events, vec![("job.started", 2), ("job.progress", 3)]);
    assert!(got[1..].iter().all(|m| m["type"] == "event" && m["schema_version"] == 1 && m["job_id"] == JOB));
    let subs = w.connections.fan_out_state(&JOB.parse().expect("id")).await.expect("subs").subscriptions;
    assert_eq!(subs.len(), 1, "live events follow");
    let job = w.jobs.get(&JOB.parse().expect("id")).await.expect("get").expect("job");
    assert!(job.watched, "the job is marked watched, so its later events reach the fan-out");
    assert_eq!(got[0]["job"].get("watched"), None, "a mark of the store's, not part of the job's JSON");
}

#[tokio::test]
async fn another_owners_job_is_not_found_and_sends_nothing() {
    let w = World::new().await;
    w.connect(Some(w.token("mallory"))).await;
    w.send("subscribe", json!({"action": "subscribe", "job_id": JOB})).await;
    let got = w.received();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0]["type"].as_str(), got[0]["code"].as_str()), (Some("error"), Some("job_not_found")));
    assert!(w.connections.fan_out_state(&JOB.parse().expect("id")).await.expect("subs").subscriptions.is_empty());
    w.send("cancel", json!({"action": "cancel", "job_id": JOB})).await;
    assert_eq!(w.received()[1]["code"], "job_not_found");
    assert_eq!(w.jobs.get(&JOB.parse().expect("id")).await.expect("get").expect("job").status, JobStatus::Queued);
}

#[tokio::test]
async fn ping_cancel_unsubscribe_and_unknown_actions() {
    let w = World::new().await;
    w.connect(Some(w.token("alice"))).await;
    w.send("ping", json!({"action": "ping"})).await;
    w.send("$default", json!({"action": "dance"})).await;
    w.send("subscribe", json!({"action": "subscribe"})).await;
    w.send("cancel", json!({"action": "cancel", "job_id": JOB})).await;
    w.send("cancel", json!({"action": "cancel", "job_id": JOB})).await;
    w.send("unsubscribe", json!({"action": "unsubscribe", "job_id": JOB})).await;
    let got = w.received();
    let kinds: Vec<(&str, &str)> =
        got.iter().map(|m| (m["type"].as_str().unwrap_or(""), m["code"].as_str().or(m["status"].as_str()).unwrap_or(""))).collect();
    assert_eq!(
        kinds,
        vec![
            ("pong", ""),
            ("error", "unknown_action"),
            ("error", "bad_request"),
            ("cancel_requested", "cancelled"),
            ("error", "conflict"),
            ("unsubscribed", ""),
        ]
    );
}

#[tokio::test]
async fn disconnecting_forgets_the_connection_and_its_subscriptions() {
    let w = World::new().await;
    w.connect(Some(w.token("alice"))).await;
    w.send("subscribe", json!({"action": "subscribe", "job_id": JOB})).await;
    let mut event: ApiGatewayWebsocketProxyRequest = sample_event("apigw-ws-connect.json");
    event.request_context.route_key = Some("$disconnect".into());
    handle(&w.deps, event).await.expect("disconnect");
    assert_eq!(w.connections.connection(CONNECTION).await.expect("read"), None);
    assert!(w.connections.fan_out_state(&JOB.parse().expect("id")).await.expect("subs").subscriptions.is_empty());
}

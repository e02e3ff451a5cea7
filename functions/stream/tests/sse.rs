//! The stream function against in-memory fakes: who may read which stream,
//! where it starts, what it sends and when it ends.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use bytes::Bytes;
use chrono::Utc;
use prism_shared::app::auth::TokenKey;
use prism_shared::app::lifecycle::record;
use prism_shared::domain::joblog::{LogLevel, LogLine};
use prism_shared::domain::results::{JobResult, TextResult};
use prism_shared::ports::JobStore;
use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore, MemoryQueue, MemoryScheduleStore};
use prism_shared::{Job, JobEvent, JobEventEnvelope, JobId, Priority};
use stream::owner::{OwnerFollow, Position, stream_owner};
use stream::{Config, Deps, Follow, Refusal, open, open_owner, stream_events};
use tokio::sync::mpsc;
use tokio::time::Instant;

fn key() -> TokenKey {
    TokenKey::new(&[9u8; 32]).expect("key")
}

fn deps() -> (Deps, Arc<MemoryJobStore>) {
    let jobs = Arc::new(MemoryJobStore::default());
    let config = Config {
        token_key: key(),
        poll: Duration::from_millis(10),
        owner_poll: Duration::from_millis(10),
        heartbeat: Duration::from_millis(40),
    };
    let deps = Deps {
        jobs: jobs.clone(),
        blobs: Arc::new(MemoryBlobStore::default()),
        queue: Arc::new(MemoryQueue::default()),
        schedules: Arc::new(MemoryScheduleStore::new(jobs.clone())),
        lanes: std::sync::Arc::new(prism_shared::testing::memory::MemoryLaneControl::default()),
        dead_letters: std::sync::Arc::new(prism_shared::testing::memory::MemoryDeadLetters::default()),
        quotas: std::sync::Arc::new(prism_shared::testing::memory::MemoryQuotas::default()),
        breakers: std::sync::Arc::new(prism_shared::testing::memory::MemoryBreakers::default()),
        breaker_policy: prism_shared::domain::breakers::BreakerPolicy::default(),
        estimates: std::sync::Arc::new(prism_shared::testing::memory::MemoryEstimates::default()),
        config,
    };
    (deps, jobs)
}

async fn stored_job(jobs: &MemoryJobStore, owner: &str) -> JobId {
    let id = JobId::new_random();
    let upload = format!("s3://b/uploads/{owner}/{id}/f").parse().expect("uri");
    let job = Job::new(id.clone(), owner.into(), Priority::Normal, upload, "t".into(), Utc::now());
    jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
    id
}

async fn finish(jobs: &MemoryJobStore, id: &JobId) {
    for event in [
        JobEvent::Started { phase: "reading".into() },
        JobEvent::Logged { lines: vec![LogLine::new(LogLevel::Info, "read 3 bytes", Utc::now())] },
        JobEvent::Progress { phase: "analysing".into(), progress: 50, eta_s: None, counts: None },
        JobEvent::Completed { result: JobResult::Text(TextResult::default()), outputs: Vec::new() },
    ] {
        record(jobs, id, "test", event).await.expect("record");
    }
}

fn request(path: &str, owner: Option<&str>) -> LambdaFunctionUrlRequest {
    let mut req = LambdaFunctionUrlRequest::default();
    req.raw_path = Some(path.to_owned());
    req.request_context.http.method = Some("GET".into());
    if let Some(owner) = owner {
        let token = key().issue(owner, chrono::Duration::hours(1), Utc::now()).expect("token");
        req.headers.insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    req
}

/// Everything the stream sent, until it ended.
async fn collect(jobs: &MemoryJobStore, id: &JobId, follow: Follow, config: &Config) -> Vec<String> {
    let (tx, mut rx) = mpsc::channel(1000);
    stream_events(jobs, id, follow, config, Instant::now() + Duration::from_secs(10), &tx).await.expect("stream");
    drop(tx);
    let mut frames = Vec::new();
    while let Some(chunk) = rx.recv().await {
        frames.push(String::from_utf8(chunk.to_vec()).expect("utf-8"));
    }
    frames
}

fn ids(frames: &[String]) -> Vec<u64> {
    frames.iter().filter_map(|f| f.strip_prefix("id: ")?.split('\n').next()?.parse().ok()).collect()
}

#[tokio::test]
async fn a_finished_job_streams_from_its_start_to_its_end_and_resumes_after_the_last_id() {
    let (deps, jobs) = deps();
    let id = stored_job(&jobs, "alice").await;
    finish(&jobs, &id).await;
    let all = collect(&jobs, &id, Follow { after: 0, logs: false }, &deps.config).await;
    assert_eq!(all[0], "retry: 1000\n\n");
    assert_eq!(ids(&all), vec![1, 2, 4, 5], "the log line is left out unless asked for");
    let last = all.last().expect("frames");
    assert!(last.starts_with("id: 5\nevent: job.completed\ndata: {"), "{last}");
    let data: serde_json::Value =
        serde_json::from_str(last.lines().nth(2).and_then(|l| l.strip_prefix("data: ")).expect("data")).expect("json");
    assert_eq!((data["seq"].as_u64(), data["event_type"].as_str()), (Some(5), Some("job.completed")));

    let with_logs = collect(&jobs, &id, Follow { after: 2, logs: true }, &deps.config).await;
    assert_eq!(ids(&with_logs), vec![3, 4, 5]);
    let past_the_end = collect(&jobs, &id, Follow { after: 5, logs: false }, &deps.config).await;
    assert_eq!(past_the_end, vec!["retry: 1000\n\n".to_owned()], "a resume past the end closes at once");
}

#[tokio::test]
async fn a_live_job_streams_as_it_goes_with_heartbeats_while_quiet_and_closes_at_its_end() {
    let (deps, jobs) = deps();
    let id = stored_job(&jobs, "alice").await;
    let writer = {
        let (jobs, id) = (jobs.clone(), id.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            finish(&jobs, &id).await;
        }
    };
    let (frames, ()) = tokio::join!(collect(&jobs, &id, Follow { after: 0, logs: true }, &deps.config), writer);
    assert_eq!(ids(&frames), vec![1, 2, 3, 4, 5]);
    let heartbeat = frames.iter().position(|f| f == ": keep-alive\n\n").expect("a heartbeat while nothing happened");
    assert!(heartbeat > 1 && heartbeat < frames.len() - 4, "between job.created and the rest: {frames:?}");
}

#[tokio::test]
async fn the_stream_stops_before_its_deadline_and_when_the_client_goes() {
    let (deps, jobs) = deps();
    let id = stored_job(&jobs, "alice").await;
    let (tx, rx) = mpsc::channel::<Bytes>(100);
    let started = Instant::now();
    stream_events(jobs.as_ref(), &id, Follow { after: 0, logs: false }, &deps.config, started + Duration::from_millis(100), &tx)
        .await
        .expect("stream");
    assert!(started.elapsed() < Duration::from_secs(2), "ended at its deadline");
    drop(rx);
    // No reader: the stream notices at its first write and ends.
    stream_events(jobs.as_ref(), &id, Follow { after: 0, logs: false }, &deps.config, Instant::now() + Duration::from_secs(30), &tx)
        .await
        .expect("ends");
}

#[tokio::test]
async fn only_the_owner_may_open_a_stream_and_the_last_event_id_says_where_it_starts() {
    let (deps, jobs) = deps();
    let id = stored_job(&jobs, "alice").await;
    let path = format!("/v1/jobs/{id}/stream");
    assert!(matches!(open(&deps, &request(&path, None)).await, Err(Refusal::Unauthorized(_))));
    assert!(matches!(open(&deps, &request(&path, Some("bob"))).await, Err(Refusal::NotFound)));
    assert!(matches!(open(&deps, &request(&format!("/v1/runs/{id}/stream"), Some("alice"))).await, Err(Refusal::NotFound)), "not a run");
    assert!(matches!(open(&deps, &request("/v1/jobs/not-a-uuid/stream", Some("alice"))).await, Err(Refusal::NotFound)));

    let mut req = request(&path, Some("alice"));
    req.query_string_parameters.insert("after".into(), "2".into());
    req.query_string_parameters.insert("logs".into(), "true".into());
    assert_eq!(open(&deps, &req).await.expect("open"), (id.clone(), Follow { after: 2, logs: true }));
    req.headers.insert("last-event-id", "4".parse().expect("header"));
    assert_eq!(open(&deps, &req).await.expect("open").1.after, 4, "Last-Event-ID wins");
    req.headers.insert("last-event-id", "x".parse().expect("header"));
    assert!(matches!(open(&deps, &req).await, Err(Refusal::BadRequest(_))));

    // EventSource cannot set headers: the token may come in the query.
    let mut browser = request(&path, None);
    let token = key().issue("alice", chrono::Duration::hours(1), Utc::now()).expect("token");
    browser.query_string_parameters.insert("access_token".into(), token);
    assert_eq!(open(&deps, &browser).await.expect("open").1, Follow { after: 0, logs: false });
}

/// An owner's stream, run for `for_ms`: each event's id and its job and seq.
async fn collect_owner(jobs: &MemoryJobStore, follow: OwnerFollow, config: &Config, for_ms: u64) -> Vec<(String, String, u64)> {
    let (tx, mut rx) = mpsc::channel(1000);
    stream_owner(jobs, follow, config, Instant::now() + Duration::from_millis(for_ms), &tx).await.expect("stream");
    drop(tx);
    let mut events = Vec::new();
    while let Some(chunk) = rx.recv().await {
        let frame = String::from_utf8(chunk.to_vec()).expect("utf-8");
        let Some(id) = frame.strip_prefix("id: ").and_then(|f| f.lines().next()) else { continue };
        let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).expect("data");
        let data: serde_json::Value = serde_json::from_str(data).expect("json");
        events.push((id.to_owned(), data["job_id"].as_str().expect("job").to_owned(), data["seq"].as_u64().expect("seq")));
    }
    events
}

fn follow(owner: &str, from: Option<&str>) -> OwnerFollow {
    OwnerFollow { owner: owner.into(), from: from.map(|id| Position::decode(id).expect("a position")), logs: false, opened: Utc::now() }
}

#[tokio::test]
async fn an_owners_stream_carries_each_of_their_jobs_and_no_one_elses_and_resumes_from_any_id_without_gap_or_repeat() {
    let (deps, jobs) = deps();
    let before = stored_job(&jobs, "alice").await;
    // Created long before the stream and still queued: found as unfinished, not by its creation.
    let old = {
        let id = JobId::new_random();
        let upload = format!("s3://b/uploads/alice/{id}/f").parse().expect("uri");
        let job = Job::new(id.clone(), "alice".into(), Priority::Normal, upload, "t".into(), Utc::now() - chrono::Duration::minutes(5));
        jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
        id
    };
    let writer = {
        let jobs = jobs.clone();
        let (before, old) = (before.clone(), old.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            finish(&jobs, &before).await;
            let new = stored_job(&jobs, "alice").await;
            finish(&jobs, &new).await;
            finish(&jobs, &stored_job(&jobs, "bob").await).await;
            finish(&jobs, &old).await;
            new
        }
    };
    let (events, new) = tokio::join!(collect_owner(&jobs, follow("alice", None), &deps.config, 400), writer);
    let of = |job: &JobId| events.iter().filter(|(_, j, _)| j == job.as_str()).map(|(_, _, seq)| *seq).collect::<Vec<_>>();
    assert_eq!(of(&before), [2, 4, 5], "a new stream starts from now; log lines only when asked for");
    assert_eq!(of(&new), [1, 2, 4, 5], "a job created after the start, from its first event");
    assert_eq!(of(&old), [2, 4, 5], "an old job followed to its end after it left the unfinished index");
    assert_eq!(events.len(), 10, "nobody else's: {events:?}");

    // Resuming from each id gives exactly the events after it (each job's in
    // order; across jobs the order is the poll's).
    for (i, (id, _, _)) in events.iter().enumerate() {
        let resumed = collect_owner(&jobs, follow("alice", Some(id)), &deps.config, 60).await;
        let mut resumed: Vec<(&str, u64)> = resumed.iter().map(|(_, j, s)| (j.as_str(), *s)).collect();
        assert!(resumed.windows(2).all(|w| w[0].0 != w[1].0 || w[0].1 < w[1].1), "each job in order: {resumed:?}");
        let mut expected: Vec<(&str, u64)> = events[i + 1..].iter().map(|(_, j, s)| (j.as_str(), *s)).collect();
        resumed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(resumed, expected, "resumed after event {i}: no gap, no repeat");
    }
}

#[tokio::test]
async fn an_owners_stream_needs_a_token_and_refuses_a_last_event_id_it_did_not_write() {
    let (deps, _) = deps();
    assert!(matches!(open_owner(&deps, &request("/v1/stream", None)), Err(Refusal::Unauthorized(_))));
    let mut req = request("/v1/stream", Some("alice"));
    req.query_string_parameters.insert("logs".into(), "true".into());
    let opened = open_owner(&deps, &req).expect("open");
    assert_eq!((opened.owner.as_str(), opened.from, opened.logs), ("alice", None, true));
    req.headers.insert("last-event-id", "7".parse().expect("header"));
    assert!(matches!(open_owner(&deps, &req), Err(Refusal::BadRequest(_))), "a job stream's id is not a position");
    let position = Position { polled_ms: 1_700_000_000_000, sent: [("j".to_owned(), 3)].into() };
    req.headers.insert("last-event-id", position.encode().parse().expect("header"));
    assert_eq!(open_owner(&deps, &req).expect("open").from, Some(position));
}

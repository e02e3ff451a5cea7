//! Live progress over the local cloud's WebSocket API: every event of a job
//! in order, resumption after a dropped connection without gaps or
//! duplicates, owner isolation, and refusal without a token.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{JOB_TIMEOUT, TestCloud};
use prism_cloud::EmulatorChoice;
use prism_cloud::live::{LiveConnection, LiveError, Watch, is_terminal};
use prism_shared::JobId;
use prism_shared::app::realtime::ClientMessage;
use serde_json::Value;

const TEXT: &[u8] = b"Prism watches this job live. Every event arrives once, in order.\nA second line for the counts.\n";

/// What a follower ended with, checked against the job's REST event log:
/// released events strictly increasing, each identical to the logged one,
/// and every logged seq either released or superseded by a later push.
fn check_against_log(name: &str, watch: &Watch, id: &JobId, log: &BTreeMap<u64, Value>) -> Vec<u64> {
    let followed = &watch.jobs[id];
    let seqs: Vec<u64> = followed.events.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{name}: out of order or duplicated: {seqs:?}");
    for event in &followed.events {
        let seq = event["seq"].as_u64().expect("seq");
        assert_eq!(event["event_id"], log[&seq]["event_id"], "{name}: seq {seq} differs from the log");
        assert_eq!(event["event_type"], log[&seq]["event_type"]);
    }
    let mut covered: Vec<u64> = seqs.iter().chain(&followed.superseded).copied().collect();
    covered.sort_unstable();
    assert_eq!(covered, log.keys().copied().collect::<Vec<_>>(), "{name}: gaps or extras");
    for s in &followed.superseded {
        let kind = log[s]["event_type"].as_str();
        assert!(
            matches!(kind, Some("job.progress" | "job.log")),
            "{name}: only progress and unasked-for log events may be superseded, not {kind:?}"
        );
    }
    assert!(followed.finished && is_terminal(followed.events.last().expect("events")), "{name}: did not end with the terminal event");
    covered
}

#[tokio::test]
async fn subscribers_get_every_event_in_order_and_resume_without_gaps() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let url = tc.cloud.info.websocket_url.clone().expect("the template has a WebSocket API");
    let token = tc.token("tester");
    let (job, upload_url) = tc.api.create("notes.txt", None).await.expect("create");
    let id = job.id.clone();

    // Client A follows the whole job on one connection.
    let mut a = LiveConnection::connect(&url, Some(&token)).await.expect("connect A");
    let whole = tokio::spawn({
        let id = id.clone();
        async move {
            let mut watch = Watch::new([(id, 0)]);
            tokio::time::timeout(JOB_TIMEOUT, watch.run(&mut a, None, &mut |_, _| {})).await.expect("A in time").expect("A");
            watch
        }
    });

    // Client B takes the replayed first event, then two live ones, and drops mid-job.
    let mut resumed = Watch::new([(id.clone(), 0)]);
    let mut b = LiveConnection::connect(&url, Some(&token)).await.expect("connect B");
    resumed.run(&mut b, Some(1), &mut |_, _| {}).await.expect("B replay");
    tc.api.upload(&upload_url, TEXT.to_vec()).await.expect("upload");
    tokio::time::timeout(JOB_TIMEOUT, resumed.run(&mut b, Some(2), &mut |_, _| {})).await.expect("B live in time").expect("B live");
    let seen_before_drop = resumed.jobs[&id].last_seq();
    b.close().await;
    assert!(!resumed.finished(), "B dropped before the end");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // B reconnects and resumes from the last sequence number it saw.
    let mut b = LiveConnection::connect(&url, Some(&token)).await.expect("reconnect B");
    tokio::time::timeout(JOB_TIMEOUT, resumed.run(&mut b, None, &mut |_, _| {})).await.expect("B resumed in time").expect("B resumed");
    let whole = whole.await.expect("join A");

    let log: BTreeMap<u64, Value> =
        tc.api.events(&id, 0).await.expect("events").into_iter().map(|e| (e["seq"].as_u64().expect("seq"), e)).collect();
    assert_eq!(log.values().last().map(|e| e["event_type"].clone()), Some("job.completed".into()), "{log:?}");
    let a_seqs = check_against_log("A", &whole, &id, &log);
    let b_seqs = check_against_log("B", &resumed, &id, &log);
    assert_eq!(a_seqs, b_seqs, "both clients end with the same sequence");
    assert!(resumed.jobs[&id].events.iter().any(|e| e["seq"].as_u64() > Some(seen_before_drop)), "B resumed after {seen_before_drop}");
    tc.finish().await;
}

#[tokio::test]
async fn connections_are_authenticated_and_see_only_their_owners_jobs() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let url = tc.cloud.info.websocket_url.clone().expect("WebSocket API");
    assert!(matches!(LiveConnection::connect(&url, None).await, Err(LiveError::Refused(401))));
    assert!(matches!(LiveConnection::connect(&url, Some("forged.token.value")).await, Err(LiveError::Refused(401))));

    let (job, _) = tc.api.create("secret.txt", None).await.expect("create");
    let mut mallory = LiveConnection::connect(&url, Some(&tc.token("mallory"))).await.expect("connect");
    let mut watch = Watch::new([(job.id.clone(), 0)]);
    let refused = watch.run(&mut mallory, None, &mut |_, _| {}).await;
    assert!(matches!(&refused, Err(LiveError::Server { code, .. }) if code == "job_not_found"), "{refused:?}");
    mallory.send(&ClientMessage::Cancel { job_id: job.id.clone() }).await.expect("send");
    let answer = mallory.next(Duration::from_secs(10)).await.expect("read").expect("an answer");
    assert_eq!(answer["code"], "job_not_found");

    // The owner's own change reaches the owner's subscription but never mallory's connection.
    let mut owner = LiveConnection::connect(&url, Some(&tc.token("tester"))).await.expect("connect");
    let mut own = Watch::new([(job.id.clone(), 0)]);
    let cancel = tc.api.request(reqwest::Method::POST, &format!("/v1/jobs/{}/cancel", job.id)).send().await.expect("cancel");
    assert_eq!(cancel.status(), 202);
    tokio::time::timeout(JOB_TIMEOUT, own.run(&mut owner, None, &mut |_, _| {})).await.expect("in time").expect("owner");
    assert_eq!(own.jobs[&job.id].events.last().map(|e| e["event_type"].clone()), Some("job.cancelled".into()));
    mallory.send(&ClientMessage::Ping).await.expect("ping");
    let next = mallory.next(Duration::from_secs(10)).await.expect("read").expect("pong");
    assert_eq!(next["type"], "pong", "nothing but the pong reaches another owner's connection: {next}");
    assert!(mallory.next(Duration::from_millis(500)).await.expect("read").is_none());
    tc.finish().await;
}

/// A PDF of a man page: a few pages of real typeset text.
fn manual_pdf() -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .args(["-c", "zcat -f /usr/share/man/man1/ls.1* | groff -Tpdf -man -P-pa4"])
        .output()
        .expect("groff runs");
    assert!(out.status.success() && out.stdout.starts_with(b"%PDF"), "groff made a PDF");
    out.stdout
}

/// Reads events from `stream` until it closes or `stop_after` were read.
async fn read_sse(stream: &mut prism_cloud::client::SseStream, stop_after: Option<usize>, into: &mut Vec<prism_cloud::client::SseEvent>) {
    let mut read = 0;
    while stop_after.is_none_or(|n| read < n) {
        match tokio::time::timeout(JOB_TIMEOUT, stream.next()).await.expect("an event in time").expect("stream readable") {
            Some(event) => {
                into.push(event);
                read += 1;
            }
            None => return,
        }
    }
}

#[tokio::test]
async fn server_sent_events_follow_a_document_job_resume_after_a_drop_and_match_the_log() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let stream_url = tc.cloud.info.stream_url.clone().expect("the template has a streaming function URL");
    let (job, upload_url) = tc.api.create("ls.pdf", None).await.expect("create");
    let id = job.id.clone();

    let refused = tc.client_for("mallory").stream(&stream_url, &id, None, true).await.expect_err("another owner's stream");
    let refused = refused.downcast_ref::<prism_cloud::client::StreamRefused>().expect("refused by status");
    assert_eq!(refused.status, 404, "{refused}");

    // First connection: the job's first event, then the client goes away.
    let mut seen = Vec::new();
    let mut first = tc.api.stream(&stream_url, &id, None, true).await.expect("open");
    read_sse(&mut first, Some(1), &mut seen).await;
    drop(first);
    tc.api.upload(&upload_url, manual_pdf()).await.expect("upload");
    // Second: resumes after the last id, takes two more, and drops mid-job.
    let mut second = tc.api.stream(&stream_url, &id, seen.last().and_then(prism_cloud::client::SseEvent::seq), true).await.expect("resume");
    read_sse(&mut second, Some(2), &mut seen).await;
    drop(second);
    // Third: resumes again and reads until the server closes after the end.
    let mut third =
        tc.api.stream(&stream_url, &id, seen.last().and_then(prism_cloud::client::SseEvent::seq), true).await.expect("resume again");
    read_sse(&mut third, None, &mut seen).await;

    let log = tc.api.events(&id, 0).await.expect("log");
    let logged: Vec<(u64, String)> =
        log.iter().map(|e| (e["seq"].as_u64().expect("seq"), e["event_type"].as_str().expect("type").to_owned())).collect();
    let streamed: Vec<(u64, String)> = seen.iter().map(|e| (e.seq().expect("every event has an id"), e.event.clone())).collect();
    assert_eq!(streamed, logged, "the three streams together are the job's log: no gap, no duplicate");
    for (event, logged) in seen.iter().zip(&log) {
        let data: Value = serde_json::from_str(&event.data).expect("data is the envelope");
        assert_eq!(data["event_id"], logged["event_id"]);
    }
    assert_eq!(logged.last().map(|(_, t)| t.as_str()), Some("job.completed"));
    assert!(logged.iter().any(|(_, t)| t == "job.log"), "the processor's log lines are in the log and the stream: {logged:?}");

    // The log lines page over REST, and the snapshot's phases add up.
    let (lines, next) = tc.api.logs(&id, 0).await.expect("logs");
    assert_eq!(next, None);
    assert!(lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.starts_with("extracted "))), "{lines:?}");
    let job = tc.api.job(&id).await.expect("job");
    let pages = match &job.result {
        Some(prism_shared::domain::results::JobResult::Document(d)) => u64::from(d.pages),
        other => panic!("a document result: {other:?}"),
    };
    let phases = job.phases.all();
    assert!(phases.iter().all(|p| p.status == prism_shared::domain::phases::PhaseStatus::Completed), "{phases:?}");
    assert!(phases.windows(2).all(|w| w[0].finished_at.is_some_and(|f| f <= w[1].started_at)), "one after another: {phases:?}");
    let counted = phases.iter().find(|p| p.name == "extracting text").expect("the page phase");
    assert_eq!((counted.processed_count, counted.total_count, counted.percent), (Some(pages), Some(pages), Some(100)), "{counted:?}");
    tc.finish().await;
}

/// Whether every job in `ids` has its `job.completed` among `seen`.
fn all_completed(seen: &[prism_cloud::client::SseEvent], ids: &[&JobId]) -> bool {
    ids.iter().all(|id| {
        seen.iter().any(|e| e.event == "job.completed" && serde_json::from_str::<Value>(&e.data).is_ok_and(|d| d["job_id"] == id.as_str()))
    })
}

#[tokio::test]
async fn an_owners_stream_carries_all_of_their_jobs_and_no_one_elses_and_resumes_without_gap_or_repeat() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let stream_url = tc.cloud.info.stream_url.clone().expect("the template has a streaming function URL");
    let mut seen = Vec::new();
    let mut first = tc.api.stream_all(&stream_url, None, false).await.expect("open");
    let a = tc.api.submit("a.txt", b"one small text".to_vec(), None).await.expect("submit");
    let other = tc.client_for("mallory").submit("m.txt", b"someone else's".to_vec(), None).await.expect("submit");
    read_sse(&mut first, Some(2), &mut seen).await;
    drop(first);
    let b = tc.api.submit("b.txt", b"another small text".to_vec(), None).await.expect("submit");
    let mut resumed = tc.api.stream_all(&stream_url, seen.last().and_then(|e| e.id.as_deref()), false).await.expect("resume");
    while !all_completed(&seen, &[&a.id, &b.id]) {
        read_sse(&mut resumed, Some(1), &mut seen).await;
    }
    drop(resumed);

    let data: Vec<Value> = seen.iter().map(|e| serde_json::from_str(&e.data).expect("data is the envelope")).collect();
    assert!(data.iter().all(|d| d["job_id"] != other.id.as_str()), "nothing of mallory's");
    for id in [&a.id, &b.id] {
        let streamed: Vec<u64> = data.iter().filter(|d| d["job_id"] == id.as_str()).filter_map(|d| d["seq"].as_u64()).collect();
        let logged: Vec<u64> = tc
            .api
            .events(id, 0)
            .await
            .expect("log")
            .iter()
            .filter(|e| e["event_type"] != "job.log")
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        assert_eq!(streamed, logged, "{id}: its whole log across the two connections, no gap, no repeat");
    }
    tc.finish().await;
}

#[tokio::test]
async fn streams_past_the_functions_reserved_concurrency_are_throttled_as_lambda_throttles_them() {
    // StreamFunction's ReservedConcurrentExecutions in template.yaml: one
    // instance per open stream.
    const RESERVED: usize = 8;
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let stream_url = tc.cloud.info.stream_url.clone().expect("the template has a streaming function URL");
    // A job awaiting its upload: its streams stay open, heartbeating.
    let (job, _upload_url) = tc.api.create("later.txt", None).await.expect("create");
    let mut open = Vec::new();
    for _ in 0..RESERVED {
        open.push(tc.api.stream(&stream_url, &job.id, None, false).await.expect("within the reserved concurrency"));
    }
    let throttled = tc.api.stream(&stream_url, &job.id, None, false).await.expect_err("one stream too many");
    let throttled = throttled.downcast_ref::<prism_cloud::client::StreamRefused>().expect("refused by status");
    assert_eq!(throttled.status, 429, "{throttled}");
    assert!(throttled.body.contains("Rate Exceeded"), "{throttled}");

    // A client leaves: its instance is free once the function's next
    // heartbeat finds nobody reading, and the next stream opens.
    drop(open.pop());
    let started = Instant::now();
    let reopened = loop {
        match tc.api.stream(&stream_url, &job.id, None, false).await {
            Ok(stream) => break stream,
            Err(e) => {
                let refused = e.downcast_ref::<prism_cloud::client::StreamRefused>().unwrap_or_else(|| panic!("{e:#}"));
                assert_eq!(refused.status, 429, "{refused}");
                assert!(started.elapsed() < Duration::from_secs(40), "the left stream's instance was never freed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    drop((reopened, open));
    tc.finish().await;
}

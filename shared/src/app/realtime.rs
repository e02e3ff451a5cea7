//! Live job progress over WebSockets: the messages clients and the server
//! exchange, and the delivery of a job's events to its subscriptions.
//!
//! Live delivery sends, then advances: at least once. Each job has a fan-out
//! cursor, the sequence number up to which its events have reached every
//! subscription. A `progress` instance reads it, pushes everything after it up
//! to the newest event it was handed (reading from the job's log whatever it
//! was not handed), and only when every push went through moves the cursor
//! forward, with a conditional write that never moves it back. A push that is
//! throttled, or an instance that times out mid-way, leaves the cursor where
//! it was, so the redelivered message pushes the range again. The price is
//! duplicates (a redelivery, or two instances racing on one job); clients drop
//! them and put events in order by `seq` (the client's resequencer), as they must
//! anyway, since a subscription's replay from the log (the `ws` function) can
//! overlap live pushes. One read and one write per burst, whatever the number
//! of subscribers.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::domain::envelope::JobEventEnvelope;
use crate::domain::job::{Job, JobEvent, JobId, JobStatus};
use crate::ports::error::{NotifyError, Retryable, StoreError};
use crate::ports::{ConnectionStore, FanOutState, JobStore, Notifier};

/// API Gateway's WebSocket message limit.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// API Gateway's WebSocket frame limit; longer messages span several frames.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// API Gateway closes a connection after two hours, whatever happens on it.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60);
/// ... and after ten minutes without a message either way.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How many connections one fan-out pushes to at once.
const PUSH_CONCURRENCY: usize = 32;

/// What a client sends; API Gateway routes on `action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The job's snapshot, then every event after `after_seq`, then live
    /// events; `job.log` events only with `logs`.
    Subscribe {
        job_id: JobId,
        #[serde(default)]
        after_seq: u64,
        #[serde(default)]
        logs: bool,
    },
    Unsubscribe {
        job_id: JobId,
    },
    Ping,
    Cancel {
        job_id: JobId,
    },
}

/// What the server pushes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The job as it stood when the subscription started; its events follow.
    Snapshot {
        job: Box<Job>,
    },
    /// A job event: the envelope itself, with its `seq`. `superseded` lists
    /// earlier events of the same burst that will not be pushed (the REST
    /// event log keeps them): progress coalesced into this one, and
    /// `job.log` events for a subscription that did not ask for logs.
    Event {
        #[serde(flatten)]
        event: Box<JobEventEnvelope>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        superseded: Vec<u64>,
    },
    Unsubscribed {
        job_id: JobId,
    },
    Pong,
    CancelRequested {
        job_id: JobId,
        status: JobStatus,
    },
    Error {
        code: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<JobId>,
    },
}

impl ServerMessage {
    pub fn error(code: &str, message: impl Into<String>, job_id: Option<JobId>) -> Self {
        Self::Error { code: code.to_owned(), message: message.into(), job_id }
    }

    pub fn event(event: JobEventEnvelope) -> Self {
        Self::Event { event: Box::new(event), superseded: Vec::new() }
    }

    /// The wire form, under [`MAX_MESSAGE_BYTES`]. A job's result is the only
    /// unbounded part of a message: when it does not fit, it is sent as `null`
    /// with `"truncated": true`, and clients read it from the REST snapshot.
    pub fn encode(&self) -> Bytes {
        let bytes = to_bytes(self);
        if bytes.len() <= MAX_MESSAGE_BYTES {
            return bytes;
        }
        let mut value = serde_json::to_value(self).unwrap_or_else(|e| unreachable!("message serialisation: {e}"));
        for pointer in ["/job/result", "/payload/result"] {
            if let Some(result) = value.pointer_mut(pointer) {
                *result = serde_json::Value::Null;
            }
        }
        value["truncated"] = true.into();
        let bytes = to_bytes(&value);
        if bytes.len() <= MAX_MESSAGE_BYTES {
            return bytes;
        }
        let job_id = value.pointer("/job/id").or_else(|| value.get("job_id")).and_then(|v| serde_json::from_value(v.clone()).ok());
        to_bytes(&Self::error("too_large", "message is over the WebSocket limit; read it over REST", job_id))
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|e| unreachable!("message serialisation: {e}")))
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

impl Retryable for DeliveryError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Notify(e) => e.is_retryable(),
        }
    }
}

/// What one push to one subscription did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Nothing to send.
    Nothing,
    Sent(usize),
    /// The client had gone; its connection was forgotten.
    Gone,
}

/// Totals of a fan-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    pub messages: usize,
    pub gone: usize,
}

/// Whether a burst's earlier progress events are folded into the next pushed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coalesce {
    /// Live fan-out: a progress event followed by a later event of the same
    /// burst is not pushed; status changes and the terminal event always are.
    Bursts,
    /// Replay on request: every event.
    Never,
}

/// The ports delivery needs.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub jobs: &'a dyn JobStore,
    pub connections: &'a dyn ConnectionStore,
    pub notifier: &'a dyn Notifier,
}

impl Delivery<'_> {
    /// Pushes the job's events after its fan-out cursor, up to the newest of
    /// `events` (sorted by `seq`), to every subscription of the job; then
    /// advances the cursor, unless a push failed (the caller retries).
    pub async fn fan_out(&self, job_id: &JobId, events: &[JobEventEnvelope]) -> Result<FanOut, DeliveryError> {
        let Some(up_to) = events.iter().filter_map(|e| e.seq).max() else { return Ok(FanOut::default()) };
        // The job's subscriptions and its cursor, one read: only events of
        // watched jobs reach here, so there is nearly always someone to push
        // to, and under load each round trip is worth saving.
        // Whoever subscribes later is answered from the log by the `ws`
        // function (written subscription first, then the replay), so an event
        // that found no subscription here is in that replay.
        let FanOutState { subscriptions, sent_seq: previous } = self.connections.fan_out_state(job_id).await?;
        if subscriptions.is_empty() || previous >= up_to {
            return Ok(FanOut::default());
        }
        let range = self.range(job_id, previous, up_to, events).await?;
        let with_logs: Vec<Bytes> = messages(range.clone(), Coalesce::Bursts, Logs::Included).iter().map(ServerMessage::encode).collect();
        let without_logs: Vec<Bytes> = messages(range, Coalesce::Bursts, Logs::Left).iter().map(ServerMessage::encode).collect();
        let (with_logs, without_logs) = (&with_logs, &without_logs);
        let pushes = futures::stream::iter(subscriptions)
            .map(|s| async move { self.send_all(&s.connection_id, if s.logs { with_logs } else { without_logs }).await })
            .buffer_unordered(PUSH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut total = FanOut::default();
        let mut first_error = None;
        for push in pushes {
            match push {
                Ok(Pushed::Sent(n)) => total.messages += n,
                Ok(Pushed::Gone) => total.gone += 1,
                Ok(Pushed::Nothing) => {}
                // One failing connection must not hold back the others.
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.connections.advance_fan_out(job_id, up_to).await?;
        Ok(total)
    }

    /// Every event after `after_seq` up to `up_to`, from the log, to one
    /// connection: the replay that answers a subscription.
    pub async fn replay(
        &self,
        job_id: &JobId,
        connection_id: &str,
        after_seq: u64,
        up_to: u64,
        logs: bool,
    ) -> Result<Pushed, DeliveryError> {
        if up_to <= after_seq {
            return Ok(Pushed::Nothing);
        }
        let range = self.range(job_id, after_seq, up_to, &[]).await?;
        let logs = if logs { Logs::Included } else { Logs::Left };
        let messages: Vec<Bytes> = messages(range, Coalesce::Never, logs).iter().map(ServerMessage::encode).collect();
        self.send_all(connection_id, &messages).await
    }

    /// Events `previous+1..=up_to`: from `known` when it has them, else from the log.
    async fn range(
        &self,
        job_id: &JobId,
        previous: u64,
        up_to: u64,
        known: &[JobEventEnvelope],
    ) -> Result<Vec<JobEventEnvelope>, DeliveryError> {
        let in_range = |e: &JobEventEnvelope| e.seq.is_some_and(|s| s > previous && s <= up_to);
        if known.iter().any(|e| e.seq == Some(previous + 1)) {
            return Ok(known.iter().filter(|e| in_range(e)).cloned().collect());
        }
        let missing = u32::try_from(up_to - previous).unwrap_or(u32::MAX);
        Ok(self.jobs.events(job_id, previous, missing).await?.into_iter().filter(in_range).collect())
    }

    async fn send_all(&self, connection_id: &str, messages: &[Bytes]) -> Result<Pushed, DeliveryError> {
        for message in messages {
            match self.notifier.send(connection_id, message.clone()).await {
                Ok(()) => {}
                Err(NotifyError::Gone(_)) => {
                    self.connections.disconnect(connection_id).await?;
                    return Ok(Pushed::Gone);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(if messages.is_empty() { Pushed::Nothing } else { Pushed::Sent(messages.len()) })
    }

    /// Pushes one message that is not a job event (a snapshot, pong or error).
    pub async fn send(&self, connection_id: &str, message: &ServerMessage) -> Result<Pushed, DeliveryError> {
        self.send_all(connection_id, &[message.encode()]).await
    }
}

/// Whether a subscription gets the job's `job.log` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logs {
    Included,
    Left,
}

/// The messages for a claimed range of events.
///
/// An event left out is listed in the next pushed one's `superseded`, so the
/// client's resequencer knows not to wait for it; the last event of a range
/// is always pushed, since nothing after it could say so.
fn messages(range: Vec<JobEventEnvelope>, coalesce: Coalesce, logs: Logs) -> Vec<ServerMessage> {
    let last = range.len().saturating_sub(1);
    let mut out = Vec::with_capacity(range.len());
    let mut superseded = Vec::new();
    for (i, event) in range.into_iter().enumerate() {
        let coalesced = coalesce == Coalesce::Bursts && matches!(event.body, JobEvent::Progress { .. });
        let unwanted = logs == Logs::Left && matches!(event.body, JobEvent::Logged { .. });
        if (coalesced || unwanted) && i < last {
            superseded.extend(event.seq);
            continue;
        }
        out.push(ServerMessage::Event { event: Box::new(event), superseded: std::mem::take(&mut superseded) });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;

    use super::*;
    use crate::app::lifecycle::record;
    use crate::domain::job::Priority;
    use crate::ports::{Connection, Subscription};
    use crate::testing::memory::{MemoryConnections, MemoryJobStore, MemoryNotifier};

    struct World {
        jobs: MemoryJobStore,
        connections: MemoryConnections,
        notifier: MemoryNotifier,
        job: Job,
    }

    impl World {
        async fn new() -> Self {
            let jobs = MemoryJobStore::default();
            let upload = "s3://b/uploads/o/k".parse().expect("uri");
            let job = Job::new(JobId::new_random(), "o".into(), Priority::High, upload, "t".into(), Utc::now());
            crate::app::lifecycle::create(&jobs, &job, &[JobEventEnvelope::for_job("t", &job, job.created_event())]).await.expect("create");
            Self { jobs, connections: MemoryConnections::default(), notifier: MemoryNotifier::default(), job }
        }

        fn delivery(&self) -> Delivery<'_> {
            Delivery { jobs: &self.jobs, connections: &self.connections, notifier: &self.notifier }
        }

        async fn subscribe(&self, connection_id: &str) {
            self.subscribe_to(connection_id, false).await;
        }

        async fn subscribe_to(&self, connection_id: &str, logs: bool) {
            let connection = Connection { connection_id: connection_id.into(), owner: "o".into(), connected_at: Utc::now(), expires_at: 0 };
            self.connections.connect(&connection).await.expect("connect");
            let sub = Subscription { connection_id: connection_id.into(), job_id: self.job.id.clone(), expires_at: 0, logs };
            self.connections.subscribe(&sub).await.expect("subscribe");
        }

        async fn record(&self, event: JobEvent) -> JobEventEnvelope {
            match record(&self.jobs, &self.job.id, "t", event).await.expect("record") {
                crate::app::lifecycle::Recorded::Changed(_, mut envelopes) => envelopes.pop().expect("one event"),
                other => panic!("not a change: {other:?}"),
            }
        }

        fn seqs(&self, connection_id: &str) -> Vec<u64> {
            self.notifier.messages(connection_id).iter().filter_map(|m| m["seq"].as_u64()).collect()
        }
    }

    fn progress(p: u8) -> JobEvent {
        JobEvent::Progress { phase: "p".into(), progress: p, eta_s: None, counts: None }
    }

    #[tokio::test]
    async fn only_subscriptions_that_asked_for_logs_get_job_log_events() {
        let w = World::new().await;
        w.subscribe_to("with", true).await;
        w.subscribe_to("without", false).await;
        let mut burst = w.jobs.events(&w.job.id, 0, 1).await.expect("log");
        burst.push(w.record(JobEvent::Started { phase: "p".into() }).await);
        let line = crate::domain::joblog::LogLine::new(crate::domain::joblog::LogLevel::Info, "decoded", Utc::now());
        burst.push(w.record(JobEvent::Logged { lines: vec![line] }).await);
        burst.push(w.record(progress(50)).await);
        w.delivery().fan_out(&w.job.id, &burst).await.expect("fan out");
        assert_eq!(w.seqs("with"), vec![1, 2, 3, 4]);
        assert_eq!(w.seqs("without"), vec![1, 2, 4]);
        assert_eq!(w.notifier.messages("without")[2]["superseded"], serde_json::json!([3]), "the client must not wait for it");
        w.delivery().replay(&w.job.id, "without", 0, 4, false).await.expect("replay");
        assert_eq!(w.seqs("without"), vec![1, 2, 4, 1, 2, 4], "a replay leaves the log out too");
        assert_eq!(w.notifier.messages("without")[5]["superseded"], serde_json::json!([3]));
    }

    #[tokio::test]
    async fn bursts_coalesce_progress_but_never_status_changes_or_the_end() {
        let w = World::new().await;
        w.subscribe("c1").await;
        let mut burst = vec![w.record(JobEvent::Started { phase: "p".into() }).await];
        for p in [10, 20, 30] {
            burst.push(w.record(progress(p)).await);
        }
        burst.push(w.record(JobEvent::Cancelled).await);
        let created = w.jobs.events(&w.job.id, 0, 1).await.expect("log");
        w.delivery().fan_out(&w.job.id, &created).await.expect("created");
        let out = w.delivery().fan_out(&w.job.id, &burst).await.expect("fan out");
        assert_eq!(out, FanOut { messages: 2, gone: 0 });
        let pushed = w.notifier.messages("c1");
        assert_eq!(w.seqs("c1"), vec![1, 2, 6]);
        assert_eq!(pushed[2]["superseded"], serde_json::json!([3, 4, 5]));
        assert_eq!(pushed[2]["event_type"], "job.cancelled");
        // Pushed messages are envelopes: they decode as one, with a type tag beside.
        let decoded: ServerMessage = serde_json::from_value(pushed[1].clone()).expect("decode");
        assert!(matches!(decoded, ServerMessage::Event { event, .. } if event.seq == Some(2)));
        // A second delivery of the same burst (an SQS redelivery) sends nothing.
        assert_eq!(w.delivery().fan_out(&w.job.id, &burst).await.expect("again"), FanOut::default());
    }

    #[tokio::test]
    async fn a_job_nobody_watches_is_read_once_and_a_later_subscriber_misses_nothing() {
        let w = World::new().await;
        let started = w.record(JobEvent::Started { phase: "p".into() }).await;
        assert_eq!(w.delivery().fan_out(&w.job.id, &[started]).await.expect("fan out"), FanOut::default());
        assert_eq!(w.connections.fan_out_state(&w.job.id).await.expect("cursor").sent_seq, 0, "nothing marked: nothing was sent");
        // A subscriber arrives (its replay covers 1..=2), then the job ends.
        w.subscribe("late").await;
        let done = w.record(JobEvent::Cancelled).await;
        w.delivery().fan_out(&w.job.id, &[done]).await.expect("fan out");
        assert_eq!(w.seqs("late"), vec![1, 2, 3], "the live push starts where the last one to anybody left off");
    }

    #[tokio::test]
    async fn a_lost_publish_is_backfilled_from_the_log() {
        let w = World::new().await;
        w.subscribe("c1").await;
        w.record(JobEvent::Started { phase: "p".into() }).await;
        let latest = w.record(progress(50)).await;
        w.delivery().fan_out(&w.job.id, std::slice::from_ref(&latest)).await.expect("fan out");
        assert_eq!(w.seqs("c1"), vec![1, 2, 3], "the published event lost before this one is read from the log");
    }

    #[tokio::test]
    async fn a_throttled_push_is_sent_again_by_the_redelivery() {
        let w = World::new().await;
        w.subscribe("c1").await;
        w.subscribe("c2").await;
        let started = w.record(JobEvent::Started { phase: "p".into() }).await;
        let done = w.record(JobEvent::Cancelled).await;
        w.notifier.throttle_next("c2", 1);
        let err = w.delivery().fan_out(&w.job.id, &[started.clone(), done.clone()]).await.expect_err("c2 throttled");
        assert!(err.is_retryable(), "the message goes back to the queue: {err}");
        assert_eq!(w.connections.fan_out_state(&w.job.id).await.expect("cursor").sent_seq, 0, "nothing is marked sent");
        // The redelivered message pushes the whole range again: c2 gets what it
        // missed, c1 gets duplicates it drops by seq.
        w.delivery().fan_out(&w.job.id, &[started, done]).await.expect("redelivery");
        assert_eq!(w.seqs("c2"), vec![1, 2, 3]);
        let mut c1 = w.seqs("c1");
        assert_eq!(c1, vec![1, 2, 3, 1, 2, 3], "c1 got the whole range twice");
        c1.sort_unstable();
        c1.dedup();
        assert_eq!(c1, vec![1, 2, 3], "what c1 keeps once it drops repeats by seq");
        assert_eq!(w.connections.fan_out_state(&w.job.id).await.expect("cursor").sent_seq, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_senders_deliver_every_event_at_least_once() {
        let w = Arc::new(World::new().await);
        w.subscribe("c1").await;
        let mut events = vec![w.record(JobEvent::Started { phase: "p".into() }).await];
        for p in 0..30 {
            events.push(w.record(progress(p)).await);
        }
        let senders: Vec<_> = events
            .iter()
            .map(|event| {
                let (w, event) = (w.clone(), event.clone());
                tokio::spawn(async move { w.delivery().fan_out(&w.job.id, &[event]).await.expect("fan out") })
            })
            .collect();
        for s in senders {
            s.await.expect("join");
        }
        let pushed = w.notifier.messages("c1");
        let mut seen: Vec<u64> = pushed.iter().filter_map(|m| m["seq"].as_u64()).collect();
        seen.extend(pushed.iter().flat_map(|m| m["superseded"].as_array().cloned().unwrap_or_default()).filter_map(|s| s.as_u64()));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (1..=32).collect::<Vec<_>>(), "each event pushed or superseded at least once");
    }

    #[tokio::test]
    async fn gone_clients_are_forgotten() {
        let w = World::new().await;
        w.subscribe("c1").await;
        w.subscribe("c2").await;
        w.notifier.mark_gone("c1");
        let event = w.record(JobEvent::Cancelled).await;
        let out = w.delivery().fan_out(&w.job.id, &[event]).await.expect("fan out");
        assert_eq!(out, FanOut { messages: 2, gone: 1 });
        assert_eq!(w.connections.connection("c1").await.expect("read"), None);
        let subscribers = w.connections.fan_out_state(&w.job.id).await.expect("subs").subscriptions;
        assert_eq!(subscribers.iter().map(|s| s.connection_id.as_str()).collect::<Vec<_>>(), vec!["c2"]);
    }

    /// A text result of about 300 KB: over the WebSocket limit, under the store's.
    fn huge_result() -> crate::domain::results::JobResult {
        let keywords = (0..12_000).map(|i| crate::domain::results::Keyword { word: format!("keyword-{i:08}"), count: i }).collect();
        crate::domain::results::JobResult::Text(crate::domain::results::TextResult { keywords, ..Default::default() })
    }

    #[test]
    fn a_snapshot_with_a_result_over_the_limit_is_sent_without_it() {
        let upload = "s3://b/uploads/o/k".parse().expect("uri");
        let mut job = Job::new(JobId::new_random(), "o".into(), Priority::High, upload, "t".into(), Utc::now());
        job.result = Some(huge_result());
        assert!(serde_json::to_vec(&job).expect("json").len() > MAX_MESSAGE_BYTES, "the test's result is over the limit");
        let bytes = ServerMessage::Snapshot { job: Box::new(job.clone()) }.encode();
        assert!(bytes.len() <= MAX_MESSAGE_BYTES);
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!((v["type"].as_str(), v["truncated"].as_bool()), (Some("snapshot"), Some(true)));
        assert!(v["job"]["result"].is_null(), "the result is read over REST instead");
        assert_eq!(v["job"]["id"].as_str(), Some(job.id.as_str()), "the rest of the job is sent");
    }

    #[test]
    fn a_completed_event_with_a_result_over_the_limit_is_sent_without_it() {
        let upload = "s3://b/uploads/o/k".parse().expect("uri");
        let job = Job::new(JobId::new_random(), "o".into(), Priority::High, upload, "t".into(), Utc::now());
        let completed = JobEvent::Completed { result: huge_result(), outputs: Vec::new() };
        let mut envelope = JobEventEnvelope::for_job("test", &job, completed);
        envelope.seq = Some(4);
        let bytes = ServerMessage::event(envelope).encode();
        assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!((v["type"].as_str(), v["truncated"].as_bool()), (Some("event"), Some(true)), "{v}");
        assert_eq!(v["seq"].as_u64(), Some(4), "clients still order it: {v}");
        assert!(v["payload"].is_object() && v["payload"]["result"].is_null(), "the result is read over REST instead: {v}");
    }

    #[test]
    fn a_message_over_the_limit_even_without_its_result_becomes_an_error() {
        let upload = "s3://b/uploads/o/k".parse().expect("uri");
        let mut job = Job::new(JobId::new_random(), "o".into(), Priority::High, upload, "t".into(), Utc::now());
        let huge = "x".repeat(MAX_MESSAGE_BYTES);
        job.owner = huge;
        let bytes = ServerMessage::Snapshot { job: Box::new(job) }.encode();
        assert!(bytes.len() <= MAX_MESSAGE_BYTES);
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["type"], "error");
    }
}

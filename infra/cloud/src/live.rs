//! Following jobs live over the WebSocket API: subscribe, put pushed events
//! back in order, resume after a dropped connection from the last sequence
//! number seen, and fall back to polling the REST event log when the
//! WebSocket API cannot be reached. Either way a follower sees every event
//! of its jobs once, in order (or learns it was superseded by a later one).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use prism_shared::JobId;
use prism_shared::app::realtime::ClientMessage;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::PrismClient;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a gap in the sequence may last before the events are asked for again.
const GAP_WAIT: Duration = Duration::from_secs(2);
/// How long a quiet subscription waits before re-subscribing (which re-sends anything lost).
const QUIET_WAIT: Duration = Duration::from_secs(10);
/// Pings keep the connection under API Gateway's 10-minute idle limit.
const PING_EVERY: Duration = Duration::from_secs(5 * 60);
/// Tries of a connection the gateway refused for a throttled `$connect`:
/// 13–26 s of jittered backoff, as a browser reconnecting would keep trying
/// (a thousand clients connecting at once, retrying in step, kept some
/// refused past 1.5 s).
const CONNECT_ATTEMPTS: usize = 10;

/// The waits before trying again what the gateway refused or answered
/// itself (a throttled `ws`): jittered, so clients refused together do not
/// come back together.
fn refused_retry_delays() -> impl Iterator<Item = Duration> {
    crate::backoff::jittered_delays(Duration::from_millis(100), Duration::from_secs(2)).take(CONNECT_ATTEMPTS - 1)
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("the WebSocket API refused the connection (HTTP {0})")]
    Refused(u16),
    #[error("WebSocket: {0}")]
    Socket(#[from] Box<tungstenite::Error>),
    #[error("the server closed the connection")]
    Closed,
    #[error("{code}: {message}")]
    Server { code: String, message: String },
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
}

impl From<tungstenite::Error> for LiveError {
    fn from(e: tungstenite::Error) -> Self {
        Self::Socket(Box::new(e))
    }
}

/// One WebSocket connection to the API, authenticated with a bearer token.
#[derive(Debug)]
pub struct LiveConnection {
    socket: Socket,
    last_sent: Instant,
}

impl LiveConnection {
    /// Connects with the token in the query string (the only place browsers can put it).
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self, LiveError> {
        let url = match token {
            Some(t) => format!("{url}?token={}", urlencoding::encode(t)),
            None => url.to_owned(),
        };
        // `$connect` throttled past the ws function's concurrency reaches the
        // client as API Gateway's 500: connect again after a backoff.
        let mut delays = refused_retry_delays();
        loop {
            let refused = match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok((socket, _)) => return Ok(Self { socket, last_sent: Instant::now() }),
                Err(tungstenite::Error::Http(resp)) => LiveError::Refused(resp.status().as_u16()),
                Err(e) => return Err(e.into()),
            };
            match delays.next() {
                Some(delay) if matches!(refused, LiveError::Refused(429 | 500 | 502 | 503)) => tokio::time::sleep(delay).await,
                _ => return Err(refused),
            }
        }
    }

    /// Subscribes to `job_id` from `after_seq` and returns the snapshot the
    /// server answers with. While the gateway answers the route itself (the
    /// `ws` function throttled or failing, as API Gateway's "Internal server
    /// error"), sends it again after a backoff; other messages are skipped.
    pub async fn subscribe(&mut self, job_id: &JobId, after_seq: u64, within: Duration) -> Result<Value, LiveError> {
        let subscribe = ClientMessage::Subscribe { job_id: job_id.clone(), after_seq, logs: false };
        let mut delays = refused_retry_delays();
        let deadline = Instant::now() + within;
        self.send(&subscribe).await?;
        loop {
            let left = deadline.checked_duration_since(Instant::now()).ok_or(LiveError::NoAnswer(within))?;
            let message = self.next(left).await?.ok_or(LiveError::NoAnswer(within))?;
            if message["type"] == "snapshot" && message["job"]["id"].as_str() == Some(job_id.as_str()) {
                return Ok(message);
            }
            if message["type"] == "error" {
                return Err(server_error(&message));
            }
            if is_gateway_error(&message) {
                let delay = delays.next().ok_or_else(|| LiveError::Server {
                    code: "gateway".to_owned(),
                    message: message["message"].as_str().unwrap_or_default().to_owned(),
                })?;
                tokio::time::sleep(delay).await;
                self.send(&subscribe).await?;
            }
        }
    }

    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), LiveError> {
        let text = serde_json::to_string(message).unwrap_or_else(|e| unreachable!("client message serialisation: {e}"));
        self.socket.send(Message::Text(text.into())).await?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The next message from the server as JSON, or `None` if none came `within`.
    pub async fn next(&mut self, within: Duration) -> Result<Option<Value>, LiveError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.last_sent.elapsed() > PING_EVERY {
                self.send(&ClientMessage::Ping).await?;
            }
            let frame = match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return Ok(None),
                Ok(None | Some(Ok(Message::Close(_)))) => return Err(LiveError::Closed),
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(frame))) => frame,
            };
            let text = match frame {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                _ => continue,
            };
            match serde_json::from_str(&text) {
                Ok(value) => return Ok(Some(value)),
                Err(e) => tracing::warn!(error = %e, "ignoring a message that is not JSON"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// Whether a message is API Gateway's own answer to a route it could not
/// run (`{"message": "Internal server error", "connectionId": …, "requestId": …}`),
/// not one of the API's, which all have a `type`.
pub fn is_gateway_error(message: &Value) -> bool {
    message.get("type").is_none() && message["message"].is_string() && message.get("requestId").is_some()
}

/// Whether an event ends its job.
pub fn is_terminal(event: &Value) -> bool {
    matches!(event["event_type"].as_str(), Some("job.completed" | "job.failed" | "job.cancelled"))
}

/// What has been seen of one job.
#[derive(Debug, Clone)]
pub struct Followed {
    resequencer: Resequencer<Value>,
    /// The job's events in order, as released.
    pub events: Vec<Value>,
    /// Progress events that were coalesced into later ones and never pushed.
    pub superseded: Vec<u64>,
    pub snapshot: Option<Value>,
    pub finished: bool,
}

impl Followed {
    fn new(after_seq: u64) -> Self {
        Self { resequencer: Resequencer::new(after_seq), events: Vec::new(), superseded: Vec::new(), snapshot: None, finished: false }
    }

    pub fn last_seq(&self) -> u64 {
        self.resequencer.last_seq
    }

    /// Takes one event (pushed or polled); returns how many were released in order.
    fn accept(&mut self, event: Value, on_event: &mut (dyn FnMut(&JobId, &Value) + Send), id: &JobId) -> usize {
        let Some(seq) = event["seq"].as_u64() else { return 0 };
        let superseded: Vec<u64> = event["superseded"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
        let mut last = self.resequencer.last_seq;
        let released = self.resequencer.accept(seq, superseded, event);
        for event in &released {
            // Delivery is at least once: a later push may list as superseded
            // an event already released from an earlier one. Only the seqs
            // skipped on the way to this event were superseded.
            let skipped = event["superseded"].as_array().into_iter().flatten().filter_map(Value::as_u64).filter(|s| *s > last);
            self.superseded.extend(skipped);
            last = event["seq"].as_u64().unwrap_or(last);
            self.finished |= is_terminal(event);
            on_event(id, event);
        }
        let n = released.len();
        self.events.extend(released);
        n
    }
}

/// Several jobs followed on one connection.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    pub jobs: BTreeMap<JobId, Followed>,
    /// Whether to ask for the jobs' `job.log` events too.
    pub logs: bool,
}

impl Watch {
    /// Follows `jobs`, each from the sequence number after which its events are wanted.
    pub fn new(jobs: impl IntoIterator<Item = (JobId, u64)>) -> Self {
        Self { jobs: jobs.into_iter().map(|(id, after)| (id, Followed::new(after))).collect(), logs: false }
    }

    pub fn finished(&self) -> bool {
        self.jobs.values().all(|f| f.finished)
    }

    async fn subscribe_all(&self, conn: &mut LiveConnection) -> Result<(), LiveError> {
        for (id, followed) in self.jobs.iter().filter(|(_, f)| !f.finished) {
            conn.send(&ClientMessage::Subscribe { job_id: id.clone(), after_seq: followed.last_seq(), logs: self.logs }).await?;
        }
        Ok(())
    }

    /// Subscribes every unfinished job from where it stands and reads until
    /// all have ended or `stop_after` events were released by this call.
    pub async fn run(
        &mut self,
        conn: &mut LiveConnection,
        stop_after: Option<usize>,
        on_event: &mut (dyn FnMut(&JobId, &Value) + Send),
    ) -> Result<(), LiveError> {
        self.subscribe_all(conn).await?;
        let mut released = 0;
        while !self.finished() && stop_after.is_none_or(|n| released < n) {
            let gap = self.jobs.values().any(|f| f.resequencer.has_gap());
            let Some(message) = conn.next(if gap { GAP_WAIT } else { QUIET_WAIT }).await? else {
                // A gap that did not fill, or silence: ask again from the last seq
                // seen; the server re-sends what is missing and clients drop duplicates.
                self.subscribe_all(conn).await?;
                continue;
            };
            let job_id = message["job_id"].as_str().or_else(|| message["job"]["id"].as_str()).and_then(|id| id.parse::<JobId>().ok());
            let Some((id, followed)) = job_id.and_then(|id| self.jobs.get_mut(&id).map(|f| (id, f))) else {
                if message["type"] == "error" {
                    return Err(server_error(&message));
                }
                continue;
            };
            match message["type"].as_str() {
                Some("event") => released += followed.accept(message, on_event, &id),
                Some("snapshot") => {
                    let job = message["job"].clone();
                    let ended = matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled"));
                    if ended && job["seq"].as_u64().is_some_and(|seq| seq <= followed.last_seq()) {
                        followed.finished = true;
                    }
                    followed.snapshot = Some(job);
                }
                Some("error") => return Err(server_error(&message)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads the REST event log instead, until every job ends or `timeout` passes.
    pub async fn poll(
        &mut self,
        api: &PrismClient,
        timeout: Duration,
        on_event: &mut (dyn FnMut(&JobId, &Value) + Send),
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut delays = crate::backoff::delays(Duration::from_millis(100), Duration::from_secs(1));
        while !self.finished() {
            for (id, followed) in self.jobs.iter_mut().filter(|(_, f)| !f.finished) {
                for event in api.events(id, followed.last_seq()).await? {
                    followed.accept(event, on_event, id);
                }
            }
            if started.elapsed() > timeout {
                anyhow::bail!("jobs still running after {timeout:?}");
            }
            if !self.finished() {
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
            }
        }
        Ok(())
    }

    /// Follows every job to its end over the WebSocket API, reconnecting
    /// after drops, and over REST when the WebSocket API is unavailable.
    pub async fn follow(
        &mut self,
        websocket_url: Option<&str>,
        token: Option<&str>,
        api: &PrismClient,
        timeout: Duration,
        on_event: &mut (dyn FnMut(&JobId, &Value) + Send),
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut failures = 0u32;
        if let Some(url) = websocket_url {
            while !self.finished() && failures < 3 && started.elapsed() < timeout {
                let outcome = async {
                    let mut conn = LiveConnection::connect(url, token).await?;
                    let result = tokio::time::timeout(timeout.saturating_sub(started.elapsed()), self.run(&mut conn, None, on_event)).await;
                    conn.close().await;
                    result.unwrap_or(Ok(()))
                }
                .await;
                match outcome {
                    Ok(()) => {}
                    Err(e @ (LiveError::Refused(_) | LiveError::Server { .. })) => return Err(e.into()),
                    Err(e) => {
                        failures += 1;
                        tracing::info!(error = %e, failures, "WebSocket dropped; resuming from the last sequence number");
                        tokio::time::sleep(Duration::from_millis(200) * failures).await;
                    }
                }
            }
        }
        if !self.finished() {
            self.poll(api, timeout.saturating_sub(started.elapsed()), on_event).await?;
        }
        Ok(())
    }
}

fn server_error(message: &Value) -> LiveError {
    LiveError::Server {
        code: message["code"].as_str().unwrap_or("error").to_owned(),
        message: message["message"].as_str().unwrap_or_default().to_owned(),
    }
}

/// Puts pushed events back in `seq` order on the client, drops duplicates,
/// and says when a gap has lasted long enough to ask for a replay.
#[derive(Debug, Clone)]
pub struct Resequencer<T> {
    /// Every event up to here has been released (or superseded).
    pub last_seq: u64,
    pending: BTreeMap<u64, (T, Vec<u64>)>,
}

impl<T> Resequencer<T> {
    pub fn new(last_seq: u64) -> Self {
        Self { last_seq, pending: BTreeMap::new() }
    }

    /// Takes pushed event `seq` and returns the events now in order.
    pub fn accept(&mut self, seq: u64, superseded: Vec<u64>, event: T) -> Vec<T> {
        if seq > self.last_seq {
            self.pending.insert(seq, (event, superseded));
        }
        let mut ready = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let (seq, (_, superseded)) = (*entry.key(), entry.get());
            // The next event is due, or every seq between is one it superseded.
            let due = (self.last_seq + 1..seq).all(|s| superseded.contains(&s));
            if !due {
                break;
            }
            let (event, _) = entry.remove();
            self.last_seq = seq;
            ready.push(event);
        }
        ready
    }

    /// Whether events are waiting behind a missing one.
    pub fn has_gap(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tells_the_gateways_own_answer_from_the_apis_messages() {
        let throttled = json!({"message": "Internal server error", "connectionId": "abc", "requestId": "r-1"});
        assert!(is_gateway_error(&throttled));
        assert!(!is_gateway_error(&json!({"type": "error", "code": "not_found", "message": "no such job"})));
        assert!(!is_gateway_error(&json!({"type": "snapshot", "job": {"id": "x", "seq": 3}})));
    }

    #[test]
    fn an_event_released_once_is_not_also_counted_superseded_by_a_repeated_push() {
        let id: JobId = "0196f0a0-0000-7000-8000-0000000000ab".parse().expect("id");
        let mut followed = Followed::new(4);
        let mut seen = Vec::new();
        let mut on_event = |_: &JobId, e: &Value| seen.push(e["seq"].as_u64().unwrap_or(0));
        // One sender pushes progress 5 on its own; another, pushing the same
        // range again (at least once), coalesces it into 6.
        followed.accept(json!({"seq": 5, "event_type": "job.progress"}), &mut on_event, &id);
        followed.accept(json!({"seq": 6, "event_type": "job.progress", "superseded": [5]}), &mut on_event, &id);
        followed.accept(json!({"seq": 8, "event_type": "job.completed", "superseded": [7]}), &mut on_event, &id);
        assert_eq!(seen, [5, 6, 8]);
        assert_eq!(followed.superseded, [7], "5 was released, not superseded");
    }

    #[test]
    fn the_resequencer_orders_dedupes_and_honours_superseded_events() {
        let mut r = Resequencer::new(1);
        assert!(r.accept(3, vec![], 3).is_empty());
        assert!(r.has_gap());
        assert_eq!(r.accept(2, vec![], 2), vec![2, 3]);
        assert!(r.accept(3, vec![], 3).is_empty(), "duplicates are dropped");
        assert_eq!(r.accept(7, vec![4, 5, 6], 7), vec![7]);
        assert!(!r.has_gap());
    }
}

//! `GET /v1/stream`: the events of all of the caller's jobs, as they happen.
//!
//! Each job's log is ordered by its own sequence numbers; nothing orders an
//! owner's events across jobs, and a shared counter would cost a write per
//! event. So this stream follows jobs, not one log. Each poll finds the
//! owner's unfinished jobs (the owner-status index, `queued` and
//! `processing`) and the jobs created lately (the owner index, since the
//! last poll less [`OVERLAP`]), and sends each one's events after the last
//! it sent of that job, read from the job's log as the one-job stream reads
//! it. Every event's `id:` is the stream's position after it ([`Position`]):
//! when the last full poll began and, for each job followed, the last
//! sequence number sent. A client that resumes with `Last-Event-ID` gets
//! every event after that one and none twice, whichever of its jobs they
//! belong to. Events of one job come in order; across jobs, in the order of
//! the jobs' creation within a poll.
//!
//! The one window: a job is found by its creation only while it was created
//! less than [`OVERLAP`] before a poll, so one whose creation took longer
//! than that to reach the owner index (eventually consistent, usually well
//! under a second) and that ended before a poll saw it unfinished would be
//! missed. A new stream (no `Last-Event-ID`) starts now: jobs created before
//! it are sent from their first event after its first poll, later ones whole.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use prism_shared::ports::{JobStore, ListQuery};
use prism_shared::{Job, JobEvent, JobEventEnvelope, JobId, JobStatus, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{Config, PAGE, RETRY_MS};

pub const PATH: &str = "/v1/stream";

/// How far back each poll looks for jobs by their creation (see the module).
pub const OVERLAP: Duration = Duration::seconds(30);
/// Jobs read per page of the owner indexes; at most [`MAX_PAGES`] pages of each.
const LIST_PAGE: u32 = 100;
const MAX_PAGES: usize = 20;

/// Where an owner's stream stands, as its `id:` carries it (`o1.` and
/// base64url JSON, so it is one opaque header value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// When the last full poll began, ms since the epoch.
    #[serde(rename = "t")]
    pub polled_ms: i64,
    /// The last sequence number sent of each job followed.
    #[serde(rename = "j")]
    pub sent: BTreeMap<String, u64>,
}

impl Position {
    const PREFIX: &'static str = "o1.";

    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("a position serialises: {e}"));
        format!("{}{}", Self::PREFIX, URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(text: &str) -> Option<Self> {
        let encoded = text.trim().strip_prefix(Self::PREFIX)?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()
    }

    fn polled(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.polled_ms).unwrap_or_default()
    }
}

/// What an owner's stream follows and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerFollow {
    pub owner: String,
    /// `None` for a new stream.
    pub from: Option<Position>,
    pub logs: bool,
    /// When the stream was asked for: a new stream sends the jobs created
    /// since whole.
    pub opened: DateTime<Utc>,
}

/// One event as an SSE frame whose id is the stream's position after it.
pub fn frame(event: &JobEventEnvelope, position: &Position) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_else(|e| unreachable!("envelope serialisation: {e}"));
    Bytes::from(format!("id: {}\nevent: {}\ndata: {data}\n\n", position.encode(), event.body.event_type()))
}

/// Every job of `owner`'s a poll looks at, by id: the unfinished, those
/// created since `created_since`, and those `followed` that are neither
/// (finished since the last poll).
async fn candidates(
    jobs: &dyn JobStore,
    owner: &str,
    created_since: DateTime<Utc>,
    followed: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, Job>, StoreError> {
    let now = Utc::now();
    let mut found = BTreeMap::new();
    let queries = [
        ListQuery { since: Some(created_since), ..ListQuery::default() },
        ListQuery { status: Some(JobStatus::Queued), ..ListQuery::default() },
        ListQuery { status: Some(JobStatus::Processing), ..ListQuery::default() },
    ];
    for query in queries {
        let mut query = ListQuery { limit: LIST_PAGE, ..query };
        for _ in 0..MAX_PAGES {
            let page = jobs.list(owner, &query, now).await?;
            found.extend(page.jobs.into_iter().map(|job| (job.id.to_string(), job)));
            match page.cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
    }
    let vanished: Vec<&String> = followed.keys().filter(|id| !found.contains_key(*id)).collect();
    for id in vanished {
        let Ok(job_id) = id.parse::<JobId>() else { continue };
        if let Some(job) = jobs.get(&job_id).await?.filter(|j| j.owner == owner) {
            found.insert(id.clone(), job);
        }
    }
    Ok(found)
}

/// Sends the events of `follow.owner`'s jobs to `out` until `until` or the
/// client going away; heartbeats while they are quiet.
pub async fn stream_owner(
    jobs: &dyn JobStore,
    follow: OwnerFollow,
    config: &Config,
    until: Instant,
    out: &mpsc::Sender<Bytes>,
) -> Result<(), StoreError> {
    let send = |chunk: Bytes| async move { out.send(chunk).await.is_ok() };
    if !send(Bytes::from(format!("retry: {RETRY_MS}\n\n"))).await {
        return Ok(());
    }
    let began = follow.opened;
    let mut starting = follow.from.is_none();
    let mut position = follow.from.unwrap_or_else(|| Position { polled_ms: began.timestamp_millis(), sent: BTreeMap::new() });
    let mut last_sent = Instant::now();
    loop {
        let poll_began = Utc::now();
        let window = position.polled() - OVERLAP;
        let mut found: Vec<Job> = candidates(jobs, &follow.owner, window, &position.sent).await?.into_values().collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        for job in &found {
            let key = job.id.to_string();
            let (after, not_before) = match position.sent.get(&key) {
                Some(&sent) => (sent, None),
                // A new stream starts from now: what came before it is not sent.
                None if starting && job.created_at < began => (job.seq, None),
                None if job.created_at >= window => (0, None),
                // Unfinished again after it was let go (a redrive): its events since the window.
                None => (0, Some(window)),
            };
            position.sent.insert(key.clone(), after);
            if job.seq <= after {
                continue;
            }
            let mut read = after;
            loop {
                let events = jobs.events(&job.id, read, PAGE).await?;
                for event in &events {
                    read = event.seq.unwrap_or(read);
                    position.sent.insert(key.clone(), read);
                    let wanted = follow.logs || !matches!(event.body, JobEvent::Logged { .. });
                    if !wanted || not_before.is_some_and(|t| event.timestamp < t) {
                        continue;
                    }
                    if !send(frame(event, &position)).await {
                        return Ok(());
                    }
                    last_sent = Instant::now();
                }
                if events.len() < PAGE as usize {
                    break;
                }
            }
        }
        // Let go of jobs that ended, were sent to their end and are too old
        // to be found by their creation: nothing more can come of them.
        let horizon = poll_began - OVERLAP;
        let ended: std::collections::HashMap<String, &Job> = found.iter().map(|j| (j.id.to_string(), j)).collect();
        position
            .sent
            .retain(|id, sent| ended.get(id).is_some_and(|job| !job.status.is_terminal() || job.created_at >= horizon || *sent < job.seq));
        position.polled_ms = poll_began.timestamp_millis();
        starting = false;

        if !crate::until_next_poll(out, config.owner_poll, config.heartbeat, until, &mut last_sent).await {
            return Ok(());
        }
    }
}

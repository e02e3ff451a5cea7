//! stream: a job's events as server-sent events, for clients that cannot
//! hold a WebSocket (proxies, curl, simple dashboards). Served by a Lambda
//! function URL in `RESPONSE_STREAM` mode: `GET /v1/jobs/{id}/stream` and
//! `GET /v1/runs/{id}/stream` (a workflow run's root job, whose
//! `job.run_started`/`job.run_advanced` events carry every step's changes).
//!
//! Each event is the same envelope the REST log and the WebSocket carry,
//! `id:` its sequence number, `event:` its type. The stream reads the job's
//! log from the table (so it is gapless by construction: it resumes from
//! `Last-Event-ID`, or `?after=`, and sends each event once), sends a comment
//! as a heartbeat while nothing happens, and closes after the terminal event
//! or shortly before the function's deadline (the client reconnects with
//! `Last-Event-ID` and loses nothing). `job.log` events only with `?logs=true`.
//! Same bearer tokens and owner isolation as the REST API; the token may also
//! come as `?access_token=` because browsers' `EventSource` sets no headers.
//!
//! `GET /v1/stream` streams all of the caller's jobs ([`owner`]).

pub mod owner;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use bytes::Bytes;
use chrono::Utc;
use futures::Stream;
use http::{HeaderMap, HeaderValue, StatusCode};
use lambda_runtime::{MetadataPrelude, StreamResponse};
use prism_shared::app::auth::{AuthError, TokenKey};
use prism_shared::domain::envelope::JobEventEnvelope;
use prism_shared::ports::JobStore;
use prism_shared::{ConfigError, JobEvent, JobId, StoreError, runtime::config};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Config {
    pub token_key: TokenKey,
    /// How often the job's log is read while nothing new is in it.
    pub poll: Duration,
    /// How often an owner's stream looks for changed jobs (three index
    /// queries per poll, see [`owner`]).
    pub owner_poll: Duration,
    /// How long the stream may be silent before a heartbeat comment.
    pub heartbeat: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            token_key: config::token_key()?,
            poll: Duration::from_millis(config::parsed_or("STREAM_POLL_MS", 500)?),
            owner_poll: Duration::from_millis(config::parsed_or("STREAM_OWNER_POLL_MS", 1000)?),
            heartbeat: Duration::from_secs(config::parsed_or("STREAM_HEARTBEAT_SECONDS", 15)?),
        })
    }
}

pub type Deps = prism_shared::ports::Deps<Config>;

/// The body a function URL streams.
pub type Body = Pin<Box<dyn Stream<Item = Result<Bytes, std::convert::Infallible>> + Send>>;

/// The stream ends this long before the function's deadline, so it closes
/// cleanly rather than being cut off.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);
/// Events read per query of the job's log.
pub(crate) const PAGE: u32 = 100;
/// What the client waits before reconnecting (the SSE `retry:` field).
pub(crate) const RETRY_MS: u64 = 1000;
/// Chunks written ahead of a slow client.
const BUFFER: usize = 32;

/// What a request asks to stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Job(JobId),
    Run(JobId),
}

/// The route of `path`, `None` when no stream lives there.
pub fn target(path: &str) -> Option<Target> {
    type ToTarget = fn(JobId) -> Target;
    static ROUTES: std::sync::LazyLock<matchit::Router<ToTarget>> = std::sync::LazyLock::new(|| {
        let mut routes = matchit::Router::new();
        for (path, target) in [("/v1/jobs/{id}/stream", Target::Job as ToTarget), ("/v1/runs/{id}/stream", Target::Run)] {
            routes.insert(path, target).unwrap_or_else(|e| unreachable!("fixed routes: {e}"));
        }
        routes
    });
    let found = ROUTES.at(path).ok()?;
    let id = found.params.get("id")?.parse().ok()?;
    Some((found.value)(id))
}

/// Where in the job's log a request starts and what it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follow {
    /// Events with a larger seq are sent.
    pub after: u64,
    pub logs: bool,
}

/// Why a request gets no stream.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("no such job")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::Store(_) => "unavailable",
        }
    }
}

pub async fn handle(deps: Arc<Deps>, req: LambdaFunctionUrlRequest, deadline: std::time::SystemTime) -> StreamResponse<Body> {
    let until = Instant::now() + deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default().saturating_sub(DEADLINE_MARGIN);
    if req.raw_path.as_deref() == Some(owner::PATH) {
        return match open_owner(&deps, &req) {
            Ok(follow) => {
                tracing::info!(owner = %follow.owner, resumed = follow.from.is_some(), logs = follow.logs, "streaming the owner's jobs");
                let (tx, rx) = mpsc::channel(BUFFER);
                tokio::spawn(async move {
                    let owner = follow.owner.clone();
                    if let Err(e) = owner::stream_owner(deps.jobs.as_ref(), follow, &deps.config, until, &tx).await {
                        tracing::warn!(%owner, error = %e, "stream ended early; the client resumes from its last id");
                    }
                });
                response(StatusCode::OK, "text/event-stream", receiver_body(rx))
            }
            Err(refusal) => refused(&refusal),
        };
    }
    match open(&deps, &req).await {
        Ok((job_id, follow)) => {
            tracing::info!(job_id = %job_id, after = follow.after, logs = follow.logs, "streaming");
            let (tx, rx) = mpsc::channel(BUFFER);
            tokio::spawn(async move {
                if let Err(e) = stream_events(deps.jobs.as_ref(), &job_id, follow, &deps.config, until, &tx).await {
                    tracing::warn!(job_id = %job_id, error = %e, "stream ended early; the client resumes from its last id");
                }
            });
            response(StatusCode::OK, "text/event-stream", receiver_body(rx))
        }
        Err(refusal) => refused(&refusal),
    }
}

/// A refusal as a problem document.
fn refused(refusal: &Refusal) -> StreamResponse<Body> {
    if refusal.status().is_server_error() {
        tracing::error!(error = %refusal, "stream refused");
    }
    let problem = serde_json::json!({
        "type": "about:blank", "title": refusal.to_string(), "status": refusal.status().as_u16(), "code": refusal.code(),
    });
    let body: Body = Box::pin(futures::stream::once(async move { Ok(Bytes::from(problem.to_string())) }));
    let mut resp = response(refusal.status(), "application/problem+json", body);
    if matches!(refusal, Refusal::Unauthorized(_)) {
        resp.metadata_prelude.headers.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

fn response(status: StatusCode, content_type: &'static str, stream: Body) -> StreamResponse<Body> {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    StreamResponse { metadata_prelude: MetadataPrelude { status_code: status, headers, cookies: Vec::new() }, stream }
}

fn receiver_body(rx: mpsc::Receiver<Bytes>) -> Body {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (Ok(chunk), rx)) }))
}

/// The caller, from the bearer token (or `?access_token=`), of a GET.
fn caller(deps: &Deps, req: &LambdaFunctionUrlRequest) -> Result<String, Refusal> {
    let query = |name: &str| req.query_string_parameters.get(name).map(String::as_str);
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let authorization = header("authorization").map(str::to_owned).or_else(|| query("access_token").map(|t| format!("Bearer {t}")));
    let owner = deps.config.token_key.verify_header(authorization.as_deref(), Utc::now())?.sub;
    if req.request_context.http.method.as_deref().is_some_and(|m| m != "GET") {
        return Err(Refusal::BadRequest("streams are read with GET".into()));
    }
    Ok(owner)
}

/// Checks the caller of `GET /v1/stream` and where its stream resumes.
pub fn open_owner(deps: &Deps, req: &LambdaFunctionUrlRequest) -> Result<owner::OwnerFollow, Refusal> {
    let owner = caller(deps, req)?;
    let from = match req.headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(id) => {
            Some(owner::Position::decode(id).ok_or_else(|| Refusal::BadRequest("Last-Event-ID is not a position of this stream".into()))?)
        }
        None => None,
    };
    let logs = matches!(req.query_string_parameters.get("logs").map(String::as_str), Some("true" | "1"));
    Ok(owner::OwnerFollow { owner, from, logs, opened: Utc::now() })
}

/// Checks the caller and finds the job to stream and where to start.
pub async fn open(deps: &Deps, req: &LambdaFunctionUrlRequest) -> Result<(JobId, Follow), Refusal> {
    let query = |name: &str| req.query_string_parameters.get(name).map(String::as_str);
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let owner = caller(deps, req)?;
    let target = target(req.raw_path.as_deref().unwrap_or_default()).ok_or(Refusal::NotFound)?;
    let (Target::Job(id) | Target::Run(id)) = &target;
    let job = match deps.jobs.get(id).await? {
        Some(job) if job.owner == owner && !job.is_expired(Utc::now()) => job,
        _ => return Err(Refusal::NotFound),
    };
    if matches!(target, Target::Run(_)) && job.workflow.is_none() {
        return Err(Refusal::NotFound);
    }
    let number =
        |text: &str, what: &str| text.trim().parse::<u64>().map_err(|_| Refusal::BadRequest(format!("{what} must be a sequence number")));
    let after = match (header("last-event-id"), query("after")) {
        // A reconnecting EventSource sends the last id it saw; it wins over the URL it reconnects to.
        (Some(id), _) => number(id, "Last-Event-ID")?,
        (None, Some(after)) => number(after, "after")?,
        (None, None) => 0,
    };
    let logs = matches!(query("logs"), Some("true" | "1"));
    Ok((job.id, Follow { after, logs }))
}

/// One event as an SSE frame.
pub fn frame(event: &JobEventEnvelope) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_else(|e| unreachable!("envelope serialisation: {e}"));
    let seq = event.seq.unwrap_or_default();
    Bytes::from(format!("id: {seq}\nevent: {}\ndata: {data}\n\n", event.body.event_type()))
}

/// Sends the job's events after `follow.after` to `out` until its terminal
/// event, `until`, or the client going away; heartbeats while it is quiet.
pub async fn stream_events(
    jobs: &dyn JobStore,
    job_id: &JobId,
    follow: Follow,
    config: &Config,
    until: Instant,
    out: &mpsc::Sender<Bytes>,
) -> Result<(), StoreError> {
    let send = |chunk: Bytes| async move { out.send(chunk).await.is_ok() };
    if !send(Bytes::from(format!("retry: {RETRY_MS}\n\n"))).await {
        return Ok(());
    }
    let mut after = follow.after;
    let mut last_sent = Instant::now();
    let mut first_read = true;
    loop {
        let events = jobs.events(job_id, after, PAGE).await?;
        for event in &events {
            after = event.seq.unwrap_or(after);
            if matches!(event.body, JobEvent::Logged { .. }) && !follow.logs {
                continue;
            }
            if !send(frame(event)).await {
                return Ok(());
            }
            last_sent = Instant::now();
            if event.body.is_terminal() {
                return Ok(());
            }
        }
        if events.len() == PAGE as usize {
            continue;
        }
        if std::mem::take(&mut first_read) && events.is_empty() && after > 0 {
            // Nothing after `after`: a client resuming past the end of a finished job is done.
            if let Some(job) = jobs.get(job_id).await?
                && job.status.is_terminal()
                && after >= job.seq
            {
                return Ok(());
            }
        }
        if !until_next_poll(out, config.poll, config.heartbeat, until, &mut last_sent).await {
            return Ok(());
        }
    }
}

/// The wait between two polls of a stream: `false` when the stream should
/// end instead (its deadline is nearer than `poll`, or the client went
/// away); a heartbeat comment once it has been quiet for `heartbeat`.
pub(crate) async fn until_next_poll(
    out: &mpsc::Sender<Bytes>,
    poll: Duration,
    heartbeat: Duration,
    until: Instant,
    last_sent: &mut Instant,
) -> bool {
    let now = Instant::now();
    if now + poll >= until {
        return false;
    }
    if now.duration_since(*last_sent) >= heartbeat {
        if out.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
            return false;
        }
        *last_sent = now;
    }
    tokio::select! {
        () = tokio::time::sleep(poll) => true,
        () = out.closed() => false,
    }
}

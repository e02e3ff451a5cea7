//! The Lambda side of the local cloud: each function instance is its real
//! binary, run as a process against a Lambda Runtime API that `prism` serves
//! (`GET …/invocation/next`, `POST …/{id}/response`, `POST …/{id}/error`,
//! `POST …/init/error`). Like Lambda, an instance handles one invocation at a
//! time; one that overruns its timeout or its memory (`MemorySize`, counting
//! the processes it starts) is killed, and one that exits is started again
//! (with backoff if it keeps dying at start-up). Each invocation ends with a
//! `REPORT` log line, as on Lambda: duration and the most memory used.
//!
//! Stopping is Lambda's shutdown phase: an instance finishes the invocation
//! it is running (or is killed at its deadline), takes no more, and then, if
//! its runtime registered an extension (`POST /2020-01-01/extension/register`,
//! as `lambda_runtime`'s graceful shutdown does), gets `SIGTERM` and
//! [`SHUTDOWN_LIMIT`] to exit before `SIGKILL`. Invocations still queued are
//! answered [`InvokeError::ShuttingDown`], so their callers can give their
//! work back (an event source releases its messages).
//!
//! A function may answer in Lambda's streaming response mode
//! (`Lambda-Runtime-Function-Response-Mode: streaming`, a chunked body): the
//! chunks reach the caller as they come ([`FunctionHandle::invoke_streaming`]),
//! and the instance stays busy until the body ends, as on Lambda.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::logs::LogSink;
use crate::process::{spawn_owned, tree_memory_bytes};
use crate::provision::FunctionSpec;

/// A buffered response's limit (Lambda's synchronous payload limit is 6 MB;
/// this only keeps a broken function from filling memory).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Why an invocation produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    #[error("function error {error_type}: {message}")]
    Function { error_type: String, message: String },
    #[error("the runtime exited before answering")]
    Crashed,
    #[error("task timed out after {0:?}")]
    Timeout(Duration),
    /// Lambda's `Runtime.OutOfMemory`.
    #[error("the runtime used {used_mb} MB, over its {limit_mb} MB")]
    OutOfMemory { limit_mb: u64, used_mb: u64 },
    /// The function is stopping and took no more work: nothing of the
    /// invocation ran, so the caller may hand it to the next start.
    #[error("the local cloud is shutting down")]
    ShuttingDown,
    /// Lambda's `RequestEntityTooLargeException`: the event is over the synchronous limit.
    #[error("the request payload of {size} bytes is over Lambda's {MAX_SYNC_PAYLOAD}")]
    RequestTooLarge { size: usize },
    /// Lambda's `Function.ResponseSizeTooLarge`.
    #[error("the response payload of {size} bytes is over Lambda's {MAX_SYNC_PAYLOAD}")]
    ResponseTooLarge { size: usize },
    /// Lambda's `TooManyRequestsException`: every instance the function's
    /// concurrency allows is busy, and a synchronous caller is not queued.
    #[error("throttled: all {limit} instances are busy")]
    Throttled { limit: usize },
}

/// Lambda's limit on a synchronous invocation's request and (buffered)
/// response payloads: 6 MB. The gateways and event sources invoke
/// synchronously, so it holds for all of them, as on AWS.
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;

/// A function's answer.
#[derive(Debug)]
pub enum Answer {
    Buffered(Bytes),
    /// A streaming response's body as it arrives (for a function URL, the
    /// metadata prelude first); it ends when the function's body ends.
    Streamed(mpsc::Receiver<Bytes>),
}

type Reply = oneshot::Sender<Result<Answer, InvokeError>>;

struct Invocation {
    request_id: String,
    payload: Bytes,
    reply: Reply,
    busy: Busy,
}

/// One invocation counted against the function's concurrency from when it
/// is sent until its instance is done with it (a streamed answer to its
/// end), or it is dropped unanswered.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Invokes one function; cheap to clone.
#[derive(Clone)]
pub struct FunctionHandle {
    pub name: String,
    tx: mpsc::UnboundedSender<Invocation>,
    /// Invocations sent and not yet done, queued or running.
    busy: Arc<AtomicUsize>,
    /// The function's concurrency: its instances.
    limit: usize,
    shutdown: CancellationToken,
    instances: Arc<[Arc<Instance>]>,
}

impl std::fmt::Debug for FunctionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionHandle").field("name", &self.name).finish()
    }
}

impl FunctionHandle {
    /// Queues an invocation for the next free instance and waits for its
    /// whole answer (a streamed one is read to its end).
    pub async fn invoke(&self, payload: Bytes) -> Result<Bytes, InvokeError> {
        Self::whole(self.invoke_streaming(payload).await?).await
    }

    /// Queues an invocation and waits for the start of its answer: all of a
    /// buffered one, the first chunks of a streamed one. Event sources and
    /// schedules invoke so: past the function's concurrency they wait, as
    /// Lambda's pollers slow down when throttled.
    pub async fn invoke_streaming(&self, payload: Bytes) -> Result<Answer, InvokeError> {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.send(payload, Busy(self.busy.clone())).await
    }

    /// [`Self::invoke`] as a gateway invokes: refused with
    /// [`InvokeError::Throttled`] when every instance the function's
    /// concurrency allows is busy, as Lambda refuses a synchronous
    /// invocation past its reserved concurrency.
    pub async fn invoke_unqueued(&self, payload: Bytes) -> Result<Bytes, InvokeError> {
        Self::whole(self.invoke_streaming_unqueued(payload).await?).await
    }

    /// [`Self::invoke_streaming`], refused past the function's concurrency.
    pub async fn invoke_streaming_unqueued(&self, payload: Bytes) -> Result<Answer, InvokeError> {
        let limit = self.limit;
        self.busy
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1))
            .map_err(|_| InvokeError::Throttled { limit })?;
        self.send(payload, Busy(self.busy.clone())).await
    }

    async fn send(&self, payload: Bytes, busy: Busy) -> Result<Answer, InvokeError> {
        if self.shutdown.is_cancelled() {
            return Err(InvokeError::ShuttingDown);
        }
        if payload.len() > MAX_SYNC_PAYLOAD {
            return Err(InvokeError::RequestTooLarge { size: payload.len() });
        }
        let (reply, answer) = oneshot::channel();
        let invocation = Invocation { request_id: uuid::Uuid::new_v4().to_string(), payload, reply, busy };
        self.tx.send(invocation).map_err(|_| InvokeError::ShuttingDown)?;
        answer.await.unwrap_or(Err(InvokeError::ShuttingDown))
    }

    /// Kills every running instance's process at once, as a host failure
    /// would: a fault to inject. The supervisors start them again; the
    /// invocations they ran fail as crashed, and their event sources'
    /// messages come back after their visibility timeout. Returns how many
    /// were killed.
    pub fn kill_instances(&self) -> usize {
        let pids = self.instances.iter().filter_map(|i| rustix::process::Pid::from_raw(i32::try_from(i.pid.load(Ordering::Relaxed)).ok()?));
        pids.filter(|&pid| rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()).count()
    }

    /// An answer read to its end, within Lambda's response limit.
    async fn whole(answer: Answer) -> Result<Bytes, InvokeError> {
        match answer {
            Answer::Buffered(body) if body.len() > MAX_SYNC_PAYLOAD => Err(InvokeError::ResponseTooLarge { size: body.len() }),
            Answer::Buffered(body) => Ok(body),
            Answer::Streamed(mut chunks) => {
                let mut body = Vec::new();
                while let Some(chunk) = chunks.recv().await {
                    body.extend_from_slice(&chunk);
                }
                Ok(Bytes::from(body))
            }
        }
    }
}

struct InFlight {
    request_id: String,
    started: Instant,
    deadline: Instant,
    /// Taken when a streamed answer starts; the invocation stays in flight
    /// until its body ends.
    reply: Option<Reply>,
    /// Counted against the function's concurrency until this is dropped.
    _busy: Busy,
}

impl InFlight {
    fn answer(&mut self, answer: Result<Answer, InvokeError>) {
        if let Some(reply) = self.reply.take() {
            // The caller may have given up (a client that went away): nothing to tell.
            let _ = reply.send(answer);
        }
    }
}

/// What an instance's Runtime API serves.
struct Instance {
    spec: FunctionSpec,
    arn: String,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>>,
    in_flight: Mutex<Option<InFlight>>,
    /// The instance's process, 0 between processes.
    pid: AtomicU32,
    /// The most memory the watchdog has seen the instance hold during the
    /// current invocation, in bytes.
    peak_memory: AtomicU64,
    logs: LogSink,
    label: String,
    /// Whether the current process has asked for work: one that exits before
    /// it does failed its init, and fails the invocation waiting for it.
    ready: std::sync::atomic::AtomicBool,
    /// What the current process reported through `/init/error`.
    init_failure: Mutex<Option<(String, String)>>,
    /// When the current process was started.
    spawned: Mutex<Option<Instant>>,
    /// The current process's init (start to its first `next`), until the
    /// `REPORT` of its first invocation carries it, as on Lambda.
    init_unreported: Mutex<Option<Duration>>,
    /// Whether the current process registered an extension: only then does
    /// Lambda send `SIGTERM` before it stops the process.
    extension: std::sync::atomic::AtomicBool,
    /// Cancelled when the current process is gone: a `next` it left waiting
    /// must let go of the queue, or it would take the next invocation for a
    /// process that can never answer it.
    process: Mutex<CancellationToken>,
    shutdown: CancellationToken,
}

impl Instance {
    /// An instance with no process yet.
    fn new(
        spec: FunctionSpec,
        arn: String,
        queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>>,
        logs: LogSink,
        label: String,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            spec,
            arn,
            queue,
            in_flight: Mutex::new(None),
            pid: AtomicU32::new(0),
            peak_memory: AtomicU64::new(0),
            logs,
            label,
            ready: std::sync::atomic::AtomicBool::new(false),
            init_failure: Mutex::new(None),
            spawned: Mutex::new(None),
            init_unreported: Mutex::new(None),
            extension: std::sync::atomic::AtomicBool::new(false),
            process: Mutex::new(CancellationToken::new()),
            shutdown,
        }
    }

    fn take_in_flight(&self, request_id: Option<&str>) -> Option<InFlight> {
        let mut slot = lock(&self.in_flight);
        match (slot.as_ref(), request_id) {
            (Some(f), Some(id)) if f.request_id != id => None,
            (Some(_), _) => slot.take(),
            (None, _) => None,
        }
    }

    /// Ends the invocation in flight, if any, with `error` and its `REPORT`
    /// line: its process died or was stopped.
    fn fail_in_flight(&self, error: InvokeError) {
        if let Some(mut f) = self.take_in_flight(None) {
            self.report(&f);
            f.answer(Err(error));
        }
    }

    /// The caller of the invocation `request_id`, leaving it in flight.
    fn take_reply(&self, request_id: &str) -> Option<Reply> {
        let mut slot = lock(&self.in_flight);
        slot.as_mut().filter(|f| f.request_id == request_id).and_then(|f| f.reply.take())
    }

    /// The invocation's end, as Lambda logs it.
    fn report(&self, flight: &InFlight) {
        let pid = self.pid.load(Ordering::Relaxed);
        let now = (pid != 0).then(|| tree_memory_bytes(pid)).flatten().unwrap_or(0);
        let used_mb = self.peak_memory.load(Ordering::Relaxed).max(now) / (1024 * 1024);
        let duration_ms = flight.started.elapsed().as_secs_f64() * 1e3;
        let mut line = format!(
            "REPORT RequestId: {}\tDuration: {duration_ms:.2} ms\tMemory Size: {} MB\tMax Memory Used: {used_mb} MB",
            flight.request_id, self.spec.memory_mb
        );
        if let Some(init) = lock(&self.init_unreported).take() {
            line.push_str(&format!("\tInit Duration: {:.2} ms", init.as_secs_f64() * 1e3));
        }
        self.logs.line(&self.spec.binary, &self.label, &line);
    }

    /// Whether the current process is in its init (has not asked for work
    /// yet) or running an invocation: the times Lambda lets it run.
    fn initialising_or_invoked(&self) -> bool {
        !self.ready.load(Ordering::Relaxed) || lock(&self.in_flight).is_some()
    }

    fn overran(&self) -> bool {
        let slot = lock(&self.in_flight);
        slot.as_ref().is_some_and(|f| Instant::now() > f.deadline)
    }

    /// One look by the watchdog: why the instance (process `pid`) must be
    /// stopped now, if it must.
    fn stop_due(&self, pid: Option<u32>) -> Option<Stop> {
        if self.overran() {
            return Some(Stop::Overran);
        }
        // Lambda freezes a sandbox between invocations, so only its init and
        // its invocations can take memory. Sampling the idle instances too
        // (most of them, most of the time) made these /proc walks nearly half
        // of the local cloud's own CPU under load. Growth between invocations
        // still shows: in the root's high-water mark at the next sample.
        if !self.initialising_or_invoked() {
            return None;
        }
        let used = pid.and_then(tree_memory_bytes)?;
        self.peak_memory.fetch_max(used, Ordering::Relaxed);
        (used > self.spec.memory_mb * 1024 * 1024).then_some(Stop::OutOfMemory { used_mb: used / (1024 * 1024) })
    }
}

/// Everything instances of every function share.
#[derive(Debug, Clone)]
pub struct RuntimeEnv {
    pub bin_dir: PathBuf,
    /// Variables every function gets (AWS endpoints, region, credentials), before its own.
    pub base_env: Vec<(String, String)>,
    /// Variables that win over the template's (local log format).
    pub overrides: Vec<(String, String)>,
    pub account_id: String,
    pub region: String,
    pub logs: LogSink,
    /// Cancelled to stop: instances finish what they run, then stop.
    pub shutdown: CancellationToken,
    /// Every instance's supervisor: waiting on it (closed) waits until every
    /// process has stopped.
    pub tasks: tokio_util::task::TaskTracker,
    /// CPU shares by memory size, when asked for (see [`crate::cpu`]).
    pub cpu: Option<Arc<crate::cpu::CpuGroups>>,
}

/// Starts `spec.concurrency` instances of a function.
pub async fn start_function(spec: FunctionSpec, env: &RuntimeEnv) -> anyhow::Result<FunctionHandle> {
    let binary = env.bin_dir.join(&spec.binary);
    anyhow::ensure!(binary.is_file(), "no binary for {} at {} (build the workspace first)", spec.name, binary.display());
    let (tx, rx) = mpsc::unbounded_channel();
    let queue = Arc::new(tokio::sync::Mutex::new(rx));
    let arn = format!("arn:aws:lambda:{}:{}:function:{}", env.region, env.account_id, spec.name);
    let mut instances = Vec::with_capacity(spec.concurrency);
    for index in 0..spec.concurrency {
        let label = if spec.concurrency > 1 { format!("{}#{index}", spec.binary) } else { spec.binary.clone() };
        let instance = Arc::new(Instance::new(spec.clone(), arn.clone(), queue.clone(), env.logs.clone(), label, env.shutdown.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = runtime_api(instance.clone());
        // The API outlives the shutdown signal: a stopping instance still
        // answers its last invocation through it. It ends with the supervisor.
        let stopped = CancellationToken::new();
        let served = stopped.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { served.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "runtime API server failed");
            }
        });
        instances.push(instance.clone());
        let supervisor = supervise(instance, index, addr.to_string(), binary.clone(), env.clone());
        env.tasks.spawn(async move {
            supervisor.await;
            stopped.cancel();
        });
    }
    Ok(FunctionHandle {
        name: spec.name,
        tx,
        busy: Arc::new(AtomicUsize::new(0)),
        limit: spec.concurrency,
        shutdown: env.shutdown.clone(),
        instances: instances.into(),
    })
}

fn runtime_api(instance: Arc<Instance>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(invocation_response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(invocation_error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .route(EXTENSION_REGISTER, post(register_extension))
        .route("/2020-01-01/extension/event/next", get(next_extension_event))
        .with_state(instance)
}

const EXTENSION_REGISTER: &str = "/2020-01-01/extension/register";

/// The Extensions API's registration: noted, so the instance gets `SIGTERM`
/// when it is stopped. The events asked for are kept in the identifier.
async fn register_extension(State(instance): State<Arc<Instance>>, headers: HeaderMap, body: Bytes) -> Response {
    instance.extension.store(true, Ordering::Relaxed);
    extension_registered(&instance.spec.name, &headers, &body)
}

fn extension_registered(function: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let name = headers.get("lambda-extension-name").and_then(|v| v.to_str().ok()).unwrap_or("extension");
    let events: Vec<String> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::from_value(v["events"].clone()).ok())
        .unwrap_or_default();
    // `SHUTDOWN` in the identifier: `event/next` tells such an extension of the shutdown.
    let shutdown = if events.iter().any(|e| e == "SHUTDOWN") { "shutdown" } else { "none" };
    let id = format!("{name}.{shutdown}.{}", uuid::Uuid::new_v4().simple());
    let body = serde_json::json!({ "functionName": function, "functionVersion": "$LATEST", "handler": "bootstrap" });
    let mut response = axum::Json(body).into_response();
    if let Ok(id) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("lambda-extension-identifier", id);
    }
    response
}

/// An extension's wait for its next event. `INVOKE` events are not sent (no
/// extension of Prism's asks for them); one that asked for `SHUTDOWN` gets it
/// when the instance stops, and one that asked for nothing waits for ever,
/// as on Lambda.
async fn next_extension_event(State(instance): State<Arc<Instance>>, headers: HeaderMap) -> Response {
    let wants_shutdown =
        headers.get("lambda-extension-identifier").and_then(|v| v.to_str().ok()).is_some_and(|id| id.contains(".shutdown."));
    instance.shutdown.cancelled().await;
    if !wants_shutdown {
        return std::future::pending().await;
    }
    let deadline_ms = SystemTime::now()
        .checked_add(SHUTDOWN_LIMIT)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis())
        .unwrap_or_default();
    axum::Json(serde_json::json!({ "eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": deadline_ms })).into_response()
}

/// How long a stopping instance whose runtime registered an (internal)
/// extension has after `SIGTERM`, as on Lambda.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_millis(500);

/// The longest a stop waits for an instance's running invocation; one that
/// would take longer is killed (its work returns to its source, as after a crash).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(25);

async fn next_invocation(State(instance): State<Arc<Instance>>) -> Response {
    instance.ready.store(true, Ordering::Relaxed);
    // Set at each start and taken here: only a process's first `next` ends its init.
    if let Some(spawned) = lock(&instance.spawned).take() {
        *lock(&instance.init_unreported) = Some(spawned.elapsed());
    }
    // The process this request came from: once it is gone, the request's
    // waiting ends (nobody reads the answer).
    let process = lock(&instance.process).clone();
    let invocation = {
        let mut queue = tokio::select! {
            queue = instance.queue.lock() => queue,
            () = process.cancelled() => return StatusCode::GONE.into_response(),
        };
        tokio::select! {
            biased;
            () = process.cancelled() => return StatusCode::GONE.into_response(),
            () = instance.shutdown.cancelled() => {
                // A stopping instance takes no more work: what is queued is
                // given back, and the runtime waits here until it is stopped.
                while let Ok(queued) = queue.try_recv() {
                    let _ = queued.reply.send(Err(InvokeError::ShuttingDown));
                }
                drop(queue);
                return std::future::pending().await;
            }
            invocation = queue.recv() => invocation,
        }
    };
    let Some(invocation) = invocation else {
        return StatusCode::GONE.into_response();
    };
    let deadline_ms = SystemTime::now()
        .checked_add(instance.spec.timeout)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", invocation.request_id.clone());
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", instance.arn.clone());
    set("lambda-runtime-trace-id", format!("Root=1-{}", uuid::Uuid::new_v4().simple()));
    set("content-type", "application/json".into());
    instance.peak_memory.store(0, Ordering::Relaxed);
    let started = Instant::now();
    *lock(&instance.in_flight) = Some(InFlight {
        request_id: invocation.request_id,
        started,
        deadline: started + instance.spec.timeout,
        reply: Some(invocation.reply),
        _busy: invocation.busy,
    });
    (StatusCode::OK, headers, invocation.payload).into_response()
}

/// How many chunks of a streamed answer wait for a slow reader before the
/// function's writes wait too.
const STREAM_BUFFER: usize = 16;

async fn invocation_response(
    State(instance): State<Arc<Instance>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> StatusCode {
    let streaming = headers.get("lambda-runtime-function-response-mode").is_some_and(|m| m == "streaming");
    if streaming {
        let Some(reply) = instance.take_reply(&id) else { return StatusCode::BAD_REQUEST };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let _ = reply.send(Ok(Answer::Streamed(rx)));
        let mut frames = body.into_data_stream();
        while let Some(chunk) = frames.next().await {
            // A reader that went away ends the response: the function's next
            // write fails and it stops, as when a client leaves a function URL.
            let Ok(chunk) = chunk else { break };
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
        if let Some(f) = instance.take_in_flight(Some(&id)) {
            instance.report(&f);
        }
        return StatusCode::ACCEPTED;
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_RESPONSE_BYTES).await else { return StatusCode::PAYLOAD_TOO_LARGE };
    match instance.take_in_flight(Some(&id)) {
        Some(mut f) => {
            instance.report(&f);
            f.answer(Ok(Answer::Buffered(body)));
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn invocation_error(State(instance): State<Arc<Instance>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |k: &str| error.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    match instance.take_in_flight(Some(&id)) {
        Some(mut f) => {
            instance.report(&f);
            f.answer(Err(InvokeError::Function { error_type: field("errorType"), message: field("errorMessage") }));
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn init_error(State(instance): State<Arc<Instance>>, body: Bytes) -> StatusCode {
    tracing::error!(function = %instance.spec.name, error = %String::from_utf8_lossy(&body), "function failed to initialise");
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |k: &str| error.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    *lock(&instance.init_failure) = Some((field("errorType"), field("errorMessage")));
    StatusCode::ACCEPTED
}

/// An instance whose process ended before asking for work failed its init:
/// as on Lambda, the invocation waiting for it fails (with the error the
/// runtime reported, or `Runtime.ExitError`) instead of waiting for a
/// process that may never start.
fn fail_waiting_invocation(instance: &Instance, exit: &str) {
    let reported = lock(&instance.init_failure).take();
    // Another instance waiting in `next` holds the queue and will take the invocation itself.
    let Ok(mut queue) = instance.queue.try_lock() else { return };
    let Ok(invocation) = queue.try_recv() else { return };
    let error = match reported {
        Some((error_type, message)) if !error_type.is_empty() => InvokeError::Function { error_type, message },
        _ => InvokeError::Function { error_type: "Runtime.ExitError".into(), message: format!("Runtime exited with error: {exit}") },
    };
    instance.logs.line(
        &instance.spec.binary,
        &instance.label,
        &format!("[prism] init failed; invocation {} fails: {error}", invocation.request_id),
    );
    let _ = invocation.reply.send(Err(error));
}

/// An instance's process as Lambda starts it: the function's environment
/// over the cloud's, and the runtime's own variables.
fn instance_command(
    binary: &std::path::Path,
    spec: &FunctionSpec,
    env: &RuntimeEnv,
    runtime_api: &str,
    index: usize,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.base_env.iter().map(|(k, v)| (k, v)))
        .envs(spec.environment.iter().map(|(k, v)| (k, v)))
        .envs(env.overrides.iter().map(|(k, v)| (k, v)))
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", spec.memory_mb.to_string())
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", spec.name))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("local/{index}"))
        .env("_HANDLER", "bootstrap");
    cmd
}

/// One fresh process's start, from [`cold_start`].
#[derive(Debug, Clone, Copy)]
pub struct ColdStart {
    /// From its start to its first `GET …/invocation/next`: Lambda's `Init Duration`.
    pub ready: Duration,
    /// From its start to its extension's registration, if it registered one:
    /// where in the init the runtime's own set-up began.
    pub extension_registered: Option<Duration>,
}

/// How long one fresh process of `binary`, started as an instance of `spec`
/// would be, takes to ask for work: its cold start. The process is killed
/// then, having done no work. Logs go to `env.logs`.
pub async fn cold_start(binary: &std::path::Path, spec: &FunctionSpec, env: &RuntimeEnv) -> anyhow::Result<ColdStart> {
    let (ready_tx, ready_rx) = oneshot::channel::<Instant>();
    let ready_tx = Arc::new(Mutex::new(Some(ready_tx)));
    let registered_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let registration = Arc::clone(&registered_at);
    let function = spec.name.clone();
    let app = Router::new()
        .route(
            "/2018-06-01/runtime/invocation/next",
            get(move || {
                if let Some(tx) = lock(&ready_tx).take() {
                    let _ = tx.send(Instant::now());
                }
                // Never answered: the process is killed while it waits.
                std::future::pending::<StatusCode>()
            }),
        )
        // Registering an extension is part of a runtime's init, and timed with it.
        .route(
            EXTENSION_REGISTER,
            post(move |headers: HeaderMap, body: Bytes| {
                let function = function.clone();
                lock(&registration).get_or_insert_with(Instant::now);
                async move { extension_registered(&function, &headers, &body) }
            }),
        )
        .route("/2020-01-01/extension/event/next", get(std::future::pending::<StatusCode>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut cmd = instance_command(binary, spec, env, &addr, 0);
    let started = Instant::now();
    let mut child = spawn_owned(&mut cmd)?;
    limit_cpu(env, spec, child.id());
    let label = format!("{}#cold-start", spec.binary);
    forward(child.stdout.take(), &env.logs, &spec.binary, &label);
    forward(child.stderr.take(), &env.logs, &spec.binary, &label);
    let outcome = tokio::select! {
        ready = ready_rx => ready
            .map(|at| ColdStart { ready: at - started, extension_registered: lock(&registered_at).map(|r| r - started) })
            .map_err(|_| anyhow::anyhow!("the runtime API stopped")),
        status = child.wait() => Err(anyhow::anyhow!("{} exited before asking for work ({})", spec.binary, status.map_or_else(|e| e.to_string(), |s| s.to_string()))),
        () = tokio::time::sleep(COLD_START_LIMIT) => Err(anyhow::anyhow!("{} did not ask for work within {COLD_START_LIMIT:?}", spec.binary)),
    };
    let _ = child.kill().await;
    server.abort();
    outcome
}

/// Moves a new instance's process into its function's CPU share (its first
/// instructions run before it is moved: a few hundred microseconds, not
/// worth a `pre_exec` hook).
fn limit_cpu(env: &RuntimeEnv, spec: &FunctionSpec, pid: Option<u32>) {
    let (Some(groups), Some(pid)) = (&env.cpu, pid) else { return };
    if let Err(e) = groups.limit(&spec.name, spec.memory_mb, pid) {
        tracing::warn!(function = %spec.name, error = %e, "could not limit the instance's CPU; it runs unlimited");
    }
}

/// Lambda's init phase limit.
const COLD_START_LIMIT: Duration = Duration::from_secs(10);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs one instance's process for as long as the cloud runs.
async fn supervise(instance: Arc<Instance>, index: usize, runtime_api: String, binary: PathBuf, env: RuntimeEnv) {
    let (spec, label) = (&instance.spec, &instance.label);
    let mut quick_failures = 0u32;
    loop {
        let mut cmd = instance_command(&binary, spec, &env, &runtime_api, index);
        let started = Instant::now();
        *lock(&instance.spawned) = Some(started);
        let process = CancellationToken::new();
        *lock(&instance.process) = process.clone();
        // However the process ends (or this supervisor), what it left waiting ends with it.
        let gone = process.drop_guard();
        let mut child = match spawn_owned(&mut cmd) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(function = %spec.name, error = %e, "cannot start function");
                return;
            }
        };
        let output =
            [forward(child.stdout.take(), &env.logs, &spec.binary, label), forward(child.stderr.take(), &env.logs, &spec.binary, label)];
        let pid = child.id();
        limit_cpu(&env, spec, pid);
        instance.pid.store(pid.unwrap_or(0), Ordering::Relaxed);
        instance.ready.store(false, Ordering::Relaxed);
        instance.extension.store(false, Ordering::Relaxed);
        let (error, note) = tokio::select! {
            status = child.wait() => {
                let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                if !instance.ready.load(Ordering::Relaxed) {
                    fail_waiting_invocation(&instance, &how);
                }
                (InvokeError::Crashed, format!("exited ({how})"))
            }
            stop = watchdog(&instance, pid) => {
                let _ = child.kill().await;
                match stop {
                    Stop::Overran => (InvokeError::Timeout(spec.timeout), "killed at its deadline".to_owned()),
                    Stop::OutOfMemory { used_mb } => {
                        let limit_mb = spec.memory_mb;
                        (InvokeError::OutOfMemory { limit_mb, used_mb }, format!("killed using {used_mb} MB of its {limit_mb} MB"))
                    }
                }
            }
            () = env.shutdown.cancelled() => {
                shut_down(&instance, &mut child, pid).await;
                // Its last words (the shutdown hook's) are in the log before the stop ends.
                for copy in output.into_iter().flatten() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), copy).await;
                }
                return;
            }
        };
        drop(gone);
        if env.shutdown.is_cancelled() {
            // Stopping: the instance went with the rest, nothing to restart.
            return;
        }
        env.logs.line(&spec.binary, label, &format!("[prism] instance {note}; restarting"));
        instance.fail_in_flight(error);
        instance.pid.store(0, Ordering::Relaxed);
        quick_failures = if started.elapsed() < Duration::from_secs(2) { quick_failures + 1 } else { 0 };
        let delay = crate::backoff::before_retry(quick_failures + 1, Duration::from_millis(100), Duration::from_millis(12_800));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = env.shutdown.cancelled() => return,
        }
    }
}

/// Lambda's shutdown phase for one instance: the invocation it is running
/// ends as it would have (answered, or killed at its deadline; at most
/// [`DRAIN_LIMIT`] is waited for), then a runtime with an extension gets
/// `SIGTERM` and [`SHUTDOWN_LIMIT`] to exit, and whatever is left is killed.
async fn shut_down(instance: &Instance, child: &mut tokio::process::Child, pid: Option<u32>) {
    let (spec, label) = (&instance.spec, &instance.label);
    let drain_ends = Instant::now() + DRAIN_LIMIT;
    while lock(&instance.in_flight).is_some() {
        let overran = instance.overran();
        if overran || Instant::now() > drain_ends {
            let _ = child.kill().await;
            instance.fail_in_flight(if overran { InvokeError::Timeout(spec.timeout) } else { InvokeError::ShuttingDown });
            instance.logs.line(&spec.binary, label, "[prism] instance killed while stopping: its invocation ran on");
            return;
        }
        tokio::select! {
            status = child.wait() => {
                instance.fail_in_flight(InvokeError::Crashed);
                let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                instance.logs.line(&spec.binary, label, &format!("[prism] instance exited ({how}) while stopping"));
                return;
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let terminated = match (instance.extension.load(Ordering::Relaxed), pid.and_then(|p| i32::try_from(p).ok())) {
        (true, Some(pid)) => {
            rustix::process::Pid::from_raw(pid).is_some_and(|pid| rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok())
        }
        _ => false,
    };
    if terminated {
        if let Ok(status) = tokio::time::timeout(SHUTDOWN_LIMIT, child.wait()).await {
            let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            instance.logs.line(&spec.binary, label, &format!("[prism] instance stopped after SIGTERM ({how})"));
            return;
        }
        instance.logs.line(&spec.binary, label, &format!("[prism] instance still running {SHUTDOWN_LIMIT:?} after SIGTERM; killed"));
    }
    let _ = child.kill().await;
}

/// Why the watchdog stopped an instance.
enum Stop {
    Overran,
    OutOfMemory { used_mb: u64 },
}

/// Resolves when the instance's current invocation passes its deadline, or
/// the instance (with what it started) holds more than its memory size
/// during its init or an invocation.
async fn watchdog(instance: &Instance, pid: Option<u32>) -> Stop {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(stop) = instance.stop_due(pid) {
            return stop;
        }
    }
}

/// Copies a process's output into its function's log, line by line, until
/// the process closes it.
fn forward<R: AsyncRead + Unpin + Send + 'static>(
    stream: Option<R>,
    logs: &LogSink,
    function: &str,
    label: &str,
) -> Option<tokio::task::JoinHandle<()>> {
    let stream = stream?;
    let (logs, function, label) = (logs.clone(), function.to_owned(), label.to_owned());
    Some(tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            logs.line(&function, &label, &line);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance_of_one_megabyte(logs: &std::path::Path) -> Instance {
        let spec = FunctionSpec {
            logical_id: "Tiny".into(),
            name: "tiny".into(),
            binary: "tiny".into(),
            environment: Vec::new(),
            timeout: Duration::from_secs(3600),
            memory_mb: 1,
            concurrency: 1,
            sqs_sources: Vec::new(),
            stream_sources: Vec::new(),
            schedules: Vec::new(),
            url: None,
            policy: crate::iam::Policy::default(),
        };
        let (_, queue) = mpsc::unbounded_channel();
        let logs = LogSink::new(logs, false).expect("log sink");
        Instance::new(spec, "arn".into(), Arc::new(tokio::sync::Mutex::new(queue)), logs, "tiny".into(), CancellationToken::new())
    }

    /// The watched process is this test's own: far over the instance's
    /// 1 MB whenever it is read.
    #[test]
    fn an_idle_instance_is_not_sampled_and_one_invoked_is_stopped_at_its_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let instance = instance_of_one_megabyte(dir.path());
        let pid = Some(std::process::id());

        // Its init: read, and over the limit.
        assert!(matches!(instance.stop_due(pid), Some(Stop::OutOfMemory { used_mb }) if used_mb >= 1));
        instance.peak_memory.store(0, Ordering::Relaxed);

        // Asked for work, nothing in flight: frozen, as Lambda leaves it.
        instance.ready.store(true, Ordering::Relaxed);
        assert!(instance.stop_due(pid).is_none(), "the watchdog stopped an idle instance");
        assert_eq!(instance.peak_memory.load(Ordering::Relaxed), 0, "an idle instance's memory was read");

        // Invoked: read again, and stopped.
        *lock(&instance.in_flight) = Some(InFlight {
            request_id: "r".into(),
            started: Instant::now(),
            deadline: Instant::now() + Duration::from_secs(3600),
            reply: None,
            _busy: Busy(Arc::new(AtomicUsize::new(1))),
        });
        assert!(matches!(instance.stop_due(pid), Some(Stop::OutOfMemory { used_mb }) if used_mb >= 1));
        assert!(instance.peak_memory.load(Ordering::Relaxed) > 1024 * 1024);
    }
}

//! Each function's own AWS endpoint: a small proxy in front of the emulators
//! (and the WebSocket gateway's `@connections` API) that reads the service
//! and operation of every signed request, counts it, can fail or delay it as
//! a fault rule says, and forwards the rest unchanged.
//!
//! Every function instance is started with `AWS_ENDPOINT_URL` (and the
//! DynamoDB and API Gateway management overrides) pointing at its function's
//! listener, so the unchanged SDK clients go through it and the proxy knows
//! who called without reading credentials. Presigned URLs a function hands
//! out point here too; the clients that use them are not the function, so
//! those requests are forwarded but not counted.
//!
//! The SDK retries throttling and 5xx answers itself (three attempts in its
//! standard mode): a rule meant to reach the function's own retry logic
//! fails three calls in a row.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::iam::{self, Account, IamMode, Policy};

/// Bodies read whole: query-protocol forms (SNS names its action in the
/// body; AWS caps those requests at 256 KB) and bodies a fault rule must look into.
const MAX_INSPECTED_BODY: usize = 16 * 1024 * 1024;
/// The secret key every function instance signs with (`AWS_SECRET_ACCESS_KEY`):
/// what presigned URLs are checked against.
pub const SECRET_ACCESS_KEY: &str = "test";

/// What a fault does to a matching call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultAction {
    /// Answer with an error as the service would: `status` (default 503) and
    /// `code` (default the service's own "unavailable" code).
    Fail {
        #[serde(default)]
        status: Option<u16>,
        #[serde(default)]
        code: Option<String>,
    },
    /// Hold the call this long, then forward it.
    Delay { ms: u64 },
    /// From the first matching call (past `after`), fail every matching
    /// call with 503 for this long: a service down for a while, as callers
    /// see an emulator restart or a regional disruption. `times` is not
    /// counted.
    Outage { ms: u64 },
    /// Kill the calling function's instances (SIGKILL) as a host failure
    /// would, mid-invocation: the call is never forwarded, the invocation
    /// fails as crashed, and its event source's messages come back after
    /// their visibility timeout.
    Crash,
}

/// A fault: which calls, which of them, and what happens to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// The function (its name or its binary, e.g. `publish`); any when absent.
    #[serde(default)]
    pub function: Option<String>,
    /// `service:Operation`, e.g. `sns:PublishBatch`, `dynamodb:PutItem`,
    /// `execute-api:PostToConnection`; `service:*` for any of a service's.
    pub operation: String,
    /// Only calls whose request body contains this text (e.g. `job.completed`).
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Only calls whose path and query contain this text (e.g. an object key).
    #[serde(default)]
    pub uri_contains: Option<String>,
    /// Matching calls let through before the fault starts.
    #[serde(default)]
    pub after: u64,
    /// Matching calls the fault applies to, from then on.
    #[serde(default = "one")]
    pub times: u64,
    pub action: FaultAction,
}

fn one() -> u64 {
    1
}

impl FaultRule {
    fn matches(&self, function: &Caller, call: &Call, body: Option<&[u8]>) -> bool {
        self.matches_call(function, call)
            && self.body_contains.as_deref().is_none_or(|needle| body.is_some_and(|b| contains(b, needle.as_bytes())))
    }

    /// Everything but the body: what can be told before reading it.
    fn matches_call(&self, function: &Caller, call: &Call) -> bool {
        let (service, operation) = self.operation.split_once(':').unwrap_or((self.operation.as_str(), "*"));
        self.function.as_deref().is_none_or(|f| f == function.name || f == function.binary)
            && service == call.service
            && (operation == "*" || operation == call.operation)
            && self.uri_contains.as_deref().is_none_or(|needle| call.uri.contains(needle))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Faults read from a file: `{"faults": [FaultRule, …], "duplicate_deliveries": false}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    #[serde(default)]
    pub faults: Vec<FaultRule>,
    /// Every SQS batch is handed to its function twice, as at-least-once
    /// delivery allows: handlers must not record or write anything twice.
    #[serde(default)]
    pub duplicate_deliveries: bool,
    /// Permissions taken from functions' policies, as if template.yaml
    /// lacked them: what a missing permission does, before deploying.
    #[serde(default)]
    pub revoke: Vec<Revocation>,
}

/// A permission taken from a function: `{"function": "api", "action": "dynamodb:PutItem"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The function's name or binary.
    pub function: String,
    /// An IAM action, `*` wildcards allowed.
    pub action: String,
}

impl FaultPlan {
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not a fault plan: {e}", path.display()))
    }
}

/// One AWS call as the proxy understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The signing name: `dynamodb`, `sqs`, `sns`, `s3`, `execute-api`, …
    pub service: String,
    pub operation: String,
    /// A presigned URL used by somebody the function gave it to.
    pub presigned: bool,
    /// Path and query, percent-decoded.
    pub uri: String,
}

/// Calls counted per function, service and operation.
pub type CallCounts = BTreeMap<(String, String, String), u64>;

/// How long calls took at their service, per service and operation: from
/// the proxy's forwarding to the answer's headers (the emulator's queue and
/// work, not the function's own). Microseconds; fixed memory however long
/// the cloud runs.
pub type CallLatencies = BTreeMap<(String, String), hdrhistogram::Histogram<u64>>;

/// The longest call a latency histogram tells apart (µs): past the SDK's own timeouts.
const LONGEST_CALL_US: u64 = 10 * 60 * 1_000_000;

/// A call a function's policy did not allow: function, action, resource.
pub type Denial = (String, String, String);

/// The proxies' shared state: counts, fault budgets, upstreams, IAM checks.
#[derive(Debug)]
pub struct Proxies {
    counts: Mutex<CallCounts>,
    latencies: Mutex<CallLatencies>,
    denials: Mutex<Vec<Denial>>,
    revoked: Vec<Revocation>,
    iam: IamMode,
    account: Account,
    /// Each rule with how many matching calls it has seen (and, for an
    /// outage, when it began).
    faults: Mutex<Vec<RuleState>>,
    upstreams: Upstreams,
    http: reqwest::Client,
    /// The functions behind the endpoints, by name: what a crash kills.
    functions: Mutex<BTreeMap<String, crate::runtime::FunctionHandle>>,
}

/// A fault rule and what it has met so far.
#[derive(Debug)]
struct RuleState {
    rule: FaultRule,
    seen: u64,
    outage_began: Option<std::time::Instant>,
}

impl RuleState {
    fn new(rule: FaultRule) -> Self {
        Self { rule, seen: 0, outage_began: None }
    }
}

/// Where calls go, by service.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub main: String,
    pub dynamodb: String,
    /// The WebSocket gateway (`http://host:port`), for `execute-api`.
    pub connections: Option<String>,
    /// Lambda's event-source mappings, answered here (no emulator runs Lambda).
    pub lambda: Option<Arc<crate::mappings::EventSourceMappings>>,
}

/// A function behind its own listener.
#[derive(Debug, Clone)]
struct Caller {
    name: String,
    binary: String,
    policy: Arc<Policy>,
}

impl Proxies {
    pub fn new(upstreams: Upstreams, plan: &FaultPlan, iam: IamMode, account: Account) -> anyhow::Result<Arc<Self>> {
        // No pooling limits and no timeout of its own: the function's SDK has its own.
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Arc::new(Self {
            counts: Mutex::new(BTreeMap::new()),
            latencies: Mutex::new(BTreeMap::new()),
            denials: Mutex::new(Vec::new()),
            iam,
            account,
            faults: Mutex::new(plan.faults.iter().cloned().map(RuleState::new).collect()),
            revoked: plan.revoke.clone(),
            upstreams,
            http,
            functions: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Starts the listener of function `name` (binary `binary`); returns its base URL.
    pub async fn listen(self: &Arc<Self>, name: &str, binary: &str, policy: Policy, shutdown: CancellationToken) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let caller = Caller { name: name.to_owned(), binary: binary.to_owned(), policy: Arc::new(policy) };
        let app = Router::new().fallback(forward).with_state((self.clone(), caller));
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "function endpoint proxy failed");
            }
        });
        Ok(format!("http://{addr}"))
    }

    /// Makes `function`'s instances the ones a [`FaultAction::Crash`] on its
    /// endpoint kills (its endpoint is listening before it starts).
    pub fn attach(&self, function: &crate::runtime::FunctionHandle) {
        self.functions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(function.name.clone(), function.clone());
    }

    /// The calls counted so far.
    pub fn calls(&self) -> CallCounts {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// How long the calls counted so far took at their services.
    pub fn latencies(&self) -> CallLatencies {
        self.latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Adds one call's time at its service.
    fn record_latency(&self, call: &Call, took: Duration) {
        let mut latencies = self.latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (call.service.clone(), call.operation.clone());
        let histogram = match latencies.entry(key) {
            std::collections::btree_map::Entry::Occupied(found) => found.into_mut(),
            std::collections::btree_map::Entry::Vacant(new) => match hdrhistogram::Histogram::new_with_max(LONGEST_CALL_US, 2) {
                Ok(histogram) => new.insert(histogram),
                Err(e) => return tracing::warn!(error = %e, "no latency histogram"),
            },
        };
        histogram.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// The calls functions' policies did not allow, in order.
    pub fn denials(&self) -> Vec<Denial> {
        self.denials.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether the caller's policy allows the call; records and reports it when not.
    fn authorize(&self, caller: &Caller, call: &Call, body: Option<&[u8]>) -> Result<(), (String, String)> {
        if self.iam == IamMode::Off {
            return Ok(());
        }
        let allowed = |action: &str, resource: &str| {
            let revoked = self.revoked.iter().any(|r| {
                (r.function == caller.name || r.function == caller.binary)
                    && iam::glob(&r.action.to_ascii_lowercase(), &action.to_ascii_lowercase())
            });
            !revoked && caller.policy.allows(action, resource)
        };
        let needed = iam::required_all(call, body, &self.account);
        let Some((action, resource)) = needed.into_iter().find(|(action, resource)| !allowed(action, resource)) else { return Ok(()) };
        tracing::warn!(function = %caller.name, %action, %resource, mode = ?self.iam, "the function's policy does not allow this call");
        let denial = (caller.name.clone(), action.clone(), resource.clone());
        self.denials.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(denial);
        if self.iam == IamMode::Enforce { Err((action, resource)) } else { Ok(()) }
    }

    /// Adds fault rules to a running cloud.
    pub fn add_faults(&self, rules: impl IntoIterator<Item = FaultRule>) {
        self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(rules.into_iter().map(RuleState::new));
    }

    /// Removes every fault rule: the cause of the failures is gone.
    pub fn clear_faults(&self) {
        self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    /// The action of the first rule that applies to this call, spending its budget.
    fn fault_for(&self, caller: &Caller, call: &Call, body: Option<&[u8]>) -> Option<FaultAction> {
        let mut faults = self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for state in faults.iter_mut() {
            if !state.rule.matches(caller, call, body) {
                continue;
            }
            state.seen += 1;
            if state.seen <= state.rule.after {
                continue;
            }
            if let FaultAction::Outage { ms } = state.rule.action {
                let began = *state.outage_began.get_or_insert_with(std::time::Instant::now);
                if began.elapsed() < Duration::from_millis(ms) {
                    return Some(state.rule.action.clone());
                }
                continue;
            }
            if state.seen <= state.rule.after + state.rule.times {
                return Some(state.rule.action.clone());
            }
        }
        None
    }

    /// Whether some rule must look into this call's body to know if it applies.
    fn inspects_body(&self, caller: &Caller, call: &Call) -> bool {
        let faults = self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        faults.iter().any(|state| state.rule.body_contains.is_some() && state.rule.matches_call(caller, call))
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
}

async fn forward(State((proxies, caller)): State<(Arc<Proxies>, Caller)>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut call = identify(&parts.method, &parts.uri, &parts.headers, None);
    // Bodies are streamed through, except where they must be looked into.
    // DynamoDB and SQS name their resource in a JSON body, which IAM checks need.
    // Lambda's calls are answered here, so their bodies are read whole too.
    let names_in_body = (proxies.iam != IamMode::Off && matches!(call.service.as_str(), "dynamodb" | "sqs")) || call.service == "lambda";
    let (body, whole) = if is_form(&parts.headers) || names_in_body || proxies.inspects_body(&caller, &call) {
        match axum::body::to_bytes(body, MAX_INSPECTED_BODY).await {
            Ok(bytes) => {
                call = identify(&parts.method, &parts.uri, &parts.headers, Some(&bytes));
                (reqwest::Body::from(bytes.clone()), Some(bytes))
            }
            Err(e) => return (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
        }
    } else {
        (reqwest::Body::wrap_stream(body.into_data_stream()), None)
    };
    // Checked as S3 checks it (moto's S3 does not); a browser's CORS preflight carries no signature of its own.
    if call.presigned
        && parts.method != Method::OPTIONS
        && let Err(refusal) =
            crate::presigned::check(&parts.method, &parts.uri, &parts.headers, SECRET_ACCESS_KEY, std::time::SystemTime::now())
    {
        return error_response(&call, 403, Some(refusal.code()), &refusal.to_string());
    }
    // A presigned URL acts with the permissions of the function that signed it.
    if let Err((action, resource)) = proxies.authorize(&caller, &call, whole.as_deref()) {
        let role = format!("arn:aws:sts::{}:assumed-role/{}-role/{}", proxies.account.id, caller.name, caller.name);
        let message = format!(
            "User: {role} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action"
        );
        // DynamoDB answers client errors with 400; the others deny with 403.
        let status = if call.service == "dynamodb" { 400 } else { 403 };
        return error_response(&call, status, Some(access_denied_code(&call)), &message);
    }
    if !call.presigned {
        let key = (caller.name.clone(), call.service.clone(), call.operation.clone());
        *proxies.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(key).or_default() += 1;
        match proxies.fault_for(&caller, &call, whole.as_deref()) {
            Some(FaultAction::Fail { status, code }) => {
                tracing::info!(function = %caller.name, service = %call.service, operation = %call.operation, "fault injected: failing the call");
                return error_response(&call, status.unwrap_or(503), code.as_deref(), "fault injected by the local cloud");
            }
            Some(FaultAction::Delay { ms }) => {
                tracing::info!(function = %caller.name, service = %call.service, operation = %call.operation, ms, "fault injected: delaying the call");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Some(FaultAction::Outage { .. }) => {
                tracing::info!(function = %caller.name, service = %call.service, operation = %call.operation, "fault injected: the service is down");
                return error_response(&call, 503, None, "fault injected by the local cloud: the service is down");
            }
            Some(FaultAction::Crash) => {
                let function = proxies.functions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&caller.name).cloned();
                let killed = function.map_or(0, |f| f.kill_instances());
                tracing::warn!(function = %caller.name, service = %call.service, operation = %call.operation, killed, "fault injected: killing the caller's instances");
                return error_response(&call, 503, None, "fault injected by the local cloud: the caller was killed");
            }
            None => {}
        }
    }
    if call.service == "lambda" {
        let Some(mappings) = &proxies.upstreams.lambda else {
            return (StatusCode::BAD_GATEWAY, "this cloud serves no Lambda API").into_response();
        };
        let body = match whole {
            Some(bytes) => bytes,
            None => return (StatusCode::INTERNAL_SERVER_ERROR, "a Lambda call's body was not read").into_response(),
        };
        return mappings.answer(&parts.method, parts.uri.path(), parts.uri.query().unwrap_or_default(), &body);
    }
    let upstream = match call.service.as_str() {
        "dynamodb" => proxies.upstreams.dynamodb.clone(),
        "execute-api" => match &proxies.upstreams.connections {
            Some(url) => url.clone(),
            None => return (StatusCode::BAD_GATEWAY, "this cloud has no WebSocket API").into_response(),
        },
        _ => proxies.upstreams.main.clone(),
    };
    let url = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut headers = parts.headers;
    // Content-Length stays: a streamed body goes upstream with the length it
    // came with, not chunked, and an upload URL presigned for a declared size
    // signs that header (S3 refuses the PUT if it is missing).
    for hop in ["connection", "transfer-encoding"] {
        headers.remove(hop);
    }
    let sent = std::time::Instant::now();
    let answer = match proxies.http.request(parts.method, &url).headers(headers).body(body).send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("upstream {upstream}: {e}")).into_response(),
    };
    if !call.presigned {
        proxies.record_latency(&call, sent.elapsed());
    }
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "connection" {
            response = response.header(name, value);
        }
    }
    response.body(Body::from_stream(answer.bytes_stream())).unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}

/// The service (from the SigV4 credential scope) and operation of a request.
pub fn identify(method: &Method, uri: &axum::http::Uri, headers: &HeaderMap, body: Option<&[u8]>) -> Call {
    let query = uri.query().unwrap_or_default();
    let authorization = headers.get("authorization").and_then(|a| a.to_str().ok());
    let presigned = authorization.is_none() && query.contains("X-Amz-Signature");
    let scope = authorization
        .and_then(|a| a.split("Credential=").nth(1))
        .map(|c| c.split(',').next().unwrap_or_default().to_owned())
        .or_else(|| form_value(query.as_bytes(), "X-Amz-Credential"));
    let service = scope.as_deref().and_then(|c| c.split('/').nth(3)).unwrap_or("s3").to_owned();
    let operation = if let Some(target) = headers.get("x-amz-target").and_then(|t| t.to_str().ok()) {
        target.rsplit('.').next().unwrap_or(target).to_owned()
    } else if let Some(action) = body.and_then(|b| form_value(b, "Action")).or_else(|| form_value(query.as_bytes(), "Action")) {
        action
    } else {
        match service.as_str() {
            "s3" => s3_operation(method, uri.path(), query, headers).to_owned(),
            "execute-api" => match *method {
                Method::POST => "PostToConnection",
                Method::DELETE => "DeleteConnection",
                _ => "GetConnection",
            }
            .to_owned(),
            "lambda" => lambda_operation(method, uri.path()).to_owned(),
            _ => method.as_str().to_owned(),
        }
    };
    let uri = urlencoding::decode(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")).map(|u| u.into_owned()).unwrap_or_default();
    Call { service, operation, presigned, uri }
}

fn form_value(form: &[u8], key: &str) -> Option<String> {
    form_urlencoded::parse(form).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// S3's REST operations by method, path-style path and sub-resource.
fn s3_operation(method: &Method, path: &str, query: &str, headers: &HeaderMap) -> &'static str {
    let has_key = path.trim_start_matches('/').contains('/');
    let sub = |name: &str| query.split('&').any(|p| p == name || p.starts_with(&format!("{name}=")));
    match (method.as_str(), has_key) {
        ("GET", true) => "GetObject",
        ("HEAD", true) => "HeadObject",
        ("PUT", true) if headers.contains_key("x-amz-copy-source") => "CopyObject",
        ("PUT", true) if sub("uploadId") => "UploadPart",
        ("PUT", true) => "PutObject",
        ("POST", true) if sub("uploads") => "CreateMultipartUpload",
        ("POST", true) if sub("uploadId") => "CompleteMultipartUpload",
        ("DELETE", true) => "DeleteObject",
        ("GET", false) if sub("notification") => "GetBucketNotificationConfiguration",
        ("GET", false) if sub("list-type") => "ListObjectsV2",
        ("GET", false) => "ListObjects",
        ("HEAD", false) => "HeadBucket",
        ("PUT", false) if sub("notification") => "PutBucketNotificationConfiguration",
        ("PUT", false) => "CreateBucket",
        ("POST", false) if sub("delete") => "DeleteObjects",
        ("DELETE", false) => "DeleteBucket",
        // A browser's CORS preflight before it uses a presigned URL.
        ("OPTIONS", _) => "PreflightRequest",
        _ => "Unknown",
    }
}

/// Lambda's REST operations the local cloud serves, by method and path.
fn lambda_operation(method: &Method, path: &str) -> &'static str {
    let mapping = path.strip_prefix("/2015-03-31/event-source-mappings").map(|rest| rest.trim_matches('/'));
    match (method.as_str(), mapping) {
        ("GET", Some("")) => "ListEventSourceMappings",
        ("GET", Some(_)) => "GetEventSourceMapping",
        ("PUT", Some(_)) => "UpdateEventSourceMapping",
        ("DELETE", Some(_)) => "DeleteEventSourceMapping",
        ("POST", Some("")) => "CreateEventSourceMapping",
        _ => "Unknown",
    }
}

/// The code each service answers a denied call with.
fn access_denied_code(call: &Call) -> &'static str {
    match call.service.as_str() {
        "dynamodb" | "lambda" => "AccessDeniedException",
        "sns" => "AuthorizationError",
        "execute-api" => "Forbidden",
        _ => "AccessDenied",
    }
}

/// An error as the service answers it, in its protocol, so the SDK reads it
/// as it would read the real one.
fn error_response(call: &Call, status: u16, code: Option<&str>, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let (content_type, body) = match call.service.as_str() {
        "s3" => {
            let code = code.unwrap_or("SlowDown");
            ("application/xml", format!("<Error><Code>{code}</Code><Message>{message}</Message></Error>"))
        }
        "execute-api" => ("application/json", serde_json::json!({ "message": code.unwrap_or(message) }).to_string()),
        // The query protocol: SNS, and SQS when a client uses it.
        "sns" => {
            let code = code.unwrap_or("ServiceUnavailable");
            let kind = if status.is_server_error() { "Receiver" } else { "Sender" };
            let xml = format!(
                "<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
            );
            ("text/xml", xml)
        }
        // The JSON protocols: DynamoDB, SQS.
        _ => {
            let code = code.unwrap_or("ServiceUnavailable");
            ("application/x-amz-json-1.0", serde_json::json!({ "__type": code, "message": message }).to_string())
        }
    };
    let mut response = (status, body).into_response();
    response.headers_mut().insert("content-type", HeaderValue::from_static(content_type));
    if let Some(code) = code.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert("x-amzn-errortype", code);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.parse().expect("name"), HeaderValue::from_str(v).expect("value"))).collect()
    }

    const SCOPE: &str = "AWS4-HMAC-SHA256 Credential=test/20261127/us-east-1/{svc}/aws4_request, SignedHeaders=host, Signature=00";

    fn signed(service: &str, extra: &[(&str, &str)]) -> HeaderMap {
        let auth = SCOPE.replace("{svc}", service);
        let mut pairs = vec![("authorization", auth.as_str())];
        pairs.extend_from_slice(extra);
        headers(&pairs)
    }

    #[test]
    fn reads_service_and_operation_from_each_protocol() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().expect("uri");
        let dynamo = identify(&Method::POST, &uri("/"), &signed("dynamodb", &[("x-amz-target", "DynamoDB_20120810.PutItem")]), None);
        assert_eq!((dynamo.service.as_str(), dynamo.operation.as_str(), dynamo.presigned), ("dynamodb", "PutItem", false));
        let sqs = identify(&Method::POST, &uri("/"), &signed("sqs", &[("x-amz-target", "AmazonSQS.SendMessage")]), None);
        assert_eq!(sqs.operation, "SendMessage");
        let sns = identify(&Method::POST, &uri("/"), &signed("sns", &[]), Some(b"Action=PublishBatch&TopicArn=arn%3Ax"));
        assert_eq!((sns.service.as_str(), sns.operation.as_str()), ("sns", "PublishBatch"));
        let get = identify(&Method::GET, &uri("/bucket/uploads/a/b.txt"), &signed("s3", &[("range", "bytes=0-4095")]), None);
        assert_eq!(get.operation, "GetObject");
        let head = identify(&Method::HEAD, &uri("/bucket/k"), &signed("s3", &[]), None);
        assert_eq!(head.operation, "HeadObject");
        let pause = identify(&Method::PUT, &uri("/2015-03-31/event-source-mappings/u-1"), &signed("lambda", &[]), None);
        assert_eq!((pause.service.as_str(), pause.operation.as_str()), ("lambda", "UpdateEventSourceMapping"));
        let list = identify(&Method::GET, &uri("/2015-03-31/event-source-mappings/?FunctionName=f"), &signed("lambda", &[]), None);
        assert_eq!(list.operation, "ListEventSourceMappings");
        let push = identify(&Method::POST, &uri("/test/@connections/abc%3D"), &signed("execute-api", &[]), None);
        assert_eq!((push.service.as_str(), push.operation.as_str()), ("execute-api", "PostToConnection"));
        let presigned = identify(
            &Method::PUT,
            &uri(
                "/bucket/uploads/o/j/f?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=test%2F20261127%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00",
            ),
            &HeaderMap::new(),
            None,
        );
        assert_eq!((presigned.service.as_str(), presigned.operation.as_str(), presigned.presigned), ("s3", "PutObject", true));
    }

    #[test]
    fn a_rule_counts_matching_calls_and_fails_only_its_share() {
        let rule = FaultRule {
            function: Some("publish".into()),
            operation: "sns:PublishBatch".into(),
            body_contains: Some("job.completed".into()),
            uri_contains: None,
            after: 1,
            times: 2,
            action: FaultAction::Fail { status: None, code: None },
        };
        let proxies = Proxies::new(
            Upstreams { main: String::new(), dynamodb: String::new(), connections: None, lambda: None },
            &FaultPlan { faults: vec![rule], ..FaultPlan::default() },
            IamMode::Off,
            account(),
        )
        .expect("proxies");
        let caller = Caller { name: "prism-test-publish".into(), binary: "publish".into(), policy: Arc::default() };
        let call = Call { service: "sns".into(), operation: "PublishBatch".into(), presigned: false, uri: "/".into() };
        assert!(proxies.inspects_body(&caller, &call));
        let other = Caller { name: "prism-test-api".into(), binary: "api".into(), policy: Arc::default() };
        assert!(!proxies.inspects_body(&other, &call), "another function's calls are not the rule's");
        let completed: &[u8] = b"Action=PublishBatch&...job.completed...";
        let outcomes: Vec<bool> = (0..4).map(|_| proxies.fault_for(&caller, &call, Some(completed)).is_some()).collect();
        assert_eq!(outcomes, [false, true, true, false], "one let through, two failed, then none");
        assert_eq!(proxies.fault_for(&caller, &call, Some(b"job.progress")), None, "other bodies never match");
    }

    #[test]
    fn an_outage_fails_every_matching_call_for_its_length_then_none() {
        let rule = FaultRule {
            function: None,
            operation: "dynamodb:*".into(),
            body_contains: None,
            uri_contains: None,
            after: 1,
            times: 1,
            action: FaultAction::Outage { ms: 300 },
        };
        let upstreams = Upstreams { main: String::new(), dynamodb: String::new(), connections: None, lambda: None };
        let plan = FaultPlan { faults: vec![rule], ..FaultPlan::default() };
        let proxies = Proxies::new(upstreams, &plan, IamMode::Off, account()).expect("proxies");
        let caller = Caller { name: "prism-test-classify".into(), binary: "classify".into(), policy: Arc::default() };
        let call = |operation: &str| Call { service: "dynamodb".into(), operation: operation.into(), presigned: false, uri: "/".into() };
        assert_eq!(proxies.fault_for(&caller, &call("GetItem"), None), None, "the first is let through");
        let during: Vec<bool> =
            ["PutItem", "Query", "GetItem"].iter().map(|op| proxies.fault_for(&caller, &call(op), None).is_some()).collect();
        assert_eq!(during, [true, true, true], "every call while it lasts, whatever `times` says");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(proxies.fault_for(&caller, &call("PutItem"), None), None, "over once its time is up");
    }

    fn account() -> Account {
        Account { region: "us-east-1".into(), id: "000000000000".into(), websocket_api: None }
    }

    #[tokio::test]
    async fn each_calls_time_at_its_service_is_kept_by_operation() {
        // A service that takes 50 ms over every answer.
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_url = format!("http://{}", upstream.local_addr().expect("addr"));
        let slow = Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            "{}"
        });
        tokio::spawn(async move { axum::serve(upstream, slow).await });
        let upstreams = Upstreams { main: upstream_url.clone(), dynamodb: upstream_url, connections: None, lambda: None };
        let proxies = Proxies::new(upstreams, &FaultPlan::default(), IamMode::Off, account()).expect("proxies");
        let shutdown = CancellationToken::new();
        let endpoint = proxies.listen("prism-test-api", "api", Policy::default(), shutdown.clone()).await.expect("listen");
        let http = reqwest::Client::new();
        for _ in 0..2 {
            let get_item = http.post(&endpoint).headers(signed("dynamodb", &[("x-amz-target", "DynamoDB_20120810.GetItem")])).body("{}");
            assert!(get_item.send().await.expect("forwarded").status().is_success());
        }

        let latencies = proxies.latencies();
        let keys: Vec<_> = latencies.keys().cloned().collect();
        assert_eq!(keys, [("dynamodb".to_owned(), "GetItem".to_owned())], "kept by service and operation");
        let get_item = &latencies[&("dynamodb".to_owned(), "GetItem".to_owned())];
        assert_eq!(get_item.len(), 2);
        assert!(get_item.min() >= 49_000, "the service's 50 ms are in it: {} µs", get_item.min());
        shutdown.cancel();
    }

    #[test]
    fn fault_plans_read_from_json() {
        let plan: FaultPlan = serde_json::from_str(
            r#"{"faults": [{"operation": "execute-api:PostToConnection", "times": 3, "action": {"kind": "fail", "status": 429}},
                           {"function": "classify", "operation": "dynamodb:*", "action": {"kind": "delay", "ms": 200}},
                           {"function": "process-audio", "operation": "s3:PutObject", "action": {"kind": "crash"}},
                           {"operation": "dynamodb:*", "action": {"kind": "outage", "ms": 4000}}]}"#,
        )
        .expect("plan");
        assert_eq!(plan.faults.len(), 4);
        assert_eq!(plan.faults[3].action, FaultAction::Outage { ms: 4000 });
        assert_eq!(plan.faults[0].action, FaultAction::Fail { status: Some(429), code: None });
        assert_eq!((plan.faults[1].times, &plan.faults[1].action), (1, &FaultAction::Delay { ms: 200 }));
        assert_eq!(plan.faults[2].action, FaultAction::Crash);
    }
}

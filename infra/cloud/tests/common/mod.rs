//! What the local cloud's tests share: functions whose runtime is a script.
#![allow(dead_code, reason = "each test binary uses a part of these")]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;
use aws_smithy_types::body::SdkBody;
use futures::future::BoxFuture;
use serde_json::Value;

use prism_cloud::logs::LogSink;
use prism_cloud::provision::FunctionSpec;
use prism_cloud::runtime::RuntimeEnv;
use tokio_util::sync::CancellationToken;

/// `script` written as an executable named `name` in a fresh folder.
pub fn runtime_dir(name: &str, script: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("runtime-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, script).expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

pub fn spec(binary: &str) -> FunctionSpec {
    FunctionSpec {
        url: None,
        policy: prism_cloud::iam::Policy::default(),
        logical_id: "Echo".into(),
        name: binary.into(),
        binary: binary.into(),
        environment: Vec::new(),
        timeout: Duration::from_secs(1),
        memory_mb: 128,
        concurrency: 1,
        sqs_sources: Vec::new(),
        stream_sources: Vec::new(),
        schedules: Vec::new(),
    }
}

pub fn env_for(dir: &std::path::Path, shutdown: &CancellationToken) -> RuntimeEnv {
    RuntimeEnv {
        bin_dir: dir.to_owned(),
        base_env: Vec::new(),
        overrides: Vec::new(),
        account_id: "000000000000".into(),
        region: "us-east-1".into(),
        logs: LogSink::new(&dir.join("logs"), false).expect("logs"),
        shutdown: shutdown.clone(),
        tasks: tokio_util::task::TaskTracker::new(),
        cpu: None,
    }
}

/// A function that takes 300 ms a batch and writes, per invocation, its
/// start and end (epoch milliseconds) and what identifies its records: a
/// stream record's sequence number, an SQS message's body.
pub const RECORDING_RUNTIME: &str = r#"#!/usr/bin/env bash
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
log="$(dirname "$0")/invocations"
while true; do
  headers=$(mktemp)
  body=$(curl -sS -D "$headers" "$api/invocation/next")
  id=$(grep -i '^lambda-runtime-aws-request-id:' "$headers" | cut -d' ' -f2 | tr -d '\r')
  rm -f "$headers"
  start=$(date +%s%3N)
  sleep 0.3
  records=$(echo "$body" | grep -oE '"(SequenceNumber|body)":"[^"]*"' | cut -d'"' -f4 | tr '\n' ' ')
  echo "$start $(date +%s%3N) $records" >> "$log"
  curl -sS -X POST -d 'null' "$api/invocation/$id/response" >/dev/null
done
"#;

/// A function named `name` running [`RECORDING_RUNTIME`], and the folder
/// whose `invocations` file it writes.
pub async fn recording_function(name: &str, shutdown: &CancellationToken) -> (std::path::PathBuf, prism_cloud::runtime::FunctionHandle) {
    let dir = runtime_dir(name, RECORDING_RUNTIME);
    let function = prism_cloud::runtime::start_function(spec(name), &env_for(&dir, shutdown)).await.expect("start");
    (dir, function)
}

pub fn epoch_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// One invocation as [`RECORDING_RUNTIME`] recorded it.
#[derive(Debug)]
pub struct Invocation {
    pub began: u128,
    pub ended: u128,
    pub records: Vec<String>,
}

impl Invocation {
    /// The records as numbers (a stream's sequence numbers).
    pub fn numbers(&self) -> Vec<u64> {
        self.records.iter().filter_map(|r| r.parse().ok()).collect()
    }
}

/// What [`RECORDING_RUNTIME`] wrote to `log`, in order.
pub fn invocations(log: &std::path::Path) -> Vec<Invocation> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let began = fields.next()?.parse().ok()?;
            let ended = fields.next()?.parse().ok()?;
            Some(Invocation { began, ended, records: fields.map(str::to_owned).collect() })
        })
        .collect()
}

/// A fake AWS service that speaks the JSON protocol (DynamoDB Streams, SQS),
/// put under the SDK as its HTTP client: each request's operation (from
/// `x-amz-target`) and body go to the answering function, whose JSON is the
/// 200 response.
#[derive(Clone)]
pub struct FakeJsonService(Arc<dyn Fn(String, Value) -> BoxFuture<'static, Value> + Send + Sync>);

impl FakeJsonService {
    pub fn new<Answer, Answered>(answer: Answer) -> Self
    where
        Answer: Fn(String, Value) -> Answered + Send + Sync + 'static,
        Answered: Future<Output = Value> + Send + 'static,
    {
        Self(Arc::new(move |operation, body| Box::pin(answer(operation, body))))
    }
}

impl std::fmt::Debug for FakeJsonService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeJsonService")
    }
}

impl HttpConnector for FakeJsonService {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let operation = request.headers().get("x-amz-target").and_then(|t| t.rsplit('.').next()).unwrap_or_default().to_owned();
        let body: Value = serde_json::from_slice(request.body().bytes().unwrap_or_default()).unwrap_or_default();
        let answered = (self.0)(operation, body);
        HttpConnectorFuture::new(async move {
            Ok(HttpResponse::new(200.try_into().expect("status"), SdkBody::from(answered.await.to_string())))
        })
    }
}

impl HttpClient for FakeJsonService {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        self.clone().into_shared()
    }
}

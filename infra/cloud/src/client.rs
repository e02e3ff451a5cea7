//! A client of Prism's REST API, used by `prism submit`/`status` and the
//! end-to-end tests: submit a file (create the job, PUT the bytes to the
//! presigned URL), read a job, wait for it to finish.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prism_shared::{Job, JobId};
use serde::{Deserialize, Serialize};

/// Attempts of a request that failed with throttling or a passing outage:
/// about 20 s of backoff in all, so a client among more than the function
/// has instances gets its turn.
const MAX_ATTEMPTS: usize = 8;

/// What a submission asks for beside its file.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub priority: Option<String>,
    /// A workflow name, or `default` for the modality's own.
    pub workflow: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PrismClient {
    streaming: reqwest::Client,
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Upload {
    method: String,
    url: String,
}

#[derive(Debug, Deserialize)]
struct Submitted {
    job: Job,
    upload: Upload,
}

/// One line of `prism submit --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitReport {
    pub file: String,
    pub job_id: String,
    pub status: String,
    pub modality: Option<String>,
    pub mime: Option<String>,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
}

impl SubmitReport {
    pub fn new(file: &str, job: &Job) -> Self {
        Self {
            file: file.to_owned(),
            job_id: job.id.to_string(),
            status: job.status.to_string(),
            modality: job.modality.map(|m| m.to_string()),
            mime: job.mime.clone(),
            result: job.result.as_ref().and_then(|r| serde_json::to_value(r).ok()),
            error: job.error.as_ref().and_then(|e| serde_json::to_value(e).ok()),
        }
    }

    /// A file the client could not submit or follow.
    pub fn client_error(file: &str, error: &anyhow::Error) -> Self {
        Self {
            file: file.to_owned(),
            job_id: String::new(),
            status: "failed".into(),
            modality: None,
            mime: None,
            result: None,
            error: Some(serde_json::json!({ "code": "client_error", "message": format!("{error:#}") })),
        }
    }
}

impl PrismClient {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?,
            // A stream is open for as long as its job runs: no overall timeout.
            streaming: reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to the API, with the bearer token when there is one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends `request`, again after a backoff while the answer says the
    /// function was throttled or the gateway could not reach it (429, 500,
    /// 502, 503, 504: API Gateway answers a throttled Lambda with a 500).
    /// For reads and keyed writes only: each is safe to repeat.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
        let mut delays = crate::backoff::delays(Duration::from_millis(200), Duration::from_secs(3)).take(MAX_ATTEMPTS - 1);
        loop {
            let Some(again) = request.try_clone() else { return request.send().await };
            let sent = again.send().await;
            let retryable = match &sent {
                Ok(r) => matches!(r.status().as_u16(), 429 | 500 | 502 | 503 | 504),
                Err(e) => e.is_connect(),
            };
            match delays.next() {
                Some(delay) if retryable => tokio::time::sleep(delay).await,
                _ => return sent,
            }
        }
    }

    /// Creates a job and uploads `bytes` to it; processing starts when the upload lands.
    pub async fn submit(&self, file_name: &str, bytes: Vec<u8>, priority: Option<&str>) -> anyhow::Result<Job> {
        let options = SubmitOptions { priority: priority.map(str::to_owned), ..SubmitOptions::default() };
        self.submit_with(file_name, bytes, &options).await
    }

    /// [`Self::submit`] with every option a submission takes.
    pub async fn submit_with(&self, file_name: &str, bytes: Vec<u8>, options: &SubmitOptions) -> anyhow::Result<Job> {
        let (job, upload_url) = self.create_with(file_name, options).await?;
        self.upload(&upload_url, bytes).await?;
        Ok(job)
    }

    /// PUTs a job's content to the presigned URL its creation returned.
    pub async fn upload(&self, upload_url: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        let put = self.http.put(upload_url).body(bytes).send().await.context("uploading")?;
        if !put.status().is_success() {
            bail!("upload answered {}: {}", put.status(), put.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Creates a job awaiting its upload; returns it with the presigned PUT URL.
    pub async fn create(&self, file_name: &str, priority: Option<&str>) -> anyhow::Result<(Job, String)> {
        self.create_with(file_name, &SubmitOptions { priority: priority.map(str::to_owned), ..SubmitOptions::default() }).await
    }

    /// [`Self::create`] with every option a submission takes.
    pub async fn create_with(&self, file_name: &str, options: &SubmitOptions) -> anyhow::Result<(Job, String)> {
        let mut request = serde_json::json!({ "file_name": file_name });
        if let Some(p) = &options.priority {
            request["priority"] = p.as_str().into();
        }
        if let Some(w) = &options.workflow {
            request["workflow"] = w.as_str().into();
        }
        // One key for every attempt, so a retry after a lost answer finds the same job.
        let key = uuid::Uuid::new_v4().to_string();
        let mut delays = crate::backoff::delays(Duration::from_millis(400), Duration::from_secs(5)).take(MAX_ATTEMPTS - 1);
        let resp = loop {
            let sent = self.request(reqwest::Method::POST, "/v1/jobs").header("Idempotency-Key", &key).json(&request).send().await;
            let retryable = match &sent {
                // A throttled function reaches the caller as API Gateway's 500.
                Ok(r) => matches!(r.status().as_u16(), 429 | 500 | 502 | 503 | 504),
                Err(e) => e.is_connect() || e.is_timeout(),
            };
            match delays.next() {
                Some(delay) if retryable => tokio::time::sleep(delay).await,
                _ => break sent?,
            }
        };
        let status = resp.status();
        if !status.is_success() {
            bail!("POST /v1/jobs answered {status}: {}", resp.text().await.unwrap_or_default());
        }
        let submitted: Submitted = resp.json().await.context("reading the submit response")?;
        anyhow::ensure!(submitted.upload.method == "PUT", "unexpected upload method {}", submitted.upload.method);
        Ok((submitted.job, submitted.upload.url))
    }

    /// Every lane as the operator view shows it (needs an operator's token).
    pub async fn lanes(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        self.operate(reqwest::Method::GET, "/v1/ops/lanes").await
    }

    /// Pauses (or resumes) the lanes `target` names: a lane (`text-bulk`) or a
    /// modality (`text`); answers with their state after the change.
    pub async fn set_lanes_paused(&self, target: &str, paused: bool) -> anyhow::Result<Vec<serde_json::Value>> {
        let action = if paused { "pause" } else { "resume" };
        self.operate(reqwest::Method::POST, &format!("/v1/ops/lanes/{}/{action}", urlencoding::encode(target))).await
    }

    /// The dead letters kept for operators, of one queue (`text`, or a DLQ's full name) or all.
    pub async fn dead_letters(&self, queue: Option<&str>) -> anyhow::Result<Vec<serde_json::Value>> {
        let query = queue.map(|q| format!("?queue={}", urlencoding::encode(q))).unwrap_or_default();
        let body = self.operate_raw(reqwest::Method::GET, &format!("/v1/ops/dead-letters{query}")).await?;
        Ok(body["dead_letters"].as_array().cloned().unwrap_or_default())
    }

    /// Sends a queue's dead letters (or only `job`'s) back; answers what was
    /// redriven, discarded (its job ended another way) and skipped, with why.
    pub async fn redrive(&self, queue: &str, job: Option<&str>) -> anyhow::Result<serde_json::Value> {
        let query = job.map(|j| format!("?job={}", urlencoding::encode(j))).unwrap_or_default();
        self.operate_raw(reqwest::Method::POST, &format!("/v1/ops/dead-letters/{}/redrive{query}", urlencoding::encode(queue))).await
    }

    /// An owner's quotas (its own, those in force, its bytes today); with
    /// `own`, first sets the owner's own (`max_active_jobs`, `max_bytes_per_day`).
    pub async fn quota(&self, owner: &str, own: Option<&serde_json::Value>) -> anyhow::Result<serde_json::Value> {
        let path = format!("/v1/ops/quotas/{}", urlencoding::encode(owner));
        let request = match own {
            Some(own) => self.request(reqwest::Method::PUT, &path).json(own),
            None => self.request(reqwest::Method::GET, &path),
        };
        let resp = self.send(request).await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("{path} answered {status}: {}", resp.text().await.unwrap_or_default());
        }
        Ok(resp.json().await?)
    }

    async fn operate(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let body = self.operate_raw(method, path).await?;
        Ok(body["lanes"].as_array().cloned().unwrap_or_default())
    }

    async fn operate_raw(&self, method: reqwest::Method, path: &str) -> anyhow::Result<serde_json::Value> {
        // Pausing, resuming and redriving are idempotent (a redriven job is not redriven again).
        let resp = self.send(self.request(method.clone(), path)).await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {}", resp.text().await.unwrap_or_default());
        }
        Ok(resp.json().await?)
    }

    pub async fn job(&self, id: &JobId) -> anyhow::Result<Job> {
        let resp = self.send(self.request(reqwest::Method::GET, &format!("/v1/jobs/{id}"))).await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET /v1/jobs/{id} answered {status}: {}", resp.text().await.unwrap_or_default());
        }
        Ok(resp.json().await?)
    }

    /// The job's event log after `after`.
    pub async fn events(&self, id: &JobId, after: u64) -> anyhow::Result<Vec<serde_json::Value>> {
        let resp = self.send(self.request(reqwest::Method::GET, &format!("/v1/jobs/{id}/events?after={after}"))).await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET /v1/jobs/{id}/events answered {status}");
        }
        let page: serde_json::Value = resp.json().await?;
        Ok(page["events"].as_array().cloned().unwrap_or_default())
    }

    /// One page of the job's log lines after event `after`, and the `after`
    /// of the next page when there is one.
    pub async fn logs(&self, id: &JobId, after: u64) -> anyhow::Result<(Vec<serde_json::Value>, Option<u64>)> {
        let resp = self.send(self.request(reqwest::Method::GET, &format!("/v1/jobs/{id}/logs?after={after}"))).await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET /v1/jobs/{id}/logs answered {status}");
        }
        let page: serde_json::Value = resp.json().await?;
        Ok((page["lines"].as_array().cloned().unwrap_or_default(), page["next_after"].as_u64()))
    }

    /// The job's events as server-sent events from the stream function's URL,
    /// from after `last_event_id`; `job.log` events too with `logs`.
    pub async fn stream(&self, stream_url: &str, id: &JobId, last_event_id: Option<u64>, logs: bool) -> anyhow::Result<SseStream> {
        let url = format!("{}/v1/jobs/{id}/stream{}", stream_url.trim_end_matches('/'), if logs { "?logs=true" } else { "" });
        self.open_stream(url, last_event_id.map(|seq| seq.to_string())).await
    }

    /// All of the caller's jobs' events as server-sent events (`GET
    /// /v1/stream`), from after `last_event_id` (an id this stream sent).
    pub async fn stream_all(&self, stream_url: &str, last_event_id: Option<&str>, logs: bool) -> anyhow::Result<SseStream> {
        let url = format!("{}/v1/stream{}", stream_url.trim_end_matches('/'), if logs { "?logs=true" } else { "" });
        self.open_stream(url, last_event_id.map(str::to_owned)).await
    }

    async fn open_stream(&self, url: String, last_event_id: Option<String>) -> anyhow::Result<SseStream> {
        let mut req = self.streaming.get(url).header("accept", "text/event-stream");
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.context("opening the event stream")?;
        let status = resp.status();
        if !status.is_success() {
            return Err(StreamRefused { status: status.as_u16(), body: resp.text().await.unwrap_or_default() }.into());
        }
        Ok(SseStream { response: resp, buffer: String::new() })
    }

    /// Polls until the job is terminal or `timeout` passes.
    pub async fn wait(&self, id: &JobId, timeout: Duration) -> anyhow::Result<Job> {
        let started = Instant::now();
        let mut delays = crate::backoff::delays(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            let job = self.job(id).await?;
            if job.status.is_terminal() {
                return Ok(job);
            }
            if started.elapsed() > timeout {
                bail!("job {id} still {} ({}) after {timeout:?}", job.status, job.phase);
            }
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_millis(500))).await;
        }
    }
}

/// A stream that answered with an error status (401, 404, …).
#[derive(Debug, thiserror::Error)]
#[error("the stream answered {status}: {body}")]
pub struct StreamRefused {
    pub status: u16,
    pub body: String,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// A job stream's ids are sequence numbers ([`Self::seq`]); an owner
    /// stream's are opaque positions, handed back as they came.
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// The id as a job stream writes it: the event's sequence number.
    pub fn seq(&self) -> Option<u64> {
        self.id.as_deref()?.parse().ok()
    }
}

/// An open `text/event-stream` response, read event by event.
#[derive(Debug)]
pub struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    /// The next event (comments and `retry:` skipped); `None` once the server closed the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_sse_block(&block) {
                    return Ok(Some(event));
                }
            }
            match self.response.chunk().await.context("reading the event stream")? {
                Some(chunk) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                None => return Ok(None),
            }
        }
    }
}

/// One blank-line-separated block of an event stream; `None` for comments
/// (heartbeats) and blocks without data.
fn parse_sse_block(block: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data) = (None, "message".to_owned(), Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = value.to_owned(),
            "data" => data.push(value),
            _ => {}
        }
    }
    (!data.is_empty()).then(|| SseEvent { id, event, data: data.join("\n") })
}

#[cfg(test)]
mod sse_tests {
    use super::*;

    #[test]
    fn blocks_parse_into_events_and_comments_are_skipped() {
        assert_eq!(parse_sse_block(": keep-alive\n\n"), None);
        assert_eq!(parse_sse_block("retry: 1000\n\n"), None);
        let event = parse_sse_block("id: 7\nevent: job.progress\ndata: {\"a\":1}\n\n").expect("event");
        assert_eq!(event, SseEvent { id: Some("7".into()), event: "job.progress".into(), data: r#"{"a":1}"#.into() });
        assert_eq!(event.seq(), Some(7));
        assert_eq!(parse_sse_block("data: a\ndata: b\n\n").map(|e| e.data), Some("a\nb".into()));
    }
}

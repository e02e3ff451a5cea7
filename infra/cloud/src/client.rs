//! A client of Prism's REST API, used by `prism submit`/`status` and the
//! end-to-end tests: submit a file (create the job, PUT the bytes to the
//! presigned URL), read a job, wait for it to finish.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prism_shared::{Job, JobId};
use serde::{Deserialize, Serialize};

/// Attempts of a request that failed with throttling or a passing outage.
const MAX_ATTEMPTS: usize = 4;

/// What a submission asks for beside its file.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub priority: Option<String>,
    /// A workflow name, or `default` for the modality's own.
    pub workflow: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PrismClient {
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
                Ok(r) => matches!(r.status().as_u16(), 429 | 502 | 503 | 504),
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

    pub async fn job(&self, id: &JobId) -> anyhow::Result<Job> {
        let resp = self.request(reqwest::Method::GET, &format!("/v1/jobs/{id}")).send().await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET /v1/jobs/{id} answered {status}: {}", resp.text().await.unwrap_or_default());
        }
        Ok(resp.json().await?)
    }

    /// The job's event log after `after`.
    pub async fn events(&self, id: &JobId, after: u64) -> anyhow::Result<Vec<serde_json::Value>> {
        let resp = self.request(reqwest::Method::GET, &format!("/v1/jobs/{id}/events?after={after}")).send().await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET /v1/jobs/{id}/events answered {status}");
        }
        let page: serde_json::Value = resp.json().await?;
        Ok(page["events"].as_array().cloned().unwrap_or_default())
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

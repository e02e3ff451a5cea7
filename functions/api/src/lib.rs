//! api: the REST API behind API Gateway's HTTP API (payload format 2.0).

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use chrono::Utc;
use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};
use prism_shared::envelope::new_trace_id;
use prism_shared::ports::{BlobStore, Created, JobStore};
use prism_shared::{BlobError, ConfigError, Job, JobEventEnvelope, JobId, Priority, S3Uri, StoreError, config};
use serde::{Deserialize, Serialize};

pub const SOURCE: &str = "api";
/// Until the token issue lands every request acts for this owner.
pub const DEFAULT_OWNER: &str = "default";
const MAX_FILE_NAME: usize = 200;

#[derive(Debug, Clone)]
pub struct Config {
    pub bucket: String,
    pub upload_url_ttl: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            bucket: config::required("BUCKET_NAME")?,
            upload_url_ttl: Duration::from_secs(config::parsed_or("UPLOAD_URL_TTL_SECONDS", 900)?),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Deps {
    pub jobs: Arc<dyn JobStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub config: Config,
}

/// An RFC 9457 problem: what the client gets for every error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no such job")]
    NotFound,
    #[error("no route for {0}")]
    NoRoute(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

impl ApiError {
    fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotFound | Self::NoRoute(_) => 404,
            Self::Store(_) | Self::Blob(_) => 503,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound => "job_not_found",
            Self::NoRoute(_) => "no_route",
            Self::Store(_) | Self::Blob(_) => "unavailable",
        }
    }
}

#[derive(Debug, Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub priority: Option<Priority>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UploadTarget {
    pub method: String,
    pub url: String,
    pub expires_in_s: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub job: Job,
    pub upload: UploadTarget,
}

pub async fn handle(deps: &Deps, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let route = req.route_key.clone().unwrap_or_default();
    let result = route_request(deps, &route, &req).await;
    match result {
        Ok((status, body)) => json_response(status, "application/json", body),
        Err(e) => {
            if e.status() >= 500 {
                tracing::error!(error = %e, error_chain = ?e, %route, "request failed");
            }
            let problem = Problem {
                kind: format!("https://prism.dev/problems/{}", e.code()),
                title: e.code(),
                status: e.status(),
                detail: e.to_string(),
                code: e.code(),
            };
            json_response(e.status(), "application/problem+json", serde_json::to_value(problem).unwrap_or_default())
        }
    }
}

async fn route_request(deps: &Deps, route: &str, req: &ApiGatewayV2httpRequest) -> Result<(u16, serde_json::Value), ApiError> {
    let job_id = || -> Result<JobId, ApiError> { req.path_parameters.get("id").and_then(|id| id.parse().ok()).ok_or(ApiError::NotFound) };
    match route {
        "GET /v1/health" => Ok((200, serde_json::json!({"status": "ok"}))),
        "POST /v1/jobs" => submit(deps, req).await.map(|r| (201, to_value(&r))),
        "GET /v1/jobs/{id}" => {
            let job = owned_job(deps, &job_id()?).await?;
            Ok((200, to_value(&job)))
        }
        "GET /v1/jobs/{id}/events" => {
            let job = owned_job(deps, &job_id()?).await?;
            let after = query_number(req, "after", 0)?;
            let limit = query_number(req, "limit", 100)?.clamp(1, 1000) as u32;
            let events = deps.jobs.events(&job.id, after, limit).await?;
            let next = events.last().and_then(|e| e.seq).filter(|_| events.len() == limit as usize);
            Ok((200, serde_json::json!({ "events": events, "next_after": next })))
        }
        other => Err(ApiError::NoRoute(other.to_owned())),
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_else(|e| unreachable!("response serialisation: {e}"))
}

fn query_number(req: &ApiGatewayV2httpRequest, name: &str, default: u64) -> Result<u64, ApiError> {
    match req.query_string_parameters.first(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ApiError::BadRequest(format!("query parameter {name} must be a whole number"))),
    }
}

/// The job, if it exists, is not expired, and belongs to the caller.
async fn owned_job(deps: &Deps, id: &JobId) -> Result<Job, ApiError> {
    match deps.jobs.get(id).await? {
        Some(job) if job.owner == DEFAULT_OWNER && !job.is_expired(Utc::now()) => Ok(job),
        _ => Err(ApiError::NotFound),
    }
}

async fn submit(deps: &Deps, req: &ApiGatewayV2httpRequest) -> Result<SubmitResponse, ApiError> {
    let body = request_body(req)?;
    let request: SubmitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SubmitRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?
    };
    let id = JobId::new_random();
    let name = sanitise_file_name(request.file_name.as_deref().unwrap_or("upload"));
    let upload = S3Uri::new(&deps.config.bucket, format!("uploads/{DEFAULT_OWNER}/{id}/{name}"));
    let job = Job::new(id, DEFAULT_OWNER.into(), request.priority.unwrap_or_default(), upload.clone(), new_trace_id(), Utc::now());
    let created = JobEventEnvelope::for_job(SOURCE, &job, job.created_event());
    if let Created::Existing(_) = deps.jobs.create(&job, &created).await? {
        // A fresh v7 UUID never collides; seeing one means the store is confused.
        return Err(StoreError::Conflict(job.id).into());
    }
    let url = deps.blobs.presign_put(&upload, deps.config.upload_url_ttl).await?;
    tracing::info!(job_id = %job.id, %upload, "job created");
    Ok(SubmitResponse { job, upload: UploadTarget { method: "PUT".into(), url, expires_in_s: deps.config.upload_url_ttl.as_secs() } })
}

fn request_body(req: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, ApiError> {
    let Some(body) = req.body.as_deref() else {
        return Ok(Vec::new());
    };
    if req.is_base64_encoded {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| ApiError::BadRequest(format!("body is not valid base64: {e}")))
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// A user's file name made safe as the last segment of an object key: no
/// directories, no `..`, no control characters, bounded length.
pub fn sanitise_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String =
        last.chars().map(|c| if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') { c } else { '_' }).take(MAX_FILE_NAME).collect();
    let cleaned = cleaned.trim_matches([' ', '.']).to_owned();
    if cleaned.is_empty() { "upload".into() } else { cleaned }
}

fn json_response(status: u16, content_type: &'static str, body: serde_json::Value) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = i64::from(status);
    resp.headers = headers;
    resp.body = Some(Body::Text(body.to_string()));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_their_folder() {
        assert_eq!(sanitise_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitise_file_name("C:\\x\\report.pdf"), "report.pdf");
        assert_eq!(sanitise_file_name(".."), "upload");
        assert_eq!(sanitise_file_name("a\u{0}b\nc.txt"), "a_b_c.txt");
        assert_eq!(sanitise_file_name(&"x".repeat(500)).len(), MAX_FILE_NAME);
    }
}

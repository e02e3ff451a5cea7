//! api: the REST API behind API Gateway's HTTP API (payload format 2.0).
//! Every route but the OpenAPI document needs a bearer token, and
//! every read and write is scoped to the token's owner: another owner's job
//! is indistinguishable from a missing one (404). Health and the operator
//! routes are the `ops` function's.

mod jobs;
pub mod problem;
mod schedules;
pub mod submit;

use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::Utc;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use prism_shared::app::auth::TokenKey;
use prism_shared::domain::lanes::LaneMapping;
use prism_shared::domain::limits::SizeLimits;
use prism_shared::domain::quotas::Quotas;
use prism_shared::domain::workflow;
use prism_shared::{ConfigError, runtime::config};
use serde::Serialize;

use crate::problem::ApiError;
use crate::submit::{BatchRequest, MAX_BATCH, SubmitRequest};
use prism_shared::app::problem::response;

pub const SOURCE: &str = "api";
/// The OpenAPI 3.1 description of this API, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");
/// Parsed once per cold start, not per request; a test proves it parses.
static OPENAPI_DOC: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| serde_json::from_str(OPENAPI).unwrap_or_else(|e| panic!("openapi.json is not JSON: {e}")));

#[derive(Debug, Clone)]
pub struct Config {
    pub bucket: String,
    pub classify_queue_url: String,
    pub upload_url_ttl: Duration,
    /// Inline text up to this size is processed within the request.
    pub sync_text_max_bytes: u64,
    pub limits: SizeLimits,
    pub token_key: TokenKey,
    /// The owners' quotas where an operator set none of their own (0: no limit).
    pub quotas: Quotas,
    /// The lanes, so a job waiting in a paused one says so (`LANES`, as `ops` reads it).
    pub lanes: Vec<LaneMapping>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            bucket: config::required("BUCKET_NAME")?,
            classify_queue_url: config::required("CLASSIFY_QUEUE_URL")?,
            upload_url_ttl: Duration::from_secs(config::parsed_or("UPLOAD_URL_TTL_SECONDS", 900)?),
            sync_text_max_bytes: config::parsed_or("SYNC_TEXT_MAX_BYTES", 256 * 1024)?,
            limits: SizeLimits::from_env()?,
            lanes: config::lanes()?,
            quotas: config::quota_defaults()?,
            token_key: config::token_key()?,
        })
    }
}

pub type Deps = prism_shared::ports::Deps<Config>;

/// A successful answer: status and JSON body.
type Answer = (u16, serde_json::Value);

pub async fn handle(deps: &Deps, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let route = req.route_key.clone().unwrap_or_default();
    match route_request(deps, &route, &req).await {
        Ok((status, body)) => response(status, "application/json", body.to_string()),
        Err(e) => {
            if e.status() >= 500 {
                tracing::error!(error = %e, error_chain = ?e, %route, "request failed");
            }
            let mut resp = response(e.status(), "application/problem+json", to_value(&e.problem()).to_string());
            if e.status() == 401 {
                resp.headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            if let Some(seconds) = e.retry_after_s() {
                resp.headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            resp
        }
    }
}

async fn route_request(deps: &Deps, route: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    if route == "GET /v1/openapi.json" {
        return Ok((200, OPENAPI_DOC.clone()));
    }
    let authorization = req.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let owner = deps.config.token_key.verify_header(authorization, Utc::now())?.sub;
    let owner = owner.as_str();
    match route {
        "POST /v1/jobs" => {
            let request: SubmitRequest = parse_body(req, true)?;
            let key = req.headers.get("idempotency-key").and_then(|v| v.to_str().ok());
            let (status, resp) = submit::submit(deps, owner, request, key).await?;
            Ok((status, to_value(&resp)))
        }
        "POST /v1/jobs/batch" => {
            let batch: BatchRequest = parse_body(req, false)?;
            if batch.items.is_empty() || batch.items.len() > MAX_BATCH {
                return Err(ApiError::Invalid(format!("a batch holds 1 to {MAX_BATCH} items")));
            }
            // One key for the batch makes each item idempotent under its own
            // derived key, so a retried batch finds the jobs the first made.
            let key = req.headers.get("idempotency-key").and_then(|v| v.to_str().ok());
            let mut results = Vec::with_capacity(batch.items.len());
            for (index, item) in batch.items.into_iter().enumerate() {
                let item_key = key.map(|k| format!("{k}/{index}"));
                let outcome = match serde_json::from_value::<SubmitRequest>(item) {
                    Ok(r) => submit::submit(deps, owner, r, item_key.as_deref()).await,
                    Err(e) => Err(ApiError::from_json(e)),
                };
                results.push(match outcome {
                    Ok((status, resp)) => serde_json::json!({"status": status, "job": resp.job, "upload": resp.upload}),
                    Err(e) => serde_json::json!({"status": e.status(), "problem": e.problem()}),
                });
            }
            Ok((200, serde_json::json!({ "results": results })))
        }
        "POST /v1/workflows/{name}/runs" => {
            let mut request: SubmitRequest = parse_body(req, true)?;
            let name = req.path_parameters.get("name").cloned().unwrap_or_default();
            if request.workflow.as_ref().is_some_and(|w| *w != name) {
                return Err(ApiError::Invalid("the body names another workflow than the path".into()));
            }
            request.workflow = Some(name);
            let key = req.headers.get("idempotency-key").and_then(|v| v.to_str().ok());
            let (status, resp) = submit::submit(deps, owner, request, key).await?;
            Ok((status, to_value(&resp)))
        }
        "GET /v1/workflows" => Ok((200, serde_json::json!({ "workflows": workflow::catalog() }))),
        "GET /v1/runs" => jobs::list_runs(deps, owner, req).await,
        "GET /v1/runs/{id}" => jobs::get_run(deps, owner, req).await,
        "POST /v1/runs/{id}/cancel" => jobs::cancel(deps, owner, req).await,
        "POST /v1/schedules" => schedules::create(deps, owner, req).await,
        "GET /v1/schedules" => schedules::list(deps, owner).await,
        "GET /v1/schedules/{name}" => schedules::get(deps, owner, req).await,
        "DELETE /v1/schedules/{name}" => schedules::delete(deps, owner, req).await,
        "GET /v1/jobs" => jobs::list(deps, owner, req).await,
        "GET /v1/jobs/{id}" => jobs::get(deps, owner, req).await,
        "GET /v1/jobs/{id}/events" => jobs::events(deps, owner, req).await,
        "GET /v1/jobs/{id}/logs" => jobs::logs(deps, owner, req).await,
        "POST /v1/jobs/{id}/cancel" => jobs::cancel(deps, owner, req).await,
        other => Err(ApiError::NoRoute(other.to_owned())),
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_else(|e| unreachable!("response serialisation: {e}"))
}

/// The JSON body; an empty body reads as `{}` where `empty_ok`.
fn parse_body<T: serde::de::DeserializeOwned>(req: &ApiGatewayV2httpRequest, empty_ok: bool) -> Result<T, ApiError> {
    let body = match req.body.as_deref() {
        None => Vec::new(),
        Some(b) if req.is_base64_encoded => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| ApiError::BadRequest(format!("body is not valid base64: {e}")))?
        }
        Some(b) => b.as_bytes().to_vec(),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        if empty_ok {
            return serde_json::from_str("{}").map_err(ApiError::from_json);
        }
        return Err(ApiError::BadRequest("a JSON body is required".into()));
    }
    serde_json::from_slice(&body).map_err(ApiError::from_json)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_parses() {
        assert_eq!(super::OPENAPI_DOC["openapi"], "3.1.0");
    }
}

//! ops: the operator API behind the same HTTP API as `api`. Its routes need
//! a token with the operator scope; an owner's token is refused (403). It is
//! its own function so that only it holds the permissions to pause lanes:
//! the owner-facing `api` cannot.
//!
//! `GET /v1/health` is public; with an operator's token it also shows every
//! lane (paused or not, messages waiting and in flight) and every
//! dependency's circuit breaker.
//!
//! Dead letters: the `dead-letter` function keeps each one in the table
//! before it fails the jobs; they are listed here, and a redrive queues the
//! jobs again (`job.redriven`) and sends the message back to the queue it
//! failed in. A job that ended another way meanwhile is not run again.

mod dead_letters;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::Utc;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use prism_shared::app::auth::{AuthError, Claims, TokenKey, valid_owner};
use prism_shared::app::problem::{Problem, response};
use prism_shared::domain::breakers::{Breaker, Dependency};
use prism_shared::domain::lanes::{self, LaneMapping, LaneStatus, LanesError};
use prism_shared::domain::quotas::{self, OwnerQuota, Quotas};
use std::collections::BTreeMap;

use prism_shared::app::lifecycle::LifecycleError;
use prism_shared::ports::error::ControlError;
use prism_shared::{ConfigError, Retryable, runtime::config};
use prism_shared::{QueueError, StoreError};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Config {
    pub lanes: Vec<LaneMapping>,
    /// The queues a dead letter may be sent back to, by name: the queue URL.
    pub redrive_queues: BTreeMap<String, String>,
    /// The owners' quotas where an operator set none of their own (as `api` reads them).
    pub quota_defaults: Quotas,
    pub token_key: TokenKey,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            lanes: config::lanes()?,
            redrive_queues: dead_letters::parse_queues(&config::required("REDRIVE_QUEUES")?)
                .map_err(|reason| ConfigError::Invalid { name: "REDRIVE_QUEUES", reason })?,
            quota_defaults: config::quota_defaults()?,
            token_key: config::token_key()?,
        })
    }
}

pub type Deps = prism_shared::ports::OpsDeps<Config>;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("this route needs an operator's token")]
    NotOperator,
    #[error("{0}")]
    NoLane(#[from] LanesError),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl OpsError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized(_) => 401,
            Self::NotOperator => 403,
            Self::NoLane(_) | Self::NoRoute(_) => 404,
            Self::BadRequest(_) => 422,
            // A mapping the configuration names is gone, or the role may not
            // touch it: the deployment is wrong, not the request.
            Self::Control(e) if !e.is_retryable() => 500,
            Self::Control(_) => 503,
            Self::Store(e) if !e.is_retryable() => 500,
            Self::Lifecycle(e) if !e.is_retryable() => 500,
            Self::Queue(e) if !e.is_retryable() => 500,
            Self::Store(_) | Self::Lifecycle(_) | Self::Queue(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::NotOperator => "forbidden",
            Self::NoLane(_) => "lane_not_found",
            Self::NoRoute(_) => "no_route",
            Self::BadRequest(_) => "invalid_request",
            Self::Control(e) if !e.is_retryable() => "misconfigured",
            Self::Store(e) if !e.is_retryable() => "corrupt",
            Self::Lifecycle(e) if !e.is_retryable() => "corrupt",
            Self::Queue(e) if !e.is_retryable() => "misconfigured",
            Self::Control(_) | Self::Store(_) | Self::Lifecycle(_) | Self::Queue(_) => "unavailable",
        }
    }
}

pub async fn handle(deps: &Deps, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let route = req.route_key.clone().unwrap_or_default();
    match route_request(deps, &route, &req).await {
        Ok(body) => response(200, "application/json", body.to_string()),
        Err(e) => {
            if e.status() >= 500 {
                tracing::error!(error = %e, error_chain = ?e, %route, "operator request failed");
            }
            let problem = Problem::new(e.code(), e.status(), e.to_string());
            let body = serde_json::to_string(&problem).unwrap_or_else(|e| unreachable!("problem serialisation: {e}"));
            let mut resp = response(e.status(), "application/problem+json", body);
            if e.status() == 401 {
                resp.headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            resp
        }
    }
}

fn claims(deps: &Deps, req: &ApiGatewayV2httpRequest) -> Result<Claims, AuthError> {
    let authorization = req.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    deps.config.token_key.verify_header(authorization, Utc::now())
}

async fn route_request(deps: &Deps, route: &str, req: &ApiGatewayV2httpRequest) -> Result<Value, OpsError> {
    if route == "GET /v1/health" {
        // Anyone may ask whether the API is up; only an operator sees the lanes.
        return Ok(match claims(deps, req) {
            Ok(c) if c.is_operator() => {
                json!({"status": "ok", "lanes": statuses(deps, deps.config.lanes.iter()).await?, "breakers": breakers(deps).await?})
            }
            _ => json!({"status": "ok"}),
        });
    }
    let operator = claims(deps, req)?;
    if !operator.is_operator() {
        return Err(OpsError::NotOperator);
    }
    let lane = || req.path_parameters.get("lane").map(String::as_str).unwrap_or_default();
    match route {
        "GET /v1/ops/lanes" => Ok(json!({"lanes": statuses(deps, deps.config.lanes.iter()).await?})),
        "POST /v1/ops/lanes/{lane}/pause" => set_enabled(deps, &operator, lane(), false).await,
        "POST /v1/ops/lanes/{lane}/resume" => set_enabled(deps, &operator, lane(), true).await,
        "GET /v1/ops/quotas/{owner}" => quota(deps, owner(req)?).await,
        "PUT /v1/ops/quotas/{owner}" => {
            let body = req.body.as_deref().unwrap_or("{}");
            let own: OwnerQuota = serde_json::from_str(body).map_err(|e| OpsError::BadRequest(format!("not a quota: {e}")))?;
            let owner = owner(req)?;
            deps.quotas.set_quota(owner, &own).await?;
            tracing::info!(operator = %operator.sub, owner, ?own, "quota set");
            quota(deps, owner).await
        }
        "GET /v1/ops/dead-letters" => dead_letters::list(deps, query(req, "queue")).await,
        "POST /v1/ops/dead-letters/{queue}/redrive" => {
            let queue = req.path_parameters.get("queue").map(String::as_str).unwrap_or_default();
            dead_letters::redrive(deps, &operator, queue, query(req, "job")).await
        }
        other => Err(OpsError::NoRoute(other.to_owned())),
    }
}

/// Every dependency's breaker; one never changed is closed.
async fn breakers(deps: &Deps) -> Result<Value, OpsError> {
    let stored = deps.breakers.all().await?;
    let all: Vec<Value> = Dependency::ALL
        .iter()
        .map(|&d| {
            let b = stored.iter().find(|b| b.dependency == d).cloned().unwrap_or_else(|| Breaker::closed(d));
            json!({"dependency": d.to_string(), "state": b.state.to_string(), "until": b.until, "opened": b.opened, "last_error": b.last_error})
        })
        .collect();
    Ok(Value::Array(all))
}

fn owner(req: &ApiGatewayV2httpRequest) -> Result<&str, OpsError> {
    let owner = req.path_parameters.get("owner").map(String::as_str).unwrap_or_default();
    if valid_owner(owner) { Ok(owner) } else { Err(OpsError::BadRequest(format!("{owner:?} is not an owner name"))) }
}

/// An owner's quotas: its own settings, those in force, and its bytes today.
async fn quota(deps: &Deps, owner: &str) -> Result<Value, OpsError> {
    let own = deps.quotas.quota(owner).await?;
    let in_force = Quotas::for_owner(deps.config.quota_defaults, own);
    let bytes_today = deps.quotas.bytes_used(owner, quotas::day_of(Utc::now())).await?;
    Ok(json!({"owner": owner, "own": own.unwrap_or_default(), "in_force": in_force, "bytes_today": bytes_today}))
}

fn query<'a>(req: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    req.query_string_parameters.first(name).filter(|v| !v.is_empty())
}

/// Pauses or resumes every lane `target` names (a lane or a whole modality).
async fn set_enabled(deps: &Deps, operator: &Claims, target: &str, enabled: bool) -> Result<Value, OpsError> {
    let chosen = lanes::select(&deps.config.lanes, target)?;
    let changes = chosen.iter().map(|lane| async move {
        let state = deps.lanes.set_enabled(&lane.mapping_id, enabled).await?;
        tracing::info!(operator = %operator.sub, lane = %lane.lane, ?state, enabled, "lane {}", if enabled { "resumed" } else { "paused" });
        Ok::<_, OpsError>(())
    });
    futures::future::try_join_all(changes).await?;
    Ok(json!({"lanes": statuses(deps, chosen.into_iter()).await?}))
}

async fn statuses(deps: &Deps, chosen: impl Iterator<Item = &LaneMapping>) -> Result<Vec<LaneStatus>, OpsError> {
    let reads = chosen.map(|lane| async move {
        let (state, depth) = futures::try_join!(deps.lanes.state(&lane.mapping_id), deps.lanes.depth(&lane.queue_url))?;
        Ok::<_, OpsError>(LaneStatus { lane: lane.lane.clone(), queue_url: lane.queue_url.clone(), state, paused: state.paused(), depth })
    });
    futures::future::try_join_all(reads).await
}

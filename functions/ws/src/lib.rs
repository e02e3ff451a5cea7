//! ws: the WebSocket API's routes (API Gateway WebSocket proxy events).
//!
//! - `$connect` authenticates with the REST API's bearer tokens, from the
//!   `token` query parameter (browsers cannot set headers on a WebSocket) or
//!   the `Authorization` header, and records the connection for two hours.
//! - `subscribe {job_id, after_seq?}` answers with the job's snapshot and every
//!   event after `after_seq`; live events follow from the progress function.
//! - `unsubscribe`, `ping` (answers `pong`), `cancel {job_id}` (as
//!   `POST /v1/jobs/{id}/cancel`), and `$default` answers an error.
//!
//! Answers are pushed through the `@connections` API, like live events, so a
//! client reads one stream of messages; a connection sees only its owner's jobs.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use chrono::Utc;
use prism_shared::app::auth::TokenKey;
use prism_shared::app::lifecycle::{self, LifecycleError};
use prism_shared::app::realtime::{CONNECTION_LIFETIME, ClientMessage, Delivery, DeliveryError, ServerMessage};
use prism_shared::ports::{Connection, Subscription};
use prism_shared::{ConfigError, Job, JobId, StoreError, runtime::config};
use tracing::Instrument;

pub const SOURCE: &str = "ws";

#[derive(Debug, Clone)]
pub struct Config {
    pub token_key: TokenKey,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { token_key: config::token_key()? })
    }
}

pub type Deps = prism_shared::ports::RealtimeDeps<Config>;

/// Failures API Gateway should see as an integration error (the client's
/// message is answered with an internal error); bad requests are answered
/// with an `error` message instead.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("the event has no connection id")]
    NoConnectionId,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

pub async fn handle(deps: &Deps, req: ApiGatewayWebsocketProxyRequest) -> Result<ApiGatewayProxyResponse, WsError> {
    let ctx = &req.request_context;
    let connection_id = ctx.connection_id.clone().ok_or(WsError::NoConnectionId)?;
    let route = ctx.route_key.clone().unwrap_or_default();
    let span = tracing::info_span!("route", %route, connection_id = %connection_id);
    handle_route(deps, &req, &connection_id, &route).instrument(span).await
}

async fn handle_route(
    deps: &Deps,
    req: &ApiGatewayWebsocketProxyRequest,
    connection_id: &str,
    route: &str,
) -> Result<ApiGatewayProxyResponse, WsError> {
    let connection_id = connection_id.to_owned();
    match route {
        "$connect" => connect(deps, &connection_id, req).await,
        "$disconnect" => {
            deps.connections.disconnect(&connection_id).await?;
            Ok(response(200))
        }
        _ => {
            let answer = match serde_json::from_str::<ClientMessage>(req.body.as_deref().unwrap_or_default()) {
                Ok(message) => act(deps, &connection_id, message).await?,
                Err(e) if route == "$default" => Some(ServerMessage::error(
                    "unknown_action",
                    format!("send a JSON object whose action is subscribe, unsubscribe, ping or cancel ({e})"),
                    None,
                )),
                Err(e) => Some(ServerMessage::error("bad_request", format!("{route}: {e}"), None)),
            };
            if let Some(answer) = answer {
                delivery(deps).send(&connection_id, &answer).await?;
            }
            Ok(response(200))
        }
    }
}

fn response(status: i64) -> ApiGatewayProxyResponse {
    let mut resp = ApiGatewayProxyResponse::default();
    resp.status_code = status;
    resp
}

fn delivery(deps: &Deps) -> Delivery<'_> {
    Delivery { jobs: deps.jobs.as_ref(), connections: deps.connections.as_ref(), notifier: deps.notifier.as_ref() }
}

async fn connect(deps: &Deps, connection_id: &str, req: &ApiGatewayWebsocketProxyRequest) -> Result<ApiGatewayProxyResponse, WsError> {
    let now = Utc::now();
    let header = req.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let claims = match req.query_string_parameters.first("token") {
        Some(token) => deps.config.token_key.verify(token, now),
        None => deps.config.token_key.verify_header(header, now),
    };
    let owner = match claims {
        Ok(claims) => claims.sub,
        Err(e) => {
            tracing::info!(error = %e, "connection refused");
            return Ok(response(401));
        }
    };
    let lifetime = i64::try_from(CONNECTION_LIFETIME.as_secs()).unwrap_or(i64::MAX);
    let connection =
        Connection { connection_id: connection_id.to_owned(), owner, connected_at: now, expires_at: now.timestamp() + lifetime };
    deps.connections.connect(&connection).await?;
    Ok(response(200))
}

/// The job if it exists, has not expired and belongs to the connection's owner.
async fn owned_job(deps: &Deps, connection_id: &str, job_id: &JobId) -> Result<Result<(Connection, Job), ServerMessage>, WsError> {
    let Some(connection) = deps.connections.connection(connection_id).await? else {
        return Ok(Err(ServerMessage::error("not_connected", "this connection is not registered; reconnect", None)));
    };
    match deps.jobs.get(job_id).await? {
        Some(job) if job.owner == connection.owner && !job.is_expired(Utc::now()) => Ok(Ok((connection, job))),
        // Another owner's job is indistinguishable from a missing one, as in the REST API.
        _ => Ok(Err(ServerMessage::error("job_not_found", "no such job", Some(job_id.clone())))),
    }
}

/// Carries out a client's message and returns the answer still to push.
async fn act(deps: &Deps, connection_id: &str, message: ClientMessage) -> Result<Option<ServerMessage>, WsError> {
    match message {
        ClientMessage::Ping => Ok(Some(ServerMessage::Pong)),
        ClientMessage::Subscribe { job_id, after_seq, logs } => {
            let (connection, job) = match owned_job(deps, connection_id, &job_id).await? {
                Ok(found) => found,
                Err(refusal) => return Ok(Some(refusal)),
            };
            // Subscribe, then mark the job watched, which also reads the
            // snapshot: every event stored after the mark goes to the fan-out
            // and finds this subscription; every one before it is in the
            // replay (one both replayed and pushed live is dropped by the
            // client as a duplicate).
            let subscription =
                Subscription { connection_id: connection_id.to_owned(), job_id: job_id.clone(), expires_at: connection.expires_at, logs };
            deps.connections.subscribe(&subscription).await?;
            let job = deps.jobs.watch(&job_id).await?.unwrap_or(job);
            let delivery = delivery(deps);
            delivery.send(connection_id, &ServerMessage::Snapshot { job: Box::new(job.clone()) }).await?;
            delivery.replay(&job_id, connection_id, after_seq, job.seq, logs).await?;
            Ok(None)
        }
        ClientMessage::Unsubscribe { job_id } => {
            deps.connections.unsubscribe(connection_id, &job_id).await?;
            Ok(Some(ServerMessage::Unsubscribed { job_id }))
        }
        ClientMessage::Cancel { job_id } => {
            let (_, job) = match owned_job(deps, connection_id, &job_id).await? {
                Ok(found) => found,
                Err(refusal) => return Ok(Some(refusal)),
            };
            let answer = match lifecycle::request_cancel(deps.jobs.as_ref(), &job, SOURCE).await {
                Ok(job) => ServerMessage::CancelRequested { job_id, status: job.status },
                Err(LifecycleError::Refused { job, .. }) => {
                    ServerMessage::error("conflict", format!("job is already {}", job.status), Some(job_id))
                }
                Err(LifecycleError::NotFound(_)) => ServerMessage::error("job_not_found", "no such job", Some(job_id)),
                Err(e) => return Err(e.into()),
            };
            Ok(Some(answer))
        }
    }
}

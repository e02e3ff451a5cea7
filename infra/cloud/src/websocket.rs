//! The WebSocket API gateway: accepts WebSocket connections on
//! `ws://127.0.0.1:PORT/{stage}`, invokes the template's route functions with
//! API Gateway WebSocket proxy events (`$connect`, `$disconnect`, routes
//! selected by `$request.body.<field>`, `$default`), and serves the
//! `@connections` management API (`POST`, `GET`, `DELETE
//! /{stage}/@connections/{id}`) on the same port, so functions push with the
//! real `aws-sdk-apigatewaymanagement` client.
//!
//! API Gateway's limits apply: 128 KB messages, 32 KB frames from clients,
//! 10 minutes idle, 2 hours per connection, and the stage's throttling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest, ApiGatewayWebsocketProxyRequestContext};
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use prism_shared::app::realtime::{CONNECTION_LIFETIME, IDLE_TIMEOUT, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::http_api::TokenBucket;
use crate::provision::WebSocketSpec;
use crate::runtime::FunctionHandle;

/// Close code API Gateway sends when it ends a connection (idle, lifetime, DELETE).
const GOING_AWAY: u16 = 1001;
/// Messages waiting to be written to one client.
const OUTBOX: usize = 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub idle: Duration,
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { idle: IDLE_TIMEOUT, lifetime: CONNECTION_LIFETIME }
    }
}

#[derive(Debug)]
enum Outgoing {
    Data(Bytes),
    Close(&'static str),
}

#[derive(Debug)]
struct Connected {
    outbox: mpsc::Sender<Outgoing>,
    connected_at: DateTime<Utc>,
    last_active: Mutex<DateTime<Utc>>,
    source_ip: String,
    user_agent: Option<String>,
}

impl Connected {
    fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(PoisonError::into_inner) = Utc::now();
    }

    fn idle_for(&self) -> Duration {
        let last = *self.last_active.lock().unwrap_or_else(PoisonError::into_inner);
        (Utc::now() - last).to_std().unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct WsGateway {
    spec: WebSocketSpec,
    functions: HashMap<String, FunctionHandle>,
    account_id: String,
    /// `host:port` this gateway answers on, the `domainName` of its events.
    domain: String,
    limits: Limits,
    throttle: Option<TokenBucket>,
    connections: Mutex<HashMap<String, Arc<Connected>>>,
    shutdown: CancellationToken,
}

impl WsGateway {
    /// `functions` holds a handle for every function the routes name.
    pub fn new(
        spec: WebSocketSpec,
        functions: HashMap<String, FunctionHandle>,
        account_id: String,
        domain: String,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Self {
        let throttle = spec.throttle.map(|(rate, burst)| TokenBucket::new(rate, burst));
        Self { spec, functions, account_id, domain, limits, throttle, connections: Mutex::new(HashMap::new()), shutdown }
    }

    pub fn router(self: Arc<Self>) -> Router {
        let stage = self.spec.stage.clone();
        Router::new()
            .route(&format!("/{stage}"), get(connect))
            .route(&format!("/{stage}/@connections/{{id}}"), post(post_to_connection).get(get_connection).delete(delete_connection))
            .with_state(self)
    }

    /// The ids of the open connections.
    pub fn connection_ids(&self) -> Vec<String> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    fn connection(&self, id: &str) -> Option<Arc<Connected>> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    fn route_function(&self, route_key: &str) -> Option<&FunctionHandle> {
        self.spec.routes.iter().find(|(key, _)| key == route_key).and_then(|(_, function)| self.functions.get(function))
    }

    /// The route a message selects: `$request.body.<field>` if it names a route, else `$default`.
    fn select_route(&self, body: &str) -> Option<String> {
        let field = self.spec.route_selection.strip_prefix("$request.body.")?;
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let selected = field.split('.').try_fold(&value, |v, key| v.get(key))?.as_str()?;
        let is_route = self.spec.routes.iter().any(|(key, _)| key == selected && !key.starts_with('$'));
        is_route.then(|| selected.to_owned())
    }

    fn event(
        &self,
        route_key: &str,
        event_type: &str,
        connection_id: &str,
        connected_at: DateTime<Utc>,
    ) -> ApiGatewayWebsocketProxyRequest {
        let now = Utc::now();
        let mut ctx = ApiGatewayWebsocketProxyRequestContext::default();
        ctx.route_key = Some(route_key.to_owned());
        ctx.event_type = Some(event_type.to_owned());
        ctx.connection_id = Some(connection_id.to_owned());
        ctx.connected_at = connected_at.timestamp_millis();
        ctx.request_time_epoch = now.timestamp_millis();
        ctx.request_time = Some(now.format("%d/%b/%Y:%H:%M:%S %z").to_string());
        ctx.request_id = Some(uuid::Uuid::new_v4().to_string());
        ctx.extended_request_id = ctx.request_id.clone();
        ctx.message_direction = Some("IN".into());
        ctx.stage = Some(self.spec.stage.clone());
        ctx.domain_name = Some(self.domain.clone());
        ctx.apiid = Some(self.spec.api_id.clone());
        ctx.account_id = Some(self.account_id.clone());
        ctx.identity.source_ip = Some("127.0.0.1".into());
        let mut event = ApiGatewayWebsocketProxyRequest::default();
        event.request_context = ctx;
        event
    }

    /// Invokes a route's function; `None` when no function serves the route.
    async fn invoke(&self, route_key: &str, event: &ApiGatewayWebsocketProxyRequest) -> Option<Result<ApiGatewayProxyResponse, String>> {
        let function = self.route_function(route_key)?;
        let payload = match serde_json::to_vec(event) {
            Ok(p) => Bytes::from(p),
            Err(e) => return Some(Err(e.to_string())),
        };
        let result = match function.invoke_unqueued(payload).await {
            Ok(body) => {
                serde_json::from_slice::<ApiGatewayProxyResponse>(&body).map_err(|e| format!("malformed integration response: {e}"))
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &result {
            tracing::warn!(function = %function.name, route = route_key, error = %e, "WebSocket integration failed");
        }
        Some(result)
    }

    fn throttled(&self) -> bool {
        self.throttle.as_ref().is_some_and(|t| !t.try_take())
    }
}

fn new_connection_id() -> String {
    // API Gateway's ids are 16 characters of base64; URL-safe ones keep the management paths plain.
    let raw = uuid::Uuid::new_v4();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw.as_bytes()[..12])
}

async fn connect(State(gw): State<Arc<WsGateway>>, upgrade: WebSocketUpgrade, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    if gw.throttled() {
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
    }
    let connection_id = new_connection_id();
    let connected_at = Utc::now();
    let mut event = gw.event("$connect", "CONNECT", &connection_id, connected_at);
    event.query_string_parameters = query.as_deref().unwrap_or_default().parse().unwrap_or_default();
    event.headers = headers.clone();
    if let Some(answer) = gw.invoke("$connect", &event).await {
        let status = match answer {
            Ok(resp) => u16::try_from(resp.status_code).unwrap_or(500),
            Err(_) => 500,
        };
        if !(200..300).contains(&status) {
            // The handshake fails with the integration's status, as on API Gateway.
            return StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response();
        }
    }
    let (outbox, inbox) = mpsc::channel(OUTBOX);
    let connected = Arc::new(Connected {
        outbox,
        connected_at,
        last_active: Mutex::new(connected_at),
        source_ip: "127.0.0.1".into(),
        user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned),
    });
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| serve_connection(gw, connection_id, connected, inbox, socket))
}

async fn serve_connection(
    gw: Arc<WsGateway>,
    connection_id: String,
    connected: Arc<Connected>,
    mut inbox: mpsc::Receiver<Outgoing>,
    socket: WebSocket,
) {
    connected.touch();
    gw.connections.lock().unwrap_or_else(PoisonError::into_inner).insert(connection_id.clone(), connected.clone());
    let (mut sink, mut stream) = socket.split();
    let lifetime_end = tokio::time::Instant::now() + gw.limits.lifetime;
    let (status, reason) = loop {
        let idle_end = tokio::time::Instant::now() + gw.limits.idle.saturating_sub(connected.idle_for());
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    connected.touch();
                    tokio::spawn(route_message(gw.clone(), connection_id.clone(), connected.clone(), text.to_string()));
                }
                Some(Ok(Message::Binary(bytes))) => {
                    connected.touch();
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    tokio::spawn(route_message(gw.clone(), connection_id.clone(), connected.clone(), text));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    break (frame.as_ref().map_or(1005, |f| i64::from(f.code)), "Client closed".to_owned());
                }
                Some(Err(e)) => break (1009, format!("Client error: {e}")),
                None => break (1006, "Connection lost".to_owned()),
            },
            outgoing = inbox.recv() => match outgoing {
                Some(Outgoing::Data(bytes)) => {
                    connected.touch();
                    let message = match String::from_utf8(bytes.to_vec()) {
                        Ok(text) => Message::Text(text.into()),
                        Err(_) => Message::Binary(bytes),
                    };
                    if sink.send(message).await.is_err() {
                        break (1006, "Connection lost".to_owned());
                    }
                }
                Some(Outgoing::Close(reason)) => {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: GOING_AWAY, reason: reason.into() }))).await;
                    break (i64::from(GOING_AWAY), reason.to_owned());
                }
                None => break (1006, "Connection lost".to_owned()),
            },
            () = tokio::time::sleep_until(idle_end) => {
                if connected.idle_for() >= gw.limits.idle {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: GOING_AWAY, reason: "Idle timeout".into() }))).await;
                    break (i64::from(GOING_AWAY), "Idle timeout".to_owned());
                }
            }
            () = tokio::time::sleep_until(lifetime_end) => {
                let _ = sink.send(Message::Close(Some(CloseFrame { code: GOING_AWAY, reason: "Connection lifetime exceeded".into() }))).await;
                break (i64::from(GOING_AWAY), "Connection lifetime exceeded".to_owned());
            }
            () = gw.shutdown.cancelled() => return,
        }
    };
    gw.connections.lock().unwrap_or_else(PoisonError::into_inner).remove(&connection_id);
    let mut event = gw.event("$disconnect", "DISCONNECT", &connection_id, connected.connected_at);
    event.request_context.disconnect_status_code = Some(status);
    event.request_context.disconnect_reason = Some(reason);
    // Best effort, as on API Gateway: TTL removes what a lost $disconnect leaves.
    let _ = gw.invoke("$disconnect", &event).await;
}

async fn route_message(gw: Arc<WsGateway>, connection_id: String, connected: Arc<Connected>, body: String) {
    let error = |message: &str| {
        let body = serde_json::json!({"message": message, "connectionId": connection_id, "requestId": uuid::Uuid::new_v4().to_string()});
        Outgoing::Data(Bytes::from(body.to_string()))
    };
    if gw.throttled() {
        let _ = connected.outbox.send(error("Too many requests")).await;
        return;
    }
    let route = gw.select_route(&body).unwrap_or_else(|| "$default".to_owned());
    let mut event = gw.event(&route, "MESSAGE", &connection_id, connected.connected_at);
    event.request_context.message_id = Some(uuid::Uuid::new_v4().to_string());
    event.body = Some(body);
    match gw.invoke(&route, &event).await {
        // Route responses are not configured: a successful integration's body is not sent back.
        Some(Ok(_)) => {}
        Some(Err(_)) => {
            let _ = connected.outbox.send(error("Internal server error")).await;
        }
        None => {
            let _ = connected.outbox.send(error("Forbidden")).await;
        }
    }
}

/// An error as the management API's REST-JSON protocol reports it.
fn management_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({ "message": message });
    (status, [("x-amzn-errortype", kind), ("content-type", "application/json")], body.to_string()).into_response()
}

fn gone(id: &str) -> Response {
    management_error(StatusCode::GONE, "GoneException", &format!("connection {id} is gone"))
}

async fn post_to_connection(State(gw): State<Arc<WsGateway>>, Path(id): Path<String>, body: Bytes) -> Response {
    if body.len() > MAX_MESSAGE_BYTES {
        return management_error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException", "message is over 128 KB");
    }
    let Some(connected) = gw.connection(&id) else { return gone(&id) };
    match connected.outbox.send(Outgoing::Data(body)).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(_) => gone(&id),
    }
}

async fn get_connection(State(gw): State<Arc<WsGateway>>, Path(id): Path<String>) -> Response {
    let Some(connected) = gw.connection(&id) else { return gone(&id) };
    let last_active = *connected.last_active.lock().unwrap_or_else(PoisonError::into_inner);
    let body = serde_json::json!({
        "connectedAt": connected.connected_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "lastActiveAt": last_active.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "identity": { "sourceIp": connected.source_ip, "userAgent": connected.user_agent },
    });
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn delete_connection(State(gw): State<Arc<WsGateway>>, Path(id): Path<String>) -> Response {
    let Some(connected) = gw.connection(&id) else { return gone(&id) };
    let _ = connected.outbox.send(Outgoing::Close("Closed by the server")).await;
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Frame;

    use super::*;

    async fn serve(limits: Limits) -> (Arc<WsGateway>, String) {
        let spec = WebSocketSpec {
            api_id: "local".into(),
            route_selection: "$request.body.action".into(),
            stage: "local".into(),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let gw = Arc::new(WsGateway::new(spec, HashMap::new(), "000000000000".into(), addr.clone(), limits, CancellationToken::new()));
        let app = gw.clone().router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (gw, addr)
    }

    async fn open(
        gw: &WsGateway,
        addr: &str,
    ) -> (tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, String) {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/local")).await.expect("connect");
        for _ in 0..100 {
            if let Some(id) = gw.connection_ids().pop() {
                return (socket, id);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("connection never registered");
    }

    #[tokio::test]
    async fn the_management_api_posts_reads_and_closes_connections() {
        let (gw, addr) = serve(Limits::default()).await;
        let (mut socket, id) = open(&gw, &addr).await;
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/local/@connections/{id}");
        assert_eq!(http.post(&url).body(r#"{"type":"pong"}"#).send().await.expect("post").status(), 200);
        assert_eq!(socket.next().await.expect("frame").expect("ok"), Frame::Text(r#"{"type":"pong"}"#.into()));
        let info: serde_json::Value = http.get(&url).send().await.expect("get").json().await.expect("json");
        assert_eq!(info["identity"]["sourceIp"], "127.0.0.1");
        let too_large = http.post(&url).body(vec![b'x'; MAX_MESSAGE_BYTES + 1]).send().await.expect("post");
        assert_eq!(too_large.status(), 413);
        assert_eq!(http.delete(&url).send().await.expect("delete").status(), 204);
        assert!(matches!(socket.next().await.expect("frame").expect("ok"), Frame::Close(Some(f)) if u16::from(f.code) == GOING_AWAY));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let gone = http.post(&url).body("late").send().await.expect("post");
        assert_eq!(gone.status(), 410);
        assert_eq!(gone.headers()["x-amzn-errortype"], "GoneException");
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (gw, addr) = serve(Limits { idle: Duration::from_millis(300), lifetime: Duration::from_secs(60) }).await;
        let (mut socket, _) = open(&gw, &addr).await;
        let started = std::time::Instant::now();
        let frame = socket.next().await.expect("frame").expect("ok");
        assert!(matches!(frame, Frame::Close(Some(ref f)) if f.reason.as_str() == "Idle timeout"), "{frame:?}");
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(gw.connection_ids().is_empty());
    }

    #[tokio::test]
    async fn oversized_client_frames_end_the_connection() {
        let (gw, addr) = serve(Limits::default()).await;
        let (mut socket, _) = open(&gw, &addr).await;
        futures::SinkExt::send(&mut socket, Frame::Text("x".repeat(MAX_FRAME_BYTES + 1).into())).await.expect("send");
        let next = socket.next().await;
        assert!(!matches!(next, Some(Ok(Frame::Text(_)))), "{next:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(gw.connection_ids().is_empty());
    }
}

//! Lambda function URLs (`FunctionUrlConfig`): each function that has one is
//! served on a loopback port of its own. A request becomes the function URL
//! event (payload format 2.0, route `$default`); a `BUFFERED` function's
//! answer is the HTTP API's response shape, a `RESPONSE_STREAM` function's is
//! Lambda's HTTP integration stream — a JSON metadata prelude (status,
//! headers, cookies), eight NUL bytes, then the body, passed on to the client
//! chunk by chunk as the function writes it.

use std::sync::Arc;

use aws_lambda_events::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlRequestContext, LambdaFunctionUrlRequestContextHttpDescription,
};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::provision::InvokeMode;
use crate::runtime::{Answer, FunctionHandle, InvokeError};

/// Lambda's limit on a synchronous request's payload.
const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;
/// What separates a streamed response's metadata prelude from its body.
const PRELUDE_END: [u8; 8] = [0; 8];
/// A prelude larger than this is not one.
const MAX_PRELUDE_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct FunctionUrl {
    pub function: FunctionHandle,
    pub mode: InvokeMode,
    pub account_id: String,
}

pub fn router(url: FunctionUrl) -> Router {
    Router::new().fallback(handle).with_state(Arc::new(url))
}

async fn handle(State(url): State<Arc<FunctionUrl>>, req: Request) -> Response {
    let event = match to_event(&url, req).await {
        Ok(event) => event,
        Err(status) => return status.into_response(),
    };
    let payload = match serde_json::to_vec(&event) {
        Ok(p) => Bytes::from(p),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match url.function.invoke_streaming_unqueued(payload).await {
        Ok(Answer::Streamed(chunks)) if url.mode == InvokeMode::ResponseStream => streamed(chunks).await,
        Ok(Answer::Streamed(mut chunks)) => {
            // A buffered URL reads a streaming function's answer whole.
            let mut body = BytesMut::new();
            while let Some(chunk) = chunks.recv().await {
                body.extend_from_slice(&chunk);
            }
            buffered(&body)
        }
        Ok(Answer::Buffered(body)) => buffered(&body),
        Err(InvokeError::Timeout(_)) => (StatusCode::BAD_GATEWAY, r#"{"Message":"Task timed out"}"#).into_response(),
        // A function URL passes Lambda's throttle on (API Gateway turns it into a 500).
        Err(InvokeError::Throttled { .. }) => {
            (StatusCode::TOO_MANY_REQUESTS, [("x-amzn-errortype", "TooManyRequestsException")], r#"{"Message":"Rate Exceeded."}"#)
                .into_response()
        }
        Err(e) => {
            tracing::warn!(function = %url.function.name, error = %e, "function URL invocation failed");
            (StatusCode::BAD_GATEWAY, r#"{"Message":null}"#).into_response()
        }
    }
}

async fn to_event(url: &FunctionUrl, req: Request) -> Result<LambdaFunctionUrlRequest, StatusCode> {
    let (mut parts, body) = req.into_parts();
    let body = to_bytes(body, MAX_REQUEST_BYTES).await.map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?;
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let now = chrono::Utc::now();

    let mut http = LambdaFunctionUrlRequestContextHttpDescription::default();
    http.method = Some(parts.method.to_string());
    http.path = Some(parts.uri.path().to_owned());
    http.protocol = Some("HTTP/1.1".into());
    http.source_ip = Some("127.0.0.1".into());
    http.user_agent = parts.headers.get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned);

    let mut ctx = LambdaFunctionUrlRequestContext::default();
    ctx.account_id = Some(url.account_id.clone());
    ctx.request_id = Some(uuid::Uuid::new_v4().to_string());
    ctx.apiid = Some("local".into());
    ctx.domain_name = parts.headers.get("host").and_then(|v| v.to_str().ok()).map(str::to_owned);
    ctx.domain_prefix = Some("local".into());
    ctx.time = Some(now.format("%d/%b/%Y:%H:%M:%S %z").to_string());
    ctx.time_epoch = now.timestamp_millis();
    ctx.http = http;

    let mut event = LambdaFunctionUrlRequest::default();
    event.version = Some("2.0".into());
    event.raw_path = Some(parts.uri.path().to_owned());
    event.raw_query_string = Some(raw_query.clone());
    // Repeated parameters are joined with commas, as function URLs do.
    let mut query = std::collections::HashMap::<String, String>::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        query
            .entry(k.into_owned())
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    event.query_string_parameters = query;
    event.cookies = crate::http_api::take_cookies(&mut parts.headers);
    (event.body, event.is_base64_encoded) = crate::http_api::event_body(&body, parts.headers.get("content-type"));
    event.headers = crate::http_api::joined_headers(&parts.headers);
    event.request_context = ctx;
    Ok(event)
}

/// The HTTP response a streamed answer describes: its prelude's status and
/// headers, then every chunk after the prelude as it arrives.
async fn streamed(mut chunks: mpsc::Receiver<Bytes>) -> Response {
    let mut head = BytesMut::new();
    let (prelude, rest) = loop {
        if let Some(at) = head.windows(PRELUDE_END.len()).position(|w| w == PRELUDE_END) {
            let rest = head.split_off(at + PRELUDE_END.len());
            head.truncate(at);
            break (head.freeze(), rest.freeze());
        }
        if head.len() > MAX_PRELUDE_BYTES {
            return (StatusCode::BAD_GATEWAY, r#"{"Message":"the streamed response has no metadata prelude"}"#).into_response();
        }
        match chunks.recv().await {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => return (StatusCode::BAD_GATEWAY, r#"{"Message":"the function ended before its metadata prelude"}"#).into_response(),
        }
    };
    let prelude: serde_json::Value = serde_json::from_slice(&prelude).unwrap_or_default();
    let status = prelude["statusCode"].as_u64().and_then(|s| StatusCode::from_u16(s as u16).ok()).unwrap_or(StatusCode::OK);
    let body = futures::stream::unfold((Some(rest), chunks), |(first, mut chunks)| async move {
        match first {
            Some(rest) if !rest.is_empty() => Some((Ok::<_, std::convert::Infallible>(rest), (None, chunks))),
            _ => chunks.recv().await.map(|chunk| (Ok(chunk), (None, chunks))),
        }
    });
    let mut response = (status, Body::from_stream(body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in prelude["headers"].as_object().into_iter().flatten() {
        if let (Ok(name), Some(Ok(value))) = (name.parse::<HeaderName>(), value.as_str().map(HeaderValue::from_str)) {
            headers.insert(name, value);
        }
    }
    for cookie in prelude["cookies"].as_array().into_iter().flatten().filter_map(|c| c.as_str()) {
        if let Ok(v) = HeaderValue::from_str(cookie) {
            headers.append(HeaderName::from_static("set-cookie"), v);
        }
    }
    response
}

/// A buffered answer, read as the HTTP API reads one (the same payload 2.0
/// format); one it cannot read is a 502, as a function URL gives it.
fn buffered(body: &[u8]) -> Response {
    crate::http_api::proxy_response(body).unwrap_or_else(|| (StatusCode::BAD_GATEWAY, r#"{"Message":null}"#).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(response: Response) -> (u16, Vec<String>, Bytes) {
        let status = response.status().as_u16();
        let cookies = response.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
        (status, cookies, axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body"))
    }

    #[tokio::test]
    async fn a_buffered_answer_is_read_as_payload_two_point_zero() {
        let full = buffered(br#"{"statusCode":201,"cookies":["a=b","c=d"],"body":"made"}"#);
        assert_eq!(read(full).await, (201, vec!["a=b".to_owned(), "c=d".to_owned()], Bytes::from_static(b"made")));
        let bare = buffered(br#""Hello from Lambda!""#);
        assert_eq!(read(bare).await, (200, Vec::new(), Bytes::from_static(b"Hello from Lambda!")), "an answer without a status");
        let unreadable = buffered(br#"{"statusCode":"soon"}"#);
        assert_eq!(read(unreadable).await.0, 502);
    }

    #[tokio::test]
    async fn a_streamed_answer_gives_its_prelude_as_the_head_and_the_rest_as_the_body_even_split_across_chunks() {
        let (tx, rx) = mpsc::channel(8);
        let prelude = br#"{"statusCode":404,"headers":{"content-type":"text/event-stream"},"cookies":["a=b"]}"#;
        tx.send(Bytes::from_static(&prelude[..20])).await.expect("send");
        let mut middle = prelude[20..].to_vec();
        middle.extend_from_slice(&[0; 5]);
        tx.send(Bytes::from(middle)).await.expect("send");
        tx.send(Bytes::from_static(b"\0\0\0data: 1\n\n")).await.expect("send");
        tx.send(Bytes::from_static(b"data: 2\n\n")).await.expect("send");
        drop(tx);
        let response = streamed(rx).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["set-cookie"], "a=b");
        let body = to_bytes(response.into_body(), 1024).await.expect("body");
        assert_eq!(&body[..], b"data: 1\n\ndata: 2\n\n");
    }
}

//! The HTTP API gateway: matches requests against the template's `HttpApi`
//! routes and invokes the function with an API Gateway v2 (payload format
//! 2.0) event, then turns its response back into HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::apigw::{
    ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext, ApiGatewayV2httpRequestContextHttpDescription, ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body;
use axum::Router;
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use crate::provision::HttpRoute;
use crate::runtime::{FunctionHandle, InvokeError};

/// API Gateway's payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;

#[derive(Debug)]
pub struct Gateway {
    pub routes: Vec<(HttpRoute, FunctionHandle)>,
    pub stage: String,
    pub account_id: String,
    pub throttle: Option<TokenBucket>,
}

/// API Gateway's stage throttling: `rate` requests per second with bursts of `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, state: std::sync::Mutex::new((burst, std::time::Instant::now())) }
    }

    /// Takes a token if one is left.
    pub fn try_take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        let now = std::time::Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub fn router(gateway: Gateway) -> Router {
    Router::new().fallback(handle).with_state(Arc::new(gateway))
}

/// Matches a path against a template like `/v1/jobs/{id}`, returning its parameters.
pub fn match_path(template: &str, path: &str) -> Option<HashMap<String, String>> {
    let mut params = HashMap::new();
    let (t, p): (Vec<&str>, Vec<&str>) = (template.trim_matches('/').split('/').collect(), path.trim_matches('/').split('/').collect());
    if let Some(last) = t.last()
        && let Some(name) = last.strip_prefix('{').and_then(|n| n.strip_suffix("+}"))
    {
        // A greedy `{proxy+}` takes the rest of the path.
        if p.len() < t.len() {
            return None;
        }
        for (ts, ps) in t.iter().zip(&p).take(t.len() - 1) {
            segment(ts, ps, &mut params)?;
        }
        params.insert(name.to_owned(), p[t.len() - 1..].join("/"));
        return Some(params);
    }
    if t.len() != p.len() {
        return None;
    }
    for (ts, ps) in t.iter().zip(&p) {
        segment(ts, ps, &mut params)?;
    }
    Some(params)
}

fn segment(template: &str, actual: &str, params: &mut HashMap<String, String>) -> Option<()> {
    match template.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
        Some(name) if !actual.is_empty() => {
            params.insert(name.to_owned(), urlencoding::decode(actual).ok()?.into_owned());
            Some(())
        }
        Some(_) => None,
        None => (template == actual).then_some(()),
    }
}

async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    if gw.throttle.as_ref().is_some_and(|t| !t.try_take()) {
        return (StatusCode::TOO_MANY_REQUESTS, [("content-type", "application/json")], r#"{"message":"Too Many Requests"}"#)
            .into_response();
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    // Literal routes win over parameterised ones, as in API Gateway.
    let mut candidates: Vec<_> = gw
        .routes
        .iter()
        .filter(|(r, _)| r.method == method || r.method == "ANY")
        .filter_map(|(r, f)| match_path(&r.path, &path).map(|p| (r, f, p)))
        .collect();
    candidates.sort_by_key(|(_, _, p)| p.len());
    let Some((route, function, params)) = candidates.into_iter().next() else {
        return (StatusCode::NOT_FOUND, [("content-type", "application/json")], r#"{"message":"Not Found"}"#).into_response();
    };
    let event = match to_event(&gw, route, params, req).await {
        Ok(e) => e,
        Err(status) => return status.into_response(),
    };
    let payload = match serde_json::to_vec(&event) {
        Ok(p) => Bytes::from(p),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match function.invoke(payload).await {
        Ok(body) => from_lambda(&body),
        Err(InvokeError::Timeout(_)) => (StatusCode::GATEWAY_TIMEOUT, r#"{"message":"Endpoint request timed out"}"#).into_response(),
        Err(e) => {
            tracing::warn!(function = %function.name, error = %e, "integration failed");
            (StatusCode::INTERNAL_SERVER_ERROR, r#"{"message":"Internal Server Error"}"#).into_response()
        }
    }
}

async fn to_event(
    gw: &Gateway,
    route: &HttpRoute,
    params: HashMap<String, String>,
    req: Request,
) -> Result<ApiGatewayV2httpRequest, StatusCode> {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, MAX_BODY).await.map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?;
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let route_key = format!("{} {}", route.method, route.path);
    let now = chrono::Utc::now();

    let mut http = ApiGatewayV2httpRequestContextHttpDescription::default();
    http.method = parts.method.clone();
    http.path = Some(parts.uri.path().to_owned());
    http.protocol = Some("HTTP/1.1".into());
    http.source_ip = Some("127.0.0.1".into());
    http.user_agent = parts.headers.get("user-agent").and_then(|v| v.to_str().ok()).map(str::to_owned);

    let mut ctx = ApiGatewayV2httpRequestContext::default();
    ctx.route_key = Some(route_key.clone());
    ctx.account_id = Some(gw.account_id.clone());
    ctx.stage = Some(gw.stage.clone());
    ctx.request_id = Some(uuid::Uuid::new_v4().to_string());
    ctx.apiid = Some("local".into());
    ctx.domain_name = parts.headers.get("host").and_then(|v| v.to_str().ok()).map(str::to_owned);
    ctx.time = Some(now.format("%d/%b/%Y:%H:%M:%S %z").to_string());
    ctx.time_epoch = now.timestamp_millis();
    ctx.http = http;

    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".into());
    event.route_key = Some(route_key);
    event.raw_path = Some(parts.uri.path().to_owned());
    event.raw_query_string = Some(raw_query.clone());
    event.query_string_parameters = raw_query.parse().unwrap_or_default();
    event.path_parameters = params;
    event.headers = parts.headers;
    event.request_context = ctx;
    if !body.is_empty() {
        match std::str::from_utf8(&body) {
            Ok(text) => event.body = Some(text.to_owned()),
            Err(_) => {
                event.body = Some(BASE64.encode(&body));
                event.is_base64_encoded = true;
            }
        }
    }
    Ok(event)
}

fn from_lambda(body: &[u8]) -> Response {
    let Ok(resp) = serde_json::from_slice::<ApiGatewayV2httpResponse>(body) else {
        return (StatusCode::BAD_GATEWAY, r#"{"message":"Malformed Lambda proxy response"}"#).into_response();
    };
    let status = u16::try_from(resp.status_code).ok().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = match resp.body {
        Some(Body::Text(t)) if resp.is_base64_encoded => BASE64.decode(t).unwrap_or_default(),
        Some(Body::Text(t)) => t.into_bytes(),
        Some(Body::Binary(b)) => b,
        _ => Vec::new(),
    };
    let mut out = (status, bytes).into_response();
    for (name, value) in resp.headers.iter() {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    for cookie in resp.cookies {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            out.headers_mut().append(HeaderName::from_static("set-cookie"), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_past_the_burst() {
        let bucket = TokenBucket::new(1.0, 3.0);
        assert_eq!((0..5).filter(|_| bucket.try_take()).count(), 3);
    }

    #[test]
    fn matches_paths_with_parameters() {
        assert_eq!(match_path("/v1/jobs", "/v1/jobs"), Some(HashMap::new()));
        let p = match_path("/v1/jobs/{id}", "/v1/jobs/abc").expect("match");
        assert_eq!(p["id"], "abc");
        assert_eq!(match_path("/v1/jobs/{id}", "/v1/jobs/abc/events"), None);
        assert_eq!(match_path("/v1/jobs/{id}", "/v1/jobs/"), None);
        let greedy = match_path("/files/{proxy+}", "/files/a/b").expect("match");
        assert_eq!(greedy["proxy"], "a/b");
    }
}

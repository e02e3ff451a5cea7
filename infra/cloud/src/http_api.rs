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
    /// The API's `CorsConfiguration`, when it has one.
    pub cors: Option<Cors>,
}

/// An HTTP API's CORS settings, answered as API Gateway answers them: it
/// replies to preflight `OPTIONS` requests itself (no route or function is
/// involved) and adds the allow headers to every response for an allowed origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age_s: Option<u64>,
}

impl Cors {
    /// From the template's `CorsConfiguration` (a list of strings per setting).
    pub fn from_template(config: &serde_json::Value) -> Self {
        let list = |key: &str| -> Vec<String> {
            config
                .get(key)
                .and_then(serde_json::Value::as_array)
                .map_or_else(Vec::new, |values| values.iter().filter_map(serde_json::Value::as_str).map(str::to_owned).collect())
        };
        Self {
            allow_origins: list("AllowOrigins"),
            allow_methods: list("AllowMethods"),
            allow_headers: list("AllowHeaders"),
            expose_headers: list("ExposeHeaders"),
            max_age_s: config.get("MaxAge").and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok())),
        }
    }

    /// The `access-control-allow-origin` value for a request from `origin`, if allowed.
    fn allowed_origin(&self, origin: &str) -> Option<HeaderValue> {
        if self.allow_origins.iter().any(|o| o == "*") {
            return Some(HeaderValue::from_static("*"));
        }
        self.allow_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)).then(|| HeaderValue::from_str(origin).ok()).flatten()
    }

    fn allows(list: &[String], wanted: &str) -> bool {
        list.iter().any(|v| v == "*" || v.eq_ignore_ascii_case(wanted))
    }

    /// The answer to a preflight request, or `None` when `req` is not one.
    fn preflight(&self, req: &Request) -> Option<Response> {
        let headers = req.headers();
        let requested_method = headers.get("access-control-request-method")?.to_str().ok()?;
        if req.method() != axum::http::Method::OPTIONS {
            return None;
        }
        let origin = headers.get("origin").and_then(|o| o.to_str().ok()).and_then(|o| self.allowed_origin(o));
        let requested_headers = headers.get("access-control-request-headers").and_then(|h| h.to_str().ok()).unwrap_or_default();
        let headers_allowed =
            requested_headers.split(',').map(str::trim).filter(|h| !h.is_empty()).all(|h| Self::allows(&self.allow_headers, h));
        let mut resp = StatusCode::NO_CONTENT.into_response();
        // A refused preflight is an answer without the allow headers: the browser stops there.
        if let Some(origin) = origin.filter(|_| headers_allowed && Self::allows(&self.allow_methods, requested_method)) {
            let out = resp.headers_mut();
            out.insert("access-control-allow-origin", origin);
            for (name, values) in
                [("access-control-allow-methods", &self.allow_methods), ("access-control-allow-headers", &self.allow_headers)]
            {
                if let Ok(value) = HeaderValue::from_str(&values.join(",")) {
                    out.insert(name, value);
                }
            }
            if let Some(max_age) = self.max_age_s {
                out.insert("access-control-max-age", HeaderValue::from(max_age));
            }
        }
        Some(resp)
    }

    /// Adds the allow headers to a response to a request from `origin`.
    fn decorate(&self, origin: Option<&HeaderValue>, resp: &mut Response) {
        let Some(allowed) = origin.and_then(|o| o.to_str().ok()).and_then(|o| self.allowed_origin(o)) else { return };
        resp.headers_mut().insert("access-control-allow-origin", allowed);
        if !self.expose_headers.is_empty()
            && let Ok(value) = HeaderValue::from_str(&self.expose_headers.join(","))
        {
            resp.headers_mut().insert("access-control-expose-headers", value);
        }
    }
}

/// API Gateway's stage throttling: `rate` requests per second with bursts of `burst`.
#[derive(Debug)]
pub struct TokenBucket(governor::DefaultDirectRateLimiter);

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        // The template's limits are positive numbers; nonsense falls back to one a second.
        let period = std::time::Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let burst = std::num::NonZeroU32::new(burst.max(1.0) as u32).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::with_period(period).unwrap_or(governor::Quota::per_second(std::num::NonZeroU32::MIN));
        Self(governor::RateLimiter::direct(quota.allow_burst(burst)))
    }

    /// Takes a token if one is left.
    pub fn try_take(&self) -> bool {
        self.0.check().is_ok()
    }
}

/// The routes by method, each a path router (literal segments win over
/// parameters, as in API Gateway); `ANY` routes answer every method.
#[derive(Debug, Default)]
struct RouteTable {
    by_method: HashMap<String, matchit::Router<usize>>,
}

impl RouteTable {
    /// From `(method, path template)` pairs; a route is known by its index.
    fn new<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> anyhow::Result<Self> {
        let mut table = Self::default();
        for (i, (method, path)) in routes.into_iter().enumerate() {
            table.by_method.entry(method.to_owned()).or_default().insert(matchit_template(path), i)?;
        }
        Ok(table)
    }

    /// The index of the route for `method` and `path`, with its path parameters (decoded).
    fn find(&self, method: &str, path: &str) -> Option<(usize, HashMap<String, String>)> {
        let found = [method, "ANY"].into_iter().find_map(|m| self.by_method.get(m)?.at(path).ok())?;
        let mut params = HashMap::new();
        for (name, value) in found.params.iter() {
            params.insert(name.to_owned(), urlencoding::decode(value).ok()?.into_owned());
        }
        Some((*found.value, params))
    }
}

/// API Gateway's `{proxy+}` (the rest of the path) is matchit's `{*proxy}`.
fn matchit_template(path: &str) -> String {
    match path.rsplit_once('{') {
        Some((head, tail)) if tail.ends_with("+}") => format!("{head}{{*{}}}", tail.trim_end_matches("+}")),
        _ => path.to_owned(),
    }
}

#[derive(Debug)]
struct Routed {
    gateway: Gateway,
    table: RouteTable,
}

pub fn router(gateway: Gateway) -> anyhow::Result<Router> {
    let table = RouteTable::new(gateway.routes.iter().map(|(r, _)| (r.method.as_str(), r.path.as_str())))?;
    Ok(Router::new().fallback(handle).with_state(Arc::new(Routed { gateway, table })))
}

async fn handle(State(routed): State<Arc<Routed>>, req: Request) -> Response {
    let Some(cors) = &routed.gateway.cors else { return handle_route(&routed, req).await };
    if let Some(answer) = cors.preflight(&req) {
        return answer;
    }
    let origin = req.headers().get("origin").cloned();
    let mut resp = handle_route(&routed, req).await;
    cors.decorate(origin.as_ref(), &mut resp);
    resp
}

async fn handle_route(routed: &Routed, req: Request) -> Response {
    let gw = &routed.gateway;
    if gw.throttle.as_ref().is_some_and(|t| !t.try_take()) {
        return (StatusCode::TOO_MANY_REQUESTS, [("content-type", "application/json")], r#"{"message":"Too Many Requests"}"#)
            .into_response();
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let Some(((route, function), params)) = routed.table.find(&method, &path).map(|(i, params)| (&gw.routes[i], params)) else {
        return (StatusCode::NOT_FOUND, [("content-type", "application/json")], r#"{"message":"Not Found"}"#).into_response();
    };
    let event = match to_event(gw, route, params, req).await {
        Ok(e) => e,
        Err(status) => return status.into_response(),
    };
    let payload = match serde_json::to_vec(&event) {
        Ok(p) => Bytes::from(p),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match function.invoke_unqueued(payload).await {
        Ok(body) => from_lambda(&body),
        Err(InvokeError::Timeout(_)) => (StatusCode::GATEWAY_TIMEOUT, r#"{"message":"Endpoint request timed out"}"#).into_response(),
        // The event (body, headers and all) is over Lambda's 6 MB, though under API Gateway's 10 MB.
        Err(InvokeError::RequestTooLarge { .. }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, r#"{"message":"Request Entity Too Large"}"#).into_response()
        }
        // Lambda's throttle too: API Gateway answers it with a 500, as any failed integration.
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
    (event.body, event.is_base64_encoded) = event_body(&body);
    Ok(event)
}

/// A request body as a Lambda HTTP event carries it: text as is, anything
/// else base64-encoded (`isBase64Encoded`), nothing for an empty body.
pub(crate) fn event_body(body: &[u8]) -> (Option<String>, bool) {
    match std::str::from_utf8(body) {
        _ if body.is_empty() => (None, false),
        Ok(text) => (Some(text.to_owned()), false),
        Err(_) => (Some(BASE64.encode(body)), true),
    }
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
    fn routes_match_by_method_with_literals_first_and_decoded_parameters() {
        let routes = [("POST", "/v1/jobs"), ("GET", "/v1/jobs/{id}"), ("GET", "/v1/jobs/batch"), ("ANY", "/files/{proxy+}")];
        let table = RouteTable::new(routes).expect("table");
        assert_eq!(table.find("POST", "/v1/jobs"), Some((0, HashMap::new())));
        assert_eq!(table.find("GET", "/v1/jobs"), None, "no GET route there");
        assert_eq!(table.find("GET", "/v1/jobs/a%20b"), Some((1, HashMap::from([("id".into(), "a b".into())]))));
        assert_eq!(table.find("GET", "/v1/jobs/batch").map(|(i, _)| i), Some(2), "the literal route wins");
        assert_eq!(table.find("GET", "/v1/jobs/abc/events"), None);
        assert_eq!(table.find("DELETE", "/files/a/b"), Some((3, HashMap::from([("proxy".into(), "a/b".into())]))));
    }

    #[test]
    fn api_gateway_templates_become_matchit_ones() {
        assert_eq!(matchit_template("/v1/jobs/{id}"), "/v1/jobs/{id}");
        assert_eq!(matchit_template("/files/{proxy+}"), "/files/{*proxy}");
    }
}

#[cfg(test)]
mod cors_tests {
    use super::*;

    fn cors() -> Cors {
        Cors::from_template(&serde_json::json!({
            "AllowOrigins": ["*"],
            "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["authorization", "content-type"],
            "ExposeHeaders": ["retry-after"],
            "MaxAge": 600
        }))
    }

    fn preflight(method: &str, headers: &str) -> Request {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/jobs")
            .header("origin", "http://127.0.0.1:9000")
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .body(axum::body::Body::empty())
            .expect("request")
    }

    #[test]
    fn preflights_are_answered_by_the_gateway_with_what_the_template_allows() {
        let answer = cors().preflight(&preflight("POST", "Authorization, Content-Type")).expect("a preflight");
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        let h = answer.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["access-control-allow-methods"], "GET,POST");
        assert_eq!(h["access-control-allow-headers"], "authorization,content-type");
        assert_eq!(h["access-control-max-age"], "600");
    }

    #[test]
    fn a_method_or_header_not_allowed_gets_an_answer_without_allow_headers() {
        for (method, headers) in [("DELETE", "authorization"), ("POST", "authorization, x-secret")] {
            let answer = cors().preflight(&preflight(method, headers)).expect("a preflight");
            assert!(answer.headers().get("access-control-allow-origin").is_none(), "{method} {headers}");
        }
    }

    #[test]
    fn only_options_with_a_requested_method_is_a_preflight_and_responses_name_the_origin() {
        let plain_options = Request::builder().method("OPTIONS").uri("/v1/jobs").body(axum::body::Body::empty()).expect("request");
        assert!(cors().preflight(&plain_options).is_none());

        let listed = Cors { allow_origins: vec!["http://dash.example".into()], ..cors() };
        let mut resp = StatusCode::OK.into_response();
        listed.decorate(Some(&HeaderValue::from_static("http://dash.example")), &mut resp);
        assert_eq!(resp.headers()["access-control-allow-origin"], "http://dash.example");
        assert_eq!(resp.headers()["access-control-expose-headers"], "retry-after");
        let mut other = StatusCode::OK.into_response();
        listed.decorate(Some(&HeaderValue::from_static("http://evil.example")), &mut other);
        assert!(other.headers().get("access-control-allow-origin").is_none());
    }
}

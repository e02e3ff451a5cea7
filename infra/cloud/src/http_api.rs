//! The HTTP API gateway: matches requests under the API's stage against the
//! template's `HttpApi` routes and invokes the function with an API Gateway
//! v2 (payload format 2.0) event, then turns its response back into HTTP.
//! Where AWS's HTTP APIs differ from REST APIs (cookies in their own field,
//! a repeated header's values joined with commas, bodies base64 unless
//! their content type is text, 500 for any failed integration, 503 past the
//! integration timeout, an answer without a status taken as a 200), it
//! behaves as the HTTP API does.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext, ApiGatewayV2httpRequestContextHttpDescription};
use axum::Router;
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use crate::provision::HttpRoute;
use crate::runtime::{FunctionHandle, InvokeError};

/// API Gateway's payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;
/// An HTTP API's longest (and default) integration timeout.
pub const MAX_INTEGRATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug)]
pub struct Gateway {
    pub routes: Vec<(HttpRoute, FunctionHandle)>,
    /// The API's `StageName`: the first segment of every path it serves,
    /// unless it is [`DEFAULT_STAGE`], which is served at the root.
    pub stage: String,
    pub account_id: String,
    pub throttle: Option<TokenBucket>,
    /// The API's `CorsConfiguration`, when it has one.
    pub cors: Option<Cors>,
}

/// The stage an HTTP API without a `StageName` gets, served at the root.
pub const DEFAULT_STAGE: &str = "$default";

impl Gateway {
    /// The path the routes match: what follows `/{stage}`, or the whole
    /// path for the default stage; `None` outside the stage.
    fn route_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.stage == DEFAULT_STAGE {
            return Some(path);
        }
        match path.strip_prefix('/')?.strip_prefix(self.stage.as_str())? {
            "" => Some("/"),
            rest if rest.starts_with('/') => Some(rest),
            _ => None,
        }
    }

    /// The API's invoke URL on `origin` (`http://host:port`), as the
    /// template's outputs give it on AWS: with the stage unless it is the default.
    pub fn invoke_url(&self, origin: &str) -> String {
        if self.stage == DEFAULT_STAGE { origin.to_owned() } else { format!("{origin}/{}", self.stage) }
    }
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
        return answer(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    }
    let method = req.method().as_str().to_owned();
    let found = gw.route_path(req.uri().path()).and_then(|path| routed.table.find(&method, path));
    let Some(((route, function), params)) = found.map(|(i, params)| (&gw.routes[i], params)) else {
        return answer(StatusCode::NOT_FOUND, "Not Found");
    };
    let Ok(event) = to_event(gw, route, params, req).await else {
        return answer(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let Ok(payload) = serde_json::to_vec(&event) else { return internal_error() };
    // Past the integration's timeout the client is answered while the
    // function runs on (its instance stays busy until it is done), as on AWS.
    let invoked = tokio::time::timeout(route.timeout, function.invoke_unqueued(Bytes::from(payload))).await;
    match invoked {
        Ok(Ok(body)) => from_lambda(&body),
        Err(_) => {
            tracing::warn!(function = %function.name, timeout = ?route.timeout, "integration timed out");
            answer(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        }
        // The event (body, headers and all) is over Lambda's 6 MB, though under API Gateway's 10 MB.
        Ok(Err(InvokeError::RequestTooLarge { .. })) => answer(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
        // A function error, its own timeout, a crash and Lambda's throttle
        // alike: an HTTP API answers any failed integration with a 500.
        Ok(Err(e)) => {
            tracing::warn!(function = %function.name, error = %e, "integration failed");
            internal_error()
        }
    }
}

/// API Gateway's own answers: a JSON body with a `message`.
fn answer(status: StatusCode, message: &'static str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    (status, [("content-type", "application/json")], body).into_response()
}

fn internal_error() -> Response {
    answer(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

async fn to_event(
    gw: &Gateway,
    route: &HttpRoute,
    params: HashMap<String, String>,
    req: Request,
) -> Result<ApiGatewayV2httpRequest, axum::Error> {
    let (mut parts, body) = req.into_parts();
    // Over API Gateway's own limit.
    let body = to_bytes(body, MAX_BODY).await?;
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let route_key = format!("{} {}", route.method, route.path);
    let now = chrono::Utc::now();

    // Both paths keep the stage: `/dev/v1/jobs` for the route `/v1/jobs`.
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
    event.cookies = take_cookies(&mut parts.headers);
    (event.body, event.is_base64_encoded) = event_body(&body, parts.headers.get("content-type"));
    event.headers = joined_headers(&parts.headers);
    event.request_context = ctx;
    Ok(event)
}

/// A payload 2.0 event's `cookies`: every pair of the request's `cookie`
/// headers, which leave the headers.
pub(crate) fn take_cookies(headers: &mut HeaderMap) -> Option<Vec<String>> {
    let cookies: Vec<String> = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(str::to_owned)
        .collect();
    headers.remove("cookie");
    (!cookies.is_empty()).then_some(cookies)
}

/// The headers as a payload 2.0 event carries them: one value each, a
/// repeated header's values joined with commas. (The event type would
/// serialise only the first.)
pub(crate) fn joined_headers(headers: &HeaderMap) -> HeaderMap {
    let mut joined = HeaderMap::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let values: Vec<&[u8]> = headers.get_all(name).iter().map(HeaderValue::as_bytes).collect();
        if let Ok(value) = HeaderValue::from_bytes(&values.join(&b","[..])) {
            joined.insert(name.clone(), value);
        }
    }
    joined
}

/// A request body as a Lambda HTTP event carries it: as text when its
/// content type is text (`text/*`, JSON, XML, JavaScript), base64-encoded
/// (`isBase64Encoded`) otherwise, forms and unlabelled bodies included,
/// whatever their bytes; nothing for an empty body. Text that is not UTF-8
/// goes as base64 too, since a JSON event cannot carry it.
pub(crate) fn event_body(body: &[u8], content_type: Option<&HeaderValue>) -> (Option<String>, bool) {
    let text = content_type.and_then(|v| v.to_str().ok()).is_some_and(is_text_type);
    match std::str::from_utf8(body) {
        _ if body.is_empty() => (None, false),
        Ok(text_body) if text => (Some(text_body.to_owned()), false),
        _ => (Some(BASE64.encode(body)), true),
    }
}

fn is_text_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    kind == "text"
        || (kind == "application"
            && (matches!(subtype, "json" | "xml" | "javascript") || subtype.ends_with("+json") || subtype.ends_with("+xml")))
}

/// A payload 2.0 response; only `statusCode` is required (the SDK's type
/// wants `cookies` too, which API Gateway does not).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProxyResponse {
    status_code: u16,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    cookies: Vec<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
}

/// The function's answer as an HTTP API gives it to the client; an answer
/// API Gateway cannot read is a 500.
fn from_lambda(body: &[u8]) -> Response {
    proxy_response(body).unwrap_or_else(internal_error)
}

/// A payload 2.0 answer as HTTP: its status, headers, cookies (each a
/// `set-cookie`) and body. An answer without a `statusCode` is a 200 whose
/// JSON body is the answer (a string's text, anything else as returned).
/// `None` for an answer that cannot be read: each caller says how its
/// service fails it.
pub(crate) fn proxy_response(body: &[u8]) -> Option<Response> {
    let value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    if value.get("statusCode").is_none() {
        let body = match value {
            serde_json::Value::String(text) => text.into_bytes(),
            _ => body.to_vec(),
        };
        return Some((StatusCode::OK, [("content-type", "application/json")], body).into_response());
    }
    let resp = serde_json::from_value::<ProxyResponse>(value).ok()?;
    let status = StatusCode::from_u16(resp.status_code).ok()?;
    let bytes = match resp.body {
        Some(text) if resp.is_base64_encoded => BASE64.decode(text).ok()?,
        Some(text) => text.into_bytes(),
        None => Vec::new(),
    };
    let mut out = (status, bytes).into_response();
    for (name, value) in &resp.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            out.headers_mut().insert(name, value);
        }
    }
    for cookie in resp.cookies {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            out.headers_mut().append(HeaderName::from_static("set-cookie"), v);
        }
    }
    Some(out)
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

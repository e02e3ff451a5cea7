//! The HTTP API gateway against functions whose runtime is a script: the
//! event it forms (the stage in the path, cookies, bodies by content type)
//! and its answers when a function fails, times out or answers oddly, each
//! as API Gateway's HTTP APIs give them.

use std::time::{Duration, Instant};

use prism_cloud::http_api::{Gateway, router};
use prism_cloud::provision::{FunctionSpec, HttpRoute};
use prism_cloud::runtime::start_function;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod common;
use common::{env_for, runtime_dir, spec};

/// One runtime for every function here; what it does depends on the
/// function's name. `echo` answers with the event it was given (base64, so
/// the shell need not quote JSON).
const GATEWAY_RUNTIME: &str = r#"#!/usr/bin/env bash
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
while true; do
  work=$(mktemp)
  curl -sS -D "$work.headers" -o "$work.event" "$api/invocation/next"
  id=$(grep -i '^lambda-runtime-aws-request-id:' "$work.headers" | cut -d' ' -f2 | tr -d '\r')
  case "$AWS_LAMBDA_FUNCTION_NAME" in
    echo) printf '{"statusCode":200,"isBase64Encoded":true,"body":"%s"}' "$(base64 -w0 < "$work.event")" > "$work" ;;
    string) printf '"Hello from Lambda!"' > "$work" ;;
    object) printf '{"hello":"world"}' > "$work" ;;
    malformed) printf '{"statusCode":"soon"}' > "$work" ;;
    failing) curl -sS -X POST -d '{"errorType":"Boom","errorMessage":"asked to fail"}' "$api/invocation/$id/error" >/dev/null
      rm -f "$work" "$work.headers" "$work.event"; continue ;;
    *) sleep 3; printf '{"statusCode":204}' > "$work" ;;
  esac
  curl -sS -X POST --data-binary @"$work" "$api/invocation/$id/response" >/dev/null
  rm -f "$work" "$work.headers" "$work.event"
done
"#;

/// The gateway on a loopback port with one route per function, the stage
/// `dev`; `slow`'s integration times out after 500 ms, `hang`'s function
/// after 1 s. Returns the base URL (without the stage).
async fn gateway(shutdown: &CancellationToken) -> String {
    let dir = runtime_dir("gateway-runtime", GATEWAY_RUNTIME);
    let env = env_for(&dir, shutdown);
    let mut routes = Vec::new();
    for (name, method, path, function_timeout, integration_timeout) in [
        ("echo", "ANY", "/v1/echo/{id}", 5, 30_000),
        ("string", "GET", "/v1/string", 5, 30_000),
        ("object", "GET", "/v1/object", 5, 30_000),
        ("malformed", "GET", "/v1/malformed", 5, 30_000),
        ("failing", "GET", "/v1/failing", 5, 30_000),
        ("hang", "GET", "/v1/hang", 1, 30_000),
        ("slow", "GET", "/v1/slow", 10, 500),
    ] {
        let spec = FunctionSpec { name: name.into(), timeout: Duration::from_secs(function_timeout), ..spec("gateway-runtime") };
        let function = start_function(spec, &env).await.expect("start");
        let route = HttpRoute {
            method: method.into(),
            path: path.into(),
            function: name.into(),
            timeout: Duration::from_millis(integration_timeout),
        };
        routes.push((route, function));
    }
    let app =
        router(Gateway { routes, stage: "dev".into(), account_id: "000000000000".into(), throttle: None, cors: None }).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = shutdown.clone();
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await });
    url
}

/// The event `echo` was invoked with for this request.
async fn echoed(request: reqwest::RequestBuilder) -> Value {
    let resp = request.send().await.expect("answered");
    assert_eq!(resp.status(), 200, "echo answers");
    serde_json::from_slice(&resp.bytes().await.expect("body")).expect("the event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_under_its_stage_and_the_event_names_path_cookies_and_body_as_api_gateway_does() {
    let shutdown = CancellationToken::new();
    let base = gateway(&shutdown).await;
    let http = reqwest::Client::new();

    // The stage is the first segment of every path, as in the API's invoke URL.
    let unstaged = http.get(format!("{base}/v1/echo/abc")).send().await.expect("answered");
    assert_eq!(unstaged.status(), 404, "no route outside the stage");
    assert_eq!(unstaged.text().await.expect("body"), r#"{"message":"Not Found"}"#);

    let event = echoed(
        http.post(format!("{base}/dev/v1/echo/a%20b?x=1&x=2"))
            .header("cookie", "session=s1; theme=dark")
            .header("x-tag", "a")
            .header("x-tag", "b")
            .header("content-type", "application/json")
            .body(r#"{"k":1}"#),
    )
    .await;
    assert_eq!(event["rawPath"], "/dev/v1/echo/a%20b", "rawPath keeps the stage");
    assert_eq!(event["requestContext"]["http"]["path"], "/dev/v1/echo/a%20b");
    assert_eq!(event["requestContext"]["stage"], "dev");
    assert_eq!(event["routeKey"], "ANY /v1/echo/{id}");
    assert_eq!(event["pathParameters"], json!({"id": "a b"}));
    assert_eq!(event["rawQueryString"], "x=1&x=2");
    assert_eq!(event["queryStringParameters"], json!({"x": "1,2"}), "repeated parameters joined with commas");
    assert_eq!(event["cookies"], json!(["session=s1", "theme=dark"]), "cookies get a field of their own");
    assert!(event["headers"].get("cookie").is_none(), "and leave the headers: {}", event["headers"]);
    assert_eq!(event["headers"]["x-tag"], "a,b", "a repeated header's values joined with commas");
    assert_eq!((&event["body"], &event["isBase64Encoded"]), (&json!(r#"{"k":1}"#), &json!(false)), "JSON passes as text");

    // Bodies are passed as text or base64 by their content type, not by
    // whether they happen to be UTF-8: a form or an unlabelled body is base64.
    for (content_type, body, as_text) in [
        (Some("text/plain; charset=utf-8"), "plain words", true),
        (Some("application/problem+json"), r#"{"a":1}"#, true),
        (Some("application/xml"), "<a/>", true),
        (Some("application/x-www-form-urlencoded"), "a=b&c=d", false),
        (Some("application/octet-stream"), "bytes that are UTF-8", false),
        (None, "no content type", false),
    ] {
        let mut request = http.put(format!("{base}/dev/v1/echo/x")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let event = echoed(request).await;
        let expected = if as_text { body.to_owned() } else { base64_of(body.as_bytes()) };
        assert_eq!(event["body"], expected.as_str(), "{content_type:?}");
        assert_eq!(event["isBase64Encoded"], !as_text, "{content_type:?}");
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_timeouts_and_answers_without_a_status_get_the_answers_api_gateway_gives() {
    let shutdown = CancellationToken::new();
    let base = gateway(&shutdown).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}/dev{path}")).send();

    // A function's answer without a status code is a 200 with that answer as a JSON body.
    let string = get("/v1/string").await.expect("answered");
    assert_eq!((string.status().as_u16(), string.headers()["content-type"].to_str().expect("ascii")), (200, "application/json"));
    assert_eq!(string.text().await.expect("body"), "Hello from Lambda!");
    let object = get("/v1/object").await.expect("answered");
    assert_eq!(object.status(), 200);
    assert_eq!(object.json::<Value>().await.expect("JSON"), json!({"hello": "world"}));

    // A function error, a function's own timeout and a response API Gateway
    // cannot read are all the integration failing: 500.
    for path in ["/v1/failing", "/v1/hang", "/v1/malformed"] {
        let resp = get(path).await.expect("answered");
        assert_eq!(resp.status(), 500, "{path}");
        assert_eq!(resp.text().await.expect("body"), r#"{"message":"Internal Server Error"}"#, "{path}");
    }

    // The integration's own timeout answers 503 while the function runs on.
    let started = Instant::now();
    let slow = get("/v1/slow").await.expect("answered");
    assert_eq!(slow.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(2), "at the route's 500 ms, not when the function ends (3 s)");
    assert_eq!(slow.text().await.expect("body"), r#"{"message":"Service Unavailable"}"#);
    shutdown.cancel();
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

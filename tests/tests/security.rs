//! What an attacker tries over real HTTP on the local cloud: expired,
//! tampered, unsigned (`alg: none`) and foreign tokens on the REST and
//! WebSocket APIs; a presigned upload URL reused for another key or another
//! method; hostile file names; malformed bodies. Each is refused with a
//! clear problem, never a 500. Each runs on both emulator setups.

#[macro_use]
mod common;

use base64::Engine as _;
use common::TestCloud;
use prism_cloud::EmulatorChoice;
use prism_cloud::live::{LiveConnection, LiveError};
use prism_shared::app::auth::TokenKey;
use reqwest::Method;
use serde_json::{Value, json};

on_both_setups!(
    forged_expired_and_unsigned_tokens_are_refused_everywhere,
    a_presigned_upload_url_is_good_for_its_own_key_and_method_only,
    hostile_names_and_malformed_bodies_get_problems_not_500s,
    a_call_outside_the_functions_policy_is_denied_as_aws_would_deny_it,
);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Tokens that must never let anybody in.
fn bad_tokens(valid: &str) -> Vec<(&'static str, String)> {
    let parts: Vec<&str> = valid.split('.').collect();
    let now = chrono::Utc::now().timestamp();
    let claims = b64(json!({"sub": "mallory", "exp": now + 3600}).to_string().as_bytes());
    let someone_else =
        TokenKey::new(&[9u8; 32]).expect("key").issue("tester", chrono::Duration::hours(1), chrono::Utc::now()).expect("token");
    vec![
        ("alg none", format!("{}.{claims}.", b64(br#"{"alg":"none","typ":"JWT"}"#))),
        ("alg none, signature kept", format!("{}.{claims}.{}", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[2])),
        ("payload swapped, signature kept", format!("{}.{claims}.{}", parts[0], parts[2])),
        ("signed with another secret", someone_else),
        ("not a token", "garbage".into()),
        ("empty", String::new()),
    ]
}

async fn forged_expired_and_unsigned_tokens_are_refused_everywhere(emulator: EmulatorChoice) {
    let tc = TestCloud::start(emulator).await;
    let valid = tc.token("tester");
    let url = tc.cloud.info.websocket_url.clone().expect("WebSocket API");
    let mut cases = bad_tokens(&valid);
    cases.push(("expired", tc.expired_token("tester")));
    for (what, token) in cases {
        let resp =
            reqwest::Client::new().get(format!("{}/v1/jobs", tc.cloud.info.http_url)).bearer_auth(&token).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 401, "REST, {what}");
        let problem: Value = resp.json().await.expect("problem");
        assert_eq!(problem["code"], "unauthorized", "{what}");
        match LiveConnection::connect(&url, Some(&token)).await {
            Err(LiveError::Refused(status)) => assert_eq!(status, 401, "WebSocket, {what}"),
            other => panic!("WebSocket, {what}: {other:?}"),
        }
    }
    // And the valid one works, so the refusals above are about the tokens.
    assert_eq!(tc.api.request(Method::GET, "/v1/jobs").send().await.expect("request").status().as_u16(), 200);
    tc.finish().await;
}

async fn a_presigned_upload_url_is_good_for_its_own_key_and_method_only(emulator: EmulatorChoice) {
    let tc = TestCloud::start(emulator).await;
    let (job, upload) = tc.api.create("mine.txt", None).await.expect("create");
    let http = reqwest::Client::new();
    // The same signature on another key, in another owner's folder.
    let elsewhere = upload.replacen("/uploads/tester/", "/uploads/victim/", 1);
    assert_ne!(elsewhere, upload);
    let put = http.put(&elsewhere).body("overwrite").send().await.expect("put");
    assert_eq!(put.status().as_u16(), 403, "another key: {}", put.text().await.unwrap_or_default());
    // The same URL for another method.
    let delete = http.delete(&upload).send().await.expect("delete");
    assert_eq!(delete.status().as_u16(), 403, "another method");
    // Its own key and method work.
    tc.api.upload(&upload, b"my own words".to_vec()).await.expect("upload");
    let done = tc.api.wait(&job.id, common::JOB_TIMEOUT).await.expect("job");
    assert_eq!(done.status.as_str(), "completed");
    tc.finish().await;
}

async fn hostile_names_and_malformed_bodies_get_problems_not_500s(emulator: EmulatorChoice) {
    let tc = TestCloud::start(emulator).await;
    for name in ["../../etc/passwd", "/absolute/path.txt", "a\u{0}b\nc.txt", "..", "\u{202e}txt.exe", &"x".repeat(5000)] {
        let resp = tc.api.request(Method::POST, "/v1/jobs").json(&json!({"file_name": name})).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 201, "{name:?}");
        let body: Value = resp.json().await.expect("json");
        let key = body["job"]["upload"].as_str().expect("upload").to_owned();
        let id = body["job"]["id"].as_str().expect("id");
        let prefix = format!("/uploads/tester/{id}/");
        let last = key.split_once(&prefix).map(|(_, rest)| rest).unwrap_or_else(|| panic!("{name:?} left its folder: {key}"));
        assert!(
            !last.is_empty() && !last.contains('/') && !last.contains("..") && !last.chars().any(char::is_control),
            "{name:?} -> {key}"
        );
    }
    for (body, content_type) in
        [("{not json", "application/json"), ("[1, 2]", "application/json"), ("\u{0}\u{1}", "application/octet-stream")]
    {
        let resp = tc.api.request(Method::POST, "/v1/jobs").header("content-type", content_type).body(body).send().await.expect("request");
        let status = resp.status().as_u16();
        assert!((400..500).contains(&status), "{body:?} answered {status}");
        assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    }
    // 7 MB of inline text: under API Gateway's 10 MB, over Lambda's 6 MB
    // synchronous payload, so refused before the function runs, as on AWS.
    let huge = json!({"file_name": "big.txt", "text": "a".repeat(7 * 1024 * 1024)});
    let resp = tc.api.request(Method::POST, "/v1/jobs").json(&huge).send().await.expect("request");
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(resp.json::<Value>().await.expect("json")["message"], "Request Entity Too Large");
    tc.finish().await;
}

async fn a_call_outside_the_functions_policy_is_denied_as_aws_would_deny_it(emulator: EmulatorChoice) {
    // As if template.yaml had given the API a read-only table policy.
    let revoke = vec![prism_cloud::proxy::Revocation { function: "api".into(), action: "dynamodb:PutItem".into() }];
    let plan = prism_cloud::proxy::FaultPlan { revoke, ..Default::default() };
    let tc = TestCloud::with_faults(emulator, plan).await;

    let refused = tc.api.request(Method::POST, "/v1/jobs").json(&json!({"file_name": "a.txt"})).send().await.expect("answered");
    assert!(refused.status().is_server_error(), "creating a job needs PutItem: {}", refused.status());
    let listed = tc.api.request(Method::GET, "/v1/jobs").send().await.expect("answered");
    assert_eq!(listed.status(), 200, "reading needs only what the policy still allows");

    let table = &tc.cloud.info.table;
    let denials = tc.cloud.proxies.denials();
    assert!(
        denials.iter().any(|(function, action, resource)| function.ends_with("-api")
            && action == "dynamodb:PutItem"
            && *resource == format!("arn:aws:dynamodb:us-east-1:000000000000:table/{table}")),
        "{denials:?}"
    );
    assert!(denials.iter().all(|(function, _, _)| function.ends_with("-api")), "nothing else was denied: {denials:?}");
    let log = std::fs::read_to_string(std::path::Path::new(&tc.cloud.info.logs_dir).join("api.log")).expect("the API's log");
    assert!(log.contains("AccessDeniedException"), "the function saw DynamoDB's own error");
    tc.finish().await;
}

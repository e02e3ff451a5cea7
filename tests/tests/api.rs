//! The REST API over real HTTP on the local cloud: auth on every route,
//! owner isolation on every route, the job lifecycle routes, and every
//! response checked against the OpenAPI document.

mod common;

use common::openapi::OpenApi;
use common::{JOB_TIMEOUT, TestCloud, images};
use prism_cloud::{EmulatorChoice, PrismClient};
use reqwest::Method;
use serde_json::{Value, json};

/// Sends a request, checks the response against the OpenAPI document, returns status and body.
async fn call(api: &PrismClient, spec: &OpenApi, method: Method, template: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = api.request(method.clone(), path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let value: Value = resp.json().await.expect("JSON body");
    spec.check(method.as_str(), template, status, &content_type, &value);
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_routes_auth_isolation_and_openapi() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let spec = OpenApi::load();
    let (alice, bob, nobody) = (tc.client_for("alice"), tc.client_for("bob"), tc.anonymous());

    // The served document is the one in the repository.
    let (status, served) = call(&nobody, &spec, Method::GET, "/v1/openapi.json", "/v1/openapi.json", None).await;
    assert_eq!((status, &served), (200, spec.doc()));
    assert_eq!(call(&nobody, &spec, Method::GET, "/v1/health", "/v1/health", None).await.0, 200);

    // Alice's job, through upload to completion.
    let job = alice.submit("notes.txt", b"alpha beta gamma".to_vec(), Some("high")).await.expect("submit");
    let done = alice.wait(&job.id, JOB_TIMEOUT).await.expect("wait");
    assert_eq!(done.status.as_str(), "completed");
    let id = job.id.to_string();

    // Every protected route: 401 without a token, 404 (or absent) for another owner, 2xx for the owner.
    let routes: [(Method, &str, String, Option<Value>); 5] = [
        (Method::GET, "/v1/jobs/{id}", format!("/v1/jobs/{id}"), None),
        (Method::GET, "/v1/jobs/{id}/events", format!("/v1/jobs/{id}/events"), None),
        (Method::POST, "/v1/jobs/{id}/cancel", format!("/v1/jobs/{id}/cancel"), None),
        (Method::GET, "/v1/jobs", "/v1/jobs".to_owned(), None),
        (Method::POST, "/v1/jobs", "/v1/jobs".to_owned(), Some(json!({"file_name": "x.txt"}))),
    ];
    for (method, template, path, body) in &routes {
        let (status, problem) = call(&nobody, &spec, method.clone(), template, path, body.clone()).await;
        assert_eq!((status, problem["code"].as_str()), (401, Some("unauthorized")), "{method} {path} without a token");
    }
    for (method, template, path, body) in &routes[..3] {
        let (status, problem) = call(&bob, &spec, method.clone(), template, path, body.clone()).await;
        assert_eq!((status, problem["code"].as_str()), (404, Some("job_not_found")), "{method} {path} as bob");
    }
    let (_, bobs) = call(&bob, &spec, Method::GET, "/v1/jobs", "/v1/jobs", None).await;
    assert!(bobs["jobs"].as_array().expect("jobs").iter().all(|j| j["owner"] == "bob"), "bob sees only his jobs");
    assert!(!bobs["jobs"].as_array().expect("jobs").iter().any(|j| j["id"] == id.as_str()));
    let source = json!({"source": done.upload.to_string()});
    let (status, _) = call(&bob, &spec, Method::POST, "/v1/jobs", "/v1/jobs", Some(source.clone())).await;
    assert_eq!(status, 403, "bob cannot submit alice's object");

    let (status, got) = call(&alice, &spec, Method::GET, "/v1/jobs/{id}", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!((status, got["result"]["words"].as_u64()), (200, Some(3)));
    let (_, csv) = call(&alice, &spec, Method::POST, "/v1/jobs", "/v1/jobs", Some(json!({"text": "a,b\n1,2\n3,4\n"}))).await;
    assert_eq!(csv["job"]["result"]["structure"], json!({"kind": "csv", "rows": 3, "columns": 2, "consistent": true}));
    let (_, events) =
        call(&alice, &spec, Method::GET, "/v1/jobs/{id}/events", &format!("/v1/jobs/{id}/events?after=2&limit=2"), None).await;
    let seqs: Vec<u64> = events["events"].as_array().expect("events").iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!((seqs, events["next_after"].as_u64()), (vec![3, 4], Some(4)));
    let (status, _) = call(&alice, &spec, Method::POST, "/v1/jobs/{id}/cancel", &format!("/v1/jobs/{id}/cancel"), None).await;
    assert_eq!(status, 409, "a completed job cannot be cancelled");

    // Re-processing an uploaded object of one's own goes through classify again.
    let (status, again) = call(&alice, &spec, Method::POST, "/v1/jobs", "/v1/jobs", Some(source)).await;
    assert_eq!(status, 201);
    let again_id = again["job"]["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(alice.wait(&again_id, JOB_TIMEOUT).await.expect("wait").status.as_str(), "completed");

    // A queued job cancels at once.
    let (status, pending) = call(&alice, &spec, Method::POST, "/v1/jobs", "/v1/jobs", Some(json!({"file_name": "later.txt"}))).await;
    assert_eq!(status, 201);
    let pending_id = pending["job"]["id"].as_str().expect("id").to_owned();
    let (status, cancelled) =
        call(&alice, &spec, Method::POST, "/v1/jobs/{id}/cancel", &format!("/v1/jobs/{pending_id}/cancel"), None).await;
    assert_eq!((status, cancelled["status"].as_str()), (202, Some("cancelled")));

    // Inline text is answered synchronously; an idempotent retry returns the same job.
    let (status, inline) = call(&alice, &spec, Method::POST, "/v1/jobs", "/v1/jobs", Some(json!({"text": "sync path words"}))).await;
    assert_eq!((status, inline["job"]["status"].as_str(), inline["job"]["result"]["words"].as_u64()), (201, Some("completed"), Some(3)));
    let keyed = |n: u8| {
        alice
            .request(Method::POST, "/v1/jobs")
            .header("Idempotency-Key", "retry-me")
            .json(&json!({"file_name": format!("k{n}.txt")}))
            .send()
    };
    let (first, second) = (keyed(1).await.expect("first"), keyed(2).await.expect("second"));
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (201, 200));
    let (first, second): (Value, Value) = (first.json().await.expect("json"), second.json().await.expect("json"));
    assert_eq!(first["job"]["id"], second["job"]["id"]);

    // Batches answer per item.
    let items = json!({"items": [{"text": "one"}, {"priority": "never"}, {"file_name": "b.txt", "priority": "batch"}]});
    let (status, batch) = call(&alice, &spec, Method::POST, "/v1/jobs/batch", "/v1/jobs/batch", Some(items)).await;
    let statuses: Vec<u64> = batch["results"].as_array().expect("results").iter().filter_map(|r| r["status"].as_u64()).collect();
    assert_eq!((status, statuses), (200, vec![201, 422, 201]));

    // History: newest first, filtered, paginated with a cursor.
    let (_, page1) = call(&alice, &spec, Method::GET, "/v1/jobs", "/v1/jobs?limit=2", None).await;
    let cursor = page1["next_cursor"].as_str().expect("more pages").to_owned();
    let (_, page2) = call(&alice, &spec, Method::GET, "/v1/jobs", &format!("/v1/jobs?limit=2&cursor={cursor}"), None).await;
    let ids =
        |p: &Value| p["jobs"].as_array().expect("jobs").iter().map(|j| j["id"].as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&page1).len(), 2);
    assert!(ids(&page2).iter().all(|i| !ids(&page1).contains(i)), "pages do not overlap");
    let created = |p: &Value| {
        p["jobs"].as_array().expect("jobs").iter().map(|j| j["created_at"].as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>()
    };
    let all: Vec<String> = created(&page1).into_iter().chain(created(&page2)).collect();
    assert!(all.windows(2).all(|w| w[0] >= w[1]), "newest first: {all:?}");
    let (_, cancelled_only) = call(&alice, &spec, Method::GET, "/v1/jobs", "/v1/jobs?status=cancelled", None).await;
    assert_eq!(ids(&cancelled_only), vec![pending_id]);
    let (_, texts) = call(&alice, &spec, Method::GET, "/v1/jobs", "/v1/jobs?modality=text&limit=100", None).await;
    assert!(texts["jobs"].as_array().expect("jobs").iter().all(|j| j["modality"] == "text"));

    // Limits and validation.
    let (status, _) = call(&alice, &spec, Method::POST, "/v1/jobs", "/v1/jobs", Some(json!({"size": 1u64 << 40}))).await;
    assert_eq!(status, 413);
    // Query parameters outside what the document allows are 400 problems.
    for bad in ["/v1/jobs?status=sleeping", "/v1/jobs?limit=0", "/v1/jobs?limit=101", "/v1/jobs?limit=ten"] {
        let (status, problem) = call(&alice, &spec, Method::GET, "/v1/jobs", bad, None).await;
        assert_eq!((status, problem["code"].as_str()), (400, Some("bad_request")), "{bad}");
    }
    let events = format!("/v1/jobs/{}/events", job.id);
    for bad in ["after=99999999999999999999", "after=-1", "limit=0", "limit=1001"] {
        let (status, _) = call(&alice, &spec, Method::GET, "/v1/jobs/{id}/events", &format!("{events}?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}");
    }
    tc.finish().await;
}

/// Content is recognised by its bytes whatever its name; images are
/// processed, and what cannot be processed ends failed with a reason, never stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_content_is_classified_by_bytes_not_names() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let png = images::png(640, 360);
    let jpeg = images::jpeg(640, 360);
    let truncated_jpeg = jpeg[..600].to_vec();
    // A header promising 60,000 x 60,000 pixels with nothing behind it.
    let lying_png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\xea\x60\0\0\xea\x60\x08\x02\0\0\0\x0f\xb0\xe2\x15\x00\x00\x00\x05\x49\x44\x41\x54\x78\x9c\x63\x00\x00\x38\x29\xd9\xa2".to_vec();
    let wav = [b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x44\xac\0\0\x88\x58\x01\0\x02\0\x10\0data\0\0\0\0".as_slice()].concat();
    let pdf = b"%PDF-1.7\n1 0 obj<<>>endobj\n".to_vec();
    let mp4 = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41\0\0\0\x08free".to_vec();
    let cases: [(&str, Vec<u8>, &str, &str); 10] = [
        ("picture.txt", png, "image", ""),
        ("cut.jpg", truncated_jpeg, "image", "corrupt_image"),
        ("huge.png", lying_png, "image", "too_many_pixels"),
        ("song.mp3", wav, "audio", "corrupt_audio"),
        ("doc.bin", pdf, "document", "corrupt_document"),
        ("clip.dat", mp4, "video", "corrupt_video"),
        ("data.png", b"{\"a\": [1, 2, 3]}".to_vec(), "text", ""),
        ("noise.txt", vec![0, 159, 146, 150, 0, 1, 2, 3, 0, 0xFF], "", "unsupported_content"),
        ("empty.txt", Vec::new(), "", "empty_upload"),
        ("photo.bin", jpeg, "image", ""),
    ];
    let mut jobs = Vec::new();
    for (name, bytes, _, _) in &cases {
        jobs.push(tc.api.submit(name, bytes.clone(), None).await.expect("submit"));
    }
    let http = reqwest::Client::new();
    for ((name, _, modality, code), job) in cases.iter().zip(jobs) {
        let done = tc.api.wait(&job.id, JOB_TIMEOUT).await.expect("wait");
        assert_eq!(done.modality.map(|m| m.to_string()).unwrap_or_default(), *modality, "{name}");
        match *code {
            "" => assert_eq!(done.status.as_str(), "completed", "{name}: {:?}", done.error),
            codes => {
                let got = done.error.map(|e| e.code).unwrap_or_default();
                assert!(codes.split('|').any(|c| c == got), "{name}: failed with {got:?}, expected {codes}");
            }
        }
        if *modality == "image" && code.is_empty() {
            // The result's dimensions, and thumbnails that open as images of the sizes it lists.
            let snapshot: serde_json::Value = tc
                .api
                .request(reqwest::Method::GET, &format!("/v1/jobs/{}", job.id))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            assert_eq!((snapshot["result"]["width"].as_u64(), snapshot["result"]["height"].as_u64()), (Some(640), Some(360)), "{name}");
            let links = snapshot["links"].as_array().expect("links");
            assert_eq!(links.len(), 2, "{name}: {links:?}");
            for (link, thumb) in links.iter().zip(snapshot["result"]["thumbnails"].as_array().expect("thumbnails")) {
                let body = http.get(link["url"].as_str().expect("url")).send().await.expect("download").bytes().await.expect("body");
                let (width, height) = images::decoded_size(&body);
                assert_eq!(
                    (u64::from(width), u64::from(height)),
                    (thumb["width"].as_u64().expect("w"), thumb["height"].as_u64().expect("h"))
                );
            }
        }
    }
    tc.finish().await;
}

/// The checker itself: a body that drifts from the document is caught.
#[test]
fn the_openapi_checker_rejects_drift() {
    let spec = OpenApi::load();
    spec.check("GET", "/v1/health", 200, "application/json", &json!({"status": "ok"}));
    for bad in [json!({"status": "ok", "extra": 1}), json!({}), json!({"status": "down"})] {
        let caught = std::panic::catch_unwind(|| spec.check("GET", "/v1/health", 200, "application/json", &bad));
        assert!(caught.is_err(), "{bad} passed");
    }
    let undeclared = std::panic::catch_unwind(|| spec.check("GET", "/v1/health", 418, "application/json", &json!({})));
    assert!(undeclared.is_err());
}

#[tokio::test]
async fn metadata_with_any_allowed_key_never_breaks_an_owners_reads() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let spec = OpenApi::load();
    let carol = tc.client_for("carol");
    // Keys that spell DynamoDB's own type tags once broke every read of the owner's jobs.
    for metadata in [json!({"S": "a string"}), json!({"N": "7"}), json!({"S": "s", "M": "map", "NULL": "nothing", "customer-id": "c-42"})] {
        let (status, created) =
            call(&carol, &spec, Method::POST, "/v1/jobs", "/v1/jobs", Some(json!({"file_name": "m.txt", "metadata": metadata}))).await;
        assert_eq!(status, 201);
        let id = created["job"]["id"].as_str().expect("id").to_owned();
        let (status, job) = call(&carol, &spec, Method::GET, "/v1/jobs/{id}", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!((status, &job["metadata"]), (200, &metadata));
        let (status, listed) = call(&carol, &spec, Method::GET, "/v1/jobs", "/v1/jobs", None).await;
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed["jobs"][0]["metadata"], metadata);
    }
    // Keys outside the documented charset are refused up front.
    let (status, problem) = call(&carol, &spec, Method::POST, "/v1/jobs", "/v1/jobs", Some(json!({"metadata": {"bad key\n": "x"}}))).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("invalid_request")));
    tc.finish().await;
}

#[tokio::test]
async fn an_owner_over_its_quota_gets_429_with_retry_after_while_another_owner_is_served() {
    let quota = vec![("MaxActiveJobsPerOwner".to_owned(), "2".to_owned())];
    let tc = TestCloud::with(EmulatorChoice::Localstack, Default::default(), quota).await;
    let spec = OpenApi::load();
    let (dave, erin) = (tc.client_for("dave"), tc.client_for("erin"));
    let submit = json!({"file_name": "waiting.txt"});
    for _ in 0..2 {
        let (status, _) = call(&dave, &spec, Method::POST, "/v1/jobs", "/v1/jobs", Some(submit.clone())).await;
        assert_eq!(status, 201, "under the quota");
    }
    let refused = dave.request(Method::POST, "/v1/jobs").json(&submit).send().await.expect("answered");
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("10"));
    let content_type = refused.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let problem: Value = refused.json().await.expect("a problem");
    spec.check("POST", "/v1/jobs", 429, &content_type, &problem);
    assert_eq!(problem["code"], "quota_exceeded");
    let (status, _) = call(&erin, &spec, Method::POST, "/v1/jobs", "/v1/jobs", Some(submit)).await;
    assert_eq!(status, 201, "another owner is served");
    tc.finish().await;
}

/// A job submitted with its size gets an upload URL that signs that length:
/// S3 takes exactly that many bytes, whatever the content type, and refuses
/// any other length (the proxy in front of the emulator once dropped the
/// header and every such upload failed).
#[tokio::test]
async fn an_upload_presigned_for_a_declared_size_takes_exactly_that_many_bytes() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let created: Value = tc
        .api
        .request(Method::POST, "/v1/jobs")
        .json(&json!({"file_name": "sized.txt", "size": 5}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("job");
    let url = created["upload"]["url"].as_str().expect("an upload URL").to_owned();
    let put = |body: &'static str| reqwest::Client::new().put(&url).header("content-type", "text/plain").body(body).send();
    let wrong = put("hello world").await.expect("answered");
    assert_eq!(wrong.status().as_u16(), 403, "another length is refused: {}", wrong.text().await.unwrap_or_default());
    let right = put("hello").await.expect("answered");
    assert_eq!(right.status().as_u16(), 200, "{}", right.text().await.unwrap_or_default());
    let id = created["job"]["id"].as_str().expect("id").parse().expect("a job id");
    let job = tc.api.wait(&id, JOB_TIMEOUT).await.expect("the job ends");
    assert_eq!(job.status.to_string(), "completed", "{job:?}");
    tc.finish().await;
}

/// schemathesis on the OpenAPI document: requests generated from every
/// operation's schema (the documented examples, then fuzzed values), each
/// answer checked to be no server error, a documented status and a body
/// that matches its schema. The operator routes with an operator's token.
#[tokio::test]
async fn requests_generated_from_the_openapi_document_get_documented_answers_and_no_server_error() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let venv = prism_cloud::install::ensure(&common::project_dir(), prism_cloud::install::Venv::Schemathesis).expect("schemathesis");
    let spec = common::project_dir().join("functions/api/openapi.json");
    let operator = tc.operator_token();
    for (token, routes) in [(tc.token("fuzzer"), ["--exclude-path-regex", "^/v1/ops"]), (operator, ["--include-path-regex", "^/v1/ops"])] {
        let out = tokio::process::Command::new(venv.join("bin/st"))
            .arg("run")
            .arg(&spec)
            .args(["--url", &tc.cloud.info.http_url, "-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "not_a_server_error,status_code_conformance,response_schema_conformance"])
            .args(["--phases", "examples,fuzzing", "--max-examples", "25", "--seed", "20261128", "--no-color"])
            .args(routes)
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
            .await
            .expect("st runs");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{routes:?}: schemathesis found failures\n{report}{}", String::from_utf8_lossy(&out.stderr));
        assert!(report.contains("Tested:"), "it tested operations:\n{report}");
    }
    tc.finish().await;
}

//! The web dashboard's page server. The page is static (`infra/dashboard/`,
//! built into this binary) and talks to the HTTP and WebSocket APIs from its
//! own origin, as it does when deployed to a bucket: the only thing served
//! here besides the files is `config.json`, which names those APIs.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The page's files: name, content type, contents.
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../dashboard/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/app.js")),
    ("prism-client.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/prism-client.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../dashboard/style.css")),
];

/// Where the page finds the APIs (`config.json`, the same shape a deployment writes beside the files).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DashboardConfig {
    pub api_url: String,
    pub websocket_url: Option<String>,
    pub stream_url: Option<String>,
}

pub fn router(config: DashboardConfig) -> Router {
    Router::new().route("/", axum::routing::get(index)).route("/{file}", axum::routing::get(file)).with_state(config)
}

async fn index() -> Response {
    serve("index.html")
}

async fn file(State(config): State<DashboardConfig>, Path(name): Path<String>) -> Response {
    if name == "config.json" {
        return ([(header::CACHE_CONTROL, "no-store")], axum::Json(config)).into_response();
    }
    serve(&name)
}

fn serve(name: &str) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        // Files change with the binary; a reload must not keep an old app.js beside a new index.html.
        Some((_, content_type, body)) => {
            ([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "no-cache")], *body).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Deploys the page to a bucket: its files and a `config.json` naming the
/// APIs, under `prefix`, each with its content type and `no-cache` (a new
/// `app.js` must not meet an old `index.html`). Returns the keys written.
/// Serve them from any static host in front of the bucket (CloudFront with
/// an origin access control, say); the HTTP API allows cross-origin calls.
pub async fn deploy(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str, config: &DashboardConfig) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    let prefix = prefix.trim_matches('/');
    let key = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}/{name}") };
    let config = serde_json::to_vec_pretty(config)?;
    let files = FILES.iter().map(|(name, content_type, body)| (*name, *content_type, body.as_bytes().to_vec())).chain(std::iter::once((
        "config.json",
        "application/json",
        config,
    )));
    let mut written = Vec::new();
    for (name, content_type, body) in files {
        let key = key(name);
        s3.put_object()
            .bucket(bucket)
            .key(&key)
            .content_type(content_type)
            .cache_control("no-cache")
            .body(body.into())
            .send()
            .await
            .with_context(|| format!("writing s3://{bucket}/{key}"))?;
        written.push(key);
    }
    Ok(written)
}

/// An S3 client for a real deployment: credentials and region from the
/// environment, as the AWS CLI finds them.
pub async fn s3_from_environment() -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::new(&aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await)
}

/// The page's files as `deploy` writes them: name and contents.
pub fn files() -> impl Iterator<Item = (&'static str, &'static str)> {
    FILES.iter().map(|(name, _, body)| (*name, *body))
}

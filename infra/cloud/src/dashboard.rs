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
#[derive(Debug, Clone, serde::Serialize)]
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

//! Where and as whom the CLI talks to Prism: `--api`, `--websocket`,
//! `--token`/`--owner`, and `prism token`.

use std::path::Path;
use std::time::Duration;

use prism_cloud::PrismClient;
use prism_cloud::cloud;
use prism_cloud::live::Watch;

use crate::progress::ProgressView;
use prism_shared::JobId;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct EndpointArgs {
    /// API base URL (default: the running local cloud's).
    #[arg(long, env = "PRISM_API_URL")]
    api: Option<String>,
    /// WebSocket API URL (default: the running local cloud's; none means REST polling).
    #[arg(long, env = "PRISM_WEBSOCKET_URL")]
    websocket: Option<String>,
    /// Server-sent events URL, the stream function's URL (default: the running local cloud's).
    #[arg(long, env = "PRISM_STREAM_URL")]
    stream: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct AuthArgs {
    /// Bearer token to use (default: one issued for --owner with the local cloud's secret).
    #[arg(long, env = "PRISM_TOKEN")]
    token: Option<String>,
    /// The owner to act for on the local cloud.
    #[arg(long, default_value = "local")]
    owner: String,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The owner the token acts for (with --operator: the operator's name in logs).
    #[arg(long)]
    owner: String,
    #[arg(long, default_value_t = 24)]
    ttl_hours: i64,
    /// An operator's token: the operator routes (lanes), none of an owner's jobs.
    #[arg(long)]
    operator: bool,
}

/// A Prism API and the WebSocket API beside it, with the token for both.
pub struct Target {
    pub api: PrismClient,
    websocket_url: Option<String>,
    pub stream_url: Option<String>,
    token: String,
}

impl Target {
    pub fn new(project: &Path, endpoints: EndpointArgs, auth: AuthArgs) -> anyhow::Result<Self> {
        let (api, websocket_url, stream_url) = match endpoints.api {
            Some(api) => (api, endpoints.websocket, endpoints.stream),
            None => {
                let local = cloud::LocalInfo::read(project)?;
                (local.http_url, endpoints.websocket.or(local.websocket_url), endpoints.stream.or(local.stream_url))
            }
        };
        let token = match auth.token {
            Some(token) => token,
            None => issue_token(project, &auth.owner, 24)?,
        };
        Ok(Self { api: PrismClient::new(&api, Some(token.clone()))?, websocket_url, stream_url, token })
    }

    /// Follows `ids` to their end; `show` draws progress bars on a terminal,
    /// `on_event` sees every event in order.
    pub async fn follow(
        &self,
        ids: &[JobId],
        timeout: Duration,
        show: bool,
        mut on_event: impl FnMut(&Value) + Send,
    ) -> anyhow::Result<()> {
        let mut view = ProgressView::new(ids, show);
        let mut watch = Watch::new(ids.iter().map(|id| (id.clone(), 0)));
        let mut each = |id: &JobId, event: &Value| {
            view.update(id, event);
            on_event(event);
        };
        watch.follow(self.websocket_url.as_deref(), Some(&self.token), &self.api, timeout, &mut each).await
    }
}

/// A token for `owner` signed with the local cloud's secret.
pub fn issue_token(project: &Path, owner: &str, ttl_hours: i64) -> anyhow::Result<String> {
    let key = prism_shared::app::auth::TokenKey::new(cloud::local_token_secret(project)?.as_bytes())?;
    Ok(key.issue(owner, chrono::Duration::hours(ttl_hours), chrono::Utc::now())?)
}

/// An operator's token signed with the local cloud's secret.
pub fn issue_operator_token(project: &Path, ttl_hours: i64) -> anyhow::Result<String> {
    let key = prism_shared::app::auth::TokenKey::new(cloud::local_token_secret(project)?.as_bytes())?;
    Ok(key.issue_operator("local-operator", chrono::Duration::hours(ttl_hours), chrono::Utc::now())?)
}

pub fn token(project: &Path, args: &TokenArgs) -> anyhow::Result<()> {
    let key = prism_shared::app::auth::TokenKey::new(cloud::local_token_secret(project)?.as_bytes())?;
    let (ttl, now) = (chrono::Duration::hours(args.ttl_hours), chrono::Utc::now());
    let token = if args.operator { key.issue_operator(&args.owner, ttl, now)? } else { key.issue(&args.owner, ttl, now)? };
    println!("{token}");
    Ok(())
}

//! `prism dashboard-deploy`: the web dashboard into a bucket, with the
//! `config.json` that names the APIs it talks to.

use std::path::Path;

use anyhow::Context as _;
use prism_cloud::cloud::{self, LocalInfo};
use prism_cloud::dashboard::{self, DashboardConfig};

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The bucket to write to (default: the running local cloud's uploads bucket).
    #[arg(long)]
    bucket: Option<String>,
    /// The key prefix the page goes under.
    #[arg(long, default_value = "dashboard")]
    prefix: String,
    /// The HTTP API's URL (the stack's `HttpApiUrl` output; default: the local cloud's).
    #[arg(long)]
    api_url: Option<String>,
    /// The WebSocket API's URL (`WebSocketUrl`).
    #[arg(long)]
    websocket_url: Option<String>,
    /// The stream function's URL (`StreamUrl`).
    #[arg(long)]
    stream_url: Option<String>,
}

pub async fn deploy(project: &Path, args: DeployArgs) -> anyhow::Result<()> {
    // Without a bucket, the local cloud's: its emulator serves the page back.
    let local = match &args.bucket {
        Some(_) => None,
        None => Some(LocalInfo::read(project).context("no --bucket, and no local cloud is running (prism up)")?),
    };
    let config = DashboardConfig {
        api_url: args.api_url.or_else(|| local.as_ref().map(|l| l.http_url.clone())).context("--api-url is needed")?,
        websocket_url: args.websocket_url.or_else(|| local.as_ref().and_then(|l| l.websocket_url.clone())),
        stream_url: args.stream_url.or_else(|| local.as_ref().and_then(|l| l.stream_url.clone())),
    };
    let (s3, bucket) = match (&local, args.bucket) {
        (Some(info), _) => (cloud::clients_for(&info.endpoint, &info.dynamodb_endpoint).s3, info.bucket.clone()),
        (None, Some(bucket)) => (dashboard::s3_from_environment().await, bucket),
        (None, None) => unreachable!("a local cloud was read when no bucket was given"),
    };
    let keys = dashboard::deploy(&s3, &bucket, &args.prefix, &config).await?;
    for key in &keys {
        println!("s3://{bucket}/{key}");
    }
    if let Some(info) = &local {
        // LocalStack serves objects path-style without signatures: the page opens from there.
        println!("prism: open {}/{bucket}/{}/index.html", info.endpoint.trim_end_matches('/'), args.prefix.trim_matches('/'));
    }
    Ok(())
}

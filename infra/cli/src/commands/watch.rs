//! `prism watch` and `prism status`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use prism_shared::JobId;
use serde_json::Value;

use super::target::{AuthArgs, EndpointArgs, Target};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    jobs: Vec<String>,
    /// Print every event as a JSON line instead of progress bars.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[command(flatten)]
    endpoints: EndpointArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    job: String,
    #[command(flatten)]
    endpoints: EndpointArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

pub async fn watch(project: &Path, args: WatchArgs) -> anyhow::Result<()> {
    let WatchArgs { jobs, json, timeout, endpoints, auth } = args;
    let target = Target::new(project, endpoints, auth)?;
    let ids = jobs.iter().map(|j| j.parse::<JobId>().with_context(|| format!("{j} is not a job id"))).collect::<Result<Vec<_>, _>>()?;
    let print = |event: &Value| {
        if json {
            println!("{event}");
        }
    };
    target.follow(&ids, Duration::from_secs(timeout), !json, print).await?;
    if !json {
        for id in &ids {
            let job = target.api.job(id).await?;
            println!("{}  {}  {}", job.id, job.status, job.error.map(|e| e.message).unwrap_or_default());
        }
    }
    Ok(())
}

pub async fn status(project: &Path, args: StatusArgs) -> anyhow::Result<()> {
    let target = Target::new(project, args.endpoints, args.auth)?;
    let job = target.api.job(&args.job.parse().context("not a job id")?).await?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

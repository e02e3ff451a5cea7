//! `prism lanes`: list, pause and resume priority lanes through the operator
//! API (an operator's token: `--token`, or one issued with the local cloud's secret).

use std::path::Path;

use prism_cloud::{PrismClient, cloud};

#[derive(Debug, clap::Args)]
pub struct LanesArgs {
    #[command(subcommand)]
    action: Option<LaneAction>,
    /// API base URL (default: the running local cloud's).
    #[arg(long, env = "PRISM_API_URL", global = true)]
    api: Option<String>,
    /// An operator's bearer token (default: one issued with the local cloud's secret).
    #[arg(long, env = "PRISM_OPERATOR_TOKEN", global = true)]
    token: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum LaneAction {
    /// Every lane: paused or not, messages waiting and in flight (the default).
    List,
    /// Stop delivering a lane's messages (its event-source mapping is disabled); its jobs stay queued.
    Pause {
        /// A lane (`video-bulk`) or a whole modality (`video`).
        target: String,
    },
    /// Deliver a paused lane's messages again.
    Resume { target: String },
}

pub async fn run(project: &Path, args: LanesArgs) -> anyhow::Result<()> {
    let api = match args.api {
        Some(api) => api,
        None => cloud::LocalInfo::read(project)?.http_url,
    };
    let token = match args.token {
        Some(token) => token,
        None => super::target::issue_operator_token(project, 1)?,
    };
    let client = PrismClient::new(&api, Some(token))?;
    let lanes = match args.action.unwrap_or(LaneAction::List) {
        LaneAction::List => client.lanes().await?,
        LaneAction::Pause { target } => client.set_lanes_paused(&target, true).await?,
        LaneAction::Resume { target } => client.set_lanes_paused(&target, false).await?,
    };
    println!("{:<16} {:<10} {:>8} {:>10}", "LANE", "STATE", "WAITING", "IN FLIGHT");
    for lane in lanes {
        let text = |key: &str| lane[key].as_str().unwrap_or("?").to_owned();
        let count = |key: &str| lane[key].as_u64().map_or_else(|| "?".to_owned(), |n| n.to_string());
        println!("{:<16} {:<10} {:>8} {:>10}", text("lane"), text("state"), count("waiting"), count("in_flight"));
    }
    Ok(())
}

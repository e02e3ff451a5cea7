//! The operator commands, through the operator API with an operator's token
//! (`--token`, or one issued with the local cloud's secret): `prism lanes`
//! lists, pauses and resumes priority lanes; `prism dlq` lists and redrives
//! dead letters; `prism quota` shows and sets an owner's quotas.

use std::path::Path;

use prism_cloud::{PrismClient, cloud};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// API base URL (default: the running local cloud's).
    #[arg(long, env = "PRISM_API_URL", global = true)]
    api: Option<String>,
    /// An operator's bearer token (default: one issued with the local cloud's secret).
    #[arg(long, env = "PRISM_OPERATOR_TOKEN", global = true)]
    token: Option<String>,
}

impl OperatorArgs {
    fn client(self, project: &Path) -> anyhow::Result<PrismClient> {
        let api = match self.api {
            Some(api) => api,
            None => cloud::LocalInfo::read(project)?.http_url,
        };
        let token = match self.token {
            Some(token) => token,
            None => super::target::issue_operator_token(project, 1)?,
        };
        PrismClient::new(&api, Some(token))
    }
}

#[derive(Debug, clap::Args)]
pub struct LanesArgs {
    #[command(subcommand)]
    action: Option<LaneAction>,
    #[command(flatten)]
    operator: OperatorArgs,
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

pub async fn lanes(project: &Path, args: LanesArgs) -> anyhow::Result<()> {
    let client = args.operator.client(project)?;
    let lanes = match args.action.unwrap_or(LaneAction::List) {
        LaneAction::List => client.lanes().await?,
        LaneAction::Pause { target } => client.set_lanes_paused(&target, true).await?,
        LaneAction::Resume { target } => client.set_lanes_paused(&target, false).await?,
    };
    println!("{:<16} {:<10} {:>8} {:>10}", "LANE", "STATE", "WAITING", "IN FLIGHT");
    for lane in lanes {
        println!(
            "{:<16} {:<10} {:>8} {:>10}",
            text(&lane, "lane"),
            text(&lane, "state"),
            count(&lane, "waiting"),
            count(&lane, "in_flight")
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    action: DlqAction,
    #[command(flatten)]
    operator: OperatorArgs,
}

#[derive(Debug, clap::Subcommand)]
enum DlqAction {
    /// The dead letters kept: each message's job, owner, reason, receives and age (nothing is consumed).
    List {
        /// One queue's: `text`, `intake`, … or a DLQ's full name.
        queue: Option<String>,
    },
    /// Send a queue's dead letters back to the queues they failed in; their jobs go back to queued.
    /// A job that ended another way meanwhile is not run again.
    Redrive {
        queue: String,
        /// Only this job's dead letter.
        #[arg(long)]
        job: Option<String>,
    },
}

pub async fn dlq(project: &Path, args: DlqArgs) -> anyhow::Result<()> {
    let client = args.operator.client(project)?;
    match args.action {
        DlqAction::List { queue } => {
            let letters = client.dead_letters(queue.as_deref()).await?;
            println!("{:<38} {:<12} {:>8} {:>8}  {:<24} REASON", "JOB", "OWNER", "RECEIVES", "AGE", "QUEUE");
            for letter in &letters {
                let jobs: Vec<&str> = letter["jobs"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let job = if jobs.is_empty() { "-".to_owned() } else { jobs.join(",") };
                let age = letter["age_s"].as_u64().map_or_else(|| "?".into(), |s| format!("{s}s"));
                println!(
                    "{job:<38} {:<12} {:>8} {age:>8}  {:<24} {}",
                    text(letter, "owner"),
                    count(letter, "receive_count"),
                    text(letter, "source_queue"),
                    text(letter, "reason")
                );
            }
            eprintln!("{} dead letter(s)", letters.len());
        }
        DlqAction::Redrive { queue, job } => {
            let outcome = client.redrive(&queue, job.as_deref()).await?;
            for (kind, verb) in [("redriven", "redriven"), ("discarded", "discarded"), ("skipped", "skipped")] {
                for entry in outcome[kind].as_array().into_iter().flatten() {
                    let why = entry["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
                    println!("{verb} {} (jobs {}){why}", text(entry, "message_id"), entry["jobs"]);
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct QuotaArgs {
    /// The owner.
    owner: String,
    /// The owner's own limit of jobs queued or processing (0: none). Setting either limit replaces
    /// the owner's own quotas (a limit not given goes back to the default); with neither, they are shown.
    #[arg(long)]
    max_active_jobs: Option<u32>,
    /// Set the owner's own limit of bytes submitted per UTC day (0: none).
    #[arg(long)]
    max_bytes_per_day: Option<u64>,
    #[command(flatten)]
    operator: OperatorArgs,
}

pub async fn quota(project: &Path, args: QuotaArgs) -> anyhow::Result<()> {
    let client = args.operator.client(project)?;
    let own = (args.max_active_jobs.is_some() || args.max_bytes_per_day.is_some()).then(|| {
        let mut own = serde_json::Map::new();
        if let Some(n) = args.max_active_jobs {
            own.insert("max_active_jobs".into(), n.into());
        }
        if let Some(n) = args.max_bytes_per_day {
            own.insert("max_bytes_per_day".into(), n.into());
        }
        Value::Object(own)
    });
    let body = client.quota(&args.owner, own.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or("-").to_owned()
}

fn count(v: &Value, key: &str) -> String {
    v[key].as_u64().map_or_else(|| "?".to_owned(), |n| n.to_string())
}

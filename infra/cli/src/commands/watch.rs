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

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    job: String,
    /// Keep printing lines as the job writes them, until it ends.
    #[arg(long, short)]
    follow: bool,
    /// Print each line as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoints: EndpointArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

/// How many times `logs --follow` reopens a stream that closed before the job ended.
const MAX_RESUMES: usize = 100;

pub async fn logs(project: &Path, args: LogsArgs) -> anyhow::Result<()> {
    let target = Target::new(project, args.endpoints, args.auth)?;
    let id: JobId = args.job.parse().context("not a job id")?;
    let print = |line: &Value| {
        if args.json {
            println!("{line}");
        } else {
            println!("{}", human_line(line));
        }
    };
    if !args.follow {
        let mut after = 0;
        loop {
            let (lines, next) = target.api.logs(&id, after).await?;
            lines.iter().for_each(print);
            match next {
                Some(next) => after = next,
                None => return Ok(()),
            }
        }
    }
    let stream_url = target.stream_url.as_deref().context("no stream URL: pass --stream (the StreamUrl output of the stack)")?;
    let mut last_id = None;
    for _ in 0..MAX_RESUMES {
        let mut stream = target.api.stream(stream_url, &id, last_id, true).await?;
        while let Some(event) = stream.next().await? {
            last_id = event.seq().or(last_id);
            let data: Value = serde_json::from_str(&event.data).context("an event that is not JSON")?;
            match event.event.as_str() {
                "job.log" => data["payload"]["lines"].as_array().into_iter().flatten().for_each(print),
                "job.completed" | "job.failed" | "job.cancelled" => {
                    eprintln!("{id} {}", event.event.trim_start_matches("job."));
                    return Ok(());
                }
                _ => {}
            }
        }
        // Closed before the end (the function's time limit): resume after the last id.
    }
    anyhow::bail!("the stream of {id} kept closing before the job ended")
}

/// `12:03:04.120 INFO  extracted 812 words from 3 pages  pages=3 words=812`
fn human_line(line: &Value) -> String {
    let at = line["at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let time = at.map(|t| t.format("%H:%M:%S%.3f").to_string()).unwrap_or_default();
    let level = line["level"].as_str().unwrap_or_default().to_uppercase();
    let fields: Vec<String> = line["fields"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{time} {level:<5} {}  {}", line["message"].as_str().unwrap_or_default(), fields.join(" ")).trim_end().to_owned()
}

pub async fn status(project: &Path, args: StatusArgs) -> anyhow::Result<()> {
    let target = Target::new(project, args.endpoints, args.auth)?;
    let job = target.api.job(&args.job.parse().context("not a job id")?).await?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

//! `prism submit`: files through the API, optionally followed to their end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use prism_cloud::PrismClient;
use prism_cloud::client::{SubmitOptions, SubmitReport};
use prism_shared::JobId;

use super::target::{AuthArgs, EndpointArgs, Target};

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    files: Vec<PathBuf>,
    /// Wait for the jobs to finish, showing live progress.
    #[arg(long)]
    wait: bool,
    /// One JSON object per file per line.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    priority: Option<String>,
    /// Run this workflow on each file (`GET /v1/workflows` lists them; `default`
    /// picks the one for the file's modality) instead of one processing step.
    #[arg(long)]
    workflow: Option<String>,
    /// Seconds to wait for the jobs with --wait.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[command(flatten)]
    endpoints: EndpointArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

pub async fn run(project: &Path, args: SubmitArgs) -> anyhow::Result<()> {
    let SubmitArgs { files, wait, json, priority, workflow, timeout, endpoints, auth } = args;
    let options = SubmitOptions { priority, workflow };
    let target = Target::new(project, endpoints, auth)?;
    let mut submitted = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        submitted.push((file.display().to_string(), target.api.submit_with(&name, bytes, &options).await));
    }
    if wait {
        let ids: Vec<JobId> = submitted.iter().filter_map(|(_, r)| r.as_ref().ok().map(|j| j.id.clone())).collect();
        if let Err(e) = target.follow(&ids, Duration::from_secs(timeout), !json, |_| {}).await {
            eprintln!("prism: {e:#}");
        }
    }
    let mut unfinished = false;
    for (label, outcome) in submitted {
        let outcome = match outcome {
            Ok(job) if wait => target.api.job(&job.id).await,
            other => other,
        };
        let report = match outcome {
            Ok(job) => SubmitReport::new(&label, &job),
            Err(e) => SubmitReport::client_error(&label, &e),
        };
        unfinished |= report.status != "completed";
        print_report(&report, json)?;
    }
    if unfinished && wait {
        std::process::exit(2);
    }
    Ok(())
}

/// Submits one file and, with `wait`, waits for its end.
pub async fn submit_one(client: &PrismClient, label: &str, name: &str, bytes: Vec<u8>, wait: Option<Duration>) -> SubmitReport {
    let outcome = async {
        let job = client.submit(name, bytes, None).await?;
        match wait {
            Some(timeout) => client.wait(&job.id, timeout).await,
            None => Ok(job),
        }
    }
    .await;
    match outcome {
        Ok(job) => SubmitReport::new(label, &job),
        Err(e) => SubmitReport::client_error(label, &e),
    }
}

fn print_report(r: &SubmitReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let what = r.modality.as_deref().unwrap_or("-");
    let detail = r.error.as_ref().or(r.result.as_ref()).map(ToString::to_string).unwrap_or_default();
    println!("{}  {}  {}  {}  {}", r.file, r.job_id, r.status, what, detail);
    Ok(())
}

//! `prism bench`: runs the benchmarks under `bench/` and prints one report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use prism_cloud::proxy::FaultPlan;
use prism_cloud::{CloudOptions, EmulatorChoice, LocalCloud, PrismClient, cloud, install, load};

use super::up::{build_workspace_bins, target_dir};
use crate::bench;
use crate::bench::live::{Beside, LivePush, LiveTarget};
use crate::tools::{CORPUS_TOOLS, LOCAL_RELEASE, PROCESSOR_TOOLS, REFERENCE_TOOLS};

/// How long the load runs before the live-progress connections measured
/// beside it start their jobs: past the first submissions, into the backlog.
const LIVE_AFTER_LOAD_STARTS: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Batch jobs queued ahead of the urgent one.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// WebSocket connections open during the live-progress benchmark.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Starts of each function in the cold-start benchmark.
    #[arg(long, default_value_t = 20)]
    starts: usize,
    /// Jobs in the load benchmark.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Submit the load's jobs at this many a second instead of flat out: an
    /// offered load below the pipeline's capacity, whose latencies are those
    /// of a cloud that keeps up rather than of its queues.
    #[arg(long, value_name = "JOBS_PER_SECOND", value_parser = positive_rate)]
    rate: Option<f64>,
    /// Run only these benchmarks (default: all).
    #[arg(long, value_enum)]
    only: Vec<BenchKind>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The emulators the benchmarks on a cloud run against.
    #[arg(long, value_enum, default_value_t = EmulatorChoice::Localstack)]
    emulator: EmulatorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchKind {
    Classifier,
    Thumbnails,
    Audio,
    Documents,
    Video,
    Memory,
    Priority,
    Live,
    Load,
    ColdStart,
    Idle,
    Eta,
}

pub async fn run(project: &Path, args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs { batch, connections, starts, jobs, rate, only, out, emulator } = args;
    let pace = rate.map_or(load::Pace::FlatOut, load::Pace::PerSecond);
    let wanted = |kind| only.is_empty() || only.contains(&kind);
    let scratch = project.join("target/prism-bench");
    let exe = std::env::current_exe()?;
    let mut report = String::from("# Prism benchmark report\n\n");
    if wanted(BenchKind::Classifier) {
        bench::classifier(&scratch, &mut report)?;
    }
    if wanted(BenchKind::Thumbnails) {
        install::ensure_commands(REFERENCE_TOOLS)?;
        bench::thumbnails::thumbnails(&scratch, &exe, &mut report)?;
    }
    if wanted(BenchKind::Audio) || wanted(BenchKind::Documents) || wanted(BenchKind::Video) {
        install::ensure_commands(&[PROCESSOR_TOOLS, CORPUS_TOOLS].concat())?;
    }
    if wanted(BenchKind::Audio) {
        bench::media::audio(&scratch, &exe, &mut report)?;
    }
    if wanted(BenchKind::Documents) {
        bench::documents::documents(&scratch, &exe, &mut report)?;
    }
    if wanted(BenchKind::Video) {
        bench::media::video(&scratch, &exe, &mut report)?;
    }
    if wanted(BenchKind::Memory) {
        bench::memory::memory(project, &scratch, &exe, &mut report)?;
    }
    let on_cloud = [BenchKind::Priority, BenchKind::Live, BenchKind::Load, BenchKind::ColdStart, BenchKind::Idle];
    if on_cloud.into_iter().chain([BenchKind::Eta]).any(wanted) {
        // One build for every benchmark on a cloud, with the cold-start references when they are measured.
        let references: Vec<&str> = match wanted(BenchKind::ColdStart) {
            true => bench::cold_start::REFERENCES.iter().flat_map(|example| ["--example", example]).collect(),
            false => Vec::new(),
        };
        build_workspace_bins(project, true, &references)?;
    }
    if on_cloud.into_iter().any(wanted) {
        let (cloud, key) = start_cloud(project, emulator, &scratch.join("cloud"), Vec::new()).await?;
        let token = key.issue("bench", chrono::Duration::hours(4), chrono::Utc::now())?;
        let api = PrismClient::new(&cloud.info.http_url, Some(token.clone()))?;
        let measured = async {
            // First, while nothing has been asked of the cloud.
            if wanted(BenchKind::Idle) {
                bench::idle::idle_requests(Path::new(&cloud.info.logs_dir), &mut report).await?;
            }
            if wanted(BenchKind::Priority) {
                bench::priority(&api, batch, &mut report).await?;
            }
            let live_target = cloud.info.websocket_url.as_deref().map(|websocket_url| LiveTarget {
                api: &api,
                websocket_url,
                token: &token,
                api_concurrency: cloud.concurrency("api").unwrap_or(1),
                ws_concurrency: cloud.concurrency("ws").unwrap_or(1),
            });
            if wanted(BenchKind::Live) {
                let target = live_target.context("the template has no WebSocket API")?;
                report.push_str(&LivePush::section(LivePush::prepare(target, connections).await, None).await);
            }
            if wanted(BenchKind::ColdStart) {
                let release = target_dir(project).join(LOCAL_RELEASE);
                let zips = target_dir(project).join("lambda");
                bench::cold_start::cold_starts(&cloud, &release.join("examples"), &zips, starts, &mut report).await?;
            }
            if wanted(BenchKind::Load) {
                let owner_token = key.issue(load::OWNER, chrono::Duration::hours(4), chrono::Utc::now())?;
                let load_api = PrismClient::new(&cloud.info.http_url, Some(owner_token))?;
                let submitting = rate.map_or(0.0, |rate| jobs as f64 / rate);
                let deadline = Duration::from_secs_f64(600.0 + jobs as f64 + submitting);
                // The load's owner may have every job in flight at once: past the
                // stack's active-jobs quota (1,000) its submissions would be held
                // back with 429s, and the run would measure the quota, not the pipeline.
                let operator = key.issue_operator("bench-operator", chrono::Duration::hours(1), chrono::Utc::now())?;
                PrismClient::new(&cloud.info.http_url, Some(operator))?
                    .quota(load::OWNER, Some(&serde_json::json!({ "max_active_jobs": 0 })))
                    .await?;
                let bound = bench::emulator_bound::measure(&cloud.clients()).await?;
                // With `live` asked for too, its connections are measured again
                // while the load runs: the push latency a user sees on a busy cloud.
                // Its jobs are created and its connections opened first, so they do
                // not wait behind the load's submissions and its jobs run while the
                // load does (the report says if the load ended first).
                let live_jobs = match (wanted(BenchKind::Live), live_target) {
                    (true, Some(target)) => Some(LivePush::prepare(target, connections).await),
                    _ => None,
                };
                let logs = Path::new(&cloud.info.logs_dir);
                let served_before = bench::idle::requests(logs)?;
                let load_ended = std::sync::atomic::AtomicBool::new(false);
                let loading = async {
                    let result = load::run(&cloud, &load_api, jobs, pace, deadline).await;
                    load_ended.store(true, std::sync::atomic::Ordering::SeqCst);
                    result
                };
                let live_under_load = async {
                    let Some(prepared) = live_jobs else { return String::new() };
                    tokio::time::sleep(LIVE_AFTER_LOAD_STARTS).await;
                    let running = || !load_ended.load(std::sync::atomic::Ordering::SeqCst);
                    LivePush::section(prepared, Some(Beside { load: &format!("{jobs} load jobs"), running: &running })).await
                };
                let (result, live) = tokio::join!(loading, live_under_load);
                let result = result?;
                let served = bench::emulator_bound::Served::since(&served_before, &bench::idle::requests(logs)?, jobs);
                report.push_str(&live);
                let choice = format!("{emulator:?}").to_lowercase();
                let paced = rate.map(|rate| format!(" --rate {rate}")).unwrap_or_default();
                let command =
                    format!("cargo run --profile local-release -p prism -- bench --only load --jobs {jobs}{paced} --emulator {choice}");
                load::write(&result, &command, &mut report)?;
                if !live.is_empty() {
                    // The proxies count every function's calls, the live measurement's included.
                    report.push_str(&format!(
                        "These calls per job include the live measurement's, which ran beside the load \
                         ({connections} connections following their own jobs: `ws`, `progress`, @connections); \
                         `--only load` alone counts the load's own.\n\n"
                    ));
                }
                bench::emulator_bound::write(bound, &result.calls_per_job, result.jobs_per_second, pace, &mut report)?;
                bench::emulator_bound::write_served(bound, served, result.jobs_per_second, &mut report)?;
            }
            anyhow::Ok(())
        }
        .await;
        cloud.stop().await;
        measured?;
    }
    if wanted(BenchKind::Eta) {
        install::ensure_commands(&[PROCESSOR_TOOLS, CORPUS_TOOLS, REFERENCE_TOOLS].concat())?;
        // A cloud of its own: nothing learned yet, and classify reading the
        // calibration for every job, so the second round sees the first's.
        let parameters = vec![("EstimateCalibrationCacheSeconds".to_owned(), "0".to_owned())];
        let (cloud, key) = start_cloud(project, emulator, &scratch.join("cloud-eta"), parameters).await?;
        let api = PrismClient::new(&cloud.info.http_url, Some(key.issue("bench", chrono::Duration::hours(4), chrono::Utc::now())?))?;
        let measured = bench::eta::eta(&api, &scratch, &mut report).await;
        cloud.stop().await;
        measured?;
    }
    print!("{report}");
    if let Some(path) = out {
        std::fs::write(&path, &report)?;
    }
    Ok(())
}

fn positive_rate(text: &str) -> anyhow::Result<f64> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => anyhow::bail!("{text:?} is not a positive number of jobs a second"),
    }
}

/// A fresh local cloud of `local-release` builds for a benchmark, and the key its tokens are signed with.
async fn start_cloud(
    project: &Path,
    emulator: EmulatorChoice,
    state_dir: &Path,
    parameters: Vec<(String, String)>,
) -> anyhow::Result<(LocalCloud, prism_shared::app::auth::TokenKey)> {
    let secret = cloud::new_token_secret();
    let cloud = LocalCloud::start(CloudOptions {
        project_dir: project.to_owned(),
        emulator: Some(emulator),
        bin_dir: target_dir(project).join(LOCAL_RELEASE),
        state_dir: state_dir.to_owned(),
        echo_logs: false,
        stage: "bench".into(),
        token_secret: secret.clone(),
        faults: FaultPlan::default(),
        parameters,
        iam: prism_cloud::iam::IamMode::Enforce,
        cpu_by_memory: false,
    })
    .await?;
    Ok((cloud, prism_shared::app::auth::TokenKey::new(secret.as_bytes())?))
}

//! The `prism` commands, one module each.

pub(crate) mod analyse;
mod bench;
mod dashboard;
mod install;
mod operate;
mod package;
mod stats;
mod submit;
mod target;
mod test;
mod up;
mod watch;

use std::path::Path;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the local cloud (emulators, resources from template.yaml, functions, APIs).
    Up(up::UpArgs),
    /// Start the local cloud, submit a sample text and print its job; runs until Ctrl-C.
    Demo(up::UpArgs),
    /// Stop a local cloud started with `up --detach`.
    Down,
    /// Submit files through the API (create job, upload to its presigned URL).
    Submit(submit::SubmitArgs),
    /// Follow jobs live until they end: progress bars from the WebSocket API,
    /// resuming after dropped connections, REST polling as the fallback.
    Watch(watch::WatchArgs),
    /// Print one job.
    Status(watch::StatusArgs),
    /// Print a job's log lines; with --follow, as they are written (server-sent events) until the job ends.
    Logs(watch::LogsArgs),
    /// Sum the metrics the functions logged (CloudWatch Embedded Metric Format) as CloudWatch would.
    Stats(stats::StatsArgs),
    /// Issue a bearer token for the local cloud.
    Token(target::TokenArgs),
    /// List, pause and resume priority lanes (operator routes; an operator's token).
    Lanes(operate::LanesArgs),
    /// List dead letters (job, owner, reason, age) and send them back to their queues (an operator's token).
    Dlq(operate::DlqArgs),
    /// Show an owner's quotas and bytes today, or set its own (an operator's token).
    Quota(operate::QuotaArgs),
    /// Deploy the web dashboard to a bucket (default: the running local cloud's), with the config.json naming the APIs.
    DashboardDeploy(dashboard::DeployArgs),
    /// Install the emulators' pinned virtualenvs under .prism/venvs.
    Install,
    /// Build each function's deployable bootstrap.zip for Lambda on arm64 (cargo-lambda, installed on
    /// first use) and check it holds an executable aarch64 `bootstrap`; prints their sizes.
    Package(package::PackageArgs),
    /// Run the benchmarks (on a private local cloud) and print the report.
    Bench(bench::BenchArgs),
    /// Run files through their processors on this machine, without the cloud
    /// (classified by content as in the cloud); one JSON line per file.
    Analyse(analyse::AnalyseArgs),
    /// Make thumbnails of image files as process-image does (decode, orient, resize, encode).
    Thumbnail(analyse::ThumbnailArgs),
    /// Run every check: cfn-lint on template.yaml, then all tests (unit and end-to-end) with nextest.
    Test(test::TestArgs),
}

impl Command {
    pub async fn run(self, project: &Path) -> anyhow::Result<()> {
        match self {
            Self::Up(args) => up::up(project, args, false).await,
            Self::Demo(args) => up::up(project, args, true).await,
            Self::Down => up::down(project),
            Self::Submit(args) => submit::run(project, args).await,
            Self::Watch(args) => watch::watch(project, args).await,
            Self::Status(args) => watch::status(project, args).await,
            Self::Logs(args) => watch::logs(project, args).await,
            Self::Stats(args) => stats::run(project, &args).await,
            Self::Token(args) => target::token(project, &args),
            Self::Lanes(args) => operate::lanes(project, args).await,
            Self::Dlq(args) => operate::dlq(project, args).await,
            Self::Quota(args) => operate::quota(project, args).await,
            Self::DashboardDeploy(args) => dashboard::deploy(project, args).await,
            Self::Install => install::run(project),
            Self::Package(args) => package::run(project, &args),
            Self::Bench(args) => bench::run(project, args).await,
            Self::Analyse(args) => analyse::analyse(&args),
            Self::Thumbnail(args) => analyse::thumbnail(&args),
            Self::Test(args) => test::run(project, &args.args),
        }
    }
}

//! `prism`: run Prism's local cloud and talk to it. One module per command
//! under `commands/`; the benchmarks under `bench/`.

mod bench;
mod commands;
mod progress;
mod tools;

use anyhow::Context as _;
use clap::Parser;
use commands::Command;

#[derive(Debug, Parser)]
#[command(name = "prism", version, about = "Prism's operator CLI and local cloud")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PRISM_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let project = prism_cloud::cloud::find_project_dir(&std::env::current_dir()?)
        .context("run prism inside the Prism project (no template.yaml found)")?;
    cli.command.run(&project).await
}

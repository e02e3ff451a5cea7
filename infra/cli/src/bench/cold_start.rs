//! Cold starts: each function's process from its start to its first
//! Runtime API `next` (Lambda's `Init Duration`), with the environment its
//! instances get on the local cloud, against two references built with the
//! same profile and started the same way: `lambda_runtime`'s hello-world,
//! and the hello-world that builds a DynamoDB client first.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prism_cloud::LocalCloud;

use super::percentile;

/// The reference builds, as `cargo build --example` names them.
pub const REFERENCES: [&str; 2] = ["hello_lambda", "hello_dynamodb"];

/// The cold-start goal: at most this many times the hello-world's.
const GOAL: f64 = 1.5;

/// Measures every function and both references `rounds` times, one process
/// at a time, taking them in turn each round so that the machine's noise
/// falls on all of them alike.
pub async fn cold_starts(cloud: &LocalCloud, examples: &Path, zips: &Path, rounds: usize, out: &mut String) -> anyhow::Result<()> {
    // Any function's launch will do for the references: they read nothing of it.
    let host = cloud.binaries().next().ok_or_else(|| anyhow::anyhow!("the template has no function"))?.to_owned();
    let mut subjects: Vec<(String, Option<PathBuf>)> =
        REFERENCES.iter().map(|name| (format!("{name} (reference)"), Some(examples.join(name)))).collect();
    subjects.extend(cloud.binaries().map(|binary| (binary.to_owned(), None)));
    let mut samples = vec![Vec::with_capacity(rounds); subjects.len()];
    // When each process registered its extension: the end of its own set-up
    // (configuration, clients), the start of the runtime's.
    let mut registrations = vec![Vec::with_capacity(rounds); subjects.len()];
    for _ in 0..rounds {
        for (((name, binary), times), registered) in subjects.iter().zip(&mut samples).zip(&mut registrations) {
            let function = if binary.is_some() { host.as_str() } else { name.as_str() };
            let took = cloud.cold_start(function, binary.as_deref()).await?;
            times.push(millis(took.ready));
            registered.extend(took.extension_registered.map(millis));
        }
    }
    for times in samples.iter_mut().chain(&mut registrations) {
        times.sort_by(f64::total_cmp);
    }
    let hello = percentile(&samples[0], 50.0);
    writeln!(out, "## Cold starts\n")?;
    writeln!(
        out,
        "Process start to the first Runtime API `next` (Lambda's Init Duration), {rounds} starts each, one process at a time, \
         with the environment the local cloud gives each function; `local-release` builds.\n"
    )?;
    writeln!(
        out,
        "| binary | p50 | p90 | p50 vs hello-world | extension registered at (p50) | bootstrap.zip |\n|---|---:|---:|---:|---:|---:|"
    )?;
    let mut missed = Vec::new();
    for (((name, binary), times), registered) in subjects.iter().zip(&samples).zip(&registrations) {
        let (p50, p90) = (percentile(times, 50.0), percentile(times, 90.0));
        let ratio = p50 / hello;
        let registered = if registered.is_empty() { "–".to_owned() } else { format!("{:.1} ms", percentile(registered, 50.0)) };
        let zip = std::fs::metadata(zips.join(name).join("bootstrap.zip"))
            .map(|m| format!("{:.1} MB", m.len() as f64 / 1e6))
            .unwrap_or_else(|_| "–".into());
        writeln!(out, "| {name} | {p50:.1} ms | {p90:.1} ms | {ratio:.2}x | {registered} | {zip} |")?;
        // The references are what the goal is measured against, not subjects of it.
        if ratio > GOAL && binary.is_none() {
            missed.push(name.as_str());
        }
    }
    let verdict = if missed.is_empty() { "met by every function".to_owned() } else { format!("missed by {}", missed.join(", ")) };
    writeln!(
        out,
        "\nGoal: p50 <= {GOAL}x the hello-world's: {verdict}. (`bootstrap.zip`: the zips found under target/lambda/, release ones from `prism package` or the test command's unoptimised arm64 check, whichever was built last.)\n"
    )?;
    Ok(())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

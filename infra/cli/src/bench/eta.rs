//! Estimates: each modality's first estimate of a job against what the job
//! took (first phase started to completed), for the same corpus twice on a
//! fresh local cloud: first with nothing learned (the classifier's plain
//! guesses), then with the calibration the first round's completions made
//! (see `prism_shared::domain::estimates`). Jobs run one at a time, so each
//! takes what it would alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use prism_cloud::PrismClient;

/// How long one job may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

fn run(what: &str, script: &str) -> anyhow::Result<()> {
    let status = Command::new("sh").args(["-c", script]).status().with_context(|| format!("making {what}"))?;
    anyhow::ensure!(status.success(), "could not make {what}");
    Ok(())
}

/// Files of each modality, of a few sizes each, made once under `dir`.
fn corpus(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let mut make = |name: &str, script: &dyn Fn(&Path) -> String| -> anyhow::Result<()> {
        let path = dir.join(name);
        if !path.exists() {
            run(name, &script(&path))?;
        }
        files.push(path);
        Ok(())
    };
    let ffmpeg = "ffmpeg -hide_banner -v error -y";
    for (name, kib) in [("words-small.txt", 16), ("words-medium.txt", 512), ("words-large.txt", 4096)] {
        make(name, &|p| format!("yes 'the quick brown fox jumps over the lazy dog' | head -c {} > '{}'", kib * 1024, p.display()))?;
    }
    for (name, size) in [("noise-small.png", "800x600"), ("noise-large.jpg", "3000x2000")] {
        make(name, &|p| format!("convert -size {size} plasma:fractal -quality 90 '{}'", p.display()))?;
    }
    for (name, seconds) in [("tone-short.mp3", 20), ("tone-long.flac", 120)] {
        make(name, &|p| format!("{ffmpeg} -f lavfi -i 'sine=frequency=440:duration={seconds}' -ac 2 '{}'", p.display()))?;
    }
    for (name, seconds) in [("clip-short.mp4", 10), ("clip-long.mp4", 60)] {
        make(name, &|p| {
            format!(
                "{ffmpeg} -f lavfi -i testsrc2=size=640x360:rate=25:duration={seconds} -f lavfi -i sine=duration={seconds} \
                 -c:v libx264 -preset veryfast -g 50 -pix_fmt yuv420p -c:a aac -shortest '{}'",
                p.display()
            )
        })?;
    }
    for (name, page) in [("manual-small.pdf", "/usr/share/man/man1/ls.1.gz"), ("manual-large.pdf", "/usr/share/man/man1/bash.1.gz")] {
        make(name, &|p| format!("zcat -f '{page}' | groff -Tpdf -man -P-pa4 > '{}' 2>/dev/null", p.display()))?;
    }
    Ok(files)
}

/// One job per file, one at a time: modality, first estimate and time taken (s).
async fn round(api: &PrismClient, files: &[PathBuf]) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let mut samples = Vec::new();
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let job = api.submit(&name, std::fs::read(path)?, Some("normal")).await?;
        let done = api.wait(&job.id, JOB_TIMEOUT).await?;
        let (Some(modality), Some(estimated), Some(error)) = (done.modality, done.estimated_s, done.estimate_error_s) else {
            anyhow::bail!("{name} ended {} without an estimate and its error ({:?})", done.status, done.error);
        };
        samples.push((modality.to_string(), estimated, estimated + error));
    }
    Ok(samples)
}

/// Mean absolute error (s) and mean error relative to the time taken, per modality.
fn errors(samples: &[(String, f64, f64)]) -> BTreeMap<String, (usize, f64, f64)> {
    let mut by_modality: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (modality, estimated, took) in samples {
        by_modality.entry(modality.clone()).or_default().push((*estimated, *took));
    }
    by_modality
        .into_iter()
        .map(|(modality, jobs)| {
            let n = jobs.len() as f64;
            let absolute = jobs.iter().map(|(e, t)| (e - t).abs()).sum::<f64>() / n;
            let relative = jobs.iter().map(|(e, t)| (e - t).abs() / t.max(0.01)).sum::<f64>() / n;
            (modality, (jobs.len(), absolute, relative))
        })
        .collect()
}

pub async fn eta(api: &PrismClient, scratch: &Path, out: &mut String) -> anyhow::Result<()> {
    let files = corpus(&scratch.join("eta"))?;
    let before = errors(&round(api, &files).await?);
    let after = errors(&round(api, &files).await?);
    writeln!(out, "## Estimates\n")?;
    writeln!(
        out,
        "The first estimate of each job against what it took (first phase started to completed), {} files of five modalities \
         run one at a time on a fresh local cloud: before (nothing learned: the classifier's plain guesses), then again with \
         the calibration the first round's completions made.\n",
        files.len()
    )?;
    writeln!(out, "| modality | jobs | mean error before | after | relative before | after |\n|---|---:|---:|---:|---:|---:|")?;
    for (modality, (jobs, absolute, relative)) in &before {
        let (_, absolute_after, relative_after) = after.get(modality).copied().unwrap_or((0, f64::NAN, f64::NAN));
        writeln!(
            out,
            "| {modality} | {jobs} | {absolute:.2} s | {absolute_after:.2} s | {:.0}% | {:.0}% |",
            relative * 100.0,
            relative_after * 100.0
        )?;
    }
    writeln!(out)?;
    Ok(())
}

//! Timing a tool as a process: wall and CPU time and peak memory, read
//! from `/usr/bin/time`, so every benchmark measures both sides the same way.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;

/// One run: wall and CPU seconds, peak resident set in MB.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub wall: f64,
    pub cpu: f64,
    pub peak_mb: f64,
}

pub fn measure(cmd: &mut Command) -> anyhow::Result<Run> {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("PRISM_TIME %e %U %S %M").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    let started = Instant::now();
    let out = timed.stdout(std::process::Stdio::null()).output().with_context(|| format!("running {:?}", cmd.get_program()))?;
    // Wall time by the clock here: /usr/bin/time's is in hundredths of a second.
    let wall = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "{:?} failed: {stderr}", cmd.get_program());
    let line = stderr.lines().rev().find_map(|l| l.strip_prefix("PRISM_TIME ")).context("no timing from /usr/bin/time")?;
    let n: Vec<f64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    anyhow::ensure!(n.len() == 4, "unexpected timing line {line:?}");
    Ok(Run { wall, cpu: n[1] + n[2], peak_mb: n[3] / 1024.0 })
}

/// The best of three runs by wall time.
pub fn best(mut make: impl FnMut() -> Command) -> anyhow::Result<Run> {
    let mut best: Option<Run> = None;
    for _ in 0..3 {
        let run = measure(&mut make())?;
        if best.is_none_or(|b| run.wall < b.wall) {
            best = Some(run);
        }
    }
    best.context("no run")
}

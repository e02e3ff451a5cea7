//! `prism up`, `prism demo` and `prism down`: the local cloud in the foreground or detached.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use prism_cloud::cloud::{self, LocalInfo};
use prism_cloud::proxy::FaultPlan;
use prism_cloud::{CloudOptions, EmulatorChoice, LocalCloud, PrismClient};

use super::submit::submit_one;
use super::target::issue_token;
use crate::tools::{LOCAL_RELEASE, PROCESSOR_TOOLS};

/// The sample `prism demo` submits.
const DEMO_FILE: (&str, &[u8]) = ("notes.txt", include_bytes!("../../samples/notes.txt"));

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Which emulators to run; ignored when AWS_ENDPOINT_URL is set (that endpoint is used).
    #[arg(long, value_enum, default_value = "localstack")]
    emulator: EmulatorChoice,
    /// Return once the cloud is ready; `prism down` stops it.
    #[arg(long)]
    detach: bool,
    /// Run release builds of the functions.
    #[arg(long)]
    release: bool,
    /// Use the function binaries as they are.
    #[arg(long)]
    no_build: bool,
    #[arg(long, default_value = "dev")]
    stage: String,
    /// Inject the faults this JSON file lists into the functions' AWS calls
    /// (`{"faults": [{"function": "publish", "operation": "sns:PublishBatch", "times": 3, "action": {"kind": "fail"}}],
    /// "duplicate_deliveries": true}`).
    #[arg(long)]
    faults: Option<PathBuf>,
    /// Check each function's AWS calls against its policy in template.yaml:
    /// `enforce` answers a call it does not allow with AccessDenied, as AWS
    /// would; `warn` lets it through and says so; `off` checks nothing.
    #[arg(long, default_value = "enforce")]
    iam: prism_cloud::iam::IamMode,
    /// Give each function the CPU share its `MemorySize` buys on Lambda (one
    /// vCPU at 1,769 MB) with cgroup CPU quotas, so local timings and
    /// timeouts mean what they would there (needs root; slower on purpose).
    #[arg(long)]
    cpu_by_memory: bool,
}

pub async fn up(project: &Path, args: UpArgs, demo: bool) -> anyhow::Result<()> {
    if args.detach {
        return detach(project, &args, demo);
    }
    let profile = if args.release { LOCAL_RELEASE } else { "debug" };
    prism_cloud::install::ensure_commands(PROCESSOR_TOOLS)?;
    if !args.no_build {
        build_functions(project, args.release)?;
    }
    let emulator = std::env::var_os("AWS_ENDPOINT_URL").is_none().then_some(args.emulator);
    let cloud = LocalCloud::start(CloudOptions {
        project_dir: project.to_owned(),
        emulator,
        bin_dir: target_dir(project).join(profile),
        state_dir: project.join(".prism"),
        echo_logs: true,
        stage: args.stage,
        token_secret: cloud::local_token_secret(project)?,
        faults: match &args.faults {
            Some(path) => FaultPlan::load(path)?,
            None => FaultPlan::default(),
        },
        parameters: Vec::new(),
        iam: args.iam,
        cpu_by_memory: args.cpu_by_memory,
    })
    .await?;
    let info = serde_json::to_string_pretty(&cloud.info)?;
    std::fs::write(LocalInfo::path(project), &info)?;
    println!("{info}");
    println!("prism: local cloud ready ({}); Ctrl-C stops it", cloud.info.emulator);
    if let Some(url) = &cloud.info.dashboard_url {
        println!("prism: dashboard at {url} (sign in with the token of `prism token --owner you`)");
    }
    if demo {
        let client = PrismClient::new(&cloud.info.http_url, Some(issue_token(project, "local", 1)?))?;
        let (name, bytes) = DEMO_FILE;
        let report = submit_one(&client, name, name, bytes.to_vec(), Some(Duration::from_secs(60))).await;
        println!("{}", serde_json::to_string(&report)?);
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("prism: stopping (instances finish their invocations, then get SIGTERM)");
    cloud.stop().await;
    // Last: `prism down` waits for this file to go.
    remove_local_info(project);
    Ok(())
}

/// Cargo's target directory for this project.
pub fn target_dir(project: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project.join("target"))
}

/// Builds the function binaries, as the whole workspace's binaries: cargo
/// resolves features per selection, so building just the template's
/// function packages (`-p …`) would compile most dependencies again with
/// other features than the test command's `cargo build --workspace` did.
pub fn build_functions(project: &Path, release: bool) -> anyhow::Result<()> {
    build_workspace_bins(project, release, &[])
}

/// `cargo build --workspace --bins`, plus `extra` arguments (examples).
pub fn build_workspace_bins(project: &Path, release: bool, extra: &[&str]) -> anyhow::Result<()> {
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project).args(["build", "--workspace", "--bins"]).args(extra);
    if release {
        cmd.args(["--profile", LOCAL_RELEASE]);
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the functions failed");
    }
    Ok(())
}

/// A stale file only misleads the next command; it is gone or it is not ours to keep.
fn remove_local_info(project: &Path) {
    if let Err(e) = std::fs::remove_file(LocalInfo::path(project))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("prism: could not remove {}: {e}", LocalInfo::path(project).display());
    }
}

/// Re-runs `prism up` in the background and returns once it is ready.
fn detach(project: &Path, args: &UpArgs, demo: bool) -> anyhow::Result<()> {
    if !args.no_build {
        build_functions(project, args.release)?;
    }
    remove_local_info(project);
    std::fs::create_dir_all(project.join(".prism/logs"))?;
    let log = std::fs::File::create(project.join(".prism/logs/prism-up.log"))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.current_dir(project)
        .arg(if demo { "demo" } else { "up" })
        .args(["--no-build", "--stage", &args.stage, "--emulator"])
        .arg(format!("{:?}", args.emulator).to_lowercase())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if args.release {
        cmd.arg("--release");
    }
    if let Some(faults) = &args.faults {
        cmd.arg("--faults").arg(faults);
    }
    cmd.arg("--iam").arg(args.iam.to_string());
    if args.cpu_by_memory {
        cmd.arg("--cpu-by-memory");
    }
    // Its own process group: a Ctrl-C in this terminal must not stop it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn()?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(300) {
        if let Some(status) = child.try_wait()? {
            bail!("prism up exited with {status}; see .prism/logs/prism-up.log");
        }
        if let Ok(info) = LocalInfo::read(project)
            && info.pid == child.id()
        {
            println!("{}", serde_json::to_string_pretty(&info)?);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the local cloud was not ready after 300 s; see .prism/logs/prism-up.log")
}

pub fn down(project: &Path) -> anyhow::Result<()> {
    let info = LocalInfo::read(project)?;
    let pid = rustix::process::Pid::from_raw(i32::try_from(info.pid)?).context("pid 0 in .prism/local.json")?;
    if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
        remove_local_info(project);
        bail!("no prism process {} ({e}; removed the stale .prism/local.json)", info.pid);
    }
    // A stop waits for running invocations (up to the drain limit) and the
    // runtimes' shutdown hooks, then stops the emulators.
    let limit = prism_cloud::runtime::DRAIN_LIMIT + Duration::from_secs(15);
    let started = Instant::now();
    while started.elapsed() < limit {
        if !LocalInfo::path(project).exists() {
            println!("prism: stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("prism {} did not stop within {limit:?}", info.pid)
}

//! `prism`: run Prism's local cloud and talk to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use prism::client::SubmitReport;
use prism::live::{ProgressView, Watch};
use prism::{CloudOptions, EmulatorChoice, LocalCloud, LocalInfo, PrismClient, cloud};
use prism_shared::JobId;
use serde_json::Value;

/// The optimised profile local runs use (release without LTO; see Cargo.toml).
const LOCAL_RELEASE: &str = "local-release";

/// The sample `prism demo` submits.
const DEMO_FILE: (&str, &[u8]) = ("notes.txt", include_bytes!("../samples/notes.txt"));

#[derive(Debug, Parser)]
#[command(name = "prism", version, about = "Prism's operator CLI and local cloud")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the local cloud (emulators, resources from template.yaml, functions, APIs).
    Up(UpArgs),
    /// Start the local cloud, submit a sample text and print its job; runs until Ctrl-C.
    Demo(UpArgs),
    /// Stop a local cloud started with `up --detach`.
    Down,
    /// Submit files through the API (create job, upload to its presigned URL).
    Submit {
        files: Vec<PathBuf>,
        /// Wait for the jobs to finish, showing live progress.
        #[arg(long)]
        wait: bool,
        /// One JSON object per file per line.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        priority: Option<String>,
        /// Seconds to wait for the jobs with --wait.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        #[command(flatten)]
        endpoints: EndpointArgs,
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// Follow jobs live until they end: progress bars from the WebSocket API,
    /// resuming after dropped connections, REST polling as the fallback.
    Watch {
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
    },
    /// Print one job.
    Status {
        job: String,
        #[command(flatten)]
        endpoints: EndpointArgs,
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// Issue a bearer token for the local cloud.
    Token {
        #[arg(long)]
        owner: String,
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
    },
    /// Install the emulators' pinned virtualenvs under .prism/venvs.
    Install,
    /// Run the benchmarks (on a private local cloud) and print the report.
    Bench {
        /// Batch jobs queued ahead of the urgent one.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// WebSocket connections open during the live-progress benchmark.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Jobs in the load benchmark.
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        /// Run only these benchmarks (default: all).
        #[arg(long, value_enum)]
        only: Vec<BenchKind>,
        /// Also write the report to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run files through their processors on this machine, without the cloud
    /// (classified by content as in the cloud); one JSON line per file.
    Analyse {
        files: Vec<PathBuf>,
        /// Also write each file's outputs to this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Skip the first-page preview of PDFs (text only, as pdftotext).
        #[arg(long)]
        no_preview: bool,
    },
    /// Make thumbnails of image files as process-image does (decode, orient, resize, encode).
    Thumbnail {
        files: Vec<PathBuf>,
        /// Longest edge in pixels.
        #[arg(long, default_value_t = 256)]
        size: u32,
        /// Folder to write them to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run every check: cfn-lint on template.yaml, then all tests (unit and end-to-end) with nextest.
    Test {
        /// Passed on to `cargo nextest run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchKind {
    Classifier,
    Thumbnails,
    Audio,
    Documents,
    Video,
    Priority,
    Live,
    Load,
}

#[derive(Debug, clap::Args)]
struct EndpointArgs {
    /// API base URL (default: the running local cloud's).
    #[arg(long, env = "PRISM_API_URL")]
    api: Option<String>,
    /// WebSocket API URL (default: the running local cloud's; none means REST polling).
    #[arg(long, env = "PRISM_WEBSOCKET_URL")]
    websocket: Option<String>,
}

/// Where and as whom the CLI talks to Prism.
struct Target {
    api: PrismClient,
    websocket_url: Option<String>,
    token: String,
}

impl Target {
    fn new(project: &Path, endpoints: EndpointArgs, auth: AuthArgs) -> anyhow::Result<Self> {
        let (api, websocket_url) = match endpoints.api {
            Some(api) => (api, endpoints.websocket),
            None => {
                let local = read_local(project)?;
                (local.http_url, endpoints.websocket.or(local.websocket_url))
            }
        };
        let token = auth.token(project)?;
        Ok(Self { api: PrismClient::new(&api, Some(token.clone()))?, websocket_url, token })
    }

    /// Follows `ids` to their end; `show` draws progress bars on a terminal,
    /// `on_event` sees every event in order.
    async fn follow(&self, ids: &[JobId], timeout: Duration, show: bool, mut on_event: impl FnMut(&Value) + Send) -> anyhow::Result<()> {
        let mut view = ProgressView::new(ids, show);
        let mut watch = Watch::new(ids.iter().map(|id| (id.clone(), 0)));
        let mut each = |id: &JobId, event: &Value| {
            view.update(id, event);
            on_event(event);
        };
        watch.follow(self.websocket_url.as_deref(), Some(&self.token), &self.api, timeout, &mut each).await
    }
}

#[derive(Debug, clap::Args)]
struct AuthArgs {
    /// Bearer token to use (default: one issued for --owner with the local cloud's secret).
    #[arg(long, env = "PRISM_TOKEN")]
    token: Option<String>,
    /// The owner to act for on the local cloud.
    #[arg(long, default_value = "local")]
    owner: String,
}

impl AuthArgs {
    fn token(self, project: &Path) -> anyhow::Result<String> {
        match self.token {
            Some(t) => Ok(t),
            None => issue_token(project, &self.owner, 24),
        }
    }
}

fn issue_token(project: &Path, owner: &str, ttl_hours: i64) -> anyhow::Result<String> {
    let key = prism_shared::auth::TokenKey::new(cloud::local_token_secret(project)?.as_bytes())?;
    Ok(key.issue(owner, chrono::Duration::hours(ttl_hours), chrono::Utc::now())?)
}

#[derive(Debug, clap::Args)]
struct UpArgs {
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PRISM_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let project =
        cloud::find_project_dir(&std::env::current_dir()?).context("run prism inside the Prism project (no template.yaml found)")?;
    match cli.command {
        Command::Up(args) => up(&project, args, false).await,
        Command::Demo(args) => up(&project, args, true).await,
        Command::Down => down(&project),
        Command::Submit { files, wait, json, priority, timeout, endpoints, auth } => {
            let target = Target::new(&project, endpoints, auth)?;
            let mut submitted = Vec::new();
            for file in &files {
                let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                submitted.push((file.display().to_string(), target.api.submit(&name, bytes, priority.as_deref()).await));
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
                print_report(&report, json);
            }
            if unfinished && wait {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Watch { jobs, json, timeout, endpoints, auth } => {
            let target = Target::new(&project, endpoints, auth)?;
            let ids =
                jobs.iter().map(|j| j.parse::<JobId>().with_context(|| format!("{j} is not a job id"))).collect::<Result<Vec<_>, _>>()?;
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
        Command::Token { owner, ttl_hours } => {
            println!("{}", issue_token(&project, &owner, ttl_hours)?);
            Ok(())
        }
        Command::Status { job, endpoints, auth } => {
            let target = Target::new(&project, endpoints, auth)?;
            let job = target.api.job(&job.parse().context("not a job id")?).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
            Ok(())
        }
        Command::Test { args } => run_all_tests(&project, &args),
        Command::Analyse { files, out, no_preview } => {
            let mut failed = false;
            for file in &files {
                let line = prism::analyse::report(file, out.as_deref(), !no_preview)?;
                failed |= line.get("error").is_some();
                println!("{line}");
            }
            if failed {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Thumbnail { files, size, out } => {
            std::fs::create_dir_all(&out)?;
            let limits = process_image::analysis::ImageLimits::default();
            for file in &files {
                let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                let thumb = process_image::analysis::thumbnail(&bytes, &limits, size).with_context(|| file.display().to_string())?;
                let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let ext = thumb.file.rsplit('.').next().unwrap_or("jpg");
                std::fs::write(out.join(format!("{stem}.{ext}")), &thumb.bytes)?;
            }
            Ok(())
        }
        Command::Bench { batch, connections, jobs, only, out } => {
            bench(&project, BenchSizes { batch, connections, jobs }, &only, out).await
        }
        Command::Install => {
            for venv in [prism::install::Venv::Moto, prism::install::Venv::LocalStack] {
                let dir = prism::install::ensure(&project, venv)?;
                println!("{venv:?}: {}", dir.display());
            }
            Ok(())
        }
    }
}

async fn submit_one(
    client: &PrismClient,
    label: &str,
    name: &str,
    bytes: Vec<u8>,
    priority: Option<&str>,
    wait: Option<Duration>,
) -> SubmitReport {
    let outcome = async {
        let job = client.submit(name, bytes, priority).await?;
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

fn print_report(r: &SubmitReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    let what = r.modality.as_deref().unwrap_or("-");
    let detail = r.error.as_ref().or(r.result.as_ref()).map(ToString::to_string).unwrap_or_default();
    println!("{}  {}  {}  {}  {}", r.file, r.job_id, r.status, what, detail);
}

/// How big the cloud benchmarks are.
struct BenchSizes {
    batch: usize,
    connections: usize,
    jobs: usize,
}

async fn bench(project: &Path, sizes: BenchSizes, only: &[BenchKind], out: Option<PathBuf>) -> anyhow::Result<()> {
    let BenchSizes { batch, connections, jobs } = sizes;
    let wanted = |kind| only.is_empty() || only.contains(&kind);
    let scratch = project.join("target/prism-bench");
    let mut report = String::from("# Prism benchmark report\n\n");
    if wanted(BenchKind::Classifier) {
        prism::bench::classifier(&scratch, &mut report)?;
    }
    if wanted(BenchKind::Thumbnails) {
        prism::install::ensure_commands(REFERENCE_TOOLS)?;
        prism::bench::thumbnails(&scratch, &std::env::current_exe()?, &mut report)?;
    }
    if wanted(BenchKind::Audio) || wanted(BenchKind::Documents) || wanted(BenchKind::Video) {
        prism::install::ensure_commands(&[PROCESSOR_TOOLS, CORPUS_TOOLS].concat())?;
    }
    if wanted(BenchKind::Audio) {
        prism::bench::media::audio(&scratch, &std::env::current_exe()?, &mut report)?;
    }
    if wanted(BenchKind::Documents) {
        prism::bench::media::documents(&scratch, &std::env::current_exe()?, &mut report)?;
    }
    if wanted(BenchKind::Video) {
        prism::bench::media::video(&scratch, &std::env::current_exe()?, &mut report)?;
    }
    if wanted(BenchKind::Priority) || wanted(BenchKind::Live) || wanted(BenchKind::Load) {
        build_functions(project, true)?;
        let secret = cloud::new_token_secret();
        let cloud = LocalCloud::start(CloudOptions {
            project_dir: project.to_owned(),
            emulator: Some(EmulatorChoice::Localstack),
            bin_dir: std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project.join("target")).join(LOCAL_RELEASE),
            state_dir: scratch.join("cloud"),
            echo_logs: false,
            stage: "bench".into(),
            token_secret: secret.clone(),
            faults: prism::proxy::FaultPlan::default(),
            parameters: Vec::new(),
        })
        .await?;
        let key = prism_shared::auth::TokenKey::new(secret.as_bytes())?;
        let token = key.issue("bench", chrono::Duration::hours(4), chrono::Utc::now())?;
        let api = PrismClient::new(&cloud.info.http_url, Some(token.clone()))?;
        let measured = async {
            if wanted(BenchKind::Priority) {
                prism::bench::priority(&api, batch, &mut report).await?;
            }
            if wanted(BenchKind::Live) {
                let url = cloud.info.websocket_url.clone().context("the template has no WebSocket API")?;
                prism::bench::push_latency(&api, &url, &token, connections, connections.div_ceil(10), &mut report).await?;
            }
            if wanted(BenchKind::Load) {
                let owner_token = key.issue(prism::bench::load::OWNER, chrono::Duration::hours(4), chrono::Utc::now())?;
                let load_api = PrismClient::new(&cloud.info.http_url, Some(owner_token))?;
                let deadline = Duration::from_secs(600 + jobs as u64);
                let result = prism::bench::load::run(&cloud, &load_api, jobs, deadline).await?;
                let command = format!("cargo run --profile local-release -p prism -- bench --only load --jobs {jobs}");
                prism::bench::load::write(&result, &command, &mut report)?;
            }
            anyhow::Ok(())
        }
        .await;
        cloud.stop().await;
        measured?;
    }
    print!("{report}");
    if let Some(path) = out {
        std::fs::write(&path, &report)?;
    }
    Ok(())
}

/// What `prism test` runs, in order; each must succeed.
/// What the processors run besides their own code.
const PROCESSOR_TOOLS: &[(&str, &str)] = &[("ffmpeg", "ffmpeg")];
/// What the tests and benchmarks compare the processors with or build their corpus from.
const CORPUS_TOOLS: &[(&str, &str)] = &[("pdftotext", "poppler-utils"), ("gropdf", "groff")];
const REFERENCE_TOOLS: &[(&str, &str)] = &[("vipsthumbnail", "libvips-tools"), ("mogrify", "imagemagick")];

fn run_all_tests(project: &Path, extra: &[String]) -> anyhow::Result<()> {
    prism::install::ensure_commands(&[PROCESSOR_TOOLS, CORPUS_TOOLS, REFERENCE_TOOLS].concat())?;
    let moto = prism::install::ensure(project, prism::install::Venv::Moto)?;
    prism::install::ensure(project, prism::install::Venv::LocalStack)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let step = |name: &str, cmd: &mut std::process::Command| -> anyhow::Result<()> {
        eprintln!("prism test: {name}");
        let status = cmd.current_dir(project).status().with_context(|| format!("running {name}"))?;
        anyhow::ensure!(status.success(), "{name} failed ({status})");
        Ok(())
    };
    step("cfn-lint template.yaml", std::process::Command::new(moto.join("bin/cfn-lint")).arg("template.yaml"))?;
    // The end-to-end tests run the real function binaries. Building every
    // target in one go unifies features as the test build will, so the test
    // run reuses these artifacts instead of compiling the SDKs again.
    step("cargo build --workspace --all-targets", std::process::Command::new(&cargo).args(["build", "--workspace", "--all-targets"]))?;
    let has_nextest = std::process::Command::new(&cargo).args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success());
    let mut tests = std::process::Command::new(&cargo);
    if has_nextest {
        tests.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        tests.args(["test", "--workspace", "--no-fail-fast"]);
    }
    step("tests", tests.args(extra))
}

fn local_json(project: &Path) -> PathBuf {
    project.join(".prism/local.json")
}

fn read_local(project: &Path) -> anyhow::Result<LocalInfo> {
    let text = std::fs::read_to_string(local_json(project)).context("no local cloud is running (start one with `prism up`)")?;
    Ok(serde_json::from_str(&text)?)
}

async fn up(project: &Path, args: UpArgs, demo: bool) -> anyhow::Result<()> {
    if args.detach {
        return detach(project, &args, demo);
    }
    let profile = if args.release { LOCAL_RELEASE } else { "debug" };
    prism::install::ensure_commands(PROCESSOR_TOOLS)?;
    if !args.no_build {
        build_functions(project, args.release)?;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project.join("target"));
    let emulator = std::env::var_os("AWS_ENDPOINT_URL").is_none().then_some(args.emulator);
    let cloud = LocalCloud::start(CloudOptions {
        project_dir: project.to_owned(),
        emulator,
        bin_dir: target.join(profile),
        state_dir: project.join(".prism"),
        echo_logs: true,
        stage: args.stage,
        token_secret: cloud::local_token_secret(project)?,
        faults: match &args.faults {
            Some(path) => prism::proxy::FaultPlan::load(path)?,
            None => prism::proxy::FaultPlan::default(),
        },
        parameters: Vec::new(),
    })
    .await?;
    let info = serde_json::to_string_pretty(&cloud.info)?;
    std::fs::write(local_json(project), &info)?;
    println!("{info}");
    println!("prism: local cloud ready ({}); Ctrl-C stops it", cloud.info.emulator);
    if demo {
        let client = PrismClient::new(&cloud.info.http_url, Some(issue_token(project, "local", 1)?))?;
        let (name, bytes) = DEMO_FILE;
        let report = submit_one(&client, name, name, bytes.to_vec(), None, Some(Duration::from_secs(60))).await;
        println!("{}", serde_json::to_string(&report)?);
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = std::fs::remove_file(local_json(project));
    cloud.stop().await;
    Ok(())
}

/// Builds the function binaries the template names.
fn build_functions(project: &Path, release: bool) -> anyhow::Result<()> {
    let template = prism::template::Template::load(&project.join("template.yaml"))?;
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project).arg("build");
    if release {
        cmd.args(["--profile", LOCAL_RELEASE]);
    }
    for r in template.resources.values().filter(|r| r.kind == "AWS::Serverless::Function") {
        if let Some(bin) = r.metadata.pointer("/BuildProperties/Binary").and_then(|b| b.as_str()) {
            cmd.args(["-p", bin]);
        }
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the functions failed");
    }
    Ok(())
}

/// Re-runs `prism up` in the background and returns once it is ready.
fn detach(project: &Path, args: &UpArgs, demo: bool) -> anyhow::Result<()> {
    if !args.no_build {
        build_functions(project, args.release)?;
    }
    let _ = std::fs::remove_file(local_json(project));
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
    // Its own process group: a Ctrl-C in this terminal must not stop it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn()?;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(300) {
        if let Some(status) = child.try_wait()? {
            bail!("prism up exited with {status}; see .prism/logs/prism-up.log");
        }
        if let Ok(info) = read_local(project)
            && info.pid == child.id()
        {
            println!("{}", serde_json::to_string_pretty(&info)?);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the local cloud was not ready after 300 s; see .prism/logs/prism-up.log")
}

fn down(project: &Path) -> anyhow::Result<()> {
    let info = read_local(project)?;
    let status = std::process::Command::new("kill").args(["-TERM", &info.pid.to_string()]).status()?;
    if !status.success() {
        let _ = std::fs::remove_file(local_json(project));
        bail!("no prism process {} (removed the stale .prism/local.json)", info.pid);
    }
    for _ in 0..100 {
        if !local_json(project).exists() {
            println!("prism: stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("prism {} did not stop within 10 s", info.pid)
}

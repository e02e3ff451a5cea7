//! The local cloud: emulators + resources from template.yaml + function
//! instances behind a Lambda Runtime API + SQS event-source mappings + the
//! HTTP API, started together and stopped together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::emulator::{self, ACCOUNT_ID, EmulatorChoice, Emulators};
use crate::iam::{Account, IamMode};
use crate::logs::LogSink;
use crate::mappings::EventSourceMappings;
use crate::process::CpuTimes;
use crate::provision::{self, Clients};
use crate::proxy::{FaultPlan, Proxies, Upstreams};
use crate::runtime::{self, FunctionHandle, RuntimeEnv};
use crate::template::Template;
use crate::{esm, function_url, http_api, schedules, streams, websocket};

pub const REGION: &str = "us-east-1";
const STACK_NAME: &str = "prism";

/// How to start a local cloud.
#[derive(Debug, Clone)]
pub struct CloudOptions {
    /// The project root: template.yaml and localstack/ live here.
    pub project_dir: PathBuf,
    /// `None` uses the endpoint in `AWS_ENDPOINT_URL` and starts no emulator.
    pub emulator: Option<EmulatorChoice>,
    /// Where the function binaries are (`target/debug` or `target/release`).
    pub bin_dir: PathBuf,
    /// Scratch space and logs for this cloud.
    pub state_dir: PathBuf,
    /// Echo function logs to the terminal.
    pub echo_logs: bool,
    pub stage: String,
    /// The `TokenSecret` parameter: signs API bearer tokens.
    pub token_secret: String,
    /// Faults the functions' endpoints and event sources inject (see [`crate::proxy`]).
    pub faults: FaultPlan,
    /// Template parameters given values other than their defaults.
    pub parameters: Vec<(String, String)>,
    /// Whether each function's AWS calls are checked against its policy.
    pub iam: IamMode,
    /// Give each function the CPU share its memory size buys on Lambda
    /// (cgroup CFS quotas; needs root, see [`crate::cpu`]).
    pub cpu_by_memory: bool,
}

/// What clients need to use a running local cloud (`.prism/local.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalInfo {
    pub region: String,
    pub endpoint: String,
    pub dynamodb_endpoint: String,
    pub emulator: String,
    pub bucket: String,
    pub table: String,
    /// The HTTP API's invoke URL: `http://…/{stage}`, as the template's
    /// `ApiUrl` output gives it on AWS.
    pub http_url: String,
    /// The WebSocket API (`ws://…/{stage}`), when the template has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_url: Option<String>,
    /// The function URL that streams jobs' events (server-sent events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_url: Option<String>,
    /// Every function URL, by the function's logical id.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub function_urls: std::collections::BTreeMap<String, String>,
    /// The web dashboard's page, served from an origin of its own as a deployed one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    pub logs_dir: String,
    pub pid: u32,
}

impl LocalInfo {
    /// Where `prism up` writes it while the cloud runs.
    pub fn path(project: &Path) -> PathBuf {
        project.join(".prism/local.json")
    }

    /// The running local cloud's, as `prism up` wrote it.
    pub fn read(project: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(Self::path(project)).context("no local cloud is running (start one with `prism up`)")?;
        Ok(serde_json::from_str(&text)?)
    }
}

#[derive(Debug)]
pub struct LocalCloud {
    pub info: LocalInfo,
    pub functions: Vec<FunctionHandle>,
    /// The functions' endpoints: AWS calls counted, faults injected.
    pub proxies: Arc<Proxies>,
    /// Each function as its instances are started, for [`LocalCloud::cold_start`].
    launches: Vec<(provision::FunctionSpec, RuntimeEnv)>,
    /// Cancelled first: event sources stop and function instances finish
    /// their invocations and stop (Lambda's shutdown phase).
    shutdown: CancellationToken,
    /// The instances' supervisors, done when every process has stopped.
    instances: tokio_util::task::TaskTracker,
    /// Cancelled once the instances stopped: the gateways and the functions'
    /// endpoints, which a stopping instance still calls.
    closed: CancellationToken,
    // Dropped last: the emulators outlive the functions that use them.
    emulators: Option<Emulators>,
}

impl Drop for LocalCloud {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.closed.cancel();
    }
}

/// SDK config for the emulators, independent of the caller's environment.
pub fn emulator_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "prism-local",
        )))
        .endpoint_url(endpoint)
        .build()
}

impl LocalCloud {
    pub async fn start(opts: CloudOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.state_dir)?;
        let logs = LogSink::new(&opts.state_dir.join("logs"), opts.echo_logs)?;
        let emulators = emulator::start(opts.emulator, &opts.project_dir, &opts.state_dir, &logs).await?;
        let clients = clients_for(&emulators.endpoint, &emulators.dynamodb_endpoint);

        let template = Template::load(&opts.project_dir.join("template.yaml"))?;
        let pseudo = [
            ("AWS::AccountId", ACCOUNT_ID),
            ("AWS::Region", REGION),
            ("AWS::Partition", "aws"),
            ("AWS::StackName", STACK_NAME),
            ("AWS::URLSuffix", "amazonaws.com"),
            ("Stage", opts.stage.as_str()),
            ("TokenSecret", opts.token_secret.as_str()),
            // Layers are not emulated: the functions use the ffmpeg on PATH.
            ("FfmpegLayerArn", "local:ffmpeg-on-path"),
        ];
        let values: Vec<(&str, &str)> = pseudo.into_iter().chain(opts.parameters.iter().map(|(k, v)| (k.as_str(), v.as_str()))).collect();
        let stack = provision::provision(&template, &clients, &values).await.context("provisioning template.yaml")?;

        let (shutdown, closed) = (CancellationToken::new(), CancellationToken::new());
        let instances = tokio_util::task::TaskTracker::new();
        // Bound before the functions start: their management endpoint is this port.
        let ws_listener = match &stack.websocket {
            Some(_) => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?),
            None => None,
        };
        let ws_addr = ws_listener.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?;
        let overrides = vec![
            ("PRISM_LOG_FORMAT".into(), "text".into()),
            ("RUST_LOG".into(), std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())),
        ];
        let mappings = Arc::new(EventSourceMappings::new(&stack.functions, REGION, ACCOUNT_ID));
        let upstreams = Upstreams {
            main: emulators.endpoint.clone(),
            dynamodb: emulators.dynamodb_endpoint.clone(),
            connections: ws_addr.map(|addr| format!("http://{addr}")),
            lambda: Some(mappings.clone()),
        };
        let account =
            Account { region: REGION.into(), id: ACCOUNT_ID.into(), websocket_api: stack.websocket.as_ref().map(|api| api.api_id.clone()) };
        let proxies = Proxies::new(upstreams, &opts.faults, opts.iam, account)?;
        let delivery = if opts.faults.duplicate_deliveries { esm::Delivery::Twice } else { esm::Delivery::Once };
        let env = RuntimeEnv {
            bin_dir: opts.bin_dir.clone(),
            base_env: vec![
                ("AWS_REGION".into(), REGION.into()),
                ("AWS_DEFAULT_REGION".into(), REGION.into()),
                ("AWS_ACCESS_KEY_ID".into(), "test".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), crate::proxy::SECRET_ACCESS_KEY.into()),
                ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
                ("RUST_BACKTRACE".into(), "1".into()),
            ],
            overrides,
            account_id: ACCOUNT_ID.into(),
            region: REGION.into(),
            logs: logs.clone(),
            shutdown: shutdown.clone(),
            tasks: instances.clone(),
            cpu: match opts.cpu_by_memory {
                true => Some(Arc::new(
                    crate::cpu::CpuGroups::create()
                        .context("CPU shares by memory size need root and the cgroup v1 cpu controller at /sys/fs/cgroup/cpu")?,
                )),
                false => None,
            },
        };
        let mut functions = Vec::new();
        let mut launches = Vec::new();
        let mut routes = Vec::new();
        let (mut stream_url, mut function_urls) = (None, std::collections::BTreeMap::new());
        for spec in &stack.functions {
            // Every AWS call of the function goes through its own endpoint.
            let endpoint = proxies.listen(&spec.name, &spec.binary, spec.policy.clone(), closed.clone()).await?;
            let mut function_env = env.clone();
            function_env.overrides.push(("AWS_ENDPOINT_URL".into(), endpoint.clone()));
            function_env.overrides.push(("AWS_ENDPOINT_URL_DYNAMODB".into(), endpoint.clone()));
            if let Some(api) = &stack.websocket {
                function_env.overrides.push(("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI".into(), format!("{endpoint}/{}", api.stage)));
            }
            let handle = runtime::start_function(spec.clone(), &function_env).await?;
            proxies.attach(&handle);
            launches.push((spec.clone(), function_env));
            for source in &spec.sqs_sources {
                let count = source.max_concurrency.unwrap_or(spec.concurrency).min(spec.concurrency);
                let enabled = mappings.enabled(&source.mapping_id).context("an SQS source without its mapping")?;
                let pollers = esm::Pollers { sqs: clients.sqs.clone(), region: REGION.into(), delivery, enabled };
                esm::start(source.clone(), handle.clone(), count, pollers, shutdown.clone());
            }
            for schedule in &spec.schedules {
                schedules::start(schedule.clone(), handle.clone(), shutdown.clone());
            }
            for source in &spec.stream_sources {
                streams::start(source.clone(), handle.clone(), clients.dynamodb_streams.clone(), shutdown.clone())
                    .await
                    .with_context(|| format!("reading the stream of {}", spec.name))?;
            }
            if let Some(mode) = spec.url {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("http://{}", listener.local_addr()?);
                if mode == provision::InvokeMode::ResponseStream && stream_url.is_none() {
                    stream_url = Some(url.clone());
                }
                function_urls.insert(spec.logical_id.clone(), url);
                let app = function_url::router(function_url::FunctionUrl { function: handle.clone(), mode, account_id: ACCOUNT_ID.into() });
                let stop = closed.clone();
                tokio::spawn(async move {
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "function URL failed");
                    }
                });
            }
            for route in stack.http_routes.iter().filter(|r| r.function == spec.name) {
                routes.push((route.clone(), handle.clone()));
            }
            functions.push(handle);
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let gateway = http_api::Gateway {
            routes,
            stage: stack.http_stage.clone(),
            account_id: ACCOUNT_ID.into(),
            throttle: stack.http_throttle.map(|(rate, burst)| http_api::TokenBucket::new(rate, burst)),
            cors: stack.http_cors.clone(),
        };
        let http_url = gateway.invoke_url(&format!("http://{}", listener.local_addr()?));
        let app = http_api::router(gateway)?;
        let stop = closed.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP API failed");
            }
        });

        let mut websocket_url = None;
        if let (Some(listener), Some(api)) = (ws_listener, stack.websocket.clone()) {
            let addr = listener.local_addr()?;
            websocket_url = Some(format!("ws://{addr}/{}", api.stage));
            let handles = functions.iter().map(|f: &FunctionHandle| (f.name.clone(), f.clone())).collect();
            let gateway =
                websocket::WsGateway::new(api, handles, ACCOUNT_ID.into(), addr.to_string(), websocket::Limits::default(), closed.clone());
            let app = std::sync::Arc::new(gateway).router();
            let stop = closed.clone();
            tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "WebSocket API failed");
                }
            });
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let dashboard_url = Some(format!("http://{}/", listener.local_addr()?));
        let app = crate::dashboard::router(crate::dashboard::DashboardConfig {
            api_url: http_url.clone(),
            websocket_url: websocket_url.clone(),
            stream_url: stream_url.clone(),
        });
        let stop = closed.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "dashboard server failed");
            }
        });

        let info = LocalInfo {
            region: REGION.into(),
            endpoint: emulators.endpoint.clone(),
            dynamodb_endpoint: emulators.dynamodb_endpoint.clone(),
            emulator: emulators.description.clone(),
            bucket: stack.buckets.first().cloned().unwrap_or_default(),
            table: stack.tables.first().cloned().unwrap_or_default(),
            http_url,
            websocket_url,
            stream_url,
            function_urls,
            dashboard_url,
            logs_dir: logs.dir().display().to_string(),
            pid: std::process::id(),
        };
        Ok(Self { info, functions, proxies, launches, shutdown, instances, closed, emulators: Some(emulators) })
    }

    /// SDK clients pointed at this cloud's emulators.
    pub fn clients(&self) -> Clients {
        clients_for(&self.info.endpoint, &self.info.dynamodb_endpoint)
    }

    /// CPU time used so far by this process (the local cloud and whatever
    /// else runs in it, such as a bench's clients), by each emulator and by
    /// each function's instances: two readings, then [`CpuTimes::since`].
    pub fn cpu_times(&self) -> CpuTimes {
        CpuTimes::read(&self.emulators.as_ref().map(Emulators::processes).unwrap_or_default())
    }

    /// One cold start of `function`: a fresh process with the environment its
    /// instances get, timed from its start to its first request for work
    /// (Lambda's `Init Duration`, see [`runtime::cold_start`]). `binary`, when
    /// given, is started in the function's place: a reference build measured
    /// under the same conditions.
    pub async fn cold_start(&self, function: &str, binary: Option<&Path>) -> anyhow::Result<runtime::ColdStart> {
        let (spec, env) = self.launch(function).with_context(|| format!("no function {function}"))?;
        let own = env.bin_dir.join(&spec.binary);
        runtime::cold_start(binary.unwrap_or(&own), spec, env).await
    }

    /// How many instances of `function` (its name or cargo binary) run at
    /// once: past that, its synchronous callers are throttled.
    pub fn concurrency(&self, function: &str) -> Option<usize> {
        self.launch(function).map(|(spec, _)| spec.concurrency)
    }

    /// How `function` (its name or cargo binary) is started.
    fn launch(&self, function: &str) -> Option<&(provision::FunctionSpec, RuntimeEnv)> {
        self.launches.iter().find(|(spec, _)| spec.name == function || spec.binary == function)
    }

    /// The functions' cargo binaries, in the template's order.
    pub fn binaries(&self) -> impl Iterator<Item = &str> {
        self.launches.iter().map(|(spec, _)| spec.binary.as_str())
    }

    /// Stops as Lambda would: event sources stop receiving (what they hold
    /// goes back to its queue), instances finish the invocations they run
    /// (up to [`runtime::DRAIN_LIMIT`]), runtimes that registered an
    /// extension get `SIGTERM` and [`runtime::SHUTDOWN_LIMIT`] to exit; then
    /// the gateways and the emulators stop.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.instances.close();
        let limit = runtime::DRAIN_LIMIT + runtime::SHUTDOWN_LIMIT + std::time::Duration::from_secs(1);
        if tokio::time::timeout(limit, self.instances.wait()).await.is_err() {
            tracing::warn!("function instances still running {limit:?} after the stop; they are killed with the cloud");
        }
        self.closed.cancel();
        if let Some(emulators) = self.emulators.take() {
            emulators.stop().await;
        }
    }
}

pub fn clients_for(endpoint: &str, dynamodb_endpoint: &str) -> Clients {
    let main = emulator_sdk_config(endpoint);
    let s3 = aws_sdk_s3::config::Builder::from(&main).force_path_style(true).build();
    Clients {
        s3: aws_sdk_s3::Client::from_conf(s3),
        sqs: aws_sdk_sqs::Client::new(&main),
        sns: aws_sdk_sns::Client::new(&main),
        dynamodb: aws_sdk_dynamodb::Client::new(&emulator_sdk_config(dynamodb_endpoint)),
        // The emulator that keeps the table serves its stream.
        dynamodb_streams: aws_sdk_dynamodbstreams::Client::new(&emulator_sdk_config(dynamodb_endpoint)),
    }
}

/// A fresh random token secret: 256 bits from the OS's generator, as hex.
pub fn new_token_secret() -> String {
    let mut bytes = [0u8; 32];
    // Without the OS's generator there is nothing safe to sign tokens with.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The local cloud's token secret, kept in `.prism/token-secret` (mode 600) so
/// tokens stay valid across restarts; created on first use.
pub fn local_token_secret(project: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = project.join(".prism/token-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= prism_shared::app::auth::MIN_SECRET_BYTES => return Ok(s.trim().to_owned()),
        // Too short to sign with (cut by hand?): replaced below.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
    std::fs::create_dir_all(project.join(".prism"))?;
    let secret = new_token_secret();
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    std::io::Write::write_all(&mut f, secret.as_bytes())?;
    Ok(secret)
}

/// The project root: the nearest folder at or above `start` holding template.yaml.
pub fn find_project_dir(start: &Path) -> Option<PathBuf> {
    start.ancestors().find(|d| d.join("template.yaml").is_file() && d.join("Cargo.toml").is_file()).map(Path::to_path_buf)
}

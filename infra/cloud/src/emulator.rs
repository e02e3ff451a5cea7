//! The AWS emulators: LocalStack in host mode for S3, SQS and SNS paired with
//! moto for DynamoDB (the default, chosen by measured SQS throughput), moto
//! alone, or an endpoint the user already runs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;

use crate::install::{self, Venv};
use crate::logs::LogSink;
use crate::process::{nice_of, spawn_owned, with_nice};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmulatorChoice {
    /// LocalStack (S3, SQS, SNS) with moto (DynamoDB).
    Localstack,
    /// moto alone.
    Moto,
}

/// The account both emulators are told to use, so ARNs from either agree.
pub const ACCOUNT_ID: &str = "000000000000";

/// Running emulators; dropping this stops them.
#[derive(Debug)]
pub struct Emulators {
    /// S3, SQS (and SNS) endpoint.
    pub endpoint: String,
    pub dynamodb_endpoint: String,
    pub description: String,
    /// Each emulator process this cloud started, by name.
    children: Vec<(&'static str, tokio::process::Child)>,
}

impl Emulators {
    fn kill_all(&mut self) {
        self.children.iter_mut().for_each(|(_, child)| kill_group(child));
    }

    /// Stops the emulators and reaps them.
    pub async fn stop(mut self) {
        self.kill_all();
        for (_, child) in &mut self.children {
            let _ = child.wait().await;
        }
    }

    /// The emulators' processes by name (`moto`, `localstack`), those still running.
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        self.children.iter().filter_map(|(name, child)| Some((*name, child.id()?))).collect()
    }
}

/// Kills an emulator with any helpers it started: each leads its own process group.
fn kill_group(child: &mut tokio::process::Child) {
    if let Some(group) = child.id().and_then(|pid| i32::try_from(pid).ok()).and_then(rustix::process::Pid::from_raw) {
        // Gone already is fine: start_kill below reaps the leader either way.
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = child.start_kill();
}

impl Drop for Emulators {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A loopback port nobody is listening on right now, for an emulator to bind.
///
/// Drawn from below the kernel's ephemeral range: an emulator binds it a
/// moment after this check, and in that moment any outgoing connection on the
/// machine may be handed a port from the ephemeral range (`bind(0)` draws from
/// it too). A port taken that way made LocalStack hang instead of exit.
pub fn free_port() -> std::io::Result<u16> {
    // Linux's default when the setting cannot be read.
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start);
    if high <= low + 1000 {
        // An unusual range: take what the kernel hands out.
        return Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    for _ in 0..100 {
        let mut bytes = [0u8; 2];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        let port = low + u16::from_le_bytes(bytes) % (high - low);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("no free port in {low}..{high}")))
}

pub async fn start(choice: Option<EmulatorChoice>, project: &Path, state_dir: &Path, logs: &LogSink) -> anyhow::Result<Emulators> {
    let Some(choice) = choice else {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").context("AWS_ENDPOINT_URL")?;
        let dynamodb_endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| endpoint.clone());
        return Ok(Emulators { description: format!("external endpoint {endpoint}"), endpoint, dynamodb_endpoint, children: Vec::new() });
    };
    let moto_dir = {
        let project = project.to_owned();
        tokio::task::spawn_blocking(move || install::ensure(&project, Venv::Moto)).await??
    };
    let (moto, moto_url) = start_moto(&moto_dir, logs).await?;
    match choice {
        EmulatorChoice::Moto => Ok(Emulators {
            endpoint: moto_url.clone(),
            dynamodb_endpoint: moto_url,
            description: "moto".into(),
            children: vec![("moto", moto)],
        }),
        EmulatorChoice::Localstack => {
            let ls_dir = {
                let project = project.to_owned();
                tokio::task::spawn_blocking(move || install::ensure(&project, Venv::LocalStack)).await??
            };
            let (ls, ls_url) = start_localstack(&ls_dir, state_dir, logs, free_port).await?;
            Ok(Emulators {
                endpoint: ls_url,
                dynamodb_endpoint: moto_url,
                description: "LocalStack (S3, SQS, SNS) + moto (DynamoDB)".into(),
                children: vec![("moto", moto), ("localstack", ls)],
            })
        }
    }
}

/// moto's server with DynamoDB queries that read one partition, not the whole
/// table (see the script's own account of why).
const MOTO_SERVER_SCRIPT: &str = include_str!("../../../localstack/moto_server.py");

/// moto's nice value. The emulated DynamoDB is the local cloud's narrowest
/// part: every job's calls wait in its queue, and under load the machine's
/// cores are contended (LocalStack, the functions, the cloud's own
/// endpoints), so a moto thread that wakes with a request used to wait for
/// a core too. First in the run queue it answers sooner; it takes no more
/// than it asks for, about two thirds of a core at the bench's load (see
/// the README's *Load*).
const MOTO_NICE: i32 = -10;

async fn start_moto(venv: &Path, logs: &LogSink) -> anyhow::Result<(tokio::process::Child, String)> {
    let script = venv.join("prism_moto_server.py");
    if std::fs::read_to_string(&script).ok().as_deref() != Some(MOTO_SERVER_SCRIPT) {
        // Whole or not at all: clouds starting side by side share the venv.
        let mut file = tempfile::NamedTempFile::new_in(venv)?;
        std::io::Write::write_all(&mut file, MOTO_SERVER_SCRIPT.as_bytes())?;
        file.persist(&script).with_context(|| format!("writing {}", script.display()))?;
    }
    for _ in 0..3 {
        let port = free_port()?;
        let mut cmd = tokio::process::Command::new(venv.join("bin/python"));
        cmd.arg(&script).args(["-H", "127.0.0.1", "-p", &port.to_string()]).env("MOTO_ACCOUNT_ID", ACCOUNT_ID).process_group(0);
        with_nice(&mut cmd, MOTO_NICE);
        let url = format!("http://127.0.0.1:{port}");
        if let Some(child) = launch(cmd, &format!("{url}/moto-api/"), "moto", logs).await? {
            if let Some(nice) = child.id().and_then(|pid| nice_of(pid).ok()).filter(|nice| *nice != MOTO_NICE) {
                tracing::info!(nice, "moto runs at the default priority (raising it needs root): the local cloud is slower under load");
            }
            return Ok((child, url));
        }
    }
    bail!("moto did not start; see {}/moto.log", logs.dir().display())
}

async fn start_localstack(
    venv: &Path,
    state_dir: &Path,
    logs: &LogSink,
    mut ports: impl FnMut() -> std::io::Result<u16>,
) -> anyhow::Result<(tokio::process::Child, String)> {
    for _ in 0..3 {
        let port = ports()?;
        let root = state_dir.join(format!("localstack-{port}"));
        std::fs::create_dir_all(&root)?;
        let mut cmd = tokio::process::Command::new(venv.join("bin/python"));
        cmd.args(["-m", "localstack.runtime.main"])
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("LOCALSTACK_HOST", format!("127.0.0.1:{port}"))
            .env("SERVICES", "s3,sqs,sns")
            // Presigned URLs are checked as S3 checks them: their key, method and expiry.
            .env("S3_SKIP_SIGNATURE_VALIDATION", "0")
            .env("FILESYSTEM_ROOT", &root)
            .env("SQS_ENDPOINT_STRATEGY", "path")
            // No DNS server on port 53, no telemetry, no certificate download: this machine is offline.
            .env("DNS_ADDRESS", "0")
            .env("DISABLE_EVENTS", "1")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .process_group(0);
        let url = format!("http://127.0.0.1:{port}");
        if let Some(child) = launch(cmd, &format!("{url}/_localstack/health"), "localstack", logs).await? {
            return Ok((child, url));
        }
    }
    bail!("LocalStack did not start; see {}/localstack.log", logs.dir().display())
}

/// How long one attempt to start an emulator may take; a loaded 2-core
/// machine starts LocalStack in well under half of it.
const START_BOUND: Duration = Duration::from_secs(90);

/// What an emulator prints when its port was taken after we chose it
/// (LocalStack then stays up without a gateway, so its exit cannot tell us).
const PORT_TAKEN: &str = "Address already in use";

/// Starts an emulator and waits until `ready_url` answers 200; `None` if it
/// exited, could not bind its port or was not ready in time, so the caller
/// tries again on another port.
async fn launch(
    mut cmd: tokio::process::Command,
    ready_url: &str,
    name: &str,
    logs: &LogSink,
) -> anyhow::Result<Option<tokio::process::Child>> {
    let mut child = spawn_owned(&mut cmd).with_context(|| format!("starting {name}"))?;
    let port_taken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|s| Box::new(s) as _),
    ]
    .into_iter()
    .flatten()
    {
        let (logs, name, port_taken) = (logs.clone(), name.to_owned(), port_taken.clone());
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(PORT_TAKEN) {
                    port_taken.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                logs.file_line(&name, &name, &line);
            }
        });
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            tracing::warn!(%name, %status, "emulator exited during start-up");
            return Ok(None);
        }
        if port_taken.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(%name, "emulator could not bind its port");
            break;
        }
        if started.elapsed() > START_BOUND {
            tracing::warn!(%name, "emulator was not ready in time");
            break;
        }
        if http.get(ready_url).send().await.is_ok_and(|r| r.status().is_success()) {
            tracing::info!(%name, secs = started.elapsed().as_secs_f32(), "emulator ready");
            return Ok(Some(child));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill_group(&mut child);
    let _ = child.wait().await;
    Ok(None)
}

/// The age of the oldest message in `queue_url` (waiting or in flight),
/// `None` for an empty queue. SQS's API has no attribute for it (CloudWatch
/// computes `ApproximateAgeOfOldestMessage`), and receiving to look would
/// spend the messages' receives toward their DLQ; LocalStack's developer
/// endpoint (`GET /_aws/sqs/messages`) lists a queue's messages with their
/// `SentTimestamp` and changes nothing. moto has no such endpoint: an error.
pub async fn oldest_message_age(endpoint: &str, queue_url: &str, now: std::time::SystemTime) -> anyhow::Result<Option<Duration>> {
    let url = format!("{}/_aws/sqs/messages", endpoint.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .get(url)
        // In flight too: CloudWatch's age is of the oldest message not yet deleted.
        .query(&[("QueueUrl", queue_url), ("ShowInvisible", "true")])
        .header("accept", "application/json")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .context("asking the emulator for the queue's messages")?;
    let status = resp.status();
    if !status.is_success() {
        bail!("the emulator cannot list a queue's messages without receiving them ({status})");
    }
    let listed: serde_json::Value = resp.json().await.context("the message listing is not JSON")?;
    let oldest_ms = sent_timestamps(&listed).into_iter().min();
    let now_ms = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Ok(oldest_ms.map(|sent| Duration::from_millis(now_ms.saturating_sub(sent))))
}

/// Every `SentTimestamp` in a message listing, whatever its shape (a map of
/// attributes, or XML turned JSON: `{"Name": "SentTimestamp", "Value": …}`).
fn sent_timestamps(listed: &serde_json::Value) -> Vec<u64> {
    use serde_json::Value;
    let number = |v: &Value| v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_u64());
    match listed {
        Value::Object(fields) => {
            let named = (fields.get("Name").and_then(Value::as_str) == Some("SentTimestamp")).then(|| fields.get("Value").and_then(number));
            let keyed = fields.get("SentTimestamp").map(number);
            let nested = fields.values().flat_map(sent_timestamps);
            named.flatten().into_iter().chain(keyed.flatten()).chain(nested).collect()
        }
        Value::Array(items) => items.iter().flat_map(sent_timestamps).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_timestamps_are_found_in_either_listing_shape() {
        let xml_as_json = serde_json::json!({"ReceiveMessageResponse": {"ReceiveMessageResult": {"Message": [
            {"MessageId": "a", "Attribute": [{"Name": "SenderId", "Value": "x"}, {"Name": "SentTimestamp", "Value": "1700000000500"}]},
            {"MessageId": "b", "Attribute": {"Name": "SentTimestamp", "Value": "1700000000100"}},
        ]}}});
        let mut found = sent_timestamps(&xml_as_json);
        found.sort_unstable();
        assert_eq!(found, [1_700_000_000_100, 1_700_000_000_500]);
        let keyed = serde_json::json!({"messages": [{"Attributes": {"SentTimestamp": "42", "ApproximateReceiveCount": "0"}}]});
        assert_eq!(sent_timestamps(&keyed), [42]);
        assert!(sent_timestamps(&serde_json::json!({"ReceiveMessageResponse": {"ReceiveMessageResult": null}})).is_empty());
    }

    #[test]
    fn free_ports_lie_below_the_ephemeral_range() -> anyhow::Result<()> {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
        let ephemeral_start: u16 = range.split_whitespace().next().context("empty range")?.parse()?;
        for _ in 0..20 {
            let port = free_port()?;
            assert!(port < ephemeral_start, "{port} is in the ephemeral range from {ephemeral_start}");
        }
        Ok(())
    }

    /// The port LocalStack was given is bound by someone else by the time it
    /// starts: it must come up on another port, not hang until the bound.
    #[tokio::test(flavor = "multi_thread")]
    async fn localstack_whose_port_was_taken_starts_on_another() -> anyhow::Result<()> {
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let venv = tokio::task::spawn_blocking(move || install::ensure(&project, Venv::LocalStack)).await??;
        let state = tempfile::tempdir()?;
        let logs = LogSink::new(state.path(), false)?;
        let squatter = std::net::TcpListener::bind("127.0.0.1:0")?;
        let taken = squatter.local_addr()?.port();
        let mut offered = vec![];
        let started = Instant::now();
        let (mut child, url) = start_localstack(&venv, state.path(), &logs, || {
            let port = if offered.is_empty() { taken } else { free_port()? };
            offered.push(port);
            Ok(port)
        })
        .await?;
        let took = started.elapsed();
        kill_group(&mut child);
        assert_eq!(offered.len(), 2, "one refused port, then one that worked: {offered:?}");
        assert!(!url.ends_with(&format!(":{taken}")), "{url}");
        // Not noticed, the first try would have waited out all of START_BOUND
        // before the second began; a loaded machine's two starts take long
        // enough (46 s once) that half of it is too tight a bound.
        assert!(took < START_BOUND, "noticed the taken port only after {took:?}");
        Ok(())
    }
}

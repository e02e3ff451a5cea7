//! Live progress: with many WebSocket connections open, the latency from an
//! event's creation to its arrival at each subscribed client, against a bare
//! ping through the same gateway and `ws` function.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use prism_cloud::PrismClient;
use prism_cloud::live::LiveConnection;
use prism_shared::JobId;
use prism_shared::app::realtime::ClientMessage;

use super::percentile;

/// Time between job starts (4 jobs a second).
const JOB_INTERVAL: Duration = Duration::from_millis(250);
/// Connections that follow each job.
const CONNECTIONS_PER_JOB: usize = 10;
/// How long a connection waits for its snapshot, and then for its job's end.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(30);
const RUN_WAIT: Duration = Duration::from_secs(180);
/// Pings timed for the reference, and how many of them warm it up first.
const PINGS: usize = 220;
const WARM_UP_PINGS: usize = 20;

/// Where the benchmark connects, and how hard it may press the functions it calls.
#[derive(Debug, Clone, Copy)]
pub struct LiveTarget<'a> {
    pub api: &'a PrismClient,
    pub websocket_url: &'a str,
    pub token: &'a str,
    /// Instances of `api` and of `ws`: the benchmark calls each at most this
    /// many at a time, so what it measures is delivery and not the retries of
    /// calls throttled past the functions' reserved concurrency.
    pub api_concurrency: usize,
    pub ws_concurrency: usize,
}

/// The jobs the connections follow, created but not started, and the
/// connections, open and subscribed: made before a load starts, they do not
/// compete with its submissions for `api` and `ws`, and the jobs run while
/// the load does.
#[derive(Debug)]
pub struct LivePush<'a> {
    target: LiveTarget<'a>,
    /// Each job's id and presigned upload URL.
    jobs: Vec<(JobId, String)>,
    /// Each connection, with the job it follows and the seq its snapshot showed.
    opened: Vec<(LiveConnection, JobId, u64)>,
    /// How long opening and subscribing them took.
    open_secs: f64,
}

/// The load a measurement runs beside: its name, and whether it is still running.
#[derive(Clone, Copy)]
pub struct Beside<'l> {
    pub load: &'l str,
    pub running: &'l dyn Fn() -> bool,
}

impl std::fmt::Debug for Beside<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beside").field("load", &self.load).finish_non_exhaustive()
    }
}

impl<'a> LivePush<'a> {
    /// Creates one job for every [`CONNECTIONS_PER_JOB`] of `connections`,
    /// then opens the connections and subscribes each to its job.
    pub async fn prepare(target: LiveTarget<'a>, connections: usize) -> anyhow::Result<Self> {
        let connections = connections.max(1);
        let created: Vec<anyhow::Result<(JobId, String)>> = futures::stream::iter(0..connections.div_ceil(CONNECTIONS_PER_JOB))
            .map(|i| async move {
                let (job, url) = target.api.create(&format!("live-{i}.txt"), None).await?;
                Ok((job.id, url))
            })
            .buffer_unordered(target.api_concurrency.max(1))
            .collect()
            .await;
        let jobs: Vec<(JobId, String)> = created.into_iter().collect::<anyhow::Result<_>>()?;
        let opening = Instant::now();
        let opened: Vec<anyhow::Result<(LiveConnection, JobId, u64)>> = futures::stream::iter(0..connections)
            .map(|i| subscribed(target, jobs[i % jobs.len()].0.clone()))
            // Each open is two `ws` invocations one after the other (`$connect`,
            // then the subscription): one open per instance never throttles it.
            .buffer_unordered(target.ws_concurrency.max(1))
            .collect()
            .await;
        let opened = opened.into_iter().collect::<anyhow::Result<_>>()?;
        Ok(Self { target, jobs, opened, open_secs: opening.elapsed().as_secs_f64() })
    }

    /// Runs the jobs and writes the section of the report, or its failure
    /// under the same heading so the benchmarks around it still run and
    /// report. `beside` is the load running beside it, if any: a run whose
    /// jobs outlast that load says so, since it was not measured under it.
    pub async fn section(prepared: anyhow::Result<Self>, beside: Option<Beside<'_>>) -> String {
        let heading = match beside {
            None => "## Live progress over WebSockets\n\n".to_owned(),
            Some(beside) => format!("## Live progress over WebSockets while {} run\n\n", beside.load),
        };
        match prepared {
            Ok(live) => match live.measure().await {
                Ok(measured) => match beside {
                    Some(beside) if !(beside.running)() => {
                        format!("{heading}{measured}**Not a measurement under load:** the load had ended before these jobs did.\n\n")
                    }
                    _ => heading + &measured,
                },
                Err(e) => format!("{heading}Failed: {e:#}\n\n"),
            },
            Err(e) => format!("{heading}Failed opening the connections: {e:#}\n\n"),
        }
    }

    async fn measure(self) -> anyhow::Result<String> {
        let Self { target, jobs, opened, open_secs } = self;
        let connections = opened.len();
        let bare = ping_round_trips(target).await?;

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
        let readers: Vec<_> = opened
            .into_iter()
            .map(|(mut conn, id, base_seq)| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let deadline = Instant::now() + RUN_WAIT;
                    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                        let Ok(Some(message)) = conn.next(left).await else { break };
                        if message["type"] != "event" || message["job_id"].as_str() != Some(id.as_str()) {
                            continue;
                        }
                        if message["seq"].as_u64().is_some_and(|s| s > base_seq)
                            && let Some(ms) = age_ms(&message)
                        {
                            let _ = tx.send(ms);
                        }
                        if prism_cloud::live::is_terminal(&message) {
                            break;
                        }
                    }
                    conn.close().await;
                })
            })
            .collect();
        drop(tx);

        let text = b"Live progress benchmark. A few sentences to analyse.\n".repeat(16);
        let running = Instant::now();
        // Paced, so the figure is the delivery path's and not the queueing of a
        // saturated emulator.
        let mut pace = tokio::time::interval(JOB_INTERVAL);
        for (_, url) in &jobs {
            pace.tick().await;
            target.api.upload(url, text.clone()).await?;
        }
        for reader in readers {
            reader.await?;
        }
        let run_secs = running.elapsed().as_secs_f64();
        let mut latencies = Vec::new();
        while let Some(ms) = rx.recv().await {
            latencies.push(ms);
        }
        latencies.sort_by(f64::total_cmp);

        let mut out = String::new();
        let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
        writeln!(
            out,
            "{connections} connections opened and subscribed in {open_secs:.1} s (before any load), {} at a time (the `ws` \
             function's concurrency), {} per job over {} jobs; the jobs were then started one every {} ms and ran end to \
             end in {run_secs:.1} s; {} events were pushed.\n",
            target.ws_concurrency,
            connections.div_ceil(jobs.len()),
            jobs.len(),
            JOB_INTERVAL.as_millis(),
            latencies.len()
        )?;
        writeln!(out, "| latency | p50 | p99 | max |\n|---|---:|---:|---:|")?;
        writeln!(
            out,
            "| event created → client (through the stream, SNS, SQS, progress, @connections) | {p50:.1} ms | {p99:.1} ms | {:.1} ms |",
            latencies.last().copied().unwrap_or(f64::NAN)
        )?;
        writeln!(
            out,
            "| reference: ping → pong through the ws function and @connections | {:.1} ms | {:.1} ms | {:.1} ms |",
            percentile(&bare, 50.0),
            percentile(&bare, 99.0),
            bare.last().copied().unwrap_or(f64::NAN)
        )?;
        writeln!(out, "\np99 ratio to the reference: {:.1}x; goal p99 < 1000 ms (stretch < 100 ms).\n", p99 / percentile(&bare, 99.0))?;
        Ok(out)
    }
}

/// A connection subscribed to job `id`, with the seq its snapshot showed, so
/// replayed events are not counted as live ones.
async fn subscribed(target: LiveTarget<'_>, id: JobId) -> anyhow::Result<(LiveConnection, JobId, u64)> {
    let mut conn = LiveConnection::connect(target.websocket_url, Some(target.token)).await?;
    let snapshot = conn.subscribe(&id, 0, SNAPSHOT_WAIT).await.with_context(|| format!("subscribing to {id}"))?;
    let seq = snapshot["job"]["seq"].as_u64().context("a snapshot without the job's seq")?;
    Ok((conn, id, seq))
}

/// The reference: sorted round trips of a ping through the `ws` function and
/// the gateway's @connections API, past the warm-up.
async fn ping_round_trips(target: LiveTarget<'_>) -> anyhow::Result<Vec<f64>> {
    let mut probe = LiveConnection::connect(target.websocket_url, Some(target.token)).await?;
    let mut bare = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let sent = Instant::now();
        probe.send(&ClientMessage::Ping).await?;
        probe.next(Duration::from_secs(10)).await?.context("no pong")?;
        bare.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    probe.close().await;
    bare.drain(..WARM_UP_PINGS);
    bare.sort_by(f64::total_cmp);
    Ok(bare)
}

/// Milliseconds from an envelope's `timestamp` to now.
fn age_ms(message: &serde_json::Value) -> Option<f64> {
    let sent: chrono::DateTime<chrono::Utc> = message["timestamp"].as_str()?.parse().ok()?;
    Some((chrono::Utc::now() - sent).num_microseconds()? as f64 / 1000.0)
}

//! `prism bench`: measurements reported as ratios against a reference run
//! on the same machine in the same run, never as absolute thresholds.
//!
//! * classifier: files per second sniffed from their first 4 KiB, against
//!   libmagic's `file --mime-type` over the same generated corpus;
//! * priority lanes: with N batch jobs queued, how many of them start before
//!   an urgent job submitted afterwards;
//! * thumbnails: per format, prism's image path against `vipsthumbnail`, see [`thumbnails`];
//! * live progress: with many WebSocket connections open, the latency from an
//!   event's creation to its arrival at each subscribed client, against a
//!   bare `@connections` push through the same gateway;
//! * PDF text per kind of PDF: see [`documents`]; audio and video thumbnails: see [`media`];
//! * load: many small jobs through the whole pipeline, see [`prism_cloud::load`];
//! * memory at the limits, per processor and format: see [`memory`];
//! * cold starts: see [`cold_start`]; idle load: see [`idle`]; estimates: see [`eta`].

pub mod cold_start;
pub mod documents;
pub mod emulator_bound;
pub mod eta;
pub mod idle;
pub mod media;
pub mod memory;
pub mod thumbnails;
pub mod timing;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use prism_shared::{JobId, content::sniff};

use prism_cloud::PrismClient;

/// `(name, leading bytes)` of every kind in the corpus; the rest of each file is noise.
fn signatures() -> Vec<(&'static str, Vec<u8>)> {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(200).into_bytes();
    vec![
        ("png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x01\0\0\0\x01\0\x08\x02\0\0\0".to_vec()),
        ("jpeg", b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0".to_vec()),
        ("gif", b"GIF89a\x01\0\x01\0\x80\0\0".to_vec()),
        ("webp", b"RIFF\x24\0\0\0WEBPVP8 \x18\0\0\0".to_vec()),
        ("wav", b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x44\xac\0\0\x88\x58\x01\0\x02\0\x10\0data".to_vec()),
        ("flac", b"fLaC\0\0\0\x22\x10\0\x10\0".to_vec()),
        ("mp3", b"ID3\x04\0\0\0\0\0\x00".to_vec()),
        ("mp4", b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41".to_vec()),
        ("m4a", b"\0\0\0\x20ftypM4A \0\0\0\0M4A mp42isom\0\0\0\0".to_vec()),
        ("webm", b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\xF7\x81\x01\x42\x82\x84webm".to_vec()),
        ("pdf", b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n".to_vec()),
        ("text", text.clone()),
        ("json", [b"{\"items\": [".as_slice(), &b"{\"a\": 1}, ".repeat(300), b"{}]}"].concat()),
        ("csv", b"id,name,score\n".iter().chain(b"1,alice,3\n".repeat(300).iter()).copied().collect()),
    ]
}

/// Writes `copies` files of each kind, 64 KiB each, under `dir`.
fn write_corpus(dir: &Path, copies: usize) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // Seeded, so every run sniffs the same corpus.
    let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    let mut files = Vec::new();
    for (kind, head) in signatures() {
        for i in 0..copies {
            let mut body = vec![0u8; 64 * 1024];
            rng.fill(&mut body);
            if kind == "text" || kind == "json" || kind == "csv" {
                body.truncate(head.len());
            }
            body[..head.len()].copy_from_slice(&head);
            let path = dir.join(format!("{kind}-{i}.bin"));
            std::fs::write(&path, &body)?;
            files.push(path);
        }
    }
    Ok(files)
}

/// Classifier throughput against `file --mime-type`, same files, same run.
pub fn classifier(scratch: &Path, out: &mut String) -> anyhow::Result<()> {
    use std::io::Read;
    let files = write_corpus(&scratch.join("corpus"), 40)?;
    let rounds = 5;
    let started = Instant::now();
    let mut buf = vec![0u8; sniff::SNIFF_BYTES];
    let mut recognised = 0usize;
    for _ in 0..rounds {
        for path in &files {
            let mut f = std::fs::File::open(path)?;
            let size = f.metadata()?.len();
            let n = f.read(&mut buf)?;
            recognised += usize::from(sniff::sniff(&buf[..n], size).is_ok());
        }
    }
    let ours = (files.len() * rounds) as f64 / started.elapsed().as_secs_f64();
    writeln!(out, "## Classifier\n")?;
    writeln!(
        out,
        "{} files ({} kinds, 64 KiB each) x {rounds} rounds; first {} bytes read per file.\n",
        files.len(),
        signatures().len(),
        sniff::SNIFF_BYTES
    )?;
    writeln!(out, "| classifier | files/s | ratio |\n|---|---:|---:|")?;
    let list = scratch.join("corpus.list");
    let listing: String = (0..rounds).flat_map(|_| files.iter()).map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&list, listing)?;
    let started = Instant::now();
    let reference = std::process::Command::new("file").args(["-b", "--mime-type", "-f"]).arg(&list).output();
    match reference {
        Ok(o) if o.status.success() => {
            let theirs = (files.len() * rounds) as f64 / started.elapsed().as_secs_f64();
            writeln!(out, "| prism sniff | {ours:.0} | {:.1}x |", ours / theirs)?;
            writeln!(out, "| libmagic `file --mime-type` (reference) | {theirs:.0} | 1.0x |")?;
        }
        _ => writeln!(out, "| prism sniff | {ours:.0} | (reference `file` not installed) |")?,
    }
    writeln!(out, "\nRecognised {recognised} of {} reads.\n", files.len() * rounds)?;
    Ok(())
}

/// How many of `batch` queued batch jobs start before an urgent job submitted after them.
pub async fn priority(api: &PrismClient, batch: usize, out: &mut String) -> anyhow::Result<()> {
    let text = b"batch work to be done eventually\n".repeat(64);
    let started = Instant::now();
    let submitted: Vec<anyhow::Result<JobId>> = futures::stream::iter(0..batch)
        .map(|i| {
            let body = text.clone();
            async move { api.submit(&format!("batch-{i}.txt"), body, Some("batch")).await.map(|j| j.id) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let batch_ids: Vec<JobId> = submitted.into_iter().collect::<anyhow::Result<_>>()?;
    let submit_secs = started.elapsed().as_secs_f64();
    let urgent = api.submit("urgent.txt", b"now please".to_vec(), Some("urgent")).await?;
    api.wait(&urgent.id, Duration::from_secs(120)).await?;
    let urgent_start = started_at(api, &urgent.id).await?;
    for id in &batch_ids {
        api.wait(id, Duration::from_secs(300)).await?;
    }
    let starts: Vec<anyhow::Result<chrono::DateTime<chrono::Utc>>> =
        futures::stream::iter(batch_ids.iter()).map(|id| started_at(api, id)).buffer_unordered(16).collect().await;
    let starts: Vec<_> = starts.into_iter().collect::<anyhow::Result<_>>()?;
    let before = starts.iter().filter(|t| **t < urgent_start).count();
    writeln!(out, "## Priority lanes\n")?;
    writeln!(out, "{batch} `batch` jobs submitted in {submit_secs:.1} s, then one `urgent` job.\n")?;
    writeln!(out, "| measure | value |\n|---|---:|")?;
    writeln!(out, "| batch jobs started before the urgent one | {before} of {batch} ({:.0} %) |", 100.0 * before as f64 / batch as f64)?;
    writeln!(out, "| batch jobs started after it | {} |", batch - before)?;
    let last = starts.iter().max().copied().unwrap_or(urgent_start);
    writeln!(
        out,
        "| urgent start relative to the last batch start | {:.2} s earlier |\n",
        (last - urgent_start).num_milliseconds() as f64 / 1000.0
    )?;
    Ok(())
}

/// When the job's `job.started` event was recorded.
pub async fn started_at(api: &PrismClient, id: &JobId) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let events = api.events(id, 0).await?;
    let started = events.iter().find(|e| e["event_type"] == "job.started").context("job never started")?;
    Ok(started["timestamp"].as_str().context("timestamp")?.parse()?)
}

/// Time between job starts in the live-progress benchmark (4 jobs a second).
const JOB_INTERVAL: Duration = Duration::from_millis(250);

/// Percentile (0–100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Milliseconds from an envelope's `timestamp` to now.
fn age_ms(message: &serde_json::Value) -> Option<f64> {
    let sent: chrono::DateTime<chrono::Utc> = message["timestamp"].as_str()?.parse().ok()?;
    Some((chrono::Utc::now() - sent).num_microseconds()? as f64 / 1000.0)
}

/// [`push_latency`]'s section of the report, or its failure under the same
/// heading, so the benchmarks around it still run and report.
pub async fn push_latency_section(
    api: &PrismClient,
    websocket_url: &str,
    token: &str,
    connections: usize,
    jobs: usize,
    while_loaded: Option<&str>,
) -> String {
    let mut section = String::new();
    match push_latency(api, websocket_url, token, connections, jobs, while_loaded, &mut section).await {
        Ok(()) => section,
        Err(e) => format!("{}Failed: {e:#}\n\n", live_heading(while_loaded)),
    }
}

/// The live-progress heading, idle or beside the load `while_loaded` names.
fn live_heading(while_loaded: Option<&str>) -> String {
    match while_loaded {
        None => "## Live progress over WebSockets\n\n".to_owned(),
        Some(load) => format!("## Live progress over WebSockets while {load} run\n\n"),
    }
}

/// Opens `connections` WebSocket connections spread over `jobs` jobs, runs
/// the jobs, and reports how long each pushed event took to arrive;
/// `while_loaded` names the load running beside it, if any.
async fn push_latency(
    api: &PrismClient,
    websocket_url: &str,
    token: &str,
    connections: usize,
    jobs: usize,
    while_loaded: Option<&str>,
    out: &mut String,
) -> anyhow::Result<()> {
    use prism_cloud::live::LiveConnection;
    use prism_shared::app::realtime::ClientMessage;

    let jobs = jobs.clamp(1, connections.max(1));
    let created: Vec<anyhow::Result<(prism_shared::Job, String)>> = futures::stream::iter(0..jobs)
        .map(|i| async move { api.create(&format!("live-{i}.txt"), None).await })
        .buffer_unordered(16)
        .collect()
        .await;
    let created: Vec<(prism_shared::Job, String)> = created.into_iter().collect::<anyhow::Result<_>>()?;

    // Open and subscribe every connection; each remembers the seq its snapshot showed,
    // so replayed events are not counted as live ones.
    let opening = Instant::now();
    let opened: Vec<anyhow::Result<(LiveConnection, JobId, u64)>> = futures::stream::iter(0..connections)
        .map(|i| {
            let id = created[i % jobs].0.id.clone();
            async move {
                let mut conn = LiveConnection::connect(websocket_url, Some(token)).await?;
                conn.send(&ClientMessage::Subscribe { job_id: id.clone(), after_seq: 0, logs: false }).await?;
                loop {
                    let message = conn.next(Duration::from_secs(30)).await?.context("no snapshot within 30 s")?;
                    if message["type"] == "snapshot" {
                        let seq = message["job"]["seq"].as_u64().unwrap_or(0);
                        return Ok((conn, id, seq));
                    }
                }
            }
        })
        // Four connects per `ws` instance at a time (its reserved concurrency is 4).
        .buffer_unordered(16)
        .collect()
        .await;
    let opened: Vec<_> = opened.into_iter().collect::<anyhow::Result<_>>()?;
    let open_secs = opening.elapsed().as_secs_f64();

    // The reference: a bare push through the gateway's @connections API to one of them.
    let mut probe = LiveConnection::connect(websocket_url, Some(token)).await?;
    let mut bare = Vec::new();
    for _ in 0..220 {
        let sent = Instant::now();
        probe.send(&ClientMessage::Ping).await?;
        probe.next(Duration::from_secs(10)).await?.context("no pong")?;
        bare.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    bare.drain(..20); // warm-up
    bare.sort_by(f64::total_cmp);
    probe.close().await;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let readers: Vec<_> = opened
        .into_iter()
        .map(|(mut conn, id, base_seq)| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(180);
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
    // saturated emulator (moto serves ~100 DynamoDB calls a second here).
    let mut pace = tokio::time::interval(JOB_INTERVAL);
    for (_, url) in &created {
        pace.tick().await;
        api.upload(url, text.clone()).await?;
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
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    out.push_str(&live_heading(while_loaded));
    writeln!(
        out,
        "{connections} connections opened and subscribed in {open_secs:.1} s ({} per job over {jobs} jobs); the jobs were then \
         started one every {} ms and ran end to end in {run_secs:.1} s; {} events were pushed.\n",
        connections / jobs,
        JOB_INTERVAL.as_millis(),
        latencies.len()
    )?;
    writeln!(out, "| latency | p50 | p99 | max |\n|---|---:|---:|---:|")?;
    writeln!(
        out,
        "| event created → client (through SNS, SQS, progress, @connections) | {p50:.1} ms | {p99:.1} ms | {:.1} ms |",
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
    Ok(())
}

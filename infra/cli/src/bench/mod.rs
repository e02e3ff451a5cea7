//! `prism bench`: measurements reported as ratios against a reference run
//! on the same machine in the same run, never as absolute thresholds.
//!
//! * classifier: files per second sniffed from their first 4 KiB, against
//!   libmagic's `file --mime-type` over the same generated corpus;
//! * priority lanes: with N batch jobs queued, how many of them start before
//!   an urgent job submitted afterwards;
//! * thumbnails: per format, prism's image path against `vipsthumbnail`, see [`thumbnails`];
//! * live progress, idle and under load: see [`live`];
//! * PDF text per kind of PDF: see [`documents`]; audio and video thumbnails: see [`media`];
//! * load: many small jobs through the whole pipeline, see [`prism_cloud::load`];
//! * memory at the limits, per processor and format: see [`memory`];
//! * cold starts: see [`cold_start`]; idle load: see [`idle`]; estimates: see [`eta`].

pub mod cold_start;
pub mod documents;
pub mod emulator_bound;
pub mod eta;
pub mod idle;
pub mod live;
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

/// Percentile (0–100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

//! The load run: many small jobs (texts and images), half submitted through
//! the API and half dropped straight into the bucket, then every job's log
//! checked: each job terminal, none lost, none duplicated, no lifecycle event
//! recorded twice, sequence numbers without gaps. `prism bench --only load`
//! runs it at 10,000 jobs; the test suite runs a 1,000-job version with the
//! same checks.
//!
//! Flat out, the run measures capacity: submissions outpace the pipeline, a
//! backlog forms and every call waits in the emulators' queues, so its
//! latencies are those of a saturated cloud. Paced at a rate below that
//! capacity (an open-loop offered load), it measures the latency a cloud
//! that keeps up gives.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use prism_shared::ports::{JobStore, ListQuery};
use prism_shared::{Job, JobId, JobStatus, S3Uri};

use crate::process::CpuUse;
use crate::{LocalCloud, PrismClient};

/// The owner of every job of the run (API token and bucket folder alike).
pub const OWNER: &str = "load";
/// API creates in flight at once: as many as the API function's
/// `ReservedConcurrentExecutions` (4), so the run measures the pipeline, not
/// the retries of submissions throttled past it (one CI run with 8 saw a
/// submission throttled through all its retries).
const CREATES: usize = 4;
/// Submissions in flight at once. Only the create goes through the API:
/// the upload and a drop into the bucket go straight to S3, so they are not
/// held to [`CREATES`]. When every submission held one of four slots through
/// its upload too, the run offered no more than the submitters kept up
/// (about 20 jobs/s on a slow day), the pipeline kept up with that, and the
/// throughput measured the submitters, not the pipeline.
const IN_FLIGHT: usize = 16;
/// Lifecycle events a job records at most once.
const ONCE: [&str; 5] = ["job.created", "job.uploaded", "job.classified", "job.started", "job.completed"];

/// How the run submits its jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Pace {
    #[default]
    /// As fast as the API and the bucket take them ([`CREATES`], [`IN_FLIGHT`]).
    FlatOut,
    /// Submission `i` starts `i / rate` seconds after the first (as many in
    /// flight as flat out; the report gives the rate reached).
    PerSecond(f64),
}

/// What a load run found.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub jobs: usize,
    pub through_api: usize,
    pub dropped: usize,
    pub completed: usize,
    pub failed: usize,
    /// Submissions with no job at all.
    pub lost: usize,
    /// Jobs not yet terminal when the deadline passed (still queued or running).
    pub unfinished: usize,
    /// Jobs beyond one per submission, and lifecycle events recorded twice.
    pub duplicated: usize,
    /// Jobs whose sequence numbers have a gap.
    pub gaps: usize,
    pub jobs_per_second: f64,
    pub pace: Pace,
    /// Jobs submitted per second, first submission to last.
    pub submitted_per_second: f64,
    pub submit_ms: Percentiles,
    pub end_to_end_ms: Percentiles,
    /// Calls per job by `service:Operation`, every function together.
    pub calls_per_job: BTreeMap<String, f64>,
    /// How long those calls took at their service (the emulator's queue and
    /// work), by `service:Operation`, in milliseconds.
    pub call_ms: BTreeMap<String, Percentiles>,
    /// Calls per job by function.
    pub calls_per_job_by_function: BTreeMap<String, f64>,
    /// Each function's invocations during the run, from its REPORT lines.
    pub invocations: BTreeMap<String, Invocations>,
    /// The CPU time each part of the local cloud used from the first
    /// submission until the last job ended.
    pub cpu: CpuUse,
    /// The machine's cores, against which that time is read.
    pub cores: usize,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
}

impl Percentiles {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let at = |p: f64| values.get(((p / 100.0) * (values.len().saturating_sub(1)) as f64).round() as usize).copied().unwrap_or(f64::NAN);
        Self { p50: at(50.0), p99: at(99.0) }
    }
}

/// A small input: a text, or every fourth one a small PNG.
fn input(i: usize) -> (String, Vec<u8>) {
    if i % 4 == 3 {
        let pixels = (0..32u32).flat_map(|y| (0..48u32).flat_map(move |x| [(x * 5 + i as u32) as u8, (y * 7) as u8, 128]));
        if let Ok(png) = crate::images::png_rgb(48, 32, &pixels.collect::<Vec<u8>>()) {
            return (format!("load-{i}.png"), png);
        }
    }
    (format!("load-{i}.txt"), format!("Load job {i}. A few words to count, a sentence or two.\nLine two of job {i}.\n").into_bytes())
}

/// Submits `jobs` jobs to `cloud` (as owner [`OWNER`], through `api`) and
/// checks every one of them once all are terminal or `deadline` has passed.
pub async fn run(cloud: &LocalCloud, api: &PrismClient, jobs: usize, pace: Pace, deadline: Duration) -> anyhow::Result<LoadReport> {
    let clients = cloud.clients();
    let store = prism_shared::aws::DynamoJobStore::new(clients.dynamodb.clone(), cloud.info.table.clone());
    let bucket = cloud.info.bucket.clone();
    let (calls_before, latencies_before) = (cloud.proxies.calls(), cloud.proxies.latencies());
    let logs = std::path::Path::new(&cloud.info.logs_dir);
    let logs_before = log_lengths(logs);
    let cpu_before = cloud.cpu_times();
    let started = Instant::now();
    let start_at = tokio::time::Instant::now();
    let rate = match pace {
        Pace::FlatOut => None,
        Pace::PerSecond(rate) => Some(rate.max(f64::MIN_POSITIVE)),
    };

    // Every other job through the API, the rest dropped into the bucket.
    let creates = tokio::sync::Semaphore::new(CREATES);
    let submitted: Vec<anyhow::Result<(JobId, Option<f64>)>> = futures::stream::iter(0..jobs)
        .map(|i| {
            let (name, bytes) = input(i);
            let (s3, bucket, creates) = (clients.s3.clone(), bucket.clone(), &creates);
            async move {
                if let Some(rate) = rate {
                    tokio::time::sleep_until(start_at + Duration::from_secs_f64(i as f64 / rate)).await;
                }
                if i % 2 == 0 {
                    let (job, url, submit_ms) = {
                        let _slot = creates.acquire().await?;
                        // Timed from the slot: the API's answer, not the wait for a turn to ask.
                        let asked = Instant::now();
                        let (job, url) = api.create(&name, None).await?;
                        (job, url, asked.elapsed().as_secs_f64() * 1000.0)
                    };
                    api.upload(&url, bytes).await?;
                    Ok((job.id, Some(submit_ms)))
                } else {
                    let key = format!("uploads/{OWNER}/{name}");
                    let put = s3.put_object().bucket(&bucket).key(&key).body(bytes.into()).send().await.context("dropping")?;
                    let etag = put.e_tag.unwrap_or_default().trim_matches('"').to_owned();
                    Ok((JobId::for_object(&S3Uri::new(&bucket, key), &etag), None))
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let submitting = started.elapsed();
    let mut ids = Vec::with_capacity(jobs);
    let mut submit_ms = Vec::new();
    for s in submitted {
        let (id, ms) = s?;
        ids.push(id);
        submit_ms.extend(ms);
    }

    // Wait until nothing of the owner is queued or processing (and every drop has its job).
    let until = Instant::now() + deadline;
    loop {
        let open = open_jobs(&store).await?;
        if open == 0 && count_jobs(&store).await? >= jobs {
            break;
        }
        if Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cloud.cpu_times().since(&cpu_before);

    // Every job, checked against its log.
    let checked: Vec<anyhow::Result<Check>> =
        futures::stream::iter(ids.iter()).map(|id| check(&store, id)).buffer_unordered(16).collect().await;
    let mut report = LoadReport {
        jobs,
        through_api: jobs.div_ceil(2),
        dropped: jobs / 2,
        pace,
        submitted_per_second: jobs as f64 / submitting.as_secs_f64().max(f64::EPSILON),
        cpu,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        elapsed,
        ..LoadReport::default()
    };
    let (mut first_created, mut last_end) = (None::<chrono::DateTime<chrono::Utc>>, None::<chrono::DateTime<chrono::Utc>>);
    let mut end_to_end = Vec::new();
    for c in checked {
        match c? {
            Check::Missing => report.lost += 1,
            Check::Open => report.unfinished += 1,
            Check::Ended { job, duplicated_events, gap } => {
                match job.status {
                    JobStatus::Completed => report.completed += 1,
                    _ => report.failed += 1,
                }
                report.duplicated += duplicated_events;
                report.gaps += usize::from(gap);
                first_created = Some(first_created.map_or(job.created_at, |t| t.min(job.created_at)));
                last_end = Some(last_end.map_or(job.updated_at, |t| t.max(job.updated_at)));
                end_to_end.push((job.updated_at - job.created_at).num_milliseconds() as f64);
            }
        }
    }
    // One job per submission: any job of the owner beyond those is a duplicate.
    report.duplicated += count_jobs(&store).await?.saturating_sub(jobs);
    if let (Some(first), Some(last)) = (first_created, last_end) {
        report.jobs_per_second = (report.completed + report.failed) as f64 / ((last - first).num_milliseconds().max(1) as f64 / 1000.0);
    }
    report.submit_ms = Percentiles::of(submit_ms);
    report.end_to_end_ms = Percentiles::of(end_to_end);

    let calls = cloud.proxies.calls();
    for ((function, service, operation), n) in &calls {
        let before = calls_before.get(&(function.clone(), service.clone(), operation.clone())).copied().unwrap_or(0);
        let per_job = (n - before) as f64 / jobs.max(1) as f64;
        *report.calls_per_job.entry(format!("{service}:{operation}")).or_default() += per_job;
        *report.calls_per_job_by_function.entry(function.clone()).or_default() += per_job;
    }
    for ((service, operation), mut histogram) in cloud.proxies.latencies() {
        // What the run added: the cloud may have served calls before it.
        if let Some(before) = latencies_before.get(&(service.clone(), operation.clone())) {
            histogram.subtract(before).context("latencies only grow")?;
        }
        if !histogram.is_empty() {
            let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
            report.call_ms.insert(format!("{service}:{operation}"), Percentiles { p50: ms(0.5), p99: ms(0.99) });
        }
    }
    report.invocations = invocations(logs, &logs_before);
    Ok(report)
}

enum Check {
    Missing,
    Open,
    Ended { job: Box<Job>, duplicated_events: usize, gap: bool },
}

async fn check(store: &dyn JobStore, id: &JobId) -> anyhow::Result<Check> {
    let Some(job) = store.get(id).await? else { return Ok(Check::Missing) };
    if !job.status.is_terminal() {
        return Ok(Check::Open);
    }
    let events = store.events(id, 0, 10_000).await?;
    let seqs: Vec<u64> = events.iter().filter_map(|e| e.seq).collect();
    let gap = seqs != (1..=job.seq).collect::<Vec<_>>();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        *counts.entry(e.body.event_type()).or_default() += 1;
    }
    let terminal = events.iter().filter(|e| matches!(e.body.event_type(), "job.completed" | "job.failed" | "job.cancelled")).count();
    let duplicated_events =
        ONCE.iter().map(|t| counts.get(t).copied().unwrap_or(0).saturating_sub(1)).sum::<usize>() + terminal.saturating_sub(1);
    Ok(Check::Ended { job: Box::new(job), duplicated_events, gap })
}

async fn open_jobs(store: &dyn JobStore) -> anyhow::Result<usize> {
    let mut open = 0;
    for status in [JobStatus::Queued, JobStatus::Processing] {
        let query = ListQuery { status: Some(status), limit: 1, ..ListQuery::default() };
        open += store.list(OWNER, &query, chrono::Utc::now()).await?.jobs.len();
    }
    Ok(open)
}

async fn count_jobs(store: &dyn JobStore) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut cursor = None;
    loop {
        let query = ListQuery { limit: 1000, cursor, ..ListQuery::default() };
        let page = store.list(OWNER, &query, chrono::Utc::now()).await?;
        count += page.jobs.len();
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(count),
        }
    }
}

/// A function's invocations during a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Invocations {
    pub count: usize,
    /// Their durations added up.
    pub busy: Duration,
    /// Their median duration.
    pub p50: Duration,
    /// The most memory one used (MB).
    pub peak_memory_mb: u64,
}

impl Invocations {
    /// How many were running at once on average over `elapsed`: against the
    /// function's concurrency, how near it was to being the narrowest stage.
    pub fn in_flight(&self, elapsed: Duration) -> f64 {
        self.busy.as_secs_f64() / elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// From a function's REPORT lines (`Duration: 12.34 ms ... Max Memory Used: 17 MB`).
    fn of_report_lines(text: &str) -> Option<Self> {
        let field = |line: &str, name: &str| line.split(name).nth(1)?.split_whitespace().next()?.parse::<f64>().ok();
        let reports: Vec<(f64, f64)> = text
            .lines()
            .filter(|line| line.contains("REPORT RequestId:"))
            .filter_map(|line| Some((field(line, "\tDuration: ")?, field(line, "Max Memory Used: ").unwrap_or(0.0))))
            .collect();
        if reports.is_empty() {
            return None;
        }
        let mut durations: Vec<f64> = reports.iter().map(|(ms, _)| *ms).collect();
        durations.sort_by(f64::total_cmp);
        let ms = |ms: f64| Duration::from_secs_f64(ms / 1000.0);
        Some(Self {
            count: reports.len(),
            busy: ms(durations.iter().sum()),
            p50: ms(durations[durations.len() / 2]),
            peak_memory_mb: reports.iter().map(|(_, mb)| *mb as u64).max().unwrap_or(0),
        })
    }
}

/// How long each log in `logs` is: where a run's lines start.
fn log_lengths(logs: &std::path::Path) -> BTreeMap<std::path::PathBuf, u64> {
    let Ok(entries) = std::fs::read_dir(logs) else { return BTreeMap::new() };
    entries.flatten().filter_map(|entry| Some((entry.path(), entry.metadata().ok()?.len()))).collect()
}

/// Each function's invocations since `before`, from its log's REPORT lines.
fn invocations(logs: &std::path::Path, before: &BTreeMap<std::path::PathBuf, u64>) -> BTreeMap<String, Invocations> {
    use std::io::{Read as _, Seek as _};
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(logs) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else { continue };
        let mut text = String::new();
        let read = std::fs::File::open(&path).and_then(|mut file| {
            file.seek(std::io::SeekFrom::Start(before.get(&path).copied().unwrap_or(0)))?;
            file.read_to_string(&mut text)
        });
        if let Err(e) = read {
            tracing::warn!(log = %path.display(), error = %e, "could not read a function's log; its invocations are left out");
            continue;
        }
        if let Some(invocations) = Invocations::of_report_lines(&text) {
            found.insert(name, invocations);
        }
    }
    found
}

/// The report's markdown section.
pub fn write(report: &LoadReport, command: &str, out: &mut String) -> std::fmt::Result {
    writeln!(out, "## Load\n")?;
    writeln!(
        out,
        "{} jobs ({} through the API, {} dropped into the bucket; texts and small PNGs) on the local cloud, `{command}`.\n",
        report.jobs, report.through_api, report.dropped
    )?;
    writeln!(out, "| measure | value |\n|---|---:|")?;
    writeln!(out, "| completed / failed | {} / {} |", report.completed, report.failed)?;
    writeln!(out, "| lost (a submission without a job) | {} |", report.lost)?;
    writeln!(out, "| unfinished at the deadline | {} |", report.unfinished)?;
    writeln!(out, "| duplicated (extra jobs or lifecycle events) | {} |", report.duplicated)?;
    writeln!(out, "| jobs with a gap in their log | {} |", report.gaps)?;
    match report.pace {
        Pace::FlatOut => writeln!(out, "| submitted | flat out, {:.1} jobs/s |", report.submitted_per_second)?,
        Pace::PerSecond(rate) => writeln!(out, "| submitted | paced at {rate:.1} jobs/s, {:.1} reached |", report.submitted_per_second)?,
    }
    writeln!(out, "| throughput | {:.1} jobs/s |", report.jobs_per_second)?;
    writeln!(out, "| submit latency (API create) p50 / p99 | {:.0} / {:.0} ms |", report.submit_ms.p50, report.submit_ms.p99)?;
    writeln!(out, "| end to end (created → terminal) p50 / p99 | {:.0} / {:.0} ms |", report.end_to_end_ms.p50, report.end_to_end_ms.p99)?;
    writeln!(out, "| wall time | {:.0} s |\n", report.elapsed.as_secs_f64())?;
    writeln!(
        out,
        "AWS calls per job by operation (every function, progress fan-out and publishing included), and how long they took at \
         the emulators (from the function's endpoint forwarding a call to the answer's headers):\n"
    )?;
    writeln!(out, "| operation | calls per job | at the emulator p50 / p99 |\n|---|---:|---:|")?;
    for (op, n) in &report.calls_per_job {
        match report.call_ms.get(op) {
            Some(ms) => writeln!(out, "| {op} | {n:.2} | {:.1} / {:.1} ms |", ms.p50, ms.p99)?,
            None => writeln!(out, "| {op} | {n:.2} | – |")?,
        }
    }
    writeln!(out, "| **total** | **{:.1}** | |\n", report.calls_per_job.values().sum::<f64>())?;
    writeln!(
        out,
        "Each function, with its invocations during the run (from their REPORT lines); \
         how many were in flight on average, against how many its lane lets run at once, \
         shows which stage is the narrowest.\n"
    )?;
    writeln!(out, "| function | calls per job | invocations | median duration | in flight on average | peak memory |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    for (function, n) in &report.calls_per_job_by_function {
        // `prism-{stage}-{binary}`.
        let binary = function.strip_prefix("prism-").and_then(|f| f.split_once('-')).map_or(function.as_str(), |(_, b)| b);
        match report.invocations.get(binary) {
            Some(i) => writeln!(
                out,
                "| {binary} | {n:.2} | {} | {:.0} ms | {:.2} | {} MB |",
                i.count,
                i.p50.as_secs_f64() * 1000.0,
                i.in_flight(report.elapsed),
                i.peak_memory_mb
            )?,
            None => writeln!(out, "| {binary} | {n:.2} | 0 | - | - | - |")?,
        }
    }
    writeln!(out)?;
    write_cpu(report, out)
}

/// Where the machine's cores went during the run: which part of the local
/// cloud the emulators compete with for them.
fn write_cpu(report: &LoadReport, out: &mut String) -> std::fmt::Result {
    let wall = report.elapsed.as_secs_f64().max(f64::EPSILON);
    let capacity = wall * report.cores as f64;
    writeln!(
        out,
        "CPU time during the run ({} cores for {wall:.0} s), by part: this process (the local cloud's gateways, endpoints \
         and event sources, and the bench's own clients), each emulator with the processes it started, each function's \
         instances{}:\n",
        report.cores,
        match report.cpu.ended {
            0 => String::new(),
            n => format!(" ({n} processes ended during the run; their time after its start is not counted)"),
        }
    )?;
    writeln!(out, "| part | CPU time | cores on average | share of the machine |\n|---|---:|---:|---:|")?;
    let mut parts: Vec<(&String, &Duration)> = report.cpu.by_part.iter().collect();
    parts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (part, time) in &parts {
        let secs = time.as_secs_f64();
        writeln!(out, "| {part} | {secs:.1} s | {:.2} | {:.0}% |", secs / wall, 100.0 * secs / capacity)?;
    }
    let used: f64 = parts.iter().map(|(_, t)| t.as_secs_f64()).sum();
    writeln!(out, "| **all** | **{used:.1} s** | **{:.2}** | **{:.0}%** |\n", used / wall, 100.0 * used / capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_give_the_count_time_busy_median_and_peak_memory() {
        let log = "classify#0 | REPORT RequestId: a\tDuration: 100.00 ms\tMemory Size: 256 MB\tMax Memory Used: 16 MB\tInit Duration: 90.91 ms\n\
                   classify#1 | 2026-11-29T00:00:00Z INFO processing\n\
                   classify#1 | REPORT RequestId: b\tDuration: 300.50 ms\tMemory Size: 256 MB\tMax Memory Used: 18 MB\n\
                   classify#0 | REPORT RequestId: c\tDuration: 200.00 ms\tMemory Size: 256 MB\tMax Memory Used: 17 MB\n";
        let found = Invocations::of_report_lines(log).expect("three reports");
        assert_eq!((found.count, found.peak_memory_mb), (3, 18));
        assert_eq!(found.busy, Duration::from_micros(600_500), "the durations, not the init duration");
        assert_eq!(found.p50, Duration::from_millis(200));
        assert!((found.in_flight(Duration::from_secs(2)) - 0.30025).abs() < 1e-9);
        assert_eq!(Invocations::of_report_lines("no reports here\n"), None);
    }

    #[test]
    fn the_cpu_table_puts_the_busiest_part_first_and_reads_each_against_the_machines_cores() -> anyhow::Result<()> {
        let by_part = [("prism", 30), ("moto", 90), ("classify", 6)].map(|(part, s)| (part.to_owned(), Duration::from_secs(s)));
        let report = LoadReport {
            cpu: CpuUse { by_part: by_part.into(), ended: 2 },
            cores: 2,
            elapsed: Duration::from_secs(100),
            ..LoadReport::default()
        };
        let mut out = String::new();
        write_cpu(&report, &mut out)?;
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| part")).collect();
        assert_eq!(
            rows,
            [
                "| moto | 90.0 s | 0.90 | 45% |",
                "| prism | 30.0 s | 0.30 | 15% |",
                "| classify | 6.0 s | 0.06 | 3% |",
                "| **all** | **126.0 s** | **1.26** | **63%** |"
            ]
        );
        assert!(out.contains("2 processes ended during the run"), "{out}");
        Ok(())
    }
}

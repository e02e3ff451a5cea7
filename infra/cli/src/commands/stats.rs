//! `prism stats`: the metrics the functions wrote (CloudWatch Embedded Metric
//! Format lines in their logs) summed as CloudWatch would: counts added up,
//! durations and each invocation's AWS calls as percentiles, per metric and dimension values; then per lane:
//! jobs in and out per minute and failures (from the same metrics) beside
//! the messages waiting and in flight (from the operator API, when a local
//! cloud is running) and the age of each lane's oldest message (from
//! LocalStack, which lists a queue without receiving from it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use prism_cloud::cloud::LocalInfo;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The folder of function logs (default: the running local cloud's, else `.prism/logs`).
    #[arg(long)]
    logs: Option<PathBuf>,
}

/// One metric under one set of dimension values, e.g. `JobsEnded` for `Modality=text, Status=completed`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub metric: String,
    pub dimensions: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    pub unit: String,
    pub values: Vec<f64>,
}

pub async fn run(project: &Path, args: &StatsArgs) -> anyhow::Result<()> {
    let local = std::fs::read_to_string(LocalInfo::path(project)).ok().and_then(|info| serde_json::from_str::<LocalInfo>(&info).ok());
    let dir = match &args.logs {
        Some(dir) => dir.clone(),
        None => local.as_ref().map_or_else(|| project.join(".prism/logs"), |info| PathBuf::from(&info.logs_dir)),
    };
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    let summary = summarise(lines.iter().map(String::as_str));
    if summary.is_empty() {
        println!("no metrics in {}", dir.display());
        return Ok(());
    }
    println!("{:<16} {:<48} {:>8} {:>10} {:>10} {:>10}", "metric", "dimensions", "count", "sum/p50", "p95", "max");
    for (series, values) in &summary {
        let mut sorted = values.values.clone();
        sorted.sort_by(f64::total_cmp);
        let sum: f64 = sorted.iter().sum();
        let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
        if values.unit == "Milliseconds" {
            let (p50, p95, max) = (at(0.5), at(0.95), at(1.0));
            println!("{:<16} {:<48} {:>8} {p50:>8.0}ms {p95:>8.0}ms {max:>8.0}ms", series.metric, series.dimensions, sorted.len());
        } else if series.metric == "AwsCalls" {
            // One value per invocation: its calls, as a distribution.
            let (p50, p95, max) = (at(0.5), at(0.95), at(1.0));
            println!("{:<16} {:<48} {:>8} {p50:>10} {p95:>10} {max:>10}", series.metric, series.dimensions, sorted.len());
        } else {
            println!("{:<16} {:<48} {:>8} {:>10}", series.metric, series.dimensions, sorted.len(), sum);
        }
    }
    let flows = lane_flows(&summary);
    // The queues as they are now, when the local cloud answers.
    let depths = match &local {
        Some(info) if args.logs.is_none() => live_depths(project, info).await,
        _ => BTreeMap::new(),
    };
    if flows.is_empty() && depths.is_empty() {
        return Ok(());
    }
    let minutes = span_ms(lines.iter().map(String::as_str)).map_or(1.0, |ms| (ms as f64 / 60_000.0).max(1.0 / 60.0));
    println!();
    println!("per lane, over {minutes:.1} min of logs:");
    println!("{:<16} {:>9} {:>9} {:>9} {:>8} {:>10} {:>8}", "lane", "in/min", "out/min", "failed", "waiting", "in flight", "oldest");
    let names: std::collections::BTreeSet<&String> = flows.keys().chain(depths.keys()).collect();
    for lane in names {
        let flow = flows.get(lane).copied().unwrap_or_default();
        let dash = || "-".to_owned();
        let (waiting, in_flight, oldest) = depths.get(lane).map_or((dash(), dash(), dash()), |d| {
            let oldest = d.oldest.map_or_else(dash, |age| format!("{:.0}s", age.as_secs_f64()));
            (d.waiting.to_string(), d.in_flight.to_string(), oldest)
        });
        println!(
            "{lane:<16} {:>9.1} {:>9.1} {:>9} {waiting:>8} {in_flight:>10} {oldest:>8}",
            flow.queued / minutes,
            flow.ended / minutes,
            flow.failed
        );
    }
    Ok(())
}

/// Jobs into a lane (`JobsQueued`), out of it (`JobsEnded`) and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LaneFlow {
    pub queued: f64,
    pub ended: f64,
    pub failed: f64,
}

/// The lane metrics in `summary`, by lane.
pub fn lane_flows(summary: &BTreeMap<Series, Values>) -> BTreeMap<String, LaneFlow> {
    let mut flows: BTreeMap<String, LaneFlow> = BTreeMap::new();
    for (series, values) in summary {
        let dimension = |name: &str| series.dimensions.split(',').find_map(|d| d.strip_prefix(&format!("{name}=")));
        let Some(lane) = dimension("Lane") else { continue };
        let count: f64 = values.values.iter().sum();
        let flow = flows.entry(lane.to_owned()).or_default();
        match series.metric.as_str() {
            "JobsQueued" => flow.queued += count,
            "JobsEnded" => {
                flow.ended += count;
                if dimension("Status") == Some("failed") {
                    flow.failed += count;
                }
            }
            _ => {}
        }
    }
    flows
}

/// Milliseconds from the first metric to the last.
pub fn span_ms<'a>(lines: impl Iterator<Item = &'a str>) -> Option<i64> {
    let stamps: Vec<i64> =
        lines.filter_map(emf_document).filter_map(|doc| doc.pointer("/_aws/Timestamp").and_then(Value::as_i64)).collect();
    Some(stamps.iter().max()? - stamps.iter().min()?)
}

/// A lane's queue as it is now.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LiveDepth {
    waiting: u64,
    in_flight: u64,
    /// The oldest message's age, where the emulator can tell it.
    oldest: Option<std::time::Duration>,
}

/// Each lane's messages waiting and in flight, from the operator API, and
/// its oldest message's age, from the emulator (LocalStack lists a queue's
/// messages without receiving them; on AWS, CloudWatch's
/// `ApproximateAgeOfOldestMessage` and the `OldestMessageAlarm`); none when
/// the cloud does not answer (a finished run's logs).
async fn live_depths(project: &Path, local: &LocalInfo) -> BTreeMap<String, LiveDepth> {
    let Ok(token) = super::target::issue_operator_token(project, 1) else { return BTreeMap::new() };
    let Ok(client) = prism_cloud::PrismClient::new(&local.http_url, Some(token)) else { return BTreeMap::new() };
    let lanes = match tokio::time::timeout(std::time::Duration::from_secs(5), client.lanes()).await {
        Ok(Ok(lanes)) => lanes,
        Ok(Err(e)) => {
            eprintln!("(no live queue depths: {e:#})");
            return BTreeMap::new();
        }
        Err(_) => return BTreeMap::new(),
    };
    let now = std::time::SystemTime::now();
    let depths = lanes.iter().filter_map(|l| {
        let (lane, queue_url) = (l["lane"].as_str()?.to_owned(), l["queue_url"].as_str()?.to_owned());
        let (waiting, in_flight) = (l["waiting"].as_u64()?, l["in_flight"].as_u64()?);
        Some(async move {
            let held = waiting + in_flight > 0;
            let oldest = match held {
                true => prism_cloud::emulator::oldest_message_age(&local.endpoint, &queue_url, now).await.ok().flatten(),
                false => None,
            };
            (lane, LiveDepth { waiting, in_flight, oldest })
        })
    });
    futures::future::join_all(depths).await.into_iter().collect()
}

/// The EMF document of a log line: the rest of the line from its first brace
/// (keys in any order), when it has `_aws`.
fn emf_document(line: &str) -> Option<Value> {
    let start = line.find('{').filter(|_| line.contains(r#""_aws""#))?;
    serde_json::from_str(&line[start..]).ok()
}

/// Every EMF document in `lines` (after any log prefix), by series.
pub fn summarise<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<Series, Values> {
    let mut out: BTreeMap<Series, Values> = BTreeMap::new();
    for line in lines {
        let Some(doc) = emf_document(line) else { continue };
        let Some(directives) = doc.pointer("/_aws/CloudWatchMetrics").and_then(Value::as_array) else { continue };
        for directive in directives {
            let names = directive.pointer("/Dimensions/0").and_then(Value::as_array).cloned().unwrap_or_default();
            let dimensions = names
                .iter()
                .filter_map(Value::as_str)
                .map(|name| format!("{name}={}", doc.get(name).and_then(Value::as_str).unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(",");
            for metric in directive.get("Metrics").and_then(Value::as_array).into_iter().flatten() {
                let Some(name) = metric.get("Name").and_then(Value::as_str) else { continue };
                let Some(value) = doc.get(name).and_then(Value::as_f64) else { continue };
                let entry = out.entry(Series { metric: name.to_owned(), dimensions: dimensions.clone() }).or_default();
                entry.unit = metric.get("Unit").and_then(Value::as_str).unwrap_or("None").to_owned();
                entry.values.push(value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_shared::runtime::metrics::{Metric, line};

    #[test]
    fn lanes_count_jobs_in_out_and_failed_over_the_span_of_the_logs() {
        let queued = |ms| line(&[("Lane", "text-bulk")], &[Metric::count("JobsQueued")], ms);
        let ended =
            |status, ms| line(&[("Modality", "text"), ("Status", status), ("Lane", "text-bulk")], &[Metric::count("JobsEnded")], ms);
        let logs = [queued(0), queued(1_000), ended("completed", 60_000), ended("failed", 120_000), queued(5)];
        let summary = summarise(logs.iter().map(String::as_str));
        let flows = lane_flows(&summary);
        assert_eq!(flows["text-bulk"], LaneFlow { queued: 3.0, ended: 2.0, failed: 1.0 });
        assert_eq!(span_ms(logs.iter().map(String::as_str)), Some(120_000));
    }

    #[test]
    fn emf_lines_are_found_behind_log_prefixes_and_summed_per_series() {
        let text =
            line(&[("Modality", "text"), ("Status", "completed")], &[Metric::count("JobsEnded"), Metric::millis("ProcessingMs", 40.0)], 1);
        let other = line(&[("Queue", "prism-dev-classify")], &[Metric::count("DeadLetters")], 2);
        let logs = [
            format!("process-text | {text}"),
            format!("process-text | {text}"),
            "process-text | INFO job started".to_owned(),
            format!("dead-letter | {other}"),
            r#"api | {"_aws": not json"#.to_owned(),
        ];
        let summary = summarise(logs.iter().map(String::as_str));
        let ended = &summary[&Series { metric: "JobsEnded".into(), dimensions: "Modality=text,Status=completed".into() }];
        assert_eq!((ended.unit.as_str(), ended.values.as_slice()), ("Count", &[1.0, 1.0][..]));
        let time = &summary[&Series { metric: "ProcessingMs".into(), dimensions: "Modality=text,Status=completed".into() }];
        assert_eq!((time.unit.as_str(), time.values.len()), ("Milliseconds", 2));
        assert_eq!(summary[&Series { metric: "DeadLetters".into(), dimensions: "Queue=prism-dev-classify".into() }].values, [1.0]);
        assert_eq!(summary.len(), 3);
    }
}

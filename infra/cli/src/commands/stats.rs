//! `prism stats`: the metrics the functions wrote (CloudWatch Embedded Metric
//! Format lines in their logs) summed as CloudWatch would: counts added up,
//! durations as percentiles, per metric and dimension values.

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

pub fn run(project: &Path, args: &StatsArgs) -> anyhow::Result<()> {
    let dir = match &args.logs {
        Some(dir) => dir.clone(),
        None => std::fs::read_to_string(LocalInfo::path(project))
            .ok()
            .and_then(|info| serde_json::from_str::<LocalInfo>(&info).ok())
            .map_or_else(|| project.join(".prism/logs"), |info| PathBuf::from(info.logs_dir)),
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
        if values.unit == "Milliseconds" {
            let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
            println!(
                "{:<16} {:<48} {:>8} {:>8.0}ms {:>8.0}ms {:>8.0}ms",
                series.metric,
                series.dimensions,
                sorted.len(),
                at(0.5),
                at(0.95),
                at(1.0)
            );
        } else {
            println!("{:<16} {:<48} {:>8} {:>10}", series.metric, series.dimensions, sorted.len(), sum);
        }
    }
    Ok(())
}

/// Every EMF document in `lines` (after any log prefix), by series.
pub fn summarise<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<Series, Values> {
    let mut out: BTreeMap<Series, Values> = BTreeMap::new();
    for line in lines {
        // The document is the rest of the line from its first brace (keys in any order).
        let Some(start) = line.find('{').filter(|_| line.contains(r#""_aws""#)) else { continue };
        let Ok(doc) = serde_json::from_str::<Value>(&line[start..]) else { continue };
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

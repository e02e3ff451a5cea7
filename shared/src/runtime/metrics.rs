//! Metrics in CloudWatch's Embedded Metric Format: one JSON line on stdout
//! per measurement, which CloudWatch Logs turns into metrics by itself, so a
//! metric costs the invocation no API call and no latency. Locally the same
//! lines land in the functions' logs, where `prism stats` sums them.

use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every Prism metric.
pub const NAMESPACE: &str = "Prism";

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
pub enum Unit {
    Count,
    Milliseconds,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric<'a> {
    pub name: &'a str,
    pub unit: Unit,
    pub value: f64,
}

impl<'a> Metric<'a> {
    pub fn count(name: &'a str) -> Self {
        Self { name, unit: Unit::Count, value: 1.0 }
    }

    /// A count of `value` things at once (the AWS calls of one invocation).
    pub fn counted(name: &'a str, value: f64) -> Self {
        Self { name, unit: Unit::Count, value }
    }

    pub fn millis(name: &'a str, value: f64) -> Self {
        Self { name, unit: Unit::Milliseconds, value }
    }
}

/// One EMF line: `metrics` under one set of `dimensions` (keep their values
/// few: modality, status, a failure code, a queue — never an id), and rolled
/// up under no dimension at all, which is what the template's alarms watch.
pub fn line(dimensions: &[(&str, &str)], metrics: &[Metric<'_>], timestamp_ms: i64) -> String {
    let mut record = Map::new();
    record.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions.iter().map(|(name, _)| *name).collect::<Vec<_>>(), Vec::<&str>::new()],
                "Metrics": metrics.iter().map(|m| json!({"Name": m.name, "Unit": <&str>::from(m.unit)})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (name, value) in dimensions {
        record.insert((*name).into(), Value::String((*value).into()));
    }
    for metric in metrics {
        record.insert(metric.name.into(), json!(metric.value));
    }
    Value::Object(record).to_string()
}

/// Writes one EMF line to stdout, where Lambda sends it to CloudWatch Logs.
pub fn emit(dimensions: &[(&str, &str)], metrics: &[Metric<'_>]) {
    println!("{}", line(dimensions, metrics, chrono::Utc::now().timestamp_millis()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_an_emf_document_naming_its_dimensions_and_metrics() {
        let line =
            line(&[("Modality", "text"), ("Status", "completed")], &[Metric::count("JobsEnded"), Metric::millis("ProcessingMs", 12.5)], 7);
        let doc: Value = serde_json::from_str(&line).expect("JSON");
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(doc["_aws"]["Timestamp"], 7);
        assert_eq!(directive["Namespace"], "Prism");
        assert_eq!(directive["Dimensions"], json!([["Modality", "Status"], []]));
        assert_eq!(directive["Metrics"], json!([{"Name": "JobsEnded", "Unit": "Count"}, {"Name": "ProcessingMs", "Unit": "Milliseconds"}]));
        assert_eq!((doc["Modality"].as_str(), doc["Status"].as_str()), (Some("text"), Some("completed")));
        assert_eq!((doc["JobsEnded"].as_f64(), doc["ProcessingMs"].as_f64()), (Some(1.0), Some(12.5)));
        assert!(!line.contains('\n'), "one line per document");
    }
}

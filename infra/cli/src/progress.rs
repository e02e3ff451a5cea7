//! Progress bars on a terminal, one per job (`indicatif`, which draws
//! nothing when stderr is not a terminal).

use std::collections::BTreeMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use prism_shared::JobId;
use serde_json::Value;

#[derive(Debug)]
pub struct ProgressView {
    bars: BTreeMap<JobId, ProgressBar>,
}

impl ProgressView {
    /// Bars for `ids`, drawn on stderr only when `wanted`.
    pub fn new(ids: &[JobId], wanted: bool) -> Self {
        let target = if wanted { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template("{prefix}  [{bar:20}] {pos:>3}%  {msg}")
            .unwrap_or_else(|e| unreachable!("a fixed template parses: {e}"))
            .progress_chars("#>-");
        let bars = ids
            .iter()
            .map(|id| {
                let bar = multi.add(ProgressBar::new(100).with_style(style.clone()).with_prefix(id.to_string()).with_message("queued"));
                (id.clone(), bar)
            })
            .collect();
        Self { bars }
    }

    /// Shows job `id`'s event.
    pub fn update(&mut self, id: &JobId, event: &Value) {
        let Some(bar) = self.bars.get(id) else { return };
        let payload = &event["payload"];
        let phase = payload["phase"].as_str().unwrap_or_default();
        match event["event_type"].as_str().unwrap_or_default() {
            "job.progress" => {
                bar.set_position(payload["progress"].as_u64().unwrap_or(0).min(100));
                let eta = payload["eta_s"].as_f64().map(|s| format!("  ETA {s:.0}s")).unwrap_or_default();
                let counts = &payload["counts"];
                let counted = match (counts["processed"].as_u64(), counts["total"].as_u64()) {
                    (Some(done), Some(total)) => format!(" {done}/{total}"),
                    _ => String::new(),
                };
                bar.set_message(format!("{phase}{counted}{eta}"));
            }
            "job.started" => bar.set_message(phase.to_owned()),
            "job.run_started" => bar.set_message(format!("workflow {}", payload["run"]["workflow"].as_str().unwrap_or_default())),
            "job.run_advanced" => {
                let changes = payload["changes"].as_array().map(Vec::as_slice).unwrap_or_default();
                let said: Vec<String> = changes
                    .iter()
                    .map(|c| format!("{} {}", c["name"].as_str().unwrap_or_default(), c["status"].as_str().unwrap_or_default()))
                    .collect();
                bar.set_message(said.join(", "));
            }
            // The job's log is `prism logs`'s; the bar keeps its phase.
            "job.log" => {}
            "job.completed" => bar.finish_with_message("completed"),
            "job.failed" => bar.abandon_with_message(format!("failed: {}", payload["message"].as_str().unwrap_or_default())),
            "job.cancelled" => bar.abandon_with_message("cancelled"),
            other => bar.set_message(other.trim_start_matches("job.").to_owned()),
        }
    }
}

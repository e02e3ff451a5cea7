//! A job's phases: the named stretches of a processor's work ("decoding",
//! "extracting text", "writing outputs"), each with its own counts where the
//! processor has them (pages, keyframes, samples), derived from the job's
//! events by [`crate::Job::apply`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, IntoStaticStr};

/// How many phases a job keeps; a job that retries many times keeps its
/// latest ones (the item's size stays bounded).
pub const MAX_PHASES: usize = 24;

/// Work done out of work known: pages, keyframes, decoded seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub processed: u64,
    pub total: u64,
}

impl Counts {
    pub fn new(processed: u64, total: u64) -> Self {
        Self { processed: processed.min(total), total }
    }

    /// 0..=100; a phase with nothing to do is done.
    pub fn percent(self) -> u8 {
        self.processed.saturating_mul(100).checked_div(self.total).map_or(100, |p| p.min(100) as u8)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Display, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PhaseStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// One phase of a job, as its snapshot shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseState {
    pub name: String,
    pub status: PhaseStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_count: Option<u64>,
    /// From the counts when the phase has them; 100 once it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl PhaseState {
    fn start(name: &str, now: DateTime<Utc>) -> Self {
        Self {
            name: name.to_owned(),
            status: PhaseStatus::Running,
            processed_count: None,
            total_count: None,
            percent: None,
            started_at: now,
            finished_at: None,
        }
    }

    fn finish(&mut self, status: PhaseStatus, now: DateTime<Utc>) {
        self.status = status;
        self.finished_at = Some(now);
        if status == PhaseStatus::Completed {
            // A phase that moved on did all it had to.
            self.processed_count = self.total_count.or(self.processed_count);
            self.percent = Some(100);
        }
    }

    fn count(&mut self, counts: Counts) {
        self.processed_count = Some(counts.processed);
        self.total_count = Some(counts.total);
        self.percent = Some(counts.percent());
    }

    /// Seconds the rest of this phase should take at the rate it has gone so
    /// far; `None` until it has counted something.
    pub fn remaining_s(&self, now: DateTime<Utc>) -> Option<f64> {
        let (done, total) = (self.processed_count?, self.total_count?);
        let elapsed = (now - self.started_at).num_milliseconds() as f64 / 1e3;
        (done > 0 && elapsed > 0.0).then(|| (total - done.min(total)) as f64 * elapsed / done as f64)
    }
}

/// A job's phases, oldest first; the last is the one running while the job is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phases(Vec<PhaseState>);

impl Phases {
    pub fn all(&self) -> &[PhaseState] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn current(&self) -> Option<&PhaseState> {
        self.0.last().filter(|p| p.status == PhaseStatus::Running)
    }

    /// The job is in `name` now (with `counts` when given): the running phase
    /// of another name completes and `name` starts.
    pub fn enter(&mut self, name: &str, counts: Option<Counts>, now: DateTime<Utc>) {
        match self.0.last_mut() {
            Some(last) if last.name == name && last.status == PhaseStatus::Running => {}
            last => {
                if let Some(last) = last.filter(|p| p.status == PhaseStatus::Running) {
                    last.finish(PhaseStatus::Completed, now);
                }
                if self.0.len() == MAX_PHASES {
                    self.0.remove(0);
                }
                self.0.push(PhaseState::start(name, now));
            }
        }
        if let (Some(counts), Some(current)) = (counts, self.0.last_mut()) {
            current.count(counts);
        }
    }

    /// The job ended: its running phase ends with it.
    pub fn end(&mut self, status: PhaseStatus, now: DateTime<Utc>) {
        if let Some(last) = self.0.last_mut().filter(|p| p.status == PhaseStatus::Running) {
            last.finish(status, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn entering_a_new_phase_completes_the_running_one_with_its_counts_filled() {
        let t0 = Utc::now();
        let mut phases = Phases::default();
        phases.enter("extracting text", Some(Counts::new(3, 10)), t0);
        phases.enter("extracting text", Some(Counts::new(7, 10)), t0 + Duration::seconds(1));
        phases.enter("writing text", None, t0 + Duration::seconds(2));
        let [first, second] = phases.all() else { panic!("two phases: {phases:?}") };
        assert_eq!(
            (first.status, first.processed_count, first.total_count, first.percent),
            (PhaseStatus::Completed, Some(10), Some(10), Some(100))
        );
        assert_eq!(first.finished_at, Some(t0 + Duration::seconds(2)));
        assert_eq!((second.status, second.percent), (PhaseStatus::Running, None));
        phases.end(PhaseStatus::Failed, t0 + Duration::seconds(3));
        assert_eq!(phases.all()[1].status, PhaseStatus::Failed);
        assert!(phases.current().is_none());
    }

    #[test]
    fn the_remaining_time_follows_the_phase_rate() {
        let t0 = Utc::now();
        let mut phases = Phases::default();
        phases.enter("pages", Some(Counts::new(0, 8)), t0);
        assert_eq!(phases.current().and_then(|p| p.remaining_s(t0 + Duration::seconds(1))), None, "nothing counted yet");
        phases.enter("pages", Some(Counts::new(2, 8)), t0 + Duration::seconds(1));
        let remaining = phases.current().and_then(|p| p.remaining_s(t0 + Duration::seconds(1))).expect("a rate");
        assert!((remaining - 3.0).abs() < 1e-9, "6 pages at 2 pages/s: {remaining}");
    }

    #[test]
    fn a_job_keeps_at_most_its_latest_phases() {
        let mut phases = Phases::default();
        for i in 0..MAX_PHASES + 5 {
            phases.enter(&format!("p{i}"), None, Utc::now());
        }
        assert_eq!(phases.all().len(), MAX_PHASES);
        assert_eq!(phases.all().last().map(|p| p.name.as_str()), Some(format!("p{}", MAX_PHASES + 4).as_str()));
    }
}

//! Calibrating the classifier's first estimates from finished jobs.
//!
//! The classifier guesses a job's processing time from its modality and
//! size with fixed throughputs ([`crate::content::sniff::estimate_seconds`]);
//! how fast processing really is depends on the deployment (memory sizes,
//! the inputs people send). Each completed job adds what it took and what
//! the uncalibrated guess said to its modality's totals for the day; the
//! classifier scales its guesses by the ratio of the last week's totals.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::content::sniff::estimate_seconds;
use crate::domain::job::Modality;

/// Jobs of a modality it takes before its estimates are corrected: one
/// odd job is not a trend.
pub const MIN_JOBS: u64 = 3;
/// The days of finished jobs a calibration learns from, today included.
pub const WINDOW_DAYS: u64 = 7;
/// Whether `day`'s totals count in the calibration of `today`: the last
/// [`WINDOW_DAYS`] days, today included.
pub fn in_window(day: chrono::NaiveDate, today: chrono::NaiveDate) -> bool {
    today.checked_sub_days(chrono::Days::new(WINDOW_DAYS - 1)).is_none_or(|first| day >= first) && day <= today
}

/// How far a correction may scale the uncalibrated guess, either way.
const MAX_FACTOR: f64 = 20.0;

/// What a modality's finished jobs took against their uncalibrated estimates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EstimateTotals {
    pub estimated_s: f64,
    pub actual_s: f64,
    pub jobs: u64,
}

impl EstimateTotals {
    /// One finished job: its size's uncalibrated estimate and what it took.
    pub fn one(estimated_s: f64, actual_s: f64) -> Self {
        Self { estimated_s, actual_s, jobs: 1 }
    }

    pub fn add(&mut self, other: &Self) {
        self.estimated_s += other.estimated_s;
        self.actual_s += other.actual_s;
        self.jobs += other.jobs;
    }
}

/// The correction of each modality's estimates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Calibration {
    totals: HashMap<Modality, EstimateTotals>,
}

impl Calibration {
    /// Sums days' totals (the store's items of the window).
    pub fn from_totals(days: impl IntoIterator<Item = (Modality, EstimateTotals)>) -> Self {
        let mut totals: HashMap<Modality, EstimateTotals> = HashMap::new();
        for (modality, day) in days {
            totals.entry(modality).or_default().add(&day);
        }
        Self { totals }
    }

    /// What the modality's guesses are scaled by: its finished jobs' time
    /// over their guesses', once it has [`MIN_JOBS`]; 1 before.
    pub fn factor(&self, modality: Modality) -> f64 {
        match self.totals.get(&modality) {
            Some(t) if t.jobs >= MIN_JOBS && t.estimated_s > 0.0 && t.actual_s.is_finite() => {
                (t.actual_s / t.estimated_s).clamp(1.0 / MAX_FACTOR, MAX_FACTOR)
            }
            _ => 1.0,
        }
    }

    /// The calibrated estimate for `size` bytes of `modality`.
    pub fn estimate(&self, modality: Modality, size: u64) -> f64 {
        estimate_seconds(modality, size) * self.factor(modality)
    }

    pub fn totals(&self, modality: Modality) -> EstimateTotals {
        self.totals.get(&modality).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_scale_by_the_weeks_actual_over_guessed_once_enough_jobs_finished() {
        let guess = estimate_seconds(Modality::Video, 10_000_000);
        let slow = |jobs| {
            Calibration::from_totals([(
                Modality::Video,
                EstimateTotals { estimated_s: 2.0 * jobs as f64, actual_s: 6.0 * jobs as f64, jobs },
            )])
        };
        assert_eq!(slow(MIN_JOBS - 1).estimate(Modality::Video, 10_000_000), guess, "too few jobs to correct");
        assert!((slow(MIN_JOBS).estimate(Modality::Video, 10_000_000) - 3.0 * guess).abs() < 1e-9);
        assert_eq!(slow(10).factor(Modality::Audio), 1.0, "each modality learns alone");
    }

    #[test]
    fn days_add_up_and_a_correction_is_bounded() {
        let day = EstimateTotals { estimated_s: 1.0, actual_s: 0.5, jobs: 2 };
        let week = Calibration::from_totals([(Modality::Text, day), (Modality::Text, day)]);
        assert_eq!(week.totals(Modality::Text), EstimateTotals { estimated_s: 2.0, actual_s: 1.0, jobs: 4 });
        assert_eq!(week.factor(Modality::Text), 0.5);
        let absurd = Calibration::from_totals([(Modality::Image, EstimateTotals { estimated_s: 0.001, actual_s: 900.0, jobs: 5 })]);
        assert_eq!(absurd.factor(Modality::Image), MAX_FACTOR);
    }
}

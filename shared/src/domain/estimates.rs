//! Calibrating the classifier's first estimates from finished jobs.
//!
//! The classifier guesses a job's processing time from its modality and
//! size with fixed throughputs ([`crate::content::sniff::estimate_seconds`]);
//! how fast processing really is depends on the deployment (memory sizes,
//! the inputs people send). Each completed job adds what it took and what
//! the uncalibrated guess said to its modality's totals for the day (with
//! the sums a least-squares line needs); the classifier corrects its
//! guesses by the last week's line of time taken against guess: a fixed
//! part (probing, starting ffmpeg) plus a rate. Where no line can be drawn
//! (every guess alike, or one that says a larger input is quicker), the
//! ratio of the totals scales it instead.

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
    /// Σ estimate², for the line.
    #[serde(default)]
    pub estimated_sq: f64,
    /// Σ estimate × time taken, for the line.
    #[serde(default)]
    pub cross: f64,
    /// The jobs that brought the two sums above (totals written before
    /// they were kept lack them, and draw no line).
    #[serde(default)]
    pub paired: u64,
}

impl EstimateTotals {
    /// One finished job: its size's uncalibrated estimate and what it took.
    pub fn one(estimated_s: f64, actual_s: f64) -> Self {
        Self { estimated_s, actual_s, jobs: 1, estimated_sq: estimated_s * estimated_s, cross: estimated_s * actual_s, paired: 1 }
    }

    /// Adds `other`'s sums to these.
    pub fn add(&mut self, other: &Self) {
        self.estimated_s += other.estimated_s;
        self.actual_s += other.actual_s;
        self.jobs += other.jobs;
        self.estimated_sq += other.estimated_sq;
        self.cross += other.cross;
        self.paired += other.paired;
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

    /// The least-squares line `fixed + rate × guess` through the
    /// modality's finished jobs (time taken against uncalibrated guess),
    /// once it has [`MIN_JOBS`] whose guesses differ; `None` where it says
    /// a larger input takes less time or less than nothing.
    pub fn line(&self, modality: Modality) -> Option<(f64, f64)> {
        let t = self.totals.get(&modality)?;
        if t.paired < MIN_JOBS || t.paired != t.jobs {
            return None;
        }
        let n = t.paired as f64;
        let spread = n * t.estimated_sq - t.estimated_s * t.estimated_s;
        // Guesses all alike (to rounding): a line through one point is any line.
        if spread <= 1e-6 * t.estimated_s * t.estimated_s {
            return None;
        }
        let rate = (n * t.cross - t.estimated_s * t.actual_s) / spread;
        let fixed = (t.actual_s - rate * t.estimated_s) / n;
        (rate.is_finite() && fixed.is_finite() && rate >= 0.0 && fixed >= 0.0).then_some((fixed, rate))
    }

    /// The calibrated estimate for `size` bytes of `modality`: on the
    /// modality's line where it has one, else its guess scaled by
    /// [`Self::factor`]; never more than [`MAX_FACTOR`] from the guess.
    pub fn estimate(&self, modality: Modality, size: u64) -> f64 {
        let guess = estimate_seconds(modality, size);
        match self.line(modality) {
            Some((fixed, rate)) => (fixed + rate * guess).clamp(guess / MAX_FACTOR, guess * MAX_FACTOR),
            None => guess * self.factor(modality),
        }
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
                EstimateTotals { estimated_s: 2.0 * jobs as f64, actual_s: 6.0 * jobs as f64, jobs, ..EstimateTotals::default() },
            )])
        };
        assert_eq!(slow(MIN_JOBS - 1).estimate(Modality::Video, 10_000_000), guess, "too few jobs to correct");
        assert!((slow(MIN_JOBS).estimate(Modality::Video, 10_000_000) - 3.0 * guess).abs() < 1e-9);
        assert_eq!(slow(10).factor(Modality::Audio), 1.0, "each modality learns alone");
    }

    #[test]
    fn a_fixed_part_and_a_rate_are_learned_where_time_does_not_grow_with_size() {
        // Jobs that take 8 s plus half their guess: a ratio cannot fit both sizes.
        let took = |guess: f64| 8.0 + 0.5 * guess;
        let week = Calibration::from_totals([4.0, 40.0, 4.0, 40.0].map(|guess| (Modality::Video, EstimateTotals::one(guess, took(guess)))));
        let (fixed, rate) = week.line(Modality::Video).expect("a line");
        assert!((fixed - 8.0).abs() < 1e-6 && (rate - 0.5).abs() < 1e-9, "{fixed} + {rate}x");
        for size in [1_000_000, 50_000_000] {
            let guess = estimate_seconds(Modality::Video, size);
            let expected = took(guess).clamp(guess / MAX_FACTOR, guess * MAX_FACTOR);
            assert!((week.estimate(Modality::Video, size) - expected).abs() < 1e-6, "{size} bytes");
        }
        // One size only: no line, the ratio.
        let alike = Calibration::from_totals([4.0, 4.0, 4.0].map(|g| (Modality::Video, EstimateTotals::one(g, 12.0))));
        assert_eq!(alike.line(Modality::Video), None);
        assert_eq!(alike.factor(Modality::Video), 3.0);
        // A larger input that took less: no line either.
        let odd =
            Calibration::from_totals([(4.0, 30.0), (40.0, 10.0), (4.0, 30.0)].map(|(g, t)| (Modality::Video, EstimateTotals::one(g, t))));
        assert_eq!(odd.line(Modality::Video), None);
        // Totals from before the sums were kept draw no line.
        let old = EstimateTotals { estimated_s: 44.0, actual_s: 38.0, jobs: 2, ..EstimateTotals::default() };
        let mixed = Calibration::from_totals([(Modality::Video, old), (Modality::Video, EstimateTotals::one(4.0, 10.0))]);
        assert_eq!(mixed.line(Modality::Video), None);
    }

    #[test]
    fn days_add_up_and_a_correction_is_bounded() {
        let day = EstimateTotals { estimated_s: 1.0, actual_s: 0.5, jobs: 2, ..EstimateTotals::default() };
        let week = Calibration::from_totals([(Modality::Text, day), (Modality::Text, day)]);
        assert_eq!(week.totals(Modality::Text), EstimateTotals { estimated_s: 2.0, actual_s: 1.0, jobs: 4, ..EstimateTotals::default() });
        assert_eq!(week.factor(Modality::Text), 0.5);
        let absurd = Calibration::from_totals([(
            Modality::Image,
            EstimateTotals { estimated_s: 0.001, actual_s: 900.0, jobs: 5, ..EstimateTotals::default() },
        )]);
        assert_eq!(absurd.factor(Modality::Image), MAX_FACTOR);
    }
}

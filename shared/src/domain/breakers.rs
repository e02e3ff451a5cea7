//! Circuit breakers: one per downstream dependency a processor needs beyond
//! the job table (S3 for every input and output, ffmpeg for audio and video),
//! shared by every instance of every function through the table.
//!
//! - `closed`: work runs. Failures the dependency caused are counted in a
//!   window; [`BreakerPolicy::threshold`] of them within
//!   [`BreakerPolicy::window`] open the breaker.
//! - `open`: work that needs the dependency is put back on its queue with a
//!   delay until the cool-down ends, as a new message, so an outage spends
//!   none of its retries (and none of it lands in a DLQ).
//! - `half_open`: the cool-down is over; exactly one caller (the one whose
//!   conditional write moved the breaker here) probes the dependency while
//!   the others keep waiting. The probe's success closes the breaker; its
//!   failure opens it again, for twice the cool-down, up to 15 minutes (the
//!   longest SQS delays a message).
//!
//! Pure: the transitions take the time and return the state to store, which
//! the caller writes only if nobody else changed the breaker first.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ports::error::ConfigError;
use crate::runtime::config;

/// What a breaker protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, strum::Display, strum::EnumString)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Dependency {
    /// The uploads bucket: every processor reads its input and writes its outputs there.
    S3,
    /// The media tool audio and video run.
    Ffmpeg,
}

impl Dependency {
    pub const ALL: [Self; 2] = [Self::S3, Self::Ffmpeg];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failures within `window` that open a closed breaker.
    pub threshold: u32,
    pub window: Duration,
    /// How long a breaker first stays open; doubled each time a probe fails.
    pub cool_down: Duration,
    /// How long a probe may take before another caller may probe instead.
    pub probe_lease: Duration,
}

/// The longest an open breaker waits: the longest delay SQS gives a message.
pub const MAX_COOL_DOWN: Duration = Duration::from_secs(900);

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self { threshold: 5, window: Duration::from_secs(60), cool_down: Duration::from_secs(30), probe_lease: Duration::from_secs(120) }
    }
}

impl BreakerPolicy {
    /// `BREAKER_THRESHOLD`, `BREAKER_WINDOW_SECONDS`, `BREAKER_COOL_DOWN_SECONDS`,
    /// `BREAKER_PROBE_LEASE_SECONDS`, each defaulting as above.
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            threshold: config::parsed_or("BREAKER_THRESHOLD", d.threshold)?.max(1),
            window: Duration::from_secs(config::parsed_or("BREAKER_WINDOW_SECONDS", d.window.as_secs())?),
            cool_down: Duration::from_secs(config::parsed_or("BREAKER_COOL_DOWN_SECONDS", d.cool_down.as_secs())?).min(MAX_COOL_DOWN),
            probe_lease: Duration::from_secs(config::parsed_or("BREAKER_PROBE_LEASE_SECONDS", d.probe_lease.as_secs())?),
        })
    }

    /// How long work waits on a breaker another caller is probing.
    pub fn probing_wait(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        after(now, self.cool_down.min(self.probe_lease))
    }

    /// The cool-down after the breaker opened `times` times in a row.
    fn cool_down(&self, times: u32) -> Duration {
        self.cool_down.saturating_mul(2u32.saturating_pow(times.min(16))).min(MAX_COOL_DOWN)
    }
}

/// One dependency's breaker as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    pub dependency: Dependency,
    pub state: BreakerState,
    /// Failures counted since `window_start` (closed).
    pub failures: u32,
    pub window_start: Option<DateTime<Utc>>,
    /// Open: when a probe may go; half-open: when the running probe's lease ends.
    pub until: Option<DateTime<Utc>>,
    /// How many times it opened since it was last closed.
    pub opened: u32,
    /// The failure that last counted, for operators.
    pub last_error: Option<String>,
    pub changed_at: Option<DateTime<Utc>>,
    /// Bumped by every change: a change is stored only over the version it was made from.
    pub version: u64,
}

/// What a caller about to use a dependency may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// Go, as the one probe of a half-open breaker: report how it went.
    Probe,
    /// Put the work back until then.
    Wait {
        until: DateTime<Utc>,
    },
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(1))
}

impl Breaker {
    pub fn closed(dependency: Dependency) -> Self {
        Self {
            dependency,
            state: BreakerState::Closed,
            failures: 0,
            window_start: None,
            until: None,
            opened: 0,
            last_error: None,
            changed_at: None,
            version: 0,
        }
    }

    fn next(&self, now: DateTime<Utc>) -> Self {
        Self { changed_at: Some(now), version: self.version + 1, ..self.clone() }
    }

    /// Whether a caller may use the dependency now, and the state to store
    /// when admitting it changed the breaker (a probe taking its lease).
    pub fn admit(&self, now: DateTime<Utc>, policy: &BreakerPolicy) -> (Admission, Option<Self>) {
        match (self.state, self.until) {
            (BreakerState::Closed, _) => (Admission::Go, None),
            (BreakerState::Open, Some(until)) if now < until => (Admission::Wait { until }, None),
            // A probe is out: look again within a cool-down, not at the end of
            // its lease (a probe usually answers in well under a second).
            (BreakerState::HalfOpen, Some(until)) if now < until => (Admission::Wait { until: until.min(policy.probing_wait(now)) }, None),
            // Cool-down over, or the last probe's lease ran out (its caller died): probe.
            (BreakerState::Open | BreakerState::HalfOpen, _) => {
                let mut probing = self.next(now);
                probing.state = BreakerState::HalfOpen;
                probing.until = Some(after(now, policy.probe_lease));
                (Admission::Probe, Some(probing))
            }
        }
    }

    /// A failure the dependency caused: the state to store, if it changes.
    pub fn failed(&self, now: DateTime<Utc>, policy: &BreakerPolicy, error: &str) -> Option<Self> {
        let mut next = self.next(now);
        next.last_error = Some(error.chars().take(300).collect());
        match self.state {
            BreakerState::Closed => {
                let fresh = self.window_start.is_none_or(|start| now >= after(start, policy.window));
                (next.failures, next.window_start) = if fresh { (1, Some(now)) } else { (self.failures + 1, self.window_start) };
                if next.failures >= policy.threshold {
                    next.open(now, policy);
                }
            }
            // The probe failed: open again, for longer.
            BreakerState::HalfOpen => next.open(now, policy),
            // Work admitted before it opened, failing late: nothing new.
            BreakerState::Open => return None,
        }
        Some(next)
    }

    fn open(&mut self, now: DateTime<Utc>, policy: &BreakerPolicy) {
        self.until = Some(after(now, policy.cool_down(self.opened)));
        self.state = BreakerState::Open;
        self.opened += 1;
        self.failures = 0;
        self.window_start = None;
    }

    /// The probe succeeded: closed again. Successes while closed write nothing.
    pub fn succeeded(&self, now: DateTime<Utc>) -> Option<Self> {
        (self.state == BreakerState::HalfOpen).then(|| Self {
            version: self.version + 1,
            changed_at: Some(now),
            ..Self::closed(self.dependency)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            threshold: 3,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(30),
            probe_lease: Duration::from_secs(10),
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    /// `dependency`'s breaker opened by failures at seconds 0, 1 and 2.
    fn opened(dependency: Dependency, p: &BreakerPolicy) -> Breaker {
        (0..3).fold(Breaker::closed(dependency), |b, s| b.failed(at(s), p, "down").expect("counted"))
    }

    #[test]
    fn failures_within_the_window_open_it_and_scattered_ones_do_not() {
        let p = policy();
        let mut b = Breaker::closed(Dependency::S3);
        for s in [0, 70, 140] {
            b = b.failed(at(s), &p, "503").expect("counted");
        }
        assert_eq!((b.state, b.failures), (BreakerState::Closed, 1), "each failure fell in a new window");
        b = b.failed(at(150), &p, "503").expect("counted");
        b = b.failed(at(160), &p, "503").expect("counted");
        assert_eq!((b.state, b.until, b.last_error.as_deref()), (BreakerState::Open, Some(at(190)), Some("503")));
        assert_eq!(b.admit(at(189), &p), (Admission::Wait { until: at(190) }, None), "work waits out the cool-down");
        assert_eq!(b.failed(at(170), &p, "late"), None, "a straggler's failure changes nothing");
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_and_its_outcome_closes_or_reopens_it_for_longer() {
        let p = policy();
        let b = opened(Dependency::Ffmpeg, &p);
        assert_eq!((b.state, b.until), (BreakerState::Open, Some(at(32))));
        let (admission, probing) = b.admit(at(40), &p);
        let probing = probing.expect("the probe takes its lease");
        assert_eq!((admission, probing.state, probing.version), (Admission::Probe, BreakerState::HalfOpen, b.version + 1));
        assert_eq!(probing.admit(at(41), &p), (Admission::Wait { until: at(50) }, None), "one probe at a time");
        let slow_probe = BreakerPolicy { probe_lease: Duration::from_secs(300), ..p };
        let (_, long_lease) = b.admit(at(40), &slow_probe);
        assert_eq!(
            long_lease.expect("probe").admit(at(41), &slow_probe).0,
            Admission::Wait { until: at(71) },
            "within a cool-down, not the lease"
        );
        let reopened = probing.failed(at(42), &p, "still down").expect("reopened");
        assert_eq!((reopened.state, reopened.until), (BreakerState::Open, Some(at(42 + 60))), "twice the cool-down");
        let (_, probing) = reopened.admit(at(102), &p);
        let closed = probing.expect("probe").succeeded(at(103)).expect("closed");
        assert_eq!((closed.state, closed.opened, closed.failures), (BreakerState::Closed, 0, 0));
        assert_eq!(closed.succeeded(at(104)), None, "successes while closed write nothing");
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced_after_its_lease() {
        let p = policy();
        let (_, probing) = opened(Dependency::S3, &p).admit(at(40), &p);
        let (admission, again) = probing.expect("probe").admit(at(51), &p);
        assert_eq!(admission, Admission::Probe);
        assert!(again.is_some());
    }

    #[test]
    fn the_cool_down_doubles_up_to_what_sqs_can_delay() {
        let p = policy();
        assert_eq!(p.cool_down(0), Duration::from_secs(30));
        assert_eq!(p.cool_down(3), Duration::from_secs(240));
        assert_eq!(p.cool_down(40), MAX_COOL_DOWN);
    }
}

//! Schedules: jobs (or workflow runs) that start later, once or again and
//! again, on an object already stored.
//!
//! A schedule is one item in the table with the time of its next firing;
//! the `schedules` function, ticked by EventBridge Scheduler, fires the due
//! ones. Each firing's job id is derived from the schedule and its slot (the
//! time it was due), so a slot fired twice starts one job.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::job::{JobId, Priority};
use crate::domain::uri::S3Uri;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Once, at this time.
    At(DateTime<Utc>),
    /// From `start`, every `every_s` seconds (`rate(...)` in the API).
    Every { start: DateTime<Utc>, every_s: u64 },
}

/// What each firing starts: a job on `source`, as `POST /v1/jobs` with a source would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledJob {
    pub source: S3Uri,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub owner: String,
    pub name: String,
    pub when: When,
    pub job: ScheduledJob,
    /// The next slot to fire; `None` once a one-time schedule has fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    /// How many slots have fired.
    pub fired: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<JobId>,
    pub created_at: DateTime<Utc>,
}

impl Schedule {
    pub fn new(owner: String, name: String, when: When, job: ScheduledJob, now: DateTime<Utc>) -> Self {
        let next_at = Some(match &when {
            When::At(at) => *at,
            When::Every { start, .. } => *start,
        });
        Self { owner, name, when, job, next_at, fired: 0, last_job: None, created_at: now }
    }

    /// The job a firing of `slot` starts: the same for every firing of that slot.
    pub fn job_id(&self, slot: DateTime<Utc>) -> JobId {
        let slot = slot.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        JobId::for_request(&self.owner, &format!("schedule\n{}\n{slot}", self.name))
    }

    /// The schedule after `slot` fired with `job`: the next slot after
    /// `now` (slots missed while nothing fired are skipped, not made up in a
    /// burst), or none for a one-time schedule.
    pub fn fired_at(&self, slot: DateTime<Utc>, job: JobId, now: DateTime<Utc>) -> Self {
        let next_at = match &self.when {
            When::At(_) => None,
            When::Every { every_s, .. } => {
                let every = Duration::seconds(i64::try_from(*every_s).unwrap_or(i64::MAX).max(1));
                let behind = ((now - slot).num_milliseconds() / every.num_milliseconds()).max(0);
                Some(slot + every * i32::try_from(behind + 1).unwrap_or(i32::MAX))
            }
        };
        Self { next_at, fired: self.fired + 1, last_job: Some(job), ..self.clone() }
    }
}

/// Why a schedule request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("`{0}` is not a rate: use rate(N second|seconds|minute|minutes|hour|hours|day|days)")]
    BadRate(String),
    #[error("a schedule name is 1 to 64 letters, digits, `-` and `_`")]
    BadName,
}

/// Reads `rate(N unit)` as seconds.
pub fn parse_rate(text: &str) -> Result<u64, ScheduleError> {
    let bad = || ScheduleError::BadRate(text.to_owned());
    let inner = text.trim().strip_prefix("rate(").and_then(|r| r.strip_suffix(')')).ok_or_else(bad)?;
    let (n, unit) = inner.trim().split_once(' ').ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit_s = match unit.trim() {
        "second" | "seconds" => 1,
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit_s) {
        Some(0) | None => Err(bad()),
        Some(s) => Ok(s),
    }
}

pub fn check_name(name: &str) -> Result<(), ScheduleError> {
    let ok = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(ScheduleError::BadName) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(when: When) -> Schedule {
        let job = ScheduledJob {
            source: "s3://b/uploads/o/report.csv".parse().expect("uri"),
            priority: Priority::Normal,
            workflow: None,
            metadata: Default::default(),
        };
        Schedule::new("o".into(), "nightly".into(), when, job, Utc::now())
    }

    #[test]
    fn rates_read_as_seconds_and_nonsense_is_refused() {
        assert_eq!(parse_rate("rate(5 minutes)"), Ok(300));
        assert_eq!(parse_rate("rate(1 second)"), Ok(1));
        assert_eq!(parse_rate("rate(2 days)"), Ok(172_800));
        for bad in ["rate(0 minutes)", "rate(5 fortnights)", "cron(0 3 * * ? *)", "rate(-1 seconds)", "rate(99999999999999999 days)"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_slot_always_gives_the_same_job_and_different_slots_different_ones() {
        let s = schedule(When::At(Utc::now()));
        let slot = Utc::now();
        assert_eq!(s.job_id(slot), s.job_id(slot));
        assert_ne!(s.job_id(slot), s.job_id(slot + Duration::seconds(1)));
    }

    #[test]
    fn a_one_time_schedule_fires_once_and_a_recurring_one_skips_missed_slots() {
        let at = Utc::now();
        let once = schedule(When::At(at));
        let fired = once.fired_at(at, once.job_id(at), at);
        assert_eq!((fired.next_at, fired.fired), (None, 1));

        let start = Utc::now();
        let every = schedule(When::Every { start, every_s: 10 });
        // Fired 35 s late: the next slot is the first one still ahead, not three in a row.
        let next = every.fired_at(start, every.job_id(start), start + Duration::seconds(35));
        assert_eq!(next.next_at, Some(start + Duration::seconds(40)));
        let on_time = every.fired_at(start, every.job_id(start), start);
        assert_eq!(on_time.next_at, Some(start + Duration::seconds(10)));
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(check_name("nightly-report_2").is_ok());
        assert!(check_name("").is_err() && check_name("a/b").is_err() && check_name(&"x".repeat(65)).is_err());
    }
}

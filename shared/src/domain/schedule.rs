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
    /// At the times an EventBridge Scheduler `cron(...)` expression names,
    /// read as wall-clock times in `timezone` (IANA), so that 09:00 stays
    /// 09:00 across daylight-saving changes.
    Cron { expression: String, timezone: String },
}

impl When {
    /// The first slot at or after `now` (`None`: a cron expression that
    /// names no time to come, or one that no longer parses).
    pub fn first(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            When::At(at) => Some(*at),
            When::Every { start, .. } => Some(*start),
            When::Cron { expression, timezone } => {
                CronSchedule::parse(expression, timezone).ok()?.next_after(now - Duration::milliseconds(1))
            }
        }
    }
}

/// A checked `cron(minutes hours day-of-month month day-of-week year)`
/// expression in a time zone, with EventBridge Scheduler's reading: days of
/// the week 1–7 from Sunday (or `SUN`–`SAT`), one of the two day fields `?`,
/// and `L`, `W` and `#` as Quartz has them.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
}

impl CronSchedule {
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let bad = |why: &str| ScheduleError::BadCron(expression.to_owned(), why.to_owned());
        let inner = expression.trim().strip_prefix("cron(").and_then(|r| r.strip_suffix(')')).ok_or_else(|| bad("write cron(...)"))?;
        let fields: Vec<&str> = inner.split_whitespace().collect();
        let [_, _, day_of_month, _, day_of_week, _] = fields[..] else {
            return Err(bad("six fields: minutes hours day-of-month month day-of-week year"));
        };
        if (day_of_month == "?") == (day_of_week == "?") {
            return Err(bad("one of day-of-month and day-of-week is ?, and only one"));
        }
        let zone: chrono_tz::Tz = timezone.parse().map_err(|_| ScheduleError::BadTimezone(timezone.to_owned()))?;
        // croner's fields: seconds first, then the same six; Quartz weekdays.
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .year(croner::parser::Year::Required)
            .alternative_weekdays(true)
            .build();
        let cron = parser.parse(&format!("0 {}", fields.join(" "))).map_err(|e| bad(&e.to_string()))?;
        Ok(Self { cron, zone })
    }

    /// The first time after `after` the expression names, as UTC.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Slots are whole seconds: croner keeps the fraction it is given.
        let after = chrono::DurationRound::duration_trunc(after, Duration::seconds(1)).ok()?;
        self.cron.find_next_occurrence(&after.with_timezone(&self.zone), false).ok().map(|t| t.with_timezone(&Utc))
    }
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
        let next_at = when.first(now);
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
            When::Cron { expression, timezone } => {
                CronSchedule::parse(expression, timezone).ok().and_then(|cron| cron.next_after(slot.max(now)))
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
    #[error("`{0}` is not a cron expression: {1}")]
    BadCron(String, String),
    #[error("`{0}` is not an IANA time zone (e.g. Europe/London, America/New_York, UTC)")]
    BadTimezone(String),
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

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    #[test]
    fn cron_times_are_wall_clock_times_in_their_zone_across_daylight_saving() {
        let weekdays = CronSchedule::parse("cron(0 9 ? * MON-FRI *)", "Europe/London").expect("valid");
        // GMT before the clocks go forward on Sunday 28 March 2027, BST after.
        assert_eq!(weekdays.next_after(utc("2027-03-21T12:00:00.250Z")), Some(utc("2027-03-22T09:00:00Z")), "Monday, GMT, on the second");
        assert_eq!(weekdays.next_after(utc("2027-03-26T12:00:00Z")), Some(utc("2027-03-29T08:00:00Z")), "next Monday, BST");
        assert_eq!(weekdays.next_after(utc("2027-03-29T08:00:00Z")), Some(utc("2027-03-30T08:00:00Z")), "strictly after");
        assert_eq!(weekdays.next_after(utc("2027-03-29T07:59:59.999Z")), Some(utc("2027-03-29T08:00:00Z")));
    }

    #[test]
    fn cron_reads_eventbridge_fields_weekdays_from_sunday_last_days_and_years() {
        let at = |expression: &str, after: &str| CronSchedule::parse(expression, "UTC").expect(expression).next_after(utc(after));
        // Day 2 is Monday (1 is Sunday), as in EventBridge and Quartz.
        assert_eq!(at("cron(30 6 ? * 2 *)", "2027-01-03T00:00:00Z"), Some(utc("2027-01-04T06:30:00Z")));
        assert_eq!(at("cron(0 12 L * ? *)", "2027-02-10T00:00:00Z"), Some(utc("2027-02-28T12:00:00Z")), "the month's last day");
        assert_eq!(at("cron(0 0 1 1 ? 2028)", "2027-06-01T00:00:00Z"), Some(utc("2028-01-01T00:00:00Z")), "the year field");
        assert_eq!(at("cron(0 0 1 1 ? 2020)", "2027-06-01T00:00:00Z"), None, "a past year names nothing to come");
    }

    #[test]
    fn cron_refuses_what_eventbridge_refuses_with_the_reason() {
        for (expression, zone) in [
            ("cron(0 9 * * MON *)", "UTC"),
            ("cron(0 9 ? * ? *)", "UTC"),
            ("cron(0 9 * * ?)", "UTC"),
            ("rate(5 minutes)", "UTC"),
            ("cron(61 9 ? * MON *)", "UTC"),
        ] {
            assert!(matches!(CronSchedule::parse(expression, zone), Err(ScheduleError::BadCron(..))), "{expression}");
        }
        assert_eq!(
            CronSchedule::parse("cron(0 9 ? * MON *)", "Mars/Olympus").err(),
            Some(ScheduleError::BadTimezone("Mars/Olympus".into()))
        );
    }

    #[test]
    fn a_cron_schedule_fires_at_its_next_time_and_skips_the_ones_it_missed() {
        let when = When::Cron { expression: "cron(0 9 ? * * *)".into(), timezone: "UTC".into() };
        let monday = utc("2027-01-04T09:00:00Z");
        let s = Schedule { next_at: Some(monday), ..schedule(when) };
        // Fired on Wednesday at 10:00, two days late: the next is Thursday's, not Tuesday's.
        let next = s.fired_at(monday, s.job_id(monday), utc("2027-01-06T10:00:00Z"));
        assert_eq!(next.next_at, Some(utc("2027-01-07T09:00:00Z")));
        assert_eq!(s.fired_at(monday, s.job_id(monday), monday).next_at, Some(utc("2027-01-05T09:00:00Z")));
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(check_name("nightly-report_2").is_ok());
        assert!(check_name("").is_err() && check_name("a/b").is_err() && check_name(&"x".repeat(65)).is_err());
    }
}

//! Per-owner quotas: how many jobs an owner may have queued or processing at
//! once, and how many bytes it may submit per UTC day. The stack's
//! parameters give the defaults; an operator may set either for one owner
//! (stored in the table). Zero means no limit.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// An owner's own quotas; a field left out takes the stack's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerQuota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_jobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_day: Option<u64>,
}

/// The quotas in force for an owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Quotas {
    /// 0: no limit.
    pub max_active_jobs: u32,
    /// 0: no limit.
    pub max_bytes_per_day: u64,
}

impl Quotas {
    /// `defaults` with what the owner's own quota sets.
    pub fn for_owner(defaults: Self, own: Option<OwnerQuota>) -> Self {
        let own = own.unwrap_or_default();
        Self {
            max_active_jobs: own.max_active_jobs.unwrap_or(defaults.max_active_jobs),
            max_bytes_per_day: own.max_bytes_per_day.unwrap_or(defaults.max_bytes_per_day),
        }
    }
}

/// The day whose bytes a submission at `now` counts against.
pub fn day_of(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive()
}

/// Seconds until the next UTC day, when a bytes quota starts over (at least 1).
pub fn seconds_to_next_day(now: DateTime<Utc>) -> u64 {
    let next = (now.date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    next.map_or(86_400, |next| (next - now).num_seconds().max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owners_own_quota_overrides_only_what_it_sets() {
        let defaults = Quotas { max_active_jobs: 1000, max_bytes_per_day: 0 };
        assert_eq!(Quotas::for_owner(defaults, None), defaults);
        let own = OwnerQuota { max_active_jobs: None, max_bytes_per_day: Some(5_000_000) };
        assert_eq!(Quotas::for_owner(defaults, Some(own)), Quotas { max_active_jobs: 1000, max_bytes_per_day: 5_000_000 });
        assert!(serde_json::from_str::<OwnerQuota>(r#"{"max_jobs": 3}"#).is_err(), "a misspelt field is refused, not ignored");
    }

    #[test]
    fn a_bytes_quota_starts_over_at_utc_midnight() {
        let late: DateTime<Utc> = "2026-11-27T23:59:30Z".parse().expect("time");
        assert_eq!(seconds_to_next_day(late), 30);
        assert_eq!(day_of(late).to_string(), "2026-11-27");
    }
}

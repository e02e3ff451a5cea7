//! Reading typed settings from the environment, failing fast at start-up.

use std::str::FromStr;

use crate::ports::error::ConfigError;

pub fn required(name: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ConfigError::Missing(name)),
    }
}

/// A setting, or `None` when unset or blank.
pub fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A setting parsed as `T`, or `default` when unset.
pub fn parsed_or<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match optional(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid { name, reason: format!("{v:?}: {e}") }),
    }
}

/// `TOKEN_SECRET` as the key that signs and checks bearer tokens.
pub fn token_key() -> Result<crate::app::auth::TokenKey, ConfigError> {
    crate::app::auth::TokenKey::new(required("TOKEN_SECRET")?.as_bytes())
        .map_err(|e| ConfigError::Invalid { name: "TOKEN_SECRET", reason: e.to_string() })
}

/// `LANES`, the lanes operators pause (see [`crate::domain::lanes`]); none when unset.
pub fn lanes() -> Result<Vec<crate::domain::lanes::LaneMapping>, ConfigError> {
    crate::domain::lanes::parse(&optional("LANES").unwrap_or_default())
        .map_err(|e| ConfigError::Invalid { name: "LANES", reason: e.to_string() })
}

/// The owners' quotas where an operator set none of their own: the stack's
/// `MaxActiveJobsPerOwner` and `MaxBytesPerDayPerOwner` (0: no limit).
pub fn quota_defaults() -> Result<crate::domain::quotas::Quotas, ConfigError> {
    Ok(crate::domain::quotas::Quotas {
        max_active_jobs: parsed_or("MAX_ACTIVE_JOBS_PER_OWNER", 1000)?,
        max_bytes_per_day: parsed_or("MAX_BYTES_PER_DAY_PER_OWNER", 0)?,
    })
}

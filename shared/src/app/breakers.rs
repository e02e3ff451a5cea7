//! The circuit breakers around a processor's work (see
//! [`crate::domain::breakers`]): asked before the work, told how it went.
//!
//! A breaker store that cannot be read or written admits the work and is
//! logged: a breaker must never become an outage of its own (the work's own
//! calls then fail, retry and dead-letter as they would without one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::breakers::{Admission, Breaker, BreakerPolicy, BreakerState, Dependency};
use crate::ports::BreakerStore;
use crate::ports::error::StoreError;
use crate::runtime::metrics::{self, Metric};

/// How long an instance trusts a breaker it read: a closed breaker costs one
/// read per this period per instance, not one per message.
const FRESH_FOR: Duration = Duration::from_secs(2);
/// Version races lost in a row before a failure is left uncounted.
const MAX_RACES: u32 = 3;

/// A [`BreakerStore`] whose reads are remembered for [`FRESH_FOR`]; a lost
/// version race forgets the breaker, so the next read is fresh.
#[derive(Debug)]
pub struct CachedBreakers {
    inner: Arc<dyn BreakerStore>,
    read: Mutex<HashMap<Dependency, (Instant, Option<Breaker>)>>,
}

impl CachedBreakers {
    pub fn new(inner: Arc<dyn BreakerStore>) -> Self {
        Self { inner, read: Mutex::default() }
    }

    fn remember(&self, dependency: Dependency, breaker: Option<Breaker>) {
        self.read.lock().unwrap_or_else(PoisonError::into_inner).insert(dependency, (Instant::now(), breaker));
    }
}

#[async_trait]
impl BreakerStore for CachedBreakers {
    async fn get(&self, dependency: Dependency) -> Result<Option<Breaker>, StoreError> {
        if let Some((at, breaker)) = self.read.lock().unwrap_or_else(PoisonError::into_inner).get(&dependency)
            && at.elapsed() < FRESH_FOR
        {
            return Ok(breaker.clone());
        }
        let breaker = self.inner.get(dependency).await?;
        self.remember(dependency, breaker.clone());
        Ok(breaker)
    }

    async fn all(&self) -> Result<Vec<Breaker>, StoreError> {
        self.inner.all().await
    }

    async fn put(&self, next: &Breaker) -> Result<bool, StoreError> {
        let stored = self.inner.put(next).await?;
        if stored {
            self.remember(next.dependency, Some(next.clone()));
        } else {
            self.read.lock().unwrap_or_else(PoisonError::into_inner).remove(&next.dependency);
        }
        Ok(stored)
    }
}

/// What the breakers of the dependencies some work uses say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Run it; report the outcome for `probes`, the breakers it probes.
    Go { probes: Vec<Dependency> },
    /// Put it back: `dependency` is unavailable until then.
    Wait { dependency: Dependency, until: DateTime<Utc> },
}

/// Asks the breaker of each dependency in `uses`, in order.
pub async fn admit(store: &dyn BreakerStore, policy: &BreakerPolicy, uses: &[Dependency]) -> Gate {
    let mut probes = Vec::new();
    for &dependency in uses {
        let now = Utc::now();
        let breaker = match store.get(dependency).await {
            Ok(breaker) => breaker.unwrap_or_else(|| Breaker::closed(dependency)),
            Err(e) => {
                tracing::warn!(%dependency, error = %e, "breaker unreadable; admitting the work");
                continue;
            }
        };
        match breaker.admit(now, policy) {
            (Admission::Go, _) => {}
            (Admission::Wait { until }, _) => return Gate::Wait { dependency, until },
            (Admission::Probe, next) => {
                let Some(next) = next else { continue };
                match store.put(&next).await {
                    Ok(true) => {
                        tracing::info!(%dependency, "breaker half-open: this work probes the dependency");
                        probes.push(dependency);
                    }
                    // Another instance took the probe first: wait for its outcome.
                    Ok(false) => return Gate::Wait { dependency, until: policy.probing_wait(now) },
                    Err(e) => tracing::warn!(%dependency, error = %e, "breaker unwritable; admitting the work"),
                }
            }
        }
    }
    Gate::Go { probes }
}

/// Counts a failure `dependency` caused; opens its breaker at the threshold.
pub async fn failed(store: &dyn BreakerStore, policy: &BreakerPolicy, dependency: Dependency, error: &str) {
    for _ in 0..MAX_RACES {
        let stored = match store.get(dependency).await {
            Ok(breaker) => breaker.unwrap_or_else(|| Breaker::closed(dependency)),
            Err(e) => return tracing::warn!(%dependency, error = %e, "breaker unreadable; failure not counted"),
        };
        let Some(next) = stored.failed(Utc::now(), policy, error) else { return };
        match store.put(&next).await {
            Ok(true) => {
                if next.state == BreakerState::Open {
                    tracing::warn!(%dependency, until = ?next.until, times = next.opened, error, "breaker opened: work needing it waits");
                    metrics::emit(&[("Dependency", &dependency.to_string())], &[Metric::count("BreakerOpened")]);
                }
                return;
            }
            Ok(false) => continue,
            Err(e) => return tracing::warn!(%dependency, error = %e, "breaker unwritable; failure not counted"),
        }
    }
    tracing::warn!(%dependency, "breaker changed under every attempt; failure not counted");
}

/// The probes succeeded: their breakers close.
pub async fn succeeded(store: &dyn BreakerStore, probes: &[Dependency]) {
    for &dependency in probes {
        let stored = match store.get(dependency).await {
            Ok(Some(breaker)) => breaker,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(%dependency, error = %e, "breaker unreadable; left half-open for the next probe");
                continue;
            }
        };
        let Some(closed) = stored.succeeded(Utc::now()) else { continue };
        match store.put(&closed).await {
            Ok(true) => tracing::info!(%dependency, "breaker closed: the probe succeeded"),
            Ok(false) => tracing::info!(%dependency, "breaker changed meanwhile; left as it is"),
            Err(e) => tracing::warn!(%dependency, error = %e, "breaker unwritable; left half-open for the next probe"),
        }
    }
}

//! The calibration of the classifier's estimates, read at most once per
//! period per instance: classifying a job costs no read (the totals move
//! slowly), while each completed job still adds its time at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::NaiveDate;

use crate::domain::estimates::{Calibration, EstimateTotals};
use crate::domain::job::Modality;
use crate::ports::EstimateStore;
use crate::ports::error::{ConfigError, StoreError};

/// How long a calibration read is used (`ESTIMATE_CALIBRATION_CACHE_SECONDS`, 300 by default).
pub fn cache_from_env() -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(crate::runtime::config::parsed_or("ESTIMATE_CALIBRATION_CACHE_SECONDS", 300)?))
}

#[derive(Debug)]
pub struct CachedEstimates {
    inner: Arc<dyn EstimateStore>,
    period: Duration,
    read: Mutex<Option<(Instant, NaiveDate, Calibration)>>,
}

impl CachedEstimates {
    pub fn new(inner: Arc<dyn EstimateStore>, period: Duration) -> Self {
        Self { inner, period, read: Mutex::default() }
    }
}

#[async_trait]
impl EstimateStore for CachedEstimates {
    async fn add(&self, modality: Modality, day: NaiveDate, job: EstimateTotals) -> Result<(), StoreError> {
        self.inner.add(modality, day, job).await
    }

    async fn calibration(&self, today: NaiveDate) -> Result<Calibration, StoreError> {
        if let Some((at, day, calibration)) = self.read.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            && at.elapsed() < self.period
            && *day == today
        {
            return Ok(calibration.clone());
        }
        let calibration = self.inner.calibration(today).await?;
        *self.read.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), today, calibration.clone()));
        Ok(calibration)
    }
}

//! Owners' quotas read at most once per period per instance: a submission
//! costs no read for a quota an operator rarely changes. A change takes
//! effect within the period; byte counts are never cached (they are the
//! quota's enforcement, one conditional write each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::NaiveDate;

use crate::domain::quotas::OwnerQuota;
use crate::ports::QuotaStore;
use crate::ports::error::StoreError;

/// Owners remembered at once; past it the cache starts over (memory stays bounded).
const MAX_OWNERS: usize = 10_000;

#[derive(Debug)]
pub struct CachedQuotas {
    inner: Arc<dyn QuotaStore>,
    period: Duration,
    read: Mutex<HashMap<String, (Instant, Option<OwnerQuota>)>>,
}

impl CachedQuotas {
    pub fn new(inner: Arc<dyn QuotaStore>, period: Duration) -> Self {
        Self { inner, period, read: Mutex::default() }
    }
}

#[async_trait]
impl QuotaStore for CachedQuotas {
    async fn quota(&self, owner: &str) -> Result<Option<OwnerQuota>, StoreError> {
        if let Some((at, quota)) = self.read.lock().unwrap_or_else(PoisonError::into_inner).get(owner)
            && at.elapsed() < self.period
        {
            return Ok(*quota);
        }
        let quota = self.inner.quota(owner).await?;
        let mut read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        if read.len() >= MAX_OWNERS {
            read.clear();
        }
        read.insert(owner.to_owned(), (Instant::now(), quota));
        Ok(quota)
    }

    async fn set_quota(&self, owner: &str, quota: &OwnerQuota) -> Result<(), StoreError> {
        self.inner.set_quota(owner, quota).await?;
        self.read.lock().unwrap_or_else(PoisonError::into_inner).remove(owner);
        Ok(())
    }

    async fn charge_bytes(&self, owner: &str, day: NaiveDate, bytes: u64, limit: u64) -> Result<bool, StoreError> {
        self.inner.charge_bytes(owner, day, bytes, limit).await
    }

    async fn bytes_used(&self, owner: &str, day: NaiveDate) -> Result<u64, StoreError> {
        self.inner.bytes_used(owner, day).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::testing::memory::MemoryQuotas;

    /// Counts the reads that reach the store.
    #[derive(Debug, Default)]
    struct Counting {
        store: MemoryQuotas,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl QuotaStore for Counting {
        async fn quota(&self, owner: &str) -> Result<Option<OwnerQuota>, StoreError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.store.quota(owner).await
        }
        async fn set_quota(&self, owner: &str, quota: &OwnerQuota) -> Result<(), StoreError> {
            self.store.set_quota(owner, quota).await
        }
        async fn charge_bytes(&self, owner: &str, day: NaiveDate, bytes: u64, limit: u64) -> Result<bool, StoreError> {
            self.store.charge_bytes(owner, day, bytes, limit).await
        }
        async fn bytes_used(&self, owner: &str, day: NaiveDate) -> Result<u64, StoreError> {
            self.store.bytes_used(owner, day).await
        }
    }

    #[tokio::test]
    async fn a_quota_is_read_once_per_period_and_again_after_it_or_a_change() {
        let counting = Arc::new(Counting::default());
        let cached = CachedQuotas::new(counting.clone(), Duration::from_millis(200));
        for _ in 0..5 {
            assert_eq!(cached.quota("alice").await.expect("read"), None);
        }
        assert_eq!(counting.reads.load(Ordering::Relaxed), 1, "one read for five submissions");
        let own = OwnerQuota { max_active_jobs: Some(3), max_bytes_per_day: None };
        cached.set_quota("alice", &own).await.expect("set");
        assert_eq!(cached.quota("alice").await.expect("read"), Some(own), "a change through the cache is seen at once");
        assert_eq!(counting.reads.load(Ordering::Relaxed), 2);
        tokio::time::sleep(Duration::from_millis(250)).await;
        cached.quota("alice").await.expect("read");
        assert_eq!(counting.reads.load(Ordering::Relaxed), 3, "read again once the period is over");
    }
}

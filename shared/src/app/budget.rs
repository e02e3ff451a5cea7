//! A budget that concurrent work shares by size: bytes of input held, pixels
//! being decoded. A function's `MemorySize` is sized for one input at its
//! limit; a budget of that limit lets many small inputs run at once and a
//! large one alone, so the peak stays that of one input at the limit.

use tokio::sync::{Semaphore, SemaphorePermit};

/// How finely a budget is divided (a semaphore's permits).
const SHARES: u32 = 1024;

/// A fair budget of `total` units: work that needs more than what is free
/// waits for it, and work that arrives after it waits behind it.
#[derive(Debug)]
pub struct Budget {
    total: u64,
    shares: Semaphore,
}

/// A part of a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Share<'a> {
    _permit: Option<SemaphorePermit<'a>>,
}

impl Budget {
    pub fn new(total: u64) -> Self {
        Self { total: total.max(1), shares: Semaphore::new(SHARES as usize) }
    }

    /// Waits until `amount` fits beside what is taken, and takes it. An
    /// amount over the whole budget takes all of it, so it runs alone; none
    /// takes the smallest share.
    pub async fn take(&self, amount: u64) -> Share<'_> {
        let shares = (u128::from(amount) * u128::from(SHARES)).div_ceil(u128::from(self.total)).clamp(1, u128::from(SHARES));
        // The semaphore is never closed, so the permit always comes.
        Share { _permit: self.shares.acquire_many(shares as u32).await.ok() }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    /// The most of `amounts` held at once when each takes its share for a moment.
    async fn most_held(budget: u64, amounts: &[u64]) -> u64 {
        let budget = Budget::new(budget);
        let (held, most) = (AtomicU64::new(0), AtomicU64::new(0));
        let (budget, held, most) = (&budget, &held, &most);
        futures::stream::iter(amounts)
            .for_each_concurrent(None, |&amount| async move {
                let _share = budget.take(amount).await;
                most.fetch_max(held.fetch_add(amount, Ordering::SeqCst) + amount, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                held.fetch_sub(amount, Ordering::SeqCst);
            })
            .await;
        most.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn small_amounts_share_the_budget_and_one_over_it_runs_alone() {
        assert_eq!(most_held(1000, &[100; 5]).await, 500, "all five fit");
        assert_eq!(most_held(1000, &[400; 5]).await, 800, "two of 400 fit, three do not");
        assert_eq!(most_held(1000, &[100, 5000, 100]).await, 5000, "the large one is held alone");
    }
}

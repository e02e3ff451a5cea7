//! Lambda's shutdown phase. A runtime that registered an extension gets
//! `SIGTERM` before its instance is stopped, and 500 ms (with an internal
//! extension) to exit; `lambda_runtime`'s graceful shutdown registers a
//! no-op one and runs [`on_sigterm`] on the signal, then exits.
//!
//! Lambda stops only idle instances, so nothing is in flight then; a local
//! cloud stops the same way. A `SIGTERM` from anywhere else can arrive
//! mid-invocation: the hook gives that invocation what is left of the
//! budget to answer, and one that cannot is released by the exit (its
//! messages return to their queue after the visibility timeout, as after a
//! crash; the handlers are idempotent).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt as _;
use lambda_runtime::LambdaInvocation;
use lambda_runtime::tower::{Layer, Service};

/// How long the hook waits for an invocation in flight: most of Lambda's
/// 500 ms, leaving time to exit.
pub const IN_FLIGHT_BUDGET: Duration = Duration::from_millis(400);

/// Invocations being handled by this process.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The shutdown hook: waits for an invocation in flight, then says how the
/// stop went.
pub async fn on_sigterm() {
    let running = IN_FLIGHT.load(Ordering::Relaxed);
    let finished = wait_until_idle(&IN_FLIGHT, IN_FLIGHT_BUDGET).await;
    match (running, finished) {
        (0, _) => tracing::info!("SIGTERM: stopping, no invocation in flight"),
        (_, true) => tracing::info!(running, "SIGTERM: stopping after the invocation in flight finished"),
        (_, false) => tracing::warn!(running, "SIGTERM: stopping with an invocation unfinished; its work returns to its source"),
    }
}

/// Whether `in_flight` came to zero within `budget`.
pub async fn wait_until_idle(in_flight: &AtomicUsize, budget: Duration) -> bool {
    let ends = tokio::time::Instant::now() + budget;
    loop {
        if in_flight.load(Ordering::Relaxed) == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= ends {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Counts the invocations in flight for [`on_sigterm`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackInFlight;

impl<S> Layer<S> for TrackInFlight {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracked { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
}

fn ended<T>(_: &T) {
    IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
}

impl<S> Service<LambdaInvocation> for Tracked<S>
where
    S: Service<LambdaInvocation>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Inspect<S::Future, fn(&Result<S::Response, S::Error>)>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        self.inner.call(invocation).inspect(ended as fn(&Result<S::Response, S::Error>))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hook_waits_for_an_invocation_in_flight_but_not_past_its_budget() {
        let in_flight: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(1)));
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        let started = std::time::Instant::now();
        assert!(wait_until_idle(in_flight, Duration::from_secs(2)).await, "it finished within the budget");
        assert!(started.elapsed() >= Duration::from_millis(40), "it waited for the invocation: {:?}", started.elapsed());

        in_flight.store(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        assert!(!wait_until_idle(in_flight, Duration::from_millis(100)).await, "still running");
        assert!(started.elapsed() < Duration::from_secs(1), "gave up at the budget: {:?}", started.elapsed());
    }
}

//! The local cloud's one backoff: delays doubling from a first one up to a
//! cap, from backon. No jitter: one machine's emulators have no herd of
//! clients to spread out, and fixed delays keep the event sources' timing
//! the same from run to run.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// `first`, `2 × first`, … capped at `max`, without end.
pub fn delays(first: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    // backon multiplies in floating point (400 ms comes out 400.000006 ms): whole milliseconds are plenty.
    let whole_ms = |d: Duration| Duration::from_millis((d.as_secs_f64() * 1000.0).round() as u64);
    ExponentialBuilder::default().with_min_delay(first).with_max_delay(max).without_max_times().build().map(whole_ms)
}

/// [`delays`], each with up to as much again added at random, so clients
/// refused together do not all retry together.
pub fn jittered_delays(first: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default().with_min_delay(first).with_max_delay(max).with_jitter().without_max_times().build()
}

/// The delay before retry number `attempt` (counted from 1).
pub fn before_retry(attempt: u32, first: Duration, max: Duration) -> Duration {
    // Past 32 doublings every delay is the cap anyway.
    delays(first, max).nth(attempt.saturating_sub(1).min(32) as usize).unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_up_to_the_cap() {
        let ms = Duration::from_millis;
        assert_eq!(delays(ms(100), ms(500)).take(5).collect::<Vec<_>>(), vec![ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(before_retry(1, ms(100), ms(500)), ms(100));
        assert_eq!(before_retry(3, ms(100), ms(500)), ms(400));
        assert_eq!(before_retry(u32::MAX, ms(100), ms(500)), ms(500));
    }
}

//! Schedules, fired as EventBridge Scheduler fires them: the emulators store
//! schedules but never fire one, so the local cloud invokes each scheduled
//! function itself, once per period, with the schedule's input. A firing
//! that fails is logged and the next one comes at its time.

use tokio_util::sync::CancellationToken;

use crate::provision::ScheduleSource;
use crate::runtime::FunctionHandle;

/// Fires `schedule` on `function` every period until shutdown.
pub fn start(schedule: ScheduleSource, function: FunctionHandle, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let payload = bytes::Bytes::from(schedule.input.to_string());
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + schedule.every, schedule.every);
        // A firing that overruns its period is not made up for in a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(e) = function.invoke(payload.clone()).await {
                tracing::warn!(function = %function.name, schedule = %schedule.name, error = %e, "scheduled invocation failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::provision::rate;

    #[test]
    fn rate_expressions_read_as_periods() {
        assert_eq!(rate("rate(1 minute)").expect("rate"), Duration::from_secs(60));
        assert_eq!(rate("rate(5 minutes)").expect("rate"), Duration::from_secs(300));
        assert_eq!(rate("rate(2 seconds)").expect("rate"), Duration::from_secs(2));
        assert_eq!(rate("rate(1 day)").expect("rate"), Duration::from_secs(86_400));
        assert!(rate("cron(0 12 * * ? *)").is_err(), "not fired locally, so refused");
        assert!(rate("rate(0 minutes)").is_err());
        assert!(rate("rate(1 fortnight)").is_err());
    }
}

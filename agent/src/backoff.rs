//! Waiting between retries and polls: exponential backoff with jitter, as plain functions.

use std::time::{Duration, Instant};

/// Exponential backoff: `initial`, doubled per attempt, capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait before retry `attempt` (0 for the first retry). `unit` in [0, 1) picks a point
    /// in the upper half of the step, so that a fleet restarted at once does not retry at once.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let step = self
            .initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        step.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

/// A poll interval spread by ±10 %.
pub fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(0.9 + 0.2 * unit.clamp(0.0, 1.0))
}

/// When the next reconciling poll is due after a round that ended at `last` (`unit` picks its
/// jitter): `poll` later while the event stream holds (`events_down_since` none); while it does
/// not, `fallback` after the later of the round and the loss, so that a fleet losing its streams
/// at once (a server restart) does not poll at once.
pub fn poll_due(
    last: Instant,
    unit: f64,
    poll: Duration,
    fallback: Duration,
    events_down_since: Option<Instant>,
) -> Instant {
    let normal = last + jittered(poll, unit);
    match events_down_since {
        None => normal,
        Some(down) => normal.min(last.max(down) + jittered(fallback, unit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_poll_only_while_the_stream_is_down() {
        let t0 = Instant::now();
        let (hour, five) = (Duration::from_secs(3600), Duration::from_secs(300));
        assert_eq!(poll_due(t0, 0.5, hour, five, None), t0 + hour);
        // Down since before the round: five minutes after the round.
        assert_eq!(
            poll_due(t0 + five, 0.5, hour, five, Some(t0)),
            t0 + 2 * five
        );
        // Lost 40 minutes after the round: five minutes after the loss, not at once.
        let lost = t0 + Duration::from_secs(2400);
        assert_eq!(poll_due(t0, 0.5, hour, five, Some(lost)), lost + five);
        // Lost 58 minutes in: the hourly poll comes first.
        let late = t0 + Duration::from_secs(3480);
        assert_eq!(poll_due(t0, 0.5, hour, five, Some(late)), t0 + hour);
        // The jitter spreads both by ±10 %.
        assert_eq!(
            poll_due(t0, 0.0, hour, five, None),
            t0 + Duration::from_secs(3240)
        );
        assert_eq!(
            poll_due(t0, 1.0, hour, five, Some(t0)),
            t0 + Duration::from_secs(330)
        );
    }

    #[test]
    fn grows_and_caps() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        assert_eq!(b.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(2, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn poll_jitter_stays_within_ten_percent() {
        let i = Duration::from_secs(300);
        assert_eq!(jittered(i, 0.0), Duration::from_secs(270));
        assert_eq!(jittered(i, 1.0), Duration::from_secs(330));
        assert_eq!(jittered(i, 0.5), i);
    }
}

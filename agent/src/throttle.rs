//! At most one log line per interval for a warning a server can trigger at will (an endless
//! stream of unreadable events must not flood the journal), with the count of those left out.

use std::time::Duration;

use tokio::time::Instant;

/// Says when a repeated warning may be logged again.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    left_out: u64,
}

impl Throttle {
    pub const fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            left_out: 0,
        }
    }

    /// `Some(n)` when the warning is to be logged now, `n` being how many were left out since
    /// the last one; `None` when it is left out.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.left_out += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.left_out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_with_the_count_left_out() {
        let mut t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.allow(t0), Some(0));
        for s in 1..=10 {
            assert_eq!(t.allow(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(t.allow(t0 + Duration::from_secs(60)), Some(10));
        assert_eq!(t.allow(t0 + Duration::from_secs(61)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(200)), Some(1));
    }
}

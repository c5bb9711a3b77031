//! When to reboot into an installed update (`[reboot]`): `immediate`, in a maintenance `window`
//! (local time), or `manual` (an operator runs `cip-update-agent reboot`); an optional consent
//! command can defer it. The decision is a plain function of the policy and the local time; the
//! consent and reboot commands run at the edge.

use std::time::Duration;

pub use crate::config::Window;
use crate::config::{Reboot, RebootPolicy};

/// What to do about a pending reboot now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Reboot now (after the consent command, if any, agrees).
    Now,
    /// Not yet: ask again after this long.
    Later(Duration),
    /// Only an operator reboots (`cip-update-agent reboot`).
    Manual,
}

/// The decision at local time (`day`, 0 = Monday; `minute` of the day).
pub fn decide(policy: RebootPolicy, window: Option<&Window>, day: usize, minute: u32) -> Decision {
    match (policy, window) {
        (RebootPolicy::Immediate, _) => Decision::Now,
        (RebootPolicy::Manual, _) => Decision::Manual,
        (RebootPolicy::Window, None) => Decision::Now,
        (RebootPolicy::Window, Some(w)) => match w.minutes_until_open(day, minute) {
            0 => Decision::Now,
            m => Decision::Later(Duration::from_secs(u64::from(m) * 60)),
        },
    }
}

/// The local weekday (0 = Monday) and minute of the day, from the system's time zone (TZ, or
/// /etc/localtime).
pub fn local_now() -> (usize, u32) {
    let now = jiff::ZonedDateTime::now();
    (
        now.weekday().to_monday_zero_offset() as usize,
        now.hour() as u32 * 60 + now.minute() as u32,
    )
}

/// The decision for the configuration, now.
pub fn decide_now(c: &Reboot) -> Decision {
    let window = c.window.as_deref().and_then(|w| Window::parse(w).ok());
    let (day, minute) = local_now();
    decide(c.policy, window.as_ref(), day, minute)
}

/// A short description of the policy, for messages.
pub fn describe(c: &Reboot) -> String {
    match c.policy {
        RebootPolicy::Immediate => "reboot now".into(),
        RebootPolicy::Window => format!(
            "reboot in the window {}",
            c.window.as_deref().unwrap_or("(none)")
        ),
        RebootPolicy::Manual => "reboot by an operator (cip-update-agent reboot)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minutes in a day.
    const DAY_MIN: u32 = 24 * 60;

    #[test]
    fn the_wait_until_the_window() {
        let w = Window::parse("Sat 02:00-04:00").unwrap();
        // Friday 23:00 -> Saturday 02:00 is 3 hours away.
        assert_eq!(w.minutes_until_open(4, 23 * 60), 180);
        assert_eq!(w.minutes_until_open(5, 150), 0);
        // Saturday 04:00 (closed) -> next Saturday 02:00.
        assert_eq!(w.minutes_until_open(5, 240), 7 * DAY_MIN - 120);
        assert_eq!(
            decide(RebootPolicy::Window, Some(&w), 4, 23 * 60),
            Decision::Later(Duration::from_secs(3 * 3600))
        );
        assert_eq!(
            decide(RebootPolicy::Window, Some(&w), 5, 130),
            Decision::Now
        );
        assert_eq!(
            decide(RebootPolicy::Immediate, Some(&w), 4, 0),
            Decision::Now
        );
        assert_eq!(decide(RebootPolicy::Manual, None, 5, 130), Decision::Manual);
    }
}

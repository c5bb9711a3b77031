//! Following the event stream of this device's jobs for as long as the caller runs: the part
//! both the update loop and the onboarding loop need.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{JobEvent, WfxClient, WfxError};
use crate::backoff::Backoff;

/// Shortest time between two wakes caused by events: a burst (or a flood) of events leads to
/// one reconcile per window, not one per event.
pub const EVENT_COALESCE: Duration = Duration::from_secs(1);

/// A stream that stayed open this long was a working one: the backoff starts over after it. One
/// closed sooner (a server that accepts and hangs up) counts as a failure.
const STREAM_LIVED: Duration = Duration::from_secs(30);

/// Whether the event stream is held, for the loop that polls: since when it is not (from the
/// start until it first opens), and a notice when that changes (the poll's due time moves).
#[derive(Debug)]
pub struct StreamHealth {
    down_since: Mutex<Option<std::time::Instant>>,
    changed: Arc<Notify>,
}

impl Default for StreamHealth {
    fn default() -> Self {
        StreamHealth {
            down_since: Mutex::new(Some(std::time::Instant::now())),
            changed: Arc::default(),
        }
    }
}

impl StreamHealth {
    /// Since when the stream is not held; `None` while it is.
    pub fn down_since(&self) -> Option<std::time::Instant> {
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notified when the stream is lost or held again.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    fn set(&self, up: bool) {
        let mut d = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        let was_up = d.is_none();
        *d = if up {
            None
        } else {
            Some(d.unwrap_or_else(std::time::Instant::now))
        };
        if was_up != up {
            self.changed.notify_one();
        }
    }
}

/// Follows the event stream: wakes `wake` after every (re)connect (events are not guaranteed,
/// so a reconnect means a reconcile) and after events, at most once per [`EVENT_COALESCE`]
/// (events within a window wake once at its end); `on_event` sees every event at once and
/// says whether it wakes (`false`: an echo of the caller's own doing).
/// `on_error` hears why the stream could not be opened or broke off. Reconnects with backoff and
/// jitter, the backoff starting over after a stream that lived [`STREAM_LIVED`]. Keeps `health`.
/// Never returns.
pub async fn follow_events(
    wfx: WfxClient,
    wake: Arc<Notify>,
    health: Arc<StreamHealth>,
    mut on_event: impl FnMut(&JobEvent) -> bool,
    on_error: impl Fn(&WfxError),
) {
    let backoff = Backoff::default();
    let mut failures = 0u32;
    loop {
        match wfx.events().await {
            Ok(mut s) => {
                let opened = Instant::now();
                health.set(true);
                wake.notify_one();
                let mut woken = Instant::now();
                let mut pending = false;
                loop {
                    let ev = if pending {
                        tokio::select! {
                            ev = s.next() => ev,
                            () = tokio::time::sleep_until(woken + EVENT_COALESCE) => {
                                wake.notify_one();
                                woken = Instant::now();
                                pending = false;
                                continue;
                            }
                        }
                    } else {
                        s.next().await
                    };
                    match ev {
                        Some(Ok(ev)) => {
                            if !on_event(&ev) {
                                continue;
                            }
                            let now = Instant::now();
                            if window_over(woken, now) {
                                wake.notify_one();
                                woken = now;
                            } else {
                                pending = true;
                            }
                        }
                        Some(Err(e)) => {
                            on_error(&e);
                            break;
                        }
                        None => break,
                    }
                }
                health.set(false);
                if pending {
                    wake.notify_one();
                }
                if opened.elapsed() >= STREAM_LIVED {
                    failures = 0;
                }
            }
            Err(e) => on_error(&e),
        }
        failures += 1;
        tokio::time::sleep(backoff.delay(failures.saturating_sub(1), fastrand::f64())).await;
    }
}

/// Whether an event at `now` may wake at once: the last wake was a whole window ago.
fn window_over(woken: Instant, now: Instant) -> bool {
    now.saturating_duration_since(woken) >= EVENT_COALESCE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_until_opened_and_since_the_first_loss() {
        let h = StreamHealth::default();
        let start = h.down_since().expect("down until opened");
        h.set(false);
        assert_eq!(h.down_since(), Some(start), "a second loss keeps the first");
        h.set(true);
        assert_eq!(h.down_since(), None);
        h.set(false);
        assert!(h.down_since().unwrap() >= start);
    }

    #[test]
    fn one_wake_per_window() {
        let t0 = Instant::now();
        assert!(!window_over(t0, t0));
        assert!(!window_over(t0, t0 + EVENT_COALESCE / 2));
        assert!(window_over(t0, t0 + EVENT_COALESCE));
        // A clock that seems to go back (it does not, but) never wakes early.
        assert!(!window_over(t0 + EVENT_COALESCE, t0));
    }
}

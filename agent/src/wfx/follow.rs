//! Following the event stream of this device's jobs for as long as the caller runs: the part
//! both the update loop and the onboarding loop need.

use std::sync::Arc;

use tokio::sync::Notify;

use super::backoff::Backoff;
use super::{JobEvent, WfxClient, WfxError};

/// Follows the event stream: wakes `wake` after every (re)connect (events are not guaranteed,
/// so a reconnect means a reconcile) and after every event, which `on_event` sees first;
/// `on_error` hears why the stream could not be opened or broke off. Reconnects with backoff and
/// jitter, the backoff starting over after a stream that opened. Never returns.
pub async fn follow_events(
    wfx: WfxClient,
    wake: Arc<Notify>,
    mut on_event: impl FnMut(&JobEvent),
    on_error: impl Fn(&WfxError),
) {
    let backoff = Backoff::default();
    let mut failures = 0u32;
    loop {
        match wfx.events().await {
            Ok(mut s) => {
                failures = 0;
                wake.notify_one();
                while let Some(ev) = s.next().await {
                    match ev {
                        Ok(ev) => {
                            on_event(&ev);
                            wake.notify_one();
                        }
                        Err(e) => {
                            on_error(&e);
                            break;
                        }
                    }
                }
            }
            Err(e) => on_error(&e),
        }
        failures += 1;
        tokio::time::sleep(backoff.delay(failures.saturating_sub(1), fastrand::f64())).await;
    }
}

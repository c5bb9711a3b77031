//! The stop request of a service: SIGINT or SIGTERM. Shared by the operator tool (`serve`) and
//! the agent (which depends on this crate), so that both stop the same way.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on SIGINT or SIGTERM.
///
/// If the handlers cannot be installed it never resolves: the signals' default action (exit)
/// then applies, and an install in flight still fails at SWUpdate when its socket closes.
pub async fn interrupted() {
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut i), Ok(mut t)) => {
            tokio::select! {
                _ = i.recv() => {}
                _ = t.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

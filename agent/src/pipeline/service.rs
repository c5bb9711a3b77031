//! The service around a job source, the same for every source: READY for systemd, the
//! watchdog, STATUS=, rounds of the source woken by its events, its poll interval or the
//! reboot policy (none before the source's [`JobSource::not_before`]), and STOPPING at SIGTERM.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Pipeline;

/// Where update jobs come from (wfx, a TUF repository), driven by [`run`].
// (The agent runs on a current-thread runtime: no `Send` bound is needed on these futures.)
#[allow(async_fn_in_trait)]
pub trait JobSource {
    /// The pipeline the source drives.
    fn pipeline(&mut self) -> &mut Pipeline;
    /// How the last update ended, from the source's records: shown while idle from the start.
    fn last_outcome(&self) -> Option<crate::report::Outcome>;
    /// Whether an update is in hand (then `idle` is not said at start).
    fn busy(&self) -> bool;
    /// At start, before the network: an update whose slot booted is judged from the
    /// bootloader and the source's records alone.
    async fn settle_at_start(&mut self);
    /// One round: find work and drive it until it has to wait.
    async fn round(&mut self);
    /// When the next round is due, after one that ended at `last`, when nothing wakes the
    /// source earlier (`unit` in [0, 1) picks the jitter). Asked again at every beat: the due
    /// time may move (the event stream lost, a shorter poll then).
    fn poll_due(&self, last: Instant, unit: f64) -> Instant;
    /// No round before this (an update waiting with backoff, e.g. for SWUpdate): the next
    /// round is then, its events and its poll do not wake it sooner. Asked again at every
    /// wake, so a source may lift it (the waiting update withdrawn).
    fn not_before(&self) -> Option<Instant> {
        None
    }
    /// Starts what wakes the source between polls (an event stream), if it has any.
    fn start_events(&mut self, _wake: Arc<Notify>) {}
    /// Notified when [`JobSource::poll_due`] may have moved without a round (the event stream
    /// lost or back): the wait is measured again, no round is made for it.
    fn poll_moved(&self) -> Option<Arc<Notify>> {
        None
    }
    /// Stops it.
    fn stop_events(&mut self) {}
}

/// Runs `source` until `stop` resolves. SIGTERM stops at once, even mid-step: every step is
/// recorded before it is reported, so stopping at any await is the power cut the records are
/// made for.
pub async fn run(mut source: impl JobSource, stop: impl Future<Output = ()>) {
    crate::faults::arm();
    // READY before the health checks: systemd is not `running` until this unit is ready.
    crate::notify::ready();
    let watchdog = crate::notify::watchdog_period().map(crate::notify::spawn_watchdog);
    let pipe = source.pipeline();
    if !pipe.has_slots() {
        tracing::warn!("boot backend none: no A/B rollback, updates are final once installed");
    }
    pipe.reporter.inventory(pipe.inventory.clone());
    if let Ok(b) = pipe.boot.read() {
        pipe.reporter.boot(b.booted, b.trial);
    }
    if !source.busy() {
        let last = source.last_outcome();
        let error = last.as_ref().and_then(crate::report::Outcome::error);
        source.pipeline().reporter.idle(last.as_ref(), error);
    }
    tokio::pin!(stop);
    tokio::select! {
        () = &mut stop => {
            shutdown(source.pipeline(), watchdog).await;
            return;
        }
        () = source.settle_at_start() => {}
    }
    let wake = Arc::new(Notify::new());
    source.start_events(wake.clone());
    let moved = source.poll_moved();
    // Beats while waiting, several per watchdog period.
    let beat_every = crate::notify::watchdog_period().map_or(Duration::from_secs(10), |p| {
        (p / 4).max(Duration::from_millis(50))
    });
    'run: loop {
        crate::notify::beat();
        crate::faults::hang_point().await;
        tokio::select! {
            () = &mut stop => break 'run,
            () = source.round() => {}
        }
        let (last, unit) = (Instant::now(), fastrand::f64());
        let wake_at = source.pipeline().take_wake();
        loop {
            crate::notify::beat();
            crate::faults::hang_point().await;
            let mut poll = source.poll_due(last, unit);
            if let Some(t) = wake_at {
                poll = poll.min(t);
            }
            // A hold replaces the poll: the retry is due then, not sooner and not later.
            let due = tokio::time::Instant::from_std(held(&source).unwrap_or(poll));
            tokio::select! {
                () = &mut stop => break 'run,
                // (A wake during a hold is not lost: the round at its end reconciles all.)
                () = wake.notified() => if held(&source).is_none() { break },
                () = notified(moved.as_deref()) => {}
                () = tokio::time::sleep_until(due) => break,
                () = tokio::time::sleep(beat_every) => {}
            }
        }
    }
    source.stop_events();
    shutdown(source.pipeline(), watchdog).await;
}

/// Resolves when `n` is notified; never without one.
async fn notified(n: Option<&Notify>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// The source's hold, if it is still ahead.
fn held(source: &impl JobSource) -> Option<Instant> {
    source.not_before().filter(|t| *t > Instant::now())
}

async fn shutdown(pipe: &Pipeline, watchdog: Option<tokio::task::JoinHandle<()>>) {
    crate::notify::stopping();
    crate::notify::status("stopping");
    if let Some(w) = watchdog {
        w.abort();
    }
    pipe.reporter.shutdown().await;
}

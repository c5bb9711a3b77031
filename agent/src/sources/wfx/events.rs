//! wfx's event stream: waking the main loop, and noticing jobs the operator deleted.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use crate::wfx::{JobId, WfxClient};

/// Ids of deleted jobs remembered at most: the event stream may send DELETE events of any
/// number of unique ids; only recent ones matter (a job being worked on is also asked about
/// every [`super::GONE_CHECK`]).
pub const MAX_DELETED: usize = 1024;
/// Bytes of those ids at most, whatever their length.
pub const MAX_DELETED_BYTES: usize = 256 << 10;

/// Recent deleted ids, oldest evicted first.
#[derive(Debug, Default)]
struct Recent {
    order: std::collections::VecDeque<String>,
    set: std::collections::HashSet<String>,
    bytes: usize,
}

impl Recent {
    fn insert(&mut self, id: &str) {
        if self.set.contains(id) || id.len() > MAX_DELETED_BYTES {
            return;
        }
        while self.order.len() >= MAX_DELETED || self.bytes + id.len() > MAX_DELETED_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.set.remove(&old);
        }
        self.bytes += id.len();
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
    }

    fn remove(&mut self, id: &str) {
        if self.set.remove(id) {
            self.order.retain(|o| o != id);
            self.bytes -= id.len();
        }
    }
}

/// Jobs the operator deleted, as the event stream tells; work on them stops at once.
#[derive(Default)]
pub struct Deleted {
    ids: std::sync::Mutex<Recent>,
    notify: Notify,
}

impl Deleted {
    fn add(&self, id: &str) {
        self.ids.lock().expect("deleted lock").insert(id);
        self.notify.notify_waiters();
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.ids.lock().expect("deleted lock").set.contains(id)
    }

    /// Forgets `id` (its job is forgotten too).
    pub(super) fn remove(&self, id: &str) {
        self.ids.lock().expect("deleted lock").remove(id);
    }

    /// Resolves once `id` is deleted.
    async fn wait(&self, id: &str) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.contains(id) {
                return;
            }
            n.await;
        }
    }
}

/// The agent's own status updates remembered until their events come back, at most.
pub const MAX_ECHOES: usize = 64;
/// How long one is awaited (an update wfx never applied has no event).
pub const ECHO_WITHIN: Duration = Duration::from_secs(120);

/// Status updates the agent itself sent, by (job id, state), until wfx echoes each as an
/// `UPDATE_STATUS` event: the echo tells the agent nothing it does not know, and waking on it
/// made a job that waits (for SWUpdate) start over at once, forever (issue 19). Each update
/// is matched by one event at most: a second one with the same state is someone else's.
#[derive(Default)]
pub struct Echoes {
    sent: std::sync::Mutex<std::collections::VecDeque<(String, String, std::time::Instant)>>,
}

impl Echoes {
    /// Notes an update of `job` to `state` about to be sent (before: its event may come
    /// before the answer).
    pub(super) fn expect(&self, job: &str, state: &str) {
        let mut sent = self.sent.lock().expect("echoes lock");
        if sent.len() >= MAX_ECHOES {
            sent.pop_front();
        }
        sent.push_back((job.to_owned(), state.to_owned(), std::time::Instant::now()));
    }

    /// Whether `ev` only echoes an update noted by [`Echoes::expect`] (which it then uses up).
    fn echoed(&self, ev: &crate::wfx::JobEvent) -> bool {
        let Some(state) = ev.job.status.as_ref().map(|s| s.state.as_str()) else {
            return false;
        };
        if ev.action != "UPDATE_STATUS" {
            return false;
        }
        let mut sent = self.sent.lock().expect("echoes lock");
        sent.retain(|(_, _, at)| at.elapsed() < ECHO_WITHIN);
        match sent
            .iter()
            .position(|(j, s, _)| j == ev.job.id.as_str() && s == state)
        {
            Some(i) => {
                sent.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Resolves when the job is gone: a DELETE event, or (events are not guaranteed) a 404 when
/// asked every `every`.
pub(super) async fn job_gone(wfx: WfxClient, deleted: Arc<Deleted>, id: JobId, every: Duration) {
    loop {
        tokio::select! {
            () = deleted.wait(&id) => return,
            () = tokio::time::sleep(every) => {
                if matches!(wfx.job(&id).await, Err(e) if e.is_not_found()) {
                    return;
                }
            }
        }
    }
}

/// Follows the event stream, waking the main loop on every event but the echoes of its own
/// status updates and after every (re)connect, and noting deleted jobs.
pub(super) async fn follow_events(
    wfx: WfxClient,
    wake: Arc<Notify>,
    health: Arc<crate::wfx::follow::StreamHealth>,
    deleted: Arc<Deleted>,
    echoes: Arc<Echoes>,
) {
    crate::wfx::follow::follow_events(
        wfx,
        wake,
        health,
        |ev| {
            if echoes.echoed(ev) {
                tracing::trace!(job = %ev.job.id, "wfx event: the echo of our own update");
                return false;
            }
            tracing::debug!(action = %ev.action, job = %ev.job.id, "wfx event");
            if ev.action == "DELETE" {
                deleted.add(&ev.job.id);
            }
            true
        },
        |e| tracing::info!("event stream: {e}"),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_do_not_grow_the_set() {
        let d = Deleted::default();
        for i in 0..(MAX_DELETED * 10) {
            d.add(&format!("job-{i}"));
        }
        let r = d.ids.lock().unwrap();
        assert_eq!(r.order.len(), MAX_DELETED);
        assert_eq!(r.set.len(), MAX_DELETED);
        drop(r);
        assert!(d.contains(&format!("job-{}", MAX_DELETED * 10 - 1)));
        assert!(!d.contains("job-0"));
    }

    #[test]
    fn long_ids_are_bounded_by_bytes() {
        let d = Deleted::default();
        let long = "x".repeat(MAX_DELETED_BYTES / 4);
        for i in 0..100 {
            d.add(&format!("{long}{i}"));
        }
        let r = d.ids.lock().unwrap();
        assert!(r.bytes <= MAX_DELETED_BYTES, "{}", r.bytes);
        assert_eq!(r.bytes, r.order.iter().map(String::len).sum::<usize>());
        assert_eq!(r.order.len(), 3);
        drop(r);
        d.add(&"y".repeat(MAX_DELETED_BYTES + 1));
        assert!(!d.contains(&"y".repeat(MAX_DELETED_BYTES + 1)));
    }

    fn event(action: &str, job: &str, state: &str) -> crate::wfx::JobEvent {
        serde_json::from_value(serde_json::json!({
            "action": action,
            "job": {"id": job, "status": {"state": state}},
        }))
        .unwrap()
    }

    /// Each own update is echoed once; anything else wakes.
    #[test]
    fn only_the_echo_of_an_own_update_is_skipped() {
        let e = Echoes::default();
        e.expect("j1", "INSTALLING");
        e.expect("j1", "INSTALLING");
        assert!(!e.echoed(&event("UPDATE_STATUS", "j1", "INSTALLED")));
        assert!(!e.echoed(&event("UPDATE_STATUS", "j2", "INSTALLING")));
        assert!(!e.echoed(&event("DELETE", "j1", "INSTALLING")));
        assert!(e.echoed(&event("UPDATE_STATUS", "j1", "INSTALLING")));
        assert!(e.echoed(&event("UPDATE_STATUS", "j1", "INSTALLING")));
        // The third is not ours: the operator's, or wfx's.
        assert!(!e.echoed(&event("UPDATE_STATUS", "j1", "INSTALLING")));
        let no_status: crate::wfx::JobEvent = serde_json::from_value(
            serde_json::json!({"action": "UPDATE_STATUS", "job": {"id": "j1"}}),
        )
        .unwrap();
        e.expect("j1", "INSTALLING");
        assert!(!e.echoed(&no_status));
    }

    #[test]
    fn echoes_are_bounded() {
        let e = Echoes::default();
        for i in 0..(MAX_ECHOES * 4) {
            e.expect(&format!("j{i}"), "INSTALLING");
        }
        assert_eq!(e.sent.lock().unwrap().len(), MAX_ECHOES);
        assert!(!e.echoed(&event("UPDATE_STATUS", "j0", "INSTALLING")));
        let last = format!("j{}", MAX_ECHOES * 4 - 1);
        assert!(e.echoed(&event("UPDATE_STATUS", &last, "INSTALLING")));
    }

    #[test]
    fn remove_and_readd() {
        let d = Deleted::default();
        d.add("a");
        d.add("a");
        d.add("b");
        d.remove("a");
        assert!(!d.contains("a"));
        assert!(d.contains("b"));
        let r = d.ids.lock().unwrap();
        assert_eq!((r.order.len(), r.bytes), (1, 1));
    }
}

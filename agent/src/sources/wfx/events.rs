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

    fn contains(&self, id: &str) -> bool {
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

/// Follows the event stream, waking the main loop on every event and after every (re)connect,
/// and noting deleted jobs.
pub(super) async fn follow_events(wfx: WfxClient, wake: Arc<Notify>, deleted: Arc<Deleted>) {
    crate::wfx::follow::follow_events(
        wfx,
        wake,
        |ev| {
            tracing::debug!(action = %ev.action, job = %ev.job.id, "wfx event");
            if ev.action == "DELETE" {
                deleted.add(&ev.job.id);
            }
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

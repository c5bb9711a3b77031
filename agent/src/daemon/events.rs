//! wfx's event stream: waking the main loop, and noticing jobs the operator deleted.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use crate::wfx::{JobId, WfxClient};

/// Jobs the operator deleted, as the event stream tells; work on them stops at once.
#[derive(Default)]
pub struct Deleted {
    pub(super) ids: std::sync::Mutex<std::collections::HashSet<String>>,
    notify: Notify,
}

impl Deleted {
    fn add(&self, id: &str) {
        self.ids.lock().expect("deleted lock").insert(id.to_owned());
        self.notify.notify_waiters();
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.lock().expect("deleted lock").contains(id)
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

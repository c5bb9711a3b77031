//! One place for every state change: after wfx took it, the same change goes to the log
//! (journald on a device), to MQTT and to systemd's STATUS=, so the channels never disagree.

use crate::job::{Flow, JobView};
use crate::mqtt::{self, Phase, Publisher};

/// What a watcher should read from a wfx state.
pub fn phase_of(wfx_state: &str) -> Phase {
    match wfx_state {
        "DOWNLOAD" | "DOWNLOADING" | "DOWNLOADED" => Phase::Downloading,
        "INSTALL" | "INSTALLING" | "INSTALLED" => Phase::Installing,
        "ACTIVATE" | "ACTIVATING" => Phase::Rebooting,
        _ => Phase::Idle,
    }
}

/// The fan-out.
pub struct Reporter {
    mqtt: Option<Publisher>,
    running_version: Option<String>,
    /// The running slot and whether it is on trial, as last read from the bootloader.
    boot: std::sync::Mutex<(Option<String>, Option<bool>)>,
    /// The job whose update comes as a delta, with the bytes it fetched.
    delta: std::sync::Mutex<Option<(String, u64)>>,
}

impl Reporter {
    pub fn new(mqtt: Option<Publisher>, running_version: Option<String>) -> Reporter {
        Reporter {
            mqtt,
            running_version,
            boot: std::sync::Mutex::new((None, None)),
            delta: std::sync::Mutex::new(None),
        }
    }

    /// The device is idle (at start, and after a job ended).
    pub fn idle(&self, last_error: Option<String>) {
        notify_status("idle");
        if let Some(p) = &self.mqtt {
            let mut s = mqtt::State::new(Phase::Idle);
            s.running_version = self.running_version.clone();
            (s.boot_slot, s.trial) = self.boot_state();
            s.last_error = last_error;
            p.state(s);
        }
    }

    /// wfx took a new state of `job`.
    pub fn job_state(&self, job: &JobView, state: &str, progress: Option<u8>, message: &str) {
        tracing::info!(job = %job.id, state, progress, "{message}");
        notify_status(&format!("job {}: {state} {message}", job.id));
        let Some(p) = &self.mqtt else { return };
        let mut s = mqtt::State::new(phase_of(state));
        s.job_id = Some(job.id.to_string());
        s.workflow = Some(
            match job.flow {
                Flow::Direct => Flow::DIRECT,
                Flow::Phased => Flow::PHASED,
            }
            .to_owned(),
        );
        s.wfx_state = Some(state.to_owned());
        s.progress = progress;
        s.running_version = self.running_version.clone();
        (s.boot_slot, s.trial) = self.boot_state();
        if state == "ACTIVATING" && s.trial == Some(true) {
            s.phase = Phase::Testing;
        }
        s.target_version = job
            .definition
            .as_ref()
            .ok()
            .and_then(|d| d.artifacts.iter().find_map(|a| a.version.clone()));
        if state == "TERMINATED" {
            s.last_error = Some(message.to_owned());
        }
        if matches!(state, "INSTALLING" | "DOWNLOADING") {
            (s.path, s.bytes) = match self.delta_of(&job.id) {
                Some(fetched) => (Some(mqtt::UpdatePath::Delta), Some(fetched)),
                None => (Some(mqtt::UpdatePath::Full), None),
            };
        }
        p.state(s);
    }

    /// The route `job`'s update takes: its following states say `"path": "delta"` and the
    /// bytes a delta fetches (a rebuilt .swu: the chunks; a native delta: its .swu), or
    /// `"path": "full"` (also after a delta gave way to the full target).
    pub fn route(&self, job_id: &str, route: &crate::delta::route::Route) {
        use crate::delta::route::Route;
        let fetched = match route {
            Route::Rebuilt { stats, .. } => Some(stats.fetched),
            Route::Native { info, .. } => Some(info.length),
            Route::Full => None,
        };
        if let Ok(mut d) = self.delta.lock() {
            *d = fetched.map(|n| (job_id.to_owned(), n));
        }
    }

    fn delta_of(&self, job_id: &str) -> Option<u64> {
        let d = self.delta.lock().ok()?;
        d.as_ref().filter(|(id, _)| id == job_id).map(|(_, n)| *n)
    }

    /// The bootloader's state, for the following state messages.
    pub fn boot(&self, slot: Option<String>, trial: bool) {
        if let Ok(mut b) = self.boot.lock() {
            *b = (slot, Some(trial));
        }
    }

    fn boot_state(&self) -> (Option<String>, Option<bool>) {
        self.boot.lock().map(|b| b.clone()).unwrap_or((None, None))
    }

    /// Progress of the job in hand (rate-limited by the publisher).
    pub fn progress(&self, job_id: &str, phase: Phase, percent: u8, bytes: u64) {
        if let Some(p) = &self.mqtt {
            p.progress(mqtt::Progress::new(job_id, phase, percent, bytes));
        }
    }

    pub fn inventory(&self, inventory: mqtt::Inventory) {
        if let Some(p) = &self.mqtt {
            p.inventory(inventory);
        }
    }

    /// Delivers what is queued and says `offline`.
    pub async fn shutdown(&self) {
        if let Some(p) = &self.mqtt {
            p.shutdown().await;
        }
    }
}

/// `STATUS=` for systemd (`systemctl status` shows it); nothing outside systemd.
fn notify_status(text: &str) {
    crate::notify::status(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_is_remembered_for_its_job_only() {
        use crate::delta::route::Route;
        let r = Reporter::new(None, None);
        assert_eq!(r.delta_of("a"), None);
        let native = Route::Native {
            info: cip_tuf::TargetInfo {
                path: "os-1.1-from-1.0.swu".into(),
                length: 1234,
                hashes: Default::default(),
                custom: serde_json::Value::Null,
            },
            url: String::new(),
            chunk_urls: Vec::new(),
        };
        r.route("a", &native);
        assert_eq!(r.delta_of("a"), Some(1234));
        assert_eq!(r.delta_of("b"), None);
        // The delta failed and the full target follows: the path is full again.
        r.route("a", &Route::Full);
        assert_eq!(r.delta_of("a"), None);
    }

    #[test]
    fn phases() {
        assert_eq!(phase_of("DOWNLOADING"), Phase::Downloading);
        assert_eq!(phase_of("INSTALLED"), Phase::Installing);
        assert_eq!(phase_of("ACTIVATING"), Phase::Rebooting);
        assert_eq!(phase_of("ACTIVATED"), Phase::Idle);
        assert_eq!(phase_of("CREATED"), Phase::Idle);
    }
}

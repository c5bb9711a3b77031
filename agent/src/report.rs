//! One place for every state change: after wfx took it, the same change goes to the log
//! (journald on a device), to MQTT and to systemd's STATUS=, so the channels never disagree.

use crate::mqtt::{self, Phase, Publisher};
use crate::state::State;

/// What the reports say an update is, whichever source it came from.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The update's id (a wfx job id; `tuf:<target path>` in TUF-only mode).
    pub id: &'a str,
    /// The wfx workflow, for a wfx job.
    pub workflow: Option<&'a str>,
    /// The version it installs, when known.
    pub target_version: Option<&'a str>,
}

/// How an update ended, as its source recorded it: read back from the source's records at
/// start, so the retained MQTT state keeps it across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The update's id, as in [`Subject::id`].
    pub id: String,
    /// ACTIVATED or TERMINATED.
    pub state: State,
    /// The version it installed (or was to install), when known.
    pub version: Option<String>,
    pub message: String,
    /// When it ended (RFC 3339 UTC, see [`now`]); `None` in records of older agents.
    pub time: Option<String>,
    /// The new slot was tried and the bootloader went back to the old one.
    pub rolled_back: bool,
}

impl Outcome {
    /// The error an idle device reports: the message of an update that did not end ACTIVATED.
    pub fn error(&self) -> Option<&str> {
        (self.state != State::Activated).then_some(self.message.as_str())
    }

    fn payload(&self) -> mqtt::LastOutcome {
        mqtt::LastOutcome {
            job_id: self.id.clone(),
            wfx_state: self.state.as_str().to_owned(),
            version: self.version.clone(),
            message: self.message.clone(),
            time: self.time.clone(),
            rolled_back: self.rolled_back,
        }
    }
}

/// Now, as an [`Outcome`]'s time.
pub fn now() -> String {
    mqtt::timestamp::now_rfc3339()
}

/// What a watcher should read from a wfx state.
pub fn phase_of(state: State) -> Phase {
    match state {
        State::Download | State::Downloading | State::Downloaded => Phase::Downloading,
        State::Install | State::Installing | State::Installed => Phase::Installing,
        State::Activate | State::Activating => Phase::Rebooting,
        State::Created | State::Activated | State::Terminated => Phase::Idle,
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
    /// The last update's end, carried by every state message (not only the idle one), so that
    /// a dashboard keeps it while the next update runs.
    last: std::sync::Mutex<Option<mqtt::LastOutcome>>,
}

impl Reporter {
    pub fn new(mqtt: Option<Publisher>, running_version: Option<String>) -> Reporter {
        Reporter {
            mqtt,
            running_version,
            boot: std::sync::Mutex::new((None, None)),
            delta: std::sync::Mutex::new(None),
            last: std::sync::Mutex::new(None),
        }
    }

    /// The device is idle (at start, and after a job ended); `last`: how the last update ended,
    /// from the source's records; `last_error`: the error to show (see [`Outcome::error`]).
    pub fn idle(&self, last: Option<&Outcome>, last_error: Option<&str>) {
        notify_status("idle");
        let payload = last.map(Outcome::payload);
        if let Ok(mut l) = self.last.lock() {
            l.clone_from(&payload);
        }
        if let Some(p) = &self.mqtt {
            let mut s = mqtt::State::new(Phase::Idle);
            s.running_version = self.running_version.clone();
            (s.boot_slot, s.trial) = self.boot_state();
            s.last_error = last_error.map(str::to_owned);
            s.last = payload;
            p.state(s);
        }
    }

    fn last_outcome(&self) -> Option<mqtt::LastOutcome> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// wfx took a new state of `job`.
    pub fn job_state(&self, job: Subject<'_>, state: State, progress: Option<u8>, message: &str) {
        tracing::info!(job = %job.id, state = state.as_str(), progress, "{message}");
        notify_status(&format!("job {}: {state} {message}", job.id));
        let Some(p) = &self.mqtt else { return };
        let mut s = mqtt::State::new(phase_of(state));
        s.job_id = Some(job.id.to_string());
        s.workflow = job.workflow.map(str::to_owned);
        s.wfx_state = Some(state.as_str().to_owned());
        s.progress = progress;
        s.running_version = self.running_version.clone();
        (s.boot_slot, s.trial) = self.boot_state();
        if state == State::Activating && s.trial == Some(true) {
            s.phase = Phase::Testing;
        }
        s.target_version = job.target_version.map(str::to_owned);
        s.last = self.last_outcome();
        if state == State::Terminated {
            s.last_error = Some(message.to_owned());
        }
        if matches!(state, State::Installing | State::Downloading) {
            (s.path, s.bytes) = match self.delta_of(job.id) {
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
    fn the_last_outcome_is_kept_until_the_next_one() {
        let r = Reporter::new(None, None);
        assert_eq!(r.last_outcome(), None);
        let o = Outcome {
            id: "j1".into(),
            state: State::Terminated,
            version: Some("2.0".into()),
            message: "rolled back to slot A".into(),
            time: Some("2026-01-02T03:04:05Z".into()),
            rolled_back: true,
        };
        assert_eq!(o.error(), Some("rolled back to slot A"));
        r.idle(Some(&o), o.error());
        let l = r.last_outcome().unwrap();
        assert_eq!(
            (l.job_id.as_str(), l.wfx_state.as_str(), l.rolled_back),
            ("j1", "TERMINATED", true)
        );
        let ok = Outcome {
            state: State::Activated,
            rolled_back: false,
            ..o
        };
        assert_eq!(ok.error(), None);
        r.idle(Some(&ok), None);
        assert_eq!(r.last_outcome().unwrap().wfx_state, "ACTIVATED");
    }

    #[test]
    fn phases() {
        assert_eq!(phase_of(State::Downloading), Phase::Downloading);
        assert_eq!(phase_of(State::Installed), Phase::Installing);
        assert_eq!(phase_of(State::Activating), Phase::Rebooting);
        assert_eq!(phase_of(State::Activated), Phase::Idle);
        assert_eq!(phase_of(State::Created), Phase::Idle);
    }
}

//! The JSON payloads. Each carries `schema: 1` so that consumers can tell versions apart when a
//! field changes meaning; fields are only ever added within a schema version.

use std::collections::BTreeMap;

use serde::Serialize;

use super::timestamp::now_rfc3339;

/// The payload schema version of this agent.
pub const SCHEMA: u32 = 1;

/// What the agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Downloading,
    Installing,
    Rebooting,
    Testing,
    Idle,
}

/// How the update reaches the device: chunks against the running image, or the whole image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdatePath {
    Delta,
    Full,
}

/// `<prefix>/<client-id>/state` (retained, QoS 1): the agent's state after each change.
///
/// Absent values are `null` rather than left out, so that every message has the same keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct State {
    pub schema: u32,
    pub job_id: Option<String>,
    pub workflow: Option<String>,
    pub wfx_state: Option<String>,
    /// 0..=100.
    pub progress: Option<u8>,
    pub phase: Phase,
    pub path: Option<UpdatePath>,
    pub bytes: Option<u64>,
    pub running_version: Option<String>,
    pub target_version: Option<String>,
    pub boot_slot: Option<String>,
    pub trial: Option<bool>,
    pub last_error: Option<String>,
    /// How the last update ended (kept while idle and through restarts), `null` before the
    /// first one.
    pub last: Option<LastOutcome>,
    /// RFC 3339, UTC.
    pub timestamp: String,
}

/// The end of the device's last update, in the retained state so that a dashboard connecting
/// later still learns it (the state of the job itself is gone once the device is idle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastOutcome {
    /// The wfx job id (`tuf:<target path>` in TUF-only mode).
    pub job_id: String,
    /// `ACTIVATED` or `TERMINATED`.
    pub wfx_state: String,
    /// The version the update installed (or was to install), when known.
    pub version: Option<String>,
    pub message: String,
    /// When it ended, RFC 3339 UTC; `null` for an end recorded by an older agent.
    pub time: Option<String>,
    /// The new slot was tried and the bootloader went back to the old one.
    pub rolled_back: bool,
}

impl State {
    /// A state in `phase` stamped now, with every optional field empty.
    pub fn new(phase: Phase) -> State {
        State {
            schema: SCHEMA,
            job_id: None,
            workflow: None,
            wfx_state: None,
            progress: None,
            phase,
            path: None,
            bytes: None,
            running_version: None,
            target_version: None,
            boot_slot: None,
            trial: None,
            last_error: None,
            last: None,
            timestamp: now_rfc3339(),
        }
    }
}

/// `<prefix>/<client-id>/progress` (not retained, QoS 0, rate-limited): the progress of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub schema: u32,
    pub job_id: String,
    /// 0..=100.
    pub percent: u8,
    pub bytes: u64,
    pub phase: Phase,
    /// RFC 3339, UTC.
    pub timestamp: String,
}

impl Progress {
    /// A progress report stamped now.
    pub fn new(job_id: impl Into<String>, phase: Phase, percent: u8, bytes: u64) -> Progress {
        Progress {
            schema: SCHEMA,
            job_id: job_id.into(),
            percent: percent.min(100),
            bytes,
            phase,
            timestamp: now_rfc3339(),
        }
    }
}

/// `<prefix>/<client-id>/inventory` (retained, QoS 1): what the device is and runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub schema: u32,
    pub hardware_revision: Option<String>,
    /// Chosen os-release fields (see [`os_release_fields`]).
    pub os_release: BTreeMap<String, String>,
    pub agent_version: String,
    /// The SWUpdate IPC wire format spoken.
    pub swupdate_wire: Option<String>,
    pub boot_backend: Option<String>,
}

impl Inventory {
    /// An inventory of this agent build with nothing else known yet.
    pub fn new() -> Inventory {
        Inventory {
            schema: SCHEMA,
            hardware_revision: None,
            os_release: BTreeMap::new(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            swupdate_wire: None,
            boot_backend: None,
        }
    }
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory::new()
    }
}

/// The os-release keys worth reporting: identity and version, not URLs or prose.
pub const OS_RELEASE_KEYS: &[&str] = &[
    "ID",
    "NAME",
    "PRETTY_NAME",
    "VERSION",
    "VERSION_ID",
    "VERSION_CODENAME",
    "BUILD_ID",
    "IMAGE_ID",
    "IMAGE_VERSION",
];

/// The [`OS_RELEASE_KEYS`] of an os-release file's text (`KEY=value`, values optionally quoted
/// with `"` or `'`, `#` comments). Malformed lines are skipped: os-release is informative here.
pub fn os_release_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.trim().split_once('=')?;
            if !OS_RELEASE_KEYS.contains(&k) {
                return None;
            }
            let v = v.trim();
            let v = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(v);
            // Shell escapes of os-release(5) in double quotes.
            let v = v.replace("\\\"", "\"").replace("\\\\", "\\");
            Some((k.to_owned(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn state_json_shape() {
        let mut s = State::new(Phase::Downloading);
        s.job_id = Some("j1".into());
        s.progress = Some(42);
        s.path = Some(UpdatePath::Delta);
        s.bytes = Some(1234);
        s.trial = Some(false);
        s.timestamp = "2026-01-02T03:04:05Z".into();
        let v: Value = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            json!({
                "schema": 1, "job_id": "j1", "workflow": null, "wfx_state": null,
                "progress": 42, "phase": "downloading", "path": "delta", "bytes": 1234,
                "running_version": null, "target_version": null, "boot_slot": null,
                "trial": false, "last_error": null, "last": null,
                "timestamp": "2026-01-02T03:04:05Z"
            })
        );
        for (phase, name) in [
            (Phase::Installing, "installing"),
            (Phase::Rebooting, "rebooting"),
            (Phase::Testing, "testing"),
            (Phase::Idle, "idle"),
        ] {
            assert_eq!(serde_json::to_value(phase).unwrap(), json!(name));
        }
        assert_eq!(
            serde_json::to_value(UpdatePath::Full).unwrap(),
            json!("full")
        );
    }

    #[test]
    fn idle_state_keeps_the_last_outcome() {
        let mut s = State::new(Phase::Idle);
        s.running_version = Some("2.0".into());
        s.last = Some(LastOutcome {
            job_id: "j1".into(),
            wfx_state: "ACTIVATED".into(),
            version: Some("2.0".into()),
            message: "slot B confirmed".into(),
            time: Some("2026-01-02T03:04:05Z".into()),
            rolled_back: false,
        });
        s.timestamp = "2026-01-02T03:05:00Z".into();
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({
                "schema": 1, "job_id": null, "workflow": null, "wfx_state": null,
                "progress": null, "phase": "idle", "path": null, "bytes": null,
                "running_version": "2.0", "target_version": null, "boot_slot": null,
                "trial": null, "last_error": null,
                "last": {"job_id": "j1", "wfx_state": "ACTIVATED", "version": "2.0",
                         "message": "slot B confirmed", "time": "2026-01-02T03:04:05Z",
                         "rolled_back": false},
                "timestamp": "2026-01-02T03:05:00Z"
            })
        );
        // An end an older agent recorded has no time: the key is there, `null`.
        let old = LastOutcome {
            job_id: "j0".into(),
            wfx_state: "TERMINATED".into(),
            version: None,
            message: "rolled back to slot A".into(),
            time: None,
            rolled_back: true,
        };
        assert_eq!(
            serde_json::to_value(&old).unwrap(),
            json!({"job_id": "j0", "wfx_state": "TERMINATED", "version": null,
                   "message": "rolled back to slot A", "time": null, "rolled_back": true})
        );
    }

    #[test]
    fn progress_and_inventory_json_shape() {
        let mut p = Progress::new("j1", Phase::Installing, 150, 7);
        p.timestamp = "t".into();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"schema": 1, "job_id": "j1", "percent": 100, "bytes": 7,
                   "phase": "installing", "timestamp": "t"})
        );
        let mut i = Inventory::new();
        i.hardware_revision = Some("board 1.0".into());
        i.os_release = os_release_fields("ID=debian\nVERSION_ID=\"12\"\nHOME_URL=x\n");
        i.swupdate_wire = Some("2022.12".into());
        i.boot_backend = Some("file".into());
        assert_eq!(
            serde_json::to_value(&i).unwrap(),
            json!({"schema": 1, "hardware_revision": "board 1.0",
                   "os_release": {"ID": "debian", "VERSION_ID": "12"},
                   "agent_version": env!("CARGO_PKG_VERSION"),
                   "swupdate_wire": "2022.12", "boot_backend": "file"})
        );
    }

    #[test]
    fn os_release_parsing() {
        let f = os_release_fields(
            "# comment\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME='Debian'\n\
             VERSION_ID=12\nVERSION=\"say \\\"hi\\\"\"\ngarbage\nID\n",
        );
        assert_eq!(f["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(f["NAME"], "Debian");
        assert_eq!(f["VERSION_ID"], "12");
        assert_eq!(f["VERSION"], "say \"hi\"");
        assert_eq!(f.len(), 4);
    }
}

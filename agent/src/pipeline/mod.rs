//! The one update pipeline every job source drives (wfx jobs, TUF-only polling):
//!
//! - [`install`]: one target into SWUpdate (route: native delta, zchunk rebuild or full; the
//!   keeper of the next delta's seed; hashing on the way; software set; the request; the
//!   stream; a failed delta giving way to the full target; transient vs final errors);
//! - [`activate`]: arming the new slot, the reboot policy (consent, window, grace, limit), and
//!   settling after the boot (judge, health checks, confirm or reject);
//! - [`service`]: the systemd lifecycle (READY, watchdog, STATUS, STOPPING) around a source.
//!
//! The pipeline never names wfx: what a source adds (reports, journal, cancellation) comes in
//! through [`install::Hooks`] and the records it keeps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::backoff::Backoff;
use crate::boot::Boot;
use crate::config::{Delta, Download, Health, MarkInstalled, Reboot};
use crate::mqtt::Inventory;
use crate::report::Reporter;
use crate::selection::Selector;
use crate::trust::Trust;
use cip_swupdate::Swupdate;

pub mod activate;
pub mod install;
pub mod service;

/// What the pipeline's steps follow, from the configuration (built in [`crate::wiring`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub delta: Delta,
    pub download: Download,
    pub health: Health,
    pub reboot: Reboot,
    pub mark_installed: MarkInstalled,
    pub state_dir: PathBuf,
    /// The running version (os-release or a plain version file).
    pub version_file: PathBuf,
    /// The waits of an update that waits for SWUpdate (away or busy), for sources that retry.
    pub swupdate_retry: Backoff,
}

/// The components every update goes through, and the little state the reboot policy keeps
/// in memory (a reboot under way; when to look again).
pub struct Pipeline {
    pub http: reqwest::Client,
    pub swupdate: Swupdate,
    pub boot: Box<dyn Boot>,
    pub selector: Selector,
    pub reporter: Arc<Reporter>,
    /// `[tuf]`: every artifact must be a target; `None`: not verified (development).
    pub trust: Option<Trust>,
    /// What the device is (MQTT), the SWUpdate wire updated once an install showed it.
    pub inventory: Inventory,
    pub settings: Settings,
    /// Wake the source by then (a reboot window opening, a consent to ask again).
    next_wake: Option<Instant>,
    /// When this process asked for a reboot: not again while the reboot is under way.
    reboot_issued: Option<Instant>,
}

/// The parts of a [`Pipeline`].
pub struct Parts {
    pub http: reqwest::Client,
    pub swupdate: Swupdate,
    pub boot: Box<dyn Boot>,
    pub selector: Selector,
    pub reporter: Reporter,
    pub trust: Option<Trust>,
    pub inventory: Inventory,
    pub settings: Settings,
}

impl Pipeline {
    pub fn new(p: Parts) -> Pipeline {
        Pipeline {
            http: p.http,
            swupdate: p.swupdate,
            boot: p.boot,
            selector: p.selector,
            reporter: Arc::new(p.reporter),
            trust: p.trust,
            inventory: p.inventory,
            settings: p.settings,
            next_wake: None,
            reboot_issued: None,
        }
    }

    /// When the source should be woken at the latest (taken: asked once per wait).
    pub fn take_wake(&mut self) -> Option<Instant> {
        self.next_wake.take()
    }

    /// The running version, as the device says now.
    pub fn running_version(&self) -> Option<String> {
        crate::device::read_version(&self.settings.version_file)
    }
}

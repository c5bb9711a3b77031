//! The A/B rollback state of the bootloader, behind one trait chosen with `boot.backend`:
//! `ebg` (EFI Boot Guard), `uboot` (U-Boot), `none` (no rollback, for development).
//!
//! A backend reads the state into a [`BootStatus`] (which slot runs, whether it is on trial,
//! which slot is armed for the next boot, which one the bootloader marked failed); the verdict
//! for a job, [`judge`], is a plain function of that status and of the slot the job armed.

mod ebg;
mod none;
mod uboot;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

pub use ebg::Ebg;
pub use none::NoBoot;
pub use uboot::Uboot;

use crate::config::{self, BootBackend};

/// What the bootloader says, read fresh each time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootStatus {
    pub backend: BootBackend,
    /// The slot running now (`A`, `B`); `None` without slots (backend `none`).
    pub booted: Option<String>,
    /// The running slot is on trial: unconfirmed, the next reset goes back to the other slot.
    pub trial: bool,
    /// The slot armed for the next boot (installed, not booted yet).
    pub pending: Option<String>,
    /// The slot the bootloader marked failed (it rolled back from it).
    pub failed: Option<String>,
    /// Why the bootloader rolled back, as exactly as its state says.
    pub rollback_reason: Option<String>,
    /// The bootloader's own words, for `status` and messages (e.g. `ustate=2 (TESTING)`).
    pub detail: String,
}

/// A job's slot, judged from the bootloader's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Armed; the device has not booted it yet.
    PendingReboot,
    /// Running, on trial: check it, then confirm it or go back.
    Trial,
    /// Running and confirmed.
    Confirmed,
    /// The other slot runs: the bootloader went back (the message says why).
    RolledBack(String),
}

/// The verdict for a job that armed `slot` (`None`: a backend without slots).
pub fn judge(s: &BootStatus, slot: Option<&str>) -> Verdict {
    let Some(slot) = slot else {
        return Verdict::Confirmed;
    };
    if s.pending.as_deref() == Some(slot) {
        return Verdict::PendingReboot;
    }
    match s.booted.as_deref() {
        Some(b) if b == slot && s.trial => Verdict::Trial,
        Some(b) if b == slot => Verdict::Confirmed,
        Some(b) => {
            let why = match (&s.rollback_reason, s.failed.as_deref()) {
                (Some(r), Some(f)) if f == slot => r.clone(),
                _ => format!("slot {slot} is not running and not armed: {}", s.detail),
            };
            Verdict::RolledBack(format!("rolled back to slot {b} ({why})"))
        }
        None => Verdict::RolledBack(format!("the running slot cannot be told: {}", s.detail)),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("boot backend {}: {message}", backend.name())]
pub struct BootError {
    pub backend: BootBackend,
    pub message: String,
}

/// A rollback backend.
pub trait Boot: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BootBackend;
    /// Its name in messages and the configuration.
    fn name(&self) -> &'static str {
        self.kind().name()
    }
    fn read(&self) -> Result<BootStatus, BootError>;
    /// Arms the slot that is not running for the next boot, on trial: what SWUpdate does at the
    /// end of an install when it runs with a `bootloader` (`boot.mark_installed = "agent"`).
    fn mark_installed(&self) -> Result<(), BootError>;
    /// Keeps the running slot (ends its trial).
    fn confirm(&self) -> Result<(), BootError>;
    /// Makes the next boot go back to the other slot (the running one failed its checks).
    fn reject(&self) -> Result<(), BootError>;
}

/// The backend the configuration names.
pub fn from_config(c: &config::Boot) -> Box<dyn Boot> {
    match c.backend {
        BootBackend::None => Box::new(NoBoot),
        BootBackend::Ebg => Box::new(Ebg::new(c)),
        BootBackend::Uboot => Box::new(Uboot::new(c)),
    }
}

/// Runs a bootloader tool; its stdout, or an error with its stderr.
fn run(
    backend: BootBackend,
    tool: &Path,
    args: &[OsString],
    stdin: Option<&str>,
) -> Result<String, BootError> {
    let shown = || {
        let mut s = tool.display().to_string();
        for a in args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    let err = |message: String| BootError { backend, message };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("{}: {e}", shown())))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| err(format!("{}: writing its input: {e}", shown())))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("{}: {e}", shown())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(err(format!(
            "{} failed ({}): {}",
            shown(),
            out.status,
            stderr.trim()
        )));
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(booted: &str, trial: bool, pending: Option<&str>, failed: Option<&str>) -> BootStatus {
        BootStatus {
            backend: BootBackend::Ebg,
            booted: Some(booted.into()),
            trial,
            pending: pending.map(Into::into),
            failed: failed.map(Into::into),
            rollback_reason: failed.map(|f| format!("slot {f} reset before it was confirmed")),
            detail: "d".into(),
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            judge(&st("A", false, Some("B"), None), Some("B")),
            Verdict::PendingReboot
        );
        assert_eq!(judge(&st("B", true, None, None), Some("B")), Verdict::Trial);
        assert_eq!(
            judge(&st("B", false, None, None), Some("B")),
            Verdict::Confirmed
        );
        assert_eq!(
            judge(&st("A", false, None, Some("B")), Some("B")),
            Verdict::RolledBack(
                "rolled back to slot A (slot B reset before it was confirmed)".into()
            )
        );
        // The old slot runs and nothing is marked: still a rollback, said as such.
        let Verdict::RolledBack(m) = judge(&st("A", false, None, None), Some("B")) else {
            panic!()
        };
        assert!(
            m.starts_with("rolled back to slot A (slot B is not running"),
            "{m}"
        );
        // A failed mark of another (older) slot is not this job's reason.
        let Verdict::RolledBack(m) = judge(&st("A", false, None, Some("A")), Some("B")) else {
            panic!()
        };
        assert!(m.contains("slot B is not running"), "{m}");
        assert_eq!(
            judge(&st("A", false, None, None), None),
            Verdict::Confirmed,
            "no slots: nothing to judge"
        );
    }
}

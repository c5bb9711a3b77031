//! EFI Boot Guard through `bg_printenv` / `bg_setenv`.
//!
//! There is one environment per boot partition (slot A: the first, slot B: the second), or, for
//! tests and simulators, one plain BGENV.DAT file per slot (`boot.ebg_env_files`; `-f FILE`, and
//! `-P` on every write, or bg_setenv resets the other fields).
//!
//! Which environment booted: EFI Boot Guard's own rule, applied to the state it leaves behind.
//! At boot it takes the environment with the highest revision; one `in_progress` is skipped;
//! TESTING becomes FAILED with revision 0 (and the other boots); INSTALLED becomes TESTING (and
//! boots). So, once booted, the running environment is the one with the highest revision that
//! is neither in progress nor INSTALLED (INSTALLED after boot can only be a newer install, not
//! booted yet). This needs no marker and reads the same on a device and on files.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{Boot, BootError, BootStatus, run};
use crate::config::{self, BootBackend};

const OK: u8 = 0;
const INSTALLED: u8 = 1;
const TESTING: u8 = 2;
const FAILED: u8 = 3;
const SLOTS: [&str; 2] = ["A", "B"];

fn ustate_name(u: u8) -> &'static str {
    match u {
        OK => "OK",
        INSTALLED => "INSTALLED",
        TESTING => "TESTING",
        FAILED => "FAILED",
        _ => "UNKNOWN",
    }
}

/// One environment, as `bg_printenv -r` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub in_progress: bool,
    pub revision: u32,
    pub ustate: u8,
    pub kernel: String,
}

/// Parses `IN_PROGRESS=0\nREVISION=1\nKERNEL=..\nUSTATE=0` (raw mode).
pub fn parse_env(text: &str) -> Result<Env, String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
            .map(str::trim)
    };
    let num = |name: &str| -> Result<u32, String> {
        let v = field(name).ok_or_else(|| format!("no {name} in `{}`", text.trim()))?;
        v.parse().map_err(|_| format!("{name}={v} is not a number"))
    };
    Ok(Env {
        in_progress: num("IN_PROGRESS")? != 0,
        revision: num("REVISION")?,
        ustate: u8::try_from(num("USTATE")?).map_err(|_| "USTATE out of range".to_owned())?,
        kernel: field("KERNEL").unwrap_or_default().to_owned(),
    })
}

/// The running environment (see the module documentation); `None` if none qualifies.
pub fn booted_index(envs: &[Env]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, e) in envs.iter().enumerate() {
        if e.in_progress || e.ustate == INSTALLED {
            continue;
        }
        if best.is_none_or(|b| e.revision > envs[b].revision) {
            best = Some(i);
        }
    }
    best
}

/// The status of a pair of environments.
pub fn status_of(envs: &[Env]) -> BootStatus {
    let booted = booted_index(envs);
    let top = envs.iter().map(|e| e.revision).max().unwrap_or(0);
    // Armed: INSTALLED with the highest revision, so EFI Boot Guard takes it next.
    let pending = envs
        .iter()
        .position(|e| e.ustate == INSTALLED && !e.in_progress && e.revision == top);
    let failed = envs.iter().position(|e| e.ustate == FAILED);
    let detail = envs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "{}: ustate={} ({}) revision={}{}",
                SLOTS[i],
                e.ustate,
                ustate_name(e.ustate),
                e.revision,
                if e.in_progress { " in_progress" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    BootStatus {
        backend: BootBackend::Ebg,
        booted: booted.map(|i| SLOTS[i].to_owned()),
        trial: booted.is_some_and(|i| envs[i].ustate == TESTING),
        pending: pending.map(|i| SLOTS[i].to_owned()),
        failed: failed.map(|i| SLOTS[i].to_owned()),
        rollback_reason: failed.map(|i| {
            format!(
                "EFI Boot Guard marked slot {} FAILED: it was reset before it was confirmed (watchdog reset or power loss on trial)",
                SLOTS[i]
            )
        }),
        detail,
    }
}

pub struct Ebg {
    printenv: PathBuf,
    setenv: PathBuf,
    /// Empty: the boot partitions.
    files: Vec<PathBuf>,
}

impl Ebg {
    pub fn new(c: &config::Boot) -> Ebg {
        Ebg {
            printenv: c.bg_printenv.clone(),
            setenv: c.bg_setenv.clone(),
            files: c.ebg_env_files.clone(),
        }
    }

    fn err(&self, message: impl Into<String>) -> BootError {
        BootError {
            backend: BootBackend::Ebg,
            message: message.into(),
        }
    }

    /// `-f FILE -P` for a file, `-p N` for a partition.
    fn target(&self, i: usize, write: bool) -> Vec<OsString> {
        match self.files.get(i) {
            Some(f) if write => vec!["-f".into(), f.into(), "-P".into()],
            Some(f) => vec!["-f".into(), f.into()],
            None => vec!["-p".into(), i.to_string().into()],
        }
    }

    fn envs(&self) -> Result<Vec<Env>, BootError> {
        (0..2)
            .map(|i| {
                let mut args = self.target(i, false);
                args.extend(["-r", "-o", "in_progress,revision,ustate,kernel"].map(OsString::from));
                let out = run(BootBackend::Ebg, &self.printenv, &args, None)?;
                parse_env(&out).map_err(|m| self.err(format!("slot {}: {m}", SLOTS[i])))
            })
            .collect()
    }

    fn set(&self, i: usize, args: &[&str]) -> Result<(), BootError> {
        let mut a = self.target(i, true);
        a.extend(args.iter().map(OsString::from));
        run(BootBackend::Ebg, &self.setenv, &a, None).map(drop)
    }
}

impl Boot for Ebg {
    fn kind(&self) -> BootBackend {
        BootBackend::Ebg
    }

    fn read(&self) -> Result<BootStatus, BootError> {
        Ok(status_of(&self.envs()?))
    }

    /// As SWUpdate's ebg handler: the other environment gets the next revision and INSTALLED.
    fn mark_installed(&self) -> Result<(), BootError> {
        let envs = self.envs()?;
        let booted = booted_index(&envs).ok_or_else(|| self.err("no environment is bootable"))?;
        let other = 1 - booted;
        let rev = envs.iter().map(|e| e.revision).max().unwrap_or(0) + 1;
        self.set(other, &["-r", &rev.to_string(), "-s", "1", "-i", "0"])
    }

    fn confirm(&self) -> Result<(), BootError> {
        let envs = self.envs()?;
        let booted = booted_index(&envs).ok_or_else(|| self.err("no environment is bootable"))?;
        self.set(booted, &["-c"])
    }

    /// Nothing to write: a slot left TESTING is marked FAILED at the next boot, and the other
    /// one boots.
    fn reject(&self) -> Result<(), BootError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(rev: u32, ustate: u8, in_progress: bool) -> Env {
        Env {
            in_progress,
            revision: rev,
            ustate,
            kernel: String::new(),
        }
    }

    #[test]
    fn parses_raw_output() {
        let e =
            parse_env("IN_PROGRESS=0\nREVISION=7\nKERNEL=C:BOOT1:linux.efi\nUSTATE=2\n").unwrap();
        assert_eq!(
            e,
            Env {
                in_progress: false,
                revision: 7,
                ustate: 2,
                kernel: "C:BOOT1:linux.efi".into()
            }
        );
        assert!(
            parse_env("REVISION=1\n")
                .unwrap_err()
                .contains("no IN_PROGRESS")
        );
        assert!(
            parse_env("IN_PROGRESS=0\nREVISION=x\nUSTATE=0")
                .unwrap_err()
                .contains("REVISION=x")
        );
    }

    /// On a device the partitions by index (bg_setenv reads them itself); on files `-f FILE`,
    /// and `-P` on every write.
    #[test]
    fn device_and_file_arguments() {
        let dev = Ebg::new(&config::Boot::default());
        assert_eq!(dev.target(1, true), ["-p", "1"]);
        assert_eq!(dev.target(0, false), ["-p", "0"]);
        let files = Ebg::new(&config::Boot {
            ebg_env_files: vec!["/a/BGENV.DAT".into(), "/b/BGENV.DAT".into()],
            ..Default::default()
        });
        assert_eq!(files.target(1, true), ["-f", "/b/BGENV.DAT", "-P"]);
        assert_eq!(files.target(0, false), ["-f", "/a/BGENV.DAT"]);
    }

    /// The states of one update, as EFI Boot Guard and SWUpdate leave them.
    #[test]
    fn an_update_through_its_states() {
        // A runs.
        let s = status_of(&[env(1, OK, false), env(0, OK, false)]);
        assert_eq!(
            (s.booted.as_deref(), s.trial, s.pending.as_deref()),
            (Some("A"), false, None)
        );
        // SWUpdate is writing B.
        let s = status_of(&[env(1, OK, false), env(2, OK, true)]);
        assert_eq!(
            (s.booted.as_deref(), s.pending.as_deref()),
            (Some("A"), None)
        );
        // Installed into B, not booted.
        let s = status_of(&[env(1, OK, false), env(2, INSTALLED, false)]);
        assert_eq!(
            (s.booted.as_deref(), s.pending.as_deref()),
            (Some("A"), Some("B"))
        );
        // Booted B on trial.
        let s = status_of(&[env(1, OK, false), env(2, TESTING, false)]);
        assert_eq!(
            (s.booted.as_deref(), s.trial, s.pending),
            (Some("B"), true, None)
        );
        // Reset on trial: B FAILED with revision 0, A runs again.
        let s = status_of(&[env(1, OK, false), env(0, FAILED, false)]);
        assert_eq!(
            (s.booted.as_deref(), s.trial, s.failed.as_deref()),
            (Some("A"), false, Some("B"))
        );
        assert!(s.rollback_reason.unwrap().contains("slot B FAILED"));
        assert!(
            s.detail.contains("B: ustate=3 (FAILED) revision=0"),
            "{}",
            s.detail
        );
        // Confirmed.
        let s = status_of(&[env(1, OK, false), env(2, OK, false)]);
        assert_eq!((s.booted.as_deref(), s.trial), (Some("B"), false));
        // An INSTALLED env with a lower revision is not what boots next.
        let s = status_of(&[env(3, OK, false), env(2, INSTALLED, false)]);
        assert_eq!(s.pending, None);
    }
}

//! U-Boot through `fw_printenv` / `fw_setenv` (libubootenv) with `boot.fw_env_config`.
//!
//! The convention (SWUpdate's, with `CONFIG_BOOTCOUNT_ENV`): an install sets
//! `upgrade_available=1`, `bootcount=0`, `ustate=1` and points the slot variable
//! (`boot.uboot_slot_variable`) at the new slot. While `upgrade_available=1` U-Boot counts
//! `bootcount` up at each boot and, past `bootlimit`, runs `altbootcmd`, which points the slot
//! variable back, clears `upgrade_available` and sets `ustate=3`. Userspace confirms with
//! `upgrade_available=0 bootcount=0`. Boots with `upgrade_available=0` count nothing, so power
//! cuts on a confirmed slot never roll back.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use super::{Boot, BootError, BootStatus, run};
use crate::config::{self, BootBackend};

/// `name=value` lines; an empty value is an unset variable.
pub fn parse_vars(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The status from the variables; `slots` are the slot variable's two values (A, B).
pub fn status_of(vars: &BTreeMap<String, String>, slot_var: &str, slots: &[String]) -> BootStatus {
    let get = |k: &str| vars.get(k).map(String::as_str);
    let num = |k: &str| get(k).and_then(|v| v.trim().parse::<u32>().ok());
    let upgrade = get("upgrade_available") == Some("1");
    let bootcount = num("bootcount").unwrap_or(0);
    let bootlimit = num("bootlimit");
    let ustate = num("ustate").unwrap_or(0);
    let named = get(slot_var).map(str::to_owned);
    let other = |s: &str| slots.iter().find(|o| o.as_str() != s).cloned();
    // Armed and not booted yet: the variable already names the new slot.
    let (booted, pending) = match &named {
        Some(n) if upgrade && bootcount == 0 => (other(n), Some(n.clone())),
        _ => (named.clone(), None),
    };
    let failed = (ustate == 3 && !upgrade)
        .then(|| named.as_deref().and_then(other))
        .flatten();
    let detail = format!(
        "{slot_var}={} upgrade_available={} bootcount={bootcount} bootlimit={} ustate={ustate}",
        named.as_deref().unwrap_or("(unset)"),
        u8::from(upgrade),
        bootlimit.map_or("(unset)".into(), |l| l.to_string()),
    );
    BootStatus {
        backend: BootBackend::Uboot,
        booted,
        trial: upgrade && bootcount > 0,
        pending,
        rollback_reason: failed.as_ref().map(|f| match bootlimit {
            Some(l) if bootcount > l => format!(
                "U-Boot ran altbootcmd for slot {f}: bootcount {bootcount} passed bootlimit {l}"
            ),
            _ => format!("U-Boot marked slot {f} failed (ustate=3)"),
        }),
        failed,
        detail,
    }
}

pub struct Uboot {
    printenv: PathBuf,
    setenv: PathBuf,
    config: PathBuf,
    defaults: Option<PathBuf>,
    slot_var: String,
    slots: Vec<String>,
}

impl Uboot {
    pub fn new(c: &config::Boot) -> Uboot {
        Uboot {
            printenv: c.fw_printenv.clone(),
            setenv: c.fw_setenv.clone(),
            config: c.fw_env_config.clone(),
            defaults: c.fw_env_defaults.clone(),
            slot_var: c.uboot_slot_variable.clone(),
            slots: c.uboot_slots.clone(),
        }
    }

    fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["-c".into(), self.config.clone().into()];
        if let Some(d) = &self.defaults {
            a.push("-f".into());
            a.push(d.into());
        }
        a
    }

    fn vars(&self) -> Result<BTreeMap<String, String>, BootError> {
        Ok(parse_vars(&run(
            BootBackend::Uboot,
            &self.printenv,
            &self.args(),
            None,
        )?))
    }

    /// Sets several variables in one write (`-s -`: a script on stdin).
    fn set(&self, pairs: &[(&str, String)]) -> Result<(), BootError> {
        let script: String = pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let mut a = self.args();
        a.extend(["-s", "-"].map(OsString::from));
        run(BootBackend::Uboot, &self.setenv, &a, Some(&script)).map(drop)
    }

    fn err(&self, message: String) -> BootError {
        BootError {
            backend: BootBackend::Uboot,
            message,
        }
    }
}

impl Boot for Uboot {
    fn kind(&self) -> BootBackend {
        BootBackend::Uboot
    }

    fn read(&self) -> Result<BootStatus, BootError> {
        Ok(status_of(&self.vars()?, &self.slot_var, &self.slots))
    }

    fn mark_installed(&self) -> Result<(), BootError> {
        let s = self.read()?;
        let booted = s
            .booted
            .ok_or_else(|| self.err(format!("{} is not set", self.slot_var)))?;
        let other = self
            .slots
            .iter()
            .find(|o| **o != booted)
            .cloned()
            .unwrap_or_default();
        self.set(&[
            (self.slot_var.as_str(), other),
            ("upgrade_available", "1".into()),
            ("bootcount", "0".into()),
            ("ustate", "1".into()),
        ])
    }

    fn confirm(&self) -> Result<(), BootError> {
        self.set(&[
            ("upgrade_available", "0".into()),
            ("bootcount", "0".into()),
            ("ustate", "0".into()),
        ])
    }

    /// The next boot passes `bootlimit`, so U-Boot runs `altbootcmd`.
    fn reject(&self) -> Result<(), BootError> {
        let vars = self.vars()?;
        let limit = vars
            .get("bootlimit")
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| self.err("bootlimit is not set: cannot force the rollback".into()))?;
        self.set(&[("bootcount", limit.to_string())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(text: &str) -> BootStatus {
        status_of(&parse_vars(text), "boot_slot", &["A".into(), "B".into()])
    }

    #[test]
    fn an_update_through_its_states() {
        let s = st("boot_slot=A\nbootlimit=3\nupgrade_available=\n");
        assert_eq!(
            (s.booted.as_deref(), s.trial, s.pending),
            (Some("A"), false, None)
        );
        // Installed into B, not booted: the variable already says B.
        let s = st("boot_slot=B\nbootlimit=3\nupgrade_available=1\nbootcount=0\nustate=1\n");
        assert_eq!(
            (s.booted.as_deref(), s.pending.as_deref()),
            (Some("A"), Some("B"))
        );
        // Booted B (bootcount 1) on trial.
        let s = st("boot_slot=B\nbootlimit=3\nupgrade_available=1\nbootcount=1\nustate=1\n");
        assert_eq!(
            (s.booted.as_deref(), s.trial, s.pending),
            (Some("B"), true, None)
        );
        // altbootcmd ran.
        let s = st("boot_slot=A\nbootlimit=3\nupgrade_available=0\nbootcount=4\nustate=3\n");
        assert_eq!(
            (s.booted.as_deref(), s.trial, s.failed.as_deref()),
            (Some("A"), false, Some("B"))
        );
        assert_eq!(
            s.rollback_reason.as_deref(),
            Some("U-Boot ran altbootcmd for slot B: bootcount 4 passed bootlimit 3")
        );
        // Confirmed.
        let s = st("boot_slot=B\nbootlimit=3\nupgrade_available=0\nbootcount=0\nustate=0\n");
        assert_eq!(
            (s.booted.as_deref(), s.trial, s.failed),
            (Some("B"), false, None)
        );
        assert_eq!(
            s.detail,
            "boot_slot=B upgrade_available=0 bootcount=0 bootlimit=3 ustate=0"
        );
    }
}

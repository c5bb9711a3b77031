//! Activating an installed update: arming the new slot, the reboot policy (consent, window,
//! grace, a limit on reboots), and the verdict on the slot after the boot (health checks,
//! confirm, or the rollback).
//!
//! The source keeps the [`BootRecord`] with its own records and writes it through the `save`
//! callback before anything it says can happen (a reboot, a report).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::boot::{BootStatus, Verdict};
use crate::config::{BootBackend, MarkInstalled};

use super::Pipeline;

/// How long a reboot may take before the agent, still running, asks again.
pub const REBOOT_GRACE: Duration = Duration::from_secs(300);
/// Reboots asked for one update before it is given up.
pub const MAX_REBOOTS: u32 = 5;
/// Consent and reboot commands.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What an update armed in the bootloader, and how its trial goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// The slot armed for the next boot (`None`: a backend without slots).
    pub slot: Option<String>,
    /// The slot that ran when it was armed (the one a rollback returns to).
    pub from: Option<String>,
    /// The version the new slot must run (the artifact's `version`; `version` in TUF-only
    /// records of older agents).
    #[serde(alias = "version")]
    pub expected_version: Option<String>,
    /// Reboots the agent asked for, for this update.
    #[serde(default)]
    pub reboots: u32,
    /// A health check failed on trial: the agent went back to `from` (the message names it).
    #[serde(default)]
    pub failed_check: Option<String>,
}

/// What a look at the bootloader led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// The update ended: activated (the slot confirmed) or not (rolled back), and why.
    Ended { activated: bool, message: String },
    /// The armed slot waits for a reboot.
    PendingReboot,
    /// Nothing to do now (a reboot is under way, or the bootloader cannot be read).
    Wait,
}

/// What the reboot policy did.
#[derive(Debug, PartialEq, Eq)]
pub enum Rebooting {
    /// Rebooting, or waiting for the window, a consent or an operator.
    Wait,
    /// The device was rebooted too often without starting the new slot: the update ends.
    GaveUp(String),
}

impl Pipeline {
    /// Whether the boot backend has slots to switch (not `none`).
    pub fn has_slots(&self) -> bool {
        self.boot.kind() != BootBackend::None
    }

    /// After an install: the slot armed for the next boot (armed by the agent with
    /// `mark_installed = "agent"`), the slot running now, and the version expected; `Err`:
    /// why there is none.
    pub fn arm(&self, expected_version: Option<String>) -> Result<BootRecord, String> {
        let status = self.boot.read().map_err(|e| e.to_string())?;
        let (slot, from) = if !self.has_slots() {
            (None, None)
        } else if let Some(p) = status.pending.clone() {
            (Some(p), status.booted.clone())
        } else if self.settings.mark_installed == MarkInstalled::Agent {
            let s = self
                .boot
                .mark_installed()
                .and_then(|()| self.boot.read())
                .map_err(|e| e.to_string())?;
            match s.pending {
                Some(p) => (Some(p), status.booted.clone()),
                None => return Err(format!("the new slot could not be armed: {}", s.detail)),
            }
        } else {
            return Err(format!(
                "no slot is armed for the next boot ({}): SWUpdate marks it when it runs with a bootloader (`bootloader` in swupdate.cfg); else set boot.mark_installed = \"agent\"",
                status.detail
            ));
        };
        Ok(BootRecord {
            slot,
            from,
            expected_version,
            ..Default::default()
        })
    }

    /// What an armed record means for users.
    pub fn armed_message(&self, rec: &BootRecord) -> String {
        match &rec.slot {
            None => "no boot backend: nothing to switch".to_owned(),
            Some(s) => format!(
                "slot {s} armed ({}), expecting version {}; {}",
                self.boot.name(),
                rec.expected_version.as_deref().unwrap_or("(not given)"),
                crate::reboot::describe(&self.settings.reboot)
            ),
        }
    }

    /// A record rebuilt from the bootloader alone, for an update whose record was lost.
    pub fn record_from_bootloader(&self) -> Option<BootRecord> {
        let status = self
            .boot
            .read()
            .inspect_err(|e| tracing::warn!("{e}"))
            .ok()?;
        let slot = match (&status.pending, status.trial) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => status.booted.clone(),
            (None, false) => status.failed.clone().or(status.booted.clone()),
        };
        Some(BootRecord {
            slot: slot.filter(|_| self.has_slots()),
            ..Default::default()
        })
    }

    /// One look at the bootloader for `rec`'s slot, acting on what it says: a slot on trial
    /// is checked and confirmed, or sent back (and rebooted out of); a confirmed or rolled back
    /// slot ends the update. `save` writes the record (before any reboot).
    pub async fn settle<E>(
        &mut self,
        rec: &mut BootRecord,
        save: &mut impl FnMut(&BootRecord) -> Result<(), E>,
    ) -> Result<Settled, E> {
        let status = match self.boot.read() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{e}");
                return Ok(Settled::Wait);
            }
        };
        self.reporter.boot(status.booted.clone(), status.trial);
        let version = self.running_version();
        let version = version.as_deref().unwrap_or("(unknown)");
        Ok(match crate::boot::judge(&status, rec.slot.as_deref()) {
            Verdict::PendingReboot => Settled::PendingReboot,
            Verdict::Trial => {
                let slot = rec.slot.clone().unwrap_or_default();
                if rec.failed_check.is_none() {
                    crate::notify::status(&format!("slot {slot} on trial: health checks"));
                    let checked = crate::health::check(
                        &self.settings.health,
                        rec.expected_version.as_deref(),
                        &self.settings.version_file,
                    )
                    .await;
                    match checked {
                        Ok(()) => return Ok(self.confirm(&status, &slot, version)),
                        Err(why) => {
                            tracing::error!("slot {slot} on trial: {why}; going back");
                            rec.failed_check = Some(why);
                            save(rec)?;
                        }
                    }
                }
                // Not confirmed: the next boot goes back. Now, whatever the policy.
                if let Err(e) = self.boot.reject() {
                    tracing::error!("{e}");
                }
                self.reboot_now(rec, save).await?;
                Settled::Wait
            }
            Verdict::Confirmed => Settled::Ended {
                activated: true,
                message: match &rec.slot {
                    None => "installed (boot backend none: no trial boot)".to_owned(),
                    Some(s) => format!("slot {s} confirmed, running version {version}"),
                },
            },
            Verdict::RolledBack(why) => {
                let message = match (&rec.failed_check, &status.booted) {
                    (Some(check), Some(b)) => format!("rolled back to slot {b} ({check})"),
                    _ => why,
                };
                tracing::warn!("{message}");
                Settled::Ended {
                    activated: false,
                    message,
                }
            }
        })
    }

    fn confirm(&mut self, status: &BootStatus, slot: &str, version: &str) -> Settled {
        crate::faults::point("before confirm");
        if let Err(e) = self.boot.confirm() {
            tracing::error!("confirming slot {slot}: {e}");
            return Settled::Wait;
        }
        crate::faults::point("after confirm");
        self.reporter.boot(status.booted.clone(), false);
        tracing::info!("slot {slot} confirmed");
        Settled::Ended {
            activated: true,
            message: format!(
                "slot {slot} confirmed after the health checks, running version {version}"
            ),
        }
    }

    /// The slot is armed and not booted: reboot now (with consent), in the window, or leave
    /// it to an operator.
    pub async fn reboot_by_policy<E>(
        &mut self,
        rec: &mut BootRecord,
        save: &mut impl FnMut(&BootRecord) -> Result<(), E>,
    ) -> Result<Rebooting, E> {
        if !self.has_slots() {
            return Ok(Rebooting::Wait);
        }
        if rec.reboots >= MAX_REBOOTS && self.reboot_issued.is_none() {
            return Ok(Rebooting::GaveUp(format!(
                "the device was rebooted {} times but did not start the new slot",
                rec.reboots
            )));
        }
        let r = &self.settings.reboot;
        match crate::reboot::decide_now(r) {
            crate::reboot::Decision::Manual => {
                crate::notify::status("update installed: waiting for `cip-update-agent reboot`");
            }
            crate::reboot::Decision::Later(d) => {
                crate::notify::status(&format!(
                    "update installed: reboot in the window {} (in {})",
                    r.window.as_deref().unwrap_or(""),
                    humantime::format_duration(Duration::from_secs(d.as_secs()))
                ));
                self.next_wake = Some(Instant::now() + d);
            }
            crate::reboot::Decision::Now => {
                if let Some(consent) = r.consent_command.clone() {
                    if let Err(e) = crate::command::run_command(&consent, COMMAND_TIMEOUT).await {
                        tracing::info!("reboot deferred (no consent: {e})");
                        crate::notify::status(&format!("reboot deferred: no consent ({e})"));
                        self.next_wake = Some(Instant::now() + r.consent_retry);
                        return Ok(Rebooting::Wait);
                    }
                }
                self.reboot_now(rec, save).await?;
            }
        }
        Ok(Rebooting::Wait)
    }

    /// Runs the reboot command once (again only if the device is still up long after); the
    /// count of reboots is saved first.
    async fn reboot_now<E>(
        &mut self,
        rec: &mut BootRecord,
        save: &mut impl FnMut(&BootRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        if self
            .reboot_issued
            .is_some_and(|t| t.elapsed() < REBOOT_GRACE)
        {
            return Ok(());
        }
        rec.reboots += 1;
        save(rec)?;
        let target = match &rec.failed_check {
            Some(_) => format!("back to slot {}", rec.from.as_deref().unwrap_or("?")),
            None => format!("into slot {}", rec.slot.as_deref().unwrap_or("?")),
        };
        tracing::info!("rebooting {target}");
        crate::notify::status(&format!("rebooting {target}"));
        match crate::command::run_command(&self.settings.reboot.command, COMMAND_TIMEOUT).await {
            Ok(()) => self.reboot_issued = Some(Instant::now()),
            Err(e) => {
                tracing::error!("reboot command: {e}");
                self.next_wake = Some(Instant::now() + Duration::from_secs(60));
            }
        }
        Ok(())
    }
}

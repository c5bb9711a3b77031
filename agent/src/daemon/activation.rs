//! Firmware activation: arming the new slot, the reboot policy, and the verdict on the slot
//! after the reboot (health checks, confirm, or the rollback).

use std::time::{Duration, Instant};

use crate::boot::{self, Verdict};
use crate::config::MarkInstalled;
use crate::job::{BootRecord, JobView};

use super::{COMMAND_TIMEOUT, Daemon, MAX_REBOOTS, Next, REBOOT_GRACE, StepError};

impl Daemon {
    /// At start: every firmware job whose slot booted is judged from the bootloader and the
    /// journal alone (confirmed after the health checks, or ended as rolled back); wfx hears of
    /// it when it is reachable.
    pub(super) async fn settle_boot(&mut self) {
        let ids: Vec<String> = self
            .journal
            .jobs
            .values()
            .filter(|r| r.boot.is_some() && r.final_state.is_none())
            .map(|r| r.job_id.clone())
            .collect();
        for id in ids {
            match self.boot_step(&id).await {
                Ok(_) => {}
                Err(e) => tracing::warn!(job = %id, "after boot: {e}"),
            }
        }
    }

    /// Firmware in ACTIVATE: find (or, with `mark_installed = "agent"`, make) the armed slot,
    /// record it and the expected version, report ACTIVATING. The reboot follows in ACTIVATING.
    pub(super) async fn activate(&mut self, view: &JobView) -> Result<Next, StepError> {
        let expected_version = view
            .definition
            .as_ref()
            .ok()
            .and_then(|d| d.artifacts.iter().find_map(|a| a.version.clone()));
        let status = match self.boot.read() {
            Ok(s) => s,
            Err(e) => return self.terminate(view, &e.to_string(), None).await,
        };
        let (slot, from) = if self.boot.name() == "none" {
            (None, None)
        } else if let Some(p) = status.pending.clone() {
            (Some(p), status.booted.clone())
        } else if self.config.boot.mark_installed == MarkInstalled::Agent {
            let armed = self.boot.mark_installed().and_then(|()| self.boot.read());
            match armed {
                Ok(s) if s.pending.is_some() => (s.pending.clone(), status.booted.clone()),
                Ok(s) => {
                    let m = format!("the new slot could not be armed: {}", s.detail);
                    return self.terminate(view, &m, None).await;
                }
                Err(e) => return self.terminate(view, &e.to_string(), None).await,
            }
        } else {
            let m = format!(
                "no slot is armed for the next boot ({}): SWUpdate marks it when it runs with a bootloader (`bootloader` in swupdate.cfg); else set boot.mark_installed = \"agent\"",
                status.detail
            );
            return self.terminate(view, &m, None).await;
        };
        let message = match &slot {
            None => "no boot backend: nothing to switch".to_owned(),
            Some(s) => format!(
                "slot {s} armed ({}), expecting version {}; {}",
                self.boot.name(),
                expected_version.as_deref().unwrap_or("(not given)"),
                crate::reboot::describe(&self.config.reboot)
            ),
        };
        let r = self.record_mut(view);
        if r.boot.as_ref().map(|b| &b.slot) != Some(&slot) {
            r.boot = Some(BootRecord {
                slot,
                from,
                expected_version,
                ..Default::default()
            });
        }
        self.save()?;
        self.report(view, "ACTIVATING", None, &message, None)
            .await?;
        Ok(Next::Reload)
    }

    /// Firmware in ACTIVATING: judge the slot; reboot into it as the policy says.
    pub(super) async fn check_boot(&mut self, view: &JobView) -> Result<Next, StepError> {
        if self
            .journal
            .jobs
            .get(view.id.as_str())
            .is_none_or(|r| r.boot.is_none())
        {
            // The journal lost the record (set aside as corrupt): rebuild it from the bootloader.
            let status = match self.boot.read() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("{e}");
                    return Ok(Next::Wait);
                }
            };
            let slot = match (&status.pending, status.trial) {
                (Some(p), _) => Some(p.clone()),
                (None, true) => status.booted.clone(),
                (None, false) => status.failed.clone().or(status.booted.clone()),
            };
            let slot = if self.boot.name() == "none" {
                None
            } else {
                slot
            };
            self.record_mut(view).boot = Some(BootRecord {
                slot,
                ..Default::default()
            });
            self.save()?;
        }
        match self.boot_step(&view.id).await? {
            BootStep::Ended => Ok(Next::Reload),
            BootStep::Wait => Ok(Next::Wait),
            BootStep::PendingReboot => self.reboot_by_policy(view).await,
        }
    }

    /// One look at the bootloader for the job's armed slot, acting on what it says: a slot on
    /// trial is checked and confirmed, or sent back; a confirmed or rolled back slot ends the
    /// job (in the journal; reported by the caller or the next reconcile).
    pub(super) async fn boot_step(&mut self, id: &str) -> Result<BootStep, StepError> {
        let Some(rec) = self.journal.jobs.get(id).and_then(|r| r.boot.clone()) else {
            return Ok(BootStep::Wait);
        };
        let status = match self.boot.read() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(job = %id, "{e}");
                return Ok(BootStep::Wait);
            }
        };
        self.reporter.boot(status.booted.clone(), status.trial);
        let version = crate::device::read_version(&self.config.device.version_file);
        match boot::judge(&status, rec.slot.as_deref()) {
            Verdict::PendingReboot => Ok(BootStep::PendingReboot),
            Verdict::Trial => {
                if rec.failed_check.is_none() {
                    let slot = rec.slot.clone().unwrap_or_default();
                    crate::notify::status(&format!("slot {slot} on trial: health checks"));
                    let checked = crate::health::check(
                        &self.config.health,
                        rec.expected_version.as_deref(),
                        &self.config.device.version_file,
                    )
                    .await;
                    match checked {
                        Ok(()) => {
                            crate::faults::point("before confirm");
                            if let Err(e) = self.boot.confirm() {
                                tracing::error!(job = %id, "confirming slot {slot}: {e}");
                                return Ok(BootStep::Wait);
                            }
                            crate::faults::point("after confirm");
                            self.reporter.boot(status.booted.clone(), false);
                            tracing::info!(job = %id, "slot {slot} confirmed");
                            let m = format!(
                                "slot {slot} confirmed after the health checks, running version {}",
                                version.as_deref().unwrap_or("(unknown)")
                            );
                            self.end(id, "ACTIVATED", &m)?;
                            return Ok(BootStep::Ended);
                        }
                        Err(why) => {
                            tracing::error!(job = %id, "slot {slot} on trial: {why}; going back");
                            if let Some(b) =
                                self.journal.jobs.get_mut(id).and_then(|r| r.boot.as_mut())
                            {
                                b.failed_check = Some(why);
                            }
                            self.save()?;
                        }
                    }
                }
                // Not confirmed: the next boot goes back. Now, whatever the policy.
                if let Err(e) = self.boot.reject() {
                    tracing::error!(job = %id, "{e}");
                }
                self.reboot_now(id).await?;
                Ok(BootStep::Wait)
            }
            Verdict::Confirmed => {
                let m = match &rec.slot {
                    None => "installed (boot backend none: no trial boot)".to_owned(),
                    Some(s) => format!(
                        "slot {s} confirmed, running version {}",
                        version.as_deref().unwrap_or("(unknown)")
                    ),
                };
                self.end(id, "ACTIVATED", &m)?;
                Ok(BootStep::Ended)
            }
            Verdict::RolledBack(why) => {
                let m = match (&rec.failed_check, &status.booted) {
                    (Some(check), Some(b)) => format!("rolled back to slot {b} ({check})"),
                    _ => why,
                };
                tracing::warn!(job = %id, "{m}");
                self.end(id, "TERMINATED", &m)?;
                Ok(BootStep::Ended)
            }
        }
    }

    /// The slot is armed and not booted: reboot now, later, or leave it to an operator.
    pub(super) async fn reboot_by_policy(&mut self, view: &JobView) -> Result<Next, StepError> {
        if self.boot.name() == "none" {
            return Ok(Next::Wait);
        }
        let reboots = self
            .journal
            .jobs
            .get(view.id.as_str())
            .and_then(|r| r.boot.as_ref())
            .map_or(0, |b| b.reboots);
        if reboots >= MAX_REBOOTS && self.reboot_issued.is_none() {
            let m =
                format!("the device was rebooted {reboots} times but did not start the new slot");
            return self.terminate(view, &m, None).await;
        }
        let r = &self.config.reboot;
        match crate::reboot::decide_now(r) {
            crate::reboot::Decision::Manual => {
                crate::notify::status("update installed: waiting for `cip-update-agent reboot`");
                Ok(Next::Wait)
            }
            crate::reboot::Decision::Later(d) => {
                crate::notify::status(&format!(
                    "update installed: reboot in the window {} (in {})",
                    r.window.as_deref().unwrap_or(""),
                    humantime::format_duration(Duration::from_secs(d.as_secs()))
                ));
                self.next_wake = Some(Instant::now() + d);
                Ok(Next::Wait)
            }
            crate::reboot::Decision::Now => {
                if let Some(consent) = r.consent_command.clone() {
                    if let Err(e) = crate::command::run_command(&consent, COMMAND_TIMEOUT).await {
                        let retry = r.consent_retry;
                        tracing::info!(job = %view.id, "reboot deferred (no consent: {e})");
                        crate::notify::status(&format!("reboot deferred: no consent ({e})"));
                        self.next_wake = Some(Instant::now() + retry);
                        return Ok(Next::Wait);
                    }
                }
                self.reboot_now(&view.id).await?;
                Ok(Next::Wait)
            }
        }
    }

    /// Runs the reboot command once (again only if the device is still up long after).
    pub(super) async fn reboot_now(&mut self, id: &str) -> Result<(), StepError> {
        if self
            .reboot_issued
            .is_some_and(|t| t.elapsed() < REBOOT_GRACE)
        {
            return Ok(());
        }
        if let Some(b) = self.journal.jobs.get_mut(id).and_then(|r| r.boot.as_mut()) {
            b.reboots += 1;
        }
        self.save()?;
        let target = self
            .journal
            .jobs
            .get(id)
            .and_then(|r| r.boot.as_ref())
            .map(|b| match &b.failed_check {
                Some(_) => format!("back to slot {}", b.from.as_deref().unwrap_or("?")),
                None => format!("into slot {}", b.slot.as_deref().unwrap_or("?")),
            })
            .unwrap_or_default();
        tracing::info!(job = %id, "rebooting {target}");
        crate::notify::status(&format!("rebooting {target}"));
        match crate::command::run_command(&self.config.reboot.command, COMMAND_TIMEOUT).await {
            Ok(()) => self.reboot_issued = Some(Instant::now()),
            Err(e) => {
                tracing::error!(job = %id, "reboot command: {e}");
                self.next_wake = Some(Instant::now() + Duration::from_secs(60));
            }
        }
        Ok(())
    }
}

/// What a look at the bootloader led to.
pub(super) enum BootStep {
    /// A final state is recorded.
    Ended,
    /// The armed slot waits for a reboot.
    PendingReboot,
    /// Nothing to do now (a reboot is under way, or the bootloader cannot be read).
    Wait,
}

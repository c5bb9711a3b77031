//! A wfx firmware job's activation on the pipeline: ACTIVATE arms the slot, ACTIVATING reboots
//! by the policy and judges the slot after the boot; the journal holds the job's boot record.

use crate::pipeline::activate::{BootRecord, Rebooting, Settled};
use crate::sources::wfx::job::JobView;
use crate::state::State;

use super::{Daemon, Next, StepError};

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
            if let Err(e) = self.boot_step(&id).await {
                tracing::warn!(job = %id, "after boot: {e}");
            }
        }
    }

    /// Firmware in ACTIVATE: find (or, with `mark_installed = "agent"`, make) the armed slot,
    /// record it and the expected version, report ACTIVATING. The reboot follows in ACTIVATING.
    pub(super) async fn activate(&mut self, view: &JobView) -> Result<Next, StepError> {
        let armed = match self.pipe.arm(view.target_version().map(str::to_owned)) {
            Ok(a) => a,
            Err(m) => return self.terminate(view, &m, None).await,
        };
        let message = self.pipe.armed_message(&armed);
        let r = self.record_mut(view);
        if r.boot.as_ref().map(|b| &b.slot) != Some(&armed.slot) {
            r.boot = Some(armed);
        }
        self.save()?;
        self.report(view, State::Activating, None, &message, None)
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
            let Some(rec) = self.pipe.record_from_bootloader() else {
                return Ok(Next::Wait);
            };
            self.record_mut(view).boot = Some(rec);
            self.save()?;
        }
        match self.boot_step(view.id.as_str()).await? {
            Settled::Ended { .. } => Ok(Next::Reload),
            Settled::Wait => Ok(Next::Wait),
            Settled::PendingReboot => {
                let Some(mut rec) = self.boot_record(view.id.as_str()) else {
                    return Ok(Next::Wait);
                };
                let (pipe, journal, store) = (&mut self.pipe, &mut self.journal, &self.store);
                let id = view.id.as_str();
                let mut save = |b: &BootRecord| save_boot(journal, store, id, b);
                match pipe.reboot_by_policy(&mut rec, &mut save).await? {
                    Rebooting::Wait => Ok(Next::Wait),
                    Rebooting::GaveUp(m) => self.terminate(view, &m, None).await,
                }
            }
        }
    }

    fn boot_record(&self, id: &str) -> Option<BootRecord> {
        self.journal.jobs.get(id).and_then(|r| r.boot.clone())
    }

    /// One look at the bootloader for the job's armed slot ([`crate::pipeline::Pipeline::settle`]);
    /// an end is recorded in the journal (reported by the caller or the next reconcile).
    async fn boot_step(&mut self, id: &str) -> Result<Settled, StepError> {
        let Some(mut rec) = self.boot_record(id) else {
            return Ok(Settled::Wait);
        };
        let (pipe, journal, store) = (&mut self.pipe, &mut self.journal, &self.store);
        let mut save = |b: &BootRecord| save_boot(journal, store, id, b);
        let settled = pipe.settle(&mut rec, &mut save).await?;
        if let Settled::Ended { activated, message } = &settled {
            // (Not activated after the slot was tried: the bootloader went back.)
            self.end(id, State::end(*activated), !*activated, message)?;
        }
        Ok(settled)
    }
}

/// Writes a job's boot record into the journal, and the journal to disk.
fn save_boot(
    journal: &mut crate::sources::wfx::journal::Journal,
    store: &crate::sources::wfx::journal::Store,
    id: &str,
    boot: &BootRecord,
) -> Result<(), StepError> {
    if let Some(r) = journal.jobs.get_mut(id) {
        r.boot = Some(boot.clone());
    }
    store.save(journal)?;
    crate::faults::point("journal save");
    Ok(())
}

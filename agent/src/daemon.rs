//! `cip-update-agent run`: takes DAU jobs from wfx and carries them through, one at a time,
//! oldest first. Decisions come from [`crate::job::decide`]; this module runs them: wfx reports,
//! SWUpdate installs, staged downloads, and the journal written before every report.
//!
//! Work is found by the event stream (woken on every event for this client) and by a reconciling
//! poll at start, after every reconnect of the stream and every poll interval.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::boot::{self, Boot, Verdict};
use crate::config::{Config, MarkInstalled, Wfx};
use crate::install::{self, Observer};
use crate::job::{self, Action, BootRecord, Definition, Final, Flow, JobView, Record};
use crate::journal::{Journal, LastResult, Store};
use crate::mqtt::Publisher;
use crate::report::Reporter;
use crate::source::{self, Opened, Source};
use crate::swupdate::{InstallRequest, ProgressMsg, RecoveryStatus, RunType, Swupdate};
use crate::tuf::artifacts::{self as trust, Refusal, SharedVerifier, Trust};
use crate::wfx::backoff::jittered;
use crate::wfx::{Job, JobStatus, WfxClient, WfxError};

/// How often a running download or install asks wfx whether its job still exists (besides
/// the DELETE events).
const GONE_CHECK: Duration = Duration::from_secs(10);
/// Log lines of SWUpdate sent to wfx with a failure (`context.log`).
const CONTEXT_LINES: usize = 20;
/// wfx's limit on `message`.
const MESSAGE_MAX: usize = 1024;

/// Why the daemon cannot run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no [wfx] section in the configuration: nothing to take jobs from")]
    NoWfx,
    #[error("device.client_id is not set and the device is not onboarded")]
    NoClientId,
    #[error(transparent)]
    Http(#[from] crate::http::HttpSetupError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[error(transparent)]
    Tuf(#[from] crate::tuf::artifacts::TrustSetupError),
}

/// What the device is, for the MQTT inventory.
fn inventory(config: &Config) -> crate::mqtt::Inventory {
    let mut inv = crate::mqtt::Inventory::new();
    inv.hardware_revision = std::fs::read_to_string(&config.device.hwrevision_file)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if let Ok(text) = std::fs::read_to_string(&config.device.version_file) {
        inv.os_release = crate::mqtt::payload::os_release_fields(&text);
    }
    inv.swupdate_wire = Some(config.swupdate.wire.to_string());
    inv.boot_backend = Some(config.boot.backend.name().to_owned());
    inv
}

/// The running agent.
pub struct Daemon {
    wfx: WfxClient,
    wfx_cfg: Wfx,
    http: reqwest::Client,
    swupdate: Swupdate,
    store: Store,
    journal: Journal,
    staging: PathBuf,
    deleted: Arc<Deleted>,
    boot: Box<dyn Boot>,
    reporter: Reporter,
    inventory: crate::mqtt::Inventory,
    /// `[boot]`, `[reboot]`, `[health]`, `[device]`.
    config: Config,
    /// Wake the main loop by then (a reboot window opening, a consent to ask again).
    next_wake: Option<Instant>,
    /// When this process asked for a reboot: not again while the reboot is under way.
    reboot_issued: Option<Instant>,
    /// `[tuf]`: every artifact must be a target; `None`: not verified (development).
    trust: Option<Trust>,
}

/// How long a reboot may take before the agent, still running, asks again.
const REBOOT_GRACE: Duration = Duration::from_secs(300);
/// Reboots asked for one job before it is given up.
const MAX_REBOOTS: u32 = 5;
/// Consent and reboot commands.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl Daemon {
    pub fn new(config: &Config) -> Result<Daemon, RunError> {
        let wfx_cfg = config.wfx.clone().ok_or(RunError::NoWfx)?;
        // (the MQTT publisher needs the client-id below)
        let client_id = config
            .device
            .client_id
            .clone()
            .ok_or(RunError::NoClientId)?;
        let http = crate::http::client(&config.tls, &config.proxy, Duration::from_secs(30))?;
        let store = Store::new(&config.state_dir);
        let journal = match store.load() {
            // A journal that cannot be read must not stop updates for good: keep it for a
            // post-mortem, start empty, and let the reconcile with wfx find the jobs again.
            Err(e @ crate::journal::JournalError::Corrupt { .. }) => {
                let aside = store.path().with_extension("json.corrupt");
                tracing::error!("{e}; moved to {} and starting afresh", aside.display());
                std::fs::rename(store.path(), &aside).map_err(|source| {
                    crate::journal::JournalError::Io {
                        path: aside.clone(),
                        source,
                    }
                })?;
                store.load()?
            }
            other => other?,
        };
        let trust = Trust::new(config)?;
        if trust.is_none() {
            tracing::warn!(
                "no [tuf] section: artifacts are NOT verified against TUF metadata (development mode only)"
            );
        }
        Ok(Daemon {
            trust,
            wfx: WfxClient::new(&wfx_cfg.url.0, &client_id, http.clone()),
            wfx_cfg,
            http,
            swupdate: Swupdate::new(config.swupdate.socket_paths(), config.swupdate.wire),
            store,
            journal,
            staging: config.state_dir.join("staging"),
            deleted: Arc::new(Deleted::default()),
            boot: boot::from_config(&config.boot),
            reporter: Reporter::new(
                match &config.mqtt {
                    Some(m) => Some(Publisher::start(m, &client_id)?),
                    None => None,
                },
                crate::status::read_version(&config.device.version_file),
            ),
            inventory: inventory(config),
            config: config.clone(),
            next_wake: None,
            reboot_issued: None,
        })
    }

    /// Runs until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        crate::faults::arm();
        // READY before the health checks: systemd is not `running` until this unit is ready.
        crate::notify::ready();
        let watchdog = crate::notify::watchdog_period().map(crate::notify::spawn_watchdog);
        if self.boot.name() == "none" {
            tracing::warn!("boot backend none: no A/B rollback, updates are final once installed");
        }
        self.reporter.inventory(self.inventory.clone());
        let last_error = self
            .journal
            .last
            .as_ref()
            .filter(|l| l.state == "TERMINATED")
            .map(|l| l.message.clone());
        if let Ok(b) = self.boot.read() {
            self.reporter.boot(b.booted, b.trial);
        }
        if self.journal.jobs.is_empty() {
            self.reporter.idle(last_error);
        }
        tokio::pin!(stop);
        // A slot on trial is checked and confirmed (or sent back) first, without the network.
        tokio::select! {
            () = &mut stop => {
                self.shutdown(watchdog).await;
                return;
            }
            () = self.settle_boot() => {}
        }
        let wake = Arc::new(Notify::new());
        let events = tokio::spawn(follow_events(
            self.wfx.clone(),
            wake.clone(),
            self.deleted.clone(),
        ));
        // Beats while waiting, several per watchdog period.
        let beat_every = crate::notify::watchdog_period().map_or(Duration::from_secs(10), |p| {
            (p / 4).max(Duration::from_millis(50))
        });
        'run: loop {
            crate::notify::beat();
            crate::faults::hang_point().await;
            // SIGTERM stops at once, even mid-step: every step is journaled before it is
            // reported, so stopping at any await is a power cut the journal is made for.
            tokio::select! {
                () = &mut stop => break 'run,
                r = self.reconcile() => {
                    if let Err(e) = r {
                        tracing::warn!("{e}");
                    }
                }
            }
            let mut wait = jittered(self.wfx_cfg.poll_interval, fastrand::f64());
            if let Some(t) = self.next_wake.take() {
                wait = wait.min(t.saturating_duration_since(Instant::now()));
            }
            let until = tokio::time::Instant::now() + wait;
            loop {
                crate::notify::beat();
                crate::faults::hang_point().await;
                tokio::select! {
                    () = &mut stop => break 'run,
                    () = wake.notified() => break,
                    () = tokio::time::sleep_until(until) => break,
                    () = tokio::time::sleep(beat_every) => {}
                }
            }
        }
        events.abort();
        self.shutdown(watchdog).await;
    }

    async fn shutdown(&self, watchdog: Option<tokio::task::JoinHandle<()>>) {
        crate::notify::stopping();
        crate::notify::status("stopping");
        if let Some(w) = watchdog {
            w.abort();
        }
        self.reporter.shutdown().await;
    }

    /// At start: every firmware job whose slot booted is judged from the bootloader and the
    /// journal alone (confirmed after the health checks, or ended as rolled back); wfx hears of
    /// it when it is reachable.
    async fn settle_boot(&mut self) {
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

    /// Lists the open jobs and drives each, oldest first, until it waits for wfx.
    pub async fn reconcile(&mut self) -> Result<(), StepError> {
        let jobs = self.wfx.open_jobs().await?;
        let open: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
        // Records of jobs that are no longer open (deleted, or closed while away).
        let gone: Vec<String> = self
            .journal
            .jobs
            .keys()
            .filter(|id| !open.contains(id))
            .cloned()
            .collect();
        for id in gone {
            match self.wfx.job(&id).await {
                Ok(job) => self.drive(job).await?,
                Err(e) if e.is_not_found() => self.forget(&id).await?,
                Err(e) => return Err(e.into()),
            }
        }
        for job in jobs {
            if Flow::from_name(job.workflow.as_ref().map_or("", |w| w.name.as_str())).is_none() {
                continue; // not a DAU job (onboarding has its own client)
            }
            self.drive(job).await?;
            // One at a time: a job still open after driving waits for wfx; later ones too.
            if self.journal.jobs.values().any(|r| r.final_state.is_none()) {
                break;
            }
        }
        Ok(())
    }

    /// Runs the decisions for one job until it has to wait.
    async fn drive(&mut self, mut job: Job) -> Result<(), StepError> {
        for _ in 0..64 {
            crate::notify::beat();
            let Some(view) = view_of(&job) else {
                return Ok(());
            };
            let action = job::decide(&view, self.journal.jobs.get(&view.id));
            tracing::info!(job = %view.id, state = %view.state, ?action, "decided");
            match self.execute(&view, action).await {
                Ok(Next::Wait) => return Ok(()),
                Ok(Next::Reload) => {}
                Err(StepError::Wfx(e)) if e.is_not_found() => {
                    tracing::info!(job = %view.id, "the job was deleted");
                    self.forget(&view.id).await?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            job = match self.wfx.job(&view.id).await {
                Ok(j) => j,
                Err(e) if e.is_not_found() => {
                    self.forget(&view.id).await?;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
        }
        tracing::warn!(job = %job.id, "no progress after 64 steps; waiting");
        Ok(())
    }

    /// A journal that cannot be written stops progress: nothing is reported that it does not hold.
    fn save(&mut self) -> Result<(), StepError> {
        self.store.save(&self.journal)?;
        crate::faults::point("journal save");
        Ok(())
    }

    fn record_mut(&mut self, view: &JobView) -> &mut Record {
        self.journal
            .jobs
            .entry(view.id.clone())
            .or_insert_with(|| Record::new(view))
    }

    async fn report(
        &mut self,
        view: &JobView,
        state: &str,
        progress: Option<u8>,
        message: &str,
        context: Option<serde_json::Value>,
    ) -> Result<(), StepError> {
        let status = JobStatus {
            state: state.into(),
            progress,
            message: (!message.is_empty()).then(|| truncate(message, MESSAGE_MAX)),
            context,
            ..Default::default()
        };
        let id = view.id.as_str();
        // The device's own result is recorded first: `status` never lags behind what wfx shows
        // (if wfx cannot be told now, the job's final state is reported again later).
        if matches!(state, "ACTIVATED" | "TERMINATED") {
            self.journal.last = Some(LastResult {
                job_id: id.to_owned(),
                state: state.to_owned(),
                message: truncate(message, MESSAGE_MAX),
            });
            self.save()?;
        }
        self.wfx.put_status(id, &status).await?;
        self.reporter.job_state(view, state, progress, message);
        Ok(())
    }

    async fn execute(&mut self, view: &JobView, action: Action) -> Result<Next, StepError> {
        match action {
            Action::Wait => Ok(Next::Wait),
            Action::Report {
                state: "TERMINATED",
                message,
            } => self.terminate(view, &message, None).await,
            Action::Report { state, message } => {
                let progress =
                    matches!(state, "INSTALLED" | "DOWNLOADED" | "ACTIVATED").then_some(100);
                self.report(view, state, progress, &message, None).await?;
                Ok(Next::Reload)
            }
            Action::ReportFinal(f) => {
                let progress = (f.state == "ACTIVATED").then_some(100);
                self.report(view, &f.state, progress, &f.message, None)
                    .await?;
                Ok(Next::Reload)
            }
            Action::Restart => {
                self.remove_staged(&view.id).await;
                self.journal.jobs.insert(view.id.clone(), Record::new(view));
                self.save()?;
                Ok(Next::Reload)
            }
            Action::Forget => {
                self.forget(&view.id).await?;
                Ok(Next::Wait)
            }
            Action::Download => self.download(view).await,
            Action::Install { index, dry_run } => self.install(view, index, dry_run).await,
            Action::Recover { index } => self.recover(view, index).await,
            Action::Activate => self.activate(view).await,
            Action::CheckBoot => self.check_boot(view).await,
        }
    }

    /// Firmware in ACTIVATE: find (or, with `mark_installed = "agent"`, make) the armed slot,
    /// record it and the expected version, report ACTIVATING. The reboot follows in ACTIVATING.
    async fn activate(&mut self, view: &JobView) -> Result<Next, StepError> {
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
    async fn check_boot(&mut self, view: &JobView) -> Result<Next, StepError> {
        if self
            .journal
            .jobs
            .get(&view.id)
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
    async fn boot_step(&mut self, id: &str) -> Result<BootStep, StepError> {
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
        let version = crate::status::read_version(&self.config.device.version_file);
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

    /// Records a final state (reported by `decide`'s ReportFinal).
    fn end(&mut self, id: &str, state: &str, message: &str) -> Result<(), StepError> {
        if let Some(r) = self.journal.jobs.get_mut(id) {
            r.final_state = Some(Final {
                state: state.into(),
                message: truncate(message, MESSAGE_MAX),
            });
        }
        self.save()
    }

    /// The slot is armed and not booted: reboot now, later, or leave it to an operator.
    async fn reboot_by_policy(&mut self, view: &JobView) -> Result<Next, StepError> {
        if self.boot.name() == "none" {
            return Ok(Next::Wait);
        }
        let reboots = self
            .journal
            .jobs
            .get(&view.id)
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
                    if let Err(e) = crate::reboot::run_command(&consent, COMMAND_TIMEOUT).await {
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
    async fn reboot_now(&mut self, id: &str) -> Result<(), StepError> {
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
        match crate::reboot::run_command(&self.config.reboot.command, COMMAND_TIMEOUT).await {
            Ok(()) => self.reboot_issued = Some(Instant::now()),
            Err(e) => {
                tracing::error!(job = %id, "reboot command: {e}");
                self.next_wake = Some(Instant::now() + Duration::from_secs(60));
            }
        }
        Ok(())
    }

    async fn forget(&mut self, id: &str) -> Result<(), StepError> {
        self.remove_staged(id).await;
        self.deleted.ids.lock().expect("deleted lock").remove(id);
        if self.journal.jobs.remove(id).is_some() {
            self.save()?;
            if self.journal.jobs.is_empty() {
                let last_error = self
                    .journal
                    .last
                    .as_ref()
                    .filter(|l| l.job_id == id && l.state == "TERMINATED")
                    .map(|l| l.message.clone());
                self.reporter.idle(last_error);
            }
        }
        Ok(())
    }

    fn staged_path(&self, id: &str, index: usize) -> PathBuf {
        self.staging.join(id).join(format!("{index}.swu"))
    }

    async fn remove_staged(&self, id: &str) {
        let _ = tokio::fs::remove_dir_all(self.staging.join(id)).await;
    }

    /// Phased: stages every artifact (resuming a partial file with a Range request).
    async fn download(&mut self, view: &JobView) -> Result<Next, StepError> {
        let def = view
            .definition
            .clone()
            .expect("decide checked the definition");
        if self
            .journal
            .jobs
            .get(&view.id)
            .is_some_and(|r| r.definition_hash != view.definition_hash)
        {
            self.journal.jobs.insert(view.id.clone(), Record::new(view));
        }
        self.record_mut(view);
        self.save()?;
        if view.state == "DOWNLOAD" {
            self.report(view, "DOWNLOADING", Some(0), "", None).await?;
        }
        let n = def.artifacts.len();
        for (i, a) in def.artifacts.iter().enumerate() {
            let path = self.staged_path(&view.id, i);
            // TUF first: nothing is fetched for an artifact that is not a target.
            let target = match self.trusted_target(view, a, "DOWNLOADING").await? {
                Ok(t) => t,
                Err(next) => return Ok(next),
            };
            let gone = job_gone(
                self.wfx.clone(),
                self.deleted.clone(),
                view.id.clone(),
                GONE_CHECK,
            );
            let max = target.as_ref().map(|t| t.length);
            let idle = self.trust.as_ref().map(Trust::read_timeout);
            // A zchunk delta is rebuilt into the staged file (a native delta target is not
            // staged: the install step verifies the staged file against the full target).
            let mut rebuilt = None;
            if let (Some(t), false) = (target.clone(), path.exists()) {
                let path = self
                    .delta_path_unless_gone(view, &t, "DOWNLOADING", false)
                    .await?;
                match path {
                    DeltaPath::Rebuilt(o) => rebuilt = Some(o),
                    DeltaPath::Ended(next) => return Ok(next),
                    DeltaPath::Full | DeltaPath::Native(..) => {}
                }
            }
            let fetch = async {
                match rebuilt {
                    Some(o) => write_staged(o, &path).await,
                    None => self.fetch_to(&a.uri, &path, max, idle).await,
                }
            };
            let fetched = tokio::select! {
                r = fetch => r,
                () = gone => {
                    tracing::info!(job = %view.id, "the job was deleted during the download: stopped");
                    self.forget(&view.id).await?;
                    return Ok(Next::Wait);
                }
            };
            let fetched = fetched.and_then(|()| match &target {
                // The whole staged file, resumed parts included, against the target.
                Some(t) => trust::verify_file(&path, t).inspect_err(|_| {
                    let _ = std::fs::remove_file(&path);
                }),
                None => Ok(()),
            });
            if let Err(msg) = fetched {
                let message = format!("download of {} failed: {msg}", a.uri);
                self.record_mut(view).final_state = Some(Final {
                    state: "TERMINATED".into(),
                    message: message.clone(),
                });
                self.save()?;
                self.report(view, "TERMINATED", None, &message, None)
                    .await?;
                return Ok(Next::Reload);
            }
            let pct = ((i + 1) * 100 / n) as u8;
            self.report(
                view,
                "DOWNLOADING",
                Some(pct),
                &format!("{} of {n} artifact(s)", i + 1),
                None,
            )
            .await?;
        }
        self.record_mut(view).downloaded = true;
        self.save()?;
        Ok(Next::Reload)
    }

    /// With `[tuf]`: the artifact's target (`Ok(Some)`), or the step's end: TERMINATED for an
    /// untrusted artifact, a wait (reported in `state` with the reason) for expired metadata
    /// or an unreachable repository. Without `[tuf]`: `Ok(None)`.
    async fn trusted_target(
        &mut self,
        view: &JobView,
        artifact: &crate::job::Artifact,
        state: &str,
    ) -> Result<Result<Option<crate::tuf::TargetInfo>, Next>, StepError> {
        let Some(t) = self.trust.as_mut() else {
            return Ok(Ok(None));
        };
        match t.resolve(artifact).await {
            Ok(info) => Ok(Ok(Some(info))),
            Err(Refusal::Terminate(message)) => {
                tracing::warn!(job = %view.id, "{message}");
                Ok(Err(self.terminate(view, &message, None).await?))
            }
            Err(Refusal::Wait(message)) => {
                tracing::warn!(job = %view.id, "{message}");
                self.report(view, state, None, &message, None).await?;
                Ok(Err(Next::Wait))
            }
        }
    }

    /// Downloads `uri` to `path`, resuming a partial file; `max`: the most bytes the file may
    /// have (the TUF target's length), checked while streaming; `idle`: the longest wait for
    /// the next bytes (slow retrieval).
    async fn fetch_to(
        &self,
        uri: &str,
        path: &std::path::Path,
        max: Option<u64>,
        idle: Option<Duration>,
    ) -> Result<(), String> {
        use futures_util::StreamExt;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut have = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if max.is_some_and(|m| have > m) {
            let _ = tokio::fs::remove_file(path).await;
            have = 0;
        }
        let mut req = self.http.get(uri);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = req.send().await.map_err(|e| source::error_chain(&e))?;
        let status = resp.status();
        let append = status == reqwest::StatusCode::PARTIAL_CONTENT;
        if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
            return Ok(()); // complete already
        }
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .await
            .map_err(|e| e.to_string())?;
        let mut body = resp.bytes_stream();
        let mut size = if append { have } else { 0 };
        loop {
            let next = match idle {
                Some(d) => tokio::time::timeout(d, body.next())
                    .await
                    .map_err(|_| format!("no data for {}s (slow retrieval)", d.as_secs()))?,
                None => body.next().await,
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| source::error_chain(&e))?;
            crate::notify::beat();
            size += chunk.len() as u64;
            if let Some(m) = max.filter(|m| size > *m) {
                drop(f);
                let _ = tokio::fs::remove_file(path).await;
                return Err(format!(
                    "more than the {m} bytes of the TUF target arrived (endless data?)"
                ));
            }
            f.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        f.sync_all().await.map_err(|e| e.to_string())
    }

    async fn install(
        &mut self,
        view: &JobView,
        index: usize,
        dry_run: bool,
    ) -> Result<Next, StepError> {
        let def: Definition = view
            .definition
            .clone()
            .expect("decide checked the definition");
        let n = def.artifacts.len();
        let artifact = &def.artifacts[index];
        self.record_mut(view);
        self.save()?;
        let label = artifact
            .name
            .clone()
            .unwrap_or_else(|| artifact.uri.clone());
        // TUF before any byte: an untrusted artifact ends the job here.
        let target = match self.trusted_target(view, artifact, "INSTALLING").await? {
            Ok(t) => t,
            Err(next) => return Ok(next),
        };
        self.report(
            view,
            "INSTALLING",
            Some((index * 100 / n) as u8),
            &format!("installing {label} ({} of {n})", index + 1),
            None,
        )
        .await?;
        let staged = self.staged_path(&view.id, index);
        let src = if view.flow == Flow::Phased && staged.exists() {
            Source::File(staged)
        } else {
            match Source::parse(&artifact.uri) {
                Ok(s) => s,
                Err(e) => return self.terminate(view, &e, None).await,
            }
        };
        // Delta (a zchunk companion, or a SWUpdate-native delta target) when the target has one.
        let (mut target, mut src) = (target, src);
        let mut rebuilt: Option<Opened> = None;
        let mut native = false;
        if let (Some(t), false) = (target.clone(), matches!(src, Source::File(_))) {
            let path = self
                .delta_path_unless_gone(view, &t, "INSTALLING", true)
                .await?;
            match path {
                DeltaPath::Full => {}
                DeltaPath::Rebuilt(o) => rebuilt = Some(o),
                DeltaPath::Native(info, url) => {
                    target = Some(info);
                    src = Source::Url(url);
                    native = true;
                }
                DeltaPath::Ended(next) => return Ok(next),
            }
        }
        let mut image: Opened = match rebuilt {
            Some(o) => o,
            None => match source::open_with(&src, &self.http).await {
                Ok(i) => i,
                Err(e) => return self.terminate(view, &e.to_string(), None).await,
            },
        };
        // The full .swu is kept as the next seed (a native delta .swu is no seed of the image).
        let keeper = (self.config.delta.cache_previous_swu && !dry_run && !native)
            .then(|| crate::delta::Keeper::new(&self.config.state_dir));
        if let Some(k) = &keeper {
            image.reader = k.wrap(image.reader);
        }
        // Hashed on the way into SWUpdate; judged before the commit.
        let verify: Option<SharedVerifier> = match &target {
            Some(t) => match trust::shared(t) {
                Ok(v) => {
                    let idle = self.trust.as_ref().map(Trust::read_timeout);
                    image.reader =
                        Box::pin(trust::HashingReader::new(image.reader, v.clone(), idle));
                    image.len = Some(t.length);
                    Some(v)
                }
                Err(e) => return self.terminate(view, &e.to_string(), None).await,
            },
            None => None,
        };
        let req = InstallRequest {
            run: if dry_run {
                RunType::DryRun
            } else {
                RunType::Install
            },
            len: image.len.unwrap_or(0),
            info: truncate(&format!("wfx job {} artifact {label}", view.id), 511),
            ..Default::default()
        };
        let mut obs = WfxProgress {
            wfx: self.wfx.clone(),
            job: view.id.clone(),
            interval: self.wfx_cfg.progress_interval,
            last: None,
            base: index * 100 / n,
            span: 100 / n,
            pending: None,
            streamed_pct: 0,
            installed_pct: 0,
            sent_pct: None,
            reporter: &self.reporter,
            bytes: 0,
            verify,
            commit: Some(CommitRecord {
                journal: &mut self.journal,
                store: &self.store,
                index,
            }),
        };
        let result = install::install(
            &self.swupdate,
            &req,
            image,
            &mut obs,
            job_gone(
                self.wfx.clone(),
                self.deleted.clone(),
                view.id.clone(),
                GONE_CHECK,
            ),
        )
        .await;
        obs.flush().await;
        if let (Some(k), false) = (&keeper, result.as_ref().is_ok_and(|o| o.succeeded())) {
            k.abandon();
        }
        // The inventory says which wire the daemon speaks once an install showed it.
        if let Some(w) = result.as_ref().ok().and_then(|o| o.wire) {
            let w = w.to_string();
            if self.inventory.swupdate_wire.as_deref() != Some(w.as_str()) {
                self.inventory.swupdate_wire = Some(w);
                self.reporter.inventory(self.inventory.clone());
            }
        }
        match result {
            Err(install::InstallError::Interrupted { .. }) => {
                tracing::info!(job = %view.id, "the job was deleted during the install: stopped");
                self.forget(&view.id).await?;
                Ok(Next::Wait)
            }
            Ok(o) if o.succeeded() => {
                match &keeper {
                    Some(k) => k.commit(target.as_ref().map(|t| t.length)),
                    // Installed: the fetched chunks are of no use any more.
                    None => crate::delta::ChunkCache::clear(
                        &crate::delta::dir(&self.config.state_dir).join("chunks"),
                    ),
                }
                let r = self.record_mut(view);
                r.installed = index + 1;
                r.committed = None;
                self.save()?;
                Ok(Next::Reload)
            }
            Ok(o) => {
                let lines: Vec<String> = o.log.iter().map(|l| l.msg.clone()).collect();
                let reason = lines
                    .iter()
                    .rev()
                    .find(|l| l.contains("ERROR") || l.contains("error"))
                    .cloned()
                    .unwrap_or_else(|| "SWUpdate reported FAILURE".into());
                let tail: Vec<String> = lines
                    .iter()
                    .rev()
                    .take(CONTEXT_LINES)
                    .rev()
                    .cloned()
                    .collect();
                self.terminate(
                    view,
                    &format!("installing {label} failed: {reason}"),
                    Some(serde_json::json!({ "swupdate": tail })),
                )
                .await
            }
            // SWUpdate away or busy with another install: a state of the device, not of the job.
            // Nothing was installed; the next reconcile tries again.
            Err(install::InstallError::Daemon(e)) if e.is_transient() => {
                tracing::warn!(job = %view.id, "cannot install now, will retry: {e}");
                self.record_mut(view).committed = None;
                self.save()?;
                Ok(Next::Wait)
            }
            Err(e) => {
                self.terminate(view, &format!("installing {label}: {e}"), None)
                    .await
            }
        }
    }

    /// After a restart between commit and verdict: SWUpdate's last result says what happened.
    async fn recover(&mut self, view: &JobView, index: usize) -> Result<Next, StepError> {
        let mut last = None;
        for _ in 0..600 {
            crate::notify::beat();
            match self.swupdate.status().await {
                // Drain the log queue: only then is `current` the daemon's state.
                Ok(s) if !s.desc.is_empty() => continue,
                Ok(s) if s.current == 0 => {
                    last = Some(s.last_result);
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => {
                    tracing::warn!("asking SWUpdate for the last result: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let r = self.record_mut(view);
        r.committed = None;
        match last {
            Some(3) => {
                r.installed = index + 1;
                self.save()?;
                Ok(Next::Reload)
            }
            // FAILURE: the image was bad, or the agent stopped before the tail went out; and
            // when the daemon restarted too it knows nothing. Either way nothing was installed:
            // installing again gives the real verdict (the image goes to the inactive slot).
            _ => {
                self.save()?;
                Ok(Next::Reload)
            }
        }
    }

    /// [`Self::delta_path`], given up when the job is deleted meanwhile: then the job is
    /// forgotten and the path ends in [`Next::Wait`].
    async fn delta_path_unless_gone(
        &mut self,
        view: &JobView,
        full: &crate::tuf::TargetInfo,
        state: &str,
        allow_native: bool,
    ) -> Result<DeltaPath, StepError> {
        let gone = job_gone(
            self.wfx.clone(),
            self.deleted.clone(),
            view.id.clone(),
            GONE_CHECK,
        );
        tokio::select! {
            r = self.delta_path(view, full, state, allow_native) => r,
            () = gone => {
                tracing::info!(job = %view.id, "the job was deleted during the delta download: stopped");
                self.forget(&view.id).await?;
                Ok(DeltaPath::Ended(Next::Wait))
            }
        }
    }

    /// How a trusted target is fetched: the full download, a delta rebuilt from the chunks on
    /// the device (`custom.zchunk`), or a SWUpdate-native delta target for the running version
    /// (`custom.deltas`). A delta failure falls back to the full download or, with
    /// `delta.fallback = "fail"`, ends the job naming it. The job's status says which path.
    async fn delta_path(
        &mut self,
        view: &JobView,
        full: &crate::tuf::TargetInfo,
        state: &str,
        allow_native: bool,
    ) -> Result<DeltaPath, StepError> {
        let cfg = self.config.delta.clone();
        if !cfg.enabled {
            return Ok(DeltaPath::Full);
        }
        let Some(trust) = self.trust.as_mut() else {
            return Ok(DeltaPath::Full);
        };
        let running = crate::status::read_version(&self.config.device.version_file);
        let native = if cfg.native && allow_native {
            crate::delta::native_delta(&full.custom, running.as_deref()).map(str::to_owned)
        } else {
            None
        };
        let companion = crate::delta::companion_path(&full.custom).map(str::to_owned);
        // The native delta first (smallest), then the zchunk companion; the full target last.
        let mut failures = Vec::new();
        if let Some(path) = native {
            match trust.related(&path).await {
                Ok((info, url)) => {
                    let msg = format!(
                        "delta: SWUpdate-native delta {path} for the running version {} ({} instead of {})",
                        running.as_deref().unwrap_or("?"),
                        crate::delta::human(info.length),
                        crate::delta::human(full.length)
                    );
                    tracing::info!(job = %view.id, "{msg}");
                    self.report(view, state, None, &msg, None).await?;
                    return Ok(DeltaPath::Native(info, url));
                }
                Err(e) => {
                    let m = format!("SWUpdate-native delta: {e}");
                    tracing::warn!(job = %view.id, "{m}");
                    failures.push(m);
                }
            }
        }
        if let Some(path) = companion {
            let idle = trust.read_timeout();
            let prepared = match trust.related(&path).await {
                Ok((info, url)) => {
                    crate::delta::prepare(
                        &self.http,
                        &cfg,
                        &self.config.state_dir,
                        &info,
                        &url,
                        full,
                        idle,
                    )
                    .await
                }
                Err(e) => Err(crate::delta::DeltaError::Companion(e)),
            };
            match prepared {
                Ok(p) => {
                    let msg = p.stats.message();
                    tracing::info!(job = %view.id, "{msg}");
                    self.reporter.delta(&view.id, p.stats.fetched);
                    self.report(view, state, None, &msg, None).await?;
                    return Ok(DeltaPath::Rebuilt(Opened {
                        reader: p.reader,
                        len: Some(full.length),
                    }));
                }
                Err(e) => {
                    let m = format!("delta failed: {e}");
                    tracing::warn!(job = %view.id, "{m}");
                    failures.push(m);
                }
            }
        }
        if failures.is_empty() {
            return Ok(DeltaPath::Full);
        }
        let failure = failures.join("; ");
        match cfg.fallback {
            crate::config::DeltaFallback::Fail => Ok(DeltaPath::Ended(
                self.terminate(
                    view,
                    &format!("{failure} (delta.fallback = \"fail\")"),
                    None,
                )
                .await?,
            )),
            crate::config::DeltaFallback::Full => {
                let msg = format!(
                    "{failure}; full download of {} ({})",
                    full.path,
                    crate::delta::human(full.length)
                );
                self.report(view, state, None, &msg, None).await?;
                Ok(DeltaPath::Full)
            }
        }
    }

    async fn terminate(
        &mut self,
        view: &JobView,
        message: &str,
        context: Option<serde_json::Value>,
    ) -> Result<Next, StepError> {
        let r = self.record_mut(view);
        r.committed = None;
        r.final_state = Some(Final {
            state: "TERMINATED".into(),
            message: truncate(message, MESSAGE_MAX),
        });
        self.save()?;
        self.report(view, "TERMINATED", None, message, context)
            .await?;
        Ok(Next::Reload)
    }
}

/// Why a step stopped.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Wfx(#[from] WfxError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

/// What a look at the bootloader led to.
enum BootStep {
    /// A final state is recorded.
    Ended,
    /// The armed slot waits for a reboot.
    PendingReboot,
    /// Nothing to do now (a reboot is under way, or the bootloader cannot be read).
    Wait,
}

/// Writes a rebuilt .swu to the staging file (then verified against its target like a download).
async fn write_staged(image: Opened, path: &std::path::Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| e.to_string())?;
    }
    let part = path.with_extension("delta-part");
    let mut f = tokio::fs::File::create(&part)
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = image.reader;
    tokio::io::copy(&mut reader, &mut f)
        .await
        .map_err(|e| format!("delta rebuild: {e}"))?;
    f.sync_all().await.map_err(|e| e.to_string())?;
    tokio::fs::rename(&part, path)
        .await
        .map_err(|e| e.to_string())
}

/// How a target's bytes are obtained ([`Daemon::delta_path`]).
enum DeltaPath {
    Full,
    /// The .swu rebuilt from the device's chunks and the fetched ones.
    Rebuilt(Opened),
    /// Install this target (a SWUpdate-native delta .swu) from this URL instead.
    Native(crate::tuf::TargetInfo, String),
    /// The job ended (fallback = "fail").
    Ended(Next),
}

/// After an action: ask wfx again, or wait for it.
enum Next {
    Reload,
    Wait,
}

/// The decision input of a wfx job; `None` for a job that is not a DAU job.
fn view_of(job: &Job) -> Option<JobView> {
    let flow = Flow::from_name(job.workflow.as_ref()?.name.as_str())?;
    let status = job.status.as_ref()?;
    Some(JobView {
        id: job.id.clone(),
        flow,
        state: status.state.clone(),
        definition_hash: status.definition_hash.clone().unwrap_or_default(),
        definition: match &job.definition {
            Some(d) => Definition::parse(d),
            None => Err("malformed job definition: none".into()),
        },
    })
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Records the commit point of an install in the journal, right before the held-back tail goes
/// to SWUpdate: from then on, SWUpdate's next verdict is this install's, and a restart asks for
/// it instead of installing again. (Recorded any earlier, a restart could take the verdict of an
/// earlier install for this one.)
struct CommitRecord<'a> {
    journal: &'a mut Journal,
    store: &'a Store,
    index: usize,
}

/// Sends install progress to wfx at most once per interval; never blocks the install: the
/// update runs in its own task.
struct WfxProgress<'a> {
    wfx: WfxClient,
    job: String,
    interval: Duration,
    last: Option<Instant>,
    /// Share of the job done before this artifact, and this artifact's share, in percent.
    base: usize,
    span: usize,
    pending: Option<tokio::task::JoinHandle<()>>,
    commit: Option<CommitRecord<'a>>,
    streamed_pct: u32,
    installed_pct: u32,
    reporter: &'a Reporter,
    /// Bytes of the image handed to SWUpdate so far.
    bytes: u64,
    /// The last percentage sent: the same one is not sent again.
    sent_pct: Option<u32>,
    /// The TUF target's verifier, fed by the reader: no commit unless it says yes.
    verify: Option<SharedVerifier>,
}

impl WfxProgress<'_> {
    /// Progress of this artifact: half the image handed to SWUpdate, half SWUpdate's install.
    fn artifact_percent(&self) -> u32 {
        (self.streamed_pct + self.installed_pct) / 2
    }

    fn send(&mut self, message: String) {
        let pct = self.artifact_percent();
        if Some(pct) == self.sent_pct {
            return;
        }
        if self.pending.as_ref().is_some_and(|p| !p.is_finished()) {
            return;
        }
        if self.last.is_some_and(|t| t.elapsed() < self.interval) {
            return;
        }
        self.last = Some(Instant::now());
        self.sent_pct = Some(pct);
        let overall = (self.base + self.span * pct.min(100) as usize / 100).min(99) as u8;
        self.reporter.progress(
            &self.job,
            crate::mqtt::Phase::Installing,
            overall,
            self.bytes,
        );
        let (wfx, job) = (self.wfx.clone(), self.job.clone());
        self.pending = Some(tokio::spawn(async move {
            let status = JobStatus {
                state: "INSTALLING".into(),
                progress: Some(overall),
                message: Some(message),
                ..Default::default()
            };
            if let Err(e) = wfx.put_status(&job, &status).await {
                tracing::debug!("progress update: {e}");
            }
        }));
    }

    async fn flush(&mut self) {
        if let Some(p) = self.pending.take() {
            let _ = p.await;
        }
    }
}

impl Observer for WfxProgress<'_> {
    fn streamed(&mut self, bytes: u64, total: Option<u64>) {
        crate::notify::beat();
        self.bytes = bytes;
        if let Some(t) = total.filter(|t| *t > 0) {
            self.streamed_pct = (bytes.min(t) * 100 / t) as u32;
            self.send(format!(
                "image to SWUpdate: {}% ({bytes} of {t} bytes)",
                self.streamed_pct
            ));
        }
    }

    fn before_commit(&mut self) -> Result<(), String> {
        if let Some(v) = &self.verify {
            trust::finish(v)?;
        }
        let Some(c) = self.commit.as_mut() else {
            return Ok(());
        };
        let r = c
            .journal
            .jobs
            .get_mut(&self.job)
            .ok_or("the job's record is gone")?;
        r.committed = Some(c.index);
        c.store.save(c.journal).map_err(|e| e.to_string())?;
        crate::faults::point("journal save (commit)");
        Ok(())
    }

    fn progress(&mut self, m: &ProgressMsg) {
        crate::notify::beat();
        if matches!(m.status, RecoveryStatus::Progress | RecoveryStatus::Run)
            && !m.cur_image.is_empty()
            && m.nsteps > 0
        {
            let done_steps = m.cur_step.saturating_sub(1).min(m.nsteps);
            self.installed_pct = ((done_steps * 100 + m.cur_percent.min(100)) / m.nsteps).min(100);
            self.send(crate::view::describe(m));
        }
    }
}

/// Jobs the operator deleted, as the event stream tells; work on them stops at once.
#[derive(Default)]
pub struct Deleted {
    ids: std::sync::Mutex<std::collections::HashSet<String>>,
    notify: Notify,
}

impl Deleted {
    fn add(&self, id: &str) {
        self.ids.lock().expect("deleted lock").insert(id.to_owned());
        self.notify.notify_waiters();
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.lock().expect("deleted lock").contains(id)
    }

    /// Resolves once `id` is deleted.
    async fn wait(&self, id: &str) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.contains(id) {
                return;
            }
            n.await;
        }
    }
}

/// Resolves when the job is gone: a DELETE event, or (events are not guaranteed) a 404 when
/// asked every `every`.
async fn job_gone(wfx: WfxClient, deleted: Arc<Deleted>, id: String, every: Duration) {
    loop {
        tokio::select! {
            () = deleted.wait(&id) => return,
            () = tokio::time::sleep(every) => {
                if matches!(wfx.job(&id).await, Err(e) if e.is_not_found()) {
                    return;
                }
            }
        }
    }
}

/// Follows the event stream, waking the main loop on every event and after every (re)connect,
/// and noting deleted jobs.
async fn follow_events(wfx: WfxClient, wake: Arc<Notify>, deleted: Arc<Deleted>) {
    crate::wfx::follow::follow_events(
        wfx,
        wake,
        |ev| {
            tracing::debug!(action = %ev.action, job = %ev.job.id, "wfx event");
            if ev.action == "DELETE" {
                deleted.add(&ev.job.id);
            }
        },
        |e| tracing::info!("event stream: {e}"),
    )
    .await;
}

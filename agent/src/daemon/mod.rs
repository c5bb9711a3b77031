//! `cip-update-agent run`: takes DAU jobs from wfx and carries them through, one at a time,
//! oldest first. Decisions come from [`crate::job::decide`]; this module runs them: wfx reports,
//! SWUpdate installs, staged downloads, and the journal written before every report.
//!
//! Work is found by the event stream (woken on every event for this client) and by a reconciling
//! poll at start, after every reconnect of the stream and every poll interval.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::boot::{self, Boot};
use crate::config::{Config, Wfx};
use crate::job::{self, Action, Definition, Final, Flow, JobView, Record};
use crate::journal::{Journal, LastResult, Store};
use crate::mqtt::Publisher;
use crate::report::Reporter;
use crate::trust::Trust;
use crate::wfx::backoff::jittered;
use crate::wfx::{Job, JobId, JobStatus, WfxClient, WfxError};
use cip_swupdate::Swupdate;
use cip_tuf::artifacts::Refusal;

mod activation;
mod download;
mod events;
mod installing;

use events::{Deleted, follow_events};

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
    Tuf(#[from] crate::trust::TrustSetupError),
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
    /// Job list entries refused already: each is logged once, not at every poll.
    refused: std::collections::HashSet<String>,
}

/// Refused job list entries remembered (then forgotten, to be logged again).
const REFUSED_MAX: usize = 256;

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
        let daemon = Daemon {
            trust,
            wfx: WfxClient::new(&wfx_cfg.url.0, &client_id, http.clone())
                .with_timeouts((&wfx_cfg).into()),
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
            refused: Default::default(),
        };
        daemon.tidy_staging();
        Ok(daemon)
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

    /// Lists the open jobs and drives each, oldest first, until it waits for wfx.
    pub async fn reconcile(&mut self) -> Result<(), StepError> {
        let list = self.wfx.open_jobs().await?;
        self.note_refused(list.rejected);
        let jobs = list.content;
        // Records of jobs that are no longer open (deleted, or closed while away).
        let gone: Vec<String> = self
            .journal
            .jobs
            .keys()
            .filter(|id| !jobs.iter().any(|j| j.id == id.as_str()))
            .cloned()
            .collect();
        for key in gone {
            // A journal from before ids were checked may hold one that is no job id: its
            // record goes (its staging, if any, went at start).
            let id = match JobId::parse(&key) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!("dropping the journal's record of a job: {e}");
                    self.journal.jobs.remove(&key);
                    self.save()?;
                    continue;
                }
            };
            match self.wfx.job(&id).await {
                Ok(job) => self.drive(job).await?,
                Err(e) if e.is_not_found() => self.forget(&id).await?,
                Err(e) if e.is_transient() => return Err(e.into()),
                // (One job wfx answers badly for does not hold up the others.)
                Err(e) => tracing::warn!(job = %id, "{e}"),
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

    /// Logs each refused job list entry once (wfx cannot be told about a job whose id cannot
    /// be named, so the entry is skipped).
    fn note_refused(&mut self, rejected: Vec<String>) {
        for r in rejected {
            if self.refused.len() >= REFUSED_MAX {
                self.refused.clear();
            }
            if self.refused.insert(r.clone()) {
                tracing::warn!("wfx job list: {r}; skipped");
            }
        }
    }

    /// Runs the decisions for one job until it has to wait.
    async fn drive(&mut self, mut job: Job) -> Result<(), StepError> {
        for _ in 0..64 {
            crate::notify::beat();
            let Some(view) = view_of(&job) else {
                return Ok(());
            };
            let action = job::decide(&view, self.journal.jobs.get(view.id.as_str()));
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
            .entry(view.id.to_string())
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
        let id = &view.id;
        // The device's own result is recorded first: `status` never lags behind what wfx shows
        // (if wfx cannot be told now, the job's final state is reported again later).
        if matches!(state, "ACTIVATED" | "TERMINATED") {
            self.journal.last = Some(LastResult {
                job_id: id.to_string(),
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
                self.journal
                    .jobs
                    .insert(view.id.to_string(), Record::new(view));
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

    async fn forget(&mut self, id: &JobId) -> Result<(), StepError> {
        self.remove_staged(id).await;
        self.deleted.remove(id.as_str());
        if self.journal.jobs.remove(id.as_str()).is_some() {
            self.save()?;
            if self.journal.jobs.is_empty() {
                let last_error = self
                    .journal
                    .last
                    .as_ref()
                    .filter(|l| l.job_id == id.as_str() && l.state == "TERMINATED")
                    .map(|l| l.message.clone());
                self.reporter.idle(last_error);
            }
        }
        Ok(())
    }

    /// With `[tuf]`: the artifact's target (`Ok(Some)`), or the step's end: TERMINATED for an
    /// untrusted artifact, a wait (reported in `state` with the reason) for expired metadata
    /// or an unreachable repository. Without `[tuf]`: `Ok(None)`.
    async fn trusted_target(
        &mut self,
        view: &JobView,
        artifact: &crate::job::Artifact,
        state: &str,
    ) -> Result<Result<Option<cip_tuf::TargetInfo>, Next>, StepError> {
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
        // (Escaped: the state goes into log lines; a state with control characters is no
        // DAU state, so the job waits like for any unknown one.)
        state: crate::text::shown(&status.state),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A state with a line break from wfx does not forge a log line, and waits like any
    /// unknown state.
    #[test]
    fn states_are_escaped_for_the_log() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "j1",
            "workflow": {"name": Flow::DIRECT},
            "definition": {"artifacts": [{"uri": "http://h/a.swu"}]},
            "status": {"state": "INSTALL\nINFO forged"},
        }))
        .unwrap();
        let view = view_of(&job).unwrap();
        assert_eq!(view.state, "INSTALL\\nINFO forged");
        assert_eq!(job::decide(&view, None), Action::Wait);
    }
}

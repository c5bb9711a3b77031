//! `cip-update-agent run`: takes DAU jobs from wfx and carries them through, one at a time,
//! oldest first. Decisions come from [`crate::sources::wfx::job::decide`]; this module runs them: wfx reports,
//! SWUpdate installs, staged downloads, and the journal written before every report.
//!
//! Work is found by the event stream (woken on every event for this client but the echoes of
//! its own status updates) and by a reconciling poll at start, after every reconnect of the
//! stream and every poll interval. A job waiting for SWUpdate holds the next round until its
//! backoff ends ([`JobSource::not_before`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Wfx;
use crate::pipeline::Pipeline;
use crate::pipeline::service::JobSource;
use crate::state::State;
use crate::text::truncate;
use crate::wfx::{Job, JobId, JobStatus, WfxClient, WfxError};
use cip_tuf::artifacts::Refusal;
use job::{Action, Definition, Final, Flow, JobView, Record};
use journal::{Journal, LastResult, Store};

mod activation;
mod download;
mod events;
mod installing;
pub mod job;
pub mod journal;

use events::{Deleted, Echoes, follow_events};

/// How often a running download or install asks wfx whether its job still exists (besides
/// the DELETE events).
const GONE_CHECK: Duration = Duration::from_secs(10);
/// wfx's limit on `message`.
const MESSAGE_MAX: usize = 1024;

/// The wfx job source.
pub struct Daemon {
    wfx: WfxClient,
    wfx_cfg: Wfx,
    store: Store,
    journal: Journal,
    staging: PathBuf,
    deleted: Arc<Deleted>,
    /// Our own status updates, whose events do not wake the source.
    echoes: Arc<Echoes>,
    pipe: Pipeline,
    /// The job waiting (for SWUpdate, the artifact server, disk space), if one is.
    held: Option<installing::Held>,
    /// Job list entries refused already: each is logged once, not at every poll.
    refused: std::collections::HashSet<String>,
    events: Option<tokio::task::JoinHandle<()>>,
    /// Whether the event stream is held (the poll is shorter while it is not).
    stream: Arc<crate::wfx::follow::StreamHealth>,
}

/// Refused job list entries remembered (then forgotten, to be logged again).
const REFUSED_MAX: usize = 256;

impl Daemon {
    /// The source over `wfx`, its journal (`store`, loaded; a corrupt one set aside) and
    /// `pipe`; `staging` holds phased downloads.
    pub fn new(
        wfx: WfxClient,
        wfx_cfg: Wfx,
        store: Store,
        staging: PathBuf,
        pipe: Pipeline,
    ) -> Result<Daemon, crate::sources::wfx::journal::JournalError> {
        let journal = match store.load() {
            // A journal that cannot be read must not stop updates for good: keep it for a
            // post-mortem, start empty, and let the reconcile with wfx find the jobs again.
            Err(e @ crate::sources::wfx::journal::JournalError::Corrupt { .. }) => {
                let aside = store.path().with_extension("json.corrupt");
                tracing::error!("{e}; moved to {} and starting afresh", aside.display());
                std::fs::rename(store.path(), &aside).map_err(|source| {
                    crate::sources::wfx::journal::JournalError::Io {
                        path: aside.clone(),
                        source,
                    }
                })?;
                store.load()?
            }
            other => other?,
        };
        let daemon = Daemon {
            wfx,
            wfx_cfg,
            store,
            journal,
            staging,
            deleted: Arc::new(Deleted::default()),
            echoes: Arc::new(Echoes::default()),
            pipe,
            held: None,
            refused: Default::default(),
            events: None,
            stream: Default::default(),
        };
        daemon.tidy_staging();
        Ok(daemon)
    }

    /// Runs until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        crate::pipeline::service::run(self, stop).await;
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

    /// Runs the decisions for one job until it has to wait, in a span with the job's id: the
    /// lines of the modules it calls (a download's, SWUpdate's) carry it too (`JOB_ID` in the
    /// journal).
    async fn drive(&mut self, job: Job) -> Result<(), StepError> {
        use tracing::Instrument as _;
        let span = tracing::info_span!("job", job = %job.id);
        self.drive_job(job).instrument(span).await
    }

    async fn drive_job(&mut self, mut job: Job) -> Result<(), StepError> {
        for _ in 0..64 {
            crate::notify::beat();
            let Some(view) = view_of(&job) else {
                return Ok(());
            };
            let action = job::decide(&view, self.journal.jobs.get(view.id.as_str()));
            tracing::info!(job = %view.id, state = %view.state_text, ?action, "decided");
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
        state: State,
        progress: Option<u8>,
        message: &str,
        context: Option<serde_json::Value>,
    ) -> Result<(), StepError> {
        let status = JobStatus {
            state: state.as_str().into(),
            progress,
            message: (!message.is_empty()).then(|| truncate(message, MESSAGE_MAX)),
            context,
            ..Default::default()
        };
        let id = &view.id;
        self.echoes.expect(id.as_str(), &status.state);
        // The device's own result is recorded first: `status` never lags behind what wfx shows
        // (if wfx cannot be told now, the job's final state is reported again later).
        if state.is_final() {
            let recorded = self
                .journal
                .jobs
                .get(id.as_str())
                .and_then(|r| r.final_state.as_ref())
                .filter(|f| f.state == state);
            let rolled_back = recorded.is_some_and(|f| f.rolled_back);
            // When the device reached the end (a rollback found at start is reported once wfx
            // answers); else when it was first reported: it is reported again until wfx takes it.
            let time = recorded
                .and_then(|f| f.time.clone())
                .or_else(|| {
                    self.journal
                        .last
                        .as_ref()
                        .filter(|l| l.job_id == id.as_str() && l.state == state)
                        .and_then(|l| l.time.clone())
                })
                .unwrap_or_else(crate::report::now);
            self.journal.last = Some(LastResult {
                job_id: id.to_string(),
                state,
                message: truncate(message, MESSAGE_MAX),
                version: view.target_version().map(str::to_owned),
                time: Some(time),
                rolled_back,
            });
            self.save()?;
        }
        self.wfx.put_status(id, &status).await?;
        self.pipe
            .reporter
            .job_state(view.subject(), state, progress, message);
        Ok(())
    }

    async fn execute(&mut self, view: &JobView, action: Action) -> Result<Next, StepError> {
        // A hold ends with anything but another try of the same install.
        let step = match action {
            Action::Install { index, .. } => Some(installing::HeldStep::Install(index)),
            Action::Download => Some(installing::HeldStep::Download),
            _ => None,
        };
        let retry = step.is_some_and(|s| self.held.as_ref().is_some_and(|h| h.is(&view.id, s)));
        if !retry {
            self.held = None;
        }
        match action {
            Action::Wait => Ok(Next::Wait),
            Action::Report {
                state: State::Terminated,
                message,
            } => self.terminate(view, &message, None).await,
            Action::Report { state, message } => {
                let progress = matches!(
                    state,
                    State::Installed | State::Downloaded | State::Activated
                )
                .then_some(100);
                self.report(view, state, progress, &message, None).await?;
                Ok(Next::Reload)
            }
            Action::ReportFinal(f) => {
                let progress = (f.state == State::Activated).then_some(100);
                self.report(view, f.state, progress, &f.message, None)
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
    fn end(
        &mut self,
        id: &str,
        state: State,
        rolled_back: bool,
        message: &str,
    ) -> Result<(), StepError> {
        if let Some(r) = self.journal.jobs.get_mut(id) {
            r.final_state = Some(Final {
                state,
                message: truncate(message, MESSAGE_MAX),
                rolled_back,
                time: Some(crate::report::now()),
            });
        }
        self.save()
    }

    async fn forget(&mut self, id: &JobId) -> Result<(), StepError> {
        if self.held.as_ref().is_some_and(|h| h.job() == id) {
            self.held = None;
        }
        self.remove_staged(id).await;
        self.deleted.remove(id.as_str());
        if self.journal.jobs.remove(id.as_str()).is_some() {
            self.save()?;
            if self.journal.jobs.is_empty() {
                let last = self.journal.last.as_ref().map(LastResult::outcome);
                // The error only if this job is the one that ended so (not one cancelled on
                // wfx, whose predecessor's error would come back).
                let error = last
                    .as_ref()
                    .filter(|l| l.id == id.as_str())
                    .and_then(|l| l.error());
                self.pipe.reporter.idle(last.as_ref(), error);
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
        artifact: &crate::sources::wfx::job::Artifact,
        state: State,
    ) -> Result<Result<Option<cip_tuf::TargetInfo>, Next>, StepError> {
        let Some(t) = self.pipe.trust.as_mut() else {
            return Ok(Ok(None));
        };
        match t
            .resolve(artifact.name.as_deref(), artifact.uri.as_str())
            .await
        {
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
            state: State::Terminated,
            message: truncate(message, MESSAGE_MAX),
            rolled_back: false,
            time: Some(crate::report::now()),
        });
        self.save()?;
        self.report(view, State::Terminated, None, message, context)
            .await?;
        Ok(Next::Reload)
    }
}

impl JobSource for Daemon {
    fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipe
    }

    fn last_outcome(&self) -> Option<crate::report::Outcome> {
        self.journal.last.as_ref().map(LastResult::outcome)
    }

    fn busy(&self) -> bool {
        !self.journal.jobs.is_empty()
    }

    async fn settle_at_start(&mut self) {
        self.settle_boot().await;
    }

    async fn round(&mut self) {
        if let Err(e) = self.reconcile().await {
            tracing::warn!("{e}");
        }
    }

    fn poll_due(&self, last: std::time::Instant, unit: f64) -> std::time::Instant {
        crate::backoff::poll_due(
            last,
            unit,
            self.wfx_cfg.poll_interval,
            self.wfx_cfg.fallback_poll_interval,
            self.stream.down_since(),
        )
    }

    /// The end of the wait of a job held for SWUpdate; none once the job was deleted (then
    /// the round forgets it at once).
    fn not_before(&self) -> Option<std::time::Instant> {
        let h = self.held.as_ref()?;
        (!self.deleted.contains(h.job().as_str())).then(|| h.until())
    }

    fn start_events(&mut self, wake: Arc<Notify>) {
        self.events = Some(tokio::spawn(follow_events(
            self.wfx.clone(),
            wake,
            self.stream.clone(),
            self.deleted.clone(),
            self.echoes.clone(),
        )));
    }

    fn poll_moved(&self) -> Option<Arc<Notify>> {
        Some(self.stream.changed())
    }

    fn stop_events(&mut self) {
        if let Some(e) = self.events.take() {
            e.abort();
        }
    }
}

/// Why a step stopped.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Wfx(#[from] WfxError),
    #[error(transparent)]
    Journal(#[from] crate::sources::wfx::journal::JournalError),
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
        state: crate::state::State::parse(&status.state),
        state_text: crate::text::shown(&status.state),
        definition_hash: status.definition_hash.clone().unwrap_or_default(),
        definition: match &job.definition {
            Some(d) => Definition::parse(d),
            None => Err("malformed job definition: none".into()),
        },
    })
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
        assert_eq!(view.state_text, "INSTALL\\nINFO forged");
        assert_eq!(view.state, None);
        assert_eq!(job::decide(&view, None), Action::Wait);
    }
}

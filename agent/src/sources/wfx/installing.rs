//! A wfx job's install step on the pipeline: the order for an artifact (staged or by URL, delta
//! or not), its progress and notes to wfx, the commit point in the journal, and recovery of a
//! commit whose verdict was lost.

use crate::pipeline::install::{Hooks, Order, Outcome, Waiting};
use crate::report::Reporter;
use crate::source::Source;
use crate::sources::wfx::job::{Definition, Flow, JobView};
use crate::sources::wfx::journal::{Journal, Store};
use crate::state::State;
use crate::text::truncate;
use crate::wfx::{JobId, JobStatus, WfxClient};
use std::time::{Duration, Instant};

use super::events::{Echoes, job_gone};
use super::{Daemon, GONE_CHECK, MESSAGE_MAX, Next, StepError};

/// At most one status update per this while a job waits.
pub const WAIT_NOTE_EVERY: Duration = Duration::from_secs(60);

/// The step of a job that waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeldStep {
    /// The install of artifact `n`.
    Install(usize),
    /// The phased download (its partial files kept: the next try resumes them).
    Download,
}

/// A job's step waiting for SWUpdate (away or busy), the artifact server (away, 5xx) or disk
/// space: the next try, with backoff, and when wfx was last told why.
#[derive(Debug)]
pub(super) struct Held {
    job: JobId,
    step: HeldStep,
    /// Tries that could not go on, less one.
    attempt: u32,
    until: Instant,
    noted: Instant,
    /// The first try that could not go on.
    since: std::time::SystemTime,
}

impl Held {
    /// Whether this holds `step` of `job`.
    pub(super) fn is(&self, job: &JobId, step: HeldStep) -> bool {
        self.job == *job && self.step == step
    }

    pub(super) fn job(&self) -> &JobId {
        &self.job
    }

    pub(super) fn until(&self) -> Instant {
        self.until
    }
}

impl Daemon {
    pub(super) async fn install(
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
            .unwrap_or_else(|| artifact.uri.to_string());
        // TUF before any byte: an untrusted artifact ends the job here.
        let target = match self
            .trusted_target(view, artifact, State::Installing)
            .await?
        {
            Ok(t) => t,
            Err(next) => return Ok(next),
        };
        // (Held: wfx was told what the job waits for; a try is no news until it goes on.)
        let held = self
            .held
            .as_ref()
            .is_some_and(|h| h.is(&view.id, HeldStep::Install(index)));
        if !held {
            self.report(
                view,
                State::Installing,
                Some((index * 100 / n) as u8),
                &format!("installing {label} ({} of {n})", index + 1),
                None,
            )
            .await?;
        }
        let staged = self.staged_path(&view.id, index);
        let staged = view.flow == Flow::Phased && staged.exists();
        let source = if staged {
            Source::File(self.staged_path(&view.id, index))
        } else {
            // (Only http(s): a definition cannot hold anything else.)
            Source::Url(artifact.uri.as_str().to_owned())
        };
        // A delta install of this artifact failed inside SWUpdate: the full target now (once).
        let full_after_delta = self.record_mut(view).delta_failed == Some(index);
        let order = Order {
            info: format!("wfx job {} artifact {label}", view.id),
            label: label.clone(),
            source,
            target,
            may_route: !staged && !full_after_delta,
            dry_run,
            base: (index * 100 / n) as u8,
            span: (100 / n) as u8,
            progress_interval: self.wfx_cfg.progress_interval,
        };
        let mut hooks = WfxHooks::new(self, view, State::Installing);
        hooks.commit = Some(CommitRecord {
            journal: &mut self.journal,
            store: &self.store,
            index,
        });
        let outcome = self.pipe.install(order, &mut hooks).await?;
        match outcome {
            Outcome::Installed => {
                let r = self.record_mut(view);
                r.installed = index + 1;
                r.committed = None;
                self.save()?;
                Ok(Next::Reload)
            }
            // The journal says so before anything else happens.
            Outcome::DeltaFailed(msg) => {
                let r = self.record_mut(view);
                r.delta_failed = Some(index);
                r.committed = None;
                self.save()?;
                crate::faults::point("delta failure recorded");
                self.report(view, State::Installing, None, &msg, None)
                    .await?;
                Ok(Next::Reload)
            }
            Outcome::Cancelled => {
                tracing::info!(job = %view.id, "the job was deleted during the install: stopped");
                self.forget(&view.id).await?;
                Ok(Next::Wait)
            }
            // Not now: nothing was installed; tried again after a backoff.
            Outcome::Busy(what, e) => {
                self.record_mut(view).committed = None;
                self.save()?;
                self.hold(view, HeldStep::Install(index), what, &e).await?;
                Ok(Next::Wait)
            }
            Outcome::Failed { message, log } => {
                let context = (!log.is_empty()).then(|| serde_json::json!({ "swupdate": log }));
                self.terminate(view, &message, context).await
            }
        }
    }

    /// Holds the job until its next try (see [`Held`]); tells wfx what it waits for, at most
    /// once per [`WAIT_NOTE_EVERY`].
    pub(super) async fn hold(
        &mut self,
        view: &JobView,
        step: HeldStep,
        what: Waiting,
        why: &str,
    ) -> Result<(), StepError> {
        let now = Instant::now();
        let (attempt, noted, since) = match self.held.take() {
            Some(h) if h.is(&view.id, step) => {
                (h.attempt.saturating_add(1), Some(h.noted), h.since)
            }
            _ => (0, None, std::time::SystemTime::now()),
        };
        let wait = self
            .pipe
            .settings
            .swupdate_retry
            .delay(attempt, fastrand::f64());
        let next = humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)));
        let doing = match step {
            HeldStep::Install(_) => "install",
            HeldStep::Download => "download",
        };
        tracing::warn!(job = %view.id, "cannot {doing} now, will retry in {next}: {why}");
        let due = noted.is_none_or(|t| now.saturating_duration_since(t) >= WAIT_NOTE_EVERY);
        let noted = if due {
            // (The tries and the time say to the operator that the device is still there.)
            let message = format!(
                "waiting for {what} since {} ({} tries, the next in {next}): {why}",
                humantime::format_rfc3339_seconds(since),
                attempt + 1
            );
            let state = match step {
                HeldStep::Install(_) => State::Installing,
                HeldStep::Download => State::Downloading,
            };
            self.report(view, state, None, &message, None).await?;
            now
        } else {
            noted.unwrap_or(now)
        };
        self.held = Some(Held {
            job: view.id.clone(),
            step,
            attempt,
            until: now + wait,
            noted,
            since,
        });
        Ok(())
    }

    /// After a restart between commit and verdict: SWUpdate's last result says what happened.
    pub(super) async fn recover(
        &mut self,
        view: &JobView,
        index: usize,
    ) -> Result<Next, StepError> {
        let installed = self.pipe.last_verdict().await;
        let r = self.record_mut(view);
        r.committed = None;
        if installed {
            r.installed = index + 1;
        }
        self.save()?;
        Ok(Next::Reload)
    }
}

/// Records the commit point of an install in the journal, right before the held-back tail goes
/// to SWUpdate: from then on, SWUpdate's next verdict is this install's, and a restart asks for
/// it instead of installing again. (Recorded any earlier, a restart could take the verdict of an
/// earlier install for this one.)
pub(super) struct CommitRecord<'a> {
    journal: &'a mut Journal,
    store: &'a Store,
    index: usize,
}

/// What a wfx job adds to an install: notes and progress to wfx (progress in its own task,
/// never blocking the install), the commit point in the journal, and the job's deletion.
pub(super) struct WfxHooks<'a> {
    wfx: WfxClient,
    deleted: std::sync::Arc<super::events::Deleted>,
    echoes: std::sync::Arc<Echoes>,
    view: &'a JobView,
    reporter: std::sync::Arc<Reporter>,
    /// The state notes are reported in (`INSTALLING`, `DOWNLOADING`).
    state: State,
    pending: Option<tokio::task::JoinHandle<()>>,
    /// Installs only.
    commit: Option<CommitRecord<'a>>,
}

impl<'a> WfxHooks<'a> {
    /// The hooks of a step of `view` reporting in `state`.
    pub(super) fn new(daemon: &Daemon, view: &'a JobView, state: State) -> WfxHooks<'a> {
        WfxHooks {
            wfx: daemon.wfx.clone(),
            deleted: daemon.deleted.clone(),
            echoes: daemon.echoes.clone(),
            view,
            reporter: daemon.pipe.reporter.clone(),
            state,
            pending: None,
            commit: None,
        }
    }
}

impl Hooks for WfxHooks<'_> {
    type Stop = StepError;

    fn id(&self) -> &str {
        self.view.id.as_str()
    }

    async fn note(&mut self, message: &str) -> Result<(), StepError> {
        let status = JobStatus {
            state: self.state.as_str().into(),
            message: (!message.is_empty()).then(|| truncate(message, MESSAGE_MAX)),
            ..Default::default()
        };
        self.echoes.expect(self.view.id.as_str(), &status.state);
        self.wfx.put_status(&self.view.id, &status).await?;
        self.reporter
            .job_state(self.view.subject(), self.state, None, message);
        Ok(())
    }

    fn cancelled(&self) -> impl std::future::Future<Output = ()> + 'static {
        job_gone(
            self.wfx.clone(),
            self.deleted.clone(),
            self.view.id.clone(),
            GONE_CHECK,
        )
    }

    fn progress(&mut self, percent: u8, message: String) -> bool {
        crate::notify::beat();
        if self.pending.as_ref().is_some_and(|p| !p.is_finished()) {
            return false;
        }
        let (wfx, job) = (self.wfx.clone(), self.view.id.clone());
        let status = JobStatus {
            state: State::Installing.as_str().into(),
            progress: Some(percent),
            message: Some(message),
            ..Default::default()
        };
        self.echoes.expect(job.as_str(), &status.state);
        self.pending = Some(tokio::spawn(async move {
            if let Err(e) = wfx.put_status(&job, &status).await {
                tracing::debug!("progress update: {e}");
            }
        }));
        true
    }

    fn before_commit(&mut self) -> Result<(), String> {
        let Some(c) = self.commit.as_mut() else {
            return Ok(());
        };
        let r = c
            .journal
            .jobs
            .get_mut(self.view.id.as_str())
            .ok_or("the job's record is gone")?;
        r.committed = Some(c.index);
        c.store.save(c.journal).map_err(|e| e.to_string())?;
        crate::faults::point("journal save (commit)");
        Ok(())
    }

    async fn flush(&mut self) {
        if let Some(p) = self.pending.take() {
            let _ = p.await;
        }
    }
}

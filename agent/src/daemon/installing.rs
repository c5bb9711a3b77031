//! Streaming an artifact into SWUpdate: the install request, progress to wfx, the verify-before-
//! commit hook, the late delta fallback, and recovery of a commit whose verdict was lost.

use std::time::{Duration, Instant};

use crate::job::{Definition, Flow, JobView};
use crate::journal::{Journal, Store};
use crate::report::Reporter;
use crate::source::{self, Opened, Source};
use crate::trust::Trust;
use crate::wfx::{JobId, JobStatus, WfxClient};
use cip_swupdate::install::{self, Observer};
use cip_swupdate::{InstallRequest, ProgressMsg, RecoveryStatus, RunType};
use cip_tuf::artifacts::{self as trust, SharedVerifier};

use super::download::DeltaPath;
use super::events::job_gone;
use super::{CONTEXT_LINES, Daemon, GONE_CHECK, Next, StepError, truncate};

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
            // (Only http(s): a definition cannot hold anything else.)
            Source::Url(artifact.uri.as_str().to_owned())
        };
        // Delta (a zchunk companion, or a SWUpdate-native delta target) when the target has one.
        let (mut target, mut src) = (target, src);
        let mut rebuilt: Option<Opened> = None;
        let mut native = false;
        let mut chunk_urls = Vec::new();
        // A delta install of this artifact failed inside SWUpdate: the full target now (once).
        let full_after_delta = self.record_mut(view).delta_failed == Some(index);
        let full_target = target.clone();
        if let (Some(t), false) = (
            target.clone(),
            matches!(src, Source::File(_)) || full_after_delta,
        ) {
            let path = self
                .delta_path_unless_gone(view, &t, "INSTALLING", true)
                .await?;
            match path {
                DeltaPath::Full => {}
                DeltaPath::Rebuilt(o) => rebuilt = Some(o),
                DeltaPath::Native(info, url, urls) => {
                    target = Some(info);
                    src = Source::Url(url);
                    native = true;
                    chunk_urls = urls;
                }
                DeltaPath::Ended(next) => return Ok(next),
            }
        }
        let by_delta = native || rebuilt.is_some();
        let mut image: Opened = match rebuilt {
            Some(o) => o,
            None => {
                // Waiting for the headers (download.headers_timeout) is given up, too, when the
                // job is deleted meanwhile.
                let limits = self.config.download.limits();
                let gone = job_gone(
                    self.wfx.clone(),
                    self.deleted.clone(),
                    view.id.clone(),
                    GONE_CHECK,
                );
                let opened = tokio::select! {
                    r = source::open_with(&src, &self.http, &limits) => r,
                    () = gone => {
                        tracing::info!(job = %view.id, "the job was deleted while its download started: stopped");
                        self.forget(&view.id).await?;
                        return Ok(Next::Wait);
                    }
                };
                match opened {
                    Ok(i) => i,
                    Err(e) => return self.terminate(view, &e.to_string(), None).await,
                }
            }
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
        let selection =
            match crate::selection::Selector::new(&self.config).for_install(self.boot.as_ref()) {
                Ok(s) => s,
                Err(e) => {
                    let m = format!("no software set to install into: {e}");
                    return self.terminate(view, &m, None).await;
                }
            };
        if let Some(s) = &selection {
            tracing::info!("installing {label} with SWUpdate selection {s}");
        }
        let (software_set, running_mode) = selection.map(|s| (s.set, s.mode)).unwrap_or_default();
        let req = InstallRequest {
            run: if dry_run {
                RunType::DryRun
            } else {
                RunType::Install
            },
            len: image.len.unwrap_or(0),
            info: truncate(&format!("wfx job {} artifact {label}", view.id), 511),
            software_set,
            running_mode,
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
        if native {
            image.reader =
                crate::delta::route::point_chunk_urls(&self.swupdate, chunk_urls, image.reader)
                    .await;
        }
        let result = install::install(
            &self.swupdate,
            &req,
            image.into(),
            self.config.download.max_image_size,
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
        // A delta that SWUpdate failed (nothing was installed) gives way to the full target once,
        // with delta.fallback = "full"; the journal says so before anything else happens.
        let full_next = full_target.as_ref().and_then(|full| {
            crate::delta::route::full_after_failed_delta(
                &self.config.delta,
                by_delta,
                &result,
                full,
            )
        });
        if let Some(msg) = full_next {
            let r = self.record_mut(view);
            r.delta_failed = Some(index);
            r.committed = None;
            self.save()?;
            crate::faults::point("delta failure recorded");
            tracing::warn!(job = %view.id, "{msg}");
            self.reporter
                .route(&view.id, &crate::delta::route::Route::Full);
            self.report(view, "INSTALLING", None, &msg, None).await?;
            return Ok(Next::Reload);
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
                let reason = o.failure_reason();
                let lines: Vec<String> = o.log.iter().map(|l| l.msg.clone()).collect();
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
                let mut m = format!("installing {label}: {e}");
                let refused = matches!(
                    e,
                    install::InstallError::Daemon(cip_swupdate::ClientError::Refused(_))
                );
                if refused && !req.software_set.is_empty() {
                    m += &format!(
                        "; the request named software set {},{} (swupdate.select_on_a/_b), which SWUpdate accepts only when started with -q for it",
                        req.software_set, req.running_mode
                    );
                }
                self.terminate(view, &m, None).await
            }
        }
    }

    /// After a restart between commit and verdict: SWUpdate's last result says what happened.
    pub(super) async fn recover(
        &mut self,
        view: &JobView,
        index: usize,
    ) -> Result<Next, StepError> {
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

/// Sends install progress to wfx at most once per interval; never blocks the install: the
/// update runs in its own task.
pub(super) struct WfxProgress<'a> {
    wfx: WfxClient,
    job: JobId,
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
    // The commit's crash point of the fault injection (crate::faults).
    fn committed(&mut self) {
        crate::faults::point("commit");
    }
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
            .get_mut(self.job.as_str())
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

//! Getting an artifact's bytes: phased downloads staged with Range resume, and the choice of
//! delta or full route for a trusted target.

use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use crate::job::{Final, JobView, Record};
use crate::redact;
use crate::source::Opened;
use crate::swu::SwuTracker;
use crate::tuf::artifacts::{self as trust, Trust};

use super::events::job_gone;
use super::{Daemon, GONE_CHECK, Next, StepError};

impl Daemon {
    pub(super) fn staged_path(&self, id: &str, index: usize) -> PathBuf {
        self.staging.join(id).join(format!("{index}.swu"))
    }

    pub(super) async fn remove_staged(&self, id: &str) {
        let _ = tokio::fs::remove_dir_all(self.staging.join(id)).await;
    }

    /// Phased: stages every artifact (resuming a partial file with a Range request).
    pub(super) async fn download(&mut self, view: &JobView) -> Result<Next, StepError> {
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
                // The job ends here: its partial file is of no use.
                let _ = tokio::fs::remove_file(&path).await;
                let message = format!("download of {} failed: {msg}", redact::url(&a.uri));
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

    /// Downloads `uri` to `path`, resuming a partial file; `max`: the most bytes the file may
    /// have (the TUF target's length; without one, `download.max_image_size`), checked while
    /// streaming; `idle`: the longest wait for the next bytes (slow retrieval). The file ends
    /// where the `.swu`'s archive ends: endless data after it is not staged. On an error the
    /// partial file stays (a restart resumes it); the caller removes it when it gives up.
    pub(super) async fn fetch_to(
        &self,
        uri: &str,
        path: &std::path::Path,
        max: Option<u64>,
        idle: Option<Duration>,
    ) -> Result<(), String> {
        use futures_util::StreamExt;
        let limits = self.config.download.limits();
        let max_image = self.config.download.max_image_size;
        let (max, bound) = match max {
            Some(m) => (m, "the TUF target's length"),
            None => (max_image, "download.max_image_size"),
        };
        if let Some(dir) = path.parent() {
            crate::atomic::create_dirs(dir).map_err(|e| e.to_string())?;
        }
        let mut have = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        // A resumed file is followed from its start; one that cannot be the start of a .swu
        // within the limits is fetched anew.
        let mut tracker = SwuTracker::with_max(max_image);
        if have > max || (have > 0 && track_file(path, &mut tracker).await.is_err()) {
            let _ = tokio::fs::remove_file(path).await;
            have = 0;
            tracker = SwuTracker::with_max(max_image);
        }
        if tracker.ended() {
            return Ok(());
        }
        let mut req = self.http.get(uri);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = crate::http::send(req, &limits)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let append = status == reqwest::StatusCode::PARTIAL_CONTENT;
        if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
            return Ok(()); // complete already
        }
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        if !append && have > 0 {
            tracker = SwuTracker::with_max(max_image);
        }
        // 0600, never through a link planted in the staging directory.
        let mut f = crate::atomic::open_private(path, crate::atomic::PRIVATE_FILE, !append)
            .map(tokio::fs::File::from_std)
            .map_err(|e| e.to_string())?;
        if append {
            use tokio::io::AsyncSeekExt as _;
            f.seek(std::io::SeekFrom::End(0))
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut body = crate::http::body(resp, &limits);
        let mut size = if append { have } else { 0 };
        loop {
            let next = match idle {
                Some(d) => tokio::time::timeout(d, body.next())
                    .await
                    .map_err(|_| format!("no data for {}s (slow retrieval)", d.as_secs()))?,
                None => body.next().await,
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| e.to_string())?;
            crate::notify::beat();
            size += chunk.len() as u64;
            if size > max {
                drop(f);
                let _ = tokio::fs::remove_file(path).await;
                return Err(format!(
                    "more than {max} bytes ({bound}) arrived (endless data?)"
                ));
            }
            let taken = match tracker.feed(&chunk) {
                Ok(n) => n,
                Err(e) => {
                    drop(f);
                    let _ = tokio::fs::remove_file(path).await;
                    return Err(e.to_string());
                }
            };
            f.write_all(&chunk[..taken])
                .await
                .map_err(|e| e.to_string())?;
            // The archive is over: what else the server sends is not part of it.
            if tracker.ended() {
                break;
            }
        }
        f.sync_all().await.map_err(|e| e.to_string())
    }

    /// [`Self::delta_path`], given up when the job is deleted meanwhile: then the job is
    /// forgotten and the path ends in [`Next::Wait`].
    pub(super) async fn delta_path_unless_gone(
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
    pub(super) async fn delta_path(
        &mut self,
        view: &JobView,
        full: &crate::tuf::TargetInfo,
        state: &str,
        allow_native: bool,
    ) -> Result<DeltaPath, StepError> {
        let cfg = self.config.delta.clone();
        let Some(trust) = self.trust.as_mut() else {
            return Ok(DeltaPath::Full);
        };
        let running = crate::status::read_version(&self.config.device.version_file);
        let routed = crate::delta::route::choose(
            &self.http,
            &cfg,
            &self.config.state_dir,
            trust,
            full,
            running.as_deref(),
            allow_native,
        )
        .await;
        let routed = match routed {
            Ok(r) => r,
            Err(failure) => {
                return Ok(DeltaPath::Ended(
                    self.terminate(view, &failure, None).await?,
                ));
            }
        };
        // MQTT's state says which path, and the bytes a delta fetches.
        self.reporter.route(&view.id, &routed.route);
        for note in &routed.notes {
            self.report(view, state, None, note, None).await?;
        }
        Ok(match routed.route {
            crate::delta::route::Route::Full => DeltaPath::Full,
            crate::delta::route::Route::Rebuilt { image, .. } => DeltaPath::Rebuilt(image),
            crate::delta::route::Route::Native {
                info,
                url,
                chunk_urls,
            } => DeltaPath::Native(info, url, chunk_urls),
        })
    }
}

/// Feeds a staged file to `tracker`, as the start of a `.swu`.
async fn track_file(path: &std::path::Path, tracker: &mut SwuTracker) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = f.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        tracker.feed(&buf[..n]).map_err(|e| e.to_string())?;
    }
}

/// Writes a rebuilt .swu to the staging file (then verified against its target like a download).
pub(super) async fn write_staged(image: Opened, path: &std::path::Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        crate::atomic::create_dirs(dir).map_err(|e| e.to_string())?;
    }
    let part = path.with_extension("delta-part");
    let mut f = crate::atomic::open_private(&part, crate::atomic::PRIVATE_FILE, true)
        .map(tokio::fs::File::from_std)
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
pub(super) enum DeltaPath {
    Full,
    /// The .swu rebuilt from the device's chunks and the fetched ones.
    Rebuilt(Opened),
    /// Install this target (a SWUpdate-native delta .swu) from this URL instead; the chunk URL
    /// of each zchunk file its delta handler names.
    Native(crate::tuf::TargetInfo, String, Vec<(String, String)>),
    /// The job ended (fallback = "fail").
    Ended(Next),
}

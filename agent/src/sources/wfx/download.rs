//! Getting an artifact's bytes: phased downloads staged with Range resume, and the choice of
//! delta or full route for a trusted target.

use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use crate::source::Opened;
use crate::sources::wfx::job::{Final, JobView, Record};
use crate::trust::Trust;
use crate::uri::ArtifactUri;
use crate::wfx::JobId;
use cip_swupdate::swu::SwuTracker;
use cip_tuf::artifacts::{self as trust};

use crate::delta::route::Route;
use crate::pipeline::install::{Routing, Waiting};
use crate::state::State;

use super::events::job_gone;
use super::installing::{HeldStep, WfxHooks};
use super::{Daemon, GONE_CHECK, Next, StepError};

impl Daemon {
    /// A job's staging directory: named by the digest of its id, never by the id.
    fn staged_dir(&self, id: &JobId) -> PathBuf {
        self.staging.join(id.digest())
    }

    pub(super) fn staged_path(&self, id: &JobId, index: usize) -> PathBuf {
        self.staged_dir(id).join(format!("{index}.swu"))
    }

    /// Brings `state_dir/staging` to the digest layout at start: a job's directory from before
    /// (named by its id) is renamed to its digest name, so a phased download survives the
    /// upgrade; anything else not belonging to a job of the journal is removed. Only entries
    /// directly in `staging` are touched (a symbolic link is removed, never followed).
    pub(super) fn tidy_staging(&self) {
        match std::fs::symlink_metadata(&self.staging) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                // Not made by this agent: nothing in it is touched.
                tracing::warn!("{} is not a directory", self.staging.display());
                return;
            }
            Err(_) => return, // none yet
        }
        let Ok(dir) = std::fs::read_dir(&self.staging) else {
            return;
        };
        let mut entries = Vec::new();
        for e in dir.filter_map(Result::ok) {
            match e.file_name().into_string() {
                Ok(name) => entries.push(name),
                // Not UTF-8: no name this agent ever made.
                Err(_) => {
                    let _ = remove_entry(&e.path());
                }
            }
        }
        let jobs: Vec<&str> = self.journal.jobs.keys().map(String::as_str).collect();
        for op in staging_plan(&entries, &jobs) {
            let r = match &op {
                StagingOp::Rename { from, to } => {
                    let (from, to) = (self.staging.join(from), self.staging.join(to));
                    // Only a real directory is moved (not a link planted there).
                    match std::fs::symlink_metadata(&from) {
                        Ok(m) if m.is_dir() => std::fs::rename(&from, &to),
                        _ => remove_entry(&from),
                    }
                }
                StagingOp::Remove(name) => remove_entry(&self.staging.join(name)),
            };
            match r {
                Ok(()) => tracing::info!("staging: {op}"),
                Err(e) => tracing::warn!("staging: {op}: {e}"),
            }
        }
    }

    /// Removes this job's staging directory, and nothing else.
    pub(super) async fn remove_staged(&self, id: &JobId) {
        let _ = tokio::fs::remove_dir_all(self.staged_dir(id)).await;
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
            .get(view.id.as_str())
            .is_some_and(|r| r.definition_hash != view.definition_hash)
        {
            self.journal
                .jobs
                .insert(view.id.to_string(), Record::new(view));
        }
        self.record_mut(view);
        self.save()?;
        if view.state == Some(State::Download) {
            self.report(view, State::Downloading, Some(0), "", None)
                .await?;
        }
        let n = def.artifacts.len();
        for (i, a) in def.artifacts.iter().enumerate() {
            let path = self.staged_path(&view.id, i);
            // TUF first: nothing is fetched for an artifact that is not a target.
            let target = match self.trusted_target(view, a, State::Downloading).await? {
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
            let idle = self.pipe.trust.as_ref().map(Trust::read_timeout);
            // A zchunk delta is rebuilt into the staged file (a native delta target is not
            // staged: the install step verifies the staged file against the full target).
            let mut rebuilt = None;
            if let (Some(t), false) = (target.clone(), path.exists()) {
                match self.staging_route(view, &t).await? {
                    Ok(r) => rebuilt = r,
                    Err(next) => return Ok(next),
                }
            }
            let fetch = async {
                match rebuilt {
                    Some(o) => write_staged(o, &path).await.map_err(Stopped::from),
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
            // Not now (the server away or failing, the disk full): the partial file stays for
            // the next try, after a backoff.
            if let Err(Stopped {
                message,
                waiting: Some(what),
            }) = &fetched
            {
                let why = format!("download of {}: {message}", a.uri);
                self.hold(view, HeldStep::Download, *what, &why).await?;
                return Ok(Next::Wait);
            }
            let fetched = fetched.map_err(|s| s.message).and_then(|()| match &target {
                // The whole staged file, resumed parts included, against the target.
                Some(t) => trust::verify_file(&path, t).inspect_err(|_| {
                    let _ = std::fs::remove_file(&path);
                }),
                None => Ok(()),
            });
            if let Err(msg) = fetched {
                // The job ends here: its partial file is of no use.
                let _ = tokio::fs::remove_file(&path).await;
                let message = format!("download of {} failed: {msg}", a.uri);
                self.record_mut(view).final_state = Some(Final {
                    state: State::Terminated,
                    message: message.clone(),
                    rolled_back: false,
                    time: Some(crate::report::now()),
                });
                self.save()?;
                self.report(view, State::Terminated, None, &message, None)
                    .await?;
                return Ok(Next::Reload);
            }
            let pct = ((i + 1) * 100 / n) as u8;
            self.report(
                view,
                State::Downloading,
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
        uri: &ArtifactUri,
        path: &std::path::Path,
        max: Option<u64>,
        idle: Option<Duration>,
    ) -> Result<(), Stopped> {
        use futures_util::StreamExt;
        let limits = self.pipe.settings.download.limits();
        let max_image = self.pipe.settings.download.max_image_size;
        let (max, bound) = match max {
            Some(m) => (m, "the TUF target's length"),
            None => (max_image, "download.max_image_size"),
        };
        if let Some(dir) = path.parent() {
            cip_atomic::create_dirs(dir).map_err(Stopped::io)?;
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
        let mut req = self.pipe.http.get(uri.as_str());
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = crate::http::send(req, &limits).await.map_err(|e| Stopped {
            message: e.to_string(),
            waiting: e.is_transient().then_some(Waiting::Server),
        })?;
        let status = resp.status();
        let append = status == reqwest::StatusCode::PARTIAL_CONTENT;
        if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
            return Ok(()); // complete already
        }
        if !status.is_success() {
            return Err(Stopped {
                message: format!("HTTP {}", status.as_u16()),
                waiting: crate::http::status_is_transient(status.as_u16())
                    .then_some(Waiting::Server),
            });
        }
        if !append && have > 0 {
            tracker = SwuTracker::with_max(max_image);
        }
        // 0600, never through a link planted in the staging directory.
        let mut f = cip_atomic::open_private(path, cip_atomic::PRIVATE_FILE, !append)
            .map(tokio::fs::File::from_std)
            .map_err(Stopped::io)?;
        if append {
            use tokio::io::AsyncSeekExt as _;
            f.seek(std::io::SeekFrom::End(0))
                .await
                .map_err(Stopped::io)?;
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
                return Err(
                    format!("more than {max} bytes ({bound}) arrived (endless data?)").into(),
                );
            }
            let taken = match tracker.feed(&chunk) {
                Ok(n) => n,
                Err(e) => {
                    drop(f);
                    let _ = tokio::fs::remove_file(path).await;
                    return Err(e.to_string().into());
                }
            };
            f.write_all(&chunk[..taken]).await.map_err(Stopped::io)?;
            // The archive is over: what else the server sends is not part of it.
            if tracker.ended() {
                break;
            }
        }
        f.sync_all().await.map_err(Stopped::io)
    }

    /// How a trusted target is staged: the full download, or a delta rebuilt from the chunks
    /// on the device (a native delta target is not staged: the install step verifies the
    /// staged file against the full target). A delta failure with `delta.fallback = "fail"`
    /// ends the job; a deletion meanwhile forgets it.
    async fn staging_route(
        &mut self,
        view: &JobView,
        full: &cip_tuf::TargetInfo,
    ) -> Result<Result<Option<Opened>, Next>, StepError> {
        let mut hooks = WfxHooks::new(self, view, State::Downloading);
        let routing = self.pipe.route(full, false, &mut hooks).await?;
        Ok(match routing {
            Routing::Route(Route::Rebuilt { image, .. }) => Ok(Some(image)),
            Routing::Route(_) => Ok(None),
            Routing::Failed(m) => Err(self.terminate(view, &m, None).await?),
            Routing::Cancelled => {
                tracing::info!(job = %view.id, "the job was deleted during the delta download: stopped");
                self.forget(&view.id).await?;
                Err(Next::Wait)
            }
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

/// A change to `state_dir/staging` at start ([`staging_plan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StagingOp {
    /// A directory of the old layout (named by the job id) to its digest name.
    Rename { from: String, to: String },
    /// Not a staging directory of a job in the journal.
    Remove(String),
}

impl std::fmt::Display for StagingOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::text::shown;
        match self {
            StagingOp::Rename { from, to } => {
                write!(f, "{} renamed to {to} (digest of the job id)", shown(from))
            }
            StagingOp::Remove(n) => write!(f, "{} removed (no job of the journal)", shown(n)),
        }
    }
}

/// What to do with the entries of `staging` (`entries`: their names) given the ids of the
/// journal's jobs (`jobs`, as stored: a journal from before ids were checked may hold any
/// text). Kept: the digest-named directory of a valid job id. Renamed: an entry named by a
/// valid job id that is one plain path component, when its digest entry is not there too.
/// Removed: the rest.
pub(super) fn staging_plan(entries: &[String], jobs: &[&str]) -> Vec<StagingOp> {
    let ids: Vec<JobId> = jobs.iter().filter_map(|j| JobId::parse(j).ok()).collect();
    let wanted: Vec<String> = ids.iter().map(JobId::digest).collect();
    let mut ops = Vec::new();
    for e in entries {
        if wanted.contains(e) {
            continue;
        }
        let old = ids
            .iter()
            .find(|id| id.as_str() == e && !id.contains('/') && !entries.contains(&id.digest()));
        ops.push(match old {
            Some(id) => StagingOp::Rename {
                from: e.clone(),
                to: id.digest(),
            },
            None => StagingOp::Remove(e.clone()),
        });
    }
    ops
}

/// Removes one entry: a directory with what it holds, a file or a link itself.
fn remove_entry(p: &std::path::Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) => Err(e),
    }
}

/// Writes a rebuilt .swu to the staging file (then verified against its target like a download).
/// (Through cip-atomic's temporary and rename, as every file the agent replaces.)
/// Why a download stopped; `waiting`: what a later try waits for, when one may succeed without
/// anyone acting.
#[derive(Debug)]
pub(super) struct Stopped {
    pub message: String,
    pub waiting: Option<Waiting>,
}

impl Stopped {
    /// A file error: a full disk may have room later, other errors are final.
    fn io(e: std::io::Error) -> Stopped {
        Stopped {
            waiting: (e.kind() == std::io::ErrorKind::StorageFull).then_some(Waiting::Disk),
            message: e.to_string(),
        }
    }
}

impl From<String> for Stopped {
    fn from(message: String) -> Stopped {
        Stopped {
            message,
            waiting: None,
        }
    }
}

pub(super) async fn write_staged(image: Opened, path: &std::path::Path) -> Result<(), String> {
    let (f, tmp) =
        cip_atomic::create_temp(path, cip_atomic::PRIVATE_FILE).map_err(|e| e.to_string())?;
    let mut f = tokio::fs::File::from_std(f);
    let mut reader = image.reader;
    let copied = async {
        tokio::io::copy(&mut reader, &mut f)
            .await
            .map_err(|e| format!("delta rebuild: {e}"))?;
        f.sync_all().await.map_err(|e| e.to_string())
    }
    .await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    cip_atomic::persist(&tmp, path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_waited_for_other_file_errors_are_final() {
        let full = Stopped::io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(full.waiting, Some(Waiting::Disk));
        let denied = Stopped::io(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(denied.waiting, None);
        assert_eq!(Stopped::from("bad".to_owned()).waiting, None);
    }

    fn digest(id: &str) -> String {
        JobId::parse(id).unwrap().digest()
    }

    #[test]
    fn staging_keeps_jobs_migrates_old_names_and_drops_the_rest() {
        let entries: Vec<String> = [
            digest("j1"),
            "j2".to_owned(),
            "j3".to_owned(),
            digest("j3"),
            "gone".to_owned(),
            digest("gone"),
            "..x".to_owned(),
        ]
        .into();
        let ops = staging_plan(&entries, &["j1", "j2", "j3", "..", "/abs", "..x"]);
        assert_eq!(
            ops,
            [
                StagingOp::Rename {
                    from: "j2".into(),
                    to: digest("j2")
                },
                // Both layouts: the digest one is the one in use.
                StagingOp::Remove("j3".into()),
                StagingOp::Remove("gone".into()),
                StagingOp::Remove(digest("gone")),
                StagingOp::Rename {
                    from: "..x".into(),
                    to: digest("..x")
                },
            ]
        );
        assert!(staging_plan(&[], &["j1"]).is_empty());
    }

    /// The old layout's hostile names never become a rename source outside `staging`.
    #[test]
    fn only_plain_names_are_migrated() {
        let entries: Vec<String> = ["..".to_owned(), "abs".to_owned()].into();
        let ops = staging_plan(&entries, &["..", "/abs", "a/b"]);
        assert_eq!(
            ops,
            [
                StagingOp::Remove("..".into()),
                StagingOp::Remove("abs".into())
            ]
        );
    }
}

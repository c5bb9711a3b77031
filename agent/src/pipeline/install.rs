//! Installing one target: which way its bytes come (delta or full), streamed into SWUpdate
//! hashed on the way, judged before the commit, with progress and the verdict.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::delta::route::Route;
use crate::mqtt::Phase;
use crate::source::{self, Opened, Source};
use cip_swupdate::install::{self as stream, InstallError, Observer};
use cip_swupdate::{ClientError, InstallRequest, ProgressMsg, RecoveryStatus};
use cip_tuf::TargetInfo;
use cip_tuf::artifacts::{self as trust, SharedVerifier};

use super::Pipeline;

/// Log lines of SWUpdate kept with a failure.
pub const LOG_TAIL: usize = 20;

/// What a source adds to an install: its reports, its commit record, its cancellation.
// (The agent runs on a current-thread runtime: no `Send` bound is needed on these futures.)
#[allow(async_fn_in_trait)]
pub trait Hooks {
    /// What stops the step (e.g. a journal that cannot be written).
    type Stop;
    /// The update's id in MQTT messages.
    fn id(&self) -> &str;
    /// A status line of the step (the route taken and why, a delta giving way).
    async fn note(&mut self, message: &str) -> Result<(), Self::Stop>;
    /// Resolves when the update is withdrawn (a deleted job); never, for a source without.
    fn cancelled(&self) -> impl Future<Output = ()> + 'static;
    /// Progress of the whole update in percent, with a line saying what happens; `false`
    /// when it could not be taken now (it is offered again later).
    fn progress(&mut self, _percent: u8, _message: String) -> bool {
        true
    }
    /// The image is whole and verified; only the held-back tail is left. The source records
    /// its commit point here (an error abandons the install).
    fn before_commit(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// The install is over: finish what the hooks sent in the background.
    async fn flush(&mut self) {}
}

/// One install.
pub struct Order {
    /// The artifact as users know it (its name, else its URI).
    pub label: String,
    /// SWUpdate's `info` (cut to [`cip_swupdate::ipc::INFO_MAX`]).
    pub info: String,
    /// Where the full image's bytes are.
    pub source: Source,
    /// The TUF target the bytes must be (`None`: not verified, development only).
    pub target: Option<TargetInfo>,
    /// A delta route may be taken (not for a staged file, not after a delta failed).
    pub may_route: bool,
    pub dry_run: bool,
    /// This artifact's share of the update: before it, and its own, in percent.
    pub base: u8,
    pub span: u8,
    /// At most one progress report per this.
    pub progress_interval: Duration,
}

/// How an install ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// SWUpdate installed it.
    Installed,
    /// A delta that SWUpdate failed (nothing installed): the full target follows, once. The
    /// source records that first; the message says why.
    DeltaFailed(String),
    /// Failed for good: the message, and SWUpdate's last log lines.
    Failed { message: String, log: Vec<String> },
    /// Not now, for a reason of the device or the server, not of the update (SWUpdate away or
    /// busy, the artifact server away or failing): nothing was installed; what it waits for
    /// and why.
    Busy(Waiting, String),
    /// Withdrawn by the source mid-way.
    Cancelled,
}

impl Outcome {
    fn failed(message: impl Into<String>) -> Outcome {
        Outcome::Failed {
            message: message.into(),
            log: Vec::new(),
        }
    }
}

/// What an update that cannot go on now waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    Swupdate,
    /// The artifact server (not reached, or 5xx, 429, 408).
    Server,
    /// Room in the state directory (phased downloads).
    Disk,
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiting::Swupdate => "SWUpdate",
            Waiting::Server => "the artifact server",
            Waiting::Disk => "disk space",
        })
    }
}

/// How a target's bytes come ([`Pipeline::route`]).
pub enum Routing {
    Route(Route),
    /// A delta failed with `delta.fallback = "fail"`: the update ends with this message.
    Failed(String),
    Cancelled,
}

impl Pipeline {
    /// Which way `full`'s bytes come: the full download, a `.swu` rebuilt from the chunks on
    /// the device, or (with `allow_native`) a SWUpdate-native delta target; the notes go to
    /// the source. Without `[tuf]`: the full download.
    pub async fn route<H: Hooks>(
        &mut self,
        full: &TargetInfo,
        allow_native: bool,
        hooks: &mut H,
    ) -> Result<Routing, H::Stop> {
        let Some(trust) = self.trust.as_mut() else {
            return Ok(Routing::Route(Route::Full));
        };
        let running = crate::device::read_version(&self.settings.version_file);
        let cancelled = hooks.cancelled();
        let routed = tokio::select! {
            r = crate::delta::route::choose(
                &self.http,
                &self.settings.delta,
                &self.settings.state_dir,
                trust,
                full,
                running.as_deref(),
                allow_native,
            ) => r,
            () = cancelled => return Ok(Routing::Cancelled),
        };
        let routed = match routed {
            Ok(r) => r,
            Err(failure) => return Ok(Routing::Failed(failure)),
        };
        // MQTT's state says which path, and the bytes a delta fetches.
        self.reporter.route(hooks.id(), &routed.route);
        for note in &routed.notes {
            hooks.note(note).await?;
        }
        Ok(Routing::Route(routed.route))
    }

    /// Installs `order` through SWUpdate.
    pub async fn install<H: Hooks>(
        &mut self,
        order: Order,
        hooks: &mut H,
    ) -> Result<Outcome, H::Stop> {
        // SWUpdate away: not a byte is fetched (a delta's chunks neither) until it answers.
        if let Some(away) = self.swupdate_away().await {
            return Ok(Outcome::Busy(Waiting::Swupdate, away));
        }
        let full = order.target.clone();
        let (mut target, mut src) = (order.target.clone(), order.source.clone());
        let (mut rebuilt, mut native, mut chunk_urls) = (None::<Opened>, false, Vec::new());
        if let (Some(t), true) = (&full, order.may_route) {
            match self.route(t, true, hooks).await? {
                Routing::Cancelled => return Ok(Outcome::Cancelled),
                Routing::Failed(m) => return Ok(Outcome::failed(m)),
                Routing::Route(Route::Full) => {}
                Routing::Route(Route::Rebuilt { image, .. }) => rebuilt = Some(image),
                Routing::Route(Route::Native {
                    info,
                    url,
                    chunk_urls: urls,
                }) => {
                    target = Some(info);
                    src = Source::Url(url);
                    native = true;
                    chunk_urls = urls;
                }
            }
        }
        let by_delta = native || rebuilt.is_some();
        let mut image = match rebuilt {
            Some(o) => o,
            None => {
                // Waiting for the headers is given up, too, when the update is withdrawn.
                let limits = self.settings.download.limits();
                let cancelled = hooks.cancelled();
                let opened = tokio::select! {
                    r = source::open_with(&src, &self.http, &limits) => r,
                    () = cancelled => return Ok(Outcome::Cancelled),
                };
                match opened {
                    Ok(i) => i,
                    // Nothing reached SWUpdate yet: the server may give it later.
                    Err(e) if e.is_transient() => {
                        return Ok(Outcome::Busy(Waiting::Server, e.to_string()));
                    }
                    Err(e) => return Ok(Outcome::failed(e.to_string())),
                }
            }
        };
        // The full .swu is kept as the next seed (a native delta .swu is no seed of the image).
        let keeper = (self.settings.delta.cache_previous_swu && !order.dry_run && !native)
            .then(|| crate::delta::Keeper::new(&self.settings.state_dir));
        if let Some(k) = &keeper {
            image.reader = k.wrap(image.reader);
        }
        // Hashed on the way into SWUpdate; judged before the commit.
        let verify = match &target {
            Some(t) => match trust::shared(t) {
                Ok(v) => {
                    let idle = self.trust.as_ref().map(|t| t.read_timeout());
                    image.reader =
                        Box::pin(trust::HashingReader::new(image.reader, v.clone(), idle));
                    image.len = Some(t.length);
                    Some(v)
                }
                Err(e) => return Ok(Outcome::failed(e.to_string())),
            },
            None => None,
        };
        let selection = match self.selector.for_install(self.boot.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                return Ok(Outcome::failed(format!(
                    "no software set to install into: {e}"
                )));
            }
        };
        if let Some(s) = &selection {
            tracing::info!("installing {} with SWUpdate selection {s}", order.label);
        }
        let (software_set, running_mode) = selection.map(|s| (s.set, s.mode)).unwrap_or_default();
        let req = InstallRequest {
            software_set,
            running_mode,
            ..InstallRequest::new(order.dry_run, image.len.unwrap_or(0), &order.info)
        };
        if native {
            crate::delta::route::point_chunk_urls(&self.swupdate, &chunk_urls).await;
        }
        let cancelled = hooks.cancelled();
        let mut watch = Watch {
            hooks: &mut *hooks,
            reporter: &self.reporter,
            verify,
            base: order.base as u32,
            span: order.span as u32,
            interval: order.progress_interval,
            last: None,
            sent_pct: None,
            streamed_pct: 0,
            installed_pct: 0,
            bytes: 0,
        };
        let result = stream::install(
            &self.swupdate,
            &req,
            image.into(),
            self.settings.download.max_image_size,
            &mut watch,
            cancelled,
        )
        .await;
        hooks.flush().await;
        let ok = result.as_ref().is_ok_and(|o| o.succeeded());
        if let (Some(k), false) = (&keeper, ok) {
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
        // A delta that SWUpdate failed (nothing was installed) gives way to the full target
        // once, with delta.fallback = "full".
        if let Some(msg) = full.as_ref().and_then(|f| {
            crate::delta::route::full_after_failed_delta(&self.settings.delta, by_delta, &result, f)
        }) {
            tracing::warn!("{}: {msg}", order.label);
            self.reporter.route(hooks.id(), &Route::Full);
            return Ok(Outcome::DeltaFailed(msg));
        }
        let label = &order.label;
        Ok(match result {
            Err(InstallError::Interrupted { .. }) => Outcome::Cancelled,
            Ok(o) if o.succeeded() => {
                match &keeper {
                    Some(k) => k.commit(target.as_ref().map(|t| t.length)),
                    // Installed: the fetched chunks are of no use any more.
                    None => crate::delta::ChunkCache::clear(
                        &crate::delta::dir(&self.settings.state_dir).join("chunks"),
                    ),
                }
                Outcome::Installed
            }
            Ok(o) => {
                let n = o.log.len();
                Outcome::Failed {
                    message: format!("installing {label} failed: {}", o.failure_reason()),
                    log: o.log[n.saturating_sub(LOG_TAIL)..]
                        .iter()
                        .map(|l| l.msg.clone())
                        .collect(),
                }
            }
            Err(InstallError::Daemon(e)) if e.is_transient() => {
                Outcome::Busy(Waiting::Swupdate, e.to_string())
            }
            Err(e) => {
                let mut m = format!("installing {label}: {e}");
                let refused = matches!(e, InstallError::Daemon(ClientError::Refused(_)));
                if refused && !req.software_set.is_empty() {
                    m += &format!(
                        "; the request named software set {},{} (swupdate.select_on_a/_b), which SWUpdate accepts only when started with -q for it",
                        req.software_set, req.running_mode
                    );
                }
                Outcome::failed(m)
            }
        })
    }
}

/// Follows an install for the source: progress (half the image handed to SWUpdate, half
/// SWUpdate's own steps), at most one report per interval, and the verdict of the TUF hash
/// before the commit.
struct Watch<'a, H: Hooks> {
    hooks: &'a mut H,
    reporter: &'a crate::report::Reporter,
    verify: Option<SharedVerifier>,
    base: u32,
    span: u32,
    interval: Duration,
    last: Option<Instant>,
    /// The last percentage sent: the same one is not sent again.
    sent_pct: Option<u32>,
    streamed_pct: u32,
    installed_pct: u32,
    /// Bytes of the image handed to SWUpdate so far.
    bytes: u64,
}

impl<H: Hooks> Watch<'_, H> {
    fn send(&mut self, message: String) {
        let pct = (self.streamed_pct + self.installed_pct) / 2;
        if Some(pct) == self.sent_pct || self.last.is_some_and(|t| t.elapsed() < self.interval) {
            return;
        }
        let overall = (self.base + self.span * pct.min(100) / 100).min(99) as u8;
        if !self.hooks.progress(overall, message) {
            return;
        }
        self.last = Some(Instant::now());
        self.sent_pct = Some(pct);
        self.reporter
            .progress(self.hooks.id(), Phase::Installing, overall, self.bytes);
    }
}

impl<H: Hooks> Observer for Watch<'_, H> {
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

    fn before_commit(&mut self) -> Result<(), String> {
        if let Some(v) = &self.verify {
            trust::finish(v)?;
        }
        self.hooks.before_commit()
    }

    fn committed(&mut self) {
        crate::faults::point("commit");
    }
}

impl Pipeline {
    /// Why SWUpdate cannot take an install now (no socket, nothing listening, no answer), from
    /// one status request on its control socket; `None` when it answers. Other errors (a
    /// socket it may not use) are left to the install, which says them as the update's end.
    /// (Busy with another install shows only when the install is asked for: the status of a
    /// daemon with queued log lines is the lines', not its own.)
    pub async fn swupdate_away(&self) -> Option<String> {
        match self.swupdate.status().await {
            Err(e) if e.is_transient() => Some(e.to_string()),
            _ => None,
        }
    }

    /// After a restart between an install's commit and its verdict: SWUpdate's last result
    /// says whether it was installed (`true`). `false` covers a failure and a daemon that
    /// restarted too: either way nothing was installed, and installing again gives the real
    /// verdict (the image goes to the inactive slot).
    pub async fn last_verdict(&self) -> bool {
        for _ in 0..600 {
            crate::notify::beat();
            match self.swupdate.status().await {
                // Drain the log queue: only then is `current` the daemon's state.
                Ok(s) if !s.desc.is_empty() => continue,
                Ok(s) if s.current == 0 => return s.last_result == 3,
                Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => {
                    tracing::warn!("asking SWUpdate for the last result: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        false
    }
}

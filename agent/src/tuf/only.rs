//! TUF-only mode: no wfx configured. The agent polls its TUF repository for the newest `.swu`
//! target for its hardware whose `custom.version` is above the running version, installs it
//! through SWUpdate (verified on the way, as in `run`), activates it with the boot backend and
//! reports over the same channels (log, systemd STATUS=, MQTT).
//!
//! What it remembers (`<state_dir>/tuf-only.json`, written atomically): the install waiting for
//! its reboot, and the targets (by hash) already installed or failed, so that none is installed
//! twice and a rolled-back one is not tried again. A power cut during an install leaves no
//! record: SWUpdate failed it, and the next poll installs again.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::boot::{self, Boot, Verdict};
use crate::config::{Config, Health, MarkInstalled, Reboot};
use crate::delta::route::{Route, Routed};
use crate::job::{Artifact, Definition, Flow, JobView};
use crate::mqtt::{Phase, Publisher};
use crate::report::Reporter;
use crate::selection::Selector;
use crate::source::{self, Source};
use crate::trust::Trust;
use cip_swupdate::install::{self, Observer};
use cip_swupdate::{InstallOutcome, InstallRequest, ProgressMsg, RunType, Swupdate};
use cip_tuf::TargetInfo;
use cip_tuf::artifacts::{self, Refusal, SharedVerifier, check_hardware};

/// Compares versions: digit runs as numbers, letter runs as text, separators ignored; a
/// version with more parts after an equal prefix is the newer (`1.5.1` > `1.5`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = None;
        let mut digit = false;
        for (i, c) in s.char_indices() {
            let kind = if c.is_ascii_digit() {
                Some(true)
            } else if c.is_alphanumeric() {
                Some(false)
            } else {
                None
            };
            match (start, kind) {
                (Some(st), Some(k)) if k != digit => {
                    out.push((digit, &s[st..i]));
                    start = Some(i);
                    digit = k;
                }
                (Some(st), None) => {
                    out.push((digit, &s[st..i]));
                    start = None;
                }
                (None, Some(k)) => {
                    start = Some(i);
                    digit = k;
                }
                _ => {}
            }
        }
        if let Some(st) = start {
            out.push((digit, &s[st..]));
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (tx, ty) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
            }
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => x.1.cmp(y.1),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The identity of a target's bytes: its sha256 (or first listed hash) and its path.
pub fn target_id(t: &TargetInfo) -> String {
    let h = t
        .hashes
        .get("sha256")
        .or_else(|| t.hashes.values().next())
        .cloned()
        .unwrap_or_default();
    format!("{}@{h}", t.path)
}

/// The update to install: the newest `.swu` target for this hardware above `running`, not a
/// companion of another target (`custom.zchunk`, `custom.deltas`), not in `skip`.
pub fn pick_update<'a>(
    targets: &'a [TargetInfo],
    running: &str,
    hwrevision: Option<&str>,
    skip: &BTreeSet<String>,
) -> Option<&'a TargetInfo> {
    let companions: BTreeSet<&str> = targets
        .iter()
        .flat_map(|t| {
            let z = t.custom.get("zchunk").and_then(Value::as_str);
            let d = t
                .custom
                .get("deltas")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.values().filter_map(Value::as_str));
            z.into_iter().chain(d)
        })
        .collect();
    targets
        .iter()
        .filter(|t| t.path.ends_with(".swu") && !companions.contains(t.path.as_str()))
        .filter(|t| !skip.contains(&target_id(t)))
        .filter(|t| check_hardware(&t.custom, hwrevision).is_ok())
        .filter_map(|t| {
            let v = t.custom.get("version")?.as_str()?;
            (compare_versions(v, running) == Ordering::Greater).then_some((v, t))
        })
        .max_by(|(va, ta), (vb, tb)| compare_versions(va, vb).then_with(|| tb.path.cmp(&ta.path)))
        .map(|(_, t)| t)
}

/// What TUF-only mode remembers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Installed and activated, waiting for the boot backend's verdict.
    pub pending: Option<Pending>,
    /// Target ids installed for good.
    pub done: BTreeSet<String>,
    /// Target ids that failed (install or rolled back): not tried again.
    pub failed: BTreeSet<String>,
    /// Target ids whose delta install SWUpdate failed: installed from the full target.
    #[serde(default)]
    pub delta_failed: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub path: String,
    pub version: String,
    /// The slot armed for the next boot (`None`: boot backend none).
    #[serde(default)]
    pub slot: Option<String>,
    /// A failed health check: the slot was sent back, the rollback is awaited.
    #[serde(default)]
    pub failed_check: Option<String>,
}

impl Record {
    pub fn load(path: &Path) -> Record {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        cip_atomic::write(path, &bytes, cip_atomic::PRIVATE_FILE)
    }
}

/// Why TUF-only mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OnlyError {
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustSetupError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpSetupError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[error("TUF-only mode needs a [tuf] section")]
    NoTuf,
}

/// The TUF-only agent.
pub struct TufOnly {
    trust: Trust,
    http: reqwest::Client,
    swupdate: Swupdate,
    boot: Box<dyn Boot>,
    selector: Selector,
    reporter: Reporter,
    record_path: PathBuf,
    version_file: PathBuf,
    hwrevision_file: PathBuf,
    poll: Duration,
    mark_installed: MarkInstalled,
    health: Health,
    reboot: Reboot,
    delta: crate::config::Delta,
    download: crate::config::Download,
    state_dir: PathBuf,
    /// The `uri` of the artifact TUF-only mode's jobs show (their `name` is the target path).
    targets_url: crate::uri::ArtifactUri,
}

/// Consent and reboot commands.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl TufOnly {
    pub fn new(config: &Config) -> Result<TufOnly, OnlyError> {
        let t = config.tuf.as_ref().ok_or(OnlyError::NoTuf)?;
        let trust = Trust::new(config)?.ok_or(OnlyError::NoTuf)?;
        let http = crate::http::client(&config.tls, &config.proxy, Duration::from_secs(30))?;
        // MQTT needs a client-id for its topics.
        let mqtt = match (&config.mqtt, &config.device.client_id) {
            (Some(m), Some(id)) => Some(Publisher::start(m, id)?),
            (Some(_), None) => {
                tracing::warn!("[mqtt] needs device.client_id: no MQTT in TUF-only mode");
                None
            }
            _ => None,
        };
        Ok(TufOnly {
            trust,
            http,
            swupdate: Swupdate::new(config.swupdate.socket_paths(), config.swupdate.wire),
            boot: boot::from_config(&config.boot),
            selector: Selector::new(config),
            reporter: Reporter::new(
                mqtt,
                crate::status::read_version(&config.device.version_file),
            ),
            record_path: config.state_dir.join("tuf-only.json"),
            version_file: config.device.version_file.clone(),
            hwrevision_file: config.device.hwrevision_file.clone(),
            poll: t.poll_interval,
            mark_installed: config.boot.mark_installed,
            health: config.health.clone(),
            reboot: config.reboot.clone(),
            delta: config.delta.clone(),
            download: config.download.clone(),
            state_dir: config.state_dir.clone(),
            targets_url: crate::uri::ArtifactUri::from_config(&t.targets_url),
        })
    }

    /// Polls until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tracing::info!(
            "TUF-only mode (no [wfx]): polling the TUF repository every {}",
            humantime::format_duration(self.poll)
        );
        self.reporter.idle(None);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = self.poll_once() => {}
            }
            let wait = crate::wfx::backoff::jittered(self.poll, fastrand::f64());
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.reporter.shutdown().await;
    }

    fn save(&self, r: &Record) {
        if let Err(e) = r.save(&self.record_path) {
            tracing::error!("{}: {e}", self.record_path.display());
        }
    }

    fn view(&self, path: &str, version: &str, id: &str, state: &str) -> JobView {
        JobView {
            id: crate::wfx::JobId::tuf_target(path),
            flow: Flow::Direct,
            state: state.to_owned(),
            definition_hash: id.to_owned(),
            definition: Ok(Definition {
                types: vec!["firmware".into()],
                artifacts: vec![Artifact {
                    name: Some(path.to_owned()),
                    version: Some(version.to_owned()),
                    uri: self.targets_url.clone(),
                }],
            }),
        }
    }

    /// Settles an activation waiting for its reboot; `false` while it still waits. As in `run`:
    /// an armed slot is rebooted into by the reboot policy; a slot on trial passes the health
    /// checks and is confirmed, or is sent back; a confirmed or rolled back slot ends it.
    async fn settle(&self, rec: &mut Record) -> bool {
        let Some(p) = rec.pending.clone() else {
            return true;
        };
        let v = self.view(&p.path, &p.version, &p.id, "ACTIVATING");
        let status = match self.boot.read() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{e}");
                return false;
            }
        };
        self.reporter.boot(status.booted.clone(), status.trial);
        match boot::judge(&status, p.slot.as_deref()) {
            Verdict::PendingReboot => {
                tracing::info!("{} {} installed: waiting for the reboot", p.path, p.version);
                self.reboot_by_policy().await;
                false
            }
            Verdict::Trial => {
                if p.failed_check.is_none() {
                    let checked =
                        crate::health::check(&self.health, Some(&p.version), &self.version_file)
                            .await;
                    match checked {
                        Ok(()) => {
                            if let Err(e) = self.boot.confirm() {
                                tracing::warn!("{e}");
                                return false;
                            }
                            let slot = p.slot.clone().unwrap_or_default();
                            return self.end(
                                rec,
                                &v,
                                true,
                                &format!("slot {slot} confirmed after the health checks, running version {}", p.version),
                            );
                        }
                        Err(why) => {
                            tracing::error!("{} on trial: {why}; going back", p.path);
                            if let Some(q) = rec.pending.as_mut() {
                                q.failed_check = Some(why);
                            }
                            self.save(rec);
                        }
                    }
                }
                if let Err(e) = self.boot.reject() {
                    tracing::error!("{e}");
                }
                self.reboot_command().await;
                false
            }
            Verdict::Confirmed => {
                let message = match &p.slot {
                    None => "installed (boot backend none: no trial boot)".to_owned(),
                    Some(s) => format!("slot {s} confirmed"),
                };
                self.end(rec, &v, true, &message)
            }
            Verdict::RolledBack(why) => {
                let m = match (&p.failed_check, &status.booted) {
                    (Some(check), Some(b)) => format!("rolled back to slot {b} ({check})"),
                    _ => why,
                };
                self.end(rec, &v, false, &m)
            }
        }
    }

    /// Records and reports the end of an activation.
    fn end(&self, rec: &mut Record, v: &JobView, activated: bool, message: &str) -> bool {
        let Some(p) = rec.pending.take() else {
            return true;
        };
        if activated {
            rec.done.insert(p.id);
        } else {
            rec.failed.insert(p.id);
        }
        self.save(rec);
        let state = if activated { "ACTIVATED" } else { "TERMINATED" };
        self.reporter
            .job_state(v, state, activated.then_some(100), message);
        self.reporter.idle((!activated).then(|| message.to_owned()));
        true
    }

    /// The slot is armed: reboot now (with consent), in the window, or leave it to an operator.
    async fn reboot_by_policy(&self) {
        if self.boot.name() == "none" {
            return;
        }
        match crate::reboot::decide_now(&self.reboot) {
            crate::reboot::Decision::Manual | crate::reboot::Decision::Later(_) => {}
            crate::reboot::Decision::Now => {
                if let Some(consent) = &self.reboot.consent_command {
                    if let Err(e) = crate::reboot::run_command(consent, COMMAND_TIMEOUT).await {
                        tracing::info!("reboot deferred (no consent: {e})");
                        return;
                    }
                }
                self.reboot_command().await;
            }
        }
    }

    async fn reboot_command(&self) {
        if let Err(e) = crate::reboot::run_command(&self.reboot.command, COMMAND_TIMEOUT).await {
            tracing::error!("reboot command: {e}");
        }
    }

    /// One poll: settle an activation waiting for its reboot, else look for an update.
    pub async fn poll_once(&mut self) {
        let mut rec = Record::load(&self.record_path);
        if !self.settle(&mut rec).await {
            return;
        }
        let targets = match self.trust.all_targets().await {
            Ok(t) => t,
            Err(Refusal::Wait(m)) | Err(Refusal::Terminate(m)) => {
                tracing::warn!("TUF-only: {m}");
                return;
            }
        };
        let Some(running) = crate::status::read_version(&self.version_file) else {
            tracing::warn!(
                "TUF-only: the running version is unknown ({}): nothing is installed",
                self.version_file.display()
            );
            return;
        };
        let hw = std::fs::read_to_string(&self.hwrevision_file).ok();
        let skip: BTreeSet<String> = rec.done.union(&rec.failed).cloned().collect();
        let Some(t) = pick_update(&targets, &running, hw.as_deref(), &skip).cloned() else {
            tracing::debug!("TUF-only: nothing newer than {running}");
            return;
        };
        let version = t
            .custom
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let id = target_id(&t);
        tracing::info!("TUF-only: {} {version} (running {running})", t.path);
        let v = self.view(&t.path, &version, &id, "INSTALLING");
        self.reporter
            .job_state(&v, "INSTALLING", Some(0), &format!("installing {}", t.path));
        match self.install(&t, &v, &mut rec).await {
            Ok(()) => {
                let slot = match self.arm() {
                    Ok(slot) => slot,
                    Err(e) => {
                        rec.failed.insert(id);
                        self.save(&rec);
                        self.reporter.job_state(&v, "TERMINATED", None, &e);
                        self.reporter.idle(Some(e));
                        return;
                    }
                };
                rec.pending = Some(Pending {
                    id,
                    path: t.path.clone(),
                    version,
                    slot,
                    failed_check: None,
                });
                self.save(&rec);
                let message = match self.boot.name() {
                    "none" => "installed (boot backend none)".to_owned(),
                    b => format!("new slot armed ({b}); waiting for the reboot"),
                };
                self.reporter.job_state(&v, "ACTIVATING", None, &message);
                // boot none: settled at once; else the reboot policy.
                self.settle(&mut rec).await;
            }
            Err(message) => {
                rec.failed.insert(id);
                self.save(&rec);
                self.reporter.job_state(&v, "TERMINATED", None, &message);
                self.reporter.idle(Some(message));
            }
        }
    }

    /// After the install: the slot armed for the next boot (made so with
    /// `mark_installed = "agent"`), as `run` does it.
    fn arm(&self) -> Result<Option<String>, String> {
        if self.boot.name() == "none" {
            return Ok(None);
        }
        let status = self.boot.read().map_err(|e| e.to_string())?;
        if let Some(p) = status.pending {
            return Ok(Some(p));
        }
        if self.mark_installed != MarkInstalled::Agent {
            return Err(format!(
                "no slot is armed for the next boot ({}): SWUpdate marks it when it runs with a bootloader; else set boot.mark_installed = \"agent\"",
                status.detail
            ));
        }
        self.boot.mark_installed().map_err(|e| e.to_string())?;
        let s = self.boot.read().map_err(|e| e.to_string())?;
        s.pending
            .map(Some)
            .ok_or_else(|| format!("the new slot could not be armed: {}", s.detail))
    }

    /// Installs `t` the way `run` does: a SWUpdate-native delta, a `.swu` rebuilt from the
    /// device's chunks, or the full target; a delta that SWUpdate fails gives way to the full
    /// target once (`delta.fallback = "full"`, recorded first so a power cut does not repeat it).
    async fn install(
        &mut self,
        t: &TargetInfo,
        v: &JobView,
        rec: &mut Record,
    ) -> Result<(), String> {
        let id = target_id(t);
        let routed = if rec.delta_failed.contains(&id) {
            Routed {
                route: Route::Full,
                notes: Vec::new(),
            }
        } else {
            let running = crate::status::read_version(&self.version_file);
            crate::delta::route::choose(
                &self.http,
                &self.delta,
                &self.state_dir,
                &mut self.trust,
                t,
                running.as_deref(),
                true,
            )
            .await?
        };
        self.reporter.route(&v.id, &routed.route);
        for note in &routed.notes {
            self.reporter.job_state(v, "INSTALLING", None, note);
        }
        let by_delta = routed.route.is_delta();
        let result = self.install_by(t, routed.route, v).await?;
        let Some(msg) =
            crate::delta::route::full_after_failed_delta(&self.delta, by_delta, &result, t)
        else {
            return judge(t, result);
        };
        rec.delta_failed.insert(id);
        self.save(rec);
        tracing::warn!("TUF-only: {msg}");
        self.reporter.route(&v.id, &Route::Full);
        self.reporter.job_state(v, "INSTALLING", None, &msg);
        let result = self.install_by(t, Route::Full, v).await?;
        judge(t, result)
    }

    /// One install of the target `full` by `route`; `Err` when it could not start.
    async fn install_by(
        &self,
        full: &TargetInfo,
        route: Route,
        v: &JobView,
    ) -> Result<Result<InstallOutcome, install::InstallError>, String> {
        let (target, mut image, chunk_urls, keep) = match route {
            Route::Full => {
                let url = self.trust.target_url(full).map_err(|e| e.to_string())?;
                let image =
                    source::open_with(&Source::Url(url), &self.http, &self.download.limits())
                        .await
                        .map_err(|e| e.to_string())?;
                (full.clone(), image, Vec::new(), true)
            }
            Route::Rebuilt { image, .. } => (full.clone(), image, Vec::new(), true),
            Route::Native {
                info,
                url,
                chunk_urls,
            } => {
                let image =
                    source::open_with(&Source::Url(url), &self.http, &self.download.limits())
                        .await
                        .map_err(|e| e.to_string())?;
                (info, image, chunk_urls, false)
            }
        };
        // The full .swu is kept as the next delta's seed (a native delta .swu holds no image).
        let keeper = (keep && self.delta.cache_previous_swu)
            .then(|| crate::delta::Keeper::new(&self.state_dir));
        if let Some(k) = &keeper {
            image.reader = k.wrap(image.reader);
        }
        let verify = artifacts::shared(&target).map_err(|e| e.to_string())?;
        image.reader = Box::pin(artifacts::HashingReader::new(
            image.reader,
            verify.clone(),
            Some(self.trust.read_timeout()),
        ));
        image.len = Some(target.length);
        let (software_set, running_mode) = self
            .selector
            .for_install(self.boot.as_ref())
            .map_err(|e| format!("no software set to install into: {e}"))?
            .map(|s| (s.set, s.mode))
            .unwrap_or_default();
        let req = InstallRequest {
            run: RunType::Install,
            len: target.length,
            info: format!("cip-update-agent TUF-only {}", target.path),
            software_set,
            running_mode,
            ..Default::default()
        };
        let mut obs = OnlyObserver {
            reporter: &self.reporter,
            id: v.id.to_string(),
            verify,
        };
        image.reader =
            crate::delta::route::point_chunk_urls(&self.swupdate, chunk_urls, image.reader).await;
        let result = install::install(
            &self.swupdate,
            &req,
            image.into(),
            self.download.max_image_size,
            &mut obs,
            std::future::pending::<()>(),
        )
        .await;
        let ok = result.as_ref().is_ok_and(|o| o.succeeded());
        match (&keeper, ok) {
            (Some(k), true) => k.commit(Some(target.length)),
            (Some(k), false) => k.abandon(),
            (None, true) => {
                crate::delta::ChunkCache::clear(&crate::delta::dir(&self.state_dir).join("chunks"))
            }
            (None, false) => {}
        }
        Ok(result)
    }
}

/// The message of an install that did not succeed.
fn judge(
    t: &TargetInfo,
    result: Result<InstallOutcome, install::InstallError>,
) -> Result<(), String> {
    match result {
        Ok(o) if o.succeeded() => Ok(()),
        Ok(o) => Err(format!(
            "installing {} failed: {}",
            t.path,
            o.failure_reason()
        )),
        Err(e) => Err(format!("installing {}: {e}", t.path)),
    }
}

struct OnlyObserver<'a> {
    reporter: &'a Reporter,
    id: String,
    verify: SharedVerifier,
}

impl Observer for OnlyObserver<'_> {
    // The commit's crash point of the fault injection (crate::faults).
    fn committed(&mut self) {
        crate::faults::point("commit");
    }
    fn streamed(&mut self, bytes: u64, total: Option<u64>) {
        if let Some(t) = total.filter(|t| *t > 0) {
            let pct = (bytes.min(t) * 100 / t) as u8;
            self.reporter
                .progress(&self.id, Phase::Installing, pct / 2, bytes);
        }
    }

    fn progress(&mut self, _: &ProgressMsg) {}

    fn before_commit(&mut self) -> Result<(), String> {
        artifacts::finish(&self.verify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_compare_by_parts() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.5", "1.4", Greater),
            ("1.10", "1.9", Greater),
            ("1.5.1", "1.5", Greater),
            ("1.5", "1.5", Equal),
            ("1.05", "1.5", Equal),
            ("2.0-rc1", "2.0-rc2", Less),
            ("2024.12", "2024.3", Greater),
            ("1.0a", "1.0", Greater),
        ] {
            assert_eq!(compare_versions(a, b), o, "{a} {b}");
            assert_eq!(compare_versions(b, a), o.reverse(), "{b} {a}");
        }
    }

    fn t(path: &str, custom: Value) -> TargetInfo {
        TargetInfo {
            path: path.into(),
            length: 1,
            hashes: [("sha256".to_owned(), format!("{:0>64}", path.len()))]
                .into_iter()
                .collect(),
            custom,
        }
    }

    #[test]
    fn newest_for_this_hardware_above_the_running_version() {
        let hw = Some("qemu-amd64 cip-core-1.0");
        let ts = vec![
            t(
                "q/1.4.swu",
                json!({"version": "1.4", "hardware": ["cip-core-1.0"]}),
            ),
            t(
                "q/1.6.swu",
                json!({"version": "1.6", "hardware": ["cip-core-1.0"],
                        "zchunk": "q/1.6.swu.zck", "deltas": {"1.5": "q/1.5-1.6.delta.swu"}}),
            ),
            t(
                "q/1.5-1.6.delta.swu",
                json!({"version": "1.6", "hardware": ["cip-core-1.0"]}),
            ),
            t(
                "q/1.9.swu",
                json!({"version": "1.9", "hardware": ["cip-core-2.0"]}),
            ),
            t("q/1.7.tar", json!({"version": "1.7"})),
            t("q/nover.swu", json!({})),
        ];
        let none = BTreeSet::new();
        let got = pick_update(&ts, "1.5", hw, &none).unwrap();
        assert_eq!(got.path, "q/1.6.swu");
        assert!(pick_update(&ts, "1.6", hw, &none).is_none());
        let skip: BTreeSet<String> = [target_id(&ts[1])].into_iter().collect();
        assert!(pick_update(&ts, "1.5", hw, &skip).is_none());
        assert_eq!(
            pick_update(&ts, "1.3", hw, &skip).unwrap().path,
            "q/1.4.swu"
        );
    }

    #[test]
    fn record_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tuf-only.json");
        assert_eq!(Record::load(&p), Record::default());
        let mut r = Record::default();
        r.failed.insert("x@1".into());
        r.pending = Some(Pending {
            id: "a@2".into(),
            path: "a".into(),
            version: "2".into(),
            slot: Some("B".into()),
            failed_check: None,
        });
        r.save(&p).unwrap();
        assert_eq!(Record::load(&p), r);
    }
}

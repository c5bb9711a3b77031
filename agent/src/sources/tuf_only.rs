//! The TUF-only job source: no wfx configured. The agent polls its TUF repository for the
//! newest `.swu` target for its hardware whose `custom.version` is above the running version
//! and hands it to the pipeline (install, activate, settle), as the wfx source does its jobs.
//!
//! What it remembers (`<state_dir>/tuf-only.json`, written atomically): the install waiting for
//! its reboot (its boot record), the target committed to SWUpdate whose verdict is not recorded
//! yet, and the targets (by hash) already installed or failed, so that none is installed twice
//! and a rolled-back one is not tried again.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::Pipeline;
use crate::pipeline::activate::{BootRecord, Rebooting, Settled};
use crate::pipeline::install::{Hooks, Order, Outcome};
use crate::pipeline::service::JobSource;
use crate::report::{Reporter, Subject};
use crate::source::Source;
use crate::state::State;
use cip_tuf::TargetInfo;
use cip_tuf::artifacts::{Refusal, check_hardware};

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
    /// The target whose image was committed to SWUpdate, its verdict not recorded yet: after a
    /// restart, SWUpdate's last result says whether it was installed.
    #[serde(default)]
    pub committed: Option<String>,
    /// Target ids installed for good.
    pub done: BTreeSet<String>,
    /// Target ids that failed (install or rolled back): not tried again.
    pub failed: BTreeSet<String>,
    /// Target ids whose delta install SWUpdate failed: installed from the full target.
    #[serde(default)]
    pub delta_failed: BTreeSet<String>,
    /// The last update's end, for `status` and MQTT's last error.
    #[serde(default)]
    pub last: Option<LastEnd>,
}

/// An installed target waiting for its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub path: String,
    /// The slot armed, the slot it came from, the version expected, the reboots asked for.
    #[serde(flatten)]
    pub boot: BootRecord,
}

/// How the last update ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastEnd {
    pub path: String,
    pub activated: bool,
    pub message: String,
    /// The target's `custom.version` (not in records of older agents, as the two below).
    #[serde(default)]
    pub version: Option<String>,
    /// When it ended, RFC 3339 UTC.
    #[serde(default)]
    pub time: Option<String>,
    /// The new slot was tried and the bootloader went back to the old one.
    #[serde(default)]
    pub rolled_back: bool,
}

impl LastEnd {
    /// The end as the reports show it.
    pub fn outcome(&self) -> crate::report::Outcome {
        crate::report::Outcome {
            id: update_id(&self.path),
            state: State::end(self.activated),
            version: self.version.clone(),
            message: self.message.clone(),
            time: self.time.clone(),
            rolled_back: self.rolled_back,
        }
    }
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

/// The record's file in `state_dir`.
pub fn record_path(state_dir: &Path) -> PathBuf {
    state_dir.join("tuf-only.json")
}

/// The id of a target's update in reports (MQTT, logs): `tuf:<path>`; the path is signed
/// metadata, but one too long to show is named by its digest.
pub fn update_id(path: &str) -> String {
    if path.len() <= 250 && !path.chars().any(char::is_control) {
        format!("tuf:{path}")
    } else {
        let d = ring::digest::digest(&ring::digest::SHA256, path.as_bytes());
        format!("tuf:sha256:{}", hex::encode(d))
    }
}

/// The TUF-only source.
pub struct TufOnly {
    pipe: Pipeline,
    record_path: PathBuf,
    hwrevision_file: PathBuf,
    poll: Duration,
    /// An install that could not go on (SWUpdate or the server away): tries so far less one,
    /// and the next try's time (no round before it, see [`JobSource::not_before`]).
    held: Option<(u32, std::time::Instant)>,
}

/// At most one progress report per this.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

impl TufOnly {
    /// The source polling `pipe`'s TUF repository every `poll`, its record in `state_dir`.
    pub fn new(
        pipe: Pipeline,
        state_dir: &Path,
        hwrevision_file: PathBuf,
        poll: Duration,
    ) -> TufOnly {
        TufOnly {
            pipe,
            record_path: record_path(state_dir),
            hwrevision_file,
            poll,
            held: None,
        }
    }

    /// Runs until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tracing::info!(
            "TUF-only mode (no [wfx]): polling the TUF repository every {}",
            humantime::format_duration(self.poll)
        );
        crate::pipeline::service::run(self, stop).await;
    }

    fn save(&self, r: &Record) {
        if let Err(e) = r.save(&self.record_path) {
            tracing::error!("{}: {e}", self.record_path.display());
        }
    }

    fn report(
        &self,
        path: &str,
        version: Option<&str>,
        state: State,
        progress: Option<u8>,
        message: &str,
    ) {
        let id = update_id(path);
        let subject = Subject {
            id: &id,
            workflow: None,
            target_version: version,
        };
        self.pipe
            .reporter
            .job_state(subject, state, progress, message);
    }

    /// Settles an activation waiting for its reboot; `false` while it still waits.
    async fn settle(&mut self, rec: &mut Record) -> bool {
        let Some(p) = rec.pending.clone() else {
            return true;
        };
        let mut boot = p.boot.clone();
        let path = self.record_path.clone();
        let mut save = |b: &BootRecord| -> std::io::Result<()> {
            if let Some(q) = rec.pending.as_mut() {
                q.boot = b.clone();
            }
            rec.save(&path)
        };
        match self.pipe.settle(&mut boot, &mut save).await {
            Ok(Settled::PendingReboot) => {
                tracing::info!("{} installed: waiting for the reboot", p.path);
                match self.pipe.reboot_by_policy(&mut boot, &mut save).await {
                    // (The new slot never ran: given up, not rolled back.)
                    Ok(Rebooting::GaveUp(m)) => {
                        self.end(rec, false, false, &m);
                        true
                    }
                    Ok(Rebooting::Wait) => false,
                    Err(e) => {
                        tracing::error!("{}: {e}", path.display());
                        false
                    }
                }
            }
            // A slot that was tried and not confirmed ends with the bootloader back on the old one.
            Ok(Settled::Ended { activated, message }) => {
                self.end(rec, activated, !activated, &message);
                true
            }
            Ok(Settled::Wait) => false,
            Err(e) => {
                tracing::error!("{}: {e}", path.display());
                false
            }
        }
    }

    /// Records and reports the end of an update.
    fn end(&self, rec: &mut Record, activated: bool, rolled_back: bool, message: &str) {
        let Some(p) = rec.pending.take() else {
            return;
        };
        if activated {
            rec.done.insert(p.id.clone());
        } else {
            rec.failed.insert(p.id.clone());
        }
        let last = LastEnd {
            path: p.path.clone(),
            activated,
            message: message.to_owned(),
            version: p.boot.expected_version.clone(),
            time: Some(crate::report::now()),
            rolled_back,
        };
        rec.last = Some(last.clone());
        self.save(rec);
        let state = State::end(activated);
        let version = p.boot.expected_version.as_deref();
        self.report(&p.path, version, state, activated.then_some(100), message);
        let outcome = last.outcome();
        self.pipe.reporter.idle(Some(&outcome), outcome.error());
    }

    /// Records and reports an update that failed before its activation.
    fn fail(&self, rec: &mut Record, t: &TargetInfo, version: &str, message: &str) {
        rec.committed = None;
        rec.failed.insert(target_id(t));
        let last = LastEnd {
            path: t.path.clone(),
            activated: false,
            message: message.to_owned(),
            version: Some(version.to_owned()),
            time: Some(crate::report::now()),
            rolled_back: false,
        };
        rec.last = Some(last.clone());
        self.save(rec);
        self.report(&t.path, Some(version), State::Terminated, None, message);
        let outcome = last.outcome();
        self.pipe.reporter.idle(Some(&outcome), outcome.error());
    }

    /// One poll: settle an activation waiting for its reboot, else look for an update.
    pub async fn poll_once(&mut self) {
        let mut rec = Record::load(&self.record_path);
        if !self.settle(&mut rec).await {
            return;
        }
        let targets = match self.pipe.trust.as_mut() {
            Some(trust) => match trust.all_targets().await {
                Ok(t) => t,
                Err(Refusal::Wait(m)) | Err(Refusal::Terminate(m)) => {
                    tracing::warn!("TUF-only: {m}");
                    return;
                }
            },
            None => return,
        };
        let Some(running) = self.pipe.running_version() else {
            tracing::warn!(
                "TUF-only: the running version is unknown ({}): nothing is installed",
                self.pipe.settings.version_file.display()
            );
            return;
        };
        let hw = crate::device::read_hwrevision(&self.hwrevision_file);
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
        // Committed before a restart: SWUpdate's last result says whether it is installed.
        let recovered =
            rec.committed.as_deref() == Some(id.as_str()) && self.pipe.last_verdict().await;
        if !recovered {
            tracing::info!("TUF-only: {} {version} (running {running})", t.path);
            self.report(
                &t.path,
                Some(&version),
                State::Installing,
                Some(0),
                &format!("installing {}", t.path),
            );
            match self.install(&t, &version, &mut rec).await {
                Ok(()) => {}
                Err(None) => return,
                Err(Some(message)) => return self.fail(&mut rec, &t, &version, &message),
            }
        }
        let boot = match self.pipe.arm(Some(version.clone())) {
            Ok(b) => b,
            Err(e) => return self.fail(&mut rec, &t, &version, &e),
        };
        let message = self.pipe.armed_message(&boot);
        rec.committed = None;
        rec.pending = Some(Pending {
            id,
            path: t.path.clone(),
            boot,
        });
        self.save(&rec);
        self.report(&t.path, Some(&version), State::Activating, None, &message);
        // Boot backend none: settled at once; else the reboot policy.
        self.settle(&mut rec).await;
    }

    /// Installs `t` through the pipeline; a delta that SWUpdate fails gives way to the full
    /// target once (recorded first, so a power cut does not repeat it). `Err(None)`: not now
    /// (SWUpdate away or busy), `Err(Some)`: failed for good.
    async fn install(
        &mut self,
        t: &TargetInfo,
        version: &str,
        rec: &mut Record,
    ) -> Result<(), Option<String>> {
        let id = target_id(t);
        let url = match self.pipe.trust.as_ref().map(|trust| trust.target_url(t)) {
            Some(Ok(u)) => u,
            Some(Err(e)) => return Err(Some(e.to_string())),
            None => return Err(None),
        };
        loop {
            let order = Order {
                label: t.path.clone(),
                info: format!("cip-update-agent TUF-only {}", t.path),
                source: Source::Url(url.clone()),
                target: Some(t.clone()),
                may_route: !rec.delta_failed.contains(&id),
                dry_run: false,
                base: 0,
                span: 100,
                progress_interval: PROGRESS_INTERVAL,
            };
            let mut hooks = TufHooks {
                id: update_id(&t.path),
                target: id.clone(),
                version: version.to_owned(),
                reporter: self.pipe.reporter.clone(),
                record: rec,
                record_path: &self.record_path,
            };
            let Ok(outcome) = self.pipe.install(order, &mut hooks).await;
            if !matches!(outcome, Outcome::Busy(..)) {
                self.held = None;
            }
            match outcome {
                Outcome::Installed => return Ok(()),
                Outcome::DeltaFailed(msg) if !rec.delta_failed.contains(&id) => {
                    rec.delta_failed.insert(id.clone());
                    rec.committed = None;
                    self.save(rec);
                    self.report(&t.path, Some(version), State::Installing, None, &msg);
                }
                Outcome::DeltaFailed(msg) => return Err(Some(msg)),
                // Not now: tried again after a capped, jittered backoff, not at every poll.
                Outcome::Busy(what, e) => {
                    let attempt = self.held.map_or(0, |(a, _)| a.saturating_add(1));
                    let wait = self
                        .pipe
                        .settings
                        .swupdate_retry
                        .delay(attempt, fastrand::f64());
                    self.held = Some((attempt, std::time::Instant::now() + wait));
                    let next =
                        humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)));
                    tracing::warn!(
                        "TUF-only: cannot install {} now, will retry in {next}: {e}",
                        t.path
                    );
                    let note = format!(
                        "waiting for {what} ({} tries, the next in {next}): {e}",
                        attempt + 1
                    );
                    self.report(&t.path, Some(version), State::Installing, None, &note);
                    rec.committed = None;
                    self.save(rec);
                    return Err(None);
                }
                Outcome::Cancelled => return Err(None),
                Outcome::Failed { message, .. } => return Err(Some(message)),
            }
        }
    }
}

impl JobSource for TufOnly {
    fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipe
    }

    fn last_outcome(&self) -> Option<crate::report::Outcome> {
        Record::load(&self.record_path).last.map(|l| l.outcome())
    }

    fn busy(&self) -> bool {
        Record::load(&self.record_path).pending.is_some()
    }

    async fn settle_at_start(&mut self) {
        let mut rec = Record::load(&self.record_path);
        self.settle(&mut rec).await;
    }

    async fn round(&mut self) {
        self.poll_once().await;
    }

    fn poll_due(&self, last: std::time::Instant, unit: f64) -> std::time::Instant {
        last + crate::backoff::jittered(self.poll, unit)
    }

    fn not_before(&self) -> Option<std::time::Instant> {
        self.held.map(|(_, until)| until)
    }
}

/// What TUF-only mode adds to an install: notes to the reports, the commit point in its record.
struct TufHooks<'a> {
    id: String,
    /// The target's id in the record.
    target: String,
    version: String,
    reporter: Arc<Reporter>,
    record: &'a mut Record,
    record_path: &'a Path,
}

impl Hooks for TufHooks<'_> {
    type Stop = std::convert::Infallible;

    fn id(&self) -> &str {
        &self.id
    }

    async fn note(&mut self, message: &str) -> Result<(), Self::Stop> {
        let subject = Subject {
            id: &self.id,
            workflow: None,
            target_version: Some(&self.version),
        };
        self.reporter
            .job_state(subject, State::Installing, None, message);
        Ok(())
    }

    fn cancelled(&self) -> impl std::future::Future<Output = ()> + 'static {
        std::future::pending()
    }

    fn before_commit(&mut self) -> Result<(), String> {
        self.record.committed = Some(self.target.clone());
        self.record
            .save(self.record_path)
            .map_err(|e| format!("{}: {e}", self.record_path.display()))?;
        crate::faults::point("journal save (commit)");
        Ok(())
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
    fn update_ids_name_the_target_or_its_digest() {
        assert_eq!(update_id("os.swu"), "tuf:os.swu");
        let long = update_id(&"p".repeat(400));
        assert!(
            long.starts_with("tuf:sha256:") && long.len() == 75,
            "{long}"
        );
        assert!(update_id("a\nb").starts_with("tuf:sha256:"));
    }

    /// A record written before boot records were shared (`version` for the expected one)
    /// still reads.
    #[test]
    fn an_older_pending_record_reads() {
        let old = r#"{"pending":{"id":"a@1","path":"a","version":"2","slot":"B","failed_check":null},
            "done":[],"failed":[]}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        let p = r.pending.unwrap();
        assert_eq!(p.boot.slot.as_deref(), Some("B"));
        assert_eq!(p.boot.expected_version.as_deref(), Some("2"));
    }

    /// A last end written before it had a version, a time and the rollback flag still reads.
    #[test]
    fn an_older_last_end_reads() {
        let old = r#"{"pending":null,"done":[],"failed":["a@1"],
            "last":{"path":"os-2.0.swu","activated":false,"message":"rolled back"}}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        let o = r.last.unwrap().outcome();
        assert_eq!(o.id, "tuf:os-2.0.swu");
        assert_eq!(o.state, State::Terminated);
        assert_eq!((&o.version, &o.time, o.rolled_back), (&None, &None, false));
        assert_eq!(o.error(), Some("rolled back"));
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
            boot: BootRecord {
                slot: Some("B".into()),
                expected_version: Some("2".into()),
                ..Default::default()
            },
        });
        r.save(&p).unwrap();
        assert_eq!(Record::load(&p), r);
    }
}

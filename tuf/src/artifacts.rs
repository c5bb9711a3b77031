//! The gate of an installer: an artifact is installed only if it is a target of the device's
//! TUF repository, for this hardware, and its bytes are the target's. What the installer asks:
//! [`Gate::resolve`] before any byte is fetched, a [`HashingReader`] around the bytes going to
//! SWUpdate, and [`finish`] before the install is committed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, ReadBuf};

use crate::{Clock, Fetcher, TargetInfo, TargetVerifier, TufError, Updater, time};

/// Delegated roles read at most to list every target (RS-TUF: 256 bins and a few more).
const MAX_ROLES: usize = 4200;

/// Why an artifact cannot be installed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not now (expired metadata, the repository unreachable): the job waits and retries.
    Wait(String),
    /// Never: the job ends TERMINATED with this message.
    Terminate(String),
}

/// The clock expiry is checked against: the system clock, but never below the latest time known
/// (a device without RTC boots in the past; an old clock must not make expired metadata valid).
#[derive(Debug)]
pub struct LatestKnownClock {
    latest: AtomicI64,
    file: PathBuf,
}

impl LatestKnownClock {
    /// The clock whose floor is kept in `file` (none yet when it is absent or unreadable).
    pub fn load(file: PathBuf) -> LatestKnownClock {
        let latest = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        LatestKnownClock {
            latest: AtomicI64::new(latest),
            file,
        }
    }

    /// Remembers `t` (persistently) if it is later than what is known.
    pub fn record(&self, t: i64) {
        if self.latest.fetch_max(t, Ordering::SeqCst) < t {
            let bytes = t.to_string();
            if let Err(e) =
                cip_atomic::write(&self.file, bytes.as_bytes(), cip_atomic::PRIVATE_FILE)
            {
                tracing::warn!("{}: {e}", self.file.display());
            }
        }
    }
}

impl Clock for LatestKnownClock {
    fn now(&self) -> i64 {
        time::system_now().max(self.latest.load(Ordering::SeqCst))
    }
}

/// The TUF side of an installer: one repository's updater, the clock its expiry is checked
/// against, and the device's hardware revision that targets must fit.
pub struct Gate<F: Fetcher> {
    updater: Updater<F>,
    clock: Arc<LatestKnownClock>,
    hwrevision_file: PathBuf,
    wait_for_sync: Option<(PathBuf, Duration)>,
    sync_waited: bool,
}

impl<F: Fetcher> Gate<F> {
    /// `updater` has its root already ([`Updater::ensure_root`]) and `clock` as its clock;
    /// `hwrevision_file`: SWUpdate's "board revision" file; `wait_for_sync`: a file whose
    /// existence says the clock is synchronized, and how long the first refresh waits for it.
    pub fn new(
        updater: Updater<F>,
        clock: Arc<LatestKnownClock>,
        hwrevision_file: PathBuf,
        wait_for_sync: Option<(PathBuf, Duration)>,
    ) -> Gate<F> {
        Gate {
            updater,
            clock,
            hwrevision_file,
            wait_for_sync,
            sync_waited: false,
        }
    }

    /// Refreshes the metadata (after waiting once for the clock, when configured).
    pub async fn refresh(&mut self) -> Result<(), Refusal> {
        let mut synced = true;
        if let Some((file, timeout)) = &self.wait_for_sync {
            if !self.sync_waited {
                self.sync_waited = true;
                let until = Instant::now() + *timeout;
                if !file.exists() {
                    tracing::info!(
                        "TUF: waiting for the clock to be synchronized ({})",
                        file.display()
                    );
                }
                while !file.exists() && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            synced = file.exists();
            if !synced {
                tracing::warn!(
                    "TUF: the clock is not synchronized ({} is absent): expiry is checked against the latest known time",
                    file.display()
                );
            }
        }
        let started = time::system_now();
        match self.updater.refresh().await {
            Ok(()) => {
                // A synchronized (or trusted) clock's reading becomes the floor for later.
                if synced {
                    self.clock.record(started);
                }
                Ok(())
            }
            Err(e) => Err(refusal("TUF metadata", e)),
        }
    }

    /// Refreshes, then lists every target the metadata vouches for (TUF-only mode).
    pub async fn all_targets(&mut self) -> Result<Vec<TargetInfo>, Refusal> {
        self.refresh().await?;
        self.updater
            .all_targets(MAX_ROLES)
            .await
            .map_err(|e| refusal("TUF target list", e))
    }

    /// Where a target's bytes are (after a refresh).
    pub fn target_url(&self, info: &TargetInfo) -> Result<String, TufError> {
        self.updater.target_url(info)
    }

    /// Refreshes, then finds the target at `path` and checks its hardware. Nothing of the
    /// target itself is fetched.
    pub async fn resolve(&mut self, path: &str) -> Result<TargetInfo, Refusal> {
        self.refresh().await?;
        let info = match self.updater.find_target(path).await {
            Ok(Some(i)) => i,
            Ok(None) => {
                return Err(Refusal::Terminate(format!(
                    "{path} is not a target of the TUF repository: refused, nothing downloaded"
                )));
            }
            Err(e) => return Err(refusal(&format!("TUF lookup of {path}"), e)),
        };
        let hw = std::fs::read_to_string(&self.hwrevision_file).ok();
        check_hardware(&info.custom, hw.as_deref()).map_err(|m| {
            Refusal::Terminate(format!(
                "target {path}: {m} ({}): refused, nothing downloaded",
                self.hwrevision_file.display()
            ))
        })?;
        TargetVerifier::new(&info).map_err(|e| Refusal::Terminate(e.to_string()))?;
        Ok(info)
    }
}

impl<F: Fetcher> Gate<F> {
    /// A target named by another target's (verified) custom metadata: a zchunk companion or a
    /// SWUpdate-native delta. Looked up in the metadata of the last refresh ([`Gate::resolve`]
    /// just made one); with its hardware checked; its URL.
    pub async fn related(&mut self, path: &str) -> Result<(TargetInfo, String), String> {
        let info = match self.updater.find_target(path).await {
            Ok(Some(i)) => i,
            Ok(None) => return Err(format!("{path} is not a target of the TUF repository")),
            Err(e) => return Err(format!("TUF lookup of {path}: {e}")),
        };
        let hw = std::fs::read_to_string(&self.hwrevision_file).ok();
        check_hardware(&info.custom, hw.as_deref()).map_err(|m| format!("target {path}: {m}"))?;
        TargetVerifier::new(&info).map_err(|e| e.to_string())?;
        let url = self.target_url(&info).map_err(|e| e.to_string())?;
        Ok((info, url))
    }
}

fn refusal(what: &str, e: TufError) -> Refusal {
    if e.is_retryable() {
        Refusal::Wait(format!("{what}: {e}; waiting to retry"))
    } else {
        Refusal::Terminate(format!("{what}: {e}"))
    }
}

/// Checks a target's `custom.board` and `custom.hardware` (a list of revisions, or one) against
/// the device's "board revision" line. A target without them fits every device.
pub fn check_hardware(custom: &Value, hwrevision: Option<&str>) -> Result<(), String> {
    let board = custom.get("board").filter(|v| !v.is_null());
    let hardware = custom.get("hardware").filter(|v| !v.is_null());
    if board.is_none() && hardware.is_none() {
        return Ok(());
    }
    let line = hwrevision
        .and_then(|t| t.lines().map(str::trim).find(|l| !l.is_empty()))
        .ok_or("the target names its hardware but this device's board revision is unknown")?;
    let mut fields = line.split_whitespace();
    let (dev_board, dev_rev) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    if let Some(b) = board {
        if b.as_str() != Some(dev_board) {
            return Err(format!("for board {b}, this device is board `{dev_board}`"));
        }
    }
    if let Some(h) = hardware {
        let list: Vec<&str> = match h {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !list.contains(&dev_rev) {
            return Err(format!(
                "for hardware {h}, this device is revision `{dev_rev}`"
            ));
        }
    }
    Ok(())
}

/// A target's verifier shared between the reader that feeds it and the commit check.
pub type SharedVerifier = Arc<Mutex<Option<TargetVerifier>>>;

/// A new verifier of `info`'s bytes, to share between a [`HashingReader`] and [`finish`].
pub fn shared(info: &TargetInfo) -> Result<SharedVerifier, TufError> {
    Ok(Arc::new(Mutex::new(Some(TargetVerifier::new(info)?))))
}

/// The verdict on everything read: length and every hash. Called once (it takes the verifier).
pub fn finish(v: &SharedVerifier) -> Result<(), String> {
    let taken = v.lock().unwrap_or_else(|e| e.into_inner()).take();
    match taken {
        Some(v) => v.finish().map_err(|e| e.to_string()),
        None => Err("the target's bytes were already judged".into()),
    }
}

/// Hashes what passes through; a read error as soon as more than the target's length came, or
/// when the source has given nothing for `idle` (slow retrieval). The idle time counts only
/// while the reader waits on its source, not while the caller is busy elsewhere.
pub struct HashingReader {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    verifier: SharedVerifier,
    idle: Option<Duration>,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HashingReader {
    /// Reads `inner` through `verifier`; `idle`: the longest wait for the next bytes.
    pub fn new(
        inner: Pin<Box<dyn AsyncRead + Send>>,
        verifier: SharedVerifier,
        idle: Option<Duration>,
    ) -> HashingReader {
        HashingReader {
            inner,
            verifier,
            idle,
            waiting: None,
        }
    }
}

impl AsyncRead for HashingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match self.inner.as_mut().poll_read(cx, buf) {
            Poll::Ready(Ok(())) => self.waiting = None,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(idle) = self.idle else {
                    return Poll::Pending;
                };
                let timer = self
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no data for {}s (slow retrieval)", idle.as_secs()),
                    )));
                }
                return Poll::Pending;
            }
        }
        let mut guard = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = guard.as_mut() {
            if let Err(e) = v.update(&buf.filled()[before..]) {
                // An error reads nothing (AsyncRead's contract).
                buf.set_filled(before);
                return Poll::Ready(Err(std::io::Error::other(e.to_string())));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Checks a staged file against its target (a phased download, before DOWNLOADED).
pub fn verify_file(path: &Path, info: &TargetInfo) -> Result<(), String> {
    use std::io::Read;
    let mut v = TargetVerifier::new(info).map_err(|e| e.to_string())?;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        v.update(&buf[..n]).map_err(|e| e.to_string())?;
    }
    v.finish().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hardware_and_board_against_hwrevision() {
        let hw = Some("qemu-amd64 cip-core-1.0\n");
        let c = json!({"version": "1.5", "board": "qemu-amd64", "hardware": ["cip-core-1.0", "x"]});
        check_hardware(&c, hw).unwrap();
        check_hardware(&json!({"hardware": "cip-core-1.0"}), hw).unwrap();
        check_hardware(&json!({"version": "1"}), None).unwrap();
        check_hardware(&Value::Null, None).unwrap();
        let e = check_hardware(&json!({"hardware": ["cip-core-2.0"]}), hw).unwrap_err();
        assert!(
            e.contains("cip-core-2.0") && e.contains("`cip-core-1.0`"),
            "{e}"
        );
        let e =
            check_hardware(&json!({"board": "bbb", "hardware": ["cip-core-1.0"]}), hw).unwrap_err();
        assert!(e.contains("board"), "{e}");
        let e = check_hardware(&json!({"hardware": ["cip-core-1.0"]}), None).unwrap_err();
        assert!(e.contains("unknown"), "{e}");
    }

    #[tokio::test]
    async fn the_reader_hashes_and_stops_endless_data() {
        use tokio::io::AsyncReadExt;
        let data = b"the image".to_vec();
        let info = TargetInfo {
            path: "f.swu".into(),
            length: data.len() as u64,
            hashes: [(
                "sha256".to_owned(),
                hex::encode(ring::digest::digest(&ring::digest::SHA256, &data)),
            )]
            .into_iter()
            .collect(),
            custom: Value::Null,
        };
        let v = shared(&info).unwrap();
        let mut r = HashingReader::new(
            Box::pin(std::io::Cursor::new(data.clone())),
            v.clone(),
            None,
        );
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        finish(&v).unwrap();
        assert!(finish(&v).is_err(), "judged once");

        let v = shared(&info).unwrap();
        let mut r = HashingReader::new(
            Box::pin(std::io::Cursor::new(b"other img".to_vec())),
            v.clone(),
            None,
        );
        r.read_to_end(&mut Vec::new()).await.unwrap();
        let e = finish(&v).unwrap_err();
        assert!(e.contains("sha256 is") && e.contains("f.swu"), "{e}");

        let v = shared(&info).unwrap();
        let mut r = HashingReader::new(
            Box::pin(std::io::Cursor::new(vec![0u8; 100])),
            v.clone(),
            None,
        );
        let e = r.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(e.to_string().contains("more than its 9 bytes"), "{e}");
    }

    /// A source that stalls fails after the idle time instead of hanging.
    #[tokio::test]
    async fn a_stalled_source_times_out() {
        use tokio::io::AsyncReadExt;
        let info = TargetInfo {
            path: "f.swu".into(),
            length: 10,
            hashes: [("sha256".to_owned(), "00".repeat(32))]
                .into_iter()
                .collect(),
            custom: Value::Null,
        };
        let (_keep, rx) = tokio::io::duplex(64);
        let mut r = HashingReader::new(
            Box::pin(rx),
            shared(&info).unwrap(),
            Some(Duration::from_millis(200)),
        );
        let t = Instant::now();
        let e = r.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("slow retrieval"), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn latest_known_time_is_a_floor_that_persists() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("t");
        let c = LatestKnownClock::load(f.clone());
        let far = time::system_now() + 1_000_000;
        c.record(far);
        c.record(5);
        assert_eq!(c.now(), far);
        assert_eq!(LatestKnownClock::load(f).now(), far);
    }
}

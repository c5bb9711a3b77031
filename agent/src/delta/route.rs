//! Which way a trusted target's bytes come, shared by `run` and TUF-only mode: a
//! SWUpdate-native delta target for the running version (`custom.deltas`), a `.swu` rebuilt from
//! the chunks on the device (`custom.zchunk`), or the full target; with `delta.fallback` deciding
//! what a delta failure before the install leads to. And, for a native delta on SWUpdate
//! 2025.12+, pointing the delta handler at the chunk URLs taken from the TUF repository.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};

use serde_json::Value;

use super::{Stats, human};
use crate::config::{Delta, DeltaFallback};
use crate::source::Opened;
use crate::trust::Trust;
use cip_swupdate::install::InstallError;
use cip_swupdate::{InstallOutcome, Swupdate, Wire};
use cip_tuf::TargetInfo;

/// How the target is installed.
pub enum Route {
    /// The full target, as without deltas.
    Full,
    /// The `.swu` rebuilt from the device's chunks and the fetched ones.
    Rebuilt { image: Opened, stats: Stats },
    /// This target (a `.swu` for SWUpdate's `delta`/`rdiff` handlers) from `url` instead, and
    /// the chunk URL of each zchunk file its delta handler names (`zckfile`).
    Native {
        info: TargetInfo,
        url: String,
        chunk_urls: Vec<(String, String)>,
    },
}

impl Route {
    /// Whether the install goes by a delta (its failure may be retried with the full target).
    pub fn is_delta(&self) -> bool {
        !matches!(self, Route::Full)
    }
}

/// A route and the status lines that tell the user which one, and why.
pub struct Routed {
    pub route: Route,
    pub notes: Vec<String>,
}

/// The zchunk files a native delta's handler fetches, by its `zckfile` property, and the TUF
/// targets they are: `"zckfiles": {"rootfs.ext4.zck": "<target path>"}` in the native delta
/// target's custom metadata.
pub fn zckfiles(custom: &Value) -> Vec<(String, String)> {
    custom
        .get("zckfiles")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Chooses the route of `full`. `Err` is the delta failure when `delta.fallback = "fail"`.
pub async fn choose(
    http: &reqwest::Client,
    cfg: &Delta,
    state_dir: &Path,
    trust: &mut Trust,
    full: &TargetInfo,
    running: Option<&str>,
    allow_native: bool,
) -> Result<Routed, String> {
    let mut notes = Vec::new();
    if !cfg.enabled {
        return Ok(Routed {
            route: Route::Full,
            notes,
        });
    }
    let native = if cfg.native && allow_native {
        super::native_delta(&full.custom, running).map(str::to_owned)
    } else {
        None
    };
    let companion = super::companion_path(&full.custom).map(str::to_owned);
    // The native delta first (smallest), then the zchunk companion; the full target last.
    let mut failures = Vec::new();
    if let Some(path) = native {
        match native_route(trust, &path).await {
            Ok((info, url, chunk_urls)) => {
                let msg = format!(
                    "delta: SWUpdate-native delta {path} for the running version {} ({} instead of {})",
                    running.unwrap_or("?"),
                    human(info.length),
                    human(full.length)
                );
                tracing::info!("{msg}");
                notes.push(msg);
                return Ok(Routed {
                    route: Route::Native {
                        info,
                        url,
                        chunk_urls,
                    },
                    notes,
                });
            }
            Err(e) => {
                let m = format!("SWUpdate-native delta: {e}");
                tracing::warn!("{m}");
                failures.push(m);
            }
        }
    }
    if let Some(path) = companion {
        let timing = super::Timing {
            idle: trust.read_timeout(),
            limits: trust.transfer_limits(),
        };
        let prepared = match trust.related(&path).await {
            Ok((info, url)) => super::prepare(http, cfg, state_dir, &info, &url, full, timing)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(super::DeltaError::Companion(e).to_string()),
        };
        match prepared {
            Ok(p) => {
                let msg = p.stats.message();
                tracing::info!("{msg}");
                notes.push(msg);
                return Ok(Routed {
                    route: Route::Rebuilt {
                        image: Opened {
                            reader: p.reader,
                            len: Some(full.length),
                        },
                        stats: p.stats,
                    },
                    notes,
                });
            }
            Err(e) => {
                let m = format!("delta failed: {e}");
                tracing::warn!("{m}");
                failures.push(m);
            }
        }
    }
    if failures.is_empty() {
        return Ok(Routed {
            route: Route::Full,
            notes,
        });
    }
    let failure = failures.join("; ");
    match cfg.fallback {
        DeltaFallback::Fail => Err(format!("{failure} (delta.fallback = \"fail\")")),
        DeltaFallback::Full => {
            notes.push(format!(
                "{failure}; full download of {} ({})",
                full.path,
                human(full.length)
            ));
            Ok(Routed {
                route: Route::Full,
                notes,
            })
        }
    }
}

/// The native delta target and the TUF targets of the zchunk files it names.
async fn native_route(
    trust: &mut Trust,
    path: &str,
) -> Result<(TargetInfo, String, Vec<(String, String)>), String> {
    let (info, url) = trust.related(path).await?;
    let mut chunk_urls = Vec::new();
    for (zckfile, target) in zckfiles(&info.custom) {
        let (_, u) = trust
            .related(&target)
            .await
            .map_err(|e| format!("zckfile {zckfile}: {e}"))?;
        chunk_urls.push((zckfile, u));
    }
    Ok((info, url, chunk_urls))
}

/// With `delta.fallback = "full"`, a delta install (`by_delta`) that SWUpdate failed gives way
/// to the full target `full` once: the status line that says so, or `None` when it does not.
pub fn full_after_failed_delta(
    cfg: &Delta,
    by_delta: bool,
    result: &Result<InstallOutcome, InstallError>,
    full: &TargetInfo,
) -> Option<String> {
    if !by_delta || cfg.fallback != DeltaFallback::Full {
        return None;
    }
    let why = swupdate_failed(result)?;
    Some(format!(
        "delta install failed ({why}); installing the full target {} ({})",
        full.path,
        human(full.length)
    ))
}

/// Why SWUpdate failed an install, when it did: its FAILURE verdict (a handler failed, or the
/// agent stopped a stream that went wrong, e.g. a rebuild whose seed changed). Nothing was
/// installed then, so a delta install may give way to the full target. `None` for a success, a
/// job deleted meanwhile, or a daemon that was away or busy (nothing was tried).
fn swupdate_failed(result: &Result<InstallOutcome, InstallError>) -> Option<String> {
    match result {
        Ok(o) if o.succeeded() => None,
        Ok(o) => Some(o.failure_reason()),
        Err(InstallError::Interrupted { .. } | InstallError::Daemon(_)) => None,
        Err(e) => e
            .verdict()
            .filter(|v| !v.succeeded())
            .map(|_| e.to_string()),
    }
}

/// Whether SET_DELTA_URL may be sent to a daemon of this wire (2025.12 on; older ones NACK the
/// type).
pub fn takes_delta_urls(wire: Option<Wire>) -> bool {
    wire.is_some_and(|w| w >= Wire::V2025_12)
}

/// How long `auto` waits, during a native delta's install, for the first frames that tell the
/// daemon's wire (SWUpdate sends START right after the ACK).
const WIRE_WAIT: Duration = Duration::from_secs(5);

/// For a native delta's install: on SWUpdate 2025.12+ each of its zchunk files gets its chunk
/// URL from the TUF repository (SET_DELTA_URL, kept by the daemon until that install ends).
/// Sent before the install when the wire is known (configured, or seen by `auto` earlier);
/// else (`auto`, nothing seen yet: every first install after a boot) as soon as this install's
/// first frames tell the wire, while the end of the image is held back: SWUpdate runs the delta
/// handler only once the whole `.swu` is in, so the URL is always there first. On an older daemon
/// nothing is sent and the handler uses the `url` of its sw-description. A refusal is logged;
/// the install goes on (its handler then says why). Returns the image's reader.
pub async fn point_chunk_urls(
    sw: &Swupdate,
    chunk_urls: Vec<(String, String)>,
    reader: Pin<Box<dyn AsyncRead + Send>>,
) -> Pin<Box<dyn AsyncRead + Send>> {
    if chunk_urls.is_empty() {
        return reader;
    }
    if let Some(w) = sw.known_wire() {
        send_chunk_urls(sw, Some(w), &chunk_urls).await;
        return reader;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sw = sw.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + WIRE_WAIT;
        let wire = loop {
            match sw.known_wire() {
                Some(w) => break Some(w),
                None if tokio::time::Instant::now() >= deadline => break None,
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        send_chunk_urls(&sw, wire, &chunk_urls).await;
        let _ = tx.send(());
    });
    Box::pin(GateReader {
        inner: reader,
        inner_done: false,
        gate: Some(rx),
    })
}

async fn send_chunk_urls(sw: &Swupdate, wire: Option<Wire>, chunk_urls: &[(String, String)]) {
    if !takes_delta_urls(wire) {
        let why = match wire {
            Some(w) => format!("SWUpdate's wire is {w}"),
            None => {
                "SWUpdate's release is not known (swupdate.wire = \"auto\" saw no frame)".to_owned()
            }
        };
        for (zckfile, _) in chunk_urls {
            tracing::info!(
                "{why}: SET_DELTA_URL (2025.12+) not sent for {zckfile}; its delta handler uses the url of its sw-description"
            );
        }
        return;
    }
    for (zckfile, url) in chunk_urls {
        match sw.set_delta_url(zckfile, url).await {
            Ok(()) => tracing::info!("SET_DELTA_URL {zckfile} -> {url}"),
            Err(e) => tracing::warn!("SET_DELTA_URL {zckfile}: {e}"),
        }
    }
}

/// Holds the end of a stream until `gate` opens (or its sender is gone).
struct GateReader {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    inner_done: bool,
    gate: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl AsyncRead for GateReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.inner_done {
            let before = buf.filled().len();
            match self.inner.as_mut().poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() == before => self.inner_done = true,
                other => return other,
            }
        }
        if let Some(g) = self.gate.as_mut() {
            if Pin::new(g).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.gate = None;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zckfiles_map_handler_names_to_targets() {
        let c = json!({"version": "1.5",
                       "zckfiles": {"rootfs.ext4.zck": "q/rootfs-1.5.ext4.zck", "": "x", "n": 5}});
        assert_eq!(
            zckfiles(&c),
            vec![(
                "rootfs.ext4.zck".to_owned(),
                "q/rootfs-1.5.ext4.zck".to_owned()
            )]
        );
        assert!(zckfiles(&json!({})).is_empty());
        assert!(zckfiles(&Value::Null).is_empty());
    }

    /// The stream's end waits for the gate; its bytes do not.
    #[tokio::test]
    async fn the_gate_holds_the_end_of_the_stream() {
        use tokio::io::AsyncReadExt;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut r = GateReader {
            inner: Box::pin(&b"abc"[..]),
            inner_done: false,
            gate: Some(rx),
        };
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).await.unwrap(), 3);
        let held = tokio::time::timeout(Duration::from_millis(50), r.read(&mut buf)).await;
        assert!(held.is_err(), "EOF before the gate opened");
        tx.send(()).unwrap();
        assert_eq!(r.read(&mut buf).await.unwrap(), 0);
        assert_eq!(r.read(&mut buf).await.unwrap(), 0);
    }

    #[test]
    fn only_2025_12_and_later_take_delta_urls() {
        assert!(!takes_delta_urls(None));
        assert!(!takes_delta_urls(Some(Wire::V2022_12)));
        assert!(!takes_delta_urls(Some(Wire::V2023_12)));
        assert!(!takes_delta_urls(Some(Wire::V2024_12)));
        assert!(takes_delta_urls(Some(Wire::V2025_12)));
    }
}

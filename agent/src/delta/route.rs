//! Which way a trusted target's bytes come, shared by `run` and TUF-only mode: a
//! SWUpdate-native delta target for the running version (`custom.deltas`), a `.swu` rebuilt from
//! the chunks on the device (`custom.zchunk`), or the full target; with `delta.fallback` deciding
//! what a delta failure before the install leads to. And, for a native delta on SWUpdate
//! 2025.12+, pointing the delta handler at the chunk URLs taken from the TUF repository.

use std::path::Path;

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

/// For a native delta's install: each of its zchunk files gets its chunk URL from the TUF
/// repository (SET_DELTA_URL, 2025.12+; the daemon keeps it until that install ends), sent
/// before the install. With the wire known (configured, or seen by `auto` in an earlier
/// install) an older daemon is not asked. With `auto` and nothing seen yet (every first install
/// after a start) the daemon is asked anyway: an older one NACKs the type and goes on. (The
/// frames of this install cannot tell the wire in time: the live 2026.05.1 daemon sends its
/// first progress frame only once it has read sw-description, which the agent's held-back tail
/// of a small `.swu` may not have reached.) A refusal is logged; the install goes on, and its
/// handler says why when it has no URL.
pub async fn point_chunk_urls(sw: &Swupdate, chunk_urls: &[(String, String)]) {
    let wire = sw.known_wire();
    if !asks_for_delta_urls(wire) {
        for (zckfile, _) in chunk_urls {
            tracing::info!(
                "SWUpdate's wire is {}: SET_DELTA_URL (2025.12+) not sent for {zckfile}; its delta handler uses the url of its sw-description",
                wire.map(|w| w.to_string()).unwrap_or_default()
            );
        }
        return;
    }
    for (zckfile, url) in chunk_urls {
        match sw.set_delta_url(zckfile, url).await {
            Ok(()) => tracing::info!("SET_DELTA_URL {zckfile} -> {url}"),
            Err(cip_swupdate::client::ClientError::Refused(_)) if wire.is_none() => tracing::info!(
                "SWUpdate refused SET_DELTA_URL for {zckfile}: a release before 2025.12; its delta handler uses the url of its sw-description"
            ),
            Err(e) => tracing::warn!("SET_DELTA_URL {zckfile}: {e}"),
        }
    }
}

/// Whether to send SET_DELTA_URL: to a 2025.12+ daemon, and to one whose release is not known
/// yet (an older one NACKs it).
fn asks_for_delta_urls(wire: Option<Wire>) -> bool {
    wire.is_none_or(|w| w >= Wire::V2025_12)
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

    #[test]
    fn delta_urls_go_to_2025_12_and_later_and_to_a_daemon_not_yet_seen() {
        assert!(asks_for_delta_urls(None));
        assert!(!asks_for_delta_urls(Some(Wire::V2022_12)));
        assert!(!asks_for_delta_urls(Some(Wire::V2023_12)));
        assert!(!asks_for_delta_urls(Some(Wire::V2024_12)));
        assert!(asks_for_delta_urls(Some(Wire::V2025_12)));
    }
}

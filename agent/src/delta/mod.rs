//! Delta downloads: a TUF target whose `custom.zchunk` names a zchunk companion (a `.zck` of the
//! same `.swu`, made with `zck -u -h sha256`) is rebuilt from the chunks already on the device
//! (the seeds: the running rootfs, the previous `.swu`, configured files, and the chunks fetched
//! earlier) plus the missing chunks fetched with HTTP multi-range requests; the rebuilt `.swu` is
//! streamed into SWUpdate through the daemon's verified install path.
//!
//! # Chain of trust
//! - The full target (the `.swu`) and the companion are both TUF targets: their paths, lengths
//!   and hashes come from verified metadata. The companion's path is read from the full target's
//!   own (signed) custom metadata, so a mirror cannot point the agent at another file.
//! - The companion's TUF hashes cover the whole `.zck`; the agent fetches only its header and a
//!   few chunks, so those hashes cannot be checked and they prove nothing about the bytes fetched.
//!   What is checked instead: the header against its own checksum (in the lead), its length and
//!   the data it indexes against the companion's TUF length (a header that indexes beyond it is
//!   refused), and its expanded length against the full target's TUF length. A header from a
//!   mirror is therefore only *consistent*, not *authentic*: a forged one can at worst make the
//!   agent fetch or reuse the wrong chunks.
//! - Every chunk (fetched, cached or from a seed) is checked against the header's checksum of its
//!   expanded bytes before it is used; the chunk cache is keyed by that checksum, so its entries
//!   are right by construction whatever header named them.
//! - The final guarantee: the rebuilt bytes pass through the daemon's [`HashingReader`] and are
//!   judged against the FULL target's TUF length and hashes in `before_commit`; SWUpdate is never
//!   told to commit an image that differs from the signed target. A forged header or seed thus
//!   costs bandwidth (or ends in the fallback), never a wrong install.
//!
//! # Failures
//! Everything that can fail before the first byte goes to SWUpdate (the companion, the seeds,
//! the chunk fetches) ends in `delta.fallback`: the full download, or the job's end. A chunk that
//! changes on the device between the seed scan and the rebuild (a seed file rewritten meanwhile)
//! is caught by its checksum while streaming: that install is abandoned before its commit, so
//! SWUpdate fails it and installs nothing. Such a late failure, like a native delta that
//! SWUpdate's handler fails, gives way to the full target once with `fallback = "full"`
//! ([`route::full_after_failed_delta`], recorded in the journal before the full install starts), or
//! ends the job with `fallback = "fail"`.
//!
//! # What survives a restart
//! Every fetched chunk is verified and stored under `state_dir/delta/chunks/<hash>-<hex>` as it
//! arrives, so a cut connection or a restart resumes with the chunks still missing: a verified
//! chunk is never fetched twice. After a successful install the cache is emptied and the
//! installed `.swu` is kept as `state_dir/delta/previous.swu` (`delta.cache_previous_swu`), the
//! seed of the next delta.
//!
//! [`HashingReader`]: cip_tuf::artifacts::HashingReader

mod cache;
mod companion;
mod fetch;
mod keep;
mod rebuild;
pub mod route;
mod seeds;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncRead;

use crate::config;
use cip_tuf::TargetInfo;

pub use cache::ChunkCache;
pub use keep::{Keeper, KeepingReader};
pub use seeds::{resolve_seeds, rootfs_device};

/// Why a delta could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The companion cannot be used (missing, malformed, inconsistent with its TUF target).
    #[error("zchunk companion: {0}")]
    Companion(String),
    /// The server or the network failed (retried before it is final).
    #[error("{0}")]
    Http(String),
    /// A fetched chunk does not verify.
    #[error("{0}")]
    Chunk(String),
    /// A local file (cache, seed) failed.
    #[error("{0}")]
    Io(String),
}

impl DeltaError {
    /// Worth another request: a cut connection, a timeout, a 5xx.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DeltaError::Http(_))
    }
}

/// What a delta cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes received from the server (header, chunk ranges, multipart part headers).
    pub fetched: u64,
    /// HTTP requests made (header and chunks).
    pub requests: u32,
    /// Of those, chunk requests.
    pub chunk_requests: u32,
    /// Byte ranges asked for in the chunk requests.
    pub ranges: u32,
    /// Length of the full target.
    pub full_len: u64,
    /// Expanded bytes taken from seeds, from the chunk cache, and fetched now.
    pub from_seeds: u64,
    pub from_cache: u64,
    pub chunks_fetched: u32,
}

impl Stats {
    /// The status line: which path, and what it saved.
    pub fn message(&self) -> String {
        let saved = (self.full_len.saturating_sub(self.fetched) * 100)
            .checked_div(self.full_len)
            .unwrap_or(0);
        format!(
            "delta: fetched {} of {} ({saved}% saved) in {} request{}",
            human(self.fetched),
            human(self.full_len),
            self.requests,
            if self.requests == 1 { "" } else { "s" }
        )
    }
}

/// `216 KiB`, `8.0 MiB`.
pub fn human(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.0} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / K / K)
    } else {
        format!("{:.1} GiB", f / K / K / K)
    }
}

/// The companion's target path named by a target's custom metadata.
pub fn companion_path(custom: &Value) -> Option<&str> {
    custom
        .get("zchunk")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The SWUpdate-native delta target for the running version (`custom.deltas`).
pub fn native_delta<'a>(custom: &'a Value, running: Option<&str>) -> Option<&'a str> {
    custom
        .get("deltas")?
        .get(running?)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Where the delta keeps its files.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("delta")
}

/// The previous .swu kept as a seed.
pub fn previous_swu(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("previous.swu")
}

/// A delta ready to stream: every chunk is on the device (seeds or verified cache).
pub struct Prepared {
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    pub stats: Stats,
}

/// The time bounds of the delta's requests.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// `tuf.read_timeout`: the longest wait for the next bytes.
    pub idle: Duration,
    /// `[download]`: the headers limit and the minimum throughput.
    pub limits: crate::http::Limits,
}

/// Fetches the companion's header, finds the chunks on the device, fetches the missing ones into
/// the chunk cache, and returns the reader of the rebuilt `.swu` (its chunks verified again as
/// they are read).
pub async fn prepare(
    http: &reqwest::Client,
    cfg: &config::Delta,
    state_dir: &Path,
    companion: &TargetInfo,
    companion_url: &str,
    full: &TargetInfo,
    timing: Timing,
) -> Result<Prepared, DeltaError> {
    let mut stats = Stats {
        full_len: full.length,
        ..Stats::default()
    };
    let header = companion::fetch_header(
        http,
        companion_url,
        companion,
        full,
        timing,
        cfg.max_retries,
        &mut stats,
    )
    .await?;
    let cache = ChunkCache::open(&dir(state_dir).join("chunks"), header.chunk_hash_type())?;
    let mut seed_paths = Vec::new();
    let previous = previous_swu(state_dir);
    if cfg.cache_previous_swu && previous.exists() {
        seed_paths.push(previous);
    }
    seed_paths.extend(resolve_seeds(&cfg.seeds));
    let header = std::sync::Arc::new(header);
    // Hashing seeds (a whole rootfs) is CPU and disk work: off the async threads.
    let located = {
        let (h, c) = (header.clone(), cache.clone());
        tokio::task::spawn_blocking(move || seeds::locate(&h, &c, &seed_paths))
            .await
            .map_err(|e| DeltaError::Io(format!("seed scan: {e}")))??
    };
    let missing = located.missing(&header);
    tracing::info!(
        "delta: {} of {} chunks on the device, {} to fetch",
        header.data_chunks().len() - missing.len(),
        header.data_chunks().len(),
        missing.len()
    );
    let opts = zchunk::PlanOptions {
        max_gap: cfg.max_gap,
        max_ranges_per_request: cfg.max_ranges_per_request,
    };
    fetch::fetch_missing(
        http,
        companion_url,
        &header,
        &missing,
        &cache,
        &fetch::Limits {
            plan: opts,
            timing,
            max_retries: cfg.max_retries,
            file_len: companion.length,
        },
        &mut stats,
    )
    .await?;
    let sources = located.sources(&header, &cache)?;
    stats.from_seeds = sources.from_seeds;
    stats.from_cache = sources.from_cache;
    Ok(Prepared {
        reader: rebuild::reader(header, sources),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_message_says_what_was_fetched_and_saved() {
        let s = Stats {
            fetched: 216 * 1024 + 300,
            requests: 2,
            full_len: 8 * 1024 * 1024,
            ..Stats::default()
        };
        assert_eq!(
            s.message(),
            "delta: fetched 216 KiB of 8.0 MiB (97% saved) in 2 requests"
        );
        let one = Stats {
            fetched: 10,
            requests: 1,
            full_len: 0,
            ..Stats::default()
        };
        assert_eq!(
            one.message(),
            "delta: fetched 10 B of 0 B (0% saved) in 1 request"
        );
    }

    #[test]
    fn custom_metadata_names_the_companion_and_native_deltas() {
        let c = json!({"version": "1.5", "zchunk": "a/b.swu.zck",
                       "deltas": {"1.4": "a/1.4-1.5.delta.swu", "1.3": 5}});
        assert_eq!(companion_path(&c), Some("a/b.swu.zck"));
        assert_eq!(companion_path(&json!({"zchunk": ""})), None);
        assert_eq!(companion_path(&Value::Null), None);
        assert_eq!(native_delta(&c, Some("1.4")), Some("a/1.4-1.5.delta.swu"));
        assert_eq!(native_delta(&c, Some("1.3")), None);
        assert_eq!(native_delta(&c, Some("1.2")), None);
        assert_eq!(native_delta(&c, None), None);
    }
}

//! The companion's header: fetched with Range requests (the first request usually holds the lead
//! and the whole header), checked against its own checksum and against the TUF targets.

use std::time::Duration;

use futures_util::StreamExt;
use zchunk::{HashType, Header};

use super::{DeltaError, Stats};
use cip_tuf::TargetInfo;

/// First request: the lead (it says how long the header is); the second one gets the header.
/// Guessing a larger first read would save a request but costs its excess on every delta.
const FIRST: u64 = (zchunk::header::LEAD_PREFIX_MAX + 64) as u64;
/// The largest header accepted (a 100 GiB image in 32 KiB chunks has ~150 MB of index: more
/// than any device update; this bounds the memory a lying lead could ask for).
const MAX_HEADER: u64 = 64 << 20;

/// One file fetched by ranges: its URL, its TUF length, and how long a silent answer is waited
/// for.
#[derive(Clone, Copy)]
pub(super) struct Ranges<'a> {
    pub http: &'a reqwest::Client,
    pub url: &'a str,
    pub file_len: u64,
    pub timing: super::Timing,
}

impl Ranges<'_> {
    /// Bytes `first..=last` of the file.
    pub(super) async fn get(
        &self,
        first: u64,
        last: u64,
        stats: &mut Stats,
    ) -> Result<Vec<u8>, DeltaError> {
        get_range(*self, first, last, stats).await
    }

    /// [`Ranges::get`], asked again after a cut or a server error (`retries` times at most).
    pub(super) async fn get_retrying(
        &self,
        first: u64,
        last: u64,
        retries: u32,
        stats: &mut Stats,
    ) -> Result<Vec<u8>, DeltaError> {
        let mut tries = 0;
        loop {
            match self.get(first, last, stats).await {
                Err(e) if e.is_retryable() && tries < retries => {
                    tries += 1;
                    tracing::info!("delta: {e}; asking again");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                other => return other,
            }
        }
    }
}

/// GETs bytes `first..=last` of the file; the body (exactly those bytes).
async fn get_range(
    r: Ranges<'_>,
    first: u64,
    last: u64,
    stats: &mut Stats,
) -> Result<Vec<u8>, DeltaError> {
    let Ranges {
        http,
        url,
        file_len,
        timing,
    } = r;
    let idle = timing.idle;
    stats.requests += 1;
    let req = http
        .get(url)
        .header(reqwest::header::RANGE, format!("bytes={first}-{last}"));
    let resp = crate::http::send(req, &timing.limits)
        .await
        .map_err(|e| DeltaError::Http(format!("{url}: {e}")))?;
    let status = resp.status();
    let start = match status.as_u16() {
        206 => {
            let cr = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    DeltaError::Companion(format!("{url}: 206 without Content-Range"))
                })?;
            let cr = zchunk::multipart::parse_content_range(cr)
                .map_err(|e| DeltaError::Companion(format!("{url}: {e}")))?;
            if cr.total.is_some_and(|t| t != file_len) {
                return Err(DeltaError::Companion(format!(
                    "{url} is {} bytes, its TUF target {file_len}",
                    cr.total.unwrap_or(0)
                )));
            }
            cr.start
        }
        200 => 0,
        s if s >= 500 || s == 408 || s == 429 => {
            return Err(DeltaError::Http(format!("{url}: HTTP {s}")));
        }
        s => return Err(DeltaError::Companion(format!("{url}: HTTP {s}"))),
    };
    if start > first {
        return Err(DeltaError::Companion(format!(
            "{url}: asked for bytes from {first}, the answer starts at {start}"
        )));
    }
    let want = last + 1 - first;
    let skip = first - start;
    let mut out = Vec::with_capacity(want.min(FIRST) as usize);
    let mut seen = 0u64;
    let mut body = crate::http::body(resp, &timing.limits);
    while (out.len() as u64) < want {
        let next = tokio::time::timeout(idle, body.next())
            .await
            .map_err(|_| DeltaError::Http(format!("{url}: no data for {}s", idle.as_secs())))?;
        let Some(piece) = next else { break };
        let piece = piece.map_err(|e| DeltaError::Http(format!("{url}: {e}")))?;
        stats.fetched += piece.len() as u64;
        let from = skip.saturating_sub(seen).min(piece.len() as u64) as usize;
        seen += piece.len() as u64;
        let room = (want - out.len() as u64) as usize;
        let take = &piece[from..];
        out.extend_from_slice(&take[..take.len().min(room)]);
    }
    if (out.len() as u64) < want {
        return Err(DeltaError::Http(format!(
            "{url}: the answer ended after {} of {want} bytes",
            out.len()
        )));
    }
    Ok(out)
}

/// The companion's header, checked against its checksum and both TUF targets.
pub(super) async fn fetch_header(
    http: &reqwest::Client,
    url: &str,
    companion: &TargetInfo,
    full: &TargetInfo,
    timing: super::Timing,
    retries: u32,
    stats: &mut Stats,
) -> Result<Header, DeltaError> {
    let bad = |m: String| DeltaError::Companion(format!("{}: {m}", companion.path));
    if companion.length == 0 {
        return Err(bad("empty target".into()));
    }
    let first = FIRST.min(companion.length);
    let ranges = Ranges {
        http,
        url,
        file_len: companion.length,
        timing,
    };
    let mut buf = ranges.get_retrying(0, first - 1, retries, stats).await?;
    let lead = zchunk::Lead::parse(&buf).map_err(|e| bad(e.to_string()))?;
    let total = lead.total_len();
    if total > companion.length || total > MAX_HEADER {
        return Err(bad(format!(
            "the lead announces a {total}-byte header, the target is {} bytes",
            companion.length
        )));
    }
    if (buf.len() as u64) < total {
        let rest = ranges
            .get_retrying(buf.len() as u64, total - 1, retries, stats)
            .await?;
        buf.extend_from_slice(&rest);
    }
    buf.truncate(total as usize);
    let header = Header::parse(&buf).map_err(|e| bad(e.to_string()))?;
    check(&header, companion, full).map_err(bad)?;
    Ok(header)
}

/// What a usable companion must be: made with `zck -u` and a strong chunk checksum, indexing
/// exactly its TUF length, expanding to exactly the full target's TUF length.
pub(super) fn check(h: &Header, companion: &TargetInfo, full: &TargetInfo) -> Result<(), String> {
    zchunk::seed::require_uncompressed_checksums(h).map_err(|e| e.to_string())?;
    match h.chunk_hash_type() {
        HashType::Sha256 | HashType::Sha512 => {}
        other => {
            return Err(format!(
                "chunk checksums are {other}: SHA-256 or SHA-512 needed (zck -u -h sha256)"
            ));
        }
    }
    if h.file_len() != companion.length {
        return Err(format!(
            "the header indexes {} bytes, the TUF target is {}",
            h.file_len(),
            companion.length
        ));
    }
    if h.expanded_len() != full.length {
        return Err(format!(
            "it expands to {} bytes, the full target {} is {}",
            h.expanded_len(),
            full.path,
            full.length
        ));
    }
    if h.data_chunks().is_empty() {
        return Err("no data chunks".into());
    }
    Ok(())
}

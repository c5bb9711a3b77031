//! Fetching the missing chunks: planned multi-range requests, each answer (a
//! `multipart/byteranges` 206, a single-range 206, or a whole-file 200) mapped back to chunks,
//! every chunk verified and stored in the cache the moment it is complete. A cut or failed
//! request is planned again with only the chunks still missing.

use std::time::Duration;

use futures_util::StreamExt;
use zchunk::{ChunkDecoder, Collector, Event, Header, Multipart, PlanOptions, Request, Want};

use super::{ChunkCache, DeltaError, Stats};

pub(super) struct Limits {
    pub plan: PlanOptions,
    pub timing: super::Timing,
    pub max_retries: u32,
    /// The companion's TUF length.
    pub file_len: u64,
}

/// Bytes of part headers allowed per range beyond the ranges' own bytes (nginx sends ~90).
const PART_OVERHEAD: u64 = 512;

/// Fetches `missing` into the cache.
pub(super) async fn fetch_missing(
    http: &reqwest::Client,
    url: &str,
    header: &Header,
    missing: &[Want],
    cache: &ChunkCache,
    limits: &Limits,
    stats: &mut Stats,
) -> Result<(), DeltaError> {
    if missing.is_empty() {
        return Ok(());
    }
    let mut decoder = decoder(http, url, header, cache, limits, stats).await?;
    let mut failures = 0u32;
    loop {
        let todo: Vec<Want> = missing
            .iter()
            .filter(|w| {
                let c = &header.chunks()[w.id];
                c.uncomp_digest
                    .is_none_or(|d| cache.get(&d, c.len).is_none())
            })
            .copied()
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let before = stats.chunks_fetched;
        let mut failed = None;
        for req in zchunk::plan(&todo, &limits.plan) {
            match fetch_request(http, url, header, &req, &mut decoder, cache, limits, stats).await {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    failed = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(e) = failed else { continue };
        failures = if stats.chunks_fetched > before {
            1
        } else {
            failures + 1
        };
        if failures > limits.max_retries {
            return Err(DeltaError::Http(format!(
                "{e} ({failures} failed requests in a row)"
            )));
        }
        tracing::info!("delta: {e}; asking again for the chunks still missing");
        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
    }
}

/// The chunk decoder, with the file's dictionary (cached like a chunk) when it has one.
async fn decoder(
    http: &reqwest::Client,
    url: &str,
    header: &Header,
    cache: &ChunkCache,
    limits: &Limits,
    stats: &mut Stats,
) -> Result<ChunkDecoder, DeltaError> {
    let bad = |e: zchunk::Error| DeltaError::Chunk(format!("dictionary: {e}"));
    let Some(d) = header.dict().filter(|d| d.comp_len > 0) else {
        return ChunkDecoder::new(header, None).map_err(bad);
    };
    let stored = match cache.get(&d.digest, d.comp_len) {
        Some(s) => s,
        None => {
            let ranges = super::companion::Ranges {
                http,
                url,
                file_len: limits.file_len,
                timing: limits.timing,
            };
            ranges
                .get_retrying(d.offset, d.end() - 1, limits.max_retries, stats)
                .await?
        }
    };
    let dict = ChunkDecoder::expand_dict(header, &stored).map_err(bad)?;
    cache.put(&d.digest, &stored)?;
    ChunkDecoder::new(header, Some(&dict)).map_err(bad)
}

/// One request; every chunk completed is verified and cached, even if the answer is cut later.
#[allow(clippy::too_many_arguments)]
async fn fetch_request(
    http: &reqwest::Client,
    url: &str,
    header: &Header,
    req: &Request,
    decoder: &mut ChunkDecoder,
    cache: &ChunkCache,
    limits: &Limits,
    stats: &mut Stats,
) -> Result<(), DeltaError> {
    stats.requests += 1;
    stats.chunk_requests += 1;
    stats.ranges += req.ranges.len() as u32;
    let request = http
        .get(url)
        .header(reqwest::header::RANGE, req.range_header());
    let resp = crate::http::send(request, &limits.timing.limits)
        .await
        .map_err(|e| DeltaError::Http(format!("{url}: {e}")))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let content_range = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // How the body maps to the file.
    let mut multipart = None;
    let mut offset = 0u64;
    let limit = match status {
        206 if content_type
            .to_ascii_lowercase()
            .starts_with("multipart/byteranges") =>
        {
            let b = zchunk::multipart::boundary(&content_type)
                .map_err(|e| DeltaError::Http(format!("{url}: {e}")))?;
            multipart = Some(Multipart::new(&b));
            req.len() + PART_OVERHEAD * req.ranges.len() as u64 + 4096
        }
        206 => {
            let cr = content_range
                .as_deref()
                .ok_or_else(|| DeltaError::Http(format!("{url}: 206 without Content-Range")))
                .and_then(|v| {
                    zchunk::multipart::parse_content_range(v)
                        .map_err(|e| DeltaError::Http(format!("{url}: {e}")))
                })?;
            if cr.total.is_some_and(|t| t != limits.file_len) {
                return Err(DeltaError::Companion(format!(
                    "{url} is {} bytes, its TUF target {}",
                    cr.total.unwrap_or(0),
                    limits.file_len
                )));
            }
            offset = cr.start;
            cr.len()
        }
        200 => limits.file_len,
        s if s >= 500 || s == 408 || s == 429 => {
            return Err(DeltaError::Http(format!("{url}: HTTP {s}")));
        }
        s => return Err(DeltaError::Companion(format!("{url}: HTTP {s}"))),
    };
    let mut collector = Collector::new(req.wants());
    let mut received = 0u64;
    let mut body = crate::http::body(resp, &limits.timing.limits);
    loop {
        let idle = limits.timing.idle;
        let next = tokio::time::timeout(idle, body.next())
            .await
            .map_err(|_| DeltaError::Http(format!("{url}: no data for {}s", idle.as_secs())))?;
        let Some(piece) = next else { break };
        let piece = piece.map_err(|e| DeltaError::Http(format!("{url}: {e}")))?;
        crate::notify::beat();
        received += piece.len() as u64;
        stats.fetched += piece.len() as u64;
        if received > limit {
            return Err(DeltaError::Http(format!(
                "{url}: more than the {limit} bytes asked for arrived"
            )));
        }
        let pieces: Vec<(u64, Vec<u8>)> = match multipart.as_mut() {
            Some(p) => p
                .push(&piece)
                .map_err(|e| DeltaError::Http(format!("{url}: {e}")))?
                .into_iter()
                .filter_map(|ev| match ev {
                    Event::Data { offset, data } => Some((offset, data)),
                    _ => None,
                })
                .collect(),
            None => {
                let at = offset;
                offset += piece.len() as u64;
                vec![(at, piece.to_vec())]
            }
        };
        for (at, data) in pieces {
            for (want, stored) in collector.push(at, &data) {
                store(header, decoder, cache, want, &stored, stats)?;
            }
        }
        if collector.missing().is_empty() && multipart.is_none() {
            // A whole-file 200: the rest is not needed.
            break;
        }
    }
    if let Some(p) = &multipart {
        p.finish()
            .map_err(|e| DeltaError::Http(format!("{url}: {e}")))?;
    }
    let left = collector.missing();
    if !left.is_empty() {
        return Err(DeltaError::Http(format!(
            "{url}: the answer lacked {} of the chunks asked for",
            left.len()
        )));
    }
    Ok(())
}

/// Verifies a stored chunk (its stored checksum, then the expanded one) and caches it.
fn store(
    header: &Header,
    decoder: &mut ChunkDecoder,
    cache: &ChunkCache,
    want: Want,
    stored: &[u8],
    stats: &mut Stats,
) -> Result<(), DeltaError> {
    let chunk = header
        .chunks()
        .get(want.id)
        .ok_or_else(|| DeltaError::Chunk(format!("no chunk {}", want.id)))?;
    let expanded = decoder
        .expand(chunk, stored)
        .map_err(|e| DeltaError::Chunk(format!("fetched chunk does not verify: {e}")))?;
    let digest = chunk
        .uncomp_digest
        .ok_or_else(|| DeltaError::Chunk(format!("chunk {} has no checksum", chunk.index)))?;
    cache.put(&digest, &expanded)?;
    stats.chunks_fetched += 1;
    Ok(())
}

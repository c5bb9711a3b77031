//! Verifying and expanding single chunks: the stored checksum first, then
//! zstd (with the file's dictionary) or nothing, then the expanded length and,
//! in `zck -u` files, the expanded checksum.
//!
//! zstd is the C library through the `zstd` crate: zck writes each chunk as a
//! zstd frame made by the same library, and a dictionary may be a trained
//! (ZDICT) one or raw content; the C decoder takes both exactly as zck does,
//! and it is the fastest decoder at hand (ruzstd's dictionary support covers
//! only ZDICT dictionaries).

use crate::error::{ChecksumKind, Error};
use crate::hash::Digest;
use crate::header::{Chunk, Compression, Header};

/// The largest expanded chunk or dictionary accepted. zck's own upper limit
/// for a chunk is 10 MiB; the margin allows for other writers, while a
/// length field alone can never make us allocate more than this.
pub const MAX_EXPANDED_CHUNK: u64 = 64 << 20;

/// Expands the chunks of one file.
pub struct ChunkDecoder {
    compression: Compression,
    header_hash: crate::hash::HashType,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl ChunkDecoder {
    /// A decoder for `header`'s chunks; `dict` is the expanded dictionary
    /// ([`ChunkDecoder::expand_dict`]), `None` if the file has none.
    pub fn new(header: &Header, dict: Option<&[u8]>) -> Result<ChunkDecoder, Error> {
        let zstd = match header.compression() {
            Compression::None => None,
            Compression::Zstd => {
                let d = match dict {
                    Some(d) if !d.is_empty() => zstd::bulk::Decompressor::with_dictionary(d),
                    _ => zstd::bulk::Decompressor::new(),
                };
                Some(d.map_err(|e| Error::BadChunk {
                    index: 0,
                    reason: format!("zstd cannot use the dictionary: {e}"),
                })?)
            }
        };
        Ok(ChunkDecoder {
            compression: header.compression(),
            header_hash: header.chunk_hash_type(),
            zstd,
        })
    }

    /// Verifies the stored dictionary (chunk 0) and expands it (it is
    /// compressed without a dictionary).
    pub fn expand_dict(header: &Header, stored: &[u8]) -> Result<Vec<u8>, Error> {
        let Some(chunk) = header.dict() else {
            return Ok(Vec::new());
        };
        let mut chunk = chunk.clone();
        // zck 1.2.3 writes the checksum of no bytes as the dictionary's
        // uncompressed checksum (`zck -u -D`): that one says nothing. The
        // stored checksum, verified first, still covers the dictionary.
        if chunk.uncomp_digest == Some(header.chunk_hash_type().digest(&[])) {
            chunk.uncomp_digest = None;
        }
        let mut plain = ChunkDecoder::new(header, None)?;
        plain.expand(&chunk, stored)
    }

    /// Verifies `stored` (the chunk's bytes as in the file) against the
    /// chunk's checksum, expands it and checks the result.
    pub fn expand(&mut self, chunk: &Chunk, stored: &[u8]) -> Result<Vec<u8>, Error> {
        verify_stored(self.header_hash, chunk, stored)?;
        if chunk.len > MAX_EXPANDED_CHUNK {
            return Err(Error::BadChunk {
                index: chunk.index,
                reason: format!(
                    "expanded length {} exceeds the limit of {MAX_EXPANDED_CHUNK} bytes",
                    chunk.len
                ),
            });
        }
        let out = match (&mut self.zstd, self.compression) {
            (_, Compression::None) => stored.to_vec(),
            (_, Compression::Zstd) if stored.is_empty() && chunk.len == 0 => Vec::new(),
            (Some(z), Compression::Zstd) => {
                // len <= MAX_EXPANDED_CHUNK, so it fits in usize.
                let mut out = Vec::with_capacity(chunk.len as usize);
                z.decompress_to_buffer(stored, &mut out)
                    .map_err(|e| Error::BadChunk {
                        index: chunk.index,
                        reason: format!("zstd: {e}"),
                    })?;
                out
            }
            (None, Compression::Zstd) => {
                return Err(Error::BadChunk {
                    index: chunk.index,
                    reason: "no zstd decoder".into(),
                });
            }
        };
        if out.len() as u64 != chunk.len {
            return Err(Error::BadChunk {
                index: chunk.index,
                reason: format!(
                    "expands to {} bytes, the index says {}",
                    out.len(),
                    chunk.len
                ),
            });
        }
        if let Some(expected) = chunk.uncomp_digest {
            let actual = self.header_hash.digest(&out);
            if actual != expected {
                return Err(Error::ChunkChecksum {
                    index: chunk.index,
                    kind: ChecksumKind::Uncompressed,
                    expected: Box::new(expected),
                    actual: Box::new(actual),
                });
            }
        }
        Ok(out)
    }
}

/// Checks a chunk's stored bytes against its (compressed) checksum and length.
pub fn verify_stored(
    hash: crate::hash::HashType,
    chunk: &Chunk,
    stored: &[u8],
) -> Result<(), Error> {
    if stored.len() as u64 != chunk.comp_len {
        return Err(Error::BadChunk {
            index: chunk.index,
            reason: format!(
                "{} bytes given, the index says {}",
                stored.len(),
                chunk.comp_len
            ),
        });
    }
    let actual: Digest = hash.digest(stored);
    if actual != chunk.digest {
        return Err(Error::ChunkChecksum {
            index: chunk.index,
            kind: ChecksumKind::Compressed,
            expected: Box::new(chunk.digest),
            actual: Box::new(actual),
        });
    }
    Ok(())
}

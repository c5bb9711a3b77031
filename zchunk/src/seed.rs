//! Matching a seed's chunks to a target's index: which chunks of the target
//! are already on the device (same expanded checksum and length), and which
//! must be fetched. Needs a file made with `zck -u`: only those carry the
//! checksums of the expanded chunks a seed can be compared with.

use std::collections::HashMap;

use crate::chunker::SeedChunk;
use crate::error::Error;
use crate::hash::Digest;
use crate::header::Header;
use crate::plan::Want;

/// Where each target chunk found in the seed lies in the seed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedMatches {
    /// Target chunk index -> seed chunk with the same content.
    pub found: HashMap<usize, SeedChunk>,
}

impl SeedMatches {
    /// Expanded bytes the seed provides.
    pub fn bytes(&self, header: &Header) -> u64 {
        header
            .data_chunks()
            .iter()
            .filter(|c| self.found.contains_key(&c.index))
            .map(|c| c.len)
            .sum()
    }
}

/// Refuses files whose index cannot be matched against a seed.
pub fn require_uncompressed_checksums(header: &Header) -> Result<(), Error> {
    if header.has_uncompressed_checksums() {
        Ok(())
    } else {
        Err(Error::BadHeader(
            "no uncompressed chunk checksums (the file was not made with zck -u): \
             a seed cannot be matched against it"
                .into(),
        ))
    }
}

/// Matches `seed` chunks (found with [`crate::chunks`] using
/// `header.chunk_hash_type()`) against the target's data chunks. Several seeds
/// can be matched in turn with [`match_more`].
pub fn match_seed(
    header: &Header,
    seed: impl IntoIterator<Item = SeedChunk>,
) -> Result<SeedMatches, Error> {
    let mut m = SeedMatches::default();
    match_more(header, seed, &mut m)?;
    Ok(m)
}

/// Adds the matches of another seed (chunks already found are kept).
pub fn match_more(
    header: &Header,
    seed: impl IntoIterator<Item = SeedChunk>,
    matches: &mut SeedMatches,
) -> Result<(), Error> {
    require_uncompressed_checksums(header)?;
    let mut wanted: HashMap<(Digest, u64), Vec<usize>> = HashMap::new();
    for c in header.data_chunks() {
        if matches.found.contains_key(&c.index) {
            continue;
        }
        if let Some(d) = c.uncomp_digest {
            wanted.entry((d, c.len)).or_default().push(c.index);
        }
    }
    for s in seed {
        if let Some(indices) = wanted.remove(&(s.digest, s.len)) {
            for i in indices {
                matches.found.insert(i, s);
            }
        }
    }
    Ok(())
}

/// The stored chunks to fetch: the dictionary (if any; needed to expand
/// fetched chunks) and every data chunk not in `matches`.
pub fn missing(header: &Header, matches: &SeedMatches) -> Vec<Want> {
    header
        .dict()
        .into_iter()
        .chain(
            header
                .data_chunks()
                .iter()
                .filter(|c| !matches.found.contains_key(&c.index)),
        )
        .filter(|c| c.comp_len > 0)
        .map(|c| Want {
            id: c.index,
            offset: c.offset,
            len: c.comp_len,
        })
        .collect()
}

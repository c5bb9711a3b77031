//! Where the chunks already on the device are: the chunk cache first, then each seed (the
//! previous .swu, `@rootfs`, configured files) cut into chunks as `zck` cuts them.

use std::collections::HashMap;
use std::path::PathBuf;

use zchunk::{Header, Want};

use super::{ChunkCache, DeltaError};

/// The block device holding the running root file system, from `/proc/self/mountinfo`: the
/// mount of `/` names its device number, and `/dev/block/MAJ:MIN` is that device whatever the
/// mount source says (`/dev/root` often does not exist).
pub fn rootfs_device(mountinfo: &str) -> Option<PathBuf> {
    // The last mount of `/` is the one in effect.
    let line = mountinfo.lines().rev().find(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(4) == Some(&"/")
    })?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let devno = f.get(2)?;
    let (maj, _) = devno.split_once(':')?;
    // Major 0: no block device (overlay, tmpfs, nfs); the source after " - " may still be one.
    if maj == "0" {
        let (_, tail) = line.split_once(" - ")?;
        let source = tail.split_whitespace().nth(1)?;
        return source.starts_with("/dev/").then(|| PathBuf::from(source));
    }
    Some(PathBuf::from(format!("/dev/block/{devno}")))
}

/// The configured seeds as paths (`@rootfs` resolved; a seed that cannot be found is skipped
/// with a warning: fewer seeds only means more to fetch).
pub fn resolve_seeds(seeds: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in seeds {
        if s == "@rootfs" {
            match std::fs::read_to_string("/proc/self/mountinfo")
                .ok()
                .as_deref()
                .and_then(rootfs_device)
            {
                Some(p) => out.push(p),
                None => tracing::warn!("delta seed @rootfs: no block device holds /"),
            }
        } else {
            out.push(PathBuf::from(s));
        }
    }
    out
}

/// Where one target chunk's bytes are on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Cache,
    Seed { seed: usize, offset: u64 },
}

/// The chunks found on the device.
pub(super) struct Located {
    pub places: HashMap<usize, Place>,
    pub seeds: Vec<PathBuf>,
}

/// Every data chunk's source for the rebuild, with what they add up to.
pub(super) struct Sources {
    pub places: Vec<Place>,
    pub seeds: Vec<PathBuf>,
    pub from_seeds: u64,
    pub from_cache: u64,
    pub cache: ChunkCache,
}

impl Located {
    /// The stored chunks to fetch.
    pub fn missing(&self, header: &Header) -> Vec<Want> {
        header
            .data_chunks()
            .iter()
            .filter(|c| !self.places.contains_key(&c.index))
            .map(|c| Want {
                id: c.index,
                offset: c.offset,
                len: c.comp_len,
            })
            .filter(|w| w.len > 0)
            .collect()
    }

    /// After the fetch: every chunk is in a seed or in the cache.
    pub fn sources(self, header: &Header, cache: &ChunkCache) -> Result<Sources, DeltaError> {
        let mut places = Vec::with_capacity(header.data_chunks().len());
        let (mut from_seeds, mut from_cache) = (0, 0);
        for c in header.data_chunks() {
            let p = match self.places.get(&c.index) {
                Some(p) => *p,
                None => Place::Cache,
            };
            match p {
                Place::Seed { .. } => from_seeds += c.len,
                Place::Cache => from_cache += c.len,
            }
            places.push(p);
        }
        Ok(Sources {
            places,
            seeds: self.seeds,
            from_seeds,
            from_cache,
            cache: cache.clone(),
        })
    }
}

/// Finds the target's chunks in the cache and the seeds (blocking: hashes whole seeds).
pub(super) fn locate(
    header: &Header,
    cache: &ChunkCache,
    seeds: &[PathBuf],
) -> Result<Located, DeltaError> {
    let mut places = HashMap::new();
    let mut matches = zchunk::SeedMatches::default();
    for c in header.data_chunks() {
        let Some(d) = c.uncomp_digest else { continue };
        if cache.get(&d, c.len).is_some() {
            places.insert(c.index, Place::Cache);
            // Counted as found, so the seeds are not asked for it.
            matches.found.insert(
                c.index,
                zchunk::SeedChunk {
                    offset: 0,
                    len: c.len,
                    digest: d,
                },
            );
        }
    }
    let mut used = Vec::new();
    for path in seeds {
        if matches.found.len() == header.data_chunks().len() {
            break;
        }
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("delta seed {}: {e}: skipped", path.display());
                continue;
            }
        };
        let mut read_error = None;
        let chunks = zchunk::chunks(std::io::BufReader::new(file), header.chunk_hash_type())
            .map_while(|r| match r {
                Ok(c) => Some(c),
                Err(e) => {
                    read_error = Some(e);
                    None
                }
            });
        zchunk::match_more(header, chunks, &mut matches)
            .map_err(|e| DeltaError::Companion(e.to_string()))?;
        if let Some(e) = read_error {
            // Chunks found before the error are still good (each is verified when read).
            tracing::warn!("delta seed {}: {e}", path.display());
        }
        let seed = used.len();
        let mut n = 0;
        for (idx, sc) in &matches.found {
            // Everything found before this seed is in `places` already.
            if !places.contains_key(idx) {
                places.insert(
                    *idx,
                    Place::Seed {
                        seed,
                        offset: sc.offset,
                    },
                );
                n += 1;
            }
        }
        tracing::info!("delta seed {}: {n} chunks found", path.display());
        used.push(path.clone());
    }
    Ok(Located {
        places,
        seeds: used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
";

    #[test]
    fn rootfs_is_the_block_device_of_slash() {
        assert_eq!(
            rootfs_device(MOUNTINFO),
            Some(PathBuf::from("/dev/block/259:2"))
        );
        // An overlay root over a device-named source, and one with none.
        let ov = "30 1 0:31 / / rw - overlay overlay rw,lowerdir=/a\n";
        assert_eq!(rootfs_device(ov), None);
        let ro = "30 1 0:31 / / ro - squashfs /dev/mapper/root ro\n";
        assert_eq!(rootfs_device(ro), Some(PathBuf::from("/dev/mapper/root")));
        assert_eq!(rootfs_device("garbage\n\n"), None);
        assert_eq!(rootfs_device(""), None);
    }

    #[test]
    fn seeds_are_paths_or_rootfs() {
        let s = resolve_seeds(&["/data/old.img".into()]);
        assert_eq!(s, vec![PathBuf::from("/data/old.img")]);
    }
}

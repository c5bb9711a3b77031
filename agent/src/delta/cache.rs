//! The chunk cache: verified expanded chunks under `state_dir/delta/chunks/`, one file per chunk,
//! named by the checksum of its bytes. Content-addressed, so an entry is right whatever header
//! asked for it; entries are checked again when read (a torn write after a power cut is then a
//! miss, not a wrong byte), which is why a write needs no fsync.

use std::path::{Path, PathBuf};

use zchunk::{Digest, HashType};

use super::DeltaError;

#[derive(Debug, Clone)]
pub struct ChunkCache {
    dir: PathBuf,
    hash: HashType,
}

fn io(path: &Path, e: std::io::Error) -> DeltaError {
    DeltaError::Io(format!("chunk cache {}: {e}", path.display()))
}

impl ChunkCache {
    pub fn open(dir: &Path, hash: HashType) -> Result<ChunkCache, DeltaError> {
        cip_atomic::create_dirs(dir).map_err(|e| io(dir, e))?;
        Ok(ChunkCache {
            dir: dir.to_owned(),
            hash,
        })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        let tag = match self.hash {
            HashType::Sha1 => "sha1",
            HashType::Sha256 => "sha256",
            HashType::Sha512 => "sha512",
            HashType::Sha512_128 => "sha512_128",
        };
        self.dir.join(format!("{tag}-{}", digest.to_hex()))
    }

    /// Stores verified bytes (the caller checked `digest`).
    pub fn put(&self, digest: &Digest, data: &[u8]) -> Result<(), DeltaError> {
        let path = self.path(digest);
        cip_atomic::write(&path, data, cip_atomic::PRIVATE_FILE).map_err(|e| io(&path, e))
    }

    /// The bytes stored for `digest`, if present and still right (a bad entry is removed).
    pub fn get(&self, digest: &Digest, len: u64) -> Option<Vec<u8>> {
        let path = self.path(digest);
        let meta = std::fs::metadata(&path).ok()?;
        if meta.len() != len {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let data = std::fs::read(&path).ok()?;
        if self.hash.digest(&data) != *digest {
            tracing::warn!("{}: corrupt cache entry removed", path.display());
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(data)
    }

    /// Empties the cache (after a successful install).
    pub fn clear(dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_when_read() {
        let d = tempfile::tempdir().unwrap();
        let c = ChunkCache::open(&d.path().join("c"), HashType::Sha256).unwrap();
        let data = b"chunk bytes".to_vec();
        let dg = HashType::Sha256.digest(&data);
        assert_eq!(c.get(&dg, data.len() as u64), None);
        c.put(&dg, &data).unwrap();
        assert_eq!(c.get(&dg, data.len() as u64), Some(data.clone()));
        // A torn or altered entry is a miss, and is removed.
        std::fs::write(c.path(&dg), b"chunk bytez").unwrap();
        assert_eq!(c.get(&dg, data.len() as u64), None);
        assert!(!c.path(&dg).exists());
        c.put(&dg, &data).unwrap();
        assert_eq!(c.get(&dg, 3), None, "wrong length");
    }
}

//! The trusted metadata on disk: one file per role under its unversioned name, byte for byte as
//! received, replaced atomically (temporary file, fsync, rename, fsync of the directory) so a
//! power cut leaves the old or the new file, never a mix.

use cip_atomic as atomic;
use std::path::{Path, PathBuf};

use super::error::TufError;

/// `role` as a file name: percent-encoded so a delegated role name cannot leave the directory.
pub fn file_name(role: &str) -> String {
    format!("{}.json", super::quote(role))
}

#[derive(Debug, Clone)]
pub struct MetadataStore {
    dir: PathBuf,
}

impl MetadataStore {
    pub fn new(dir: impl Into<PathBuf>) -> MetadataStore {
        MetadataStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, role: &str) -> PathBuf {
        self.dir.join(file_name(role))
    }

    pub fn load(&self, role: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(role))
    }

    pub fn store(&self, role: &str, bytes: &[u8]) -> Result<(), TufError> {
        let path = self.path(role);
        write_atomic(&path, bytes).map_err(|source| TufError::Store { path, source })
    }

    pub fn remove(&self, role: &str) -> Result<(), TufError> {
        let path = self.path(role);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir).map_err(|source| TufError::Store { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(TufError::Store { path, source }),
        }
    }
}

/// Writes `bytes` to `path` atomically (creating the directory if needed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    atomic::create_dirs(dir)?;
    atomic::write(path, bytes, atomic::PRIVATE_FILE)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_exact_atomic_and_safe_names() {
        let d = tempfile::tempdir().unwrap();
        let s = MetadataStore::new(d.path().join("meta"));
        let bytes = b"{ \"signed\" :  {}}\n";
        s.store("root", bytes).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("meta/root.json")).unwrap(),
            bytes
        );
        s.store("../evil/x", b"1").unwrap();
        assert!(d.path().join("meta/..%2Fevil%2Fx.json").exists());
        let names: Vec<_> = std::fs::read_dir(d.path().join("meta"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        s.remove("root").unwrap();
        s.remove("root").unwrap();
        assert!(s.load("root").is_err());
    }
}

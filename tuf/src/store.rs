//! The trusted metadata on disk: one file per role under its unversioned name, byte for byte as
//! received, replaced atomically (temporary file, fsync, rename, fsync of the directory) so a
//! power cut leaves the old or the new file, never a mix ([`cip_atomic`]: private files, never
//! written through a link).

use std::path::{Path, PathBuf};

use super::error::TufError;

/// `role` as a file name: percent-encoded so a delegated role name cannot leave the directory.
pub fn file_name(role: &str) -> String {
    format!("{}.json", super::quote(role))
}

/// The directory of the trusted metadata of one repository.
#[derive(Debug, Clone)]
pub struct MetadataStore {
    dir: PathBuf,
}

impl MetadataStore {
    /// The store in `dir` (created, 0700, on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> MetadataStore {
        MetadataStore { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `role`'s metadata is stored.
    pub fn path(&self, role: &str) -> PathBuf {
        self.dir.join(file_name(role))
    }

    /// The stored bytes of `role`.
    pub fn load(&self, role: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(role))
    }

    /// Replaces `role`'s metadata with `bytes` (a private file, atomically and durably).
    pub fn store(&self, role: &str, bytes: &[u8]) -> Result<(), TufError> {
        let path = self.path(role);
        cip_atomic::write(&path, bytes, cip_atomic::PRIVATE_FILE)
            .map_err(|source| TufError::Store { path, source })
    }

    /// Removes `role`'s metadata durably; an absent file is no error.
    pub fn remove(&self, role: &str) -> Result<(), TufError> {
        let path = self.path(role);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                cip_atomic::sync_dir(&path).map_err(|source| TufError::Store { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(TufError::Store { path, source }),
        }
    }
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

//! The outcome of onboarding, kept in the state directory (`onboarding.json`, written
//! atomically): the client-id, the job that gave it, and whether that job was closed
//! (ONBOARDED reported). The client-id is stored before ONBOARDED is reported, so a power cut
//! in between leaves a device that knows its id and closes the job on its next start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::check_client_id;
use cip_atomic as atomic;

/// The file's name in the state directory.
pub const FILE: &str = "onboarding.json";

/// The outcome of onboarding, kept in the state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Onboarded {
    /// The client-id the device got.
    pub client_id: String,
    /// The onboarding job that gave it.
    pub job_id: String,
    /// The device's serial at the time.
    pub serial: String,
    /// ONBOARDED was reported to wfx.
    #[serde(default)]
    pub closed: bool,
}

/// The stored outcome cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not an outcome.
    #[error("{path}: unreadable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The stored outcome, if any.
pub fn load(state_dir: &Path) -> Result<Option<Onboarded>, StoreError> {
    let p = path(state_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Io { path: p, source }),
    };
    let o: Onboarded = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    check_client_id(&o.client_id).map_err(|e| StoreError::Corrupt {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some(o))
}

/// Stores `o` (a private file, replaced atomically).
pub fn save(state_dir: &Path, o: &Onboarded) -> Result<(), StoreError> {
    let p = path(state_dir);
    let mut bytes = serde_json::to_vec_pretty(o).map_err(|e| StoreError::Corrupt {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    atomic::write(&p, &bytes, atomic::PRIVATE_FILE)
        .map_err(|source| StoreError::Io { path: p, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), None);
        let o = Onboarded {
            client_id: "dev-1".into(),
            job_id: "j".into(),
            serial: "S".into(),
            closed: false,
        };
        save(d.path(), &o).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(o));
        std::fs::write(path(d.path()), "{").unwrap();
        assert!(matches!(load(d.path()), Err(StoreError::Corrupt { .. })));
        std::fs::write(
            path(d.path()),
            r#"{"clientId":"a b","jobId":"j","serial":"S"}"#,
        )
        .unwrap();
        assert!(matches!(load(d.path()), Err(StoreError::Corrupt { .. })));
    }
}

//! Keys. The device's ed25519 key is made on first start and kept in the state directory
//! (mode 0600, written atomically, never replaced). The fleet's onboarding key pair is made by
//! `cip-onboarding keygen`; its public half is shipped in the device image.
//!
//! Files are text: the 32-byte secret seed or public key as 64 lowercase hex digits and a line
//! break (easy to inspect, copy into an image recipe, and compare).

use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::protocol::parse_public_key;
use cip_atomic as atomic;

/// The device key's file name in the state directory.
pub const DEVICE_KEY_FILE: &str = "device-ed25519.key";

/// A key file that cannot be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error("{path}: {reason}")]
    Bad {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The system gave no randomness.
    #[error("no randomness for a new key: {0}")]
    Random(String),
    /// Making a key would overwrite this file.
    #[error("{0} exists: not overwritten")]
    Exists(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A new signing key from the system's randomness.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn hex32(path: &Path, text: &str) -> Result<[u8; 32], KeyError> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KeyError::Bad {
            path: path.to_owned(),
            reason: "not a key: 64 hex digits expected".into(),
        })
}

/// Reads a secret key file.
pub fn read_signing(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    Ok(SigningKey::from_bytes(&hex32(path, &text)?))
}

/// Reads a public key file.
pub fn read_verifying(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    parse_public_key(&text).map_err(|reason| KeyError::Bad {
        path: path.to_owned(),
        reason,
    })
}

fn secret_text(key: &SigningKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

/// The device key in `state_dir`: read, or made and stored on first start. Second value: made now.
pub fn device_key(state_dir: &Path) -> Result<(SigningKey, bool), KeyError> {
    let path = state_dir.join(DEVICE_KEY_FILE);
    match read_signing(&path) {
        Ok(k) => return Ok((k, false)),
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = generate()?;
    if atomic::create_new(&path, secret_text(&key).as_bytes(), 0o600).map_err(io(&path))? {
        Ok((key, true))
    } else {
        // Another start stored one first: that one is the device's key.
        Ok((read_signing(&path)?, false))
    }
}

/// Writes a new key pair (`keygen`): the secret 0600, the public 0644; existing files are kept.
pub fn write_pair(secret: &Path, public: &Path, key: &SigningKey) -> Result<(), KeyError> {
    for p in [secret, public] {
        if p.exists() {
            return Err(KeyError::Exists(p.to_owned()));
        }
    }
    if !atomic::create_new(secret, secret_text(key).as_bytes(), 0o600).map_err(io(secret))? {
        return Err(KeyError::Exists(secret.to_owned()));
    }
    let pub_text = format!("{}\n", hex::encode(key.verifying_key().as_bytes()));
    if !atomic::create_new(public, pub_text.as_bytes(), 0o644).map_err(io(public))? {
        return Err(KeyError::Exists(public.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn device_key_is_made_once_0600_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let (k1, made) = device_key(d.path()).unwrap();
        assert!(made);
        let p = d.path().join(DEVICE_KEY_FILE);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (k2, made) = device_key(d.path()).unwrap();
        assert!(!made);
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        std::fs::write(&p, "garbage").unwrap();
        assert!(matches!(device_key(d.path()), Err(KeyError::Bad { .. })));
    }

    #[test]
    fn pair_round_trip_and_no_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let (s, p) = (d.path().join("fleet.key"), d.path().join("fleet.pub"));
        let k = generate().unwrap();
        write_pair(&s, &p, &k).unwrap();
        assert_eq!(read_signing(&s).unwrap().to_bytes(), k.to_bytes());
        assert_eq!(read_verifying(&p).unwrap(), k.verifying_key());
        assert!(matches!(write_pair(&s, &p, &k), Err(KeyError::Exists(_))));
        assert_eq!(
            std::fs::metadata(&s).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&p, "00").unwrap();
        assert!(read_verifying(&p).is_err());
    }
}

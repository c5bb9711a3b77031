//! The A/B rollback state behind one trait, chosen with `boot.backend`. Here: `none` (no
//! rollback, for development) and `file` (a state file a test or a simulator plays bootloader
//! with). EFI Boot Guard and U-Boot come with the rollback issue.

use std::path::PathBuf;

/// What the bootloader says about an installed update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootState {
    /// Installed and armed; the device has not booted it yet.
    PendingReboot,
    /// Booted into the new slot, on trial: it must be confirmed or it rolls back.
    Trial,
    /// The new slot is confirmed (or there is nothing to confirm).
    Confirmed,
    /// The bootloader went back to the previous slot.
    RolledBack(String),
}

#[derive(Debug, thiserror::Error)]
#[error("boot backend {backend}: {message}")]
pub struct BootError {
    pub backend: &'static str,
    pub message: String,
}

/// A rollback backend.
pub trait Boot: Send + Sync {
    fn name(&self) -> &'static str;
    /// After a firmware install: make the new slot the one to boot next, on trial.
    fn activate(&self) -> Result<(), BootError>;
    fn state(&self) -> Result<BootState, BootError>;
    /// The new slot passed: keep it.
    fn confirm(&self) -> Result<(), BootError>;
}

/// No rollback: what is installed is final.
pub struct NoBoot;

impl Boot for NoBoot {
    fn name(&self) -> &'static str {
        "none"
    }
    fn activate(&self) -> Result<(), BootError> {
        Ok(())
    }
    fn state(&self) -> Result<BootState, BootError> {
        Ok(BootState::Confirmed)
    }
    fn confirm(&self) -> Result<(), BootError> {
        Ok(())
    }
}

/// The state as one word in a file: `installed` (armed, not booted), `testing` (booted, on
/// trial), `ok` (confirmed), `failed` (rolled back). The agent writes `installed` and `ok`;
/// whoever plays the bootloader writes `testing` at the reboot and `failed` at a rollback.
pub struct FileBoot {
    pub path: PathBuf,
}

impl FileBoot {
    fn err(&self, message: impl Into<String>) -> BootError {
        BootError {
            backend: "file",
            message: format!("{}: {}", self.path.display(), message.into()),
        }
    }

    fn write(&self, word: &str) -> Result<(), BootError> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{word}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| self.err(e.to_string()))
    }
}

impl Boot for FileBoot {
    fn name(&self) -> &'static str {
        "file"
    }
    fn activate(&self) -> Result<(), BootError> {
        self.write("installed")
    }
    fn state(&self) -> Result<BootState, BootError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.err(e.to_string()))?;
        match text.trim() {
            "installed" => Ok(BootState::PendingReboot),
            "testing" => Ok(BootState::Trial),
            "ok" => Ok(BootState::Confirmed),
            "failed" => Ok(BootState::RolledBack(
                "rolled back to the previous slot".into(),
            )),
            other => Err(self.err(format!("unknown state `{other}`"))),
        }
    }
    fn confirm(&self) -> Result<(), BootError> {
        self.write("ok")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_backend_cycle() {
        let d = tempfile::tempdir().unwrap();
        let b = FileBoot {
            path: d.path().join("boot"),
        };
        assert!(b.state().is_err(), "no file yet");
        b.activate().unwrap();
        assert_eq!(b.state().unwrap(), BootState::PendingReboot);
        std::fs::write(&b.path, "testing\n").unwrap();
        assert_eq!(b.state().unwrap(), BootState::Trial);
        b.confirm().unwrap();
        assert_eq!(b.state().unwrap(), BootState::Confirmed);
        std::fs::write(&b.path, "failed").unwrap();
        assert!(matches!(b.state().unwrap(), BootState::RolledBack(_)));
        std::fs::write(&b.path, "maybe").unwrap();
        assert!(
            b.state()
                .unwrap_err()
                .to_string()
                .contains("unknown state `maybe`")
        );
        assert_eq!(NoBoot.state().unwrap(), BootState::Confirmed);
    }
}

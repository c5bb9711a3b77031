//! No rollback: what is installed is final (development). The daemon says so at start.

use super::{Boot, BootError, BootStatus};
use crate::config::BootBackend;

pub struct NoBoot;

impl Boot for NoBoot {
    fn kind(&self) -> BootBackend {
        BootBackend::None
    }
    fn read(&self) -> Result<BootStatus, BootError> {
        Ok(BootStatus {
            backend: BootBackend::None,
            booted: None,
            trial: false,
            pending: None,
            failed: None,
            rollback_reason: None,
            detail: "no boot backend: no A/B rollback".into(),
        })
    }
    fn mark_installed(&self) -> Result<(), BootError> {
        Ok(())
    }
    fn confirm(&self) -> Result<(), BootError> {
        Ok(())
    }
    fn reject(&self) -> Result<(), BootError> {
        Ok(())
    }
}

//! Talking to the SWUpdate daemon over its two IPC sockets: the control socket (install requests,
//! status, bootloader state) and the progress socket (what the installer is doing).
//!
//! - [`client`]: connecting, one-shot requests, an install's stream and its verdict;
//! - [`ipc`], [`progress`]: the wire formats of the two sockets (every SWUpdate release's);
//! - [`holdback`]: the bytes kept back until the caller commits;
//! - [`swu`]: the cpio structure of a `.swu`, followed as it streams;
//! - [`install`]: one install from start to verdict, committed only for a whole archive.
//!
//! A library of its own: it knows nothing of the agent (jobs, configuration, TUF), so that the
//! agent's job sources all drive the same install.

pub mod client;
pub mod holdback;
pub mod install;
pub mod ipc;
pub mod progress;
pub mod swu;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

pub use client::{ClientError, InstallOutcome, Swupdate};
pub use ipc::{Abi, InstallRequest, RunType, UpdateState};
pub use progress::{ProgressMsg, RecoveryStatus, Wire, WireSetting};

/// The two socket paths of a daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketPaths {
    /// The control socket: install requests, status, bootloader state.
    pub control: PathBuf,
    /// The progress socket: what the installer is doing.
    pub progress: PathBuf,
}

impl SocketPaths {
    /// SWUpdate's own rule: `$TMPDIR/sockinstctrl` and `$TMPDIR/swupdateprog`, `/tmp` when TMPDIR
    /// is unset or empty.
    pub fn from_tmpdir(tmpdir: Option<&OsStr>) -> SocketPaths {
        let dir = match tmpdir {
            Some(d) if !d.is_empty() => Path::new(d),
            _ => Path::new("/tmp"),
        };
        SocketPaths {
            control: dir.join("sockinstctrl"),
            progress: dir.join("swupdateprog"),
        }
    }

    /// The daemon's default for this process's environment.
    pub fn from_env() -> SocketPaths {
        Self::from_tmpdir(std::env::var_os("TMPDIR").as_deref())
    }

    /// The default, with either path overridden by configuration.
    pub fn with_overrides(control: Option<PathBuf>, progress: Option<PathBuf>) -> SocketPaths {
        let d = Self::from_env();
        SocketPaths {
            control: control.unwrap_or(d.control),
            progress: progress.unwrap_or(d.progress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_follow_swupdates_rule() {
        let p = SocketPaths::from_tmpdir(None);
        assert_eq!(p.control, Path::new("/tmp/sockinstctrl"));
        assert_eq!(p.progress, Path::new("/tmp/swupdateprog"));
        let p = SocketPaths::from_tmpdir(Some(OsStr::new("")));
        assert_eq!(p.control, Path::new("/tmp/sockinstctrl"));
        let p = SocketPaths::from_tmpdir(Some(OsStr::new("/run/swupdate")));
        assert_eq!(p.control, Path::new("/run/swupdate/sockinstctrl"));
        assert_eq!(p.progress, Path::new("/run/swupdate/swupdateprog"));
    }
}

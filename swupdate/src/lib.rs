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

/// Where Debian's `swupdate.socket` opens the sockets from trixie on (bookworm's: `/tmp`).
pub const RUN_DIR: &str = "/run/swupdate";

impl SocketPaths {
    /// SWUpdate's own rule: `$TMPDIR/sockinstctrl` and `$TMPDIR/swupdateprog`, `/tmp` when TMPDIR
    /// is unset or empty.
    pub fn from_tmpdir(tmpdir: Option<&OsStr>) -> SocketPaths {
        let dir = match tmpdir {
            Some(d) if !d.is_empty() => Path::new(d),
            _ => Path::new("/tmp"),
        };
        Self::in_dir(dir)
    }

    fn in_dir(dir: &Path) -> SocketPaths {
        SocketPaths {
            control: dir.join("sockinstctrl"),
            progress: dir.join("swupdateprog"),
        }
    }

    /// The default of a client: `$TMPDIR` when set (a daemon started by hand in the same
    /// environment); else [`RUN_DIR`] when its control socket exists (socket activation, Debian
    /// trixie on); else `/tmp` (SWUpdate's built-in default, Debian bookworm's socket unit).
    pub fn default_for(tmpdir: Option<&OsStr>, run_dir_has_socket: bool) -> SocketPaths {
        match tmpdir {
            Some(d) if !d.is_empty() => Self::from_tmpdir(tmpdir),
            _ if run_dir_has_socket => Self::in_dir(Path::new(RUN_DIR)),
            _ => Self::from_tmpdir(None),
        }
    }

    /// The default for this process's environment and this machine ([`Self::default_for`]).
    pub fn from_env() -> SocketPaths {
        let run = Path::new(RUN_DIR).join("sockinstctrl").exists();
        Self::default_for(std::env::var_os("TMPDIR").as_deref(), run)
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

    #[test]
    fn the_default_prefers_tmpdir_then_the_socket_units_directory_then_tmp() {
        let tmpdir = OsStr::new("/var/tmp/sw");
        let p = SocketPaths::default_for(Some(tmpdir), true);
        assert_eq!(p.control, Path::new("/var/tmp/sw/sockinstctrl"));
        let p = SocketPaths::default_for(None, true);
        assert_eq!(p.control, Path::new("/run/swupdate/sockinstctrl"));
        assert_eq!(p.progress, Path::new("/run/swupdate/swupdateprog"));
        let p = SocketPaths::default_for(Some(OsStr::new("")), true);
        assert_eq!(p.control, Path::new("/run/swupdate/sockinstctrl"));
        let p = SocketPaths::default_for(None, false);
        assert_eq!(p.control, Path::new("/tmp/sockinstctrl"));
        assert_eq!(p.progress, Path::new("/tmp/swupdateprog"));
    }
}

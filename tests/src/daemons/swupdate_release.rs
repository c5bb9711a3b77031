//! Which SWUpdate the tests run: `CIP_TEST_SWUPDATE=2022.12|2024.12|2026.05` (default 2022.12).
//!
//! 2022.12 is the host's Debian 12 package. The others are Debian 13's packages in a root made
//! once by `scripts/trixie-root swupdate REL` (trixie's 2024.12.1, trixie-backports' 2026.05.1;
//! `CIP_TEST_SWUPDATE_ROOT` names another root). Their binaries run on the host through the
//! root's own loader and libraries: no chroot, so the daemon is unprivileged, and its sockets,
//! certificates and target files are the same paths as for the host's daemon.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The environment variable that picks the release.
pub const RELEASE_ENV: &str = "CIP_TEST_SWUPDATE";
/// The environment variable that names a ready root (else `scripts/trixie-root` makes one).
pub const ROOT_ENV: &str = "CIP_TEST_SWUPDATE_ROOT";

/// An SWUpdate release the suite can run live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Debian 12 (bookworm), on the host.
    V2022_12,
    /// Debian 13 (trixie).
    V2024_12,
    /// Debian 13 backports.
    V2026_05,
}

impl Release {
    /// Every release, oldest first.
    pub const ALL: [Release; 3] = [Release::V2022_12, Release::V2024_12, Release::V2026_05];

    pub fn parse(s: &str) -> Option<Release> {
        match s {
            "2022.12" => Some(Release::V2022_12),
            "2024.12" => Some(Release::V2024_12),
            "2026.05" => Some(Release::V2026_05),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Release::V2022_12 => "2022.12",
            Release::V2024_12 => "2024.12",
            Release::V2026_05 => "2026.05",
        }
    }

    /// The agent's `swupdate.wire` value for this daemon's progress wire.
    pub fn wire(self) -> &'static str {
        match self {
            Release::V2022_12 => "2022.12",
            Release::V2024_12 => "2024.12",
            Release::V2026_05 => "2025.12",
        }
    }

    /// What the daemon logs when an image's sha256 is not the one in sw-description: 2022.12
    /// names the hash; 2024.12 and 2026.05 log no hash error at all, only their last word.
    pub fn hash_mismatch_reason(self) -> &'static str {
        match self {
            Release::V2022_12 => "HASH mismatch",
            Release::V2024_12 => "Image invalid or corrupted. Not installing",
            Release::V2026_05 => "Error happened. Not installing",
        }
    }

    /// What the daemon logs when an encrypted image does not decrypt with its key: 2022.12
    /// names the decryption; 2024.12 and 2026.05 say only that the handler failed.
    pub fn decryption_failure_reason(self) -> &'static str {
        match self {
            Release::V2022_12 => "Decryption error",
            _ => "Installer for raw not successful",
        }
    }

    /// Whether the daemon knows SET_DELTA_URL (2025.12+).
    pub fn has_delta_url(self) -> bool {
        self == Release::V2026_05
    }
}

/// The release picked by [`RELEASE_ENV`]; a value it does not know stops the test with the list.
pub fn current() -> Release {
    match std::env::var(RELEASE_ENV) {
        Err(_) => Release::V2022_12,
        Ok(v) if v.is_empty() => Release::V2022_12,
        Ok(v) => Release::parse(&v).unwrap_or_else(|| {
            panic!("{RELEASE_ENV}={v:?}: the suite runs SWUpdate 2022.12, 2024.12 or 2026.05")
        }),
    }
}

/// How to start the picked release's programs (`swupdate`, `swupdate-client`).
#[derive(Debug)]
pub struct Installation {
    pub release: Release,
    /// The root holding the binaries and their libraries; `None`: the host's.
    root: Option<PathBuf>,
    /// Debian's package version (`swupdate --version` prints only "SWUpdate v").
    pub package_version: String,
}

impl Installation {
    /// A command running `program` of this installation, its IPC sockets in `sockets`.
    ///
    /// Up to 2024.12 that is `$TMPDIR`. Debian's 2026.05.1 is built with fixed socket paths in
    /// `/run/swupdate/` (its `swupdate.socket` too) and reads neither `TMPDIR` nor
    /// `RUNTIME_DIRECTORY`: it runs in a mount namespace of its own where `/run` is a fresh
    /// tmpfs with `sockets` bound on `/run/swupdate` (`unshare -r` adds a user namespace when
    /// the tests are not root), so side-by-side daemons do not meet.
    pub fn command(&self, program: &str, sockets: &Path) -> Command {
        let Some(root) = &self.root else {
            return Command::new(program);
        };
        let lib = root.join("usr/lib/x86_64-linux-gnu");
        let loader = root.join("usr/lib64/ld-linux-x86-64.so.2");
        let mut c = if self.release == Release::V2026_05 {
            let mut c = Command::new("unshare");
            if !is_root() {
                c.arg("--map-root-user");
            }
            c.arg("--mount")
                .arg("--propagation")
                .arg("private")
                .arg("sh")
                .arg("-c")
                .arg(
                    "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir /run/swupdate \
                     && mount --bind \"$0\" /run/swupdate && exec \"$@\"",
                )
                .arg(sockets)
                .arg(loader);
            c
        } else {
            Command::new(loader)
        };
        c.arg("--library-path")
            .arg(&lib)
            .arg("--argv0")
            .arg(program)
            .arg(root.join("usr/bin").join(program))
            // The root's OpenSSL providers, not the host's (2026.05 links OpenSSL 3.5).
            .env("OPENSSL_MODULES", lib.join("ossl-modules"));
        c
    }

    /// [`Installation::command`] as a prefix for another tool's command line (`strace`).
    pub fn argv(&self, program: &str, sockets: &Path) -> Vec<OsString> {
        let c = self.command(program, sockets);
        std::iter::once(c.get_program().to_owned())
            .chain(c.get_args().map(|a| a.to_owned()))
            .collect()
    }
}

fn is_root() -> bool {
    // The owner of /proc/self is the process's effective uid.
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// The installation of [`current`], found (or made) once per test process; its package version
/// is printed on stderr the first time, so every test log says which daemon it met.
pub fn installation() -> &'static Installation {
    static INSTALLATION: OnceLock<Installation> = OnceLock::new();
    INSTALLATION.get_or_init(|| {
        let release = current();
        let inst = match release {
            Release::V2022_12 => Installation {
                release,
                root: None,
                package_version: host_package_version(),
            },
            _ => {
                let root = root_of(release);
                let package_version = package_version_in(&root.join("var/lib/dpkg/status"))
                    .unwrap_or_else(|| panic!("no swupdate package in {}", root.display()));
                Installation {
                    release,
                    root: Some(root),
                    package_version,
                }
            }
        };
        eprintln!(
            "SWUpdate under test: swupdate {} ({RELEASE_ENV}={})",
            inst.package_version,
            release.name()
        );
        inst
    })
}

fn root_of(release: Release) -> PathBuf {
    if let Some(r) = std::env::var_os(ROOT_ENV).filter(|r| !r.is_empty()) {
        return PathBuf::from(r);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/trixie-root");
    let out = Command::new(&script)
        .arg("swupdate")
        .arg(release.name())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} swupdate {} failed ({}): {}",
        script.display(),
        release.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn host_package_version() -> String {
    package_version_in(Path::new("/var/lib/dpkg/status"))
        .unwrap_or_else(|| "(not a Debian package)".into())
}

/// `swupdate`'s `Version:` in a dpkg status file.
fn package_version_in(status: &Path) -> Option<String> {
    let text = std::fs::read_to_string(status).ok()?;
    package_version(&text, "swupdate")
}

fn package_version(status: &str, package: &str) -> Option<String> {
    status.split("\n\n").find_map(|stanza| {
        let mut lines = stanza.lines();
        let is_it = lines.clone().any(|l| l == format!("Package: {package}"));
        let installed = lines
            .clone()
            .any(|l| l.starts_with("Status:") && l.ends_with(" installed"));
        if !(is_it && installed) {
            return None;
        }
        lines.find_map(|l| l.strip_prefix("Version: ").map(str::to_owned))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_version_is_read_from_the_dpkg_status() {
        let status = "Package: libswupdate0.1\nStatus: install ok installed\nVersion: 1\n\n\
                      Package: swupdate\nStatus: install ok installed\nArchitecture: amd64\n\
                      Version: 2024.12.1+dfsg-3+deb13u2\n\nPackage: swupdate-www\n\
                      Status: deinstall ok config-files\nVersion: 9\n";
        assert_eq!(
            package_version(status, "swupdate").as_deref(),
            Some("2024.12.1+dfsg-3+deb13u2")
        );
        assert_eq!(package_version(status, "swupdate-www"), None);
        assert_eq!(package_version(status, "zck"), None);
    }

    #[test]
    fn releases_name_their_wire() {
        for r in Release::ALL {
            assert_eq!(Release::parse(r.name()), Some(r));
        }
        assert_eq!(Release::parse("2025.12"), None);
        assert_eq!(Release::V2026_05.wire(), "2025.12");
        assert!(!Release::V2024_12.has_delta_url());
    }
}

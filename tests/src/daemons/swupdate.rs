//! Throwaway SWUpdate daemons, and one-shot standalone installs.
//!
//! SWUpdate puts its IPC sockets (`sockinstctrl` for control,
//! `swupdateprog` for progress) in `$TMPDIR`, so giving every instance its
//! own `TMPDIR` lets tests run daemons side by side, unprivileged. The
//! daemon is verbose (`-v`) and its stdout and stderr go to a log file that
//! tests read back in assertions and failure messages.
//!
//! The release run is [`installation`]'s: `CIP_TEST_SWUPDATE` (see [`crate::daemons::swupdate_release`]).
//!
//! Its working directory is its own directory too: SWUpdate's Lua loader
//! looks for `./swupdate_handlers.lua`, and no stray file should change
//! what a test sees.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::daemons::process::{DEFAULT_GRACE, GroupChild};
pub use crate::daemons::swupdate_release::{Release, installation};
use crate::fixtures::pki::TestCert;

/// Name of the control socket (install requests) in `$TMPDIR`.
pub const CONTROL_SOCKET: &str = "sockinstctrl";
/// Name of the progress socket in `$TMPDIR`.
pub const PROGRESS_SOCKET: &str = "swupdateprog";
/// How long [`SwupdateDaemon::start`] waits for the sockets.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`run_standalone`] lets an install run.
pub const STANDALONE_TIMEOUT: Duration = Duration::from_secs(60);

/// Set to a directory to run every test daemon under `strace` (its trace and final log are kept
/// there as `<instance>.strace` and `<instance>.log`): the evidence for a daemon that misreads a
/// stream under load.
pub const STRACE_ENV: &str = "CIP_TEST_SWUPDATE_STRACE";

/// A Unix socket path must fit `sun_path` (108 bytes with the NUL).
const SUN_PATH_MAX: usize = 107;

/// How to run `swupdate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonOptions {
    /// Certificate that verifies `sw-description.sig` (`-k`).
    pub cert: PathBuf,
    /// `<board>:<revision>` announced with `-H`; the revision must be in a
    /// `.swu`'s `hardware-compatibility` for it to install. Default
    /// `board:1.0`, matching [`crate::fixtures::swu::SwuBuilder`]'s default.
    pub hwrevision: String,
    /// `-n`: daemon-wide dry run; images are checked but not installed.
    pub dry_run: bool,
    /// More arguments, appended last.
    pub extra_args: Vec<OsString>,
}

impl DaemonOptions {
    pub fn new(cert: &TestCert) -> Self {
        Self {
            cert: cert.cert.clone(),
            hwrevision: "board:1.0".into(),
            dry_run: false,
            extra_args: Vec::new(),
        }
    }

    pub fn hwrevision(mut self, hwrevision: impl Into<String>) -> Self {
        self.hwrevision = hwrevision.into();
        self
    }

    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// The `swupdate` command line (without `-i`), run in `dir` with
    /// `TMPDIR=tmpdir`, output to `log`.
    fn command(&self, dir: &Path, tmpdir: &Path, log: &Path) -> anyhow::Result<Command> {
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = match strace_dir() {
            Some(keep) => {
                let mut c = Command::new("strace");
                c.arg("-f")
                    .arg("-tt")
                    .arg("-s")
                    .arg("64")
                    .arg("-e")
                    .arg("trace=read,write,recvmsg,sendmsg,sendto,recvfrom,accept,accept4,close,connect,futex")
                    .arg("-o")
                    .arg(keep.join(format!("{}.strace", instance_name(dir))))
                    .args(installation().argv("swupdate", tmpdir))
                    .envs(
                        installation()
                            .command("swupdate", tmpdir)
                            .get_envs()
                            .filter_map(|(k, v)| Some((k, v?))),
                    );
                c
            }
            None => installation().command("swupdate", tmpdir),
        };
        cmd.arg("-v");
        // 2025.12 on registers several signature providers and picks a raw RSA key by default;
        // the test images are CMS-signed (as CIP's are), so name that provider.
        if installation().release == Release::V2026_05 {
            cmd.arg("--digest-provider").arg("opensslCMS");
        }
        cmd.arg("-k")
            .arg(&self.cert)
            .arg("-H")
            .arg(&self.hwrevision);
        if self.dry_run {
            cmd.arg("-n");
        }
        cmd.args(&self.extra_args)
            .env("TMPDIR", tmpdir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("duplicating log file")?)
            .stderr(log_file);
        Ok(cmd)
    }
}

/// The directories of one SWUpdate instance: a fresh temporary directory
/// holding the log and `tmp/`, SWUpdate's `TMPDIR`.
struct InstanceDir {
    dir: TempDir,
    tmpdir: PathBuf,
    log: PathBuf,
}

impl InstanceDir {
    fn new() -> anyhow::Result<Self> {
        // Prefer the usual temporary directory, but fall back to /tmp if its
        // path is too long for the sockets.
        let mut dir = tempfile::Builder::new()
            .prefix("swupdate-")
            .tempdir()
            .context("creating SWUpdate's temporary directory")?;
        if socket_too_long(dir.path()) {
            dir = tempfile::Builder::new()
                .prefix("swupdate-")
                .tempdir_in("/tmp")
                .context("creating SWUpdate's temporary directory in /tmp")?;
        }
        let tmpdir = dir.path().join("tmp");
        fs::create_dir(&tmpdir).with_context(|| format!("creating {}", tmpdir.display()))?;
        let log = dir.path().join("swupdate.log");
        Ok(Self { dir, tmpdir, log })
    }

    fn read_log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log.display()))
    }
}

/// The directory named by [`STRACE_ENV`], if set.
fn strace_dir() -> Option<PathBuf> {
    std::env::var_os(STRACE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn instance_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "swupdate".into())
}

impl Drop for InstanceDir {
    fn drop(&mut self) {
        // With a trace kept, keep the log that goes with it.
        if let Some(keep) = strace_dir() {
            let name = instance_name(self.dir.path());
            let _ = fs::copy(&self.log, keep.join(format!("{name}.log")));
        }
    }
}

fn socket_too_long(dir: &Path) -> bool {
    let longest = dir.join("tmp").join(PROGRESS_SOCKET.max(CONTROL_SOCKET));
    longest.as_os_str().len() > SUN_PATH_MAX
}

/// A running `swupdate` daemon with its own `TMPDIR`; dropping it kills it
/// and its children and removes its directory.
pub struct SwupdateDaemon {
    // Field order matters: the process dies before its directory goes.
    child: GroupChild,
    dir: InstanceDir,
}

impl std::fmt::Debug for SwupdateDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwupdateDaemon")
            .field("pid", &self.child.pid())
            .field("dir", &self.dir.dir.path())
            .finish()
    }
}

impl SwupdateDaemon {
    /// Starts `swupdate` and waits (at most [`START_TIMEOUT`]) until both of
    /// its sockets exist.
    pub fn start(opts: &DaemonOptions) -> anyhow::Result<SwupdateDaemon> {
        let dir = InstanceDir::new()?;
        let cmd = opts.command(dir.dir.path(), &dir.tmpdir, &dir.log)?;
        let child = GroupChild::spawn(cmd, "swupdate")?;
        let mut daemon = SwupdateDaemon { child, dir };
        let mut exited = None;
        let ready = crate::wait_for(
            || {
                if let Ok(Some(status)) = daemon.child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                daemon.control_socket().exists() && daemon.progress_socket().exists()
            },
            START_TIMEOUT,
        );
        if let Some(status) = exited {
            bail!(
                "swupdate exited ({status}) before creating its sockets; log:\n{}",
                daemon.log()
            );
        }
        if !ready {
            bail!(
                "swupdate did not create {} and {} within {START_TIMEOUT:?}; log:\n{}",
                daemon.control_socket().display(),
                daemon.progress_socket().display(),
                daemon.log()
            );
        }
        Ok(daemon)
    }

    /// The control socket (`$TMPDIR/sockinstctrl`), where install requests go.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.tmpdir.join(CONTROL_SOCKET)
    }

    /// The progress socket (`$TMPDIR/swupdateprog`).
    pub fn progress_socket(&self) -> PathBuf {
        self.dir.tmpdir.join(PROGRESS_SOCKET)
    }

    /// The daemon's `TMPDIR`.
    pub fn tmpdir(&self) -> &Path {
        &self.dir.tmpdir
    }

    /// Everything the daemon printed so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        self.dir.read_log()
    }

    /// Waits until the log contains `needle`; returns whether it did.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        crate::wait_for(|| self.log().contains(needle), timeout)
    }

    /// Process id of the daemon (the leader of its process group).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `swu` to the daemon with SWUpdate's own IPC client
    /// (`swupdate-client -v`), as a reference for what the agent does; waits
    /// (at most [`STANDALONE_TIMEOUT`]) for the client to report the result.
    ///
    /// Returns the client's output; judge the install by the target and by
    /// [`ClientRun::reports_success`], as the exit status says little.
    pub fn install_with_client(&self, swu: &Path, dry_run: bool) -> anyhow::Result<ClientRun> {
        let out = self.dir.dir.path().join(format!(
            "client-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let out_file = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut cmd = installation().command("swupdate-client", &self.dir.tmpdir);
        cmd.arg("-v");
        if dry_run {
            cmd.arg("-d");
        }
        cmd.arg(swu)
            .env("TMPDIR", &self.dir.tmpdir)
            .current_dir(self.dir.dir.path())
            .stdin(Stdio::null())
            .stdout(out_file.try_clone().context("duplicating log file")?)
            .stderr(out_file);
        let mut child = GroupChild::spawn(cmd, "swupdate-client")?;
        let status = child.wait_timeout(STANDALONE_TIMEOUT)?;
        drop(child);
        Ok(ClientRun {
            status,
            output: fs::read(&out)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
        })
    }

    /// Stops the daemon now (rather than at drop) and returns its final log.
    pub fn stop(mut self) -> anyhow::Result<String> {
        self.child.kill_group(DEFAULT_GRACE)?;
        Ok(self.log())
    }
}

/// What a standalone `swupdate -i` run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandaloneRun {
    /// Exit status, `None` if it had to be killed after
    /// [`STANDALONE_TIMEOUT`]. SWUpdate 2022.12 exited 1 on every failure
    /// tried (bad hash, signature, hardware, missing device), but judge an
    /// install by the target and the log rather than by this alone.
    pub status: Option<ExitStatus>,
    pub log: String,
}

impl StandaloneRun {
    /// Whether the log reports a successful install.
    pub fn reports_success(&self) -> bool {
        self.log.contains("SWUPDATE successful")
    }
}

/// What a `swupdate-client` run printed; see
/// [`SwupdateDaemon::install_with_client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRun {
    /// Exit status, `None` if it had to be killed.
    pub status: Option<ExitStatus>,
    /// stdout and stderr of the client, interleaved.
    pub output: String,
}

impl ClientRun {
    /// Whether the daemon reported success to the client.
    pub fn reports_success(&self) -> bool {
        self.output.contains("SWUpdate was successful")
    }
}

/// Installs `swu` with `swupdate -i` (no daemon, no IPC), in its own
/// `TMPDIR`, as a reference for what the daemon does with the same file.
pub fn run_standalone(opts: &DaemonOptions, swu: &Path) -> anyhow::Result<StandaloneRun> {
    let dir = InstanceDir::new()?;
    let mut cmd = opts.command(dir.dir.path(), &dir.tmpdir, &dir.log)?;
    cmd.arg("-i").arg(swu);
    let mut child = GroupChild::spawn(cmd, "swupdate -i")?;
    let status = child.wait_timeout(STANDALONE_TIMEOUT)?;
    drop(child);
    Ok(StandaloneRun {
        status,
        log: dir.read_log(),
    })
}

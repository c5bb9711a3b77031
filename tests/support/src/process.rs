//! Child processes that are torn down with everything they forked.
//!
//! SWUpdate forks helpers (e.g. its chunks downloader) and nginx forks
//! workers; killing only the process we spawned would leave those running
//! after a test, holding ports, sockets and temporary directories. Each tool
//! is therefore spawned as the leader of a new process group, and the whole
//! group is signalled on teardown: SIGTERM first, so tools clean up, then
//! SIGKILL for whatever is left after a grace period.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long processes get to exit after SIGTERM before they get SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);

/// A spawned child that leads its own process group; dropping it kills the
/// group (see the module documentation).
#[derive(Debug)]
pub struct GroupChild {
    child: Child,
    status: Option<ExitStatus>,
    name: String,
}

impl GroupChild {
    /// Spawns `cmd` as the leader of a new process group. `name` is used in
    /// error messages.
    pub fn spawn(mut cmd: Command, name: &str) -> anyhow::Result<GroupChild> {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name} ({cmd:?})"))?;
        Ok(GroupChild {
            child,
            status: None,
            name: name.to_string(),
        })
    }

    /// Process id of the leader, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The leader's exit status if it has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits for the leader to exit by itself, at most `timeout`; then kills
    /// the group (to reap stragglers) and returns the leader's status, or
    /// `None` if it had to be killed.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let exited = crate::wait_for(|| matches!(self.try_wait(), Ok(Some(_))), timeout);
        let status = self.status;
        self.kill_group(DEFAULT_GRACE)?;
        Ok(if exited { status } else { None })
    }

    /// Sends `signal` to every process of the group. Succeeds if the group
    /// is already gone.
    pub fn signal_group(&self, signal: Signal) -> anyhow::Result<()> {
        match killpg(self.pgid(), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("sending {signal} to {}", self.name)),
        }
    }

    /// SIGTERM to the group, then SIGKILL to whatever is left after `grace`;
    /// returns the leader's exit status once it has been reaped.
    ///
    /// Processes of the group other than the leader are reparented to init
    /// when the leader dies and reaped there; they are waited for (bounded)
    /// by polling whether the group still exists.
    pub fn kill_group(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        self.signal_group(Signal::SIGTERM)?;
        if !self.wait_group_gone(grace) {
            self.signal_group(Signal::SIGKILL)?;
            self.wait_group_gone(Duration::from_secs(2));
        }
        match self.status {
            Some(status) => Ok(status),
            None => {
                // Still not reaped after SIGKILL: it cannot survive it, so
                // a blocking wait is bounded.
                let status = self
                    .child
                    .wait()
                    .with_context(|| format!("waiting for {}", self.name))?;
                self.status = Some(status);
                Ok(status)
            }
        }
    }

    /// Polls until the leader is reaped and no live process of the group
    /// is left.
    fn wait_group_gone(&mut self, timeout: Duration) -> bool {
        let pgid = self.pgid();
        let deadline = Instant::now() + timeout;
        crate::wait_for(
            || {
                let _ = self.try_wait();
                self.status.is_some() && !group_has_live_process(pgid)
            },
            deadline.saturating_duration_since(Instant::now()),
        )
    }

    fn pgid(&self) -> Pid {
        // Process ids are positive and fit in pid_t; the fallback is unreachable
        // on Linux (pid_max <= 2^22) and harmless (no such group).
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }
}

/// Whether a process of group `pgid` is alive (not a zombie).
///
/// Members orphaned by the leader's death are reaped by init, which may take
/// its time (about 1.5 s on the sandbox's init): a zombie is dead and holds
/// no resources, so waiting for it would only slow teardown down. Zombies
/// are told apart by reading `/proc/<pid>/stat`; if `/proc` cannot be read,
/// this falls back to asking whether the group exists at all.
pub fn group_has_live_process(pgid: Pid) -> bool {
    if killpg(pgid, None) == Err(Errno::ESRCH) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    let pgid = pgid.as_raw();
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false; // exited meanwhile
        };
        // "pid (comm) state ppid pgrp ...": comm may contain anything, so
        // parse from its closing parenthesis.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
    })
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        if let Err(e) = self.kill_group(DEFAULT_GRACE) {
            eprintln!("tearing down {}: {e:#}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_forked_children_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("grandchild.pid");
        let mut cmd = Command::new("sh");
        // The grandchild ignores nothing special; it must die with the group.
        cmd.arg("-c")
            .arg(format!("sleep 60 & echo $! > {}; wait", pidfile.display()));
        let mut child = GroupChild::spawn(cmd, "sh").expect("spawn sh");
        assert!(crate::wait_for(
            || std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')),
            Duration::from_secs(5)
        ));
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .expect("read pid")
            .trim()
            .parse()
            .expect("pid");
        let status = child.kill_group(DEFAULT_GRACE).expect("kill group");
        assert!(!status.success());
        // Dead at once (maybe a zombie until init reaps it).
        assert!(!group_has_live_process(child.pgid()));
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
    }

    #[test]
    fn wait_timeout_returns_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let mut child = GroupChild::spawn(cmd, "sh").expect("spawn sh");
        let status = child
            .wait_timeout(Duration::from_secs(5))
            .expect("wait")
            .expect("exited");
        assert_eq!(status.code(), Some(3));
    }
}

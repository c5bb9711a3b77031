//! Integration-test harness of `cip-update-agent`.
//!
//! The agent is tested against the real tools it meets on a device: the
//! SWUpdate daemon (driven over its IPC sockets) and an HTTP server that
//! serves `.swu` files with Range support. This crate builds signed `.swu`
//! archives from scratch and runs throwaway, per-test instances of those
//! tools, so that tests run unprivileged and in parallel (cargo-nextest runs
//! every test in its own process, concurrently).
//!
//! Every helper owns its files in its own temporary directory and cleans up
//! on drop; no helper touches global state (no fixed ports, no fixed paths,
//! no environment changes of the test process).
//!
//! [`wfx`] is an in-memory emulator of the wfx workflow server (the agent's
//! job source), since the real one cannot be installed on these machines.

pub mod ab;
pub mod agent;
pub mod cpio;
pub mod cut_proxy;
pub mod delta;
pub mod fleet;
pub mod gnu_time;
pub mod hostile_http;
pub mod job_source;
pub mod mosquitto;
pub mod nginx;
pub mod pki;
pub mod process;
pub mod raw_http;
pub mod replay;
pub mod slow_http;
pub mod swu;
pub mod swupdate;
pub mod tuf;
pub mod wfx;

use std::net::{Ipv4Addr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and releasing it, so another process
/// may take it before the caller binds it: callers that start a server on it
/// should retry with a fresh port if the bind fails (as [`nginx::Nginx`]
/// does).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `cond` until it returns true or `timeout` has passed.
///
/// Returns whether the condition was met. Polling (every 10 ms) instead of
/// sleeping a fixed time keeps the tests fast when the tools are fast and
/// still tolerant when the machine is loaded. The condition is always
/// checked once more at the deadline, so a zero timeout checks exactly once.
pub fn wait_for(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(10)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().expect("free port");
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port just found free is bindable");
    }

    #[test]
    fn wait_for_true_and_timeout() {
        assert!(wait_for(|| true, Duration::ZERO));
        let start = Instant::now();
        assert!(!wait_for(|| false, Duration::from_millis(50)));
        assert!(start.elapsed() >= Duration::from_millis(50));
        let mut n = 0;
        assert!(wait_for(
            || {
                n += 1;
                n == 3
            },
            Duration::from_secs(5)
        ));
    }
}

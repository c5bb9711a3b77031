//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`): READY=1 once started, STATUS=
//! lines that say what the agent does, STOPPING=1, and WATCHDOG=1 every WATCHDOG_USEC/2, but only
//! while the main loop is alive: the loop (and every long step it runs) bumps a heartbeat, and
//! the pinger stays silent once the heartbeat is older than WATCHDOG_USEC, so systemd restarts
//! an agent that is stuck. Outside systemd (no NOTIFY_SOCKET) all of this does nothing.
//!
//! Written by hand (a datagram per message to a path or an abstract socket `@name`): the
//! protocol is one `sendto`, smaller than a dependency.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sends one message (`READY=1`, `STATUS=...`) to `$NOTIFY_SOCKET`, if set.
pub fn send(msg: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        send_to(&path, msg);
    }
}

/// Sends `msg` to a notify socket: a path, or `@name` in the abstract namespace.
pub fn send_to(path: &OsStr, msg: &str) {
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(msg.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(msg.as_bytes(), path);
    }
}

/// `STATUS=<text>` (one line, at most 200 characters).
pub fn status_line(text: &str) -> String {
    // One line (a newline would start another sd_notify assignment), no control character or
    // URL credential from a server's text in `systemctl status`.
    let line: String = crate::redact::message(text).chars().take(200).collect();
    format!("STATUS={line}")
}

pub fn status(text: &str) {
    send(&status_line(text));
}

pub fn ready() {
    send("READY=1");
}

pub fn stopping() {
    send("STOPPING=1");
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds after [`epoch`] of the last beat.
static LAST_BEAT: AtomicU64 = AtomicU64::new(0);

/// The main loop is alive.
pub fn beat() {
    LAST_BEAT.store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// Time since the last beat.
pub fn since_beat() -> Duration {
    let now = epoch().elapsed().as_millis() as u64;
    Duration::from_millis(now.saturating_sub(LAST_BEAT.load(Ordering::Relaxed)))
}

/// systemd's watchdog period for this process: `WATCHDOG_USEC`, unless `WATCHDOG_PID` names
/// another process.
pub fn watchdog_period() -> Option<Duration> {
    watchdog_period_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

pub fn watchdog_period_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let us: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(us))
}

/// Whether to ping now: the loop beat within the watchdog period.
pub fn alive(since_beat: Duration, period: Duration) -> bool {
    since_beat < period
}

/// Pings `WATCHDOG=1` every `period / 2` while the heartbeat is fresh.
pub fn spawn_watchdog(period: Duration) -> tokio::task::JoinHandle<()> {
    beat();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tick.tick().await;
            if alive(since_beat(), period) {
                send("WATCHDOG=1");
            } else {
                tracing::error!(
                    "main loop silent for {:?}: no watchdog ping (systemd will restart the agent)",
                    since_beat()
                );
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_path_and_abstract_sockets() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("notify");
        let server = UnixDatagram::bind(&p).unwrap();
        send_to(p.as_os_str(), &status_line("job j1: INSTALLING\nnext"));
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=job j1: INSTALLING\\nnext");
        use std::os::linux::net::SocketAddrExt;
        let name = format!("cip-update-agent-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(OsStr::new(&format!("@{name}")), "READY=1");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn watchdog_period_and_liveness() {
        assert_eq!(
            watchdog_period_from(Some("2000000"), None, 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watchdog_period_from(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_period_from(Some("2000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_period_from(None, None, 7), None);
        let p = Duration::from_secs(2);
        assert!(alive(Duration::from_millis(900), p));
        assert!(!alive(Duration::from_millis(2100), p));
    }
}

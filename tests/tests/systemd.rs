//! The agent as a systemd `Type=notify` service with `WatchdogSec=`: the messages it sends to
//! a NOTIFY_SOCKET the test listens on (READY=1, STATUS=, WATCHDOG=1, STOPPING=1), the pings
//! stopping when its main loop blocks, and SIGTERM stopping it cleanly mid-install.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use cip_update_agent_tests::daemons::process::GroupChild;
use cip_update_agent_tests::emulators::wfx::WfxEmulator;
use cip_update_agent_tests::fixtures::swu::{Image, SwuBuilder, random_bytes};
use cip_update_agent_tests::scenarios::fleet::{DIRECT, Fleet};
use cip_update_agent_tests::servers::slow_http::SlowServer;
use nix::sys::signal::Signal;
use serde_json::json;

/// A fleet for the agent as a service: wfx polled every second, SWUpdate only when `swupdate`.
fn fleet(swupdate: bool) -> Fleet {
    let b = Fleet::builder().without_nginx();
    let mut f = if swupdate { b } else { b.without_swupdate() }.start();
    f.config.poll_interval = "1s".into();
    f.config.progress_interval = None;
    f
}

/// The agent started as systemd starts a `Type=notify` service with `WatchdogSec=0.4`, with
/// `env` besides; the socket its messages arrive on, and the time it was started.
fn notified_agent(f: &mut Fleet, env: &[(&str, &str)]) -> (UnixDatagram, Instant, GroupChild) {
    let path = f.path("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let t0 = Instant::now();
    let socket = path.display().to_string();
    let mut all = vec![
        ("NOTIFY_SOCKET", socket.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    all.extend_from_slice(env);
    f.start_agent_with("run", &all);
    (sock, t0, f.agent.take().unwrap())
}

/// The arrival times of the WATCHDOG=1 pings among `msgs`.
fn pings(msgs: &[(Duration, String)]) -> Vec<Duration> {
    msgs.iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect()
}

/// Messages received for `d`, each with its arrival time after `t0`.
fn listen(sock: &UnixDatagram, d: Duration, t0: Instant) -> Vec<(Duration, String)> {
    let mut out = Vec::new();
    let end = Instant::now() + d;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        sock.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            out.push((
                t0.elapsed(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    out
}

#[test]
fn ready_status_and_watchdog_pings_then_stopping() {
    let mut f = fleet(false);
    let (sock, t0, mut a) = notified_agent(&mut f, &[]);
    let msgs = listen(&sock, Duration::from_secs(3), t0);
    let texts: Vec<&str> = msgs.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(texts.first(), Some(&"READY=1"), "{texts:?}");
    assert!(texts.contains(&"STATUS=idle"), "{texts:?}");
    let pings = pings(&msgs);
    // Every 200 ms (WATCHDOG_USEC / 2) for about 3 s.
    assert!(pings.len() >= 8, "{texts:?}");
    assert!(
        pings
            .windows(2)
            .all(|w| w[1] - w[0] < Duration::from_millis(400)),
        "no gap of a whole watchdog period: {pings:?}"
    );
    a.signal_group(Signal::SIGTERM).unwrap();
    let rest = listen(&sock, Duration::from_millis(1500), t0);
    assert!(rest.iter().any(|(_, m)| m == "STOPPING=1"), "{rest:?}");
    let st = a.wait_timeout(Duration::from_secs(5)).unwrap();
    assert!(st.is_some_and(|s| s.success()), "clean exit: {st:?}");
}

/// A main loop that blocks (the test-only CIP_UPDATE_AGENT_HANG_AFTER) stops the pings, so
/// systemd would restart the agent; the pinger itself still runs and says so in the log.
#[test]
fn a_blocked_main_loop_stops_the_watchdog_pings() {
    let mut f = fleet(false);
    let (sock, t0, a) = notified_agent(&mut f, &[("CIP_UPDATE_AGENT_HANG_AFTER", "1500ms")]);
    let listened = Duration::from_secs(5);
    let msgs = listen(&sock, listened, t0);
    let pings = pings(&msgs);
    assert!(pings.len() >= 3, "pings while the loop ran: {msgs:?}");
    // The loop blocks 1.5 s after the start; within one watchdog period the pings stop, and
    // stay stopped (at least the last 1.5 s of the 5 s listened had none).
    let last = *pings.last().unwrap();
    assert!(
        listened.saturating_sub(last) >= Duration::from_millis(1500),
        "pings went on: {pings:?}"
    );
    let log = f.agent_log();
    assert!(log.contains("the main loop blocks now"), "{log}");
    assert!(log.contains("no watchdog ping"), "{log}");
    // As systemd would: the stuck agent is killed.
    a.signal_group(Signal::SIGKILL).unwrap();
}

/// SIGTERM in the middle of an install: the agent stops at once with status 0 and a journal
/// that reads back; started again, it finishes the job with exactly one successful install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_install_stops_cleanly_and_the_job_resumes() {
    let mut f = fleet(true);
    let data = random_bytes(2 << 20, 7);
    let target = f.path("rootfs.target");
    let swu = SwuBuilder::new()
        .image(Image::raw("rootfs.img", data.clone(), &target))
        .build(&f.cert, &f.path("img.swu"))
        .unwrap();
    let server = SlowServer::start(swu.path.clone(), 64 * 1024, Duration::from_millis(50)).unwrap();
    let def = json!({"version": "1.0", "type": ["firmware"],
        "artifacts": [{"name": "os", "uri": server.url("img.swu")}]});
    let id = f.create_job(DIRECT, def).await;
    let state = |wfx: &WfxEmulator| {
        wfx.store().job(&id).unwrap().to_json(false)["status"]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    f.start_agent();
    let mut a = f.agent.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&f.wfx) != "INSTALLING" {
        assert!(Instant::now() < deadline, "never INSTALLING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    a.signal_group(Signal::SIGTERM).unwrap();
    let st = a.wait_timeout(Duration::from_secs(5)).unwrap();
    assert!(st.is_some_and(|s| s.success()), "clean exit: {st:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stopped at once: {:?}",
        t.elapsed()
    );
    let journal = f.journal();
    assert!(journal["jobs"][&id].is_object(), "{journal:#}");
    assert_eq!(state(&f.wfx), "INSTALLING");
    f.start_agent();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(state(&f.wfx).as_str(), "ACTIVATED" | "TERMINATED") {
        assert!(Instant::now() < deadline, "never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state(&f.wfx), "ACTIVATED");
    assert_eq!(fs::read(&target).unwrap(), data);
    assert_eq!(f.successful_installs(), 1, "{}", f.swupdate().log());
}

//! The agent as a systemd `Type=notify` service with `WatchdogSec=`: the messages it sends to
//! a NOTIFY_SOCKET the test listens on (READY=1, STATUS=, WATCHDOG=1, STOPPING=1), the pings
//! stopping when its main loop blocks, and SIGTERM stopping it cleanly mid-install. Each runs
//! under both job sources (`mod wfx`, `mod tuf_only`): the service around them is one.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use cip_update_agent_tests::daemons::process::GroupChild;
use cip_update_agent_tests::fixtures::swu::{Image, SwuBuilder, random_bytes};
use cip_update_agent_tests::scenarios::fleet::{DIRECT, Fleet};
use cip_update_agent_tests::scenarios::job_source::{JobSource, Via};
use cip_update_agent_tests::servers::slow_http::SlowServer;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// A fleet for the agent as a service: its job source polled every second (wfx without nginx;
/// TUF-only with nginx serving the repository, running version 1.0), SWUpdate only when
/// `swupdate`.
fn fleet(via: Via, swupdate: bool) -> (Fleet, JobSource) {
    let mut b = Fleet::builder();
    if via == Via::Wfx {
        b = b.without_nginx();
    }
    if !swupdate {
        b = b.without_swupdate();
    }
    let (mut f, src) = JobSource::fleet(via, b);
    f.config.poll_interval = "1s".into();
    f.config.progress_interval = None;
    if via == Via::TufOnly {
        fs::write(f.path("version"), "1.0\n").unwrap();
        f.config.device += &format!("version_file = {:?}\n", f.path("version"));
    }
    (f, src)
}

/// `cip-update-agent run` with the job source's configuration.
fn start_agent(f: &mut Fleet, src: &JobSource, env: &[(&str, &str)]) {
    f.config.extra = src.configure(f);
    f.start_agent_with("run", env);
}

/// The agent started as systemd starts a `Type=notify` service with `WatchdogSec=0.4`, with
/// `env` besides; the socket its messages arrive on, and the time it was started.
fn notified_agent(
    f: &mut Fleet,
    src: &JobSource,
    env: &[(&str, &str)],
) -> (UnixDatagram, Instant, GroupChild) {
    let path = f.path("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let t0 = Instant::now();
    let socket = path.display().to_string();
    let mut all = vec![
        ("NOTIFY_SOCKET", socket.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    all.extend_from_slice(env);
    start_agent(f, src, &all);
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

fn ready_status_and_watchdog_pings_then_stopping(via: Via) {
    let (mut f, src) = fleet(via, false);
    let (sock, t0, mut a) = notified_agent(&mut f, &src, &[]);
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
fn a_blocked_main_loop_stops_the_watchdog_pings(via: Via) {
    let (mut f, src) = fleet(via, false);
    let (sock, t0, a) = notified_agent(&mut f, &src, &[("CIP_UPDATE_AGENT_HANG_AFTER", "1500ms")]);
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

/// SIGTERM in the middle of an install: the agent stops at once with status 0 and records that
/// read back; started again, it finishes the update with exactly one successful install. (The
/// image is served slowly: wfx's artifact URI, or TUF-only's `targets_url`.)
async fn sigterm_mid_install_stops_cleanly_and_the_job_resumes(via: Via) {
    let (mut f, mut src) = fleet(via, true);
    let data = random_bytes(2 << 20, 7);
    let target = f.path("rootfs.target");
    let swu = SwuBuilder::new()
        .image(Image::raw("rootfs.img", data.clone(), &target))
        .build(&f.cert, &f.path("img.swu"))
        .unwrap();
    let server = SlowServer::start(swu.path.clone(), 64 * 1024, Duration::from_millis(50)).unwrap();
    let id = match via {
        Via::Wfx => {
            let def = json!({"version": "1.0", "type": ["firmware"],
                "artifacts": [{"name": "os", "uri": server.url("img.swu")}]});
            f.create_job(DIRECT, def).await
        }
        Via::TufOnly => {
            // The repository's target, its bytes fetched from the slow server.
            src.targets_url = Some(server.url("targets"));
            let bytes = fs::read(&swu.path).unwrap();
            src.offer(&f, "img.swu", &bytes, "1.1").await
        }
    };
    start_agent(&mut f, &src, &[]);
    let mut a = f.agent.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while src.state(&f, &id) != "INSTALLING" {
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
    match via {
        Via::Wfx => {
            let journal = f.journal();
            assert!(journal["jobs"][&id].is_object(), "{journal:#}");
        }
        Via::TufOnly => {
            // Neither installed nor failed: tried again at the next start.
            let rec = JobSource::record(&f);
            let none = |set: &str| rec[set].as_array().is_none_or(Vec::is_empty);
            assert!(none("done") && none("failed"), "{rec:#}");
            assert_eq!(rec["pending"], Value::Null, "{rec:#}");
        }
    }
    assert_eq!(src.state(&f, &id), "INSTALLING");
    start_agent(&mut f, &src, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(src.state(&f, &id).as_str(), "ACTIVATED" | "TERMINATED") {
        assert!(Instant::now() < deadline, "never ended\n{}", f.agent_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(src.state(&f, &id), "ACTIVATED", "{}", f.agent_log());
    assert_eq!(fs::read(&target).unwrap(), data);
    assert_eq!(f.successful_installs(), 1, "{}", f.swupdate().log());
}

/// The scenarios, under each job source.
macro_rules! scenarios {
    ($via:expr) => {
        use super::*;

        #[test]
        fn ready_status_and_watchdog_pings_then_stopping() {
            super::ready_status_and_watchdog_pings_then_stopping($via);
        }

        #[test]
        fn a_blocked_main_loop_stops_the_watchdog_pings() {
            super::a_blocked_main_loop_stops_the_watchdog_pings($via);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sigterm_mid_install_stops_cleanly_and_the_job_resumes() {
            super::sigterm_mid_install_stops_cleanly_and_the_job_resumes($via).await;
        }
    };
}

/// A wfx job.
mod wfx {
    scenarios!(Via::Wfx);
}

/// TUF-only mode: the newest target for the device's hardware.
mod tuf_only {
    scenarios!(Via::TufOnly);
}

//! The agent as a systemd `Type=notify` service with `WatchdogSec=`: the messages it sends to
//! a NOTIFY_SOCKET the test listens on (READY=1, STATUS=, WATCHDOG=1, STOPPING=1), the pings
//! stopping when its main loop blocks, and SIGTERM stopping it cleanly mid-install.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cip_update_agent_tests::agent::agent_cmd;
use cip_update_agent_tests::pki::TestCert;
use cip_update_agent_tests::process::GroupChild;
use cip_update_agent_tests::slow_http::SlowServer;
use cip_update_agent_tests::swu::{Image, SwuBuilder, random_bytes};
use cip_update_agent_tests::swupdate::{DaemonOptions, SwupdateDaemon};
use cip_update_agent_tests::wfx::WfxEmulator;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const CLIENT: &str = "dev-0042";

fn config(dir: &Path, wfx: &WfxEmulator, sockets: Option<&SwupdateDaemon>) -> PathBuf {
    let cfg = dir.join("agent.toml");
    let mut text = format!(
        "state_dir = {:?}\n[device]\nclient_id = \"{CLIENT}\"\n[wfx]\nurl = \"{}\"\npoll_interval = \"1s\"\n",
        dir.join("state"),
        wfx.south_url()
    );
    if let Some(s) = sockets {
        text += &format!(
            "[swupdate]\ncontrol_socket = {:?}\nprogress_socket = {:?}\n",
            s.control_socket(),
            s.progress_socket()
        );
    }
    fs::write(&cfg, text).unwrap();
    cfg
}

fn agent(dir: &Path, cfg: &Path, env: &[(&str, String)]) -> GroupChild {
    let mut c: Command = agent_cmd().unwrap();
    c.arg("--config").arg(cfg).arg("run");
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.err"))
        .unwrap();
    c.stdout(log.try_clone().unwrap()).stderr(log);
    GroupChild::spawn(c, "cip-update-agent").unwrap()
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
    let dir = tempfile::tempdir().unwrap();
    let wfx = WfxEmulator::start_default().unwrap();
    let cfg = config(dir.path(), &wfx, None);
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let t0 = Instant::now();
    let mut a = agent(
        dir.path(),
        &cfg,
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "400000".into()),
        ],
    );
    let msgs = listen(&sock, Duration::from_secs(3), t0);
    let texts: Vec<&str> = msgs.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(texts.first(), Some(&"READY=1"), "{texts:?}");
    assert!(texts.contains(&"STATUS=idle"), "{texts:?}");
    let pings: Vec<Duration> = msgs
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
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
    let dir = tempfile::tempdir().unwrap();
    let wfx = WfxEmulator::start_default().unwrap();
    let cfg = config(dir.path(), &wfx, None);
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let t0 = Instant::now();
    let a = agent(
        dir.path(),
        &cfg,
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "400000".into()),
            ("CIP_UPDATE_AGENT_HANG_AFTER", "1500ms".into()),
        ],
    );
    let listened = Duration::from_secs(5);
    let msgs = listen(&sock, listened, t0);
    let pings: Vec<Duration> = msgs
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(pings.len() >= 3, "pings while the loop ran: {msgs:?}");
    // The loop blocks 1.5 s after the start; within one watchdog period the pings stop, and
    // stay stopped (at least the last 1.5 s of the 5 s listened had none).
    let last = *pings.last().unwrap();
    assert!(
        listened.saturating_sub(last) >= Duration::from_millis(1500),
        "pings went on: {pings:?}"
    );
    let log = fs::read_to_string(dir.path().join("agent.err")).unwrap();
    assert!(log.contains("the main loop blocks now"), "{log}");
    assert!(log.contains("no watchdog ping"), "{log}");
    // As systemd would: the stuck agent is killed.
    a.signal_group(Signal::SIGKILL).unwrap();
}

/// SIGTERM in the middle of an install: the agent stops at once with status 0 and a journal
/// that reads back; started again, it finishes the job with exactly one successful install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_install_stops_cleanly_and_the_job_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path()).unwrap();
    let swupdate = SwupdateDaemon::start(&DaemonOptions::new(&cert)).unwrap();
    let wfx = WfxEmulator::start_default().unwrap();
    let data = random_bytes(2 << 20, 7);
    let target = dir.path().join("rootfs.target");
    let swu = SwuBuilder::new()
        .image(Image::raw("rootfs.img", data.clone(), &target))
        .build(&cert, &dir.path().join("img.swu"))
        .unwrap();
    let server = SlowServer::start(swu.path.clone(), 64 * 1024, Duration::from_millis(50)).unwrap();
    let cfg = config(dir.path(), &wfx, Some(&swupdate));
    let http = reqwest::Client::new();
    let def = json!({"version": "1.0", "type": ["firmware"],
        "artifacts": [{"name": "os", "uri": server.url("img.swu")}]});
    let r = http
        .post(format!("{}/jobs", wfx.north_url()))
        .json(
            &json!({"clientId": CLIENT, "workflow": "wfx.workflow.dau.direct", "definition": def}),
        )
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let state = |wfx: &WfxEmulator| {
        wfx.store().job(&id).unwrap().to_json(false)["status"]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let mut a = agent(dir.path(), &cfg, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&wfx) != "INSTALLING" {
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
    let journal: Value =
        serde_json::from_slice(&fs::read(dir.path().join("state/state.json")).unwrap()).unwrap();
    assert!(journal["jobs"][&id].is_object(), "{journal:#}");
    assert_eq!(state(&wfx), "INSTALLING");
    let _b = agent(dir.path(), &cfg, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(state(&wfx).as_str(), "ACTIVATED" | "TERMINATED") {
        assert!(Instant::now() < deadline, "never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state(&wfx), "ACTIVATED");
    assert_eq!(fs::read(&target).unwrap(), data);
    let successes = swupdate
        .log()
        .lines()
        .filter(|l| l.contains("SWUPDATE successful"))
        .count();
    assert_eq!(successes, 1, "{}", swupdate.log());
}

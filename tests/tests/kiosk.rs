//! The kiosk page (kiosk/) in a real browser: Debian's Chromium driven by playwright-core
//! (kiosk/test/browser.mjs), against a real mosquitto's WebSocket listener, fed by the agent's
//! real publisher (the `kiosk-feed` binary). The page is served by `python3 -m http.server`
//! (the nginx harness serves everything as application/octet-stream, which a browser refuses as
//! a stylesheet).
//!
//! The browser script and this test go in lock-step: the script prints `@@ <checkpoint>` once
//! it checked the page, and goes on when it reads a line on its standard input, which this test
//! writes after it changed the world (fed states, stopped or restarted the broker).
//!
//! Needs `scripts/deps` (chromium, and `npm ci` in kiosk/): a missing piece fails the test with
//! that hint, it is never skipped.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cip_update_agent_tests::daemons::agent::tool_cmd;
use cip_update_agent_tests::daemons::mosquitto::{Mosquitto, MosquittoOptions};
use cip_update_agent_tests::daemons::process::GroupChild;

/// Per checkpoint; the browser script has its own (shorter) waits and says what it missed.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(90);
const PREFIX: &str = "demo/booth";

fn kiosk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiosk")
}

/// Where the browser script saves its screenshots: build output, so that a test run leaves the
/// work tree alone (kiosk/screenshots/ holds copies of them, for the README).
fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiosk-screenshots")
}

/// A pipe whose read end is given to a child and whose write end stays here, or the reverse.
fn pipe() -> (File, File) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    (File::from(r), File::from(w))
}

/// Lines a child writes, read by a thread so that waiting for one can time out.
fn lines(from: File) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `python3 -m http.server` serving kiosk/ on a free loopback port.
struct StaticServer {
    _child: GroupChild,
    port: u16,
}

impl StaticServer {
    fn start(root: &Path) -> anyhow::Result<StaticServer> {
        for _ in 0..5 {
            let port = cip_update_agent_tests::free_port()?;
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
                .arg(root)
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = GroupChild::spawn(cmd, "python3 -m http.server")?;
            let mut exited = false;
            cip_update_agent_tests::wait_for(
                || {
                    exited = !matches!(child.try_wait(), Ok(None));
                    exited || TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
                },
                Duration::from_secs(10),
            );
            if !exited {
                return Ok(StaticServer {
                    _child: child,
                    port,
                });
            }
            // Most likely the port was taken meanwhile: try another.
        }
        bail!("python3 -m http.server did not start")
    }
}

/// The `kiosk-feed` binary: device telemetry through the agent's real publisher.
struct Feed {
    _child: GroupChild,
    stdin: File,
    answers: Receiver<String>,
}

impl Feed {
    fn start(url: &str) -> Feed {
        let (child_in, stdin) = pipe();
        let (out, child_out) = pipe();
        let mut cmd = tool_cmd("kiosk-feed").unwrap();
        cmd.args([url, PREFIX])
            .stdin(Stdio::from(child_in))
            .stdout(Stdio::from(child_out));
        let child = GroupChild::spawn(cmd, "kiosk-feed").unwrap();
        Feed {
            _child: child,
            stdin,
            answers: lines(out),
        }
    }

    /// Sends one command and checks it was accepted.
    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("writing to kiosk-feed");
        let answer = self
            .answers
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("kiosk-feed did not answer `{command}`: {e}"));
        assert_eq!(answer, "ok", "kiosk-feed refused `{command}`");
    }
}

/// The browser script, run by `node`.
struct Browser {
    child: GroupChild,
    stdin: File,
    out: Receiver<String>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Browser {
    fn start(page: &str) -> Browser {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        let (child_in, stdin) = pipe();
        let (out, child_out) = pipe();
        let mut cmd = Command::new("node");
        cmd.arg("test/browser.mjs")
            .current_dir(kiosk_dir())
            .env("KIOSK_URL", page)
            .env("SCREENSHOTS", screenshots_dir())
            .stdin(Stdio::from(child_in))
            .stdout(Stdio::from(child_out))
            .stderr(File::create(&stderr).unwrap());
        let child = GroupChild::spawn(cmd, "node test/browser.mjs").unwrap();
        Browser {
            child,
            stdin,
            out: lines(out),
            stderr,
            _dir: dir,
        }
    }

    /// Waits for `@@ <name>`; fails with the script's output if it stopped or took too long.
    fn reached(&mut self, name: &str) {
        let started = Instant::now();
        let mut seen = Vec::new();
        while let Some(left) = CHECKPOINT_TIMEOUT.checked_sub(started.elapsed()) {
            match self.out.recv_timeout(left) {
                Ok(line) if line == format!("@@ {name}") => {
                    eprintln!("checkpoint {name} after {:?}", started.elapsed());
                    return;
                }
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        // Let the script finish writing its reason before reading it.
        let _ = self.child.wait_timeout(Duration::from_secs(5));
        panic!(
            "browser script did not reach `{name}` (exit: {:?})\nstdout:\n{}\nstderr:\n{}",
            self.child.try_wait(),
            seen.join("\n"),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
    }

    fn go(&mut self) {
        writeln!(self.stdin, "go").expect("writing to the browser script");
    }
}

/// Fails loudly, with the fix, when the browser side is not installed.
fn check_prerequisites() -> anyhow::Result<()> {
    let kiosk = kiosk_dir();
    for (path, what) in [
        (PathBuf::from("/usr/bin/chromium"), "Debian's chromium"),
        (
            kiosk.join("node_modules/playwright-core/package.json"),
            "kiosk/node_modules (npm ci)",
        ),
        (
            kiosk.join("node_modules/mqtt/dist/mqtt.min.js"),
            "kiosk/node_modules (npm ci)",
        ),
    ] {
        if !path.exists() {
            bail!("{what} is missing ({}): run scripts/deps", path.display());
        }
    }
    Command::new("node")
        .arg("--version")
        .output()
        .context("running node: install Node.js")?;
    Ok(())
}

/// Hand-written on purpose: what no agent sends, which the page must ignore.
fn publish_malformed(broker: &Mosquitto) {
    for (leaf, payload) in [
        ("state", "not json {"),
        ("state", r#"{"schema":1,"phase":"exploding"}"#),
        ("online", "maybe"),
    ] {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args(["-t", &format!("{PREFIX}/kiosk-bad/{leaf}"), "-m", payload])
            .status()
            .expect("running mosquitto_pub");
        assert!(status.success(), "mosquitto_pub failed: {status}");
    }
}

#[test]
fn kiosk_page_shows_the_fleet_and_rides_out_a_broker_restart() {
    check_prerequisites().unwrap();
    let mut broker = Mosquitto::start_with(&MosquittoOptions {
        websockets: true,
        ..Default::default()
    })
    .unwrap();
    let http = StaticServer::start(&kiosk_dir()).unwrap();
    let page = format!(
        "http://127.0.0.1:{}/index.html?broker={}&prefix={PREFIX}",
        http.port,
        broker.ws_url().unwrap()
    );
    let mut browser = Browser::start(&page);
    browser.reached("ready");

    // Three devices as agents report them: one mid-update, one failed, one cleanly stopped.
    let mut feed = Feed::start(&broker.url());
    let inv = r#"{"hardware_revision":"qemu-amd64 cip-core-1.0","os_release":{"ID":"debian","VERSION_ID":"1.4"},"swupdate_wire":"auto","boot_backend":"ebg"}"#;
    let job = "3f2c0a";
    let a = |rest: &str| {
        format!(
            r#"state kiosk-a {{"job_id":"{job}","running_version":"1.4","target_version":"1.5","path":"delta",{rest}}}"#
        )
    };
    for cmd in [
        format!("inventory kiosk-a {inv}"),
        r#"state kiosk-a {"phase":"idle","running_version":"1.4","boot_slot":"A","trial":false}"#
            .to_owned(),
        a(r#""phase":"downloading","wfx_state":"DOWNLOADING","progress":0,"boot_slot":"A","trial":false"#),
        format!("progress kiosk-a {job} downloading 60 6291456"),
        a(r#""phase":"installing","wfx_state":"INSTALLING","progress":30,"boot_slot":"A","trial":false"#),
        format!("progress kiosk-a {job} installing 40 7340032"),
        format!("progress kiosk-a {job} installing 57 9437184"),
        format!("inventory kiosk-b {inv}"),
        r#"state kiosk-b {"phase":"idle","running_version":"1.4","boot_slot":"A","trial":false,"last_error":"install failed: <b>bad signature</b>","last":{"job_id":"9a1b","wfx_state":"TERMINATED","version":"1.5","message":"install failed: <b>bad signature</b>","time":"2026-12-03T09:15:42Z","rolled_back":false}}"#.to_owned(),
        format!("inventory kiosk-c {inv}"),
        r#"state kiosk-c {"phase":"idle","running_version":"1.5","boot_slot":"B","trial":false,"last":{"job_id":"7c3d","wfx_state":"ACTIVATED","version":"1.5","message":"slot B confirmed","time":"2026-12-03T10:00:07Z","rolled_back":false}}"#
            .to_owned(),
    ] {
        feed.send(&cmd);
    }
    // A clean stop before the connection is up publishes nothing (the publisher gives up at
    // once when the broker is away): stop kiosk-c only once its state reached the broker.
    let c_state = format!("'{PREFIX}/kiosk-c/state'");
    assert!(
        cip_update_agent_tests::wait_for(
            || broker
                .log()
                .lines()
                .any(|l| l.contains("Received PUBLISH from kiosk-c") && l.contains(&c_state)),
            Duration::from_secs(20)
        ),
        "kiosk-c's state did not reach the broker; log:\n{}",
        broker.log()
    );
    feed.send("stop kiosk-c");
    publish_malformed(&broker);
    browser.go();
    browser.reached("checked");

    broker.stop().unwrap();
    browser.go();
    browser.reached("disconnected");

    broker.restart().unwrap();
    browser.go();
    // The page subscribed again: what kiosk-a sends from now on reaches it (a page that was
    // away misses intermediate states: it gets the retained latest one only).
    browser.reached("reconnected");
    feed.send(&a(
        r#""phase":"rebooting","wfx_state":"ACTIVATING","progress":100,"boot_slot":"A","trial":false"#,
    ));
    feed.send(&a(
        r#""phase":"testing","wfx_state":"ACTIVATING","progress":100,"boot_slot":"B","trial":true"#,
    ));
    browser.go();
    browser.reached("tested");
    // The health checks failed: back on slot A, idle, the rollback kept as the last outcome.
    feed.send(&format!(
        r#"state kiosk-a {{"phase":"idle","running_version":"1.4","boot_slot":"A","trial":false,"last_error":"rolled back to slot A (health check `plc-link` failed)","last":{{"job_id":"{job}","wfx_state":"TERMINATED","version":"1.5","message":"rolled back to slot A (health check `plc-link` failed)","time":"2026-12-03T11:30:00Z","rolled_back":true}}}}"#
    ));
    browser.go();
    browser.reached("done");
    let status = browser
        .child
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("browser script exits after its last checkpoint");
    assert!(status.success(), "browser script: {status}");
    eprintln!("screenshots in {}", screenshots_dir().display());
}

//! Artifact and TUF servers that stall, dribble or never end, against the real agent (`run`, as
//! a systemd service with a watchdog), the real SWUpdate daemon and the wfx emulator.
//!
//! Each case ends the job (or reports the failure) within [`BOUND`], with a message that names
//! what happened, while the watchdog pings go on (no gap of a whole watchdog period, so systemd
//! would not kill the agent); the bytes the agent read (counted by the server), staged or kept as
//! `previous.swu.part` stay bounded, and no partial file is left behind.
//!
//! The tests shorten the bounds (`[download]`: headers 3 s, stall 2 s, images 16 MiB). Run with
//! `HOSTILE_DEFAULT_BOUNDS=1`, they leave `[download]` out, so that an agent without that section
//! (the base commit's) runs them with its own defaults: that is how they were checked to fail there.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cip_update_agent_tests::fixtures::swu::BuiltSwu;
use cip_update_agent_tests::fixtures::tuf::{Attack, AttackServer, IMAGE, TufRepo};
use cip_update_agent_tests::scenarios::fleet::{DIRECT, Fleet, PHASED, firmware, installed};
use cip_update_agent_tests::servers::hostile_http::{Behaviour, HostileServer};
use serde_json::{Value, json};

/// How long a hostile case may take, from the job's creation to its end.
const BOUND: Duration = Duration::from_secs(30);
/// `download.max_image_size` of the tests.
const MAX_IMAGE: u64 = 16 << 20;
/// The agent's peak RSS allowed (a debug build idles at ~20 MiB; one read is 128 KiB).
const MAX_RSS: u64 = 64 << 20;
/// The watchdog period the agent is started with (`WATCHDOG_USEC`).
const WATCHDOG: Duration = Duration::from_secs(1);

fn download_section() -> String {
    download_section_with("3s")
}

fn download_section_with(headers_timeout: &str) -> String {
    if std::env::var_os("HOSTILE_DEFAULT_BOUNDS").is_some() {
        return String::new();
    }
    format!(
        "[download]\nheaders_timeout = \"{headers_timeout}\"\nstall_timeout = \"2s\"\nstall_min_bytes = 1024\nmax_image_size = {MAX_IMAGE}\n"
    )
}

/// The WATCHDOG=1 pings the agent sends, collected by a thread.
struct Pings {
    times: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Pings {
    fn listen(sock: UnixDatagram) -> Pings {
        let times = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (times.clone(), stop.clone());
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    if &buf[..n] == b"WATCHDOG=1" {
                        t.lock().unwrap().push(Instant::now());
                    }
                }
            }
        });
        Pings { times, stop }
    }

    /// The longest time without a ping between `from` and `to`, and the pings in between.
    fn gap(&self, from: Instant, to: Instant) -> (Duration, usize) {
        let t = self.times.lock().unwrap();
        let inside: Vec<Instant> = t
            .iter()
            .copied()
            .filter(|i| *i >= from && *i <= to)
            .collect();
        let mut edges = vec![from];
        edges.extend(&inside);
        edges.push(to);
        let gap = edges.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        (gap, inside.len())
    }

    /// Asserts that systemd would not have killed the agent between `from` and `to`.
    fn assert_fed(&self, from: Instant, to: Instant, log: &str) {
        let (gap, n) = self.gap(from, to);
        eprintln!(
            "watchdog: {n} pings in {:?}, longest gap {gap:?}",
            to - from
        );
        assert!(
            gap < WATCHDOG,
            "no ping for {gap:?} (watchdog period {WATCHDOG:?}): systemd would kill the agent\n{log}"
        );
    }
}

impl Drop for Pings {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A fleet without nginx, the agent polling wfx every second.
fn fleet() -> Fleet {
    let mut f = Fleet::builder().without_nginx().start();
    f.config.poll_interval = "1s".into();
    f.config.progress_interval = None;
    f.config.extra = download_section();
    f
}

/// Starts the agent as a `Type=notify` service with `WatchdogSec=1`; its pings.
fn start_notified(f: &mut Fleet) -> Pings {
    let path = f.path("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let socket = path.display().to_string();
    let usec = WATCHDOG.as_micros().to_string();
    f.start_agent_with(
        "run",
        &[
            ("NOTIFY_SOCKET", socket.as_str()),
            ("WATCHDOG_USEC", usec.as_str()),
        ],
    );
    Pings::listen(sock)
}

/// Waits (BOUND at most) until the job is in one of `states`; the job and when it got there.
async fn within_bound(f: &Fleet, id: &str, states: &[&str], since: Instant) -> (Value, Instant) {
    loop {
        let j = f.job(id).await;
        f.operate(&j).await;
        if states.contains(&j["status"]["state"].as_str().unwrap_or("")) {
            let at = Instant::now();
            eprintln!(
                "job {id}: {} after {:?}: {}",
                j["status"]["state"],
                at - since,
                j["status"]["message"]
            );
            return (j, at);
        }
        assert!(
            since.elapsed() < BOUND,
            "job {id} not in {states:?} within {BOUND:?}: {j:#}\nagent log:\n{}",
            f.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The agent's peak resident memory so far (VmHWM), in bytes.
fn peak_rss(f: &Fleet) -> u64 {
    let pid = f.agent.as_ref().expect("the agent runs").pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

/// Asserts the agent's peak RSS stayed under [`MAX_RSS`].
fn assert_rss(f: &Fleet) {
    let rss = peak_rss(f);
    eprintln!("agent peak RSS: {} KiB", rss >> 10);
    assert!(rss < MAX_RSS, "peak RSS {rss} bytes");
}

fn message(j: &Value) -> String {
    j["status"]["message"].as_str().unwrap_or("").to_owned()
}

/// A signed .swu of `len` random bytes writing `<name>.target`; the built archive and its bytes.
fn swu(f: &Fleet, name: &str, len: usize) -> (BuiltSwu, Vec<u8>, Vec<u8>) {
    f.signed_swu(name, len, len as u64)
}

/// The start of `bytes` (a .swu) up to the data of its `rootfs.img` entry, whose header now
/// claims 4 GiB - 1 bytes.
fn claiming_4gb(bytes: &[u8]) -> Vec<u8> {
    let name = bytes
        .windows(11)
        .position(|w| w == b"rootfs.img\0")
        .expect("the rootfs.img entry");
    let header = name - 110;
    let mut out = bytes[..header + 124].to_vec();
    // newc/crc header: magic (6), then 8 hex digits each; filesize is the 7th field.
    out[header + 6 + 6 * 8..header + 6 + 7 * 8].copy_from_slice(b"FFFFFFFF");
    out
}

/// Regular files below `dir` (none when it does not exist).
fn files_below(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_below(&p));
        } else if let Ok(m) = fs::symlink_metadata(&p) {
            out.push((p.display().to_string(), m.len()));
        }
    }
    out
}

fn part_file(f: &Fleet) -> std::path::PathBuf {
    f.path("state/delta/previous.swu.part")
}

/// The agent started as a notified service, then a `workflow` job of `definition` run to its end
/// (TERMINATED or ACTIVATED) within the bound: the job, the pings, when the job was created and
/// when it ended.
async fn ended_with_pings(
    f: &mut Fleet,
    workflow: &str,
    definition: Value,
) -> (Value, Pings, Instant, Instant) {
    let pings = start_notified(f);
    let t0 = Instant::now();
    let id = f.create_job(workflow, definition).await;
    let (j, end) = within_bound(f, &id, &["TERMINATED", "ACTIVATED"], t0).await;
    (j, pings, t0, end)
}

/// A server sending `prefix`, then zeros without end.
fn endless_after(prefix: Vec<u8>) -> HostileServer {
    HostileServer::start(Behaviour::Endless { prefix, fill: 0 }).unwrap()
}

/// A direct job for `url`, run to TERMINATED within the bound with the watchdog fed; the job.
async fn terminated_with_the_watchdog_fed(f: &mut Fleet, url: &str) -> Value {
    let (j, pings, t0, end) = ended_with_pings(f, DIRECT, firmware(url)).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    pings.assert_fed(t0, end, &f.agent_log());
    assert!(!part_file(f).exists(), "previous.swu.part left behind");
    assert_rss(f);
    j
}

/// A server that accepts and never answers: the job ends naming the missing headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_ends_the_job() {
    let mut f = fleet();
    let server = HostileServer::start(Behaviour::Silent).unwrap();
    let j = terminated_with_the_watchdog_fed(&mut f, &server.url("os.swu")).await;
    let msg = message(&j);
    assert!(msg.contains("no response headers within 3s"), "{msg}");
    assert!(server.requests() >= 1);
}

/// A server that never answers, its job deleted while the agent waits for the headers (here
/// for up to a minute): the agent lets go of the job at once and forgets it; the watchdog is fed
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_while_its_server_never_answers_is_let_go() {
    let mut f = fleet();
    f.config.extra = download_section_with("60s");
    let server = HostileServer::start(Behaviour::Silent).unwrap();
    let pings = start_notified(&mut f);
    let t0 = Instant::now();
    let id = f.create_job(DIRECT, firmware(&server.url("os.swu"))).await;
    let _ = within_bound(&f, &id, &["INSTALLING"], t0).await;
    while server.requests() == 0 {
        assert!(t0.elapsed() < BOUND, "no request: {}", f.agent_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deleted = Instant::now();
    f.delete(&id).await;
    while f.journal_jobs().contains(&id) {
        assert!(
            deleted.elapsed() < Duration::from_secs(15),
            "the deleted job is still held: {}",
            f.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = Instant::now();
    eprintln!("let go {:?} after the delete", end - deleted);
    pings.assert_fed(t0, end, &f.agent_log());
}

/// Headers, then silence: the download stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_then_silence_is_a_stall() {
    let mut f = fleet();
    let (_, _, bytes) = swu(&f, "os", 200_000);
    let server = HostileServer::start(Behaviour::HeadersThenSilence(bytes)).unwrap();
    let j = terminated_with_the_watchdog_fed(&mut f, &server.url("os.swu")).await;
    let msg = message(&j);
    assert!(msg.contains("download stalled: 0 bytes in 2s"), "{msg}");
}

/// One byte a second (never silent long enough for an idle timeout) is cut as a stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribble_is_cut() {
    let mut f = fleet();
    let (swu, _, bytes) = swu(&f, "os", 200_000);
    let server = HostileServer::start(Behaviour::Dribble(bytes, Duration::from_secs(1))).unwrap();
    let j = terminated_with_the_watchdog_fed(&mut f, &server.url("os.swu")).await;
    let msg = message(&j);
    assert!(msg.contains("download stalled"), "{msg}");
    assert!(fs::read(&swu.images[0].target).unwrap().is_empty());
}

/// A .swu whose image entry claims 4 GiB, followed by endless data, without `[tuf]`: refused
/// when the entry's header is read; the agent reads no further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpio_header_claiming_4gb_is_refused_when_read() {
    let mut f = fleet();
    let (swu, _, bytes) = swu(&f, "os", 200_000);
    let prefix = claiming_4gb(&bytes);
    let server = HostileServer::start(Behaviour::Endless { prefix, fill: 0x5a }).unwrap();
    let j = terminated_with_the_watchdog_fed(&mut f, &server.url("os.swu")).await;
    let msg = message(&j);
    assert!(
        msg.contains(&format!("larger than the {MAX_IMAGE}-byte limit"))
            && msg.contains("`rootfs.img` claims 4294967295 bytes"),
        "{msg}"
    );
    // What the server could push into the socket buffers before the agent hung up.
    thread::sleep(Duration::from_millis(500));
    let sent = server.sent();
    eprintln!("server sent {sent} bytes");
    assert!(sent < MAX_IMAGE, "{sent} bytes read");
    assert!(fs::read(&swu.images[0].target).unwrap().is_empty());
}

/// A valid .swu followed by endless data, without `[tuf]`: installed, and read only up to its
/// trailer (and padding); the kept copy is the archive, not the endless rest. (The base commit
/// passes this one too: SWUpdate closes the stream at the trailer. It shows that stopping there
/// keeps a real install whole.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_data_after_the_trailer_is_not_read() {
    let mut f = fleet();
    let (swu, data, bytes) = swu(&f, "os", 200_000);
    let len = bytes.len() as u64;
    let server = endless_after(bytes);
    let (j, pings, t0, end) =
        ended_with_pings(&mut f, DIRECT, firmware(&server.url("os.swu"))).await;
    f.assert_state(&j, "ACTIVATED");
    pings.assert_fed(t0, end, &f.agent_log());
    assert!(installed(&swu, &data));
    assert_rss(&f);
    let sent = server.sent();
    eprintln!("server sent {sent} bytes for a {len}-byte .swu");
    assert!(sent < len + MAX_IMAGE, "{sent}");
    // The trailer, 64 KiB of padding, and at most one read (128 KiB) beyond.
    let kept = fs::metadata(f.path("state/delta/previous.swu"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(kept >= len && kept <= len + (192 << 10), "kept {kept}");
    assert!(!part_file(&f).exists());
}

/// A phased job whose artifact is an endless body (an entry claiming 4 GiB): the download ends
/// TERMINATED, nothing is left in staging, the agent read a bounded amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phased_endless_body_is_not_staged() {
    let mut f = fleet();
    let (_, _, bytes) = swu(&f, "os", 200_000);
    let server = HostileServer::start(Behaviour::Endless {
        prefix: claiming_4gb(&bytes),
        fill: 0x5a,
    })
    .unwrap();
    let (j, pings, t0, end) =
        ended_with_pings(&mut f, PHASED, firmware(&server.url("os.swu"))).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    pings.assert_fed(t0, end, &f.agent_log());
    let msg = message(&j);
    assert!(msg.contains("claims 4294967295 bytes"), "{msg}");
    let staged = files_below(&f.path("state/staging"));
    assert!(staged.is_empty(), "left in staging: {staged:?}");
    assert_rss(&f);
    thread::sleep(Duration::from_millis(500));
    assert!(server.sent() < MAX_IMAGE, "{} bytes read", server.sent());
}

/// A phased job whose .swu is followed by endless data: staged up to its trailer, installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phased_swu_with_endless_data_after_it_is_staged_whole_and_installed() {
    let mut f = fleet();
    let (swu, data, bytes) = swu(&f, "os", 200_000);
    let len = bytes.len() as u64;
    let server = endless_after(bytes);
    f.start_agent();
    let t0 = Instant::now();
    let id = f.create_job(PHASED, firmware(&server.url("os.swu"))).await;
    let (j, _) = within_bound(&f, &id, &["TERMINATED", "ACTIVATED"], t0).await;
    f.assert_state(&j, "ACTIVATED");
    assert!(installed(&swu, &data));
    let sent = server.sent();
    eprintln!("server sent {sent} bytes for a {len}-byte .swu");
    assert!(sent < len + MAX_IMAGE, "{sent}");
}

/// The fleet with a TUF repository (served by nginx) and the agent configured with `[tuf]`.
struct TufFleet {
    f: Fleet,
    repo: TufRepo,
}

cip_update_agent_tests::deref_to_fleet!(TufFleet);

impl TufFleet {
    fn new() -> TufFleet {
        let (mut f, repo) = Fleet::with_tuf_repo();
        f.config.poll_interval = "1s".into();
        f.config.progress_interval = None;
        TufFleet { f, repo }
    }

    /// Lists `bytes` as the target [`IMAGE`].
    fn publish(&self, bytes: &[u8]) {
        let custom = json!({"version": "1.5", "board": "board", "hardware": ["1.0"]});
        self.repo
            .ops(json!([
                {"op": "add_target", "path": IMAGE, "data_hex": hex::encode(bytes),
                 "custom": custom},
                {"op": "publish"},
            ]))
            .unwrap();
    }

    /// `[tuf]` with its metadata at `metadata_url`, and the tests' `[download]`.
    fn configure(&mut self, metadata_url: &str) {
        let tuf = format!(
            "[tuf]\nroot = {root:?}\nmetadata_url = \"{metadata_url}\"\ntargets_url = \"{tg}\"\n",
            root = self.repo.initial_root(),
            tg = self.nginx().url("targets"),
        );
        self.f.config.extra = tuf + &download_section();
    }
}

fn tuf_artifact(url: &str) -> Value {
    json!({"version": "1.0", "type": ["firmware"],
        "artifacts": [{"name": IMAGE, "version": "1.5", "uri": url}]})
}

/// With `[tuf]`, a trusted target served one byte a second: cut as a stall (its TUF length
/// would allow days of it, and no read is ever idle long enough for `tuf.read_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribble_is_cut_with_tuf() {
    let mut f = TufFleet::new();
    let (swu, _, bytes) = swu(&f, "os", 200_000);
    f.publish(&bytes);
    let md = f.nginx().url("metadata");
    f.configure(&md);
    let server = HostileServer::start(Behaviour::Dribble(bytes, Duration::from_secs(1))).unwrap();
    let (j, pings, t0, end) =
        ended_with_pings(&mut f, DIRECT, tuf_artifact(&server.url("os.swu"))).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    pings.assert_fed(t0, end, &f.agent_log());
    let msg = message(&j);
    assert!(msg.contains("download stalled"), "{msg}");
    assert!(fs::read(&swu.images[0].target).unwrap().is_empty());
    assert!(!part_file(&f).exists());
}

/// A TUF metadata server that dribbles timestamp.json (one byte every 500 ms: never idle for
/// `tuf.read_timeout`): the refresh fails as a stall, the job says so and waits; the watchdog
/// is fed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_tuf_metadata_server_is_cut() {
    let mut f = TufFleet::new();
    let (swu, _, bytes) = swu(&f, "os", 50_000);
    f.publish(&bytes);
    let attack = AttackServer::start(
        &f.repo.www(),
        &[("/metadata/timestamp.json", Attack::Dribble)],
    )
    .unwrap();
    f.configure(&attack.url("metadata"));
    let pings = start_notified(&mut f);
    let t0 = Instant::now();
    let url = f.nginx().url("targets/unused.swu");
    let id = f.create_job(DIRECT, tuf_artifact(&url)).await;
    let j = loop {
        let j = f.job(&id).await;
        if message(&j).contains("stalled") {
            break j;
        }
        assert!(
            t0.elapsed() < BOUND,
            "no stall reported within {BOUND:?}: {j:#}\n{}",
            f.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let end = Instant::now();
    eprintln!("after {:?}: {}", end - t0, message(&j));
    pings.assert_fed(t0, end, &f.agent_log());
    assert!(message(&j).contains("timestamp"), "{j:#}");
    assert!(
        attack
            .requests()
            .iter()
            .any(|p| p == "/metadata/timestamp.json")
    );
    assert!(fs::read(&swu.images[0].target).unwrap().is_empty());
}

/// The delta path (`delta::prepare`, what `run` calls for a target with a zchunk companion)
/// against a companion server that never answers, or dribbles: the delta fails within the
/// bound, naming the stall, instead of hanging (`run` then falls back to the full target).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_delta_server_fails_the_delta() {
    let dir = tempfile::tempdir().unwrap();
    let info = |path: &str, length: u64| cip_tuf::TargetInfo {
        path: path.to_owned(),
        length,
        hashes: [("sha256".to_owned(), "ab".repeat(32))]
            .into_iter()
            .collect(),
        custom: Value::Null,
    };
    let cfg = cip_update_agent::config::Delta {
        seeds: Vec::new(),
        max_retries: 1,
        ..Default::default()
    };
    let timing = cip_update_agent::delta::Timing {
        // Longer than the test: only the download bounds can end it.
        idle: Duration::from_secs(600),
        limits: cip_update_agent::http::Limits {
            headers: Duration::from_secs(3),
            stall_window: Duration::from_secs(2),
            stall_min_bytes: 1024,
        },
    };
    for (behaviour, words) in [
        (Behaviour::Silent, "no response headers within 3s"),
        (
            Behaviour::Dribble(vec![0x5a; 1 << 20], Duration::from_millis(200)),
            "download stalled",
        ),
    ] {
        let server = HostileServer::start(behaviour).unwrap();
        let t0 = Instant::now();
        let r = cip_update_agent::delta::prepare(
            &cip_update_agent::http::default_client(),
            &cfg,
            dir.path(),
            &info("os.swu.zck", 1 << 20),
            &server.url("os.swu.zck"),
            &info("os.swu", 2 << 20),
            timing,
        )
        .await;
        let e = r.err().expect("the delta fails");
        eprintln!("after {:?}: {e}", t0.elapsed());
        assert!(e.to_string().contains(words), "{e}");
        // Two tries (delta.max_retries = 1), each ended by the bounds.
        assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
        assert_eq!(server.requests(), 2);
    }
}

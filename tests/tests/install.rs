//! `cip-update-agent install` and the IPC client against a real SWUpdate daemon (Debian's
//! 2022.12), with file targets, and nginx for URL installs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cip_swupdate::client::Installation;
use cip_swupdate::{InstallRequest, RecoveryStatus, RunType, SocketPaths, Swupdate, WireSetting};
use cip_update_agent_tests::daemons::agent::agent_cmd;
use cip_update_agent_tests::daemons::mosquitto::TlsFiles;
use cip_update_agent_tests::daemons::nginx::Nginx;
use cip_update_agent_tests::daemons::swupdate::{
    DaemonOptions, Release, SwupdateDaemon, installation,
};
use cip_update_agent_tests::fixtures::pki::TestCert;
use cip_update_agent_tests::fixtures::swu::{BuiltSwu, Image, SwuBuilder, random_bytes};
use tempfile::TempDir;

/// A daemon with its own directory, certificate and file targets.
struct Rig {
    dir: TempDir,
    cert: TestCert,
    daemon: SwupdateDaemon,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::generate(dir.path()).unwrap();
        let daemon = SwupdateDaemon::start(&DaemonOptions::new(&cert)).unwrap();
        Rig { dir, cert, daemon }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A signed .swu with one raw image of `len` random bytes written to `<name>.target`.
    fn swu(&self, name: &str, len: usize) -> (BuiltSwu, Vec<u8>) {
        let data = random_bytes(len, len as u64);
        let swu = SwuBuilder::new()
            .image(Image::raw(
                "rootfs.img",
                data.clone(),
                self.path(&format!("{name}.target")),
            ))
            .build(&self.cert, &self.path(&format!("{name}.swu")))
            .unwrap();
        (swu, data)
    }

    fn paths(&self) -> SocketPaths {
        SocketPaths {
            control: self.daemon.control_socket(),
            progress: self.daemon.progress_socket(),
        }
    }

    fn client(&self) -> Swupdate {
        Swupdate::new(self.paths(), WireSetting::Auto)
    }

    /// Runs `cip-update-agent install IMAGE --control-socket .. --progress-socket .. EXTRA`.
    fn install(&self, image: &str, extra: &[&str]) -> Output {
        let mut c = agent_cmd().unwrap();
        c.arg("install")
            .arg(image)
            .arg("--control-socket")
            .arg(self.daemon.control_socket())
            .arg("--progress-socket")
            .arg(self.daemon.progress_socket())
            .args(extra);
        run(c)
    }
}

fn run(mut c: Command) -> Output {
    // Only what a test sets: no configuration or environment of the machine running it.
    c.env_remove("CIP_SWUPDATE_WIRE")
        .env_remove("CIP_SWUPDATE_CONTROL_SOCKET")
        .env_remove("CIP_SWUPDATE_PROGRESS_SOCKET")
        .env("CIP_UPDATE_AGENT_CONFIG", "/dev/null")
        .output()
        .expect("running cip-update-agent")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn target(swu: &BuiltSwu) -> Vec<u8> {
    fs::read(&swu.images[0].target).unwrap()
}

/// The first image's target holds exactly `data`.
fn installed(swu: &BuiltSwu, data: &[u8]) -> bool {
    target(swu) == data
}

#[test]
fn installs_a_file_byte_for_byte_with_plain_progress() {
    let rig = Rig::new();
    let a = random_bytes(300_000, 1);
    let b = random_bytes(5_000, 2);
    let swu = SwuBuilder::new()
        .image(Image::raw("rootfs.img", a.clone(), rig.path("a.target")))
        .image(Image::rawfile("app.bin", b.clone(), rig.path("b.target")))
        .build(&rig.cert, &rig.path("two.swu"))
        .unwrap();
    let o = rig.install(swu.path.to_str().unwrap(), &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.starts_with("SUCCESS: install of "), "{out}");
    assert!(out.contains(&format!("({} bytes)", swu.len)), "{out}");
    assert!(fs::read(rig.path("a.target")).unwrap() == a);
    assert!(fs::read(rig.path("b.target")).unwrap() == b);
    // Not a terminal: plain lines, no bar.
    assert!(err.contains("sent 100%"), "{err}");
    assert!(err.contains("swupdate: step 1/2 rootfs.img (raw)"), "{err}");
    assert!(
        err.contains("swupdate: step 2/2 app.bin (rawfile)"),
        "{err}"
    );
    assert!(!err.contains('\r'), "no terminal redraws in plain output");
}

#[test]
fn socket_paths_default_to_tmpdir_like_swupdate() {
    let rig = Rig::new();
    let (swu, data) = rig.swu("t", 10_000);
    let mut c = agent_cmd().unwrap();
    c.arg("install")
        .arg(&swu.path)
        .env("TMPDIR", rig.daemon.tmpdir())
        .env_remove("CIP_SWUPDATE_CONTROL_SOCKET")
        .env_remove("CIP_SWUPDATE_PROGRESS_SOCKET");
    let o = run(c);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(installed(&swu, &data));
}

#[test]
fn wrong_sha256_is_a_failure_with_swupdates_log() {
    let rig = Rig::new();
    let data = random_bytes(50_000, 3);
    let swu = SwuBuilder::new()
        .image(
            Image::raw("rootfs.img", data, rig.path("bad.target")).sha256_override("ab".repeat(32)),
        )
        .build(&rig.cert, &rig.path("bad.swu"))
        .unwrap();
    let o = rig.install(swu.path.to_str().unwrap(), &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.starts_with("FAILURE: install of"), "{out}");
    let reason = installation().release.hash_mismatch_reason();
    assert!(
        err.contains(reason),
        "the reason from SWUpdate's log ({reason}): {err}"
    );
    assert!(target(&swu).is_empty(), "nothing installed");
}

#[test]
fn dry_run_writes_nothing() {
    let rig = Rig::new();
    let (swu, _) = rig.swu("dry", 40_000);
    let o = rig.install(swu.path.to_str().unwrap(), &["--dry-run"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.starts_with("SUCCESS: dry run of"), "{out}");
    assert!(target(&swu).is_empty(), "a dry run writes nothing");
    // SWUpdate runs every image through its `dummy` handler in a dry run.
    let log = rig.daemon.log();
    assert!(log.contains("rootfs.img dummy"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_daemon_is_a_clear_nack_and_the_first_install_still_completes() {
    let rig = Rig::new();
    let (first, data) = rig.swu("first", 400_000);
    let (second, _) = rig.swu("second", 10_000);
    let bytes = fs::read(&first.path).unwrap();
    let mut inst = rig
        .client()
        .start_install(&InstallRequest::default())
        .await
        .unwrap();
    inst.write(&bytes[..200_000]).await.unwrap();

    let path = second.path.to_str().unwrap().to_owned();
    let o = tokio::task::block_in_place(|| rig.install(&path, &[]));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("SWUpdate is busy: Installation in progress"),
        "{err}"
    );
    assert!(target(&second).is_empty());

    inst.write(&bytes[200_000..]).await.unwrap();
    inst.commit().await.unwrap();
    let v = inst.finish().await.unwrap();
    assert_eq!(v.status, RecoveryStatus::Success);
    assert_eq!(
        v.wire.map(|w| w.to_string()).as_deref(),
        Some(installation().release.wire())
    );
    assert!(installed(&first, &data));
}

#[test]
fn installs_from_an_nginx_url() {
    let rig = Rig::new();
    let docroot = rig.path("www");
    fs::create_dir(&docroot).unwrap();
    let data = random_bytes(700_000, 4);
    let swu = SwuBuilder::new()
        .image(Image::raw(
            "rootfs.img",
            data.clone(),
            rig.path("url.target"),
        ))
        .build(&rig.cert, &docroot.join("image.swu"))
        .unwrap();
    let nginx = Nginx::start(&docroot).unwrap();
    let o = rig.install(&nginx.url("image.swu"), &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(installed(&swu, &data));
    assert!(
        nginx.access_log().contains("GET /image.swu"),
        "{}",
        nginx.access_log()
    );
    assert!(err.contains(&format!("of {} bytes", swu.len)), "{err}");
}

#[test]
fn url_answering_404_is_its_own_error() {
    let rig = Rig::new();
    let docroot = rig.path("www");
    fs::create_dir(&docroot).unwrap();
    let nginx = Nginx::start(&docroot).unwrap();
    let url = nginx.url("missing.swu");
    let o = rig.install(&url, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(8), "{out}{err}");
    assert_eq!(err.trim(), format!("error: {url} answered HTTP 404"));
}

/// Writes `len` bytes of the image, abandons the install, returns the daemon's verdict.
async fn abandon_after(rig: &Rig, len: usize) -> (RecoveryStatus, BuiltSwu, Vec<u8>) {
    let (swu, data) = rig.swu("abort", 500_000);
    let bytes = fs::read(&swu.path).unwrap();
    let mut inst: Installation = rig
        .client()
        .start_install(&InstallRequest {
            run: RunType::Install,
            ..Default::default()
        })
        .await
        .unwrap();
    inst.write(&bytes[..len.min(bytes.len())]).await.unwrap();
    inst.abort();
    let v = tokio::time::timeout(Duration::from_secs(20), inst.finish())
        .await
        .expect("a verdict")
        .unwrap();
    (v.status, swu, data)
}

#[tokio::test]
async fn caller_abort_mid_stream_fails_the_install() {
    let rig = Rig::new();
    let (status, swu, data) = abandon_after(&rig, 250_000).await;
    assert_eq!(status, RecoveryStatus::Failure);
    assert!(!installed(&swu, &data), "the target must not be completed");
}

/// Even with every byte handed over, an install not committed (a hash mismatch the caller saw
/// at the end) fails: the held-back tail never reaches the daemon.
#[tokio::test]
async fn abort_after_the_last_byte_still_fails_the_install() {
    let rig = Rig::new();
    let (status, swu, data) = abandon_after(&rig, usize::MAX).await;
    assert_eq!(status, RecoveryStatus::Failure);
    assert!(!installed(&swu, &data), "the target must not be completed");
}

#[test]
fn interrupted_install_is_abandoned_and_fails() {
    let rig = Rig::new();
    let (swu, data) = rig.swu("int", 600_000);
    let bytes = fs::read(&swu.path).unwrap();
    let fifo = rig.path("image.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut c = agent_cmd().unwrap();
    c.arg("install")
        .arg(&fifo)
        .arg("--control-socket")
        .arg(rig.daemon.control_socket())
        .arg("--progress-socket")
        .arg(rig.daemon.progress_socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // Half the image, then hold the pipe open while the agent is told to stop.
    let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut w, &bytes[..300_000]).unwrap();
    assert!(
        rig.daemon
            .wait_for_log("Found file", Duration::from_secs(10))
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    drop(w);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(10), "{out}{err}");
    assert!(err.contains("interrupted after"), "{err}");
    assert!(!installed(&swu, &data));
}

#[test]
fn truncated_file_is_named_and_not_installed() {
    let rig = Rig::new();
    let (swu, data) = rig.swu("trunc", 200_000);
    let bytes = fs::read(&swu.path).unwrap();
    let cut = rig.path("cut.swu");
    fs::write(&cut, &bytes[..150_000]).unwrap();
    let o = rig.install(cut.to_str().unwrap(), &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(7), "{out}{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("error: the .swu is truncated at byte 150000")
            && last.contains("of `rootfs.img`"),
        "{err}"
    );
    assert!(!installed(&swu, &data));
}

#[test]
fn not_a_swu_is_refused() {
    let rig = Rig::new();
    let junk = rig.path("junk.swu");
    fs::write(&junk, vec![b'x'; 100_000]).unwrap();
    let o = rig.install(junk.to_str().unwrap(), &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(7), "{out}{err}");
    assert!(err.contains("error: not a .swu"), "{err}");
}

#[test]
fn missing_socket_not_a_socket_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    fs::write(&file, b"x").unwrap();
    let swu = dir.path().join("x.swu");
    fs::write(&swu, b"x").unwrap();
    let cases: [(&Path, &Path, i32, &str); 3] = [
        (&dir.path().join("nope"), &swu, 4, "no SWUpdate socket at"),
        (&file, &swu, 5, "is not a socket"),
        (&file, &dir.path().join("none.swu"), 6, "no such file"),
    ];
    for (socket, image, code, msg) in cases {
        let mut c = agent_cmd().unwrap();
        c.arg("install")
            .arg(image)
            .arg("--control-socket")
            .arg(socket)
            .arg("--progress-socket")
            .arg(socket);
        let o = run(c);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(code), "{out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(msg), "{err}");
    }
}

#[test]
fn a_wire_setting_that_does_not_match_the_daemon_is_explained() {
    let rig = Rig::new();
    let (swu, data) = rig.swu("wire", 100_000);
    // A setting the connect handshake contradicts (2024.12 and 2025.12 send the same one: the
    // swupdate crate's tests tell those two apart on recorded frames).
    let (wrong, seen) = match installation().release {
        Release::V2022_12 => ("2025.12", "2022.12 or 2023.12 (it sent no handshake)"),
        _ => ("2022.12", "2024.12 or 2025.12"),
    };
    let o = rig.install(swu.path.to_str().unwrap(), &["--wire", wrong]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(9), "{out}{err}");
    assert!(
        err.contains(&format!("speaks the {seen} progress wire")) && err.contains("\"auto\""),
        "{err}"
    );
    assert!(
        target(&swu).is_empty(),
        "refused before anything was installed"
    );
    assert!(
        !installed(&swu, &data),
        "an install nobody can follow is abandoned"
    );
}

#[test]
fn help_and_version() {
    let mut c = agent_cmd().unwrap();
    c.arg("--version");
    let o = run(c);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("cip-update-agent {}", env!("CARGO_PKG_VERSION"))
    );
    let mut c = agent_cmd().unwrap();
    c.args(["install", "--help"]);
    let o = run(c);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0));
    for s in ["--dry-run", "--info", "Exit codes:", "busy"] {
        assert!(out.contains(s), "{s} in {out}");
    }
    let mut c = agent_cmd().unwrap();
    c.arg("install");
    assert_eq!(run(c).status.code(), Some(2), "usage error");
}

/// The requests the boot and reboot logic will use, against the real daemon (bootloader "none":
/// SWUpdate keeps the state in memory).
#[tokio::test]
async fn update_state_status_and_post_update_requests() {
    use cip_swupdate::UpdateState;
    let rig = Rig::new();
    let c = rig.client();
    // GET_STATUS pops one queued log line per call, and then reports that line's status:
    // only with the queue drained is `current` the daemon's state.
    let mut lines = Vec::new();
    let st = loop {
        let st = c.status().await.unwrap();
        if st.desc.is_empty() || lines.len() > 500 {
            break st;
        }
        lines.push(st.desc);
    };
    assert!(
        lines.iter().any(|l| l.contains("creating socket")),
        "{lines:?}"
    );
    assert_eq!(st.current, 0, "IDLE: {st:?}");
    c.set_update_state(UpdateState::Testing).await.unwrap();
    assert_eq!(c.update_state().await.unwrap(), Some(UpdateState::Testing));
    c.set_update_state(UpdateState::Ok).await.unwrap();
    assert_eq!(c.update_state().await.unwrap(), Some(UpdateState::Ok));
    let text = c.post_update("").await.unwrap();
    assert!(text.contains("Post-update actions"), "{text}");
}

#[test]
fn sockets_from_the_configuration_file_and_a_bad_file_named() {
    let rig = Rig::new();
    let (swu, data) = rig.swu("cfg", 20_000);
    let cfg = rig.path("agent.toml");
    fs::write(
        &cfg,
        format!(
            "[swupdate]\ncontrol_socket = {:?}\nprogress_socket = {:?}\nwire = {:?}\n",
            rig.daemon.control_socket(),
            rig.daemon.progress_socket(),
            installation().release.wire()
        ),
    )
    .unwrap();
    let mut c = agent_cmd().unwrap();
    c.arg("--config").arg(&cfg).arg("install").arg(&swu.path);
    let o = run(c);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(installed(&swu, &data));

    fs::write(&cfg, "[swupdate]\nwire = \"2025.13\"\n").unwrap();
    let mut c = agent_cmd().unwrap();
    c.arg("--config").arg(&cfg).arg("install").arg(&swu.path);
    let o = run(c);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(11), "{err}");
    assert!(err.contains("agent.toml") && err.contains("wire"), "{err}");

    let mut c = agent_cmd().unwrap();
    c.arg("--config")
        .arg(rig.path("none.toml"))
        .arg("install")
        .arg(&swu.path);
    let o = run(c);
    assert_eq!(o.status.code(), Some(11), "{:?}", text(&o));
}

/// URLs go through the configured TLS: a CA file that cannot be read stops a URL install with
/// an error naming the key (a file install does not need it).
#[test]
fn url_installs_use_the_configured_tls() {
    let rig = Rig::new();
    let cfg = rig.path("agent.toml");
    fs::write(&cfg, "[tls]\nca_file = \"/nonexistent/ca.pem\"\n").unwrap();
    let mut c = agent_cmd().unwrap();
    c.arg("--config")
        .arg(&cfg)
        .args(["install", "https://127.0.0.1:9/x.swu"]);
    let o = run(c);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(11), "{err}");
    assert!(err.contains("tls.ca_file: /nonexistent/ca.pem"), "{err}");
}

/// HTTPS through rustls over ring: with the fleet's CA in `tls.ca_file` the image installs; with
/// the system's roots only, nginx's certificate is refused and nothing reaches SWUpdate.
#[test]
fn installs_over_https_with_the_configured_ca() {
    let rig = Rig::new();
    let docroot = rig.path("www");
    fs::create_dir(&docroot).unwrap();
    let pki = rig.path("pki");
    fs::create_dir(&pki).unwrap();
    let tls = TlsFiles::generate(&pki).unwrap();
    let data = random_bytes(300_000, 9);
    let swu = SwuBuilder::new()
        .image(Image::raw(
            "rootfs.img",
            data.clone(),
            rig.path("tls.target"),
        ))
        .build(&rig.cert, &docroot.join("image.swu"))
        .unwrap();
    let nginx = Nginx::start_tls(&docroot, &tls.server_cert, &tls.server_key).unwrap();
    let url = nginx.url("image.swu");
    assert!(url.starts_with("https://"), "{url}");

    let untrusted = rig.install(&url, &[]);
    let (out, err) = text(&untrusted);
    assert_ne!(untrusted.status.code(), Some(0), "{out}{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!installed(&swu, &data));

    let cfg = rig.path("agent.toml");
    fs::write(
        &cfg,
        format!("[tls]\nca_file = \"{}\"\n", tls.ca_cert.display()),
    )
    .unwrap();
    let mut c = agent_cmd().unwrap();
    c.arg("--config")
        .arg(&cfg)
        .arg("install")
        .arg(&url)
        .arg("--control-socket")
        .arg(rig.daemon.control_socket())
        .arg("--progress-socket")
        .arg(rig.daemon.progress_socket());
    let o = run(c);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(installed(&swu, &data));
}

/// On a terminal (a pty made by `script`), a progress bar instead of plain lines.
#[test]
fn a_terminal_gets_a_progress_bar() {
    let rig = Rig::new();
    let (swu, data) = rig.swu("tty", 200_000);
    let agent = cip_update_agent_tests::daemons::agent::agent_bin().unwrap();
    let cmd = format!(
        "{} install {} --control-socket {} --progress-socket {}",
        agent.display(),
        swu.path.display(),
        rig.daemon.control_socket().display(),
        rig.daemon.progress_socket().display()
    );
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &cmd, "/dev/null"]);
    let o = run(c);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("[=============================="),
        "a bar: {out}"
    );
    assert!(out.contains("SUCCESS: install of"), "{out}");
    assert!(
        !out.contains("sent 100%"),
        "no plain lines on a terminal: {out}"
    );
    assert!(installed(&swu, &data));
}

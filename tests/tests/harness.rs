//! Tests of the harness itself, against the real tools: what the harness
//! builds is what SWUpdate installs, and the servers it starts behave as the
//! agent's tests assume.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cip_update_agent_tests::daemons::nginx::Nginx;
use cip_update_agent_tests::daemons::swupdate::{
    DaemonOptions, SwupdateDaemon, installation, run_standalone,
};
use cip_update_agent_tests::fixtures::pki::TestCert;
use cip_update_agent_tests::fixtures::swu::{
    Image, SwuBuilder, random_bytes, sha256_hex, write_random_file,
};
use nix::unistd::Pid;
use tempfile::TempDir;

/// A temporary directory with a certificate in it.
fn setup() -> (TempDir, TestCert) {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let cert = TestCert::generate(dir.path()).expect("generate test certificate");
    (dir, cert)
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn standalone_install_writes_targets() {
    let (dir, cert) = setup();
    let big = dir.path().join("big.img");
    write_random_file(&big, 3 * 1024 * 1024 + 7, 42).expect("write random image");
    let raw_target = dir.path().join("raw.img");
    let file_target = dir.path().join("sub-file");
    let small = random_bytes(1001, 1);
    let swu = SwuBuilder::new()
        .version("2.0.0")
        .image(Image::raw("big.img", big.as_path(), &raw_target))
        .image(Image::rawfile("small.bin", small.clone(), &file_target))
        .build(&cert, &dir.path().join("update.swu"))
        .expect("build .swu");
    assert_eq!(
        read(&raw_target).len(),
        0,
        "builder creates an empty raw target"
    );

    let run = run_standalone(&DaemonOptions::new(&cert), &swu.path).expect("run swupdate -i");
    assert!(run.reports_success(), "log:\n{}", run.log);
    assert!(
        read(&raw_target) == read(&big),
        "raw target differs; log:\n{}",
        run.log
    );
    assert_eq!(read(&file_target), small);
    assert_eq!(swu.images[0].sha256, sha256_hex(&read(&raw_target)));
}

#[test]
fn wrong_sha256_is_not_installed() {
    let (dir, cert) = setup();
    let data = random_bytes(64 * 1024, 2);
    let target = dir.path().join("target.img");
    let swu = SwuBuilder::new()
        .image(
            Image::raw("payload.bin", data.clone(), &target).sha256_override(sha256_hex(b"other")),
        )
        .build(&cert, &dir.path().join("bad.swu"))
        .expect("build .swu");
    let run = run_standalone(&DaemonOptions::new(&cert), &swu.path).expect("run swupdate -i");
    assert!(!run.reports_success(), "log:\n{}", run.log);
    assert!(
        read(&target).is_empty(),
        "target written; log:\n{}",
        run.log
    );
    let reason = installation().release.hash_mismatch_reason();
    assert!(run.log.contains(reason), "{reason}; log:\n{}", run.log);

    // With `installed-directly`, SWUpdate streams the image into the
    // handler and only compares the hash at the end: the install is
    // reported as failed, but the raw target has already been written.
    let target = dir.path().join("direct.img");
    let swu = SwuBuilder::new()
        .image(
            Image::raw("payload.bin", data.clone(), &target)
                .sha256_override(sha256_hex(b"other"))
                .attribute("installed-directly = true;"),
        )
        .build(&cert, &dir.path().join("bad-direct.swu"))
        .expect("build .swu");
    let run = run_standalone(&DaemonOptions::new(&cert), &swu.path).expect("run swupdate -i");
    assert!(!run.reports_success(), "log:\n{}", run.log);
    let reason = installation().release.hash_mismatch_reason();
    assert!(run.log.contains(reason), "{reason}; log:\n{}", run.log);
}

#[test]
fn foreign_signature_and_wrong_hardware_are_rejected() {
    let (dir, cert) = setup();
    let rogue = TestCert::generate_named(dir.path(), "rogue").expect("generate rogue cert");
    let data = random_bytes(4096, 3);
    let cases = [
        ("rogue", SwuBuilder::new(), &rogue),
        ("unsigned", SwuBuilder::new().unsigned(), &cert),
        (
            "hw",
            SwuBuilder::new().hardware_compatibility(["9.9"]),
            &cert,
        ),
    ];
    for (name, builder, signer) in cases {
        let target = dir.path().join(format!("{name}.img"));
        let swu = builder
            .image(Image::raw("payload.bin", data.clone(), &target))
            .build(signer, &dir.path().join(format!("{name}.swu")))
            .expect("build .swu");
        let run = run_standalone(&DaemonOptions::new(&cert), &swu.path).expect("run swupdate -i");
        assert!(!run.reports_success(), "{name}: log:\n{}", run.log);
        assert!(read(&target).is_empty(), "{name}: target written");
    }
}

#[test]
fn daemon_installs_via_ipc_and_is_torn_down() {
    let (dir, cert) = setup();
    let daemon = SwupdateDaemon::start(&DaemonOptions::new(&cert)).expect("start swupdate");
    assert!(daemon.control_socket().starts_with(daemon.tmpdir()));
    assert!(daemon.progress_socket().exists());
    assert!(
        daemon.log().contains("Running on board"),
        "{}",
        daemon.log()
    );

    let data = random_bytes(200_000, 4);
    let target = dir.path().join("target.img");
    let swu = SwuBuilder::new()
        .image(Image::raw("payload.bin", data.clone(), &target))
        .build(&cert, &dir.path().join("update.swu"))
        .expect("build .swu");
    let run = daemon
        .install_with_client(&swu.path, false)
        .expect("run swupdate-client");
    assert!(
        run.reports_success(),
        "client:\n{}\ndaemon:\n{}",
        run.output,
        daemon.log()
    );
    assert!(read(&target) == data, "target differs");

    // The daemon serves the next request too (it is back to idle).
    let target2 = dir.path().join("target2.img");
    let swu2 = SwuBuilder::new()
        .image(Image::raw("payload.bin", data.clone(), &target2))
        .build(&cert, &dir.path().join("update2.swu"))
        .expect("build .swu");
    let run = daemon
        .install_with_client(&swu2.path, true)
        .expect("run swupdate-client -d");
    assert!(run.reports_success(), "client:\n{}", run.output);
    assert!(read(&target2).is_empty(), "a dry run writes nothing");

    let pgid = Pid::from_raw(i32::try_from(daemon.pid()).expect("pid fits i32"));
    let tmpdir = daemon.tmpdir().to_path_buf();
    drop(daemon);
    assert!(!cip_update_agent_tests::daemons::process::group_has_live_process(pgid));
    assert!(!tmpdir.exists(), "daemon directory removed");
}

#[test]
fn daemons_run_side_by_side() {
    let (_certdir, cert) = setup();
    let a = SwupdateDaemon::start(&DaemonOptions::new(&cert)).expect("start swupdate a");
    let b = SwupdateDaemon::start(&DaemonOptions::new(&cert).dry_run(true)).expect("start b");
    assert_ne!(a.control_socket(), b.control_socket());
    assert!(a.control_socket().exists() && b.control_socket().exists());

    // `-n` makes the whole daemon dry-run: success, nothing written.
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("target.img");
    let swu = SwuBuilder::new()
        .image(Image::raw("payload.bin", random_bytes(1000, 6), &target))
        .build(&cert, &dir.path().join("update.swu"))
        .expect("build .swu");
    let run = b.install_with_client(&swu.path, false).expect("run client");
    assert!(run.reports_success(), "client:\n{}", run.output);
    assert!(read(&target).is_empty(), "dry-run daemon wrote the target");

    let log = b.stop().expect("stop b");
    assert!(log.contains("Running on board"), "{log}");
    assert!(a.control_socket().exists(), "a unaffected by b's teardown");
}

#[test]
fn daemon_start_failure_reports_log() {
    let (dir, cert) = setup();
    let mut opts = DaemonOptions::new(&cert);
    opts.cert = dir.path().join("missing.pem");
    let err = SwupdateDaemon::start(&opts).expect_err("swupdate must fail without its cert");
    let msg = format!("{err:#}");
    assert!(msg.contains("exited") && msg.contains("log:"), "{msg}");
}

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let headers = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D"])
        .arg(&headers)
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        fs::read_to_string(&headers).expect("read curl headers"),
        out.stdout,
    )
}

#[test]
fn nginx_serves_files_and_ranges() {
    let docroot = tempfile::tempdir().expect("tempdir");
    let data = random_bytes(100_000, 5);
    fs::write(docroot.path().join("file.swu"), &data).expect("write served file");
    let nginx = Nginx::start(docroot.path()).expect("start nginx");
    assert_eq!(
        nginx.url("/file.swu"),
        format!("http://127.0.0.1:{}/file.swu", nginx.port())
    );

    let (headers, body) = curl(&[&nginx.url("file.swu")]);
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert!(body == data, "whole file differs");

    let (headers, body) = curl(&["-r", "10-19", &nginx.url("file.swu")]);
    assert!(headers.starts_with("HTTP/1.1 206"), "{headers}");
    assert!(
        headers.contains("Content-Range: bytes 10-19/100000"),
        "{headers}"
    );
    assert_eq!(body, &data[10..20]);

    let (headers, body) = curl(&["-r", "0-9,20-29", &nginx.url("file.swu")]);
    assert!(headers.starts_with("HTTP/1.1 206"), "{headers}");
    assert!(
        headers.contains("Content-Type: multipart/byteranges; boundary="),
        "{headers}"
    );
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(body.contains("Content-Range: bytes 0-9/100000"), "{body}");
    assert!(body.contains("Content-Range: bytes 20-29/100000"), "{body}");
    let raw = curl(&["-r", "0-9,20-29", &nginx.url("file.swu")]).1;
    for part in [&data[0..10], &data[20..30]] {
        assert!(raw.windows(10).any(|w| w == part), "part missing from body");
    }

    let (headers, _) = curl(&["-r", "200000-", &nginx.url("file.swu")]);
    assert!(headers.starts_with("HTTP/1.1 416"), "{headers}");
    let (headers, _) = curl(&[&nginx.url("missing")]);
    assert!(headers.starts_with("HTTP/1.1 404"), "{headers}");
    assert!(
        nginx.access_log().contains("range=\"bytes=0-9,20-29\""),
        "{}",
        nginx.access_log()
    );

    // Instances do not share ports, and teardown frees the port.
    let other = Nginx::start(docroot.path()).expect("start second nginx");
    assert_ne!(other.port(), nginx.port());
    let port = nginx.port();
    drop(nginx);
    assert!(
        cip_update_agent_tests::wait_for(
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            Duration::from_secs(5)
        ),
        "nginx still listening after drop"
    );
}

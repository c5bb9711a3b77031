//! The IPC client against the live daemon picked by `CIP_TEST_SWUPDATE` (2022.12, 2024.12 or
//! 2026.05), once with `wire = "auto"` and once with the daemon's release named: install with
//! its progress and log stream, dry run, failure with SWUpdate's reason, busy, abort before
//! commit. (`install`, `daemon` and the rest run the agent's whole paths against the same
//! daemon with `auto`.)

use std::fs;
use std::time::Duration;

use cip_swupdate::client::{ClientError, Swupdate};
use cip_swupdate::{InstallRequest, RecoveryStatus, RunType, SocketPaths, WireSetting};
use cip_update_agent_tests::daemons::swupdate::{DaemonOptions, SwupdateDaemon, installation};
use cip_update_agent_tests::fixtures::pki::TestCert;
use cip_update_agent_tests::fixtures::swu::{BuiltSwu, Image, SwuBuilder, random_bytes};
use tempfile::TempDir;

/// `auto`, and the daemon's own release.
fn settings() -> [WireSetting; 2] {
    let named: WireSetting = installation().release.wire().parse().unwrap();
    [WireSetting::Auto, named]
}

struct Rig {
    dir: TempDir,
    cert: TestCert,
    daemon: SwupdateDaemon,
    client: Swupdate,
}

impl Rig {
    fn new(wire: WireSetting) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::generate(dir.path()).unwrap();
        let daemon = SwupdateDaemon::start(&DaemonOptions::new(&cert)).unwrap();
        let client = Swupdate::new(
            SocketPaths {
                control: daemon.control_socket(),
                progress: daemon.progress_socket(),
            },
            wire,
        );
        Rig {
            dir,
            cert,
            daemon,
            client,
        }
    }

    /// A signed .swu of two raw images (`len` random bytes each); the images' bytes.
    fn swu(&self, name: &str, len: usize, bad_hash: bool) -> (BuiltSwu, Vec<Vec<u8>>) {
        let datas: Vec<Vec<u8>> = (0..2).map(|i| random_bytes(len, len as u64 + i)).collect();
        let mut b = SwuBuilder::new();
        for (i, d) in datas.iter().enumerate() {
            let mut img = Image::raw(
                format!("part{i}.img"),
                d.clone(),
                self.dir.path().join(format!("{name}{i}.target")),
            );
            if bad_hash && i == 1 {
                img = img.sha256_override("ef".repeat(32));
            }
            b = b.image(img);
        }
        let swu = b
            .build(&self.cert, &self.dir.path().join(format!("{name}.swu")))
            .unwrap();
        (swu, datas)
    }

    async fn install(&self, swu: &BuiltSwu, run: RunType) -> cip_swupdate::client::InstallOutcome {
        let bytes = fs::read(&swu.path).unwrap();
        let mut inst = self
            .client
            .start_install(&InstallRequest {
                run,
                info: "live".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut progress = inst.take_progress().expect("the progress stream");
        inst.write(&bytes).await.unwrap();
        inst.commit().await.unwrap();
        let v = tokio::time::timeout(Duration::from_secs(30), inst.finish())
            .await
            .expect("a verdict in 30 s")
            .unwrap();
        let mut seen = Vec::new();
        while let Ok(m) = progress.try_recv() {
            seen.push(m);
        }
        assert!(
            seen.iter()
                .any(|m| m.status == RecoveryStatus::Start && m.nsteps == 2),
            "START with 2 steps: {seen:#?}"
        );
        v
    }
}

fn targets(swu: &BuiltSwu) -> Vec<Vec<u8>> {
    swu.images
        .iter()
        .map(|i| fs::read(&i.target).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_with_progress_and_the_log_stream() {
    for wire in settings() {
        let rig = Rig::new(wire);
        let (swu, datas) = rig.swu("ok", 300_000, false);
        let v = rig.install(&swu, RunType::Install).await;
        assert_eq!(v.status, RecoveryStatus::Success, "{wire}: {v:#?}");
        assert_eq!(
            v.wire.map(|w| w.to_string()).as_deref(),
            Some(installation().release.wire()),
            "{wire}"
        );
        assert_eq!(targets(&swu), datas, "{wire}");
        assert!(
            v.log.iter().any(|l| l.msg.contains("part1.img")),
            "{wire}: the daemon's log lines of the install: {:#?}",
            v.log
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_nothing() {
    for wire in settings() {
        let rig = Rig::new(wire);
        let (swu, _) = rig.swu("dry", 100_000, false);
        let v = rig.install(&swu, RunType::DryRun).await;
        assert_eq!(v.status, RecoveryStatus::Success, "{wire}: {v:#?}");
        assert!(targets(&swu).iter().all(|t| t.is_empty()), "{wire}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_carries_swupdates_reason() {
    for wire in settings() {
        let rig = Rig::new(wire);
        let (swu, datas) = rig.swu("bad", 100_000, true);
        let v = rig.install(&swu, RunType::Install).await;
        assert_eq!(v.status, RecoveryStatus::Failure, "{wire}: {v:#?}");
        let reason = installation().release.hash_mismatch_reason();
        assert!(
            v.log.iter().any(|l| l.msg.contains(reason)),
            "{wire}: {reason} in {:#?}",
            v.log
        );
        assert_ne!(targets(&swu)[1], datas[1], "{wire}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_daemon_says_so_and_the_first_install_completes() {
    for wire in settings() {
        let rig = Rig::new(wire);
        let (swu, datas) = rig.swu("first", 300_000, false);
        let bytes = fs::read(&swu.path).unwrap();
        let mut first = rig
            .client
            .start_install(&InstallRequest::default())
            .await
            .unwrap();
        first.write(&bytes[..100_000]).await.unwrap();
        match rig.client.start_install(&InstallRequest::default()).await {
            Err(e @ ClientError::Busy(_)) => {
                assert!(
                    e.to_string().contains("Installation in progress"),
                    "{wire}: {e}"
                )
            }
            Err(e) => panic!("{wire}: {e}"),
            Ok(_) => panic!("{wire}: a second install was accepted"),
        }
        first.write(&bytes[100_000..]).await.unwrap();
        first.commit().await.unwrap();
        let v = first.finish().await.unwrap();
        assert_eq!(v.status, RecoveryStatus::Success, "{wire}: {v:#?}");
        assert_eq!(targets(&swu), datas, "{wire}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_before_the_commit_fails_the_install() {
    for wire in settings() {
        let rig = Rig::new(wire);
        let (swu, datas) = rig.swu("abort", 300_000, false);
        let bytes = fs::read(&swu.path).unwrap();
        let mut inst = rig
            .client
            .start_install(&InstallRequest::default())
            .await
            .unwrap();
        // Every byte but the commit: the held-back tail never reaches the daemon.
        inst.write(&bytes).await.unwrap();
        inst.abort();
        let v = tokio::time::timeout(Duration::from_secs(30), inst.finish())
            .await
            .expect("a verdict")
            .unwrap();
        assert_eq!(v.status, RecoveryStatus::Failure, "{wire}: {v:#?}");
        assert_ne!(
            targets(&swu)[1],
            datas[1],
            "{wire}: the last image is not complete"
        );
        // The daemon is idle again: the next install goes through.
        let (again, datas) = rig.swu("again", 50_000, false);
        let v = rig.install(&again, RunType::Install).await;
        assert_eq!(v.status, RecoveryStatus::Success, "{wire}: {v:#?}");
        assert_eq!(targets(&again), datas, "{wire}");
        let _ = rig.daemon.log();
    }
}

/// `auto` learns the wire from the frames of an install still being streamed (the agent needs it
/// then: SET_DELTA_URL must reach a 2025.12+ daemon before its delta handler runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_knows_the_wire_before_the_stream_ends() {
    let rig = Rig::new(WireSetting::Auto);
    let (swu, datas) = rig.swu("early", 100_000, false);
    let bytes = fs::read(&swu.path).unwrap();
    let mut inst = rig
        .client
        .start_install(&InstallRequest::default())
        .await
        .unwrap();
    let mut progress = inst.take_progress().unwrap();
    inst.write(&bytes[..bytes.len() - 1]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while rig.client.known_wire().is_none() && tokio::time::Instant::now() < deadline {
        while let Ok(m) = progress.try_recv() {
            seen.push(m.status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        rig.client.known_wire().map(|w| w.to_string()).as_deref(),
        Some(installation().release.wire()),
        "frames seen while streaming: {seen:?}\n{}",
        rig.daemon.log()
    );
    inst.write(&bytes[bytes.len() - 1..]).await.unwrap();
    inst.commit().await.unwrap();
    let v = inst.finish().await.unwrap();
    assert_eq!(v.status, RecoveryStatus::Success, "{v:#?}");
    assert_eq!(targets(&swu), datas);
}

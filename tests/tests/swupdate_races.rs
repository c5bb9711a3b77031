//! Races of the real SWUpdate daemon (Debian's 2022.12) that an install must ride out.
//!
//! SWUpdate 2022.12 wakes its installer thread with a `pthread_cond_signal` that has no
//! predicate (core/network_thread.c, REQ_INSTALL; the installer waits in
//! core/stream_interface.c, `network_initializer`). An install request that comes after the
//! previous install set the state back to IDLE, but before the installer waits again, is ACKed
//! and its wake-up lost: nobody reads the stream, and the install stalls at its start. The
//! agent repeats the request before streaming (see `confirm_taken` in its swupdate client).

use std::time::Duration;

use cip_swupdate::install::{self, InstallError};
use cip_swupdate::{ClientError, InstallRequest, RunType, SocketPaths, Swupdate, WireSetting};
use cip_update_agent_tests::daemons::swupdate::{DaemonOptions, SwupdateDaemon};
use cip_update_agent_tests::fixtures::pki::TestCert;
use cip_update_agent_tests::fixtures::swu::{Image, SwuBuilder, random_bytes};

/// Rounds of "an install ends, the next is asked for at once": at least `ROUNDS`, and more (up
/// to `MAX_ROUNDS`) until one of them did hit the daemon while it was still busy.
const ROUNDS: u64 = 12;
const MAX_ROUNDS: u64 = 40;
/// A round that takes longer has stalled (each takes about a second, a few under load).
const ROUND_LIMIT: Duration = Duration::from_secs(15);

/// Each round ends an install at once (its stream closes before the first byte: FAILURE; a short
/// install, whose result SWUpdate may send before its progress thread accepted the agent's
/// connection), then
/// asks for the next one again and again while the daemon answers busy, so the first request it
/// ACKs comes just after it went idle: in the window where 2022.12 loses the wake-up. Every
/// such install must complete, with the image written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_asked_for_just_after_the_previous_one_ended_completes() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path()).unwrap();
    let daemon = SwupdateDaemon::start(&DaemonOptions::new(&cert)).unwrap();
    let sw = Swupdate::new(
        SocketPaths {
            control: daemon.control_socket(),
            progress: daemon.progress_socket(),
        },
        WireSetting::Auto,
    );
    let req = InstallRequest {
        run: RunType::Install,
        ..Default::default()
    };
    let mut busy = 0;
    for round in 0..MAX_ROUNDS {
        if round >= ROUNDS && busy > 0 {
            break;
        }
        // Larger than the socket buffers: a stream nobody reads blocks.
        let data = random_bytes(1 << 20, round);
        let target = dir.path().join(format!("{round}.target"));
        let swu = SwuBuilder::new()
            .image(Image::raw("rootfs.img", data.clone(), target.clone()))
            .build(&cert, &dir.path().join(format!("{round}.swu")))
            .unwrap();

        let outcome = tokio::time::timeout(ROUND_LIMIT, async {
            let empty = sw.start_install(&req).await.unwrap();
            let o = empty.finish().await.unwrap();
            assert!(
                !o.succeeded(),
                "round {round}: an empty stream cannot install"
            );
            loop {
                let file = tokio::fs::File::open(&swu.path).await.unwrap();
                let image = install::Image {
                    reader: Box::pin(file),
                    len: Some(swu.len),
                };
                match install::install(&sw, &req, image, u64::MAX, &mut (), std::future::pending())
                    .await
                {
                    Err(InstallError::Daemon(ClientError::Busy(_))) => busy += 1,
                    r => break r,
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "round {round}: the install stalled; SWUpdate's log:\n{}",
                daemon.log()
            )
        })
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(outcome.succeeded(), "round {round}: {outcome:?}");
        assert!(
            std::fs::read(&target).unwrap() == data,
            "round {round}: image written"
        );
    }
    // Whether a request did come while the daemon was still busy, i.e. right at its end: how
    // hard this run pressed on the window. Not asserted: under a loaded test run the daemon can
    // be idle before every next request (seen in CI), and the window is then not hit at all; the
    // replayed-daemon tests in replay.rs cover both races deterministically.
    eprintln!("requests refused as busy: {busy}");
}

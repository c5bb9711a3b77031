//! A stand-in for SWUpdate releases that Debian does not ship (2023.12 to 2026.05): it answers on
//! the two IPC sockets with the bytes real daemons of those releases wrote, recorded in
//! `swupdate/testdata/frames/` (see its README). The real 2022.12 daemon covers the install itself;
//! this covers the wire variants the agent must read from newer daemons, through real sockets
//! and real timing (handshake at connect, frames after the ACK, one write per frame).

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use anyhow::Context;

const MSG: usize = 3120; // LP64 ipc_message
const HANDSHAKE: [u8; 8] = [0, 0, 2, 0, b'A', b'C', b'K', 0];

/// Where the recordings are.
pub fn frames_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../swupdate/testdata/frames")
}

/// A replaying daemon for one recorded run (`progress-<version>-<run>.bin`).
pub struct ReplayDaemon {
    dir: tempfile::TempDir,
    installed: mpsc::Receiver<u64>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ReplayDaemon {
    /// `version` as in the file names (`2025.12`), `run` `success` or `failure`.
    pub fn start(version: &str, run: &str) -> anyhow::Result<ReplayDaemon> {
        Self::start_with(version, run, Mode::Normal)
    }

    /// As `start`, but the daemon stops reading the image at once and reports its run while
    /// holding the stream open: what SWUpdate does when it rejects a stream it cannot parse.
    pub fn start_stalling(version: &str, run: &str) -> anyhow::Result<ReplayDaemon> {
        Self::start_with(version, run, Mode::Stall)
    }

    /// As `start`, but the first recorded frame (START) goes out right after the ACK, as a real
    /// daemon sends it before it reads the image; the rest once the image is in.
    pub fn start_live(version: &str, run: &str) -> anyhow::Result<ReplayDaemon> {
        Self::start_with(version, run, Mode::Live)
    }

    /// As `start`, but the first install request is ACKed and its stream never read, while the
    /// daemon stays idle (the next request is ACKed and served): SWUpdate 2022.12 when the
    /// request comes just after the previous install, before its installer thread waits again
    /// (the wake-up is lost; see `confirm_taken` in the agent's swupdate client).
    pub fn start_losing_first_wakeup(version: &str, run: &str) -> anyhow::Result<ReplayDaemon> {
        Self::start_with(version, run, Mode::LoseFirstWakeup)
    }

    /// As `start`, but the progress connection is never accepted (it waits in the listen
    /// backlog: SWUpdate's progress thread, busy or not scheduled, accepts it only after a short
    /// install ended), so no progress message reaches the agent; GET_STATUS reports the daemon
    /// idle with the run's result once the stream ended (SUCCESS for `success`, else FAILURE).
    pub fn start_progress_never_accepted(version: &str, run: &str) -> anyhow::Result<ReplayDaemon> {
        Self::start_with(version, run, Mode::ProgressNeverAccepted)
    }

    fn start_with(version: &str, run: &str, mode: Mode) -> anyhow::Result<ReplayDaemon> {
        let frames = frames_dir();
        let progress = std::fs::read(frames.join(format!("progress-{version}-{run}.bin")))
            .context("recorded progress stream")?;
        let ack = std::fs::read(frames.join(format!("control-ack-{version}.bin")))?;
        let nack = std::fs::read(frames.join(format!("control-nack-{version}.bin")))?;
        let frame = if version >= "2025.12" { 2408 } else { 2416 };
        let dir = tempfile::tempdir()?;
        let control = UnixListener::bind(dir.path().join("sockinstctrl"))?;
        let prog = UnixListener::bind(dir.path().join("swupdateprog"))?;
        let (start_tx, start_rx) = mpsc::channel::<()>();
        let (acked_tx, acked_rx) = mpsc::channel::<()>();
        let (installed_tx, installed) = mpsc::channel();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        // SET_DELTA_URL (type 15) exists from 2025.12 on; older daemons NACK it.
        let takes_delta_url = version >= "2025.12";

        let result = if run == "success" { 3 } else { 4 };
        let last_result = Arc::new(AtomicU32::new(0));
        let last = last_result.clone();
        thread::spawn(move || -> anyhow::Result<()> {
            if mode == Mode::ProgressNeverAccepted {
                // Hold the listener: connections wait in its backlog.
                thread::sleep(Duration::from_secs(120));
                drop(prog);
                return Ok(());
            }
            let (mut s, _) = prog.accept()?;
            let mut rest = &progress[..];
            if rest.starts_with(&HANDSHAKE) {
                s.write_all(&HANDSHAKE)?; // right after accept, as 2024.12+ does
                rest = &rest[8..];
            }
            if mode == Mode::Live {
                acked_rx.recv()?;
                let (first, more) = rest.split_at(frame.min(rest.len()));
                s.write_all(first)?;
                rest = more;
            }
            start_rx.recv()?;
            for f in rest.chunks(frame) {
                s.write_all(f)?;
                thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        });
        thread::spawn(move || -> anyhow::Result<()> {
            let start = Arc::new(Mutex::new(Some(start_tx)));
            // An install runs: further install requests are refused, as SWUpdate does.
            let busy = Arc::new(AtomicBool::new(false));
            let mut lose_wakeup = mode == Mode::LoseFirstWakeup;
            for conn in control.incoming() {
                let mut s = conn?;
                let mut m = [0u8; MSG];
                s.read_exact(&mut m)?;
                log.lock().expect("control log").push(m.to_vec());
                match u32::from_le_bytes(m[4..8].try_into()?) {
                    0 if busy.load(Ordering::SeqCst) => s.write_all(&busy_nack())?,
                    0 if lose_wakeup => {
                        lose_wakeup = false;
                        s.write_all(&ack)?;
                        // Still idle; the stream is never read (held 30 s, then dropped).
                        thread::spawn(move || {
                            thread::sleep(Duration::from_secs(30));
                            drop(s);
                        });
                    }
                    0 if mode == Mode::Stall => {
                        busy.store(true, Ordering::SeqCst);
                        s.write_all(&ack)?;
                        if let Some(tx) = start.lock().expect("start lock").take() {
                            let _ = tx.send(());
                        }
                        // Never read, never close (for 30 s); other requests are answered.
                        let done = installed_tx.clone();
                        thread::spawn(move || {
                            let mut one = [0u8; 1];
                            thread::sleep(Duration::from_secs(30));
                            let _ = s.read(&mut one);
                            let _ = done.send(0);
                        });
                    }
                    0 => {
                        busy.store(true, Ordering::SeqCst);
                        s.write_all(&ack)?;
                        let _ = acked_tx.send(());
                        // The daemon reads the image to its end, then reports; meanwhile it
                        // answers other requests.
                        let done = installed_tx.clone();
                        let (start, busy, last) = (start.clone(), busy.clone(), last.clone());
                        let log = log.clone();
                        thread::spawn(move || {
                            let n = std::io::copy(&mut s, &mut std::io::sink()).unwrap_or(0);
                            // The end of the image, as a mark in the control log.
                            log.lock().expect("control log").push(Vec::new());
                            let _ = done.send(n);
                            last.store(result, Ordering::SeqCst);
                            if let Some(tx) = start.lock().expect("start lock").take() {
                                let _ = tx.send(());
                            }
                            busy.store(false, Ordering::SeqCst);
                        });
                    }
                    // GET_STATUS: an empty log queue; the daemon's state and last result.
                    3 => {
                        let mut r = reply(1);
                        let current: u32 = if busy.load(Ordering::SeqCst) { 2 } else { 0 };
                        r[8..12].copy_from_slice(&current.to_le_bytes());
                        let last = last_result.load(Ordering::SeqCst);
                        r[12..16].copy_from_slice(&last.to_le_bytes());
                        s.write_all(&r)?
                    }
                    // SET_DELTA_URL: 2025.12 answers ACK in the request's buffer.
                    15 if takes_delta_url => {
                        let mut a = m.to_vec();
                        a[4..8].copy_from_slice(&1u32.to_le_bytes());
                        s.write_all(&a)?;
                    }
                    // NOTIFY_STREAM and anything else: refused, as the recorded NACK.
                    _ => s.write_all(&nack)?,
                }
            }
            Ok(())
        });
        Ok(ReplayDaemon {
            dir,
            installed,
            received,
        })
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.path().join("sockinstctrl")
    }

    pub fn progress_socket(&self) -> PathBuf {
        self.dir.path().join("swupdateprog")
    }

    /// Every control message received so far (whole `ipc_message`s), in order; an empty entry
    /// marks where the install's image ended.
    pub fn control_messages(&self) -> Vec<Vec<u8>> {
        self.received.lock().expect("control log").clone()
    }

    /// Bytes the install stream carried, once it ended.
    pub fn installed_bytes(&self, timeout: Duration) -> Option<u64> {
        self.installed.recv_timeout(timeout).ok()
    }
}

/// How SWUpdate refuses an install while one runs.
fn busy_nack() -> Vec<u8> {
    let mut m = reply(2);
    let text = b"Installation in progress";
    m[8..8 + text.len()].copy_from_slice(text);
    m
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    Stall,
    Live,
    LoseFirstWakeup,
    ProgressNeverAccepted,
}

fn reply(kind: u32) -> Vec<u8> {
    let mut m = vec![0u8; MSG];
    m[0..4].copy_from_slice(&0x1405_2001u32.to_le_bytes());
    m[4..8].copy_from_slice(&kind.to_le_bytes());
    m
}

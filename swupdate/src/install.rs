//! One install from start to verdict: stream an opened image into SWUpdate, follow the structure
//! of the archive on the way, and commit only a whole archive, so that SWUpdate can never
//! complete an image that was cut short or abandoned.

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::client::{ClientError, InstallOutcome, Installation};
use crate::swu::{SwuError, SwuTracker};
use crate::{InstallRequest, ProgressMsg, RecoveryStatus, Swupdate};

/// Size of each read from the source. Larger reads mean fewer wakeups; this is the bulk of the
/// agent's memory during an install.
const CHUNK: usize = 128 * 1024;

/// The image to install: a stream of bytes, and its length when the source tells it (a file's
/// size, a Content-Length), so that an image known to be too large is refused before streaming.
pub struct Image {
    /// The bytes of the `.swu`.
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// Length when the file or the server tells it.
    pub len: Option<u64>,
}

/// Told about an install as it goes.
pub trait Observer {
    /// Bytes read from the source so far, and the total when known.
    fn streamed(&mut self, bytes: u64, total: Option<u64>);
    /// A progress message of the daemon.
    fn progress(&mut self, msg: &ProgressMsg);
    /// The whole image is read and checked; only the held-back tail is left to send. An error
    /// abandons the install instead (the daemon fails it). The daemon records its commit point
    /// here, so that a restart knows SWUpdate's next verdict is this install's.
    fn before_commit(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// The commit was sent (or failed to go): SWUpdate's verdict is next. The agent's crash
    /// point of the commit (fault injection of its tests) is here.
    fn committed(&mut self) {}
}

/// An observer that ignores everything.
impl Observer for () {
    fn streamed(&mut self, _: u64, _: Option<u64>) {}
    fn progress(&mut self, _: &ProgressMsg) {}
}

/// Why an install did not succeed, with the daemon's verdict where there is one.
/// Each abandoned install carries SWUpdate's verdict on the cut stream when it came (`verdict`).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The daemon could not be reached, refused the install, or its sockets failed.
    #[error(transparent)]
    Daemon(#[from] ClientError),
    /// The image is not a whole `.swu` (cut short, not cpio, too large).
    #[error("{error}")]
    Malformed {
        /// What is wrong with the archive.
        error: SwuError,
        /// The daemon's verdict after the stream was abandoned.
        verdict: Option<InstallOutcome>,
    },
    /// The source failed while the image was read.
    #[error("reading the image failed after {bytes} bytes: {error}")]
    Read {
        /// Bytes of the archive read before the failure.
        bytes: u64,
        /// The source's error.
        error: std::io::Error,
        /// The daemon's verdict after the stream was abandoned.
        verdict: Option<InstallOutcome>,
    },
    /// The observer's [`Observer::before_commit`] refused the commit.
    #[error("the install was abandoned before its commit: {reason}")]
    NotCommitted {
        /// The observer's reason.
        reason: String,
        /// The daemon's verdict after the stream was abandoned.
        verdict: Option<InstallOutcome>,
    },
    /// `cancel` resolved while the image streamed.
    #[error("interrupted after {bytes} bytes; the install was abandoned")]
    Interrupted {
        /// Bytes of the archive sent before the interruption.
        bytes: u64,
        /// The daemon's verdict after the stream was abandoned.
        verdict: Option<InstallOutcome>,
    },
}

impl InstallError {
    /// SWUpdate's verdict after the agent abandoned the stream, if it came.
    pub fn verdict(&self) -> Option<&InstallOutcome> {
        match self {
            InstallError::Daemon(_) => None,
            InstallError::Malformed { verdict, .. }
            | InstallError::Read { verdict, .. }
            | InstallError::NotCommitted { verdict, .. }
            | InstallError::Interrupted { verdict, .. } => verdict.as_ref(),
        }
    }
}

/// Streams `image` into the daemon and waits for its verdict. `cancel` resolving abandons the
/// install (SWUpdate then fails it). A SUCCESS or FAILURE from the daemon is `Ok`: the caller
/// judges it; `Err` means the agent itself stopped the install or could not run it.
///
/// The image is read up to the end of its archive (the cpio trailer and its padding), never
/// beyond, and never past `max_image` bytes: an endless or lying source cannot feed SWUpdate
/// (or anything wrapping the reader) more than that.
pub async fn install(
    sw: &Swupdate,
    req: &InstallRequest,
    mut image: Image,
    max_image: u64,
    observer: &mut dyn Observer,
    cancel: impl Future<Output = ()>,
) -> Result<InstallOutcome, InstallError> {
    let mut tracker = SwuTracker::with_max(max_image);
    if let Some(len) = image.len.filter(|l| *l > max_image) {
        return Err(InstallError::Malformed {
            error: SwuError::TooLarge {
                max: max_image,
                what: format!("its length is {len} bytes"),
            },
            verdict: None,
        });
    }
    let mut inst = sw.start_install(req).await?;
    let mut progress = inst
        .take_progress()
        .expect("a new install has its progress");
    let mut buf = vec![0u8; CHUNK];
    let mut read = 0u64;
    let mut progress_open = true;
    let mut got_result = false;
    tokio::pin!(cancel);

    // Stream. The daemon's progress is reported as it comes; a failing daemon shows as a write
    // error, after which its verdict on the progress socket says why.
    let stop = 'stream: loop {
        tokio::select! {
            biased;
            () = &mut cancel => break Stop::Abandon(InstallError::Interrupted { bytes: read, verdict: None }),
            // Failed before or between writes: nothing more is read.
            m = progress.recv(), if progress_open => {
                if let Some(stop) = on_progress(m, observer, &mut got_result, &mut progress_open) {
                    break stop;
                }
            }
            n = image.reader.read(&mut buf) => {
                let n = match n {
                    Ok(n) => n,
                    Err(error) => break Stop::Abandon(InstallError::Read { bytes: read, error, verdict: None }),
                };
                if n == 0 {
                    break finished(&tracker);
                }
                // Only the archive's own bytes go on; past its end, the stream is over.
                let n = match tracker.feed(&buf[..n]) {
                    Ok(taken) => taken,
                    Err(error) => break Stop::Abandon(InstallError::Malformed { error, verdict: None }),
                };
                if n == 0 {
                    break finished(&tracker);
                }
                read += n as u64;
                observer.streamed(read, image.len);
                // A daemon that stops reading must not keep an interrupt waiting, nor hide its
                // verdict: SWUpdate can fail an install (a stream it does not recognise) and stop
                // reading without closing the socket, so its progress is followed while the
                // write waits. The write is pinned: a progress message in between must not
                // start it again (no byte twice).
                let write = inst.write(&buf[..n]);
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        biased;
                        () = &mut cancel => break 'stream Stop::Abandon(InstallError::Interrupted { bytes: read, verdict: None }),
                        r = &mut write => {
                            if let Err(e) = r {
                                // The daemon gave up on the install; its verdict says why.
                                tracing::debug!("daemon stopped reading: {e}");
                                break 'stream Stop::DaemonStopped;
                            }
                            break;
                        }
                        m = progress.recv(), if progress_open => {
                            if let Some(stop) = on_progress(m, observer, &mut got_result, &mut progress_open) {
                                tracing::debug!("the daemon's progress ended the stream while a write waited");
                                break 'stream stop;
                            }
                        }
                    }
                }
                // Not one more read: a source that never ends must not hold the install.
                if tracker.ended() {
                    break finished(&tracker);
                }
            }
        }
    };

    let stop = match stop {
        Stop::Complete => match observer.before_commit() {
            Ok(()) => {
                if let Err(e) = inst.commit().await {
                    tracing::debug!("commit: {e}");
                }
                observer.committed();
                Stop::Complete
            }
            Err(reason) => {
                inst.abort();
                Stop::Abandon(InstallError::NotCommitted {
                    reason,
                    verdict: None,
                })
            }
        },
        other => {
            inst.abort();
            other
        }
    };
    let verdict_result = follow(inst, progress, observer).await;
    match stop {
        Stop::Complete | Stop::DaemonStopped | Stop::ProgressLost => {
            verdict_result.map_err(InstallError::from)
        }
        Stop::Abandon(mut e) => {
            if let InstallError::Malformed { verdict, .. }
            | InstallError::Read { verdict, .. }
            | InstallError::NotCommitted { verdict, .. }
            | InstallError::Interrupted { verdict, .. } = &mut e
            {
                *verdict = verdict_result.ok();
            }
            Err(e)
        }
    }
}

/// The stream of the archive is over: whole, or cut short.
fn finished(tracker: &SwuTracker) -> Stop {
    match tracker.finish() {
        Ok(()) => Stop::Complete,
        Err(error) => Stop::Abandon(InstallError::Malformed {
            error,
            verdict: None,
        }),
    }
}

/// Why the streaming loop ended.
enum Stop {
    /// The whole archive went in: commit.
    Complete,
    /// The daemon closed the stream, or failed the install while it was streamed.
    DaemonStopped,
    /// The progress reader failed: its error is the answer.
    ProgressLost,
    /// The agent gives up on the install.
    Abandon(InstallError),
}

/// A progress message (or the reader's end) while the image streams: passed to the observer;
/// `Some` when it ends the stream. A FAILURE ends it (the daemon reads no more). The reader
/// ending without a verdict ends it too: an install nobody can follow must not complete, and
/// `finish` returns the reader's error.
fn on_progress(
    m: Option<ProgressMsg>,
    observer: &mut dyn Observer,
    got_result: &mut bool,
    progress_open: &mut bool,
) -> Option<Stop> {
    match m {
        Some(m) => {
            let failed = m.status == RecoveryStatus::Failure;
            *got_result |= failed || m.status == RecoveryStatus::Success;
            observer.progress(&m);
            failed.then_some(Stop::DaemonStopped)
        }
        None if !*got_result => Some(Stop::ProgressLost),
        None => {
            *progress_open = false;
            None
        }
    }
}

/// Reports progress until the verdict.
async fn follow(
    mut inst: Installation,
    mut progress: tokio::sync::mpsc::Receiver<ProgressMsg>,
    observer: &mut dyn Observer,
) -> Result<InstallOutcome, ClientError> {
    loop {
        tokio::select! {
            m = progress.recv() => match m {
                Some(m) => observer.progress(&m),
                None => break,
            },
            // A progress socket that stays silent may never carry the result (SWUpdate had
            // not yet accepted it): the daemon's state tells.
            () = tokio::time::sleep(Installation::status_poll()) => {
                if inst.check_idle().await {
                    break;
                }
            }
        }
    }
    inst.finish().await
}

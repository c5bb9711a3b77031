//! Keeping the installed `.swu` as the next delta's seed: the bytes going to SWUpdate are copied
//! to `previous.swu.part`, renamed to `previous.swu` once the install succeeded (and the chunk
//! cache emptied: its chunks are in that file now).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The copy's file names.
#[derive(Debug, Clone)]
pub struct Keeper {
    part: PathBuf,
    done: PathBuf,
    chunks: PathBuf,
}

impl Keeper {
    pub fn new(state_dir: &Path) -> Keeper {
        let dir = super::dir(state_dir);
        Keeper {
            part: dir.join("previous.swu.part"),
            done: super::previous_swu(state_dir),
            chunks: dir.join("chunks"),
        }
    }

    /// Wraps `inner`, copying what it reads; without a copy if the file cannot be made.
    pub fn wrap(&self, inner: Pin<Box<dyn AsyncRead + Send>>) -> Pin<Box<dyn AsyncRead + Send>> {
        let file = self
            .part
            .parent()
            .map_or(Ok(()), cip_atomic::create_dirs)
            .and_then(|()| cip_atomic::open_private(&self.part, cip_atomic::PRIVATE_FILE, true));
        match file {
            Ok(f) => Box::pin(KeepingReader {
                inner,
                file: Some(std::io::BufWriter::new(f)),
            }),
            Err(e) => {
                tracing::warn!("{}: {e}: the .swu is not kept", self.part.display());
                inner
            }
        }
    }

    /// The install succeeded: the copy becomes the previous .swu (if it is whole), the chunk
    /// cache goes.
    pub fn commit(&self, len: Option<u64>) {
        let whole = std::fs::metadata(&self.part)
            .map(|m| len.is_none_or(|l| m.len() == l))
            .unwrap_or(false);
        if whole {
            // Its bytes durable before the rename makes it the seed.
            let synced = std::fs::File::open(&self.part).and_then(|f| f.sync_all());
            if let Err(e) = synced.and_then(|()| cip_atomic::persist(&self.part, &self.done)) {
                tracing::warn!("{}: {e}", self.done.display());
            }
        } else {
            let _ = std::fs::remove_file(&self.part);
        }
        super::ChunkCache::clear(&self.chunks);
    }

    /// The install failed: the copy goes (the chunk cache stays for the next try).
    pub fn abandon(&self) {
        let _ = std::fs::remove_file(&self.part);
    }
}

/// Copies what passes through. The writes are blocking, to a local file, a few hundred KiB at a
/// time: short next to the install itself, and it keeps the reader simple.
pub struct KeepingReader {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl AsyncRead for KeepingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            let end = new.is_empty();
            let failed = match self.file.as_mut() {
                Some(f) if !new.is_empty() => f.write_all(new).is_err(),
                Some(f) if end => f.flush().is_err(),
                _ => false,
            };
            if failed {
                // No copy then; the install goes on.
                tracing::warn!("keeping the .swu: write failed; not kept");
                self.file = None;
            }
        }
        r
    }
}

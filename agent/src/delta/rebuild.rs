//! The rebuilt `.swu` as a stream: the target's chunks in order, each read from its seed or the
//! cache and checked against the header's checksum before it goes out. Reading runs on a blocking
//! thread (seed devices, files) and hands chunks over a small channel, so memory stays at a few
//! chunks whatever the image size.

use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;
use zchunk::Header;

use super::seeds::{Place, Sources};

/// Chunks in flight between the reading thread and the install.
const DEPTH: usize = 4;

pub(super) fn reader(header: Arc<Header>, sources: Sources) -> Pin<Box<dyn AsyncRead + Send>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(DEPTH);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = produce(&header, &sources, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Box::pin(tokio_util::io::StreamReader::new(stream))
}

fn produce(
    header: &Header,
    sources: &Sources,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<()> {
    let mut files: Vec<Option<std::fs::File>> = sources.seeds.iter().map(|_| None).collect();
    let hash = header.chunk_hash_type();
    for (chunk, place) in header.data_chunks().iter().zip(&sources.places) {
        if chunk.len == 0 {
            continue;
        }
        let digest = chunk.uncomp_digest.ok_or_else(|| {
            std::io::Error::other(format!("chunk {} has no checksum", chunk.index))
        })?;
        let data = match place {
            Place::Cache => sources.cache.get(&digest, chunk.len).ok_or_else(|| {
                std::io::Error::other(format!(
                    "chunk {} vanished from the chunk cache",
                    chunk.index
                ))
            })?,
            Place::Seed { seed, offset } => {
                let path = &sources.seeds[*seed];
                let f = match &mut files[*seed] {
                    Some(f) => f,
                    slot => slot.insert(std::fs::File::open(path)?),
                };
                f.seek(SeekFrom::Start(*offset))?;
                // chunk.len was bounded by the chunker (a seed chunk of this length matched).
                let mut buf = vec![0u8; chunk.len as usize];
                f.read_exact(&mut buf)
                    .map_err(|e| std::io::Error::other(format!("seed {}: {e}", path.display())))?;
                buf
            }
        };
        if hash.digest(&data) != digest {
            return Err(std::io::Error::other(format!(
                "chunk {} changed on the device since it was found (seed or cache)",
                chunk.index
            )));
        }
        if tx.blocking_send(Ok(Bytes::from(data))).is_err() {
            // The install stopped reading.
            return Ok(());
        }
    }
    Ok(())
}

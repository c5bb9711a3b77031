//! Streaming expansion of a whole zchunk file: a `Read` over the expanded
//! bytes that holds one chunk at a time and verifies each one (and the data
//! checksum at the end) before handing any of its bytes out.

use std::io::{self, Read, Write};

use crate::decode::{ChunkDecoder, MAX_EXPANDED_CHUNK};
use crate::error::Error;
use crate::hash::Hasher;
use crate::header::{Chunk, DEFAULT_MAX_HEADER_LEN, Header};

/// Expands a zchunk file read from `R`, chunk by chunk.
pub struct Reader<R> {
    inner: R,
    header: Header,
    decoder: ChunkDecoder,
    /// Index (into `header.chunks()`) of the next chunk to read.
    next: usize,
    buf: Vec<u8>,
    buf_pos: usize,
    data_hash: Option<Hasher>,
    finished: bool,
}

impl<R: Read> Reader<R> {
    /// Reads and verifies the header and the dictionary from the start of `inner`.
    pub fn new(mut inner: R) -> Result<Reader<R>, Error> {
        let header = Header::read(&mut inner, DEFAULT_MAX_HEADER_LEN)?;
        Reader::with_header(header, inner)
    }

    /// Continues from an already read `header`; `inner` is at the first data byte.
    pub fn with_header(header: Header, mut inner: R) -> Result<Reader<R>, Error> {
        // A zero data checksum (zck -u writes one) is no checksum: every
        // chunk is still checked against the verified index.
        let mut data_hash = (!header.data_digest().is_zero()).then(|| header.hash_type().hasher());
        let dict = match header.chunks().first() {
            Some(d) if d.comp_len > 0 => {
                let stored = read_stored(&mut inner, d)?;
                if let Some(h) = &mut data_hash {
                    h.update(&stored);
                }
                Some(ChunkDecoder::expand_dict(&header, &stored)?)
            }
            _ => None,
        };
        let decoder = ChunkDecoder::new(&header, dict.as_deref())?;
        Ok(Reader {
            inner,
            header,
            decoder,
            next: 1,
            buf: Vec::new(),
            buf_pos: 0,
            data_hash,
            finished: false,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads, verifies and expands the next data chunk; `None` after the last
    /// one (once the data checksum has been verified).
    pub fn next_chunk(&mut self) -> Result<Option<(Chunk, Vec<u8>)>, Error> {
        let Some(chunk) = self.header.chunks().get(self.next).cloned() else {
            self.finish()?;
            return Ok(None);
        };
        let stored = read_stored(&mut self.inner, &chunk)?;
        if let Some(h) = &mut self.data_hash {
            h.update(&stored);
        }
        let data = self.decoder.expand(&chunk, &stored)?;
        self.next += 1;
        Ok(Some((chunk, data)))
    }

    fn finish(&mut self) -> Result<(), Error> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if let Some(h) = self.data_hash.take() {
            let actual = h.finish();
            let expected = self.header.data_digest();
            if actual != expected {
                return Err(Error::DataChecksum {
                    expected: Box::new(expected),
                    actual: Box::new(actual),
                });
            }
        }
        Ok(())
    }

    /// Returns the underlying reader (positioned after the chunks read so far).
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf_pos >= self.buf.len() {
            match self.next_chunk()? {
                Some((_, data)) => {
                    self.buf = data;
                    self.buf_pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.buf_pos);
        out[..n].copy_from_slice(&self.buf[self.buf_pos..self.buf_pos + n]);
        self.buf_pos += n;
        Ok(n)
    }
}

/// Reads one stored chunk, failing with the chunk and offset if the input ends first.
fn read_stored<R: Read>(r: &mut R, chunk: &Chunk) -> Result<Vec<u8>, Error> {
    // Stored chunks are never larger than their expansion by more than
    // zstd's frame overhead; the cap keeps a bad length from reading on.
    if chunk.comp_len > MAX_EXPANDED_CHUNK + (MAX_EXPANDED_CHUNK >> 7) + 1024 {
        return Err(Error::BadChunk {
            index: chunk.index,
            reason: format!("stored length {} is beyond any chunk size", chunk.comp_len),
        });
    }
    let mut buf = Vec::new();
    r.take(chunk.comp_len)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("reading chunk data", e))?;
    if (buf.len() as u64) < chunk.comp_len {
        return Err(Error::TruncatedChunk {
            index: chunk.index,
            offset: chunk.offset,
            needed: chunk.comp_len,
            got: buf.len() as u64,
        });
    }
    Ok(buf)
}

/// Expands the zchunk file in `r` into `w`, verifying everything; returns
/// the number of bytes written.
pub fn expand<R: Read, W: Write>(r: R, w: &mut W) -> Result<u64, Error> {
    let mut reader = Reader::new(r)?;
    let mut written = 0u64;
    while let Some((_, data)) = reader.next_chunk()? {
        w.write_all(&data)
            .map_err(|e| Error::io("writing expanded data", e))?;
        written += data.len() as u64;
    }
    Ok(written)
}

//! The content-defined chunker of zck: a buzhash rolling hash, byte-compatible
//! with Debian's zchunk 1.2.3 (`zck` without `-m`/`-s`), so that a seed chunked
//! here has the boundaries, and thus the expanded-chunk checksums, that zck
//! chose for the same bytes.
//!
//! Written from the format's facts (zck's `buzhash.c` table and rolling
//! update, `comp.c`'s write loop), which a byte-compatible chunker must copy
//! exactly:
//! - window 48 bytes, 15 match bits: a chunk may end where `hash & 0x7fff == 0`;
//!   while the window is filling the hash counts as 1 (never a match);
//! - rotations are by `n mod 32` (what zck's `rol32` does on its platforms for
//!   shift counts of 32 and more, e.g. the window length 48);
//! - the test runs for each byte *after* hashing it, and a boundary falls
//!   *before* that byte: the chunk ends, the hash is reset, and the same byte
//!   is hashed again as the first byte of the next chunk;
//! - a match (or the 128 KiB maximum) in a chunk shorter than 8 KiB is refused
//!   without a reset, and the same byte is hashed again into the running hash;
//! - the maximum applies when the chunk already holds 128 KiB: chunks are at
//!   most 128 KiB.

use std::io::{self, Read};

use crate::hash::{Digest, HashType, Hasher};

/// zck's window (`DEFAULT_BUZHASH_WIDTH`).
pub const WINDOW: usize = 48;
/// zck's match bits (`DEFAULT_BUZHASH_BITS`).
pub const BITS: u32 = 15;
/// zck's automatic minimum chunk length (32 KiB / 4).
pub const MIN_CHUNK: u64 = 8 << 10;
/// zck's automatic maximum chunk length (32 KiB * 4).
pub const MAX_CHUNK: u64 = 128 << 10;

/// Refused matches re-hash the same byte; zck would loop forever if that kept
/// matching (it cannot in practice). After this many we take the byte, so that
/// no input can hang the chunker.
const MAX_REHASH: u32 = 1 << 16;

#[rustfmt::skip]
const TABLE: [u32; 256] = [
    0x458be752, 0xc10748cc, 0xfbbcdbb8, 0x6ded5b68,
    0xb10a82b5, 0x20d75648, 0xdfc5665f, 0xa8428801,
    0x7ebf5191, 0x841135c7, 0x65cc53b3, 0x280a597c,
    0x16f60255, 0xc78cbc3e, 0x294415f5, 0xb938d494,
    0xec85c4e6, 0xb7d33edc, 0xe549b544, 0xfdeda5aa,
    0x882bf287, 0x3116737c, 0x05569956, 0xe8cc1f68,
    0x0806ac5e, 0x22a14443, 0x15297e10, 0x50d090e7,
    0x4ba60f6f, 0xefd9f1a7, 0x5c5c885c, 0x82482f93,
    0x9bfd7c64, 0x0b3e7276, 0xf2688e77, 0x8fad8abc,
    0xb0509568, 0xf1ada29f, 0xa53efdfe, 0xcb2b1d00,
    0xf2a9e986, 0x6463432b, 0x95094051, 0x5a223ad2,
    0x9be8401b, 0x61e579cb, 0x1a556a14, 0x5840fdc2,
    0x9261ddf6, 0xcde002bb, 0x52432bb0, 0xbf17373e,
    0x7b7c222f, 0x2955ed16, 0x9f10ca59, 0xe840c4c9,
    0xccabd806, 0x14543f34, 0x1462417a, 0x0d4a1f9c,
    0x087ed925, 0xd7f8f24c, 0x7338c425, 0xcf86c8f5,
    0xb19165cd, 0x9891c393, 0x325384ac, 0x0308459d,
    0x86141d7e, 0xc922116a, 0xe2ffa6b6, 0x53f52aed,
    0x2cd86197, 0xf5b9f498, 0xbf319c8f, 0xe0411fae,
    0x977eb18c, 0xd8770976, 0x9833466a, 0xc674df7f,
    0x8c297d45, 0x8ca48d26, 0xc49ed8e2, 0x7344f874,
    0x556f79c7, 0x6b25eaed, 0xa03e2b42, 0xf68f66a4,
    0x8e8b09a2, 0xf2e0e62a, 0x0d3a9806, 0x9729e493,
    0x8c72b0fc, 0x160b94f6, 0x450e4d3d, 0x7a320e85,
    0xbef8f0e1, 0x21d73653, 0x4e3d977a, 0x1e7b3929,
    0x1cc6c719, 0xbe478d53, 0x8d752809, 0xe6d8c2c6,
    0x275f0892, 0xc8acc273, 0x4cc21580, 0xecc4a617,
    0xf5f7be70, 0xe795248a, 0x375a2fe9, 0x425570b6,
    0x8898dcf8, 0xdc2d97c4, 0x0106114b, 0x364dc22f,
    0x1e0cad1f, 0xbe63803c, 0x5f69fac2, 0x4d5afa6f,
    0x1bc0dfb5, 0xfb273589, 0x0ea47f7b, 0x3c1c2b50,
    0x21b2a932, 0x6b1223fd, 0x2fe706a8, 0xf9bd6ce2,
    0xa268e64e, 0xe987f486, 0x3eacf563, 0x1ca2018c,
    0x65e18228, 0x2207360a, 0x57cf1715, 0x34c37d2b,
    0x1f8f3cde, 0x93b657cf, 0x31a019fd, 0xe69eb729,
    0x8bca7b9b, 0x4c9d5bed, 0x277ebeaf, 0xe0d8f8ae,
    0xd150821c, 0x31381871, 0xafc3f1b0, 0x927db328,
    0xe95effac, 0x305a47bd, 0x426ba35b, 0x1233af3f,
    0x686a5b83, 0x50e072e5, 0xd9d3bb2a, 0x8befc475,
    0x487f0de6, 0xc88dff89, 0xbd664d5e, 0x971b5d18,
    0x63b14847, 0xd7d3c1ce, 0x7f583cf3, 0x72cbcb09,
    0xc0d0a81c, 0x7fa3429b, 0xe9158a1b, 0x225ea19a,
    0xd8ca9ea3, 0xc763b282, 0xbb0c6341, 0x020b8293,
    0xd4cd299d, 0x58cfa7f8, 0x91b4ee53, 0x37e4d140,
    0x95ec764c, 0x30f76b06, 0x5ee68d24, 0x679c8661,
    0xa41979c2, 0xf2b61284, 0x4fac1475, 0x0adb49f9,
    0x19727a23, 0x15a7e374, 0xc43a18d5, 0x3fb1aa73,
    0x342fc615, 0x924c0793, 0xbee2d7f0, 0x8a279de9,
    0x4aa2d70c, 0xe24dd37f, 0xbe862c0b, 0x177c22c2,
    0x5388e5ee, 0xcd8a7510, 0xf901b4fd, 0xdbc13dbc,
    0x6c0bae5b, 0x64efe8c7, 0x48b02079, 0x80331a49,
    0xca3d8ae6, 0xf3546190, 0xfed7108b, 0xc49b941b,
    0x32baf4a9, 0xeb833a4a, 0x88a3f1a5, 0x3a91ce0a,
    0x3cc27da1, 0x7112e684, 0x4a3096b1, 0x3794574c,
    0xa3c8b6f3, 0x1d213941, 0x6e0a2e00, 0x233479f1,
    0x0f4cd82f, 0x6093edd2, 0x5d7d209e, 0x464fe319,
    0xd4dcac9e, 0x0db845cb, 0xfb5e4bc3, 0xe0256ce1,
    0x09fb4ed1, 0x0914be1e, 0xa5bdb2c3, 0xc6eb57bb,
    0x30320350, 0x3f397e91, 0xa67791bc, 0x86bc0e2c,
    0xefa0a7e2, 0xe9ff7543, 0xe733612c, 0xd185897b,
    0x329e5388, 0x91dd236b, 0x2ecb0d93, 0xf4d82a3d,
    0x35b5c03f, 0xe4e606f0, 0x05b21843, 0x37b45964,
    0x5eff22f4, 0x6027f4cc, 0x77178b3c, 0xae507131,
    0x7bf7cabc, 0xf9c18d66, 0x593ade65, 0xd95ddf11,
];

/// The chunker's state between calls: the rolling window and the length of
/// the chunk being built.
#[derive(Clone)]
pub struct Chunker {
    window: [u8; WINDOW],
    fill: usize,
    loc: usize,
    hash: u32,
    chunk_len: u64,
    mask: u32,
    min: u64,
    max: u64,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker::new()
    }
}

impl Chunker {
    /// A chunker with zck's automatic parameters.
    pub fn new() -> Chunker {
        Chunker {
            window: [0; WINDOW],
            fill: 0,
            loc: 0,
            hash: 0,
            chunk_len: 0,
            mask: (1 << BITS) - 1,
            min: MIN_CHUNK,
            max: MAX_CHUNK,
        }
    }

    /// Length of the chunk being built (bytes consumed since the last boundary).
    pub fn chunk_len(&self) -> u64 {
        self.chunk_len
    }

    /// Consumes bytes of `data` until a chunk ends: `Some(n)` means the
    /// current chunk ends after `data[..n]` (`n` may be 0: it ended with the
    /// previous call's data); call again with `data[n..]`. `None`: all of
    /// `data` went into the current chunk. At the end of the input, a
    /// non-empty current chunk is the last chunk.
    pub fn next_boundary(&mut self, data: &[u8]) -> Option<usize> {
        for (j, &b) in data.iter().enumerate() {
            let mut rehash = 0;
            loop {
                let h = self.roll(b);
                if (h & self.mask == 0 || self.chunk_len >= self.max) && rehash < MAX_REHASH {
                    if self.chunk_len >= self.min {
                        self.reset();
                        return Some(j);
                    }
                    rehash += 1;
                    continue;
                }
                break;
            }
            self.chunk_len += 1;
        }
        None
    }

    fn reset(&mut self) {
        self.window = [0; WINDOW];
        self.fill = 0;
        self.loc = 0;
        self.hash = 0;
        self.chunk_len = 0;
    }

    /// zck's buzhash update: the hash after `b`, or 1 while the window fills.
    #[inline]
    fn roll(&mut self, b: u8) -> u32 {
        let t = TABLE[usize::from(b)];
        if self.fill < WINDOW {
            self.window[self.fill] = b;
            self.fill += 1;
            if self.fill < WINDOW {
                self.hash ^= t.rotate_left(((WINDOW - self.fill) % 32) as u32);
                return 1;
            }
            self.hash ^= t;
            return self.hash;
        }
        let out = TABLE[usize::from(self.window[self.loc])];
        self.hash = self.hash.rotate_left(1) ^ out.rotate_left((WINDOW % 32) as u32) ^ t;
        self.window[self.loc] = b;
        self.loc += 1;
        if self.loc == WINDOW {
            self.loc = 0;
        }
        self.hash
    }
}

/// A chunk found in a seed: where it is and the checksum of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedChunk {
    /// Where the chunk starts in the seed.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// The checksum of its bytes.
    pub digest: Digest,
}

/// The chunks of a byte stream, as zck would cut them, each with its checksum
/// (compare with the index's uncompressed checksums of a `zck -u` file).
pub struct Chunks<R> {
    inner: R,
    hash_type: HashType,
    chunker: Chunker,
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
    offset: u64,
    start: u64,
    hasher: Hasher,
    eof: bool,
}

/// Chunks `r` with zck's parameters, hashing each chunk with `hash_type`.
pub fn chunks<R: Read>(r: R, hash_type: HashType) -> Chunks<R> {
    Chunks {
        inner: r,
        hash_type,
        chunker: Chunker::new(),
        buf: vec![0; 256 << 10],
        pos: 0,
        filled: 0,
        offset: 0,
        start: 0,
        hasher: hash_type.hasher(),
        eof: false,
    }
}

impl<R: Read> Chunks<R> {
    fn emit(&mut self) -> SeedChunk {
        let hasher = std::mem::replace(&mut self.hasher, self.hash_type.hasher());
        let c = SeedChunk {
            offset: self.start,
            len: self.offset - self.start,
            digest: hasher.finish(),
        };
        self.start = self.offset;
        c
    }
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = io::Result<SeedChunk>;

    fn next(&mut self) -> Option<io::Result<SeedChunk>> {
        loop {
            if self.pos == self.filled {
                if self.eof {
                    return None;
                }
                match self.inner.read(&mut self.buf) {
                    Ok(0) => {
                        self.eof = true;
                        if self.offset > self.start {
                            return Some(Ok(self.emit()));
                        }
                        return None;
                    }
                    Ok(n) => {
                        self.pos = 0;
                        self.filled = n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.eof = true;
                        return Some(Err(e));
                    }
                }
            }
            let data = &self.buf[self.pos..self.filled];
            match self.chunker.next_boundary(data) {
                Some(n) => {
                    self.hasher.update(&data[..n]);
                    self.pos += n;
                    self.offset += n as u64;
                    return Some(Ok(self.emit()));
                }
                None => {
                    self.hasher.update(data);
                    self.offset += data.len() as u64;
                    self.pos = self.filled;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(data: &[u8]) -> Vec<u64> {
        chunks(data, HashType::Sha256)
            .map(|c| c.unwrap().len)
            .collect()
    }

    fn pseudo_random(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_the_input_within_limits() {
        let data = pseudo_random(2_000_000, 7);
        let lens = lengths(&data);
        assert_eq!(lens.iter().sum::<u64>(), data.len() as u64);
        let (last, rest) = lens.split_last().unwrap();
        assert!(*last > 0);
        for l in rest {
            assert!((MIN_CHUNK..=MAX_CHUNK).contains(l), "chunk of {l} bytes");
        }
        // Content-defined: about 32 KiB on average for random data.
        assert!(lens.len() > 20 && lens.len() < 200, "{} chunks", lens.len());
    }

    #[test]
    fn constant_input_is_cut_at_the_maximum() {
        let data = vec![0u8; 1_000_000];
        let lens = lengths(&data);
        assert!(
            lens[..lens.len() - 1]
                .iter()
                .all(|&l| l == MAX_CHUNK || l >= MIN_CHUNK)
        );
        assert_eq!(lens.iter().sum::<u64>(), 1_000_000);
    }

    #[test]
    fn boundaries_do_not_depend_on_read_sizes() {
        let data = pseudo_random(600_000, 3);
        let whole = lengths(&data);
        let mut c = Chunker::new();
        let mut lens = Vec::new();
        let mut cur = 0u64;
        for piece in data.chunks(777) {
            let mut rest = piece;
            while let Some(n) = c.next_boundary(rest) {
                lens.push(cur + n as u64);
                cur = 0;
                rest = &rest[n..];
            }
            cur += rest.len() as u64;
        }
        lens.push(cur);
        assert_eq!(lens, whole);
    }

    #[test]
    fn same_content_same_chunks_after_a_shift() {
        // Insert bytes at the front: the chunks after the first boundary
        // past the insertion are found again (that is what makes deltas work).
        let data = pseudo_random(1_000_000, 11);
        let mut shifted = pseudo_random(1000, 5);
        shifted.extend_from_slice(&data);
        let a: Vec<Digest> = chunks(&data[..], HashType::Sha256)
            .map(|c| c.unwrap().digest)
            .collect();
        let b: Vec<Digest> = chunks(&shifted[..], HashType::Sha256)
            .map(|c| c.unwrap().digest)
            .collect();
        let common = a.iter().filter(|d| b.contains(d)).count();
        assert!(
            common + 3 >= a.len(),
            "{common} of {} chunks found again",
            a.len()
        );
    }
}

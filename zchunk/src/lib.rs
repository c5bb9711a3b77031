//! zchunk for cip-update-agent: read and verify zchunk files (lead, preface,
//! index, signatures; header, chunk and data checksums), expand them as a
//! stream, cut seeds into chunks exactly as Debian's `zck` 1.2.3 does, plan the
//! HTTP range requests that fetch missing chunks and parse the
//! `multipart/byteranges` answers.
//!
//! Malformed input of any kind is an [`Error`], never a panic, and no length
//! field alone makes it allocate: every length is checked against the bytes
//! actually there (or against [`decode::MAX_EXPANDED_CHUNK`] for expansion).

pub mod chunker;
pub mod compint;
pub mod decode;
pub mod error;
pub mod hash;
pub mod header;
pub mod multipart;
pub mod plan;
pub mod reader;
pub mod seed;

pub use chunker::{Chunker, SeedChunk, chunks};
pub use decode::ChunkDecoder;
pub use error::{ChecksumKind, Error};
pub use hash::{Digest, HashType};
pub use header::{Chunk, Compression, Header, Lead};
pub use multipart::{ContentRange, Event, Multipart, MultipartError};
pub use plan::{ByteRange, Collector, PlanOptions, Request, Want, plan};
pub use reader::{Reader, expand};
pub use seed::{SeedMatches, match_more, match_seed, missing};

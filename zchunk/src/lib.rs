//! zchunk for cip-update-agent: read and verify zchunk files (lead, preface,
//! index, signatures; header, chunk and data checksums), expand them as a
//! stream, cut seeds into chunks exactly as Debian's `zck` 1.2.3 does, plan the
//! HTTP range requests that fetch missing chunks and parse the
//! `multipart/byteranges` answers.
//!
//! Malformed input of any kind is an [`Error`], never a panic, and no length
//! field alone makes it allocate: every length is checked against the bytes
//! actually there (or against [`decode::MAX_EXPANDED_CHUNK`] for expansion).
//!
//! A delta update with this crate (the HTTP and the files are the caller's):
//!
//! ```no_run
//! # fn get(_range: &str) -> (Option<String>, Vec<u8>) { unimplemented!() }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use zchunk::{ChunkDecoder, Collector, Event, Header, Multipart, PlanOptions};
//! // 1. The header: the lead says how long it is.
//! let (_, lead) = get("bytes=0-88");
//! let len = zchunk::Lead::parse(&lead)?.total_len();
//! let (_, bytes) = get(&format!("bytes=0-{}", len - 1));
//! let header = Header::parse(&bytes)?; // verified against its checksum
//! // 2. Which chunks the seed (e.g. the running rootfs) already has.
//! let seed = std::fs::File::open("/dev/root")?;
//! let found = zchunk::match_seed(&header, zchunk::chunks(seed, header.chunk_hash_type())
//!     .filter_map(Result::ok))?;
//! // 3. Fetch the rest with multi-range requests.
//! // The dictionary, if any, has the lowest offset: it arrives first.
//! let mut decoder = match header.dict() {
//!     None => Some(ChunkDecoder::new(&header, None)?),
//!     Some(_) => None,
//! };
//! for req in zchunk::plan(&zchunk::missing(&header, &found), &PlanOptions::default()) {
//!     let (content_type, body) = get(&req.range_header());
//!     let mut parser = Multipart::new(&zchunk::multipart::boundary(&content_type.unwrap())?);
//!     let mut collector = Collector::new(req.wants());
//!     for ev in parser.push(&body)? {
//!         if let Event::Data { offset, data } = ev {
//!             for (want, stored) in collector.push(offset, &data) {
//!                 let chunk = &header.chunks()[want.id];
//!                 if chunk.index == 0 {
//!                     let dict = ChunkDecoder::expand_dict(&header, &stored)?;
//!                     decoder = Some(ChunkDecoder::new(&header, Some(&dict))?);
//!                 } else if let Some(d) = decoder.as_mut() {
//!                     let _expanded = d.expand(chunk, &stored)?; // verified
//!                 }
//!             }
//!         }
//!     }
//!     parser.finish()?;
//! }
//! // 4. Write the chunks in order: seed bytes for found chunks
//! //    (found.found[&index] gives offset and length in the seed), fetched ones otherwise.
//! # Ok(()) }
//! ```

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

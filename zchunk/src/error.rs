//! The errors of this crate: each names what was wrong and where, so that a
//! rejected file or answer can be reported as is.

use crate::hash::Digest;

/// (Digests are boxed to keep the `Result`s of every parse step small.)
///
/// Why a zchunk file, a part of it, or an HTTP answer was rejected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lead is not a zchunk file's or a zchunk header's.
    #[error("not a zchunk file: the lead does not start with \\0ZCK1 or \\0ZHR1")]
    BadMagic,
    /// The bytes end before a part of the file does.
    #[error("truncated {what}: needs {needed} bytes, only {available} there")]
    Truncated {
        /// The part.
        what: &'static str,
        /// Bytes it needs.
        needed: u64,
        /// Bytes there are.
        available: u64,
    },
    /// A compact integer that does not end or does not fit 64 bits.
    #[error("malformed {what}: compact integer is unterminated or exceeds 64 bits")]
    BadInteger {
        /// Where it was read.
        what: &'static str,
    },
    /// A checksum type this crate does not know.
    #[error("unknown checksum type {0}")]
    UnknownHashType(u64),
    /// A compression type this crate does not know.
    #[error("unknown compression type {0}")]
    UnknownCompression(u64),
    /// Header flags this crate does not know (they may change the format).
    #[error("unknown header flags set: {0:#x}")]
    UnknownFlags(u64),
    /// A file with data streams (not made by the agent's tools).
    #[error("zchunk files with data streams are not supported")]
    StreamsUnsupported,
    /// A header larger than the caller's limit.
    #[error("header too large: {len} bytes (limit {limit})")]
    HeaderTooLarge {
        /// Its size.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The header's bytes do not hash to its checksum.
    #[error("header checksum mismatch: the header says {expected}, its bytes hash to {actual}")]
    HeaderChecksum {
        /// The lead's checksum.
        expected: Box<Digest>,
        /// The checksum of the bytes.
        actual: Box<Digest>,
    },
    /// The chunk index is inconsistent.
    #[error("malformed index: {0}")]
    BadIndex(String),
    /// The header is inconsistent.
    #[error("malformed header: {0}")]
    BadHeader(String),
    /// A chunk's bytes do not hash to its index entry.
    #[error(
        "chunk {index}: {kind} checksum mismatch: index says {expected}, data hashes to {actual}"
    )]
    ChunkChecksum {
        /// The chunk's position in the index.
        index: usize,
        /// Which checksum.
        kind: ChecksumKind,
        /// The index's checksum.
        expected: Box<Digest>,
        /// The checksum of the bytes.
        actual: Box<Digest>,
    },
    /// A chunk that cannot be expanded or used.
    #[error("chunk {index}: {reason}")]
    BadChunk {
        /// The chunk's position in the index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The whole data does not hash to the header's data checksum.
    #[error("data checksum mismatch: header says {expected}, data hashes to {actual}")]
    DataChecksum {
        /// The header's checksum.
        expected: Box<Digest>,
        /// The checksum of the data.
        actual: Box<Digest>,
    },
    /// The file ends inside a chunk.
    #[error("truncated file: chunk {index} needs {needed} bytes at offset {offset}, got {got}")]
    TruncatedChunk {
        /// The chunk's position in the index.
        index: usize,
        /// Where it starts.
        offset: u64,
        /// Its length.
        needed: u64,
        /// Bytes there were.
        got: u64,
    },
    /// Reading or writing failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Which of a chunk's two checksums failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumKind {
    /// Over the chunk as stored in the file (compressed).
    Compressed,
    /// Over the expanded chunk (`zck -u` files only).
    Uncompressed,
}

impl std::fmt::Display for ChecksumKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChecksumKind::Compressed => "compressed",
            ChecksumKind::Uncompressed => "uncompressed",
        })
    }
}

impl Error {
    pub(crate) fn io(context: &'static str, source: std::io::Error) -> Error {
        Error::Io { context, source }
    }
}

/// Converts to an `io::Error` for `Read` implementations; the original error
/// stays reachable through `get_ref()`/`into_inner()` and `Display`.
impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        match e {
            Error::Io { source, .. } => source,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

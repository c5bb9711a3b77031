//! The errors of this crate: each names what was wrong and where, so that a
//! rejected file or answer can be reported as is.

use crate::hash::Digest;

/// (Digests are boxed to keep the `Result`s of every parse step small.)
///
/// Why a zchunk file, a part of it, or an HTTP answer was rejected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a zchunk file: the lead does not start with \\0ZCK1 or \\0ZHR1")]
    BadMagic,
    #[error("truncated {what}: needs {needed} bytes, only {available} there")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("malformed {what}: compact integer is unterminated or exceeds 64 bits")]
    BadInteger { what: &'static str },
    #[error("unknown checksum type {0}")]
    UnknownHashType(u64),
    #[error("unknown compression type {0}")]
    UnknownCompression(u64),
    #[error("unknown header flags set: {0:#x}")]
    UnknownFlags(u64),
    #[error("zchunk files with data streams are not supported")]
    StreamsUnsupported,
    #[error("header too large: {len} bytes (limit {limit})")]
    HeaderTooLarge { len: u64, limit: u64 },
    #[error("header checksum mismatch: the header says {expected}, its bytes hash to {actual}")]
    HeaderChecksum {
        expected: Box<Digest>,
        actual: Box<Digest>,
    },
    #[error("malformed index: {0}")]
    BadIndex(String),
    #[error("malformed header: {0}")]
    BadHeader(String),
    #[error(
        "chunk {index}: {kind} checksum mismatch: index says {expected}, data hashes to {actual}"
    )]
    ChunkChecksum {
        index: usize,
        kind: ChecksumKind,
        expected: Box<Digest>,
        actual: Box<Digest>,
    },
    #[error("chunk {index}: {reason}")]
    BadChunk { index: usize, reason: String },
    #[error("data checksum mismatch: header says {expected}, data hashes to {actual}")]
    DataChecksum {
        expected: Box<Digest>,
        actual: Box<Digest>,
    },
    #[error("truncated file: chunk {index} needs {needed} bytes at offset {offset}, got {got}")]
    TruncatedChunk {
        index: usize,
        offset: u64,
        needed: u64,
        got: u64,
    },
    #[error("I/O error while {context}: {source}")]
    Io {
        context: &'static str,
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

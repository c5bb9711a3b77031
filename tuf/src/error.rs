//! What can go wrong, each error naming the role (or target) and what failed.

use std::path::PathBuf;

/// A fetch that did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: more than {max} bytes (endless data?)")]
    TooLong { url: String, max: u64 },
    #[error("{url}: no data for {secs}s (slow retrieval)")]
    Stalled { url: String, secs: u64 },
    #[error("{url}: not complete within {secs}s (slow retrieval)")]
    TooSlow { url: String, secs: u64 },
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    #[error("{url}: {message}")]
    Sink { url: String, message: String },
}

impl FetchError {
    /// The server says the file does not exist (the end of the root chain).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            FetchError::Status {
                status: 403 | 404,
                ..
            }
        )
    }
}

/// Why metadata or a target is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum TufError {
    #[error("{role}: {source}")]
    Fetch {
        role: String,
        #[source]
        source: FetchError,
    },
    /// Malformed, wrong type, unsupported spec version.
    #[error("{role}: {message}")]
    Invalid { role: String, message: String },
    #[error("{role}: signed by {valid} of its keys, {threshold} needed")]
    Threshold {
        role: String,
        valid: usize,
        threshold: u64,
    },
    #[error("{role}: version {got} is below the trusted {trusted} (rollback)")]
    Rollback {
        role: String,
        got: u64,
        trusted: u64,
    },
    #[error("{role}: version {got}, expected {expected}")]
    Version {
        role: String,
        got: u64,
        expected: u64,
    },
    /// Retryable: the repository may publish fresh metadata, or the clock may be wrong.
    #[error("{role}: expired at {expires} (the time now is {now})")]
    Expired {
        role: String,
        expires: String,
        now: String,
    },
    /// Length or hash of metadata does not match what timestamp or snapshot lists.
    #[error("{role}: {message}")]
    Mismatch { role: String, message: String },
    #[error("no trusted root in {0}: initialise it first")]
    NoRoot(PathBuf),
    #[error("{path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes of a target do not match its metadata.
    #[error("target {path}: {message}")]
    Target { path: String, message: String },
    #[error("target {path}: {source}")]
    TargetFetch {
        path: String,
        #[source]
        source: FetchError,
    },
}

impl TufError {
    pub(crate) fn invalid(role: &str, message: impl Into<String>) -> TufError {
        TufError::Invalid {
            role: role.to_owned(),
            message: message.into(),
        }
    }

    /// Worth retrying later: expired metadata (fresh metadata or a synced clock may come) and
    /// network trouble; not a signature, rollback or hash failure.
    pub fn is_retryable(&self) -> bool {
        match self {
            TufError::Expired { .. } => true,
            TufError::Fetch { source, .. } | TufError::TargetFetch { source, .. } => {
                !matches!(source, FetchError::TooLong { .. })
            }
            _ => false,
        }
    }

    pub fn is_expired(&self) -> bool {
        matches!(self, TufError::Expired { .. })
    }
}

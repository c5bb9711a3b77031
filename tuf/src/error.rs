//! What can go wrong, each error naming the role (or target) and what failed.

use std::path::PathBuf;

/// A fetch that did not deliver. Each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered with a status other than success.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// What was fetched.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The body (or its announced length) went past the limit.
    #[error("{url}: more than {max} bytes (endless data?)")]
    TooLong {
        /// What was fetched.
        url: String,
        /// The limit in bytes.
        max: u64,
    },
    /// Nothing came for the idle limit.
    #[error("{url}: no data for {secs}s (slow retrieval)")]
    Stalled {
        /// What was fetched.
        url: String,
        /// The idle limit.
        secs: u64,
    },
    /// The whole transfer took longer than its limit.
    #[error("{url}: not complete within {secs}s (slow retrieval)")]
    TooSlow {
        /// What was fetched.
        url: String,
        /// The whole-transfer limit.
        secs: u64,
    },
    /// The transport failed (connection, TLS, a cut body).
    #[error("{url}: {message}")]
    Network {
        /// What was fetched.
        url: String,
        /// The transport's error.
        message: String,
    },
    /// The receiver of the body refused it (a hash check, a full disk).
    #[error("{url}: {message}")]
    Sink {
        /// What was fetched.
        url: String,
        /// The receiver's error.
        message: String,
    },
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
    /// A role's metadata could not be fetched.
    #[error("{role}: {source}")]
    Fetch {
        /// The role.
        role: String,
        /// Why.
        #[source]
        source: FetchError,
    },
    /// Malformed, wrong type, unsupported spec version.
    #[error("{role}: {message}")]
    Invalid {
        /// The role.
        role: String,
        /// What is wrong.
        message: String,
    },
    /// Too few valid signatures.
    #[error("{role}: signed by {valid} of its keys, {threshold} needed")]
    Threshold {
        /// The role.
        role: String,
        /// Valid signatures by distinct keys of the role.
        valid: usize,
        /// The role's threshold.
        threshold: u64,
    },
    /// An older version than the trusted one: a rollback attack, or a repository gone back.
    #[error("{role}: version {got} is below the trusted {trusted} (rollback)")]
    Rollback {
        /// The role.
        role: String,
        /// The version received.
        got: u64,
        /// The version trusted.
        trusted: u64,
    },
    /// Not the version asked for (the next root) or listed (by timestamp or snapshot).
    #[error("{role}: version {got}, expected {expected}")]
    Version {
        /// The role.
        role: String,
        /// The version received.
        got: u64,
        /// The version expected.
        expected: u64,
    },
    /// Retryable: the repository may publish fresh metadata, or the clock may be wrong.
    #[error("{role}: expired at {expires} (the time now is {now})")]
    Expired {
        /// The role.
        role: String,
        /// Its expiry (RFC 3339).
        expires: String,
        /// The clock's time (RFC 3339).
        now: String,
    },
    /// Length or hash of metadata does not match what timestamp or snapshot lists.
    #[error("{role}: {message}")]
    Mismatch {
        /// The role.
        role: String,
        /// What differs.
        message: String,
    },
    /// The store has no root: [`crate::Updater::init`] first.
    #[error("no trusted root in {0}: initialise it first")]
    NoRoot(PathBuf),
    /// The trusted store could not be written.
    #[error("{path}: {source}")]
    Store {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bytes of a target do not match its metadata.
    #[error("target {path}: {message}")]
    Target {
        /// The target path.
        path: String,
        /// What differs.
        message: String,
    },
    /// A target's bytes could not be fetched.
    #[error("target {path}: {source}")]
    TargetFetch {
        /// The target path.
        path: String,
        /// Why.
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

    /// Expired metadata (the device's clock or the repository's publishing is behind).
    pub fn is_expired(&self) -> bool {
        matches!(self, TufError::Expired { .. })
    }
}

//! A wfx job id: an opaque token from an unauthenticated server. It is checked once, where it
//! enters (the wfx model, the journal), and is never a file name: staging files are named by
//! [`JobId::digest`], and request paths percent-encode it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest job id accepted (wfx makes UUIDs: 36 bytes).
pub const JOB_ID_MAX: usize = 256;

/// A job id that is not empty, at most [`JOB_ID_MAX`] bytes of printable ASCII (no space, no
/// control character, nothing that looks like something else in a log line), and is
/// not `.` or `..` (URL path rules resolve those even percent-encoded, so wfx cannot be asked
/// about such a job without the request meaning another resource).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

/// Why a job id was refused. The id is shown escaped and cut short.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadJobId {
    #[error("empty job id")]
    Empty,
    #[error("job id of {0} bytes (at most {JOB_ID_MAX})")]
    TooLong(usize),
    #[error("job id \"{0}\" holds a character other than printable ASCII")]
    NotPrintable(String),
    #[error("job id \"{0}\" is a dot segment")]
    DotSegment(String),
}

impl JobId {
    pub fn parse(s: &str) -> Result<JobId, BadJobId> {
        if s.is_empty() {
            return Err(BadJobId::Empty);
        }
        if s.len() > JOB_ID_MAX {
            return Err(BadJobId::TooLong(s.len()));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BadJobId::NotPrintable(crate::text::shown(s)));
        }
        if s == "." || s == ".." {
            return Err(BadJobId::DotSegment(s.to_owned()));
        }
        Ok(JobId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of this job's staging directory: SHA-256 of the id, lowercase hex (64 bytes,
    /// `[0-9a-f]`, so always one plain path component whatever the id holds).
    pub fn digest(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

impl TryFrom<String> for JobId {
    type Error = BadJobId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        JobId::parse(&s)
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl std::ops::Deref for JobId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for JobId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for JobId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for JobId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_tokens_are_accepted() {
        for ok in [
            "0a1b2c3d-0000-4000-8000-000000000001",
            "/abs/dir",
            "../../..",
            "a/b",
            "x?y=1",
            "50%2F",
            "...",
            "~!\"$&'()*+,;=:@[]{}|\\^`<>",
        ] {
            let id = JobId::parse(ok).unwrap();
            assert_eq!(id.as_str(), ok);
        }
    }

    #[test]
    fn refused_ids_say_why_without_raw_control_characters() {
        assert_eq!(JobId::parse(""), Err(BadJobId::Empty));
        assert_eq!(
            JobId::parse(&"x".repeat(JOB_ID_MAX + 1)),
            Err(BadJobId::TooLong(JOB_ID_MAX + 1))
        );
        assert!(JobId::parse(&"x".repeat(JOB_ID_MAX)).is_ok());
        for bad in [".", ".."] {
            assert!(matches!(JobId::parse(bad), Err(BadJobId::DotSegment(_))));
        }
        for bad in [
            "a\nb",
            "a\rb",
            "\u{7f}",
            "\u{85}",
            "a\0",
            "a b",
            "ünïcode",
            "\u{202e}gnp.exe",
        ] {
            let e = JobId::parse(bad).unwrap_err();
            assert!(matches!(e, BadJobId::NotPrintable(_)), "{bad:?}");
            assert!(!e.to_string().chars().any(char::is_control), "{e}");
        }
        let e = JobId::parse("forged\nINFO line").unwrap_err().to_string();
        assert_eq!(
            e,
            r#"job id "forged\nINFO line" holds a character other than printable ASCII"#
        );
    }

    #[test]
    fn digest_names_are_one_plain_component() {
        for id in ["..x", "/abs/dir", "../../..", "a/b", "j1"] {
            let d = JobId::parse(id).unwrap().digest();
            assert!(
                d.len() == 64 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{d}"
            );
            let p = std::path::Path::new("/s/staging").join(&d);
            assert_eq!(p.parent(), Some(std::path::Path::new("/s/staging")));
        }
        // SHA-256("j1"): a fixed name across versions (staged files survive an upgrade).
        assert_eq!(
            JobId::parse("j1").unwrap().digest(),
            "08243666f926aa4e5b884b8ef1fc3b93d19e191a793581530616bd2e032c4761"
        );
    }

    #[test]
    fn serde_checks_on_the_way_in() {
        let id: JobId = serde_json::from_str(r#""job-1""#).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""job-1""#);
        let e = serde_json::from_str::<JobId>(r#"".."" "#).unwrap_err();
        assert!(e.to_string().contains("dot segment"), "{e}");
    }
}

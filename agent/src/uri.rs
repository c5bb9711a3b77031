//! An artifact URI from a wfx job definition: only ever an `http` or `https` URL. wfx is not
//! authenticated, so a URI it sends must not name a local file (the agent runs as root, and the
//! first bytes of a refused file would travel back in the TERMINATED message). Local files
//! come only from the command line's `install` ([`crate::source::Source::parse`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest artifact URI accepted.
pub const URI_MAX: usize = 4096;

/// An absolute `http://` or `https://` URL with a host, at most [`URI_MAX`] bytes, without
/// whitespace or control characters. Kept as written (the TUF target path is read from it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArtifactUri(String);

/// Why a URI was refused; the URI is shown redacted, escaped and cut short.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadUri {
    #[error("empty uri")]
    Empty,
    #[error("uri of {0} bytes (at most {URI_MAX})")]
    TooLong(usize),
    #[error("uri \"{0}\" holds whitespace, a control character or a backslash")]
    Control(String),
    #[error(
        "uri \"{0}\" is not an http:// or https:// URL: refused (a job may not name a local file)"
    )]
    NotHttp(String),
}

impl ArtifactUri {
    pub fn parse(s: &str) -> Result<ArtifactUri, BadUri> {
        let show = || crate::text::shown(&crate::redact::url(s));
        if s.is_empty() {
            return Err(BadUri::Empty);
        }
        if s.len() > URI_MAX {
            return Err(BadUri::TooLong(s.len()));
        }
        // (The URL parser drops tabs and newlines silently: refuse them before it sees them.)
        // (Nor backslashes: the parser reads them as `/` in http URLs.)
        if s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return Err(BadUri::Control(show()));
        }
        // Spelled out as `scheme://`: the URL parser would read `http:/etc/passwd` as a host
        // `etc`, which is not what the text says.
        let spelled = s.split_once("://").is_some_and(|(scheme, _)| {
            (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
                && !s[scheme.len() + 3..].starts_with('/')
        });
        match reqwest::Url::parse(s) {
            Ok(u) if spelled && u.host_str().is_some_and(|h| !h.is_empty()) => {
                Ok(ArtifactUri(s.to_owned()))
            }
            _ => Err(BadUri::NotHttp(show())),
        }
    }

    /// A URL of the configuration (checked at load to be http or https).
    pub fn from_config(u: &crate::config::HttpUrl) -> ArtifactUri {
        ArtifactUri(u.0.clone())
    }

    /// The URL to request (with its credentials: never show it, use [`fmt::Display`]).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ArtifactUri {
    type Error = BadUri;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ArtifactUri::parse(&s)
    }
}

impl From<ArtifactUri> for String {
    fn from(u: ArtifactUri) -> String {
        u.0
    }
}

/// Redacted ([`crate::redact::url`]).
impl fmt::Display for ArtifactUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::redact::url(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_only() {
        for ok in [
            "http://h/a.swu",
            "HTTPS://h:8443/x/a.swu?sig=1",
            "http://127.0.0.1:1/%2E%2E/x",
        ] {
            assert_eq!(ArtifactUri::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "/etc/passwd",
            "file:///etc/passwd",
            "../x",
            "os.swu",
            "ftp://h/x",
            "http:/etc/passwd",
            "http:///etc/passwd",
            "data:text/plain,x",
            "unix:/run/x",
        ] {
            let e = ArtifactUri::parse(bad).unwrap_err();
            assert!(matches!(e, BadUri::NotHttp(_)), "{bad}: {e}");
            assert!(e.to_string().contains("local file"), "{e}");
        }
    }

    #[test]
    fn bounds_and_control_characters() {
        assert_eq!(ArtifactUri::parse(""), Err(BadUri::Empty));
        let long = format!("http://h/{}", "a".repeat(URI_MAX));
        assert!(matches!(ArtifactUri::parse(&long), Err(BadUri::TooLong(_))));
        for bad in [
            "http://h/a\n.swu",
            "http://h/a\t.swu",
            "http://h/a b",
            " http://h/a",
            "http://\\etc/passwd",
        ] {
            let e = ArtifactUri::parse(bad).unwrap_err();
            assert!(matches!(e, BadUri::Control(_)), "{bad:?}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn shown_redacted() {
        let u = ArtifactUri::parse("http://u:pw-1@h/a.swu?sig=tok-2").unwrap();
        assert_eq!(u.to_string(), "http://u:***@h/a.swu?sig=***");
        let e = ArtifactUri::parse("ftp://u:pw-1@h/a")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw-1"), "{e}");
        let u: ArtifactUri = serde_json::from_str(r#""http://h/a""#).unwrap();
        assert_eq!(u.as_str(), "http://h/a");
        assert!(serde_json::from_str::<ArtifactUri>(r#""/etc/shadow""#).is_err());
    }
}

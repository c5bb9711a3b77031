//! Where an image comes from: a local file or an http(s) URL, opened as a stream (no temporary copy).

use std::io;
use std::path::PathBuf;
use std::pin::Pin;

use futures_util::TryStreamExt;
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

/// An image location as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Url(String),
}

impl Source {
    /// `http://` and `https://` are URLs, other schemes are refused; anything else is a path.
    pub fn parse(s: &str) -> Result<Source, String> {
        match s.split_once("://") {
            Some((scheme, _))
                if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
            {
                Ok(Source::Url(s.to_owned()))
            }
            Some((scheme, _)) if !scheme.is_empty() && !scheme.contains('/') => Err(format!(
                "{s}: unsupported URL scheme `{scheme}` (use http, https or a file path)"
            )),
            _ => Ok(Source::File(PathBuf::from(s))),
        }
    }

    pub fn is_url(&self) -> bool {
        matches!(self, Source::Url(_))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Url(u) => f.write_str(&crate::redact::url(u)),
        }
    }
}

/// Why an image cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}: no such file")]
    NotFound(PathBuf),
    #[error("{0} is a directory, not a .swu")]
    IsDir(PathBuf),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{url}: {message}")]
    Network {
        url: String,
        message: String,
        /// The server was not reached (see [`crate::http::TransferError::is_transient`]).
        unreachable: bool,
    },
}

impl SourceError {
    /// Whether the artifact server may give it later without anyone acting (not reached, 5xx,
    /// 429, 408); files and other answers are final.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::HttpStatus { status, .. } => crate::http::status_is_transient(*status),
            SourceError::Network { unreachable, .. } => *unreachable,
            _ => false,
        }
    }
}

/// An opened image.
pub struct Opened {
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// Length when the file or the server tells it.
    pub len: Option<u64>,
}

/// What SWUpdate's install streams: the same reader and length.
impl From<Opened> for cip_swupdate::install::Image {
    fn from(o: Opened) -> Self {
        cip_swupdate::install::Image {
            reader: o.reader,
            len: o.len,
        }
    }
}

/// A reqwest error for showing: its chain of causes, with the URL it repeats redacted
/// ([`crate::redact::url`]).
pub fn http_error(e: &reqwest::Error) -> String {
    let s = crate::text::error_chain(e);
    let s = match e.url() {
        Some(u) => s.replace(u.as_str(), &crate::redact::url(u.as_str())),
        None => s,
    };
    // Any other URL the chain quotes (a redirect's, a proxy's) too.
    crate::redact::urls_in(&s)
}

async fn open_file(path: &std::path::Path) -> Result<Opened, SourceError> {
    let err = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => SourceError::NotFound(path.to_owned()),
        _ => SourceError::File {
            path: path.to_owned(),
            source,
        },
    };
    let file = tokio::fs::File::open(path).await.map_err(err)?;
    let meta = file.metadata().await.map_err(err)?;
    if meta.is_dir() {
        return Err(SourceError::IsDir(path.to_owned()));
    }
    Ok(Opened {
        len: meta.is_file().then_some(meta.len()),
        reader: Box::pin(file),
    })
}

/// Opens a source for streaming; a URL with a default HTTP client and the default time bounds.
pub async fn open(source: &Source) -> Result<Opened, SourceError> {
    match source {
        Source::File(path) => open_file(path).await,
        Source::Url(url) => {
            crate::http::use_ring();
            let client = reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| SourceError::Network {
                    url: crate::redact::url(url),
                    message: crate::text::error_chain(&e.without_url()),
                    unreachable: false,
                })?;
            open_with(source, &client, &crate::http::Limits::default()).await
        }
    }
}

/// Opens a source for streaming; URLs go through `client` (TLS and proxy of the configuration)
/// within the time bounds of `limits` (headers, then a minimum throughput of the body).
pub async fn open_with(
    source: &Source,
    client: &reqwest::Client,
    limits: &crate::http::Limits,
) -> Result<Opened, SourceError> {
    match source {
        Source::File(path) => open_file(path).await,
        Source::Url(url) => {
            // reqwest's messages name the URL: ours is redacted, theirs dropped.
            let net = |e: crate::http::TransferError| SourceError::Network {
                url: crate::redact::url(url),
                message: e.to_string(),
                unreachable: e.is_transient(),
            };
            let resp = crate::http::send(client.get(url), limits)
                .await
                .map_err(net)?;
            let status = resp.status();
            if !status.is_success() {
                return Err(SourceError::HttpStatus {
                    url: crate::redact::url(url),
                    status: status.as_u16(),
                });
            }
            let len = resp.content_length();
            let stream =
                crate::http::body(resp, limits).map_err(|e| io::Error::other(e.to_string()));
            Ok(Opened {
                reader: Box::pin(StreamReader::new(stream)),
                len,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        let p = |s| Source::parse(s);
        assert_eq!(
            p("http://h/x.swu"),
            Ok(Source::Url("http://h/x.swu".into()))
        );
        assert_eq!(
            p("HTTPS://h/x.swu"),
            Ok(Source::Url("HTTPS://h/x.swu".into()))
        );
        assert_eq!(p("/tmp/x.swu"), Ok(Source::File("/tmp/x.swu".into())));
        assert_eq!(p("http"), Ok(Source::File("http".into())));
        assert_eq!(p("./a://b"), Ok(Source::File("./a://b".into())));
        assert!(
            p("ftp://h/x")
                .unwrap_err()
                .contains("unsupported URL scheme `ftp`")
        );
    }

    /// reqwest repeats the URL in its errors: the password and the token must not survive.
    #[tokio::test]
    async fn http_errors_show_the_url_redacted() {
        // Nothing listens on port 1 of loopback: the connection is refused at once.
        let url = "http://fleet:pw-7f3a@127.0.0.1:1/os.swu?sig=tok-91c2";
        let e = crate::http::default_client()
            .get(url)
            .send()
            .await
            .unwrap_err();
        assert!(
            crate::text::error_chain(&e).contains("tok-91c2"),
            "reqwest names the URL"
        );
        let shown = http_error(&e);
        // (reqwest itself moves the user info into a header and leaves it out.)
        assert!(shown.contains("127.0.0.1:1/os.swu?sig=***"), "{shown}");
        assert!(
            !shown.contains("pw-7f3a") && !shown.contains("tok-91c2"),
            "{shown}"
        );
        let src = Source::parse(url).unwrap();
        let e = open(&src).await.err().unwrap().to_string();
        assert!(!e.contains("pw-7f3a") && !e.contains("tok-91c2"), "{e}");
        assert_eq!(
            src.to_string(),
            "http://fleet:***@127.0.0.1:1/os.swu?sig=***"
        );
    }

    #[tokio::test]
    async fn missing_file_and_directory() {
        let e = open(&Source::File("/nonexistent/x.swu".into()))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, SourceError::NotFound(_)), "{e}");
        let e = open(&Source::File("/".into())).await.err().unwrap();
        assert!(matches!(e, SourceError::IsDir(_)), "{e}");
    }
}

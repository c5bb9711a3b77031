//! The agent's side of TUF: the gate of [`cip_tuf::artifacts`] set up from `[tuf]`, `[tls]`,
//! `[proxy]` and `[download]`, a wfx artifact's TUF target, and the fetcher of [`cip_tuf`] over
//! the agent's HTTP client. What the daemon asks: [`Trust::resolve`] before any byte is fetched,
//! a [`HashingReader`](cip_tuf::artifacts::HashingReader) around the bytes going to SWUpdate,
//! and [`finish`](cip_tuf::artifacts::finish) in the install's `before_commit`.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use cip_tuf::artifacts::{Gate, Refusal};
use cip_tuf::fetch::Sink;
use cip_tuf::{FetchError, Fetcher, TargetInfo, TufError};
use futures_util::StreamExt;

/// Why the gate cannot be set up (a configuration error at start).
#[derive(Debug, thiserror::Error)]
pub enum TrustSetupError {
    #[error("tuf.root: {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tuf.root: {0}")]
    BadRoot(TufError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpSetupError),
}

/// The TUF side of the daemon.
pub struct Trust {
    gate: Gate<HttpFetcher>,
    targets_url: String,
    read_timeout: Duration,
    transfer_limits: crate::http::Limits,
}

impl Trust {
    /// The gate, and what the pipeline's fetches beside it follow: the base URL of the targets
    /// (to tell an artifact's target by its URI), the idle limit of a target's bytes, and the
    /// limits of the other transfers (delta chunks). Built in [`crate::wiring`].
    pub fn new(
        gate: Gate<HttpFetcher>,
        targets_url: String,
        read_timeout: Duration,
        transfer_limits: crate::http::Limits,
    ) -> Trust {
        Trust {
            gate,
            targets_url,
            read_timeout,
            transfer_limits,
        }
    }

    /// `tuf.read_timeout`: the longest wait for the next bytes of a target, too.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// `[download]`'s headers limit and minimum throughput, for the fetches beside the updater's
    /// (delta chunks).
    pub fn transfer_limits(&self) -> crate::http::Limits {
        self.transfer_limits
    }

    /// Refreshes the metadata (after waiting once for the clock, when configured).
    pub async fn refresh(&mut self) -> Result<(), Refusal> {
        self.gate.refresh().await
    }

    /// Refreshes, then lists every target the metadata vouches for (TUF-only mode).
    pub async fn all_targets(&mut self) -> Result<Vec<TargetInfo>, Refusal> {
        self.gate.all_targets().await
    }

    /// Where a target's bytes are (after a refresh).
    pub fn target_url(&self, info: &TargetInfo) -> Result<String, TufError> {
        self.gate.target_url(info)
    }

    /// Refreshes, then finds the artifact's target and checks its hardware. Nothing of the
    /// artifact itself is fetched.
    pub async fn resolve(&mut self, name: Option<&str>, uri: &str) -> Result<TargetInfo, Refusal> {
        let path = target_path(name, uri, &self.targets_url).map_err(Refusal::Terminate)?;
        self.gate.resolve(&path).await
    }

    /// A target named by another target's (verified) custom metadata: a zchunk companion or a
    /// SWUpdate-native delta. Looked up in the metadata of the last refresh ([`Trust::resolve`]
    /// just made one); with its hardware checked; its URL.
    pub async fn related(&mut self, path: &str) -> Result<(TargetInfo, String), String> {
        self.gate.related(path).await
    }
}

/// The TUF target path of an artifact: its `name`, else its `uri` relative to `targets_url`
/// (percent-decoded; a consistent-snapshot file name `<sha256>.<basename>` names `<basename>`).
pub fn target_path(name: Option<&str>, uri: &str, targets_url: &str) -> Result<String, String> {
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        return Ok(n.to_owned());
    }
    let base = format!("{}/", targets_url.trim_end_matches('/'));
    let rest = uri
        .split(['?', '#'])
        .next()
        .and_then(|u| u.strip_prefix(&base))
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            format!(
                "artifact {uri} has no name and is not below tuf.targets_url ({base}): cannot tell its TUF target"
            )
        })?;
    let rest = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| format!("artifact {uri}: the path is not UTF-8"))?;
    let (dir, name) = match rest.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, rest.as_ref()),
    };
    let name = match name.split_once('.') {
        Some((h, n)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => n,
        _ => name,
    };
    Ok(match dir {
        Some(d) => format!("{d}/{name}"),
        None => name.to_owned(),
    })
}

/// The fetcher of the TUF client over the agent's reqwest client (which carries `[tls]` and
/// `[proxy]`): besides the byte and whole-transfer limits of every fetch, an idle limit per read
/// and the headers limit and minimum throughput of every download ([`crate::http::Limits`]).
/// The connect timeout is the client's.
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    read_timeout: Duration,
    limits: crate::http::Limits,
}

impl HttpFetcher {
    /// `read_timeout`: the longest wait for the response headers or the next chunk.
    pub fn new(client: reqwest::Client, read_timeout: Duration) -> HttpFetcher {
        HttpFetcher {
            client,
            read_timeout,
            limits: crate::http::Limits::default(),
        }
    }

    /// The headers limit and minimum throughput (`[download]`) instead of the defaults.
    pub fn with_limits(mut self, limits: crate::http::Limits) -> HttpFetcher {
        self.limits = limits;
        self
    }
}

impl Fetcher for HttpFetcher {
    fn fetch(
        &self,
        url: &str,
        max: u64,
        whole: Duration,
        sink: &mut Sink<'_>,
    ) -> impl Future<Output = Result<(), FetchError>> + Send {
        let url = url.to_owned();
        async move {
            let idle = self.read_timeout;
            let stalled = |url: &str| FetchError::Stalled {
                url: url.to_owned(),
                secs: idle.as_secs(),
            };
            let transfer = async {
                let net = |e: crate::http::TransferError| FetchError::Network {
                    url: url.clone(),
                    message: e.to_string(),
                };
                let resp = tokio::time::timeout(
                    idle,
                    crate::http::send(self.client.get(&url), &self.limits),
                )
                .await
                .map_err(|_| stalled(&url))?
                .map_err(net)?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(FetchError::Status {
                        url: url.clone(),
                        status: status.as_u16(),
                    });
                }
                if resp.content_length().is_some_and(|l| l > max) {
                    return Err(FetchError::TooLong {
                        url: url.clone(),
                        max,
                    });
                }
                let mut body = crate::http::body(resp, &self.limits);
                let mut seen: u64 = 0;
                loop {
                    let next = tokio::time::timeout(idle, body.next())
                        .await
                        .map_err(|_| stalled(&url))?;
                    let Some(chunk) = next else { break };
                    let chunk = chunk.map_err(net)?;
                    seen += chunk.len() as u64;
                    if seen > max {
                        return Err(FetchError::TooLong {
                            url: url.clone(),
                            max,
                        });
                    }
                    sink(&chunk).map_err(|message| FetchError::Sink {
                        url: url.clone(),
                        message,
                    })?;
                }
                Ok(())
            };
            tokio::time::timeout(whole, transfer)
                .await
                .map_err(|_| FetchError::TooSlow {
                    url: url.clone(),
                    secs: whole.as_secs(),
                })?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_path_is_the_name_or_the_uri_below_targets_url() {
        let t = "http://h/targets/";
        assert_eq!(
            target_path(Some("a/b/f.swu"), "http://cdn/x.swu", t).unwrap(),
            "a/b/f.swu"
        );
        assert_eq!(
            target_path(None, "http://h/targets/a/b/f.swu", t).unwrap(),
            "a/b/f.swu"
        );
        let h = "ab".repeat(32);
        assert_eq!(
            target_path(None, &format!("http://h/targets/a/{h}.f%201.swu?x=1"), t).unwrap(),
            "a/f 1.swu"
        );
        assert_eq!(
            target_path(None, &format!("http://h/targets/{h}.f.swu"), t).unwrap(),
            "f.swu"
        );
        let e = target_path(None, "http://other/targets/f.swu", t).unwrap_err();
        assert!(e.contains("not below tuf.targets_url"), "{e}");
        assert!(target_path(Some(""), "http://h/targets/", t).is_err());
    }
}

//! Getting bytes: a small trait so the workflow can be fed without a server, and its
//! implementation over the agent's reqwest client (which carries `[tls]` and `[proxy]`).
//! Every fetch has a byte limit (enforced while streaming, so endless data stops), an idle
//! limit per read, the headers limit and minimum throughput of every download
//! ([`crate::http::Limits`]) and a limit on the whole transfer (so slow retrieval fails, never
//! hangs).

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;

use super::error::FetchError;

/// Receives the body, chunk by chunk.
pub type Sink<'a> = dyn FnMut(&[u8]) -> Result<(), String> + Send + 'a;

pub trait Fetcher: Send + Sync {
    /// Streams `url` into `sink`: at most `max` bytes, within `whole` overall.
    fn fetch(
        &self,
        url: &str,
        max: u64,
        whole: Duration,
        sink: &mut Sink<'_>,
    ) -> impl Future<Output = Result<(), FetchError>> + Send;
}

/// Fetches a whole (small) file into memory.
pub async fn fetch_bytes<F: Fetcher>(
    f: &F,
    url: &str,
    max: u64,
    whole: Duration,
) -> Result<Vec<u8>, FetchError> {
    let mut buf = Vec::new();
    f.fetch(url, max, whole, &mut |c: &[u8]| {
        buf.extend_from_slice(c);
        Ok(())
    })
    .await?;
    Ok(buf)
}

/// The HTTP fetcher. The connect timeout is the client's.
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

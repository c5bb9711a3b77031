//! Getting bytes: a small trait so the workflow can be fed without a server, and the network
//! stays the caller's (the agent implements it over its HTTP client, which carries its TLS,
//! proxy and transfer limits). Every fetch has a byte limit (enforced while streaming, so
//! endless data stops) and a limit on the whole transfer (so slow retrieval fails, never hangs);
//! an implementation adds its own idle limit per read.

use std::future::Future;
use std::time::Duration;

use super::error::FetchError;

/// Receives the body, chunk by chunk.
pub type Sink<'a> = dyn FnMut(&[u8]) -> Result<(), String> + Send + 'a;

/// The repository's transport: how the [`crate::Updater`] gets metadata and targets.
pub trait Fetcher: Send + Sync {
    /// Streams `url` into `sink`: at most `max` bytes, within `whole` overall. More than `max`
    /// is [`FetchError::TooLong`], `whole` exceeded is [`FetchError::TooSlow`], a sink error is
    /// [`FetchError::Sink`].
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

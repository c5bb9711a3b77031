//! The HTTP client every wfx request and download uses, built from `[tls]` and `[proxy]`:
//! rustls, the configured CA (only it, when given), a client certificate for mutual TLS, and an
//! explicit proxy (the environment is not read: a service behaves the same whoever starts it).
//!
//! Also the time bounds of every download ([`send`], [`body`]): a limit on the wait for the
//! response headers and a minimum throughput for the body, so that a server that accepts and
//! never answers, or dribbles, fails the transfer instead of holding it forever. While a transfer
//! is within those bounds it keeps the watchdog fed: the wait is bounded, so it is not a hang.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::config::{Proxy, Tls};

// The defaults are the configuration's (`[download]`), which imports nothing from here.
pub use crate::config::{HEADERS_TIMEOUT, STALL_MIN_BYTES, STALL_WINDOW};

/// The time bounds of one transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for the response headers.
    pub headers: Duration,
    /// Fewer than `stall_min_bytes` in any `stall_window` (counted in consecutive windows): the
    /// transfer stalled.
    pub stall_window: Duration,
    pub stall_min_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            headers: HEADERS_TIMEOUT,
            stall_window: STALL_WINDOW,
            stall_min_bytes: STALL_MIN_BYTES,
        }
    }
}

// Here rather than in config.rs, so that the configuration does not import the HTTP layer.
impl crate::config::Download {
    /// The time bounds of one transfer.
    pub fn limits(&self) -> Limits {
        Limits {
            headers: self.headers_timeout,
            stall_window: self.stall_timeout,
            stall_min_bytes: self.stall_min_bytes,
        }
    }
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("no response headers within {}", humantime::format_duration(*.0))]
    Headers(Duration),
    #[error(
        "download stalled: {got} bytes in {} (at least {min} expected)",
        humantime::format_duration(*.window)
    )]
    Stalled {
        got: u64,
        min: u64,
        window: Duration,
    },
    /// The client's message, without the URL (the caller names the URL, redacted).
    #[error("{0}")]
    Network(String),
    /// No connection could be made (refused, unreachable): the server is away, for now.
    #[error("{0}")]
    Unreachable(String),
}

impl TransferError {
    /// Whether trying again later may succeed without anyone acting: the server was not
    /// reached. (A server that took the connection and then stalled is not given another go:
    /// it is slow retrieval, an attack as much as a fault.)
    pub fn is_transient(&self) -> bool {
        matches!(self, TransferError::Unreachable(_))
    }
}

/// The client's error with its causes, its URL left out.
fn network(e: reqwest::Error) -> TransferError {
    let connect = e.is_connect() && !e.is_timeout();
    let m = crate::text::error_chain(&e.without_url());
    if connect {
        TransferError::Unreachable(m)
    } else {
        TransferError::Network(m)
    }
}

/// Whether an HTTP status says "not now": the server's trouble (5xx), too many requests (429),
/// a request timeout (408). Other statuses are answers about the artifact.
pub fn status_is_transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// How often a transfer that waits within its bounds feeds the watchdog: several times per
/// watchdog period (`WATCHDOG_USEC`), else every few seconds.
fn beat_every() -> Duration {
    crate::notify::watchdog_period().map_or(Duration::from_secs(5), |p| {
        (p / 4).max(Duration::from_millis(50))
    })
}

/// Sends `req`; fails when its response headers have not come within `limits.headers`.
pub async fn send(
    req: reqwest::RequestBuilder,
    limits: &Limits,
) -> Result<reqwest::Response, TransferError> {
    let send = req.send();
    within_headers(send, limits.headers).await?.map_err(network)
}

/// `fut`, or [`TransferError::Headers`] after `limit`; the watchdog is fed meanwhile.
async fn within_headers<T>(
    fut: impl Future<Output = T>,
    limit: Duration,
) -> Result<T, TransferError> {
    tokio::pin!(fut);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(beat_every());
    loop {
        tokio::select! {
            r = &mut fut => return Ok(r),
            () = &mut deadline => return Err(TransferError::Headers(limit)),
            _ = tick.tick() => crate::notify::beat(),
        }
    }
}

/// The body of `resp` under the stall bound of `limits`.
pub fn body(
    resp: reqwest::Response,
    limits: &Limits,
) -> Guarded<impl Stream<Item = Result<Bytes, TransferError>> + Send + use<>> {
    Guarded::new(resp.bytes_stream().map(|r| r.map_err(network)), limits)
}

/// Counts the bytes of consecutive windows: the decision of [`Guarded`], without its clock.
#[derive(Debug, Clone)]
struct Meter {
    window: Duration,
    min: u64,
    start: Instant,
    got: u64,
}

impl Meter {
    fn new(limits: &Limits, now: Instant) -> Meter {
        Meter {
            window: limits.stall_window,
            min: limits.stall_min_bytes,
            start: now,
            got: 0,
        }
    }

    fn add(&mut self, n: usize) {
        self.got = self.got.saturating_add(n as u64);
    }

    /// When the current window ends.
    fn window_end(&self) -> Instant {
        self.start + self.window
    }

    /// At the end of a window: enough bytes came (a new window starts), or the transfer stalled.
    fn check(&mut self, now: Instant) -> Result<(), TransferError> {
        if now < self.window_end() {
            return Ok(());
        }
        if self.got < self.min {
            return Err(TransferError::Stalled {
                got: self.got,
                min: self.min,
                window: self.window,
            });
        }
        self.start = now;
        self.got = 0;
        Ok(())
    }
}

/// A body stream that fails with [`TransferError::Stalled`] when too few bytes arrive in a
/// window, and feeds the watchdog while it waits within that bound.
pub struct Guarded<S> {
    inner: Pin<Box<S>>,
    meter: Meter,
    timer: Pin<Box<Sleep>>,
    beat_every: Duration,
    /// A stall seen when bytes arrived, told at the next poll.
    stalled: Option<TransferError>,
    failed: bool,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, limits: &Limits) -> Guarded<S> {
        let now = Instant::now();
        let meter = Meter::new(limits, now);
        let beat_every = beat_every();
        Guarded {
            inner: Box::pin(inner),
            timer: Box::pin(tokio::time::sleep_until(
                (now + beat_every).min(meter.window_end()),
            )),
            meter,
            beat_every,
            stalled: None,
            failed: false,
        }
    }

    fn fail(&mut self, e: TransferError) -> Poll<Option<Result<Bytes, TransferError>>> {
        self.failed = true;
        Poll::Ready(Some(Err(e)))
    }
}

impl<S> Stream for Guarded<S>
where
    S: Stream<Item = Result<Bytes, TransferError>>,
{
    type Item = Result<Bytes, TransferError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        if let Some(e) = self.stalled.take() {
            return self.fail(e);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.meter.add(b.len());
                crate::notify::beat();
                // These bytes still count (and are handed on); the stall is told next.
                if let Err(e) = self.meter.check(Instant::now()) {
                    self.stalled = Some(e);
                }
                return Poll::Ready(Some(Ok(b)));
            }
            Poll::Ready(Some(Err(e))) => return self.fail(e),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if let Err(e) = self.meter.check(now) {
                return self.fail(e);
            }
            crate::notify::beat();
            let next = (now + self.beat_every).min(self.meter.window_end());
            self.timer.as_mut().reset(next);
        }
        Poll::Pending
    }
}

/// Why a client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("{key}: {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: {path}: {message}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("proxy.url: {0}")]
    Proxy(String),
    #[error("HTTP client: {0}")]
    Build(String),
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, HttpSetupError> {
    std::fs::read(path).map_err(|source| HttpSetupError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Makes ring the process's TLS crypto provider, once; reqwest and rumqttc take the default
/// (built with `rustls-no-provider`, reqwest would panic without one). Idempotent.
pub fn use_ring() {
    // (Err: a provider is installed already, ring by this function.)
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// reqwest's default client over ring (for tools and tests; the agent builds [`client`]).
pub fn default_client() -> reqwest::Client {
    use_ring();
    reqwest::Client::new()
}

/// Builds the client. `connect_timeout` bounds each connection attempt; whole-request timeouts
/// are the caller's (a download may take hours, a status update must not).
pub fn client(
    tls: &Tls,
    proxy: &Proxy,
    connect_timeout: Duration,
) -> Result<reqwest::Client, HttpSetupError> {
    use_ring();
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("cip-update-agent/", env!("CARGO_PKG_VERSION")))
        .no_proxy();
    if let Some(ca) = &tls.ca_file {
        let pem = read("tls.ca_file", ca)?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| HttpSetupError::Pem {
                key: "tls.ca_file",
                path: ca.clone(),
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(HttpSetupError::Pem {
                key: "tls.ca_file",
                path: ca.clone(),
                message: "no certificate in the file".into(),
            });
        }
        b = b.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = read("tls.client_cert", cert)?;
        pem.push(b'\n');
        pem.extend(read("tls.client_key", key)?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| HttpSetupError::Pem {
            key: "tls.client_cert",
            path: cert.clone(),
            message: e.to_string(),
        })?;
        b = b.identity(id);
    }
    if let Some(url) = &proxy.url {
        let p = reqwest::Proxy::all(&url.0)
            .map_err(|e| HttpSetupError::Proxy(crate::redact::urls_in(&e.to_string())))?
            .no_proxy(reqwest::NoProxy::from_string(&proxy.no_proxy.join(",")));
        b = b.proxy(p);
    }
    b.build()
        .map_err(|e| HttpSetupError::Build(crate::text::error_chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures_util::stream;

    #[test]
    fn which_answers_are_worth_a_later_try() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(status_is_transient(s), "{s}");
        }
        // Answers about the artifact (or a redirect loop) are final.
        for s in [200, 301, 400, 401, 403, 404, 410, 416, 600] {
            assert!(!status_is_transient(s), "{s}");
        }
        assert!(TransferError::Unreachable("refused".into()).is_transient());
        assert!(!TransferError::Network("reset".into()).is_transient());
        assert!(!TransferError::Headers(Duration::from_secs(1)).is_transient());
    }

    fn limits(window_secs: u64, min: u64) -> Limits {
        Limits {
            headers: Duration::from_secs(5),
            stall_window: Duration::from_secs(window_secs),
            stall_min_bytes: min,
        }
    }

    #[test]
    fn meter_windows() {
        let t0 = Instant::now();
        let mut m = Meter::new(&limits(60, 1024), t0);
        m.add(1000);
        assert!(
            m.check(t0 + Duration::from_secs(59)).is_ok(),
            "window not over"
        );
        m.add(24);
        // Enough in the first window: a new one starts, empty.
        assert!(m.check(t0 + Duration::from_secs(60)).is_ok());
        assert_eq!(m.window_end(), t0 + Duration::from_secs(120));
        m.add(1023);
        let e = m.check(t0 + Duration::from_secs(120)).unwrap_err();
        assert_eq!(
            e,
            TransferError::Stalled {
                got: 1023,
                min: 1024,
                window: Duration::from_secs(60)
            }
        );
        assert_eq!(
            e.to_string(),
            "download stalled: 1023 bytes in 1m (at least 1024 expected)"
        );
    }

    /// A body that sends nothing after its headers fails once the window is over.
    #[tokio::test(start_paused = true)]
    async fn silence_after_the_headers_stalls() {
        let t0 = Instant::now();
        let mut g = Guarded::new(
            stream::pending::<Result<Bytes, TransferError>>(),
            &limits(60, 1),
        );
        let e = g.next().await.unwrap().unwrap_err();
        assert!(matches!(e, TransferError::Stalled { got: 0, .. }), "{e}");
        assert_eq!(t0.elapsed(), Duration::from_secs(60));
        assert!(g.next().await.is_none(), "nothing after the failure");
    }

    /// A dribble (one byte a second) is cut at the end of the first window.
    #[tokio::test(start_paused = true)]
    async fn a_dribble_stalls() {
        let t0 = Instant::now();
        let dribble = stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok(Bytes::from_static(b"x")), ()))
        });
        let mut g = Guarded::new(dribble, &limits(60, 1024));
        let mut got = 0;
        let e = loop {
            match g.next().await.unwrap() {
                Ok(b) => got += b.len(),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, TransferError::Stalled { .. }), "{e}");
        assert!((58..=60).contains(&got), "{got}");
        assert!(
            t0.elapsed() <= Duration::from_secs(61),
            "{:?}",
            t0.elapsed()
        );
    }

    /// A steady body above the minimum goes through, however long it takes, and ends.
    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_body_passes() {
        let steady = stream::iter(0..300).then(|_| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(Bytes::from(vec![0u8; 20]))
        });
        let mut g = Guarded::new(steady, &limits(60, 1024));
        let mut got = 0;
        while let Some(b) = g.next().await {
            got += b.unwrap().len();
        }
        assert_eq!(got, 6000);
    }

    /// Headers that never come fail after the limit.
    #[tokio::test(start_paused = true)]
    async fn headers_bound() {
        let t0 = Instant::now();
        let e = within_headers(std::future::pending::<()>(), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(e, TransferError::Headers(Duration::from_secs(30)));
        assert_eq!(e.to_string(), "no response headers within 30s");
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        assert_eq!(
            within_headers(async { 7 }, Duration::from_secs(1)).await,
            Ok(7)
        );
    }

    #[test]
    fn download_limits_from_the_configuration() {
        let parse = |s: &str| crate::config::Config::parse(s, Path::new("agent.toml")).unwrap();
        let c = parse("");
        assert_eq!(c.download.limits(), Limits::default());
        let c = parse(
            "[download]\nheaders_timeout = \"2s\"\nstall_timeout = \"3s\"\nstall_min_bytes = 10\nmax_image_size = 1000",
        );
        assert_eq!(
            c.download.limits(),
            Limits {
                headers: Duration::from_secs(2),
                stall_window: Duration::from_secs(3),
                stall_min_bytes: 10,
            }
        );
    }

    #[test]
    fn defaults_build() {
        client(&Tls::default(), &Proxy::default(), Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn causes_are_kept() {
        let inner = std::io::Error::other("no CA certificates found");
        let outer = std::io::Error::other(Wrapped(inner));
        assert_eq!(
            crate::text::error_chain(&outer),
            "wrapped: no CA certificates found"
        );
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn unreadable_and_bad_pem_name_the_key() {
        let d = tempfile::tempdir().unwrap();
        let tls = Tls {
            ca_file: Some(d.path().join("missing.pem")),
            ..Default::default()
        };
        let e = client(&tls, &Proxy::default(), Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().starts_with("tls.ca_file: "), "{e}");
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let tls = Tls {
            ca_file: Some(junk),
            ..Default::default()
        };
        let e = client(&tls, &Proxy::default(), Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("tls.ca_file"), "{e}");
    }
}

//! The HTTP client every wfx request and download uses, built from `[tls]` and `[proxy]`:
//! rustls, the configured CA (only it, when given), a client certificate for mutual TLS, and an
//! explicit proxy (the environment is not read: a service behaves the same whoever starts it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Proxy, Tls};

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

/// Builds the client. `connect_timeout` bounds each connection attempt; whole-request timeouts
/// are the caller's (a download may take hours, a status update must not).
pub fn client(
    tls: &Tls,
    proxy: &Proxy,
    connect_timeout: Duration,
) -> Result<reqwest::Client, HttpSetupError> {
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
        .map_err(|e| HttpSetupError::Build(with_sources(&e)))
}

/// The error and its causes: reqwest's own message is only "builder error", the reason (e.g. no
/// CA certificate in the system's trust store: a device without `ca-certificates`) is in its
/// sources.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        client(&Tls::default(), &Proxy::default(), Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn causes_are_kept() {
        let inner = std::io::Error::other("no CA certificates found");
        let outer = std::io::Error::other(Wrapped(inner));
        assert_eq!(with_sources(&outer), "wrapped: no CA certificates found");
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

//! Why a publisher cannot start. Once started it does not fail: a broker that is away is waited
//! for (see [`super::Publisher`]).

use std::path::PathBuf;

/// A publisher that cannot be started; the message names the agent.toml key at fault.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A value or a combination of values of the `[mqtt]` section.
    #[error("{key}: {message}")]
    Config { key: &'static str, message: String },
    /// A TLS file that cannot be read.
    #[error("{key}: {}: {source}", path.display())]
    ReadFile {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A TLS file without the PEM content it should hold.
    #[error("{key}: {}: {message}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        message: &'static str,
    },
    /// The device's client-id cannot be an MQTT client id and topic level.
    #[error("mqtt client id `{client_id}`: {why}")]
    ClientId {
        client_id: String,
        why: &'static str,
    },
    /// [`super::Publisher::start`] was called outside a Tokio runtime.
    #[error("the MQTT publisher must be started inside a Tokio runtime: {0}")]
    NoRuntime(String),
}

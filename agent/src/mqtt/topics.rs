//! The device's topics: `<prefix>/<client-id>/{online,state,progress,inventory}`.
//!
//! One subtree per device, so that a fleet dashboard subscribes to `<prefix>/+/state` and an
//! operator looking at one device to `<prefix>/<client-id>/#`.

use super::error::MqttError;
use crate::config::mqtt::TopicPrefix;

/// Payload of the online topic while connected (retained).
pub const ONLINE: &str = "online";
/// Payload of the online topic after a clean stop or, as the last will, after a lost connection.
pub const OFFLINE: &str = "offline";

/// The topic names of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Retained `online` / `offline` (the last will).
    pub online: String,
    /// Retained, QoS 1: the latest [`super::State`], every change in order.
    pub state: String,
    /// Not retained, QoS 0: [`super::Progress`], rate-limited.
    pub progress: String,
    /// Retained, QoS 1: [`super::Inventory`].
    pub inventory: String,
}

impl Topics {
    /// The topics of `client_id`, which becomes one topic level: it must not be empty nor contain
    /// `/`, `+`, `#` or NUL.
    pub fn new(prefix: &TopicPrefix, client_id: &str) -> Result<Topics, MqttError> {
        check_client_id(client_id)?;
        let base = format!("{}/{client_id}", prefix.as_str());
        Ok(Topics {
            online: format!("{base}/online"),
            state: format!("{base}/state"),
            progress: format!("{base}/progress"),
            inventory: format!("{base}/inventory"),
        })
    }
}

/// A client id that is usable as one topic level and as an MQTT client identifier.
pub fn check_client_id(client_id: &str) -> Result<(), MqttError> {
    let why = if client_id.is_empty() {
        "it is empty"
    } else if client_id.contains(['/', '+', '#', '\0']) {
        "`/`, `+`, `#` and NUL are not allowed in a topic level"
    } else if client_id.len() > 256 {
        "longer than 256 bytes"
    } else {
        return Ok(());
    };
    Err(MqttError::ClientId {
        client_id: client_id.to_owned(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let t = Topics::new(&TopicPrefix::default(), "dev-42").unwrap();
        assert_eq!(t.online, "cip/devices/dev-42/online");
        assert_eq!(t.state, "cip/devices/dev-42/state");
        assert_eq!(t.progress, "cip/devices/dev-42/progress");
        assert_eq!(t.inventory, "cip/devices/dev-42/inventory");
        let p = TopicPrefix::parse("plant").unwrap();
        assert_eq!(Topics::new(&p, "x").unwrap().state, "plant/x/state");
    }

    #[test]
    fn bad_client_ids() {
        for bad in ["", "a/b", "a+", "#", "a\0", &"x".repeat(257)] {
            assert!(
                Topics::new(&TopicPrefix::default(), bad).is_err(),
                "{bad:?}"
            );
        }
    }
}

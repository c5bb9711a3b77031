//! The `[mqtt]` section of agent.toml: typed and checked at load, so that a bad value is reported
//! with its key by the TOML parser instead of surfacing later as an endless reconnect loop.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Default topic prefix: topics are `<prefix>/<client-id>/<leaf>`.
pub const DEFAULT_TOPIC_PREFIX: &str = "cip/devices";
/// Default MQTT keepalive: how fast a dead connection (and thus the last will) is noticed.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
/// Default minimum time between two progress messages.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// MQTT telemetry settings.
///
/// The MQTT client id is not configured: it is the device's wfx client-id, so that a device has one
/// identity across the job server and the telemetry broker.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (default 8883).
    pub url: BrokerUrl,
    /// No wildcards, no trailing `/`.
    #[serde(default)]
    pub topic_prefix: TopicPrefix,
    pub username: Option<String>,
    /// Never logged: [`Password`]'s `Debug` is redacted.
    pub password: Option<Password>,
    #[serde(default = "default_keepalive", deserialize_with = "keepalive")]
    pub keepalive: Duration,
    #[serde(
        default = "default_progress_interval",
        deserialize_with = "progress_interval"
    )]
    pub progress_interval: Duration,
    /// CA certificates (PEM) trusted for the broker; required by `mqtts://` (the broker of a
    /// fleet is pinned explicitly rather than trusted through whatever the system store holds).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &self.url)
            .field("topic_prefix", &self.topic_prefix)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("keepalive", &self.keepalive)
            .field("progress_interval", &self.progress_interval)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish()
    }
}

impl MqttConfig {
    /// A configuration with defaults for everything but the broker.
    pub fn new(url: BrokerUrl) -> MqttConfig {
        MqttConfig {
            url,
            topic_prefix: TopicPrefix::default(),
            username: None,
            password: None,
            keepalive: DEFAULT_KEEPALIVE,
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }

    /// Checks what spans several keys: the TLS files against the scheme, the certificate against
    /// its key, the password against the user. Returns `(key, message)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, p) in [
            ("mqtt.ca_file", &self.ca_file),
            ("mqtt.client_cert", &self.client_cert),
            ("mqtt.client_key", &self.client_key),
        ] {
            if let Some(p) = p.as_deref().filter(|p| !p.is_absolute()) {
                return Err((key, format!("`{}` must be an absolute path", p.display())));
            }
        }
        if !self.url.tls {
            for (key, set) in [
                ("mqtt.ca_file", self.ca_file.is_some()),
                ("mqtt.client_cert", self.client_cert.is_some()),
                ("mqtt.client_key", self.client_key.is_some()),
            ] {
                if set {
                    return Err((key, "only used with an mqtts:// url".to_owned()));
                }
            }
        } else if self.ca_file.is_none() {
            return Err((
                "mqtt.ca_file",
                "required by an mqtts:// url (the broker's CA, PEM)".to_owned(),
            ));
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => Err((
                "mqtt.client_key",
                "required with mqtt.client_cert".to_owned(),
            )),
            (None, Some(_)) => Err((
                "mqtt.client_cert",
                "required with mqtt.client_key".to_owned(),
            )),
            _ if self.password.is_some() && self.username.is_none() => {
                Err(("mqtt.username", "required with mqtt.password".to_owned()))
            }
            _ => Ok(()),
        }
    }
}

fn default_keepalive() -> Duration {
    DEFAULT_KEEPALIVE
}

fn default_progress_interval() -> Duration {
    DEFAULT_PROGRESS_INTERVAL
}

fn parse_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration such as \"30s\", \"1m\": {e}"
        ))
    })
}

fn keepalive<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = parse_duration(d)?;
    check_keepalive(v).map_err(serde::de::Error::custom)
}

/// MQTT carries the keepalive in whole seconds in 16 bits; zero would switch off the dead
/// connection detection the last will relies on.
pub fn check_keepalive(v: Duration) -> Result<Duration, String> {
    if v < Duration::from_secs(1) || v > Duration::from_secs(u64::from(u16::MAX)) {
        return Err(format!(
            "the keepalive must be between 1s and {}s",
            u16::MAX
        ));
    }
    // Whole seconds: what goes on the wire.
    Ok(Duration::from_secs(v.as_secs()))
}

fn progress_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration(d)
}

/// A broker address from an `mqtt://` or `mqtts://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (an optional trailing `/`; no user,
    /// path or query: credentials have their own keys).
    pub fn parse(s: &str) -> Result<BrokerUrl, String> {
        // Credentials have no place here, but one typed in by mistake must not be echoed.
        let shown = crate::redact::url_like(s);
        let bad = |why: &str| {
            format!("`{shown}` is not an mqtt://host:port or mqtts://host:port url: {why}")
        };
        let (tls, rest) = if let Some(rest) = s.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = s.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(bad("the scheme must be mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(bad("only a host and a port are allowed"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address between `[` and `]`"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after `]`"))?),
            };
            (host, port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for BrokerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BrokerUrl::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The first levels of every topic of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPrefix(String);

impl TopicPrefix {
    /// Accepts a non-empty topic without wildcards (`+`, `#`: they are for subscribers), NUL, or
    /// empty levels (a leading, trailing or doubled `/`), which would make topics that are easy
    /// to mistype in a subscription.
    pub fn parse(s: &str) -> Result<TopicPrefix, String> {
        let bad = |why: &str| format!("`{s}` is not a usable topic prefix: {why}");
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.contains(['+', '#']) {
            return Err(bad("wildcards (`+`, `#`) are not allowed"));
        }
        if s.contains('\0') {
            return Err(bad("NUL is not allowed"));
        }
        if s.split('/').any(str::is_empty) {
            return Err(bad("no leading, trailing or double `/`"));
        }
        // Topics are at most 65535 bytes; leave room for the client id and the leaf.
        if s.len() > 1024 {
            return Err(bad("longer than 1024 bytes"));
        }
        Ok(TopicPrefix(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TopicPrefix {
    fn default() -> Self {
        TopicPrefix(DEFAULT_TOPIC_PREFIX.to_owned())
    }
}

impl<'de> Deserialize<'de> for TopicPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TopicPrefix::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A secret that `Debug` does not show, so that logging a configuration cannot leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(s: impl Into<String>) -> Password {
        Password(s.into())
    }

    /// The secret itself: only for the CONNECT packet.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<MqttConfig, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn urls() {
        let u = BrokerUrl::parse("mqtt://broker.example:1884").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("broker.example", 1884, false)
        );
        let u = BrokerUrl::parse("mqtts://10.0.0.1/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("10.0.0.1", 8883, true));
        assert_eq!(BrokerUrl::parse("mqtt://h").unwrap().port, 1883);
        let u = BrokerUrl::parse("mqtt://[::1]:1999").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1999));
        assert_eq!(u.to_string(), "mqtt://[::1]:1999");
        for bad in [
            "",
            "http://h:1",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://h:65536",
            "mqtt://h:x",
            "mqtt://h:1/path",
            "mqtt://user:pw@h:1",
            "mqtt://h:1?x=1",
            "mqtt://[::1",
            "mqtt://[nothost]:1",
            "mqtt://h 1",
            "MQTT://h",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(TopicPrefix::default().as_str(), "cip/devices");
        assert!(TopicPrefix::parse("a/b c/d").is_ok());
        for bad in ["", "a/+/b", "a/#", "a/", "/a", "a//b", "a\0b"] {
            assert!(TopicPrefix::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn defaults_and_keys() {
        let c = parse(r#"url = "mqtt://127.0.0.1:1883""#).unwrap();
        assert_eq!(c.topic_prefix.as_str(), "cip/devices");
        assert_eq!(c.keepalive, Duration::from_secs(30));
        assert_eq!(c.progress_interval, Duration::from_secs(1));
        assert!(c.check().is_ok());
        let c = parse(
            r#"url = "mqtts://b:8883"
topic_prefix = "plant/line1"
username = "dev"
password = "s3cret"
keepalive = "1m"
progress_interval = "250ms"
ca_file = "/ca.pem"
client_cert = "/c.pem"
client_key = "/k.pem"
"#,
        )
        .unwrap();
        assert_eq!(c.keepalive, Duration::from_secs(60));
        assert_eq!(c.progress_interval, Duration::from_millis(250));
        assert!(c.check().is_ok());
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse("url = \"mqtt://h\"\ntopic_prefix = \"a/#\"").unwrap_err();
        assert!(e.contains("topic_prefix") && e.contains("wildcards"), "{e}");
        let e = parse("url = \"tcp://h\"").unwrap_err();
        assert!(e.contains("url"), "{e}");
        let e = parse("url = \"mqtt://h\"\nkeepalive = \"500ms\"").unwrap_err();
        assert!(e.contains("keepalive"), "{e}");
        let e = parse("url = \"mqtt://h\"\nkeepalive = \"soon\"").unwrap_err();
        assert!(e.contains("keepalive"), "{e}");
        let e = parse("url = \"mqtt://h\"\nclient_id = \"x\"").unwrap_err();
        assert!(e.contains("client_id"), "{e}");
        assert!(parse("").is_err(), "url is required");
    }

    #[test]
    fn cross_key_checks() {
        let c = |s: &str| parse(s).unwrap().check().map_err(|(k, _)| k);
        assert_eq!(
            c("url = \"mqtt://h\"\nca_file = \"/ca\""),
            Err("mqtt.ca_file")
        );
        assert_eq!(c("url = \"mqtts://h\""), Err("mqtt.ca_file"));
        assert_eq!(
            c("url = \"mqtts://h\"\nca_file = \"/ca\"\nclient_cert = \"/c\""),
            Err("mqtt.client_key")
        );
        assert_eq!(
            c("url = \"mqtts://h\"\nca_file = \"/ca\"\nclient_key = \"/k\""),
            Err("mqtt.client_cert")
        );
        assert_eq!(
            c("url = \"mqtt://h\"\npassword = \"p\""),
            Err("mqtt.username")
        );
    }
}

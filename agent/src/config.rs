//! `/etc/cip-update-agent/agent.toml`: typed, with defaults, checked at load with errors that name
//! the key. `agent/config/agent.toml` is the commented default and documents every key; the README
//! has the same table.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

// The SWUpdate client is a library under the agent (it imports nothing from it): its wire
// choice and socket paths are named here without a cycle.
use cip_swupdate::{SocketPaths, WireSetting};

pub mod mqtt;
mod selection;
mod window;

pub use selection::Selection;
pub use window::Window;

/// Where the agent looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/cip-update-agent/agent.toml";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The agent's own files: the job journal, staged downloads, the device key.
    pub state_dir: PathBuf,
    pub device: Device,
    /// Absent: no wfx (install only from the command line).
    pub wfx: Option<Wfx>,
    pub swupdate: Swupdate,
    pub boot: Boot,
    pub reboot: Reboot,
    pub health: Health,
    pub tls: Tls,
    pub proxy: Proxy,
    /// Absent: no MQTT telemetry.
    pub mqtt: Option<mqtt::MqttConfig>,
    /// How a device without `device.client_id` obtains one.
    pub onboarding: Onboarding,
    /// Absent: artifacts are not verified (development only; logged loudly at start).
    pub tuf: Option<Tuf>,
    /// Delta downloads (zchunk companions, SWUpdate-native delta targets).
    pub delta: Delta,
    /// Time and size bounds of every download.
    pub download: Download,
}

/// `[download]`: bounds on every artifact, delta and TUF transfer, with or without `[tuf]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Download {
    /// Longest wait for a response's headers.
    #[serde(deserialize_with = "duration")]
    pub headers_timeout: Duration,
    /// A transfer that gets fewer than `stall_min_bytes` in this long has stalled and fails.
    #[serde(deserialize_with = "duration")]
    pub stall_timeout: Duration,
    pub stall_min_bytes: u64,
    /// Largest `.swu` accepted without a TUF length to bound it (and largest entry it may
    /// claim): an endless or lying image stops here.
    pub max_image_size: u64,
}

/// Default of `download.headers_timeout`: the longest wait for a response's headers.
pub const HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `download.stall_timeout`: the window in which [`STALL_MIN_BYTES`] must arrive.
pub const STALL_WINDOW: Duration = Duration::from_secs(60);
/// Default of `download.stall_min_bytes`.
pub const STALL_MIN_BYTES: u64 = 1024;
/// Default of `download.max_image_size`: 8 GiB, beyond any device's image.
pub const MAX_IMAGE_SIZE: u64 = 8 << 30;

impl Default for Download {
    fn default() -> Self {
        Download {
            headers_timeout: HEADERS_TIMEOUT,
            stall_timeout: STALL_WINDOW,
            stall_min_bytes: STALL_MIN_BYTES,
            max_image_size: MAX_IMAGE_SIZE,
        }
    }
}

impl Download {
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.stall_min_bytes == 0 {
            return Err(("download.stall_min_bytes", "must be at least 1 byte".into()));
        }
        if self.max_image_size == 0 {
            return Err((
                "download.max_image_size",
                "must be more than 0 bytes".into(),
            ));
        }
        Ok(())
    }
}

// `Download::limits()` (the bounds of one transfer) is in http.rs, with the type it returns.

/// `[delta]`: how a target with a zchunk companion (`custom.zchunk`) or a SWUpdate-native delta
/// (`custom.deltas`) is fetched. Deltas need `[tuf]` (the companion is a TUF target).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delta {
    /// Use deltas at all.
    pub enabled: bool,
    /// Where chunks already on the device are looked for: `@rootfs` (the block device holding
    /// the running root file system) or file/device paths.
    pub seeds: Vec<String>,
    /// Keep the last installed .swu in `state_dir/delta/` as a seed for the next delta.
    pub cache_previous_swu: bool,
    /// On a delta failure: download the full target, or fail the job.
    pub fallback: DeltaFallback,
    /// Most ranges in one HTTP request.
    pub max_ranges_per_request: usize,
    /// Gaps up to this many bytes between missing chunks are fetched to save a range.
    pub max_gap: u64,
    /// Consecutive failed chunk requests (without a new verified chunk) before giving up.
    pub max_retries: u32,
    /// Install a SWUpdate-native delta target (`custom.deltas` for the running version).
    pub native: bool,
}

impl Default for Delta {
    fn default() -> Self {
        Delta {
            enabled: true,
            seeds: vec!["@rootfs".into()],
            cache_previous_swu: true,
            fallback: DeltaFallback::Full,
            max_ranges_per_request: 64,
            max_gap: 128,
            max_retries: 5,
            native: true,
        }
    }
}

/// `delta.fallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaFallback {
    Full,
    Fail,
}

impl Delta {
    fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1000).contains(&self.max_ranges_per_request) {
            return Err((
                "delta.max_ranges_per_request",
                "must be between 1 and 1000".into(),
            ));
        }
        for s in &self.seeds {
            if s != "@rootfs" && !Path::new(s).is_absolute() {
                return Err((
                    "delta.seeds",
                    format!("`{s}` is neither @rootfs nor an absolute path"),
                ));
            }
        }
        Ok(())
    }
}

/// The device's TUF repository: every artifact must be one of its targets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuf {
    /// The root of trust shipped in the image.
    #[serde(default = "default_tuf_root")]
    pub root: PathBuf,
    /// Base URL of the metadata (`N.root.json`, `timestamp.json`, ...).
    pub metadata_url: HttpUrl,
    /// Base URL of the targets; an artifact without `name` is named by its `uri` below it.
    pub targets_url: HttpUrl,
    /// Largest metadata accepted, in bytes (endless-data protection).
    #[serde(default = "default_root_size")]
    pub max_root_size: u64,
    #[serde(default = "default_timestamp_size")]
    pub max_timestamp_size: u64,
    #[serde(default = "default_snapshot_size")]
    pub max_snapshot_size: u64,
    #[serde(default = "default_targets_size")]
    pub max_targets_size: u64,
    #[serde(default = "default_tuf_connect", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// No byte for this long: a metadata fetch or an artifact download fails (slow retrieval).
    #[serde(default = "default_tuf_read", deserialize_with = "duration")]
    pub read_timeout: Duration,
    /// Whole-file limit of a metadata fetch.
    #[serde(default = "default_tuf_metadata", deserialize_with = "duration")]
    pub metadata_timeout: Duration,
    /// Wait (once, before the first refresh) until `time_sync_file` exists.
    #[serde(default)]
    pub wait_for_time_sync: bool,
    #[serde(default = "default_time_sync_file")]
    pub time_sync_file: PathBuf,
    #[serde(default = "default_time_sync_timeout", deserialize_with = "duration")]
    pub time_sync_timeout: Duration,
    /// TUF-only mode (no `[wfx]`): how often the repository is polled for a newer version.
    #[serde(default = "default_tuf_poll", deserialize_with = "duration")]
    pub poll_interval: Duration,
}

fn default_tuf_poll() -> Duration {
    Duration::from_secs(3600)
}

fn default_tuf_root() -> PathBuf {
    PathBuf::from("/usr/share/cip-update-agent/root.json")
}
fn default_root_size() -> u64 {
    512_000
}
fn default_timestamp_size() -> u64 {
    16_384
}
fn default_snapshot_size() -> u64 {
    2_000_000
}
fn default_targets_size() -> u64 {
    5_000_000
}
fn default_tuf_connect() -> Duration {
    Duration::from_secs(10)
}
fn default_tuf_read() -> Duration {
    Duration::from_secs(30)
}
fn default_tuf_metadata() -> Duration {
    Duration::from_secs(120)
}
fn default_time_sync_file() -> PathBuf {
    PathBuf::from("/run/systemd/timesync/synchronized")
}
fn default_time_sync_timeout() -> Duration {
    Duration::from_secs(120)
}

impl Tuf {
    fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [
            ("tuf.max_root_size", self.max_root_size),
            ("tuf.max_timestamp_size", self.max_timestamp_size),
            ("tuf.max_snapshot_size", self.max_snapshot_size),
            ("tuf.max_targets_size", self.max_targets_size),
        ] {
            if v == 0 {
                return Err((key, "must be more than 0 bytes".into()));
            }
        }
        if self.root.as_os_str().is_empty() {
            return Err(("tuf.root", "must name the trusted root file".into()));
        }
        // File names are appended to these base URLs: a query or fragment would swallow them.
        for (key, u) in [
            ("tuf.metadata_url", &self.metadata_url),
            ("tuf.targets_url", &self.targets_url),
        ] {
            if u.0.contains(['?', '#']) {
                return Err((
                    key,
                    format!("`{u}` has a query or fragment: file names are appended to it"),
                ));
            }
        }
        Ok(())
    }

    /// The limits of the TUF client.
    pub fn limits(&self) -> cip_tuf::Limits {
        cip_tuf::Limits {
            root_max: self.max_root_size,
            timestamp_max: self.max_timestamp_size,
            snapshot_max: self.max_snapshot_size,
            targets_max: self.max_targets_size,
            metadata_timeout: self.metadata_timeout,
            ..cip_tuf::Limits::default()
        }
    }
}

/// Onboarding (see the `cip-onboarding` crate): used when `device.client_id` is absent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Onboarding {
    /// The fleet's onboarding public key, shipped in the image: only answers it signed count.
    pub fleet_key: PathBuf,
    /// The serial; absent: DMI's product_serial, else the device tree's serial-number.
    pub serial: Option<String>,
    /// The model; absent: DMI's product_name, else the device tree's model.
    pub model: Option<String>,
}

impl Default for Onboarding {
    fn default() -> Self {
        Onboarding {
            fleet_key: PathBuf::from("/usr/share/cip-update-agent/onboarding.pub"),
            serial: None,
            model: None,
        }
    }
}

/// The rollback backend (`[boot]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Boot {
    pub backend: BootBackend,
    /// Who marks the new slot INSTALLED after an install: SWUpdate (its `bootloader` setting),
    /// or the agent at ACTIVATE (tests, or SWUpdate run without a bootloader).
    pub mark_installed: MarkInstalled,
    /// `ebg`: the tools (a name is looked up in PATH).
    pub bg_printenv: PathBuf,
    pub bg_setenv: PathBuf,
    /// `ebg`: plain BGENV.DAT files, slot A then slot B, instead of the boot partitions.
    pub ebg_env_files: Vec<PathBuf>,
    /// `uboot`: the tools and their configuration.
    pub fw_printenv: PathBuf,
    pub fw_setenv: PathBuf,
    pub fw_env_config: PathBuf,
    /// `uboot`: default environment (`-f`) for an environment that is not initialised yet.
    pub fw_env_defaults: Option<PathBuf>,
    /// `uboot`: the variable that names the slot U-Boot boots, and its two values (A, B).
    pub uboot_slot_variable: String,
    pub uboot_slots: Vec<String>,
}

impl Boot {
    /// How the backend names slots A and B.
    pub fn slot_names(&self) -> (&str, &str) {
        match (self.backend, self.uboot_slots.as_slice()) {
            (BootBackend::Uboot, [a, b]) => (a, b),
            _ => ("A", "B"),
        }
    }
}

impl Default for Boot {
    fn default() -> Self {
        Boot {
            backend: BootBackend::None,
            mark_installed: MarkInstalled::Swupdate,
            bg_printenv: PathBuf::from("bg_printenv"),
            bg_setenv: PathBuf::from("bg_setenv"),
            ebg_env_files: Vec::new(),
            fw_printenv: PathBuf::from("fw_printenv"),
            fw_setenv: PathBuf::from("fw_setenv"),
            fw_env_config: PathBuf::from("/etc/fw_env.config"),
            fw_env_defaults: None,
            uboot_slot_variable: "boot_slot".into(),
            uboot_slots: vec!["A".into(), "B".into()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootBackend {
    /// No rollback (development).
    #[default]
    None,
    /// EFI Boot Guard: `bg_printenv` / `bg_setenv`.
    Ebg,
    /// U-Boot: `fw_printenv` / `fw_setenv`.
    Uboot,
}

impl BootBackend {
    pub fn name(self) -> &'static str {
        match self {
            BootBackend::None => "none",
            BootBackend::Ebg => "ebg",
            BootBackend::Uboot => "uboot",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkInstalled {
    #[default]
    Swupdate,
    Agent,
}

/// When to reboot into an installed update (`[reboot]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reboot {
    pub policy: RebootPolicy,
    /// `window`: e.g. "Sat 02:00-04:00", "Mon-Fri 22:00-23:30", "02:00-04:00" (every day), local time.
    pub window: Option<String>,
    /// Asked before each reboot: exit status 0 = go, anything else = not now.
    pub consent_command: Option<Vec<String>>,
    /// How long a refused consent defers the reboot.
    #[serde(deserialize_with = "duration")]
    pub consent_retry: Duration,
    /// The reboot itself.
    pub command: Vec<String>,
}

impl Default for Reboot {
    fn default() -> Self {
        Reboot {
            policy: RebootPolicy::Immediate,
            window: None,
            consent_command: None,
            consent_retry: Duration::from_secs(300),
            command: vec!["systemctl".into(), "reboot".into()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootPolicy {
    #[default]
    Immediate,
    Window,
    Manual,
}

/// Checks of a slot on trial before it is confirmed (`[health]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// The systemd state required: "running", "degraded" (running or degraded), or "ignore".
    pub systemd: SystemdHealth,
    /// How long the system may take to finish starting up.
    #[serde(deserialize_with = "duration")]
    pub systemd_timeout: Duration,
    /// `systemctl` (a name is looked up in PATH).
    pub systemctl: PathBuf,
    /// Further checks: `{ name = "app", command = ["/usr/bin/app-check"], timeout = "30s" }`.
    pub checks: Vec<HealthCheck>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            systemd: SystemdHealth::Running,
            systemd_timeout: Duration::from_secs(300),
            systemctl: PathBuf::from("systemctl"),
            checks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemdHealth {
    #[default]
    Running,
    Degraded,
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default = "default_check_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/cip-update-agent"),
            device: Device::default(),
            wfx: None,
            swupdate: Swupdate::default(),
            boot: Boot::default(),
            reboot: Reboot::default(),
            health: Health::default(),
            tls: Tls::default(),
            proxy: Proxy::default(),
            mqtt: None,
            onboarding: Onboarding::default(),
            tuf: None,
            delta: Delta::default(),
            download: Download::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Device {
    /// The wfx client-id. Absent: the device onboards first.
    pub client_id: Option<String>,
    /// "board revision", as SWUpdate reads it.
    pub hwrevision_file: PathBuf,
    /// The running version: `VERSION_ID` of an os-release file, or a file holding only it.
    pub version_file: PathBuf,
}

impl Default for Device {
    fn default() -> Self {
        Device {
            client_id: None,
            hwrevision_file: PathBuf::from("/etc/hwrevision"),
            version_file: PathBuf::from("/etc/os-release"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wfx {
    /// Southbound base URL, e.g. `http://127.0.0.1:8080/api/wfx/v1`.
    pub url: HttpUrl,
    /// Reconciling poll while the event stream holds (it brings every job within a second, so
    /// the poll is only a safety net).
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// Reconciling poll while the event stream cannot be held.
    #[serde(default = "default_fallback_poll", deserialize_with = "duration")]
    pub fallback_poll_interval: Duration,
    /// At most one progress update to wfx per interval.
    #[serde(default = "default_progress", deserialize_with = "duration")]
    pub progress_interval: Duration,
    /// One request to wfx, its answer's body included (not the event stream).
    #[serde(default = "default_wfx_request", deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// The event stream: the wait for its answer, and the longest time without a complete line
    /// (wfx sends a keepalive every 30 s); then it is reconnected.
    #[serde(default = "default_wfx_stream", deserialize_with = "duration")]
    pub stream_timeout: Duration,
}

fn default_wfx_request() -> Duration {
    Duration::from_secs(30)
}

fn default_wfx_stream() -> Duration {
    Duration::from_secs(75)
}

fn default_poll() -> Duration {
    Duration::from_secs(3600)
}

fn default_fallback_poll() -> Duration {
    Duration::from_secs(300)
}

fn default_progress() -> Duration {
    Duration::from_secs(2)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Swupdate {
    /// Default: `$TMPDIR/sockinstctrl`, `/run/swupdate/sockinstctrl` when it exists, or
    /// `/tmp/sockinstctrl` (`SocketPaths::from_env`).
    pub control_socket: Option<PathBuf>,
    /// Default: `swupdateprog` in the control socket's default directory.
    pub progress_socket: Option<PathBuf>,
    #[serde(deserialize_with = "wire")]
    pub wire: WireSetting,
    /// SWUpdate's selection (`set,mode`) sent with each install while slot A runs: the set
    /// that writes slot B. Needs `select_on_b` and a boot backend with slots.
    #[serde(deserialize_with = "selection")]
    pub select_on_a: Option<Selection>,
    /// The same while slot B runs: the set that writes slot A.
    #[serde(deserialize_with = "selection")]
    pub select_on_b: Option<Selection>,
    /// The longest wait between two tries of an update that waits for SWUpdate (away or
    /// busy); the waits start at [`SWUPDATE_RETRY_FIRST`] (or this, if shorter) and double.
    #[serde(deserialize_with = "duration")]
    pub retry_max: Duration,
}

/// The first wait of an update that waits for SWUpdate.
pub const SWUPDATE_RETRY_FIRST: Duration = Duration::from_secs(5);

impl Default for Swupdate {
    fn default() -> Self {
        Swupdate {
            control_socket: None,
            progress_socket: None,
            wire: WireSetting::default(),
            select_on_a: None,
            select_on_b: None,
            retry_max: Duration::from_secs(300),
        }
    }
}

impl Swupdate {
    pub fn socket_paths(&self) -> SocketPaths {
        SocketPaths::with_overrides(self.control_socket.clone(), self.progress_socket.clone())
    }
}

/// Used by every https and mqtts connection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// CA bundle (PEM) trusted for servers; absent: the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Proxy {
    /// HTTP(S) proxy for wfx and downloads; absent: none (the environment is not read, so a
    /// service's behaviour does not depend on who started it).
    pub url: Option<HttpUrl>,
    /// Hosts reached directly: names (a leading dot or none matches subdomains), IP addresses.
    pub no_proxy: Vec<String>,
}

/// An http or https URL, checked at load. Shown (`Display`, `Debug`) with its credentials
/// redacted (`redact::url`); `.0` is the URL itself, for requests only.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUrl(pub String);

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let shown = crate::redact::url(&s);
        let u = reqwest::Url::parse(&s)
            .map_err(|e| serde::de::Error::custom(format!("`{shown}` is not a URL: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(serde::de::Error::custom(format!(
                "`{shown}` is not an http:// or https:// URL with a host"
            )));
        }
        Ok(HttpUrl(s.trim_end_matches('/').to_owned()))
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::redact::url(&self.0))
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpUrl({:?})", crate::redact::url(&self.0))
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let v = humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration such as \"30s\", \"5m\", \"2h\": {e}"
        ))
    })?;
    if v.is_zero() {
        return Err(serde::de::Error::custom(
            "a duration must be more than zero",
        ));
    }
    Ok(v)
}

fn selection<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Selection>, D::Error> {
    String::deserialize(d)?
        .parse()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn wire<'de, D: Deserializer<'de>>(d: D) -> Result<WireSetting, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's message names the key and shows the line.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

impl Config {
    /// Reads a file. `required = false` (the default path): a missing file gives the defaults.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses and checks a configuration; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // toml quotes the offending line: a password or a URL's token on it must not be shown.
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: crate::redact::toml_error(e.to_string().trim_end()),
        })?;
        c.check().map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        })?;
        Ok(c)
    }

    /// What a type cannot say: relations between keys and well-formed values.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.state_dir.is_absolute() {
            return Err(("state_dir", "must be an absolute path".into()));
        }
        self.check_paths()?;
        self.check_durations()?;
        if let Some(id) = &self.device.client_id {
            check_client_id(id).map_err(|m| ("device.client_id", m))?;
        }
        if let Some(m) = &self.mqtt {
            m.check()?;
        }
        self.check_boot()?;
        match (&self.swupdate.select_on_a, &self.swupdate.select_on_b) {
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                let key = if self.swupdate.select_on_a.is_some() {
                    "swupdate.select_on_b"
                } else {
                    "swupdate.select_on_a"
                };
                return Err((
                    key,
                    "set both select_on_a and select_on_b, or neither".into(),
                ));
            }
            (Some(_), Some(_)) if self.boot.backend == BootBackend::None => {
                return Err((
                    "swupdate.select_on_a",
                    "needs boot.backend \"ebg\" or \"uboot\": the running slot picks the set"
                        .into(),
                ));
            }
            (Some(_), Some(_)) => {}
        }
        if !self.onboarding.fleet_key.is_absolute() {
            return Err(("onboarding.fleet_key", "must be an absolute path".into()));
        }
        if let Some(s) = &self.onboarding.serial {
            cip_onboarding::protocol::check_serial(s)
                .map_err(|e| ("onboarding.serial", e.to_string()))?;
        }
        if let Some(m) = &self.onboarding.model {
            cip_onboarding::protocol::check_model(m)
                .map_err(|e| ("onboarding.model", e.to_string()))?;
        }
        if let Some(t) = &self.tuf {
            t.check()?;
        }
        self.delta.check()?;
        self.download.check()?;
        match (&self.tls.client_cert, &self.tls.client_key) {
            (Some(_), None) => {
                return Err(("tls.client_key", "is needed with tls.client_cert".into()));
            }
            (None, Some(_)) => {
                return Err(("tls.client_cert", "is needed with tls.client_key".into()));
            }
            _ => {}
        }
        for h in &self.proxy.no_proxy {
            if h.is_empty() || h.contains(char::is_whitespace) || h.contains('/') {
                return Err((
                    "proxy.no_proxy",
                    format!("`{h}` is not a host name or address"),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// `[boot]`, `[reboot]` and `[health]`.
    fn check_boot(&self) -> Result<(), (&'static str, String)> {
        let b = &self.boot;
        if !(b.ebg_env_files.is_empty() || b.ebg_env_files.len() == 2) {
            return Err((
                "boot.ebg_env_files",
                "must name two files (slot A, slot B), or none for the boot partitions".into(),
            ));
        }
        if b.uboot_slots.len() != 2 || b.uboot_slots[0] == b.uboot_slots[1] {
            return Err((
                "boot.uboot_slots",
                "must name two different values (slot A, slot B)".into(),
            ));
        }
        if b.uboot_slot_variable.is_empty() || b.uboot_slot_variable.contains(['=', ' ']) {
            return Err((
                "boot.uboot_slot_variable",
                "must be a U-Boot variable name".into(),
            ));
        }
        let r = &self.reboot;
        if r.command.is_empty() {
            return Err(("reboot.command", "must name a program".into()));
        }
        if r.consent_command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(("reboot.consent_command", "must name a program".into()));
        }
        match (&r.window, r.policy) {
            (None, RebootPolicy::Window) => {
                return Err((
                    "reboot.window",
                    "is needed with policy = \"window\" (e.g. \"Sat 02:00-04:00\")".into(),
                ));
            }
            (Some(w), _) => {
                Window::parse(w).map_err(|m| ("reboot.window", m))?;
            }
            _ => {}
        }
        for c in &self.health.checks {
            if c.name.trim().is_empty() {
                return Err(("health.checks", "every check needs a name".into()));
            }
            if c.command.is_empty() {
                return Err((
                    "health.checks",
                    format!("check `{}` has no command", c.name),
                ));
            }
        }
        Ok(())
    }
}

/// Upper bounds of the duration keys: beyond them a value is a typo (`"290000000000y"`), and
/// a deadline computed from it would overflow the clock.
pub mod max {
    use std::time::Duration;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    pub const READ_TIMEOUT: Duration = HOUR;
    pub const METADATA_TIMEOUT: Duration = HOUR;
    pub const TIME_SYNC_TIMEOUT: Duration = DAY;
    pub const TUF_POLL_INTERVAL: Duration = Duration::from_secs(7 * 86_400);
    pub const WFX_POLL_INTERVAL: Duration = DAY;
    pub const PROGRESS_INTERVAL: Duration = HOUR;
    pub const CONSENT_RETRY: Duration = Duration::from_secs(7 * 86_400);
    pub const SYSTEMD_TIMEOUT: Duration = DAY;
    pub const CHECK_TIMEOUT: Duration = DAY;
    pub const HEADERS_TIMEOUT: Duration = HOUR;
    pub const STALL_TIMEOUT: Duration = HOUR;
    pub const WFX_REQUEST_TIMEOUT: Duration = HOUR;
    pub const WFX_STREAM_TIMEOUT: Duration = HOUR;
    pub const SWUPDATE_RETRY_MAX: Duration = HOUR;
}

/// `key: must be at most ...` when `v` is above `max`.
fn at_most(key: &'static str, v: Duration, max: Duration) -> Result<(), (&'static str, String)> {
    if v > max {
        return Err((
            key,
            format!(
                "`{}` is too long: at most {}",
                humantime::format_duration(v),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(())
}

/// A file the agent opens must not depend on the directory it was started in.
fn absolute(key: &'static str, p: &Path) -> Result<(), (&'static str, String)> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err((key, format!("`{}` must be an absolute path", p.display())))
    }
}

/// A program: a bare name (looked up in PATH) or an absolute path, never relative to the
/// working directory.
fn program(key: &'static str, p: &Path) -> Result<(), (&'static str, String)> {
    let name_only =
        p.components().count() == 1 && !p.as_os_str().as_encoded_bytes().contains(&b'/');
    if name_only || p.is_absolute() {
        Ok(())
    } else {
        Err((
            key,
            format!(
                "`{}` must be a program name (looked up in PATH) or an absolute path",
                p.display()
            ),
        ))
    }
}

impl Config {
    /// Paths are absolute: a service's files do not depend on where it was started.
    fn check_paths(&self) -> Result<(), (&'static str, String)> {
        absolute("device.version_file", &self.device.version_file)?;
        absolute("device.hwrevision_file", &self.device.hwrevision_file)?;
        if let Some(p) = &self.swupdate.control_socket {
            absolute("swupdate.control_socket", p)?;
        }
        if let Some(p) = &self.swupdate.progress_socket {
            absolute("swupdate.progress_socket", p)?;
        }
        for (key, p) in [
            ("tls.ca_file", &self.tls.ca_file),
            ("tls.client_cert", &self.tls.client_cert),
            ("tls.client_key", &self.tls.client_key),
            ("boot.fw_env_defaults", &self.boot.fw_env_defaults),
        ] {
            if let Some(p) = p {
                absolute(key, p)?;
            }
        }
        if let Some(t) = &self.tuf {
            absolute("tuf.root", &t.root)?;
            absolute("tuf.time_sync_file", &t.time_sync_file)?;
        }
        for p in &self.boot.ebg_env_files {
            absolute("boot.ebg_env_files", p)?;
        }
        absolute("boot.fw_env_config", &self.boot.fw_env_config)?;
        program("boot.bg_printenv", &self.boot.bg_printenv)?;
        program("boot.bg_setenv", &self.boot.bg_setenv)?;
        program("boot.fw_printenv", &self.boot.fw_printenv)?;
        program("boot.fw_setenv", &self.boot.fw_setenv)?;
        program("health.systemctl", &self.health.systemctl)?;
        if let Some(p) = self.reboot.command.first() {
            program("reboot.command", Path::new(p))?;
        }
        if let Some(p) = self.reboot.consent_command.as_ref().and_then(|c| c.first()) {
            program("reboot.consent_command", Path::new(p))?;
        }
        for c in &self.health.checks {
            if let Some(p) = c.command.first() {
                program("health.checks", Path::new(p))?;
            }
        }
        Ok(())
    }

    /// Every duration key below its bound ([`max`]).
    fn check_durations(&self) -> Result<(), (&'static str, String)> {
        if let Some(w) = &self.wfx {
            at_most("wfx.poll_interval", w.poll_interval, max::WFX_POLL_INTERVAL)?;
            at_most(
                "wfx.fallback_poll_interval",
                w.fallback_poll_interval,
                max::WFX_POLL_INTERVAL,
            )?;
            at_most(
                "wfx.progress_interval",
                w.progress_interval,
                max::PROGRESS_INTERVAL,
            )?;
            for (key, v, max) in [
                (
                    "wfx.request_timeout",
                    w.request_timeout,
                    max::WFX_REQUEST_TIMEOUT,
                ),
                (
                    "wfx.stream_timeout",
                    w.stream_timeout,
                    max::WFX_STREAM_TIMEOUT,
                ),
            ] {
                at_most(key, v, max)?;
            }
        }
        if let Some(t) = &self.tuf {
            at_most(
                "tuf.connect_timeout",
                t.connect_timeout,
                max::CONNECT_TIMEOUT,
            )?;
            at_most("tuf.read_timeout", t.read_timeout, max::READ_TIMEOUT)?;
            at_most(
                "tuf.metadata_timeout",
                t.metadata_timeout,
                max::METADATA_TIMEOUT,
            )?;
            at_most(
                "tuf.time_sync_timeout",
                t.time_sync_timeout,
                max::TIME_SYNC_TIMEOUT,
            )?;
            at_most("tuf.poll_interval", t.poll_interval, max::TUF_POLL_INTERVAL)?;
        }
        at_most(
            "swupdate.retry_max",
            self.swupdate.retry_max,
            max::SWUPDATE_RETRY_MAX,
        )?;
        if let Some(m) = &self.mqtt {
            at_most(
                "mqtt.progress_interval",
                m.progress_interval,
                max::PROGRESS_INTERVAL,
            )?;
        }
        at_most(
            "reboot.consent_retry",
            self.reboot.consent_retry,
            max::CONSENT_RETRY,
        )?;
        at_most(
            "health.systemd_timeout",
            self.health.systemd_timeout,
            max::SYSTEMD_TIMEOUT,
        )?;
        for c in &self.health.checks {
            at_most("health.checks", c.timeout, max::CHECK_TIMEOUT)?;
        }
        at_most(
            "download.headers_timeout",
            self.download.headers_timeout,
            max::HEADERS_TIMEOUT,
        )?;
        at_most(
            "download.stall_timeout",
            self.download.stall_timeout,
            max::STALL_TIMEOUT,
        )?;
        Ok(())
    }
}

/// wfx takes any string; the agent keeps to what is safe in URLs, topics and file names.
fn check_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!(
            "`{id}` has `{c}`: use letters, digits and - _ . : only"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(s, Path::new("agent.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.state_dir, Path::new("/var/lib/cip-update-agent"));
        assert!(c.wfx.is_none());
        assert_eq!(c.swupdate.wire, WireSetting::Auto);
    }

    #[test]
    fn download_bounds() {
        // The same bounds as `http::Limits`: its test `download_limits_from_the_configuration`.
        let c = parse("").unwrap();
        assert_eq!(c.download.max_image_size, 8 << 30);
        let c = parse(
            "[download]\nheaders_timeout = \"2s\"\nstall_timeout = \"3s\"\nstall_min_bytes = 10\nmax_image_size = 1000",
        )
        .unwrap();
        assert_eq!(c.download.headers_timeout, Duration::from_secs(2));
        assert_eq!(c.download.stall_timeout, Duration::from_secs(3));
        assert_eq!(c.download.stall_min_bytes, 10);
        assert_eq!(c.download.max_image_size, 1000);
        for (text, key) in [
            ("stall_min_bytes = 0", "download.stall_min_bytes"),
            ("max_image_size = 0", "download.max_image_size"),
            ("stall_timeout = \"0s\"", "stall_timeout"),
        ] {
            let e = parse(&format!("[download]\n{text}")).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn a_full_file() {
        let c = parse(
            r#"
state_dir = "/data/agent"
[device]
client_id = "dev-0042"
[wfx]
url = "https://wfx.example:8443/api/wfx/v1/"
poll_interval = "90s"
[swupdate]
control_socket = "/run/swupdate/sockinstctrl"
wire = "2025.05"
[tls]
ca_file = "/etc/ca.pem"
client_cert = "/etc/d.pem"
client_key = "/etc/d.key"
[proxy]
url = "http://proxy:3128"
no_proxy = ["localhost", ".plant.local", "10.0.0.1"]
"#,
        )
        .unwrap();
        let w = c.wfx.unwrap();
        assert_eq!(w.url.0, "https://wfx.example:8443/api/wfx/v1");
        assert_eq!(w.poll_interval, Duration::from_secs(90));
        assert_eq!(w.fallback_poll_interval, Duration::from_secs(300));
        assert_eq!(w.progress_interval, Duration::from_secs(2));
        assert_eq!(w.request_timeout, Duration::from_secs(30));
        assert_eq!(w.stream_timeout, Duration::from_secs(75));
        assert_eq!(c.device.client_id.as_deref(), Some("dev-0042"));
        assert_eq!(
            c.swupdate.wire,
            WireSetting::Fixed(cip_swupdate::Wire::V2024_12)
        );
        assert_eq!(
            c.swupdate.socket_paths().control,
            Path::new("/run/swupdate/sockinstctrl")
        );
        assert_eq!(c.proxy.no_proxy.len(), 3);
    }

    #[test]
    fn boot_reboot_and_health() {
        let c = parse(
            r#"
[boot]
backend = "ebg"
mark_installed = "agent"
ebg_env_files = ["/t/BOOT0/BGENV.DAT", "/t/BOOT1/BGENV.DAT"]
[reboot]
policy = "window"
window = "Sat 02:00-04:00"
consent_command = ["/usr/bin/may-reboot", "--now"]
consent_retry = "10m"
[health]
systemd = "degraded"
checks = [{ name = "app", command = ["/bin/app-check"], timeout = "30s" }, { name = "net", command = ["ping", "-c1", "gw"] }]
"#,
        )
        .unwrap();
        assert_eq!(c.boot.backend, BootBackend::Ebg);
        assert_eq!(c.boot.mark_installed, MarkInstalled::Agent);
        assert_eq!(c.boot.ebg_env_files.len(), 2);
        assert_eq!(c.boot.fw_env_config, Path::new("/etc/fw_env.config"));
        assert_eq!(c.reboot.policy, RebootPolicy::Window);
        assert_eq!(c.reboot.consent_retry, Duration::from_secs(600));
        assert_eq!(c.reboot.command, ["systemctl", "reboot"]);
        assert_eq!(c.health.systemd, SystemdHealth::Degraded);
        assert_eq!(c.health.checks[0].timeout, Duration::from_secs(30));
        assert_eq!(c.health.checks[1].timeout, Duration::from_secs(60));
        let d = Config::default();
        assert_eq!(d.boot.backend, BootBackend::None);
        assert_eq!(d.reboot.policy, RebootPolicy::Immediate);
        assert_eq!(d.health.systemd, SystemdHealth::Running);
    }

    /// Every error names the key (and toml's the line).
    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("colour = 1", "unknown field `colour`"),
            (
                "[wfx]\nurl = \"http://h\"\npoll = \"1m\"",
                "unknown field `poll`",
            ),
            ("[wfx]\nurl = \"ftp://h\"", "not an http:// or https:// URL"),
            // Host names are ASCII (no IDNA in the binary); punycode is the way to name others.
            (
                "[wfx]\nurl = \"http://bücher.example\"",
                "invalid international domain name",
            ),
            ("[wfx]\npoll_interval = \"5m\"", "missing field `url`"),
            (
                "[wfx]\nurl = \"http://h\"\npoll_interval = \"soon\"",
                "not a duration",
            ),
            (
                "[wfx]\nurl = \"http://h\"\npoll_interval = \"0s\"",
                "more than zero",
            ),
            ("[swupdate]\nwire = \"2019.11\"", "older than 2022.12"),
            ("[swupdate]\nselect_on_a = \"copy2\"", "is not \"set,mode\""),
            (
                "[swupdate]\nselect_on_a = \"stable,copy2\"\n[boot]\nbackend = \"ebg\"",
                "swupdate.select_on_b: set both",
            ),
            (
                "[swupdate]\nselect_on_a = \"s,copy2\"\nselect_on_b = \"s,copy1\"",
                "swupdate.select_on_a: needs boot.backend",
            ),
            (
                "state_dir = \"relative\"",
                "state_dir: must be an absolute path",
            ),
            (
                "[device]\nclient_id = \"a b\"",
                "device.client_id: `a b` has ` `",
            ),
            (
                "[tls]\nclient_cert = \"/c.pem\"",
                "tls.client_key: is needed",
            ),
            ("[proxy]\nno_proxy = [\"a/b\"]", "proxy.no_proxy"),
            ("[delta]\nfallback = \"maybe\"", "unknown variant `maybe`"),
            (
                "[delta]\nmax_ranges_per_request = 0",
                "delta.max_ranges_per_request: must be between",
            ),
            ("[delta]\nseeds = [\"old.swu\"]", "delta.seeds: `old.swu`"),
            ("state_dir = 3", "invalid type"),
            ("[boot]\nbackend = \"grub\"", "unknown variant `grub`"),
            (
                "[boot]\nebg_env_files = [\"/a\"]",
                "boot.ebg_env_files: must name two",
            ),
            ("[boot]\nuboot_slots = [\"a\", \"a\"]", "boot.uboot_slots"),
            ("[boot]\nmark_installed = \"me\"", "unknown variant `me`"),
            ("[reboot]\npolicy = \"window\"", "reboot.window: is needed"),
            (
                "[reboot]\npolicy = \"window\"\nwindow = \"Sat 25:00-26:00\"",
                "reboot.window",
            ),
            ("[reboot]\ncommand = []", "reboot.command"),
            ("[health]\nsystemd = \"maybe\"", "unknown variant `maybe`"),
            (
                "[health]\nchecks = [{ name = \"x\", command = [] }]",
                "health.checks: check `x` has no command",
            ),
            (
                "[onboarding]\nfleet_key = \"k.pub\"",
                "onboarding.fleet_key: must be an absolute path",
            ),
            (
                "[onboarding]\nserial = \"S N\"",
                "onboarding.serial: serial `S N` has ` `",
            ),
            ("[onboarding]\nmodel = \"a\\nb\"", "onboarding.model: model"),
            ("[onboarding]\nkey = \"x\"", "unknown field `key`"),
            (
                "[tuf]\nmetadata_url = \"http://h/m\"",
                "missing field `targets_url`",
            ),
            (
                "[tuf]\nmetadata_url = \"http://h/m\"\ntargets_url = \"http://h/t\"\nmax_timestamp_size = 0",
                "tuf.max_timestamp_size: must be more than 0",
            ),
            (
                "[tuf]\nmetadata_url = \"http://h/m\"\ntargets_url = \"http://h/t\"\nread_timeout = \"x\"",
                "not a duration",
            ),
            (
                "[tuf]\nmetadata_url = \"http://h/m?token=t\"\ntargets_url = \"http://h/t\"",
                "tuf.metadata_url: `http://h/m?token=***` has a query",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.starts_with("agent.toml: "), "{e}");
        }
        let e = parse("[wfx]\nurl = \"http://h\"\npoll = \"1m\"").unwrap_err();
        assert!(e.contains("line 3") && e.contains("poll = \"1m\""), "{e}");
    }

    /// A configuration error may end up in a support ticket: no password or token in it.
    #[test]
    fn errors_show_no_secret() {
        for text in [
            "[wfx]\nurl = \"ftp://u:pw-1f@h/?token=tok-2e\"",
            "[wfx]\nurl = \"http://tok-2e @h:99999\"",
            "[wfx]\nurl = \"http://u:pw-1f@h/?token=tok-2e\"\npoll_interval = \"0s\"",
            "[wfx]\nurl = \"http://tok-2e@h\"\npoll_interval = \"soon\"",
            "[proxy]\nurl = \"socks://tok-2e@p\"",
            "[mqtt]\nurl = \"mqtt://u:pw-1f@h\"",
            "[mqtt]\nurl = \"tok-2e@h\"",
            "[mqtt]\nurl = \"mqtt://h\"\nusername = \"u\"\npassword = 987654",
            "[mqtt]\nurl = \"mqtt://h\"\nusername = \"u\"\npassword = [\"pw-1f\"]",
            "[mqtt]\nurl = \"mqtt://h\"\nusername = \"u\"\npassword = [\n  \"pw-1f\",\n  \"tok-2e\"\n]",
            "mqtt = { url = \"mqtt://h\", username = \"u\", password = 987654 }",
            "mqtt = { url = \"mqtt://h\", username = \"u\", password = \"pw-1f\", colour = 1 }",
        ] {
            let e = parse(text).expect_err(text);
            for secret in ["pw-1f", "tok-2e", "987654"] {
                assert!(!e.contains(secret), "{text:?}: {e}");
            }
            // Still says which line and what is wrong.
            assert!(e.starts_with("agent.toml: "), "{e}");
        }
    }

    #[test]
    fn durations_have_upper_bounds() {
        for (text, want) in [
            (
                "[wfx]\nurl = \"http://h\"\npoll_interval = \"290000000000y\"",
                "wfx.poll_interval: `290000000000years` is too long: at most 1day",
            ),
            (
                "[wfx]\nurl = \"http://h\"\nprogress_interval = \"2h\"",
                "wfx.progress_interval",
            ),
            (
                "[reboot]\nconsent_retry = \"8days\"",
                "reboot.consent_retry",
            ),
            (
                "[swupdate]\nretry_max = \"2h\"",
                "swupdate.retry_max: `2h` is too long: at most 1h",
            ),
            (
                "[health]\nsystemd_timeout = \"400d\"",
                "health.systemd_timeout",
            ),
            (
                "[health]\nchecks = [{ name = \"x\", command = [\"/x\"], timeout = \"1000y\" }]",
                "health.checks",
            ),
            (
                "[tuf]\nmetadata_url = \"http://h/m\"\ntargets_url = \"http://h/t\"\npoll_interval = \"30d\"",
                "tuf.poll_interval",
            ),
            (
                "[tuf]\nmetadata_url = \"http://h/m\"\ntargets_url = \"http://h/t\"\nread_timeout = \"2h\"",
                "tuf.read_timeout",
            ),
            (
                "[mqtt]\nurl = \"mqtt://h\"\nprogress_interval = \"99999999999y\"",
                "mqtt.progress_interval",
            ),
            (
                "[download]\nheaders_timeout = \"290000000000y\"",
                "download.headers_timeout",
            ),
            (
                "[download]\nstall_timeout = \"2h\"",
                "download.stall_timeout",
            ),
            (
                "[wfx]\nurl = \"http://h\"\nrequest_timeout = \"2h\"",
                "wfx.request_timeout",
            ),
            (
                "[wfx]\nurl = \"http://h\"\nstream_timeout = \"3h\"",
                "wfx.stream_timeout",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // At the bound is fine.
        parse("[wfx]\nurl = \"http://h\"\npoll_interval = \"1day\"").unwrap();
    }

    /// A service's files do not depend on the directory it was started in.
    #[test]
    fn paths_must_be_absolute() {
        for (text, key) in [
            (
                "[device]\nversion_file = \"os-release\"",
                "device.version_file",
            ),
            (
                "[device]\nhwrevision_file = \"etc/hw\"",
                "device.hwrevision_file",
            ),
            (
                "[swupdate]\ncontrol_socket = \"sock\"",
                "swupdate.control_socket",
            ),
            (
                "[swupdate]\nprogress_socket = \"./p\"",
                "swupdate.progress_socket",
            ),
            ("[tls]\nca_file = \"ca.pem\"", "tls.ca_file"),
            (
                "[tls]\nclient_cert = \"/c\"\nclient_key = \"k\"",
                "tls.client_key",
            ),
            (
                "[tuf]\nroot = \"root.json\"\nmetadata_url = \"http://h/m\"\ntargets_url = \"http://h/t\"",
                "tuf.root",
            ),
            (
                "[boot]\nfw_env_config = \"fw_env.config\"",
                "boot.fw_env_config",
            ),
            ("[boot]\nbg_setenv = \"bin/bg_setenv\"", "boot.bg_setenv"),
            ("[reboot]\ncommand = [\"./reboot\"]", "reboot.command"),
            (
                "[mqtt]\nurl = \"mqtts://h\"\nca_file = \"ca.pem\"",
                "mqtt.ca_file",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.contains(&format!("{key}: `")) && e.contains("absolute path"),
                "{text:?}: {e}"
            );
        }
        // Programs may still be names looked up in PATH.
        parse("[boot]\nbg_setenv = \"bg_setenv\"\n[reboot]\ncommand = [\"systemctl\", \"reboot\"]")
            .unwrap();
    }

    #[test]
    fn the_wfx_url_is_shown_redacted() {
        let c = parse("[wfx]\nurl = \"https://TOKEN@h/api?k=v\"").unwrap();
        let w = c.wfx.unwrap();
        assert_eq!(w.url.0, "https://TOKEN@h/api?k=v");
        assert_eq!(w.url.to_string(), "https://***@h/api?k=***");
        assert!(!format!("{:?}", w.url).contains("TOKEN"));
    }

    #[test]
    fn missing_default_file_is_the_defaults_but_a_named_one_is_an_error() {
        let p = Path::new("/nonexistent/agent.toml");
        assert_eq!(Config::load(p, false).unwrap(), Config::default());
        let e = Config::load(p, true).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/agent.toml: "), "{e}");
    }

    /// The shipped default file parses, and every key it has is in the README's table.
    #[test]
    fn shipped_file_parses_and_is_documented() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let file = dir.join("config/agent.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        Config::parse(&text, &file).unwrap();
        // With every commented key enabled it parses too: the comments are not stale.
        let enabled: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| looks_like_setting(r) || looks_like_section(r))
                    .unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            // The software-set selection needs a backend with slots.
            .replace("backend = \"none\"", "backend = \"ebg\"");
        Config::parse(&enabled, &file).unwrap();
        let readme = std::fs::read_to_string(dir.join("../README.md")).unwrap();
        let mut section = String::new();
        for l in enabled.lines() {
            if let Some(s) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = format!("{s}.");
            } else if looks_like_setting(l) {
                let key = format!("`{section}{}`", l.split(' ').next().unwrap());
                assert!(readme.contains(&key), "README lacks {key}");
            }
        }
    }

    fn looks_like_section(l: &str) -> bool {
        l.starts_with('[') && l.ends_with(']') && !l.contains(' ')
    }

    fn looks_like_setting(l: &str) -> bool {
        l.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
    }
}

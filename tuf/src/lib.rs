//! TUF: no byte is installed unless the device's TUF metadata vouches for it.
//!
//! The client workflow of the TUF specification (section 5), written here because `tough`
//! cannot read RS-TUF repositories (succinct hash bins, consistent-snapshot target names in
//! subdirectories, lazily loaded delegations, byte-exact storage). Its decisions follow
//! python-tuf's ngclient, the reference client:
//! - [`trusted`]: what new metadata must satisfy (signatures, versions, hashes, expiry);
//! - [`delegation`]: which roles may vouch for a target path;
//! - [`Updater`]: the effects around them (fetching, the trusted store, the search).
//!
//! Use: [`Updater::init`] (or [`Updater::ensure_root`]) once with the shipped root,
//! [`Updater::refresh`], [`Updater::find_target`], then either [`Updater::download_target`] or
//! the daemon's own download through [`Updater::target_url`] and a [`TargetVerifier`].
//! [`artifacts`]: the gate of an installer built on them (target lookup, hardware, the bytes).
//!
//! A library of its own: it knows nothing of the agent. The network is the caller's
//! ([`Fetcher`]); files are written with [`cip_atomic`].

pub mod artifacts;
pub mod cjson;
pub mod delegation;
pub mod error;
pub mod fetch;
pub mod keys;
pub mod metadata;
mod spki;
pub mod store;
pub mod time;
pub mod trusted;
pub mod verify;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

pub use error::{FetchError, TufError};
pub use fetch::Fetcher;
pub use store::MetadataStore;
pub use time::{Clock, SystemClock};
pub use trusted::TrustedSet;
pub use verify::TargetVerifier;

use fetch::fetch_bytes;
use metadata::{Root, Signed};
use trusted::TimestampUpdate;

/// Size and time limits of a refresh and a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest root accepted (each of the chain).
    pub root_max: u64,
    /// Largest timestamp accepted.
    pub timestamp_max: u64,
    /// Largest snapshot accepted when timestamp does not list its length.
    pub snapshot_max: u64,
    /// Largest targets (and delegated role) when snapshot does not list its length.
    pub targets_max: u64,
    /// Root versions fetched in one refresh at most.
    pub max_root_rotations: u64,
    /// Delegated roles visited in one target search at most.
    pub max_delegations: usize,
    /// Whole-file time limit of a metadata file.
    pub metadata_timeout: Duration,
    /// Whole-file time limit of a target.
    pub target_timeout: Duration,
}

impl Default for Limits {
    /// python-tuf's defaults (UpdaterConfig): 256 root rotations, 32 delegations.
    fn default() -> Self {
        Limits {
            root_max: 512_000,
            timestamp_max: 16_384,
            snapshot_max: 2_000_000,
            targets_max: 5_000_000,
            max_root_rotations: 256,
            max_delegations: 32,
            metadata_timeout: Duration::from_secs(120),
            target_timeout: Duration::from_secs(6 * 3600),
        }
    }
}

/// A target as its (trusted) targets metadata describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TargetInfo {
    /// The target path (its name in the repository).
    pub path: String,
    /// Its exact length in bytes.
    pub length: u64,
    /// Its hashes: algorithm (`sha256`, `sha512`) to hex digest.
    pub hashes: BTreeMap<String, String>,
    /// `custom` of the target (`null` when absent).
    pub custom: serde_json::Value,
}

/// Everything but `A-Za-z0-9-._~` percent-encoded (Python's `quote(s, safe="")`): role names
/// in URLs and file names, target paths as file names.
const QUOTE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What may stay as it is in a URL path segment.
const SEGMENT: &AsciiSet = &QUOTE
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// `s` percent-encoded as one name (see [`target_file_name`] for a target path).
pub fn quote(s: &str) -> String {
    utf8_percent_encode(s, QUOTE).to_string()
}

/// The file a target is stored under in a download directory (python-tuf's rule): its path
/// percent-encoded as one name, `a/b/f.swu` -> `a%2Fb%2Ff.swu`.
pub fn target_file_name(path: &str) -> String {
    match quote(path).as_str() {
        // Names that would mean a directory.
        "" => "%00".to_owned(),
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        q => q.to_owned(),
    }
}

/// A client of one repository.
pub struct Updater<F: Fetcher> {
    store: MetadataStore,
    metadata_url: String,
    targets_url: Option<String>,
    limits: Limits,
    fetcher: F,
    clock: Arc<dyn Clock>,
    /// The metadata of the last successful refresh.
    trusted: Option<TrustedSet>,
}

impl<F: Fetcher> Updater<F> {
    /// `metadata_url`/`targets_url`: base URLs (a trailing `/` is ignored); `targets_url` may be
    /// `None` when only metadata is wanted.
    pub fn new(
        metadata_dir: impl Into<PathBuf>,
        metadata_url: &str,
        targets_url: Option<&str>,
        limits: Limits,
        fetcher: F,
        clock: Arc<dyn Clock>,
    ) -> Updater<F> {
        Updater {
            store: MetadataStore::new(metadata_dir),
            metadata_url: metadata_url.trim_end_matches('/').to_owned(),
            targets_url: targets_url.map(|u| u.trim_end_matches('/').to_owned()),
            limits,
            fetcher,
            clock,
            trusted: None,
        }
    }

    /// The trusted store.
    pub fn store(&self) -> &MetadataStore {
        &self.store
    }

    /// The metadata of the last successful refresh.
    pub fn trusted(&self) -> Option<&TrustedSet> {
        self.trusted.as_ref()
    }

    /// Makes `root` the trusted root (no network): it must be root metadata signed by its own
    /// threshold. Stored byte for byte as `root.json`.
    pub fn init(&mut self, root: &[u8]) -> Result<(), TufError> {
        TrustedSet::new(root, self.clock.now())?;
        self.trusted = None;
        self.store.store("root", root)
    }

    /// The daemon's start: takes the shipped root when the store has none, or an older one (a
    /// new image may ship a newer root); keeps a stored root that rotated further. Returns
    /// whether it took the shipped one.
    pub fn ensure_root(&mut self, shipped: &[u8]) -> Result<bool, TufError> {
        let shipped_v = Signed::<Root>::parse("root", shipped)?.version();
        let stored_v = self
            .store
            .load("root")
            .ok()
            .and_then(|b| TrustedSet::new(&b, self.clock.now()).ok())
            .map(|s| s.root().common.version);
        match stored_v {
            Some(v) if v >= shipped_v => Ok(false),
            _ => {
                self.init(shipped)?;
                Ok(true)
            }
        }
    }

    fn meta_url(&self, role: &str, version: Option<u64>) -> String {
        match version {
            Some(v) => format!("{}/{v}.{}.json", self.metadata_url, quote(role)),
            None => format!("{}/{}.json", self.metadata_url, quote(role)),
        }
    }

    async fn fetch_meta(
        &self,
        role: &str,
        version: Option<u64>,
        max: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let url = self.meta_url(role, version);
        tracing::debug!("fetching {url}");
        fetch_bytes(&self.fetcher, &url, max, self.limits.metadata_timeout).await
    }

    /// The client workflow up to the top-level targets: root chain, timestamp, snapshot,
    /// targets. Each newly trusted file is stored before the next step.
    pub async fn refresh(&mut self) -> Result<(), TufError> {
        self.trusted = None;
        let root = self
            .store
            .load("root")
            .map_err(|_| TufError::NoRoot(self.store.dir().to_owned()))?;
        let mut set = TrustedSet::new(&root, self.clock.now())?;
        let before = top_keys(set.root());

        // 5.3: the root chain, N+1.root.json until the repository has no next one.
        let start = set.root().common.version;
        for v in start + 1..=start.saturating_add(self.limits.max_root_rotations) {
            match self.fetch_meta("root", Some(v), self.limits.root_max).await {
                Ok(data) => {
                    set.update_root(&data)?;
                    self.store.store("root", &data)?;
                }
                Err(e) if e.is_not_found() => break,
                Err(source) => {
                    return Err(TufError::Fetch {
                        role: "root".into(),
                        source,
                    });
                }
            }
        }
        // 5.3.11: new timestamp or snapshot keys: the stored files are no rollback reference
        // (they would fail verification anyway; removing them says so on disk).
        if top_keys(set.root()) != before {
            self.store.remove("timestamp")?;
            self.store.remove("snapshot")?;
        }

        // 5.4: timestamp. The stored one (if still valid) is the rollback reference.
        if let Ok(data) = self.store.load("timestamp") {
            if let Err(e) = set.update_timestamp(&data) {
                tracing::debug!("stored timestamp not valid as final: {e}");
            }
        }
        let data = self
            .fetch_meta("timestamp", None, self.limits.timestamp_max)
            .await
            .map_err(|source| TufError::Fetch {
                role: "timestamp".into(),
                source,
            })?;
        if set.update_timestamp(&data)? == TimestampUpdate::New {
            self.store.store("timestamp", &data)?;
        }

        // 5.5: snapshot, fetched only when the stored one is not the one timestamp names.
        let stored_ok = match self.store.load("snapshot") {
            Ok(data) => match set.update_snapshot(&data, true) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!("stored snapshot not valid as final: {e}");
                    false
                }
            },
            Err(_) => false,
        };
        if !stored_ok {
            let meta = set
                .timestamp()
                .map(|t| t.snapshot_meta().clone())
                .ok_or_else(|| TufError::invalid("snapshot", "no timestamp"))?;
            let version = set.root().consistent_snapshot.then_some(meta.version);
            let max = meta.length.unwrap_or(self.limits.snapshot_max);
            let data = self
                .fetch_meta("snapshot", version, max)
                .await
                .map_err(|source| TufError::Fetch {
                    role: "snapshot".into(),
                    source,
                })?;
            set.update_snapshot(&data, false)?;
            self.store.store("snapshot", &data)?;
        }

        // 5.6: top-level targets.
        self.load_targets(&mut set, "targets", "root").await?;
        self.trusted = Some(set);
        Ok(())
    }

    /// Loads `role` (delegated by `parent`) into `set`: from the store if it is still the one
    /// snapshot names, else from the repository. A role already loaded through another
    /// delegator is verified again, against `parent`'s keys (a diamond delegation).
    async fn load_targets(
        &self,
        set: &mut TrustedSet,
        role: &str,
        parent: &str,
    ) -> Result<(), TufError> {
        if set.contains(role, parent) {
            return Ok(());
        }
        if set.targets(role).is_some() {
            return set.verify_delegation(role, parent);
        }
        if let Ok(data) = self.store.load(role) {
            match set.update_targets(role, parent, &data) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!("stored {role} not valid: {e}"),
            }
        }
        let meta = set
            .snapshot()
            .and_then(|s| s.meta.get(&format!("{role}.json")))
            .cloned()
            .ok_or_else(|| TufError::invalid(role, "snapshot does not list it"))?;
        let version = set.root().consistent_snapshot.then_some(meta.version);
        let max = meta.length.unwrap_or(self.limits.targets_max);
        let data = self
            .fetch_meta(role, version, max)
            .await
            .map_err(|source| TufError::Fetch {
                role: role.to_owned(),
                source,
            })?;
        set.update_targets(role, parent, &data)?;
        self.store.store(role, &data)
    }

    /// The target at `path`, searched through the delegations in pre-order depth-first order
    /// (refreshing first if no refresh succeeded yet). `None`: no role on the search path lists
    /// it. Only the roles on the search path are fetched.
    pub async fn find_target(&mut self, path: &str) -> Result<Option<TargetInfo>, TufError> {
        if self.trusted.is_none() {
            self.refresh().await?;
        }
        let Some(mut set) = self.trusted.take() else {
            return Err(TufError::invalid("targets", "not loaded"));
        };
        let found = self.search(&mut set, path).await;
        self.trusted = Some(set);
        found
    }

    async fn search(
        &self,
        set: &mut TrustedSet,
        path: &str,
    ) -> Result<Option<TargetInfo>, TufError> {
        let mut to_visit: Vec<(String, String)> = vec![("targets".into(), "root".into())];
        let mut visited: BTreeSet<String> = BTreeSet::new();
        while visited.len() <= self.limits.max_delegations {
            let Some((role, parent)) = to_visit.pop() else {
                break;
            };
            if visited.contains(&role) {
                continue;
            }
            self.load_targets(set, &role, &parent).await?;
            let Some(targets) = set.targets(&role) else {
                return Err(TufError::invalid(&role, "not loaded"));
            };
            if let Some(t) = targets.targets.get(path) {
                tracing::debug!("target {path} found in {role}");
                return Ok(Some(TargetInfo {
                    path: path.to_owned(),
                    length: t.length,
                    hashes: t.hashes.clone(),
                    custom: t.custom.clone().unwrap_or(serde_json::Value::Null),
                }));
            }
            let mut children = Vec::new();
            if let Some(d) = &targets.delegations {
                for (child, terminating) in delegation::roles_for_target(d, path) {
                    children.push((child, role.clone()));
                    if terminating {
                        // No backtracking to roles not yet visited.
                        to_visit.clear();
                        break;
                    }
                }
            }
            visited.insert(role);
            children.reverse();
            to_visit.extend(children);
        }
        if !to_visit.is_empty() {
            tracing::warn!(
                "target {path}: search stopped after {} delegated roles",
                self.limits.max_delegations
            );
        }
        Ok(None)
    }

    /// Every target the metadata vouches for (TUF-only mode looks for the newest one): all roles
    /// listed in snapshot and reachable through the delegations are loaded (at most
    /// `max_roles`), then each listed path goes through the normal search, so a target counts
    /// only where the delegations give it to the role that lists it.
    pub async fn all_targets(&mut self, max_roles: usize) -> Result<Vec<TargetInfo>, TufError> {
        if self.trusted.is_none() {
            self.refresh().await?;
        }
        let Some(mut set) = self.trusted.take() else {
            return Err(TufError::invalid("targets", "not loaded"));
        };
        let r = self.walk_all(&mut set, max_roles).await;
        self.trusted = Some(set);
        r
    }

    async fn walk_all(
        &self,
        set: &mut TrustedSet,
        max_roles: usize,
    ) -> Result<Vec<TargetInfo>, TufError> {
        let listed: BTreeSet<String> = set
            .snapshot()
            .map(|s| {
                s.meta
                    .keys()
                    .filter_map(|k| k.strip_suffix(".json"))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut queue: Vec<(String, String)> = vec![("targets".into(), "root".into())];
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut paths: BTreeSet<String> = BTreeSet::new();
        while let Some((role, parent)) = queue.pop() {
            if !seen.insert(role.clone()) {
                continue;
            }
            if seen.len() > max_roles {
                return Err(TufError::invalid(
                    &role,
                    format!("more than {max_roles} roles to read for the list of targets"),
                ));
            }
            self.load_targets(set, &role, &parent).await?;
            let Some(t) = set.targets(&role) else {
                continue;
            };
            paths.extend(t.targets.keys().cloned());
            let Some(d) = &t.delegations else {
                continue;
            };
            let children: Vec<String> = match (&d.roles, &d.succinct_roles) {
                (Some(roles), _) => roles.iter().map(|r| r.name.clone()).collect(),
                (None, Some(s)) => listed
                    .iter()
                    .filter(|n| delegation::is_bin(s, n))
                    .cloned()
                    .collect(),
                (None, None) => Vec::new(),
            };
            for c in children {
                if listed.contains(&c) {
                    queue.push((c, role.clone()));
                }
            }
        }
        let mut out = Vec::new();
        for p in paths {
            if let Some(info) = self.search(set, &p).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Where the target's bytes are: with consistent snapshots
    /// `<targets_url>/<dir>/<hash>.<basename>` (the sha256 when listed), else
    /// `<targets_url>/<path>`.
    pub fn target_url(&self, info: &TargetInfo) -> Result<String, TufError> {
        let base = self
            .targets_url
            .as_deref()
            .ok_or_else(|| TufError::Target {
                path: info.path.clone(),
                message: "no targets URL configured".into(),
            })?;
        let consistent = self
            .trusted
            .as_ref()
            .map(|s| s.root().consistent_snapshot)
            .ok_or_else(|| TufError::invalid("targets", "not refreshed"))?;
        Ok(target_url(base, info, consistent))
    }

    /// Downloads the target into `dir` (file name: [`target_file_name`]), verified; a file
    /// already there with the target's length and hashes is kept and not fetched again. The
    /// bytes go to a temporary file that is renamed only once verified.
    pub async fn download_target(
        &mut self,
        info: &TargetInfo,
        dir: &Path,
    ) -> Result<PathBuf, TufError> {
        let path = dir.join(target_file_name(&info.path));
        let store_err = |p: &Path| {
            let p = p.to_owned();
            move |source| TufError::Store { path: p, source }
        };
        if file_matches(&path, info) {
            tracing::debug!("target {} already present", info.path);
            return Ok(path);
        }
        let url = self.target_url(info)?;
        let mut verifier = TargetVerifier::new(info)?;
        let (mut file, tmp) =
            cip_atomic::create_temp(&path, cip_atomic::PRIVATE_FILE).map_err(store_err(&path))?;
        let fetched = self
            .fetcher
            .fetch(
                &url,
                info.length,
                self.limits.target_timeout,
                &mut |c: &[u8]| {
                    verifier.update(c).map_err(|e| e.to_string())?;
                    file.write_all(c).map_err(|e| e.to_string())
                },
            )
            .await
            .map_err(|source| TufError::TargetFetch {
                path: info.path.clone(),
                source,
            });
        let done = fetched
            .and_then(|()| verifier.finish())
            .and_then(|()| file.sync_all().map_err(store_err(&tmp)))
            .and_then(|()| cip_atomic::persist(&tmp, &path).map_err(store_err(&path)));
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done.map(|()| path)
    }
}

/// Key ids and thresholds of timestamp and snapshot: when they change with a new root, the
/// stored timestamp and snapshot are dropped (fast-forward attack recovery).
fn top_keys(root: &Root) -> Vec<(Vec<String>, u64)> {
    ["timestamp", "snapshot"]
        .iter()
        .map(|r| {
            root.roles
                .get(*r)
                .map(|k| {
                    let mut ids = k.keyids.clone();
                    ids.sort();
                    ids.dedup();
                    let keys = ids
                        .into_iter()
                        .map(|id| {
                            root.keys
                                .get(&id)
                                .map(|k| format!("{}:{}", k.keytype, k.keyval.public))
                                .unwrap_or(id)
                        })
                        .collect();
                    (keys, k.threshold)
                })
                .unwrap_or_default()
        })
        .collect()
}

/// The URL of a target under `base` (see [`Updater::target_url`]).
pub fn target_url(base: &str, info: &TargetInfo, consistent_snapshot: bool) -> String {
    let (dir, name) = match info.path.rsplit_once('/') {
        Some((d, n)) => (Some(d), n),
        None => (None, info.path.as_str()),
    };
    let name = if consistent_snapshot {
        let hash = info
            .hashes
            .get("sha256")
            .or_else(|| info.hashes.values().next())
            .map(String::as_str)
            .unwrap_or_default();
        format!("{hash}.{name}")
    } else {
        name.to_owned()
    };
    let mut url = base.trim_end_matches('/').to_owned();
    for seg in dir.into_iter().flat_map(|d| d.split('/')) {
        url.push('/');
        url.push_str(&utf8_percent_encode(seg, SEGMENT).to_string());
    }
    url.push('/');
    url.push_str(&utf8_percent_encode(&name, SEGMENT).to_string());
    url
}

/// Whether the file at `path` has the target's length and hashes.
pub fn file_matches(path: &Path, info: &TargetInfo) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(mut v) = TargetVerifier::new(info) else {
        return false;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return v.finish().is_ok(),
            Ok(n) => {
                if v.update(&buf[..n]).is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

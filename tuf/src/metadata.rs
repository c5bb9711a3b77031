//! The four metadata types as the specification defines them (section 4), parsed from bytes,
//! with the checks python-tuf's Metadata API makes at parse time. Unknown fields are ignored
//! (they are still covered by the signature, which is made over the canonical form of the whole
//! `signed` object as received).

use std::collections::BTreeMap;

use ring::digest;
use serde::Deserialize;
use serde_json::Value;

use super::error::TufError;
use super::{cjson, time};

/// The specification major version this client reads.
const SPEC_MAJOR: &str = "1";

/// Top-level role names; a delegated role may not take one.
pub const TOP_LEVEL: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

/// A signature over the canonical `signed`.
#[derive(Debug, Clone, Deserialize)]
pub struct Signature {
    /// The key that made it.
    pub keyid: String,
    /// The signature, hex.
    pub sig: String,
}

#[derive(Debug, Clone, Deserialize)]
struct RawEnvelope {
    signed: Value,
    signatures: Vec<Signature>,
}

/// Fields every `signed` has.
#[derive(Debug, Clone, Deserialize)]
pub struct Common {
    /// The role type (`root`, `timestamp`, ...).
    #[serde(rename = "_type")]
    pub type_: String,
    /// The TUF specification version the metadata follows.
    pub spec_version: String,
    /// The metadata's version (rollback protection).
    pub version: u64,
    /// When it expires (RFC 3339, UTC).
    pub expires: String,
}

/// A public key of a role.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Key {
    /// `ed25519`, `ecdsa`, `rsa`.
    pub keytype: String,
    /// The signature scheme.
    pub scheme: String,
    /// The key material.
    pub keyval: KeyVal,
}

/// The key material of a [`Key`].
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct KeyVal {
    /// Absent for key types this client cannot use (such a key never verifies, but the
    /// metadata listing it still parses, as in python-tuf).
    #[serde(default)]
    pub public: String,
}

/// Which keys sign a top-level role, and how many must.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RoleKeys {
    /// The role's key ids.
    pub keyids: Vec<String>,
    /// Valid signatures needed.
    pub threshold: u64,
}

/// The root role: the keys of every top-level role.
#[derive(Debug, Clone, Deserialize)]
pub struct Root {
    /// The common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Whether metadata and target files are named with their version or hash.
    #[serde(default)]
    pub consistent_snapshot: bool,
    /// Every key of the top-level roles, by key id.
    pub keys: BTreeMap<String, Key>,
    /// The keys and threshold of each top-level role.
    pub roles: BTreeMap<String, RoleKeys>,
}

/// What timestamp says of snapshot, and snapshot of each targets role.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MetaFile {
    /// The listed version.
    pub version: u64,
    /// The listed length (then a bound of the download).
    pub length: Option<u64>,
    /// The listed hashes (then checked).
    pub hashes: Option<BTreeMap<String, String>>,
}

/// The timestamp role: the current snapshot.
#[derive(Debug, Clone, Deserialize)]
pub struct Timestamp {
    /// The common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Its one entry: `snapshot.json`.
    pub meta: BTreeMap<String, MetaFile>,
}

impl Timestamp {
    /// What timestamp says of snapshot.
    pub fn snapshot_meta(&self) -> &MetaFile {
        // Checked at parse: the only entry.
        &self.meta["snapshot.json"]
    }
}

/// The snapshot role: the current version of every targets role.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    /// The common fields.
    #[serde(flatten)]
    pub common: Common,
    /// `<role>.json` of each targets role.
    pub meta: BTreeMap<String, MetaFile>,
}

/// A target as a targets role lists it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TargetFile {
    /// Its exact length.
    pub length: u64,
    /// Its hashes: algorithm to hex digest.
    pub hashes: BTreeMap<String, String>,
    /// Anything the repository adds (the agent: version, board, hardware, deltas).
    #[serde(default)]
    pub custom: Option<Value>,
}

/// A targets role (top-level or delegated): targets and further delegations.
#[derive(Debug, Clone, Deserialize)]
pub struct Targets {
    /// The common fields.
    #[serde(flatten)]
    pub common: Common,
    /// The targets it vouches for, by path.
    pub targets: BTreeMap<String, TargetFile>,
    /// The roles it delegates to.
    #[serde(default)]
    pub delegations: Option<Delegations>,
}

/// What a targets role delegates.
#[derive(Debug, Clone, Deserialize)]
pub struct Delegations {
    /// The keys of the delegated roles, by key id.
    pub keys: BTreeMap<String, Key>,
    /// Delegated roles with their paths, in order of priority.
    #[serde(default)]
    pub roles: Option<Vec<DelegatedRole>>,
    /// Hash-bin delegation (TAP 15) instead of a list.
    #[serde(default)]
    pub succinct_roles: Option<SuccinctRoles>,
}

/// A delegated role of a `roles` list.
#[derive(Debug, Clone, Deserialize)]
pub struct DelegatedRole {
    /// Its name.
    pub name: String,
    /// Its key ids.
    pub keyids: Vec<String>,
    /// Valid signatures needed.
    pub threshold: u64,
    /// Whether the search stops here when the path matches (no later role is tried).
    #[serde(default)]
    pub terminating: bool,
    /// Path patterns (shell-style) it may vouch for.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// Prefixes of the SHA-256 of the paths it may vouch for.
    #[serde(default)]
    pub path_hash_prefixes: Option<Vec<String>>,
}

/// TAP 15: `2^bit_length` bins named `<name_prefix>-<hex>`, all with the same keys.
#[derive(Debug, Clone, Deserialize)]
pub struct SuccinctRoles {
    /// The key ids of every bin.
    pub keyids: Vec<String>,
    /// Valid signatures needed.
    pub threshold: u64,
    /// Bits of the path hash that name the bin.
    pub bit_length: u32,
    /// The bins' names are `<name_prefix>-<hex>`.
    pub name_prefix: String,
}

/// Parsed metadata: the typed `signed`, its canonical bytes (what the signatures cover) and the
/// signatures.
#[derive(Debug, Clone)]
pub struct Signed<T> {
    /// The typed content.
    pub signed: T,
    /// The canonical JSON of `signed`: what the signatures cover.
    pub canonical: Vec<u8>,
    /// The signatures.
    pub signatures: Vec<Signature>,
}

/// A metadata type: its `_type` and its own checks.
pub trait MetaType: for<'de> Deserialize<'de> {
    /// The `_type` it must have.
    const TYPE: &'static str;
    /// Its common fields.
    fn common(&self) -> &Common;
    /// Type-specific checks beyond the schema.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl MetaType for Root {
    const TYPE: &'static str = "root";
    fn common(&self) -> &Common {
        &self.common
    }
    fn check(&self) -> Result<(), String> {
        for r in TOP_LEVEL {
            let Some(role) = self.roles.get(r) else {
                return Err(format!("roles has no `{r}`"));
            };
            check_threshold(role.threshold)?;
        }
        if self.roles.len() != TOP_LEVEL.len() {
            return Err("roles must be exactly root, timestamp, snapshot and targets".into());
        }
        Ok(())
    }
}

impl MetaType for Timestamp {
    const TYPE: &'static str = "timestamp";
    fn common(&self) -> &Common {
        &self.common
    }
    fn check(&self) -> Result<(), String> {
        if self.meta.len() != 1 || !self.meta.contains_key("snapshot.json") {
            return Err("meta must hold exactly snapshot.json".into());
        }
        self.meta.values().try_for_each(check_meta)
    }
}

impl MetaType for Snapshot {
    const TYPE: &'static str = "snapshot";
    fn common(&self) -> &Common {
        &self.common
    }
    fn check(&self) -> Result<(), String> {
        self.meta.values().try_for_each(check_meta)
    }
}

impl MetaType for Targets {
    const TYPE: &'static str = "targets";
    fn common(&self) -> &Common {
        &self.common
    }
    fn check(&self) -> Result<(), String> {
        for (p, t) in &self.targets {
            if t.hashes.is_empty() {
                return Err(format!("target {p} lists no hash"));
            }
        }
        let Some(d) = &self.delegations else {
            return Ok(());
        };
        match (&d.roles, &d.succinct_roles) {
            (Some(_), Some(_)) => {
                return Err("delegations has both roles and succinct_roles".into());
            }
            (None, None) => return Err("delegations has neither roles nor succinct_roles".into()),
            (None, Some(s)) => {
                if !(1..=32).contains(&s.bit_length) {
                    return Err(format!(
                        "succinct_roles.bit_length {} is not between 1 and 32",
                        s.bit_length
                    ));
                }
                check_threshold(s.threshold)?;
            }
            (Some(roles), None) => {
                let mut names = std::collections::BTreeSet::new();
                for r in roles {
                    if !names.insert(r.name.as_str()) {
                        return Err(format!("delegated role {} is listed twice", r.name));
                    }
                    if TOP_LEVEL.contains(&r.name.as_str()) {
                        return Err(format!("a delegated role may not be named {}", r.name));
                    }
                    if r.paths.is_some() == r.path_hash_prefixes.is_some() {
                        return Err(format!(
                            "delegated role {} needs exactly one of paths and path_hash_prefixes",
                            r.name
                        ));
                    }
                    check_threshold(r.threshold)?;
                }
            }
        }
        Ok(())
    }
}

/// The specification (metadata format, `signatures`): "The keyid MUST be unique in the
/// signatures array: multiple signatures with the same keyid are not allowed." Refused as a
/// whole, as python-tuf's `Metadata.from_dict` does, so no threshold rule ever sees a repeated
/// keyid (whichever of the copies it would pick).
fn check_unique_keyids(signatures: &[Signature]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for s in signatures {
        if !seen.insert(s.keyid.as_str()) {
            return Err(format!(
                "keyid {:?} has more than one signature (a keyid may sign once in signatures)",
                s.keyid
            ));
        }
    }
    Ok(())
}

fn check_threshold(t: u64) -> Result<(), String> {
    if t == 0 {
        return Err("a threshold must be at least 1".into());
    }
    Ok(())
}

fn check_meta(m: &MetaFile) -> Result<(), String> {
    if m.version == 0 {
        return Err("a meta version must be at least 1".into());
    }
    if m.hashes.as_ref().is_some_and(|h| h.is_empty()) {
        return Err("meta hashes, when given, may not be empty".into());
    }
    Ok(())
}

impl<T: MetaType> Signed<T> {
    /// Parses metadata of the role `role` (for messages) and makes the checks that need no key.
    pub fn parse(role: &str, bytes: &[u8]) -> Result<Signed<T>, TufError> {
        let raw: RawEnvelope = serde_json::from_slice(bytes)
            .map_err(|e| TufError::invalid(role, format!("not TUF metadata: {e}")))?;
        let canonical = cjson::encode(&raw.signed)
            .map_err(|e| TufError::invalid(role, format!("not canonical JSON: {e}")))?;
        let signed: T = serde_json::from_value(raw.signed)
            .map_err(|e| TufError::invalid(role, format!("not {} metadata: {e}", T::TYPE)))?;
        let c = signed.common();
        if c.type_ != T::TYPE {
            return Err(TufError::invalid(
                role,
                format!("_type is `{}`, expected `{}`", c.type_, T::TYPE),
            ));
        }
        let mut parts = c.spec_version.split('.');
        let major = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !(1..=2).contains(&rest.len()) || !numeric(major) || !rest.iter().all(|p| numeric(p)) {
            return Err(TufError::invalid(
                role,
                format!("spec_version `{}` is malformed", c.spec_version),
            ));
        }
        if major != SPEC_MAJOR {
            return Err(TufError::invalid(
                role,
                format!("spec_version {} is not supported", c.spec_version),
            ));
        }
        if c.version == 0 {
            return Err(TufError::invalid(role, "version must be at least 1"));
        }
        if time::parse(&c.expires).is_none() {
            return Err(TufError::invalid(
                role,
                format!("expires `{}` is not YYYY-MM-DDTHH:MM:SSZ", c.expires),
            ));
        }
        signed.check().map_err(|m| TufError::invalid(role, m))?;
        check_unique_keyids(&raw.signatures).map_err(|m| TufError::invalid(role, m))?;
        Ok(Signed {
            signed,
            canonical,
            signatures: raw.signatures,
        })
    }

    /// The version of the metadata.
    pub fn version(&self) -> u64 {
        self.signed.common().version
    }

    /// Expired when `now >= expires` (python-tuf's rule).
    pub fn check_expiry(&self, role: &str, now: i64) -> Result<(), TufError> {
        let expires = &self.signed.common().expires;
        match time::parse(expires) {
            Some(t) if now < t => Ok(()),
            _ => Err(TufError::Expired {
                role: role.to_owned(),
                expires: expires.clone(),
                now: time::format(now),
            }),
        }
    }
}

/// The digest algorithms TUF repositories use; any other listed algorithm fails the check
/// (every listed hash must be verified). (No sha224: ring has none, and no TUF tool writes it by
/// default; RS-TUF and python-tuf write sha256.)
pub fn algorithm(name: &str) -> Option<&'static digest::Algorithm> {
    match name {
        "sha256" => Some(&digest::SHA256),
        "sha384" => Some(&digest::SHA384),
        "sha512" => Some(&digest::SHA512),
        _ => None,
    }
}

/// Checks bytes against a length and hashes, when given (`what` names them in messages).
pub fn check_length_and_hashes(
    data: &[u8],
    length: Option<u64>,
    hashes: Option<&BTreeMap<String, String>>,
) -> Result<(), String> {
    if let Some(l) = length {
        if data.len() as u64 != l {
            return Err(format!("length is {}, expected {l}", data.len()));
        }
    }
    for (alg, want) in hashes.into_iter().flatten() {
        let Some(a) = algorithm(alg) else {
            return Err(format!("hash algorithm {alg} is not supported"));
        };
        let got = hex::encode(digest::digest(a, data));
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!("{alg} is {got}, expected {want}"));
        }
    }
    Ok(())
}

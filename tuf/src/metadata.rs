//! The four metadata types as the specification defines them (section 4), parsed from bytes,
//! with the checks python-tuf's Metadata API makes at parse time. Unknown fields are ignored
//! (they are still covered by the signature, which is made over the canonical form of the whole
//! `signed` object as received).

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use serde::Deserialize;
use serde_json::Value;

use super::error::TufError;
use super::{cjson, time};

/// The specification major version this client reads.
const SPEC_MAJOR: &str = "1";

/// Top-level role names; a delegated role may not take one.
pub const TOP_LEVEL: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

#[derive(Debug, Clone, Deserialize)]
pub struct Signature {
    pub keyid: String,
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
    #[serde(rename = "_type")]
    pub type_: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Key {
    pub keytype: String,
    pub scheme: String,
    pub keyval: KeyVal,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct KeyVal {
    /// Absent for key types this client cannot use (such a key never verifies, but the
    /// metadata listing it still parses, as in python-tuf).
    #[serde(default)]
    pub public: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RoleKeys {
    pub keyids: Vec<String>,
    pub threshold: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Root {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub consistent_snapshot: bool,
    pub keys: BTreeMap<String, Key>,
    pub roles: BTreeMap<String, RoleKeys>,
}

/// What timestamp says of snapshot, and snapshot of each targets role.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MetaFile {
    pub version: u64,
    pub length: Option<u64>,
    pub hashes: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Timestamp {
    #[serde(flatten)]
    pub common: Common,
    pub meta: BTreeMap<String, MetaFile>,
}

impl Timestamp {
    pub fn snapshot_meta(&self) -> &MetaFile {
        // Checked at parse: the only entry.
        &self.meta["snapshot.json"]
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    #[serde(flatten)]
    pub common: Common,
    pub meta: BTreeMap<String, MetaFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TargetFile {
    pub length: u64,
    pub hashes: BTreeMap<String, String>,
    #[serde(default)]
    pub custom: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Targets {
    #[serde(flatten)]
    pub common: Common,
    pub targets: BTreeMap<String, TargetFile>,
    #[serde(default)]
    pub delegations: Option<Delegations>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Delegations {
    pub keys: BTreeMap<String, Key>,
    #[serde(default)]
    pub roles: Option<Vec<DelegatedRole>>,
    #[serde(default)]
    pub succinct_roles: Option<SuccinctRoles>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DelegatedRole {
    pub name: String,
    pub keyids: Vec<String>,
    pub threshold: u64,
    #[serde(default)]
    pub terminating: bool,
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub path_hash_prefixes: Option<Vec<String>>,
}

/// TAP 15: `2^bit_length` bins named `<name_prefix>-<hex>`, all with the same keys.
#[derive(Debug, Clone, Deserialize)]
pub struct SuccinctRoles {
    pub keyids: Vec<String>,
    pub threshold: u64,
    pub bit_length: u32,
    pub name_prefix: String,
}

/// Parsed metadata: the typed `signed`, its canonical bytes (what the signatures cover) and the
/// signatures.
#[derive(Debug, Clone)]
pub struct Signed<T> {
    pub signed: T,
    pub canonical: Vec<u8>,
    pub signatures: Vec<Signature>,
}

/// A metadata type: its `_type` and its own checks.
pub trait MetaType: for<'de> Deserialize<'de> {
    const TYPE: &'static str;
    fn common(&self) -> &Common;
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
/// (every listed hash must be verified).
pub fn algorithm(name: &str) -> Option<&'static digest::Algorithm> {
    match name {
        "sha224" => Some(&digest::SHA224),
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

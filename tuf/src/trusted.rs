//! The set of trusted metadata and every decision of the client workflow (specification
//! section 5, in python-tuf ngclient's `TrustedMetadataSet` shape): what new metadata must
//! satisfy to replace or join what is trusted. No I/O: bytes in, verdicts out.

use std::collections::{BTreeMap, BTreeSet};

use super::delegation;
use super::error::TufError;
use super::keys::check_threshold;
use super::metadata::{
    MetaType, Root, Signed, Snapshot, Targets, Timestamp, check_length_and_hashes,
};

/// What a timestamp update did.
#[derive(Debug, PartialEq, Eq)]
pub enum TimestampUpdate {
    /// The new timestamp is trusted (and should be stored).
    New,
    /// Same version as the trusted one: the trusted one stays (a same-version timestamp with
    /// other content is not taken).
    Unchanged,
}

/// The metadata trusted so far in one refresh, each file checked against the ones before it.
#[derive(Debug)]
pub struct TrustedSet {
    now: i64,
    root: Signed<Root>,
    timestamp: Option<Signed<Timestamp>>,
    snapshot: Option<Signed<Snapshot>>,
    /// "targets" and the delegated roles loaded so far.
    targets: BTreeMap<String, Signed<Targets>>,
    /// (delegator, role): the delegations each loaded role was verified through. A role two
    /// delegators name ("diamond") is trusted through a delegator only once verified against
    /// that delegator's keys (TUF specification 5.6.7: each role on the search path is
    /// validated as its delegator delegates it).
    delegations: BTreeSet<(String, String)>,
}

impl TrustedSet {
    /// Starts from a trusted root, which must be signed by its own root threshold; `now` is the
    /// time expiry is checked against.
    pub fn new(root: &[u8], now: i64) -> Result<TrustedSet, TufError> {
        let root: Signed<Root> = Signed::parse("root", root)?;
        verify_root_role(&root.signed, &root)?;
        Ok(TrustedSet {
            now,
            root,
            timestamp: None,
            snapshot: None,
            targets: BTreeMap::new(),
            delegations: BTreeSet::new(),
        })
    }

    /// The trusted root.
    pub fn root(&self) -> &Root {
        &self.root.signed
    }

    /// The trusted timestamp, once loaded.
    pub fn timestamp(&self) -> Option<&Timestamp> {
        self.timestamp.as_ref().map(|t| &t.signed)
    }

    /// The trusted snapshot, once loaded.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref().map(|s| &s.signed)
    }

    /// The trusted targets metadata of `role` (top-level or delegated), once loaded.
    pub fn targets(&self, role: &str) -> Option<&Targets> {
        self.targets.get(role).map(|t| &t.signed)
    }

    /// Whether `role` is loaded and was verified through `delegator`'s delegation.
    pub fn contains(&self, role: &str, delegator: &str) -> bool {
        self.delegations
            .contains(&(delegator.to_owned(), role.to_owned()))
    }

    /// 5.3: the next root of the chain, signed by the threshold of the trusted root AND by its
    /// own, with the version one above. Expiry of intermediate roots does not matter.
    pub fn update_root(&mut self, data: &[u8]) -> Result<(), TufError> {
        if self.timestamp.is_some() {
            return Err(TufError::invalid(
                "root",
                "cannot update root after timestamp",
            ));
        }
        let new: Signed<Root> = Signed::parse("root", data)?;
        verify_root_role(&self.root.signed, &new)?;
        let expected = self.root.version() + 1;
        if new.version() != expected {
            return Err(TufError::Version {
                role: "root".into(),
                got: new.version(),
                expected,
            });
        }
        verify_root_role(&new.signed, &new)?;
        self.root = new;
        Ok(())
    }

    /// 5.4: a timestamp signed by the root's timestamp keys, whose version and snapshot version
    /// do not go below the trusted ones. The final root's expiry is checked first. An expired
    /// timestamp is still taken (it serves the rollback check of the next one) but the update
    /// fails with `Expired`.
    pub fn update_timestamp(&mut self, data: &[u8]) -> Result<TimestampUpdate, TufError> {
        if self.snapshot.is_some() {
            return Err(TufError::invalid(
                "timestamp",
                "cannot update timestamp after snapshot",
            ));
        }
        self.root.check_expiry("root", self.now)?;
        let new: Signed<Timestamp> = Signed::parse("timestamp", data)?;
        verify_by(&self.root.signed, "timestamp", &new)?;
        if let Some(old) = &self.timestamp {
            if new.version() < old.version() {
                return Err(TufError::Rollback {
                    role: "timestamp".into(),
                    got: new.version(),
                    trusted: old.version(),
                });
            }
            if new.version() == old.version() {
                if new.canonical != old.canonical {
                    tracing::warn!(
                        "timestamp: version {} served with other content than the trusted one; keeping the trusted one",
                        new.version()
                    );
                }
                return Ok(TimestampUpdate::Unchanged);
            }
            let (o, n) = (
                old.signed.snapshot_meta().version,
                new.signed.snapshot_meta().version,
            );
            if n < o {
                return Err(TufError::Rollback {
                    role: "timestamp: snapshot.json".into(),
                    got: n,
                    trusted: o,
                });
            }
        }
        self.timestamp = Some(new);
        self.check_final_timestamp()?;
        Ok(TimestampUpdate::New)
    }

    fn check_final_timestamp(&self) -> Result<(), TufError> {
        match &self.timestamp {
            Some(t) => t.check_expiry("timestamp", self.now),
            None => Err(TufError::invalid("timestamp", "not loaded")),
        }
    }

    /// 5.5: a snapshot matching timestamp's length and hashes (unless it comes from the trusted
    /// store, `trusted`), signed by the root's snapshot keys, dropping no role and lowering no
    /// version of the trusted snapshot; final when not expired and of the version timestamp
    /// names.
    pub fn update_snapshot(&mut self, data: &[u8], trusted: bool) -> Result<(), TufError> {
        if !self.targets.is_empty() {
            return Err(TufError::invalid(
                "snapshot",
                "cannot update snapshot after targets",
            ));
        }
        self.check_final_timestamp()?;
        let meta = self
            .timestamp
            .as_ref()
            .map(|t| t.signed.snapshot_meta().clone())
            .ok_or_else(|| TufError::invalid("snapshot", "no timestamp"))?;
        if !trusted {
            check_length_and_hashes(data, meta.length, meta.hashes.as_ref()).map_err(|m| {
                TufError::Mismatch {
                    role: "snapshot".into(),
                    message: format!("{m} (as timestamp lists it)"),
                }
            })?;
        }
        let new: Signed<Snapshot> = Signed::parse("snapshot", data)?;
        verify_by(&self.root.signed, "snapshot", &new)?;
        if let Some(old) = &self.snapshot {
            for (name, info) in &old.signed.meta {
                let Some(n) = new.signed.meta.get(name) else {
                    return Err(TufError::invalid(
                        "snapshot",
                        format!("{name} was removed from meta (rollback)"),
                    ));
                };
                if n.version < info.version {
                    return Err(TufError::Rollback {
                        role: format!("snapshot: {name}"),
                        got: n.version,
                        trusted: info.version,
                    });
                }
            }
        }
        self.snapshot = Some(new);
        self.check_final_snapshot()
    }

    fn check_final_snapshot(&self) -> Result<(), TufError> {
        let Some(s) = &self.snapshot else {
            return Err(TufError::invalid("snapshot", "not loaded"));
        };
        s.check_expiry("snapshot", self.now)?;
        let want = self
            .timestamp
            .as_ref()
            .map(|t| t.signed.snapshot_meta().version)
            .unwrap_or(0);
        if s.version() != want {
            return Err(TufError::Version {
                role: "snapshot".into(),
                got: s.version(),
                expected: want,
            });
        }
        Ok(())
    }

    /// 5.6/5.7: targets metadata of `role`, delegated by `delegator` ("root" for "targets"):
    /// matching snapshot's length, hashes and version, signed by the keys the delegator gives
    /// it, not expired.
    pub fn update_targets(
        &mut self,
        role: &str,
        delegator: &str,
        data: &[u8],
    ) -> Result<(), TufError> {
        self.check_final_snapshot()?;
        let file = format!("{role}.json");
        let meta = self
            .snapshot
            .as_ref()
            .and_then(|s| s.signed.meta.get(&file))
            .cloned()
            .ok_or_else(|| TufError::invalid(role, "snapshot does not list it"))?;
        check_length_and_hashes(data, meta.length, meta.hashes.as_ref()).map_err(|m| {
            TufError::Mismatch {
                role: role.to_owned(),
                message: format!("{m} (as snapshot lists it)"),
            }
        })?;
        let new: Signed<Targets> = Signed::parse(role, data)?;
        if let Some(loaded) = self.targets.get(role) {
            // Already trusted through another delegator (a diamond): the file snapshot names is
            // one file, so it must be that one, now verified against this delegator's keys. A
            // second, different file is never taken: it would replace what the first
            // delegation verified.
            if loaded.canonical != new.canonical {
                return Err(TufError::invalid(
                    role,
                    format!(
                        "delegated by {delegator} and by another role, but served with other \
                         content than the one already trusted"
                    ),
                ));
            }
        }
        self.verify_delegated(role, delegator, &new)?;
        if new.version() != meta.version {
            return Err(TufError::Version {
                role: role.to_owned(),
                got: new.version(),
                expected: meta.version,
            });
        }
        new.check_expiry(role, self.now)?;
        self.targets.insert(role.to_owned(), new);
        self.delegations
            .insert((delegator.to_owned(), role.to_owned()));
        Ok(())
    }

    /// A role already loaded through one delegator, reached through another (a diamond):
    /// trusted through `delegator` only if signed by the threshold of the keys `delegator`
    /// gives it. No fetch: it is the file snapshot names, already checked against snapshot.
    pub fn verify_delegation(&mut self, role: &str, delegator: &str) -> Result<(), TufError> {
        if self.contains(role, delegator) {
            return Ok(());
        }
        let loaded = self
            .targets
            .get(role)
            .ok_or_else(|| TufError::invalid(role, "not loaded"))?;
        self.verify_delegated(role, delegator, loaded)?;
        self.delegations
            .insert((delegator.to_owned(), role.to_owned()));
        Ok(())
    }

    /// Checks `new` (targets metadata of `role`) against the keys and threshold `delegator`
    /// ("root" for the top-level targets) gives `role`.
    fn verify_delegated(
        &self,
        role: &str,
        delegator: &str,
        new: &Signed<Targets>,
    ) -> Result<(), TufError> {
        if delegator == "root" {
            return verify_by(&self.root.signed, role, new);
        }
        let parent = self
            .targets
            .get(delegator)
            .ok_or_else(|| TufError::invalid(role, format!("{delegator} is not loaded")))?;
        let d =
            parent.signed.delegations.as_ref().ok_or_else(|| {
                TufError::invalid(role, format!("{delegator} delegates to no role"))
            })?;
        let (keyids, threshold) = delegation::delegated_role(d, role).ok_or_else(|| {
            TufError::invalid(role, format!("{delegator} does not delegate to it"))
        })?;
        check_threshold(
            &format!("{role} (as {delegator} delegates it)"),
            &d.keys,
            keyids,
            threshold,
            &new.canonical,
            &new.signatures,
        )
    }
}

/// Checks `new` against the root role of `by`.
fn verify_root_role(by: &Root, new: &Signed<Root>) -> Result<(), TufError> {
    verify_by(by, "root", new)
}

/// Checks `new` against the keys and threshold `root` gives the top-level role `role`.
fn verify_by<T: MetaType>(root: &Root, role: &str, new: &Signed<T>) -> Result<(), TufError> {
    let r = root
        .roles
        .get(role)
        .ok_or_else(|| TufError::invalid(role, "root does not name it"))?;
    check_threshold(
        role,
        &root.keys,
        &r.keyids,
        r.threshold,
        &new.canonical,
        &new.signatures,
    )
}

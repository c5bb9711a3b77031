//! The workflow on hand-made repositories signed with ed25519 keys made in the test, served
//! from memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::fetch::Sink;
use super::keys::test_keys::TestKey;
use super::*;

const META: &str = "http://repo/metadata";
const TARGETS: &str = "http://repo/targets";
/// 2026-09-21, before every `expires` of the fixture.
const NOW: i64 = 1_790_000_000;
const LATER: &str = "2100-01-01T00:00:00Z";

#[derive(Clone, Default)]
struct MapFetcher {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl MapFetcher {
    fn put(&self, name: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert(name.to_owned(), bytes);
    }
    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Fetcher for MapFetcher {
    fn fetch(
        &self,
        url: &str,
        max: u64,
        _whole: Duration,
        sink: &mut Sink<'_>,
    ) -> impl std::future::Future<Output = Result<(), FetchError>> + Send {
        let name = url.strip_prefix("http://repo/").unwrap_or(url).to_owned();
        self.log.lock().unwrap().push(name.clone());
        let r = match self.files.lock().unwrap().get(&name) {
            None => Err(FetchError::Status {
                url: url.to_owned(),
                status: 404,
            }),
            Some(b) if b.len() as u64 > max => Err(FetchError::TooLong {
                url: url.to_owned(),
                max,
            }),
            Some(b) => b
                .chunks(7)
                .try_for_each(&mut *sink)
                .map_err(|message| FetchError::Sink {
                    url: url.to_owned(),
                    message,
                }),
        };
        async move { r }
    }
}

fn sign(signed: &Value, keys: &[&TestKey]) -> Vec<u8> {
    let c = cjson::encode(signed).unwrap();
    let sigs: Vec<Value> = keys
        .iter()
        .map(|k| {
            let s = k.sign(&c);
            json!({"keyid": s.keyid, "sig": s.sig})
        })
        .collect();
    serde_json::to_vec_pretty(&json!({"signed": signed, "signatures": sigs})).unwrap()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

fn key_ids(keys: &[&TestKey]) -> Value {
    json!(keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>())
}

/// A repository: the signed parts as JSON, published into the fetcher on demand.
struct Repo {
    root_keys: Vec<TestKey>,
    ts: TestKey,
    snap: TestKey,
    tgt: TestKey,
    deleg: TestKey,
    root: Value,
    timestamp: Value,
    snapshot: Value,
    targets: Value,
    roles: BTreeMap<String, Value>,
    /// Who signs the next root (indexes into root_keys), when not the ones it lists.
    root_signers: Option<Vec<usize>>,
    fetcher: MapFetcher,
    clock: Arc<AtomicI64>,
    dir: tempfile::TempDir,
}

fn common(t: &str, v: u64) -> Value {
    json!({"_type": t, "spec_version": "1.0.31", "version": v, "expires": LATER})
}

impl Repo {
    fn new() -> Repo {
        let root_keys = vec![TestKey::new("r1"), TestKey::new("r2"), TestKey::new("r3")];
        let (ts, snap, tgt, deleg) = (
            TestKey::new("ts"),
            TestKey::new("sn"),
            TestKey::new("tg"),
            TestKey::new("dl"),
        );
        let mut root = common("root", 1);
        root["consistent_snapshot"] = json!(true);
        let mut r = Repo {
            root_keys,
            ts,
            snap,
            tgt,
            deleg,
            root,
            timestamp: common("timestamp", 1),
            snapshot: common("snapshot", 1),
            targets: common("targets", 1),
            roles: BTreeMap::new(),
            root_signers: None,
            fetcher: MapFetcher::default(),
            clock: Arc::new(AtomicI64::new(NOW)),
            dir: tempfile::tempdir().unwrap(),
        };
        r.set_root_keys(&[0, 1], 2);
        r.targets["targets"] = json!({});
        r
    }

    /// Root keys listed for the root role, and its threshold; other roles one key each.
    fn set_root_keys(&mut self, idx: &[usize], threshold: u64) {
        let mut keys = serde_json::Map::new();
        for k in self
            .root_keys
            .iter()
            .chain([&self.ts, &self.snap, &self.tgt])
        {
            keys.insert(k.id.clone(), k.json());
        }
        self.root["keys"] = Value::Object(keys);
        let ids: Vec<&TestKey> = idx.iter().map(|&i| &self.root_keys[i]).collect();
        self.root["roles"] = json!({
            "root": {"keyids": key_ids(&ids), "threshold": threshold},
            "timestamp": {"keyids": [self.ts.id], "threshold": 1},
            "snapshot": {"keyids": [self.snap.id], "threshold": 1},
            "targets": {"keyids": [self.tgt.id], "threshold": 1},
        });
    }

    fn root_bytes(&self) -> Vec<u8> {
        let signers: Vec<&TestKey> = match &self.root_signers {
            Some(s) => s.iter().map(|&i| &self.root_keys[i]).collect(),
            None => {
                let ids = self.root["roles"]["root"]["keyids"]
                    .as_array()
                    .unwrap()
                    .clone();
                self.root_keys
                    .iter()
                    .filter(|k| ids.contains(&json!(k.id)))
                    .collect()
            }
        };
        sign(&self.root, &signers)
    }

    fn publish_root(&self) -> Vec<u8> {
        let b = self.root_bytes();
        let v = self.root["version"].as_u64().unwrap();
        self.fetcher
            .put(&format!("metadata/{v}.root.json"), b.clone());
        b
    }

    /// Signs and serves targets, delegated roles, snapshot (meta with hashes) and timestamp.
    fn publish(&mut self) {
        let mut meta = serde_json::Map::new();
        for (name, signed) in &self.roles {
            let b = sign(signed, &[&self.deleg]);
            let v = signed["version"].as_u64().unwrap();
            meta.insert(format!("{name}.json"), json!({"version": v}));
            self.fetcher
                .put(&format!("metadata/{v}.{}.json", quote(name)), b);
        }
        let tb = sign(&self.targets, &[&self.tgt]);
        let tv = self.targets["version"].as_u64().unwrap();
        meta.insert(
            "targets.json".into(),
            json!({"version": tv, "length": tb.len(), "hashes": {"sha256": sha256(&tb)}}),
        );
        self.fetcher.put(&format!("metadata/{tv}.targets.json"), tb);
        self.snapshot["meta"] = Value::Object(meta);
        let sb = sign(&self.snapshot, &[&self.snap]);
        let sv = self.snapshot["version"].as_u64().unwrap();
        self.timestamp["meta"] = json!({"snapshot.json":
            {"version": sv, "length": sb.len(), "hashes": {"sha256": sha256(&sb)}}});
        self.fetcher
            .put(&format!("metadata/{sv}.snapshot.json"), sb);
        self.fetcher.put(
            "metadata/timestamp.json",
            sign(&self.timestamp, &[&self.ts]),
        );
    }

    fn bump(v: &mut Value) {
        v["version"] = json!(v["version"].as_u64().unwrap() + 1);
    }

    fn add_target(&mut self, role: Option<&str>, path: &str, content: &[u8]) {
        let t = json!({"length": content.len(), "hashes": {"sha256": sha256(content)},
            "custom": {"version": "1.5"}});
        match role {
            None => self.targets["targets"][path] = t,
            Some(r) => self.roles.get_mut(r).unwrap()["targets"][path] = t,
        }
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let sep = if dir.is_empty() { "" } else { "/" };
        self.fetcher.put(
            &format!("targets/{dir}{sep}{}.{name}", sha256(content)),
            content.to_vec(),
        );
    }

    fn updater(&self) -> Updater<MapFetcher> {
        let clock = self.clock.clone();
        Updater::new(
            self.dir.path().join("meta"),
            META,
            Some(TARGETS),
            Limits::default(),
            self.fetcher.clone(),
            Arc::new(move || clock.load(Ordering::SeqCst)),
        )
    }

    /// A fresh updater initialised with the current root.
    fn client(&self) -> Updater<MapFetcher> {
        let mut u = self.updater();
        u.init(&self.root_bytes()).unwrap();
        u
    }

    fn stored(&self, role: &str) -> Option<Value> {
        let b = std::fs::read(self.dir.path().join("meta").join(store::file_name(role))).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn stored_version(&self, role: &str) -> Option<u64> {
        self.stored(role)?["signed"]["version"].as_u64()
    }
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn refresh_find_download_and_cache() {
    let mut r = Repo::new();
    r.publish_root();
    r.add_target(None, "qemu/cip-1.5.swu", b"image bytes");
    r.publish();
    let mut u = r.client();
    block(u.refresh()).unwrap();
    let log = r.fetcher.take_log();
    assert_eq!(
        log,
        [
            "metadata/2.root.json",
            "metadata/timestamp.json",
            "metadata/1.snapshot.json",
            "metadata/1.targets.json"
        ]
    );
    // Stored byte for byte as served.
    let served = r.fetcher.files.lock().unwrap()["metadata/1.targets.json"].clone();
    assert_eq!(
        std::fs::read(r.dir.path().join("meta/targets.json")).unwrap(),
        served
    );
    let info = block(u.find_target("qemu/cip-1.5.swu")).unwrap().unwrap();
    assert_eq!(info.length, 11);
    assert_eq!(info.custom["version"], "1.5");
    assert_eq!(
        u.target_url(&info).unwrap(),
        format!("{TARGETS}/qemu/{}.cip-1.5.swu", sha256(b"image bytes"))
    );
    assert_eq!(block(u.find_target("qemu/other.swu")).unwrap(), None);
    let out = r.dir.path().join("out");
    let p = block(u.download_target(&info, &out)).unwrap();
    assert_eq!(p, out.join("qemu%2Fcip-1.5.swu"));
    assert_eq!(std::fs::read(&p).unwrap(), b"image bytes");
    r.fetcher.take_log();
    block(u.download_target(&info, &out)).unwrap();
    assert!(r.fetcher.take_log().is_empty(), "fetched again");

    // A second refresh with nothing new fetches only the next root and timestamp.
    let mut u = r.updater();
    block(u.refresh()).unwrap();
    assert_eq!(
        r.fetcher.take_log(),
        ["metadata/2.root.json", "metadata/timestamp.json"]
    );
}

#[test]
fn target_with_other_bytes_is_refused_and_not_kept() {
    let mut r = Repo::new();
    r.add_target(None, "f.swu", b"good");
    r.publish();
    let name = format!("targets/{}.f.swu", sha256(b"good"));
    let out = r.dir.path().join("out");
    let mut u = r.client();
    let info = block(u.find_target("f.swu")).unwrap().unwrap();
    for bad in [&b"evil"[..], b"goo", b"good and more"] {
        r.fetcher.put(&name, bad.to_vec());
        let e = block(u.download_target(&info, &out)).unwrap_err();
        assert!(
            matches!(e, TufError::Target { .. } | TufError::TargetFetch { .. }),
            "{e}"
        );
        assert!(std::fs::read_dir(&out).unwrap().next().is_none());
    }
    // A stale file with other bytes is replaced.
    std::fs::write(out.join("f.swu"), b"evil").unwrap();
    r.fetcher.put(&name, b"good".to_vec());
    block(u.download_target(&info, &out)).unwrap();
    assert_eq!(std::fs::read(out.join("f.swu")).unwrap(), b"good");
}

#[test]
fn root_rotation_chain() {
    let mut r = Repo::new();
    let v1 = r.root_bytes();
    r.publish();
    // v2: root keys r2, r3 (threshold 2), signed by old (r1, r2) and new (r2, r3).
    Repo::bump(&mut r.root);
    r.set_root_keys(&[1, 2], 2);
    r.root_signers = Some(vec![0, 1, 2]);
    r.publish_root();
    // v3: signed only by the new keys: the old threshold (r2, r3 of v2) is met too.
    Repo::bump(&mut r.root);
    r.root_signers = None;
    r.publish_root();
    let mut u = r.updater();
    u.init(&v1).unwrap();
    block(u.refresh()).unwrap();
    assert_eq!(r.stored_version("root"), Some(3));

    // v4 signed by the new keys only, but v3 asked for r2+r3 and r1 was added: r1 alone plus
    // r3 gives the new threshold but only one of the old.
    Repo::bump(&mut r.root);
    r.set_root_keys(&[0, 2], 2);
    r.root_signers = Some(vec![0, 2]);
    r.publish_root();
    let mut u = r.updater();
    let e = block(u.refresh()).unwrap_err();
    assert!(
        matches!(&e, TufError::Threshold { role, valid: 1, threshold: 2 } if role == "root"),
        "{e}"
    );
    assert_eq!(r.stored_version("root"), Some(3));

    // Not signed by its own new threshold.
    r.set_root_keys(&[0, 1], 2);
    r.root_signers = Some(vec![1, 2]);
    r.publish_root();
    let e = block(r.updater().refresh()).unwrap_err();
    assert!(matches!(e, TufError::Threshold { .. }), "{e}");

    // A version that skips: 4.root.json holding version 5.
    r.root["version"] = json!(5);
    r.root_signers = None;
    r.set_root_keys(&[1, 2], 2);
    let b = r.root_bytes();
    r.fetcher.put("metadata/4.root.json", b);
    let e = block(r.updater().refresh()).unwrap_err();
    assert!(
        matches!(
            e,
            TufError::Version {
                got: 5,
                expected: 4,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn root_rotations_are_bounded() {
    let mut r = Repo::new();
    let v1 = r.root_bytes();
    r.publish();
    // python-tuf's cap: 256 new roots in one refresh, the rest on the next.
    for _ in 0..300 {
        Repo::bump(&mut r.root);
        r.publish_root();
    }
    let mut u = r.updater();
    u.init(&v1).unwrap();
    block(u.refresh()).unwrap();
    assert_eq!(r.stored_version("root"), Some(257));
}

#[test]
fn rollback_of_each_role_is_refused() {
    let mut r = Repo::new();
    r.timestamp["version"] = json!(5);
    r.snapshot["version"] = json!(5);
    r.targets["version"] = json!(5);
    r.publish();
    let mut u = r.client();
    block(u.refresh()).unwrap();

    // Timestamp version goes down.
    r.timestamp["version"] = json!(4);
    r.publish();
    let e = block(r.updater().refresh()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "timestamp: version 4 is below the trusted 5 (rollback)"
    );
    // Snapshot version (as timestamp names it) goes down.
    r.timestamp["version"] = json!(6);
    r.snapshot["version"] = json!(4);
    r.publish();
    let e = block(r.updater().refresh()).unwrap_err();
    assert!(
        matches!(&e, TufError::Rollback { role, got: 4, trusted: 5 } if role.contains("snapshot")),
        "{e}"
    );
    // Targets version (as snapshot lists it) goes down.
    r.timestamp["version"] = json!(7);
    r.snapshot["version"] = json!(6);
    r.targets["version"] = json!(4);
    r.publish();
    let e = block(r.updater().refresh()).unwrap_err();
    assert!(
        matches!(&e, TufError::Rollback { role, got: 4, trusted: 5 } if role == "snapshot: targets.json"),
        "{e}"
    );
    // The valid timestamp 7 is trusted; the snapshot and targets that failed are not stored.
    assert_eq!(r.stored_version("timestamp"), Some(7));
    assert_eq!(r.stored_version("snapshot"), Some(5));
    assert_eq!(r.stored_version("targets"), Some(5));
}

#[test]
fn same_version_timestamp_with_other_content_is_not_taken() {
    let mut r = Repo::new();
    r.publish();
    block(r.client().refresh()).unwrap();
    let before = std::fs::read(r.dir.path().join("meta/timestamp.json")).unwrap();
    r.snapshot["version"] = json!(2);
    r.publish(); // timestamp still version 1, naming snapshot 2
    block(r.updater().refresh()).unwrap();
    assert_eq!(
        std::fs::read(r.dir.path().join("meta/timestamp.json")).unwrap(),
        before
    );
    assert_eq!(r.stored_version("snapshot"), Some(1));
}

#[test]
fn freeze_expired_roles_are_their_own_retryable_error() {
    for role in ["root", "timestamp", "snapshot", "targets"] {
        let mut r = Repo::new();
        let past = "2020-01-01T00:00:00Z";
        match role {
            "root" => r.root["expires"] = json!(past),
            "timestamp" => r.timestamp["expires"] = json!(past),
            "snapshot" => r.snapshot["expires"] = json!(past),
            _ => r.targets["expires"] = json!(past),
        }
        r.publish();
        let e = block(r.client().refresh()).unwrap_err();
        assert!(
            matches!(&e, TufError::Expired { role: got, .. } if got == role),
            "{role}: {e}"
        );
        assert!(e.is_retryable());
        // The same metadata is fine for a clock before the expiry.
        r.clock.store(1_500_000_000, Ordering::SeqCst);
        block(r.client().refresh()).unwrap();
    }
}

#[test]
fn mix_and_match_is_refused() {
    let mut r = Repo::new();
    r.publish();
    // A snapshot of the right version but other content than timestamp's hashes say.
    let mut other = r.snapshot.clone();
    other["meta"]["targets.json"]["hashes"]["sha256"] = json!(sha256(b"x"));
    r.fetcher
        .put("metadata/1.snapshot.json", sign(&other, &[&r.snap]));
    let e = block(r.client().refresh()).unwrap_err();
    assert!(
        matches!(&e, TufError::Mismatch { role, .. } if role == "snapshot"),
        "{e}"
    );
    // Targets of another version than snapshot lists (served under the listed name).
    let mut r = Repo::new();
    r.publish();
    let mut t2 = r.targets.clone();
    t2["version"] = json!(2);
    let b = sign(&t2, &[&r.tgt]);
    r.snapshot["meta"]["targets.json"] = json!({"version": 1});
    let sb = sign(&r.snapshot, &[&r.snap]);
    r.timestamp["meta"] = json!({"snapshot.json": {"version": 1}});
    r.fetcher.put("metadata/1.snapshot.json", sb);
    r.fetcher
        .put("metadata/timestamp.json", sign(&r.timestamp, &[&r.ts]));
    r.fetcher.put("metadata/1.targets.json", b);
    let e = block(r.client().refresh()).unwrap_err();
    assert!(
        matches!(
            e,
            TufError::Version {
                got: 2,
                expected: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn threshold_not_met_and_wrong_keys() {
    let mut r = Repo::new();
    r.publish();
    // Timestamp signed by the snapshot key.
    r.fetcher
        .put("metadata/timestamp.json", sign(&r.timestamp, &[&r.snap]));
    let e = block(r.client().refresh()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "timestamp: signed by 0 of its keys, 1 needed"
    );
    // Root threshold 2, one root signature repeated: a keyid signs once at most.
    let mut r = Repo::new();
    r.root_signers = Some(vec![0, 0]);
    let e = r.updater().init(&r.root_bytes()).unwrap_err();
    assert!(
        matches!(&e, TufError::Invalid { role, message }
            if role == "root" && message.contains("more than one signature")),
        "{e}"
    );
}

/// `bytes` (signed metadata) with its first signature listed once more: `sig` instead of the
/// copy's own when given, and placed first when `first`.
fn with_repeated_keyid(bytes: &[u8], sig: Option<&str>, first: bool) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bytes).unwrap();
    let sigs = v["signatures"].as_array_mut().unwrap();
    let mut copy = sigs[0].clone();
    if let Some(s) = sig {
        copy["sig"] = json!(s);
    }
    if first {
        sigs.insert(0, copy);
    } else {
        sigs.push(copy);
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

/// The specification: a keyid MUST be unique in `signatures`. Metadata listing a keyid twice
/// is refused, also where one copy would meet the threshold (the same signature twice, or a
/// junk copy before the good one), for each role; nothing of it is stored.
#[test]
fn a_keyid_signing_twice_is_refused() {
    let junk = "00".repeat(64);
    for (role, sig, first) in [
        ("timestamp", None, false),
        ("timestamp", Some(junk.as_str()), true),
        ("snapshot", None, false),
        ("targets", Some(junk.as_str()), false),
        ("A", None, false),
    ] {
        let mut r = Repo::new();
        r.targets["delegations"] = delegations(&r, vec![role_of("A", &["*"], &r.deleg)]);
        let mut a = common("targets", 1);
        a["targets"] = json!({});
        r.roles.insert("A".into(), a);
        r.add_target(Some("A"), "f.swu", b"f");
        r.publish();
        let name = match role {
            "timestamp" => "metadata/timestamp.json".to_owned(),
            r => format!("metadata/1.{r}.json"),
        };
        let good = r.fetcher.files.lock().unwrap()[&name].clone();
        r.fetcher.put(&name, with_repeated_keyid(&good, sig, first));
        if matches!(role, "snapshot" | "targets") {
            // Their hashes are listed one level up: list the edited bytes instead.
            relist(&mut r, role);
        }
        let mut u = r.client();
        let e = block(u.find_target("f.swu")).unwrap_err();
        assert!(
            matches!(&e, TufError::Invalid { role: got, message }
                if got == role && message.contains("more than one signature")),
            "{role}: {e}"
        );
        assert!(r.stored(role).is_none(), "{role} was stored");
        // The control: the same files without the repeated keyid are accepted.
        r.fetcher.put(&name, good);
        if matches!(role, "snapshot" | "targets") {
            relist(&mut r, role);
        }
        let mut u = r.client();
        assert!(block(u.find_target("f.swu")).unwrap().is_some(), "{role}");
    }
}

/// Lists the served bytes of `role` (snapshot or targets) in the metadata above it, re-signed
/// as new versions (so that what a client stored of an earlier run is no reference).
fn relist(r: &mut Repo, role: &str) {
    if role == "targets" {
        let b = r.fetcher.files.lock().unwrap()["metadata/1.targets.json"].clone();
        r.snapshot["meta"]["targets.json"] =
            json!({"version": 1, "length": b.len(), "hashes": {"sha256": sha256(&b)}});
        Repo::bump(&mut r.snapshot);
        let sv = r.snapshot["version"].as_u64().unwrap();
        r.fetcher.put(
            &format!("metadata/{sv}.snapshot.json"),
            sign(&r.snapshot, &[&r.snap]),
        );
    }
    let sv = r.snapshot["version"].as_u64().unwrap();
    let sb = r.fetcher.files.lock().unwrap()[&format!("metadata/{sv}.snapshot.json")].clone();
    r.timestamp["meta"] = json!({"snapshot.json":
        {"version": sv, "length": sb.len(), "hashes": {"sha256": sha256(&sb)}}});
    Repo::bump(&mut r.timestamp);
    r.fetcher
        .put("metadata/timestamp.json", sign(&r.timestamp, &[&r.ts]));
}

#[test]
fn endless_data_stops_at_the_limit() {
    let mut r = Repo::new();
    r.publish();
    let mut big = r.timestamp.clone();
    big["padding"] = json!("x".repeat(20_000));
    r.fetcher
        .put("metadata/timestamp.json", sign(&big, &[&r.ts]));
    let e = block(r.client().refresh()).unwrap_err();
    assert!(
        matches!(&e, TufError::Fetch { role, source: FetchError::TooLong { max: 16384, .. } } if role == "timestamp"),
        "{e}"
    );
}

#[test]
fn fast_forward_recovery_after_timestamp_key_rotation() {
    let mut r = Repo::new();
    r.timestamp["version"] = json!(10);
    r.publish();
    block(r.client().refresh()).unwrap();
    // New timestamp key in root v2; the repository restarts timestamp at version 1.
    r.ts = TestKey::new("ts2");
    Repo::bump(&mut r.root);
    r.set_root_keys(&[0, 1], 2);
    r.publish_root();
    r.timestamp["version"] = json!(1);
    r.publish();
    block(r.updater().refresh()).unwrap();
    assert_eq!(r.stored_version("timestamp"), Some(1));
}

fn role(name: &str, paths: &[&str], terminating: bool, deleg: &TestKey) -> Value {
    json!({"name": name, "keyids": [deleg.id], "threshold": 1, "terminating": terminating,
           "paths": paths})
}

fn delegations(r: &Repo, roles: Vec<Value>) -> Value {
    json!({"keys": {r.deleg.id.clone(): r.deleg.json()}, "roles": roles})
}

#[test]
fn delegations_preorder_terminating_and_only_the_search_path() {
    for terminating in [false, true] {
        let mut r = Repo::new();
        // targets -> A (a/*) -> C (a/*); targets -> B (a/*); D (b/*) never on the path.
        r.targets["delegations"] = delegations(
            &r,
            vec![
                role("A", &["a/*"], terminating, &r.deleg),
                role("B", &["a/*"], false, &r.deleg),
                role("D", &["b/*"], false, &r.deleg),
            ],
        );
        let mut a = common("targets", 1);
        a["targets"] = json!({});
        a["delegations"] = delegations(&r, vec![role("C", &["a/*"], false, &r.deleg)]);
        r.roles.insert("A".into(), a);
        for n in ["B", "C", "D"] {
            let mut t = common("targets", 1);
            t["targets"] = json!({});
            r.roles.insert(n.into(), t);
        }
        r.add_target(Some("B"), "a/f.swu", b"from B");
        r.add_target(Some("C"), "a/g.swu", b"from C");
        r.publish();
        let mut u = r.client();
        block(u.refresh()).unwrap();
        r.fetcher.take_log();
        // Pre-order: A, then its child C, then B.
        let got = block(u.find_target("a/f.swu")).unwrap();
        let log = r.fetcher.take_log();
        if terminating {
            assert_eq!(got, None, "A is terminating: B is never asked");
            assert_eq!(log, ["metadata/1.A.json", "metadata/1.C.json"]);
        } else {
            assert_eq!(got.unwrap().length, 6);
            assert_eq!(
                log,
                [
                    "metadata/1.A.json",
                    "metadata/1.C.json",
                    "metadata/1.B.json"
                ]
            );
        }
        assert!(block(u.find_target("a/g.swu")).unwrap().is_some());
        // A pattern does not cross "/": nothing fetched for a/x/y.
        assert_eq!(block(u.find_target("a/x/f.swu")).unwrap(), None);
        assert!(!r.fetcher.take_log().iter().any(|l| l.contains("D.json")));
        assert!(r.stored("D").is_none());
    }
}

#[test]
fn a_target_outside_the_delegated_paths_is_not_found() {
    let mut r = Repo::new();
    r.targets["delegations"] = delegations(&r, vec![role("A", &["a/*"], false, &r.deleg)]);
    let mut a = common("targets", 1);
    a["targets"] = json!({});
    r.roles.insert("A".into(), a);
    r.add_target(Some("A"), "b/f.swu", b"x");
    r.publish();
    let mut u = r.client();
    assert_eq!(block(u.find_target("b/f.swu")).unwrap(), None);
}

#[test]
fn delegated_role_signed_by_another_key_is_an_error() {
    let mut r = Repo::new();
    r.targets["delegations"] = delegations(&r, vec![role("A", &["*"], false, &r.deleg)]);
    let mut a = common("targets", 1);
    a["targets"] = json!({});
    r.roles.insert("A".into(), a);
    r.publish();
    r.fetcher
        .put("metadata/1.A.json", sign(&r.roles["A"], &[&r.tgt]));
    let mut u = r.client();
    let e = block(u.find_target("f")).unwrap_err();
    assert!(
        matches!(&e, TufError::Threshold { role, .. } if role == "A (as targets delegates it)"),
        "{e}"
    );
}

#[test]
fn succinct_hash_bins() {
    let mut r = Repo::new();
    r.targets["delegations"] = json!({"keys": {r.deleg.id.clone(): r.deleg.json()},
        "succinct_roles": {"keyids": [r.deleg.id], "threshold": 1, "bit_length": 8,
                           "name_prefix": "bins"}});
    let s = metadata::SuccinctRoles {
        keyids: vec![],
        threshold: 1,
        bit_length: 8,
        name_prefix: "bins".into(),
    };
    for i in 0..256 {
        let mut t = common("targets", 1);
        t["targets"] = json!({});
        r.roles.insert(format!("bins-{i:02x}"), t);
    }
    let paths: Vec<String> = (0..20).map(|i| format!("qemu/a/img-{i}.swu")).collect();
    for p in &paths {
        let bin = delegation::bin_for_target(&s, p);
        r.add_target(Some(&bin), p, p.as_bytes());
    }
    r.publish();
    let mut u = r.client();
    block(u.refresh()).unwrap();
    r.fetcher.take_log();
    let p = &paths[3];
    let bin = delegation::bin_for_target(&s, p);
    let info = block(u.find_target(p)).unwrap().unwrap();
    assert_eq!(info.length, p.len() as u64);
    assert_eq!(r.fetcher.take_log(), [format!("metadata/1.{bin}.json")]);
    let out = r.dir.path().join("out");
    block(u.download_target(&info, &out)).unwrap();
    // A path whose bin does not list it: not found, only its bin fetched.
    assert_eq!(block(u.find_target("qemu/none.swu")).unwrap(), None);
}

#[test]
fn all_targets_only_where_the_delegations_allow() {
    let mut r = Repo::new();
    r.targets["delegations"] = delegations(
        &r,
        vec![
            role("A", &["a/*"], true, &r.deleg),
            role("B", &["*/*"], false, &r.deleg),
        ],
    );
    for n in ["A", "B"] {
        let mut t = common("targets", 1);
        t["targets"] = json!({});
        r.roles.insert(n.into(), t);
    }
    r.add_target(None, "top.swu", b"t");
    r.add_target(Some("A"), "a/1.swu", b"a1");
    // Outside A's paths: not trusted from A.
    r.add_target(Some("A"), "b/2.swu", b"a2");
    r.add_target(Some("B"), "b/3.swu", b"b3");
    // A is terminating for a/*: B's a/4.swu is never reached.
    r.add_target(Some("B"), "a/4.swu", b"b4");
    r.publish();
    let mut u = r.client();
    let mut got: Vec<String> = block(u.all_targets(100))
        .unwrap()
        .into_iter()
        .map(|t| t.path)
        .collect();
    got.sort();
    assert_eq!(got, ["a/1.swu", "b/3.swu", "top.swu"]);
    assert!(block(r.updater().all_targets(2)).is_err());
}

/// A key this client cannot use (another keytype, no `public`) does not stop the metadata
/// listing it from parsing; it just never counts.
#[test]
fn unusable_keys_are_listed_but_never_count() {
    let mut r = Repo::new();
    r.root["keys"]["odd"] = json!({"keytype": "sigstore-oidc", "scheme": "Fulcio",
        "keyval": {"identity": "a@b", "issuer": "https://x"}});
    r.root["roles"]["targets"]["keyids"] = json!(["odd", r.tgt.id]);
    r.publish();
    block(r.client().refresh()).unwrap();
    r.root["roles"]["targets"]["threshold"] = json!(2);
    r.updater().init(&r.root_bytes()).unwrap();
    let e = block(r.updater().refresh()).unwrap_err();
    assert!(
        matches!(&e, TufError::Threshold { role, valid: 1, threshold: 2 } if role == "targets"),
        "{e}"
    );
}

#[test]
fn expired_delegated_role_is_expired() {
    let mut r = Repo::new();
    r.targets["delegations"] = delegations(&r, vec![role("A", &["*"], false, &r.deleg)]);
    let mut a = common("targets", 1);
    a["targets"] = json!({});
    a["expires"] = json!("2020-01-01T00:00:00Z");
    r.roles.insert("A".into(), a);
    r.publish();
    let e = block(r.client().find_target("f")).unwrap_err();
    assert!(e.is_expired(), "{e}");
}

#[test]
fn target_url_and_file_names() {
    let info = TargetInfo {
        path: "a/b/f 1.swu".into(),
        length: 1,
        hashes: [
            ("sha512".to_owned(), "bb".to_owned()),
            ("sha256".to_owned(), "aa".to_owned()),
        ]
        .into_iter()
        .collect(),
        custom: Value::Null,
    };
    assert_eq!(
        target_url("http://h/t/", &info, true),
        "http://h/t/a/b/aa.f%201.swu"
    );
    assert_eq!(
        target_url("http://h/t", &info, false),
        "http://h/t/a/b/f%201.swu"
    );
    assert_eq!(target_file_name("a/b/f 1.swu"), "a%2Fb%2Ff%201.swu");
    assert_eq!(target_file_name(".."), "%2E%2E");
    assert_eq!(target_file_name("../x"), "..%2Fx");
    assert_eq!(store::file_name("bins-0a"), "bins-0a.json");
}

fn role_of(name: &str, paths: &[&str], key: &TestKey) -> Value {
    role(name, paths, false, key)
}

/// A diamond: targets delegates `*/*` to A and `b/*` to B; A delegates `a/*` to C with the key
/// `deleg`, B delegates `b/*` to C with `other`. C (signed by `deleg` only, unless
/// `c_signed_by_both`) lists `a/1.swu` and `b/2.swu`.
fn diamond(other: &TestKey, c_signed_by_both: bool) -> Repo {
    let mut r = Repo::new();
    r.targets["delegations"] = delegations(
        &r,
        vec![
            role_of("A", &["*/*"], &r.deleg),
            role_of("B", &["b/*"], &r.deleg),
        ],
    );
    let mut a = common("targets", 1);
    a["targets"] = json!({});
    a["delegations"] = delegations(&r, vec![role_of("C", &["a/*"], &r.deleg)]);
    let mut b = common("targets", 1);
    b["targets"] = json!({});
    b["delegations"] = json!({"keys": {other.id.clone(): other.json()},
        "roles": [role_of("C", &["b/*"], other)]});
    let mut c = common("targets", 1);
    c["targets"] = json!({});
    r.roles.insert("A".into(), a);
    r.roles.insert("B".into(), b);
    r.roles.insert("C".into(), c);
    r.add_target(Some("C"), "a/1.swu", b"a1");
    r.add_target(Some("C"), "b/2.swu", b"b2");
    r.publish();
    if c_signed_by_both {
        r.fetcher
            .put("metadata/1.C.json", sign(&r.roles["C"], &[&r.deleg, other]));
    }
    r
}

/// TUF specification 5.6.7: a role is trusted through the delegation on the current search
/// path. C, verified through A for `a/1.swu`, is not trusted through B for `b/2.swu` when B's
/// key did not sign it: the search ends with B's threshold error, in the same process (C already
/// loaded) as in a fresh one (C from the store), and nothing is fetched again for it.
#[test]
fn diamond_delegation_verified_per_delegator() {
    let other = TestKey::new("other");
    let r = diamond(&other, false);
    let mut u = r.client();
    assert_eq!(block(u.find_target("a/1.swu")).unwrap().unwrap().length, 2);
    r.fetcher.take_log();
    // The server now answers for C with another C that B's key signs (python-tuf 7.0.1's
    // `_load_targets`, as its code reads, fetches C again here and takes it): C is already
    // trusted, so that C is the one verified through B, and nothing is fetched for it.
    let mut c2 = r.roles["C"].clone();
    c2["targets"]["b/3.swu"] = json!({"length": 1, "hashes": {"sha256": sha256(b"3")}});
    r.fetcher.put("metadata/1.C.json", sign(&c2, &[&other]));
    let e = block(u.find_target("b/2.swu")).unwrap_err();
    assert!(
        matches!(&e, TufError::Threshold { role, valid: 0, threshold: 1 }
            if role == "C (as B delegates it)"),
        "{e}"
    );
    assert_eq!(r.fetcher.take_log(), ["metadata/1.B.json"]);
    // A is still a good path to C.
    assert!(block(u.find_target("a/1.swu")).unwrap().is_some());
    // A fresh client (the store holds C) reaching C through B first, the first C served again.
    r.fetcher
        .put("metadata/1.C.json", sign(&r.roles["C"], &[&r.deleg]));
    let mut u = r.updater();
    let e = block(u.find_target("b/2.swu")).unwrap_err();
    assert!(matches!(&e, TufError::Threshold { .. }), "{e}");
    // Through TUF-only mode's listing too: b/2.swu is never listed as trusted.
    let mut u = r.updater();
    assert!(block(u.all_targets(100)).is_err());

    // The control: C signed by both keys is found through either delegator.
    let r = diamond(&other, true);
    let mut u = r.client();
    assert!(block(u.find_target("a/1.swu")).unwrap().is_some());
    assert!(block(u.find_target("b/2.swu")).unwrap().is_some());
    let mut got: Vec<String> = block(r.updater().all_targets(100))
        .unwrap()
        .into_iter()
        .map(|t| t.path)
        .collect();
    got.sort();
    assert_eq!(got, ["a/1.swu", "b/2.swu"]);
}

/// The trusted set's rule beside the updater: a role already trusted through one delegator is
/// not replaced by other content verified through another.
#[test]
fn a_role_trusted_through_one_delegator_is_not_replaced_through_another() {
    let other = TestKey::new("other");
    let r = diamond(&other, false);
    let mut u = r.client();
    block(u.find_target("a/1.swu")).unwrap();
    // Loads B (and refuses C through it).
    block(u.find_target("b/2.swu")).unwrap_err();
    let mut set = u.trusted.take().unwrap();
    assert!(set.contains("C", "A") && !set.contains("C", "B"));
    // Another C, signed by B's key alone: valid for B, other content than the trusted C.
    let mut c2 = r.roles["C"].clone();
    c2["targets"]["b/evil.swu"] = json!({"length": 1, "hashes": {"sha256": sha256(b"e")}});
    let c_by_other = sign(&c2, &[&other]);
    let e = set.update_targets("C", "B", &c_by_other).unwrap_err();
    assert!(e.to_string().contains("other content"), "{e}");
    assert!(!set.contains("C", "B"));
    let e = set.verify_delegation("C", "B").unwrap_err();
    assert!(matches!(e, TufError::Threshold { .. }), "{e}");
    assert!(!set.contains("C", "B"));
    set.verify_delegation("C", "A").unwrap();
}

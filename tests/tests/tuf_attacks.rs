//! The attacks of the TUF specification (section 1.5.2) against the TUF client, on RS-TUF-shaped
//! repositories (consistent snapshots only, succinct hash bins, nested target paths) built with
//! python-tuf and served by nginx. Each scenario runs with the agent's `tuf-client` and with
//! python-tuf's ngclient (the reference, which shows the attack is real).
//!
//! Each asserts what a user sees: the exit code, an error naming the problem, no target file
//! written, and the trusted metadata unchanged after a refused update.

use std::fs;

use cip_update_agent_tests::fixtures::tuf::{
    Attack, AttackServer, ClientKind, IMAGE, IMAGE_DATA, Served, TufClient, bin_of, one_image,
};
use cip_update_agent_tests::tuf_tests;
use serde_json::json;

/// Trusted metadata of every top-level role, to compare before and after a refused update.
fn trusted_top(c: &TufClient) -> Vec<Option<Vec<u8>>> {
    trusted(c, &["root", "timestamp", "snapshot", "targets"])
}

/// Trusted metadata of `roles`.
fn trusted(c: &TufClient, roles: &[&str]) -> Vec<Option<Vec<u8>>> {
    roles.iter().map(|r| c.trusted(r)).collect()
}

const VERSION_WORDS: &[&str] = &["version", "rollback"];
const EXPIRED_WORDS: &[&str] = &["expired"];
const SIGNATURE_WORDS: &[&str] = &["signature", "signed", "threshold"];
/// python-tuf refuses a keyid with two signatures when it parses the metadata.
const DUPLICATE_WORDS: &[&str] = &[
    "signature",
    "signed",
    "threshold",
    "duplicate",
    "deserializ",
];
const NOT_FOUND_WORDS: &[&str] = &["not found", "no target", "not a target", "unknown target"];
const HASH_WORDS: &[&str] = &["hash", "digest", "sha256", "sha512"];
const LENGTH_WORDS: &[&str] = &[
    "length",
    "limit",
    "exceed",
    "too large",
    "too long",
    "bytes",
];

// Arbitrary software ------------------------------------------------------------------------

/// A name the metadata does not list is refused, though the server has a file under it.
fn arbitrary_software_not_a_target(kind: ClientKind) {
    let (s, c) = one_image(kind);
    let evil = "qemu-amd64/evil.swu";
    let dir = s.repo.www().join("targets/qemu-amd64");
    fs::write(dir.join("evil.swu"), b"evil").unwrap();
    let run = s.download(&c, &[evil]).unwrap();
    run.assert_refused(NOT_FOUND_WORDS);
    assert!(c.target_files().is_empty(), "{:?}", c.target_files());
    assert!(
        !s.requests().iter().any(|r| r.contains("evil")),
        "the file was requested: {:?}",
        s.requests()
    );
}

/// A target whose served bytes differ from its listed hash is refused and not kept.
fn arbitrary_software_other_hash(kind: ClientKind) {
    let (s, c) = one_image(kind);
    let evil = b"the 6.6 image"; // same length, other bytes
    s.repo
        .ops(json!([
            {"op": "add_target", "path": "qemu-amd64/cip-core-1.6.swu", "data_hex": hex::encode(b"the 1.6 image"),
             "served_hex": hex::encode(evil)},
            {"op": "publish"},
        ]))
        .unwrap();
    let run = s.download(&c, &["qemu-amd64/cip-core-1.6.swu"]).unwrap();
    run.assert_refused(HASH_WORDS);
    assert!(c.target_files().is_empty(), "{:?}", c.target_files());
}

/// Every listed hash is checked: a right sha256 does not excuse a wrong sha512.
fn arbitrary_software_second_hash_wrong(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo
        .ops(json!([
            {"op": "add_target", "path": "qemu-amd64/two-hashes.swu", "data": "two hashes",
             "hashes": ["sha256", "sha512"], "hash_overrides": {"sha512": "ab".repeat(64)}},
            {"op": "publish"},
        ]))
        .unwrap();
    let run = s.download(&c, &["qemu-amd64/two-hashes.swu"]).unwrap();
    run.assert_refused(HASH_WORDS);
    assert!(c.target_files().is_empty(), "{:?}", c.target_files());
}

/// Targets download in argument order and the first failure stops the rest.
fn download_stops_at_the_first_failure(kind: ClientKind) {
    let (s, c) = one_image(kind);
    let run = s.download(&c, &["qemu-amd64/missing.swu", IMAGE]).unwrap();
    run.assert_refused(NOT_FOUND_WORDS);
    assert!(c.target(IMAGE).is_none());
    s.download(&c, &[IMAGE]).unwrap().assert_ok();
    assert_eq!(c.target(IMAGE).as_deref(), Some(IMAGE_DATA));
}

// Rollback ----------------------------------------------------------------------------------

/// A root served as the next version that is an older one (validly signed) is refused.
fn rollback_root(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo
        .ops(json!([{"op": "touch", "role": "root"}, {"op": "publish"}]))
        .unwrap();
    s.refresh(&c).unwrap().assert_ok();
    assert_eq!(c.trusted_version("root"), Some(2));
    fs::copy(
        s.repo.metadata("1.root.json"),
        s.repo.metadata("3.root.json"),
    )
    .unwrap();
    let before = trusted_top(&c);
    s.refresh(&c).unwrap().assert_refused(VERSION_WORDS);
    assert_eq!(trusted_top(&c), before);
    assert_eq!(c.trusted_version("root"), Some(2));
}

/// An older timestamp is refused; the trusted one stays.
fn rollback_timestamp(kind: ClientKind) {
    let (s, c) = one_image(kind);
    let old = s.repo.metadata_bytes("timestamp.json").unwrap();
    s.repo.ops(json!([{"op": "publish"}])).unwrap();
    s.refresh(&c).unwrap().assert_ok();
    let trusted = c.trusted("timestamp").unwrap();
    assert_eq!(trusted, s.repo.metadata_bytes("timestamp.json").unwrap());
    fs::write(s.repo.metadata("timestamp.json"), &old).unwrap();
    s.refresh(&c).unwrap().assert_refused(VERSION_WORDS);
    assert_eq!(c.trusted("timestamp"), Some(trusted));
}

/// A new timestamp (signed by the timestamp key) naming an older snapshot is refused.
fn rollback_snapshot(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo.publish().unwrap();
    s.refresh(&c).unwrap().assert_ok();
    let snapshot = s.repo.version("snapshot").unwrap();
    let before = trusted_top(&c);
    s.repo
        .op(json!({"op": "publish", "timestamp_snapshot_version": snapshot - 1}))
        .unwrap();
    s.refresh(&c).unwrap().assert_refused(VERSION_WORDS);
    assert_eq!(trusted_top(&c), before);
}

/// A new snapshot naming an older targets is refused.
fn rollback_targets(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo
        .ops(json!([{"op": "touch", "role": "targets"}, {"op": "publish"}]))
        .unwrap();
    s.refresh(&c).unwrap().assert_ok();
    assert_eq!(c.trusted_version("targets"), Some(2));
    // The new timestamp is valid (and may be trusted); the snapshot it names is not.
    let before = trusted(&c, &["root", "snapshot", "targets"]);
    s.repo
        .op(json!({"op": "publish", "snapshot_meta": {"targets.json": 1}}))
        .unwrap();
    s.refresh(&c).unwrap().assert_refused(VERSION_WORDS);
    assert_eq!(trusted(&c, &["root", "snapshot", "targets"]), before);
}

/// A new snapshot naming an older version of a bin the client trusts is refused.
fn rollback_bin(kind: ClientKind) {
    let (s, c) = one_image(kind);
    let bin = bin_of(&s, IMAGE);
    s.repo
        .ops(json!([{"op": "touch", "role": bin}, {"op": "publish"}]))
        .unwrap(); // the bin at version 3 (2: the image)
    s.download(&c, &[IMAGE]).unwrap().assert_ok();
    assert_eq!(c.trusted_version(&bin), Some(3));
    let roles = ["root", "snapshot", "targets", bin.as_str()];
    let before = trusted(&c, &roles);
    s.repo
        .op(json!({"op": "publish", "snapshot_meta": {format!("{bin}.json"): 2}}))
        .unwrap();
    let run = s.download(&c, &[IMAGE]).unwrap();
    run.assert_refused(VERSION_WORDS);
    assert_eq!(trusted(&c, &roles), before);
}

/// Fast-forward recovery: a timestamp pushed to version 1000 (as with a stolen timestamp key) is
/// trusted; the repository then rotates the timestamp key in a new root and goes on at version
/// 5. The client drops the timestamp signed by the old key and accepts the new one; without the
/// rotation, version 5 after 1000 is a rollback.
fn fast_forward_recovery_by_key_rotation(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo
        .op(json!({"op": "publish", "timestamp_version": 1000}))
        .unwrap();
    s.refresh(&c).unwrap().assert_ok();
    assert_eq!(c.trusted_version("timestamp"), Some(1000));
    s.repo
        .op(json!({"op": "publish", "timestamp_version": 5}))
        .unwrap();
    s.refresh(&c).unwrap().assert_refused(VERSION_WORDS);
    s.repo
        .ops(json!([
            {"op": "set_keys", "role": "timestamp"},
            {"op": "publish", "timestamp_version": 6},
        ]))
        .unwrap();
    s.download(&c, &[IMAGE]).unwrap().assert_ok();
    assert_eq!(c.trusted_version("root"), Some(2));
    assert_eq!(c.trusted_version("timestamp"), Some(6));
    assert_eq!(c.target(IMAGE).as_deref(), Some(IMAGE_DATA));
}

// Freeze ------------------------------------------------------------------------------------

fn freeze(kind: ClientKind, role: &str) {
    let (s, c) = one_image(kind);
    let role = if role == "bin" {
        bin_of(&s, IMAGE)
    } else {
        role.to_string()
    };
    s.repo
        .ops(json!([{"op": "expire", "role": role}, {"op": "publish"}]))
        .unwrap();
    let run = s.download(&c, &[IMAGE]).unwrap();
    run.assert_refused(EXPIRED_WORDS);
    assert!(run.stderr.contains(&role), "the error should name {role}");
    assert!(c.target_files().is_empty(), "{:?}", c.target_files());
}

fn freeze_root(kind: ClientKind) {
    freeze(kind, "root");
}

fn freeze_timestamp(kind: ClientKind) {
    freeze(kind, "timestamp");
}

fn freeze_snapshot(kind: ClientKind) {
    freeze(kind, "snapshot");
}

fn freeze_targets(kind: ClientKind) {
    freeze(kind, "targets");
}

fn freeze_bin(kind: ClientKind) {
    freeze(kind, "bin");
}

/// A frozen repository: the server keeps answering the last timestamp after it expired.
/// The refresh that trusted it succeeded; once it is expired, a refresh fails.
fn freeze_replayed_timestamp(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.refresh(&c).unwrap().assert_ok();
    s.repo
        .ops(json!([{"op": "expire", "role": "timestamp"}, {"op": "publish"}]))
        .unwrap();
    s.refresh(&c).unwrap().assert_refused(EXPIRED_WORDS);
}

// Mix and match -----------------------------------------------------------------------------

/// targets of another version served under the version snapshot names is refused.
fn mix_and_match_targets(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo
        .ops(json!([{"op": "touch", "role": "targets"}, {"op": "publish"}]))
        .unwrap();
    fs::copy(
        s.repo.metadata("1.targets.json"),
        s.repo.metadata("2.targets.json"),
    )
    .unwrap();
    s.refresh(&c).unwrap().assert_refused(VERSION_WORDS);
    assert_eq!(c.trusted("targets"), None);
}

/// A snapshot of another version served under the version timestamp names is refused.
fn mix_and_match_snapshot(kind: ClientKind) {
    let (s, c) = one_image(kind);
    let v = s.repo.version("snapshot").unwrap();
    fs::copy(
        s.repo.metadata(&format!("{}.snapshot.json", v - 1)),
        s.repo.metadata(&format!("{v}.snapshot.json")),
    )
    .unwrap();
    s.refresh(&c).unwrap().assert_refused(VERSION_WORDS);
    assert_eq!(c.trusted("snapshot"), None);
}

/// A bin of another version served under the version snapshot names is refused.
fn mix_and_match_bin(kind: ClientKind) {
    let (s, c) = one_image(kind);
    let bin = bin_of(&s, IMAGE);
    let v = s.repo.version(&bin).unwrap();
    fs::copy(
        s.repo.metadata(&format!("{}.{bin}.json", v - 1)),
        s.repo.metadata(&format!("{v}.{bin}.json")),
    )
    .unwrap();
    s.download(&c, &[IMAGE])
        .unwrap()
        .assert_refused(VERSION_WORDS);
    assert!(c.target_files().is_empty());
    assert_eq!(c.trusted(&bin), None);
}

// Endless data ------------------------------------------------------------------------------

fn endless(kind: ClientKind, path: &str) {
    let (s, c) = one_image(kind);
    let bin = bin_of(&s, IMAGE);
    if path == "2.root.json" {
        s.repo
            .ops(json!([{"op": "touch", "role": "root"}, {"op": "publish"}]))
            .unwrap();
    }
    let target = s.repo.target_file(IMAGE).unwrap();
    let target = target.strip_prefix(s.repo.www()).unwrap().to_str().unwrap();
    let path = match path {
        "snapshot" | "bin" => {
            let role = if path == "bin" {
                bin.as_str()
            } else {
                "snapshot"
            };
            format!("/metadata/{}.{role}.json", s.repo.version(role).unwrap())
        }
        "target" => format!("/{target}"),
        p => format!("/metadata/{p}"),
    };
    let server = AttackServer::start(&s.repo.www(), &[(&path, Attack::Endless)]).unwrap();
    let run = c
        .download(&server.url("metadata"), &server.url("targets"), &[IMAGE])
        .unwrap();
    assert!(
        run.code.is_some(),
        "the client hung on endless data at {path}"
    );
    run.assert_refused(LENGTH_WORDS);
    assert!(c.target_files().is_empty(), "{:?}", c.target_files());
    assert!(server.requests().contains(&path), "{:?}", server.requests());
}

fn endless_timestamp(kind: ClientKind) {
    endless(kind, "timestamp.json");
}

fn endless_root(kind: ClientKind) {
    endless(kind, "2.root.json");
}

fn endless_snapshot(kind: ClientKind) {
    endless(kind, "snapshot");
}

fn endless_bin(kind: ClientKind) {
    endless(kind, "bin");
}

fn endless_target(kind: ClientKind) {
    endless(kind, "target");
}

/// A timestamp padded past the length limit (valid JSON, valid signature) is refused.
fn padded_timestamp(kind: ClientKind) {
    let (s, c) = one_image(kind);
    let ts = s.repo.metadata("timestamp.json");
    let mut data = fs::read(&ts).unwrap();
    data.resize(1 << 20, b' ');
    fs::write(&ts, data).unwrap();
    s.refresh(&c).unwrap().assert_refused(LENGTH_WORDS);
    assert_eq!(c.trusted("timestamp"), None);
}

/// A target file longer than its listed length is refused and not kept.
fn target_longer_than_its_length(kind: ClientKind) {
    let (s, c) = one_image(kind);
    let file = s.repo.target_file(IMAGE).unwrap();
    let mut data = IMAGE_DATA.to_vec();
    data.extend_from_slice(b" and a payload");
    fs::write(&file, data).unwrap();
    s.download(&c, &[IMAGE])
        .unwrap()
        .assert_refused(LENGTH_WORDS);
    assert!(c.target_files().is_empty(), "{:?}", c.target_files());
}

// Root rotation, thresholds, signatures -----------------------------------------------------

/// Two rotations, each new root signed by the old and the new keys: the client follows the
/// chain to the newest root, stored as served, and downloads under it.
fn root_rotation_good_chain(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo
        .ops(json!([
            {"op": "rotate_root"}, {"op": "publish"},
            {"op": "rotate_root", "keys": 3, "threshold": 2}, {"op": "publish"},
        ]))
        .unwrap();
    s.download(&c, &[IMAGE]).unwrap().assert_ok();
    assert_eq!(
        c.trusted("root"),
        Some(s.repo.metadata_bytes("3.root.json").unwrap())
    );
    assert_eq!(c.target(IMAGE).as_deref(), Some(IMAGE_DATA));
}

/// A new root signed only by its own new keys (not by the trusted root's) is refused.
fn root_rotation_broken_chain(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo
        .ops(json!([{"op": "rotate_root", "sign_with_old": false}, {"op": "publish"}]))
        .unwrap();
    s.download(&c, &[IMAGE])
        .unwrap()
        .assert_refused(SIGNATURE_WORDS);
    assert_eq!(
        c.trusted("root"),
        Some(s.repo.metadata_bytes("1.root.json").unwrap())
    );
    assert!(c.target_files().is_empty());
}

/// A new root that its own threshold (2 of 3 new keys) does not sign is refused.
fn root_rotation_new_threshold_not_met(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo
        .ops(json!([
            {"op": "rotate_root", "keys": 3, "threshold": 2},
            {"op": "set_keys", "role": "root", "keys": 3, "threshold": 2, "signers": 1},
            {"op": "publish"},
        ]))
        .unwrap();
    s.refresh(&c).unwrap().assert_refused(SIGNATURE_WORDS);
    assert_eq!(
        c.trusted("root"),
        Some(s.repo.metadata_bytes("1.root.json").unwrap())
    );
}

/// A timestamp signed by 1 of the 2 keys its threshold asks for is refused.
fn threshold_not_met(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo
        .ops(json!([
            {"op": "set_keys", "role": "timestamp", "keys": 2, "threshold": 2, "signers": 1},
            {"op": "publish"},
        ]))
        .unwrap();
    s.refresh(&c).unwrap().assert_refused(SIGNATURE_WORDS);
    assert_eq!(c.trusted("timestamp"), None);
}

/// A bin signed below its threshold is refused when it is looked up.
fn threshold_not_met_bin(kind: ClientKind) {
    let (s, c) = one_image(kind);
    let bin = bin_of(&s, IMAGE);
    s.repo
        .ops(json!([
            {"op": "set_keys", "role": "bins", "keys": 2, "threshold": 2, "signers": 1},
            {"op": "touch", "role": bin},
            {"op": "publish"},
        ]))
        .unwrap();
    s.refresh(&c).unwrap().assert_ok();
    s.download(&c, &[IMAGE])
        .unwrap()
        .assert_refused(SIGNATURE_WORDS);
    assert!(c.target_files().is_empty());
}

/// Threshold 2: one key's signature listed twice does not count twice (both clients refuse a
/// keyid listed twice whatever the threshold: `tuf_rules.rs`).
fn duplicate_signatures(kind: ClientKind) {
    let (s, c) = one_image(kind);
    s.repo
        .ops(json!([
            {"op": "set_keys", "role": "timestamp", "keys": 2, "threshold": 2, "signers": 1,
             "duplicate": true},
            {"op": "publish"},
        ]))
        .unwrap();
    let ts: serde_json::Value =
        serde_json::from_slice(&s.repo.metadata_bytes("timestamp.json").unwrap()).unwrap();
    assert_eq!(ts["signatures"].as_array().unwrap().len(), 2);
    s.refresh(&c).unwrap().assert_refused(DUPLICATE_WORDS);
    assert_eq!(c.trusted("timestamp"), None);
}

/// Threshold 2: one key listed under two keyids, signing under both, does not count twice.
/// (The agent only: python-tuf counts keyids, and accepts this; see the next test.)
#[test]
fn duplicate_key_under_two_keyids() {
    let (s, c) = one_image(ClientKind::Agent);
    s.repo
        .ops(json!([{"op": "alias_key", "role": "timestamp"}, {"op": "publish"}]))
        .unwrap();
    s.refresh(&c).unwrap().assert_refused(SIGNATURE_WORDS);
    assert_eq!(c.trusted("timestamp"), None);
}

/// The control of the test above: both signatures verify, so a client that counts keyids
/// (python-tuf 7.0.1) accepts the timestamp; the agent's refusal is for the shared key alone.
#[test]
fn duplicate_key_under_two_keyids_passes_a_keyid_count() {
    let (s, c) = one_image(ClientKind::Reference);
    s.repo
        .ops(json!([{"op": "alias_key", "role": "timestamp"}, {"op": "publish"}]))
        .unwrap();
    s.refresh(&c).unwrap().assert_ok();
    assert_eq!(
        c.trusted("timestamp"),
        Some(s.repo.metadata_bytes("timestamp.json").unwrap())
    );
}

tuf_tests!(
    arbitrary_software_not_a_target,
    arbitrary_software_other_hash,
    arbitrary_software_second_hash_wrong,
    download_stops_at_the_first_failure,
    rollback_root,
    rollback_timestamp,
    rollback_snapshot,
    rollback_targets,
    rollback_bin,
    fast_forward_recovery_by_key_rotation,
    freeze_root,
    freeze_timestamp,
    freeze_snapshot,
    freeze_targets,
    freeze_bin,
    freeze_replayed_timestamp,
    mix_and_match_targets,
    mix_and_match_snapshot,
    mix_and_match_bin,
    endless_timestamp,
    endless_root,
    endless_snapshot,
    endless_bin,
    endless_target,
    padded_timestamp,
    target_longer_than_its_length,
    root_rotation_good_chain,
    root_rotation_broken_chain,
    root_rotation_new_threshold_not_met,
    threshold_not_met,
    threshold_not_met_bin,
    duplicate_signatures,
);

// Slow retrieval: the agent only (python-tuf's fetcher has a fixed 30 s socket timeout, too slow
// for the suite). A server that sends the headers, then nothing: the client gives up after its
// read timeout, exits 1 and names the timeout; it never hangs. A server that dribbles a byte at a
// time: the whole-file timeout ends it.

fn stalled(path_of: impl Fn(&Served) -> String) {
    slow(path_of, Attack::Stall);
}

fn slow(path_of: impl Fn(&Served) -> String, attack: Attack) {
    let (s, c) = one_image(ClientKind::Agent);
    let path = path_of(&s);
    let c = c.options(&[
        "--read-timeout",
        "2s",
        "--connect-timeout",
        "2s",
        "--metadata-timeout",
        "4s",
    ]);
    let server = AttackServer::start(&s.repo.www(), &[(&path, attack)]).unwrap();
    let run = c
        .download(&server.url("metadata"), &server.url("targets"), &[IMAGE])
        .unwrap();
    assert!(run.code.is_some(), "the client hung on a stalled {path}");
    run.assert_refused(&["timed out", "timeout", "slow retrieval", "no data"]);
    assert!(c.target_files().is_empty());
    assert!(server.requests().contains(&path), "{:?}", server.requests());
}

#[test]
fn slow_retrieval_of_timestamp() {
    stalled(|_| "/metadata/timestamp.json".to_string());
}

#[test]
fn slow_retrieval_of_snapshot() {
    stalled(|s| {
        format!(
            "/metadata/{}.snapshot.json",
            s.repo.version("snapshot").unwrap()
        )
    });
}

#[test]
fn slow_retrieval_of_target() {
    stalled(|s| {
        let f = s.repo.target_file(IMAGE).unwrap();
        format!("/{}", f.strip_prefix(s.repo.www()).unwrap().display())
    });
}

/// A timestamp sent one byte every 500 ms (a read timeout never fires): the whole-file metadata
/// timeout ends it.
#[test]
fn slow_retrieval_of_a_dribbled_timestamp() {
    slow(|_| "/metadata/timestamp.json".to_string(), Attack::Dribble);
}

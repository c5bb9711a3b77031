//! Two rules of the TUF specification that a client can miss while still passing the attacks of
//! `tuf_attacks.rs`, each run with the agent's `tuf-client` and with python-tuf's ngclient on
//! the same repository (built with python-tuf's Metadata API, served by nginx):
//!
//! - the metadata format: "The keyid MUST be unique in the signatures array: multiple signatures
//!   with the same keyid are not allowed." Metadata listing a keyid twice is refused even when
//!   one of the copies alone meets the threshold;
//! - 5.6.7, the delegation search: a role that two delegators name (a "diamond") is trusted on a
//!   search path only when the delegator on that path verified it, not because the other path
//!   did earlier in the same run.
//!
//! python-tuf 7.0.1 agrees on both: it refuses a repeated keyid when it parses the metadata
//! (`Metadata.from_dict`: "Multiple signatures found for keyid"), and since its fix of the
//! diamond (python-tuf#2977) it tracks (delegator, role) pairs. Where it differs in detail: on a
//! diamond it verifies the stored copy against the second delegator, then downloads the role
//! again and verifies that; the agent verifies the copy it already trusts and fetches nothing.

use cip_update_agent_tests::tuf::{ClientKind, Served, TufClient, TufRepo};
use cip_update_agent_tests::tuf_tests;
use serde_json::{Value, json};

const IMAGE: &str = "qemu-amd64/cip-core-1.5.swu";
const IMAGE_DATA: &[u8] = b"the 1.5 image";

/// The agent names a repeated keyid; python-tuf fails to deserialize the metadata and says why.
const DUPLICATE_WORDS: &[&str] = &["more than one signature", "multiple signatures"];
const SIGNATURE_WORDS: &[&str] = &["signature", "signed", "threshold"];

/// An RS-TUF-shaped repository (16 bins) with one image, served; a client of `kind`.
fn setup(kind: ClientKind) -> (Served, TufClient) {
    let repo = TufRepo::rs_tuf(4).unwrap();
    repo.add_target(
        IMAGE,
        IMAGE_DATA,
        json!({"version": "1.5", "board": "qemu-amd64", "hardware": ["cip-core-1.0"]}),
    )
    .unwrap();
    let served = Served::new(repo).unwrap();
    let client = served.client(kind).unwrap();
    (served, client)
}

fn bin_of(s: &Served, path: &str) -> String {
    let r = s.repo.op(json!({"op": "bin_for", "path": path})).unwrap();
    r["role"].as_str().unwrap().to_string()
}

/// The keyids of the served `file`'s signatures, in order.
fn signature_keyids(s: &Served, file: &str) -> Vec<String> {
    let v: Value = serde_json::from_slice(&s.repo.metadata_bytes(file).unwrap()).unwrap();
    v["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sig| sig["keyid"].as_str().unwrap().to_string())
        .collect()
}

// A keyid signing twice ----------------------------------------------------------------------

/// `role` (threshold 1, one key) is published with its keyid twice in `signatures` (`mode`:
/// the good signature repeated, or a wrong one before it). The client refuses the update, keeps
/// nothing of it, downloads nothing; published again without the repeat, the same client takes
/// it and downloads the image (the refusal was for the repeated keyid alone).
fn keyid_twice(kind: ClientKind, role_of: impl Fn(&Served) -> String, mode: &str) {
    let (s, c) = setup(kind);
    let role = role_of(&s);
    s.repo
        .ops(json!([
            {"op": "duplicate", "role": role, "mode": mode},
            {"op": "publish"},
        ]))
        .unwrap();
    let file = if role == "timestamp" {
        "timestamp.json".to_string()
    } else {
        format!("{}.{role}.json", s.repo.version(&role).unwrap())
    };
    let ids = signature_keyids(&s, &file);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], ids[1], "one keyid, twice: {ids:?}");

    let run = s.download(&c, &[IMAGE]).unwrap();
    run.assert_refused(DUPLICATE_WORDS);
    assert!(c.target_files().is_empty(), "{:?}", c.target_files());
    assert_eq!(c.trusted(&role), None, "{role} was stored");

    s.repo
        .ops(json!([
            {"op": "duplicate", "role": role, "mode": null},
            {"op": "publish"},
        ]))
        .unwrap();
    s.download(&c, &[IMAGE]).unwrap().assert_ok();
    assert_eq!(c.target(IMAGE).as_deref(), Some(IMAGE_DATA));
    assert!(c.trusted(&role).is_some());
}

fn keyid_twice_timestamp(kind: ClientKind) {
    keyid_twice(kind, |_| "timestamp".into(), "same");
}

/// A wrong signature first, the good one second, under the same keyid: a client that takes the
/// first copy fails the threshold, one that takes any good copy accepts; both are wrong.
fn keyid_twice_timestamp_junk_first(kind: ClientKind) {
    keyid_twice(kind, |_| "timestamp".into(), "junk_first");
}

fn keyid_twice_snapshot(kind: ClientKind) {
    keyid_twice(kind, |_| "snapshot".into(), "same");
}

fn keyid_twice_targets(kind: ClientKind) {
    keyid_twice(kind, |_| "targets".into(), "junk_first");
}

/// A delegated role (the image's bin): refused when the image is looked up.
fn keyid_twice_bin(kind: ClientKind) {
    keyid_twice(kind, |s| bin_of(s, IMAGE), "same");
}

// Diamond delegations ------------------------------------------------------------------------

/// targets delegates `*/*` to A and `b/*` to B; A delegates `a/*` to C; B delegates `b/*` to
/// C again with its own key, which signs C only when `b_key_signs`. C lists `a/1.swu` and
/// `b/2.swu` (served). No bins.
fn diamond(kind: ClientKind, b_key_signs: bool) -> (Served, TufClient) {
    let repo = TufRepo::new(json!({"bins_bits": null})).unwrap();
    repo.ops(json!([
        {"op": "delegate", "name": "A", "paths": ["*/*"]},
        {"op": "delegate", "name": "B", "paths": ["b/*"]},
        {"op": "delegate", "delegator": "A", "name": "C", "paths": ["a/*"]},
        {"op": "delegate", "delegator": "B", "name": "C", "paths": ["b/*"], "again": true,
         "signs": b_key_signs},
        {"op": "add_target", "path": "a/1.swu", "data": "a1 from C", "role": "C"},
        {"op": "add_target", "path": "b/2.swu", "data": "b2 from C", "role": "C"},
        {"op": "publish"},
    ]))
    .unwrap();
    let served = Served::new(repo).unwrap();
    let client = served.client(kind).unwrap();
    (served, client)
}

/// One run looks up `a/1.swu` (found in C through A: C's key signed it), then `b/2.swu`, whose
/// search path reaches C through B. B's key did not sign C: the client refuses, naming the
/// signature, and `b/2.swu` is not downloaded. A client that trusts C because the path through A
/// verified it downloads `b/2.swu`, which B never allowed.
fn diamond_second_delegator_not_signed(kind: ClientKind) {
    let (s, c) = diamond(kind, false);
    let run = s.download(&c, &["a/1.swu", "b/2.swu"]).unwrap();
    run.assert_refused(SIGNATURE_WORDS);
    assert_eq!(c.target("a/1.swu").as_deref(), Some(&b"a1 from C"[..]));
    assert_eq!(c.target("b/2.swu"), None);
    assert_eq!(c.target_files(), ["a%2F1.swu"]);
    if kind == ClientKind::Agent {
        assert!(
            run.stderr.contains("C (as B delegates it)"),
            "the error should name C as B delegates it: {}",
            run.stderr
        );
    }
}

/// The same lookup in a fresh run (C comes from the client's store, first reached through B):
/// refused too.
fn diamond_second_delegator_not_signed_fresh_run(kind: ClientKind) {
    let (s, c) = diamond(kind, false);
    s.download(&c, &["a/1.swu"]).unwrap().assert_ok();
    assert!(c.trusted("C").is_some());
    s.download(&c, &["b/2.swu"])
        .unwrap()
        .assert_refused(SIGNATURE_WORDS);
    assert_eq!(c.target("b/2.swu"), None);
}

/// The control: B's key signs C too, and both targets are downloaded in one run.
fn diamond_signed_by_both_delegators(kind: ClientKind) {
    let (s, c) = diamond(kind, true);
    let c_file = format!("{}.C.json", s.repo.version("C").unwrap());
    assert_eq!(signature_keyids(&s, &c_file).len(), 2);
    s.download(&c, &["a/1.swu", "b/2.swu"]).unwrap().assert_ok();
    assert_eq!(c.target("a/1.swu").as_deref(), Some(&b"a1 from C"[..]));
    assert_eq!(c.target("b/2.swu").as_deref(), Some(&b"b2 from C"[..]));
}

tuf_tests!(
    keyid_twice_timestamp,
    keyid_twice_timestamp_junk_first,
    keyid_twice_snapshot,
    keyid_twice_targets,
    keyid_twice_bin,
    diamond_second_delegator_not_signed,
    diamond_second_delegator_not_signed_fresh_run,
    diamond_signed_by_both_delegators,
);

//! Target search through delegations (TUF specification 5.6.7.2): pre-order depth-first order,
//! terminating delegations, `paths` patterns (`*` and `?` do not cross `/`, case-sensitive),
//! `path_hash_prefixes`, and the succinct hash bins of RS-TUF with nested target paths. Only the
//! roles on the search path are fetched. Each scenario runs with the agent's `tuf-client` and
//! with python-tuf's ngclient.

use cip_update_agent_tests::fixtures::tuf::{ClientKind, Served, TufClient, TufRepo};
use cip_update_agent_tests::tuf_tests;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const NOT_FOUND_WORDS: &[&str] = &["not found", "no target", "not a target", "unknown target"];

/// A repository without bins, built by `ops` (then published), served; a client of `kind`.
fn repo(kind: ClientKind, ops: Value) -> (Served, TufClient) {
    let repo = TufRepo::new(json!({"bins_bits": null})).unwrap();
    repo.ops(ops).unwrap();
    repo.publish().unwrap();
    let served = Served::new(repo).unwrap();
    let client = served.client(kind).unwrap();
    (served, client)
}

/// The delegated roles whose metadata was requested, in order (`N.<role>.json`).
fn roles_fetched(s: &Served) -> Vec<String> {
    s.requests()
        .iter()
        .filter_map(|r| r.strip_prefix("/metadata/"))
        .filter_map(|f| f.strip_suffix(".json"))
        .filter_map(|f| f.split_once('.'))
        .map(|(_, role)| role.to_string())
        .filter(|r| !["root", "snapshot", "targets"].contains(&r.as_str()))
        .collect()
}

fn target(path: &str, data: &str, role: &str) -> Value {
    json!({"op": "add_target", "path": path, "data": data, "role": role})
}

/// targets delegates to A then B; A delegates to C. Pre-order depth-first: A, C, then B. A
/// target listed by C and B comes from C (breadth-first would find B's); one listed by A and C
/// comes from A. B is not fetched: the search ended before it.
fn preorder_depth_first(kind: ClientKind) {
    let (s, c) = repo(
        kind,
        json!([
            {"op": "delegate", "name": "A", "paths": ["apps/*"]},
            {"op": "delegate", "name": "B", "paths": ["apps/*"]},
            {"op": "delegate", "delegator": "A", "name": "C", "paths": ["apps/*"]},
            target("apps/x.swu", "x from C", "C"),
            target("apps/x.swu", "x from B", "B"),
            target("apps/y.swu", "y from C", "C"),
            target("apps/y.swu", "y from A", "A"),
        ]),
    );
    s.download(&c, &["apps/x.swu", "apps/y.swu"])
        .unwrap()
        .assert_ok();
    assert_eq!(c.target("apps/x.swu").as_deref(), Some(&b"x from C"[..]));
    assert_eq!(c.target("apps/y.swu").as_deref(), Some(&b"y from A"[..]));
    let fetched = roles_fetched(&s);
    assert!(fetched.contains(&"A".to_string()), "{fetched:?}");
    assert!(fetched.contains(&"C".to_string()), "{fetched:?}");
    assert!(!fetched.contains(&"B".to_string()), "{fetched:?}");
}

/// A terminating delegation whose paths match ends the search, found or not: B's target is
/// not found behind a terminating A, also when the terminating role is deeper (A -> C).
fn terminating_ends_the_search(kind: ClientKind) {
    let (s, c) = repo(
        kind,
        json!([
            {"op": "delegate", "name": "A", "paths": ["apps/*"], "terminating": true},
            {"op": "delegate", "name": "D", "paths": ["tools/*"]},
            {"op": "delegate", "name": "B", "paths": ["apps/*", "tools/*"]},
            {"op": "delegate", "delegator": "D", "name": "C", "paths": ["tools/*"],
             "terminating": true},
            target("apps/y.swu", "y from B", "B"),
            target("tools/t.swu", "t from B", "B"),
        ]),
    );
    s.download(&c, &["apps/y.swu"])
        .unwrap()
        .assert_refused(NOT_FOUND_WORDS);
    s.download(&c, &["tools/t.swu"])
        .unwrap()
        .assert_refused(NOT_FOUND_WORDS);
    assert!(c.target_files().is_empty(), "{:?}", c.target_files());
    assert!(!roles_fetched(&s).contains(&"B".to_string()));
}

/// The control: with A not terminating, B's target is found.
fn non_terminating_goes_on(kind: ClientKind) {
    let (s, c) = repo(
        kind,
        json!([
            {"op": "delegate", "name": "A", "paths": ["apps/*"]},
            {"op": "delegate", "name": "B", "paths": ["apps/*"]},
            target("apps/y.swu", "y from B", "B"),
        ]),
    );
    s.download(&c, &["apps/y.swu"]).unwrap().assert_ok();
    assert_eq!(c.target("apps/y.swu").as_deref(), Some(&b"y from B"[..]));
}

/// `paths` patterns: `*` matches within one path segment only, `?` one character but not `/`,
/// and matching is case-sensitive. A role listing a target its pattern does not cover cannot
/// vouch for it.
fn path_patterns(kind: ClientKind) {
    let (s, c) = repo(
        kind,
        json!([
            {"op": "delegate", "name": "A", "paths": ["apps/*.swu", "bin?x.swu"]},
            target("apps/y.swu", "y", "A"),
            target("apps/sub/x.swu", "nested", "A"),
            target("Apps/z.swu", "case", "A"),
            target("binax.swu", "one char", "A"),
            target("bin/x.swu", "slash", "A"),
        ]),
    );
    s.download(&c, &["apps/y.swu", "binax.swu"])
        .unwrap()
        .assert_ok();
    assert_eq!(c.target("apps/y.swu").as_deref(), Some(&b"y"[..]));
    assert_eq!(c.target("binax.swu").as_deref(), Some(&b"one char"[..]));
    for name in ["apps/sub/x.swu", "Apps/z.swu", "bin/x.swu"] {
        s.download(&c, &[name])
            .unwrap()
            .assert_refused(NOT_FOUND_WORDS);
        assert!(c.target(name).is_none(), "{name} was downloaded");
    }
}

fn hash_prefix(path: &str) -> String {
    hex::encode(Sha256::digest(path.as_bytes()))[..4].to_string()
}

/// `path_hash_prefixes`: a role is searched for a target whose path's sha256 starts with one
/// of its prefixes, and only then.
fn path_hash_prefixes(kind: ClientKind) {
    let (a, b) = (hash_prefix("hp/a.swu"), hash_prefix("hp/b.swu"));
    assert_ne!(a, b);
    let (s, c) = repo(
        kind,
        json!([
            {"op": "delegate", "name": "A", "path_hash_prefixes": [a]},
            target("hp/a.swu", "a", "A"),
            target("hp/b.swu", "b", "A"),
        ]),
    );
    s.download(&c, &["hp/a.swu"]).unwrap().assert_ok();
    assert_eq!(c.target("hp/a.swu").as_deref(), Some(&b"a"[..]));
    s.download(&c, &["hp/b.swu"])
        .unwrap()
        .assert_refused(NOT_FOUND_WORDS);
    assert!(c.target("hp/b.swu").is_none());
}

/// RS-TUF's succinct delegation to 256 bins: a nested target is found in its bin (by the sha256
/// of its path), fetched from `<dir>/<sha256>.<basename>`; only that bin is fetched.
fn succinct_bins_nested_path(kind: ClientKind) {
    let repo = TufRepo::rs_tuf(8).unwrap();
    let image = "qemu-amd64/cip-core-1.5.swu";
    let added = repo
        .add_target(
            image,
            b"image 1.5",
            json!({"version": "1.5", "hardware": ["cip-core-1.0"]}),
        )
        .unwrap();
    repo.add_target("bbb/cip-core-1.5.swu", b"bbb image", json!({}))
        .unwrap();
    let bin = added["role"].as_str().unwrap().to_string();
    let s = Served::new(repo).unwrap();
    let c = s.client(kind).unwrap();
    s.download(&c, &[image]).unwrap().assert_ok();
    assert_eq!(c.target(image).as_deref(), Some(&b"image 1.5"[..]));
    assert_eq!(roles_fetched(&s), vec![bin.clone()]);
    let stored = format!("/targets/{}", added["stored"].as_str().unwrap());
    assert!(
        stored.starts_with("/targets/qemu-amd64/") && stored.ends_with(".cip-core-1.5.swu"),
        "{stored}"
    );
    assert!(s.requests().contains(&stored), "{:?}", s.requests());
}

tuf_tests!(
    preorder_depth_first,
    terminating_ends_the_search,
    non_terminating_goes_on,
    path_patterns,
    path_hash_prefixes,
    succinct_bins_nested_path,
);

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

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use cip_update_agent_tests::fixtures::swu::{Image, SwuBuilder, random_bytes};
use cip_update_agent_tests::fixtures::tuf::{
    ClientKind, IMAGE, IMAGE_DATA, Served, TufClient, TufRepo, bin_of, one_image,
};
use cip_update_agent_tests::scenarios::fleet::Fleet;
use cip_update_agent_tests::tuf_tests;
use serde_json::{Value, json};

/// The agent names a repeated keyid; python-tuf fails to deserialize the metadata and says why.
const DUPLICATE_WORDS: &[&str] = &["more than one signature", "multiple signatures"];
const SIGNATURE_WORDS: &[&str] = &["signature", "signed", "threshold"];

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
    let (s, c) = one_image(kind);
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

// The daemon: TUF-only mode ------------------------------------------------------------------

/// `cip-update-agent run` in TUF-only mode (no `[wfx]`: the newest target for this hardware above
/// the running version 1.0 is installed, by the real SWUpdate) on a diamond whose delegations
/// are listed B (`b/*`) before A (`*/*`), so that the listing reaches C through A first: C lists
/// `a/1.swu` (1.1) and `b/2.swu` (1.6). Returns the fleet after `wait` (with the repository it
/// serves), the two images' targets and `b/2.swu`'s image data.
async fn tuf_only_diamond(
    b_key_signs: bool,
    wait: Duration,
) -> (Fleet, TufRepo, [PathBuf; 2], Vec<u8>) {
    let repo = TufRepo::new(json!({"bins_bits": null})).unwrap();
    let mut f = Fleet::builder().serve(&repo.www()).start();
    fs::write(f.path("hwrevision"), "board 1.0\n").unwrap();
    fs::write(f.path("version"), "1.0\n").unwrap();
    let mut targets = Vec::new();
    let mut ops = vec![
        json!({"op": "delegate", "name": "B", "paths": ["b/*"]}),
        json!({"op": "delegate", "name": "A", "paths": ["*/*"]}),
        json!({"op": "delegate", "delegator": "A", "name": "C", "paths": ["a/*"]}),
        json!({"op": "delegate", "delegator": "B", "name": "C", "paths": ["b/*"],
               "again": true, "signs": b_key_signs}),
    ];
    let mut b_data = Vec::new();
    for (i, (path, version)) in [("a/1.swu", "1.1"), ("b/2.swu", "1.6")]
        .into_iter()
        .enumerate()
    {
        let data = random_bytes(20_000, i as u64 + 1);
        let target = f.path(&format!("image-{i}.target"));
        let file = f.path(&format!("image-{i}.swu"));
        SwuBuilder::new()
            .image(Image::raw("rootfs.img", data.clone(), target.clone()))
            .build(&f.cert, &file)
            .unwrap();
        ops.push(json!({"op": "add_target", "path": path, "role": "C",
            "data_hex": hex::encode(fs::read(&file).unwrap()),
            "custom": {"version": version, "board": "board", "hardware": ["1.0"]}}));
        targets.push(target);
        if path.starts_with("b/") {
            b_data = data;
        }
    }
    ops.push(json!({"op": "publish"}));
    repo.ops(Value::Array(ops)).unwrap();
    f.config.client_id = None;
    f.config.wfx = false;
    f.config.progress_interval = None;
    f.config.device = format!(
        "hwrevision_file = {:?}\nversion_file = {:?}\n",
        f.path("hwrevision"),
        f.path("version")
    );
    f.config.extra = format!(
        "[tuf]\nroot = {:?}\nmetadata_url = \"{}\"\ntargets_url = \"{}\"\npoll_interval = \"1s\"\n",
        repo.initial_root(),
        f.nginx().url("metadata"),
        f.nginx().url("targets"),
    );
    f.start_agent();
    tokio::time::sleep(wait).await;
    let [a, b]: [PathBuf; 2] = targets.try_into().unwrap();
    (f, repo, [a, b], b_data)
}

/// B's key did not sign C: `b/2.swu` (1.6, the newest) is never installed over several polls
/// (6 s at a 1 s poll interval), and the agent's log names C as B delegates it. A client that
/// trusts C through B because the path through A verified it installs `b/2.swu`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuf_only_mode_refuses_a_diamond_the_second_delegator_did_not_sign() {
    let (f, _repo, [a, b], _) = tuf_only_diamond(false, Duration::from_secs(6)).await;
    let log = f.agent_log();
    assert!(
        fs::read(&b).unwrap().is_empty(),
        "b/2.swu was installed:\n{log}"
    );
    // The listing is refused as a whole, as for any role that fails verification: nothing is
    // installed, not `a/1.swu` either.
    assert!(fs::read(&a).unwrap().is_empty(), "{log}");
    assert!(
        !f.swupdate().log().contains("Software Update started"),
        "{}",
        f.swupdate().log()
    );
    assert!(log.contains("C (as B delegates it)"), "{log}");
}

/// The control: with B's key signing C too, `b/2.swu` (1.6) is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuf_only_mode_installs_from_a_diamond_both_delegators_signed() {
    let (f, _repo, [_, b], data) = tuf_only_diamond(true, Duration::ZERO).await;
    f.until("b/2.swu installed", |f| f.tuf_only_record("b/2.swu@").1)
        .await;
    assert_eq!(fs::read(&b).unwrap(), data);
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

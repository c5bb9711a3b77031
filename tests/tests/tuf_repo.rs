//! The TUF client on an RS-TUF-shaped repository as CIP's TUF server publishes it (what tough
//! 0.24 cannot read): consistent snapshots only, 256 succinct bins, nested targets stored as
//! `<dir>/<sha256>.<basename>`. Trusted metadata is kept byte for byte as served; a target
//! already downloaded is not fetched again; a refresh with nothing new fetches only what tells
//! so; RSA-PSS and ECDSA P-256 keys verify as well as ed25519. Each scenario runs with the
//! agent's `tuf-client` and with python-tuf's ngclient.

use std::fs;

use cip_update_agent_tests::fixtures::tuf::{ClientKind, Served, TufRepo};
use cip_update_agent_tests::tuf_tests;
use serde_json::{Value, json};

const IMAGES: [&str; 3] = [
    "qemu-amd64/cip-core-1.5.swu",
    "qemu-amd64/cip-core-1.5.swu.zck",
    "bbb/cip-core-1.5.swu",
];

fn custom(board: &str) -> Value {
    json!({"version": "1.5", "board": board, "hardware": ["cip-core-1.0"],
           "zchunk": "qemu-amd64/cip-core-1.5.swu.zck",
           "deltas": {"1.4": "qemu-amd64/cip-core-1.4-1.5.delta.swu"}})
}

/// 256 bins, the three images, published in two rounds (so that every file has versions).
fn rs_tuf() -> Served {
    let repo = TufRepo::rs_tuf(8).unwrap();
    for (i, path) in IMAGES.iter().enumerate() {
        repo.add_target(path, format!("image {i}").as_bytes(), custom(path))
            .unwrap();
    }
    Served::new(repo).unwrap()
}

/// The served tree is RS-TUF's (no unversioned root, snapshot or targets); the client reads
/// it, asks only for versioned names and `timestamp.json`, and keeps every trusted file byte
/// for byte as served (the served files are indented, not canonical JSON: a client that
/// re-serializes would differ).
fn rs_tuf_shape_read_and_stored_byte_for_byte(kind: ClientKind) {
    let s = rs_tuf();
    for name in ["root.json", "snapshot.json", "targets.json"] {
        assert!(!s.repo.metadata(name).exists(), "{name} is served");
    }
    let c = s.client(kind).unwrap();
    s.download(&c, &IMAGES).unwrap().assert_ok();
    for (i, path) in IMAGES.iter().enumerate() {
        assert_eq!(c.target(path), Some(format!("image {i}").into_bytes()));
    }
    let mut roles = vec!["root", "timestamp", "snapshot", "targets"];
    let bins: Vec<String> = IMAGES
        .iter()
        .map(|p| {
            s.repo.op(json!({"op": "bin_for", "path": p})).unwrap()["role"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    roles.extend(bins.iter().map(String::as_str));
    for role in roles {
        let served = s.repo.current(role).unwrap();
        assert_eq!(
            c.trusted(role),
            Some(fs::read(&served).unwrap()),
            "trusted {role} differs from {}",
            served.display()
        );
    }
    for r in s.requests() {
        let Some(name) = r.strip_prefix("/metadata/") else {
            continue;
        };
        let versioned = name
            .split_once('.')
            .is_some_and(|(n, _)| n.parse::<u64>().is_ok());
        assert!(versioned || name == "timestamp.json", "requested {r}");
    }
}

/// A target already in the target directory with matching hashes is not fetched again; one
/// whose bytes were changed on the device is.
fn second_download_is_not_fetched(kind: ClientKind) {
    let s = rs_tuf();
    let c = s.client(kind).unwrap();
    let stored = format!(
        "/targets/{}",
        s.repo
            .target_file(IMAGES[0])
            .unwrap()
            .strip_prefix(s.repo.www().join("targets"))
            .unwrap()
            .display()
    );
    let fetches = || s.requests().iter().filter(|r| **r == stored).count();
    s.download(&c, &[IMAGES[0]]).unwrap().assert_ok();
    assert_eq!(fetches(), 1);
    s.download(&c, &[IMAGES[0]]).unwrap().assert_ok();
    assert_eq!(fetches(), 1, "fetched again: {:?}", s.requests());
    let local = c.targets_dir().join(IMAGES[0].replace('/', "%2F"));
    fs::write(&local, b"image X").unwrap(); // same length, other bytes
    s.download(&c, &[IMAGES[0]]).unwrap().assert_ok();
    assert_eq!(fetches(), 2);
    assert_eq!(c.target(IMAGES[0]).as_deref(), Some(&b"image 0"[..]));
}

/// `refresh` fetches the top-level roles only, and a second refresh with nothing new asks for
/// the next root and the timestamp alone.
fn refresh_fetches_only_what_changed(kind: ClientKind) {
    let s = rs_tuf();
    let c = s.client(kind).unwrap();
    s.refresh(&c).unwrap().assert_ok();
    let first = s.requests();
    assert!(
        !first.iter().any(|r| r.contains("bins-")),
        "a bin was fetched by refresh: {first:?}"
    );
    s.refresh(&c).unwrap().assert_ok();
    let second = s.requests()[first.len()..].to_vec();
    assert_eq!(
        second,
        vec!["/metadata/2.root.json", "/metadata/timestamp.json"]
    );
}

/// A repository whose keys are all `key_type`: the download succeeds; a timestamp whose signed
/// part was edited after signing is refused.
fn keys_of_type(kind: ClientKind, key_type: &str) {
    let repo = TufRepo::new(json!({"bins_bits": 4, "key_type": key_type})).unwrap();
    repo.add_target(IMAGES[0], b"image 0", custom("qemu-amd64"))
        .unwrap();
    let root: Value = serde_json::from_slice(&repo.metadata_bytes("1.root.json").unwrap()).unwrap();
    let schemes: Vec<&str> = root["signed"]["keys"]
        .as_object()
        .unwrap()
        .values()
        .map(|k| k["scheme"].as_str().unwrap())
        .collect();
    let want = match key_type {
        "rsa" => "rsassa-pss-sha256",
        "ecdsa" => "ecdsa-sha2-nistp256",
        _ => "ed25519",
    };
    assert!(schemes.iter().all(|s| *s == want), "{schemes:?}");
    let s = Served::new(repo).unwrap();
    let c = s.client(kind).unwrap();
    s.download(&c, &[IMAGES[0]]).unwrap().assert_ok();
    assert_eq!(c.target(IMAGES[0]).as_deref(), Some(&b"image 0"[..]));

    s.repo.publish().unwrap();
    let ts = s.repo.metadata("timestamp.json");
    let mut v: Value = serde_json::from_slice(&fs::read(&ts).unwrap()).unwrap();
    v["signed"]["expires"] = json!("2099-01-01T00:00:00Z");
    fs::write(&ts, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let before = c.trusted("timestamp");
    s.refresh(&c)
        .unwrap()
        .assert_refused(&["signature", "signed", "threshold"]);
    assert_eq!(c.trusted("timestamp"), before);
}

fn rsa_pss_keys(kind: ClientKind) {
    keys_of_type(kind, "rsa");
}

fn ecdsa_p256_keys(kind: ClientKind) {
    keys_of_type(kind, "ecdsa");
}

fn ed25519_keys(kind: ClientKind) {
    keys_of_type(kind, "ed25519");
}

tuf_tests!(
    rs_tuf_shape_read_and_stored_byte_for_byte,
    second_download_is_not_fetched,
    refresh_fetches_only_what_changed,
    rsa_pss_keys,
    ecdsa_p256_keys,
    ed25519_keys,
);

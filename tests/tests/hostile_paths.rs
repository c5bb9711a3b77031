//! A hostile wfx against the trust boundary of `cip-update-agent run` (issue 16): job ids that
//! are paths (`/abs/dir`, `../../x`), ids wfx cannot be asked about (`..`, a newline, 300 bytes),
//! and artifact URIs that name local files (`/path`, `file://`, relative names), with and without
//! `[tuf]`. The emulator is given the ids (real wfx makes UUIDs; an attacker on the path of the
//! unauthenticated API sends what it likes).
//!
//! Safe outcome, each asserted: nothing outside `state_dir/staging` is touched (a sentinel tree
//! beside the state directory, and files in it that stand for the device key and TUF's
//! `latest-known-time`, stay as they were, nothing new appears in them); staged files live under
//! the SHA-256 of the id; a job the agent can name ends (ACTIVATED, or TERMINATED with a message
//! that says why) within [`BOUND`]; one it cannot name is left alone and logged once; no message
//! the agent sends to wfx holds a byte of a local file.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cip_update_agent_tests::emulators::wfx::model::{Eligible, JobStatus};
use cip_update_agent_tests::fixtures::swu::BuiltSwu;
use cip_update_agent_tests::fixtures::tuf::IMAGE;
use cip_update_agent_tests::scenarios::fleet::{DIRECT, Fleet, PHASED, firmware, installed};
use serde_json::{Value, json};

/// How long the agent may take to bring a job to its next state (they take about a second).
const BOUND: Duration = Duration::from_secs(30);
/// Bytes of the local "secret" a hostile URI names; never in a message to wfx.
const SECRET: &str = "SECRET-c0ffee-root:*:19000:0:99999:7:::";

/// Files the agent must never touch, and the directories they are in.
struct Guard {
    files: Vec<(PathBuf, Vec<u8>)>,
    dirs: Vec<PathBuf>,
}

impl Guard {
    /// A sentinel tree beside the state directory (`sentinel/abs`, `sentinel/rel`, which the
    /// hostile ids name), and in `state_dir` a stand-in device key and, without `[tuf]`, a
    /// stand-in `tuf/latest-known-time` (with `[tuf]` the agent keeps the real one).
    fn plant(f: &Fleet, tuf: bool) -> Guard {
        let mut g = Guard {
            files: Vec::new(),
            dirs: Vec::new(),
        };
        let mut put = |p: PathBuf, what: &str| {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, what).unwrap();
            g.dirs.push(p.parent().unwrap().to_owned());
            g.files.push((p, what.as_bytes().to_vec()));
        };
        put(f.path("sentinel/abs/keep.txt"), "abs sentinel");
        put(f.path("sentinel/rel/keep.txt"), "rel sentinel");
        put(f.path("state/device.key"), "device key stand-in");
        if !tuf {
            put(
                f.path("state/tuf/latest-known-time"),
                "2026-12-01T00:00:00Z",
            );
        }
        g
    }

    /// Everything planted is there, unchanged, with nothing new beside the sentinels.
    fn check(&self, f: &Fleet, when: &str) {
        for (p, bytes) in &self.files {
            let now = fs::read(p);
            assert!(
                now.as_ref().is_ok_and(|b| b == bytes),
                "{when}: {} was changed or removed ({now:?})\nagent log:\n{}",
                p.display(),
                f.agent_log()
            );
        }
        for d in self
            .dirs
            .iter()
            .filter(|d| d.starts_with(f.path("sentinel")))
        {
            let names = names_in(d);
            assert_eq!(names, ["keep.txt"], "{when}: {} gained files", d.display());
        }
        for name in names_in(&f.path("state/staging")) {
            assert!(
                name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()),
                "{when}: staging holds {name:?}, not a digest name"
            );
        }
    }
}

fn names_in(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d)
        .map(|r| {
            r.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A job created in `workflow`, then given the id `id` on the emulator; `id`.
async fn job_with_id(f: &Fleet, workflow: &str, definition: Value, id: &str) -> String {
    let made = f.create_job(workflow, definition).await;
    f.wfx.store().set_job_id(&made, id).unwrap();
    id.to_owned()
}

/// The job as the emulator holds it, with its history (read in-process: `..` cannot be asked
/// for over HTTP).
fn job(f: &Fleet, id: &str) -> Value {
    serde_json::to_value(f.wfx.store().job(id).unwrap()).unwrap()
}

/// The operator's move (WFX).
fn advance(f: &Fleet, id: &str, state: &str) {
    let status = JobStatus {
        state: state.into(),
        ..Default::default()
    };
    f.wfx
        .store()
        .update_status(id, status, Eligible::Wfx)
        .unwrap();
}

/// Waits (at most [`BOUND`]) until the job is in one of `states`; prints how long it took
/// (the figures of the closing note).
async fn reach(f: &Fleet, id: &str, states: &[&str]) -> Value {
    let start = Instant::now();
    let deadline = start + BOUND;
    loop {
        let j = job(f, id);
        if states.contains(&j["status"]["state"].as_str().unwrap_or("")) {
            println!(
                "{:?} {} after {:?}",
                cip_update_agent::text::shown(id),
                j["status"]["state"],
                start.elapsed()
            );
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id:?} not in {states:?} within {BOUND:?}: {j:#}\nagent log:\n{}",
            f.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message the job's status carried (the current one and its history).
fn messages(j: &Value) -> Vec<String> {
    let mut m = vec![j["status"]["message"].as_str().unwrap_or("").to_owned()];
    for h in j["history"].as_array().into_iter().flatten() {
        m.push(h["status"]["message"].as_str().unwrap_or("").to_owned());
    }
    m
}

/// Waits until the agent's journal holds no job (it forgot the last one).
async fn forgotten(f: &Fleet) {
    f.until("the journal holds no job", |f| f.journal_jobs().is_empty())
        .await;
}

/// Ids that are paths out of `staging` (absolute; `..` up to the sentinel tree), or that would
/// change a request path (`/`, `?`, `#`, `%`): each a valid opaque token.
fn path_ids(f: &Fleet) -> Vec<String> {
    vec![
        f.path("sentinel/abs").to_str().unwrap().to_owned(),
        "../../sentinel/rel".to_owned(),
        "a/b".to_owned(),
        "x?clientId=other#frag".to_owned(),
        "50%2F..%2F".to_owned(),
    ]
}

/// A phased job per hostile id: staged under the digest of its id (nothing written where the
/// id points), installed, and forgotten without removing anything but its own staging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phased_jobs_with_path_ids_stage_under_a_digest_and_forget_only_their_own() {
    let mut f = Fleet::new();
    let guard = Guard::plant(&f, false);
    f.start_agent();
    for (i, id) in path_ids(&f).iter().enumerate() {
        let (swu, data, url) = f.image(&format!("p{i}"), 100_000, false);
        job_with_id(&f, PHASED, firmware(&url), id).await;
        advance(&f, id, "DOWNLOAD");
        let j = reach(&f, id, &["DOWNLOADED", "TERMINATED"]).await;
        assert_eq!(j["status"]["state"], "DOWNLOADED", "{id}: {j:#}");
        guard.check(&f, &format!("{id} downloaded"));
        let staged = f.staging_dir(id).join("0.swu");
        assert!(
            fs::read(&staged).ok() == fs::read(f.path(&format!("www/p{i}.swu"))).ok(),
            "{id}: not staged as {}",
            staged.display()
        );
        advance(&f, id, "INSTALL");
        let j = reach(&f, id, &["ACTIVATED", "TERMINATED"]).await;
        assert_eq!(j["status"]["state"], "ACTIVATED", "{id}: {j:#}");
        assert!(installed(&swu, &data), "{id}");
        forgotten(&f).await;
        assert!(!staged.exists(), "{id}: its staging went with it");
        guard.check(&f, &format!("{id} forgotten"));
    }
}

/// A phased job whose download fails ends TERMINATED; forgetting it (the step that emptied
/// `state_dir` or removed the tree an id named) removes nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_jobs_with_path_ids_remove_nothing_else() {
    let mut f = Fleet::new();
    let guard = Guard::plant(&f, false);
    f.start_agent();
    let missing = f.nginx().url("missing.swu");
    for id in path_ids(&f) {
        job_with_id(&f, PHASED, firmware(&missing), &id).await;
        advance(&f, &id, "DOWNLOAD");
        let j = reach(&f, &id, &["TERMINATED"]).await;
        let msg = j["status"]["message"].as_str().unwrap_or("");
        assert!(msg.contains("HTTP 404"), "{id}: {msg}");
        forgotten(&f).await;
        guard.check(&f, &format!("{id} terminated and forgotten"));
    }
    // The agent still works.
    let (swu, data, url) = f.image("after", 100_000, false);
    let id = f.create_job(DIRECT, firmware(&url)).await;
    assert_eq!(
        reach(&f, &id, &["ACTIVATED", "TERMINATED"]).await["status"]["state"],
        "ACTIVATED"
    );
    assert!(installed(&swu, &data));
    guard.check(&f, "after");
}

/// Direct jobs with path ids (created before the agent starts, so it sees only the hostile
/// ids): each installed and ACTIVATED, and forgetting them removes nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_jobs_with_path_ids_are_installed_and_forgotten_harmlessly() {
    let mut f = Fleet::new();
    let guard = Guard::plant(&f, false);
    let mut jobs = Vec::new();
    for (i, id) in path_ids(&f).iter().enumerate() {
        let (swu, data, url) = f.image(&format!("d{i}"), 100_000, false);
        job_with_id(&f, DIRECT, firmware(&url), id).await;
        jobs.push((id.clone(), swu, data));
    }
    f.start_agent();
    for (id, swu, data) in &jobs {
        let j = reach(&f, id, &["ACTIVATED", "TERMINATED"]).await;
        assert_eq!(j["status"]["state"], "ACTIVATED", "{id}: {j:#}");
        assert!(installed(swu, data), "{id}");
    }
    forgotten(&f).await;
    guard.check(&f, "all forgotten");
}

/// Ids wfx cannot be asked about (`.` and `..` resolve even percent-encoded), control
/// characters (a forged log line), a right-to-left override (a line that reads otherwise),
/// 300 bytes: the entry is skipped, the job left as wfx has it,
/// the reason logged once (not at every poll), and the next job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_cannot_be_named_are_skipped_logged_once_and_the_next_job_runs() {
    let mut f = Fleet::new();
    let guard = Guard::plant(&f, false);
    let (bad_swu, _, bad_url) = f.image("bad-id", 100_000, false);
    let long = "x".repeat(300);
    let bad = [
        "..",
        ".",
        "forged\nINFO cip_update_agent: all is well",
        long.as_str(),
        "exe.\u{202e}gnp",
    ];
    for id in bad {
        job_with_id(&f, DIRECT, firmware(&bad_url), id).await;
    }
    let (swu, data, url) = f.image("good", 100_000, false);
    let good = f.create_job(DIRECT, firmware(&url)).await;
    let polls = |f: &Fleet| {
        f.wfx
            .request_counts()
            .get("south GET /jobs")
            .copied()
            .unwrap_or(0)
    };
    f.start_agent();
    let j = reach(&f, &good, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "ACTIVATED", "{j:#}");
    assert!(installed(&swu, &data));
    // Three more reconciles (poll_interval 2 s) with the bad entries still listed.
    let seen = polls(&f);
    f.until("three more polls", |f| polls(f) >= seen + 3).await;
    for id in bad {
        let j = job(&f, id);
        assert_eq!(j["status"]["state"], "INSTALL", "{id:?} left alone: {j:#}");
        assert!(
            j.get("history").is_none(),
            "{id:?}: nothing reported: {j:#}"
        );
    }
    assert!(fs::read(&bad_swu.images[0].target).unwrap().is_empty());
    let log = f.agent_log();
    for shown in [
        r#"job ".." refused: job id ".." is a dot segment"#.to_owned(),
        r#"job "." refused: job id "." is a dot segment"#.to_owned(),
        r#"job "forged\nINFO cip_update_agent: all is well" refused"#.to_owned(),
        format!("job \"{}…\" refused: job id of 300 bytes", "x".repeat(64)),
        r#"job "exe.\u{202e}gnp" refused: job id "exe.\u{202e}gnp" holds a character other than printable ASCII"#.to_owned(),
    ] {
        assert_eq!(log.matches(&shown).count(), 1, "{shown} once in:\n{log}");
    }
    assert!(
        !log.lines()
            .any(|l| l.starts_with("INFO cip_update_agent: all is well")),
        "a forged log line:\n{log}"
    );
    guard.check(&f, "end");
}

/// `/etc/passwd`, a local "secret", and URIs that name them (absolute, `file://`, relative).
fn local_uris(f: &Fleet) -> Vec<String> {
    let secret = f.path("secret.swu");
    fs::write(&secret, SECRET.repeat(100)).unwrap();
    let abs = secret.to_str().unwrap().to_owned();
    vec![
        "/etc/passwd".to_owned(),
        "file:///etc/passwd".to_owned(),
        abs.clone(),
        format!("file://{abs}"),
        format!("../{}", secret.file_name().unwrap().to_str().unwrap()),
        "secret.swu".to_owned(),
    ]
}

/// What a job naming a local file ends with: TERMINATED, saying why, no byte of the file in
/// any message, nothing handed to SWUpdate.
fn refused_local(f: &Fleet, j: &Value, uri: &str) {
    assert_eq!(j["status"]["state"], "TERMINATED", "{uri}: {j:#}");
    let msg = j["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("is not an http:// or https:// URL") && msg.contains("local file"),
        "{uri}: {msg}"
    );
    // (The base agent quoted a file's first 6 bytes: `not a .swu ... (found "root:x")`.)
    let passwd = fs::read("/etc/passwd").unwrap_or_default();
    let passwd = String::from_utf8_lossy(&passwd[..passwd.len().min(6)]).into_owned();
    for m in messages(j) {
        assert!(
            !m.contains("SECRET") && (passwd.is_empty() || !m.contains(&passwd)),
            "{uri}: a local file's bytes sent to wfx: {m}"
        );
    }
    assert!(
        !f.swupdate().log().contains("Incoming network request"),
        "{uri}: SWUpdate was asked to install:\n{}",
        f.swupdate().log()
    );
}

/// Without `[tuf]`: URIs naming local files end the job (direct in INSTALL, phased in DOWNLOAD)
/// before anything is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_uris_naming_local_files_are_refused() {
    let mut f = Fleet::new();
    let guard = Guard::plant(&f, false);
    f.start_agent();
    for uri in local_uris(&f) {
        let def = json!({"version": "1.0", "type": ["firmware"], "artifacts": [{"uri": uri}]});
        let id = f.create_job(DIRECT, def.clone()).await;
        let j = reach(&f, &id, &["ACTIVATED", "TERMINATED"]).await;
        refused_local(&f, &j, &uri);
        let id = f.create_job(PHASED, def).await;
        advance(&f, &id, "DOWNLOAD");
        let j = reach(&f, &id, &["DOWNLOADED", "TERMINATED"]).await;
        refused_local(&f, &j, &uri);
    }
    forgotten(&f).await;
    guard.check(&f, "end");
}

/// A signed .swu writing `<name>.target` under the fleet's directory; its bytes.
fn swu(f: &Fleet, name: &str, seed: u64) -> (BuiltSwu, Vec<u8>, Vec<u8>) {
    f.signed_swu(name, 50_000, seed)
}

/// With `[tuf]`: a URI naming a local file under the name of a real target is refused all the
/// same (TUF vouches for names, not for where wfx says the bytes are), and a phased job with a
/// path id is staged under its digest and installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tuf_local_uris_are_refused_and_path_ids_stay_in_staging() {
    let (mut f, repo) = Fleet::with_tuf_repo();
    f.config.extra = format!(
        "[tuf]\nroot = {root:?}\nmetadata_url = \"{md}\"\ntargets_url = \"{tg}\"\n",
        root = repo.initial_root(),
        md = f.nginx().url("metadata"),
        tg = f.nginx().url("targets"),
    );
    let guard = Guard::plant(&f, true);
    let (image, data, bytes) = swu(&f, "good", 1);
    let r = repo
        .ops(json!([
            {"op": "add_target", "path": IMAGE, "data_hex": hex::encode(&bytes),
             "served_hex": hex::encode(&bytes),
             "custom": {"version": "1.5", "board": "board", "hardware": ["1.0"]}},
            {"op": "publish"},
        ]))
        .unwrap();
    let url = f
        .nginx()
        .url(&format!("targets/{}", r[0]["stored"].as_str().unwrap()));
    f.start_agent();
    for uri in local_uris(&f) {
        let def = json!({"version": "1.0", "type": ["firmware"],
                         "artifacts": [{"name": IMAGE, "version": "1.5", "uri": uri}]});
        let id = f.create_job(DIRECT, def).await;
        let j = reach(&f, &id, &["ACTIVATED", "TERMINATED"]).await;
        refused_local(&f, &j, &uri);
    }
    let id = f.path("sentinel/abs").to_str().unwrap().to_owned();
    let def = json!({"version": "1.0", "type": ["firmware"],
                     "artifacts": [{"name": IMAGE, "version": "1.5", "uri": url}]});
    job_with_id(&f, PHASED, def, &id).await;
    advance(&f, &id, "DOWNLOAD");
    let j = reach(&f, &id, &["DOWNLOADED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "DOWNLOADED", "{j:#}");
    guard.check(&f, "downloaded");
    let staged = f.staging_dir(&id).join("0.swu");
    assert!(
        fs::read(&staged).ok() == Some(bytes),
        "not staged as {}",
        staged.display()
    );
    advance(&f, &id, "INSTALL");
    let j = reach(&f, &id, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "ACTIVATED", "{j:#}");
    assert_eq!(fs::read(&image.images[0].target).unwrap(), data);
    forgotten(&f).await;
    guard.check(&f, "forgotten");
    assert!(f.path("state/tuf/latest-known-time").exists());
}

/// Upgrade, not an attack (passes on the base binary too): a phased job staged by an agent of
/// the old layout (`staging/<id>/0.swu`) is installed from its staged file after the upgrade
/// (the directory is renamed to the digest of the id at start); the image is no longer served,
/// so nothing but the staged file can be installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_staged_by_the_old_layout_is_installed_after_the_upgrade() {
    let mut f = Fleet::new();
    let (swu, data, url) = f.image("old", 100_000, false);
    let id = f.create_job(PHASED, firmware(&url)).await;
    advance(&f, &id, "DOWNLOAD");
    for state in ["DOWNLOADING", "DOWNLOADED"] {
        let status = JobStatus {
            state: state.into(),
            client_id: cip_update_agent_tests::scenarios::fleet::CLIENT.into(),
            ..Default::default()
        };
        f.wfx
            .store()
            .update_status(&id, status, Eligible::Client)
            .unwrap();
    }
    let hash = job(&f, &id)["status"]["definitionHash"]
        .as_str()
        .unwrap()
        .to_owned();
    let old = f.path("state/staging").join(&id);
    fs::create_dir_all(&old).unwrap();
    fs::rename(f.path("www/old.swu"), old.join("0.swu")).unwrap();
    fs::write(
        f.path("state/state.json"),
        json!({"schema": 1, "jobs": {&id: {"job_id": &id, "definition_hash": hash,
                                           "downloaded": true, "installed": 0}}})
        .to_string(),
    )
    .unwrap();
    f.start_agent();
    let moved = f.staging_dir(&id).join("0.swu");
    f.until("the staged file moved to the digest name", |_| {
        moved.exists() && !old.exists()
    })
    .await;
    advance(&f, &id, "INSTALL");
    let j = reach(&f, &id, &["ACTIVATED", "TERMINATED"]).await;
    f.assert_state(&j, "ACTIVATED");
    assert!(installed(&swu, &data));
    forgotten(&f).await;
    assert!(names_in(&f.path("state/staging")).is_empty());
}

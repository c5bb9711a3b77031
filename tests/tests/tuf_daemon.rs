//! `cip-update-agent run` with `[tuf]`, end to end: DAU jobs on the wfx emulator, an RS-TUF-shaped
//! repository (python-tuf, 16 succinct bins) whose targets are signed `.swu` files, served by
//! nginx, installed by the real SWUpdate daemon into file targets.
//!
//! wfx is not trusted for content: a job naming an artifact that the TUF metadata does not vouch
//! for ends TERMINATED, and SWUpdate is never asked to install it (its log shows no install
//! request); wrong hardware ends TERMINATED before any byte is fetched (nginx's access log); a
//! target whose served bytes differ from its hashes reaches SWUpdate only as an install that is
//! abandoned before its commit (nothing written to the target); a trusted artifact is ACTIVATED.
//! Phased jobs verify the download whole before DOWNLOADED. Expired metadata makes a job wait;
//! a rolled-back timestamp ends it. Without `[wfx]` (TUF-only mode) the agent installs the newest
//! target for its hardware above the running version, once.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cip_update_agent_tests::daemons::swupdate::{DaemonOptions, SwupdateDaemon};
use cip_update_agent_tests::fixtures::aes::AesKey;
use cip_update_agent_tests::fixtures::swu::BuiltSwu;
use cip_update_agent_tests::fixtures::swu::{Image, SwuBuilder, random_bytes};
use cip_update_agent_tests::fixtures::tuf::{IMAGE, TufRepo};
use cip_update_agent_tests::scenarios::fleet::{DIRECT, Fleet, FleetBuilder, PHASED};
use serde_json::{Value, json};

/// What SWUpdate logs when an install request arrives on its control socket (and nothing else
/// does): its absence shows that SWUpdate received no install.
const SWUPDATE_INSTALL_MARKER: &str = "Incoming network request";

/// The fleet, with nginx serving a TUF repository and the agent configured with `[tuf]`.
struct TufFleet {
    f: Fleet,
    repo: TufRepo,
}

cip_update_agent_tests::deref_to_fleet!(TufFleet);

impl TufFleet {
    fn new() -> TufFleet {
        TufFleet::from(Fleet::builder())
    }

    fn from(builder: FleetBuilder) -> TufFleet {
        // SWUpdate is told `board:1.0` (DaemonOptions' default); the agent reads the same
        // from its hwrevision file ("board revision").
        let (mut f, repo) = Fleet::with_tuf_repo_from(builder);
        f.config.progress_interval = None;
        TufFleet { f, repo }
    }

    /// A signed .swu of a random image writing `<name>.target`; its bytes.
    fn swu(&self, name: &str, seed: u64) -> (BuiltSwu, Vec<u8>, Vec<u8>) {
        self.signed_swu(name, 50_000, seed)
    }

    /// Lists `bytes` as target `path` with `custom`, serving `served` in its place; the URL.
    fn publish(&self, path: &str, bytes: &[u8], served: &[u8], custom: Value) -> String {
        let r = self
            .repo
            .ops(json!([
                {"op": "add_target", "path": path, "data_hex": hex::encode(bytes),
                 "served_hex": hex::encode(served), "custom": custom},
                {"op": "publish"},
            ]))
            .unwrap();
        self.nginx()
            .url(&format!("targets/{}", r[0]["stored"].as_str().unwrap()))
    }

    /// The `[tuf]` section, with `tuf_extra` (more `[tuf]` keys).
    fn tuf_section(&self, tuf_extra: &str) -> String {
        format!(
            "[tuf]\nroot = {root:?}\nmetadata_url = \"{md}\"\ntargets_url = \"{tg}\"\n{tuf_extra}",
            root = self.repo.initial_root(),
            md = self.nginx().url("metadata"),
            tg = self.nginx().url("targets"),
        )
    }

    /// The agent with wfx and `[tuf]`.
    fn start_agent(&mut self) {
        self.f.config.extra = self.tuf_section("");
        self.f.start_agent();
    }

    /// A DAU job in `workflow` with the one `artifact`.
    async fn dau_job_in(&self, workflow: &str, artifact: Value) -> String {
        let definition = json!({"version": "1.0", "type": ["firmware"], "artifacts": [artifact]});
        self.create_job(workflow, definition).await
    }

    /// Starts the agent and runs a job in `workflow` for IMAGE (1.5) at `url` to its end.
    async fn run_image_job(&mut self, workflow: &str, url: &str) -> Value {
        self.start_agent();
        let id = self.dau_job_in(workflow, image_artifact(url)).await;
        self.finish(&id).await
    }

    /// Requests nginx saw for `path` (e.g. `/targets/...`).
    fn fetches(&self, url: &str) -> usize {
        let path = url.splitn(4, '/').nth(3).unwrap_or("");
        let needle = format!("GET /{path} ");
        self.nginx().access_log().matches(&needle).count()
    }
}

fn image_artifact(url: &str) -> Value {
    json!({"name": IMAGE, "version": "1.5", "uri": url})
}

fn custom(hardware: &str) -> Value {
    json!({"version": "1.5", "board": "board", "hardware": [hardware]})
}

fn message(j: &Value) -> String {
    j["status"]["message"].as_str().unwrap_or("").to_string()
}

/// A trusted artifact in `workflow` is ACTIVATED, its target fetched once; the fleet.
async fn a_trusted_artifact_in(workflow: &str) -> TufFleet {
    let mut f = TufFleet::new();
    let (swu, data, bytes) = f.swu("good", 1);
    let url = f.publish(IMAGE, &bytes, &bytes, custom("1.0"));
    let j = f.run_image_job(workflow, &url).await;
    f.assert_state(&j, "ACTIVATED");
    assert_eq!(fs::read(&swu.images[0].target).unwrap(), data);
    assert_eq!(f.fetches(&url), 1);
    f
}

/// A target served with other bytes (another validly signed .swu of the same length) in
/// `workflow`: TERMINATED naming the target's hash, nothing written to either image's target;
/// the fleet.
async fn a_target_whose_bytes_differ_in(workflow: &str) -> TufFleet {
    let mut f = TufFleet::new();
    let (good, _, good_bytes) = f.swu("good", 1);
    let (evil, _, evil_bytes) = f.swu("evil", 2);
    assert_eq!(good_bytes.len(), evil_bytes.len());
    let url = f.publish(IMAGE, &good_bytes, &evil_bytes, custom("1.0"));
    let j = f.run_image_job(workflow, &url).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    let msg = message(&j);
    assert!(msg.contains(IMAGE) && msg.contains("sha256"), "{msg}");
    assert!(fs::read(&evil.images[0].target).unwrap().is_empty());
    assert!(fs::read(&good.images[0].target).unwrap().is_empty());
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_artifact_is_activated() {
    let f = a_trusted_artifact_in(DIRECT).await;
    let log = f.swupdate().log();
    assert!(log.contains(SWUPDATE_INSTALL_MARKER) && log.contains("SWUPDATE successful"));
}

/// An encrypted `.swu` (AES, `encrypted = true;`): TUF checks the encrypted file as served,
/// SWUpdate decrypts it with its `-K` key, the target gets the plain image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_swu_is_verified_by_tuf_and_installed() {
    let keys = tempfile::tempdir().unwrap();
    let key = AesKey::from_seed("fleet");
    let key_file = keys.path().join("aes.key");
    key.write_key_file(&key_file).unwrap();
    let mut f = TufFleet::from(
        Fleet::builder()
            .swupdate_arg("-K")
            .swupdate_arg(key_file.to_str().unwrap()),
    );
    let data = random_bytes(50_000, 41);
    let swu = SwuBuilder::new()
        .image(Image::raw("rootfs.img", data.clone(), f.path("enc.target")).encrypted(&key))
        .build(&f.cert, &f.path("enc.swu"))
        .unwrap();
    let bytes = fs::read(&swu.path).unwrap();
    let url = f.publish(IMAGE, &bytes, &bytes, custom("1.0"));
    let j = f.run_image_job(DIRECT, &url).await;
    f.assert_state(&j, "ACTIVATED");
    assert_eq!(fs::read(f.path("enc.target")).unwrap(), data);
    assert_eq!(f.fetches(&url), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_that_is_not_a_target_is_terminated_and_swupdate_gets_nothing() {
    let mut f = TufFleet::new();
    let (_, _, good) = f.swu("good", 1);
    f.publish(IMAGE, &good, &good, custom("1.0"));
    // A validly signed .swu that SWUpdate would install, served but not a target.
    let (evil, _, evil_bytes) = f.swu("evil", 2);
    let dir = f.repo.www().join("targets/qemu-amd64");
    fs::write(dir.join("evil.swu"), &evil_bytes).unwrap();
    let url = f.nginx().url("targets/qemu-amd64/evil.swu");
    f.start_agent();
    let id = f
        .dau_job_in(
            DIRECT,
            json!({"name": "qemu-amd64/evil.swu", "version": "6.6", "uri": url}),
        )
        .await;
    let j = f.finish(&id).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    let msg = message(&j);
    assert!(
        msg.contains("qemu-amd64/evil.swu") && msg.contains("not a target"),
        "{msg}"
    );
    assert_eq!(f.fetches(&url), 0, "{}", f.nginx().access_log());
    assert!(
        !f.swupdate().log().contains(SWUPDATE_INSTALL_MARKER),
        "{}",
        f.swupdate().log()
    );
    assert!(fs::read(&evil.images[0].target).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_named_by_uri_only_must_be_a_target_too() {
    let mut f = TufFleet::new();
    let (_, _, good) = f.swu("good", 1);
    f.publish(IMAGE, &good, &good, custom("1.0"));
    let (evil, _, evil_bytes) = f.swu("evil", 2);
    fs::write(f.repo.www().join("targets/evil.swu"), &evil_bytes).unwrap();
    let url = f.nginx().url("targets/evil.swu");
    f.start_agent();
    let id = f
        .dau_job_in(DIRECT, json!({"name": "", "version": "6.6", "uri": url}))
        .await;
    let j = f.finish(&id).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    assert!(message(&j).contains("not a target"), "{}", message(&j));
    assert_eq!(f.fetches(&url), 0);
    assert!(!f.swupdate().log().contains(SWUPDATE_INSTALL_MARKER));
    assert!(fs::read(&evil.images[0].target).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_whose_bytes_differ_is_terminated_and_nothing_is_installed() {
    let f = a_target_whose_bytes_differ_in(DIRECT).await;
    // SWUpdate saw an install that was cut before its end, and refused it.
    let log = f.swupdate().log();
    assert!(!log.contains("SWUPDATE successful"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_hardware_is_terminated_before_any_byte_is_fetched() {
    let mut f = TufFleet::new();
    let (swu, _, bytes) = f.swu("other", 1);
    let url = f.publish(IMAGE, &bytes, &bytes, custom("2.0"));
    let j = f.run_image_job(DIRECT, &url).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    let msg = message(&j);
    assert!(msg.contains("hardware") && msg.contains(IMAGE), "{msg}");
    assert_eq!(f.fetches(&url), 0, "{}", f.nginx().access_log());
    assert!(!f.swupdate().log().contains(SWUPDATE_INSTALL_MARKER));
    assert!(fs::read(&swu.images[0].target).unwrap().is_empty());
}

/// The job's current state and message.
async fn state(f: &Fleet, id: &str) -> (String, String) {
    let j = f.job(id).await;
    (
        j["status"]["state"].as_str().unwrap_or("").to_string(),
        message(&j),
    )
}

/// Expired metadata (a frozen repository, or a device clock behind) is not the job's fault: the
/// job waits in INSTALLING naming the expiry, nothing is fetched or installed; once the
/// repository publishes fresh metadata the same job goes on to ACTIVATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_metadata_makes_the_job_wait_then_it_goes_on() {
    let mut f = TufFleet::new();
    let (swu, data, bytes) = f.swu("good", 1);
    let url = f.publish(IMAGE, &bytes, &bytes, custom("1.0"));
    f.repo
        .ops(json!([{"op": "expire", "role": "timestamp"}, {"op": "publish"}]))
        .unwrap();
    f.start_agent();
    let id = f.dau_job_in(DIRECT, image_artifact(&url)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, msg) = state(&f, &id).await;
        assert!(s != "TERMINATED" && s != "ACTIVATED", "{s}: {msg}");
        if msg.contains("expired") {
            assert_eq!(s, "INSTALLING", "{msg}");
            assert!(msg.contains("timestamp"), "{msg}");
            break;
        }
        assert!(Instant::now() < deadline, "{s}: {msg}\n{}", f.agent_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(f.fetches(&url), 0);
    assert!(!f.swupdate().log().contains(SWUPDATE_INSTALL_MARKER));
    f.repo
        .ops(json!([{"op": "expire", "role": "timestamp", "past": false}, {"op": "publish"}]))
        .unwrap();
    let j = f.finish(&id).await;
    assert_eq!(j["status"]["state"], "ACTIVATED", "{j:#}");
    assert_eq!(fs::read(&swu.images[0].target).unwrap(), data);
}

/// After the device trusted a timestamp, the server answers an older one (rollback): the next
/// job ends TERMINATED naming the rollback, and nothing of it is fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_timestamp_terminates_the_next_job() {
    let mut f = TufFleet::new();
    let (_, _, first) = f.swu("first", 1);
    let old_timestamp = f.repo.metadata_bytes("timestamp.json").unwrap();
    let url = f.publish(IMAGE, &first, &first, custom("1.0"));
    f.start_agent();
    let id = f.dau_job_in(DIRECT, image_artifact(&url)).await;
    assert_eq!(f.finish(&id).await["status"]["state"], "ACTIVATED");

    let (second, _, bytes) = f.swu("second", 2);
    let url = f.publish("qemu-amd64/cip-core-1.6.swu", &bytes, &bytes, custom("1.0"));
    fs::write(f.repo.metadata("timestamp.json"), &old_timestamp).unwrap();
    let id = f
        .dau_job_in(
            DIRECT,
            json!({"name": "qemu-amd64/cip-core-1.6.swu", "version": "1.6", "uri": url}),
        )
        .await;
    let j = f.finish(&id).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    let msg = message(&j);
    assert!(
        msg.contains("timestamp") && msg.contains("rollback"),
        "{msg}"
    );
    assert_eq!(f.fetches(&url), 0);
    assert!(fs::read(&second.images[0].target).unwrap().is_empty());
}

/// Files left under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phased_a_trusted_artifact_is_activated() {
    a_trusted_artifact_in(PHASED).await;
}

/// Phased: the download is verified whole before DOWNLOADED; other bytes end the job at the
/// download, the staged file is removed, and SWUpdate is never asked to install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phased_a_target_whose_bytes_differ_is_terminated_at_download() {
    let f = a_target_whose_bytes_differ_in(PHASED).await;
    assert!(!f.swupdate().log().contains(SWUPDATE_INSTALL_MARKER));
    let staged = files_under(&f.path("state/staging"));
    assert!(staged.is_empty(), "{staged:?}");
}

/// Phased: a server sending more than the target's length is cut at that length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phased_a_target_longer_than_its_length_is_terminated_at_download() {
    let mut f = TufFleet::new();
    let (_, _, bytes) = f.swu("good", 1);
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0u8; 100_000]);
    let url = f.publish(IMAGE, &bytes, &longer, custom("1.0"));
    let j = f.run_image_job(PHASED, &url).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    let msg = message(&j);
    assert!(msg.contains("more than"), "{msg}");
    assert!(!f.swupdate().log().contains(SWUPDATE_INSTALL_MARKER));
}

/// TUF-only mode (no `[wfx]`): the agent installs the newest target for its hardware above the
/// running version (1.6 over 1.5; not 1.4, not 1.9 made for other hardware), once, over
/// several polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuf_only_installs_the_newest_target_for_this_hardware_once() {
    let mut f = TufFleet::new();
    let board =
        |version: &str, hw: &str| json!({"version": version, "board": "board", "hardware": [hw]});
    let (old, _, old_bytes) = f.swu("old", 3);
    let (good, data, good_bytes) = f.swu("good", 1);
    let (other, _, other_bytes) = f.swu("other", 2);
    f.publish(
        "qemu-amd64/cip-core-1.4.swu",
        &old_bytes,
        &old_bytes,
        board("1.4", "1.0"),
    );
    f.publish(
        "qemu-amd64/cip-core-1.6.swu",
        &good_bytes,
        &good_bytes,
        board("1.6", "1.0"),
    );
    f.publish(
        "qemu-amd64/cip-core-1.9.swu",
        &other_bytes,
        &other_bytes,
        board("1.9", "2.0"),
    );
    fs::write(f.path("version"), "1.5\n").unwrap();
    // TUF-only: no client-id, no `[wfx]`.
    f.f.config.client_id = None;
    f.f.config.wfx = false;
    f.f.config.device += &format!("version_file = {:?}\n", f.path("version"));
    f.f.config.extra = f.tuf_section("poll_interval = \"1s\"\n");
    f.f.start_agent();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (rec, installed) = f.tuf_only_record("qemu-amd64/cip-core-1.6.swu@");
        if installed && rec["pending"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "{rec}\n{}", f.agent_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(fs::read(&good.images[0].target).unwrap(), data);
    // Several more polls: nothing else is installed, and 1.6 not again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(fs::read(&old.images[0].target).unwrap().is_empty());
    assert!(fs::read(&other.images[0].target).unwrap().is_empty());
    let log = f.swupdate().log();
    // One install run (the agent repeats an ACKed request once to check the installer took it:
    // count runs, not requests).
    assert_eq!(log.matches("Software Update started").count(), 1, "{log}");
}

/// SWUpdate away when TUF-only mode starts is a state of the device, not the target's fault:
/// the agent says it will retry, at each poll, and marks nothing failed; once SWUpdate is there
/// (its sockets appear where the agent looks) the target is installed, once, and recorded done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuf_only_waits_for_swupdate_then_installs_the_target_once() {
    let mut f = TufFleet::new();
    drop(f.f.swupdate.take());
    let (good, data, bytes) = f.swu("good", 1);
    let custom = json!({"version": "1.6", "board": "board", "hardware": ["1.0"]});
    f.publish("qemu-amd64/cip-core-1.6.swu", &bytes, &bytes, custom);
    fs::write(f.path("version"), "1.5\n").unwrap();
    // Where SWUpdate's sockets will be: links to the daemon's, made once it runs.
    let sockets = f.path("sockets");
    fs::create_dir(&sockets).unwrap();
    let (ctl, prog) = (sockets.join("sockinstctrl"), sockets.join("swupdateprog"));
    f.f.config.sockets = Some((ctl.clone(), prog.clone()));
    f.f.config.client_id = None;
    f.f.config.wfx = false;
    f.f.config.device += &format!("version_file = {:?}\n", f.path("version"));
    f.f.config.extra = f.tuf_section("poll_interval = \"1s\"\n");
    // The retry backoff's cap cut to a second (5 min shipped): three tries in a few seconds.
    f.f.config.swupdate += "retry_max = \"1s\"\n";
    f.f.start_agent();
    let retries = |f: &Fleet| {
        f.agent_log()
            .matches("cannot install qemu-amd64/cip-core-1.6.swu now, will retry")
            .count()
    };
    f.until("three polls meeting no SWUpdate", |f| retries(f) >= 3)
        .await;
    let (rec, done) = f.tuf_only_record("qemu-amd64/cip-core-1.6.swu@");
    let empty = |set: &str| rec[set].as_array().is_none_or(Vec::is_empty);
    assert!(!done && empty("failed"), "not failed: {rec:#}");
    assert!(fs::read(&good.images[0].target).unwrap().is_empty());

    let sw = SwupdateDaemon::start(&DaemonOptions::new(&f.cert)).unwrap();
    std::os::unix::fs::symlink(sw.control_socket(), &ctl).unwrap();
    std::os::unix::fs::symlink(sw.progress_socket(), &prog).unwrap();
    f.f.swupdate = Some(sw);
    f.until("the target installed", |f| {
        let (rec, done) = f.tuf_only_record("qemu-amd64/cip-core-1.6.swu@");
        done && rec["pending"].is_null()
    })
    .await;
    assert_eq!(fs::read(&good.images[0].target).unwrap(), data);
    // Several more polls: not installed again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rec, _) = f.tuf_only_record("");
    let empty = |set: &str| rec[set].as_array().is_none_or(Vec::is_empty);
    assert!(empty("failed"), "{rec:#}");
    assert_eq!(f.successful_installs(), 1, "{}", f.swupdate().log());
    let log = f.swupdate().log();
    assert_eq!(log.matches("Software Update started").count(), 1, "{log}");
}

//! Delta updates end to end: `cip-update-agent run` with `[tuf]` and `[delta]`, a DAU job on the
//! wfx emulator, a TUF repository (python-tuf) whose .swu target names a zchunk companion made by
//! Debian's `zck -u -h sha256`, nginx serving both (Range and multi-range), the real SWUpdate
//! daemon installing into a file target. The seed on the "device" is the old .swu; the new one
//! has a few changed regions and an insertion.
//!
//! What a user checks: the installed bytes are the new image; the bytes nginx sent for the
//! companion are about what `zck_delta_size` says a delta costs, and the full .swu was never
//! fetched; a connection cut at random points still ends with the right bytes and no chunk
//! delivered twice; a corrupt companion or chunk falls back to the full download, or with
//! `fallback = "fail"` ends the job naming the delta failure.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cip_update_agent_tests::agent::agent_cmd;
use cip_update_agent_tests::cut_proxy::CutProxy;
use cip_update_agent_tests::delta::{image_pair, served, zck, zck as zck_tool, zck_delta_size};
use cip_update_agent_tests::nginx::Nginx;
use cip_update_agent_tests::pki::TestCert;
use cip_update_agent_tests::process::GroupChild;
use cip_update_agent_tests::swu::{Image, SwuBuilder};
use cip_update_agent_tests::swupdate::{DaemonOptions, SwupdateDaemon};
use cip_update_agent_tests::tuf::TufRepo;
use cip_update_agent_tests::wfx::WfxEmulator;
use serde_json::{Value, json};
use tempfile::TempDir;

const CLIENT: &str = "dev-0042";
const IMAGE: &str = "qemu-amd64/cip-core-1.5.swu";
const COMPANION: &str = "qemu-amd64/cip-core-1.5.swu.zck";
/// A few MB: ~100 chunks of 32 KiB on average.
const IMAGE_LEN: usize = 3 << 20;

struct Fleet {
    dir: TempDir,
    cert: TestCert,
    repo: TufRepo,
    swupdate: SwupdateDaemon,
    nginx: Nginx,
    wfx: WfxEmulator,
    http: reqwest::Client,
    agent: Option<GroupChild>,
    /// The new image's bytes (what must be installed), the old and new .swu files, and the
    /// companions of both.
    new_image: Vec<u8>,
    target: PathBuf,
    old_swu: PathBuf,
    new_swu: PathBuf,
    old_zck: PathBuf,
    new_zck: PathBuf,
}

impl Fleet {
    fn new(changes: usize) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::generate(dir.path()).unwrap();
        let repo = TufRepo::rs_tuf(2).unwrap();
        fs::write(dir.path().join("hwrevision"), "board 1.0\n").unwrap();
        fs::write(dir.path().join("version"), "1.4\n").unwrap();
        let (old, new) = image_pair(IMAGE_LEN, changes, 11);
        let target = dir.path().join("rootfs.target");
        let p = |n: &str| dir.path().join(n);
        for (img, swu) in [(&old, p("old.swu")), (&new, p("new.swu"))] {
            SwuBuilder::new()
                .image(Image::raw("rootfs.img", img.clone(), target.clone()))
                .build(&cert, &swu)
                .unwrap();
        }
        zck(&p("old.swu"), &p("old.swu.zck")).unwrap();
        zck(&p("new.swu"), &p("new.swu.zck")).unwrap();
        Fleet {
            swupdate: SwupdateDaemon::start(&DaemonOptions::new(&cert)).unwrap(),
            nginx: Nginx::start(&repo.www()).unwrap(),
            wfx: WfxEmulator::start_default().unwrap(),
            http: reqwest::Client::new(),
            repo,
            agent: None,
            new_image: new,
            target,
            old_swu: p("old.swu"),
            new_swu: p("new.swu"),
            old_zck: p("old.swu.zck"),
            new_zck: p("new.swu.zck"),
            cert,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Publishes the new .swu with its companion (served as `companion_served`); the .swu's URL.
    fn publish(&self, companion_served: &[u8]) -> String {
        let swu = fs::read(&self.new_swu).unwrap();
        let zck = fs::read(&self.new_zck).unwrap();
        self.publish_as(IMAGE, COMPANION, &swu, &zck, companion_served)
    }

    /// Publishes `swu` as target `path` with its companion `zck` as `companion`; the .swu's URL.
    fn publish_as(
        &self,
        path: &str,
        companion: &str,
        swu: &[u8],
        zck: &[u8],
        companion_served: &[u8],
    ) -> String {
        let r = self
            .repo
            .ops(json!([
                {"op": "add_target", "path": companion, "data_hex": hex::encode(zck),
                 "served_hex": hex::encode(companion_served), "custom": {}},
                {"op": "add_target", "path": path, "data_hex": hex::encode(swu),
                 "served_hex": hex::encode(swu),
                 "custom": {"version": "1.5", "hardware": ["1.0"], "zchunk": companion}},
                {"op": "publish"},
            ]))
            .unwrap();
        self.nginx
            .url(&format!("targets/{}", r[1]["stored"].as_str().unwrap()))
    }

    /// The agent; its targets fetched from `targets_url` (nginx, or a proxy in front of it).
    fn start_agent(&mut self, targets_url: &str, delta: &str) {
        let cfg = self.path("agent.toml");
        fs::write(
            &cfg,
            format!(
                "state_dir = {state:?}\n\
                 [device]\nclient_id = \"{CLIENT}\"\nhwrevision_file = {hw:?}\n\
                 version_file = {version:?}\n\
                 [wfx]\nurl = \"{wfx}\"\npoll_interval = \"2s\"\n\
                 [swupdate]\ncontrol_socket = {ctl:?}\nprogress_socket = {prog:?}\n\
                 [tuf]\nroot = {root:?}\nmetadata_url = \"{md}\"\ntargets_url = \"{targets_url}\"\n\
                 read_timeout = \"5s\"\n\
                 [delta]\nseeds = [{seed:?}]\n{delta}\n",
                state = self.path("state"),
                hw = self.path("hwrevision"),
                version = self.path("version"),
                wfx = self.wfx.south_url(),
                ctl = self.swupdate.control_socket(),
                prog = self.swupdate.progress_socket(),
                root = self.repo.initial_root(),
                md = self.nginx.url("metadata"),
                seed = self.old_swu,
            ),
        )
        .unwrap();
        let mut c: Command = agent_cmd().unwrap();
        c.arg("--config").arg(&cfg).arg("run");
        c.env("CIP_UPDATE_AGENT_LOG", "info");
        c.stdout(fs::File::create(self.path("agent.log")).unwrap());
        c.stderr(fs::File::create(self.path("agent.err")).unwrap());
        self.agent = Some(GroupChild::spawn(c, "cip-update-agent").unwrap());
    }

    fn agent_log(&self) -> String {
        fs::read_to_string(self.path("agent.err")).unwrap_or_default()
    }

    async fn create_job(&self, url: &str) -> String {
        self.create_job_in("wfx.workflow.dau.direct", IMAGE, url)
            .await
    }

    async fn create_job_in(&self, workflow: &str, name: &str, url: &str) -> String {
        let definition = json!({"version": "1.0", "type": ["firmware"],
                                "artifacts": [{"name": name, "version": "1.5", "uri": url}]});
        let r = self
            .http
            .post(format!("{}/jobs", self.wfx.north_url()))
            .json(&json!({"clientId": CLIENT, "workflow": workflow,
                          "definition": definition}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The operator moves a phased job on.
    async fn advance(&self, id: &str, state: &str) {
        let r = self
            .http
            .put(format!("{}/jobs/{id}/status", self.wfx.north_url()))
            .json(&json!({"state": state}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    /// Waits (90 s) until the job is in one of `states`; returns it with its history.
    async fn reached(&self, id: &str, states: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let r = self
                .http
                .get(format!("{}/jobs/{id}?history=true", self.wfx.north_url()))
                .send()
                .await
                .unwrap();
            if r.status().is_success() {
                let j: Value = r.json().await.unwrap();
                if states.contains(&j["status"]["state"].as_str().unwrap_or("")) {
                    return j;
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not reach {states:?}; agent log:\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (90 s) until the job is ACTIVATED or TERMINATED; returns it with its history.
    async fn finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let r = self
                .http
                .get(format!("{}/jobs/{id}?history=true", self.wfx.north_url()))
                .send()
                .await
                .unwrap();
            if r.status().is_success() {
                let j: Value = r.json().await.unwrap();
                let s = j["status"]["state"].as_str().unwrap_or("").to_owned();
                if s == "ACTIVATED" || s == "TERMINATED" {
                    eprintln!("job {id}: {s}: {}", j["status"]["message"]);
                    return j;
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not end; agent log:\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (requests, body bytes) nginx served for the companion and for the full .swu.
    fn served(&self) -> ((usize, u64), (usize, u64)) {
        let log = self.nginx.access_log();
        (served(&log, ".swu.zck"), served(&log, ".swu"))
    }
}

/// Every status message of the job, oldest first.
fn messages(j: &Value) -> Vec<String> {
    let mut m: Vec<String> = j["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|e| e["status"]["message"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    m.reverse();
    if let Some(last) = j["status"]["message"].as_str() {
        m.push(last.to_owned());
    }
    m
}

fn companion_header_len(zck: &[u8]) -> u64 {
    zchunk::Lead::parse(zck).unwrap().total_len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_install_fetches_only_the_missing_chunks_and_installs_the_new_image() {
    let mut f = Fleet::new(3);
    let zck = fs::read(&f.new_zck).unwrap();
    let url = f.publish(&zck);
    let targets = f.nginx.url("targets");
    f.start_agent(&targets, "");
    let id = f.create_job(&url).await;
    let j = f.finished(&id).await;
    assert_eq!(
        j["status"]["state"],
        "ACTIVATED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert!(
        fs::read(&f.target).unwrap() == f.new_image,
        "installed bytes differ"
    );

    let ((zck_requests, zck_bytes), (swu_requests, _)) = f.served();
    assert_eq!(
        swu_requests,
        0,
        "the full .swu was fetched:\n{}",
        f.nginx.access_log()
    );
    let (delta, total) = zck_delta_size(&f.old_zck, &f.new_zck).unwrap();
    let header = companion_header_len(&zck);
    eprintln!(
        "nginx sent {zck_bytes} bytes in {zck_requests} requests for the companion; \
         zck_delta_size: {delta} of {total}; header {header}"
    );
    // zck_delta_size counts the chunks (not the header); part headers and filled gaps cost a
    // little more.
    assert!(
        zck_bytes as f64 <= (delta + header) as f64 * 1.02 + 2048.0,
        "{zck_bytes} > {delta} + {header} + 2 %"
    );
    assert!(zck_bytes < total / 4, "{zck_bytes} of {total}: no delta");
    let msgs = messages(&j);
    let line = msgs
        .iter()
        .find(|m| m.starts_with("delta: fetched"))
        .unwrap_or_else(|| panic!("no delta line in {msgs:#?}"));
    assert!(
        line.contains("saved") && line.contains("requests"),
        "{line}"
    );
    // The installed .swu is kept as the next seed, and the chunk cache is emptied.
    let state = f.path("state/delta");
    assert!(fs::read(state.join("previous.swu")).unwrap() == fs::read(&f.new_swu).unwrap());
    assert!(!state.join("chunks").exists());

    // The next update (two more regions changed) is a delta from the installed .swu: it costs
    // what new -> newer costs, not what old (the configured seed) -> newer does.
    let mut newer = f.new_image.clone();
    for at in [IMAGE_LEN / 8, IMAGE_LEN * 7 / 8] {
        newer[at..at + 8192]
            .copy_from_slice(&cip_update_agent_tests::swu::random_bytes(8192, at as u64));
    }
    let newer_swu = f.path("newer.swu");
    SwuBuilder::new()
        .image(Image::raw("rootfs.img", newer.clone(), f.target.clone()))
        .build(&f.cert, &newer_swu)
        .unwrap();
    let newer_zck = f.path("newer.swu.zck");
    zck_tool(&newer_swu, &newer_zck).unwrap();
    let z = fs::read(&newer_zck).unwrap();
    let url = f.publish_as(
        "qemu-amd64/cip-core-1.6.swu",
        "qemu-amd64/cip-core-1.6.swu.zck",
        &fs::read(&newer_swu).unwrap(),
        &z,
        &z,
    );
    let id = f
        .create_job_in(
            "wfx.workflow.dau.direct",
            "qemu-amd64/cip-core-1.6.swu",
            &url,
        )
        .await;
    let j = f.finished(&id).await;
    assert_eq!(
        j["status"]["state"],
        "ACTIVATED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert!(
        fs::read(&f.target).unwrap() == newer,
        "installed bytes differ (1.6)"
    );
    let (_, sent) = served(&f.nginx.access_log(), "1.6.swu.zck");
    let (from_new, _) = zck_delta_size(&f.new_zck, &newer_zck).unwrap();
    let (from_old, _) = zck_delta_size(&f.old_zck, &newer_zck).unwrap();
    let header = companion_header_len(&z);
    eprintln!("1.6: sent {sent}; zck_delta_size from 1.5 {from_new}, from the old seed {from_old}");
    assert!(
        from_new as f64 * 1.3 < from_old as f64,
        "the test does not tell the seeds apart"
    );
    assert!(
        sent as f64 <= (from_new + header) as f64 * 1.02 + 2048.0,
        "{sent} > {from_new} + {header} + 2 %: the previous .swu was not used"
    );
}

/// Chunks (by stored range) whose bytes fully reached the client in `exchanges`, one entry per
/// exchange that delivered them.
fn delivered_chunks(
    exchanges: &[cip_update_agent_tests::cut_proxy::Exchange],
    header: &zchunk::Header,
) -> Vec<usize> {
    let mut out = Vec::new();
    for x in exchanges {
        let (head, body) = x.split();
        if !head.contains(" 206 ") && !head.contains(" 200 ") {
            continue;
        }
        // Pieces of the file received: (offset, len).
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        match x.header("content-type") {
            Some(ct) if ct.starts_with("multipart/byteranges") => {
                let b = zchunk::multipart::boundary(&ct).unwrap();
                let mut p = zchunk::Multipart::new(&b);
                // A cut body parses up to the cut.
                if let Ok(evs) = p.push(body) {
                    for e in evs {
                        if let zchunk::Event::Data { offset, data } = e {
                            pieces.push((offset, data.len() as u64));
                        }
                    }
                }
            }
            _ => {
                let start = x
                    .header("content-range")
                    .and_then(|v| zchunk::multipart::parse_content_range(&v).ok())
                    .map_or(0, |r| r.start);
                pieces.push((start, body.len() as u64));
            }
        }
        // Merge the pieces, then list the chunks they cover whole.
        pieces.sort();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (o, l) in pieces {
            match merged.last_mut() {
                Some((mo, ml)) if o <= *mo + *ml => *ml = (*ml).max(o + l - *mo),
                _ => merged.push((o, l)),
            }
        }
        for c in header.data_chunks() {
            if merged
                .iter()
                .any(|(o, l)| *o <= c.offset && c.end() <= o + l)
            {
                out.push(c.index);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_resume_and_no_verified_chunk_is_fetched_twice() {
    let mut f = Fleet::new(8);
    let zck = fs::read(&f.new_zck).unwrap();
    let url = f.publish(&zck);
    let header_len = companion_header_len(&zck);
    let header = zchunk::Header::parse(&zck[..header_len as usize]).unwrap();
    // Cut chunk requests only (the header is asked for from byte 0).
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("cut seed {seed}");
    let proxy = CutProxy::start(
        f.nginx.port(),
        3,
        seed,
        Arc::new(move |req: &str| {
            // A Range header whose first range starts past the header: a chunk request.
            req.contains(".swu.zck")
                && req
                    .split("bytes=")
                    .nth(1)
                    .and_then(|r| r.split('-').next())
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|start| start >= header_len)
        }),
    )
    .unwrap();
    f.start_agent(&proxy.url("targets"), "max_ranges_per_request = 2");
    let id = f.create_job(&url).await;
    let j = f.finished(&id).await;
    assert_eq!(
        j["status"]["state"],
        "ACTIVATED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert!(
        fs::read(&f.target).unwrap() == f.new_image,
        "installed bytes differ"
    );
    let ex = proxy.exchanges();
    for x in &ex {
        eprintln!("{:?} cut={} {} bytes", x.range, x.cut, x.response.len());
    }
    assert_eq!(ex.iter().filter(|x| x.cut).count(), 3, "three answers cut");
    assert!(
        !ex.iter()
            .any(|x| x.request.contains(".swu ") || x.request.contains(".swu HTTP")),
        "fell back to the full .swu"
    );
    let got = delivered_chunks(&ex, &header);
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<usize> = got.iter().copied().filter(|c| !seen.insert(*c)).collect();
    assert!(twice.is_empty(), "chunks delivered twice: {twice:?}");
    assert!(!got.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_companion_header_falls_back_to_the_full_download() {
    let mut f = Fleet::new(3);
    let mut zck = fs::read(&f.new_zck).unwrap();
    // A byte of the index: the header checksum no longer matches.
    let at = companion_header_len(&zck) as usize - 10;
    zck[at] ^= 0xff;
    let url = f.publish(&zck);
    let targets = f.nginx.url("targets");
    f.start_agent(&targets, "");
    let id = f.create_job(&url).await;
    let j = f.finished(&id).await;
    assert_eq!(
        j["status"]["state"],
        "ACTIVATED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert!(fs::read(&f.target).unwrap() == f.new_image);
    let (_, (swu_requests, swu_bytes)) = f.served();
    assert_eq!(swu_requests, 1);
    assert_eq!(swu_bytes, fs::metadata(&f.new_swu).unwrap().len());
    let msgs = messages(&j);
    assert!(
        msgs.iter()
            .any(|m| m.contains("delta failed") && m.contains("full download")),
        "{msgs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_does_not_verify_falls_back_to_the_full_download() {
    let mut f = Fleet::new(3);
    let mut zck = fs::read(&f.new_zck).unwrap();
    // Every data byte altered: whichever chunk is fetched fails its checksum.
    let h = companion_header_len(&zck) as usize;
    for b in &mut zck[h..] {
        *b ^= 0x55;
    }
    let url = f.publish(&zck);
    let targets = f.nginx.url("targets");
    f.start_agent(&targets, "");
    let id = f.create_job(&url).await;
    let j = f.finished(&id).await;
    assert_eq!(
        j["status"]["state"],
        "ACTIVATED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert!(fs::read(&f.target).unwrap() == f.new_image);
    let (_, (swu_requests, _)) = f.served();
    assert_eq!(swu_requests, 1);
    let msgs = messages(&j);
    assert!(
        msgs.iter().any(|m| m.contains("does not verify")),
        "{msgs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fallback_fail_a_delta_failure_terminates_the_job() {
    let mut f = Fleet::new(3);
    let mut zck = fs::read(&f.new_zck).unwrap();
    let h = companion_header_len(&zck) as usize;
    for b in &mut zck[h..] {
        *b ^= 0x55;
    }
    let url = f.publish(&zck);
    let targets = f.nginx.url("targets");
    f.start_agent(&targets, "fallback = \"fail\"");
    let id = f.create_job(&url).await;
    let j = f.finished(&id).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    let msg = j["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("delta failed") && msg.contains("does not verify"),
        "{msg}"
    );
    let (_, (swu_requests, _)) = f.served();
    assert_eq!(swu_requests, 0, "a metered link fetches no full image");
    assert!(fs::read(&f.target).unwrap_or_default().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_chunks_survive_a_restart() {
    let mut f = Fleet::new(8);
    let zck = fs::read(&f.new_zck).unwrap();
    let url = f.publish(&zck);
    let header_len = companion_header_len(&zck);
    let header = zchunk::Header::parse(&zck[..header_len as usize]).unwrap();
    // The second chunk request is cut: the first one's chunks are verified and cached by then.
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let proxy = CutProxy::start(
        f.nginx.port(),
        1,
        7,
        Arc::new(move |req: &str| {
            let chunk_request = req.contains(".swu.zck")
                && req
                    .split("bytes=")
                    .nth(1)
                    .and_then(|r| r.split('-').next())
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|start| start >= header_len);
            chunk_request && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1
        }),
    )
    .unwrap();
    // No retry, no fallback: the cut ends the first job.
    let delta = "max_ranges_per_request = 2\nmax_retries = 0\nfallback = \"fail\"";
    f.start_agent(&proxy.url("targets"), delta);
    let id = f.create_job(&url).await;
    let j = f.finished(&id).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    assert!(
        j["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("delta failed"),
        "{j:#}"
    );
    f.agent = None; // stopped
    let cached = fs::read_dir(f.path("state/delta/chunks")).unwrap().count();
    assert!(cached > 0, "nothing cached before the cut");

    f.start_agent(&proxy.url("targets"), delta);
    let id = f.create_job(&url).await;
    let j = f.finished(&id).await;
    assert_eq!(
        j["status"]["state"],
        "ACTIVATED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert!(
        fs::read(&f.target).unwrap() == f.new_image,
        "installed bytes differ"
    );
    let ex = proxy.exchanges();
    for x in &ex {
        eprintln!("{:?} cut={} {} bytes", x.range, x.cut, x.response.len());
    }
    assert_eq!(ex.iter().filter(|x| x.cut).count(), 1);
    let got = delivered_chunks(&ex, &header);
    let mut once = std::collections::HashSet::new();
    let twice: Vec<usize> = got.iter().copied().filter(|c| !once.insert(*c)).collect();
    assert!(twice.is_empty(), "chunks delivered twice: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swupdate_native_delta_for_the_running_version_is_installed_instead() {
    let mut f = Fleet::new(3);
    // The delta .swu for 1.4 -> 1.5: here any signed .swu that yields the new image (what the
    // agent must do is pick it, verify it as a target and install it).
    let delta_path = "qemu-amd64/cip-core-1.4-1.5.delta.swu";
    // Its own bytes (another sw-description version), so that only its own hashes fit it.
    let delta_swu = f.path("delta.swu");
    SwuBuilder::new()
        .version("1.5-from-1.4")
        .image(Image::raw(
            "rootfs.img",
            f.new_image.clone(),
            f.target.clone(),
        ))
        .build(&f.cert, &delta_swu)
        .unwrap();
    let delta = fs::read(&delta_swu).unwrap();
    let swu = fs::read(&f.new_swu).unwrap();
    assert_ne!(delta, swu);
    let r = f
        .repo
        .ops(json!([
            {"op": "add_target", "path": delta_path, "data_hex": hex::encode(&delta),
             "served_hex": hex::encode(&delta), "custom": {"version": "1.5"}},
            {"op": "add_target", "path": IMAGE, "data_hex": hex::encode(&swu),
             "served_hex": hex::encode(&swu),
             "custom": {"version": "1.5", "hardware": ["1.0"],
                        "deltas": {"1.3": "qemu-amd64/nope.swu", "1.4": delta_path}}},
            {"op": "publish"},
        ]))
        .unwrap();
    let url = f
        .nginx
        .url(&format!("targets/{}", r[1]["stored"].as_str().unwrap()));
    let targets = f.nginx.url("targets");
    f.start_agent(&targets, "");
    let id = f.create_job(&url).await;
    let j = f.finished(&id).await;
    assert_eq!(
        j["status"]["state"],
        "ACTIVATED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert!(fs::read(&f.target).unwrap() == f.new_image);
    // The delta .swu is not kept as a seed of the next delta (it holds no image).
    assert!(!f.path("state/delta/previous.swu").exists());
    let log = f.nginx.access_log();
    assert_eq!(served(&log, ".delta.swu").0, 1, "{log}");
    assert_eq!(served(&log, "cip-core-1.5.swu").0, 0, "{log}");
    let msgs = messages(&j);
    assert!(
        msgs.iter()
            .any(|m| m.contains("SWUpdate-native delta") && m.contains("1.4")),
        "{msgs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phased_job_stages_the_rebuilt_swu() {
    let mut f = Fleet::new(3);
    let zck = fs::read(&f.new_zck).unwrap();
    let url = f.publish(&zck);
    let targets = f.nginx.url("targets");
    f.start_agent(&targets, "");
    let id = f
        .create_job_in("wfx.workflow.dau.phased", IMAGE, &url)
        .await;
    f.reached(&id, &["CREATED"]).await;
    f.advance(&id, "DOWNLOAD").await;
    let j = f.reached(&id, &["DOWNLOADED", "TERMINATED"]).await;
    assert_eq!(
        j["status"]["state"],
        "DOWNLOADED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert!(
        messages(&j).iter().any(|m| m.starts_with("delta: fetched")),
        "{:#?}",
        messages(&j)
    );
    f.advance(&id, "INSTALL").await;
    let j = f.finished(&id).await;
    assert_eq!(
        j["status"]["state"],
        "ACTIVATED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert!(
        fs::read(&f.target).unwrap() == f.new_image,
        "installed bytes differ"
    );
    let ((zck_requests, _), (swu_requests, _)) = f.served();
    assert_eq!(swu_requests, 0, "{}", f.nginx.access_log());
    assert!(zck_requests >= 3);
}

/// The delta path alone (`delta::prepare`, what `run` calls) against a server.
async fn prepare_only(
    url: &str,
    companion: &std::path::Path,
    full: &std::path::Path,
    seed: &std::path::Path,
    state: &std::path::Path,
    max_ranges: usize,
) -> Result<cip_update_agent::delta::Prepared, String> {
    use cip_update_agent_tests::swu::sha256_file;
    let info = |p: &std::path::Path| cip_update_agent::tuf::TargetInfo {
        path: p.file_name().unwrap().to_string_lossy().into_owned(),
        length: fs::metadata(p).unwrap().len(),
        hashes: [("sha256".to_owned(), sha256_file(p).unwrap())]
            .into_iter()
            .collect(),
        custom: Value::Null,
    };
    let cfg = cip_update_agent::config::Delta {
        seeds: vec![seed.to_string_lossy().into_owned()],
        max_ranges_per_request: max_ranges,
        max_retries: 1,
        ..Default::default()
    };
    cip_update_agent::delta::prepare(
        &reqwest::Client::new(),
        &cfg,
        state,
        &info(companion),
        url,
        &info(full),
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| e.to_string())
}

/// [`prepare_only`], then the rebuilt bytes and the figures.
async fn prepare_from(
    url: &str,
    companion: &std::path::Path,
    full: &std::path::Path,
    seed: &std::path::Path,
    state: &std::path::Path,
    max_ranges: usize,
) -> Result<(Vec<u8>, cip_update_agent::delta::Stats), String> {
    use tokio::io::AsyncReadExt;
    let p = prepare_only(url, companion, full, seed, state, max_ranges).await?;
    let mut out = Vec::new();
    let mut r = p.reader;
    r.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    Ok((out, p.stats))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_changed_after_the_scan_fails_the_rebuild_stream() {
    use tokio::io::AsyncReadExt;
    let f = Fleet::new(2);
    fs::copy(&f.new_zck, f.nginx.docroot().join("new.swu.zck")).unwrap();
    let seed = f.path("seed.swu");
    fs::copy(&f.old_swu, &seed).unwrap();
    let p = prepare_only(
        &f.nginx.url("new.swu.zck"),
        &f.new_zck,
        &f.new_swu,
        &seed,
        &f.path("state"),
        64,
    )
    .await
    .unwrap();
    assert!(p.stats.from_seeds > 0);
    // The seed is rewritten before the rebuild reads it.
    let mut bytes = fs::read(&seed).unwrap();
    for b in &mut bytes[..] {
        *b = !*b;
    }
    fs::write(&seed, &bytes).unwrap();
    let mut r = p.reader;
    let e = r.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert!(e.to_string().contains("changed on the device"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_range_answers_and_whole_file_answers_are_taken_too() {
    let f = Fleet::new(4);
    let new_swu = fs::read(&f.new_swu).unwrap();
    fs::copy(&f.new_zck, f.nginx.docroot().join("new.swu.zck")).unwrap();
    // One range per request: nginx answers each with a plain 206 and Content-Range.
    let (bytes, stats) = prepare_from(
        &f.nginx.url("new.swu.zck"),
        &f.new_zck,
        &f.new_swu,
        &f.old_swu,
        &f.path("state1"),
        1,
    )
    .await
    .unwrap();
    assert!(bytes == new_swu, "rebuilt bytes differ (single ranges)");
    assert!(stats.ranges > 1, "{stats:?}");
    assert_eq!(stats.chunk_requests, stats.ranges, "{stats:?}");
    assert!(stats.fetched < new_swu.len() as u64 / 4, "{stats:?}");
    let log = f.nginx.access_log();
    assert!(
        log.lines()
            .filter(|l| l.contains("new.swu.zck"))
            .all(|l| l.contains(" 206 ") && !l.contains(',')),
        "{log}"
    );

    // A server without Range support answers 200 with the whole file: the chunks are taken
    // from it and the rest is not read.
    let plain = cip_update_agent_tests::slow_http::SlowServer::start(
        f.new_zck.clone(),
        64 * 1024,
        Duration::ZERO,
    )
    .unwrap();
    let (bytes, stats) = prepare_from(
        &plain.url("new.swu.zck"),
        &f.new_zck,
        &f.new_swu,
        &f.old_swu,
        &f.path("state2"),
        64,
    )
    .await
    .unwrap();
    assert!(bytes == new_swu, "rebuilt bytes differ (200 answers)");
    assert!(stats.chunks_fetched > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_of_another_length_or_image_is_refused_before_any_chunk() {
    let f = Fleet::new(2);
    fs::copy(&f.new_zck, f.nginx.docroot().join("new.swu.zck")).unwrap();
    // The companion of the OLD .swu named for the new target: it expands to another length.
    fs::copy(&f.old_zck, f.nginx.docroot().join("old.swu.zck")).unwrap();
    let e = prepare_from(
        &f.nginx.url("old.swu.zck"),
        &f.old_zck,
        &f.new_swu,
        &f.old_swu,
        &f.path("state"),
        64,
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("expands to") && e.contains("new.swu"), "{e}");
    // A served file that is not the companion's TUF length.
    let e = prepare_from(
        &f.nginx.url("new.swu.zck"),
        &f.old_zck,
        &f.new_swu,
        &f.old_swu,
        &f.path("state"),
        64,
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("TUF target"), "{e}");
    let chunk_requests = f
        .nginx
        .access_log()
        .lines()
        .filter(|l| l.contains("range=\"bytes=") && !l.contains("bytes=0-88"))
        .filter(|l| !l.contains("bytes=89-"))
        .count();
    assert_eq!(chunk_requests, 0, "{}", f.nginx.access_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_delta_that_is_not_a_target_gives_way_to_the_zchunk_delta() {
    let mut f = Fleet::new(3);
    let swu = fs::read(&f.new_swu).unwrap();
    let zck = fs::read(&f.new_zck).unwrap();
    // "deltas" names a .swu for the running 1.4 that the repository does not vouch for.
    let r = f
        .repo
        .ops(json!([
            {"op": "add_target", "path": COMPANION, "data_hex": hex::encode(&zck),
             "served_hex": hex::encode(&zck), "custom": {}},
            {"op": "add_target", "path": IMAGE, "data_hex": hex::encode(&swu),
             "served_hex": hex::encode(&swu),
             "custom": {"version": "1.5", "hardware": ["1.0"], "zchunk": COMPANION,
                        "deltas": {"1.4": "qemu-amd64/unlisted.delta.swu"}}},
            {"op": "publish"},
        ]))
        .unwrap();
    let url = f
        .nginx
        .url(&format!("targets/{}", r[1]["stored"].as_str().unwrap()));
    let targets = f.nginx.url("targets");
    f.start_agent(&targets, "");
    let id = f.create_job(&url).await;
    let j = f.finished(&id).await;
    assert_eq!(
        j["status"]["state"],
        "ACTIVATED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert!(fs::read(&f.target).unwrap() == f.new_image);
    let ((zck_requests, _), (swu_requests, _)) = f.served();
    assert!(zck_requests >= 3);
    assert_eq!(swu_requests, 0, "{}", f.nginx.access_log());
    assert_eq!(served(&f.nginx.access_log(), ".delta.swu").0, 0);
    assert!(
        f.agent_log().contains("unlisted.delta.swu is not a target"),
        "{}",
        f.agent_log()
    );
    assert!(
        messages(&j).iter().any(|m| m.starts_with("delta: fetched")),
        "{:#?}",
        messages(&j)
    );
}

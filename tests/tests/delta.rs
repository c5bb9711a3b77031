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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cip_update_agent_tests::fixtures::delta::{
    image_pair, served, zck, zck as zck_tool, zck_delta_size,
};
use cip_update_agent_tests::fixtures::swu::{Image, SwuBuilder};
use cip_update_agent_tests::fixtures::tuf::TufRepo;
use cip_update_agent_tests::scenarios::fleet::{DIRECT, Fleet, PHASED};
use cip_update_agent_tests::servers::cut_proxy::{CutProxy, Exchange};
use serde_json::{Value, json};

const IMAGE: &str = "qemu-amd64/cip-core-1.5.swu";
const COMPANION: &str = "qemu-amd64/cip-core-1.5.swu.zck";
/// A few MB: ~100 chunks of 32 KiB on average.
const IMAGE_LEN: usize = 3 << 20;

/// The shared fleet, with nginx serving a TUF repository, the agent configured with `[tuf]` and
/// `[delta]`, and the old and new images of a delta update.
struct DeltaFleet {
    f: Fleet,
    repo: TufRepo,
    /// The new image's bytes (what must be installed), the old and new .swu files, and the
    /// companions of both.
    new_image: Vec<u8>,
    target: PathBuf,
    old_swu: PathBuf,
    new_swu: PathBuf,
    old_zck: PathBuf,
    new_zck: PathBuf,
}

cip_update_agent_tests::deref_to_fleet!(DeltaFleet);

impl DeltaFleet {
    fn new(changes: usize) -> DeltaFleet {
        let repo = TufRepo::rs_tuf(2).unwrap();
        let mut f = Fleet::builder().serve(&repo.www()).start();
        fs::write(f.path("hwrevision"), "board 1.0\n").unwrap();
        fs::write(f.path("version"), "1.4\n").unwrap();
        f.config.device = format!(
            "hwrevision_file = {:?}\nversion_file = {:?}\n",
            f.path("hwrevision"),
            f.path("version")
        );
        f.config.progress_interval = None;
        let (old, new) = image_pair(IMAGE_LEN, changes, 11);
        let target = f.path("rootfs.target");
        let p = |n: &str| f.path(n);
        for (img, swu) in [(&old, p("old.swu")), (&new, p("new.swu"))] {
            SwuBuilder::new()
                .image(Image::raw("rootfs.img", img.clone(), target.clone()))
                .build(&f.cert, &swu)
                .unwrap();
        }
        zck(&p("old.swu"), &p("old.swu.zck")).unwrap();
        zck(&p("new.swu"), &p("new.swu.zck")).unwrap();
        DeltaFleet {
            repo,
            new_image: new,
            target,
            old_swu: p("old.swu"),
            new_swu: p("new.swu"),
            old_zck: p("old.swu.zck"),
            new_zck: p("new.swu.zck"),
            f,
        }
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
        self.publish_ops(json!([
            {"op": "add_target", "path": companion, "data_hex": hex::encode(zck),
             "served_hex": hex::encode(companion_served), "custom": {}},
            {"op": "add_target", "path": path, "data_hex": hex::encode(swu),
             "served_hex": hex::encode(swu),
             "custom": {"version": "1.5", "hardware": ["1.0"], "zchunk": companion}},
            {"op": "publish"},
        ]))
    }

    /// Runs the repository `ops` whose second one adds the .swu; the .swu's URL.
    fn publish_ops(&self, ops: Value) -> String {
        let r = self.repo.ops(ops).unwrap();
        self.nginx()
            .url(&format!("targets/{}", r[1]["stored"].as_str().unwrap()))
    }

    /// The agent; its targets fetched from `targets_url` (nginx, or a proxy in front of it).
    fn start_agent(&mut self, targets_url: &str, delta: &str) {
        self.f.config.extra = self.tuf_and_delta(targets_url, "", delta);
        self.f
            .start_agent_with("run", &[("CIP_UPDATE_AGENT_LOG", "info")]);
    }

    /// The `[tuf]` (with `tuf_extra`) and `[delta]` sections.
    fn tuf_and_delta(&self, targets_url: &str, tuf_extra: &str, delta: &str) -> String {
        format!(
            "[tuf]\nroot = {root:?}\nmetadata_url = \"{md}\"\ntargets_url = \"{targets_url}\"\n\
             read_timeout = \"5s\"\n{tuf_extra}\
             [delta]\nseeds = [{seed:?}]\n{delta}\n",
            root = self.repo.initial_root(),
            md = self.nginx().url("metadata"),
            seed = self.old_swu,
        )
    }

    /// The agent, its targets fetched from nginx directly.
    fn start_agent_on_nginx(&mut self, delta: &str) {
        let targets = self.nginx().url("targets");
        self.start_agent(&targets, delta);
    }

    /// A direct DAU job for IMAGE (1.5) at `url`; its id.
    async fn dau_job(&self, url: &str) -> String {
        self.dau_job_in(DIRECT, IMAGE, url).await
    }

    /// A DAU job in `workflow` for artifact `name` (1.5) at `url`; its id.
    async fn dau_job_in(&self, workflow: &str, name: &str, url: &str) -> String {
        let definition = json!({"version": "1.0", "type": ["firmware"],
                                "artifacts": [{"name": name, "version": "1.5", "uri": url}]});
        self.create_job(workflow, definition).await
    }

    /// Waits until the job is ACTIVATED or TERMINATED; returns it with its history.
    async fn finished(&self, id: &str) -> Value {
        let j = self.wait_for(id, &["ACTIVATED", "TERMINATED"]).await;
        eprintln!(
            "job {id}: {}: {}",
            j["status"]["state"], j["status"]["message"]
        );
        j
    }

    /// Starts the agent on nginx with `delta`, runs a direct job for the .swu at `url` to its
    /// end; the job.
    async fn run_direct(&mut self, url: &str, delta: &str) -> Value {
        self.start_agent_on_nginx(delta);
        let id = self.dau_job(url).await;
        self.finished(&id).await
    }

    /// The job is ACTIVATED and the target holds `image`.
    fn assert_installed(&self, j: &Value, image: &[u8], what: &str) {
        assert_eq!(
            j["status"]["state"],
            "ACTIVATED",
            "{j:#}\n{}",
            self.agent_log()
        );
        assert!(
            fs::read(&self.target).unwrap() == image,
            "installed bytes differ{what}"
        );
    }

    /// The job is ACTIVATED and the target holds the new image.
    fn assert_new_image_installed(&self, j: &Value) {
        self.assert_installed(j, &self.new_image, "");
    }

    /// (requests, body bytes) nginx served for the companion and for the full .swu.
    fn served(&self) -> ((usize, u64), (usize, u64)) {
        let log = self.nginx().access_log();
        (served(&log, ".swu.zck"), served(&log, ".swu"))
    }

    /// The new companion and its parsed header.
    fn new_companion(&self) -> (Vec<u8>, u64, zchunk::Header) {
        let zck = fs::read(&self.new_zck).unwrap();
        let header_len = companion_header_len(&zck);
        let header = zchunk::Header::parse(&zck[..header_len as usize]).unwrap();
        (zck, header_len, header)
    }

    /// Copies the companions into nginx's docroot as `new.swu.zck` (and `old.swu.zck`).
    fn serve_companions(&self, old_too: bool) {
        let docroot = self.nginx().docroot().to_owned();
        fs::copy(&self.new_zck, docroot.join("new.swu.zck")).unwrap();
        if old_too {
            fs::copy(&self.old_zck, docroot.join("old.swu.zck")).unwrap();
        }
    }

    /// [`prepare_only`] of the new .swu from the old one with `companion` served at `url`, then
    /// the rebuilt bytes and the figures.
    async fn prepare(
        &self,
        url: &str,
        companion: &Path,
        state: &str,
        max_ranges: usize,
    ) -> Result<(Vec<u8>, cip_update_agent::delta::Stats), String> {
        use tokio::io::AsyncReadExt;
        let (full, seed, state) = (&self.new_swu, &self.old_swu, self.path(state));
        let p = prepare_only(url, companion, full, seed, &state, max_ranges).await?;
        let mut out = Vec::new();
        let mut r = p.reader;
        r.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        Ok((out, p.stats))
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

/// One of the job's status messages satisfies `cond` (all of them in the failure).
fn assert_any_message(j: &Value, cond: impl Fn(&str) -> bool) {
    let msgs = messages(j);
    assert!(msgs.iter().any(|m| cond(m)), "{msgs:#?}");
}

fn companion_header_len(zck: &[u8]) -> u64 {
    zchunk::Lead::parse(zck).unwrap().total_len()
}

/// A direct job for the new .swu whose companion has every data byte altered (whichever chunk
/// is fetched fails its checksum), run to its end with `delta`; the fleet and the job.
async fn corrupt_chunks_job(delta: &str) -> (DeltaFleet, Value) {
    let mut f = DeltaFleet::new(3);
    let mut zck = fs::read(&f.new_zck).unwrap();
    let h = companion_header_len(&zck) as usize;
    for b in &mut zck[h..] {
        *b ^= 0x55;
    }
    let url = f.publish(&zck);
    let j = f.run_direct(&url, delta).await;
    (f, j)
}

/// Whether `req` is a chunk request: a Range header on the companion whose first range starts
/// past its header (`header_len` bytes; the header is asked for from byte 0).
fn is_chunk_request(req: &str, header_len: u64) -> bool {
    req.contains(".swu.zck")
        && req
            .split("bytes=")
            .nth(1)
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|start| start >= header_len)
}

/// Prints the proxy's exchanges; the chunks delivered fully (see [`delivered_chunks`]) and those
/// of them delivered more than once.
fn chunks_delivered(ex: &[Exchange], header: &zchunk::Header) -> (Vec<usize>, Vec<usize>) {
    for x in ex {
        eprintln!("{:?} cut={} {} bytes", x.range, x.cut, x.response.len());
    }
    let got = delivered_chunks(ex, header);
    let mut once = std::collections::HashSet::new();
    let twice: Vec<usize> = got.iter().copied().filter(|c| !once.insert(*c)).collect();
    (got, twice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_install_fetches_only_the_missing_chunks_and_installs_the_new_image() {
    let mut f = DeltaFleet::new(3);
    let zck = fs::read(&f.new_zck).unwrap();
    let url = f.publish(&zck);
    let j = f.run_direct(&url, "").await;
    f.assert_new_image_installed(&j);

    let ((zck_requests, zck_bytes), (swu_requests, _)) = f.served();
    assert_eq!(
        swu_requests,
        0,
        "the full .swu was fetched:\n{}",
        f.nginx().access_log()
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
        newer[at..at + 8192].copy_from_slice(&cip_update_agent_tests::fixtures::swu::random_bytes(
            8192, at as u64,
        ));
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
        .dau_job_in(DIRECT, "qemu-amd64/cip-core-1.6.swu", &url)
        .await;
    let j = f.finished(&id).await;
    f.assert_installed(&j, &newer, " (1.6)");
    let (_, sent) = served(&f.nginx().access_log(), "1.6.swu.zck");
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
fn delivered_chunks(exchanges: &[Exchange], header: &zchunk::Header) -> Vec<usize> {
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
    let mut f = DeltaFleet::new(8);
    let (zck, header_len, header) = f.new_companion();
    let url = f.publish(&zck);
    // Cut chunk requests only (the header is asked for from byte 0).
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("cut seed {seed}");
    let proxy = CutProxy::start(
        f.nginx().port(),
        3,
        seed,
        Arc::new(move |req: &str| is_chunk_request(req, header_len)),
    )
    .unwrap();
    f.start_agent(&proxy.url("targets"), "max_ranges_per_request = 2");
    let id = f.dau_job(&url).await;
    let j = f.finished(&id).await;
    f.assert_new_image_installed(&j);
    let ex = proxy.exchanges();
    let (got, twice) = chunks_delivered(&ex, &header);
    assert_eq!(ex.iter().filter(|x| x.cut).count(), 3, "three answers cut");
    assert!(
        !ex.iter()
            .any(|x| x.request.contains(".swu ") || x.request.contains(".swu HTTP")),
        "fell back to the full .swu"
    );
    assert!(twice.is_empty(), "chunks delivered twice: {twice:?}");
    assert!(!got.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_companion_header_falls_back_to_the_full_download() {
    let mut f = DeltaFleet::new(3);
    let mut zck = fs::read(&f.new_zck).unwrap();
    // A byte of the index: the header checksum no longer matches.
    let at = companion_header_len(&zck) as usize - 10;
    zck[at] ^= 0xff;
    let url = f.publish(&zck);
    let j = f.run_direct(&url, "").await;
    f.assert_new_image_installed(&j);
    let (_, (swu_requests, swu_bytes)) = f.served();
    assert_eq!(swu_requests, 1);
    assert_eq!(swu_bytes, fs::metadata(&f.new_swu).unwrap().len());
    assert_any_message(&j, |m| {
        m.contains("delta failed") && m.contains("full download")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_does_not_verify_falls_back_to_the_full_download() {
    let (f, j) = corrupt_chunks_job("").await;
    f.assert_new_image_installed(&j);
    let (_, (swu_requests, _)) = f.served();
    assert_eq!(swu_requests, 1);
    assert_any_message(&j, |m| m.contains("does not verify"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fallback_fail_a_delta_failure_terminates_the_job() {
    let (f, j) = corrupt_chunks_job("fallback = \"fail\"").await;
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
    let mut f = DeltaFleet::new(8);
    let (zck, header_len, header) = f.new_companion();
    let url = f.publish(&zck);
    // The second chunk request is cut: the first one's chunks are verified and cached by then.
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let proxy = CutProxy::start(
        f.nginx().port(),
        1,
        7,
        Arc::new(move |req: &str| {
            is_chunk_request(req, header_len)
                && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1
        }),
    )
    .unwrap();
    // No retry, no fallback: the cut ends the first job.
    let delta = "max_ranges_per_request = 2\nmax_retries = 0\nfallback = \"fail\"";
    f.start_agent(&proxy.url("targets"), delta);
    let id = f.dau_job(&url).await;
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
    let id = f.dau_job(&url).await;
    let j = f.finished(&id).await;
    f.assert_new_image_installed(&j);
    let ex = proxy.exchanges();
    let (_, twice) = chunks_delivered(&ex, &header);
    assert_eq!(ex.iter().filter(|x| x.cut).count(), 1);
    assert!(twice.is_empty(), "chunks delivered twice: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swupdate_native_delta_for_the_running_version_is_installed_instead() {
    let mut f = DeltaFleet::new(3);
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
    let url = f.publish_ops(json!([
        {"op": "add_target", "path": delta_path, "data_hex": hex::encode(&delta),
         "served_hex": hex::encode(&delta), "custom": {"version": "1.5"}},
        {"op": "add_target", "path": IMAGE, "data_hex": hex::encode(&swu),
         "served_hex": hex::encode(&swu),
         "custom": {"version": "1.5", "hardware": ["1.0"],
                    "deltas": {"1.3": "qemu-amd64/nope.swu", "1.4": delta_path}}},
        {"op": "publish"},
    ]));
    let j = f.run_direct(&url, "").await;
    f.assert_new_image_installed(&j);
    // The delta .swu is not kept as a seed of the next delta (it holds no image).
    assert!(!f.path("state/delta/previous.swu").exists());
    let log = f.nginx().access_log();
    assert_eq!(served(&log, ".delta.swu").0, 1, "{log}");
    assert_eq!(served(&log, "cip-core-1.5.swu").0, 0, "{log}");
    assert_any_message(&j, |m| {
        m.contains("SWUpdate-native delta") && m.contains("1.4")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phased_job_stages_the_rebuilt_swu() {
    let mut f = DeltaFleet::new(3);
    let zck = fs::read(&f.new_zck).unwrap();
    let url = f.publish(&zck);
    f.start_agent_on_nginx("");
    let id = f.dau_job_in(PHASED, IMAGE, &url).await;
    f.wait_for(&id, &["CREATED"]).await;
    f.advance(&id, "DOWNLOAD").await;
    let j = f.wait_for(&id, &["DOWNLOADED", "TERMINATED"]).await;
    assert_eq!(
        j["status"]["state"],
        "DOWNLOADED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert_any_message(&j, |m| m.starts_with("delta: fetched"));
    f.advance(&id, "INSTALL").await;
    let j = f.finished(&id).await;
    f.assert_new_image_installed(&j);
    let ((zck_requests, _), (swu_requests, _)) = f.served();
    assert_eq!(swu_requests, 0, "{}", f.nginx().access_log());
    assert!(zck_requests >= 3);
}

/// The delta path alone (`delta::prepare`, what `run` calls) against a server.
async fn prepare_only(
    url: &str,
    companion: &Path,
    full: &Path,
    seed: &Path,
    state: &Path,
    max_ranges: usize,
) -> Result<cip_update_agent::delta::Prepared, String> {
    use cip_update_agent_tests::fixtures::swu::sha256_file;
    let info = |p: &Path| cip_tuf::TargetInfo {
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
        &cip_update_agent::http::default_client(),
        &cfg,
        state,
        &info(companion),
        url,
        &info(full),
        cip_update_agent::delta::Timing {
            idle: Duration::from_secs(10),
            limits: cip_update_agent::http::Limits::default(),
        },
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_changed_after_the_scan_fails_the_rebuild_stream() {
    use tokio::io::AsyncReadExt;
    let f = DeltaFleet::new(2);
    f.serve_companions(false);
    let seed = f.path("seed.swu");
    fs::copy(&f.old_swu, &seed).unwrap();
    let p = prepare_only(
        &f.nginx().url("new.swu.zck"),
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
    let f = DeltaFleet::new(4);
    let new_swu = fs::read(&f.new_swu).unwrap();
    f.serve_companions(false);
    // One range per request: nginx answers each with a plain 206 and Content-Range.
    let (bytes, stats) = f
        .prepare(&f.nginx().url("new.swu.zck"), &f.new_zck, "state1", 1)
        .await
        .unwrap();
    assert!(bytes == new_swu, "rebuilt bytes differ (single ranges)");
    assert!(stats.ranges > 1, "{stats:?}");
    assert_eq!(stats.chunk_requests, stats.ranges, "{stats:?}");
    assert!(stats.fetched < new_swu.len() as u64 / 4, "{stats:?}");
    let log = f.nginx().access_log();
    assert!(
        log.lines()
            .filter(|l| l.contains("new.swu.zck"))
            .all(|l| l.contains(" 206 ") && !l.contains(',')),
        "{log}"
    );

    // A server without Range support answers 200 with the whole file: the chunks are taken
    // from it and the rest is not read.
    let plain = cip_update_agent_tests::servers::slow_http::SlowServer::start(
        f.new_zck.clone(),
        64 * 1024,
        Duration::ZERO,
    )
    .unwrap();
    let (bytes, stats) = f
        .prepare(&plain.url("new.swu.zck"), &f.new_zck, "state2", 64)
        .await
        .unwrap();
    assert!(bytes == new_swu, "rebuilt bytes differ (200 answers)");
    assert!(stats.chunks_fetched > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_of_another_length_or_image_is_refused_before_any_chunk() {
    let f = DeltaFleet::new(2);
    // The companion of the OLD .swu named for the new target: it expands to another length.
    f.serve_companions(true);
    let e = f
        .prepare(&f.nginx().url("old.swu.zck"), &f.old_zck, "state", 64)
        .await
        .err()
        .unwrap();
    assert!(e.contains("expands to") && e.contains("new.swu"), "{e}");
    // A served file that is not the companion's TUF length.
    let e = f
        .prepare(&f.nginx().url("new.swu.zck"), &f.old_zck, "state", 64)
        .await
        .err()
        .unwrap();
    assert!(e.contains("TUF target"), "{e}");
    let chunk_requests = f
        .nginx()
        .access_log()
        .lines()
        .filter(|l| l.contains("range=\"bytes=") && !l.contains("bytes=0-88"))
        .filter(|l| !l.contains("bytes=89-"))
        .count();
    assert_eq!(chunk_requests, 0, "{}", f.nginx().access_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_delta_that_is_not_a_target_gives_way_to_the_zchunk_delta() {
    let mut f = DeltaFleet::new(3);
    let swu = fs::read(&f.new_swu).unwrap();
    let zck = fs::read(&f.new_zck).unwrap();
    // "deltas" names a .swu for the running 1.4 that the repository does not vouch for.
    let url = f.publish_ops(json!([
        {"op": "add_target", "path": COMPANION, "data_hex": hex::encode(&zck),
         "served_hex": hex::encode(&zck), "custom": {}},
        {"op": "add_target", "path": IMAGE, "data_hex": hex::encode(&swu),
         "served_hex": hex::encode(&swu),
         "custom": {"version": "1.5", "hardware": ["1.0"], "zchunk": COMPANION,
                    "deltas": {"1.4": "qemu-amd64/unlisted.delta.swu"}}},
        {"op": "publish"},
    ]));
    let j = f.run_direct(&url, "").await;
    f.assert_new_image_installed(&j);
    let ((zck_requests, _), (swu_requests, _)) = f.served();
    assert!(zck_requests >= 3);
    assert_eq!(swu_requests, 0, "{}", f.nginx().access_log());
    assert_eq!(served(&f.nginx().access_log(), ".delta.swu").0, 0);
    assert!(
        f.agent_log().contains("unlisted.delta.swu is not a target"),
        "{}",
        f.agent_log()
    );
    assert_any_message(&j, |m| m.starts_with("delta: fetched"));
}

/// The native delta of the fleet's new image for the running 1.4, signed; `sha256` in its
/// sw-description is the real one, or a wrong one (SWUpdate then fails it).
fn native_delta_swu(f: &DeltaFleet, good: bool) -> Vec<u8> {
    let path = f.path(if good { "delta.swu" } else { "bad-delta.swu" });
    let mut image = Image::raw("rootfs.img", f.new_image.clone(), f.target.clone());
    if !good {
        image = image.sha256_override("ab".repeat(32));
    }
    SwuBuilder::new()
        .version("1.5-from-1.4")
        .image(image)
        .build(&f.cert, &path)
        .unwrap();
    fs::read(&path).unwrap()
}

const NATIVE: &str = "qemu-amd64/cip-core-1.4-1.5.delta.swu";
const ZCKFILE_TARGET: &str = "qemu-amd64/rootfs-1.5.img.zck";

/// Publishes the full new .swu (no zchunk companion) with the native delta `delta` for 1.4,
/// which names the zchunk file `rootfs.img.zck` (a target too: a stand-in, no handler here
/// fetches it); the full .swu's URL and the URL the TUF repository gives the zchunk file.
fn publish_native(f: &DeltaFleet, delta: &[u8]) -> (String, String) {
    publish_native_with(f, delta, b"the zchunk file of rootfs.img")
}

/// [`publish_native`] with the zchunk file's bytes.
fn publish_native_with(f: &DeltaFleet, delta: &[u8], zck: &[u8]) -> (String, String) {
    let swu = fs::read(&f.new_swu).unwrap();
    let r = f
        .repo
        .ops(json!([
            {"op": "add_target", "path": ZCKFILE_TARGET, "data_hex": hex::encode(zck),
             "served_hex": hex::encode(zck), "custom": {}},
            {"op": "add_target", "path": IMAGE, "data_hex": hex::encode(&swu),
             "served_hex": hex::encode(&swu),
             "custom": {"version": "1.5", "hardware": ["1.0"], "deltas": {"1.4": NATIVE}}},
            {"op": "add_target", "path": NATIVE, "data_hex": hex::encode(delta),
             "served_hex": hex::encode(delta),
             "custom": {"version": "1.5", "zckfiles": {"rootfs.img.zck": ZCKFILE_TARGET}}},
            {"op": "publish"},
        ]))
        .unwrap();
    let url = |i: usize| {
        f.nginx()
            .url(&format!("targets/{}", r[i]["stored"].as_str().unwrap()))
    };
    (url(1), url(0))
}

/// A native delta job run by `run` against a replayed SWUpdate `version` (its sockets, its
/// recorded frames) with `swupdate.wire = wire`; the job and the control messages the daemon got.
async fn native_delta_on_replayed(version: &str, wire: &str) -> (Value, String, Vec<Vec<u8>>) {
    use cip_update_agent_tests::servers::replay::ReplayDaemon;
    let mut f = DeltaFleet::new(2);
    let delta = native_delta_swu(&f, true);
    let (url, zck_url) = publish_native(&f, &delta);
    let daemon = ReplayDaemon::start_live(version, "success").unwrap();
    f.f.config.sockets = Some((daemon.control_socket(), daemon.progress_socket()));
    // Right after [swupdate] (the sockets): its `wire`.
    let targets = f.nginx().url("targets");
    f.f.config.extra = format!("wire = \"{wire}\"\n{}", f.tuf_and_delta(&targets, "", ""));
    f.f.start_agent_with("run", &[("CIP_UPDATE_AGENT_LOG", "info")]);
    let id = f.dau_job(&url).await;
    let j = f.finished(&id).await;
    assert_eq!(
        j["status"]["state"],
        "ACTIVATED",
        "{j:#}\n{}",
        f.agent_log()
    );
    assert_eq!(
        daemon.installed_bytes(Duration::from_secs(5)),
        Some(delta.len() as u64)
    );
    (j, zck_url, daemon.control_messages())
}

/// The type of a recorded control message; `END` for the mark where the image ended.
fn msg_type(m: &[u8]) -> u32 {
    if m.is_empty() {
        return END;
    }
    u32::from_le_bytes(m[4..8].try_into().unwrap())
}

const END: u32 = u32::MAX;

/// The one SET_DELTA_URL among `msgs`: its filename and url fields (union offsets 0 and 256).
fn the_set_delta_url(msgs: &[Vec<u8>]) -> (usize, String, String) {
    let types: Vec<u32> = msgs.iter().map(|m| msg_type(m)).collect();
    assert_eq!(types.iter().filter(|&&t| t == 15).count(), 1, "{types:?}");
    let at = types.iter().position(|&t| t == 15).unwrap();
    let m = &msgs[at];
    assert_eq!(m.len(), 3120);
    assert_eq!(u32::from_le_bytes(m[0..4].try_into().unwrap()), 0x1405_2001);
    let url = c_field(m, 8 + 256, 1024);
    assert!(m[8 + 256 + url.len()..].iter().all(|&b| b == 0));
    (at, c_field(m, 8, 256), url)
}

/// A C string field of a control message.
fn c_field(m: &[u8], at: usize, cap: usize) -> String {
    let f = &m[at..at + cap];
    let end = f.iter().position(|&b| b == 0).unwrap_or(cap);
    String::from_utf8_lossy(&f[..end]).into_owned()
}

/// SWUpdate 2025.12+ (`swupdate.wire = "2025.12"`): before REQ_INSTALL of a native delta,
/// SET_DELTA_URL (type 15) points the delta handler's `zckfile` at the URL the TUF repository
/// gives that zchunk file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_delta_url_points_a_native_deltas_zckfile_at_the_tuf_mirror_on_2025_12() {
    let (_, zck_url, msgs) = native_delta_on_replayed("2025.12", "2025.12").await;
    let types: Vec<u32> = msgs.iter().map(|m| msg_type(m)).collect();
    eprintln!("control messages: {types:?}");
    let (set, filename, url) = the_set_delta_url(&msgs);
    let install = types.iter().position(|&t| t == 0).expect("a REQ_INSTALL");
    assert!(set < install, "SET_DELTA_URL after REQ_INSTALL: {types:?}");
    assert_eq!(filename, "rootfs.img.zck");
    assert_eq!(url, zck_url);
    assert!(zck_url.contains("rootfs-1.5.img.zck"), "{zck_url}");
}

/// `swupdate.wire = "auto"` on a 2025.12 daemon, first install of the process (no frame seen
/// yet): SET_DELTA_URL goes out before REQ_INSTALL all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_set_delta_url_goes_out_before_the_first_install() {
    let (_, zck_url, msgs) = native_delta_on_replayed("2025.12", "auto").await;
    let types: Vec<u32> = msgs.iter().map(|m| msg_type(m)).collect();
    eprintln!("control messages: {types:?}");
    let (set, filename, url) = the_set_delta_url(&msgs);
    let install = types.iter().position(|&t| t == 0).expect("a REQ_INSTALL");
    assert!(set < install, "{types:?}");
    assert_eq!(
        (filename.as_str(), url.as_str()),
        ("rootfs.img.zck", zck_url.as_str())
    );
}

/// A 2022.12 daemon configured as such gets no type 15; with `auto` and no frame seen yet it is
/// asked, NACKs, and the native delta is installed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2022_12_daemon_gets_no_set_delta_url_or_refuses_it() {
    let (_, _, msgs) = native_delta_on_replayed("2022.12", "2022.12").await;
    let types: Vec<u32> = msgs.iter().map(|m| msg_type(m)).collect();
    assert!(types.contains(&0), "{types:?}");
    assert!(!types.contains(&15), "{types:?}");
    let (j, _, msgs) = native_delta_on_replayed("2022.12", "auto").await;
    let types: Vec<u32> = msgs.iter().map(|m| msg_type(m)).collect();
    assert_eq!(types.iter().filter(|&&t| t == 15).count(), 1, "{types:?}");
    assert!(types.contains(&0), "{types:?}");
    assert_eq!(j["status"]["state"], "ACTIVATED");
}

/// What SWUpdate's log says of its installs: (failed, successful). A failure ends with
/// `SWUPDATE failed [1] ...` (the `[0]` lines before it are its reasons); every install started
/// ended one way or the other.
fn swupdate_results(f: &DeltaFleet) -> (usize, usize) {
    let log = f.swupdate().log();
    let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
    let results = (count("SWUPDATE failed [1]"), count("SWUPDATE successful"));
    assert_eq!(
        count("Software Update started"),
        results.0 + results.1,
        "{log}"
    );
    results
}

/// A native delta that SWUpdate fails (a wrong image hash in its sw-description): nothing was
/// installed, so the full target is installed next, and the job says why the delta failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_delta_that_swupdate_fails_gives_way_to_the_full_target() {
    let mut f = DeltaFleet::new(2);
    let delta = native_delta_swu(&f, false);
    let (url, _) = publish_native(&f, &delta);
    let j = f.run_direct(&url, "").await;
    f.assert_new_image_installed(&j);
    assert_any_message(&j, |m| {
        m.starts_with("delta install failed") && m.contains("full target")
    });
    let log = f.nginx().access_log();
    assert_eq!(served(&log, ".delta.swu").0, 1, "{log}");
    assert_eq!(served(&log, "cip-core-1.5.swu").0, 1, "{log}");
    assert_eq!(swupdate_results(&f), (1, 1), "{}", f.swupdate().log());
}

/// A power cut right after the delta failure is journaled: the restarted agent installs the full
/// target, without trying the delta again, and SWUpdate installs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_after_the_delta_failure_neither_retries_the_delta_nor_installs_twice() {
    let mut f = DeltaFleet::new(2);
    let delta = native_delta_swu(&f, false);
    let (url, _) = publish_native(&f, &delta);
    let targets = f.nginx().url("targets");
    f.f.config.extra = f.tuf_and_delta(&targets, "", "");
    f.f.start_agent_with(
        "run",
        &[
            ("CIP_UPDATE_AGENT_LOG", "info"),
            ("CIP_UPDATE_AGENT_CRASH_AT", "delta failure recorded"),
        ],
    );
    let id = f.dau_job(&url).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !f.agent_log().contains("crashing at point") {
        assert!(std::time::Instant::now() < deadline, "{}", f.agent_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.kill_agent();
    assert_eq!(
        f.journal()["jobs"][&id]["delta_failed"],
        0,
        "{}",
        f.journal()
    );
    f.f.start_agent_with("run", &[("CIP_UPDATE_AGENT_LOG", "info")]);
    let j = f.finished(&id).await;
    f.assert_new_image_installed(&j);
    let log = f.nginx().access_log();
    assert_eq!(served(&log, ".delta.swu").0, 1, "{log}");
    assert_eq!(served(&log, "cip-core-1.5.swu").0, 1, "{log}");
    assert_eq!(swupdate_results(&f), (1, 1), "{}", f.swupdate().log());
}

/// With `fallback = "fail"` the same failure ends the job (metered links: no full download).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fallback_fail_a_native_delta_that_swupdate_fails_terminates() {
    let mut f = DeltaFleet::new(2);
    let delta = native_delta_swu(&f, false);
    let (url, _) = publish_native(&f, &delta);
    let j = f.run_direct(&url, "fallback = \"fail\"").await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    assert_eq!(served(&f.nginx().access_log(), "cip-core-1.5.swu").0, 0);
    assert_eq!(swupdate_results(&f), (1, 0), "{}", f.swupdate().log());
}

/// The seed changes under the agent after its scan (when the first chunk request goes out):
/// the rebuild stream fails mid-way, SWUpdate fails that install, and the full target follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_failing_mid_stream_gives_way_to_the_full_target() {
    let mut f = DeltaFleet::new(3);
    let zck = fs::read(&f.new_zck).unwrap();
    let header_len = companion_header_len(&zck);
    let url = f.publish(&zck);
    let seed = f.old_swu.clone();
    let rewritten = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = rewritten.clone();
    let proxy = CutProxy::start(
        f.nginx().port(),
        0,
        1,
        Arc::new(move |req: &str| {
            if is_chunk_request(req, header_len)
                && !flag.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                let mut b = fs::read(&seed).unwrap();
                for x in &mut b[..] {
                    *x = !*x;
                }
                fs::write(&seed, &b).unwrap();
            }
            false
        }),
    )
    .unwrap();
    f.start_agent(&proxy.url("targets"), "");
    let id = f.dau_job(&url).await;
    let j = f.finished(&id).await;
    assert!(rewritten.load(std::sync::atomic::Ordering::SeqCst));
    f.assert_new_image_installed(&j);
    assert_any_message(&j, |m| {
        m.starts_with("delta install failed") && m.contains("changed on the device")
    });
    assert_eq!(swupdate_results(&f), (1, 1), "{}", f.swupdate().log());
    // The full .swu came once (from the job's URL, nginx).
    let log = f.nginx().access_log();
    assert_eq!(served(&log, "cip-core-1.5.swu").0, 1, "{log}");
}

/// Starts the agent in TUF-only mode (no `[wfx]`, polling every second) with `delta`.
fn start_tuf_only(f: &mut DeltaFleet, delta: &str) {
    f.f.config.client_id = None;
    f.f.config.wfx = false;
    let targets = f.nginx().url("targets");
    f.f.config.extra = f.tuf_and_delta(&targets, "poll_interval = \"1s\"\n", delta);
    f.f.start_agent_with("run", &[("CIP_UPDATE_AGENT_LOG", "info")]);
}

/// Waits until TUF-only mode recorded the new image as done; its record.
async fn tuf_only_done(f: &DeltaFleet) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (rec, done) = f.tuf_only_record(IMAGE);
        if done {
            return rec;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{rec}\n{}",
            f.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// TUF-only mode retries a delta that SWUpdate failed with the full target too, and remembers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuf_only_mode_installs_the_full_target_after_a_native_delta_swupdate_fails() {
    let mut f = DeltaFleet::new(2);
    let delta = native_delta_swu(&f, false);
    publish_native(&f, &delta);
    start_tuf_only(&mut f, "");
    let rec = tuf_only_done(&f).await;
    assert!(
        fs::read(&f.target).unwrap() == f.new_image,
        "installed bytes differ"
    );
    let delta_failed = rec["delta_failed"].as_array().cloned().unwrap_or_default();
    assert_eq!(delta_failed.len(), 1, "{rec}");
    assert_eq!(swupdate_results(&f), (1, 1), "{}", f.swupdate().log());
    assert!(
        f.agent_log().contains("delta install failed"),
        "{}",
        f.agent_log()
    );
}

/// TUF-only mode (no `[wfx]`) takes the same delta path as `run`: the new image installed
/// exactly, the companion's chunks fetched instead of the full .swu.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuf_only_mode_installs_by_delta() {
    let mut f = DeltaFleet::new(3);
    let zck = fs::read(&f.new_zck).unwrap();
    f.publish(&zck);
    start_tuf_only(&mut f, "");
    tuf_only_done(&f).await;
    assert!(
        fs::read(&f.target).unwrap() == f.new_image,
        "installed bytes differ"
    );
    let ((zck_requests, zck_bytes), (swu_requests, _)) = f.served();
    let full = fs::metadata(&f.new_swu).unwrap().len();
    let (delta, _) = zck_delta_size(&f.old_zck, &f.new_zck).unwrap();
    let header = companion_header_len(&zck);
    eprintln!(
        "TUF-only delta: nginx sent {zck_bytes} bytes in {zck_requests} requests of a \
         {full}-byte .swu; zck_delta_size {delta}, header {header}"
    );
    assert_eq!(swu_requests, 0, "{}", f.nginx().access_log());
    assert!(
        zck_bytes as f64 <= (delta + header) as f64 * 1.02 + 2048.0,
        "{zck_bytes} > {delta} + {header} + 2 %"
    );
    assert!(zck_bytes < full / 4, "{zck_bytes} of {full}");
    assert!(
        f.agent_log().contains("delta: fetched"),
        "{}",
        f.agent_log()
    );
    assert!(f.path("state/delta/previous.swu").exists());
}

/// The header of a zchunk file, as SWUpdate's documentation extracts it (`zck_read_header -v`'s
/// "Header size", then the file's first that many bytes).
fn zck_header(zck: &Path) -> Vec<u8> {
    let out = std::process::Command::new("zck_read_header")
        .arg("-v")
        .arg(zck)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let size: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("Header size:"))
        .unwrap_or_else(|| panic!("zck_read_header -v said: {text}"))
        .trim()
        .parse()
        .unwrap();
    fs::read(zck).unwrap()[..size].to_vec()
}

/// SWUpdate's own zchunk `delta` handler, live: a native delta `.swu` holding only the zchunk
/// header of the new image, `url = "dynamic"` and `zckfile = "rootfs.img.zck"`. The agent finds
/// the `.zck`'s URL in the TUF metadata and sends it with SET_DELTA_URL; the 2026.05.1 daemon
/// chunks the running slot, fetches only the missing chunks from nginx (Range requests) and
/// writes the new image byte for byte. The bytes fetched are set beside `zck_delta_size` and
/// beside the agent's own zchunk rebuild of the `.swu` on the same pair. Older daemons know no
/// SET_DELTA_URL: their handler fails the native delta, and the agent installs the full image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swupdates_own_delta_handler_gets_the_zck_url_from_the_agent() {
    use cip_update_agent_tests::daemons::swupdate::installation;
    use cip_update_agent_tests::fixtures::swu::sha256_hex;
    let release = installation().release;
    let mut f = DeltaFleet::new(3);
    let (old, new) = image_pair(IMAGE_LEN, 3, 11);
    assert_eq!(new, f.new_image);
    // The running slot (the handler's `source`), and the new image's zchunk file.
    let slot = f.path("slot-a.img");
    fs::write(&slot, &old).unwrap();
    fs::write(f.path("old.img"), &old).unwrap();
    fs::write(f.path("new.img"), &new).unwrap();
    zck(&f.path("old.img"), &f.path("old.img.zck")).unwrap();
    zck(&f.path("new.img"), &f.path("new.img.zck")).unwrap();
    let header = zck_header(&f.path("new.img.zck"));
    let description = format!(
        r#"software =
{{
	version = "1.5-from-1.4";
	hardware-compatibility = [ "1.0" ];
	images: (
		{{
			filename = "rootfs.img.zck.header";
			type = "delta";
			device = {target:?};
			sha256 = "{sha}";
			properties: {{
				url = "dynamic";
				zckfile = "rootfs.img.zck";
				chain = "raw";
				source = {slot:?};
				zckloglevel = "info";
			}};
		}}
	);
}}
"#,
        target = f.target,
        sha = sha256_hex(&header),
    );
    let delta_swu = f.path("native.swu");
    SwuBuilder::new()
        .custom_sw_description(description)
        .image(Image::raw(
            "rootfs.img.zck.header",
            header.clone(),
            f.target.clone(),
        ))
        .build(&f.cert, &delta_swu)
        .unwrap();
    let delta = fs::read(&delta_swu).unwrap();
    let zck_bytes = fs::read(f.path("new.img.zck")).unwrap();
    let (url, zck_url) = publish_native_with(&f, &delta, &zck_bytes);
    let targets = f.nginx().url("targets");
    f.f.config.extra = f.tuf_and_delta(&targets, "", "");
    f.f.start_agent_with("run", &[("CIP_UPDATE_AGENT_LOG", "info")]);
    let id = f.dau_job(&url).await;
    let j = f.finished(&id).await;
    f.assert_new_image_installed(&j);
    let log = f.nginx().access_log();
    let zck_name = zck_url.rsplit('/').next().unwrap();
    let (zck_requests, zck_fetched) = served(&log, zck_name);
    let (full_requests, _) = served(&log, "cip-core-1.5.swu");
    let daemon_log = f.swupdate().log();
    let handler_lines: Vec<&str> = daemon_log
        .lines()
        .filter(|l| l.contains("delta") || l.contains("zck") || l.contains("chunk"))
        .collect();
    if !release.has_delta_url() {
        // No SET_DELTA_URL: the handler has no URL, the native delta fails, the full image goes in.
        assert_eq!(zck_requests, 0, "{log}");
        assert_eq!(full_requests, 1, "{log}");
        assert_any_message(&j, |m| m.contains("SWUpdate-native delta"));
        return;
    }
    assert_eq!(
        full_requests,
        0,
        "the full image was not fetched: {log}\n{j:#}\nSWUpdate:\n{}\nagent:\n{}",
        handler_lines.join("\n"),
        f.agent_log()
    );
    assert!(zck_requests >= 1, "{log}");
    let (reference, zck_len) =
        zck_delta_size(&f.path("old.img.zck"), &f.path("new.img.zck")).unwrap();
    // The agent's own rebuild of the .swu from the previous .swu, same image pair.
    let own = f.repo.www().join("own");
    fs::create_dir_all(&own).unwrap();
    fs::copy(&f.new_zck, own.join("new.swu.zck")).unwrap();
    let before = f.nginx().access_log().len();
    let prepared = prepare_only(
        &f.nginx().url(&format!("own/{}", "new.swu.zck")),
        &f.new_zck,
        &f.new_swu,
        &f.old_swu,
        &f.path("own-state"),
        150,
    )
    .await;
    let own_log = f.nginx().access_log()[before..].to_owned();
    let (own_requests, own_fetched) = served(&own_log, "new.swu.zck");
    eprintln!(
        "SWUpdate {} delta handler: {zck_requests} requests, {zck_fetched} bytes of the {zck_len}-byte \
         .zck (zck_delta_size: would download {reference}); the agent's own rebuild of the .swu: \
         {own_requests} requests, {own_fetched} bytes ({})\nnginx:\n{}\nSWUpdate's delta \
         handler:\n{}",
        installation().package_version,
        prepared.as_ref().map(|_| "rebuilt").unwrap_or("failed"),
        log.lines()
            .filter(|l| l.contains(zck_name))
            .collect::<Vec<_>>()
            .join("\n"),
        handler_lines.join("\n")
    );
    assert!(
        zck_fetched < zck_len / 4,
        "only the missing chunks: {zck_fetched} of {zck_len}"
    );
    assert!(
        zck_fetched <= reference + (header.len() as u64) + 64 * 1024,
        "about what zck_delta_size says ({reference}): {zck_fetched}"
    );
}

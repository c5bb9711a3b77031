//! A whole fleet for end-to-end tests of `cip-update-agent run`: the wfx emulator, nginx serving
//! images, the real SWUpdate daemon, and the agent process with a configuration that points at
//! them, plus the operator's side (jobs created, moved on and read on wfx's northbound API).
//!
//! Each test file keeps only what is its own: extra configuration ([`AgentConfig::extra`]), a
//! TUF repository served by this nginx ([`FleetBuilder::serve`]), an A/B device model. Unlike the
//! other harness modules, these are test fixtures: they panic with the agent's log when
//! something does not happen in time, which is the failure message a test wants.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::daemons::agent::agent_cmd;
use crate::daemons::nginx::Nginx;
use crate::daemons::process::GroupChild;
use crate::daemons::swupdate::{DaemonOptions, SwupdateDaemon};
use crate::emulators::wfx::WfxEmulator;
use crate::fixtures::pki::TestCert;
use crate::fixtures::swu::{BuiltSwu, Image, SwuBuilder, random_bytes};
use crate::fixtures::tuf::TufRepo;

/// A job id as one percent-encoded URL path segment (the tests give jobs hostile ids).
pub fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The client-id of the fleet's device.
pub const CLIENT: &str = "dev-0042";
/// wfx's direct DAU workflow.
pub const DIRECT: &str = "wfx.workflow.dau.direct";
/// wfx's phased DAU workflow (the operator moves the job on to DOWNLOAD and INSTALL).
pub const PHASED: &str = "wfx.workflow.dau.phased";

/// How long a test waits for the agent to do something before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The agent's configuration, written anew at each start. Sections are written only when they
/// have something in them.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `device.client_id` (None: a device to be onboarded, or TUF-only).
    pub client_id: Option<String>,
    /// More `[device]` keys, as TOML lines.
    pub device: String,
    /// Whether the `[wfx]` section is written (false: TUF-only mode).
    pub wfx: bool,
    /// `wfx.url` instead of the emulator's southbound URL.
    pub wfx_url: Option<String>,
    /// `wfx.poll_interval`.
    pub poll_interval: String,
    /// `wfx.progress_interval` (None: the agent's default).
    pub progress_interval: Option<String>,
    /// More `[wfx]` keys, as TOML lines.
    pub wfx_extra: String,
    /// SWUpdate sockets the agent is told about instead of the fleet daemon's.
    pub sockets: Option<(PathBuf, PathBuf)>,
    /// More `[swupdate]` keys, as TOML lines (written with the sockets).
    pub swupdate: String,
    /// Appended as is: more sections (`[tuf]`, `[mqtt]`, `[reboot]`, ...).
    pub extra: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            client_id: Some(CLIENT.to_owned()),
            device: String::new(),
            wfx: true,
            wfx_url: None,
            poll_interval: "2s".to_owned(),
            progress_interval: Some("100ms".to_owned()),
            wfx_extra: String::new(),
            sockets: None,
            swupdate: String::new(),
            extra: String::new(),
        }
    }
}

/// What a [`Fleet`] starts besides the wfx emulator.
#[derive(Debug, Clone, Default)]
pub struct FleetBuilder {
    no_swupdate: bool,
    swupdate_args: Vec<String>,
    no_nginx: bool,
    docroot: Option<PathBuf>,
}

impl FleetBuilder {
    /// No SWUpdate daemon (the agent is not told of any sockets unless
    /// [`AgentConfig::sockets`] is set).
    pub fn without_swupdate(mut self) -> Self {
        self.no_swupdate = true;
        self
    }

    /// One more argument for the SWUpdate daemon (e.g. `-q stable,copy1`).
    pub fn swupdate_arg(mut self, arg: &str) -> Self {
        self.swupdate_args.push(arg.to_owned());
        self
    }

    /// No nginx.
    pub fn without_nginx(mut self) -> Self {
        self.no_nginx = true;
        self
    }

    /// nginx serves `docroot` instead of the fleet's own `www/`.
    pub fn serve(mut self, docroot: &Path) -> Self {
        self.docroot = Some(docroot.to_owned());
        self
    }

    pub fn start(self) -> Fleet {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cert = TestCert::generate(dir.path()).expect("signing certificate");
        let www = dir.path().join("www");
        fs::create_dir(&www).expect("www directory");
        let swupdate = (!self.no_swupdate).then(|| {
            let opts = self
                .swupdate_args
                .iter()
                .fold(DaemonOptions::new(&cert), |o, a| o.arg(a));
            SwupdateDaemon::start(&opts).expect("SWUpdate daemon")
        });
        let nginx = (!self.no_nginx)
            .then(|| Nginx::start(self.docroot.as_deref().unwrap_or(&www)).expect("nginx"));
        Fleet {
            agent: None,
            swupdate,
            nginx,
            wfx: WfxEmulator::start_default().expect("wfx emulator"),
            http: cip_update_agent::http::default_client(),
            config: AgentConfig::default(),
            cert,
            dir,
        }
    }
}

/// The wfx emulator, nginx, SWUpdate and the agent, each in or below one temporary directory.
pub struct Fleet {
    /// The agent process, when started (dropped first: killed before the rest goes).
    pub agent: Option<GroupChild>,
    pub swupdate: Option<SwupdateDaemon>,
    pub nginx: Option<Nginx>,
    pub wfx: WfxEmulator,
    pub http: reqwest::Client,
    /// Used at the next [`Fleet::start_agent`].
    pub config: AgentConfig,
    pub cert: TestCert,
    pub dir: TempDir,
}

impl Fleet {
    /// wfx, SWUpdate, and nginx serving the fleet's `www/`.
    pub fn new() -> Fleet {
        Fleet::builder().start()
    }

    pub fn builder() -> FleetBuilder {
        FleetBuilder::default()
    }

    /// A fleet whose nginx serves a new RS-TUF-shaped repository (16 bins, no target yet), the
    /// agent's hardware `board 1.0` (what SWUpdate is told by default, [`DaemonOptions`]) read
    /// from its hwrevision file: the start of the tests of `run` with `[tuf]`, which add the
    /// targets and the `[tuf]` section they need.
    pub fn with_tuf_repo() -> (Fleet, TufRepo) {
        Fleet::with_tuf_repo_from(Fleet::builder())
    }

    /// [`Fleet::with_tuf_repo`] from a builder with more settings (e.g. SWUpdate's arguments).
    pub fn with_tuf_repo_from(builder: FleetBuilder) -> (Fleet, TufRepo) {
        let repo = TufRepo::rs_tuf(4).unwrap();
        let mut f = builder.serve(&repo.www()).start();
        fs::write(f.path("hwrevision"), "board 1.0\n").unwrap();
        f.config.device = format!("hwrevision_file = {:?}\n", f.path("hwrevision"));
        (f, repo)
    }

    /// `name` in the fleet's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The SWUpdate daemon (panics when the fleet was started without it).
    pub fn swupdate(&self) -> &SwupdateDaemon {
        self.swupdate.as_ref().expect("the fleet runs SWUpdate")
    }

    /// nginx (panics when the fleet was started without it).
    pub fn nginx(&self) -> &Nginx {
        self.nginx.as_ref().expect("the fleet runs nginx")
    }

    /// A signed image of `data` served by nginx as `www/<name>.swu`, writing `target`; its URL.
    pub fn serve_image(&self, name: &str, data: Vec<u8>, target: PathBuf) -> (BuiltSwu, String) {
        let swu = SwuBuilder::new()
            .image(Image::raw("rootfs.img", data, target))
            .build(&self.cert, &self.path(&format!("www/{name}.swu")))
            .expect("building the .swu");
        (swu, self.nginx().url(&format!("{name}.swu")))
    }

    /// A signed image of `len` random bytes served as `<name>.swu`, writing `<name>.target`;
    /// with `bad_hash`, its sw-description names another hash (SWUpdate refuses it).
    pub fn image(&self, name: &str, len: usize, bad_hash: bool) -> (BuiltSwu, Vec<u8>, String) {
        let data = random_bytes(len, len as u64 + bad_hash as u64);
        let mut img = Image::raw(
            "rootfs.img",
            data.clone(),
            self.path(&format!("{name}.target")),
        );
        if bad_hash {
            img = img.sha256_override("cd".repeat(32));
        }
        let swu = SwuBuilder::new()
            .image(img)
            .build(&self.cert, &self.path(&format!("www/{name}.swu")))
            .expect("building the .swu");
        let url = self.nginx().url(&format!("{name}.swu"));
        (swu, data, url)
    }

    /// A signed .swu of `len` random bytes (from `seed`) writing `<name>.target`, built as
    /// `<name>.swu` in the fleet's directory (served by nothing: the hostile and TUF tests serve
    /// it their own way); the archive, the image's bytes and the archive's bytes.
    pub fn signed_swu(&self, name: &str, len: usize, seed: u64) -> (BuiltSwu, Vec<u8>, Vec<u8>) {
        let data = random_bytes(len, seed);
        let file = self.path(&format!("{name}.swu"));
        let swu = SwuBuilder::new()
            .image(Image::raw(
                "rootfs.img",
                data.clone(),
                self.path(&format!("{name}.target")),
            ))
            .build(&self.cert, &file)
            .expect("building the .swu");
        let bytes = fs::read(&file).unwrap();
        (swu, data, bytes)
    }

    /// Asserts that the job `j` is in `state`, showing the job and the agent's log if not.
    pub fn assert_state(&self, j: &Value, state: &str) {
        assert_eq!(j["status"]["state"], state, "{j:#}\n{}", self.agent_log());
    }

    /// The configuration text for [`Fleet::config`].
    pub fn config_text(&self) -> String {
        let c = &self.config;
        let mut text = format!("state_dir = {:?}\n", self.path("state"));
        if c.client_id.is_some() || !c.device.is_empty() {
            text += "[device]\n";
            if let Some(id) = &c.client_id {
                text += &format!("client_id = \"{id}\"\n");
            }
            text += &c.device;
        }
        if c.wfx {
            let url = c.wfx_url.clone().unwrap_or_else(|| self.wfx.south_url());
            text += &format!(
                "[wfx]\nurl = \"{url}\"\npoll_interval = \"{}\"\n",
                c.poll_interval
            );
            if let Some(p) = &c.progress_interval {
                text += &format!("progress_interval = \"{p}\"\n");
            }
            text += &c.wfx_extra;
        }
        let sockets = c.sockets.clone().or_else(|| {
            self.swupdate
                .as_ref()
                .map(|s| (s.control_socket(), s.progress_socket()))
        });
        if let Some((ctl, prog)) = sockets {
            text += &format!("[swupdate]\ncontrol_socket = {ctl:?}\nprogress_socket = {prog:?}\n");
            text += &c.swupdate;
        }
        text + &c.extra
    }

    /// Writes `agent.toml` from [`Fleet::config`]; its path.
    pub fn write_config(&self) -> PathBuf {
        let cfg = self.path("agent.toml");
        fs::write(&cfg, self.config_text()).expect("writing agent.toml");
        cfg
    }

    /// Starts `cip-update-agent run`.
    pub fn start_agent(&mut self) {
        self.start_agent_with("run", &[]);
    }

    /// Starts `cip-update-agent <command>` with more environment; its stdout is appended to
    /// `agent.out`, its stderr (the log) to `agent.err`.
    pub fn start_agent_with(&mut self, command: &str, env: &[(&str, &str)]) {
        let cfg = self.write_config();
        let mut c: Command = agent_cmd().expect("the agent binary");
        c.arg("--config").arg(&cfg).arg(command);
        c.envs(env.iter().copied());
        let log = |name: &str| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(name))
                .expect("agent log file")
        };
        c.stdout(log("agent.out"));
        c.stderr(log("agent.err"));
        self.agent = Some(GroupChild::spawn(c, "cip-update-agent").expect("starting the agent"));
    }

    /// Stops the agent as a power cut or a watchdog reset would (SIGKILL), and reaps it.
    pub fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.signal_group(nix::sys::signal::Signal::SIGKILL)
                .expect("SIGKILL to the agent");
            let _ = a.kill_group(Duration::from_secs(2));
        }
    }

    /// The agent's log (all its runs).
    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.path("agent.err")).unwrap_or_default()
    }

    /// `cip-update-agent --config agent.toml ARGS`, run to its end.
    pub fn agent_cli(&self, args: &[&str]) -> Output {
        agent_cmd()
            .expect("the agent binary")
            .arg("--config")
            .arg(self.path("agent.toml"))
            .args(args)
            .output()
            .expect("running the agent")
    }

    /// `cip-update-agent status --json`, which must succeed.
    pub fn status_json(&self) -> Value {
        let o = self.agent_cli(&["status", "--json"]);
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice(&o.stdout).expect("status --json prints JSON")
    }

    /// Creates a job for `client` (northbound); its id.
    pub async fn create_job_for(&self, client: &str, workflow: &str, definition: Value) -> String {
        let r = self
            .http
            .post(format!("{}/jobs", self.wfx.north_url()))
            .json(&json!({"clientId": client, "workflow": workflow, "definition": definition}))
            .send()
            .await
            .expect("POST /jobs");
        assert!(
            r.status().is_success(),
            "{}",
            r.text().await.unwrap_or_default()
        );
        r.json::<Value>().await.expect("the job")["id"]
            .as_str()
            .expect("the job's id")
            .to_owned()
    }

    /// Creates a job for [`CLIENT`]; its id.
    pub async fn create_job(&self, workflow: &str, definition: Value) -> String {
        self.create_job_for(CLIENT, workflow, definition).await
    }

    /// The job as the operator sees it, with its history (retried through injected 5xx answers).
    pub async fn job(&self, id: &str) -> Value {
        for _ in 0..50 {
            let r = self
                .http
                .get(format!(
                    "{}/jobs/{}?history=true",
                    self.wfx.north_url(),
                    segment(id)
                ))
                .send()
                .await
                .expect("GET job");
            if r.status().is_success() {
                return r.json().await.expect("the job");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("GET job {id} keeps failing");
    }

    /// The operator's move (northbound: WFX).
    pub async fn advance(&self, id: &str, state: &str) {
        let r = self
            .http
            .put(format!(
                "{}/jobs/{}/status",
                self.wfx.north_url(),
                segment(id)
            ))
            .json(&json!({"state": state}))
            .send()
            .await
            .expect("PUT job status");
        assert!(
            r.status().is_success(),
            "{}",
            r.text().await.unwrap_or_default()
        );
    }

    /// The operator of a phased job: moves `job` on if it waits for WFX (CREATED, DOWNLOADED).
    pub async fn operate(&self, job: &Value) {
        let id = job["id"].as_str().unwrap_or("");
        match job["status"]["state"].as_str().unwrap_or("") {
            "CREATED" => self.advance(id, "DOWNLOAD").await,
            "DOWNLOADED" => self.advance(id, "INSTALL").await,
            _ => {}
        }
    }

    pub async fn delete(&self, id: &str) {
        let r = self
            .http
            .delete(format!("{}/jobs/{}", self.wfx.north_url(), segment(id)))
            .send()
            .await
            .expect("DELETE job");
        assert!(r.status().is_success(), "{}", r.status());
    }

    /// Where the agent stages job `id`'s downloads: `state/staging/<SHA-256 of the id, hex>`
    /// (never a path made of the id).
    pub fn staging_dir(&self, id: &str) -> PathBuf {
        use sha2::Digest;
        self.path("state/staging")
            .join(hex::encode(sha2::Sha256::digest(id.as_bytes())))
    }

    /// The agent's journal: job ids it holds.
    pub fn journal_jobs(&self) -> Vec<String> {
        self.journal()["jobs"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The agent's journal (`state/state.json`; null while there is none).
    pub fn journal(&self) -> Value {
        let Ok(text) = fs::read(self.path("state/state.json")) else {
            return Value::Null;
        };
        serde_json::from_slice(&text).expect("the journal is JSON")
    }

    /// TUF-only mode's record (`state/tuf-only.json`; `Null` before it is written), and whether
    /// it lists a target whose id (`<path>@<sha256>`) starts with `target` as done.
    pub fn tuf_only_record(&self, target: &str) -> (Value, bool) {
        let rec: Value = fs::read(self.path("state/tuf-only.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let done = rec["done"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d.as_str().is_some_and(|d| d.starts_with(target)));
        (rec, done)
    }

    /// Waits until `cond` holds (60 s), with the agent's log in the failure.
    pub async fn until(&self, what: &str, mut cond: impl FnMut(&Fleet) -> bool) {
        poll_until(
            what,
            PATIENCE,
            || cond(self),
            || format!("agent log:\n{}", self.agent_log()),
        )
        .await;
    }

    /// Polls the job (every 100 ms, 60 s at the most) until `cond` holds for it; returns it.
    /// With `operate`, makes the operator's moves of a phased job at once (see
    /// [`Fleet::operate`]).
    pub async fn until_job(
        &self,
        id: &str,
        what: &str,
        operate: bool,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let j = self.job(id).await;
            if operate {
                self.operate(&j).await;
            }
            if cond(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: job {id} stuck in {}: {j:#}\nagent log:\n{}\nSWUpdate's log:\n{}",
                j["status"]["state"],
                self.agent_log(),
                self.swupdate.as_ref().map(|s| s.log()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the job is in one of `states`; returns the job.
    pub async fn wait_for(&self, id: &str, states: &[&str]) -> Value {
        let what = format!("job {id} to reach {states:?}");
        self.until_job(id, &what, false, |j| {
            states.contains(&j["status"]["state"].as_str().unwrap_or(""))
        })
        .await
    }

    /// Waits until the job is ACTIVATED or TERMINATED, making the operator's moves of a phased
    /// job at once (DOWNLOAD, INSTALL); returns it.
    pub async fn finish(&self, id: &str) -> Value {
        let j = self
            .until_job(id, "the job's end", true, |j| {
                matches!(
                    j["status"]["state"].as_str(),
                    Some("ACTIVATED" | "TERMINATED")
                )
            })
            .await;
        eprintln!(
            "job {id}: {}: {}",
            j["status"]["state"], j["status"]["message"]
        );
        if let Some(sw) = &self.swupdate {
            eprintln!("SWUpdate's log:\n{}", sw.log());
        }
        j
    }

    /// How many installs SWUpdate carried through (one line each: "[INFO ] : SWUPDATE
    /// successful ! SWUPDATE successful !").
    pub fn successful_installs(&self) -> usize {
        self.swupdate()
            .log()
            .lines()
            .filter(|l| l.contains("SWUPDATE successful"))
            .count()
    }

    /// A direct firmware job for a fresh image, carried to its end: ACTIVATED, image installed.
    pub async fn direct_job_succeeds(&self, name: &str) -> Value {
        let (swu, data, url) = self.image(name, 100_000, false);
        let id = self.create_job(DIRECT, firmware(&url)).await;
        let j = self.wait_for(&id, &["ACTIVATED", "TERMINATED"]).await;
        assert_eq!(
            j["status"]["state"],
            "ACTIVATED",
            "{j:#}\n{}",
            self.agent_log()
        );
        assert!(installed(&swu, &data), "{name}: target");
        j
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

/// A firmware job's definition with one artifact at `url`.
pub fn firmware(url: &str) -> Value {
    json!({"version": "1.0", "type": ["firmware"], "artifacts": [{"name": "rootfs", "version": "1.1", "uri": url}]})
}

/// Whether the image's (first) target holds `data`.
pub fn installed(swu: &BuiltSwu, data: &[u8]) -> bool {
    fs::read(&swu.images[0].target).expect("the image's target") == data
}

/// `impl Deref<Target = Fleet>` (and `DerefMut`) for a test's own fixture `$t` that holds the
/// fleet in its field `f`, so that the test uses the fleet's methods on it directly.
#[macro_export]
macro_rules! deref_to_fleet {
    ($t:ty) => {
        impl ::std::ops::Deref for $t {
            type Target = $crate::scenarios::fleet::Fleet;
            fn deref(&self) -> &$crate::scenarios::fleet::Fleet {
                &self.f
            }
        }
        impl ::std::ops::DerefMut for $t {
            fn deref_mut(&mut self) -> &mut $crate::scenarios::fleet::Fleet {
                &mut self.f
            }
        }
    };
}

/// Polls `cond` every 50 ms until it holds; fails naming `what` and `context()` after `timeout`.
pub async fn poll_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: {}", context());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

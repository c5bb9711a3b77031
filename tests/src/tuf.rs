//! TUF repositories and TUF clients for the tests.
//!
//! [`TufRepo`] builds RS-TUF-shaped repositories (consistent snapshots only, succinct hash bins,
//! targets stored as `<dir>/<sha256>.<basename>`) with python-tuf's Metadata API, through
//! `tests/tuf/repo.py` (its documentation lists the operations) run by the venv's python that
//! `scripts/deps` installs. Attacks on a repository are either builder operations (re-signing a
//! role with a lower version, an expiry in the past, a broken root chain) or plain file edits on
//! the served tree (an older file copied over a newer one, padding).
//!
//! [`TufClient`] runs a client with the tuf-conformance CLI on a repository: the agent's
//! `cip-update-agent tuf-client`, or python-tuf's ngclient (`tests/tuf/ngclient.py`), the
//! reference that tells whether a repository or an attack is what the test says it is.
//!
//! [`AttackServer`] serves a tree like nginx, but answers chosen paths with endless data or
//! stalls after the headers (endless data and slow retrieval attacks).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::agent::agent_bin;
use crate::process::GroupChild;
use crate::raw_http::{RawServer, read_head};

/// Environment variable naming the venv with python-tuf (as in `scripts/deps`).
pub const VENV_ENV: &str = "CIP_TUF_VENV";

/// How long a client run may take before the test calls it hung.
pub const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// The venv's python: `$CIP_TUF_VENV/bin/python`, else
/// `$HOME/.cache/cip-update-agent/venv/bin/python`.
pub fn python() -> anyhow::Result<PathBuf> {
    let venv = match std::env::var_os(VENV_ENV) {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/cip-update-agent/venv"),
    };
    let python = venv.join("bin/python");
    if !python.is_file() {
        bail!(
            "{} does not exist: run scripts/deps (it installs python-tuf there), or set {VENV_ENV}",
            python.display()
        );
    }
    Ok(python)
}

/// A file of `tests/tuf/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tuf").join(name)
}

/// A repository in its own temporary directory: `www/` is what a server serves
/// (`www/metadata`, `www/targets`), `work/` the builder's keys and state.
pub struct TufRepo {
    dir: TempDir,
    python: PathBuf,
}

impl TufRepo {
    /// A repository made by the `init` operation `init` (see `repo.py`), e.g.
    /// `json!({"bins_bits": 8})`.
    pub fn new(init: Value) -> anyhow::Result<TufRepo> {
        let repo = TufRepo {
            dir: tempfile::Builder::new().prefix("tuf-repo-").tempdir()?,
            python: python()?,
        };
        let mut op = init;
        op["op"] = json!("init");
        repo.ops(json!([op]))?;
        Ok(repo)
    }

    /// An RS-TUF-shaped repository: succinct delegation to `2^bits` bins, ed25519 keys.
    pub fn rs_tuf(bits: u8) -> anyhow::Result<TufRepo> {
        TufRepo::new(json!({"bins_bits": bits}))
    }

    /// Applies a JSON list of operations; returns their results.
    pub fn ops(&self, ops: Value) -> anyhow::Result<Vec<Value>> {
        let mut child = Command::new(&self.python)
            .arg(script("repo.py"))
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running tests/tuf/repo.py")?;
        child
            .stdin
            .take()
            .context("repo.py's stdin")?
            .write_all(ops.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "repo.py failed on {ops}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("repo.py's answer")
    }

    /// One operation; its result.
    pub fn op(&self, op: Value) -> anyhow::Result<Value> {
        let mut r = self.ops(json!([op]))?;
        r.pop().context("no result")
    }

    /// Adds a target served with `data`, listed with `custom`, then publishes.
    pub fn add_target(&self, path: &str, data: &[u8], custom: Value) -> anyhow::Result<Value> {
        let r = self.ops(json!([
            {"op": "add_target", "path": path, "data_hex": hex::encode(data), "custom": custom},
            {"op": "publish"},
        ]))?;
        Ok(r[0].clone())
    }

    /// Publishes new versions of what changed, then snapshot and timestamp.
    pub fn publish(&self) -> anyhow::Result<()> {
        self.op(json!({"op": "publish"}))?;
        Ok(())
    }

    /// The current version of each role.
    pub fn versions(&self) -> anyhow::Result<HashMap<String, u64>> {
        let info = self.op(json!({"op": "info"}))?;
        serde_json::from_value(info["roles"].clone()).context("versions")
    }

    /// The version of `role`.
    pub fn version(&self, role: &str) -> anyhow::Result<u64> {
        self.versions()?
            .get(role)
            .copied()
            .with_context(|| format!("no role {role}"))
    }

    /// The served tree (serve this directory: metadata at `/metadata`, targets at `/targets`).
    pub fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    /// A served metadata file, e.g. `3.snapshot.json` or `timestamp.json`.
    pub fn metadata(&self, name: &str) -> PathBuf {
        self.www().join("metadata").join(name)
    }

    /// The served bytes of a metadata file.
    pub fn metadata_bytes(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let p = self.metadata(name);
        fs::read(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// The served metadata file of the current version of `role` (`N.role.json`, or
    /// `timestamp.json`).
    pub fn current(&self, role: &str) -> anyhow::Result<PathBuf> {
        if role == "timestamp" {
            return Ok(self.metadata("timestamp.json"));
        }
        Ok(self.metadata(&format!("{}.{role}.json", self.version(role)?)))
    }

    /// The root a device ships (version 1).
    pub fn initial_root(&self) -> PathBuf {
        self.metadata("1.root.json")
    }

    /// The served file of a target (`<dir>/<sha256>.<basename>` under `www/targets`).
    pub fn target_file(&self, path: &str) -> anyhow::Result<PathBuf> {
        let info = self.op(json!({"op": "info"}))?;
        let stored = info["targets"][path]
            .as_str()
            .with_context(|| format!("no target {path}"))?;
        Ok(self.www().join("targets").join(stored))
    }
}

/// Which client a [`TufClient`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// `cip-update-agent tuf-client`.
    Agent,
    /// python-tuf's ngclient (`tests/tuf/ngclient.py`).
    Reference,
}

/// What a client run did.
#[derive(Debug)]
pub struct Run {
    /// The exit code; `None` if it was killed after [`CLIENT_LIMIT`] (it hung).
    pub code: Option<i32>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Asserts exit 0.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "expected success; stderr:\n{}",
            self.stderr
        );
    }

    /// Asserts exit 1, and (case-insensitively) that stderr names one of `words`.
    #[track_caller]
    pub fn assert_refused(&self, words: &[&str]) {
        eprintln!("refused as expected? stderr: {}", self.stderr.trim_end());
        assert_eq!(
            self.code,
            Some(1),
            "expected exit 1; stderr:\n{}",
            self.stderr
        );
        let err = self.stderr.to_lowercase();
        assert!(
            words.iter().any(|w| err.contains(&w.to_lowercase())),
            "the error should name one of {words:?}; stderr:\n{}",
            self.stderr
        );
    }
}

/// A client with its own metadata and target directories, initialised with a trusted root.
pub struct TufClient {
    kind: ClientKind,
    dir: TempDir,
    extra: Vec<String>,
}

impl TufClient {
    /// A client of `kind` that trusts `root` (runs `init`; fails if that fails).
    pub fn new(kind: ClientKind, root: &Path) -> anyhow::Result<TufClient> {
        let client = TufClient {
            kind,
            dir: tempfile::Builder::new().prefix("tuf-client-").tempdir()?,
            extra: Vec::new(),
        };
        fs::create_dir(client.targets_dir())?;
        let mut c = client.command()?;
        c.arg("init").arg(root);
        let run = client.run(c)?;
        if !run.ok() {
            bail!("init failed: {}", run.stderr);
        }
        Ok(client)
    }

    /// Options put before the command word on every later run (the agent's timeouts).
    pub fn options(mut self, args: &[&str]) -> TufClient {
        self.extra = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn kind(&self) -> ClientKind {
        self.kind
    }

    /// The metadata directory (`--metadata-dir`).
    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.path().join("metadata")
    }

    /// The target directory (`--target-dir`).
    pub fn targets_dir(&self) -> PathBuf {
        self.dir.path().join("targets")
    }

    /// The trusted metadata of `role` (`DIR/<role>.json`), if any.
    pub fn trusted(&self, role: &str) -> Option<Vec<u8>> {
        fs::read(self.metadata_dir().join(format!("{role}.json"))).ok()
    }

    /// The `version` of the trusted metadata of `role`, if any.
    pub fn trusted_version(&self, role: &str) -> Option<u64> {
        let v: Value = serde_json::from_slice(&self.trusted(role)?).ok()?;
        v["signed"]["version"].as_u64()
    }

    /// The downloaded file of target `path` (stored as its percent-encoded path), if any.
    pub fn target(&self, path: &str) -> Option<Vec<u8>> {
        fs::read(self.targets_dir().join(path.replace('/', "%2F"))).ok()
    }

    /// The files in the target directory.
    pub fn target_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.targets_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// `refresh` against `metadata_url`.
    pub fn refresh(&self, metadata_url: &str) -> anyhow::Result<Run> {
        let mut c = self.command()?;
        c.args(&self.extra)
            .arg("--metadata-url")
            .arg(metadata_url)
            .arg("refresh");
        self.run(c)
    }

    /// `download` of `names`, in this order.
    pub fn download(
        &self,
        metadata_url: &str,
        targets_url: &str,
        names: &[&str],
    ) -> anyhow::Result<Run> {
        let mut c = self.command()?;
        c.args(&self.extra).arg("--metadata-url").arg(metadata_url);
        for n in names {
            c.arg("--target-name").arg(n);
        }
        c.arg("--target-base-url")
            .arg(targets_url)
            .arg("--target-dir")
            .arg(self.targets_dir())
            .arg("download");
        self.run(c)
    }

    /// The command up to `--metadata-dir DIR`.
    fn command(&self) -> anyhow::Result<Command> {
        let mut c = match self.kind {
            ClientKind::Agent => {
                let mut c = Command::new(agent_bin()?);
                c.arg("tuf-client");
                c
            }
            ClientKind::Reference => {
                let mut c = Command::new(python()?);
                c.arg(script("ngclient.py"));
                c
            }
        };
        c.arg("--metadata-dir").arg(self.metadata_dir());
        Ok(c)
    }

    fn run(&self, mut c: Command) -> anyhow::Result<Run> {
        let err_path = self.dir.path().join("stderr");
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err_path)?);
        let start = Instant::now();
        let mut child = GroupChild::spawn(c, "TUF client")?;
        let status = child.wait_timeout(CLIENT_LIMIT)?;
        let elapsed = start.elapsed();
        let stderr = String::from_utf8_lossy(&fs::read(&err_path)?).into_owned();
        Ok(Run {
            code: status.and_then(|s| s.code()),
            stderr,
            elapsed,
        })
    }
}

/// How [`AttackServer`] answers a path.
#[derive(Clone, Copy, Debug)]
pub enum Attack {
    /// The file, then spaces without end (no Content-Length; until the client hangs up).
    Endless,
    /// The status line and headers of the file, then nothing, the connection held open.
    Stall,
    /// The file one byte every 500 ms: never silent long enough for a read timeout.
    Dribble,
}

/// A static HTTP server of a directory on 127.0.0.1 that attacks chosen paths. GET only, one
/// request per connection. Requests are logged (paths) for the tests to check.
pub struct AttackServer {
    server: RawServer,
    log: Arc<Mutex<Vec<String>>>,
}

impl AttackServer {
    /// Serves `root`; requests for a path in `attacks` (e.g. `/metadata/timestamp.json`) get
    /// that attack.
    pub fn start(root: &Path, attacks: &[(&str, Attack)]) -> anyhow::Result<AttackServer> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let attacks: HashMap<String, Attack> =
            attacks.iter().map(|(p, a)| (p.to_string(), *a)).collect();
        let root = root.to_path_buf();
        let logged = log.clone();
        let server = RawServer::start(move |s, stopped| {
            let _ = serve(s, &root, &attacks, stopped, &logged);
        })?;
        Ok(AttackServer { server, log })
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// The paths requested so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

fn serve(
    mut s: TcpStream,
    root: &Path,
    attacks: &HashMap<String, Attack>,
    stop: &AtomicBool,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let Some(req) = read_head(&mut s)? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&req);
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    if let Ok(mut l) = log.lock() {
        l.push(path.clone());
    }
    let file = root.join(path.trim_start_matches('/'));
    let data = if path.contains("..") {
        None
    } else {
        fs::read(&file).ok()
    };
    let Some(data) = data else {
        return s.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    match attacks.get(&path) {
        None => {
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            )?;
            s.write_all(&data)
        }
        Some(Attack::Endless) => {
            s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            s.write_all(&data)?;
            let spaces = [b' '; 64 * 1024];
            // Until the client hangs up (the write fails) or the test ends; bounded anyway
            // (16 GiB) so that a client without any limit cannot keep this thread forever.
            for _ in 0..(1u64 << 18) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                s.write_all(&spaces)?;
            }
            Ok(())
        }
        Some(Attack::Dribble) => {
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            )?;
            for byte in data.chunks(1) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                s.write_all(byte)?;
                s.flush()?;
                thread::sleep(Duration::from_millis(500));
            }
            Ok(())
        }
        Some(Attack::Stall) => {
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            )?;
            s.flush()?;
            // Hold the connection, sending nothing, until the client gives up or the test ends.
            crate::raw_http::hold(&mut s, stop, CLIENT_LIMIT + Duration::from_secs(10))
        }
    }
}

/// The image of [`one_image`]'s repository: its path and content.
pub const IMAGE: &str = "qemu-amd64/cip-core-1.5.swu";
pub const IMAGE_DATA: &[u8] = b"the 1.5 image";

/// An RS-TUF-shaped repository (16 bins) with one image ([`IMAGE`]), served; a client of `kind`
/// trusting its root. The common start of the TUF attack and rule tests (`tuf_attacks.rs`,
/// `tuf_rules.rs`), which then tamper with the repository.
pub fn one_image(kind: ClientKind) -> (Served, TufClient) {
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

/// The (hash bin) role of `s`'s repository that lists `path`.
pub fn bin_of(s: &Served, path: &str) -> String {
    let r = s.repo.op(json!({"op": "bin_for", "path": path})).unwrap();
    r["role"].as_str().unwrap().to_string()
}

/// A repository served by nginx: metadata at `/metadata`, targets at `/targets`.
pub struct Served {
    pub repo: TufRepo,
    pub nginx: crate::nginx::Nginx,
}

impl Served {
    pub fn new(repo: TufRepo) -> anyhow::Result<Served> {
        let nginx = crate::nginx::Nginx::start(&repo.www())?;
        Ok(Served { repo, nginx })
    }

    pub fn metadata_url(&self) -> String {
        self.nginx.url("metadata")
    }

    pub fn targets_url(&self) -> String {
        self.nginx.url("targets")
    }

    /// A client of `kind` trusting the repository's first root.
    pub fn client(&self, kind: ClientKind) -> anyhow::Result<TufClient> {
        TufClient::new(kind, &self.repo.initial_root())
    }

    /// `client` refreshes from this repository.
    pub fn refresh(&self, client: &TufClient) -> anyhow::Result<Run> {
        client.refresh(&self.metadata_url())
    }

    /// `client` downloads `names` from this repository.
    pub fn download(&self, client: &TufClient, names: &[&str]) -> anyhow::Result<Run> {
        client.download(&self.metadata_url(), &self.targets_url(), names)
    }

    /// The paths requested from nginx so far (GET requests with status 200 or 404 alike).
    pub fn requests(&self) -> Vec<String> {
        self.nginx
            .access_log()
            .lines()
            .filter_map(|l| l.split('"').nth(1))
            .filter_map(|r| r.split_whitespace().nth(1))
            .map(str::to_string)
            .collect()
    }
}

/// Runs each named scenario (`fn(ClientKind)`) as two tests: `agent::NAME` with
/// `cip-update-agent tuf-client` and `reference::NAME` with python-tuf's ngclient, so that
/// every attack is shown to be one that the reference client refuses too, and every positive
/// case to be a repository it accepts.
#[macro_export]
macro_rules! tuf_tests {
    ($($name:ident),* $(,)?) => {
        mod agent {
            $(#[test] fn $name() { super::$name($crate::tuf::ClientKind::Agent) })*
        }
        mod reference {
            $(#[test] fn $name() { super::$name($crate::tuf::ClientKind::Reference) })*
        }
    };
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::Ipv4Addr;

    use super::*;

    /// A raw GET of `path`: the bytes read until the server closes, at most `max`, or until
    /// nothing came for 1 s.
    fn get(server: &AttackServer, path: &str, max: usize) -> Vec<u8> {
        let mut s =
            TcpStream::connect((Ipv4Addr::LOCALHOST, server.server.port())).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
        s.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while out.len() < max {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    }

    #[test]
    fn attack_server_serves_attacks_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("plain"), b"plain body").expect("write");
        fs::write(dir.path().join("endless"), b"start").expect("write");
        fs::write(dir.path().join("stall"), b"never sent").expect("write");
        let server = AttackServer::start(
            dir.path(),
            &[("/endless", Attack::Endless), ("/stall", Attack::Stall)],
        )
        .expect("start");
        let plain = get(&server, "/plain", 1 << 20);
        assert!(plain.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(plain.ends_with(b"\r\n\r\nplain body"));
        assert!(get(&server, "/missing", 1 << 20).starts_with(b"HTTP/1.1 404"));
        let endless = get(&server, "/endless", 1 << 20);
        assert!(endless.len() >= 1 << 20, "{}", endless.len());
        let stalled = get(&server, "/stall", 1 << 20);
        assert!(stalled.starts_with(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"));
        assert!(stalled.ends_with(b"\r\n\r\n"), "{stalled:?}");
        assert_eq!(
            server.requests(),
            vec!["/plain", "/missing", "/endless", "/stall"]
        );
    }
}

//! A throwaway mosquitto broker on 127.0.0.1, and `mosquitto_sub` subscribers to read what
//! reached it.
//!
//! The agent's MQTT telemetry is checked against the real broker devices talk to, and read back
//! by another client (`mosquitto_sub`), so that the wire format (topics, retain flags, payloads)
//! is what a third party sees, not what the agent believes it sent.
//!
//! Each instance has its own configuration, log and (optional) persistence file in its own
//! temporary directory. When run as root, mosquitto would switch to the `mosquitto` user, who
//! cannot read the tests' 0700 directories: the configuration then says `user root` (only
//! meaningful for a root process). [`Mosquitto::stop`] and [`Mosquitto::restart`] keep the port,
//! so a client sees "the same broker" go away and come back.
//!
//! Persistence is off by default. [`MosquittoOptions::persistence`] turns it on for tests that
//! restart the broker under a persistent subscriber: the subscriber's session (with the
//! messages queued for it) then survives the restart, so what the subscriber receives does not
//! depend on whether it or the publisher reconnects first.
//!
//! [`MosquittoOptions::websockets`] adds an MQTT-over-WebSocket listener (what a browser page
//! such as kiosk/ connects to) on another free loopback port.

use std::fs;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::daemons::process::{DEFAULT_GRACE, GroupChild};

/// How long a start waits for the ports to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many port choices [`Mosquitto::start`] tries when a port is taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// What to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MosquittoOptions {
    /// Also a TLS listener requiring a client certificate (see [`TlsFiles`]).
    pub tls: bool,
    /// Keep sessions and retained messages across [`Mosquitto::restart`].
    pub persistence: bool,
    /// Also a WebSocket listener (`protocol websockets`), see [`Mosquitto::ws_url`].
    pub websockets: bool,
}

/// A test PKI made with `openssl`: a CA, a server certificate for `127.0.0.1`/`localhost` and a
/// client certificate, all signed by the CA (EC P-256, PEM, unencrypted PKCS#8 keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Generates the files in `dir` (which must exist).
    pub fn generate(dir: &Path) -> anyhow::Result<TlsFiles> {
        let p = |n: &str| dir.join(n);
        let files = TlsFiles {
            ca_cert: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
        };
        let ca_key = p("ca.key");
        openssl(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout"])
                .arg(&ca_key)
                .arg("-out")
                .arg(&files.ca_cert)
                .args(["-subj", "/CN=mqtt-test-ca", "-days", "2"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        )?;
        for (name, cert, key, ext, serial) in [
            (
                "localhost",
                &files.server_cert,
                &files.server_key,
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
                "1",
            ),
            (
                "mqtt-test-client",
                &files.client_cert,
                &files.client_key,
                "extendedKeyUsage=clientAuth\n",
                "2",
            ),
        ] {
            let csr = p(&format!("{name}.csr"));
            let extfile = p(&format!("{name}.ext"));
            fs::write(
                &extfile,
                format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
            )?;
            openssl(
                Command::new("openssl")
                    .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                    .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout"])
                    .arg(key)
                    .arg("-out")
                    .arg(&csr)
                    .args(["-subj", &format!("/CN={name}")]),
            )?;
            openssl(
                Command::new("openssl")
                    .args(["x509", "-req", "-in"])
                    .arg(&csr)
                    .arg("-CA")
                    .arg(&files.ca_cert)
                    .arg("-CAkey")
                    .arg(&ca_key)
                    .args(["-set_serial", serial, "-days", "2", "-extfile"])
                    .arg(&extfile)
                    .arg("-out")
                    .arg(cert),
            )?;
        }
        Ok(files)
    }
}

fn openssl(cmd: &mut Command) -> anyhow::Result<()> {
    let output = cmd
        .output()
        .context("running openssl (is openssl installed?)")?;
    ensure!(
        output.status.success(),
        "{cmd:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A mosquitto broker; dropping it stops it and removes its directory.
pub struct Mosquitto {
    // Field order matters: the process dies before its directory goes.
    child: Option<GroupChild>,
    dir: TempDir,
    port: u16,
    tls_port: Option<u16>,
    ws_port: Option<u16>,
    tls: Option<TlsFiles>,
}

impl std::fmt::Debug for Mosquitto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mosquitto")
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .field("ws_port", &self.ws_port)
            .field("running", &self.child.is_some())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Mosquitto {
    /// A plain broker on a free port.
    pub fn start() -> anyhow::Result<Mosquitto> {
        Self::start_with(&MosquittoOptions::default())
    }

    /// A broker as `opts` say, on free ports.
    pub fn start_with(opts: &MosquittoOptions) -> anyhow::Result<Mosquitto> {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = crate::free_port()?;
            let (tls_port, ws_port) = extra_ports(opts)?;
            let mut m = Self::prepare(opts, port, tls_port, ws_port)?;
            match m.launch()? {
                Ok(()) => return Ok(m),
                Err(log) if log.contains("Address already in use") => last_error = log,
                Err(log) => bail!("mosquitto did not start on port {port}; log:\n{log}"),
            }
        }
        bail!(
            "mosquitto could not bind free ports in {PORT_ATTEMPTS} attempts; last log:\n{last_error}"
        )
    }

    /// A broker on `port` exactly (e.g. one a client was already told about).
    pub fn start_on(port: u16, opts: &MosquittoOptions) -> anyhow::Result<Mosquitto> {
        let (tls_port, ws_port) = extra_ports(opts)?;
        let mut m = Self::prepare(opts, port, tls_port, ws_port)?;
        if let Err(log) = m.launch()? {
            bail!("mosquitto did not start on port {port}; log:\n{log}");
        }
        Ok(m)
    }

    /// Writes the directory and the configuration, without starting.
    fn prepare(
        opts: &MosquittoOptions,
        port: u16,
        tls_port: Option<u16>,
        ws_port: Option<u16>,
    ) -> anyhow::Result<Mosquitto> {
        let dir = tempfile::Builder::new()
            .prefix("mosquitto-")
            .tempdir()
            .context("creating mosquitto's directory")?;
        let tls = if opts.tls {
            Some(TlsFiles::generate(dir.path())?)
        } else {
            None
        };
        let conf = config(
            dir.path(),
            port,
            tls_port.zip(tls.as_ref()),
            ws_port,
            opts.persistence,
        );
        let path = dir.path().join("mosquitto.conf");
        fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
        Ok(Mosquitto {
            child: None,
            dir,
            port,
            tls_port,
            ws_port,
            tls,
        })
    }

    /// Spawns mosquitto and waits until its ports accept connections; `Err(log)` if it exited
    /// or did not listen in time.
    fn launch(&mut self) -> anyhow::Result<Result<(), String>> {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .context("creating mosquitto's stderr log")?;
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = GroupChild::spawn(cmd, "mosquitto")?;
        let ports: Vec<u16> = std::iter::once(self.port)
            .chain(self.tls_port)
            .chain(self.ws_port)
            .collect();
        let mut exited = false;
        let listening = crate::wait_for(
            || {
                if !matches!(child.try_wait(), Ok(None)) {
                    exited = true;
                    return true;
                }
                ports
                    .iter()
                    .all(|p| TcpStream::connect((Ipv4Addr::LOCALHOST, *p)).is_ok())
            },
            START_TIMEOUT,
        );
        if exited || !listening {
            drop(child);
            let log = self.log();
            return Ok(Err(if exited {
                log
            } else {
                format!("(not listening after {START_TIMEOUT:?})\n{log}")
            }));
        }
        self.child = Some(child);
        Ok(Ok(()))
    }

    /// Stops the broker (SIGTERM: clients see their connections closed; with persistence, the
    /// database is saved). The ports are kept for [`Mosquitto::restart`].
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill_group(DEFAULT_GRACE)?;
        }
        Ok(())
    }

    /// Freezes the broker (SIGSTOP), like a hung host: connections stay open and the kernel
    /// still accepts bytes, but no packet is answered. [`Mosquitto::kill`] ends it.
    pub fn freeze(&self) -> anyhow::Result<()> {
        match &self.child {
            Some(child) => child.signal_group(Signal::SIGSTOP),
            None => bail!("mosquitto is not running"),
        }
    }

    /// Kills the broker at once (SIGKILL), like a crash: with persistence, only what
    /// [`Mosquitto::save`] wrote survives. The ports are kept for [`Mosquitto::restart`].
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.signal_group(Signal::SIGKILL)?;
            child.kill_group(Duration::from_secs(1))?;
        }
        Ok(())
    }

    /// Makes the broker write its persistence database now (SIGUSR1) and waits until it did.
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(child) = &self.child else {
            bail!("mosquitto is not running");
        };
        let saves = |log: &str| log.matches("Saving in-memory database").count();
        let before = saves(&self.log());
        child.signal_group(Signal::SIGUSR1)?;
        ensure!(
            crate::wait_for(|| saves(&self.log()) > before, START_TIMEOUT),
            "mosquitto did not save its database (is persistence on?); log:\n{}",
            self.log()
        );
        Ok(())
    }

    /// Starts the broker again on the same ports (stopping it first if it runs).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        // The old listening socket is closed; a port can still be taken by someone else
        // meanwhile, in which case waiting a little does not help either: report it.
        match self.launch()? {
            Ok(()) => Ok(()),
            Err(log) => bail!(
                "mosquitto did not restart on port {}; log:\n{log}",
                self.port
            ),
        }
    }

    /// Whether the broker runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The plain listener's port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://127.0.0.1:<tls port>` if there is a TLS listener.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("mqtts://127.0.0.1:{p}"))
    }

    /// `ws://127.0.0.1:<websocket port>` if there is a WebSocket listener.
    pub fn ws_url(&self) -> Option<String> {
        self.ws_port.map(|p| format!("ws://127.0.0.1:{p}"))
    }

    /// The certificates if there is a TLS listener.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The broker's log so far (every packet: `log_type all`), across restarts.
    pub fn log(&self) -> String {
        let mut s = read_lossy(&self.dir.path().join("mosquitto.log"));
        s.push_str(&read_lossy(&self.dir.path().join("stderr.log")));
        s
    }

    /// Starts `mosquitto_sub` on the plain listener and waits until the broker acknowledged its
    /// subscription, so that nothing published afterwards can be missed; see [`Subscriber`].
    pub fn subscribe(&self, filter: &str) -> anyhow::Result<Subscriber> {
        let id = format!("sub-{}-{}", std::process::id(), next_id());
        self.start_subscriber(filter, &id, false)
    }

    /// What a subscriber connecting now reads on `topic`: its retained message, by a fresh
    /// `mosquitto_sub -C 1 --retained-only` (`None` when there is none within 10 s).
    pub fn retained(&self, topic: &str) -> anyhow::Result<Option<String>> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-t",
                topic,
                "-C",
                "1",
                "-W",
                "10",
                "--retained-only",
                "-F",
                "%p",
            ])
            .stdin(Stdio::null())
            .output()
            .context("running mosquitto_sub")?;
        // (`-W` ends it with status 27 when nothing came.)
        let text = String::from_utf8(out.stdout).context("mosquitto_sub's output")?;
        Ok(Some(text.trim_end_matches('\n').to_owned()).filter(|t| !t.is_empty()))
    }

    /// Like [`Mosquitto::subscribe`], with a persistent session (`-c -i <id>`, QoS 1): messages
    /// published while it is disconnected (e.g. during a broker restart) are queued for it.
    pub fn subscribe_persistent(&self, filter: &str, id: &str) -> anyhow::Result<Subscriber> {
        self.start_subscriber(filter, id, true)
    }

    fn start_subscriber(
        &self,
        filter: &str,
        id: &str,
        persistent: bool,
    ) -> anyhow::Result<Subscriber> {
        let mut sub = Subscriber::start(self.port, filter, id, persistent)?;
        let suback = format!("Sending SUBACK to {id}\n");
        let subscribed = crate::wait_for(
            || self.log().contains(&suback) || !matches!(sub.child.try_wait(), Ok(None)),
            START_TIMEOUT,
        );
        ensure!(
            subscribed && self.log().contains(&suback),
            "mosquitto_sub {id} did not subscribe to {filter}; stderr: {}\nbroker log:\n{}",
            read_lossy(&sub.dir.path().join("err")),
            self.log()
        );
        Ok(sub)
    }
}

/// Free ports for the TLS and WebSocket listeners `opts` asks for.
fn extra_ports(opts: &MosquittoOptions) -> anyhow::Result<(Option<u16>, Option<u16>)> {
    let port_if = |wanted: bool| wanted.then(crate::free_port).transpose();
    Ok((port_if(opts.tls)?, port_if(opts.websockets)?))
}

/// A number unique in this process, for client ids.
fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The configuration of an instance in `dir`.
fn config(
    dir: &Path,
    port: u16,
    tls: Option<(u16, &TlsFiles)>,
    ws_port: Option<u16>,
    persistence: bool,
) -> String {
    let user = if nix::unistd::geteuid().is_root() {
        "user root\n"
    } else {
        ""
    };
    let d = dir.display();
    let mut c = format!(
        "{user}per_listener_settings false
allow_anonymous true
log_dest file {d}/mosquitto.log
log_type all
log_timestamp_format %H:%M:%S
connection_messages true
persistence {persistence}
persistence_location {d}/
persistence_file mosquitto.db
autosave_interval 0
listener {port} 127.0.0.1
"
    );
    if let Some((tls_port, f)) = tls {
        c.push_str(&format!(
            "listener {tls_port} 127.0.0.1
cafile {}
certfile {}
keyfile {}
require_certificate true
",
            f.ca_cert.display(),
            f.server_cert.display(),
            f.server_key.display(),
        ));
    }
    if let Some(ws_port) = ws_port {
        c.push_str(&format!(
            "listener {ws_port} 127.0.0.1\nprotocol websockets\n"
        ));
    }
    c
}

/// A message as `mosquitto_sub -v -F '%r %t %p'` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The retain flag as delivered: set for a retained message sent on subscription, clear for
    /// a live one (MQTT 3.1.1 clears it when forwarding to existing subscribers).
    pub retained: bool,
    pub topic: String,
    pub payload: String,
}

impl Message {
    /// The payload as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.payload).ok()
    }
}

/// A running `mosquitto_sub` whose output goes to a file; dropping it stops it.
///
/// It reconnects by itself when the broker goes away and comes back.
#[derive(Debug)]
pub struct Subscriber {
    child: GroupChild,
    dir: TempDir,
}

impl Subscriber {
    fn start(port: u16, filter: &str, id: &str, persistent: bool) -> anyhow::Result<Subscriber> {
        let dir = tempfile::Builder::new()
            .prefix("mosquitto-sub-")
            .tempdir()
            .context("creating mosquitto_sub's directory")?;
        let out = fs::File::create(dir.path().join("out"))?;
        let err = fs::File::create(dir.path().join("err"))?;
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", filter, "-q", "1", "-F", "%r %t %p", "-i", id]);
        if persistent {
            cmd.arg("-c");
        }
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = GroupChild::spawn(cmd, "mosquitto_sub")?;
        Ok(Subscriber { child, dir })
    }

    /// Everything received so far, in order (a partly written last line is left out).
    pub fn messages(&self) -> Vec<Message> {
        let out = read_lossy(&self.dir.path().join("out"));
        let complete = out.rfind('\n').map_or("", |i| &out[..i]);
        complete
            .lines()
            .filter_map(|line| {
                let (r, rest) = line.split_once(' ')?;
                let (topic, payload) = rest.split_once(' ').unwrap_or((rest, ""));
                Some(Message {
                    retained: r == "1",
                    topic: topic.to_owned(),
                    payload: payload.to_owned(),
                })
            })
            .collect()
    }

    /// Waits until `cond` holds for the messages received, and returns them; on timeout, an
    /// error showing what was received.
    pub fn wait_for(
        &mut self,
        mut cond: impl FnMut(&[Message]) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Message>> {
        let mut exited = false;
        let ok = crate::wait_for(
            || {
                if cond(&self.messages()) {
                    return true;
                }
                exited = !matches!(self.child.try_wait(), Ok(None));
                exited
            },
            timeout,
        );
        let msgs = self.messages();
        if ok && !exited {
            return Ok(msgs);
        }
        bail!(
            "mosquitto_sub {}; received:\n{}\nstderr: {}",
            if exited { "exited" } else { "timed out" },
            msgs.iter()
                .map(|m| format!("  {} {} {}", u8::from(m.retained), m.topic, m.payload))
                .collect::<Vec<_>>()
                .join("\n"),
            read_lossy(&self.dir.path().join("err"))
        )
    }
}

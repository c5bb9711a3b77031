//! A throwaway nginx serving a directory over HTTP on 127.0.0.1.
//!
//! The agent downloads `.swu` files with Range requests (to resume, and to
//! fetch parts), so tests need a real server with full Range support:
//! nginx serves single and multi-range requests (`multipart/byteranges`)
//! for static files by default; the configuration sets `max_ranges` to no
//! limit explicitly so that a distribution default cannot change that.
//!
//! Everything nginx writes (pid file, logs, temp directories) stays in the
//! instance's own temporary directory, so it runs unprivileged and in
//! parallel with other instances. When run as root, nginx's workers would
//! switch to `nobody`, who cannot read the tests' 0700 temporary
//! directories: the configuration then says `user root;` (the directive is
//! only allowed, and only meaningful, for a root master).

use std::fs;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::process::GroupChild;

/// How long [`Nginx::start`] waits for the port to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports [`Nginx::start`] tries when a port is taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A running nginx; dropping it stops it and removes its directory (not the
/// document root).
pub struct Nginx {
    // Field order matters: the process dies before its directory goes.
    child: GroupChild,
    dir: TempDir,
    port: u16,
    docroot: PathBuf,
    /// Serves HTTPS instead of HTTP.
    tls: bool,
}

impl std::fmt::Debug for Nginx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nginx")
            .field("port", &self.port)
            .field("docroot", &self.docroot)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Nginx {
    /// Serves `docroot` at `http://127.0.0.1:<port>/` and waits until the
    /// port accepts connections.
    pub fn start(docroot: &Path) -> anyhow::Result<Nginx> {
        Self::start_with(docroot, None)
    }

    /// Like [`Nginx::start`], but HTTPS with `cert` and `key` (PEM files): `https://127.0.0.1:<port>/`.
    pub fn start_tls(docroot: &Path, cert: &Path, key: &Path) -> anyhow::Result<Nginx> {
        Self::start_with(docroot, Some((cert, key)))
    }

    fn start_with(docroot: &Path, tls: Option<(&Path, &Path)>) -> anyhow::Result<Nginx> {
        let docroot = fs::canonicalize(docroot)
            .with_context(|| format!("document root {}", docroot.display()))?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = crate::free_port()?;
            match Self::start_on(&docroot, port, tls)? {
                Ok(nginx) => return Ok(nginx),
                // Someone took the port between free_port() and nginx's bind.
                Err(log) if log.contains("Address already in use") => last_error = Some(log),
                Err(log) => bail!("nginx did not start on port {port}; error log:\n{log}"),
            }
        }
        bail!(
            "nginx could not bind a free port in {PORT_ATTEMPTS} attempts; last error log:\n{}",
            last_error.unwrap_or_default()
        )
    }

    /// One attempt on `port`: the running nginx, or its error log if it
    /// exited or did not listen in time.
    fn start_on(
        docroot: &Path,
        port: u16,
        tls: Option<(&Path, &Path)>,
    ) -> anyhow::Result<Result<Nginx, String>> {
        let dir = tempfile::Builder::new()
            .prefix("nginx-")
            .tempdir()
            .context("creating nginx's directory")?;
        let conf = dir.path().join("nginx.conf");
        fs::write(&conf, config(dir.path(), docroot, port, tls))
            .with_context(|| format!("writing {}", conf.display()))?;
        let error_log = dir.path().join("error.log");
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(dir.path())
            // -e: the log for errors before the configuration is read (the
            // default, /var/log/nginx/error.log, is not writable unprivileged).
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = GroupChild::spawn(cmd, "nginx")?;
        let mut nginx = Nginx {
            child,
            dir,
            port,
            docroot: docroot.to_path_buf(),
            tls: tls.is_some(),
        };
        let mut exited = false;
        let listening = crate::wait_for(
            || {
                if !matches!(nginx.child.try_wait(), Ok(None)) {
                    exited = true;
                    return true;
                }
                TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
            },
            START_TIMEOUT,
        );
        if exited || !listening {
            let log = nginx.error_log();
            return Ok(Err(if exited {
                log
            } else {
                format!("(not listening after {START_TIMEOUT:?})\n{log}")
            }));
        }
        Ok(Ok(nginx))
    }

    /// The port nginx listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>/<path>` (`https` with TLS; a leading `/` in `path` is optional).
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://127.0.0.1:{}/{}",
            if self.tls { "https" } else { "http" },
            self.port,
            path.strip_prefix('/').unwrap_or(path)
        )
    }

    /// The directory served.
    pub fn docroot(&self) -> &Path {
        &self.docroot
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        read_lossy(&self.dir.path().join("error.log"))
    }

    /// nginx's access log so far (one line per request, with the Range
    /// header, status and bytes sent: see [`config`]).
    pub fn access_log(&self) -> String {
        read_lossy(&self.dir.path().join("access.log"))
    }
}

fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The configuration of an instance in `dir` serving `docroot` on `port` (HTTPS with `tls`).
fn config(dir: &Path, docroot: &Path, port: u16, tls: Option<(&Path, &Path)>) -> String {
    let listen = match tls {
        None => format!("listen 127.0.0.1:{port};"),
        Some((cert, key)) => format!(
            "listen 127.0.0.1:{port} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};",
            cert.display(),
            key.display()
        ),
    };
    let user = if nix::unistd::geteuid().is_root() {
        "user root;\n"
    } else {
        ""
    };
    let d = dir.display();
    format!(
        r#"{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 64;
}}
http {{
    default_type application/octet-stream;
    log_format ranges '$remote_addr "$request" range="$http_range" $status $body_bytes_sent';
    access_log {d}/access.log ranges;
    client_body_temp_path {d}/client_body;
{temp_paths}    sendfile on;
    keepalive_timeout 10;
    server {{
        {listen}
        server_name localhost;
        root {root};
        max_ranges 1000000;
    }}
}}
"#,
        root = docroot.display(),
        temp_paths = module_temp_paths(dir),
    )
}

/// The `*_temp_path` directives of the modules this nginx was built with.
///
/// Every built-in module with a temp path creates its directory at startup
/// (by default under /var/lib/nginx, not writable unprivileged), so each
/// must be moved into `dir`; but naming a module that was left out of the
/// build (`--without-http_<module>_module`) is a configuration error.
fn module_temp_paths(dir: &Path) -> String {
    let configure = Command::new("nginx")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    ["proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .filter(|m| !configure.contains(&format!("--without-http_{m}_module")))
        .map(|m| format!("    {m}_temp_path {}/{m};\n", dir.display()))
        .collect()
}

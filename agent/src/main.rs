//! `cip-update-agent`: the command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use cip_onboarding::signals::interrupted;
use cip_swupdate::client::{ClientError, InstallOutcome};
use cip_swupdate::install::{self, InstallError, Observer};
use cip_swupdate::{InstallRequest, RunType, SocketPaths, Swupdate, WireSetting};
use cip_update_agent::config::{self, Config};
use cip_update_agent::daemon::Daemon;
use cip_update_agent::onboard;
use cip_update_agent::source::{self, Source, SourceError};
use cip_update_agent::status;
use cip_update_agent::view::{BarView, PlainView};

/// Exit codes: each failure a user must tell apart has its own.
mod exit {
    pub const FAILURE: u8 = 1; // SWUpdate reported FAILURE
    // 2: usage error (clap)
    pub const BUSY: u8 = 3;
    pub const NO_DAEMON: u8 = 4;
    pub const NOT_A_SOCKET: u8 = 5;
    pub const NO_IMAGE: u8 = 6;
    pub const BAD_IMAGE: u8 = 7;
    pub const DOWNLOAD: u8 = 8;
    pub const PROTOCOL: u8 = 9;
    pub const INTERRUPTED: u8 = 10;
    pub const CONFIG: u8 = 11;
    pub const REJECTED: u8 = 12; // onboard: the fleet rejected the device
}

const EXIT_CODES: &str = "\
Exit codes:
  0   SWUpdate reported SUCCESS
  1   SWUpdate reported FAILURE (its log lines are printed)
  2   usage error
  3   SWUpdate is busy with another install
  4   SWUpdate is not reachable (no socket, nothing listening, no permission)
  5   the SWUpdate socket path is not a socket
  6   the image file cannot be opened
  7   the image is not a .swu, or is truncated
  8   the download failed (HTTP error status, network error)
  9   the daemon's answers cannot be understood (IPC or progress wire)
  10  interrupted (the install was abandoned; SWUpdate fails it)
  11  the configuration file cannot be read or is invalid";

#[derive(Parser)]
#[command(name = "cip-update-agent", version, about, propagate_version = true)]
struct Cli {
    /// Configuration file [default: /etc/cip-update-agent/agent.toml, if present]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "CIP_UPDATE_AGENT_CONFIG"
    )]
    config: Option<PathBuf>,
    /// More output (-v: the daemon's log lines and agent decisions, -vv: everything).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install a .swu from a file or an http(s) URL through the SWUpdate daemon.
    #[command(after_help = EXIT_CODES)]
    Install(InstallArgs),
    /// Run as the daemon: take update jobs from wfx (the [wfx] section) and carry them through;
    /// without [wfx] but with [tuf], install the newest TUF target for this device (TUF-only mode).
    Run,
    /// Obtain the client-id through the wfx onboarding workflow, store it, print it and exit
    /// (at once when the device has one). Exit code 12: the fleet rejected the device.
    Onboard,
    /// Show the client-id, the running version, the job in hand and the last result.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Confirm the running slot now, if it is on trial (without the agent's health checks).
    Confirm,
    /// Reboot into the slot an update armed (for `reboot.policy = "manual"`).
    Reboot {
        /// Reboot even if no update waits for it.
        #[arg(long)]
        force: bool,
    },
    /// TUF client (the tuf-conformance CLI): init, refresh, download. Exit 0 on success, 1 otherwise.
    TufClient(cip_update_agent::tuf::cli::TufClientArgs),
}

#[derive(Args)]
struct InstallArgs {
    /// The .swu: a file path, or an http:// or https:// URL (streamed, never stored).
    image: String,
    /// Let SWUpdate parse and verify the image without installing anything.
    #[arg(long)]
    dry_run: bool,
    /// Text passed to SWUpdate with the request (shown in its progress START message).
    #[arg(long, value_name = "TEXT")]
    info: Option<String>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

/// Where and how to reach SWUpdate.
#[derive(Args)]
struct DaemonArgs {
    /// SWUpdate's control socket [default: swupdate.control_socket of the configuration, else
    /// $TMPDIR/sockinstctrl, or /tmp/sockinstctrl]
    #[arg(long, value_name = "PATH", env = "CIP_SWUPDATE_CONTROL_SOCKET")]
    control_socket: Option<PathBuf>,
    /// SWUpdate's progress socket [default: swupdate.progress_socket of the configuration, else
    /// $TMPDIR/swupdateprog, or /tmp/swupdateprog]
    #[arg(long, value_name = "PATH", env = "CIP_SWUPDATE_PROGRESS_SOCKET")]
    progress_socket: Option<PathBuf>,
    /// Progress wire of the daemon: "auto", or its release (2022.12, 2023.12, 2024.12, 2025.12, ...)
    /// [default: swupdate.wire of the configuration, else auto]
    #[arg(long, value_name = "WIRE", env = "CIP_SWUPDATE_WIRE")]
    wire: Option<WireSetting>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 if matches!(cli.command, Command::Run | Command::Onboard) => "info",
        0 => "warn",
        1 => "info,swupdate=debug,cip_update_agent=debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CIP_UPDATE_AGENT_LOG").unwrap_or_else(|_| filter.into()),
        )
        .fmt_fields(escaped_fields())
        // Colours only for a person at a terminal; journald and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match &cli.config {
        Some(p) => Config::load(p, true),
        None => Config::load(Path::new(config::DEFAULT_PATH), false),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let code = match cli.command {
        Command::Install(args) => rt.block_on(run_install(args, &config, cli.verbose > 0)),
        Command::Run => rt.block_on(run_daemon(&config)),
        Command::Onboard => rt.block_on(run_onboard(&config)),
        Command::Status { json } => show_status(&config, json),
        Command::Confirm => confirm(&config),
        Command::Reboot { force } => rt.block_on(reboot(&config, force)),
        Command::TufClient(args) => {
            match rt.block_on(cip_update_agent::tuf::cli::run(args, &config)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::FAILURE
                }
            }
        }
    };
    // A read blocked in the blocking pool (a pipe that stays open after an interrupt) must not
    // hold the exit.
    rt.shutdown_background();
    ExitCode::from(code)
}

/// The log's field formatter: every value (the message too) with its control characters
/// escaped, so that a job id or a URI from a server cannot forge a log line or drive a terminal,
/// and every URL in it redacted, whichever module formatted it (a TUF fetch error, a reqwest
/// error chain).
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = cip_update_agent::redact::message(&format!("{value:?}"));
        match field.name() {
            "message" => write!(w, "{text}"),
            name => write!(w, "{name}={text}"),
        }
    })
    .delimited(" ")
}

fn show_status(config: &Config, json: bool) -> u8 {
    match status::collect(config) {
        Ok(s) if json => match serde_json::to_string_pretty(&s) {
            Ok(t) => {
                println!("{t}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::FAILURE
            }
        },
        Ok(s) => {
            print!("{}", status::render(&s));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::CONFIG
        }
    }
}

/// `confirm`: ends the running slot's trial.
fn confirm(config: &Config) -> u8 {
    let boot = cip_update_agent::boot::from_config(&config.boot);
    let status = match boot.read() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILURE;
        }
    };
    let slot = status.booted.as_deref().unwrap_or("?");
    if !status.trial {
        println!(
            "nothing to confirm: slot {slot} is not on trial ({})",
            status.detail
        );
        return 0;
    }
    match boot.confirm() {
        Ok(()) => {
            println!("slot {slot} confirmed");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}

/// `reboot`: runs `reboot.command` when an update waits for it.
async fn reboot(config: &Config, force: bool) -> u8 {
    let boot = cip_update_agent::boot::from_config(&config.boot);
    let pending = match boot.read() {
        Ok(s) => s.pending,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILURE;
        }
    };
    match (&pending, force) {
        (Some(slot), _) => println!("rebooting into slot {slot}"),
        (None, true) => println!("no slot is armed; rebooting anyway (--force)"),
        (None, false) => {
            eprintln!("no update waits for a reboot (no slot is armed); --force reboots anyway");
            return exit::FAILURE;
        }
    }
    match cip_update_agent::reboot::run_command(
        &config.reboot.command,
        std::time::Duration::from_secs(60),
    )
    .await
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: reboot command: {e}");
            exit::FAILURE
        }
    }
}

/// `onboard`: the client-id on stdout.
async fn run_onboard(config: &Config) -> u8 {
    let onboarding = onboard::client_id(config, onboard::OnRejection::Stop);
    tokio::select! {
        r = onboarding => match r {
            Ok(id) => {
                println!("{id}");
                0
            }
            Err(e @ onboard::OnboardError::Rejected(_)) => {
                eprintln!("error: {e}");
                exit::REJECTED
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::CONFIG
            }
        },
        () = interrupted() => exit::INTERRUPTED,
    }
}

async fn run_daemon(config: &Config) -> u8 {
    // Without device.client_id: the stored one, or onboard first, then run under it (no
    // restart needed).
    let mut config = config.clone();
    if config.device.client_id.is_none() && config.wfx.is_some() {
        // Started is started for systemd (Type=notify), even while waiting to be onboarded; the
        // watchdog is fed by the onboarding loop.
        cip_update_agent::notify::ready();
        cip_update_agent::notify::status("onboarding: waiting for a client-id");
        let watchdog = cip_update_agent::notify::watchdog_period()
            .map(cip_update_agent::notify::spawn_watchdog);
        let onboarding = onboard::client_id(&config, onboard::OnRejection::Wait);
        let id = tokio::select! {
            r = onboarding => r,
            () = interrupted() => return 0,
        };
        if let Some(w) = watchdog {
            w.abort();
        }
        match id {
            Ok(id) => {
                tracing::info!("client-id {id}");
                config.device.client_id = Some(id);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::CONFIG;
            }
        }
    }
    let config = &config;
    // TUF-only mode: no wfx, the TUF repository says what to install.
    if config.wfx.is_none() && config.tuf.is_some() {
        return match cip_update_agent::tuf::only::TufOnly::new(config) {
            Ok(t) => {
                t.run(interrupted()).await;
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::CONFIG
            }
        };
    }
    match Daemon::new(config) {
        Ok(d) => {
            tracing::info!("cip-update-agent {} running", env!("CARGO_PKG_VERSION"));
            d.run(interrupted()).await;
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::CONFIG
        }
    }
}

async fn run_install(args: InstallArgs, config: &Config, verbose: bool) -> u8 {
    let src = match Source::parse(&args.image) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::NO_IMAGE;
        }
    };
    let d = &config.swupdate;
    // A path typed on the command line is the user's: relative to where they are, said once here.
    let typed = |p: Option<PathBuf>| p.map(|p| std::path::absolute(&p).unwrap_or(p));
    let paths = SocketPaths::with_overrides(
        typed(args.daemon.control_socket).or_else(|| d.control_socket.clone()),
        typed(args.daemon.progress_socket).or_else(|| d.progress_socket.clone()),
    );
    let sw = Swupdate::new(paths, args.daemon.wire.unwrap_or(d.wire));
    // URLs go through the configured TLS (CA, client certificate) and proxy, as in `run`.
    let opened = if src.is_url() {
        match cip_update_agent::http::client(
            &config.tls,
            &config.proxy,
            std::time::Duration::from_secs(30),
        ) {
            Ok(http) => source::open_with(&src, &http, &config.download.limits()).await,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::CONFIG;
            }
        }
    } else {
        source::open(&src).await
    };
    let image = match opened {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return match e {
                SourceError::HttpStatus { .. } | SourceError::Network { .. } => exit::DOWNLOAD,
                _ => exit::NO_IMAGE,
            };
        }
    };
    let name = match &src {
        Source::File(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
        Source::Url(u) => u.rsplit('/').next().map(str::to_owned),
    }
    .unwrap_or_default();
    let req = InstallRequest {
        run: if args.dry_run {
            RunType::DryRun
        } else {
            RunType::Install
        },
        len: image.len.unwrap_or(0),
        info: args
            .info
            .unwrap_or_else(|| truncate(&format!("cip-update-agent install {name}"), 511)),
        ..Default::default()
    };
    let total = image.len;
    let max_image = config.download.max_image_size;
    let result = if std::io::stderr().is_terminal() {
        let mut bar = BarView::new(total);
        let r = install::install(&sw, &req, image.into(), max_image, &mut bar, interrupted()).await;
        bar.finish();
        r
    } else {
        let mut plain = PlainView::new(std::io::stderr());
        let obs: &mut dyn Observer = &mut plain;
        install::install(&sw, &req, image.into(), max_image, obs, interrupted()).await
    };
    report(&src, args.dry_run, verbose, result)
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Lines of SWUpdate's log shown with a failure; the reason is near the end, often in a debug line.
const LOG_TAIL: usize = 12;

fn print_log(outcome: &InstallOutcome, verbose: bool) {
    let log = &outcome.log;
    if log.is_empty() {
        return;
    }
    let skip = if verbose {
        0
    } else {
        log.len().saturating_sub(LOG_TAIL)
    };
    if skip > 0 {
        eprintln!(
            "SWUpdate log (last {LOG_TAIL} of {} lines; -v shows all):",
            log.len()
        );
    } else {
        eprintln!("SWUpdate log:");
    }
    for l in &log[skip..] {
        eprintln!("  {}", l.msg);
    }
}

fn report(
    src: &Source,
    dry_run: bool,
    verbose: bool,
    result: Result<InstallOutcome, InstallError>,
) -> u8 {
    let what = if dry_run { "dry run of" } else { "install of" };
    match result {
        Ok(o) if o.succeeded() => {
            println!("SUCCESS: {what} {src} ({} bytes)", o.bytes_sent);
            0
        }
        Ok(o) => {
            print_log(&o, verbose);
            println!("FAILURE: {what} {src}");
            exit::FAILURE
        }
        Err(e) => {
            // The daemon failed because the agent stopped: its log only matters when asked for.
            if let (Some(v), true) = (e.verdict(), verbose) {
                print_log(v, verbose);
            }
            eprintln!("error: {e}");
            match e {
                InstallError::Daemon(c) => daemon_code(&c),
                InstallError::Malformed { .. } => exit::BAD_IMAGE,
                InstallError::Read { .. } if src.is_url() => exit::DOWNLOAD,
                InstallError::Read { .. } => exit::NO_IMAGE,
                InstallError::Interrupted { .. } | InstallError::NotCommitted { .. } => {
                    exit::INTERRUPTED
                }
            }
        }
    }
}

fn daemon_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Busy(_) | ClientError::NoAnswer { .. } | ClientError::NotTaken(..) => {
            exit::BUSY
        }
        ClientError::NoSocket(_)
        | ClientError::NotListening(_)
        | ClientError::Permission(_)
        | ClientError::Connect { .. } => exit::NO_DAEMON,
        ClientError::NotASocket(_) => exit::NOT_A_SOCKET,
        ClientError::Refused(_)
        | ClientError::Io { .. }
        | ClientError::Decode { .. }
        | ClientError::Encode(_)
        | ClientError::Progress { .. }
        | ClientError::ProgressIo { .. }
        | ClientError::ProgressClosed(_)
        | ClientError::Unexpected(_) => exit::PROTOCOL,
    }
}

//! `cip-update-agent install`: one .swu, from a file or an http(s) URL, through the SWUpdate
//! daemon, with a progress bar on a terminal or plain lines otherwise.

use std::io::IsTerminal;
use std::path::PathBuf;

use cip_onboarding::signals::interrupted;
use clap::Args;

use super::exit;
use crate::config::Config;
use crate::source::{self, Source, SourceError};
use crate::view::{BarView, PlainView};
use cip_swupdate::client::{ClientError, InstallOutcome};
use cip_swupdate::install::{self, InstallError, Observer};
use cip_swupdate::{InstallRequest, SocketPaths, Swupdate, WireSetting};

// `install`'s arguments (a doc comment here would be clap's help text).
#[derive(Args)]
pub struct InstallArgs {
    /// The .swu: a file path, or an http:// or https:// URL (streamed, never stored).
    pub image: String,
    /// Let SWUpdate parse and verify the image without installing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Text passed to SWUpdate with the request (shown in its progress START message).
    #[arg(long, value_name = "TEXT")]
    pub info: Option<String>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// Where and how to reach SWUpdate.
#[derive(Args)]
pub struct DaemonArgs {
    /// SWUpdate's control socket [default: swupdate.control_socket of the configuration, else
    /// $TMPDIR/sockinstctrl, /run/swupdate/sockinstctrl if it exists, or /tmp/sockinstctrl]
    #[arg(long, value_name = "PATH", env = "CIP_SWUPDATE_CONTROL_SOCKET")]
    pub control_socket: Option<PathBuf>,
    /// SWUpdate's progress socket [default: swupdate.progress_socket of the configuration, else
    /// swupdateprog in the control socket's default directory]
    #[arg(long, value_name = "PATH", env = "CIP_SWUPDATE_PROGRESS_SOCKET")]
    pub progress_socket: Option<PathBuf>,
    /// Progress wire of the daemon: "auto", or its release (2022.12, 2023.12, 2024.12, 2025.12, ...)
    /// [default: swupdate.wire of the configuration, else auto]
    #[arg(long, value_name = "WIRE", env = "CIP_SWUPDATE_WIRE")]
    pub wire: Option<WireSetting>,
}

/// Installs the image; the exit code.
pub async fn main(args: InstallArgs, config: &Config, verbose: bool) -> u8 {
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
        match crate::http::client(
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
    let mut req = InstallRequest::new(
        args.dry_run,
        image.len.unwrap_or(0),
        &format!("cip-update-agent install {name}"),
    );
    // A text given by the user goes as it is (SWUpdate's encoder refuses one too long).
    if let Some(info) = args.info {
        req.info = info;
    }
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

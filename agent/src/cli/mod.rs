//! The command line: its clap types, its exit codes, and one subcommand a file. `main.rs` parses,
//! sets up logging and hands the subcommand to [`dispatch`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

pub mod confirm;
pub mod install;
pub mod onboard;
pub mod reboot;
pub mod run;
pub mod status;
pub mod tuf;

/// Exit codes: each failure a user must tell apart has its own.
pub mod exit {
    /// SWUpdate reported FAILURE (and the generic failure of the other subcommands).
    pub const FAILURE: u8 = 1;
    // 2: usage error (clap)
    /// SWUpdate is busy with another install.
    pub const BUSY: u8 = 3;
    /// SWUpdate is not reachable.
    pub const NO_DAEMON: u8 = 4;
    /// The SWUpdate socket path is not a socket.
    pub const NOT_A_SOCKET: u8 = 5;
    /// The image file cannot be opened.
    pub const NO_IMAGE: u8 = 6;
    /// The image is not a .swu, or is truncated.
    pub const BAD_IMAGE: u8 = 7;
    /// The download failed.
    pub const DOWNLOAD: u8 = 8;
    /// The daemon's answers cannot be understood.
    pub const PROTOCOL: u8 = 9;
    /// Interrupted.
    pub const INTERRUPTED: u8 = 10;
    /// The configuration cannot be read or is invalid.
    pub const CONFIG: u8 = 11;
    /// onboard: the fleet rejected the device.
    pub const REJECTED: u8 = 12;
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

// `cip-update-agent` (a doc comment here would be clap's help text).
#[derive(Parser)]
#[command(name = "cip-update-agent", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file [default: /etc/cip-update-agent/agent.toml, if present]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "CIP_UPDATE_AGENT_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// More output (-v: the daemon's log lines and agent decisions, -vv: everything).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, one file each under `cli/`.
#[derive(Subcommand)]
pub enum Command {
    /// Install a .swu from a file or an http(s) URL through the SWUpdate daemon.
    #[command(after_help = EXIT_CODES)]
    Install(install::InstallArgs),
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
    TufClient(tuf::TufClientArgs),
}

impl Command {
    /// Whether the subcommand is a service (its progress logged at `info` by default).
    pub fn is_service(&self) -> bool {
        matches!(self, Command::Run | Command::Onboard)
    }
}

/// Runs the subcommand on the runtime; its exit code.
pub fn dispatch(
    command: Command,
    config: &Config,
    verbose: bool,
    rt: &tokio::runtime::Runtime,
) -> u8 {
    match command {
        Command::Install(args) => rt.block_on(install::main(args, config, verbose)),
        Command::Run => rt.block_on(run::main(config)),
        Command::Onboard => rt.block_on(onboard::main(config)),
        Command::Status { json } => status::main(config, json),
        Command::Confirm => confirm::main(config),
        Command::Reboot { force } => rt.block_on(reboot::main(config, force)),
        Command::TufClient(args) => rt.block_on(tuf::main(args, config)),
    }
}

//! `cip-update-agent`: parses the command line, sets up logging, loads the configuration and
//! hands the subcommand to [`cli::dispatch`]; the subcommands are in `agent/src/cli/`.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use cip_update_agent::cli::{self, Cli, exit};
use cip_update_agent::config::{self, Config};
use cip_update_agent::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 if cli.command.is_service() => "info",
        0 => "warn",
        1 => "info,swupdate=debug,cip_update_agent=debug",
        _ => "trace",
    };
    let filter = logging::filter(
        std::env::var("CIP_UPDATE_AGENT_LOG").ok().as_deref(),
        filter,
    );
    logging::init(logging::Output::detect(), filter);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::fatal(format_args!("cannot start the runtime: {e}"));
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
            logging::fatal(e);
            return ExitCode::from(exit::CONFIG);
        }
    };
    let code = cli::dispatch(cli.command, &config, cli.verbose > 0, &rt);
    // A read blocked in the blocking pool (a pipe that stays open after an interrupt) must not
    // hold the exit.
    rt.shutdown_background();
    ExitCode::from(code)
}

//! `cip-update-agent`: parses the command line, sets up logging, loads the configuration and
//! hands the subcommand to [`cli::dispatch`]; the subcommands are in `agent/src/cli/`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cip_update_agent::cli::{self, Cli, exit};
use cip_update_agent::config::{self, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 if cli.command.is_service() => "info",
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
    let code = cli::dispatch(cli.command, &config, cli.verbose > 0, &rt);
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

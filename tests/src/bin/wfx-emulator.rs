//! Runs the wfx emulator (see `cip_update_agent_tests::emulators::wfx`) until killed.
//!
//! ```text
//! wfx-emulator [--south-port P] [--north-port P] [--control-port P]
//!              [--workflows DIR] [--keepalive-secs N]
//! ```
//! Ports default to 0 (a free port). On start it prints one line per
//! listener, `south http://127.0.0.1:P/api/wfx/v1`, `north ...` and, with
//! `--control-port`, `control http://127.0.0.1:P`, so that a script can read
//! the ports it got.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cip_update_agent_tests::emulators::wfx::{Options, WfxEmulator};

const USAGE: &str = "usage: wfx-emulator [--south-port P] [--north-port P] [--control-port P] \
                     [--workflows DIR] [--keepalive-secs N]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wfx-emulator: {e:#}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> anyhow::Result<Options> {
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let port = || {
            value
                .parse::<u16>()
                .with_context(|| format!("{flag} {value}"))
        };
        match flag.as_str() {
            "--south-port" => opts.south_port = port()?,
            "--north-port" => opts.north_port = port()?,
            "--control-port" => opts.control_port = Some(port()?),
            "--workflows" => opts.workflows_dir = PathBuf::from(&value),
            "--keepalive-secs" => {
                opts.keepalive =
                    Duration::from_secs(value.parse().with_context(|| format!("{flag} {value}"))?)
            }
            _ => bail!("unknown argument {flag}"),
        }
    }
    Ok(opts)
}

fn run() -> anyhow::Result<()> {
    let emulator = WfxEmulator::start(parse_args()?)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "south {}", emulator.south_url())?;
    writeln!(out, "north {}", emulator.north_url())?;
    if let Some(url) = emulator.control_url() {
        writeln!(out, "control {url}")?;
    }
    out.flush()?;
    drop(out);
    // Serve until the process is killed; the server runs on its own thread.
    loop {
        std::thread::park();
    }
}

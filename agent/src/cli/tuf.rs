//! `cip-update-agent tuf-client`: the tuf-conformance client-under-test protocol
//! (CLIENT-CLI.md) over the same [`Updater`] the daemon uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::trust::HttpFetcher;
use cip_tuf::{Limits, SystemClock, TufError, Updater};

#[derive(Args, Debug)]
pub struct TufClientArgs {
    /// Directory of the trusted metadata (root.json, timestamp.json, ...).
    #[arg(long, value_name = "DIR")]
    pub metadata_dir: PathBuf,
    /// Base URL of the repository's metadata.
    #[arg(long, value_name = "URL")]
    pub metadata_url: Option<String>,
    /// A target path to download (repeatable; downloaded in this order).
    #[arg(long, value_name = "PATH")]
    pub target_name: Vec<String>,
    /// Base URL of the repository's targets.
    #[arg(long, value_name = "URL")]
    pub target_base_url: Option<String>,
    /// Directory the verified targets are stored in.
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Connect timeout.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// No byte for this long: the fetch fails (slow retrieval).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// Time limit of a whole metadata file.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub metadata_timeout: Duration,
    /// Time limit of a whole target.
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = humantime::parse_duration)]
    pub target_timeout: Duration,
    #[command(subcommand)]
    pub action: TufAction,
}

#[derive(Subcommand, Debug)]
pub enum TufAction {
    /// Trust TRUSTED_ROOT (no network).
    Init {
        #[arg(value_name = "TRUSTED_ROOT")]
        trusted_root: PathBuf,
    },
    /// Update the top-level metadata.
    Refresh,
    /// Refresh, then download and verify each --target-name into --target-dir.
    Download,
}

/// Why the command failed (one line on stderr).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0} is required for this command")]
    Missing(&'static str),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Http(#[from] crate::http::HttpSetupError),
    #[error(transparent)]
    Tuf(#[from] TufError),
    #[error("target {0}: not a target of the repository")]
    NotATarget(String),
}

/// `tuf-client`: runs the command, prints its error; the exit code.
pub async fn main(args: TufClientArgs, config: &Config) -> u8 {
    match run(args, config).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            super::exit::FAILURE
        }
    }
}

/// Runs the command; `config` gives `[tls]` and `[proxy]`.
pub async fn run(args: TufClientArgs, config: &Config) -> Result<(), CliError> {
    let limits = Limits {
        metadata_timeout: args.metadata_timeout,
        target_timeout: args.target_timeout,
        ..Limits::default()
    };
    let http = crate::http::client(&config.tls, &config.proxy, args.connect_timeout)?;
    let fetcher = HttpFetcher::new(http, args.read_timeout);
    let meta_url = args.metadata_url.as_deref().unwrap_or_default();
    let mut u = Updater::new(
        &args.metadata_dir,
        meta_url,
        args.target_base_url.as_deref(),
        limits,
        fetcher,
        Arc::new(SystemClock),
    );
    let need_url = || {
        if args.metadata_url.is_none() {
            return Err(CliError::Missing("--metadata-url"));
        }
        Ok(())
    };
    match &args.action {
        TufAction::Init { trusted_root } => {
            let bytes = std::fs::read(trusted_root).map_err(|source| CliError::Read {
                path: trusted_root.clone(),
                source,
            })?;
            u.init(&bytes)?;
        }
        TufAction::Refresh => {
            need_url()?;
            u.refresh().await?;
        }
        TufAction::Download => {
            need_url()?;
            let dir = args
                .target_dir
                .as_ref()
                .ok_or(CliError::Missing("--target-dir"))?;
            if args.target_base_url.is_none() {
                return Err(CliError::Missing("--target-base-url"));
            }
            if args.target_name.is_empty() {
                return Err(CliError::Missing("--target-name"));
            }
            u.refresh().await?;
            for name in &args.target_name {
                let info = u
                    .find_target(name)
                    .await?
                    .ok_or_else(|| CliError::NotATarget(name.clone()))?;
                let path = u.download_target(&info, dir).await?;
                tracing::info!("{name}: {}", path.display());
            }
        }
    }
    Ok(())
}

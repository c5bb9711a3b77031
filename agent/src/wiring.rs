//! The one place where components are built from the configuration: the pipeline, and the
//! job source that drives it (wfx, or TUF-only when there is no `[wfx]`). Libraries and
//! pipeline steps take plain values; only this module (and the command line) reads `Config`.

use std::sync::Arc;
use std::time::Duration;

use cip_swupdate::Swupdate;
use cip_tuf::Updater;
use cip_tuf::artifacts::{Gate, LatestKnownClock};

use crate::config::Config;
use crate::mqtt::Publisher;
use crate::pipeline::{Parts, Pipeline, Settings};
use crate::report::Reporter;
use crate::selection::Selector;
use crate::sources::tuf_only::TufOnly;
use crate::sources::wfx::Daemon;
use crate::sources::wfx::journal::Store;
use crate::trust::{HttpFetcher, Trust, TrustSetupError};
use crate::wfx::WfxClient;

/// Why the agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("neither [wfx] nor [tuf] in the configuration: nothing to take updates from")]
    NoSource,
    #[error("device.client_id is not set and the device is not onboarded")]
    NoClientId,
    #[error(transparent)]
    Http(#[from] crate::http::HttpSetupError),
    #[error(transparent)]
    Journal(#[from] crate::sources::wfx::journal::JournalError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[error(transparent)]
    Tuf(#[from] crate::trust::TrustSetupError),
}

/// The TUF gate of `[tuf]`: the shipped root (taken when the cache in `<state_dir>/tuf/` has
/// none or an older one), the HTTP client from `[tls]` and `[proxy]`. `None` without `[tuf]`.
fn trust(config: &Config) -> Result<Option<Trust>, TrustSetupError> {
    let Some(t) = &config.tuf else {
        return Ok(None);
    };
    let dir = config.state_dir.join("tuf");
    let clock = Arc::new(LatestKnownClock::load(dir.join("latest-known-time")));
    let http = crate::http::client(&config.tls, &config.proxy, t.connect_timeout)?;
    let mut updater = Updater::new(
        &dir,
        &t.metadata_url.0,
        Some(&t.targets_url.0),
        t.limits(),
        HttpFetcher::new(http, t.read_timeout).with_limits(config.download.limits()),
        clock.clone(),
    );
    let root = std::fs::read(&t.root).map_err(|source| TrustSetupError::Root {
        path: t.root.clone(),
        source,
    })?;
    if updater
        .ensure_root(&root)
        .map_err(TrustSetupError::BadRoot)?
    {
        tracing::info!("TUF: trusting the shipped root {}", t.root.display());
    }
    let wait_for_sync = t
        .wait_for_time_sync
        .then(|| (t.time_sync_file.clone(), t.time_sync_timeout));
    Ok(Some(Trust::new(
        Gate::new(
            updater,
            clock,
            config.device.hwrevision_file.clone(),
            wait_for_sync,
        ),
        t.targets_url.0.clone(),
        t.read_timeout,
        config.download.limits(),
    )))
}

/// The pipeline of `config`; MQTT only with a client-id (its topics name it).
pub fn pipeline(config: &Config) -> Result<Pipeline, RunError> {
    let http = crate::http::client(&config.tls, &config.proxy, Duration::from_secs(30))?;
    let mqtt = match (&config.mqtt, &config.device.client_id) {
        (Some(m), Some(id)) => Some(Publisher::start(m, id)?),
        (Some(_), None) => {
            tracing::warn!("[mqtt] needs device.client_id: no MQTT");
            None
        }
        _ => None,
    };
    let trust = trust(config)?;
    if trust.is_none() {
        tracing::warn!(
            "no [tuf] section: artifacts are NOT verified against TUF metadata (development mode only)"
        );
    }
    let (a, b) = config.boot.slot_names();
    Ok(Pipeline::new(Parts {
        http,
        swupdate: Swupdate::new(config.swupdate.socket_paths(), config.swupdate.wire),
        boot: crate::boot::from_config(&config.boot),
        selector: Selector::new(
            config.swupdate.select_on_a.clone(),
            config.swupdate.select_on_b.clone(),
            (a.to_owned(), b.to_owned()),
        ),
        reporter: Reporter::new(
            mqtt,
            crate::device::read_version(&config.device.version_file),
        ),
        trust,
        inventory: crate::device::inventory(
            &config.device.hwrevision_file,
            &config.device.version_file,
            config.swupdate.wire.to_string(),
            config.boot.backend.name(),
        ),
        settings: Settings {
            delta: config.delta.clone(),
            download: config.download.clone(),
            health: config.health.clone(),
            reboot: config.reboot.clone(),
            mark_installed: config.boot.mark_installed,
            state_dir: config.state_dir.clone(),
            version_file: config.device.version_file.clone(),
            swupdate_retry: crate::backoff::Backoff {
                initial: crate::config::SWUPDATE_RETRY_FIRST.min(config.swupdate.retry_max),
                max: config.swupdate.retry_max,
            },
        },
    }))
}

/// The wfx job source of `config` (which has `[wfx]` and a client-id).
pub fn wfx_source(config: &Config) -> Result<Daemon, RunError> {
    let wfx_cfg = config.wfx.clone().ok_or(RunError::NoSource)?;
    let client_id = config
        .device
        .client_id
        .clone()
        .ok_or(RunError::NoClientId)?;
    let pipe = pipeline(config)?;
    let wfx = WfxClient::new(&wfx_cfg.url.0, &client_id, pipe.http.clone())
        .with_timeouts((&wfx_cfg).into());
    Ok(Daemon::new(
        wfx,
        wfx_cfg,
        Store::new(&config.state_dir),
        config.state_dir.join("staging"),
        pipe,
    )?)
}

/// The TUF-only job source of `config` (which has `[tuf]` and no `[wfx]`).
pub fn tuf_source(config: &Config) -> Result<TufOnly, RunError> {
    let poll = config.tuf.as_ref().ok_or(RunError::NoSource)?.poll_interval;
    Ok(TufOnly::new(
        pipeline(config)?,
        &config.state_dir,
        config.device.hwrevision_file.clone(),
        poll,
    ))
}

/// Runs the job source `config` names until `stop` resolves.
pub async fn run(
    config: &Config,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    if config.wfx.is_none() && config.tuf.is_some() {
        tuf_source(config)?.run(stop).await;
    } else {
        let d = wfx_source(config)?;
        tracing::info!("cip-update-agent {} running", env!("CARGO_PKG_VERSION"));
        d.run(stop).await;
    }
    Ok(())
}

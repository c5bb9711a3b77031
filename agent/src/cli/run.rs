//! `cip-update-agent run`: onboard if the device has no client-id yet, then run the job source
//! the configuration names: wfx (the daemon), or TUF-only mode.

use cip_onboarding::signals::interrupted;

use super::exit;
use crate::config::Config;
use crate::onboard;

/// Runs until interrupted; the exit code.
pub async fn main(config: &Config) -> u8 {
    // Without device.client_id: the stored one, or onboard first, then run under it (no
    // restart needed).
    let mut config = config.clone();
    if config.device.client_id.is_none() && config.wfx.is_some() {
        // Started is started for systemd (Type=notify), even while waiting to be onboarded; the
        // watchdog is fed by the onboarding loop.
        crate::notify::ready();
        crate::notify::status("onboarding: waiting for a client-id");
        let watchdog = crate::notify::watchdog_period().map(crate::notify::spawn_watchdog);
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
                crate::logging::fatal(e);
                return exit::CONFIG;
            }
        }
    }
    if let Some(id) = &config.device.client_id {
        crate::logging::set_client_id(id);
    }
    match crate::wiring::run(&config, interrupted()).await {
        Ok(()) => 0,
        Err(e) => {
            crate::logging::fatal(e);
            exit::CONFIG
        }
    }
}

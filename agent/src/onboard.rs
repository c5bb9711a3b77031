//! Onboarding on the device: the client-id from the configuration, from an earlier onboarding
//! (the state directory), or obtained now through the wfx workflow `cip.workflow.onboarding`
//! (protocol and decisions in the `cip-onboarding` crate; this module runs them with the
//! agent's wfx client).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cip_onboarding::device::{self, JobView, Me, Step};
use cip_onboarding::protocol::{self, WORKFLOW, bootstrap_client_id, state};
use cip_onboarding::store::{self, Onboarded};
use cip_onboarding::{identity, keys};
use serde_json::json;
use tokio::sync::Notify;

use crate::backoff::poll_due;
use crate::config::Config;
use crate::wfx::{JobId, JobStatus, WfxClient, WfxError};

/// What a rejection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRejection {
    /// `onboard`: stop with [`OnboardError::Rejected`].
    Stop,
    /// `run`: keep waiting for a new enrollment.
    Wait,
}

#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    #[error("no [wfx] section in the configuration: nothing to onboard through")]
    NoWfx,
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("device key: {0}")]
    DeviceKey(keys::KeyError),
    #[error("onboarding.fleet_key: {0}")]
    FleetKey(keys::KeyError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpSetupError),
    #[error("onboarding rejected by the fleet: {0}")]
    Rejected(String),
}

/// The client-id to run under: `device.client_id`, else the stored one (closing its
/// onboarding job if that was cut short), else onboarding now. Returns with a client-id, or
/// an error that stops the agent (configuration, files, a rejection with [`OnRejection::Stop`]).
pub async fn client_id(config: &Config, on_rejection: OnRejection) -> Result<String, OnboardError> {
    if let Some(id) = &config.device.client_id {
        return Ok(id.clone());
    }
    let wfx_cfg = config.wfx.as_ref().ok_or(OnboardError::NoWfx)?;
    let http = crate::http::client(&config.tls, &config.proxy, Duration::from_secs(30))?;
    if let Some(o) = store::load(&config.state_dir)? {
        if !o.closed {
            let wfx = WfxClient::new(&wfx_cfg.url.0, &bootstrap_client_id(&o.serial), http)
                .with_timeouts(wfx_cfg.into());
            close(config, &wfx, o.clone()).await;
        }
        return Ok(o.client_id);
    }
    let o = onboard(config, http, on_rejection).await?;
    Ok(o.client_id)
}

/// Reports ONBOARDED for a stored client-id whose job is still APPROVED, then notes the job as
/// closed. A failure is logged and left for the next start: the device has its client-id.
async fn close(config: &Config, wfx: &WfxClient, mut o: Onboarded) {
    let result = async {
        match wfx.job(&job_id_of(&o)?).await {
            Ok(job) => {
                if job.status.as_ref().map(|s| s.state.as_str()) == Some(state::APPROVED) {
                    report_onboarded(wfx, &o).await?;
                }
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
    .await;
    match result {
        Ok(()) => {
            o.closed = true;
            match store::save(&config.state_dir, &o) {
                Ok(()) => crate::faults::point("onboarding closed"),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Err(e) => {
            tracing::warn!(job = %o.job_id, "closing the onboarding job: {e}; next start tries again")
        }
    }
}

/// The stored onboarding job's id, checked like one from wfx.
fn job_id_of(o: &Onboarded) -> Result<JobId, WfxError> {
    JobId::parse(&o.job_id).map_err(|e| WfxError::Decode(format!("stored onboarding job: {e}")))
}

async fn report_onboarded(wfx: &WfxClient, o: &Onboarded) -> Result<(), WfxError> {
    wfx.put_status(
        &job_id_of(o)?,
        &JobStatus {
            state: state::ONBOARDED.into(),
            message: Some(format!("onboarded as {}", o.client_id)),
            progress: Some(100),
            ..Default::default()
        },
    )
    .await?;
    crate::faults::point("onboarding reported");
    Ok(())
}

/// The exchange, until the device holds its client-id.
async fn onboard(
    config: &Config,
    http: reqwest::Client,
    on_rejection: OnRejection,
) -> Result<Onboarded, OnboardError> {
    let wfx_cfg = config.wfx.as_ref().ok_or(OnboardError::NoWfx)?;
    let sources = identity::Sources::default();
    let (serial, from) = identity::serial(config.onboarding.serial.as_deref(), &sources)?;
    let model = identity::model(config.onboarding.model.as_deref(), &sources)?;
    let fleet =
        keys::read_verifying(&config.onboarding.fleet_key).map_err(OnboardError::FleetKey)?;
    let (key, made) = keys::device_key(&config.state_dir).map_err(OnboardError::DeviceKey)?;
    if made {
        crate::faults::point("onboarding key made");
    }
    let boot_id = bootstrap_client_id(&serial);
    tracing::info!(
        "onboarding as {boot_id} (serial from {from}, model {model:?}, device key {})",
        protocol::public_key_hex(&key.verifying_key())
    );
    let wfx = WfxClient::new(&wfx_cfg.url.0, &boot_id, http).with_timeouts(wfx_cfg.into());
    let me = Me {
        serial: &serial,
        model: &model,
        key: &key,
    };
    let wake = Arc::new(Notify::new());
    let stream = Arc::new(crate::wfx::follow::StreamHealth::default());
    let moved = stream.changed();
    let events = tokio::spawn(follow_events(wfx.clone(), wake.clone(), stream.clone()));
    let mut said = HashSet::new();
    let result = loop {
        match step(config, &wfx, &me, &fleet, &mut said).await {
            Ok(Some(o)) => break Ok(o),
            Ok(None) => {}
            Err(Stop::Rejected(r)) if on_rejection == OnRejection::Stop => {
                break Err(OnboardError::Rejected(r));
            }
            Err(Stop::Rejected(_)) => {}
            Err(Stop::Wfx(e)) => tracing::warn!("onboarding: {e}"),
            Err(Stop::Store(e)) => break Err(e.into()),
        }
        let (last, unit) = (std::time::Instant::now(), fastrand::f64());
        // Waiting is the loop being alive: keep the systemd watchdog fed while it waits.
        let beat_every = crate::notify::watchdog_period().map_or(Duration::from_secs(10), |p| {
            (p / 4).max(Duration::from_millis(50))
        });
        loop {
            crate::notify::beat();
            let until = tokio::time::Instant::from_std(poll_due(
                last,
                unit,
                wfx_cfg.poll_interval,
                wfx_cfg.fallback_poll_interval,
                stream.down_since(),
            ));
            tokio::select! {
                () = wake.notified() => break,
                () = moved.notified() => {}
                () = tokio::time::sleep_until(until) => break,
                () = tokio::time::sleep(beat_every) => {}
            }
        }
    };
    events.abort();
    result
}

enum Stop {
    Rejected(String),
    Wfx(WfxError),
    Store(store::StoreError),
}

impl From<WfxError> for Stop {
    fn from(e: WfxError) -> Self {
        Stop::Wfx(e)
    }
}

/// One look at the device's newest onboarding job, and the step it calls for. `said` keeps
/// waiting notices to one log line each.
async fn step(
    config: &Config,
    wfx: &WfxClient,
    me: &Me<'_>,
    fleet: &cip_onboarding::ed25519_dalek::VerifyingKey,
    said: &mut HashSet<String>,
) -> Result<Option<Onboarded>, Stop> {
    let mut once = |key: String, line: &dyn Fn()| {
        if said.insert(key) {
            line();
        }
    };
    let jobs = wfx
        .jobs(&[
            ("clientId", wfx.client_id()),
            ("workflow", WORKFLOW),
            ("sort", "desc"),
            ("limit", "1"),
        ])
        .await?;
    let Some(job) = jobs.first() else {
        once("none".into(), &|| {
            tracing::info!(
                "waiting to be enrolled: no onboarding job for {}",
                wfx.client_id()
            )
        });
        return Ok(None);
    };
    let status = job.status.clone().unwrap_or_default();
    let view = JobView {
        id: &job.id,
        state: &status.state,
        definition: job.definition.as_ref(),
        context: status.context.as_ref(),
        message: status.message.as_deref(),
        definition_hash: status.definition_hash.as_deref(),
    };
    match device::decide(&view, me, fleet) {
        Step::Identify(identity) => {
            let s = JobStatus {
                state: state::IDENTIFIED.into(),
                message: Some(format!(
                    "device {} ({}) identifies itself",
                    me.serial, me.model
                )),
                context: serde_json::to_value(&identity).ok(),
                ..Default::default()
            };
            wfx.put_status(&job.id, &s).await?;
            crate::faults::point("onboarding identified");
            tracing::info!(job = %job.id, "identified; waiting for the fleet's answer");
        }
        Step::Wait => once(
            format!("{} {}", job.id, status.state),
            &|| tracing::info!(job = %job.id, state = %status.state, "waiting for the fleet"),
        ),
        Step::Accept { client_id } => {
            let o = Onboarded {
                client_id,
                job_id: job.id.to_string(),
                serial: me.serial.to_owned(),
                closed: false,
            };
            store::save(&config.state_dir, &o).map_err(Stop::Store)?;
            crate::faults::point("onboarding client-id stored");
            tracing::info!(job = %job.id, "the fleet's answer verifies: client-id {}", o.client_id);
            match report_onboarded(wfx, &o).await {
                Ok(()) => {}
                // Stored is stored: a job the fleet changed meanwhile does not take the
                // verified client-id back; the next start notes the job as closed.
                Err(e) if !e.is_transient() => {
                    tracing::warn!(job = %job.id, "reporting ONBOARDED: {e}");
                    return Ok(Some(o));
                }
                Err(e) => return Err(e.into()),
            }
            let o = Onboarded { closed: true, ..o };
            store::save(&config.state_dir, &o).map_err(Stop::Store)?;
            crate::faults::point("onboarding closed");
            return Ok(Some(o));
        }
        Step::Refuse { refusal, identity } => {
            tracing::error!(job = %job.id, "onboarding answer refused: {refusal}; nothing stored");
            let s = JobStatus {
                state: state::APPROVED.into(),
                message: Some(format!("answer refused: {refusal}")),
                context: serde_json::to_value(&identity).ok(),
                ..Default::default()
            };
            wfx.put_status(&job.id, &s).await?;
        }
        Step::AcknowledgeRejection { reason } => {
            tracing::error!(job = %job.id, "onboarding rejected by the fleet: {reason}");
            let s = JobStatus {
                state: state::REJECTED.into(),
                message: Some(format!(
                    "device {} acknowledges the rejection: {reason}",
                    me.serial
                )),
                context: Some(json!({
                    device::ACKNOWLEDGED: true,
                    "serial": me.serial,
                    "reason": reason,
                })),
                ..Default::default()
            };
            wfx.put_status(&job.id, &s).await?;
            said.insert(format!("{} rejected", job.id));
            return Err(Stop::Rejected(reason));
        }
        Step::Rejected { reason } => {
            once(
                format!("{} rejected", job.id),
                &|| tracing::error!(job = %job.id, "onboarding rejected by the fleet: {reason}; waiting for a new enrollment"),
            );
            return Err(Stop::Rejected(reason));
        }
        Step::Closed => once(format!("{} closed", job.id), &|| {
            tracing::warn!(
                job = %job.id,
                "the newest onboarding job is ONBOARDED but this device holds no client-id \
                 (state directory lost?): waiting for a new enrollment"
            )
        }),
        Step::BadJob(e) => once(format!("{} bad", job.id), &|| {
            tracing::warn!("onboarding job ignored: {e}")
        }),
    }
    Ok(None)
}

/// Wakes the onboarding loop on every event of the bootstrap client-id and after every
/// (re)connect (events are not guaranteed: the loop also polls).
async fn follow_events(
    wfx: WfxClient,
    wake: Arc<Notify>,
    stream: Arc<crate::wfx::follow::StreamHealth>,
) {
    crate::wfx::follow::follow_events(
        wfx,
        wake,
        stream,
        |_| true,
        |e| tracing::debug!("onboarding event stream: {e}"),
    )
    .await;
}

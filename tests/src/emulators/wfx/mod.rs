//! An emulator of the wfx workflow executor (siemens/wfx, API v1), for the
//! agent's tests: the real server cannot be installed on these machines.
//!
//! The contract it follows is `tests/wfx/spec/wfx.openapi.yml` (a verbatim
//! copy of wfx's spec) and the facts collected in `shared/wfx/NOTES.md`.
//! It keeps everything in memory, loads its workflows from YAML files (by
//! default the DAU workflows shipped in `tests/wfx/workflows/` and the onboarding workflow of
//! `onboarding/`), and serves
//! the southbound and northbound APIs on two loopback ports.
//!
//! Files, one concern each:
//! - [`model`]: workflows, jobs, statuses; workflow loading; definition hash;
//! - [`store`]: the in-memory state and wfx's transition rules;
//! - [`validate`]: spec validation of requests (plain-text 400s);
//! - [`routes`]: the HTTP routes and error formats;
//! - [`events`]: job events and the SSE stream;
//! - [`faults`] and [`control`]: fault injection, request counting and an opt-in request log.
//!
//! The server runs on a thread of its own with its own Tokio runtime, so the
//! handle works the same from synchronous and asynchronous tests, and
//! dropping it stops the server (open connections included).

pub mod control;
pub mod events;
pub mod faults;
pub mod model;
pub mod routes;
pub mod store;
pub mod validate;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;

use events::EventHub;
use faults::Faults;
use store::Store;

/// Where wfx serves its API on both listeners.
pub const BASE_PATH: &str = "/api/wfx/v1";

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Devices; transitions are taken as actor `CLIENT`.
    South,
    /// Management; transitions are taken as actor `WFX`.
    North,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Self::South => "south",
            Self::North => "north",
        }
    }
}

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct Options {
    /// Folder of workflow YAML files loaded at start.
    pub workflows_dir: PathBuf,
    /// Further workflow files loaded at start (default: the project's onboarding workflow).
    pub workflow_files: Vec<PathBuf>,
    /// 0 picks a free port.
    pub south_port: u16,
    /// 0 picks a free port.
    pub north_port: u16,
    /// Also serve the control API (see [`control`]) on this port (0 = free).
    pub control_port: Option<u16>,
    /// Interval of the `: keepalive` comments on event streams (wfx: 30 s).
    pub keepalive: Duration,
    /// Keep a log of every request from the start (see [`WfxEmulator::log_requests`]).
    pub log_requests: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workflows_dir: model::default_workflows_dir(),
            workflow_files: vec![model::onboarding_workflow_file()],
            south_port: 0,
            north_port: 0,
            control_port: None,
            keepalive: Duration::from_secs(30),
            log_requests: false,
        }
    }
}

/// A running emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct WfxEmulator {
    south: SocketAddr,
    north: SocketAddr,
    control: Option<SocketAddr>,
    faults: Arc<Faults>,
    hub: Arc<EventHub>,
    store: Arc<Store>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WfxEmulator {
    /// Starts an emulator with the default options (DAU workflows, free
    /// ports, 30 s keepalive).
    pub fn start_default() -> anyhow::Result<Self> {
        Self::start(Options::default())
    }

    /// Loads the workflows, binds the listeners and starts serving.
    pub fn start(opts: Options) -> anyhow::Result<Self> {
        let mut workflows = model::load_workflows(&opts.workflows_dir)?;
        for f in &opts.workflow_files {
            workflows.push(model::load_workflow(f)?);
        }
        let bind = |port: u16, what: &str| -> anyhow::Result<TcpListener> {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                .with_context(|| format!("binding the {what} listener to port {port}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let south_l = bind(opts.south_port, "southbound")?;
        let north_l = bind(opts.north_port, "northbound")?;
        let control_l = opts.control_port.map(|p| bind(p, "control")).transpose()?;

        let hub = Arc::new(EventHub::new(opts.keepalive));
        let faults = Arc::new(Faults::default());
        if opts.log_requests {
            faults.log_requests();
        }
        let store = Arc::new(Store::new(workflows, hub.clone()));
        let state = |side| routes::AppState {
            side,
            store: store.clone(),
            hub: hub.clone(),
            faults: faults.clone(),
        };
        let mut apps = vec![
            (
                south_l.local_addr()?,
                south_l,
                routes::router(state(Side::South)),
            ),
            (
                north_l.local_addr()?,
                north_l,
                routes::router(state(Side::North)),
            ),
        ];
        let control = match control_l {
            Some(l) => {
                let addr = l.local_addr()?;
                apps.push((addr, l, control::router(faults.clone(), hub.clone())));
                Some(addr)
            }
            None => None,
        };
        let (south, north) = (apps[0].0, apps[1].0);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the emulator's runtime")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wfx-emulator".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for (_, listener, app) in apps {
                        let listener = tokio::net::TcpListener::from_std(listener)
                            .expect("registering a listener with Tokio");
                        tokio::spawn(async move { axum::serve(listener, app).await });
                    }
                    // Runs until the handle is dropped (or its sender is).
                    let _ = stopped.await;
                });
                // Dropping the runtime cancels the servers and every open
                // connection, event streams included.
            })
            .context("spawning the emulator thread")?;
        Ok(Self {
            south,
            north,
            control,
            faults,
            hub,
            store,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:P/api/wfx/v1` of the southbound (device) listener.
    pub fn south_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.south)
    }

    /// `http://127.0.0.1:P/api/wfx/v1` of the northbound (management) listener.
    pub fn north_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.north)
    }

    /// `http://127.0.0.1:P` of the control API, if started.
    pub fn control_url(&self) -> Option<String> {
        self.control.map(|a| format!("http://{a}"))
    }

    /// The next `n` requests (on either listener) answer 503.
    pub fn fail_next_requests(&self, n: u32) {
        self.faults.fail_next_requests(n);
    }

    /// The next status update answers 400 `wfx.jobModifiedConcurrently`
    /// without changing the job.
    pub fn conflict_next_status_update(&self) {
        self.faults.conflict_next_status_update();
    }

    /// While `on`, event stream requests answer 503; open streams are cut when it is set.
    pub fn refuse_event_streams(&self, on: bool) {
        self.faults.refuse_event_streams(on);
        if on {
            self.hub.cut_all();
        }
    }

    /// Ends every open event stream.
    pub fn cut_event_streams(&self) {
        self.hub.cut_all();
    }

    /// Open event streams right now.
    pub fn event_subscribers(&self) -> usize {
        self.hub.subscribers()
    }

    /// Requests per `"<south|north> <METHOD> <route>"` since start or the
    /// last reset, e.g. `"south GET /jobs/{id}"`.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.faults.request_counts()
    }

    pub fn reset_request_counts(&self) {
        self.faults.reset_request_counts();
    }

    /// Starts (or restarts, empty) a log of every request, with its arrival time: for benches
    /// that time what happens per job or per client. Off by default (it only grows).
    pub fn log_requests(&self) {
        self.faults.log_requests();
    }

    /// The requests logged since [`WfxEmulator::log_requests`].
    pub fn request_log(&self) -> Vec<faults::LoggedRequest> {
        self.faults.request_log()
    }

    /// Direct access to the state, e.g. to inspect a job without a request
    /// (which would show up in the request counts).
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl Drop for WfxEmulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

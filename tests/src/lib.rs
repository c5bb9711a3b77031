//! Integration-test harness of `cip-update-agent`.
//!
//! The agent is tested against the real tools it meets on a device: the
//! SWUpdate daemon (driven over its IPC sockets) and an HTTP server that
//! serves `.swu` files with Range support. This crate builds signed `.swu`
//! archives from scratch and runs throwaway, per-test instances of those
//! tools, so that tests run unprivileged and in parallel (cargo-nextest runs
//! every test in its own process, concurrently).
//!
//! Every helper owns its files in its own temporary directory and cleans up
//! on drop; no helper touches global state (no fixed ports, no fixed paths,
//! no environment changes of the test process).
//!
//! The modules, one directory per kind:
//!
//! - [`fixtures`]: builders of inputs: `.swu`/cpio, PKI, TUF repositories, A/B device files, deltas.
//! - [`daemons`]: real components run unprivileged: SWUpdate, nginx, mosquitto, the agent binary.
//! - [`servers`]: scripted misbehaving servers: hostile/slow/raw HTTP, a cutting proxy, replays.
//! - [`emulators`]: [`emulators::wfx`], the in-memory wfx server (the real one is not installable).
//! - [`scenarios`]: [`scenarios::fleet`], the fleet + agent scenario driver, and
//!   [`scenarios::job_source`], the same scenarios through either job source (wfx, TUF-only).

pub mod daemons;
pub mod emulators;
pub mod fixtures;
pub mod scenarios;
pub mod servers;

// The helpers without an agent dependency live in `cip-test-support`, so that
// zchunk's tests can use them without building the agent; re-exported here so
// the harness has one set of paths.
pub use cip_test_support::{free_port, wait_for};

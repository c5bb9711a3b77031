//! Real components, launched unprivileged and torn down per test.

pub mod agent;
pub mod gnu_time;
pub mod journald;
pub mod mosquitto;
pub mod swupdate;
pub mod swupdate_release;

// Shared with zchunk's tests, which must not build the agent.
pub use cip_test_support::{nginx, process};

//! cip-update-agent: the on-device software update agent of CIP (Civil Infrastructure Platform).
//!
//! The library holds every capability; `main.rs` is the command line over it.

pub mod boot;
pub mod bounded;
pub mod config;
pub mod daemon;
pub mod delta;
pub mod faults;
pub mod health;
pub mod http;
pub mod job;
pub mod journal;
pub mod mqtt;
pub mod notify;
pub mod onboard;
pub mod reboot;
pub mod redact;
pub mod report;
pub mod selection;
pub mod source;
pub mod status;
pub mod text;
pub mod throttle;
pub mod trust;
pub mod tuf;
pub mod uri;
pub mod view;
pub mod wfx;

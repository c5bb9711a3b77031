//! cip-update-agent: the on-device software update agent of CIP (Civil Infrastructure Platform).
//!
//! The library holds every capability and the command line over them ([`cli`], one subcommand a
//! file); `main.rs` parses, sets up logging and dispatches.

pub mod backoff;
pub mod boot;
pub mod bounded;
pub mod cli;
pub mod command;
pub mod config;
pub mod delta;
pub mod device;
pub mod faults;
pub mod health;
pub mod http;
pub mod logging;
pub mod mqtt;
pub mod notify;
pub mod onboard;
pub mod pipeline;
pub mod reboot;
pub mod redact;
pub mod report;
pub mod selection;
pub mod source;
pub mod sources;
pub mod state;
pub mod status;
pub mod text;
pub mod throttle;
pub mod trust;
pub mod uri;
pub mod view;
pub mod wfx;
pub mod wiring;

//! wfx, the workflow server that hands out update jobs: the southbound API the device uses.

pub mod client;
pub mod follow;
pub mod id;
pub mod model;
pub mod sse;

pub use client::{EventStream, WfxClient, WfxError};
pub use id::JobId;
pub use model::{Job, JobEvent, JobStatus};

//! Drivers of whole scenarios: components wired together around the agent.

pub mod fleet;
pub mod job_source;

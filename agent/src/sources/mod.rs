//! Where updates come from, on top of the [`crate::pipeline`]: a source finds the update and
//! keeps its own records; every step of the update itself is the pipeline's.
//!
//! - [`wfx`]: DAU jobs from wfx (events and a reconciling poll; the decisions of
//!   [`wfx::job::decide`], the journal, staged phased downloads, reports to wfx);
//! - [`tuf_only`]: no wfx: the TUF repository's newest target for this hardware.

pub mod tuf_only;
pub mod wfx;

//! Atomic, private files: the workspace's one implementation lives in the onboarding crate
//! (which the agent depends on, so it cannot import the agent), re-exported here for the agent's
//! writers: the journal, the TUF store, the delta cache and kept `.swu`, staged downloads.

pub use cip_onboarding::atomic::*;

//! Crash points for the power-cut tests: with `CIP_UPDATE_AGENT_CRASH_AT=N` in its environment
//! the agent aborts at the N-th point it passes (every journal save, and the commit of an
//! install), as a power cut would stop it there. Unset (always, outside tests) a point is one
//! atomic increment. It is compiled in every build so that the binary under test is the binary
//! that ships.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub fn point(what: &str) {
    static AT: OnceLock<Option<u32>> = OnceLock::new();
    static PASSED: AtomicU32 = AtomicU32::new(0);
    let at = AT.get_or_init(|| {
        std::env::var("CIP_UPDATE_AGENT_CRASH_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let Some(at) = *at else { return };
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if n == at {
        eprintln!("fault injection: crashing at point {n} ({what})");
        std::process::abort();
    }
}

//! Crash points for the power-cut tests: with the `fault-injection` feature and
//! `CIP_UPDATE_AGENT_CRASH_AT=N`, the agent aborts at the N-th point it passes (every journal save,
//! and the commit of an install), as a power cut would stop it there. Without the feature, a
//! point compiles to nothing.

#[cfg(feature = "fault-injection")]
pub fn point(what: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static PASSED: AtomicU32 = AtomicU32::new(0);
    let Some(at) = std::env::var("CIP_UPDATE_AGENT_CRASH_AT")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if n == at {
        eprintln!("fault injection: crashing at point {n} ({what})");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_what: &str) {}

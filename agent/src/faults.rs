//! Fault injection for the tests (test-only; inert unless the variables below are set, which
//! nothing does outside the test suite). Compiled in every build so that the binary under test is
//! the binary that ships.
//!
//! - `CIP_UPDATE_AGENT_CRASH_AT=N`: abort at the N-th crash point passed (every journal save, the
//!   commit of an install, the boot confirmation), as a power cut would stop the agent there.
//!   `CIP_UPDATE_AGENT_CRASH_AT=<name>`: abort at the first point of that name (e.g.
//!   `before confirm`, `after confirm`, `delta failure recorded`).
//! - `CIP_UPDATE_AGENT_HANG_AFTER=<duration>` (e.g. `2s`): once the agent has run that long, its
//!   main loop blocks for good (as a deadlock would), to test that the systemd watchdog pings stop.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

enum CrashAt {
    Nth(u32),
    Named(String),
}

pub fn point(what: &str) {
    static AT: OnceLock<Option<CrashAt>> = OnceLock::new();
    static PASSED: AtomicU32 = AtomicU32::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("CIP_UPDATE_AGENT_CRASH_AT").ok()?;
        Some(match v.parse() {
            Ok(n) => CrashAt::Nth(n),
            Err(_) => CrashAt::Named(v),
        })
    });
    let Some(at) = at else { return };
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    let hit = match at {
        CrashAt::Nth(at) => n == *at,
        CrashAt::Named(name) => name == what,
    };
    if hit {
        eprintln!("fault injection: crashing at point {n} ({what})");
        std::process::abort();
    }
}

/// When the main loop should block (see the module documentation).
fn hang_at() -> Option<Instant> {
    static AT: OnceLock<Option<Instant>> = OnceLock::new();
    *AT.get_or_init(|| {
        let v = std::env::var("CIP_UPDATE_AGENT_HANG_AFTER").ok()?;
        let d: Duration = humantime::parse_duration(&v).ok()?;
        Some(Instant::now() + d)
    })
}

/// Arms the hang timer (call at start, so "after" counts from there).
pub fn arm() {
    let _ = hang_at();
}

/// Blocks for good once the hang time has come; returns at once otherwise.
pub async fn hang_point() {
    if hang_at().is_some_and(|t| Instant::now() >= t) {
        eprintln!("fault injection: the main loop blocks now");
        std::future::pending::<()>().await;
    }
}

//! Fault injection and request counting, for the agent's robustness tests.
//!
//! These hooks are not part of wfx and are not reachable through its routes:
//! tests reach them through the [`super::WfxEmulator`] handle (or the
//! binary's separate control port). They act in a middleware that sees
//! every request of both listeners before routing.
//!
//! Besides the counts, an opt-in log of every request (arrival time, listener, method, route and
//! the path with its query) lets a bench time what a fleet of agents does, per job and per
//! client ([`Faults::log_requests`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Side;

#[derive(Debug, Default)]
pub struct Faults {
    /// This many next requests (either listener) answer 503.
    fail_next: AtomicU32,
    /// The next status update answers `wfx.jobModifiedConcurrently`.
    conflict_next_status: AtomicBool,
    /// Event stream requests answer 503 (a proxy that will not pass them, say).
    refuse_events: AtomicBool,
    /// Requests per `"<side> <METHOD> <route>"`, e.g.
    /// `"south GET /jobs/{id}"`; unrouted requests count as `<route>` =
    /// `"(unmatched)"`.
    counts: Mutex<BTreeMap<String, u64>>,
    /// Every request since [`Faults::log_requests`], if called (None: no log is kept).
    log: Mutex<Option<Vec<LoggedRequest>>>,
}

/// One request of the log, as it arrived (before routing and fault injection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub at: Instant,
    pub side: Side,
    pub method: String,
    /// The matched route without the base path, e.g. `/jobs/{id}/status` (or `(unmatched)`).
    pub route: String,
    /// The request's path and query as sent, e.g. `/api/wfx/v1/jobs/events?clientIds=d1`.
    pub uri: String,
}

impl LoggedRequest {
    /// `"<side> <METHOD> <route>"`, the key of the request counts.
    pub fn key(&self) -> String {
        format!("{} {} {}", self.side.name(), self.method, self.route)
    }
}

impl Faults {
    pub fn fail_next_requests(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn conflict_next_status_update(&self) {
        self.conflict_next_status.store(true, Ordering::SeqCst);
    }

    pub fn refuse_event_streams(&self, on: bool) {
        self.refuse_events.store(on, Ordering::SeqCst);
    }

    /// Consumes the pending conflict, if any.
    pub fn take_status_conflict(&self) -> bool {
        self.conflict_next_status.swap(false, Ordering::SeqCst)
    }

    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn reset_request_counts(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Starts (or restarts, empty) the request log.
    pub fn log_requests(&self) {
        *self.log.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    }

    /// The requests logged since [`Faults::log_requests`] (empty if it was not called).
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    fn record(&self, entry: LoggedRequest) {
        if let Some(log) = self.log.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            log.push(entry);
        }
    }

    /// Decrements the 503 budget; true if this request must fail.
    fn take_failure(&self) -> bool {
        self.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn count(&self, key: String) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }
}

/// Counts the request, then answers 503 if a failure is pending.
pub async fn middleware(
    State((side, faults)): State<(Side, std::sync::Arc<Faults>)>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| {
            p.as_str()
                .strip_prefix(super::BASE_PATH)
                .unwrap_or(p.as_str())
                .to_owned()
        })
        .unwrap_or_else(|| "(unmatched)".to_owned());
    let entry = LoggedRequest {
        at: Instant::now(),
        side,
        method: req.method().to_string(),
        route,
        uri: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned()),
    };
    let refused = entry.route == "/jobs/events" && faults.refuse_events.load(Ordering::SeqCst);
    faults.count(entry.key());
    faults.record(entry);
    if refused || faults.take_failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from("Service Unavailable\n"),
        )
            .into_response();
    }
    next.run(req).await
}

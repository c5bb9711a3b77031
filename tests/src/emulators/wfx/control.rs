//! The optional control API of the emulator binary, on its own port so that
//! nothing of it is reachable through wfx's listeners. In-process tests use
//! the [`super::WfxEmulator`] methods instead.
//!
//! | method | path | effect |
//! |---|---|---|
//! | POST | /fail-next?n=N | the next N wfx requests answer 503 |
//! | POST | /conflict-next-status | the next status update answers `wfx.jobModifiedConcurrently` |
//! | POST | /cut-events | ends every open event stream |
//! | GET | /requests | request counts, `{"south GET /jobs": 3, ...}` |
//! | DELETE | /requests | resets the counts |

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::events::EventHub;
use super::faults::Faults;

type Shared = (Arc<Faults>, Arc<EventHub>);

pub fn router(faults: Arc<Faults>, hub: Arc<EventHub>) -> Router {
    Router::new()
        .route("/fail-next", post(fail_next))
        .route("/conflict-next-status", post(conflict))
        .route("/cut-events", post(cut))
        .route("/requests", get(counts).delete(reset))
        .with_state((faults, hub))
}

async fn fail_next(
    State((faults, _)): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> StatusCode {
    match q.get("n").map(|n| n.parse::<u32>()) {
        Some(Ok(n)) => {
            faults.fail_next_requests(n);
            StatusCode::NO_CONTENT
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn conflict(State((faults, _)): State<Shared>) -> StatusCode {
    faults.conflict_next_status_update();
    StatusCode::NO_CONTENT
}

async fn cut(State((_, hub)): State<Shared>) -> StatusCode {
    hub.cut_all();
    StatusCode::NO_CONTENT
}

async fn counts(
    State((faults, _)): State<Shared>,
) -> Json<std::collections::BTreeMap<String, u64>> {
    Json(faults.request_counts())
}

async fn reset(State((faults, _)): State<Shared>) -> StatusCode {
    faults.reset_request_counts();
    StatusCode::NO_CONTENT
}

//! The HTTP routes of wfx (`/api/wfx/v1/...`), one router per listener.
//!
//! Both listeners serve the same routes; the southbound one answers 403 with
//! an empty body to the management operations (job creation and deletion,
//! tag changes, workflow creation and deletion), as wfx does. Request
//! validation failures are plain-text 400s (see [`super::validate`]), handler
//! errors are JSON `ErrorResponse`s, unknown routes and wrong methods are
//! plain-text 404 / 405 like Go's HTTP server answers them.

// Handlers answer `Result<Response, Response>` so that `?` turns any error
// into its HTTP answer; the size of the error variant does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::events::{EventFilter, EventHub};
use super::faults::{self, Faults};
use super::model::Eligible;
use super::store::{JobQuery, Store, WfxError};
use super::{BASE_PATH, Side, validate};

/// What every handler of one listener shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub side: Side,
    pub store: Arc<Store>,
    pub hub: Arc<EventHub>,
    pub faults: Arc<Faults>,
}

impl AppState {
    /// The 403 with an empty body that the southbound listener gives to
    /// management operations.
    fn north_only(&self) -> Result<(), Response> {
        match self.side {
            Side::North => Ok(()),
            Side::South => Err(StatusCode::FORBIDDEN.into_response()),
        }
    }

    fn actor(&self) -> Eligible {
        match self.side {
            Side::South => Eligible::Client,
            Side::North => Eligible::Wfx,
        }
    }
}

/// The router of one listener.
pub fn router(state: AppState) -> Router {
    let p = |s: &str| format!("{BASE_PATH}{s}");
    let fault_state = (state.side, state.faults.clone());
    Router::new()
        .route(&p("/health"), get(health))
        .route(&p("/version"), get(version))
        .route(&p("/workflows"), get(list_workflows).post(create_workflow))
        .route(
            &p("/workflows/{name}"),
            get(get_workflow).delete(delete_workflow),
        )
        .route(&p("/jobs"), get(list_jobs).post(create_job))
        .route(&p("/jobs/events"), get(job_events))
        .route(&p("/jobs/{id}"), get(get_job).delete(delete_job))
        .route(&p("/jobs/{id}/status"), get(get_status).put(put_status))
        .route(
            &p("/jobs/{id}/definition"),
            get(get_definition).put(put_definition),
        )
        .route(
            &p("/jobs/{id}/tags"),
            get(get_tags).post(add_tags).delete(delete_tags),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            fault_state,
            faults::middleware,
        ))
        .with_state(state)
}

/// Splits a comma list query value, dropping empty items.
pub fn comma_list(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

type Q = Query<HashMap<String, String>>;
type Answer = Result<Response, Response>;

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).expect("JSON serializes"),
    )
        .into_response()
}

fn ok(body: &impl serde::Serialize) -> Answer {
    Ok(json_response(StatusCode::OK, body))
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(text),
    )
        .into_response()
}

/// A spec-validation failure: plain-text 400.
fn invalid(msg: validate::Invalid) -> Response {
    plain(StatusCode::BAD_REQUEST, format!("{msg}\n"))
}

/// The spec only declares `application/json` request bodies, so wfx's
/// validator refuses any other (or no) content type with a plain-text 400.
fn json_content_type(headers: &HeaderMap) -> Result<(), Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = ct.split(';').next().unwrap_or_default().trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(invalid(format!(
            "request body has an error: header Content-Type has unexpected value: {ct:?}"
        )))
    }
}

/// A handler error: JSON `ErrorResponse`.
fn wfx_error(e: WfxError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).expect("valid status");
    json_response(
        status,
        &json!({"errors": [{"code": e.code(), "logref": e.logref(), "message": e.message()}]}),
    )
}

async fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "404 page not found\n".into())
}

async fn method_not_allowed() -> Response {
    plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed\n".into(),
    )
}

async fn health() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (header::PRAGMA, "no-cache"),
            (header::EXPIRES, "0"),
        ],
        json_response(StatusCode::OK, &json!({"status": "up"})),
    )
        .into_response()
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"version": "0.6.0-emulator", "commit": "emulator", "apiVersion": "v1"}),
    )
}

/// `{"content": [...]}` plus `pagination` only when asked for.
fn page(content: Vec<Value>, limit: usize, offset: usize, total: usize, paginate: bool) -> Value {
    let mut v = json!({ "content": content });
    if paginate {
        v["pagination"] = json!({"limit": limit, "offset": offset, "total": total});
    }
    v
}

async fn list_workflows(State(st): State<AppState>, Query(q): Q) -> Answer {
    let limit = validate::query_uint("limit", q.get("limit"), 10).map_err(invalid)?;
    let offset = validate::query_uint("offset", q.get("offset"), 0).map_err(invalid)?;
    let desc = validate::query_sort(q.get("sort")).map_err(invalid)?;
    let paginate = validate::query_bool("pagination", q.get("pagination")).map_err(invalid)?;
    let all = st.store.workflows(desc);
    let total = all.len();
    let content = all
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|w| serde_json::to_value(w).expect("workflow serializes"))
        .collect();
    ok(&page(content, limit, offset, total, paginate))
}

async fn create_workflow(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    st.north_only()?;
    json_content_type(&headers)?;
    let wf = validate::workflow(&body).map_err(invalid)?;
    let wf = st.store.add_workflow(wf).map_err(wfx_error)?;
    Ok(json_response(StatusCode::CREATED, &wf))
}

async fn get_workflow(State(st): State<AppState>, Path(name): Path<String>) -> Answer {
    ok(&st.store.workflow(&name).map_err(wfx_error)?)
}

async fn delete_workflow(State(st): State<AppState>, Path(name): Path<String>) -> Answer {
    st.north_only()?;
    st.store.delete_workflow(&name).map_err(wfx_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_jobs(State(st): State<AppState>, Query(q): Q) -> Answer {
    let query = JobQuery {
        client_id: q.get("clientId").cloned(),
        state: q.get("state").cloned(),
        groups: comma_list(q.get("group")),
        workflow: q.get("workflow").cloned(),
        tags: comma_list(q.get("tag")),
        descending: validate::query_sort(q.get("sort")).map_err(invalid)?,
        limit: validate::query_uint("limit", q.get("limit"), 10).map_err(invalid)?,
        offset: validate::query_uint("offset", q.get("offset"), 0).map_err(invalid)?,
    };
    let paginate = validate::query_bool("pagination", q.get("pagination")).map_err(invalid)?;
    let (jobs, total) = st.store.list_jobs(&query);
    let content = jobs.iter().map(|j| j.to_json(false)).collect();
    ok(&page(content, query.limit, query.offset, total, paginate))
}

async fn create_job(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    st.north_only()?;
    json_content_type(&headers)?;
    let req = validate::job_request(&body).map_err(invalid)?;
    let job = st.store.create_job(req).map_err(wfx_error)?;
    Ok(json_response(StatusCode::CREATED, &job.to_json(false)))
}

async fn job_events(State(st): State<AppState>, Query(q): Q) -> Response {
    st.hub.stream(EventFilter::from_query(&q))
}

async fn get_job(State(st): State<AppState>, Path(id): Path<String>, Query(q): Q) -> Answer {
    let history = validate::query_bool("history", q.get("history")).map_err(invalid)?;
    let job = st.store.job(&id).map_err(wfx_error)?;
    ok(&job.to_json(history))
}

async fn delete_job(State(st): State<AppState>, Path(id): Path<String>) -> Answer {
    st.north_only()?;
    st.store.delete_job(&id).map_err(wfx_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_status(State(st): State<AppState>, Path(id): Path<String>) -> Answer {
    ok(&st.store.job(&id).map_err(wfx_error)?.status)
}

async fn put_status(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    json_content_type(&headers)?;
    let status = validate::job_status(&body).map_err(invalid)?;
    st.store.job(&id).map_err(wfx_error)?;
    if st.faults.take_status_conflict() {
        return Err(wfx_error(WfxError::JobModifiedConcurrently));
    }
    ok(&st
        .store
        .update_status(&id, status, st.actor())
        .map_err(wfx_error)?)
}

async fn get_definition(State(st): State<AppState>, Path(id): Path<String>) -> Answer {
    let job = st.store.job(&id).map_err(wfx_error)?;
    ok(&job.definition.unwrap_or_default())
}

/// Allowed on both listeners: a device may replace its job's definition.
async fn put_definition(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    json_content_type(&headers)?;
    let def = validate::definition(&body).map_err(invalid)?;
    ok(&st.store.update_definition(&id, def).map_err(wfx_error)?)
}

async fn get_tags(State(st): State<AppState>, Path(id): Path<String>) -> Answer {
    ok(&st.store.job(&id).map_err(wfx_error)?.tags)
}

async fn add_tags(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    st.north_only()?;
    json_content_type(&headers)?;
    let tags = validate::tags(&body).map_err(invalid)?;
    ok(&st.store.change_tags(&id, tags, true).map_err(wfx_error)?)
}

async fn delete_tags(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    st.north_only()?;
    json_content_type(&headers)?;
    let tags = validate::tags(&body).map_err(invalid)?;
    ok(&st.store.change_tags(&id, tags, false).map_err(wfx_error)?)
}

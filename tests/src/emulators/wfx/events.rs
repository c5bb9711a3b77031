//! Job events and the server-sent-events stream of `GET /jobs/events`.
//!
//! Every change of the store is published on a broadcast channel; each SSE
//! connection subscribes, filters and writes `data: {JobEvent}\nid: N\n\n`
//! with N counting from 1 per connection (wfx has no resume), plus a
//! `: keepalive` comment every keepalive interval. Like wfx, delivery is not
//! guaranteed: a connection that lags behind skips events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Response, header};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

/// `JobEventAction` of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventAction {
    Create,
    Delete,
    AddTags,
    DeleteTags,
    UpdateStatus,
    UpdateDefinition,
}

impl EventAction {
    fn name(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Delete => "DELETE",
            Self::AddTags => "ADD_TAGS",
            Self::DeleteTags => "DELETE_TAGS",
            Self::UpdateStatus => "UPDATE_STATUS",
            Self::UpdateDefinition => "UPDATE_DEFINITION",
        }
    }
}

/// One event as published by the store. `job` is the reduced job object that
/// wfx sends (id, clientId, workflow name, status, mtime, and what changed).
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub ctime: String,
    pub action: EventAction,
    pub job: Value,
}

impl JobEvent {
    fn job_str(&self, key: &str) -> Option<&str> {
        self.job.get(key).and_then(Value::as_str)
    }

    fn workflow_name(&self) -> Option<&str> {
        self.job.pointer("/workflow/name").and_then(Value::as_str)
    }
}

/// Publishes events to every open SSE connection and can cut them all.
#[derive(Debug)]
pub struct EventHub {
    events: broadcast::Sender<Arc<JobEvent>>,
    /// Bumped to make every open stream end (fault injection).
    cut: watch::Sender<u64>,
    keepalive: Duration,
}

impl EventHub {
    pub fn new(keepalive: Duration) -> Self {
        Self {
            events: broadcast::channel(1024).0,
            cut: watch::channel(0).0,
            keepalive,
        }
    }

    pub fn publish(&self, event: JobEvent) {
        // No subscriber is not an error: events are fire and forget.
        let _ = self.events.send(Arc::new(event));
    }

    /// Ends every open event stream (the clients see the body end).
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Number of open event streams (lets tests wait for a subscription).
    pub fn subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    /// The `text/event-stream` response for one connection.
    pub fn stream(&self, filter: EventFilter) -> Response<Body> {
        let mut keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + self.keepalive, self.keepalive);
        // A slow reader gets one late keepalive, not a burst of them.
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state = StreamState {
            events: self.events.subscribe(),
            cut: self.cut.subscribe(),
            keepalive,
            next_id: 1,
            filter,
        };
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            let chunk = st.next_chunk().await?;
            Some((Ok::<_, Infallible>(chunk), st))
        });
        let mut resp = Response::new(Body::from_stream(stream));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

/// The query filters of `GET /jobs/events`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub client_ids: Vec<String>,
    pub job_ids: Vec<String>,
    pub workflows: Vec<String>,
    /// Upper-cased (the spec says case-insensitive).
    pub actions: Vec<String>,
    /// Not a filter: copied into every event's `tags`.
    pub tags: Vec<String>,
}

impl EventFilter {
    pub fn from_query(q: &HashMap<String, String>) -> Self {
        let list = |k: &str| super::routes::comma_list(q.get(k));
        Self {
            client_ids: list("clientIds"),
            job_ids: list("jobIds"),
            workflows: list("workflows"),
            actions: list("actions")
                .into_iter()
                .map(|a| a.to_ascii_uppercase())
                .collect(),
            tags: list("tags"),
        }
    }

    /// No filter matches everything; otherwise an event matches if it
    /// satisfies ANY given filter parameter (the spec: "The filter parameters
    /// are independent of each other; an event matches if it satisfies any
    /// of the specified filter parameters").
    pub fn matches(&self, ev: &JobEvent) -> bool {
        let lists = [
            &self.client_ids,
            &self.job_ids,
            &self.workflows,
            &self.actions,
        ];
        if lists.iter().all(|l| l.is_empty()) {
            return true;
        }
        let has = |l: &[String], v: Option<&str>| v.is_some_and(|v| l.iter().any(|x| x == v));
        has(&self.client_ids, ev.job_str("clientId"))
            || has(&self.job_ids, ev.job_str("id"))
            || has(&self.workflows, ev.workflow_name())
            || has(&self.actions, Some(ev.action.name()))
    }
}

struct StreamState {
    events: broadcast::Receiver<Arc<JobEvent>>,
    cut: watch::Receiver<u64>,
    keepalive: tokio::time::Interval,
    next_id: u64,
    filter: EventFilter,
}

impl StreamState {
    /// The next piece of the stream, or None to end it.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            tokio::select! {
                _ = self.cut.changed() => return None,
                _ = self.keepalive.tick() => return Some(Bytes::from_static(b": keepalive\n\n")),
                ev = self.events.recv() => match ev {
                    Ok(ev) if self.filter.matches(&ev) => return Some(self.frame(&ev)),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }

    fn frame(&mut self, ev: &JobEvent) -> Bytes {
        let mut data = serde_json::json!({
            "ctime": ev.ctime,
            "action": ev.action,
            "job": ev.job,
        });
        if !self.filter.tags.is_empty() {
            data["tags"] = serde_json::json!(self.filter.tags);
        }
        let id = self.next_id;
        self.next_id += 1;
        Bytes::from(format!("data: {data}\nid: {id}\n\n"))
    }
}

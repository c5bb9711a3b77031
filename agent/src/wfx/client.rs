//! The southbound wfx client: the device's view of its jobs. Every request carries `X-Client-Id`
//! and `X-Client-Version`; network errors and 5xx answers are retried with backoff; both error
//! formats of wfx (JSON error list, plain text) become one error type.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::id::JobId;
use super::model::{ApiError, ErrorResponse, Job, JobEvent, JobList, JobStatus};
use super::sse;
use crate::backoff::Backoff;
use crate::bounded::{self, BodyError, Bounds};
use crate::throttle::Throttle;

/// Page size when listing jobs.
const PAGE: usize = 50;
/// Pages read per listing of the open jobs (1000 jobs): a server whose every page is full must
/// not be paged forever; the jobs read so far are worked on and the rest waits for the next poll.
pub const MAX_PAGES: usize = 20;
/// Bytes of job lists read per listing, all pages together (a wfx job is 1-2 KiB). Parsed JSON
/// takes up to 16 times its size in memory (`[0,0,...]`: 32 bytes per 2-byte value), so this
/// bounds the agent's memory more than the bytes themselves.
pub const JOB_LIST_MAX: usize = 1 << 20;
/// Bytes of one job or status answer.
pub const ANSWER_MAX: usize = 512 << 10;
/// Bytes of an error answer kept (the rest is not read: only its beginning is shown).
pub const ERROR_BODY_MAX: usize = 64 << 10;
/// At most one warning about unreadable events per this long.
const UNREADABLE_LOG_EVERY: Duration = Duration::from_secs(60);
/// Longest silence within an answer's body before the request is given up.
const BODY_STALL: Duration = Duration::from_secs(10);

/// The time bounds of the wfx client (`[wfx]` `request_timeout`, `stream_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// One request, answer and body included (the event stream excepted).
    pub request: Duration,
    /// The event stream: its answer's headers, and the longest time without a complete line
    /// (wfx sends a keepalive every 30 s); then the stream is reconnected.
    pub stream: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: Duration::from_secs(30),
            stream: Duration::from_secs(75),
        }
    }
}

impl From<&crate::config::Wfx> for Timeouts {
    fn from(c: &crate::config::Wfx) -> Self {
        Timeouts {
            request: c.request_timeout,
            stream: c.stream_timeout,
        }
    }
}

/// What wfx or the way to it said.
#[derive(Debug, thiserror::Error)]
pub enum WfxError {
    #[error("wfx: {status}: {}", describe(.errors))]
    Api { status: u16, errors: Vec<ApiError> },
    #[error("wfx: {status}: {body}")]
    Text { status: u16, body: String },
    #[error("wfx unreachable: {0}")]
    Network(String),
    #[error("wfx sent something unreadable: {0}")]
    Decode(String),
}

fn describe(errors: &[ApiError]) -> String {
    errors
        .iter()
        .map(|e| match &e.message {
            Some(m) => format!("{} ({m})", e.code),
            None => e.code.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl WfxError {
    /// The code of a JSON error, if this is one.
    pub fn has_code(&self, code: &str) -> bool {
        matches!(self, WfxError::Api { errors, .. } if errors.iter().any(|e| e.code == code))
    }

    /// The job is gone (deleted by an operator).
    pub fn is_not_found(&self) -> bool {
        self.has_code("wfx.jobNotFound")
            || matches!(
                self,
                WfxError::Api { status: 404, .. } | WfxError::Text { status: 404, .. }
            )
    }

    /// Worth trying again later: the server or the way to it, not the request.
    pub fn is_transient(&self) -> bool {
        match self {
            WfxError::Network(_) => true,
            WfxError::Api { status, .. } | WfxError::Text { status, .. } => *status >= 500,
            WfxError::Decode(_) => false,
        }
    }
}

/// A client for one device.
#[derive(Clone, Debug)]
pub struct WfxClient {
    base: String,
    client_id: String,
    http: reqwest::Client,
    backoff: Backoff,
    /// Attempts per request for transient errors.
    attempts: u32,
    timeouts: Timeouts,
}

fn unit() -> f64 {
    fastrand::f64()
}

impl WfxClient {
    pub fn new(base: &str, client_id: &str, http: reqwest::Client) -> Self {
        WfxClient {
            base: base.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            http,
            backoff: Backoff::default(),
            attempts: 5,
            timeouts: Timeouts::default(),
        }
    }

    /// Changes the time bounds.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Changes the retry policy (tests use short waits).
    pub fn with_retries(mut self, backoff: Backoff, attempts: u32) -> Self {
        self.backoff = backoff;
        self.attempts = attempts.max(1);
        self
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_q(method, path, &[])
    }

    /// A request with query parameters (encoded here: reqwest's `query` needs another feature).
    fn request_q(&self, method: Method, path: &str, query: &[(&str, &str)]) -> RequestBuilder {
        let url = api_url(&self.base, path, query);
        self.http
            .request(method, url)
            .header("X-Client-Id", &self.client_id)
            .header("X-Client-Version", env!("CARGO_PKG_VERSION"))
    }

    /// Sends, retrying transient failures; returns a successful answer or the error.
    async fn send(&self, make: impl Fn() -> RequestBuilder) -> Result<Response, WfxError> {
        let t = self.timeouts.request;
        self.send_with(|| make().timeout(t), t).await
    }

    /// [`send`](Self::send) without the per-request timeout (for the event stream), the answer's
    /// headers awaited at most `headers`.
    async fn send_with(
        &self,
        make: impl Fn() -> RequestBuilder,
        headers: Duration,
    ) -> Result<Response, WfxError> {
        let mut attempt = 0;
        loop {
            let e = match tokio::time::timeout(headers, make().send()).await {
                Ok(Ok(resp)) if resp.status().is_success() => return Ok(resp),
                Ok(Ok(resp)) => self.error_of(resp).await,
                Ok(Err(e)) => WfxError::Network(crate::source::http_error(&e)),
                Err(_) => WfxError::Network(format!("no answer within {headers:?}")),
            };
            attempt += 1;
            if !e.is_transient() || attempt >= self.attempts {
                return Err(e);
            }
            let wait = self.backoff.delay(attempt - 1, unit());
            tracing::info!("{e}; retrying in {wait:?}");
            crate::notify::beat();
            tokio::time::sleep(wait).await;
        }
    }

    fn bounds(&self, limit: usize) -> Bounds {
        Bounds {
            limit,
            stall: BODY_STALL.min(self.timeouts.request),
            total: self.timeouts.request,
        }
    }

    /// The body of a successful answer, at most `limit` bytes.
    async fn body(&self, resp: Response, limit: usize) -> Result<Vec<u8>, WfxError> {
        bounded::read(resp, self.bounds(limit))
            .await
            .map_err(|e| match e {
                BodyError::TooLarge { .. } => WfxError::Decode(e.to_string()),
                BodyError::Stalled(_) | BodyError::TooSlow(_) | BodyError::Network(_) => {
                    WfxError::Network(e.to_string())
                }
            })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: Response,
        limit: usize,
    ) -> Result<T, WfxError> {
        let bytes = self.body(resp, limit).await?;
        serde_json::from_slice(&bytes).map_err(|e| WfxError::Decode(e.to_string()))
    }

    /// Reads an error answer in either of wfx's formats (its beginning only).
    async fn error_of(&self, resp: Response) -> WfxError {
        let status = resp.status();
        let body = bounded::read_prefix(resp, self.bounds(ERROR_BODY_MAX)).await;
        error_from(status, &String::from_utf8_lossy(&body))
    }

    /// The device's open jobs (group OPEN), oldest first, every page up to [`MAX_PAGES`] pages
    /// and [`JOB_LIST_MAX`] bytes: past either, the jobs read so far (the rest waits for the
    /// next listing). Entries that are not jobs the agent can hold are in `rejected`.
    pub async fn open_jobs(&self) -> Result<JobList, WfxError> {
        let mut jobs = JobList::default();
        let mut budget = JOB_LIST_MAX;
        for page_no in 0..MAX_PAGES {
            let offset = jobs.entries().to_string();
            let limit = PAGE.to_string();
            let resp = self
                .send(|| {
                    self.request_q(
                        Method::GET,
                        "/jobs",
                        &[
                            ("clientId", self.client_id.as_str()),
                            ("group", "OPEN"),
                            ("sort", "asc"),
                            ("limit", &limit),
                            ("offset", &offset),
                        ],
                    )
                })
                .await?;
            let bytes = match self.body(resp, budget).await {
                Err(WfxError::Decode(e)) if page_no > 0 => {
                    tracing::warn!(
                        "open jobs: {e} after {} jobs: working on those, the rest waits",
                        jobs.entries()
                    );
                    return Ok(jobs);
                }
                other => other?,
            };
            budget -= bytes.len();
            let page = parse_job_list(&bytes)?;
            drop(bytes);
            let n = page.entries();
            jobs.content.extend(page.content);
            jobs.rejected.extend(page.rejected);
            if n < PAGE {
                return Ok(jobs);
            }
        }
        tracing::warn!(
            "open jobs: still more after {MAX_PAGES} pages ({} jobs): working on those, the rest waits",
            jobs.entries()
        );
        Ok(jobs)
    }

    /// One page of jobs matching `query` (wfx's `GET /jobs` filters, e.g. `workflow`,
    /// `sort`, `limit`), without the device's own `clientId` filter added.
    pub async fn jobs(&self, query: &[(&str, &str)]) -> Result<Vec<Job>, WfxError> {
        let resp = self
            .send(|| self.request_q(Method::GET, "/jobs", query))
            .await?;
        let bytes = self.body(resp, JOB_LIST_MAX).await?;
        Ok(parse_job_list(&bytes)?.content)
    }

    pub async fn job(&self, id: &JobId) -> Result<Job, WfxError> {
        let path = job_path(id, "");
        let resp = self.send(|| self.request(Method::GET, &path)).await?;
        let job: Job = self.json(resp, ANSWER_MAX).await?;
        // The answer decides what happens to `id`: it must be about `id`.
        if job.id != *id {
            return Err(WfxError::Decode(format!(
                "asked for job {id}, wfx answered with job {}",
                job.id
            )));
        }
        Ok(job)
    }

    /// Replaces the job's status. On `wfx.jobModifiedConcurrently` the job is read again (it
    /// may be gone) and the update retried.
    pub async fn put_status(&self, id: &JobId, status: &JobStatus) -> Result<JobStatus, WfxError> {
        let path = job_path(id, "/status");
        let mut body = status.clone();
        body.client_id = Some(self.client_id.clone());
        // Whatever built the message, the fleet's job history gets no credential and no control
        // character from it.
        body.message = body.message.as_deref().map(crate::redact::message);
        let mut tries = 0;
        loop {
            match self
                .send(|| self.request(Method::PUT, &path).json(&body))
                .await
            {
                Ok(resp) => return self.json(resp, ANSWER_MAX).await,
                Err(e) if e.has_code("wfx.jobModifiedConcurrently") && tries < 3 => {
                    tries += 1;
                    self.job(id).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens the event stream of this device's jobs.
    pub async fn events(&self) -> Result<EventStream, WfxError> {
        let resp = self
            .send_with(
                || {
                    self.request_q(
                        Method::GET,
                        "/jobs/events",
                        &[("clientIds", self.client_id.as_str())],
                    )
                    .header("Accept", "text/event-stream")
                },
                self.timeouts.stream,
            )
            .await?;
        Ok(EventStream {
            body: Box::pin(resp.bytes_stream()),
            parser: sse::Parser::new(),
            ready: std::collections::VecDeque::new(),
            silence: self.timeouts.stream,
            last_line: tokio::time::Instant::now(),
            unreadable: Throttle::new(UNREADABLE_LOG_EVERY),
        })
    }
}

/// `base` + `path` + the query: a query in `base` (a token in `wfx.url`) stays, after the path.
fn api_url(base: &str, path: &str, query: &[(&str, &str)]) -> String {
    let base = base.split_once('#').map_or(base, |(b, _)| b);
    let (base, base_query) = match base.split_once('?') {
        Some((b, q)) => (b, Some(q).filter(|q| !q.is_empty())),
        None => (base, None),
    };
    let mut url = format!("{}{path}", base.trim_end_matches('/'));
    let mut sep = '?';
    if let Some(q) = base_query {
        url.push(sep);
        url.push_str(q);
        sep = '&';
    }
    for (k, v) in query {
        url.push(sep);
        sep = '&';
        url.push_str(&encode(k));
        url.push('=');
        url.push_str(&encode(v));
    }
    url
}

/// A job list as wfx sends it (`GET /jobs`).
pub fn parse_job_list(bytes: &[u8]) -> Result<JobList, WfxError> {
    serde_json::from_slice(bytes).map_err(|e| WfxError::Decode(e.to_string()))
}

/// A server-sent event's data as a job event.
pub fn parse_event(data: &str) -> Result<JobEvent, serde_json::Error> {
    serde_json::from_str(data)
}

/// The API path of a job (`/jobs/{id}` and `rest`): the id is one percent-encoded segment, so
/// `/`, `?`, `#` or `%` in it cannot change the request (`.` and `..`, which URL rules resolve
/// even encoded, are no [`JobId`]).
fn job_path(id: &JobId, rest: &str) -> String {
    format!("/jobs/{}{rest}", encode(id))
}

/// Percent-encodes a path segment or query value (job ids are `[A-Za-z0-9_.-]`, but the server
/// is not trusted, and client ids may hold `:`).
fn encode(seg: &str) -> String {
    seg.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn error_from(status: StatusCode, body: &str) -> WfxError {
    match serde_json::from_str::<ErrorResponse>(body) {
        Ok(e) if !e.errors.is_empty() => WfxError::Api {
            status: status.as_u16(),
            errors: e.errors,
        },
        _ => WfxError::Text {
            status: status.as_u16(),
            body: body.trim().chars().take(512).collect(),
        },
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// The job events of one connection; `None` when the server closed it.
pub struct EventStream {
    body: ByteStream,
    parser: sse::Parser,
    ready: std::collections::VecDeque<sse::Event>,
    /// Longest time without a complete line (a keepalive at least).
    silence: Duration,
    last_line: tokio::time::Instant,
    /// Unreadable events are logged once a minute at most: the server sends as many as it likes.
    unreadable: Throttle,
}

impl EventStream {
    /// The next job event. Events whose data is not a job event are skipped (logged). A stream
    /// that completes no line (event, field or keepalive) within the silence bound is broken off,
    /// whether it sends nothing or dribbles bytes.
    pub async fn next(&mut self) -> Option<Result<JobEvent, WfxError>> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                match parse_event(&e.data) {
                    Ok(ev) => return Some(Ok(ev)),
                    Err(err) => {
                        if let Some(n) = self.unreadable.allow(tokio::time::Instant::now()) {
                            let more = if n > 0 {
                                format!(" ({n} more since the last such warning)")
                            } else {
                                String::new()
                            };
                            tracing::warn!("skipping an unreadable wfx event: {err}{more}");
                        }
                        continue;
                    }
                }
            }
            let deadline = self.last_line + self.silence;
            let Ok(next) = tokio::time::timeout_at(deadline, self.body.next()).await else {
                return Some(Err(WfxError::Network(format!(
                    "no event nor keepalive for {:?}",
                    self.silence
                ))));
            };
            match next? {
                Ok(chunk) => {
                    let lines = self.parser.lines;
                    match self.parser.push(&chunk) {
                        Ok(evs) => self.ready.extend(evs),
                        Err(e) => return Some(Err(WfxError::Decode(e.to_string()))),
                    }
                    if self.parser.lines != lines {
                        self.last_line = tokio::time::Instant::now();
                    }
                }
                Err(e) => return Some(Err(WfxError::Network(crate::source::http_error(&e)))),
            }
        }
    }

    /// Keepalive comments seen: the connection is alive even without events.
    pub fn keepalives(&self) -> u64 {
        self.parser.comments
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_query_in_the_base_url_stays_after_the_path() {
        assert_eq!(
            api_url(
                "http://h/api/wfx/v1?token=t",
                "/jobs",
                &[("clientId", "d 1")]
            ),
            "http://h/api/wfx/v1/jobs?token=t&clientId=d%201"
        );
        assert_eq!(
            api_url("http://h/api/?token=t#f", "/jobs/1/status", &[]),
            "http://h/api/jobs/1/status?token=t"
        );
        assert_eq!(api_url("http://h/api", "/jobs", &[]), "http://h/api/jobs");
    }

    use super::*;

    #[test]
    fn both_error_formats() {
        let e = error_from(
            StatusCode::BAD_REQUEST,
            r#"{"errors":[{"code":"wfx.jobModifiedConcurrently","logref":"ab","message":"retry"}]}"#,
        );
        assert!(e.has_code("wfx.jobModifiedConcurrently"));
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "wfx: 400: wfx.jobModifiedConcurrently (retry)"
        );
        let e = error_from(StatusCode::BAD_REQUEST, "progress: must be <= 100\n");
        assert_eq!(e.to_string(), "wfx: 400: progress: must be <= 100");
        let e = error_from(
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"wfx.jobNotFound"}]}"#,
        );
        assert!(e.is_not_found());
        assert!(error_from(StatusCode::SERVICE_UNAVAILABLE, "").is_transient());
        assert!(WfxError::Network("refused".into()).is_transient());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("job-1_a.b"), "job-1_a.b");
        assert_eq!(encode("../x y"), "..%2Fx%20y");
    }

    /// A server on loopback that answers every request with `body` (200, JSON).
    async fn answering(body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/wfx/v1", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            }
        });
        url
    }

    /// The answer about a job decides what happens to it: an answer about another job (or
    /// one whose id is no job id) is an error, not taken for it.
    #[tokio::test]
    async fn an_answer_about_another_job_is_refused() {
        let url = answering(r#"{"id":"other","status":{"state":"TERMINATED"}}"#).await;
        let c = WfxClient::new(&url, "dev", crate::http::default_client());
        let e = c.job(&JobId::parse("j1").unwrap()).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "wfx sent something unreadable: asked for job j1, wfx answered with job other"
        );
        let url = answering(r#"{"id":"..","status":{"state":"TERMINATED"}}"#).await;
        let c = WfxClient::new(&url, "dev", crate::http::default_client());
        let e = c.job(&JobId::parse("j1").unwrap()).await.unwrap_err();
        assert!(e.to_string().contains("dot segment"), "{e}");
        let url = answering(r#"{"id":"j1","status":{"state":"TERMINATED"}}"#).await;
        let c = WfxClient::new(&url, "dev", crate::http::default_client());
        assert_eq!(c.job(&JobId::parse("j1").unwrap()).await.unwrap().id, "j1");
    }

    /// Whatever a job id holds, the request goes to that job's resource on the configured
    /// server, with the configured query (none).
    #[test]
    fn job_ids_cannot_change_the_request() {
        let c = WfxClient::new(
            "http://127.0.0.1:9/api/wfx/v1",
            "dev",
            crate::http::default_client(),
        );
        for (id, path) in [
            ("j1", "/api/wfx/v1/jobs/j1/status"),
            ("../../..", "/api/wfx/v1/jobs/..%2F..%2F../status"),
            ("/abs/dir", "/api/wfx/v1/jobs/%2Fabs%2Fdir/status"),
            (
                "x?clientId=other#f",
                "/api/wfx/v1/jobs/x%3FclientId%3Dother%23f/status",
            ),
            ("50%2F..", "/api/wfx/v1/jobs/50%252F../status"),
            ("...", "/api/wfx/v1/jobs/.../status"),
        ] {
            let id = JobId::parse(id).unwrap();
            let req = c
                .request(Method::PUT, &job_path(&id, "/status"))
                .build()
                .unwrap();
            assert_eq!(req.url().path(), path, "{id}");
            assert_eq!(req.url().query(), None, "{id}");
            assert_eq!(req.url().fragment(), None, "{id}");
            assert_eq!(req.url().host_str(), Some("127.0.0.1"));
        }
    }
}

//! The operator tool's wfx client, on the northbound (management) API: creating onboarding
//! jobs, listing them, writing the answer and moving the state as actor WFX, and following the
//! event stream.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::protocol::WORKFLOW;

/// What went wrong talking to wfx.
#[derive(Debug, thiserror::Error)]
pub enum NorthError {
    /// The request did not get an answer.
    #[error("wfx at {url}: {reason}")]
    Network {
        /// The request.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// wfx answered with an error status.
    #[error("wfx: {method} {url}: {status}: {body}")]
    Status {
        /// The request's method.
        method: String,
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// wfx's answer (cut).
        body: String,
    },
    /// wfx's answer is not the JSON expected.
    #[error("wfx: {url}: unreadable answer: {reason}")]
    Decode {
        /// The request.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Percent-encodes a path segment or query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The operator tool's client of wfx's management (northbound) API.
#[derive(Clone, Debug)]
pub struct North {
    base: String,
    http: reqwest::Client,
}

impl North {
    /// A client of the wfx at `base` (its northbound URL).
    pub fn new(base: &str) -> Result<North, NorthError> {
        // rustls over ring, as in the agent (reqwest is built without a provider of its own).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| NorthError::Network {
                url: base.to_owned(),
                reason: chain(&e),
            })?;
        Ok(North {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, NorthError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| NorthError::Network {
            url: url.clone(),
            reason: chain(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| NorthError::Network {
            url: url.clone(),
            reason: chain(&e),
        })?;
        if !status.is_success() {
            return Err(NorthError::Status {
                method: method.to_string(),
                url,
                status: status.as_u16(),
                body: text.trim().chars().take(512).collect(),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| NorthError::Decode {
            url,
            reason: e.to_string(),
        })
    }

    /// Onboarding jobs, oldest first, every page; `filter` adds query parameters (e.g.
    /// `("clientId", ..)`, `("group", "OPEN")`).
    pub async fn jobs(&self, filter: &[(&str, &str)]) -> Result<Vec<Value>, NorthError> {
        const PAGE: usize = 100;
        let mut out = Vec::new();
        loop {
            let mut q = format!(
                "/jobs?workflow={}&sort=asc&limit={PAGE}&offset={}",
                encode(WORKFLOW),
                out.len()
            );
            for (k, v) in filter {
                q.push_str(&format!("&{}={}", encode(k), encode(v)));
            }
            let page = self.call(Method::GET, &q, None).await?;
            let content = page
                .get("content")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let n = content.len();
            out.extend(content);
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    /// The job `id` as wfx shows it.
    pub async fn job(&self, id: &str) -> Result<Value, NorthError> {
        self.call(Method::GET, &format!("/jobs/{}", encode(id)), None)
            .await
    }

    /// Opens an onboarding job for `client_id` with `definition`.
    pub async fn create(&self, client_id: &str, definition: &Value) -> Result<Value, NorthError> {
        self.call(
            Method::POST,
            "/jobs",
            Some(&json!({"clientId": client_id, "workflow": WORKFLOW, "definition": definition})),
        )
        .await
    }

    /// Replaces the definition of job `id` (the fleet's answer).
    pub async fn put_definition(&self, id: &str, definition: &Value) -> Result<Value, NorthError> {
        self.call(
            Method::PUT,
            &format!("/jobs/{}/definition", encode(id)),
            Some(definition),
        )
        .await
    }

    /// Sets the status of job `id` (a transition of the workflow).
    pub async fn put_status(&self, id: &str, status: &Value) -> Result<Value, NorthError> {
        self.call(
            Method::PUT,
            &format!("/jobs/{}/status", encode(id)),
            Some(status),
        )
        .await
    }

    /// Opens the event stream of onboarding jobs.
    pub async fn events(&self) -> Result<Events, NorthError> {
        let url = format!("{}/jobs/events?workflows={}", self.base, encode(WORKFLOW));
        let resp = self
            .http
            .get(&url)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| NorthError::Network {
                url: url.clone(),
                reason: chain(&e),
            })?;
        if !resp.status().is_success() {
            return Err(NorthError::Status {
                method: "GET".into(),
                url,
                status: resp.status().as_u16(),
                body: String::new(),
            });
        }
        Ok(Events {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            data: String::new(),
        })
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Server-sent events: only `data` matters here (wfx sends `data`, `id` and comments). Written
/// here rather than shared with the agent's parser, which lives in the crate that depends on
/// this one.
pub struct Events {
    body: ByteStream,
    buf: Vec<u8>,
    data: String,
}

/// Longest line kept: a longer one is a broken stream.
const MAX_LINE: usize = 1 << 20;

impl Events {
    /// The next event's data; `None` when the stream ended or broke (wfx's keepalives come
    /// every 30 s, so 75 s of silence is a dead stream).
    pub async fn next(&mut self) -> Option<String> {
        loop {
            while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8_lossy(&line);
                if line.is_empty() {
                    if !self.data.is_empty() {
                        return Some(std::mem::take(&mut self.data));
                    }
                } else if let Some(d) = line.strip_prefix("data:") {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            if self.buf.len() > MAX_LINE {
                return None;
            }
            match tokio::time::timeout(Duration::from_secs(75), self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }
}

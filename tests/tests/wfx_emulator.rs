//! Tests of the wfx emulator against the contract: `tests/wfx/spec/wfx.openapi.yml`
//! (verbatim wfx spec), the DAU workflows and `shared/wfx/NOTES.md`.
//!
//! Every test starts its own emulator on free ports and talks HTTP to it,
//! like the agent will. JSON answers are validated against the spec's
//! component schemas, converted to JSON Schema (see [`Spec`]).

use std::time::Duration;

use cip_update_agent_tests::emulators::wfx::{Options, WfxEmulator};
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const DIRECT: &str = "wfx.workflow.dau.direct";
const PHASED: &str = "wfx.workflow.dau.phased";

// ---------------------------------------------------------------- helpers

fn start() -> WfxEmulator {
    WfxEmulator::start(Options {
        keepalive: Duration::from_millis(300),
        ..Options::default()
    })
    .expect("start emulator")
}

/// A finished request: status, content type and body.
struct Answer {
    status: StatusCode,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn assert_json(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert!(
            self.content_type.starts_with("application/json"),
            "content type {}",
            self.content_type
        );
        self.json()
    }

    /// A plain-text answer (not JSON) with this status.
    fn assert_plain(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert!(
            self.content_type.starts_with("text/plain"),
            "content type {:?}, body {}",
            self.content_type,
            self.body
        );
        assert!(!self.body.trim().is_empty(), "plain-text error has a text");
        assert!(
            serde_json::from_str::<Value>(&self.body).is_err(),
            "expected plain text, got JSON {}",
            self.body
        );
    }

    /// The handler-error format with this code.
    fn assert_error(&self, status: u16, code: &str) {
        let v = self.assert_json(status);
        spec().check("ErrorResponse", &v);
        assert_eq!(v["errors"][0]["code"], code, "{v}");
    }
}

async fn call(method: Method, url: &str, body: Option<&str>) -> Answer {
    let mut req = cip_update_agent::http::default_client().request(method, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = resp.text().await.expect("body");
    Answer {
        status,
        content_type,
        body,
    }
}

async fn get(url: &str) -> Answer {
    call(Method::GET, url, None).await
}

async fn put(url: &str, body: &Value) -> Answer {
    call(Method::PUT, url, Some(&body.to_string())).await
}

async fn post(url: &str, body: &Value) -> Answer {
    call(Method::POST, url, Some(&body.to_string())).await
}

/// Creates a job northbound and returns it.
async fn create_job(emu: &WfxEmulator, client: &str, workflow: &str, definition: Value) -> Value {
    let mut req = json!({"clientId": client, "workflow": workflow});
    if !definition.is_null() {
        req["definition"] = definition;
    }
    let job = post(&format!("{}/jobs", emu.north_url()), &req)
        .await
        .assert_json(201);
    spec().check("Job", &job);
    job
}

fn dau_definition(uri: &str) -> Value {
    json!({"version": "1.0", "type": ["firmware"], "artifacts": [{"name": "rootfs", "version": "2.0", "uri": uri}]})
}

/// PUT status on `base` (south or north URL); answers the raw reply.
async fn set_state(base: &str, id: &str, status: Value) -> Answer {
    put(&format!("{base}/jobs/{id}/status"), &status).await
}

/// PUT status that must succeed; answers the new status.
async fn advance(base: &str, id: &str, state: &str) -> Value {
    let v = set_state(base, id, json!({"state": state}))
        .await
        .assert_json(200);
    spec().check("JobStatus", &v);
    v
}

/// The spec's component schemas as one JSON Schema document.
struct Spec {
    doc: Value,
}

fn spec() -> Spec {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/wfx/spec/wfx.openapi.yml");
    let text = std::fs::read_to_string(path).expect("read spec");
    let doc: Value = serde_norway::from_str(&text).expect("parse spec");
    let mut schemas = doc["components"]["schemas"].clone();
    to_json_schema(&mut schemas);
    Spec {
        doc: json!({"components": {"schemas": schemas}}),
    }
}

/// OpenAPI 3.0 schema objects are JSON Schema but for `nullable`, which
/// becomes a `"null"` type. To catch misspelt or stray fields, objects with
/// declared properties are also closed (`additionalProperties: false`),
/// which is stricter than the spec but exactly what the emulator must emit.
fn to_json_schema(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if o.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(t)) = o.get("type").cloned() {
                    o.insert("type".into(), json!([t, "null"]));
                }
            }
            if o.contains_key("properties") && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, child) in o.iter_mut() {
                // `example` values are free text, not schemas.
                if k != "example" {
                    to_json_schema(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

impl Spec {
    fn errors(&self, component: &str, instance: &Value) -> Vec<String> {
        let mut schema = self.doc.clone();
        schema["$ref"] = json!(format!("#/components/schemas/{component}"));
        let validator = jsonschema::validator_for(&schema).expect("valid schema");
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect()
    }

    fn check(&self, component: &str, instance: &Value) {
        let errors = self.errors(component, instance);
        assert!(
            errors.is_empty(),
            "{component} does not match the spec: {errors:?}\n{instance:#}"
        );
    }
}

/// An open event stream, read frame by frame.
struct Events {
    stream: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>,
    >,
    buf: String,
}

impl Events {
    async fn open(emu: &WfxEmulator, query: &str) -> Events {
        let before = emu.event_subscribers();
        let resp = cip_update_agent::http::default_client()
            .get(format!("{}/jobs/events?{query}", emu.south_url()))
            .send()
            .await
            .expect("open events");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        // The subscription exists once the server has started the body.
        for _ in 0..200 {
            if emu.event_subscribers() > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(emu.event_subscribers() > before, "subscribed");
        Events {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next frame (text up to a blank line), None at the end of the
    /// stream; panics after `timeout`.
    async fn frame(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let frame = self.buf[..pos].to_owned();
                self.buf.drain(..pos + 2);
                return Some(frame);
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("no event frame within {timeout:?}; buffered {:?}", self.buf),
                Ok(None) => return None,
                Ok(Some(chunk)) => self
                    .buf
                    .push_str(std::str::from_utf8(&chunk.expect("chunk")).expect("UTF-8")),
            }
        }
    }

    /// The next data frame, skipping keepalives: (data, id).
    async fn event(&mut self) -> (Value, u64) {
        loop {
            let frame = self
                .frame(Duration::from_secs(5))
                .await
                .expect("stream open");
            if frame.starts_with(':') {
                continue;
            }
            let (data, id) = parse_event(&frame);
            return (data, id);
        }
    }
}

/// `data: {...}\nid: N` in this order, as wfx writes them.
fn parse_event(frame: &str) -> (Value, u64) {
    let mut lines = frame.lines();
    let data = lines
        .next()
        .and_then(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("data line first: {frame:?}"));
    let id = lines
        .next()
        .and_then(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("id line second: {frame:?}"));
    assert!(lines.next().is_none(), "two lines: {frame:?}");
    let data: Value = serde_json::from_str(data).expect("event JSON");
    // The event's job carries only the workflow's name (as in wfx), so only
    // the parts with a complete schema are checked.
    assert!(data["ctime"].is_string(), "{data}");
    spec().check("JobEventAction", &data["action"]);
    spec().check("JobStatus", &data["job"]["status"]);
    (data, id.parse().expect("numeric id"))
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn direct_workflow_walk_with_eligibility_and_immediate() {
    let emu = start();
    let (s, n) = (emu.south_url(), emu.north_url());
    let job = create_job(&emu, "dev1", DIRECT, dau_definition("http://x/a.swu")).await;
    let id = job["id"].as_str().expect("id");
    assert_eq!(job["status"]["state"], "INSTALL", "initial state");
    assert_eq!(job["workflow"]["name"], DIRECT);

    // Staying in the same state is allowed even without an INSTALL->INSTALL
    // transition, for both actors.
    advance(&s, id, "INSTALL").await;
    advance(&n, id, "INSTALL").await;
    // WFX may not take CLIENT transitions.
    set_state(&n, id, json!({"state": "INSTALLING"}))
        .await
        .assert_error(400, "wfx.invalidRequest");
    // Unknown states and non-existing transitions are refused.
    set_state(&s, id, json!({"state": "NOPE"}))
        .await
        .assert_error(400, "wfx.invalidRequest");
    set_state(&s, id, json!({"state": "ACTIVATED"}))
        .await
        .assert_error(400, "wfx.invalidRequest");

    // The status is replaced, not merged; the client's hash is overwritten.
    let st = set_state(
        &s,
        id,
        json!({"state": "INSTALLING", "clientId": "dev1", "progress": 10, "message": "m",
               "context": {"k": 1}, "definitionHash": "bogus"}),
    )
    .await
    .assert_json(200);
    assert_eq!(st["progress"], 10);
    assert_eq!(st["context"], json!({"k": 1}));
    assert_eq!(st["definitionHash"], job["status"]["definitionHash"]);
    let st = advance(&s, id, "INSTALLING").await;
    assert_eq!(
        st,
        json!({"state": "INSTALLING", "definitionHash": job["status"]["definitionHash"]})
    );

    // INSTALLED -> ACTIVATE is IMMEDIATE: the answer shows ACTIVATE and the
    // client's progress/message/context are gone.
    let st = set_state(
        &s,
        id,
        json!({"state": "INSTALLED", "progress": 100, "message": "done", "context": {"a": 1}}),
    )
    .await
    .assert_json(200);
    assert_eq!(st["state"], "ACTIVATE");
    for k in ["progress", "message", "context"] {
        assert!(st.get(k).is_none(), "{k} dropped: {st}");
    }
    let stored = get(&format!("{s}/jobs/{id}/status")).await.assert_json(200);
    assert_eq!(stored, st);

    // A CLIENT cannot take the WFX transition itself (job is in ACTIVATE).
    let phased = create_job(&emu, "dev1", PHASED, Value::Null).await;
    set_state(
        &s,
        phased["id"].as_str().unwrap(),
        json!({"state": "DOWNLOAD"}),
    )
    .await
    .assert_error(400, "wfx.invalidRequest");

    advance(&s, id, "ACTIVATING").await;
    advance(&s, id, "ACTIVATING").await;
    assert_eq!(advance(&s, id, "ACTIVATED").await["state"], "ACTIVATED");
    set_state(&s, id, json!({"state": "TERMINATED"}))
        .await
        .assert_error(400, "wfx.invalidRequest");

    // history=true shows the replaced statuses, newest first.
    let full = get(&format!("{s}/jobs/{id}?history=true"))
        .await
        .assert_json(200);
    spec().check("Job", &full);
    let hist = full["history"].as_array().expect("history");
    assert_eq!(hist[0]["status"]["state"], "ACTIVATING");
    assert_eq!(hist.last().unwrap()["status"]["state"], "INSTALL");
    let plain = get(&format!("{s}/jobs/{id}")).await.assert_json(200);
    assert!(plain.get("history").is_none(), "history only on request");
}

#[tokio::test]
async fn phased_workflow_walk_and_groups() {
    let emu = start();
    let (s, n) = (emu.south_url(), emu.north_url());
    let job = create_job(&emu, "dev2", PHASED, dau_definition("http://x/b.swu")).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["status"]["state"], "CREATED");
    let open = format!("{s}/jobs?clientId=dev2&group=OPEN");
    let count = |v: Value| v["content"].as_array().unwrap().len();
    assert_eq!(
        count(get(&open).await.assert_json(200)),
        0,
        "CREATED has no group"
    );

    advance(&n, id, "CREATED").await; // WFX CREATED -> CREATED exists
    set_state(&s, id, json!({"state": "DOWNLOAD"}))
        .await
        .assert_error(400, "wfx.invalidRequest");
    advance(&n, id, "DOWNLOAD").await;
    assert_eq!(count(get(&open).await.assert_json(200)), 1);
    set_state(&n, id, json!({"state": "DOWNLOADING"}))
        .await
        .assert_error(400, "wfx.invalidRequest");
    advance(&s, id, "DOWNLOADING").await;
    advance(&s, id, "DOWNLOADING").await;
    advance(&s, id, "DOWNLOADED").await;
    // DOWNLOADED -> INSTALL is the operator's, and not IMMEDIATE.
    set_state(&s, id, json!({"state": "INSTALL"}))
        .await
        .assert_error(400, "wfx.invalidRequest");
    advance(&n, id, "INSTALL").await;
    advance(&s, id, "INSTALLING").await;
    assert_eq!(advance(&s, id, "INSTALLED").await["state"], "ACTIVATE");
    advance(&s, id, "ACTIVATING").await;
    advance(&s, id, "ACTIVATED").await;
    assert_eq!(count(get(&open).await.assert_json(200)), 0);
    let closed = get(&format!("{s}/jobs?clientId=dev2&group=CLOSED,FAILED"))
        .await
        .assert_json(200);
    assert_eq!(closed["content"][0]["id"], id);

    // A failing device ends in TERMINATED (group FAILED).
    let job2 = create_job(&emu, "dev2", PHASED, Value::Null).await;
    let id2 = job2["id"].as_str().unwrap();
    advance(&n, id2, "DOWNLOAD").await;
    advance(&s, id2, "TERMINATED").await;
    let failed = get(&format!("{s}/jobs?clientId=dev2&group=FAILED"))
        .await
        .assert_json(200);
    assert_eq!(failed["content"].as_array().unwrap().len(), 1);
    assert_eq!(failed["content"][0]["id"], id2);
}

#[tokio::test]
async fn definition_hash_follows_definition() {
    let emu = start();
    let s = emu.south_url();
    let def = dau_definition("http://x/1.swu");
    let job = create_job(&emu, "dev3", DIRECT, def.clone()).await;
    let id = job["id"].as_str().unwrap();
    let hash = job["status"]["definitionHash"].as_str().unwrap().to_owned();
    // Documented serialization: compact JSON with sorted keys (Go's json.Marshal).
    let canonical = r#"{"artifacts":[{"name":"rootfs","uri":"http://x/1.swu","version":"2.0"}],"type":["firmware"],"version":"1.0"}"#;
    assert_eq!(hash, hex::encode(Sha256::digest(canonical.as_bytes())));
    assert_eq!(
        get(&format!("{s}/jobs/{id}/definition"))
            .await
            .assert_json(200),
        def
    );

    // A device may replace the definition (southbound).
    let def2 = dau_definition("http://x/2.swu");
    let answer = put(&format!("{s}/jobs/{id}/definition"), &def2)
        .await
        .assert_json(200);
    assert_eq!(answer, def2);
    let st = get(&format!("{s}/jobs/{id}/status")).await.assert_json(200);
    let hash2 = st["definitionHash"].as_str().unwrap();
    assert_ne!(hash2, hash, "hash changes with the definition");
    assert_eq!(st["state"], "INSTALL", "status otherwise unchanged");

    // Same content in another key order: same hash.
    let reordered: Value = serde_json::from_str(
        r#"{"version":"1.0","artifacts":[{"uri":"http://x/2.swu","version":"2.0","name":"rootfs"}],"type":["firmware"]}"#,
    )
    .unwrap();
    put(
        &format!("{}/jobs/{id}/definition", emu.north_url()),
        &reordered,
    )
    .await
    .assert_json(200);
    let st = get(&format!("{s}/jobs/{id}/status")).await.assert_json(200);
    assert_eq!(st["definitionHash"], hash2);

    // A definition must be an object (plain-text 400).
    put(&format!("{s}/jobs/{id}/definition"), &json!([1]))
        .await
        .assert_plain(400);
}

#[tokio::test]
async fn southbound_forbids_management_operations() {
    let emu = start();
    let (s, n) = (emu.south_url(), emu.north_url());
    let job = create_job(&emu, "dev4", DIRECT, Value::Null).await;
    let id = job["id"].as_str().unwrap();
    let wf: Value = get(&format!("{n}/workflows/{DIRECT}"))
        .await
        .assert_json(200);
    let mut wf_copy = wf.clone();
    wf_copy["name"] = json!("copy.of.direct");

    let forbidden = [
        (
            Method::POST,
            format!("{s}/jobs"),
            json!({"clientId": "x", "workflow": DIRECT}),
        ),
        (Method::DELETE, format!("{s}/jobs/{id}"), Value::Null),
        (Method::POST, format!("{s}/jobs/{id}/tags"), json!(["a"])),
        (Method::DELETE, format!("{s}/jobs/{id}/tags"), json!(["a"])),
        (Method::POST, format!("{s}/workflows"), wf_copy.clone()),
        (
            Method::DELETE,
            format!("{s}/workflows/{DIRECT}"),
            Value::Null,
        ),
    ];
    for (method, url, body) in forbidden {
        let body = (!body.is_null()).then(|| body.to_string());
        let a = call(method.clone(), &url, body.as_deref()).await;
        assert_eq!(a.status, 403, "{method} {url}");
        assert!(a.body.is_empty(), "403 has an empty body: {:?}", a.body);
    }
    // Nothing changed.
    get(&format!("{s}/jobs/{id}")).await.assert_json(200);
    get(&format!("{s}/workflows/{DIRECT}"))
        .await
        .assert_json(200);

    // The same operations are allowed northbound.
    let tags = post(&format!("{n}/jobs/{id}/tags"), &json!(["b", "a"]))
        .await
        .assert_json(200);
    spec().check("TagList", &tags);
    assert_eq!(tags, json!(["a", "b"]));
    assert_eq!(
        get(&format!("{s}/jobs/{id}/tags")).await.assert_json(200),
        tags
    );
    let tags = call(
        Method::DELETE,
        &format!("{n}/jobs/{id}/tags"),
        Some(r#"["a"]"#),
    )
    .await
    .assert_json(200);
    assert_eq!(tags, json!(["b"]));
    let created = post(&format!("{n}/workflows"), &wf_copy)
        .await
        .assert_json(201);
    spec().check("Workflow", &created);
    post(&format!("{n}/workflows"), &wf_copy)
        .await
        .assert_error(400, "wfx.workflowNotUnique");
    let del = call(
        Method::DELETE,
        &format!("{n}/workflows/copy.of.direct"),
        None,
    )
    .await;
    assert_eq!(del.status, 204);
    let del = call(Method::DELETE, &format!("{n}/jobs/{id}"), None).await;
    assert_eq!(del.status, 204);
    get(&format!("{s}/jobs/{id}"))
        .await
        .assert_error(404, "wfx.jobNotFound");
}

#[tokio::test]
async fn spec_violations_are_plain_text_400() {
    let emu = start();
    let s = emu.south_url();
    let job = create_job(&emu, "dev5", DIRECT, Value::Null).await;
    let url = format!("{s}/jobs/{}/status", job["id"].as_str().unwrap());
    let bad = [
        json!({"state": "INSTALLING", "progress": 101}).to_string(),
        json!({"state": "INSTALLING", "progress": 1.5}).to_string(),
        json!({"state": "INSTALLING", "message": "x".repeat(1025)}).to_string(),
        json!({"state": "INSTALLING", "context": "not an object"}).to_string(),
        json!({"state": "INSTALLING", "context": [1]}).to_string(),
        json!({"progress": 5}).to_string(),
        json!({"state": ""}).to_string(),
        "{not json".to_owned(),
        String::new(),
    ];
    for body in &bad {
        call(Method::PUT, &url, Some(body)).await.assert_plain(400);
    }
    // Only JSON bodies are declared in the spec.
    let resp = cip_update_agent::http::default_client()
        .put(&url)
        .header("content-type", "text/plain")
        .body(r#"{"state":"INSTALLING"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    // The limits themselves are fine ("ü" counts as one character).
    let ok = json!({"state": "INSTALLING", "progress": 100, "message": "ü".repeat(1024)});
    put(&url, &ok).await.assert_json(200);
    // Other bodies and query values are validated too.
    post(
        &format!("{}/jobs", emu.north_url()),
        &json!({"clientId": "x"}),
    )
    .await
    .assert_plain(400);
    post(
        &format!("{}/jobs", emu.north_url()),
        &json!({"clientId": "x", "workflow": DIRECT, "definition": 3}),
    )
    .await
    .assert_plain(400);
    get(&format!("{s}/jobs?limit=abc")).await.assert_plain(400);
    get(&format!("{s}/jobs?sort=up")).await.assert_plain(400);
}

#[tokio::test]
async fn not_found_and_method_errors() {
    let emu = start();
    let s = emu.south_url();
    for url in [
        format!("{s}/jobs/unknown-id"),
        format!("{s}/jobs/unknown-id/status"),
        format!("{s}/jobs/unknown-id/definition"),
        format!("{s}/jobs/unknown-id/tags"),
    ] {
        get(&url).await.assert_error(404, "wfx.jobNotFound");
    }
    set_state(&s, "unknown-id", json!({"state": "INSTALL"}))
        .await
        .assert_error(404, "wfx.jobNotFound");
    get(&format!("{s}/workflows/nope"))
        .await
        .assert_error(404, "wfx.workflowNotFound");
    post(
        &format!("{}/jobs", emu.north_url()),
        &json!({"clientId": "x", "workflow": "nope"}),
    )
    .await
    .assert_error(400, "wfx.invalidRequest");
    get(&format!("{s}/nothing-here")).await.assert_plain(404);
    get(&format!(
        "http://{}/jobs",
        s.trim_start_matches("http://").split('/').next().unwrap()
    ))
    .await
    .assert_plain(404);
    call(Method::PATCH, &format!("{s}/jobs"), None)
        .await
        .assert_plain(405);
    call(Method::POST, &format!("{s}/jobs/x/status"), Some("{}"))
        .await
        .assert_plain(405);
}

#[tokio::test]
async fn job_listing_filters_sort_and_pagination() {
    let emu = start();
    let (s, n) = (emu.south_url(), emu.north_url());
    let mut ids = Vec::new();
    for i in 0..12 {
        let job = create_job(&emu, "many", DIRECT, Value::Null).await;
        ids.push(job["id"].as_str().unwrap().to_owned());
        if i == 0 {
            post(&format!("{n}/jobs/{}/tags", ids[0]), &json!(["red"]))
                .await
                .assert_json(200);
        }
    }
    let phased = create_job(&emu, "other", PHASED, Value::Null).await;
    post(
        &format!("{n}/jobs/{}/tags", phased["id"].as_str().unwrap()),
        &json!(["blue"]),
    )
    .await
    .assert_json(200);
    let list = |q: String| {
        let s = s.clone();
        async move {
            let v = get(&format!("{s}/jobs?{q}")).await.assert_json(200);
            spec().check("PaginatedJobList", &v);
            v
        }
    };
    let id_list = |v: &Value| -> Vec<String> {
        v["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // Default: 10 per page, oldest first, no pagination object.
    let v = list("clientId=many".into()).await;
    assert_eq!(id_list(&v), ids[..10]);
    assert!(v.get("pagination").is_none(), "pagination only on request");
    let v = list("clientId=many&pagination=true&offset=10".into()).await;
    assert_eq!(id_list(&v), ids[10..]);
    assert_eq!(
        v["pagination"],
        json!({"limit": 10, "offset": 10, "total": 12})
    );
    let v = list("clientId=many&sort=desc&limit=3&pagination=false".into()).await;
    assert_eq!(
        id_list(&v),
        [ids[11].clone(), ids[10].clone(), ids[9].clone()]
    );
    assert!(v.get("pagination").is_none());
    // Filters.
    assert_eq!(
        id_list(&list(format!("workflow={PHASED}")).await),
        [phased["id"].as_str().unwrap()]
    );
    assert_eq!(id_list(&list("tag=red".into()).await), [ids[0].clone()]);
    assert_eq!(
        id_list(&list("tag=blue,red&limit=20".into()).await).len(),
        2
    );
    assert_eq!(
        id_list(&list("state=CREATED".into()).await),
        [phased["id"].as_str().unwrap()]
    );
    assert_eq!(
        id_list(&list("clientId=other&group=OPEN".into()).await).len(),
        0
    );
    assert_eq!(
        id_list(&list("group=OPEN&limit=100".into()).await).len(),
        12
    );
    assert_eq!(id_list(&list("clientId=nobody".into()).await).len(), 0);

    // Workflows list: the onboarding workflow and both DAU workflows, by name, pagination on
    // request.
    let wfs = get(&format!("{s}/workflows?pagination=true"))
        .await
        .assert_json(200);
    spec().check("PaginatedWorkflowList", &wfs);
    let names: Vec<&str> = wfs["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cip.workflow.onboarding", DIRECT, PHASED]);
    assert_eq!(wfs["pagination"]["total"], 3);
    let wfs = get(&format!("{s}/workflows")).await.assert_json(200);
    assert!(wfs.get("pagination").is_none());
}

#[tokio::test]
async fn events_filters_ids_and_keepalive() {
    let emu = start();
    let n = emu.north_url();
    let mut by_client = Events::open(&emu, "clientIds=ev1,ev9").await;
    let mut all = Events::open(&emu, "").await;
    let mut by_workflow = Events::open(&emu, &format!("workflows={PHASED}")).await;

    let j1 = create_job(&emu, "ev1", DIRECT, dau_definition("http://x/e")).await;
    let id1 = j1["id"].as_str().unwrap();
    let j2 = create_job(&emu, "ev2", PHASED, Value::Null).await;
    let id2 = j2["id"].as_str().unwrap();
    let mut by_job = Events::open(&emu, &format!("jobIds={id1}")).await;
    // OR-ed filters: the client filter or the job filter matches.
    let mut either = Events::open(&emu, &format!("clientIds=ev2&jobIds={id1}")).await;

    advance(&emu.south_url(), id1, "INSTALLING").await;
    put(&format!("{n}/jobs/{id1}/definition"), &json!({"v": 2}))
        .await
        .assert_json(200);
    post(&format!("{n}/jobs/{id2}/tags"), &json!(["t"]))
        .await
        .assert_json(200);
    call(
        Method::DELETE,
        &format!("{n}/jobs/{id2}/tags"),
        Some(r#"["t"]"#),
    )
    .await
    .assert_json(200);
    assert_eq!(
        call(Method::DELETE, &format!("{n}/jobs/{id1}"), None)
            .await
            .status,
        204
    );

    async fn expect_events(evs: &mut Events, want: &[(&str, &str)]) {
        for (i, (action, job)) in want.iter().enumerate() {
            let (data, id) = evs.event().await;
            assert_eq!(id, i as u64 + 1, "ids count from 1 per connection");
            assert_eq!(data["action"], *action, "{data}");
            assert_eq!(data["job"]["id"], *job, "{data}");
        }
    }
    expect_events(
        &mut by_client,
        &[
            ("CREATE", id1),
            ("UPDATE_STATUS", id1),
            ("UPDATE_DEFINITION", id1),
            ("DELETE", id1),
        ],
    )
    .await;
    expect_events(
        &mut all,
        &[
            ("CREATE", id1),
            ("CREATE", id2),
            ("UPDATE_STATUS", id1),
            ("UPDATE_DEFINITION", id1),
            ("ADD_TAGS", id2),
            ("DELETE_TAGS", id2),
            ("DELETE", id1),
        ],
    )
    .await;
    expect_events(
        &mut by_workflow,
        &[("CREATE", id2), ("ADD_TAGS", id2), ("DELETE_TAGS", id2)],
    )
    .await;
    expect_events(
        &mut by_job,
        &[
            ("UPDATE_STATUS", id1),
            ("UPDATE_DEFINITION", id1),
            ("DELETE", id1),
        ],
    )
    .await;
    expect_events(
        &mut either,
        &[
            ("UPDATE_STATUS", id1),
            ("UPDATE_DEFINITION", id1),
            ("ADD_TAGS", id2),
            ("DELETE_TAGS", id2),
            ("DELETE", id1),
        ],
    )
    .await;

    // Event content: the reduced job of wfx.
    let mut fresh = Events::open(&emu, "clientIds=ev3&tags=site-a").await;
    let j3 = create_job(&emu, "ev3", DIRECT, Value::Null).await;
    let (data, id) = fresh.event().await;
    assert_eq!(id, 1);
    assert_eq!(data["job"]["clientId"], "ev3");
    assert_eq!(data["job"]["workflow"], json!({"name": DIRECT}));
    assert_eq!(data["job"]["status"]["state"], "INSTALL");
    assert_eq!(data["job"]["mtime"], j3["mtime"]);
    assert_eq!(data["tags"], json!(["site-a"]), "subscriber tags copied");

    // With nothing happening, only keepalive comments arrive (every 300 ms here).
    let frame = fresh.frame(Duration::from_secs(3)).await.expect("open");
    assert_eq!(frame, ": keepalive");
    let started = tokio::time::Instant::now();
    let frame = fresh.frame(Duration::from_secs(3)).await.expect("open");
    assert_eq!(frame, ": keepalive");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "keepalives are paced by the interval, not sent in a burst"
    );
}

#[tokio::test]
async fn fault_injection_hooks() {
    let emu = start();
    let s = emu.south_url();
    let job = create_job(&emu, "f1", DIRECT, Value::Null).await;
    let id = job["id"].as_str().unwrap();

    // 503 for the next N requests, then normal again.
    emu.fail_next_requests(2);
    assert_eq!(get(&format!("{s}/health")).await.status, 503);
    assert_eq!(get(&format!("{s}/jobs/{id}")).await.status, 503);
    get(&format!("{s}/jobs/{id}")).await.assert_json(200);

    // One conflict on the next status update, which changes nothing.
    emu.conflict_next_status_update();
    set_state(&s, id, json!({"state": "INSTALLING"}))
        .await
        .assert_error(400, "wfx.jobModifiedConcurrently");
    assert_eq!(
        get(&format!("{s}/jobs/{id}/status")).await.assert_json(200)["state"],
        "INSTALL"
    );
    advance(&s, id, "INSTALLING").await;

    // Cutting event streams ends them.
    let mut events = Events::open(&emu, "").await;
    emu.cut_event_streams();
    let mut ended = false;
    for _ in 0..5 {
        match events.frame(Duration::from_secs(5)).await {
            None => {
                ended = true;
                break;
            }
            Some(f) => assert!(f.starts_with(':'), "only keepalives before the end: {f}"),
        }
    }
    assert!(ended, "stream ended");

    // Request counting per listener, method and route.
    emu.reset_request_counts();
    get(&format!("{s}/jobs?clientId=f1&group=OPEN"))
        .await
        .assert_json(200);
    get(&format!("{s}/jobs/{id}")).await.assert_json(200);
    get(&format!("{s}/jobs/{id}")).await.assert_json(200);
    get(&format!("{}/health", emu.north_url()))
        .await
        .assert_json(200);
    get(&format!("{s}/nowhere")).await.assert_plain(404);
    let counts = emu.request_counts();
    let expected: std::collections::BTreeMap<String, u64> = [
        ("south GET /jobs", 1),
        ("south GET /jobs/{id}", 2),
        ("north GET /health", 1),
        ("south GET (unmatched)", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts, expected);

    // The request log (opt-in): arrival order, route, path and query as sent.
    assert!(emu.request_log().is_empty(), "no log unless asked for");
    emu.log_requests();
    get(&format!("{s}/jobs?clientId=f1")).await.assert_json(200);
    get(&format!("{s}/jobs/{id}")).await.assert_json(200);
    let log = emu.request_log();
    let seen: Vec<(String, &str)> = log.iter().map(|r| (r.key(), r.uri.as_str())).collect();
    assert_eq!(
        seen,
        [
            ("south GET /jobs".to_owned(), "/api/wfx/v1/jobs?clientId=f1"),
            (
                "south GET /jobs/{id}".to_owned(),
                &*format!("/api/wfx/v1/jobs/{id}")
            ),
        ]
    );
    assert!(log[0].at <= log[1].at);
    // The hooks are not reachable through the wfx routes.
    get(&format!("{s}/fail-next")).await.assert_plain(404);
}

#[tokio::test]
async fn answers_match_the_openapi_schemas() {
    let emu = start();
    let (s, n) = (emu.south_url(), emu.north_url());
    let spec = spec();
    let job = create_job(&emu, "sc", PHASED, dau_definition("http://x/s")).await;
    let id = job["id"].as_str().unwrap();
    post(&format!("{n}/jobs/{id}/tags"), &json!(["x"]))
        .await
        .assert_json(200);
    advance(&n, id, "DOWNLOAD").await;
    let st = set_state(
        &s,
        id,
        json!({"state": "DOWNLOADING", "progress": 5, "message": "m", "context": {"a": [1]}}),
    )
    .await
    .assert_json(200);
    spec.check("JobStatus", &st);
    let full = get(&format!("{s}/jobs/{id}?history=true"))
        .await
        .assert_json(200);
    spec.check("Job", &full);
    let re = regex_lite_id(full["id"].as_str().unwrap());
    assert!(re, "job id matches [A-Za-z0-9_.-]{{1,36}}: {}", full["id"]);
    for k in ["stime", "mtime"] {
        assert!(
            full[k].as_str().unwrap().ends_with('Z'),
            "{k} is RFC 3339 UTC"
        );
    }
    spec.check(
        "Workflow",
        &get(&format!("{s}/workflows/{PHASED}"))
            .await
            .assert_json(200),
    );
    spec.check(
        "CheckerResult",
        &get(&format!("{s}/health")).await.assert_json(200),
    );
    let version = get(&format!("{s}/version")).await.assert_json(200);
    assert_eq!(version["apiVersion"], "v1");

    // The check itself rejects wrong shapes (so the checks above mean something).
    assert!(
        !spec.errors("Job", &json!({"clientId": "c"})).is_empty(),
        "id required"
    );
    assert!(
        !spec
            .errors("JobStatus", &json!({"state": "S", "progress": 101}))
            .is_empty()
    );
    assert!(
        !spec
            .errors("Job", &json!({"id": "a", "stray": 1}))
            .is_empty(),
        "closed objects"
    );
    assert!(
        !spec
            .errors("ErrorResponse", &json!({"errors": [{"code": "c"}]}))
            .is_empty()
    );
    assert!(
        spec.errors("Job", &json!({"id": "a", "stime": null}))
            .is_empty(),
        "nullable"
    );
}

fn regex_lite_id(id: &str) -> bool {
    (1..=36).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[tokio::test]
async fn binary_prints_its_urls_and_serves() {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wfx-emulator"))
        .args([
            "--south-port",
            "0",
            "--north-port",
            "0",
            "--control-port",
            "0",
            "--keepalive-secs",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wfx-emulator");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // Kill the process even when an assertion fails.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = KillOnDrop(child);
    let mut url = |side: &str| {
        let line = lines.next().expect("a line").expect("read");
        let url = line
            .strip_prefix(&format!("{side} "))
            .unwrap_or_else(|| panic!("{side} line: {line}"))
            .to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/api/wfx/v1"),
            "{url}"
        );
        url
    };
    let (s, n) = (url("south"), url("north"));
    assert_ne!(s, n, "separate ports");
    let created = post(
        &format!("{n}/jobs"),
        &json!({"clientId": "bin", "workflow": DIRECT}),
    )
    .await
    .assert_json(201);
    assert_eq!(
        post(
            &format!("{s}/jobs"),
            &json!({"clientId": "bin", "workflow": DIRECT})
        )
        .await
        .status,
        403
    );
    let listed = get(&format!("{s}/jobs?clientId=bin"))
        .await
        .assert_json(200);
    assert_eq!(listed["content"][0]["id"], created["id"]);
    // The control API (own port, outside the wfx namespace).
    let line = lines.next().expect("control line").expect("read");
    let control = line
        .strip_prefix("control ")
        .expect("control URL")
        .to_owned();
    let a = call(Method::POST, &format!("{control}/fail-next?n=1"), None).await;
    assert_eq!(a.status, 204);
    assert_eq!(get(&format!("{s}/health")).await.status, 503);
    get(&format!("{s}/health")).await.assert_json(200);
    let counts = get(&format!("{control}/requests")).await.assert_json(200);
    assert_eq!(counts["south GET /health"], 2, "{counts}");
    assert_eq!(counts["south GET /jobs"], 1, "{counts}");
}

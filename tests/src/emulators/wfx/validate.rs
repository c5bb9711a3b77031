//! Request validation against the OpenAPI spec.
//!
//! wfx validates every request against its spec before a handler runs, and
//! answers a failure with a PLAIN-TEXT 400 (not the JSON error format of the
//! handlers). These functions check the request bodies and query values the
//! emulator accepts; an `Err` carries that plain-text message, worded like
//! the validator wfx uses (kin-openapi).

use serde_json::{Map, Value};

use super::model::{JobStatus, Workflow};
use super::store::JobRequest;

/// A plain-text 400 message.
pub type Invalid = String;

fn schema_error(pointer: &str, why: &str) -> Invalid {
    format!("request body has an error: doesn't match schema: Error at \"{pointer}\": {why}")
}

/// Parses a JSON request body.
pub fn parse_body(body: &[u8]) -> Result<Value, Invalid> {
    if body.is_empty() {
        return Err("request body has an error: value is required but missing".into());
    }
    serde_json::from_slice(body)
        .map_err(|e| format!("request body has an error: failed to decode request body: {e}"))
}

fn object<'a>(v: &'a Value, pointer: &str) -> Result<&'a Map<String, Value>, Invalid> {
    v.as_object()
        .ok_or_else(|| schema_error(pointer, "value must be an object"))
}

fn string<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    required: bool,
    min: usize,
    max: Option<usize>,
) -> Result<Option<&'a str>, Invalid> {
    let pointer = format!("/{key}");
    let Some(v) = o.get(key) else {
        if required {
            return Err(schema_error(
                &pointer,
                &format!("property {key:?} is missing"),
            ));
        }
        return Ok(None);
    };
    let s = v
        .as_str()
        .ok_or_else(|| schema_error(&pointer, "value must be a string"))?;
    // The spec's lengths count characters, not bytes.
    let len = s.chars().count();
    if len < min {
        return Err(schema_error(
            &pointer,
            &format!("minimum string length is {min}"),
        ));
    }
    if let Some(max) = max.filter(|&max| len > max) {
        return Err(schema_error(
            &pointer,
            &format!("maximum string length is {max}"),
        ));
    }
    Ok(Some(s))
}

fn optional_object(
    o: &Map<String, Value>,
    key: &str,
) -> Result<Option<Map<String, Value>>, Invalid> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => Ok(Some(object(v, &format!("/{key}"))?.clone())),
    }
}

fn string_array(v: &Value, pointer: &str, min: usize, max: usize) -> Result<Vec<String>, Invalid> {
    let items = v
        .as_array()
        .ok_or_else(|| schema_error(pointer, "value must be an array"))?;
    if items.len() < min {
        return Err(schema_error(
            pointer,
            &format!("minimum number of items is {min}"),
        ));
    }
    if items.len() > max {
        return Err(schema_error(
            pointer,
            &format!("maximum number of items is {max}"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_str()
                .map(str::to_owned)
                .ok_or_else(|| schema_error(&format!("{pointer}/{i}"), "value must be a string"))
        })
        .collect()
}

/// The body of `PUT /jobs/{id}/status` (`JobStatus` schema).
pub fn job_status(body: &[u8]) -> Result<JobStatus, Invalid> {
    let v = parse_body(body)?;
    let o = object(&v, "/")?;
    let state = string(o, "state", true, 1, None)?.unwrap_or_default();
    let client_id = string(o, "clientId", false, 0, None)?.unwrap_or_default();
    let message = string(o, "message", false, 0, Some(1024))?.unwrap_or_default();
    // readOnly: accepted but overwritten by the server (NOTES.md).
    string(o, "definitionHash", false, 0, Some(64))?;
    let progress = match o.get("progress") {
        None => None,
        Some(p) => {
            let n = p
                .as_i64()
                .ok_or_else(|| schema_error("/progress", "value must be an integer"))?;
            let n = i32::try_from(n)
                .map_err(|_| schema_error("/progress", "number must be an int32"))?;
            if n > 100 {
                return Err(schema_error("/progress", "number must be at most 100"));
            }
            Some(n)
        }
    };
    Ok(JobStatus {
        state: state.to_owned(),
        client_id: client_id.to_owned(),
        progress,
        message: message.to_owned(),
        definition_hash: String::new(),
        context: optional_object(o, "context")?,
    })
}

/// The body of `POST /jobs` (`JobRequest` schema).
pub fn job_request(body: &[u8]) -> Result<JobRequest, Invalid> {
    let v = parse_body(body)?;
    let o = object(&v, "/")?;
    let client_id = string(o, "clientId", true, 1, None)?.unwrap_or_default();
    let workflow = string(o, "workflow", true, 1, None)?.unwrap_or_default();
    let tags = match o.get("tags") {
        None => Vec::new(),
        Some(t) => string_array(t, "/tags", 0, 16)?,
    };
    Ok(JobRequest {
        client_id: client_id.to_owned(),
        workflow: workflow.to_owned(),
        tags,
        definition: optional_object(o, "definition")?,
    })
}

/// The body of `PUT /jobs/{id}/definition` (`type: object`).
pub fn definition(body: &[u8]) -> Result<Map<String, Value>, Invalid> {
    let v = parse_body(body)?;
    Ok(object(&v, "/")?.clone())
}

/// The body of `POST`/`DELETE /jobs/{id}/tags` (array of strings, at least one).
pub fn tags(body: &[u8]) -> Result<Vec<String>, Invalid> {
    let v = parse_body(body)?;
    string_array(&v, "/", 1, usize::MAX)
}

/// The body of `POST /workflows` (`Workflow` schema). Checks beyond the
/// schema (states that exist, one initial state) are the store's
/// `wfx.workflowInvalid`.
pub fn workflow(body: &[u8]) -> Result<Workflow, Invalid> {
    let v = parse_body(body)?;
    let o = object(&v, "/")?;
    let name = string(o, "name", true, 1, Some(64))?.unwrap_or_default();
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(schema_error(
            "/name",
            "string doesn't match the regular expression \"^[a-zA-Z0-9\\-\\.]+$\"",
        ));
    }
    string(o, "description", false, 0, Some(1024))?;
    serde_json::from_value(v.clone()).map_err(|e| schema_error("/", &e.to_string()))
}

/// A boolean query parameter (`history`, `pagination`).
pub fn query_bool(name: &str, value: Option<&String>) -> Result<bool, Invalid> {
    match value.map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(format!(
            "parameter \"{name}\" in query has an error: value {other}: an invalid boolean: invalid syntax"
        )),
    }
}

/// A non-negative integer query parameter (`limit`, `offset`).
pub fn query_uint(name: &str, value: Option<&String>, default: usize) -> Result<usize, Invalid> {
    match value {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            format!("parameter \"{name}\" in query has an error: value {v}: an invalid integer: invalid syntax")
        }),
    }
}

/// `sort=asc|desc`; true for descending.
pub fn query_sort(value: Option<&String>) -> Result<bool, Invalid> {
    match value.map(String::as_str) {
        None | Some("asc") => Ok(false),
        Some("desc") => Ok(true),
        Some(other) => Err(format!(
            "parameter \"sort\" in query has an error: value is not one of the allowed values [\"asc\",\"desc\"]: {other}"
        )),
    }
}

//! The parts of the wfx API (OpenAPI 1.1.0) the agent reads and writes.

use serde::{Deserialize, Deserializer, Serialize};

use super::id::JobId;
use crate::text::{shown, shown_upto};

/// `JobStatus`. The server replaces, not merges, it on every update.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Set by the server (SHA-256 of the definition); a client's value is ignored.
    #[serde(default, skip_serializing)]
    pub definition_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
}

/// The workflow as embedded in a job; only its name matters to the agent.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct WorkflowRef {
    pub name: String,
}

/// `Job`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub workflow: Option<WorkflowRef>,
    #[serde(default)]
    pub definition: Option<serde_json::Value>,
    #[serde(default)]
    pub status: Option<JobStatus>,
    /// Creation time (RFC 3339); jobs run oldest first.
    #[serde(default)]
    pub stime: Option<String>,
}

/// `GET /jobs`: `{"content": [...]}`, with `pagination` only when asked for. An entry that is
/// not a job the agent can hold (a bad id, a missing field) does not spoil the page: it is
/// kept aside in `rejected`, so the other jobs still run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobList {
    pub content: Vec<Job>,
    /// Why each refused entry was refused (escaped, bounded text naming the id if it has one).
    pub rejected: Vec<String>,
}

impl JobList {
    /// Entries on the page, refused ones included (paging counts what the server sent).
    pub fn entries(&self) -> usize {
        self.content.len() + self.rejected.len()
    }
}

impl<'de> Deserialize<'de> for JobList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            content: Vec<serde_json::Value>,
        }
        let raw = Raw::deserialize(d)?;
        let mut list = JobList::default();
        for entry in raw.content {
            match Job::deserialize(&entry) {
                Ok(job) => list.content.push(job),
                Err(e) => list.rejected.push(rejection(&entry, &e)),
            }
        }
        Ok(list)
    }
}

/// The line that says which entry of a job list was refused, and why.
fn rejection(entry: &serde_json::Value, e: &serde_json::Error) -> String {
    let id = match entry.get("id") {
        Some(serde_json::Value::String(s)) => format!("job \"{}\"", shown(s)),
        _ => "a job without a readable id".to_owned(),
    };
    // (The reason may quote the entry: escaped too, with room for a quoted id.)
    format!("{id} refused: {}", shown_upto(&e.to_string(), 256))
}

/// One error of the JSON error model.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    pub code: String,
    #[serde(default)]
    pub logref: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ErrorResponse {
    pub errors: Vec<ApiError>,
}

/// A server-sent event's data: what changed on which job.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobEvent {
    pub action: String,
    pub job: EventJob,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventJob {
    pub id: JobId,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub status: Option<JobStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serialises_what_a_client_may_send() {
        let s = JobStatus {
            state: "INSTALLING".into(),
            client_id: Some("dev".into()),
            progress: Some(42),
            message: None,
            definition_hash: Some("ignored".into()),
            context: None,
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"state": "INSTALLING", "clientId": "dev", "progress": 42})
        );
    }

    #[test]
    fn jobs_with_and_without_pagination() {
        let a: JobList = serde_json::from_str(
            r#"{"content":[{"id":"1","clientId":"c","workflow":{"name":"wfx.workflow.dau.direct","states":[]},
               "definition":{"artifacts":[{"uri":"u"}]},"status":{"state":"INSTALL","definitionHash":"ab"},
               "stime":"2026-11-27T10:00:00Z"}]}"#,
        )
        .unwrap();
        assert_eq!(
            a.content[0]
                .status
                .as_ref()
                .unwrap()
                .definition_hash
                .as_deref(),
            Some("ab")
        );
        let b: JobList = serde_json::from_str(
            r#"{"content":[],"pagination":{"limit":10,"offset":0,"total":0}}"#,
        )
        .unwrap();
        assert!(b.content.is_empty());
    }

    /// A bad entry is set aside with its reason; the page's other jobs are kept.
    #[test]
    fn bad_entries_are_set_aside() {
        let long = "x".repeat(300);
        let page = serde_json::json!({"content": [
            {"id": "ok-1"},
            {"id": ".."},
            {"id": "a\nINFO forged"},
            {"id": long},
            {"id": 7},
            {"clientId": "c"},
            "text",
            {"id": "ok-2", "status": {"state": 5}},
            {"id": "/abs/dir"},
        ]});
        let l: JobList = serde_json::from_value(page).unwrap();
        let ids: Vec<&str> = l.content.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["ok-1", "/abs/dir"]);
        assert_eq!(l.entries(), 9);
        assert_eq!(l.rejected.len(), 7);
        assert!(
            l.rejected[0].starts_with("job \"..\" refused: job id \"..\" is a dot segment"),
            "{:?}",
            l.rejected
        );
        assert!(
            l.rejected[1].starts_with(r#"job "a\nINFO forged" refused"#),
            "{:?}",
            l.rejected
        );
        for r in &l.rejected {
            assert!(!r.chars().any(char::is_control) && r.len() < 300, "{r}");
        }
        assert!(l.rejected[4].starts_with("a job without a readable id"));
        // An event for a bad id is not a job event.
        assert!(
            serde_json::from_str::<JobEvent>(r#"{"action":"DELETE","job":{"id":".."}}"#).is_err()
        );
    }
}

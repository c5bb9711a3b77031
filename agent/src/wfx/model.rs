//! The parts of the wfx API (OpenAPI 1.1.0) the agent reads and writes.

use serde::{Deserialize, Serialize};

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
    pub id: String,
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

/// `GET /jobs`: `{"content": [...]}`, with `pagination` only when asked for.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct JobList {
    #[serde(default)]
    pub content: Vec<Job>,
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
    pub id: String,
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
}

//! The emulator's state (workflows and jobs, in memory) and wfx's rules for
//! changing it: job creation in the initial state, transition eligibility,
//! `IMMEDIATE` transitions, definition hashes, history and events.
//!
//! All changes happen under one mutex and publish their event while holding
//! it, so that events leave in the order of the changes.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::events::{EventAction, EventHub, JobEvent};
use super::model::{Eligible, History, Job, JobStatus, Workflow, definition_hash, now_rfc3339};

/// At most this many history entries are kept (the spec's `maxItems`).
const MAX_HISTORY: usize = 8192;
/// At most this many tags per job (`TagList` `maxItems`).
const MAX_TAGS: usize = 16;

/// A handler error, answered as `{"errors":[{code, logref, message}]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WfxError {
    /// 400 `wfx.invalidRequest`, e.g. a transition the caller may not take.
    InvalidRequest(String),
    /// 404 `wfx.jobNotFound`.
    JobNotFound,
    /// 400 `wfx.jobModifiedConcurrently` (only injected by the fault hook).
    JobModifiedConcurrently,
    /// 404 `wfx.workflowNotFound`.
    WorkflowNotFound,
    /// 400 `wfx.workflowNotUnique`.
    WorkflowNotUnique,
    /// 400 `wfx.workflowInvalid`.
    WorkflowInvalid(String),
}

impl WfxError {
    pub fn http_status(&self) -> u16 {
        match self {
            Self::JobNotFound | Self::WorkflowNotFound => 404,
            _ => 400,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "wfx.invalidRequest",
            Self::JobNotFound => "wfx.jobNotFound",
            Self::JobModifiedConcurrently => "wfx.jobModifiedConcurrently",
            Self::WorkflowNotFound => "wfx.workflowNotFound",
            Self::WorkflowNotUnique => "wfx.workflowNotUnique",
            Self::WorkflowInvalid(_) => "wfx.workflowInvalid",
        }
    }

    /// The log references of the spec's `x-paths-templates` where it has one.
    pub fn logref(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "96a37ea1f7d205ffbfa12334c6812727",
            Self::JobNotFound => "11cc67762090e15b79a1387eca65ba65",
            Self::JobModifiedConcurrently => "7f1ba8b5e1a5c8b9d1e3f0a2c4d6e8f0",
            Self::WorkflowNotFound => "c452719774086b6e803bb8f6ecea9899",
            Self::WorkflowNotUnique => "e1ee1f2aea859b9dd34579610e386da6",
            Self::WorkflowInvalid(_) => "18f57adc70dd79c7fb4f1246be8a6e04",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::InvalidRequest(why) => {
                format!("The request was invalid and could not be completed by the storage: {why}")
            }
            Self::JobNotFound => "Job ID was not found".into(),
            Self::JobModifiedConcurrently => {
                "The job was modified concurrently, read it again and retry".into()
            }
            Self::WorkflowNotFound => "Workflow not found for given name".into(),
            Self::WorkflowNotUnique => "Workflow with name already exists".into(),
            Self::WorkflowInvalid(why) => format!("Workflow validation failed: {why}"),
        }
    }
}

/// The body of `POST /jobs` (`JobRequest`), already checked against the spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRequest {
    pub client_id: String,
    pub workflow: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub definition: Option<Map<String, Value>>,
}

/// The filters and paging of `GET /jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub client_id: Option<String>,
    pub state: Option<String>,
    /// Any of these groups.
    pub groups: Vec<String>,
    pub workflow: Option<String>,
    /// Any of these tags.
    pub tags: Vec<String>,
    /// Newest first instead of oldest first.
    pub descending: bool,
    pub limit: usize,
    pub offset: usize,
}

#[derive(Debug, Default)]
struct Inner {
    workflows: Vec<Workflow>,
    /// In creation order, which is the `stime` order that `sort` refers to.
    jobs: Vec<Job>,
    ids_made: u64,
}

/// Workflows and jobs of one emulator instance.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    hub: Arc<EventHub>,
}

impl Store {
    pub fn new(workflows: Vec<Workflow>, hub: Arc<EventHub>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                workflows,
                ..Inner::default()
            }),
            hub,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking handler must not take the whole emulator down.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- workflows ----

    /// All workflows, by name.
    pub fn workflows(&self, descending: bool) -> Vec<Workflow> {
        let mut wfs = self.lock().workflows.clone();
        wfs.sort_by(|a, b| a.name.cmp(&b.name));
        if descending {
            wfs.reverse();
        }
        wfs
    }

    pub fn workflow(&self, name: &str) -> Result<Workflow, WfxError> {
        self.lock()
            .workflows
            .iter()
            .find(|w| w.name == name)
            .cloned()
            .ok_or(WfxError::WorkflowNotFound)
    }

    pub fn add_workflow(&self, wf: Workflow) -> Result<Workflow, WfxError> {
        wf.validate()
            .map_err(|e| WfxError::WorkflowInvalid(format!("{e:#}")))?;
        let mut inner = self.lock();
        if inner.workflows.iter().any(|w| w.name == wf.name) {
            return Err(WfxError::WorkflowNotUnique);
        }
        inner.workflows.push(wf.clone());
        Ok(wf)
    }

    pub fn delete_workflow(&self, name: &str) -> Result<(), WfxError> {
        let mut inner = self.lock();
        let before = inner.workflows.len();
        inner.workflows.retain(|w| w.name != name);
        if inner.workflows.len() == before {
            return Err(WfxError::WorkflowNotFound);
        }
        Ok(())
    }

    // ---- jobs ----

    /// Creates a job in its workflow's initial state (following `IMMEDIATE`
    /// transitions from there, as for any other state change).
    pub fn create_job(&self, req: JobRequest) -> Result<Job, WfxError> {
        let mut inner = self.lock();
        let workflow = inner
            .workflows
            .iter()
            .find(|w| w.name == req.workflow)
            .cloned()
            .ok_or_else(|| {
                WfxError::InvalidRequest(format!("unknown workflow {}", req.workflow))
            })?;
        let initial = workflow
            .initial_state()
            .map_err(|e| WfxError::InvalidRequest(e.to_string()))?;
        let mut tags = req.tags;
        tags.sort();
        tags.dedup();
        let now = now_rfc3339();
        inner.ids_made += 1;
        let job = Job {
            id: make_job_id(inner.ids_made),
            client_id: req.client_id,
            status: JobStatus {
                state: workflow.follow_immediate(initial),
                definition_hash: req
                    .definition
                    .as_ref()
                    .map(definition_hash)
                    .unwrap_or_default(),
                ..JobStatus::default()
            },
            workflow,
            definition: req.definition,
            tags,
            stime: now.clone(),
            mtime: now,
            history: Vec::new(),
        };
        inner.jobs.push(job.clone());
        self.publish(EventAction::Create, &job);
        Ok(job)
    }

    /// Gives job `id` another id, whatever it holds (a hostile server's ids, for the tests of
    /// the agent's trust boundary; real wfx makes its own).
    pub fn set_job_id(&self, id: &str, new_id: &str) -> Result<(), WfxError> {
        let mut inner = self.lock();
        let job = inner
            .jobs
            .iter_mut()
            .find(|j| j.id == id)
            .ok_or(WfxError::JobNotFound)?;
        job.id = new_id.to_owned();
        Ok(())
    }

    pub fn job(&self, id: &str) -> Result<Job, WfxError> {
        self.lock()
            .jobs
            .iter()
            .find(|j| j.id == id)
            .cloned()
            .ok_or(WfxError::JobNotFound)
    }

    /// One page of the matching jobs, and how many match in all.
    pub fn list_jobs(&self, q: &JobQuery) -> (Vec<Job>, usize) {
        let inner = self.lock();
        let mut matching: Vec<&Job> = inner
            .jobs
            .iter()
            .filter(|j| q.client_id.as_ref().is_none_or(|c| &j.client_id == c))
            .filter(|j| q.state.as_ref().is_none_or(|s| &j.status.state == s))
            .filter(|j| q.workflow.as_ref().is_none_or(|w| &j.workflow.name == w))
            .filter(|j| {
                q.groups.is_empty() || j.workflow.state_in_groups(&j.status.state, &q.groups)
            })
            .filter(|j| q.tags.is_empty() || j.tags.iter().any(|t| q.tags.contains(t)))
            .collect();
        if q.descending {
            matching.reverse();
        }
        let total = matching.len();
        let page = matching
            .into_iter()
            .skip(q.offset)
            .take(q.limit)
            .cloned()
            .collect();
        (page, total)
    }

    /// `PUT /jobs/{id}/status` by `actor`: same state always allowed, other
    /// states only along a transition eligible for `actor`. The status is
    /// replaced (not merged) and `definitionHash` is set by the server.
    pub fn update_status(
        &self,
        id: &str,
        new: JobStatus,
        actor: Eligible,
    ) -> Result<JobStatus, WfxError> {
        let mut inner = self.lock();
        let job = find_mut(&mut inner, id)?;
        let wf = &job.workflow;
        let current = &job.status.state;
        if &new.state != current {
            if !wf.states.iter().any(|s| s.name == new.state) {
                return Err(WfxError::InvalidRequest(format!(
                    "state {} is not part of workflow {}",
                    new.state, wf.name
                )));
            }
            if wf.transition(current, &new.state, actor).is_none() {
                return Err(WfxError::InvalidRequest(format!(
                    "transition from {current} to {} is not allowed for {actor:?}",
                    new.state
                )));
            }
        }
        let hash = job
            .definition
            .as_ref()
            .map(definition_hash)
            .unwrap_or_default();
        let target = wf.follow_immediate(&new.state);
        let status = if target == new.state {
            JobStatus {
                definition_hash: hash,
                ..new
            }
        } else {
            // An IMMEDIATE transition fired: the client's progress, message
            // and context described the state that was just left.
            JobStatus {
                state: target,
                client_id: new.client_id,
                definition_hash: hash,
                ..JobStatus::default()
            }
        };
        push_history(job);
        job.status = status.clone();
        job.mtime = now_rfc3339();
        let job = job.clone();
        self.publish(EventAction::UpdateStatus, &job);
        Ok(status)
    }

    /// `PUT /jobs/{id}/definition`: replaces the definition and its hash.
    pub fn update_definition(
        &self,
        id: &str,
        definition: Map<String, Value>,
    ) -> Result<Map<String, Value>, WfxError> {
        let mut inner = self.lock();
        let job = find_mut(&mut inner, id)?;
        push_history(job);
        job.status.definition_hash = definition_hash(&definition);
        job.definition = Some(definition.clone());
        job.mtime = now_rfc3339();
        let job = job.clone();
        self.publish(EventAction::UpdateDefinition, &job);
        Ok(definition)
    }

    pub fn delete_job(&self, id: &str) -> Result<(), WfxError> {
        let mut inner = self.lock();
        let pos = inner
            .jobs
            .iter()
            .position(|j| j.id == id)
            .ok_or(WfxError::JobNotFound)?;
        let job = inner.jobs.remove(pos);
        self.publish(EventAction::Delete, &job);
        Ok(())
    }

    /// Adds (`add`) or removes tags; answers the job's tags, sorted.
    pub fn change_tags(
        &self,
        id: &str,
        tags: Vec<String>,
        add: bool,
    ) -> Result<Vec<String>, WfxError> {
        let mut inner = self.lock();
        let job = find_mut(&mut inner, id)?;
        let mut new_tags = job.tags.clone();
        if add {
            new_tags.extend(tags);
            new_tags.sort();
            new_tags.dedup();
        } else {
            new_tags.retain(|t| !tags.contains(t));
        }
        if new_tags.len() > MAX_TAGS {
            return Err(WfxError::InvalidRequest(format!(
                "a job has at most {MAX_TAGS} tags"
            )));
        }
        job.tags = new_tags.clone();
        job.mtime = now_rfc3339();
        let job = job.clone();
        let action = if add {
            EventAction::AddTags
        } else {
            EventAction::DeleteTags
        };
        self.publish(action, &job);
        Ok(new_tags)
    }

    /// Publishes the reduced job object that wfx puts in events.
    fn publish(&self, action: EventAction, job: &Job) {
        let mut v = json!({
            "id": job.id,
            "clientId": job.client_id,
            "workflow": { "name": job.workflow.name },
            "status": job.status,
            "mtime": job.mtime,
        });
        if matches!(action, EventAction::Create | EventAction::UpdateDefinition) {
            if let Some(def) = &job.definition {
                v["definition"] = Value::Object(def.clone());
            }
        }
        if !job.tags.is_empty() {
            v["tags"] = json!(job.tags);
        }
        self.hub.publish(JobEvent {
            ctime: now_rfc3339(),
            action,
            job: v,
        });
    }
}

fn find_mut<'a>(inner: &'a mut Inner, id: &str) -> Result<&'a mut Job, WfxError> {
    inner
        .jobs
        .iter_mut()
        .find(|j| j.id == id)
        .ok_or(WfxError::JobNotFound)
}

/// Records the status and definition a change is about to replace.
fn push_history(job: &mut Job) {
    job.history.insert(
        0,
        History {
            mtime: job.mtime.clone(),
            status: Some(job.status.clone()),
            definition: job.definition.clone(),
        },
    );
    job.history.truncate(MAX_HISTORY);
}

/// A random-looking UUID (v4 layout, 36 characters, within
/// `[A-Za-z0-9_.-]{1,36}`) like the ids wfx makes, without a random crate:
/// hashing the clock, the process id and a counter is unique enough here.
fn make_job_id(counter: u64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(counter.to_le_bytes());
    let mut b: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

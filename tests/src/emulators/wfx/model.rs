//! The wfx data model (workflows, jobs, statuses) and the loading of workflow
//! YAML files.
//!
//! The JSON shapes follow `components/schemas` of `wfx/spec/wfx.openapi.yml`:
//! empty arrays, empty strings marked `x-omitempty` and absent values are
//! left out of the JSON, as the real (Go) server does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Who asks for a transition: the device (southbound) or the operator
/// (northbound). Named as in the workflows' `eligible` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Eligible {
    #[serde(rename = "CLIENT")]
    Client,
    #[serde(rename = "WFX")]
    Wfx,
}

/// A transition's `action`: `IMMEDIATE` transitions fire as soon as their
/// `from` state is reached; `WAIT` (the default) wait for an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "IMMEDIATE")]
    Immediate,
    #[serde(rename = "WAIT")]
    Wait,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub states: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub eligible: Eligible,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

/// A workflow, as in the YAML files and the `Workflow` schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<State>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
}

impl Workflow {
    /// Checks what wfx checks when a workflow is created: a valid name, and
    /// transitions and groups that only name declared states.
    pub fn validate(&self) -> anyhow::Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !name_ok {
            bail!("invalid workflow name {:?}", self.name);
        }
        if self.states.is_empty() {
            bail!("workflow {} has no states", self.name);
        }
        let known = |s: &str| self.states.iter().any(|st| st.name == s);
        for t in &self.transitions {
            if !known(&t.from) || !known(&t.to) {
                bail!("transition {} -> {} names an unknown state", t.from, t.to);
            }
        }
        for g in &self.groups {
            if let Some(s) = g.states.iter().find(|s| !known(s)) {
                bail!("group {} names unknown state {s}", g.name);
            }
        }
        self.initial_state()?;
        self.check_semantics()?;
        Ok(())
    }

    /// The further rules wfx enforces when it loads a workflow (wfx's docs/workflows.md):
    /// unique names, each state in at most one group, unique transition tuples, at most one
    /// `IMMEDIATE` transition out of a state, and no cycles but trivial ones (`from == to`).
    /// (No unreachable states follows from one initial state and no cycles.)
    fn check_semantics(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        if let Some(s) = self.states.iter().find(|s| !seen.insert(s.name.as_str())) {
            bail!("state {} is declared twice", s.name);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(g) = self.groups.iter().find(|g| !seen.insert(g.name.as_str())) {
            bail!("group {} is declared twice", g.name);
        }
        let mut grouped = std::collections::HashSet::new();
        for g in &self.groups {
            if let Some(s) = g.states.iter().find(|s| !grouped.insert(s.as_str())) {
                bail!("state {s} is in more than one group");
            }
        }
        for (i, t) in self.transitions.iter().enumerate() {
            if self.transitions[..i].iter().any(|u| {
                u.from == t.from && u.to == t.to && u.eligible == t.eligible && u.action == t.action
            }) {
                bail!("transition {} -> {} is declared twice", t.from, t.to);
            }
        }
        for st in &self.states {
            let immediate = self
                .transitions
                .iter()
                .filter(|t| t.from == st.name && t.action == Some(Action::Immediate))
                .count();
            if immediate > 1 {
                bail!("state {} has more than one IMMEDIATE transition", st.name);
            }
        }
        // Kahn's algorithm over the non-trivial transitions: what cannot be removed is a cycle.
        let edges: Vec<(&str, &str)> = self
            .transitions
            .iter()
            .filter(|t| t.from != t.to)
            .map(|t| (t.from.as_str(), t.to.as_str()))
            .collect();
        let mut left: Vec<&str> = self.states.iter().map(|s| s.name.as_str()).collect();
        loop {
            let free: Vec<&str> = left
                .iter()
                .copied()
                .filter(|s| !edges.iter().any(|(f, t)| t == s && left.contains(f)))
                .collect();
            if free.is_empty() {
                break;
            }
            left.retain(|s| !free.contains(s));
        }
        if !left.is_empty() {
            bail!("the workflow has a cycle (among {})", left.join(", "));
        }
        Ok(())
    }

    /// The state a new job starts in: the one state that no transition from
    /// another state leads to (wfx requires exactly one).
    pub fn initial_state(&self) -> anyhow::Result<&str> {
        let mut initial = self.states.iter().filter(|s| {
            !self
                .transitions
                .iter()
                .any(|t| t.to == s.name && t.from != s.name)
        });
        match (initial.next(), initial.next()) {
            (Some(s), None) => Ok(&s.name),
            _ => bail!("workflow {} needs exactly one initial state", self.name),
        }
    }

    /// The transition `from` -> `to` that `actor` may take, if any.
    pub fn transition(&self, from: &str, to: &str, actor: Eligible) -> Option<&Transition> {
        self.transitions
            .iter()
            .find(|t| t.from == from && t.to == to && t.eligible == actor)
    }

    /// Follows `IMMEDIATE` transitions from `state` until none applies.
    /// The loop is bounded so that a cyclic workflow cannot hang the server.
    pub fn follow_immediate(&self, state: &str) -> String {
        let mut current = state.to_owned();
        for _ in 0..=self.transitions.len() {
            match self.transitions.iter().find(|t| {
                t.from == current && t.action == Some(Action::Immediate) && t.to != current
            }) {
                Some(t) => current = t.to.clone(),
                None => break,
            }
        }
        current
    }

    /// Whether `state` is in one of the named groups.
    pub fn state_in_groups(&self, state: &str, groups: &[String]) -> bool {
        self.groups
            .iter()
            .any(|g| groups.contains(&g.name) && g.states.iter().any(|s| s == state))
    }
}

/// A job's status (`JobStatus` schema). `progress` has no lower bound in the
/// spec, only `maximum: 100` and `int32`, so it is an `i32`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub definition_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Map<String, Value>>,
}

/// One entry of a job's history (`History` schema): the status or the
/// definition that a change replaced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    pub mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<Map<String, Value>>,
}

/// A job (`Job` schema). `history` is serialized only when the caller asked
/// for it (`history=true`), see [`Job::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    pub client_id: String,
    pub workflow: Workflow,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<Map<String, Value>>,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub stime: String,
    pub mtime: String,
    /// Newest first (the spec says LIFO).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

impl Job {
    /// The job as the API shows it, with or without its history.
    pub fn to_json(&self, with_history: bool) -> Value {
        let mut v = serde_json::to_value(self).expect("a job serializes");
        if !with_history {
            v.as_object_mut()
                .expect("a job is an object")
                .remove("history");
        }
        v
    }
}

/// SHA-256 (lowercase hex) of a job definition, as stored in
/// `status.definitionHash`.
///
/// Serialization before hashing: neither the spec nor NOTES.md fixes it, so
/// the emulator does what wfx's Go code does with a `map[string]any`, namely
/// `encoding/json.Marshal`: compact (no whitespace), object keys sorted
/// byte-wise at every level, and `<`, `>`, `&`, U+2028, U+2029 escaped as
/// `\u003c` etc. Numbers are written as serde_json writes them (integers
/// match Go; unusual floats may not). Clients must only compare hashes, never
/// compute them, so this choice is not part of the contract.
pub fn definition_hash(definition: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_go_json(&Value::Object(definition.clone()), &mut out);
    hex::encode(Sha256::digest(out.as_bytes()))
}

fn write_go_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(k, out);
                out.push(':');
                write_go_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_go_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn write_go_string(s: &str, out: &mut String) {
    // serde_json escapes quotes, backslashes and control characters like Go
    // does; Go additionally escapes these HTML-sensitive characters.
    let json = Value::String(s.to_owned()).to_string();
    for c in json.chars() {
        match c {
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// The current time as RFC 3339 with nanoseconds and trailing zeros trimmed,
/// which is how Go's `time.Time` marshals to JSON.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let mut s = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to a (year, month, day) date (H. Hinnant's
/// algorithm), so that no date crate is needed.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The workflow folder shipped with this crate (verbatim copies of wfx's DAU
/// workflows), found via `CARGO_MANIFEST_DIR` so that it works from a clean
/// clone without `/work/shared`.
pub fn default_workflows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wfx/workflows")
}

/// The project's own onboarding workflow (`onboarding/cip.workflow.onboarding.yml`), which a
/// real deployment creates in wfx beside the DAU ones.
pub fn onboarding_workflow_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../onboarding/cip.workflow.onboarding.yml")
}

/// Loads and validates every `*.yml` / `*.yaml` file of `dir`, by file name.
pub fn load_workflows(dir: &Path) -> anyhow::Result<Vec<Workflow>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading workflow folder {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")));
    paths.sort();
    paths.iter().map(|p| load_workflow(p)).collect()
}

/// Loads and validates one workflow YAML file.
pub fn load_workflow(path: &Path) -> anyhow::Result<Workflow> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let wf: Workflow = serde_norway::from_str(&text)
        .with_context(|| format!("parsing workflow {}", path.display()))?;
    wf.validate()
        .with_context(|| format!("validating workflow {}", path.display()))?;
    Ok(wf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dau_workflows_load() {
        let wfs = load_workflows(&default_workflows_dir()).expect("load");
        let names: Vec<&str> = wfs.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            ["wfx.workflow.dau.direct", "wfx.workflow.dau.phased"]
        );
        assert_eq!(wfs[0].initial_state().unwrap(), "INSTALL");
        assert_eq!(wfs[1].initial_state().unwrap(), "CREATED");
        assert_eq!(wfs[0].follow_immediate("INSTALLED"), "ACTIVATE");
        assert_eq!(wfs[0].follow_immediate("INSTALLING"), "INSTALLING");
        let onb = load_workflow(&onboarding_workflow_file()).expect("onboarding workflow");
        assert_eq!(onb.name, "cip.workflow.onboarding");
        assert_eq!(onb.initial_state().unwrap(), "ENROLLED");
    }

    /// wfx refuses these workflows on load; so does the emulator.
    #[test]
    fn semantic_rules_of_wfx() {
        let base = load_workflow(&default_workflows_dir().join("wfx.workflow.dau.direct.yml"))
            .expect("direct");
        let t = |from: &str, to: &str, eligible, action| Transition {
            from: from.into(),
            to: to.into(),
            description: String::new(),
            eligible,
            action,
        };
        let mut cyclic = base.clone();
        cyclic
            .transitions
            .push(t("ACTIVATING", "INSTALLING", Eligible::Client, None));
        let e = cyclic.validate().unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        let mut twice = base.clone();
        twice.transitions.push(base.transitions[0].clone());
        assert!(twice.validate().unwrap_err().to_string().contains("twice"));
        let mut immediate = base.clone();
        immediate.transitions.push(t(
            "INSTALLED",
            "TERMINATED",
            Eligible::Wfx,
            Some(Action::Immediate),
        ));
        assert!(immediate.validate().is_err());
        let mut groups = base.clone();
        groups.groups[1].states.push("INSTALL".into());
        assert!(groups.validate().is_err());
        // Trivial cycles are fine.
        let mut progress = base;
        progress
            .transitions
            .push(t("ACTIVATE", "ACTIVATE", Eligible::Client, None));
        progress.validate().expect("a trivial cycle");
    }

    #[test]
    fn hash_is_canonical() {
        let a: Map<String, Value> =
            serde_json::from_str(r#"{"b":1,"a":{"y":"<",  "x":[1,2]}}"#).expect("json");
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"a":{"x":[1,2],"y":"<"},"b":1}"#).expect("json");
        assert_eq!(definition_hash(&a), definition_hash(&b));
        let canonical = r#"{"a":{"x":[1,2],"y":"\u003c"},"b":1}"#;
        assert_eq!(
            definition_hash(&a),
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && now.len() >= 20, "{now}");
    }
}

//! The DAU driver: what to do next for a wfx job, as a plain function of the job as wfx shows it
//! and of the agent's own record of it. Effects (HTTP, SWUpdate, files) belong to the caller, who
//! runs the action, records its outcome in the journal, and asks again.
//!
//! Both `wfx.workflow.dau.direct` and `wfx.workflow.dau.phased` are covered; states are judged by
//! their group (OPEN, CLOSED, FAILED) where wfx defines one, as SWUpdate's own wfx client does.

use serde::{Deserialize, Serialize};

use crate::text::shown;
use crate::uri::ArtifactUri;
use crate::wfx::id::JobId;

pub use crate::pipeline::activate::BootRecord;
use crate::state::State;

/// The two DAU workflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flow {
    Direct,
    Phased,
}

impl Flow {
    pub const DIRECT: &'static str = "wfx.workflow.dau.direct";
    pub const PHASED: &'static str = "wfx.workflow.dau.phased";

    /// The workflow's name in wfx.
    pub fn name(self) -> &'static str {
        match self {
            Flow::Direct => Self::DIRECT,
            Flow::Phased => Self::PHASED,
        }
    }

    pub fn from_name(name: &str) -> Option<Flow> {
        match name {
            Self::DIRECT => Some(Flow::Direct),
            Self::PHASED => Some(Flow::Phased),
            _ => None,
        }
    }
}

/// The longest artifact `name` (a TUF target path) or `version` accepted.
pub const ARTIFACT_TEXT_MAX: usize = 1024;

/// One artifact of a job definition, checked where it enters ([`Definition::parse`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Artifact {
    pub name: Option<String>,
    pub version: Option<String>,
    pub uri: ArtifactUri,
}

/// An artifact's `name` or `version`: bounded, without control characters.
fn artifact_text(field: &str, v: Option<String>) -> Result<Option<String>, String> {
    match v {
        Some(t) if t.len() > ARTIFACT_TEXT_MAX => Err(format!(
            "{field} of {} bytes (at most {ARTIFACT_TEXT_MAX})",
            t.len()
        )),
        Some(t) if t.chars().any(char::is_control) => Err(format!(
            "{field} \"{}\" holds a control character",
            shown(&t)
        )),
        other => Ok(other),
    }
}

/// The DAU job definition: `{"version":"1.0","type":[..],"artifacts":[{"name","version","uri"}]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    pub types: Vec<String>,
    pub artifacts: Vec<Artifact>,
}

impl Definition {
    /// Reads a definition; anything the agent cannot act on is a message for TERMINATED.
    pub fn parse(v: &serde_json::Value) -> Result<Definition, String> {
        #[derive(Deserialize)]
        struct RawArtifact {
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            version: Option<String>,
            uri: String,
        }
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default, rename = "type")]
            types: Vec<String>,
            #[serde(default)]
            artifacts: Vec<RawArtifact>,
        }
        let raw: Raw = serde_json::from_value(v.clone())
            .map_err(|e| format!("malformed job definition: {e}"))?;
        if raw.artifacts.is_empty() {
            return Err("malformed job definition: no artifacts".into());
        }
        let mut artifacts = Vec::with_capacity(raw.artifacts.len());
        for (i, a) in raw.artifacts.into_iter().enumerate() {
            let bad = |why: String| format!("malformed job definition: artifact {}: {why}", i + 1);
            if a.uri.trim().is_empty() {
                return Err(bad("empty uri".into()));
            }
            artifacts.push(Artifact {
                name: artifact_text("name", a.name).map_err(bad)?,
                version: artifact_text("version", a.version).map_err(bad)?,
                uri: ArtifactUri::parse(&a.uri).map_err(|e| bad(e.to_string()))?,
            });
        }
        Ok(Definition {
            types: raw.types,
            artifacts,
        })
    }

    /// An OS image: activation goes through the bootloader and a reboot.
    pub fn is_firmware(&self) -> bool {
        self.types.iter().any(|t| t == "firmware")
    }

    /// SWUpdate's dry run, and no activation.
    pub fn is_dry_run(&self) -> bool {
        self.types.iter().any(|t| t == "dry-run")
    }
}

/// The job as wfx shows it, reduced to what decisions need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    pub id: JobId,
    pub flow: Flow,
    /// The job's state; `None` for a state of no DAU workflow (the job waits).
    pub state: Option<State>,
    /// The state as wfx sent it, escaped for the log.
    pub state_text: String,
    pub definition_hash: String,
    /// The parsed definition, or why it cannot be used.
    pub definition: Result<Definition, String>,
}

impl JobView {
    /// The version the job installs (its first artifact naming one).
    pub fn target_version(&self) -> Option<&str> {
        self.definition
            .as_ref()
            .ok()
            .and_then(|d| d.artifacts.iter().find_map(|a| a.version.as_deref()))
    }

    /// The job as the reports name it.
    pub fn subject(&self) -> crate::report::Subject<'_> {
        crate::report::Subject {
            id: self.id.as_str(),
            workflow: Some(self.flow.name()),
            target_version: self.target_version(),
        }
    }
}

/// A final state the agent reached and must get into wfx.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Final {
    /// `ACTIVATED` or `TERMINATED`.
    pub state: State,
    pub message: String,
    /// TERMINATED because the new slot was tried and the bootloader went back to the old one.
    #[serde(default)]
    pub rolled_back: bool,
    /// When the device reached it, RFC 3339 UTC (wfx may hear of it later).
    #[serde(default)]
    pub time: Option<String>,
}

/// The agent's own record of a job (kept in the journal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub job_id: String,
    /// The definition the preparation was made for.
    pub definition_hash: String,
    /// Every artifact is staged and verified (phased download stage).
    #[serde(default)]
    pub downloaded: bool,
    /// Artifacts installed with SUCCESS, in order.
    #[serde(default)]
    pub installed: usize,
    /// The artifact whose install was committed to SWUpdate (the whole image handed over) but
    /// whose verdict was not recorded: after a power cut, ask before installing it again.
    #[serde(default)]
    pub committed: Option<usize>,
    /// Reached, and to be reported until wfx accepts it.
    #[serde(default)]
    pub final_state: Option<Final>,
    /// Firmware: the slot armed for the reboot, recorded before any reboot.
    #[serde(default)]
    pub boot: Option<BootRecord>,
    /// The artifact whose delta install SWUpdate failed: it is installed from the full target
    /// (once; `delta.fallback = "full"`).
    #[serde(default)]
    pub delta_failed: Option<usize>,
}

impl Record {
    pub fn new(job: &JobView) -> Record {
        Record {
            job_id: job.id.to_string(),
            definition_hash: job.definition_hash.clone(),
            downloaded: false,
            installed: 0,
            committed: None,
            final_state: None,
            boot: None,
            delta_failed: None,
        }
    }

    /// Nothing reached SWUpdate yet: a changed definition can start over.
    fn before_install(&self) -> bool {
        self.installed == 0 && self.committed.is_none()
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until wfx (an operator, or the IMMEDIATE transition) moves the job.
    Wait,
    /// Report this state to wfx.
    Report { state: State, message: String },
    /// Report a final state the record holds, again until wfx takes it.
    ReportFinal(Final),
    /// Phased: stage (or resume staging) every artifact, reporting DOWNLOADING, then DOWNLOADED.
    Download,
    /// Stream artifact `index` into SWUpdate, reporting INSTALLING.
    Install { index: usize, dry_run: bool },
    /// Artifact `index` was committed but its verdict is unknown: ask SWUpdate.
    Recover { index: usize },
    /// Firmware: mark the new slot in the bootloader, then reboot as the policy says.
    Activate,
    /// Firmware in ACTIVATING: read the boot state (trial, confirmed, rolled back).
    CheckBoot,
    /// The definition changed before anything was installed: drop the preparation, start over.
    Restart,
    /// The job is over (or gone): drop its record and staged files.
    Forget,
}

/// The next action for `job`, given the agent's record of it.
pub fn decide(job: &JobView, record: Option<&Record>) -> Action {
    // (Unknown states: wfx or an operator moves next.)
    let Some(state) = job.state else {
        return Action::Wait;
    };
    if state.is_final() {
        return Action::Forget;
    }
    if let Some(f) = record.and_then(|r| r.final_state.as_ref()) {
        // Confirmed while wfx still shows ACTIVATE (a reboot before ACTIVATING was reported):
        // the workflow goes through ACTIVATING.
        if f.state == State::Activated && state == State::Activate {
            return Action::Report {
                state: State::Activating,
                message: "the new slot booted".into(),
            };
        }
        return if state.client_may_terminate() || f.state == State::Activated {
            Action::ReportFinal(f.clone())
        } else {
            Action::Wait
        };
    }
    // (No let-chains: they need Rust 1.88, the floor is 1.85.)
    let stale = record.is_some_and(|r| {
        r.definition_hash != job.definition_hash
            && r.before_install()
            && (r.downloaded || state != State::Download)
    });
    if stale {
        return Action::Restart;
    }
    let def = match &job.definition {
        Ok(d) => d,
        Err(msg) if state.client_may_terminate() => {
            return Action::Report {
                state: State::Terminated,
                message: msg.clone(),
            };
        }
        Err(_) => return Action::Wait,
    };
    let n = def.artifacts.len();
    let installed = record.map_or(0, |r| r.installed);
    let committed = record.and_then(|r| r.committed);
    match state {
        State::Download => Action::Download,
        State::Downloading if record.is_some_and(|r| r.downloaded) => Action::Report {
            state: State::Downloaded,
            message: format!("{n} artifact(s) downloaded and verified"),
        },
        State::Downloading => Action::Download,
        State::Install | State::Installing => match committed {
            Some(index) => Action::Recover { index },
            None if installed >= n => Action::Report {
                state: State::Installed,
                message: format!("{n} artifact(s) installed"),
            },
            None => Action::Install {
                index: installed,
                dry_run: def.is_dry_run(),
            },
        },
        State::Activate if def.is_firmware() && !def.is_dry_run() => Action::Activate,
        State::Activate => Action::Report {
            state: State::Activating,
            message: "nothing to activate for this type".into(),
        },
        State::Activating if def.is_firmware() && !def.is_dry_run() => Action::CheckBoot,
        State::Activating => Action::Report {
            state: State::Activated,
            message: if def.is_dry_run() {
                "dry run: verified, nothing installed".into()
            } else {
                "installed".into()
            },
        },
        // CREATED, DOWNLOADED, INSTALLED and unknown states: wfx or an operator moves next.
        _ => Action::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(flow: Flow, state: &str, types: &[&str], n: usize) -> JobView {
        let artifacts: Vec<_> = (0..n)
            .map(|i| json!({"name": format!("a{i}"), "uri": format!("http://h/a{i}.swu")}))
            .collect();
        let def = json!({"version": "1.0", "type": types, "artifacts": artifacts});
        JobView {
            id: JobId::parse("j1").unwrap(),
            flow,
            state: State::parse(state),
            state_text: state.into(),
            definition_hash: "h1".into(),
            definition: Definition::parse(&def),
        }
    }

    fn rec(j: &JobView) -> Record {
        Record::new(j)
    }

    #[test]
    fn definitions() {
        let d = Definition::parse(
            &json!({"type": ["firmware"], "artifacts": [{"uri": "http://h/a.swu"}]}),
        )
        .unwrap();
        assert!(d.is_firmware() && !d.is_dry_run());
        assert_eq!(d.artifacts[0].name, None);
        assert_eq!(d.artifacts[0].uri.as_str(), "http://h/a.swu");
        for bad in [
            json!({"artifacts": []}),
            json!({"type": "firmware", "artifacts": [{"uri": "http://h/a"}]}),
            json!({"artifacts": [{"name": "x"}]}),
            json!({"artifacts": [{"uri": " "}]}),
            json!("text"),
        ] {
            let e = Definition::parse(&bad).unwrap_err();
            assert!(e.starts_with("malformed job definition"), "{bad}: {e}");
        }
    }

    /// wfx may name only http(s) URLs: a path or another scheme ends the job, naming the
    /// artifact and the reason, before anything is opened.
    #[test]
    fn local_files_and_bad_text_are_refused() {
        for uri in ["/etc/passwd", "file:///etc/passwd", "../x", "os.swu"] {
            let e = Definition::parse(&json!({"artifacts": [
                {"uri": "http://h/ok.swu"}, {"name": "n", "uri": uri}
            ]}))
            .unwrap_err();
            assert!(
                e.starts_with("malformed job definition: artifact 2: uri")
                    && e.contains("not an http:// or https:// URL"),
                "{uri}: {e}"
            );
        }
        let long = "n".repeat(ARTIFACT_TEXT_MAX + 1);
        for (a, why) in [
            (
                json!({"name": long, "uri": "http://h/a"}),
                "name of 1025 bytes",
            ),
            (
                json!({"name": "a\nb", "uri": "http://h/a"}),
                r#"name "a\nb" holds"#,
            ),
            (json!({"version": "1\r", "uri": "http://h/a"}), "version"),
            (
                json!({"uri": "http://h/a\nINFO forged"}),
                "whitespace, a control",
            ),
        ] {
            let e = Definition::parse(&json!({ "artifacts": [a] })).unwrap_err();
            assert!(e.contains(why), "{e}");
            assert!(!e.contains('\n') && !e.contains('\r'), "{e}");
        }
    }

    #[test]
    fn direct_walk() {
        let j = job(Flow::Direct, "INSTALL", &["firmware"], 2);
        assert_eq!(
            decide(&j, None),
            Action::Install {
                index: 0,
                dry_run: false
            }
        );
        let mut r = rec(&j);
        r.installed = 1;
        let j = JobView {
            state: Some(State::Installing),
            ..j
        };
        assert_eq!(
            decide(&j, Some(&r)),
            Action::Install {
                index: 1,
                dry_run: false
            }
        );
        r.installed = 2;
        assert!(matches!(
            decide(&j, Some(&r)),
            Action::Report {
                state: State::Installed,
                ..
            }
        ));
        let j = JobView {
            state: Some(State::Installed),
            ..j
        };
        assert_eq!(decide(&j, Some(&r)), Action::Wait);
        let j = JobView {
            state: Some(State::Activate),
            ..j
        };
        assert_eq!(decide(&j, Some(&r)), Action::Activate);
        let j = JobView {
            state: Some(State::Activating),
            ..j
        };
        assert_eq!(decide(&j, Some(&r)), Action::CheckBoot);
        let j = JobView {
            state: Some(State::Activated),
            ..j
        };
        assert_eq!(decide(&j, Some(&r)), Action::Forget);
    }

    #[test]
    fn non_firmware_and_dry_run_activate_at_once() {
        for types in [&["app"][..], &["firmware", "dry-run"][..], &[][..]] {
            let j = job(Flow::Direct, "ACTIVATE", types, 1);
            assert!(
                matches!(
                    decide(&j, None),
                    Action::Report {
                        state: State::Activating,
                        ..
                    }
                ),
                "{types:?}"
            );
            let j = JobView {
                state: Some(State::Activating),
                ..j
            };
            assert!(
                matches!(
                    decide(&j, None),
                    Action::Report {
                        state: State::Activated,
                        ..
                    }
                ),
                "{types:?}"
            );
        }
        let j = job(Flow::Direct, "INSTALL", &["dry-run"], 1);
        assert_eq!(
            decide(&j, None),
            Action::Install {
                index: 0,
                dry_run: true
            }
        );
    }

    #[test]
    fn phased_walk() {
        let j = job(Flow::Phased, "CREATED", &["firmware"], 1);
        assert_eq!(decide(&j, None), Action::Wait);
        let j = JobView {
            state: Some(State::Download),
            ..j
        };
        assert_eq!(decide(&j, None), Action::Download);
        let j = JobView {
            state: Some(State::Downloading),
            ..j
        };
        let mut r = rec(&j);
        assert_eq!(decide(&j, Some(&r)), Action::Download, "resume");
        r.downloaded = true;
        assert!(matches!(
            decide(&j, Some(&r)),
            Action::Report {
                state: State::Downloaded,
                ..
            }
        ));
        let j = JobView {
            state: Some(State::Downloaded),
            ..j
        };
        assert_eq!(
            decide(&j, Some(&r)),
            Action::Wait,
            "the operator moves next"
        );
        let j = JobView {
            state: Some(State::Install),
            ..j
        };
        assert_eq!(
            decide(&j, Some(&r)),
            Action::Install {
                index: 0,
                dry_run: false
            }
        );
    }

    /// After a power cut between handing over the image and recording the verdict, the agent
    /// asks SWUpdate instead of installing again.
    #[test]
    fn committed_install_is_recovered_not_repeated() {
        let j = job(Flow::Direct, "INSTALLING", &["firmware"], 1);
        let mut r = rec(&j);
        r.committed = Some(0);
        assert_eq!(decide(&j, Some(&r)), Action::Recover { index: 0 });
    }

    #[test]
    fn changed_definition_restarts_only_before_install() {
        let j = job(Flow::Phased, "DOWNLOADED", &["firmware"], 1);
        let mut r = rec(&j);
        r.downloaded = true;
        r.definition_hash = "old".into();
        assert_eq!(decide(&j, Some(&r)), Action::Restart);
        r.installed = 1;
        assert_eq!(decide(&j, Some(&r)), Action::Wait, "installed: keep going");
        // A fresh record in DOWNLOAD with another hash is simply a new download.
        let j = JobView {
            state: Some(State::Download),
            ..j
        };
        let mut r = rec(&j);
        r.definition_hash = "old".into();
        assert_eq!(decide(&j, Some(&r)), Action::Download);
    }

    #[test]
    fn bad_definition_terminates_where_the_client_may() {
        let mut j = job(Flow::Direct, "INSTALL", &[], 1);
        j.definition = Err("malformed job definition: no artifacts".into());
        assert_eq!(
            decide(&j, None),
            Action::Report {
                state: State::Terminated,
                message: "malformed job definition: no artifacts".into()
            }
        );
        j.state = Some(State::Created);
        assert_eq!(decide(&j, None), Action::Wait);
    }

    #[test]
    fn final_state_is_reported_until_taken() {
        let j = job(Flow::Direct, "INSTALLING", &[], 1);
        let mut r = rec(&j);
        let f = Final {
            state: State::Terminated,
            message: "HASH mismatch".into(),
            rolled_back: false,
            time: None,
        };
        r.final_state = Some(f.clone());
        assert_eq!(decide(&j, Some(&r)), Action::ReportFinal(f.clone()));
        // An ACTIVATED reached before wfx saw ACTIVATING goes through it.
        let a = Final {
            state: State::Activated,
            message: "slot B confirmed".into(),
            rolled_back: false,
            time: None,
        };
        r.final_state = Some(a.clone());
        let j2 = JobView {
            state: Some(State::Activate),
            ..j.clone()
        };
        assert!(matches!(
            decide(&j2, Some(&r)),
            Action::Report {
                state: State::Activating,
                ..
            }
        ));
        let j2 = JobView {
            state: Some(State::Activating),
            ..j2
        };
        assert_eq!(decide(&j2, Some(&r)), Action::ReportFinal(a));
        r.final_state = Some(f.clone());
        let j = JobView {
            state: Some(State::Terminated),
            ..j
        };
        assert_eq!(decide(&j, Some(&r)), Action::Forget);
    }

    #[test]
    fn unknown_workflow_names() {
        assert_eq!(
            Flow::from_name("wfx.workflow.dau.direct"),
            Some(Flow::Direct)
        );
        assert_eq!(
            Flow::from_name("wfx.workflow.dau.phased"),
            Some(Flow::Phased)
        );
        assert_eq!(Flow::from_name("cip.workflow.onboarding"), None);
    }
}

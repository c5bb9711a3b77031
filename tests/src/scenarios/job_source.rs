//! The job sources a scenario runs under, behind one face: wfx (a job on the emulator) or
//! TUF-only mode (no `[wfx]`: a target published in an RS-TUF-shaped repository that the agent
//! polls). A scenario offers an update, then reads the same facts from either source: the
//! update's state and message, its boot record, and what was reported about it.
//!
//! For TUF-only, the update's id is the target's path; its state comes from the agent's record
//! (`state/tuf-only.json`): `ACTIVATING` while `pending` names it, `ACTIVATED` once in `done`,
//! `TERMINATED` once in `failed`; before that, the last state the agent logged for it
//! (`INSTALLING`). Its final message is the record's `last.message`; the message of a state
//! still open is the agent's log line for it (the reporter logs every state it reports).

use std::fs;

use serde_json::{Value, json};

use crate::fixtures::tuf::TufRepo;
use crate::scenarios::fleet::{DIRECT, Fleet, FleetBuilder};

/// Where the agent's update jobs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A job on the wfx emulator (`[wfx]`).
    Wfx,
    /// TUF-only mode: no `[wfx]`, the newest target for the device's hardware.
    TufOnly,
}

/// The job source of one fleet.
pub struct JobSource {
    pub via: Via,
    /// TUF-only's repository, served by the fleet's nginx.
    repo: Option<TufRepo>,
    /// `tuf.targets_url` instead of nginx's `/targets` (e.g. a slow server).
    pub targets_url: Option<String>,
}

impl JobSource {
    /// A fleet started from `b` for `via`. For TUF-only, nginx serves a new RS-TUF-shaped
    /// repository and the device's hwrevision file says `board 1.0` (what SWUpdate is told):
    /// `[device]` holds `hwrevision_file` (append to it, do not replace it).
    pub fn fleet(via: Via, b: FleetBuilder) -> (Fleet, JobSource) {
        let src = |repo| JobSource {
            via,
            repo,
            targets_url: None,
        };
        match via {
            Via::Wfx => (b.start(), src(None)),
            Via::TufOnly => {
                let repo = TufRepo::rs_tuf(4).expect("a TUF repository");
                let mut f = b.serve(&repo.www()).start();
                fs::write(f.path("hwrevision"), "board 1.0\n").unwrap();
                f.config.device = format!("hwrevision_file = {:?}\n", f.path("hwrevision"));
                (f, src(Some(repo)))
            }
        }
    }

    /// Sets `f`'s configuration for this source (TUF-only: no client-id, no `[wfx]`); the
    /// sections to append to [`crate::scenarios::fleet::AgentConfig::extra`] (TUF-only: `[tuf]`, polled
    /// every second). Call before each start of the agent.
    pub fn configure(&self, f: &mut Fleet) -> String {
        let Some(repo) = &self.repo else {
            return String::new();
        };
        f.config.client_id = None;
        f.config.wfx = false;
        let targets = self
            .targets_url
            .clone()
            .unwrap_or_else(|| f.nginx().url("targets"));
        format!(
            "[tuf]\nroot = {root:?}\nmetadata_url = \"{md}\"\ntargets_url = \"{targets}\"\npoll_interval = \"1s\"\n",
            root = repo.initial_root(),
            md = f.nginx().url("metadata"),
        )
    }

    /// Offers the signed .swu `bytes` of `version` as `name`; the update's id. wfx: served by
    /// nginx as `www/<name>`, a direct firmware job naming it. TUF-only: the target `name`, for
    /// hardware 1.0, published.
    pub async fn offer(&self, f: &Fleet, name: &str, bytes: &[u8], version: &str) -> String {
        match &self.repo {
            None => {
                fs::write(f.path(&format!("www/{name}")), bytes).unwrap();
                let def = json!({"version": "1.0", "type": ["firmware"],
                    "artifacts": [{"name": "os", "version": version, "uri": f.nginx().url(name)}]});
                f.create_job(DIRECT, def).await
            }
            Some(repo) => {
                let custom = json!({"version": version, "board": "board", "hardware": ["1.0"]});
                repo.add_target(name, bytes, custom).unwrap();
                name.to_owned()
            }
        }
    }

    /// TUF-only's record (`Null` before there is one).
    pub fn record(f: &Fleet) -> Value {
        f.tuf_only_record("").0
    }

    /// The update's state.
    pub fn state(&self, f: &Fleet, id: &str) -> String {
        match self.via {
            Via::Wfx => str_of(&wfx_job(f, id)["status"]["state"]),
            Via::TufOnly => {
                let rec = Self::record(f);
                let lists = |set: &str| {
                    rec[set].as_array().into_iter().flatten().any(|d| {
                        d.as_str()
                            .is_some_and(|d| d.rsplit_once('@').is_some_and(|(p, _)| p == id))
                    })
                };
                if rec["pending"]["path"] == id {
                    "ACTIVATING".into()
                } else if lists("done") {
                    "ACTIVATED".into()
                } else if lists("failed") {
                    "TERMINATED".into()
                } else {
                    logged(f, id)
                        .last()
                        .map(|(s, _)| s.clone())
                        .unwrap_or_default()
                }
            }
        }
    }

    /// The message of the update's state: wfx's; TUF-only: `last.message` once it ended, else
    /// the agent's log line of its last state.
    pub fn message(&self, f: &Fleet, id: &str) -> String {
        match self.via {
            Via::Wfx => str_of(&wfx_job(f, id)["status"]["message"]),
            Via::TufOnly => {
                let rec = Self::record(f);
                if rec["pending"].is_null() && rec["last"]["path"] == id {
                    return str_of(&rec["last"]["message"]);
                }
                logged(f, id).pop().map(|(_, m)| m).unwrap_or_default()
            }
        }
    }

    /// The update's boot record (slot, from, expected_version, ...): wfx: the journal's
    /// `jobs[id].boot`; TUF-only: the record's `pending`.
    pub fn boot_record(&self, f: &Fleet, id: &str) -> Value {
        match self.via {
            Via::Wfx => f.journal()["jobs"][id]["boot"].clone(),
            Via::TufOnly => {
                let p = Self::record(f)["pending"].clone();
                assert_eq!(p["path"], id, "pending names {id}");
                p
            }
        }
    }

    /// What was reported of the update so far, to compare: wfx: the job's history of states;
    /// TUF-only: the record file and the states the agent logged for it.
    pub fn reported(&self, f: &Fleet, id: &str) -> Value {
        match self.via {
            Via::Wfx => wfx_job(f, id)["history"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| h["status"]["state"].clone())
                .collect(),
            Via::TufOnly => json!({
                "record": fs::read_to_string(f.path("state/tuf-only.json")).unwrap_or_default(),
                "logged": logged(f, id).into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
            }),
        }
    }

    /// Whether what was reported of the update caught up with its state (TUF-only records an
    /// update's end before it logs the report).
    pub fn reported_all(&self, f: &Fleet, id: &str) -> bool {
        match self.via {
            Via::Wfx => true,
            Via::TufOnly => {
                logged(f, id).last().map(|(s, _)| s.as_str()) == Some(self.state(f, id).as_str())
            }
        }
    }

    /// The update's id as `status` shows it: wfx's job id; TUF-only: `tuf:<path>`.
    pub fn status_id(&self, id: &str) -> String {
        match self.via {
            Via::Wfx => id.to_owned(),
            Via::TufOnly => format!("tuf:{id}"),
        }
    }

    /// What `status --json` says of the source.
    pub fn status_source(&self) -> &'static str {
        match self.via {
            Via::Wfx => "wfx",
            Via::TufOnly => "tuf-only",
        }
    }
}

/// The job as wfx holds it (from the emulator's store: no request, so it works while wfx
/// answers 503).
fn wfx_job(f: &Fleet, id: &str) -> Value {
    f.wfx.store().job(id).unwrap().to_json(true)
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}

/// The states the agent logged for TUF-only's update of target `path`, with their messages,
/// oldest first (the reporter's lines: `... report: <message> job=tuf:<path> state="<STATE>"
/// progress=...`).
pub fn logged(f: &Fleet, path: &str) -> Vec<(String, String)> {
    let job = format!(" job=tuf:{path} state=\"");
    f.agent_log()
        .lines()
        .filter_map(|l| {
            let (head, rest) = l.split_once(&job)?;
            let state = rest.split('"').next()?.to_owned();
            let message = head.split_once(" report: ").map_or(head, |(_, m)| m);
            Some((state, message.to_owned()))
        })
        .collect()
}

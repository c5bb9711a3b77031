//! The persistent record of the jobs in hand (`<state_dir>/state.json`), replaced atomically
//! before each report: write a temporary file, fsync it, rename it over the old one, fsync the
//! directory. A power cut at any instant leaves the old journal or the new one, never a mix.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sources::wfx::job::Record;

/// File name of the journal in the state directory.
pub const FILE: &str = "state.json";
/// Written by this agent; a newer journal is refused rather than misread.
const SCHEMA: u32 = 1;

/// The whole journal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub schema: u32,
    /// By job id.
    pub jobs: BTreeMap<String, Record>,
    /// The last job that ended, for `status`.
    #[serde(default)]
    pub last: Option<LastResult>,
}

/// How the last job ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastResult {
    pub job_id: String,
    pub state: crate::state::State,
    pub message: String,
    /// The artifact's version (not in journals of older agents, as the two below).
    #[serde(default)]
    pub version: Option<String>,
    /// When the device reached the end, RFC 3339 UTC.
    #[serde(default)]
    pub time: Option<String>,
    /// The new slot was tried and the bootloader went back to the old one.
    #[serde(default)]
    pub rolled_back: bool,
}

impl LastResult {
    /// The end as the reports show it.
    pub fn outcome(&self) -> crate::report::Outcome {
        crate::report::Outcome {
            id: self.job_id.clone(),
            state: self.state,
            version: self.version.clone(),
            message: self.message.clone(),
            time: self.time.clone(),
            rolled_back: self.rolled_back,
        }
    }
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("journal {path} has schema {found}, newer than this agent ({SCHEMA})")]
    Newer { path: PathBuf, found: u32 },
}

/// The journal file of a state directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.to_owned(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
        let path = path.to_owned();
        move |source| JournalError::Io { path, source }
    }

    /// The journal, or an empty one when there is none yet.
    pub fn load(&self) -> Result<Journal, JournalError> {
        let path = self.path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Journal {
                    schema: SCHEMA,
                    ..Default::default()
                });
            }
            Err(e) => return Err(self.io(&path)(e)),
        };
        let j: Journal = serde_json::from_slice(&text).map_err(|e| JournalError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if j.schema > SCHEMA {
            return Err(JournalError::Newer {
                path,
                found: j.schema,
            });
        }
        Ok(j)
    }

    /// Replaces the journal atomically and durably.
    pub fn save(&self, journal: &Journal) -> Result<(), JournalError> {
        let path = self.path();
        let mut j = journal.clone();
        j.schema = SCHEMA;
        let bytes = serde_json::to_vec_pretty(&j).map_err(|e| JournalError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        cip_atomic::create_dirs(&self.dir).map_err(self.io(&self.dir))?;
        // Temporary, fsync, rename, fsync of the directory; 0600 whatever the umask.
        cip_atomic::write(&path, &bytes, cip_atomic::PRIVATE_FILE).map_err(self.io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::wfx::job::Final;

    fn record(id: &str) -> Record {
        Record {
            job_id: id.into(),
            definition_hash: "abc".into(),
            downloaded: true,
            installed: 1,
            committed: Some(1),
            final_state: Some(Final {
                state: crate::state::State::Terminated,
                message: "m".into(),
                rolled_back: false,
                time: None,
            }),
            boot: None,
            delta_failed: None,
        }
    }

    #[test]
    fn round_trip_and_replace() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(&d.path().join("state"));
        let empty = s.load().unwrap();
        assert!(empty.jobs.is_empty());
        let mut j = Journal::default();
        j.jobs.insert("a".into(), record("a"));
        s.save(&j).unwrap();
        let back = s.load().unwrap();
        assert_eq!(back.jobs, j.jobs);
        assert_eq!(back.schema, SCHEMA);
        j.jobs.remove("a");
        s.save(&j).unwrap();
        assert!(s.load().unwrap().jobs.is_empty());
        assert!(!d.path().join("state/state.json.tmp").exists());
    }

    /// A power cut during a save leaves a temporary file behind: the journal is the old one.
    #[test]
    fn a_leftover_temporary_file_is_ignored_and_replaced() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        let mut j = Journal::default();
        j.jobs.insert("a".into(), record("a"));
        s.save(&j).unwrap();
        fs::write(d.path().join("state.json.tmp"), b"{\"schema\":1,\"jo").unwrap();
        assert_eq!(s.load().unwrap().jobs, j.jobs);
        s.save(&Journal::default()).unwrap();
        assert!(s.load().unwrap().jobs.is_empty());
    }

    /// A journal an older agent wrote still loads: no version, time nor rollback in `last` and in
    /// a job's final state.
    #[test]
    fn an_older_last_result_loads() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        fs::write(
            s.path(),
            br#"{"schema": 1,
                 "jobs": {"j10": {"job_id": "j10", "definition_hash": "h",
                                  "final_state": {"state": "TERMINATED", "message": "m"}}},
                 "last": {"job_id": "j9", "state": "ACTIVATED", "message": "installed"}}"#,
        )
        .unwrap();
        let j = s.load().unwrap();
        let f = j.jobs["j10"].final_state.clone().unwrap();
        assert_eq!((f.rolled_back, f.time), (false, None));
        let o = j.last.unwrap().outcome();
        assert_eq!(o.id, "j9");
        assert_eq!(o.state, crate::state::State::Activated);
        assert_eq!((&o.version, &o.time, o.rolled_back), (&None, &None, false));
        assert_eq!(o.error(), None);
    }

    #[test]
    fn corrupt_and_newer_journals_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        fs::write(s.path(), b"{not json").unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("is corrupt"), "{e}");
        fs::write(s.path(), br#"{"schema": 9, "jobs": {}}"#).unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("schema 9, newer"), "{e}");
    }
}

//! The states of an update: those of the DAU workflows (`wfx.workflow.dau.direct` and
//! `.phased`), which the reports (log, STATUS=, MQTT) use for every job source. One enum, so
//! that no state is a string compared in many places.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A DAU workflow state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Created,
    Download,
    Downloading,
    Downloaded,
    Install,
    Installing,
    Installed,
    Activate,
    Activating,
    Activated,
    Terminated,
}

/// The group of a state, as the workflow files define them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Regular workflow-advancing states.
    Open,
    /// A successful update's terminal state.
    Closed,
    /// A failed update's terminal state.
    Failed,
    /// In no group (CREATED).
    None,
}

impl State {
    const ALL: [State; 11] = [
        State::Created,
        State::Download,
        State::Downloading,
        State::Downloaded,
        State::Install,
        State::Installing,
        State::Installed,
        State::Activate,
        State::Activating,
        State::Activated,
        State::Terminated,
    ];

    /// The state's name in wfx.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Created => "CREATED",
            State::Download => "DOWNLOAD",
            State::Downloading => "DOWNLOADING",
            State::Downloaded => "DOWNLOADED",
            State::Install => "INSTALL",
            State::Installing => "INSTALLING",
            State::Installed => "INSTALLED",
            State::Activate => "ACTIVATE",
            State::Activating => "ACTIVATING",
            State::Activated => "ACTIVATED",
            State::Terminated => "TERMINATED",
        }
    }

    /// The state named `name`; `None` for a state of no DAU workflow.
    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn group(self) -> Group {
        match self {
            State::Created => Group::None,
            State::Activated => Group::Closed,
            State::Terminated => Group::Failed,
            _ => Group::Open,
        }
    }

    /// ACTIVATED or TERMINATED: the update is over.
    pub fn is_final(self) -> bool {
        matches!(self.group(), Group::Closed | Group::Failed)
    }

    /// States in which the device (CLIENT) may move the job to TERMINATED.
    pub fn client_may_terminate(self) -> bool {
        matches!(
            self,
            State::Download
                | State::Downloading
                | State::Install
                | State::Installing
                | State::Activate
                | State::Activating
        )
    }

    /// The end of an update that was (`true`) or was not activated.
    pub fn end(activated: bool) -> State {
        if activated {
            State::Activated
        } else {
            State::Terminated
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state of both workflow files, in their groups.
    #[test]
    fn names_and_groups_of_the_workflow_files() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(State::parse("installing"), None);
        assert_eq!(State::parse("FAILED"), None);
        assert_eq!(State::Installing.group(), Group::Open);
        assert_eq!(State::Created.group(), Group::None);
        assert!(State::Activated.is_final() && State::Terminated.is_final());
        assert!(!State::Installed.client_may_terminate());
        assert!(State::Activating.client_may_terminate());
    }
}

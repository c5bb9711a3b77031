//! `cip-update-agent status`: what the device runs and what the agent is doing, from the
//! configuration, the version file and the journal; no network needed.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Config;
use crate::sources::wfx::job::Record;
use crate::sources::wfx::journal::{JournalError, LastResult, Store};
use crate::text::escaped;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Status {
    pub agent_version: String,
    pub client_id: Option<String>,
    pub running_version: Option<String>,
    pub hardware: Option<String>,
    pub wfx: Option<String>,
    /// Where updates come from: `wfx`, or `tuf-only` (no `[wfx]`: the TUF repository's newest
    /// target for this hardware).
    pub source: &'static str,
    pub current_job: Option<CurrentJob>,
    pub last_result: Option<LastResult>,
    /// The bootloader's state (slot, trial or confirmed), read now.
    pub boot: Option<crate::boot::BootStatus>,
    /// Why the bootloader's state cannot be read.
    pub boot_error: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CurrentJob {
    pub job_id: String,
    pub phase: String,
}

fn phase(r: &Record) -> String {
    if let Some(f) = &r.final_state {
        return format!("reporting {} to wfx", f.state);
    }
    if let Some(b) = &r.boot {
        return boot_phase(b);
    }
    if let Some(i) = r.committed {
        return format!("installing artifact {} (handed to SWUpdate)", i + 1);
    }
    match (r.installed, r.downloaded) {
        (0, true) => "downloaded".into(),
        (0, false) => "preparing".into(),
        (n, _) => format!("{n} artifact(s) installed"),
    }
}

/// What an activation is at, from its boot record.
fn boot_phase(b: &crate::pipeline::activate::BootRecord) -> String {
    match (&b.failed_check, &b.slot) {
        (Some(c), _) => format!(
            "going back to slot {} ({c})",
            b.from.as_deref().unwrap_or("?")
        ),
        (None, Some(s)) => format!(
            "activating slot {s} (version {})",
            b.expected_version.as_deref().unwrap_or("not given")
        ),
        (None, None) => "activating".into(),
    }
}

/// TUF-only mode's update in hand and last result, from its record.
fn tuf_only_state(state_dir: &std::path::Path) -> (Option<CurrentJob>, Option<LastResult>) {
    use crate::sources::tuf_only::{Record, record_path, update_id};
    let rec = Record::load(&record_path(state_dir));
    let current = match (&rec.pending, &rec.committed) {
        (Some(p), _) => Some(CurrentJob {
            job_id: update_id(&p.path),
            phase: boot_phase(&p.boot),
        }),
        (None, Some(id)) => {
            let path = id.rsplit_once('@').map_or(id.as_str(), |(p, _)| p);
            Some(CurrentJob {
                job_id: update_id(path),
                phase: "installing (handed to SWUpdate)".into(),
            })
        }
        (None, None) => None,
    };
    let last = rec.last.map(|l| LastResult {
        job_id: update_id(&l.path),
        state: crate::state::State::end(l.activated),
        message: l.message,
        version: l.version,
        time: l.time,
        rolled_back: l.rolled_back,
    });
    (current, last)
}

pub fn collect(config: &Config) -> Result<Status, JournalError> {
    let tuf_only = config.wfx.is_none() && config.tuf.is_some();
    let journal = Store::new(&config.state_dir).load()?;
    let (current_job, last) = if tuf_only {
        tuf_only_state(&config.state_dir)
    } else {
        (
            journal.jobs.values().next().map(|r| CurrentJob {
                job_id: r.job_id.clone(),
                phase: phase(r),
            }),
            journal.last,
        )
    };
    let (boot, boot_error) = match crate::boot::from_config(&config.boot).read() {
        Ok(b) => (Some(b), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(Status {
        boot,
        boot_error,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        // Configured, else obtained by onboarding.
        client_id: config.device.client_id.clone().or_else(|| {
            cip_onboarding::store::load(&config.state_dir)
                .ok()
                .flatten()
                .map(|o| o.client_id)
        }),
        running_version: crate::device::read_version(&config.device.version_file),
        hardware: crate::device::read_hwrevision(&config.device.hwrevision_file),
        // Displayed redacted: its password and tokens stay in the configuration file.
        wfx: config.wfx.as_ref().map(|w| w.url.to_string()),
        source: if tuf_only { "tuf-only" } else { "wfx" },
        current_job,
        // The message may come from a server (an error body, a URI): no URL's credentials, no
        // control characters (a journal written by an older agent may hold either).
        last_result: last.map(|l| LastResult {
            message: crate::redact::message(&l.message),
            ..l
        }),
    })
}

/// The human form.
pub fn render(s: &Status) -> String {
    let or = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_owned());
    let mut out = String::new();
    let _ = writeln!(out, "agent:     cip-update-agent {}", s.agent_version);
    let _ = writeln!(
        out,
        "client-id: {}",
        or(&s.client_id, "(none: onboarding needed)")
    );
    let _ = writeln!(out, "running:   {}", or(&s.running_version, "(unknown)"));
    let _ = writeln!(out, "hardware:  {}", or(&s.hardware, "(unknown)"));
    if s.source == "tuf-only" {
        let _ = writeln!(
            out,
            "source:    TUF-only (the repository's newest target for this hardware)"
        );
    } else {
        let _ = writeln!(out, "wfx:       {}", or(&s.wfx, "(not configured)"));
    }
    match &s.current_job {
        Some(j) => {
            let _ = writeln!(
                out,
                "job:       {} ({})",
                escaped(&j.job_id),
                escaped(&j.phase)
            );
        }
        None => {
            let _ = writeln!(out, "job:       none");
        }
    }
    match (&s.boot, &s.boot_error) {
        (Some(b), _) if b.backend == crate::config::BootBackend::None => {
            let _ = writeln!(out, "boot:      none (no A/B rollback)");
        }
        (Some(b), _) => {
            let state = if b.trial { "on trial" } else { "confirmed" };
            let _ = writeln!(
                out,
                "boot:      {}, slot {} {state}{} ({})",
                b.backend.name(),
                b.booted.as_deref().unwrap_or("?"),
                b.pending
                    .as_ref()
                    .map(|p| format!(", slot {p} armed for the next boot"))
                    .unwrap_or_default(),
                b.detail
            );
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "boot:      (cannot be read: {e})");
        }
        (None, None) => {}
    }
    match &s.last_result {
        Some(l) if l.message.is_empty() => {
            let _ = writeln!(out, "last:      {} {}", escaped(&l.job_id), l.state);
        }
        Some(l) => {
            let _ = writeln!(
                out,
                "last:      {} {}: {}",
                escaped(&l.job_id),
                l.state,
                l.message
            );
        }
        None => {
            let _ = writeln!(out, "last:      none");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_from_the_journal() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Config {
            state_dir: d.path().to_owned(),
            ..Default::default()
        };
        c.device.version_file = d.path().join("os-release");
        c.device.hwrevision_file = d.path().join("hwrevision");
        std::fs::write(&c.device.version_file, "VERSION_ID=1.4\n").unwrap();
        std::fs::write(&c.device.hwrevision_file, "qemu-amd64 cip-core-1.0\n").unwrap();
        let s = collect(&c).unwrap();
        assert_eq!(s.current_job, None);
        assert_eq!(s.running_version.as_deref(), Some("1.4"));
        let text = render(&s);
        assert!(
            text.contains("hardware:  qemu-amd64 cip-core-1.0"),
            "{text}"
        );
        assert!(text.contains("job:       none"), "{text}");
        assert!(text.contains("boot:      none (no A/B rollback)"), "{text}");

        let mut j = crate::sources::wfx::journal::Journal::default();
        j.jobs.insert(
            "j1".into(),
            Record {
                job_id: "j1".into(),
                definition_hash: "h".into(),
                downloaded: false,
                installed: 0,
                committed: Some(0),
                final_state: None,
                boot: None,
                delta_failed: None,
            },
        );
        j.last = Some(LastResult {
            job_id: "j0".into(),
            state: crate::state::State::Activated,
            message: "installed".into(),
            version: None,
            time: None,
            rolled_back: false,
        });
        Store::new(d.path()).save(&j).unwrap();
        let s = collect(&c).unwrap();
        let text = render(&s);
        assert!(
            text.contains("job:       j1 (installing artifact 1 (handed to SWUpdate))"),
            "{text}"
        );
        assert!(
            text.contains("last:      j0 ACTIVATED: installed"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["current_job"]["job_id"], "j1");
        assert_eq!(json["last_result"]["state"], "ACTIVATED");
        assert_eq!(json["source"], "wfx");
    }

    #[test]
    fn status_of_tuf_only_mode_from_its_record() {
        use crate::sources::tuf_only::{LastEnd, Pending, Record, record_path};
        let d = tempfile::tempdir().unwrap();
        let mut c: Config = toml::from_str(
            "[tuf]\nroot = \"/r.json\"\nmetadata_url = \"http://h/m\"\ntargets_url = \"http://h/t\"\n",
        )
        .unwrap();
        c.state_dir = d.path().to_owned();
        let mut rec = Record {
            last: Some(LastEnd {
                path: "os-1.5.swu".into(),
                activated: false,
                message: "rolled back to slot A (health check)".into(),
                version: Some("1.5".into()),
                time: Some("2026-01-02T03:04:05Z".into()),
                rolled_back: true,
            }),
            ..Default::default()
        };
        rec.pending = Some(Pending {
            id: "os-1.6.swu@ab".into(),
            path: "os-1.6.swu".into(),
            boot: crate::pipeline::activate::BootRecord {
                slot: Some("B".into()),
                expected_version: Some("1.6".into()),
                ..Default::default()
            },
        });
        rec.save(&record_path(d.path())).unwrap();
        let s = collect(&c).unwrap();
        let text = render(&s);
        assert!(text.contains("source:    TUF-only"), "{text}");
        assert!(
            text.contains("job:       tuf:os-1.6.swu (activating slot B (version 1.6))"),
            "{text}"
        );
        assert!(
            text.contains(
                "last:      tuf:os-1.5.swu TERMINATED: rolled back to slot A (health check)"
            ),
            "{text}"
        );
    }
}

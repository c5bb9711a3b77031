//! Checks of a slot on trial before the agent confirms it (`[health]`): systemd reached
//! `running` (or `degraded`, if allowed), each configured command exits 0 within its timeout,
//! and the slot runs the version the job installed. The first failure names the check.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{Health, SystemdHealth};

/// How often `systemctl is-system-running` is asked while the system starts.
const POLL: Duration = Duration::from_secs(1);

/// Runs every check; `Err` names the first that failed and why.
pub async fn check(
    c: &Health,
    expected_version: Option<&str>,
    version_file: &Path,
) -> Result<(), String> {
    if let Some(want) = expected_version {
        match crate::device::read_version(version_file) {
            Some(v) if v == want => {}
            Some(v) => {
                return Err(format!(
                    "version check failed: the new slot runs {v}, the job installed {want}"
                ));
            }
            None => {
                return Err(format!(
                    "version check failed: no version in {}",
                    version_file.display()
                ));
            }
        }
    }
    systemd(c).await?;
    for chk in &c.checks {
        crate::notify::status(&format!("health check `{}`", chk.name));
        crate::notify::beat();
        crate::command::run_command(&chk.command, chk.timeout)
            .await
            .map_err(|e| format!("health check `{}` failed: {e}", chk.name))?;
    }
    Ok(())
}

/// What one answer of `systemctl is-system-running` means.
#[derive(Debug, PartialEq, Eq)]
pub enum SystemState {
    Good,
    /// Still starting: ask again.
    NotYet,
    Bad,
}

pub fn judge_systemd(want: SystemdHealth, answer: &str) -> SystemState {
    match (answer.trim(), want) {
        ("running", _) => SystemState::Good,
        ("degraded", SystemdHealth::Degraded) => SystemState::Good,
        ("initializing" | "starting", _) => SystemState::NotYet,
        _ => SystemState::Bad,
    }
}

async fn systemd(c: &Health) -> Result<(), String> {
    if c.systemd == SystemdHealth::Ignore {
        return Ok(());
    }
    crate::notify::status("health check: waiting for systemd to finish starting");
    let started = Instant::now();
    let prog = c.systemctl.to_string_lossy().into_owned();
    loop {
        crate::notify::beat();
        let out = tokio::process::Command::new(&c.systemctl)
            .arg("is-system-running")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        // Its exit status is not 0 for anything but `running`: the word is the answer.
        let answer = match tokio::time::timeout(Duration::from_secs(30), out).await {
            Ok(Ok(o)) => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            Ok(Err(e)) => return Err(format!("health check `systemd` failed: {prog}: {e}")),
            Err(_) => "(no answer)".to_owned(),
        };
        match judge_systemd(c.systemd, &answer) {
            SystemState::Good => return Ok(()),
            SystemState::Bad => {
                return Err(format!(
                    "health check `systemd` failed: the system is {answer}"
                ));
            }
            SystemState::NotYet if started.elapsed() >= c.systemd_timeout => {
                return Err(format!(
                    "health check `systemd` failed: still {answer} after {}",
                    humantime::format_duration(c.systemd_timeout)
                ));
            }
            SystemState::NotYet => tokio::time::sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthCheck;

    #[test]
    fn systemd_states() {
        use SystemState::*;
        assert_eq!(judge_systemd(SystemdHealth::Running, "running\n"), Good);
        assert_eq!(judge_systemd(SystemdHealth::Running, "degraded"), Bad);
        assert_eq!(judge_systemd(SystemdHealth::Degraded, "degraded"), Good);
        assert_eq!(judge_systemd(SystemdHealth::Degraded, "starting"), NotYet);
        assert_eq!(judge_systemd(SystemdHealth::Running, "maintenance"), Bad);
    }

    #[tokio::test]
    async fn checks_in_order_with_names() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("version");
        std::fs::write(&v, "1.1\n").unwrap();
        let systemctl = d.path().join("systemctl");
        std::fs::write(&systemctl, "#!/bin/sh\necho degraded\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Health {
            systemctl: systemctl.clone(),
            ..Default::default()
        };
        let e = check(&c, Some("1.1"), &v).await.unwrap_err();
        assert_eq!(e, "health check `systemd` failed: the system is degraded");
        c.systemd = SystemdHealth::Degraded;
        check(&c, Some("1.1"), &v).await.unwrap();
        let e = check(&c, Some("1.2"), &v).await.unwrap_err();
        assert!(e.contains("runs 1.1, the job installed 1.2"), "{e}");
        c.checks = vec![
            HealthCheck {
                name: "ok".into(),
                command: vec!["true".into()],
                timeout: Duration::from_secs(5),
            },
            HealthCheck {
                name: "app".into(),
                command: vec!["sh".into(), "-c".into(), "echo app down >&2; exit 2".into()],
                timeout: Duration::from_secs(5),
            },
        ];
        let e = check(&c, None, &v).await.unwrap_err();
        assert!(
            e.starts_with("health check `app` failed: sh: exit status: 2: app down"),
            "{e}"
        );
        c.checks[1].command = vec!["sleep".into(), "10".into()];
        c.checks[1].timeout = Duration::from_millis(200);
        let e = check(&c, None, &v).await.unwrap_err();
        assert!(
            e.contains("`app` failed") && e.contains("did not finish within 200ms"),
            "{e}"
        );
    }
}

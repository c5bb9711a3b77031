//! External commands the agent runs (reboot, consent, health checks): bounded in time, the
//! watchdog fed while they run, and a failure told by its last stderr line.

use std::time::Duration;

/// Runs a command with a timeout; `Ok(())` on exit status 0, else why not.
pub async fn run_command(argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("{prog}: {e}"))?;
    let output = child.wait_with_output();
    tokio::pin!(output);
    let deadline = tokio::time::Instant::now() + timeout;
    // A bounded wait is the main loop at work: it keeps the watchdog heartbeat going.
    let done = loop {
        crate::notify::beat();
        tokio::select! {
            o = &mut output => break Some(o),
            () = tokio::time::sleep_until(deadline) => break None,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    match done {
        None => Err(format!(
            "{prog} did not finish within {}",
            humantime::format_duration(timeout)
        )),
        Some(Err(e)) => Err(format!("{prog}: {e}")),
        Some(Ok(o)) if o.status.success() => Ok(()),
        Some(Ok(o)) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(if last.is_empty() {
                format!("{prog}: {}", o.status)
            } else {
                format!("{prog}: {}: {}", o.status, last.trim())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands() {
        assert!(
            run_command(&["true".into()], Duration::from_secs(5))
                .await
                .is_ok()
        );
        let e = run_command(
            &[
                "sh".into(),
                "-c".into(),
                "echo no consent >&2; exit 3".into(),
            ],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(
            e.contains("exit status: 3") && e.contains("no consent"),
            "{e}"
        );
        let e = run_command(&["sleep".into(), "5".into()], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(e.contains("did not finish within"), "{e}");
        assert!(
            run_command(&["/nonexistent/x".into()], Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}

//! The agent's log under systemd: with stderr connected to the journal (`JOURNAL_STREAM` naming
//! it), entries in journald's native protocol with priorities and the job's fields, read back
//! from a stand-in socket; without the native socket, `<N>`-prefixed text lines on stderr.
//! Neither has a terminal's escape codes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use cip_update_agent_tests::daemons::agent::agent_cmd;
use cip_update_agent_tests::daemons::journald::{Entry, Journald};
use cip_update_agent_tests::scenarios::fleet::{CLIENT, Fleet, firmware};

/// `JOURNAL_STREAM` for the agent's stderr, the fleet's `agent.err` (created here, so that its
/// device and inode are known before the agent starts).
fn journal_stream(f: &Fleet) -> String {
    let err = f.path("agent.err");
    fs::write(&err, "").unwrap();
    let m = fs::metadata(&err).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

/// Starts the agent on a fleet with a job whose artifact fails its hash (it ends TERMINATED), as
/// systemd would with `env`; waits for the job's end and stops the agent. The job's id.
async fn run_a_failing_job(f: &mut Fleet, env: &[(&str, &str)]) -> String {
    let (_swu, _, url) = f.image("bad", 50_000, true);
    f.start_agent_with("run", env);
    let id = f
        .create_job("wfx.workflow.dau.direct", firmware(&url))
        .await;
    let j = f.wait_for(&id, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_journal_gets_priorities_and_the_jobs_fields() {
    let mut f = Fleet::new();
    let socket = f.path("journal.socket");
    let journald = Journald::bind(&socket).unwrap();
    let stream = journal_stream(&f);
    let socket = socket.display().to_string();
    let env = [
        ("JOURNAL_STREAM", stream.as_str()),
        ("CIP_UPDATE_AGENT_JOURNAL_SOCKET", socket.as_str()),
    ];
    let id = run_a_failing_job(&mut f, &env).await;
    // The report of the end is sent after wfx has it: wait for its entry too.
    let mut entries = Vec::new();
    for _ in 0..50 {
        entries = journald.entries();
        if entries.iter().any(|e| {
            e.get("WFX_STATE").as_deref() == Some("TERMINATED")
                && e.get("JOB_ID").as_deref() == Some(id.as_str())
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.kill_agent();

    let of_job: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.get("JOB_ID").as_deref() == Some(id.as_str()))
        .collect();
    assert!(
        !of_job.is_empty(),
        "no entry with JOB_ID={id}: {entries:#?}"
    );
    let decided = of_job
        .iter()
        .find(|e| e.get("MESSAGE").as_deref() == Some("decided"))
        .unwrap_or_else(|| panic!("no \"decided\" entry: {of_job:#?}"));
    assert_eq!(decided.get("PRIORITY").as_deref(), Some("6"), "{decided:?}");
    assert!(decided.get("WFX_STATE").is_some(), "{decided:?}");
    assert!(
        of_job
            .iter()
            .any(|e| e.get("WFX_STATE").as_deref() == Some("TERMINATED")),
        "{of_job:#?}"
    );
    for e in &entries {
        assert_eq!(
            e.get("SYSLOG_IDENTIFIER").as_deref(),
            Some("cip-update-agent")
        );
        assert_eq!(e.get("CLIENT_ID").as_deref(), Some(CLIENT), "{e:?}");
        let p = e.get("PRIORITY").unwrap_or_default();
        assert!(["3", "4", "6", "7"].contains(&p.as_str()), "{e:?}");
        assert!(e.get("MESSAGE").is_some(), "{e:?}");
    }
    // The journal only: the same lines are not written a second time on stderr.
    let log = f.agent_log();
    assert!(!log.contains("decided"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_native_socket_stderr_gets_prefixed_lines_without_escapes() {
    let mut f = Fleet::new();
    let stream = journal_stream(&f);
    let missing = f.path("no-journal.socket").display().to_string();
    let env = [
        ("JOURNAL_STREAM", stream.as_str()),
        ("CIP_UPDATE_AGENT_JOURNAL_SOCKET", missing.as_str()),
    ];
    let id = run_a_failing_job(&mut f, &env).await;
    f.kill_agent();

    let log = fs::read(f.path("agent.err")).unwrap();
    assert!(!log.contains(&0x1b), "an escape byte on stderr");
    let log = String::from_utf8(log).unwrap();
    assert!(!log.is_empty());
    for line in log.lines() {
        let (p, rest) = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .unwrap_or_else(|| panic!("not a <N> line: {line:?}"));
        assert!(matches!(p, "3" | "4" | "6" | "7"), "{line:?}");
        // No timestamp of our own: journald adds it.
        assert!(
            !rest.trim_start().starts_with(|c: char| c.is_ascii_digit()),
            "{line:?}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>") && l.contains("decided") && l.contains(&id)),
        "{log}"
    );
}

#[test]
fn a_fatal_error_on_the_journal_stream_has_the_error_priority() {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("err");
    let file = fs::File::create(&err).unwrap();
    let m = file.metadata().unwrap();
    let out = agent_cmd()
        .unwrap()
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .arg("run")
        .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .env(
            "CIP_UPDATE_AGENT_JOURNAL_SOCKET",
            dir.path().join("no-journal.socket"),
        )
        .stderr(file)
        .status()
        .unwrap();
    assert!(!out.success());
    let log = fs::read_to_string(&err).unwrap();
    assert!(log.starts_with("<3>error: "), "{log:?}");
}

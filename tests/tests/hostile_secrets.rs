//! Issue 16, secrets and configuration: the real agent, its configuration carrying credentials
//! (a password and a token in `wfx.url`, a token as the user part only, a token in the query),
//! artifact URIs from wfx carrying them too, and a hostile wfx putting control characters into
//! a URI. Whatever the agent shows (`status`, `status --json`, its log, its messages to wfx, its
//! retained MQTT state, its configuration errors) holds no secret and no forged log line; huge
//! durations and relative paths are configuration errors naming the key; the files it writes
//! under `state_dir` are private whatever the umask.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cip_update_agent_tests::daemons::agent::agent_cmd;
use cip_update_agent_tests::daemons::mosquitto::Mosquitto;
use cip_update_agent_tests::daemons::process::GroupChild;
use cip_update_agent_tests::scenarios::fleet::{CLIENT, DIRECT, Fleet, firmware};

/// Every secret a test plants; none may appear in any output.
const SECRETS: &[&str] = &[
    "pw-7Qx9",
    "tok-U5er",
    "tok-Qu3ry",
    "tok-Art1",
    "sig-Art2",
    "mq-pw-44",
];

/// The configuration error exit code.
const EXIT_CONFIG: i32 = 11;

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `run` for 3 s with `config` (written to `dir/agent.toml`) against servers that cannot be
/// reached, then kills it: its log, stdout and stderr, where the retries show what it would
/// leak.
fn run_briefly(dir: &Path, config: &str) -> String {
    let cfg = dir.join("agent.toml");
    fs::write(&cfg, config).unwrap();
    let mut run = agent_cmd()
        .unwrap()
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    run.kill().unwrap();
    text(&run.wait_with_output().unwrap())
}

/// `cip-update-agent --config <file with text> args`, run to its end.
fn agent_with_config(dir: &Path, config: &str, args: &[&str]) -> Output {
    let cfg = dir.join("agent.toml");
    fs::write(&cfg, config).unwrap();
    agent_cmd()
        .unwrap()
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .env("CIP_UPDATE_AGENT_LOG", "info")
        .output()
        .unwrap()
}

/// `http://127.0.0.1:P/...` with `userinfo@` put after the scheme.
fn with_userinfo(url: &str, userinfo: &str) -> String {
    url.replacen("http://", &format!("http://{userinfo}@"), 1)
}

/// `status` and `status --json` show where wfx is, without its password or tokens.
#[test]
fn status_shows_wfx_url_without_its_secrets() {
    let d = tempfile::tempdir().unwrap();
    for url in [
        "http://fleet:pw-7Qx9@127.0.0.1:1/api/wfx/v1?token=tok-Qu3ry",
        "https://tok-U5er@wfx.example:8443/api/wfx/v1",
    ] {
        let config = format!(
            "state_dir = {:?}\n[device]\nclient_id = \"dev-1\"\n[wfx]\nurl = \"{url}\"\n",
            d.path().join("state")
        );
        for args in [&["status"][..], &["status", "--json"]] {
            let o = agent_with_config(d.path(), &config, args);
            assert!(o.status.success(), "{args:?}: {o:?}");
            let shown = text(&o);
            assert_no_secret(&format!("{args:?}"), &shown);
            // Still says which server: host and path stay.
            let host = if url.contains("127.0.0.1") {
                "127.0.0.1:1/api/wfx/v1"
            } else {
                "wfx.example:8443/api/wfx/v1"
            };
            assert!(shown.contains(host), "{args:?}: {shown}");
        }
    }
    // `run` against that wfx, unreachable through a proxy with credentials: its retries are
    // logged, without the secrets.
    let config = format!(
        "state_dir = {:?}\n[device]\nclient_id = \"dev-1\"\n[wfx]\nurl = \"{}\"\n[proxy]\nurl = \"{}\"\n",
        d.path().join("state"),
        "http://fleet:pw-7Qx9@127.0.0.1:1/api/wfx/v1?token=tok-Qu3ry",
        "http://proxy:mq-pw-44@127.0.0.1:1",
    );
    let log = run_briefly(d.path(), &config);
    assert!(
        log.contains("127.0.0.1:1"),
        "the retries are logged:\n{log}"
    );
    assert_no_secret("the log of `run`", &log);
}

/// A token in the query of `wfx.url` stays in the query: the API path goes before it, and the
/// agent carries a job through (today's agent appends `/jobs` after the query and never sees
/// the job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_token_in_wfx_url_is_kept_and_shown_nowhere() {
    let mut f = Fleet::new();
    f.config.wfx_url = Some(format!("{}?access_token=tok-Qu3ry", f.wfx.south_url()));
    f.start_agent();
    f.direct_job_succeeds("q").await;
    assert_no_secret("the log", &f.agent_log());
    assert_no_secret("status", &text(&f.agent_cli(&["status"])));
    assert_no_secret("status --json", &f.status_json().to_string());
}

/// Tokens in `wfx.url`'s user part and in an artifact URI from wfx (user part, query): the job
/// fails (404) and its reason names the file, but no secret reaches wfx's job history, the
/// retained MQTT state, the log or `status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_tokens_reach_no_output() {
    let broker = Mosquitto::start().unwrap();
    let mut sub = broker.subscribe("cip/devices/#").unwrap();
    let mut f = Fleet::new();
    f.config.wfx_url = Some(with_userinfo(&f.wfx.south_url(), "tok-U5er"));
    f.config.extra = format!("[mqtt]\nurl = \"{}\"\n", broker.url());
    f.start_agent();
    let uri = format!(
        "{}?sig=sig-Art2",
        with_userinfo(&f.nginx().url("missing.swu"), "tok-Art1")
    );
    let id = f.create_job(DIRECT, firmware(&uri)).await;
    let j = f.wait_for(&id, &["TERMINATED"]).await;
    let message = j["status"]["message"].as_str().unwrap_or_default();
    // The reason still tells which file on which server.
    assert!(message.contains("missing.swu"), "{j:#}");
    // What the agent sent: the status and every status of the history (the definition is
    // the operator's and holds the URI as written).
    let mut sent = vec![j["status"].to_string()];
    sent.extend(
        j["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| h["status"].to_string()),
    );
    assert_no_secret("the agent's messages to wfx", &sent.join("\n"));

    let state_topic = format!("cip/devices/{CLIENT}/state");
    let msgs = sub
        .wait_for(
            |m| {
                m.iter().any(|m| {
                    m.topic == state_topic
                        && m.json().is_some_and(|v| v["last_error"].as_str().is_some())
                })
            },
            Duration::from_secs(30),
        )
        .unwrap();
    let all: String = msgs.iter().map(|m| format!("{m:?}\n")).collect();
    assert_no_secret("MQTT", &all);
    // A new subscriber gets the retained state: the same, without secrets.
    let mut fresh = broker.subscribe(&state_topic).unwrap();
    let retained = fresh
        .wait_for(|m| !m.is_empty(), Duration::from_secs(10))
        .unwrap();
    assert!(retained[0].retained, "{retained:?}");
    assert_no_secret("the retained MQTT state", &retained[0].payload);

    f.until("the job is forgotten", |f| f.journal_jobs().is_empty())
        .await;
    assert_no_secret("the log", &f.agent_log());
    let st = f.agent_cli(&["status"]);
    assert!(st.status.success(), "{st:?}");
    assert!(text(&st).contains("TERMINATED"), "{st:?}");
    assert_no_secret("status", &text(&st));
    assert_no_secret("status --json", &f.status_json().to_string());
}

/// A configuration error names the line or key, exits 11, and echoes no secret: not in toml's
/// quote of the line, not in the message about a bad URL.
#[test]
fn config_errors_echo_no_secret() {
    let d = tempfile::tempdir().unwrap();
    for (config, names) in [
        (
            "[wfx]\nurl = \"ftp://fleet:pw-7Qx9@wfx/?token=tok-Qu3ry\"\n",
            "not an http:// or https:// URL",
        ),
        ("[wfx]\nurl = \"http://tok-U5er@wfx:99999/\"\n", "not a URL"),
        (
            "[proxy]\nurl = \"socks9://tok-U5er@proxy:1080\"\n",
            "line 2",
        ),
        (
            "[mqtt]\nurl = \"mqtt://fleet:pw-7Qx9@127.0.0.1:1883\"\n",
            "only a host and a port",
        ),
        (
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"u\"\npassword = [\"mq-pw-44\"]\n",
            "line 4",
        ),
    ] {
        for args in [&["status"][..], &["run"]] {
            let o = agent_with_config(d.path(), config, args);
            assert_eq!(
                o.status.code(),
                Some(EXIT_CONFIG),
                "{config:?} {args:?}: {o:?}"
            );
            let shown = text(&o);
            assert!(shown.contains(names), "{config:?}: {shown}");
            assert_no_secret(&format!("{config:?} {args:?}"), &shown);
        }
    }
}

/// `poll_interval = "290000000000y"`: a configuration error naming the key, for `status` and
/// `run` alike (today: `status` accepts it and `run` panics, exit 101).
#[test]
fn huge_durations_are_config_errors() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    for (section, key) in [
        (
            "[wfx]\nurl = \"http://127.0.0.1:1/api\"\npoll_interval",
            "wfx.poll_interval",
        ),
        (
            "[wfx]\nurl = \"http://127.0.0.1:1/api\"\nprogress_interval",
            "wfx.progress_interval",
        ),
        ("[reboot]\nconsent_retry", "reboot.consent_retry"),
        ("[health]\nsystemd_timeout", "health.systemd_timeout"),
    ] {
        let config = format!(
            "state_dir = {state:?}\n[device]\nclient_id = \"dev-1\"\n{section} = \"290000000000y\"\n"
        );
        for args in [&["status"][..], &["run"]] {
            let o = agent_with_config(d.path(), &config, args);
            let shown = text(&o);
            assert_eq!(
                o.status.code(),
                Some(EXIT_CONFIG),
                "{key} {args:?}: {shown}"
            );
            assert!(shown.contains(key) && shown.contains("too long"), "{shown}");
            assert!(!shown.contains("panicked"), "{shown}");
        }
    }
}

/// Paths the agent opens are absolute in the configuration: a relative one is refused with its
/// key (today it is taken relative to whatever directory the agent was started in).
#[test]
fn relative_paths_are_refused_with_their_key() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    for (section, key) in [
        (
            "[tuf]\nroot = \"root.json\"\nmetadata_url = \"http://127.0.0.1:1/m\"\ntargets_url = \"http://127.0.0.1:1/t\"\n",
            "tuf.root",
        ),
        (
            "[device]\nversion_file = \"os-release\"\n",
            "device.version_file",
        ),
        (
            "[device]\nhwrevision_file = \"etc/hwrevision\"\n",
            "device.hwrevision_file",
        ),
        (
            "[swupdate]\ncontrol_socket = \"sockinstctrl\"\n",
            "swupdate.control_socket",
        ),
        (
            "[swupdate]\nprogress_socket = \"./swupdateprog\"\n",
            "swupdate.progress_socket",
        ),
        ("[tls]\nca_file = \"ca.pem\"\n", "tls.ca_file"),
    ] {
        let config = format!("state_dir = {state:?}\n{section}");
        let o = agent_with_config(d.path(), &config, &["status"]);
        let shown = text(&o);
        assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{key}: {shown}");
        assert!(
            shown.contains(&format!("{key}: `")) && shown.contains("must be an absolute path"),
            "{key}: {shown}"
        );
    }
}

/// A hostile wfx puts a newline and terminal escapes into an artifact URI: the log gets no
/// forged line and no escape byte, wfx's message no raw newline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_a_uri_forge_no_log_line() {
    let mut f = Fleet::new();
    f.start_agent();
    let forged = "ERROR cip_update_agent: FORGED everything is fine";
    let uri = format!(
        "{}\n{forged}\r\u{1b}[2K\u{1b}]0;title\u{7}",
        f.nginx().url("missing.swu")
    );
    let id = f.create_job(DIRECT, firmware(&uri)).await;
    let j = f.wait_for(&id, &["TERMINATED"]).await;
    f.until("the job is forgotten", |f| f.journal_jobs().is_empty())
        .await;
    let log = f.agent_log();
    // The URI is refused where it enters (a control character), and shown escaped.
    assert!(
        log.contains("missing.swu\\nERROR cip_update_agent: FORGE"),
        "the URI is logged, escaped:\n{log}"
    );
    for line in log.lines() {
        assert!(
            !line
                .trim_start()
                .starts_with("ERROR cip_update_agent: FORGED"),
            "a forged log line:\n{log}"
        );
    }
    assert!(
        !log.contains(['\u{1b}', '\r', '\u{7}']),
        "escape bytes in the log:\n{log:?}"
    );
    let message = j["status"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains(['\n', '\r', '\u{1b}']),
        "raw control characters in wfx's message: {message:?}"
    );
    let st = text(&f.agent_cli(&["status"]));
    assert!(!st.contains("\nERROR") && !st.contains('\u{1b}'), "{st:?}");
}

/// Under umask 000, every file the agent writes under `state_dir` is 0600 and every
/// directory 0700 (today the journal is 0666: anyone on the device can read or rewrite it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_are_private_under_umask_000() {
    let mut f = Fleet::new();
    let cfg = f.write_config();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(cip_update_agent_tests::daemons::agent::agent_bin().unwrap())
        .arg("--config")
        .arg(&cfg)
        .arg("run");
    let log = |name: &str| {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f.path(name))
            .unwrap()
    };
    c.stdout(log("agent.out")).stderr(log("agent.err"));
    f.agent = Some(GroupChild::spawn(c, "cip-update-agent").unwrap());
    f.direct_job_succeeds("private").await;
    f.until("the job is forgotten", |f| f.journal_jobs().is_empty())
        .await;

    let state = f.path("state");
    let mut seen = Vec::new();
    let mut stack = vec![state.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                assert_eq!(mode, 0o700, "{}: {mode:o}", e.path().display());
                stack.push(e.path());
            } else {
                assert_eq!(mode, 0o600, "{}: {mode:o}", e.path().display());
            }
            seen.push(e.path());
        }
    }
    assert!(
        seen.contains(&state.join("state.json")),
        "the journal is checked: {seen:?}"
    );
}

/// TUF URLs with credentials (a private repository): the fetch errors the agent logs while the
/// repository is unreachable name the server, not the password or the token (today the TUF
/// client's errors quote the URL as configured).
#[test]
fn tuf_url_credentials_are_not_logged() {
    let repo = cip_update_agent_tests::fixtures::tuf::TufRepo::rs_tuf(4).unwrap();
    let d = tempfile::tempdir().unwrap();
    let config = format!(
        "state_dir = {:?}\n[tuf]\nroot = {:?}\nmetadata_url = \"{}\"\ntargets_url = \"{}\"\n",
        d.path().join("state"),
        repo.initial_root(),
        "http://fleet:pw-7Qx9@127.0.0.1:1/metadata",
        "http://tok-U5er@127.0.0.1:1/targets",
    );
    let log = run_briefly(d.path(), &config);
    assert!(
        log.contains("127.0.0.1:1/metadata"),
        "the failed refresh is logged:\n{log}"
    );
    assert_no_secret("the log of TUF-only mode", &log);
}

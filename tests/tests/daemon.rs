//! `cip-update-agent run` end to end: jobs created on the wfx emulator's northbound API, images
//! served by nginx, installed by the real SWUpdate daemon into file targets.

use std::fs;
use std::time::{Duration, Instant};

use cip_update_agent_tests::daemons::swupdate::installation;
use cip_update_agent_tests::emulators::wfx::{Options, WfxEmulator};
use cip_update_agent_tests::fixtures::swu::BuiltSwu;
use cip_update_agent_tests::scenarios::fleet::{CLIENT, Fleet, firmware, installed};
use cip_update_agent_tests::servers::slow_http::SlowServer;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_job_reaches_activated_with_the_image_installed() {
    let mut f = Fleet::new();
    f.start_agent();
    let j = f.direct_job_succeeds("a").await;
    let id = j["id"].as_str().unwrap().to_owned();
    let states: Vec<&str> = j["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|e| e["status"]["state"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(states.contains(&"INSTALLING"), "{states:?}");

    // `status` tells the same, from the journal.
    f.until("the job is forgotten", |f| f.journal_jobs().is_empty())
        .await;
    let st = f.status_json();
    assert_eq!(st["client_id"], CLIENT);
    assert_eq!(st["current_job"], Value::Null);
    assert_eq!(st["last_result"]["job_id"], id.as_str());
    assert_eq!(st["last_result"]["state"], "ACTIVATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_artifact_ends_terminated_with_swupdates_reason() {
    let mut f = Fleet::new();
    let (swu, _, url) = f.image("bad", 100_000, true);
    f.start_agent();
    let id = f
        .create_job("wfx.workflow.dau.direct", firmware(&url))
        .await;
    let j = f.wait_for(&id, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "TERMINATED", "{j:#}");
    let msg = j["status"]["message"].as_str().unwrap();
    let reason = installation().release.hash_mismatch_reason();
    assert!(msg.contains(reason), "{reason}: {msg}");
    let ctx = j["status"]["context"]["swupdate"].as_array().unwrap();
    assert!(!ctx.is_empty(), "SWUpdate's log lines in the context");
    assert!(fs::read(&swu.images[0].target).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_job_writes_nothing() {
    let mut f = Fleet::new();
    let (swu, _, url) = f.image("dry", 100_000, false);
    f.start_agent();
    let def =
        json!({"version": "1.0", "type": ["firmware", "dry-run"], "artifacts": [{"uri": url}]});
    let id = f.create_job("wfx.workflow.dau.direct", def).await;
    let j = f.wait_for(&id, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "ACTIVATED", "{j:#}");
    assert!(fs::read(&swu.images[0].target).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_queued_jobs_run_one_after_the_other() {
    let mut f = Fleet::new();
    let (s1, d1, u1) = f.image("one", 200_000, false);
    let (s2, d2, u2) = f.image("two", 200_000, false);
    let j1 = f.create_job("wfx.workflow.dau.direct", firmware(&u1)).await;
    let j2 = f.create_job("wfx.workflow.dau.direct", firmware(&u2)).await;
    f.start_agent();
    let a = f.wait_for(&j1, &["ACTIVATED", "TERMINATED"]).await;
    let b = f.wait_for(&j2, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(a["status"]["state"], "ACTIVATED");
    assert_eq!(b["status"]["state"], "ACTIVATED");
    assert!(installed(&s1, &d1) && installed(&s2, &d2));
    // The second started only after the first was done.
    assert!(
        a["mtime"].as_str().unwrap() <= b["mtime"].as_str().unwrap(),
        "{a:#} {b:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phased_job_waits_for_the_operator_between_stages() {
    let mut f = Fleet::new();
    let (swu, data, url) = f.image("p", 300_000, false);
    f.start_agent();
    let id = f
        .create_job("wfx.workflow.dau.phased", firmware(&url))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.job(&id).await["status"]["state"], "CREATED");
    f.advance(&id, "DOWNLOAD").await;
    f.wait_for(&id, &["DOWNLOADED", "TERMINATED"]).await;
    assert!(
        fs::read(&swu.images[0].target).unwrap().is_empty(),
        "downloaded, not installed"
    );
    f.advance(&id, "INSTALL").await;
    let j = f.wait_for(&id, &["ACTIVATED", "TERMINATED"]).await;
    f.assert_state(&j, "ACTIVATED");
    assert!(installed(&swu, &data));
}

/// The operator of a phased job: moves it on whenever it waits for WFX.
async fn operate_phased(f: &Fleet, id: &str) {
    f.operate(&f.job(id).await).await;
}

/// Runs the job (as its operator, when phased) until it ends, or until the agent exits;
/// returns whether the agent exited (it exits only by a crash point).
async fn run_until_end(f: &mut Fleet, id: &str, phased: bool, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if phased {
            operate_phased(f, id).await;
        }
        if let Some(st) = f.agent.as_mut().unwrap().try_wait().unwrap() {
            assert!(
                !st.success(),
                "the agent exits only by the crash point: {st}"
            );
            return true;
        }
        let s = f.job(id).await["status"]["state"].clone();
        if s == "ACTIVATED" || s == "TERMINATED" {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: stuck in {s}\n{}",
            f.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Aborts the agent, as a power cut would stop it, at crash point N (every journal save and the
/// commit of the install, counted by the agent), restarts it, and checks the outcome; N runs
/// from 1 until a run passes every point without crashing.
async fn power_cut_at_every_point(workflow: &str) {
    let phased = workflow.ends_with("phased");
    let mut n = 1u32;
    loop {
        let mut f = Fleet::new();
        let (swu, data, url) = f.image("pc", 150_000, false);
        let id = f.create_job(workflow, firmware(&url)).await;
        f.start_agent_with("run", &[("CIP_UPDATE_AGENT_CRASH_AT", &n.to_string())]);
        let crashed = run_until_end(&mut f, &id, phased, &format!("point {n}")).await;
        if crashed {
            assert!(
                f.agent_log().contains(&format!("crashing at point {n}")),
                "{}",
                f.agent_log()
            );
            f.start_agent();
            run_until_end(&mut f, &id, phased, &format!("point {n}, after restart")).await;
        }
        let j = f.job(&id).await;
        assert_eq!(
            j["status"]["state"],
            "ACTIVATED",
            "point {n}: {j:#}\n{}",
            f.agent_log()
        );
        assert!(installed(&swu, &data), "point {n}: target");
        assert_eq!(
            f.successful_installs(),
            1,
            "point {n}: installed exactly once\n{}",
            f.swupdate().log()
        );
        if !crashed {
            break;
        }
        n += 1;
    }
    eprintln!("{workflow}: crashed and recovered at {} points", n - 1);
    assert!(
        n > 4,
        "only {n} crash points: the journal is not written at each step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_at_every_journal_step_of_a_direct_job() {
    power_cut_at_every_point("wfx.workflow.dau.direct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_at_every_journal_step_of_a_phased_job() {
    power_cut_at_every_point("wfx.workflow.dau.phased").await;
}

fn slow(f: &Fleet, name: &str, len: usize) -> (BuiltSwu, Vec<u8>, SlowServer) {
    let (swu, data, _) = f.image(name, len, false);
    // About 1.3 MB/s: long enough to act in the middle.
    let server = SlowServer::start(swu.path.clone(), 64 * 1024, Duration::from_millis(50)).unwrap();
    (swu, data, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_mid_install_stops_and_the_next_job_runs() {
    let mut f = Fleet::new();
    let (swu, data, server) = slow(&f, "big", 3 << 20);
    f.start_agent();
    let id = f
        .create_job("wfx.workflow.dau.direct", firmware(&server.url("big.swu")))
        .await;
    f.wait_for(&id, &["INSTALLING"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.delete(&id).await;
    // Seen by the install itself, or (under load, when the delete comes before the stream
    // starts) by the next request about the job.
    f.until("the agent stops the install", |f| {
        let log = f.agent_log();
        log.contains("deleted during the install") || log.contains("the job was deleted")
    })
    .await;
    f.until("the record is dropped", |f| f.journal_jobs().is_empty())
        .await;
    assert!(
        !installed(&swu, &data),
        "an abandoned install is not completed"
    );
    // The agent goes on with the next job.
    f.direct_job_succeeds("next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_mid_download_stops_and_its_files_go() {
    let mut f = Fleet::new();
    let (_swu, _data, server) = slow(&f, "dl", 3 << 20);
    f.start_agent();
    let id = f
        .create_job("wfx.workflow.dau.phased", firmware(&server.url("dl.swu")))
        .await;
    f.advance(&id, "DOWNLOAD").await;
    f.wait_for(&id, &["DOWNLOADING"]).await;
    let staged = f.staging_dir(&id);
    f.until("staging starts", |_| staged.exists()).await;
    f.delete(&id).await;
    f.until("the agent stops the download", |f| {
        f.agent_log().contains("deleted during the download")
    })
    .await;
    f.until("staged files removed", |_| !staged.exists()).await;
    f.until("the record is dropped", |f| f.journal_jobs().is_empty())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wfx_down_at_start_then_up() {
    let mut f = Fleet::new();
    // The emulator of the fleet is replaced by one that starts later on a known port.
    let south = cip_update_agent_tests::free_port().unwrap();
    f.config.wfx_url = Some(format!("http://127.0.0.1:{south}/api/wfx/v1"));
    f.config.poll_interval = "1s".into();
    f.start_agent();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        f.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "still running"
    );
    f.wfx = WfxEmulator::start(Options {
        south_port: south,
        ..Default::default()
    })
    .unwrap();
    f.direct_job_succeeds("late").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_5xx_and_a_concurrent_modification_are_ridden_out() {
    let mut f = Fleet::new();
    let (swu, data, u) = f.image("flaky", 100_000, false);
    f.start_agent();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = f.create_job("wfx.workflow.dau.direct", firmware(&u)).await;
    f.wfx.conflict_next_status_update();
    f.wfx.fail_next_requests(4);
    // Quiet here, so that the agent, not this test, meets the failures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j = f.wait_for(&id, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "ACTIVATED", "{}", f.agent_log());
    assert!(installed(&swu, &data));
    let log = f.agent_log();
    assert!(log.contains("503") && log.contains("retrying"), "{log}");
}

/// With a poll interval of an hour, only the event stream can bring work: a job created while
/// the stream is cut (its event lost) is found by the reconcile after the reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_event_stream_reconnects_and_reconciles() {
    let mut f = Fleet::new();
    f.config.poll_interval = "1h".into();
    f.start_agent();
    f.until("the agent subscribes", |f| f.wfx.event_subscribers() == 1)
        .await;
    f.wfx.cut_event_streams();
    f.direct_job_succeeds("cut").await;
}

/// The poll is the event stream's safety net: none within the hour while the stream holds, the
/// shorter fallback only while the stream cannot be held, and none again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_falls_back_only_while_the_event_stream_is_down() {
    let mut f = Fleet::new();
    f.config.poll_interval = "1h".into();
    f.config.wfx_extra = "fallback_poll_interval = \"1s\"\n".into();
    f.start_agent();
    f.until("the agent subscribes", |f| f.wfx.event_subscribers() == 1)
        .await;
    let polls = |f: &Fleet| {
        f.wfx
            .request_counts()
            .get("south GET /jobs")
            .copied()
            .unwrap_or(0)
    };
    // (The round the connection woke may still be in flight.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.wfx.reset_request_counts();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(polls(&f), 0, "stream up: {:?}", f.wfx.request_counts());

    f.wfx.refuse_event_streams(true);
    f.wfx.reset_request_counts();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let down = polls(&f);
    // One poll per 0.9 to 1.1 s from the loss on, plus one in flight.
    assert!(
        (3..=6).contains(&down),
        "stream down: {:?}",
        f.wfx.request_counts()
    );

    f.wfx.refuse_event_streams(false);
    f.until("the agent subscribes again", |f| {
        f.wfx.event_subscribers() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.wfx.reset_request_counts();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(polls(&f), 0, "stream back: {:?}", f.wfx.request_counts());
}

/// Idle, the agent holds one event stream and polls once per interval (±10 %), nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_agent_sends_only_the_poll_and_the_event_stream() {
    let mut f = Fleet::new();
    f.config.poll_interval = "1s".into();
    f.start_agent();
    f.until("the agent subscribes", |f| f.wfx.event_subscribers() == 1)
        .await;
    f.wfx.reset_request_counts();
    let watch = Duration::from_millis(4500);
    tokio::time::sleep(watch).await;
    let counts = f.wfx.request_counts();
    let polls = counts.get("south GET /jobs").copied().unwrap_or(0);
    // At most one poll per 0.9 s (the jitter's low end), plus one in flight.
    assert!((3..=6).contains(&polls), "{counts:?}");
    let others: u64 = counts
        .iter()
        .filter(|(k, _)| k.as_str() != "south GET /jobs")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(others, 0, "nothing but polls while idle: {counts:?}");
    assert_eq!(f.wfx.event_subscribers(), 1, "one event stream");
}

// Firmware activation with EFI Boot Guard and U-Boot, reboots and rollbacks: tests/rollback.rs.

/// Progress reaches wfx while the image streams, rising, at most once per progress_interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_wfx_rising_and_throttled() {
    let mut f = Fleet::new();
    let (swu, data, server) = slow(&f, "prog", 2 << 20);
    f.start_agent();
    let started = Instant::now();
    let id = f
        .create_job("wfx.workflow.dau.direct", firmware(&server.url("prog.swu")))
        .await;
    let j = f.wait_for(&id, &["ACTIVATED", "TERMINATED"]).await;
    let took = started.elapsed();
    assert_eq!(j["status"]["state"], "ACTIVATED");
    assert!(installed(&swu, &data));
    let mut progress: Vec<u64> = j["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|e| e["status"]["state"] == "INSTALLING")
        .filter_map(|e| e["status"]["progress"].as_u64())
        .collect();
    assert!(progress.len() >= 4, "progress on the way: {progress:?}");
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "rising: {progress:?}"
    );
    // progress_interval is 100 ms; one more for the first report of the step.
    let most = (took.as_millis() / 100) as usize + 2;
    assert!(
        progress.len() <= most,
        "{} updates in {took:?}",
        progress.len()
    );
    progress.dedup();
    assert!(
        progress.iter().any(|p| (20..80).contains(p)),
        "{progress:?}"
    );
}

/// A journal that cannot be read is set aside; updates go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_journal_is_set_aside_and_updates_go_on() {
    let mut f = Fleet::new();
    fs::create_dir_all(f.path("state")).unwrap();
    fs::write(f.path("state/state.json"), b"{\"schema\":1,\"jobs\":{\"x\"").unwrap();
    f.start_agent();
    f.direct_job_succeeds("cj").await;
    assert!(f.path("state/state.json.corrupt").exists());
    assert!(f.agent_log().contains("is corrupt"), "{}", f.agent_log());
}

/// The agent's MQTT telemetry during a whole update, read by `mosquitto_sub` from a real broker:
/// online, inventory, and the state following the job to ACTIVATED, then idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_state_follows_a_whole_update() {
    use cip_update_agent_tests::daemons::mosquitto::Mosquitto;
    let mut f = Fleet::new();
    let broker = Mosquitto::start().unwrap();
    let sub = broker.subscribe("cip/devices/#").unwrap();
    f.config.extra = format!(
        "[mqtt]\nurl = \"{}\"\nprogress_interval = \"100ms\"\n",
        broker.url()
    );
    f.start_agent();
    let j = f.direct_job_succeeds("mq").await;
    let id = j["id"].as_str().unwrap().to_owned();
    let topic = |leaf: &str| format!("cip/devices/{CLIENT}/{leaf}");
    let states = || -> Vec<serde_json::Value> {
        sub.messages()
            .iter()
            .filter(|m| m.topic == topic("state"))
            .filter_map(|m| m.json())
            .collect()
    };
    f.until("the agent goes idle on MQTT", |_| {
        states()
            .last()
            .is_some_and(|s| s["phase"] == "idle" && s["job_id"].is_null())
            && states().iter().any(|s| s["wfx_state"] == "ACTIVATED")
    })
    .await;
    let s = states();
    let wfx_states: Vec<&str> = s.iter().filter_map(|s| s["wfx_state"].as_str()).collect();
    let pos = |st: &str| wfx_states.iter().position(|x| *x == st);
    assert!(pos("INSTALLING") < pos("ACTIVATED"), "{wfx_states:?}");
    assert!(s.iter().all(|s| s["schema"] == 1));
    let activated = s.iter().find(|s| s["wfx_state"] == "ACTIVATED").unwrap();
    assert_eq!(activated["job_id"], id.as_str());
    assert_eq!(activated["target_version"], "1.1");
    let msgs = sub.messages();
    assert!(
        msgs.iter()
            .any(|m| m.topic == topic("online") && m.payload == "online")
    );
    let inv = msgs
        .iter()
        .find(|m| m.topic == topic("inventory"))
        .and_then(|m| m.json())
        .expect("inventory");
    assert_eq!(inv["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(inv["boot_backend"], "none");
    // After the install, the inventory names the wire the daemon spoke.
    f.until("the inventory names the wire", |_| {
        sub.messages()
            .iter()
            .filter(|m| m.topic == topic("inventory"))
            .filter_map(|m| m.json())
            .next_back()
            .is_some_and(|i| i["swupdate_wire"] == installation().release.wire())
    })
    .await;
}

/// Issue 19: the retained state keeps the last outcome. A subscriber that connects after the
/// job ended reads the job's id and ACTIVATED from the retained idle state; so does one that
/// connects after an agent restart (the state is published again at start, from the journal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_retained_state_keeps_the_last_outcome_across_a_restart() {
    use cip_update_agent_tests::daemons::mosquitto::Mosquitto;
    let mut f = Fleet::new();
    let broker = Mosquitto::start().unwrap();
    let topic = format!("cip/devices/{CLIENT}/state");
    let sub = broker.subscribe(&topic).unwrap();
    f.config.extra = format!("[mqtt]\nurl = \"{}\"\n", broker.url());
    f.start_agent();
    let j = f.direct_job_succeeds("last").await;
    let id = j["id"].as_str().unwrap().to_owned();
    let idle_states = || -> usize {
        sub.messages()
            .iter()
            .filter_map(|m| m.json())
            .filter(|s| s["phase"] == "idle" && s["last"]["job_id"] == id.as_str())
            .count()
    };
    f.until("the agent goes idle on MQTT", |_| idle_states() >= 1)
        .await;
    // A subscriber connecting now: the retained state alone.
    let read = || -> Value {
        let text = broker.retained(&topic).unwrap().expect("a retained state");
        eprintln!("mosquitto_sub -C 1 --retained-only -t {topic}:\n{text}");
        serde_json::from_str(&text).unwrap()
    };
    let check = |s: &Value| {
        assert_eq!(s["phase"], "idle", "{s:#}");
        assert_eq!(s["job_id"], Value::Null, "{s:#}");
        assert_eq!(s["last_error"], Value::Null, "{s:#}");
        let last = &s["last"];
        assert_eq!(last["job_id"], id.as_str(), "{s:#}");
        assert_eq!(last["wfx_state"], "ACTIVATED", "{s:#}");
        assert_eq!(last["version"], "1.1", "{s:#}");
        assert_eq!(last["rolled_back"], false, "{s:#}");
        assert!(
            last["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{s:#}"
        );
        let t = last["time"].as_str().unwrap_or_default();
        assert!(t.len() == 20 && t.ends_with('Z'), "{s:#}");
    };
    let before = read();
    check(&before);

    // A clean stop, and the retained state removed: what a subscriber reads next can only
    // come from the restarted agent.
    let st = f
        .agent
        .take()
        .unwrap()
        .kill_group(Duration::from_secs(10))
        .unwrap();
    assert!(st.success(), "{st}\n{}", f.agent_log());
    let cleared = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", &topic, "-r", "-n"])
        .status()
        .unwrap();
    assert!(cleared.success());
    f.start_agent();
    f.until("the restarted agent says idle on MQTT", |_| {
        idle_states() >= 2
    })
    .await;
    let after = read();
    check(&after);
    // The outcome's time is the recorded one, not the restart's.
    assert_eq!(after["last"]["time"], before["last"]["time"]);
}

/// The broker down for the whole update: the update is not held back, and the final state is on
/// the broker (retained) once it comes up. Then the agent is killed: its last will says offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_broker_down_for_the_whole_update_then_last_will() {
    use cip_update_agent_tests::daemons::mosquitto::{Mosquitto, MosquittoOptions};
    let mut f = Fleet::new();
    let port = cip_update_agent_tests::free_port().unwrap();
    f.config.extra = format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n");
    f.start_agent();
    let started = Instant::now();
    f.direct_job_succeeds("down").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a missing broker slows nothing"
    );
    let broker = Mosquitto::start_on(port, &MosquittoOptions::default()).unwrap();
    let sub = broker.subscribe("cip/devices/#").unwrap();
    let state_topic = format!("cip/devices/{CLIENT}/state");
    // Live or retained (whichever came first: the agent's reconnect or the subscription), the
    // last state on the broker is the final one: idle with the job's outcome (the idle state
    // from before the job, queued first, has none).
    f.until("the final state is published", |_| {
        sub.messages()
            .iter()
            .filter(|m| m.topic == state_topic)
            .filter_map(|m| m.json())
            .next_back()
            .is_some_and(|s| s["phase"] == "idle" && s["last"]["wfx_state"] == "ACTIVATED")
    })
    .await;
    // Every state change queued while the broker was away went out, in order, at the reconnect.
    let published: Vec<String> = broker
        .log()
        .lines()
        .filter(|l| {
            l.contains(&format!("Received PUBLISH from {CLIENT} "))
                && l.contains(&format!("'{state_topic}'"))
        })
        .map(str::to_owned)
        .collect();
    assert!(published.len() >= 4, "{published:#?}");

    let online = format!("cip/devices/{CLIENT}/online");
    f.agent
        .as_mut()
        .unwrap()
        .signal_group(nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    f.until("the last will says offline", |_| {
        sub.messages()
            .iter()
            .any(|m| m.topic == online && m.payload == "offline")
    })
    .await;
}

/// The broker restarted in the middle of an update: every state change arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_broker_restarted_mid_update_loses_no_state_change() {
    use cip_update_agent_tests::daemons::mosquitto::{Mosquitto, MosquittoOptions};
    let mut f = Fleet::new();
    let mut broker = Mosquitto::start_with(&MosquittoOptions {
        persistence: true,
        ..Default::default()
    })
    .unwrap();
    let sub = broker
        .subscribe_persistent("cip/devices/+/state", "watcher")
        .unwrap();
    f.config.extra = format!("[mqtt]\nurl = \"{}\"\n", broker.url());
    let (swu, data, server) = slow(&f, "restart", 2 << 20);
    f.start_agent();
    let id = f
        .create_job(
            "wfx.workflow.dau.direct",
            firmware(&server.url("restart.swu")),
        )
        .await;
    f.wait_for(&id, &["INSTALLING"]).await;
    broker.restart().unwrap();
    let j = f.wait_for(&id, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "ACTIVATED");
    assert!(installed(&swu, &data));
    let want = ["INSTALLING", "ACTIVATING", "ACTIVATED"];
    f.until("every state change arrives", |_| {
        let got: Vec<String> = sub
            .messages()
            .iter()
            .filter_map(|m| m.json())
            .filter_map(|s| s["wfx_state"].as_str().map(str::to_owned))
            .collect();
        want.iter().all(|w| got.iter().any(|g| g == w))
    })
    .await;
    let got: Vec<String> = sub
        .messages()
        .iter()
        .filter_map(|m| m.json())
        .filter_map(|s| s["wfx_state"].as_str().map(str::to_owned))
        .collect();
    let mut order = got.clone();
    order.dedup();
    let idx: Vec<usize> = want
        .iter()
        .map(|w| order.iter().position(|g| g == w).unwrap())
        .collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
}

/// SWUpdate not running is a state of the device, not a failure of the job: the job waits and
/// goes on once SWUpdate is reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waits_while_swupdate_is_away() {
    let mut f = Fleet::new();
    let (swu, data, url) = f.image("away", 100_000, false);
    // An agent that looks for SWUpdate where there is none.
    f.config.sockets = Some((
        "/nonexistent/sockinstctrl".into(),
        "/nonexistent/swupdateprog".into(),
    ));
    f.config.poll_interval = "1s".into();
    f.start_agent();
    let id = f
        .create_job("wfx.workflow.dau.direct", firmware(&url))
        .await;
    f.until("the agent meets the missing daemon", |f| {
        f.agent_log().contains("cannot install now, will retry")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        f.job(&id).await["status"]["state"],
        "INSTALLING",
        "not TERMINATED"
    );
    // SWUpdate "comes back": the agent restarted with the right sockets carries the job through.
    f.agent
        .take()
        .unwrap()
        .kill_group(Duration::from_secs(2))
        .unwrap();
    f.config.sockets = None;
    f.config.poll_interval = "1s".into();
    f.start_agent();
    let j = f.wait_for(&id, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "ACTIVATED", "{}", f.agent_log());
    assert!(installed(&swu, &data));
}

/// Issue 19, "a self-sustaining loop": SWUpdate not (yet) listening and a downloadable
/// artifact. The agent's own status updates come back as events and must not wake it; the job
/// waits with backoff, asks wfx a handful of times and downloads nothing while SWUpdate is
/// away, says what it waits for, and is installed once SWUpdate starts, the agent running on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_for_swupdate_backs_off_then_installs_once_it_starts() {
    use cip_update_agent_tests::daemons::swupdate::{DaemonOptions, SwupdateDaemon};
    use cip_update_agent_tests::fixtures::delta::served;
    let mut f = Fleet::builder().without_swupdate().start();
    let (swu, data, url) = f.image("later", 100_000, false);
    // Where SWUpdate's sockets will be: links to the daemon's, made once it runs.
    let sockets = f.path("sockets");
    fs::create_dir(&sockets).unwrap();
    let (ctl, prog) = (sockets.join("sockinstctrl"), sockets.join("swupdateprog"));
    f.config.sockets = Some((ctl.clone(), prog.clone()));
    // The shipped backoff starts at 5 s; its cap is cut for the test (5 min shipped).
    f.config.swupdate = RETRY_MAX.into();
    // A poll due every second must not cut the backoff short either.
    f.config.poll_interval = "1s".into();
    f.start_agent();
    let id = f
        .create_job("wfx.workflow.dau.direct", firmware(&url))
        .await;
    f.until("the agent meets the missing daemon", |f| {
        f.agent_log().contains("cannot install now, will retry")
    })
    .await;
    f.wfx.reset_request_counts();
    const WINDOW: Duration = Duration::from_secs(20);
    tokio::time::sleep(WINDOW).await;
    let counts = f.wfx.request_counts();
    let south: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("south "))
        .map(|(_, n)| n)
        .sum();
    let puts = counts
        .get("south PUT /jobs/{id}/status")
        .copied()
        .unwrap_or(0);
    let (downloads, _) = served(&f.nginx().access_log(), "later.swu");
    eprintln!(
        "while waiting {}s: {south} requests to wfx ({puts} status updates), {downloads} downloads: {counts:?}",
        WINDOW.as_secs()
    );
    // Backoff of 5 s (jittered down to half) doubling to the 8 s cap: at most 6 rounds in 20 s,
    // each one job list; the status at most once a minute.
    assert!(south <= 8, "{counts:?}\n{}", f.agent_log());
    assert!(puts <= 1, "{counts:?}");
    assert_eq!(downloads, 0, "no download while SWUpdate is away");
    let j = f.job(&id).await;
    assert_eq!(j["status"]["state"], "INSTALLING", "{j:#}");
    let message = j["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("waiting for SWUpdate"), "{message}");

    let sw = SwupdateDaemon::start(&DaemonOptions::new(&f.cert)).unwrap();
    std::os::unix::fs::symlink(sw.control_socket(), &ctl).unwrap();
    std::os::unix::fs::symlink(sw.progress_socket(), &prog).unwrap();
    f.swupdate = Some(sw);
    let j = f.wait_for(&id, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "ACTIVATED", "{}", f.agent_log());
    assert!(installed(&swu, &data));
    let (downloads, _) = served(&f.nginx().access_log(), "later.swu");
    assert_eq!(downloads, 1, "{}", f.nginx().access_log());
    assert_eq!(f.successful_installs(), 1);
}

/// The artifact server away (nothing listening on its port) is a wait, not the job's end, for
/// a direct job (its install) and a phased one (its download): held with backoff, wfx told what
/// it waits for, and installed once a server answers on that port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waits_for_an_artifact_server_that_is_away() {
    for (workflow, state, doing) in [
        ("wfx.workflow.dau.direct", "INSTALLING", "install"),
        ("wfx.workflow.dau.phased", "DOWNLOADING", "download"),
    ] {
        let mut f = Fleet::new();
        f.config.swupdate = RETRY_MAX.into();
        let (swu, data, _) = f.image("away", 100_000, false);
        let port = cip_update_agent_tests::free_port().unwrap();
        let url = format!("http://127.0.0.1:{port}/away.swu");
        f.start_agent();
        let id = f.create_job(workflow, firmware(&url)).await;
        if workflow.ends_with("phased") {
            f.until_job(&id, "the job to be CREATED", false, |j| {
                j["status"]["state"] == "CREATED"
            })
            .await;
            f.advance(&id, "DOWNLOAD").await;
        }
        let note = format!("cannot {doing} now, will retry");
        f.until("the agent meets the missing server", |f| {
            f.agent_log().contains(&note)
        })
        .await;
        let j = f
            .until_job(&id, "wfx to hear what the job waits for", false, |j| {
                j["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("waiting for the artifact server"))
            })
            .await;
        assert_eq!(j["status"]["state"], state, "{j:#}");
        // The server comes: python's, on the port the job names.
        let server = cip_update_agent_tests::daemons::process::GroupChild::spawn(
            {
                let mut c = std::process::Command::new("python3");
                c.args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .arg("--directory")
                .arg(f.path("www"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
                c
            },
            "http.server",
        )
        .unwrap();
        let j = f
            .until_job(&id, "the job to end", true, |j| {
                ["ACTIVATED", "TERMINATED"].contains(&j["status"]["state"].as_str().unwrap_or(""))
            })
            .await;
        assert_eq!(j["status"]["state"], "ACTIVATED", "{}", f.agent_log());
        assert!(installed(&swu, &data), "{workflow}");
        drop(server);
    }
}

/// `[swupdate] retry_max` of [`a_job_waiting_for_swupdate_backs_off_then_installs_once_it_starts`].
const RETRY_MAX: &str = "retry_max = \"8s\"\n";

/// A definition the agent cannot act on ends TERMINATED with a clear message; the agent goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_definition_is_terminated_and_the_agent_goes_on() {
    let mut f = Fleet::new();
    f.start_agent();
    let bad = f
        .create_job(
            "wfx.workflow.dau.direct",
            json!({"version": "1.0", "artifacts": []}),
        )
        .await;
    let j = f.wait_for(&bad, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j["status"]["state"], "TERMINATED");
    assert_eq!(
        j["status"]["message"],
        "malformed job definition: no artifacts"
    );
    f.direct_job_succeeds("after").await;
}

/// A pre-signed artifact URI (a token in its query, as object stores hand out): the device
/// fetches and installs it, and the token shows nowhere: not in the agent's log (at debug
/// level), not in the job's history on wfx, not in `status`. A failed download names the file
/// and the query's parameter names, not their values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_an_artifact_uri_is_never_shown() {
    const TOKEN: &str = "c2VjcmV0LXRva2Vu";
    let mut f = Fleet::new();
    let (swu, data, url) = f.image("signed", 100_000, false);
    f.start_agent_with("run", &[("CIP_UPDATE_AGENT_LOG", "debug")]);
    let uri_only =
        |u: String| json!({"version": "1.0", "type": ["firmware"], "artifacts": [{"uri": u}]});
    let good = f
        .create_job(
            "wfx.workflow.dau.direct",
            uri_only(format!("{url}?X-Amz-Signature={TOKEN}&X-Amz-Expires=300")),
        )
        .await;
    let j1 = f.wait_for(&good, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j1["status"]["state"], "ACTIVATED", "{j1:#}");
    assert!(installed(&swu, &data));
    let gone = f
        .create_job(
            "wfx.workflow.dau.direct",
            uri_only(format!("{url}.gone?X-Amz-Signature={TOKEN}")),
        )
        .await;
    let j2 = f.wait_for(&gone, &["ACTIVATED", "TERMINATED"]).await;
    assert_eq!(j2["status"]["state"], "TERMINATED", "{j2:#}");
    let m = j2["status"]["message"].as_str().unwrap_or("");
    assert!(
        m.contains(".gone?X-Amz-Signature=***") && m.contains("404"),
        "{m}"
    );
    // What the agent wrote to wfx: every status in the history (the definition holds the
    // token, as the operator gave it).
    let mut statuses = Vec::new();
    for id in [&good, &gone] {
        let j = f.job(id).await;
        statuses.push(j["status"].clone());
        for h in j["history"].as_array().into_iter().flatten() {
            statuses.push(h["status"].clone());
        }
    }
    assert!(statuses.len() >= 6, "{statuses:?}");
    let shown = format!(
        "{}\n{}\n{}",
        Value::Array(statuses),
        f.agent_log(),
        String::from_utf8_lossy(&f.agent_cli(&["status", "--json"]).stdout)
    );
    assert!(!shown.contains(TOKEN), "the token leaked:\n{shown}");
    assert!(
        f.agent_log().contains("X-Amz-Signature=***"),
        "the log still names the parameter:\n{}",
        f.agent_log()
    );
}

//! Onboarding end to end: a device without a client-id (`cip-update-agent run` or `onboard`)
//! and the operator tool `cip-onboarding`, both against the wfx emulator, which loads the
//! project's `cip.workflow.onboarding`. The DAU job after onboarding goes through the real
//! SWUpdate daemon and nginx.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cip_onboarding::ed25519_dalek::SigningKey;
use cip_onboarding::protocol;
use cip_update_agent_tests::daemons::agent::onboarding_cmd;
use cip_update_agent_tests::daemons::process::GroupChild;
use cip_update_agent_tests::fixtures::swu::{Image, SwuBuilder, random_bytes};
use cip_update_agent_tests::scenarios::fleet::{DIRECT, Fleet};
use serde_json::{Value, json};

const SERIAL: &str = "IPC227E-0042";
const BOOT_ID: &str = "onboarding-IPC227E-0042";

/// A fleet whose device has no client-id yet, with the operator tool's key pair.
struct World {
    serve: Option<GroupChild>,
    f: Fleet,
}

cip_update_agent_tests::deref_to_fleet!(World);

impl World {
    /// wfx only: onboarding needs neither SWUpdate nor nginx.
    fn new() -> World {
        World::on(Fleet::builder().without_swupdate().without_nginx().start())
    }

    fn on(mut f: Fleet) -> World {
        f.config.client_id = None;
        f.config.poll_interval = "1s".into();
        f.config.extra = format!(
            "[onboarding]\nfleet_key = {:?}\nserial = \"{SERIAL}\"\nmodel = \"SIMATIC IPC227E\"\n",
            f.path("fleet.pub"),
        );
        let w = World { serve: None, f };
        let o = w.ops(&[
            "keygen",
            "--secret",
            w.path("fleet.key").to_str().unwrap(),
            "--public",
            w.path("fleet.pub").to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{o:?}");
        w
    }

    fn fleet_key(&self) -> SigningKey {
        cip_onboarding::keys::read_signing(&self.path("fleet.key")).unwrap()
    }

    /// `cip-onboarding --wfx <north> ARGS`.
    fn ops(&self, args: &[&str]) -> Output {
        let mut c: Command = onboarding_cmd().unwrap();
        c.arg("--wfx").arg(self.wfx.north_url()).args(args);
        c.output().unwrap()
    }

    /// Waits for the agent to exit by itself; its exit code (None: killed by a signal).
    fn agent_exit(&mut self) -> Option<i32> {
        let a = self.agent.as_mut().expect("agent started");
        let status = a.wait_timeout(Duration::from_secs(60)).unwrap();
        let status =
            status.unwrap_or_else(|| panic!("the agent did not exit; log:\n{}", self.agent_log()));
        self.agent = None;
        status.code()
    }

    fn start_serve(&mut self, allow: &str) {
        fs::write(self.path("allow"), allow).unwrap();
        let mut c: Command = onboarding_cmd().unwrap();
        c.arg("--wfx").arg(self.wfx.north_url()).args([
            "serve",
            "--allow",
            self.path("allow").to_str().unwrap(),
            "--key",
            self.path("fleet.key").to_str().unwrap(),
            "--poll-secs",
            "1",
        ]);
        c.stderr(fs::File::create(self.path("serve.err")).unwrap());
        self.serve = Some(GroupChild::spawn(c, "cip-onboarding serve").unwrap());
    }

    fn stored(&self) -> Option<Value> {
        let text = fs::read(self.path("state/onboarding.json")).ok()?;
        Some(serde_json::from_slice(&text).unwrap())
    }

    async fn north(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.wfx.north_url()));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The newest onboarding job of `client`.
    async fn job_of(&self, client: &str) -> Option<Value> {
        let l = self
            .north(
                reqwest::Method::GET,
                &format!(
                    "/jobs?clientId={client}&workflow=cip.workflow.onboarding&sort=desc&limit=1"
                ),
                None,
            )
            .await;
        l["content"].as_array().and_then(|a| a.first()).cloned()
    }

    async fn until_state(&self, id: &str, state: &str) -> Value {
        self.until_job(id, &format!("state {state}"), false, |j| {
            j["status"]["state"] == state
        })
        .await
    }

    async fn until_log(&self, text: &str) {
        self.until(&format!("`{text}` in the agent log"), |f| {
            f.agent_log().contains(text)
        })
        .await;
    }

    /// Enrolls SERIAL with the operator tool; the job id.
    async fn enroll(&self) -> String {
        let o = self.ops(&["enroll", "--serial", SERIAL]);
        assert!(o.status.success(), "{o:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("enrolled"),
            "{o:?}"
        );
        self.job_of(BOOT_ID).await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The device key the agent stored, as hex.
    fn device_key(&self) -> String {
        let k = cip_onboarding::keys::read_signing(
            &self
                .path("state")
                .join(cip_onboarding::keys::DEVICE_KEY_FILE),
        )
        .unwrap();
        protocol::public_key_hex(&k.verifying_key())
    }
}

fn states(job: &Value) -> Vec<String> {
    let mut s: Vec<String> = job["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .rev()
                .filter_map(|e| e["status"]["state"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    s.push(job["status"]["state"].as_str().unwrap_or("").to_owned());
    // A definition change records the unchanged status too.
    s.dedup();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_device_is_enrolled_approved_by_serve_and_runs_a_dau_job() {
    // SWUpdate and nginx for the DAU part.
    let mut w = World::on(Fleet::new());

    // The factory list goes in through a file.
    fs::write(w.path("factory.txt"), format!("# line 3\n{SERIAL}\n")).unwrap();
    let o = w.ops(&[
        "enroll",
        "--serial-file",
        w.path("factory.txt").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    let id = w.job_of(BOOT_ID).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Enrolling again opens no second job.
    let o = w.ops(&["enroll", "--serial", SERIAL]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("already enrolled"));

    w.start_agent();
    let j = w.until_state(&id, "IDENTIFIED").await;
    let ctx = &j["status"]["context"];
    assert_eq!(ctx["serial"], SERIAL);
    assert_eq!(ctx["model"], "SIMATIC IPC227E");
    assert_eq!(ctx["publicKey"], w.device_key().as_str());
    let key_file = w.path("state").join(cip_onboarding::keys::DEVICE_KEY_FILE);
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let o = w.ops(&["pending"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(SERIAL) && out.contains("identity verified"),
        "{out}"
    );

    // Another device identifies itself too, but is not on the allow list: it stays pending.
    w.ops(&["enroll", "--serial", "UNLISTED-1"]);
    let other = w.job_of("onboarding-UNLISTED-1").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let k = SigningKey::from_bytes(&[9; 32]);
    let r = w
        .http
        .put(format!("{}/jobs/{other}/status", w.wfx.south_url()))
        .json(&json!({"state": "IDENTIFIED",
                      "context": protocol::identity_context(&k, &other, "UNLISTED-1", "x")}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    w.start_serve(&format!("{SERIAL}\n"));
    let j = w.until_state(&id, "ONBOARDED").await;
    assert_eq!(
        states(&j),
        ["ENROLLED", "IDENTIFIED", "APPROVED", "ONBOARDED"],
        "{j:#}"
    );
    assert_eq!(j["definition"]["clientId"], "dev-IPC227E-0042");
    let stored = w.stored().unwrap();
    assert_eq!(stored["clientId"], "dev-IPC227E-0042");
    assert_eq!(stored["jobId"], id.as_str());
    assert_eq!(
        w.job(&other).await["status"]["state"],
        "IDENTIFIED",
        "unlisted device approved"
    );

    // DAU under the new client-id, by the same process (no restart).
    let pid = w.agent.as_ref().unwrap().pid();
    let data = random_bytes(100_000, 7);
    let swu = SwuBuilder::new()
        .image(Image::raw("rootfs.img", data.clone(), w.path("t.target")))
        .build(&w.cert, &w.path("www/u.swu"))
        .unwrap();
    let def = json!({"version": "1.0", "type": ["firmware"],
                     "artifacts": [{"name": "rootfs", "version": "1.1", "uri": w.nginx().url("u.swu")}]});
    let dau = w.create_job_for("dev-IPC227E-0042", DIRECT, def).await;
    let j = w.until_state(&dau, "ACTIVATED").await;
    assert_eq!(j["status"]["clientId"], "dev-IPC227E-0042");
    assert_eq!(fs::read(&swu.images[0].target).unwrap(), data);
    let agent = w.agent.as_mut().unwrap();
    assert_eq!(agent.pid(), pid);
    assert!(agent.try_wait().unwrap().is_none(), "the agent still runs");

    // `status` names the client-id obtained.
    let st = w.status_json();
    assert_eq!(st["client_id"], "dev-IPC227E-0042");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_at_each_waiting_step_resumes() {
    let mut w = World::new();
    // Not enrolled yet: the device waits; killed there, it waits again after the restart.
    w.start_agent();
    w.until_log("waiting to be enrolled").await;
    w.kill_agent();
    let id = w.enroll().await;
    w.start_agent();
    w.until_state(&id, "IDENTIFIED").await;
    let key = w.device_key();
    // Killed while waiting for the fleet: the same key, no second identification.
    w.kill_agent();
    w.start_agent();
    w.until_log("waiting for the fleet").await;
    assert_eq!(w.device_key(), key);
    // Approved while the device is off: it takes the answer when it is back.
    w.kill_agent();
    let o = w.ops(&[
        "approve",
        "--serial",
        SERIAL,
        "--template",
        "plant-a-{serial}",
        "--key",
        w.path("fleet.key").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    w.start_agent();
    let j = w.until_state(&id, "ONBOARDED").await;
    assert_eq!(
        states(&j),
        ["ENROLLED", "IDENTIFIED", "APPROVED", "ONBOARDED"],
        "{j:#}"
    );
    assert_eq!(j["status"]["context"], Value::Null);
    let ctx_key = j["history"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|h| h["status"]["context"]["publicKey"].as_str())
        .unwrap()
        .to_owned();
    assert_eq!(ctx_key, key);
    assert_eq!(w.stored().unwrap()["clientId"], "plant-a-IPC227E-0042");
    // Onboarded, a restart goes straight to DAU under the stored client-id.
    w.kill_agent();
    w.start_agent();
    w.until_log("client-id plant-a-IPC227E-0042").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.wfx.event_subscribers() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(states(&w.job(&id).await).len(), 4, "the job is left alone");
}

/// The agent is aborted at its N-th crash point of onboarding (key made, identified, client-id
/// stored, ONBOARDED reported, closed), as a power cut would stop it, and started again; N runs
/// from 1 until a run passes every point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_every_onboarding_step_resumes() {
    let mut n = 1u32;
    loop {
        let mut w = World::new();
        let id = w.enroll().await;
        w.start_serve(&format!("{SERIAL} cut-{n}\n"));
        w.start_agent_with("onboard", &[("CIP_UPDATE_AGENT_CRASH_AT", &n.to_string())]);
        let code = w.agent_exit();
        let crashed = code.is_none();
        if crashed {
            assert!(
                w.agent_log().contains(&format!("crashing at point {n}")),
                "{}",
                w.agent_log()
            );
            w.start_agent_with("onboard", &[]);
            assert_eq!(w.agent_exit(), Some(0), "point {n}: {}", w.agent_log());
        } else {
            assert_eq!(code, Some(0), "{}", w.agent_log());
        }
        let out = fs::read_to_string(w.path("agent.out")).unwrap();
        assert_eq!(
            out.lines().last(),
            Some(format!("cut-{n}").as_str()),
            "{out}"
        );
        let j = w.job(&id).await;
        assert_eq!(
            states(&j),
            ["ENROLLED", "IDENTIFIED", "APPROVED", "ONBOARDED"],
            "point {n}: {j:#}"
        );
        let stored = w.stored().unwrap();
        assert_eq!(stored["clientId"], format!("cut-{n}").as_str());
        assert_eq!(stored["closed"], true, "point {n}");
        assert_eq!(j["definition"]["devicePublicKey"], w.device_key().as_str());
        if !crashed {
            assert!(n > 4, "only {n} points were passed");
            break;
        }
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_replayed_and_malformed_answers_are_refused() {
    let mut w = World::new();
    let id = w.enroll().await;
    // A second device's job, whose genuine answer is replayed below.
    w.ops(&["enroll", "--serial", "OTHER-1"]);
    let old = w.job_of("onboarding-OTHER-1").await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.start_agent_with("onboard", &[]);
    w.until_state(&id, "IDENTIFIED").await;
    let me = w.device_key();
    let fleet = w.fleet_key();
    let attacker = SigningKey::from_bytes(&[7; 32]);
    let other_key = protocol::public_key_hex(&SigningKey::from_bytes(&[8; 32]).verifying_key());
    let cases = [
        (
            "forged",
            json!(protocol::make_answer(&attacker, &id, SERIAL, &me, "evil-1")),
            "does not verify with the fleet onboarding key",
        ),
        (
            "another device's key",
            json!(protocol::make_answer(
                &fleet, &id, SERIAL, &other_key, "evil-2"
            )),
            "for another device's key",
        ),
        (
            "replayed from another job",
            json!(protocol::make_answer(&fleet, &old, SERIAL, &me, "evil-3")),
            "replayed",
        ),
        (
            "replayed, without the informative fields",
            {
                let mut a = json!(protocol::make_answer(&fleet, &old, SERIAL, &me, "evil-4"));
                a.as_object_mut().unwrap().remove("jobId");
                a
            },
            "does not verify with the fleet onboarding key",
        ),
        (
            "malformed",
            json!({"clientId": ["x"], "devicePublicKey": me, "signature": "zz"}),
            "malformed answer",
        ),
        (
            "malformed client-id",
            json!(protocol::make_answer(&fleet, &id, SERIAL, &me, "a/../b")),
            "malformed answer",
        ),
    ];
    for (i, (what, def, why)) in cases.iter().enumerate() {
        w.north(
            reqwest::Method::PUT,
            &format!("/jobs/{id}/definition"),
            Some(def.clone()),
        )
        .await;
        w.north(
            reqwest::Method::PUT,
            &format!("/jobs/{id}/status"),
            Some(json!({"state": "APPROVED"})),
        )
        .await;
        let j = w
            .until_job(&id, what, false, |j| {
                // The refusal of this very definition (wfx's hash of it).
                j["status"]["state"] == "APPROVED"
                    && j["status"]["context"]["refusedDefinitionHash"]
                        == j["status"]["definitionHash"]
                    && j["status"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(why))
            })
            .await;
        assert_eq!(j["status"]["context"]["publicKey"], me.as_str(), "{what}");
        assert!(
            j["status"]["context"]["refused"]
                .as_str()
                .is_some_and(|r| r.contains(why)),
            "{what}: {j:#}"
        );
        // A clear log line for each (one more when the fleet's status update cleared the
        // refusal and the device looked again).
        assert!(
            w.agent_log().matches("onboarding answer refused").count() > i,
            "{what}: {}",
            w.agent_log()
        );
        let line = w
            .agent_log()
            .lines()
            .rev()
            .find(|l| l.contains("onboarding answer refused"))
            .unwrap()
            .to_owned();
        assert!(
            line.contains(why) && line.contains("nothing stored"),
            "{what}: {line}"
        );
        assert!(w.stored().is_none(), "{what}: nothing stored");
        assert!(
            w.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
            "{what}: the device keeps waiting"
        );
    }
    // The fleet's own answer still gets through afterwards: `serve` answers a device that
    // refused what was in its job.
    w.start_serve(&format!("{SERIAL} good-1\n"));
    assert_eq!(w.agent_exit(), Some(0), "{}", w.agent_log());
    assert_eq!(w.stored().unwrap()["clientId"], "good-1");
    let j = w.job(&id).await;
    assert_eq!(j["status"]["state"], "ONBOARDED");
    assert_eq!(j["definition"]["clientId"], "good-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_device_reports_it() {
    let mut w = World::new();
    let id = w.enroll().await;
    w.start_agent_with("onboard", &[]);
    w.until_state(&id, "IDENTIFIED").await;
    let o = w.ops(&[
        "reject",
        "--serial",
        SERIAL,
        "--reason",
        "not in the factory list",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(w.agent_exit(), Some(12), "{}", w.agent_log());
    assert!(
        w.agent_log()
            .contains("onboarding rejected by the fleet: not in the factory list"),
        "{}",
        w.agent_log()
    );
    let j = w.job(&id).await;
    assert_eq!(j["status"]["state"], "REJECTED");
    assert_eq!(j["status"]["context"]["deviceAcknowledged"], true);
    assert!(
        j["status"]["message"]
            .as_str()
            .unwrap()
            .contains("acknowledges the rejection: not in the factory list"),
        "{j:#}"
    );
    assert!(w.stored().is_none());
    // Started again, it says so at once and does not report twice.
    w.start_agent_with("onboard", &[]);
    assert_eq!(w.agent_exit(), Some(12));
    assert_eq!(
        states(&w.job(&id).await),
        ["ENROLLED", "IDENTIFIED", "REJECTED"]
    );
    assert_eq!(
        w.job(&id).await["history"].as_array().unwrap().len(),
        3,
        "one acknowledgement"
    );
    // `run` waits after a rejection, and takes a new enrollment when the fleet opens one.
    w.start_agent();
    w.until_log("waiting for a new enrollment").await;
    let again = w.enroll().await;
    assert_ne!(again, id);
    w.until_state(&again, "IDENTIFIED").await;
    assert_eq!(
        states(&w.job(&id).await).len(),
        3,
        "the old job is left alone"
    );
}

//! Firmware updates on a simulated A/B device (`tests/src/fixtures/ab.rs`): EFI Boot Guard (two
//! BGENV.DAT files) and U-Boot (an environment file), driven with the real bg_setenv /
//! bg_printenv and fw_setenv / fw_printenv. The agent installs through the real SWUpdate into
//! the inactive slot, arms it, asks for the reboot (a script that counts the requests); the test
//! plays the reboot (SIGTERM, the bootloader's rule, the agent again), power cuts and watchdog
//! resets (SIGKILL, the rule). Each scenario ends with the update's state and the bootloader
//! state read back with the tools.
//!
//! The activation and rollback scenarios run under both job sources (`mod wfx`, `mod tuf_only`,
//! one list: [`scenarios!`]): a wfx job, or TUF-only mode installing the target it finds newer
//! than the running version; the same facts are asserted from wfx's job or TUF-only's record
//! and log ([`JobSource`]).

use std::fs;
use std::time::Duration;

use cip_update_agent_tests::fixtures::ab::{Device, Loader};
use cip_update_agent_tests::fixtures::swu::{Image, SwuBuilder, sha256_hex};
use cip_update_agent_tests::scenarios::fleet::{DIRECT, Fleet, poll_until};
use cip_update_agent_tests::scenarios::job_source::{JobSource, Via};
use serde_json::json;

/// The fleet, with a simulated A/B device whose bootloader the agent drives.
struct Rig {
    f: Fleet,
    src: JobSource,
    dev: Device,
    /// The `[health]` section.
    health: String,
    /// More keys of `[reboot]`.
    reboot_extra: String,
    /// `boot.mark_installed = "swupdate"` instead of the model's "agent".
    swupdate_marks: bool,
    /// An `[mqtt]` section, if any.
    mqtt: String,
}

cip_update_agent_tests::deref_to_fleet!(Rig);

impl Rig {
    fn new(via: Via, loader: Loader) -> Rig {
        let (f, src) = JobSource::fleet(via, Fleet::builder());
        Rig::with_fleet(loader, f, src)
    }

    fn with_fleet(loader: Loader, mut f: Fleet, src: JobSource) -> Rig {
        let mut dev = Device::new(&f.path("device"), loader, "1.0").unwrap();
        dev.boot().unwrap();
        f.config.device += &format!("version_file = {:?}\n", dev.version_file());
        f.config.poll_interval = "1s".into();
        Rig {
            f,
            src,
            dev,
            health: "[health]\nsystemd = \"ignore\"\n".into(),
            reboot_extra: String::new(),
            swupdate_marks: false,
            mqtt: String::new(),
        }
    }

    /// `cip-update-agent run` with the device's `[reboot]`, `[boot]` and `[health]`, and the
    /// job source's sections.
    fn start_agent(&mut self, env: &[(&str, &str)]) {
        let source = self.src.configure(&mut self.f);
        self.f.config.extra = format!(
            "[reboot]\ncommand = [\"sh\", \"-c\", \"echo reboot >> {}\"]\n{}{}{}{}{source}",
            self.path("reboots").display(),
            self.reboot_extra,
            self.mqtt,
            if self.swupdate_marks {
                self.dev.boot_config().replace(
                    "mark_installed = \"agent\"",
                    "mark_installed = \"swupdate\"",
                )
            } else {
                self.dev.boot_config()
            },
            self.health,
        );
        self.f.start_agent_with("run", env);
    }

    /// A signed image of `version` for the inactive slot; its name and bytes.
    fn image(&self, version: &str) -> (String, Vec<u8>) {
        let name = format!("os-{version}.swu");
        let file = self.path(&name);
        SwuBuilder::new()
            .image(Image::raw(
                "rootfs.img",
                format!("VERSION_ID={version}\n").into_bytes(),
                self.dev.slot_image(self.dev.inactive()),
            ))
            .build(&self.cert, &file)
            .unwrap();
        (name, fs::read(&file).unwrap())
    }

    /// A firmware update of `version` offered by the job source (a direct job, a target).
    async fn firmware_job(&self, version: &str) -> String {
        let (name, bytes) = self.image(version);
        self.src.offer(&self.f, &name, &bytes, version).await
    }

    fn state(&self, id: &str) -> String {
        self.src.state(&self.f, id)
    }

    fn message(&self, id: &str) -> String {
        self.src.message(&self.f, id)
    }

    /// The update's state and message, for failure messages.
    fn describe(&self, id: &str) -> String {
        format!(
            "{}: {}\nagent log:\n{}",
            self.state(id),
            self.message(id),
            self.agent_log()
        )
    }

    async fn until(&self, what: &str, mut cond: impl FnMut(&Rig) -> bool) {
        poll_until(
            what,
            Duration::from_secs(45),
            || cond(self),
            || {
                format!(
                    "bootloader: {}\nagent log:\n{}",
                    self.dev.describe(),
                    self.agent_log()
                )
            },
        )
        .await;
    }

    /// Waits until the update is in one of `states`; its state.
    async fn wait_state(&self, id: &str, states: &[&str]) -> String {
        let what = format!("update {id} to reach {states:?}");
        self.until(&what, |r| {
            states.contains(&r.state(id).as_str()) && r.src.reported_all(&r.f, id)
        })
        .await;
        self.state(id)
    }

    /// Waits for the update's end; asserts it is `state`; its message.
    async fn wait_end(&self, id: &str, state: &str) -> String {
        let end = self.wait_state(id, &["ACTIVATED", "TERMINATED"]).await;
        assert_eq!(end, state, "{}", self.describe(id));
        self.message(id)
    }

    fn reboot_requests(&self) -> usize {
        fs::read_to_string(self.path("reboots"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    async fn wait_reboot_request(&self, n: usize) {
        self.until(&format!("reboot request {n}"), |r| r.reboot_requests() >= n)
            .await;
    }

    /// A clean reboot: systemd stops the agent (SIGTERM), the bootloader picks a slot.
    fn reboot(&mut self) -> usize {
        if let Some(mut a) = self.agent.take() {
            let st = a.kill_group(Duration::from_secs(10)).unwrap();
            assert!(
                st.success(),
                "SIGTERM stops the agent cleanly: {st}\n{}",
                self.agent_log()
            );
        }
        self.dev.boot().unwrap()
    }

    /// A power cut or a watchdog reset: the agent dies where it is.
    fn power_cut(&mut self) -> usize {
        self.kill_agent();
        self.dev.boot().unwrap()
    }

    /// Install and arm: the update runs until the agent asks for the reboot into slot B.
    async fn install_until_reboot(&mut self, version: &str) -> String {
        self.start_agent(&[]);
        let id = self.firmware_job(version).await;
        self.wait_reboot_request(1).await;
        assert_eq!(self.state(&id), "ACTIVATING", "{}", self.describe(&id));
        let m = self.message(&id);
        assert!(m.contains("slot B armed") && m.contains(version), "{m}");
        // The boot record holds the slot and the expected version before the reboot.
        let boot = self.src.boot_record(&self.f, &id);
        assert_eq!(boot["slot"], "B", "{boot:#}");
        assert_eq!(boot["from"], "A");
        assert_eq!(boot["expected_version"], version);
        self.assert_armed();
        id
    }

    /// The bootloader has slot B armed, slot A running.
    fn assert_armed(&self) {
        match self.dev.loader {
            Loader::Ebg => {
                let b = self.dev.ebg_env(1).unwrap();
                assert_eq!((b.ustate, b.revision), (1, 2), "B INSTALLED, revision 2");
            }
            Loader::Uboot => {
                let v = self.dev.uboot_vars().unwrap();
                assert_eq!(
                    (
                        v["boot_slot"].as_str(),
                        v["upgrade_available"].as_str(),
                        v["bootcount"].as_str()
                    ),
                    ("B", "1", "0")
                );
            }
        }
    }

    /// Slot B confirmed: what each bootloader shows.
    fn assert_confirmed_b(&self) {
        match self.dev.loader {
            Loader::Ebg => {
                let (a, b) = (self.dev.ebg_env(0).unwrap(), self.dev.ebg_env(1).unwrap());
                assert_eq!((b.ustate, b.revision), (0, 2), "B OK with the top revision");
                assert_eq!((a.ustate, a.revision), (0, 1));
            }
            Loader::Uboot => {
                let v = self.dev.uboot_vars().unwrap();
                assert_eq!(
                    (
                        v["boot_slot"].as_str(),
                        v["upgrade_available"].as_str(),
                        v["bootcount"].as_str(),
                        v["ustate"].as_str()
                    ),
                    ("B", "0", "0", "0")
                );
            }
        }
        assert_eq!(self.dev.booted, 1);
        assert_eq!(self.dev.running_version(), "1.1");
    }

    /// Rolled back to A: B marked failed.
    fn assert_rolled_back(&self) {
        match self.dev.loader {
            Loader::Ebg => {
                let (a, b) = (self.dev.ebg_env(0).unwrap(), self.dev.ebg_env(1).unwrap());
                assert_eq!((b.ustate, b.revision), (3, 0), "B FAILED, revision 0");
                assert_eq!((a.ustate, a.revision), (0, 1), "A untouched");
            }
            Loader::Uboot => {
                let v = self.dev.uboot_vars().unwrap();
                assert_eq!(
                    (
                        v["boot_slot"].as_str(),
                        v["upgrade_available"].as_str(),
                        v["ustate"].as_str()
                    ),
                    ("A", "0", "3")
                );
            }
        }
        assert_eq!(self.dev.booted, 0);
        assert_eq!(self.dev.running_version(), "1.0");
    }
}

async fn good_update_is_confirmed(via: Via, loader: Loader) {
    let mut r = Rig::new(via, loader);
    let id = r.install_until_reboot("1.1").await;
    assert_eq!(r.reboot(), 1, "the new slot boots");
    // `status` (no agent running) shows the trial, and the update in hand.
    let st = r.status_json();
    assert_eq!(st["boot"]["booted"], "B", "{st:#}");
    assert_eq!(st["boot"]["trial"], true, "{st:#}");
    assert_eq!(st["source"], r.src.status_source(), "{st:#}");
    assert_eq!(st["current_job"]["job_id"], r.src.status_id(&id), "{st:#}");
    assert_eq!(
        st["current_job"]["phase"], "activating slot B (version 1.1)",
        "{st:#}"
    );
    r.start_agent(&[]);
    let m = r.wait_end(&id, "ACTIVATED").await;
    assert!(
        m.contains("slot B confirmed") && m.contains("version 1.1"),
        "{m}"
    );
    r.assert_confirmed_b();
    let st = r.status_json();
    assert_eq!(st["boot"]["trial"], false, "{st:#}");
    assert_eq!(st["last_result"]["state"], "ACTIVATED");
    assert_eq!(st["last_result"]["job_id"], r.src.status_id(&id), "{st:#}");
    let o = r.agent_cli(&["status"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let want = match loader {
        Loader::Ebg => {
            "boot:      ebg, slot B confirmed (A: ustate=0 (OK) revision=1, B: ustate=0 (OK) revision=2)"
        }
        Loader::Uboot => {
            "boot:      uboot, slot B confirmed (boot_slot=B upgrade_available=0 bootcount=0 bootlimit=3 ustate=0)"
        }
    };
    assert!(text.contains(want), "{text}");
    assert_eq!(r.reboot_requests(), 1, "one reboot");
}

/// The new slot hangs: nothing confirms it, the watchdog resets the device (again, for U-Boot,
/// until bootlimit is passed), the bootloader goes back to A.
async fn hung_slot_rolls_back(via: Via, loader: Loader) {
    let mut r = Rig::new(via, loader);
    let id = r.install_until_reboot("1.1").await;
    assert_eq!(r.reboot(), 1);
    // The new system hangs before the agent runs: the watchdog resets it, as often as needed.
    let mut resets = 0;
    while r.dev.booted == 1 {
        r.power_cut();
        resets += 1;
        assert!(resets <= 5, "never rolled back: {}", r.dev.describe());
    }
    assert_eq!(
        resets,
        if loader == Loader::Ebg { 1 } else { 3 },
        "resets until the rollback"
    );
    r.start_agent(&[]);
    let m = r.wait_end(&id, "TERMINATED").await;
    assert!(m.starts_with("rolled back to slot A ("), "{m}");
    match loader {
        Loader::Ebg => assert!(
            m.contains("marked slot B FAILED") && m.contains("watchdog"),
            "{m}"
        ),
        Loader::Uboot => assert!(m.contains("bootcount 4 passed bootlimit 3"), "{m}"),
    }
    r.assert_rolled_back();
    assert_eq!(r.status_json()["boot"]["booted"], "A");
    // Not tried again (TUF-only: the target stays newer than the running version).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(r.state(&id), "TERMINATED");
    assert_eq!(r.successful_installs(), 1, "{}", r.swupdate().log());
    assert_eq!(r.reboot_requests(), 1);
}

/// A health check fails on trial: no confirmation, the agent reboots into the rollback at once,
/// and the update ends naming the check.
async fn failed_health_check_rolls_back(via: Via, loader: Loader) {
    let mut r = Rig::new(via, loader);
    r.health = "[health]\nsystemd = \"ignore\"\nchecks = [{ name = \"plc-link\", command = [\"sh\", \"-c\", \"echo no PLC >&2; exit 3\"], timeout = \"5s\" }]\n".into();
    let id = r.install_until_reboot("1.1").await;
    assert_eq!(r.reboot(), 1);
    r.start_agent(&[]);
    r.wait_reboot_request(2).await;
    assert_eq!(r.state(&id), "ACTIVATING", "ended only once back on A");
    assert_eq!(r.reboot(), 0, "the reboot goes back to A");
    r.start_agent(&[]);
    let m = r.wait_end(&id, "TERMINATED").await;
    assert!(
        m.starts_with(
            "rolled back to slot A (health check `plc-link` failed: sh: exit status: 3: no PLC"
        ),
        "{m}"
    );
    r.assert_rolled_back();
}

/// Issue 19: a rollback stays in the retained MQTT state once the device is idle: a subscriber
/// connecting afterwards reads the update's id, TERMINATED, the version and `rolled_back`; so
/// does one connecting after the agent restarted.
async fn rollback_stays_in_the_retained_mqtt_state(via: Via) {
    use cip_update_agent_tests::daemons::mosquitto::Mosquitto;
    let mut r = Rig::new(via, Loader::Ebg);
    let broker = Mosquitto::start().unwrap();
    // (TUF-only has no client-id but for the MQTT topics; its configuration drops
    // `config.client_id` at each start, so it goes with the device's keys.)
    let client = match via {
        Via::Wfx => r.config.client_id.clone().expect("wfx's client-id"),
        Via::TufOnly => {
            r.config.device += "client_id = \"dev-mqtt\"\n";
            "dev-mqtt".to_owned()
        }
    };
    let topic = format!("cip/devices/{client}/state");
    let sub = broker.subscribe(&topic).unwrap();
    r.mqtt = format!("[mqtt]\nurl = \"{}\"\n", broker.url());
    r.health = "[health]\nsystemd = \"ignore\"\nchecks = [{ name = \"plc-link\", command = [\"false\"], timeout = \"5s\" }]\n".into();
    let id = r.install_until_reboot("1.1").await;
    assert_eq!(r.reboot(), 1);
    r.start_agent(&[]);
    r.wait_reboot_request(2).await;
    assert_eq!(r.reboot(), 0, "the reboot goes back to A");
    r.start_agent(&[]);
    let m = r.wait_end(&id, "TERMINATED").await;
    let mqtt_id = r.src.status_id(&id);
    assert!(
        m.starts_with("rolled back to slot A (health check `plc-link`"),
        "{m}"
    );
    let idle_states = || {
        sub.messages()
            .iter()
            .filter_map(|m| m.json())
            .filter(|s| s["phase"] == "idle" && s["last"]["job_id"] == mqtt_id.as_str())
            .count()
    };
    r.until("the agent goes idle on MQTT with the rollback", |_| {
        idle_states() >= 1
    })
    .await;
    let read = || -> serde_json::Value {
        let text = broker.retained(&topic).unwrap().expect("a retained state");
        eprintln!("mosquitto_sub -C 1 --retained-only -t {topic}:\n{text}");
        serde_json::from_str(&text).unwrap()
    };
    let check = |s: &serde_json::Value| {
        assert_eq!(s["phase"], "idle", "{s:#}");
        assert_eq!(s["running_version"], "1.0", "{s:#}");
        let last = &s["last"];
        assert_eq!(last["job_id"], mqtt_id.as_str(), "{s:#}");
        assert_eq!(last["wfx_state"], "TERMINATED", "{s:#}");
        assert_eq!(last["version"], "1.1", "{s:#}");
        assert_eq!(last["rolled_back"], true, "{s:#}");
        assert_eq!(last["message"], m.as_str(), "{s:#}");
        assert_eq!(s["last_error"], m.as_str(), "{s:#}");
    };
    let before = read();
    check(&before);
    // After a restart (the retained state removed meanwhile), from the source's records.
    r.reboot();
    let cleared = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", &topic, "-r", "-n"])
        .status()
        .unwrap();
    assert!(cleared.success());
    r.start_agent(&[]);
    r.until("the restarted agent says idle on MQTT", |_| {
        idle_states() >= 2
    })
    .await;
    let after = read();
    check(&after);
    assert_eq!(after["last"]["time"], before["last"]["time"]);
}

/// A power cut after the checks passed, before the confirmation. EFI Boot Guard takes the reset
/// of an unconfirmed slot as its failure (rollback); U-Boot counts one boot and tries again.
async fn power_cut_before_confirmation(via: Via, loader: Loader) {
    let mut r = Rig::new(via, loader);
    let id = r.install_until_reboot("1.1").await;
    r.reboot();
    r.start_agent(&[("CIP_UPDATE_AGENT_CRASH_AT", "before confirm")]);
    r.until("the crash", |r| r.agent_log().contains("crashing at point"))
        .await;
    let booted = r.power_cut();
    r.start_agent(&[]);
    match loader {
        Loader::Ebg => {
            assert_eq!(booted, 0);
            let m = r.wait_end(&id, "TERMINATED").await;
            assert!(m.starts_with("rolled back to slot A"), "{m}");
            r.assert_rolled_back();
        }
        Loader::Uboot => {
            assert_eq!(booted, 1);
            r.wait_end(&id, "ACTIVATED").await;
            r.assert_confirmed_b();
        }
    }
}

/// A power cut right after the confirmation, before the job source's records heard of it: the
/// confirmed slot boots again and the update is ACTIVATED.
async fn power_cut_right_after_confirmation(via: Via) {
    let mut r = Rig::new(via, Loader::Ebg);
    let id = r.install_until_reboot("1.1").await;
    r.reboot();
    r.start_agent(&[("CIP_UPDATE_AGENT_CRASH_AT", "after confirm")]);
    r.until("the crash", |r| r.agent_log().contains("crashing at point"))
        .await;
    assert_eq!(
        r.dev.ebg_env(1).unwrap().ustate,
        0,
        "confirmed before the cut"
    );
    assert_eq!(r.state(&id), "ACTIVATING", "not recorded nor reported yet");
    assert_eq!(r.power_cut(), 1, "the confirmed slot boots");
    r.start_agent(&[]);
    r.wait_end(&id, "ACTIVATED").await;
    r.assert_confirmed_b();
}

/// Three quick power cuts on a confirmed slot change nothing: no boot is counted, nothing rolls
/// back, nothing new is reported.
async fn power_cuts_on_a_confirmed_slot(via: Via, loader: Loader) {
    let mut r = Rig::new(via, loader);
    let id = r.install_until_reboot("1.1").await;
    r.reboot();
    r.start_agent(&[]);
    r.wait_state(&id, &["ACTIVATED", "TERMINATED"]).await;
    let reported = r.src.reported(&r.f, &id);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(r.power_cut(), 1, "B boots: {}", r.dev.describe());
        r.start_agent(&[]);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.assert_confirmed_b();
    assert_eq!(r.state(&id), "ACTIVATED");
    assert_eq!(r.src.reported(&r.f, &id), reported, "nothing new reported");
    assert_eq!(r.reboot_requests(), 1, "no reboot asked for");
}

/// `reboot.policy = "manual"`: the agent arms the slot and waits; `cip-update-agent reboot`
/// reboots; `cip-update-agent confirm` ends the trial by hand.
async fn manual_reboot_and_confirm_subcommands(via: Via) {
    let mut r = Rig::new(via, Loader::Ebg);
    r.reboot_extra = "policy = \"manual\"\n".into();
    r.start_agent(&[]);
    let id = r.firmware_job("1.1").await;
    r.wait_state(&id, &["ACTIVATING"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.reboot_requests(), 0, "manual: the agent does not reboot");
    let cli = |r: &Rig, what: &str| r.agent_cli(&[what]);
    let o = cli(&r, "reboot");
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("rebooting into slot B"),
        "{o:?}"
    );
    assert_eq!(r.reboot_requests(), 1);
    assert_eq!(r.reboot(), 1);
    let o = cli(&r, "confirm");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "slot B confirmed"
    );
    assert_eq!(r.dev.ebg_env(1).unwrap().ustate, 0);
    let o = cli(&r, "confirm");
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("nothing to confirm"),
        "{o:?}"
    );
    r.start_agent(&[]);
    r.wait_end(&id, "ACTIVATED").await;
    r.assert_confirmed_b();
    let o = cli(&r, "reboot");
    assert_eq!(
        o.status.code(),
        Some(1),
        "nothing waits for a reboot: {o:?}"
    );
}

/// `reboot.policy = "window"` in local time (TZ=UTC here): a window that opens in two hours holds
/// the reboot; one open now lets it go, once the consent command agrees.
async fn reboot_waits_for_the_window_and_for_consent(via: Via) {
    let mut r = Rig::new(via, Loader::Ebg);
    let now_min = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
        % (24 * 60)) as u32;
    let hhmm = |m: u32| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    let later = format!("{}-{}", hhmm(now_min + 120), hhmm(now_min + 180));
    r.reboot_extra = format!("policy = \"window\"\nwindow = \"{later}\"\n");
    r.start_agent(&[("TZ", "UTC")]);
    let id = r.firmware_job("1.1").await;
    r.wait_state(&id, &["ACTIVATING"]).await;
    let m = r.message(&id);
    assert!(m.contains(&format!("reboot in the window {later}")), "{m}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.reboot_requests(), 0, "the window is closed");
    // The window is open now, but the consent command says no until its file exists.
    r.agent.take();
    let open = format!("{}-{}", hhmm(now_min + 24 * 60 - 30), hhmm(now_min + 30));
    let consent = r.path("consent");
    r.reboot_extra = format!(
        "policy = \"window\"\nwindow = \"{open}\"\nconsent_command = [\"test\", \"-e\", {consent:?}]\nconsent_retry = \"1s\"\n"
    );
    r.start_agent(&[("TZ", "UTC")]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.reboot_requests(), 0, "no consent yet");
    fs::write(&consent, "").unwrap();
    r.wait_reboot_request(1).await;
    assert_eq!(r.reboot(), 1);
    r.start_agent(&[("TZ", "UTC")]);
    r.wait_end(&id, "ACTIVATED").await;
}

/// `boot.mark_installed = "swupdate"` (the default on a device) with a SWUpdate that runs
/// without a bootloader: nothing arms the new slot, and the update ends saying what to set,
/// instead of rebooting into the old slot.
async fn nothing_armed_by_swupdate_is_terminated_with_the_setting_to_fix(via: Via) {
    let mut r = Rig::new(via, Loader::Ebg);
    r.swupdate_marks = true;
    r.start_agent(&[]);
    let id = r.firmware_job("1.1").await;
    let m = r.wait_end(&id, "TERMINATED").await;
    assert!(
        m.starts_with("no slot is armed for the next boot") && m.contains("boot.mark_installed"),
        "{m}"
    );
    assert_eq!(r.reboot_requests(), 0);
    assert_eq!(r.dev.ebg_env(1).unwrap().ustate, 0, "B not armed");
}

/// The scenarios that run under every job source: one test per scenario (and loader).
macro_rules! scenarios {
    ($via:expr) => {
        use super::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ebg_good_update_is_confirmed_and_activated() {
            good_update_is_confirmed($via, Loader::Ebg).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn uboot_good_update_is_confirmed_and_activated() {
            good_update_is_confirmed($via, Loader::Uboot).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ebg_hung_slot_is_rolled_back_by_the_watchdog() {
            hung_slot_rolls_back($via, Loader::Ebg).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn uboot_hung_slot_is_rolled_back_past_bootlimit() {
            hung_slot_rolls_back($via, Loader::Uboot).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ebg_failed_health_check_rolls_back_and_names_the_check() {
            failed_health_check_rolls_back($via, Loader::Ebg).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn uboot_failed_health_check_rolls_back_and_names_the_check() {
            failed_health_check_rolls_back($via, Loader::Uboot).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ebg_rollback_stays_in_the_retained_mqtt_state() {
            rollback_stays_in_the_retained_mqtt_state($via).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ebg_power_cut_before_the_confirmation_rolls_back() {
            power_cut_before_confirmation($via, Loader::Ebg).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn uboot_power_cut_before_the_confirmation_boots_the_new_slot_again() {
            power_cut_before_confirmation($via, Loader::Uboot).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ebg_power_cut_right_after_the_confirmation_keeps_the_new_slot() {
            power_cut_right_after_confirmation($via).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ebg_three_power_cuts_on_a_confirmed_slot_change_nothing() {
            power_cuts_on_a_confirmed_slot($via, Loader::Ebg).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn uboot_three_power_cuts_on_a_confirmed_slot_change_nothing() {
            power_cuts_on_a_confirmed_slot($via, Loader::Uboot).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn manual_reboot_and_confirm_subcommands() {
            super::manual_reboot_and_confirm_subcommands($via).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn reboot_waits_for_the_window_and_for_consent() {
            super::reboot_waits_for_the_window_and_for_consent($via).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn nothing_armed_by_swupdate_is_terminated_with_the_setting_to_fix() {
            super::nothing_armed_by_swupdate_is_terminated_with_the_setting_to_fix($via).await;
        }
    };
}

/// A wfx job.
mod wfx {
    scenarios!(Via::Wfx);
}

/// TUF-only mode: the newest target for the device's hardware.
mod tuf_only {
    scenarios!(Via::TufOnly);
}

/// wfx is down when the new slot boots: the agent confirms all the same (the trial must not
/// wait for the network) and reports ACTIVATED once wfx answers again. (wfx only: the network
/// that fails is wfx's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirming_needs_no_network() {
    let mut r = Rig::new(Via::Wfx, Loader::Ebg);
    let id = r.install_until_reboot("1.1").await;
    r.wfx.fail_next_requests(u32::MAX);
    r.reboot();
    r.start_agent(&[]);
    r.until("the confirmation", |r| {
        r.dev.ebg_env(1).map(|e| e.ustate).unwrap_or(9) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(r.state(&id), "ACTIVATING", "wfx is down: not reported yet");
    r.wfx.fail_next_requests(0);
    r.wait_end(&id, "ACTIVATED").await;
    r.assert_confirmed_b();
}

/// A direct firmware job of the one-for-both-slots image at `url`, `version`.
async fn selection_job(r: &Rig, url: &str, version: &str) -> String {
    let def = json!({"version": "1.0", "type": ["firmware"],
        "artifacts": [{"name": "os", "version": version, "uri": url}]});
    r.create_job(DIRECT, def).await
}

/// One `.swu` for both slots (software set `stable`, mode `copy1` writes slot A, `copy2` slot
/// B), as isar-cip-core builds them: with `swupdate.select_on_a`/`_b` the agent names, in each
/// install request, the mode that writes the slot not running. SWUpdate accepts only the two
/// selections it was started with (`-q`). The first update (from A) writes B, the next (from B)
/// writes A, and the running slot is never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_selects_the_software_set_of_the_slot_not_running() {
    let (f, src) = JobSource::fleet(
        Via::Wfx,
        Fleet::builder()
            .swupdate_arg("-q")
            .swupdate_arg("stable,copy1")
            .swupdate_arg("-q")
            .swupdate_arg("stable,copy2"),
    );
    let mut r = Rig::with_fleet(Loader::Ebg, f, src);
    r.config.swupdate = "select_on_a = \"stable,copy2\"\nselect_on_b = \"stable,copy1\"\n".into();
    let image = |r: &Rig, version: &str| -> String {
        let data = format!("VERSION_ID={version}\n").into_bytes();
        let set = |mode: &str, slot: usize| {
            format!(
                "\t\t{mode}: {{ images: ( {{ filename = \"rootfs.img\"; type = \"raw\"; device = {:?}; sha256 = \"{}\"; }} ); }};\n",
                r.dev.slot_image(slot).display().to_string(),
                sha256_hex(&data)
            )
        };
        let desc = format!(
            "software =\n{{\n\tversion = \"{version}\";\n\thardware-compatibility = [ \"1.0\" ];\n\tstable: {{\n{}{}\t}};\n}}\n",
            set("copy1", 0),
            set("copy2", 1)
        );
        let name = format!("ab-{version}.swu");
        SwuBuilder::new()
            .image(Image::raw("rootfs.img", data.clone(), r.dev.slot_image(1)))
            .custom_sw_description(desc)
            .build(&r.cert, &r.path(&format!("www/{name}")))
            .unwrap();
        r.nginx().url(&name)
    };
    let slots =
        |r: &Rig| [0, 1].map(|i| fs::read_to_string(r.dev.slot_image(i)).unwrap_or_default());

    // From A: copy2 writes B.
    r.start_agent(&[]);
    let url = image(&r, "1.1");
    let first = selection_job(&r, &url, "1.1").await;
    r.wait_reboot_request(1).await;
    assert_eq!(
        slots(&r),
        ["VERSION_ID=1.0\n", "VERSION_ID=1.1\n"],
        "{}",
        r.agent_log()
    );
    assert!(
        r.agent_log()
            .contains("with SWUpdate selection stable,copy2"),
        "{}",
        r.agent_log()
    );
    assert_eq!(r.reboot(), 1);
    r.start_agent(&[]);
    r.wait_end(&first, "ACTIVATED").await;

    // From B: the same kind of image, copy1 writes A.
    let url = image(&r, "1.2");
    let second = selection_job(&r, &url, "1.2").await;
    r.wait_reboot_request(2).await;
    assert_eq!(
        slots(&r),
        ["VERSION_ID=1.2\n", "VERSION_ID=1.1\n"],
        "{}",
        r.agent_log()
    );
    assert_eq!(r.reboot(), 0, "EFI Boot Guard boots the new slot A");
    r.start_agent(&[]);
    r.wait_end(&second, "ACTIVATED").await;
    assert_eq!(r.dev.running_version(), "1.2");
    // SWUpdate's own words: it accepted copy2, then copy1, and installed twice.
    let log = r.swupdate().log();
    let accepted: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("Accepted selection ").nth(1))
        .collect();
    assert_eq!(accepted, ["stable,copy2", "stable,copy1"], "{log}");
    let installs = log
        .lines()
        .filter(|l| l.contains("SWUPDATE successful"))
        .count();
    assert_eq!(installs, 2, "{log}");
}

/// A selection SWUpdate was not started to accept (`-q`) is refused before any byte: the job
/// ends TERMINATED naming the selection, and neither slot is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_swupdate_does_not_accept_ends_the_job() {
    let mut r = Rig::new(Via::Wfx, Loader::Ebg);
    r.config.swupdate = "select_on_a = \"stable,copy2\"\nselect_on_b = \"stable,copy1\"\n".into();
    r.start_agent(&[]);
    let id = r.firmware_job("1.1").await;
    let state = r.wait_state(&id, &["ACTIVATING", "TERMINATED"]).await;
    let m = r.message(&id);
    assert_eq!(state, "TERMINATED", "{}", r.describe(&id));
    assert!(
        m.contains("SWUpdate refused the request") && m.contains("stable,copy2"),
        "{m}"
    );
    assert_eq!(fs::read_to_string(r.dev.slot_image(1)).unwrap(), "");
}

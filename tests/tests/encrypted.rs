//! Encrypted images (SWUpdate's `encrypted = true;`, AES-256-CBC, the key file given with `-K`)
//! through `cip-update-agent install`, on the live daemon picked by `CIP_TEST_SWUPDATE`.
//!
//! The agent does not decrypt: it streams the `.swu` as it is (and, with TUF, checks the
//! encrypted file's hashes, `tuf_daemon::an_encrypted_swu_is_verified_by_tuf_and_installed`).
//! The daemon decrypts with its key; a daemon with another key fails the install, and the agent
//! reports that failure with SWUpdate's words.

use std::fs;
use std::path::PathBuf;
use std::process::Output;

use cip_update_agent_tests::daemons::agent::agent_cmd;
use cip_update_agent_tests::daemons::swupdate::{DaemonOptions, SwupdateDaemon, installation};
use cip_update_agent_tests::fixtures::aes::AesKey;
use cip_update_agent_tests::fixtures::pki::TestCert;
use cip_update_agent_tests::fixtures::swu::{BuiltSwu, Image, SwuBuilder, random_bytes};
use tempfile::TempDir;

/// A daemon that decrypts with `daemon_key`, and a signed image encrypted with `image_key`.
struct Rig {
    dir: TempDir,
    daemon: SwupdateDaemon,
    swu: BuiltSwu,
    data: Vec<u8>,
}

impl Rig {
    fn new(daemon_key: &AesKey, image_key: &AesKey) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::generate(dir.path()).unwrap();
        let key_file = dir.path().join("aes.key");
        daemon_key.write_key_file(&key_file).unwrap();
        let daemon =
            SwupdateDaemon::start(&DaemonOptions::new(&cert).arg("-K").arg(&key_file)).unwrap();
        let data = random_bytes(200_000, 20);
        let swu = SwuBuilder::new()
            .image(
                Image::raw("rootfs.img", data.clone(), dir.path().join("enc.target"))
                    .encrypted(image_key),
            )
            .build(&cert, &dir.path().join("enc.swu"))
            .unwrap();
        Rig {
            dir,
            daemon,
            swu,
            data,
        }
    }

    fn target(&self) -> PathBuf {
        self.dir.path().join("enc.target")
    }

    fn install(&self) -> Output {
        let mut c = agent_cmd().unwrap();
        c.arg("install")
            .arg(&self.swu.path)
            .arg("--control-socket")
            .arg(self.daemon.control_socket())
            .arg("--progress-socket")
            .arg(self.daemon.progress_socket())
            .env_remove("CIP_SWUPDATE_WIRE")
            .env("CIP_UPDATE_AGENT_CONFIG", "/dev/null");
        c.output().unwrap()
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn an_encrypted_image_is_installed_decrypted() {
    let key = AesKey::from_seed("fleet");
    let rig = Rig::new(&key, &key);
    let archive = fs::read(&rig.swu.path).unwrap();
    assert!(
        !archive.windows(64).any(|w| w == &rig.data[..64]),
        "the image is not in the archive in the clear"
    );
    let o = rig.install();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        text(&o),
        rig.daemon.log()
    );
    assert!(text(&o).contains("SUCCESS"), "{}", text(&o));
    assert!(
        fs::read(rig.target()).unwrap() == rig.data,
        "the target holds the decrypted image"
    );
}

#[test]
fn a_daemon_with_another_key_fails_the_install_and_the_agent_says_so() {
    let rig = Rig::new(&AesKey::from_seed("device"), &AesKey::from_seed("fleet"));
    let o = rig.install();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", rig.daemon.log());
    assert!(out.starts_with("FAILURE: install of"), "{out}");
    let reason = installation().release.decryption_failure_reason();
    assert!(
        out.contains(reason),
        "SWUpdate's reason ({reason}) in:\n{out}\n{}",
        rig.daemon.log()
    );
    assert!(fs::read(rig.target()).unwrap() != rig.data, "not installed");
}

//! A simulated A/B device for the rollback tests: two root file system slots (plain files that
//! hold an os-release line), and a bootloader, driven with the real tools on plain files:
//!
//! - EFI Boot Guard: two BGENV.DAT files (slot A, slot B) written with `bg_setenv -f FILE -P`
//!   and read with `bg_printenv -f FILE -r`; [`Device::boot`] applies EBG's selection rule
//!   (`shared/swupdate/NOTES.md`): the environment with the highest revision; in_progress ->
//!   the other; TESTING -> FAILED with revision 0 and the other boots; INSTALLED -> TESTING and
//!   it boots.
//! - U-Boot: one environment file written with `fw_setenv -c CONFIG` and read with
//!   `fw_printenv -c CONFIG`; [`Device::boot`] applies the bootcount rule: while
//!   `upgrade_available=1` each boot counts `bootcount` up, and past `bootlimit` `altbootcmd`
//!   runs: the slot variable goes back, `upgrade_available=0`, `ustate=3`.
//!
//! Booting writes the booted slot's os-release to the running version file (`[device]
//! version_file` of the agent). The agent's process (stopped at a reboot, killed at a power
//! cut or a watchdog reset) is the test's business.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Which bootloader the device has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    Ebg,
    Uboot,
}

pub const SLOTS: [&str; 2] = ["A", "B"];

/// One EFI Boot Guard environment as `bg_printenv -r` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EbgEnv {
    pub in_progress: bool,
    pub revision: u32,
    pub ustate: u8,
}

/// The simulated device (its files live in `dir`).
pub struct Device {
    dir: PathBuf,
    pub loader: Loader,
    /// The slot running now.
    pub booted: usize,
    /// U-Boot's `bootlimit`.
    pub bootlimit: u32,
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Device {
    /// A device running `version` from slot A, slot B empty, the bootloader in its first state.
    pub fn new(dir: &Path, loader: Loader, version: &str) -> anyhow::Result<Device> {
        fs::create_dir_all(dir)?;
        let d = Device {
            dir: dir.to_owned(),
            loader,
            booted: 0,
            bootlimit: 3,
        };
        fs::write(d.slot_image(0), format!("VERSION_ID={version}\n"))?;
        fs::write(d.slot_image(1), "")?;
        match loader {
            Loader::Ebg => {
                for i in 0..2 {
                    fs::create_dir_all(d.ebg_file(i).parent().unwrap_or(dir))?;
                    // As isar-cip-core's image: BOOT0 revision 1, BOOT1 revision 0, both OK.
                    // A new file: no -P (there is nothing to preserve yet).
                    run(Command::new("bg_setenv")
                        .arg("-f")
                        .arg(d.ebg_file(i))
                        .args([
                            "-k",
                            &format!("C:BOOT{i}:linux.efi"),
                            "-w",
                            "60",
                            "-r",
                            if i == 0 { "1" } else { "0" },
                            "-s",
                            "0",
                        ]))?;
                }
            }
            Loader::Uboot => {
                let env = dir.join("uboot.env");
                fs::write(&env, vec![0u8; 0x4000])?;
                fs::write(d.fw_env_config(), format!("{} 0x0 0x4000\n", env.display()))?;
                fs::write(
                    d.fw_defaults(),
                    format!(
                        "boot_slot=A\nbootlimit={}\nbootcount=0\nupgrade_available=0\nustate=0\n",
                        d.bootlimit
                    ),
                )?;
                d.fw_set(&[("boot_slot", "A")])?;
            }
        }
        d.write_version()?;
        Ok(d)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root file system of a slot (an os-release line).
    pub fn slot_image(&self, slot: usize) -> PathBuf {
        self.dir.join(format!("rootfs-{}.img", SLOTS[slot]))
    }

    /// The slot not running: where an update goes.
    pub fn inactive(&self) -> usize {
        1 - self.booted
    }

    /// The running version file (`[device] version_file`).
    pub fn version_file(&self) -> PathBuf {
        self.dir.join("os-release")
    }

    pub fn running_version(&self) -> String {
        fs::read_to_string(self.version_file())
            .unwrap_or_default()
            .trim()
            .trim_start_matches("VERSION_ID=")
            .to_owned()
    }

    pub fn ebg_file(&self, slot: usize) -> PathBuf {
        self.dir.join(format!("BOOT{slot}/BGENV.DAT"))
    }

    pub fn fw_env_config(&self) -> PathBuf {
        self.dir.join("fw_env.config")
    }

    pub fn fw_defaults(&self) -> PathBuf {
        self.dir.join("u-boot-initial-env")
    }

    /// The agent's `[boot]` section for this device (the agent arms the slot, as SWUpdate would
    /// with a bootloader: the test daemon runs without one).
    pub fn boot_config(&self) -> String {
        match self.loader {
            Loader::Ebg => format!(
                "[boot]\nbackend = \"ebg\"\nmark_installed = \"agent\"\nebg_env_files = [{:?}, {:?}]\n",
                self.ebg_file(0),
                self.ebg_file(1)
            ),
            Loader::Uboot => format!(
                "[boot]\nbackend = \"uboot\"\nmark_installed = \"agent\"\nfw_env_config = {:?}\nfw_env_defaults = {:?}\n",
                self.fw_env_config(),
                self.fw_defaults()
            ),
        }
    }

    fn bg_setenv(&self, slot: usize, args: &[&str]) -> anyhow::Result<()> {
        run(Command::new("bg_setenv")
            .arg("-f")
            .arg(self.ebg_file(slot))
            .arg("-P")
            .args(args))
        .map(drop)
    }

    /// An environment, read back with `bg_printenv -f FILE -r`.
    pub fn ebg_env(&self, slot: usize) -> anyhow::Result<EbgEnv> {
        let out = run(Command::new("bg_printenv")
            .arg("-f")
            .arg(self.ebg_file(slot))
            .args(["-r", "-o", "in_progress,revision,ustate"]))?;
        let field = |k: &str| -> anyhow::Result<u32> {
            out.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .with_context(|| format!("no {k} in {out}"))?
                .trim()
                .parse()
                .with_context(|| format!("{k} in {out}"))
        };
        Ok(EbgEnv {
            in_progress: field("IN_PROGRESS")? != 0,
            revision: field("REVISION")?,
            ustate: u8::try_from(field("USTATE")?)?,
        })
    }

    /// U-Boot's variables, read back with `fw_printenv -c CONFIG`.
    pub fn uboot_vars(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let out = run(Command::new("fw_printenv")
            .arg("-c")
            .arg(self.fw_env_config())
            .arg("-f")
            .arg(self.fw_defaults()))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    fn fw_set(&self, pairs: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut c = Command::new("fw_setenv");
        c.arg("-c")
            .arg(self.fw_env_config())
            .arg("-f")
            .arg(self.fw_defaults());
        for (k, v) in pairs {
            c.arg(k).arg(v);
        }
        run(&mut c).map(drop)
    }

    /// The bootloader at power-on: picks the slot by its rule, updates its state as the real one
    /// does, and "starts" the slot (its os-release becomes the running version). Returns the slot.
    pub fn boot(&mut self) -> anyhow::Result<usize> {
        self.booted = match self.loader {
            Loader::Ebg => self.ebg_boot()?,
            Loader::Uboot => self.uboot_boot()?,
        };
        self.write_version()?;
        Ok(self.booted)
    }

    fn write_version(&self) -> anyhow::Result<()> {
        fs::copy(self.slot_image(self.booted), self.version_file())?;
        Ok(())
    }

    fn ebg_boot(&self) -> anyhow::Result<usize> {
        let envs = [self.ebg_env(0)?, self.ebg_env(1)?];
        // The highest revision (the first on a tie).
        let latest = if envs[1].revision > envs[0].revision {
            1
        } else {
            0
        };
        let other = 1 - latest;
        let e = &envs[latest];
        Ok(if e.in_progress {
            other
        } else if e.ustate == 2 {
            // TESTING: the new system did not confirm before this reset.
            self.bg_setenv(latest, &["-s", "3", "-r", "0"])?;
            other
        } else if e.ustate == 1 {
            self.bg_setenv(latest, &["-s", "2"])?;
            latest
        } else {
            latest
        })
    }

    fn uboot_boot(&self) -> anyhow::Result<usize> {
        let vars = self.uboot_vars()?;
        let get = |k: &str| vars.get(k).map(String::as_str).unwrap_or("");
        let slot_of = |v: &str| SLOTS.iter().position(|s| *s == v);
        let named = slot_of(get("boot_slot")).context("boot_slot is not A or B")?;
        if get("upgrade_available") != "1" {
            return Ok(named);
        }
        let count = get("bootcount").parse::<u32>().unwrap_or(0) + 1;
        let limit = get("bootlimit").parse::<u32>().unwrap_or(self.bootlimit);
        if count > limit {
            // altbootcmd: back to the other slot, the update marked failed.
            let back = 1 - named;
            self.fw_set(&[
                ("bootcount", &count.to_string()),
                ("boot_slot", SLOTS[back]),
                ("upgrade_available", "0"),
                ("ustate", "3"),
            ])?;
            return Ok(back);
        }
        self.fw_set(&[("bootcount", &count.to_string())])?;
        Ok(named)
    }

    /// A one-line picture of the bootloader state, for assertion messages.
    pub fn describe(&self) -> String {
        match self.loader {
            Loader::Ebg => (0..2)
                .map(|i| format!("{}: {:?}", SLOTS[i], self.ebg_env(i).ok()))
                .collect::<Vec<_>>()
                .join(", "),
            Loader::Uboot => format!("{:?}", self.uboot_vars().ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model's EBG rule with the real tools: installed -> testing -> (reset) failed, back.
    #[test]
    fn ebg_rule() {
        let d = tempfile::tempdir().unwrap();
        let mut dev = Device::new(d.path(), Loader::Ebg, "1.0").unwrap();
        assert_eq!(dev.boot().unwrap(), 0);
        assert_eq!(dev.running_version(), "1.0");
        // What SWUpdate does after an install into B.
        fs::write(dev.slot_image(1), "VERSION_ID=1.1\n").unwrap();
        dev.bg_setenv(1, &["-r", "2", "-s", "1"]).unwrap();
        assert_eq!(dev.boot().unwrap(), 1);
        assert_eq!(dev.running_version(), "1.1");
        assert_eq!(dev.ebg_env(1).unwrap().ustate, 2, "TESTING");
        // Reset before the confirmation: B FAILED with revision 0, A boots.
        assert_eq!(dev.boot().unwrap(), 0);
        assert_eq!(
            dev.ebg_env(1).unwrap(),
            EbgEnv {
                in_progress: false,
                revision: 0,
                ustate: 3
            }
        );
        assert_eq!(dev.running_version(), "1.0");
        // in_progress on the latest: the other boots.
        dev.bg_setenv(1, &["-r", "5", "-i", "1", "-s", "0"])
            .unwrap();
        assert_eq!(dev.boot().unwrap(), 0);
    }

    #[test]
    fn uboot_rule() {
        let d = tempfile::tempdir().unwrap();
        let mut dev = Device::new(d.path(), Loader::Uboot, "1.0").unwrap();
        assert_eq!(dev.boot().unwrap(), 0);
        // Confirmed boots count nothing.
        for _ in 0..5 {
            assert_eq!(dev.boot().unwrap(), 0);
        }
        assert_eq!(dev.uboot_vars().unwrap()["bootcount"], "0");
        dev.fw_set(&[
            ("boot_slot", "B"),
            ("upgrade_available", "1"),
            ("bootcount", "0"),
        ])
        .unwrap();
        for n in 1..=3 {
            assert_eq!(dev.boot().unwrap(), 1, "boot {n} of bootlimit 3");
        }
        assert_eq!(dev.boot().unwrap(), 0, "the fourth runs altbootcmd");
        let v = dev.uboot_vars().unwrap();
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

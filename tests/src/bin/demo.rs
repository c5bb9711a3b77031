//! The newcomer's demo: a signed .swu installed into a real SWUpdate daemon through the agent,
//! with file targets, so an update can be watched end to end on any Debian 12 machine.

use std::fs;
use std::process::ExitCode;

use anyhow::{Context, bail};
use cip_update_agent_tests::agent::agent_cmd;
use cip_update_agent_tests::pki::TestCert;
use cip_update_agent_tests::swu::{Image, SwuBuilder, random_bytes, sha256_hex};
use cip_update_agent_tests::swupdate::{DaemonOptions, SwupdateDaemon};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("cip-update-agent-demo.")
        .tempdir()?;
    let d = dir.path();
    println!("== workspace: {}", d.display());

    println!("== a throwaway signing certificate (SWUpdate only installs signed images)");
    let cert = TestCert::generate(d)?;

    println!("== a signed demo .swu: a 16 MiB root file system image and a version file");
    let rootfs = random_bytes(16 << 20, 42);
    let version = b"VERSION_ID=1.1-demo\n".to_vec();
    let swu = SwuBuilder::new()
        .version("1.1")
        .image(Image::raw(
            "rootfs.img",
            rootfs.clone(),
            d.join("slot-b.img"),
        ))
        .image(Image::rawfile(
            "os-release",
            version.clone(),
            d.join("os-release"),
        ))
        .build(&cert, &d.join("demo-1.1.swu"))?;
    println!("   {} ({} bytes)", swu.path.display(), swu.len);

    println!("== a SWUpdate daemon (Debian's), with its own sockets");
    let daemon = SwupdateDaemon::start(&DaemonOptions::new(&cert))?;
    println!("   control  {}", daemon.control_socket().display());
    println!("   progress {}", daemon.progress_socket().display());

    println!("== cip-update-agent install");
    let mut cmd = agent_cmd()?;
    cmd.arg("install")
        .arg(&swu.path)
        .arg("--control-socket")
        .arg(daemon.control_socket())
        .arg("--progress-socket")
        .arg(daemon.progress_socket());
    println!("   $ {cmd:?}");
    let status = cmd.status().context("running cip-update-agent")?;
    if !status.success() {
        bail!(
            "the agent reported {status}; SWUpdate's log:\n{}",
            daemon.log()
        );
    }

    println!("== checking what SWUpdate wrote");
    let slot = fs::read(d.join("slot-b.img"))?;
    let rel = fs::read(d.join("os-release"))?;
    if slot != rootfs || rel != version {
        bail!("the installed files differ from the image");
    }
    println!(
        "   slot-b.img  sha256 {} = image  ({} bytes)",
        sha256_hex(&slot),
        slot.len()
    );
    println!("   os-release  {}", String::from_utf8_lossy(&rel).trim());
    println!("== done: the update went through SWUpdate, byte for byte.");
    Ok(())
}

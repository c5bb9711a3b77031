//! The newcomer's demo: the whole local flow of an update. A wfx emulator hands a DAU job to
//! `cip-update-agent run`, which fetches the signed image from nginx and installs it through a
//! real SWUpdate daemon into file targets; the job's states are printed as they pass.

use std::fs;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cip_update_agent_tests::daemons::agent::agent_cmd;
use cip_update_agent_tests::daemons::nginx::Nginx;
use cip_update_agent_tests::daemons::process::GroupChild;
use cip_update_agent_tests::daemons::swupdate::{DaemonOptions, SwupdateDaemon};
use cip_update_agent_tests::emulators::wfx::WfxEmulator;
use cip_update_agent_tests::fixtures::pki::TestCert;
use cip_update_agent_tests::fixtures::swu::{Image, SwuBuilder, random_bytes, sha256_hex};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("cip-update-agent-demo.")
        .tempdir()?;
    let d = dir.path();
    println!("== workspace: {}", d.display());

    println!("== a throwaway signing certificate (SWUpdate only installs signed images)");
    let cert = TestCert::generate(d)?;

    println!(
        "== a signed .swu: a 16 MiB root file system image and a version file, served by nginx"
    );
    let www = d.join("www");
    fs::create_dir(&www)?;
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
        .build(&cert, &www.join("cip-core-1.1.swu"))?;
    let nginx = Nginx::start(&www)?;
    let url = nginx.url("cip-core-1.1.swu");
    println!("   {url} ({} bytes)", swu.len);

    println!("== a SWUpdate daemon (Debian's), with its own sockets");
    let daemon = SwupdateDaemon::start(&DaemonOptions::new(&cert))?;

    println!("== a wfx server (the test emulator of the real one)");
    let wfx = WfxEmulator::start_default()?;
    println!("   southbound {}", wfx.south_url());
    println!("   northbound {}", wfx.north_url());

    println!("== cip-update-agent run, as device dev-0042");
    let cfg = d.join("agent.toml");
    fs::write(
        &cfg,
        format!(
            "state_dir = {:?}\n\n[device]\nclient_id = \"dev-0042\"\n\n[wfx]\nurl = \"{}\"\npoll_interval = \"30s\"\nprogress_interval = \"500ms\"\n\n[swupdate]\ncontrol_socket = {:?}\nprogress_socket = {:?}\n",
            d.join("state"),
            wfx.south_url(),
            daemon.control_socket(),
            daemon.progress_socket()
        ),
    )?;
    println!("   {}:", cfg.display());
    for l in fs::read_to_string(&cfg)?.lines() {
        println!("   | {l}");
    }
    let mut cmd: Command = agent_cmd()?;
    cmd.arg("--config").arg(&cfg).arg("run");
    cmd.stderr(fs::File::create(d.join("agent.log"))?);
    let mut agent = GroupChild::spawn(cmd, "cip-update-agent")?;

    println!("== the operator creates a DAU job (wfx.workflow.dau.direct) for dev-0042");
    let http = cip_update_agent::http::default_client();
    let job: Value = http
        .post(format!("{}/jobs", wfx.north_url()))
        .json(&json!({
            "clientId": "dev-0042",
            "workflow": "wfx.workflow.dau.direct",
            "definition": {"version": "1.0", "type": ["firmware"],
                           "artifacts": [{"name": "cip-core", "version": "1.1", "uri": url}]}
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = job["id"].as_str().context("job id")?.to_owned();
    println!("   job {id}");

    println!("== the job's states, as wfx records them");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    let last = loop {
        let j: Value = http
            .get(format!("{}/jobs/{id}", wfx.north_url()))
            .send()
            .await?
            .json()
            .await?;
        let st = &j["status"];
        let line = format!(
            "{:<11} {:>4} {}",
            st["state"].as_str().unwrap_or("?"),
            st["progress"]
                .as_u64()
                .map(|p| format!("{p}%"))
                .unwrap_or_default(),
            st["message"].as_str().unwrap_or("")
        );
        if line != seen {
            println!("   {line}");
            seen = line;
        }
        if matches!(st["state"].as_str(), Some("ACTIVATED" | "TERMINATED")) {
            break j;
        }
        if Instant::now() > deadline {
            bail!(
                "the job did not end; agent log:\n{}",
                fs::read_to_string(d.join("agent.log"))?
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    agent.kill_group(Duration::from_secs(2))?;
    if last["status"]["state"] != "ACTIVATED" {
        bail!("the job ended {}", last["status"]);
    }
    let full: Value = http
        .get(format!("{}/jobs/{id}?history=true", wfx.north_url()))
        .send()
        .await?
        .json()
        .await?;
    let mut path: Vec<&str> = full["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .rev()
                .filter_map(|e| e["status"]["state"].as_str())
                .collect()
        })
        .unwrap_or_default();
    path.dedup();
    path.push("ACTIVATED");
    println!("   every state: {}", path.join(" -> "));

    println!("== checking what SWUpdate wrote");
    let slot = fs::read(d.join("slot-b.img"))?;
    let rel = fs::read(d.join("os-release"))?;
    if slot != rootfs || rel != version {
        bail!("the installed files differ from the image");
    }
    println!(
        "   slot-b.img  sha256 {} = image ({} bytes)",
        sha256_hex(&slot),
        slot.len()
    );
    println!("   os-release  {}", String::from_utf8_lossy(&rel).trim());
    println!("== done: wfx job -> agent -> nginx -> SWUpdate, ACTIVATED, byte for byte.");
    Ok(())
}

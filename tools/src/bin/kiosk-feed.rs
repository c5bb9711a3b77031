//! Plays device telemetry through the agent's real [`Publisher`], one publisher per client-id,
//! for the kiosk page (kiosk/) and its browser test: what the page shows is what agents send.
//!
//! `kiosk-feed <url> <prefix>`, then commands on standard input, one per line:
//! - `inventory <client-id> <json>`: [`Inventory`] with the JSON's `hardware_revision`,
//!   `os_release`, `swupdate_wire`, `boot_backend`;
//! - `state <client-id> <json>`: [`State`] with the JSON's `phase` and optional fields (`last`:
//!   a [`LastOutcome`] with its `job_id`, `wfx_state` and optional fields);
//! - `progress <client-id> <job-id> <phase> <percent> <bytes>`: [`Progress`];
//! - `stop <client-id>`: a clean stop (retained `offline`);
//! - `sleep <ms>`: waits (for a scripted demo at a human pace).
//!
//! A client-id's publisher connects on its first command. Each command is answered with `ok` or
//! `error: ...` on standard output (queued, not yet delivered: the reader checks delivery). At
//! the end of input, every publisher stops cleanly.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use cip_update_agent::mqtt::{
    BrokerUrl, Inventory, LastOutcome, MqttConfig, Phase, Progress, Publisher, State, TopicPrefix,
    UpdatePath,
};
use serde_json::Value;
use tokio::runtime::Runtime;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, prefix] = args.as_slice() else {
        eprintln!("usage: kiosk-feed <url> <prefix>  (commands on standard input)");
        return ExitCode::from(2);
    };
    let mut cfg = match (BrokerUrl::parse(url), TopicPrefix::parse(prefix)) {
        (Ok(u), Ok(p)) => {
            let mut c = MqttConfig::new(u);
            c.topic_prefix = p;
            c
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Scripted progress comes faster than a real download's: let each step show.
    cfg.progress_interval = Duration::from_millis(50);
    // A worker thread runs the publishers' tasks while this thread reads standard input.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut publishers: BTreeMap<String, Publisher> = BTreeMap::new();
    let mut out = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match command(&rt, &cfg, &mut publishers, line.trim()) {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    for p in publishers.values() {
        rt.block_on(p.shutdown());
    }
    ExitCode::SUCCESS
}

fn command(
    rt: &Runtime,
    cfg: &MqttConfig,
    publishers: &mut BTreeMap<String, Publisher>,
    line: &str,
) -> Result<(), String> {
    let mut words = line.splitn(3, ' ');
    let (verb, id, rest) = (
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
    );
    if verb == "sleep" {
        let ms: u64 = id.parse().map_err(|_| "sleep <ms>")?;
        std::thread::sleep(Duration::from_millis(ms));
        return Ok(());
    }
    if id.is_empty() {
        return Err(format!("missing client-id in `{line}`"));
    }
    if verb == "stop" {
        return match publishers.remove(id) {
            Some(p) => {
                rt.block_on(p.shutdown());
                Ok(())
            }
            None => Err(format!("{id} has no publisher")),
        };
    }
    let publisher = match publishers.get(id) {
        Some(p) => p,
        None => {
            let _guard = rt.enter();
            let p = Publisher::start(cfg, id).map_err(|e| e.to_string())?;
            publishers.entry(id.to_owned()).or_insert(p)
        }
    };
    match verb {
        "inventory" => publisher.inventory(inventory(&json(rest)?)?),
        "state" => publisher.state(state(&json(rest)?)?),
        "progress" => {
            let f: Vec<&str> = rest.split(' ').collect();
            let [job, phase, percent, bytes] = f.as_slice() else {
                return Err("progress <client-id> <job-id> <phase> <percent> <bytes>".into());
            };
            let percent = percent.parse().map_err(|_| "bad percent")?;
            let bytes = bytes.parse().map_err(|_| "bad bytes")?;
            publisher.progress(Progress::new(*job, parse_phase(phase)?, percent, bytes));
        }
        _ => return Err(format!("unknown command `{verb}`")),
    }
    Ok(())
}

fn json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("bad JSON: {e}"))
}

fn parse_phase(s: &str) -> Result<Phase, String> {
    Ok(match s {
        "downloading" => Phase::Downloading,
        "installing" => Phase::Installing,
        "rebooting" => Phase::Rebooting,
        "testing" => Phase::Testing,
        "idle" => Phase::Idle,
        _ => return Err(format!("unknown phase `{s}`")),
    })
}

fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn state(v: &Value) -> Result<State, String> {
    let phase = v.get("phase").and_then(Value::as_str).ok_or("no phase")?;
    let mut s = State::new(parse_phase(phase)?);
    s.job_id = string(v, "job_id");
    s.workflow = string(v, "workflow");
    s.wfx_state = string(v, "wfx_state");
    s.progress = v
        .get("progress")
        .and_then(Value::as_u64)
        .map(|p| p.min(100) as u8);
    s.path = match v.get("path").and_then(Value::as_str) {
        Some("delta") => Some(UpdatePath::Delta),
        Some("full") => Some(UpdatePath::Full),
        Some(p) => return Err(format!("unknown path `{p}`")),
        None => None,
    };
    s.bytes = v.get("bytes").and_then(Value::as_u64);
    s.running_version = string(v, "running_version");
    s.target_version = string(v, "target_version");
    s.boot_slot = string(v, "boot_slot");
    s.trial = v.get("trial").and_then(Value::as_bool);
    s.last_error = string(v, "last_error");
    s.last = match v.get("last") {
        Some(l) if !l.is_null() => Some(LastOutcome {
            job_id: string(l, "job_id").ok_or("last without job_id")?,
            wfx_state: string(l, "wfx_state").ok_or("last without wfx_state")?,
            version: string(l, "version"),
            message: string(l, "message").unwrap_or_default(),
            time: string(l, "time"),
            rolled_back: l.get("rolled_back").and_then(Value::as_bool) == Some(true),
        }),
        _ => None,
    };
    Ok(s)
}

fn inventory(v: &Value) -> Result<Inventory, String> {
    let mut i = Inventory::new();
    i.hardware_revision = string(v, "hardware_revision");
    i.swupdate_wire = string(v, "swupdate_wire");
    i.boot_backend = string(v, "boot_backend");
    if let Some(os) = v.get("os_release").and_then(Value::as_object) {
        for (k, val) in os {
            let val = val.as_str().ok_or("os_release values are strings")?;
            i.os_release.insert(k.clone(), val.to_owned());
        }
    }
    Ok(i)
}

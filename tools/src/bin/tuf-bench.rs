//! TUF client bench: refresh plus lookup (and download) of one target on an RS-TUF-shaped
//! repository of 10,000 targets in 256 succinct hash bins, served by nginx, by
//! `cip-update-agent tuf-client` beside python-tuf's ngclient (the reference client, same CLI),
//! in one run, interleaved.
//!
//! Two cases per client: `cold`, a `download` from a metadata directory that holds only the
//! trusted root (the whole refresh: root, timestamp, snapshot, targets, one bin, the target);
//! `warm`, the same `download` again (nothing new: the next root and the timestamp are asked,
//! the target is already there). Wall time is measured around the process, peak RSS comes from
//! GNU time (`%M`); the
//! median of `BENCH_RUNS` (default 5) runs is reported, with the ratios agent / ngclient.
//! `BENCH_TARGETS` (default 10000) and `BENCH_BITS` (default 8) change the repository.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, ensure};
use cip_update_agent_tests::daemons::agent::agent_bin;
use cip_update_agent_tests::daemons::gnu_time::{self, Sample};
use cip_update_agent_tests::daemons::nginx::Nginx;
use cip_update_agent_tests::fixtures::tuf::{TufRepo, python, script};
use serde_json::json;

const TARGET: &str = "qemu-amd64/cip-core-1.5.swu";

/// A client's command line up to `--metadata-dir DIR`.
type Client<'a> = (&'a str, Box<dyn Fn(&Path) -> Command + 'a>);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let runs: usize = env_or("BENCH_RUNS", 5)?;
    let count: u64 = env_or("BENCH_TARGETS", 10_000)?;
    let bits: u8 = env_or("BENCH_BITS", 8)?;
    ensure!(runs > 0, "BENCH_RUNS must be at least 1");

    let start = Instant::now();
    let repo = TufRepo::new(json!({"bins_bits": bits}))?;
    let image: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    repo.ops(json!([
        {"op": "add_fake_targets", "count": count - 1, "prefix": "fleet/", "length": 300_000_000},
        {"op": "add_target", "path": TARGET, "data_hex": hex::encode(&image),
         "custom": {"version": "1.5", "board": "qemu-amd64", "hardware": ["cip-core-1.0"]}},
        {"op": "publish"},
    ]))?;
    println!(
        "repository: {count} targets in {} bins, built by python-tuf in {:.1} s",
        1u32 << bits,
        start.elapsed().as_secs_f64()
    );
    let v = repo.versions()?;
    let bin = repo.op(json!({"op": "bin_for", "path": TARGET}))?["role"]
        .as_str()
        .context("bin")?
        .to_string();
    for role in ["snapshot", "targets", bin.as_str()] {
        let len = fs::metadata(repo.current(role)?)?.len();
        println!("  {role}.json (v{}): {len} bytes", v[role]);
    }
    let nginx = Nginx::start(&repo.www())?;
    let agent = agent_bin()?;
    let python = python()?;
    println!("agent binary: {}", agent.display());
    println!(
        "reference: python-tuf ngclient ({}), same CLI",
        python.display()
    );
    println!("{runs} run(s) each, interleaved, median reported\n");

    let work = tempfile::Builder::new().prefix("tuf-bench-").tempdir()?;
    let clients: [Client; 2] = [
        (
            "cip-update-agent tuf-client",
            Box::new(|dir: &Path| {
                let mut c = Command::new(&agent);
                c.arg("tuf-client").arg("--metadata-dir").arg(dir);
                c
            }),
        ),
        (
            "python-tuf ngclient",
            Box::new(|dir: &Path| {
                let mut c = Command::new(&python);
                c.arg(script("ngclient.py")).arg("--metadata-dir").arg(dir);
                c
            }),
        ),
    ];
    // samples[client][case]
    let mut samples = vec![vec![Vec::new(), Vec::new()]; clients.len()];
    for run in 0..runs {
        for (i, (name, base)) in clients.iter().enumerate() {
            let dir = work.path().join(format!("{i}-{run}"));
            let meta = dir.join("metadata");
            let targets = dir.join("targets");
            fs::create_dir_all(&targets)?;
            let mut init = base(&meta);
            init.arg("init").arg(repo.initial_root());
            let st = init.status().context("init")?;
            ensure!(st.success(), "{name}: init failed");
            for case in samples[i].iter_mut() {
                let mut c = base(&meta);
                c.arg("--metadata-url")
                    .arg(nginx.url("metadata"))
                    .arg("--target-name")
                    .arg(TARGET)
                    .arg("--target-base-url")
                    .arg(nginx.url("targets"))
                    .arg("--target-dir")
                    .arg(&targets)
                    .arg("download");
                case.push(timed(&dir, c).with_context(|| name.to_string())?);
                let got = fs::read(targets.join(TARGET.replace('/', "%2F")))?;
                ensure!(got == image, "{name}: the target downloaded differs");
            }
            fs::remove_dir_all(&dir)?;
        }
    }

    println!(
        "{:<30} {:<6} {:>9} {:>13}",
        "client", "case", "wall s", "peak RSS MiB"
    );
    let mut medians = Vec::new();
    for (i, (name, _)) in clients.iter().enumerate() {
        let mut row = Vec::new();
        for (case, label) in ["cold", "warm"].iter().enumerate() {
            let s = median(&samples[i][case]);
            println!(
                "{:<30} {:<6} {:>9.4} {:>13.1}",
                name,
                label,
                s.secs,
                s.rss_kib as f64 / 1024.0
            );
            row.push(s);
        }
        medians.push(row);
    }
    println!();
    for (case, label) in ["cold", "warm"].iter().enumerate() {
        let (a, r) = (medians[0][case], medians[1][case]);
        println!(
            "{label}: agent / ngclient: time {:.3}x, peak RSS {:.3}x",
            a.secs / r.secs,
            a.rss_kib as f64 / r.rss_kib as f64
        );
    }
    // What of ngclient's figures is CPython starting and importing python-tuf (and cryptography).
    let mut imports = Vec::new();
    for _ in 0..runs {
        let mut c = Command::new(&python);
        c.args([
            "-c",
            "import tuf.ngclient, cryptography.hazmat.primitives.asymmetric.ed25519",
        ]);
        imports.push(timed(work.path(), c)?);
    }
    let s = median(&imports);
    println!(
        "(of ngclient's figures, starting CPython and importing python-tuf: {:.4} s, {:.1} MiB)",
        s.secs,
        s.rss_kib as f64 / 1024.0
    );
    Ok(())
}

/// Runs `inner` under GNU time; fails if it fails.
fn timed(dir: &Path, inner: Command) -> anyhow::Result<Sample> {
    gnu_time::run(&inner, &dir.join("time.out"))
}

/// The median time and the median peak RSS.
fn median(samples: &[Sample]) -> Sample {
    let mut secs: Vec<f64> = samples.iter().map(|s| s.secs).collect();
    secs.sort_by(f64::total_cmp);
    let mut rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
    rss.sort_unstable();
    Sample {
        secs: secs[secs.len() / 2],
        rss_kib: rss[rss.len() / 2],
    }
}

//! Install throughput and memory: the agent beside `curl URL | swupdate-client -` and SWUpdate's
//! own downloader (`swupdate -d "-u URL"`), on the same image from the same nginx, in one run.
//!
//! `BENCH_MIB` sets the image size (default 512), `BENCH_RUNS` the repetitions (default 3, the
//! median is reported). Wall time is measured around the process, peak RSS comes from GNU time
//! (`%M`, see `cip_update_agent_tests::daemons::gnu_time`): for a pipeline it is the largest process of it. The image is written to a file target with
//! `installed-directly`, so every method streams and nothing but the transport differs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};
use cip_update_agent_tests::daemons::agent::agent_bin;
use cip_update_agent_tests::daemons::gnu_time::{self, Sample};
use cip_update_agent_tests::daemons::nginx::Nginx;
use cip_update_agent_tests::daemons::swupdate::{DaemonOptions, SwupdateDaemon};
use cip_update_agent_tests::fixtures::pki::TestCert;
use cip_update_agent_tests::fixtures::swu::{
    Image, SwuBuilder, ensure_file_sha256, sha256_file, write_random_file,
};

/// How one method's command line is made.
type Method<'a> = dyn Fn(&Bench, &Case) -> Command + 'a;

struct Bench {
    dir: PathBuf,
    cert: TestCert,
    nginx: Nginx,
    daemon: SwupdateDaemon,
    runs: usize,
}

struct Case {
    swu_url: String,
    swu_len: u64,
    target: PathBuf,
    sha256: String,
}

fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::var("BENCH_MIB")
        .ok()
        .map(|v| v.parse().context("BENCH_MIB"))
        .transpose()?
        .unwrap_or(512);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .map(|v| v.parse().context("BENCH_RUNS"))
        .transpose()?
        .unwrap_or(3);
    ensure!(runs > 0, "BENCH_RUNS must be at least 1");
    let tmp = tempfile::Builder::new()
        .prefix("cip-bench.")
        .tempdir_in(bench_dir())?;
    let dir = tmp.path().to_owned();
    let www = dir.join("www");
    fs::create_dir(&www)?;
    let cert = TestCert::generate(&dir)?;
    let bench = Bench {
        nginx: Nginx::start(&www)?,
        daemon: SwupdateDaemon::start(&DaemonOptions::new(&cert))?,
        cert,
        dir,
        runs,
    };
    let agent = agent_bin()?;
    println!("agent binary: {}", agent.display());
    println!("image: {mib} MiB, {runs} run(s) each, median reported\n");

    let case = bench.case("image", mib)?;
    let names = [
        "cip-update-agent install URL",
        "curl URL | swupdate-client -",
        "swupdate -d \"-u URL\"",
    ];
    let samples = bench.measure(
        &case,
        &[
            &|b, c| b.agent(&agent, c),
            &|b, c| b.curl_client(c),
            &|b, c| b.downloader(c),
        ],
    )?;
    let rows: Vec<(&str, Sample)> = names.into_iter().zip(samples).collect();
    let fastest = rows.iter().map(|r| r.1.secs).fold(f64::INFINITY, f64::min);
    println!(
        "{:<32} {:>9} {:>10} {:>9} {:>13}",
        "method", "wall s", "MiB/s", "vs best", "peak RSS MiB"
    );
    for (name, s) in &rows {
        println!(
            "{:<32} {:>9.2} {:>10.1} {:>8.3}x {:>13.1}",
            name,
            s.secs,
            case.swu_len as f64 / (1 << 20) as f64 / s.secs,
            s.secs / fastest,
            s.rss_kib as f64 / 1024.0
        );
    }
    let agent_s = rows[0].1;
    println!(
        "\nagent throughput is {:.1}% of the fastest (target: within 5%)",
        fastest / agent_s.secs * 100.0
    );

    // Flat memory: the same install with an image twice the size.
    fs::remove_file(www.join("image.swu"))?;
    fs::remove_file(&case.target)?;
    let double = bench.case("double", mib * 2)?;
    let d = bench.measure(&double, &[&|b, c| b.agent(&agent, c)])?[0];
    println!(
        "agent peak RSS: {:.1} MiB at {} MiB, {:.1} MiB at {} MiB (ratio {:.3}; target: under 16 MiB and flat)",
        agent_s.rss_kib as f64 / 1024.0,
        mib,
        d.rss_kib as f64 / 1024.0,
        mib * 2,
        d.rss_kib as f64 / agent_s.rss_kib as f64
    );
    Ok(())
}

/// Somewhere with room for two copies of a 1 GiB image: not a small tmpfs.
fn bench_dir() -> PathBuf {
    std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

impl Bench {
    /// A signed .swu of `mib` MiB of random data, served by nginx, with its target file.
    fn case(&self, name: &str, mib: u64) -> anyhow::Result<Case> {
        let payload = self.dir.join(format!("{name}.img"));
        write_random_file(&payload, mib << 20, mib)?;
        let target = self.dir.join(format!("{name}.target"));
        let swu_path = self.nginx.docroot().join("image.swu");
        let swu = SwuBuilder::new()
            .image(
                Image::raw("rootfs.img", payload.as_path(), &target)
                    .attribute("installed-directly = true;"),
            )
            .build(&self.cert, &swu_path)?;
        let sha256 = sha256_file(&payload)?;
        fs::remove_file(&payload)?;
        Ok(Case {
            swu_url: self.nginx.url("image.swu"),
            swu_len: swu.len,
            target,
            sha256,
        })
    }

    /// Runs every method `runs` times, interleaved (A B C A B C ...) so that the page cache and
    /// the writeback of earlier runs weigh on all alike; each run starts after a `sync`.
    fn measure(&self, case: &Case, methods: &[&Method]) -> anyhow::Result<Vec<Sample>> {
        let mut samples = vec![Vec::new(); methods.len()];
        for _ in 0..self.runs {
            for (m, cmd) in methods.iter().enumerate() {
                samples[m].push(self.run_once(case, cmd(self, case))?);
            }
        }
        Ok(samples
            .into_iter()
            .map(|runs| {
                let secs: Vec<String> = runs.iter().map(|s| format!("{:.2}", s.secs)).collect();
                eprintln!("  runs (s): {}", secs.join(" "));
                median(runs)
            })
            .collect())
    }

    fn run_once(&self, case: &Case, inner: Command) -> anyhow::Result<Sample> {
        fs::write(&case.target, b"")?; // raw does not create its device
        let synced = Command::new("sync").status().context("sync")?;
        ensure!(synced.success(), "sync failed");
        let sample = gnu_time::run(&inner, &self.dir.join("time.out"))?;
        ensure_file_sha256(&case.target, &case.sha256)
            .with_context(|| format!("{inner:?} did not install the image"))?;
        Ok(sample)
    }

    fn agent(&self, agent: &Path, case: &Case) -> Command {
        let mut c = Command::new(agent);
        c.arg("install")
            .arg(&case.swu_url)
            .arg("--control-socket")
            .arg(self.daemon.control_socket())
            .arg("--progress-socket")
            .arg(self.daemon.progress_socket());
        c
    }

    fn curl_client(&self, case: &Case) -> Command {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg("set -o pipefail; curl -sSf \"$1\" | swupdate-client -q -")
            .arg("bash")
            .arg(&case.swu_url)
            .env("TMPDIR", self.daemon.tmpdir());
        c
    }

    /// SWUpdate's own downloader in a one-shot instance with its own sockets.
    fn downloader(&self, case: &Case) -> Command {
        let tmp = self.dir.join("dl-tmp");
        let _ = fs::create_dir_all(&tmp);
        let mut c = Command::new("swupdate");
        c.arg("-k")
            .arg(&self.cert.cert)
            .args(["-H", "board:1.0", "-d"])
            .arg(format!("-u {}", case.swu_url))
            .env("TMPDIR", tmp);
        c
    }
}

/// The median time; the peak RSS over all runs.
fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let mut s = samples[samples.len() / 2];
    s.rss_kib = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    s
}

//! Wall time and peak memory of a command, for the bench commands (`bench`, `tuf-bench`):
//! the command runs under GNU time (package `time`), which reports the peak RSS.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

/// One run's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Wall time, measured around the run (GNU time's own has 10 ms steps: too coarse).
    pub secs: f64,
    /// Peak resident set size, from GNU time.
    pub rss_kib: u64,
}

/// Runs `inner` (its program, arguments and environment) under GNU time, its output discarded
/// and GNU time's report written to `report`; fails, with its stderr, if it fails.
pub fn run(inner: &Command, report: &Path) -> anyhow::Result<Sample> {
    let mut c = Command::new("/usr/bin/time");
    c.arg("-o")
        .arg(report)
        .args(["-f", "%e %M"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .envs(
            inner
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let o = c.output().context("running /usr/bin/time (package time)")?;
    let secs = start.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!("{inner:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let rss_kib = peak_rss(&fs::read_to_string(report)?)?;
    Ok(Sample { secs, rss_kib })
}

/// The peak RSS (KiB) from GNU time's `%e %M` report.
fn peak_rss(report: &str) -> anyhow::Result<u64> {
    // The last line: GNU time may put a "Command exited with non-zero status" line first.
    let line = report.lines().last().context("empty time output")?;
    let rss = line.split_whitespace().nth(1).context("no max RSS")?;
    Ok(rss.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_from_the_last_line() {
        assert_eq!(peak_rss("0.52 12345\n").unwrap(), 12345);
        assert_eq!(
            peak_rss("Command exited with non-zero status 1\n0.01 2048\n").unwrap(),
            2048
        );
        assert!(peak_rss("").is_err());
        assert!(peak_rss("0.01\n").is_err());
    }
}

//! Delta test data: an old and a new image that share most bytes, their zchunk companions made
//! with Debian's `zck -u -h sha256` (what SWUpdate's delta handler needs too), the reference
//! figure of `zck_delta_size`, and what nginx's access log says was sent.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::swu::random_bytes;

/// An image of `len` random bytes, and a new version of it: `changes` regions of 8 KiB spread
/// over it rewritten, and 1000 bytes inserted near the middle (content-defined chunking must
/// find the shifted chunks after it).
pub fn image_pair(len: usize, changes: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let old = random_bytes(len, seed);
    let mut new = old.clone();
    let fresh = random_bytes(8192 * changes.max(1) + 1000, seed ^ 0x5eed);
    for i in 0..changes {
        // Spread evenly, away from the ends.
        let at = (len / (changes + 1)) * (i + 1);
        let end = (at + 8192).min(len);
        new[at..end].copy_from_slice(&fresh[i * 8192..i * 8192 + (end - at)]);
    }
    let mid = len / 2 + 4096;
    let ins = &fresh[fresh.len() - 1000..];
    new.splice(mid..mid, ins.iter().copied());
    (old, new)
}

/// `zck -u -h sha256 -o out input`.
pub fn zck(input: &Path, out: &Path) -> anyhow::Result<()> {
    let st = Command::new("zck")
        .args(["-u", "-h", "sha256", "-o"])
        .arg(out)
        .arg(input)
        .status()
        .context("running zck (Debian package zchunk)")?;
    if !st.success() {
        bail!("zck {} failed: {st}", input.display());
    }
    Ok(())
}

/// `zck_delta_size old new`: (bytes it would download, bytes of the new file).
pub fn zck_delta_size(old: &Path, new: &Path) -> anyhow::Result<(u64, u64)> {
    let out = Command::new("zck_delta_size")
        .arg(old)
        .arg(new)
        .output()
        .context("running zck_delta_size")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "Would download 216547 of 8016194 bytes"
    let line = text
        .lines()
        .find(|l| l.starts_with("Would download"))
        .with_context(|| format!("zck_delta_size said: {text}"))?;
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [a, b] => Ok((a, b)),
        _ => bail!("zck_delta_size said: {line}"),
    }
}

/// Requests in nginx's access log (format `ranges` of [`crate::nginx`]) for paths ending with
/// `path`, and the body bytes it sent for them.
pub fn served(access_log: &str, path: &str) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for l in access_log.lines() {
        let Some(req) = l.split('"').nth(1) else {
            continue;
        };
        if !req
            .split_whitespace()
            .nth(1)
            .is_some_and(|p| p.ends_with(path))
        {
            continue;
        }
        n += 1;
        bytes += l
            .split_whitespace()
            .last()
            .and_then(|b| b.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (n, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_image_differs_in_a_few_places() {
        let (old, new) = image_pair(200_000, 3, 7);
        assert_eq!(new.len(), old.len() + 1000);
        let same = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
        assert_eq!(same, 200_000 / 4);
        assert_eq!(&old[old.len() - 5000..], &new[new.len() - 5000..]);
    }

    #[test]
    fn access_log_lines_are_counted_per_path() {
        let log = "127.0.0.1 \"GET /targets/a.zck HTTP/1.1\" range=\"bytes=0-9\" 206 10\n\
                   127.0.0.1 \"GET /targets/a.swu HTTP/1.1\" range=\"-\" 200 999\n\
                   127.0.0.1 \"GET /targets/a.zck HTTP/1.1\" range=\"bytes=5-9,20-29\" 206 321\n";
        assert_eq!(served(log, "a.zck"), (2, 331));
        assert_eq!(served(log, "a.swu"), (1, 999));
    }
}

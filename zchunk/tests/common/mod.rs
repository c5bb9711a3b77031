//! Shared helpers of the interop tests: generated inputs and the Debian
//! zchunk tools (`zck`, `unzck`, `zck_read_header`), run on temporary files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Deterministic pseudo-random bytes (xorshift64).
pub fn random(n: usize, mut seed: u64) -> Vec<u8> {
    seed |= 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// An image-like input of about `n` bytes: random stretches, a repeated
/// region, runs of zeros and text (so that chunks compress differently and
/// some hit the 128 KiB maximum).
pub fn image(n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let block = random(200_000, seed ^ 0x55);
    let mut i = 0u64;
    while out.len() < n {
        match i % 4 {
            0 => out.extend_from_slice(&random(400_000, seed + i)),
            1 => out.extend_from_slice(&block),
            2 => out.extend(std::iter::repeat_n(0u8, 150_000)),
            _ => {
                for k in 0..4000 {
                    out.extend_from_slice(
                        format!("line {k} of section {i}: some text\n").as_bytes(),
                    );
                }
            }
        }
        i += 1;
    }
    out.truncate(n);
    out
}

/// Runs a tool and returns its stdout, failing with its stderr.
pub fn run(dir: &Path, tool: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} (Debian package zchunk, see scripts/deps): {e}")
        });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Writes `input` to `dir/name` and makes `dir/name.zck` with `zck args`.
pub fn zck(dir: &Path, name: &str, input: &[u8], args: &[&str]) -> PathBuf {
    let src = dir.join(name);
    std::fs::write(&src, input).unwrap();
    let out = format!("{name}.zck");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-o", &out, name]);
    run(dir, "zck", &all);
    dir.join(out)
}

/// One row of `zck_read_header -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub index: usize,
    pub checksum: String,
    pub uncomp_checksum: Option<String>,
    pub start: u64,
    pub comp_size: u64,
    pub size: u64,
}

/// What `zck_read_header -c` prints.
#[derive(Debug, Default)]
pub struct ReadHeader {
    pub fields: Vec<(String, String)>,
    pub rows: Vec<Row>,
}

impl ReadHeader {
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("zck_read_header printed no {name:?}: {:?}", self.fields))
    }
}

pub fn read_header(path: &Path) -> ReadHeader {
    let text = String::from_utf8(run(
        path.parent().unwrap(),
        "zck_read_header",
        &["-c", path.to_str().unwrap()],
    ))
    .unwrap();
    let mut rh = ReadHeader::default();
    let mut in_table = false;
    for line in text.lines() {
        if line.trim_start().starts_with("Chunk Checksum") {
            in_table = true;
            continue;
        }
        if in_table {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.is_empty() {
                continue;
            }
            let n = cols.len();
            rh.rows.push(Row {
                index: cols[0].parse().unwrap(),
                checksum: cols[1].to_string(),
                uncomp_checksum: (n == 6).then(|| cols[2].to_string()),
                start: cols[n - 3].parse().unwrap(),
                comp_size: cols[n - 2].parse().unwrap(),
                size: cols[n - 1].parse().unwrap(),
            });
        } else if let Some((k, v)) = line.split_once(':') {
            rh.fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    rh
}

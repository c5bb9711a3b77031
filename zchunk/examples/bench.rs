//! Throughput of this crate against Debian's zchunk tools, in one run:
//! chunking (here: buzhash + SHA-256 per chunk; baseline: `zck -u -h sha256
//! --compression-format=none`, which chunks, hashes and writes without
//! compressing) and expansion (here: `zchunk::expand` of a default zck file;
//! baseline: `unzck -c`). Prints MB/s and the ratio to the baseline.
//!
//! `cargo run --release -p cip-zchunk --example bench [MB]` (default 64).

use std::process::{Command, Stdio};
use std::time::Instant;

use zchunk::{HashType, Header};

fn image(n: usize) -> Vec<u8> {
    // Random stretches, a repeated block, zeros and text, as in the tests.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |len: usize| -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v.extend_from_slice(&seed.to_le_bytes());
        }
        v.truncate(len);
        v
    };
    let block = random(200_000);
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n {
        match i % 4 {
            0 => out.extend_from_slice(&random(400_000)),
            1 => out.extend_from_slice(&block),
            2 => out.extend(std::iter::repeat_n(0u8, 150_000)),
            _ => (0..4000)
                .for_each(|k| out.extend_from_slice(format!("line {k} of {i}\n").as_bytes())),
        }
        i += 1;
    }
    out.truncate(n);
    out
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

fn tool(args: &[&str], dir: &std::path::Path) -> f64 {
    let (status, secs) = timed(|| {
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .expect("running a zchunk tool (Debian package zchunk)")
    });
    assert!(status.success(), "{args:?} failed");
    secs
}

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = image(mb << 20);
    std::fs::write(dir.path().join("in"), &input).expect("writing input");
    let mbs = |secs: f64| input.len() as f64 / secs / 1e6;

    // Chunking.
    let zck_secs = tool(
        &[
            "zck",
            "-u",
            "-h",
            "sha256",
            "--compression-format=none",
            "-o",
            "plain.zck",
            "in",
        ],
        dir.path(),
    );
    let (ours, our_secs) = timed(|| {
        zchunk::chunks(&input[..], HashType::Sha256)
            .map(|c| c.expect("reading from memory"))
            .collect::<Vec<_>>()
    });
    let header = Header::parse(&std::fs::read(dir.path().join("plain.zck")).expect("zck output"))
        .expect("zck's header");
    let same = ours.len() == header.data_chunks().len()
        && ours
            .iter()
            .zip(header.data_chunks())
            .all(|(a, b)| a.len == b.len && Some(a.digest) == b.uncomp_digest);
    println!(
        "chunk  {mb} MiB, {} chunks (same as zck: {same}): ours {:.0} MB/s, zck (no compression) {:.0} MB/s, ratio {:.2}",
        ours.len(),
        mbs(our_secs),
        mbs(zck_secs),
        zck_secs / our_secs
    );

    // Expansion.
    tool(&["zck", "-o", "in.zck", "in"], dir.path());
    let zck_file = std::fs::read(dir.path().join("in.zck")).expect("zck output");
    let unzck_secs = tool(&["unzck", "-c", "in.zck"], dir.path());
    let (n, our_secs) =
        timed(|| zchunk::expand(&zck_file[..], &mut std::io::sink()).expect("expanding"));
    assert_eq!(n, input.len() as u64);
    println!(
        "expand {mb} MiB from {} bytes: ours {:.0} MB/s, unzck {:.0} MB/s, ratio {:.2}",
        zck_file.len(),
        mbs(our_secs),
        mbs(unzck_secs),
        unzck_secs / our_secs
    );
}

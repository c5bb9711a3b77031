//! Interop with Debian's zchunk 1.2.3 tools: files made by `zck` are read,
//! verified and expanded byte-identical to `unzck`; the index equals what
//! `zck_read_header -c` prints; the chunker finds `zck`'s boundaries.

mod common;

use std::io::Read;

use common::{image, read_header, run, zck};
use zchunk::{Compression, HashType, Header, Reader};

/// Makes a zck file of `input` with `args` and checks everything against the tools.
fn check_variant(args: &[&str], input: &[u8], dict: Option<&[u8]>) -> Header {
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<&str> = args.to_vec();
    if let Some(d) = dict {
        std::fs::write(dir.path().join("dict"), d).unwrap();
        all.extend(["-D", "dict"]);
    }
    let path = zck(dir.path(), "image", input, &all);
    let bytes = std::fs::read(&path).unwrap();

    // Expansion: identical to unzck's, and to the input.
    let expected = run(dir.path(), "unzck", &["-c", path.to_str().unwrap()]);
    assert_eq!(expected.len(), input.len(), "unzck output length");
    let mut out = Vec::new();
    let written = zchunk::expand(&bytes[..], &mut out).unwrap();
    assert_eq!(written, input.len() as u64);
    assert!(
        out == expected,
        "expanded bytes differ from unzck's ({args:?})"
    );

    // The same streamed from the file through Read, with small, odd-sized reads.
    let file = std::fs::File::open(&path).unwrap();
    let mut r = Reader::new(std::io::BufReader::with_capacity(1000, file)).unwrap();
    let mut out2 = Vec::new();
    let mut buf = [0u8; 3333];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out2.extend_from_slice(&buf[..n]);
    }
    assert!(out2 == expected, "Read output differs ({args:?})");

    // The index: every row of zck_read_header -c.
    let header = Header::parse(&bytes).unwrap();
    let rh = read_header(&path);
    assert_eq!(rh.field("Header size"), header.len().to_string());
    assert_eq!(rh.field("Header checksum"), header.header_digest().to_hex());
    assert_eq!(rh.field("Data size"), header.data_len().to_string());
    assert_eq!(rh.field("Data checksum"), header.data_digest().to_hex());
    assert_eq!(rh.field("Chunk count"), header.chunks().len().to_string());
    assert_eq!(
        rh.field("Chunk checksum type"),
        header.chunk_hash_type().name()
    );
    assert_eq!(rh.field("Overall checksum type"), header.hash_type().name());
    assert_eq!(header.file_len(), bytes.len() as u64);
    assert_eq!(header.expanded_len(), input.len() as u64);
    assert_eq!(rh.rows.len(), header.chunks().len());
    for (row, c) in rh.rows.iter().zip(header.chunks()) {
        assert_eq!(row.index, c.index);
        assert_eq!(row.checksum, c.digest.to_hex(), "chunk {}", c.index);
        assert_eq!(
            row.uncomp_checksum,
            c.uncomp_digest.map(|d| d.to_hex()),
            "chunk {}",
            c.index
        );
        assert_eq!(row.start, c.offset, "chunk {}", c.index);
        assert_eq!(row.comp_size, c.comp_len, "chunk {}", c.index);
        assert_eq!(row.size, c.len, "chunk {}", c.index);
    }
    assert!(header.chunks().len() > 20, "a few MB make many chunks");
    header
}

#[test]
fn default_file() {
    let h = check_variant(&[], &image(3_000_000, 1), None);
    assert_eq!(h.chunk_hash_type(), HashType::Sha512_128);
    assert_eq!(h.compression(), Compression::Zstd);
    assert!(!h.has_uncompressed_checksums());
    assert!(h.dict().is_none());
}

#[test]
fn uncompressed_checksums() {
    let h = check_variant(&["-u"], &image(3_000_000, 2), None);
    assert!(h.has_uncompressed_checksums());
    // zck -u asks for at least SHA-256.
    assert_eq!(h.chunk_hash_type(), HashType::Sha256);
}

#[test]
fn sha256_chunks() {
    let h = check_variant(&["-h", "sha256"], &image(3_000_000, 3), None);
    assert_eq!(h.chunk_hash_type(), HashType::Sha256);
}

#[test]
fn sha512_chunks() {
    let h = check_variant(&["-h", "sha512"], &image(3_000_000, 4), None);
    assert_eq!(h.chunk_hash_type(), HashType::Sha512);
}

#[test]
fn sha512_chunks_with_uncompressed_checksums() {
    let h = check_variant(&["-u", "-h", "sha512"], &image(2_000_000, 5), None);
    assert_eq!(h.chunk_hash_type(), HashType::Sha512);
    assert!(h.has_uncompressed_checksums());
}

#[test]
fn with_dictionary() {
    let input = image(3_000_000, 6);
    // A raw-content dictionary (zstd takes any bytes as one): text like the input's.
    let dict: Vec<u8> = input
        .windows(40)
        .step_by(997)
        .take(2000)
        .flatten()
        .copied()
        .collect();
    let h = check_variant(&["-u", "-h", "sha256"], &input, Some(&dict));
    let d = h.dict().expect("dictionary entry");
    assert_eq!(d.len, dict.len() as u64);
}

#[test]
fn without_compression() {
    let h = check_variant(&["--compression-format=none"], &image(2_000_000, 7), None);
    assert_eq!(h.compression(), Compression::None);
}

/// Chunks `input` here and compares with the data chunks of `zck -u -h sha256`.
fn check_boundaries(input: &[u8]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let path = zck(dir.path(), "seed", input, &["-u", "-h", "sha256"]);
    let header = Header::parse(&std::fs::read(&path).unwrap()).unwrap();
    let ours: Vec<(u64, u64, String)> = zchunk::chunks(input, HashType::Sha256)
        .map(|c| {
            let c = c.unwrap();
            (c.offset, c.len, c.digest.to_hex())
        })
        .collect();
    let theirs: Vec<(u64, u64, String)> = header
        .data_chunks()
        .iter()
        .map(|c| (c.uncomp_offset, c.len, c.uncomp_digest.unwrap().to_hex()))
        .collect();
    if let Some(i) = (0..ours.len().min(theirs.len())).find(|&i| ours[i] != theirs[i]) {
        panic!(
            "first different chunk: #{i}: ours {:?}, zck's {:?}",
            ours[i], theirs[i]
        );
    }
    assert_eq!(ours.len(), theirs.len());
    ours.len()
}

#[test]
fn chunker_finds_zcks_boundaries() {
    // Random, repeated, zero and text regions: content-defined cuts, refused
    // cuts under 8 KiB and forced cuts at 128 KiB all occur.
    let input = image(4_000_000, 9);
    let n = check_boundaries(&input);
    assert!(n > 40, "{n} chunks");
    let sizes: Vec<u64> = zchunk::chunks(&input[..], HashType::Sha256)
        .map(|c| c.unwrap().len)
        .collect();
    assert!(
        sizes.contains(&zchunk::chunker::MAX_CHUNK),
        "some chunk hits the maximum"
    );
}

#[test]
fn chunker_finds_zcks_boundaries_in_small_and_odd_inputs() {
    for (len, seed) in [(1, 1), (47, 2), (48, 3), (8191, 4), (8193, 5), (300_001, 6)] {
        check_boundaries(&common::random(len, seed));
    }
    // Only high bytes (a table index from a signed char would differ here).
    let high: Vec<u8> = common::random(500_000, 8)
        .iter()
        .map(|b| b | 0x80)
        .collect();
    check_boundaries(&high);
}

#[test]
fn seed_of_the_old_version_provides_the_unchanged_chunks() {
    // Old and new differ in three 8 KiB regions: zck_delta_size's view is
    // that only the chunks around them are fetched; ours must agree.
    let old = image(3_000_000, 41);
    let mut new = old.clone();
    for at in [100_000usize, 1_500_000, 2_700_000] {
        new[at..at + 8192].copy_from_slice(&common::random(8192, at as u64));
    }
    let dir = tempfile::tempdir().unwrap();
    let old_zck = zck(dir.path(), "old", &old, &["-u", "-h", "sha256"]);
    let new_zck = zck(dir.path(), "new", &new, &["-u", "-h", "sha256"]);
    let header = Header::parse(&std::fs::read(&new_zck).unwrap()).unwrap();
    let seed = zchunk::chunks(&old[..], header.chunk_hash_type()).map(|c| c.unwrap());
    let matches = zchunk::match_seed(&header, seed).unwrap();
    let missing = zchunk::missing(&header, &matches);
    let fetch: u64 = missing.iter().map(|w| w.len).sum();
    // zck_delta_size prints "Would download X of Y bytes" for the same pair,
    // X counting the new header too.
    let text = String::from_utf8(run(
        dir.path(),
        "zck_delta_size",
        &[old_zck.to_str().unwrap(), new_zck.to_str().unwrap()],
    ))
    .unwrap();
    let would: u64 = text
        .split_whitespace()
        .skip_while(|w| *w != "download")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("zck_delta_size said {text:?}"));
    assert_eq!(
        header.len() + fetch,
        would,
        "header + chunks to fetch vs zck_delta_size ({text})"
    );
    assert!(
        missing.len() >= 3 && missing.len() <= 9,
        "{} chunks missing",
        missing.len()
    );
    // Rebuild: seed chunks from the old bytes, the others from the new file.
    let file = std::fs::read(&new_zck).unwrap();
    let mut dec = zchunk::ChunkDecoder::new(&header, None).unwrap();
    let mut rebuilt = Vec::new();
    for c in header.data_chunks() {
        match matches.found.get(&c.index) {
            Some(s) => {
                rebuilt.extend_from_slice(&old[s.offset as usize..(s.offset + s.len) as usize])
            }
            None => rebuilt.extend(
                dec.expand(c, &file[c.offset as usize..c.end() as usize])
                    .unwrap(),
            ),
        }
    }
    assert!(rebuilt == new);
    // A file without -u cannot be matched, and says why.
    let plain = zck(dir.path(), "plain", &new, &[]);
    let h = Header::parse(&std::fs::read(plain).unwrap()).unwrap();
    let e = zchunk::match_seed(&h, std::iter::empty()).unwrap_err();
    assert!(e.to_string().contains("zck -u"), "{e}");
}

#[test]
fn with_trained_dictionary() {
    // A ZDICT dictionary as `zstd --train` makes them (magic, entropy tables).
    let input = image(3_000_000, 8);
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples");
    std::fs::create_dir(&samples).unwrap();
    let mut names = Vec::new();
    for (i, s) in input.chunks(4096).step_by(7).take(300).enumerate() {
        let name = format!("samples/{i:04}");
        std::fs::write(dir.path().join(&name), s).unwrap();
        names.push(name);
    }
    let mut args: Vec<&str> = vec!["-q", "--train"];
    args.extend(names.iter().map(String::as_str));
    args.extend(["-o", "trained.dict"]);
    run(dir.path(), "zstd", &args);
    let dict = std::fs::read(dir.path().join("trained.dict")).unwrap();
    assert_eq!(dict[..4], [0x37, 0xa4, 0x30, 0xec], "a ZDICT dictionary");
    let h = check_variant(&[], &input, Some(&dict));
    assert_eq!(h.dict().expect("dictionary entry").len, dict.len() as u64);
}

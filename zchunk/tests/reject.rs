//! Damaged zchunk files are rejected with the reason: a corrupted header, a
//! corrupted chunk, a truncated file; and synthetic headers cover what `zck`
//! cannot make here (offsets past 4 GiB, SHA-1 chunks, signatures).

mod common;

use std::io::Read;

use common::{image, zck};
use zchunk::header::build;
use zchunk::{ChecksumKind, Error, HashType, Header, Reader, compint};

fn sample() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = zck(dir.path(), "image", &image(1_500_000, 21), &["-u"]);
    std::fs::read(path).unwrap()
}

fn expand(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    zchunk::expand(bytes, &mut out)?;
    Ok(out)
}

#[test]
fn corrupted_header_byte_is_a_header_checksum_error() {
    let mut bytes = sample();
    let header = Header::parse(&bytes).unwrap();
    // A byte inside the index (a chunk checksum), after the lead.
    let at = header.lead().lead_len + 100;
    bytes[at] ^= 0x01;
    let e = Header::parse(&bytes).unwrap_err();
    assert!(matches!(e, Error::HeaderChecksum { .. }), "{e:?}");
    assert!(e.to_string().contains("header checksum mismatch"), "{e}");
    let e = expand(&bytes).unwrap_err();
    assert!(matches!(e, Error::HeaderChecksum { .. }), "{e:?}");
}

#[test]
fn corrupted_chunk_byte_is_a_chunk_checksum_error_naming_the_chunk() {
    let mut bytes = sample();
    let header = Header::parse(&bytes).unwrap();
    let victim = &header.data_chunks()[5];
    bytes[(victim.offset + victim.comp_len / 2) as usize] ^= 0x40;
    let mut r = Reader::new(&bytes[..]).unwrap();
    // The chunks before it come out; then the error names chunk 6 (index 0 is the dictionary).
    for _ in 0..5 {
        r.next_chunk().unwrap().unwrap();
    }
    let e = r.next_chunk().unwrap_err();
    match &e {
        Error::ChunkChecksum { index, kind, .. } => {
            assert_eq!(*index, victim.index);
            assert_eq!(*kind, ChecksumKind::Compressed);
        }
        other => panic!("expected a chunk checksum error, got {other:?}"),
    }
    assert!(
        e.to_string().contains(&format!(
            "chunk {}: compressed checksum mismatch",
            victim.index
        )),
        "{e}"
    );
    // Through Read, the same error reaches the caller as InvalidData.
    let mut out = Vec::new();
    let io = Reader::new(&bytes[..])
        .unwrap()
        .read_to_end(&mut out)
        .unwrap_err();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        io.to_string().contains("compressed checksum mismatch"),
        "{io}"
    );
}

#[test]
fn truncated_file_is_a_truncation_error() {
    let bytes = sample();
    let header = Header::parse(&bytes).unwrap();
    let last = header.data_chunks().last().unwrap().clone();
    let cut = &bytes[..bytes.len() - 10];
    let e = expand(cut).unwrap_err();
    match &e {
        Error::TruncatedChunk {
            index, needed, got, ..
        } => {
            assert_eq!(*index, last.index);
            assert_eq!(*needed, last.comp_len);
            assert_eq!(*got, last.comp_len - 10);
        }
        other => panic!("expected truncation, got {other:?}"),
    }
    assert!(e.to_string().starts_with("truncated file"), "{e}");
    // Cut inside the header: the header is reported truncated.
    let e = expand(&bytes[..header.len() as usize - 1]).unwrap_err();
    assert!(
        matches!(e, Error::Truncated { what: "header", .. }),
        "{e:?}"
    );
    // Cut inside the lead.
    let e = expand(&bytes[..8]).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e:?}");
}

#[test]
fn corrupted_data_checksum_is_reported() {
    // A default (not -u) file carries a data checksum; change a chunk *and*
    // its index checksum is impossible without breaking the header, so flip
    // the data checksum itself and re-sign the header.
    let dir = tempfile::tempdir().unwrap();
    let path = zck(
        dir.path(),
        "image",
        &image(500_000, 22),
        &["--compression-format=none"],
    );
    let bytes = std::fs::read(path).unwrap();
    let h = Header::parse(&bytes).unwrap();
    assert!(!h.data_digest().is_zero());
    let lead_len = h.lead().lead_len;
    let mut body = bytes[lead_len..h.len() as usize].to_vec();
    body[0] ^= 1;
    let mut out = bytes[..lead_len - 32].to_vec();
    let mut hasher = HashType::Sha256.hasher();
    hasher.update(&out);
    hasher.update(&body);
    out.extend_from_slice(hasher.finish().as_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&bytes[h.len() as usize..]);
    let e = expand(&out).unwrap_err();
    assert!(matches!(e, Error::DataChecksum { .. }), "{e:?}");
}

/// An index with `lens` (stored = expanded) chunks of `hash` checksums over `data`.
fn index(hash: HashType, chunks: &[(&[u8], u64)], uncomp: bool) -> Vec<u8> {
    let mut ix = Vec::new();
    compint::write(&mut ix, hash.id());
    compint::write(&mut ix, chunks.len() as u64 + 1);
    // Dictionary: none.
    ix.extend(std::iter::repeat_n(
        0u8,
        hash.digest_len() * if uncomp { 2 } else { 1 },
    ));
    compint::write(&mut ix, 0);
    compint::write(&mut ix, 0);
    for (data, len) in chunks {
        ix.extend_from_slice(hash.digest(data).as_bytes());
        if uncomp {
            ix.extend_from_slice(hash.digest(data).as_bytes());
        }
        compint::write(&mut ix, *len);
        compint::write(&mut ix, *len);
    }
    ix
}

#[test]
fn offsets_past_4_gib() {
    // Five 1 GiB chunks (only the header exists: offsets are computed from it).
    let gib = 1u64 << 30;
    let fake: &[u8] = b"";
    let ix = index(HashType::Sha256, &[(fake, gib); 5], false);
    let bytes = build(HashType::Sha256, &[7; 32], 0, 0, &ix, &[]);
    let h = Header::parse(&bytes).unwrap();
    let base = h.len();
    let offsets: Vec<u64> = h.data_chunks().iter().map(|c| c.offset).collect();
    assert_eq!(offsets, (0..5).map(|i| base + i * gib).collect::<Vec<_>>());
    assert_eq!(h.data_chunks()[4].uncomp_offset, 4 * gib);
    assert_eq!(h.file_len(), base + 5 * gib);
    assert_eq!(h.expanded_len(), 5 * gib);
    assert!(h.data_chunks()[4].end() > u64::from(u32::MAX));
    // A single chunk length past 4 GiB reads back exactly.
    let ix = index(HashType::Sha256, &[(fake, 6 * gib + 3)], false);
    let h = Header::parse(&build(HashType::Sha256, &[0; 32], 0, 0, &ix, &[])).unwrap();
    assert_eq!(h.data_chunks()[0].len, 6 * gib + 3);
    // Offsets that overflow 64 bits are an error, not a wrap.
    let ix = index(HashType::Sha256, &[(fake, u64::MAX), (fake, 2)], false);
    let e = Header::parse(&build(HashType::Sha256, &[0; 32], 0, 0, &ix, &[])).unwrap_err();
    assert!(matches!(e, Error::BadIndex(_)), "{e:?}");
}

#[test]
fn sha1_chunks_signatures_and_uncompressed_file_expand() {
    let a = common::random(1000, 1);
    let b = common::random(500, 2);
    for uncomp in [false, true] {
        let ix = index(HashType::Sha1, &[(&a, 1000), (&b, 500)], uncomp);
        let mut data = a.clone();
        data.extend_from_slice(&b);
        let flags = if uncomp { 4 } else { 0 };
        let digest = HashType::Sha1.digest(&data);
        let mut file = build(
            HashType::Sha1,
            digest.as_bytes(),
            flags,
            0,
            &ix,
            &[(9, b"sig")],
        );
        let h = Header::parse(&file).unwrap();
        assert_eq!(h.chunk_hash_type(), HashType::Sha1);
        assert_eq!(h.signatures().len(), 1);
        assert_eq!(h.signatures()[0].data, b"sig");
        file.extend_from_slice(&data);
        assert_eq!(expand(&file).unwrap(), data);
        // A wrong expanded checksum is caught for -u files.
        if uncomp {
            let mut ix = index(HashType::Sha1, &[(&a, 1000), (&b, 500)], true);
            // Second checksum of the first data chunk: after type, count, dict entry.
            let at = 2 + 40 + 2 + 20;
            ix[at] ^= 1;
            let mut f = build(HashType::Sha1, digest.as_bytes(), 4, 0, &ix, &[]);
            f.extend_from_slice(&data);
            let e = expand(&f).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::ChunkChecksum {
                        index: 1,
                        kind: ChecksumKind::Uncompressed,
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }
}

#[test]
fn malformed_headers_are_errors() {
    let ix = index(HashType::Sha256, &[(b"", 10)], false);
    let good = build(HashType::Sha256, &[0; 32], 0, 0, &ix, &[]);
    assert!(Header::parse(&good).is_ok());
    type Case = (&'static str, Vec<u8>, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (
            "bad magic",
            [b"\0ZCK2".as_slice(), &good[5..]].concat(),
            |e| matches!(e, Error::BadMagic),
        ),
        (
            "streams",
            build(HashType::Sha256, &[0; 32], 1, 0, &ix, &[]),
            |e| matches!(e, Error::StreamsUnsupported),
        ),
        (
            "unknown flag",
            build(HashType::Sha256, &[0; 32], 8, 0, &ix, &[]),
            |e| matches!(e, Error::UnknownFlags(8)),
        ),
        (
            "unknown compression",
            build(HashType::Sha256, &[0; 32], 0, 1, &ix, &[]),
            |e| matches!(e, Error::UnknownCompression(1)),
        ),
        (
            "index cut",
            build(HashType::Sha256, &[0; 32], 0, 0, &ix[..ix.len() - 1], &[]),
            |e| matches!(e, Error::Truncated { .. } | Error::BadIndex(_)),
        ),
        (
            "empty index",
            build(HashType::Sha256, &[0; 32], 0, 0, &[], &[]),
            |e| matches!(e, Error::Truncated { .. }),
        ),
    ];
    for (name, bytes, ok) in cases {
        let e = Header::parse(&bytes).unwrap_err();
        assert!(ok(&e), "{name}: {e:?}");
    }
    // A chunk count far beyond what the index holds does not allocate for it.
    let mut ix = Vec::new();
    compint::write(&mut ix, 1);
    compint::write(&mut ix, u64::MAX / 2);
    ix.extend_from_slice(&[0; 40]);
    let e = Header::parse(&build(HashType::Sha256, &[0; 32], 0, 0, &ix, &[])).unwrap_err();
    assert!(matches!(e, Error::BadIndex(_)), "{e:?}");
    // A header length far beyond the input is a truncation, read or parsed.
    let mut lead = b"\0ZCK1".to_vec();
    compint::write(&mut lead, 1);
    compint::write(&mut lead, u64::MAX);
    lead.extend_from_slice(&[0; 32]);
    assert!(matches!(Header::parse(&lead), Err(Error::Truncated { .. })));
    let e = Header::read(&mut &lead[..], zchunk::header::DEFAULT_MAX_HEADER_LEN).unwrap_err();
    assert!(matches!(e, Error::HeaderTooLarge { .. }), "{e:?}");
}

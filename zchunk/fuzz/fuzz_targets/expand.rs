//! Chunk expansion past the checksum: arbitrary bytes as a stored chunk whose
//! index entry matches them (as a crafted file could), expanded with zstd
//! (with and without a dictionary, also taken from the input) or none, to
//! a claimed length taken from the input. Errors are fine; panics and allocations
//! beyond the limit are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zchunk::header::build;
use zchunk::{ChunkDecoder, HashType, Header, compint};

fuzz_target!(|data: &[u8]| {
    // Byte 0: flags and lengths; byte 1: where the dictionary ends.
    let [ctl, cut, rest @ ..] = data else {
        return;
    };
    let (ctl, cut) = (*ctl, *cut);
    // Then the claimed expanded length, as a compact integer.
    let mut pos = 0;
    let Ok(len) = compint::read(rest, &mut pos, "fuzz length") else {
        return;
    };
    let rest = &rest[pos..];
    let split = (usize::from(cut) * rest.len() / 256).min(rest.len());
    let (dict, stored) = rest.split_at(split);
    let hash = HashType::Sha256;
    let compression = if ctl & 0x80 != 0 { 2 } else { 0 };
    let mut ix = Vec::new();
    compint::write(&mut ix, hash.id());
    compint::write(&mut ix, 2);
    ix.extend_from_slice(&[0; 32]);
    compint::write(&mut ix, 0);
    compint::write(&mut ix, 0);
    ix.extend_from_slice(hash.digest(stored).as_bytes());
    compint::write(&mut ix, stored.len() as u64);
    compint::write(
        &mut ix,
        if compression == 0 {
            stored.len() as u64
        } else {
            len
        },
    );
    let Ok(h) = Header::parse(&build(hash, &[0; 32], 0, compression, &ix, &[])) else {
        return;
    };
    let dict = (!dict.is_empty() && ctl & 0x40 != 0).then_some(dict);
    if let Ok(mut dec) = ChunkDecoder::new(&h, dict) {
        if let Ok(out) = dec.expand(&h.data_chunks()[0], stored) {
            assert_eq!(out.len() as u64, h.data_chunks()[0].len);
        }
    }
});

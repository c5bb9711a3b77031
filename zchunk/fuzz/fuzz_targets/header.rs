//! The header parser on arbitrary bytes: lead, preface, index, signatures,
//! and what the accessors compute from them; then expansion of whatever
//! chunks the bytes after the header would hold. Errors are fine, panics,
//! hangs and huge allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zchunk::{ChunkDecoder, Header, Lead};

fuzz_target!(|data: &[u8]| {
    let _ = Lead::parse(data);
    let _ = Header::read(&mut &data[..], 1 << 20);
    let _ = Header::parse(data);
    let Ok(h) = Header::parse_unverified(data) else {
        return;
    };
    let _ = (
        h.file_len(),
        h.expanded_len(),
        h.data_len(),
        h.dict(),
        h.signatures(),
    );
    // Expand the chunks the rest of the input holds (checksums will mostly
    // fail first, which is the point: nothing past them may misbehave).
    let stored = |c: &zchunk::Chunk| -> Option<&[u8]> {
        let start = usize::try_from(c.offset).ok()?;
        let end = usize::try_from(c.end()).ok()?;
        data.get(start..end)
    };
    let dict = h
        .dict()
        .and_then(|d| stored(d))
        .and_then(|s| ChunkDecoder::expand_dict(&h, s).ok());
    if let Ok(mut dec) = ChunkDecoder::new(&h, dict.as_deref()) {
        for c in h.data_chunks().iter().take(64) {
            if let Some(s) = stored(c) {
                let _ = dec.expand(c, s);
            }
        }
    }
    // The streaming reader over the same bytes, unverified header or not.
    if let Ok(r) =
        zchunk::Reader::with_header(h.clone(), &data[(h.len() as usize).min(data.len())..])
    {
        let mut r = r;
        for _ in 0..64 {
            match r.next_chunk() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
});

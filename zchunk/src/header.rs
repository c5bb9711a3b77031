//! The zchunk header: lead, preface, index and signatures, parsed from bytes
//! with every length checked against the bytes actually there, and the header
//! checksum verified.
//!
//! Layout (all integers are compact, see [`crate::compint`]):
//! lead = `\0ZCK1` (or `\0ZHR1` for a detached header), header checksum type,
//! header length, header checksum; preface = data checksum, flags, compression
//! type, [optional elements], index size; index = chunk checksum type, chunk
//! count, entries (the first is the dictionary); signatures = count, entries.
//! Offsets and lengths are 64-bit throughout, so files over 4 GiB work.

use std::io::Read;

use crate::compint;
use crate::error::Error;
use crate::hash::{Digest, HashType};

/// Magic of a zchunk file.
pub const MAGIC: &[u8; 5] = b"\0ZCK1";
/// Magic of a detached header (`zck_read_header`'s `.zhr`); hashed as [`MAGIC`].
pub const MAGIC_DETACHED: &[u8; 5] = b"\0ZHR1";
/// Enough bytes to hold any lead before its checksum: magic and two integers.
pub const LEAD_PREFIX_MAX: usize = 5 + 2 * compint::MAX_LEN;
/// The largest header [`Header::read`] accepts unless told otherwise: far above
/// what a multi-GiB image needs (about 70 bytes per 32 KiB chunk).
pub const DEFAULT_MAX_HEADER_LEN: u64 = 256 << 20;

const FLAG_STREAMS: u64 = 1;
const FLAG_OPTIONAL_ELEMENTS: u64 = 2;
const FLAG_UNCOMPRESSED_CHECKSUMS: u64 = 4;

/// How chunks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Type 0: chunks are stored as is.
    None,
    /// Type 2: each chunk is a zstd frame, compressed with the file's dictionary.
    Zstd,
}

impl Compression {
    /// The compression of a header's type id.
    pub fn from_id(n: u64) -> Result<Compression, Error> {
        match n {
            0 => Ok(Compression::None),
            2 => Ok(Compression::Zstd),
            other => Err(Error::UnknownCompression(other)),
        }
    }
}

/// The lead: what is needed to know how long the header is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lead {
    /// Checksum type of the header checksum and of the data checksum.
    pub hash_type: HashType,
    /// Length of preface + index + signatures (everything after the lead).
    pub header_len: u64,
    /// The header checksum.
    pub header_digest: Digest,
    /// Length of the lead itself, checksum included.
    pub lead_len: usize,
    /// True for a detached header (`\0ZHR1`).
    pub detached: bool,
}

impl Lead {
    /// Parses the lead at the start of `buf`, which must hold it whole
    /// ([`LEAD_PREFIX_MAX`] + 64 bytes always suffice).
    pub fn parse(buf: &[u8]) -> Result<Lead, Error> {
        let (hash_type, header_len, pos) = lead_prefix(buf)?;
        let end = pos + hash_type.digest_len();
        let digest = buf.get(pos..end).ok_or(Error::Truncated {
            what: "lead",
            needed: end as u64,
            available: buf.len() as u64,
        })?;
        Ok(Lead {
            hash_type,
            header_len,
            header_digest: Digest::new(digest),
            lead_len: end,
            detached: buf.get(..5) == Some(&MAGIC_DETACHED[..]),
        })
    }

    /// Lead + header: the offset where the data (dictionary, chunks) starts.
    pub fn total_len(&self) -> u64 {
        // Saturating: a header length near 2^64 is then simply longer than any input.
        (self.lead_len as u64).saturating_add(self.header_len)
    }
}

/// One entry of the index: the dictionary (entry 0) or a data chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the index; 0 is the dictionary, data chunks count from 1.
    pub index: usize,
    /// Offset of the stored (compressed) chunk from the start of the file.
    pub offset: u64,
    /// Length as stored in the file.
    pub comp_len: u64,
    /// Offset in the expanded output (0 for the dictionary, which is not output).
    pub uncomp_offset: u64,
    /// Length once expanded.
    pub len: u64,
    /// Checksum of the stored bytes, with the index's chunk checksum type.
    pub digest: Digest,
    /// Checksum of the expanded bytes (files made with `zck -u`).
    pub uncomp_digest: Option<Digest>,
}

impl Chunk {
    /// End of the stored chunk in the file (exclusive).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.comp_len)
    }
}

/// An optional element of the preface (none are defined yet; kept as read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionalElement {
    /// Its type.
    pub id: u64,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// A signature (no types are defined yet; kept as read, not verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Its type.
    pub kind: u64,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// A parsed zchunk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    lead: Lead,
    data_digest: Digest,
    compression: Compression,
    uncompressed_checksums: bool,
    optional: Vec<OptionalElement>,
    chunk_hash_type: HashType,
    chunks: Vec<Chunk>,
    signatures: Vec<Signature>,
    unused_header_bytes: u64,
}

impl Header {
    /// Parses and verifies the header at the start of `buf` (lead included);
    /// bytes after the header are ignored. Fails on a checksum mismatch.
    pub fn parse(buf: &[u8]) -> Result<Header, Error> {
        Self::parse_inner(buf, true)
    }

    /// As [`Header::parse`] but without checking the header checksum: for
    /// diagnostics and fuzzing. Nothing read this way may be trusted.
    pub fn parse_unverified(buf: &[u8]) -> Result<Header, Error> {
        Self::parse_inner(buf, false)
    }

    /// Reads and verifies the header from the start of `r` (leaving `r` at the
    /// first data byte), refusing headers longer than `max_len`. Memory grows
    /// with the bytes actually read, never with a length field alone.
    pub fn read<R: Read>(r: &mut R, max_len: u64) -> Result<Header, Error> {
        let bytes = read_header_bytes(r, max_len)?;
        Header::parse(&bytes)
    }

    fn parse_inner(buf: &[u8], verify: bool) -> Result<Header, Error> {
        let lead = Lead::parse(buf)?;
        let total = lead.total_len();
        let available = buf.len() as u64;
        if total > available {
            return Err(Error::Truncated {
                what: "header",
                needed: total,
                available,
            });
        }
        // total <= buf.len(), so it fits in usize.
        let header = &buf[lead.lead_len..total as usize];
        if verify {
            let mut h = lead.hash_type.hasher();
            h.update(MAGIC);
            h.update(&buf[5..lead.lead_len - lead.hash_type.digest_len()]);
            h.update(header);
            let actual = h.finish();
            if actual != lead.header_digest {
                return Err(Error::HeaderChecksum {
                    expected: Box::new(lead.header_digest),
                    actual: Box::new(actual),
                });
            }
        }
        parse_body(lead, header)
    }

    /// The lead: identification and the header's size and checksum.
    pub fn lead(&self) -> &Lead {
        &self.lead
    }
    /// Checksum type of the header and data checksums.
    pub fn hash_type(&self) -> HashType {
        self.lead.hash_type
    }
    /// The header checksum (as `zck_read_header` prints it).
    pub fn header_digest(&self) -> Digest {
        self.lead.header_digest
    }
    /// The checksum of the data section (dictionary and chunks as stored);
    /// all zeros in files made with `zck -u`, where it is not checked.
    pub fn data_digest(&self) -> Digest {
        self.data_digest
    }
    /// How the chunks are compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }
    /// True if the index holds checksums of the expanded chunks (`zck -u`).
    pub fn has_uncompressed_checksums(&self) -> bool {
        self.uncompressed_checksums
    }
    /// The optional elements of the preface.
    pub fn optional_elements(&self) -> &[OptionalElement] {
        &self.optional
    }
    /// Checksum type of the chunk checksums.
    pub fn chunk_hash_type(&self) -> HashType {
        self.chunk_hash_type
    }
    /// Every index entry, the dictionary (index 0) first.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }
    /// The dictionary entry, if the file has a dictionary.
    pub fn dict(&self) -> Option<&Chunk> {
        self.chunks.first().filter(|c| c.comp_len > 0)
    }
    /// The data chunks, in file order.
    pub fn data_chunks(&self) -> &[Chunk] {
        self.chunks.get(1..).unwrap_or(&[])
    }
    /// The signatures of the header (not verified).
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }
    /// Header bytes after the signatures that belong to no section.
    pub fn unused_header_bytes(&self) -> u64 {
        self.unused_header_bytes
    }
    /// Lead + header length: the offset of the first data byte.
    pub fn len(&self) -> u64 {
        self.lead.total_len()
    }
    /// Always false: a header has at least a lead. (For clippy's `len` rule.)
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Length of the data section (dictionary and chunks as stored).
    pub fn data_len(&self) -> u64 {
        self.chunks.last().map_or(self.len(), Chunk::end) - self.len()
    }
    /// Length of the whole file.
    pub fn file_len(&self) -> u64 {
        self.len() + self.data_len()
    }
    /// Length of the expanded output.
    pub fn expanded_len(&self) -> u64 {
        self.data_chunks()
            .last()
            .map_or(0, |c| c.uncomp_offset.saturating_add(c.len))
    }
}

/// Reads the lead and header bytes from `r`, refusing more than `max_len`.
pub fn read_header_bytes<R: Read>(r: &mut R, max_len: u64) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(LEAD_PREFIX_MAX + 64);
    read_up_to(r, &mut buf, LEAD_PREFIX_MAX as u64)?;
    let (hash_type, header_len, digest_at) = lead_prefix(&buf)?;
    let total = ((digest_at + hash_type.digest_len()) as u64)
        .checked_add(header_len)
        .ok_or(Error::HeaderTooLarge {
            len: u64::MAX,
            limit: max_len,
        })?;
    if total > max_len {
        return Err(Error::HeaderTooLarge {
            len: total,
            limit: max_len,
        });
    }
    let have = buf.len() as u64;
    if total > have {
        read_up_to(r, &mut buf, total - have)?;
    }
    if (buf.len() as u64) < total {
        return Err(Error::Truncated {
            what: "header",
            needed: total,
            available: buf.len() as u64,
        });
    }
    // Any valid header is longer than the prefix read first (the preface's
    // data checksum alone is 16 bytes or more), so no data byte was read; a
    // header shorter than that prefix fails to parse whatever follows.
    buf.truncate(total as usize);
    Ok(buf)
}

/// Magic, checksum type, header length, and where the header checksum starts.
fn lead_prefix(buf: &[u8]) -> Result<(HashType, u64, usize), Error> {
    let magic = buf.get(..5).ok_or(Error::Truncated {
        what: "lead",
        needed: 5,
        available: buf.len() as u64,
    })?;
    if magic != MAGIC && magic != MAGIC_DETACHED {
        return Err(Error::BadMagic);
    }
    let mut pos = 5;
    let hash_type = HashType::from_id(compint::read(buf, &mut pos, "header checksum type")?)?;
    let header_len = compint::read(buf, &mut pos, "header length")?;
    Ok((hash_type, header_len, pos))
}

/// Appends up to `n` bytes from `r` (fewer only at EOF).
fn read_up_to<R: Read>(r: &mut R, buf: &mut Vec<u8>, n: u64) -> Result<(), Error> {
    r.take(n)
        .read_to_end(buf)
        .map_err(|e| Error::io("reading the zchunk header", e))?;
    Ok(())
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: u64, what: &'static str) -> Result<&'a [u8], Error> {
    let end = u64::try_from(*pos)
        .ok()
        .and_then(|p| p.checked_add(n))
        .filter(|&e| e <= buf.len() as u64)
        .ok_or(Error::Truncated {
            what,
            needed: (*pos as u64).saturating_add(n),
            available: buf.len() as u64,
        })? as usize;
    let s = &buf[*pos..end];
    *pos = end;
    Ok(s)
}

/// Parses preface, index and signatures (`header` is everything after the lead).
fn parse_body(lead: Lead, header: &[u8]) -> Result<Header, Error> {
    let mut pos = 0;
    let data_digest = Digest::new(take(
        header,
        &mut pos,
        lead.hash_type.digest_len() as u64,
        "preface",
    )?);
    let flags = compint::read(header, &mut pos, "flags")?;
    if flags & FLAG_STREAMS != 0 {
        return Err(Error::StreamsUnsupported);
    }
    let unknown = flags & !(FLAG_OPTIONAL_ELEMENTS | FLAG_UNCOMPRESSED_CHECKSUMS | FLAG_STREAMS);
    if unknown != 0 {
        return Err(Error::UnknownFlags(unknown));
    }
    let compression = Compression::from_id(compint::read(header, &mut pos, "compression type")?)?;
    let mut optional = Vec::new();
    if flags & FLAG_OPTIONAL_ELEMENTS != 0 {
        let count = compint::read(header, &mut pos, "optional element count")?;
        for _ in 0..count {
            let id = compint::read(header, &mut pos, "optional element id")?;
            let size = compint::read(header, &mut pos, "optional element size")?;
            let data = take(header, &mut pos, size, "optional element")?.to_vec();
            optional.push(OptionalElement { id, data });
        }
    }
    let index_size = compint::read(header, &mut pos, "index size")?;
    let index = take(header, &mut pos, index_size, "index")?;
    let uncompressed_checksums = flags & FLAG_UNCOMPRESSED_CHECKSUMS != 0;
    let (chunk_hash_type, chunks) =
        parse_index(index, lead.total_len(), compression, uncompressed_checksums)?;

    let sig_count = compint::read(header, &mut pos, "signature count")?;
    let mut signatures = Vec::new();
    for _ in 0..sig_count {
        let kind = compint::read(header, &mut pos, "signature type")?;
        let size = compint::read(header, &mut pos, "signature size")?;
        let data = take(header, &mut pos, size, "signature")?.to_vec();
        signatures.push(Signature { kind, data });
    }
    Ok(Header {
        unused_header_bytes: (header.len() - pos) as u64,
        lead,
        data_digest,
        compression,
        uncompressed_checksums,
        optional,
        chunk_hash_type,
        chunks,
        signatures,
    })
}

fn parse_index(
    index: &[u8],
    data_offset: u64,
    compression: Compression,
    uncompressed_checksums: bool,
) -> Result<(HashType, Vec<Chunk>), Error> {
    let mut pos = 0;
    let hash_type = HashType::from_id(compint::read(index, &mut pos, "chunk checksum type")?)?;
    let count = compint::read(index, &mut pos, "chunk count")?;
    let digest_len = hash_type.digest_len() as u64 * if uncompressed_checksums { 2 } else { 1 };
    // Each entry takes at least its digests and two one-byte integers: the
    // count cannot ask for more entries than the index can hold.
    let room = (index.len() - pos) as u64 / (digest_len + 2);
    if count > room {
        return Err(Error::BadIndex(format!(
            "chunk count {count} does not fit in an index of {} bytes",
            index.len()
        )));
    }
    if count == 0 {
        return Err(Error::BadIndex("no dictionary entry".into()));
    }
    let mut chunks = Vec::with_capacity(count as usize);
    let mut offset = data_offset;
    let mut uncomp_offset: u64 = 0;
    while pos < index.len() {
        let i = chunks.len();
        let digest = Digest::new(take(
            index,
            &mut pos,
            hash_type.digest_len() as u64,
            "index entry",
        )?);
        let uncomp_digest = if uncompressed_checksums {
            Some(Digest::new(take(
                index,
                &mut pos,
                hash_type.digest_len() as u64,
                "index entry",
            )?))
        } else {
            None
        };
        let comp_len = compint::read(index, &mut pos, "chunk length")?;
        let len = compint::read(index, &mut pos, "uncompressed chunk length")?;
        if compression == Compression::None && comp_len != len {
            return Err(Error::BadIndex(format!(
                "chunk {i}: stored length {comp_len} differs from length {len} without compression"
            )));
        }
        let overflow = || Error::BadIndex(format!("chunk {i}: offsets overflow 64 bits"));
        let chunk = Chunk {
            index: i,
            offset,
            comp_len,
            uncomp_offset: if i == 0 { 0 } else { uncomp_offset },
            len,
            digest,
            uncomp_digest,
        };
        offset = offset.checked_add(comp_len).ok_or_else(overflow)?;
        if i > 0 {
            uncomp_offset = uncomp_offset.checked_add(len).ok_or_else(overflow)?;
        }
        chunks.push(chunk);
    }
    if chunks.len() as u64 != count {
        return Err(Error::BadIndex(format!(
            "chunk count says {count}, the index holds {}",
            chunks.len()
        )));
    }
    Ok((hash_type, chunks))
}

/// Builds header bytes (lead included, checksum computed) from parts: for
/// tests and tools that need synthetic headers, e.g. with offsets past 4 GiB.
pub fn build(
    hash_type: HashType,
    data_digest: &[u8],
    flags: u64,
    compression: u64,
    index: &[u8],
    signatures: &[(u64, &[u8])],
) -> Vec<u8> {
    let mut body = data_digest.to_vec();
    compint::write(&mut body, flags);
    compint::write(&mut body, compression);
    compint::write(&mut body, index.len() as u64);
    body.extend_from_slice(index);
    compint::write(&mut body, signatures.len() as u64);
    for (kind, data) in signatures {
        compint::write(&mut body, *kind);
        compint::write(&mut body, data.len() as u64);
        body.extend_from_slice(data);
    }
    let mut out = MAGIC.to_vec();
    compint::write(&mut out, hash_type.id());
    compint::write(&mut out, body.len() as u64);
    let mut h = hash_type.hasher();
    h.update(&out);
    h.update(&body);
    out.extend_from_slice(h.finish().as_bytes());
    out.extend_from_slice(&body);
    out
}

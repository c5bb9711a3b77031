//! The checksum types of zchunk (`0` SHA-1, `1` SHA-256, `2` SHA-512,
//! `3` SHA-512/128, which is SHA-512 truncated to 16 bytes as zck computes it)
//! and a small copyable digest value.

use sha2::Digest as _;

use crate::error::Error;

/// A checksum type as numbered in the zchunk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashType {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// The first 16 bytes of SHA-512 (not FIPS SHA-512/t with its own IV).
    Sha512_128,
}

impl HashType {
    /// The type numbered `n` in the format.
    pub fn from_id(n: u64) -> Result<HashType, Error> {
        match n {
            0 => Ok(HashType::Sha1),
            1 => Ok(HashType::Sha256),
            2 => Ok(HashType::Sha512),
            3 => Ok(HashType::Sha512_128),
            other => Err(Error::UnknownHashType(other)),
        }
    }

    /// Its number in the format.
    pub fn id(self) -> u64 {
        match self {
            HashType::Sha1 => 0,
            HashType::Sha256 => 1,
            HashType::Sha512 => 2,
            HashType::Sha512_128 => 3,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashType::Sha1 => 20,
            HashType::Sha256 => 32,
            HashType::Sha512 => 64,
            HashType::Sha512_128 => 16,
        }
    }

    /// The name `zck_read_header` prints.
    pub fn name(self) -> &'static str {
        match self {
            HashType::Sha1 => "SHA-1",
            HashType::Sha256 => "SHA-256",
            HashType::Sha512 => "SHA-512",
            HashType::Sha512_128 => "SHA-512/128",
        }
    }

    /// A fresh hasher of this type.
    pub fn hasher(self) -> Hasher {
        Hasher(match self {
            HashType::Sha1 => State::Sha1(sha1::Sha1::new()),
            HashType::Sha256 => State::Sha256(sha2::Sha256::new()),
            HashType::Sha512 => State::Sha512(sha2::Sha512::new(), 64),
            HashType::Sha512_128 => State::Sha512(sha2::Sha512::new(), 16),
        })
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

impl std::fmt::Display for HashType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An incremental hasher of one [`HashType`].
#[derive(Clone)]
pub struct Hasher(State);

#[derive(Clone)]
enum State {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512, usize),
}

impl Hasher {
    /// Hashes more bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            State::Sha1(h) => h.update(data),
            State::Sha256(h) => h.update(data),
            State::Sha512(h, _) => h.update(data),
        }
    }

    /// The digest of everything hashed.
    pub fn finish(self) -> Digest {
        match self.0 {
            State::Sha1(h) => Digest::new(&h.finalize()),
            State::Sha256(h) => Digest::new(&h.finalize()),
            State::Sha512(h, len) => Digest::new(&h.finalize()[..len]),
        }
    }
}

/// A digest of up to 64 bytes, stored inline so that it is `Copy` and cheap
/// to use as a map key (seed matching looks chunks up by digest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    len: u8,
    bytes: [u8; 64],
}

impl Digest {
    /// A digest holding `bytes` (at most 64; longer input is cut, which no
    /// caller in this crate does).
    pub fn new(bytes: &[u8]) -> Digest {
        let len = bytes.len().min(64);
        let mut d = Digest {
            len: len as u8,
            bytes: [0; 64],
        };
        d.bytes[..len].copy_from_slice(&bytes[..len]);
        d
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Lower-case hex, as `zck_read_header` prints it.
    pub fn to_hex(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(self.as_bytes().len() * 2);
        for b in self.as_bytes() {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// True for the all-zero digest zck writes where there is no value
    /// (no dictionary; the data checksum of `-u` files).
    pub fn is_zero(&self) -> bool {
        self.as_bytes().iter().all(|&b| b == 0)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        // Standard test vectors for "abc".
        assert_eq!(
            HashType::Sha1.digest(b"abc").to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            HashType::Sha256.digest(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let full = HashType::Sha512.digest(b"abc");
        assert!(full.to_hex().starts_with("ddaf35a193617aba"));
        assert_eq!(full.as_bytes().len(), 64);
        let short = HashType::Sha512_128.digest(b"abc");
        assert_eq!(short.as_bytes(), &full.as_bytes()[..16]);
    }

    #[test]
    fn ids_round_trip() {
        for id in 0..4 {
            assert_eq!(HashType::from_id(id).unwrap().id(), id);
        }
        assert!(matches!(
            HashType::from_id(4),
            Err(Error::UnknownHashType(4))
        ));
    }
}

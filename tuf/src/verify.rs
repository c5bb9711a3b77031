//! Checking a target's bytes as they stream past: length and every listed hash.

use ring::digest;

use super::TargetInfo;
use super::error::TufError;
use super::metadata::algorithm;

/// Feed it the bytes in order; `finish` says whether they are the target.
pub struct TargetVerifier {
    path: String,
    length: u64,
    seen: u64,
    hashes: Vec<(String, Vec<u8>, digest::Context)>,
}

impl std::fmt::Debug for TargetVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetVerifier")
            .field("path", &self.path)
            .field("length", &self.length)
            .field("seen", &self.seen)
            .finish()
    }
}

impl TargetVerifier {
    /// Fails when a listed hash cannot be checked (unknown algorithm, not hex): every listed
    /// hash must be.
    pub fn new(info: &TargetInfo) -> Result<TargetVerifier, TufError> {
        let err = |message: String| TufError::Target {
            path: info.path.clone(),
            message,
        };
        let mut hashes = Vec::new();
        for (alg, want) in &info.hashes {
            let a = algorithm(alg)
                .ok_or_else(|| err(format!("hash algorithm {alg} is not supported")))?;
            let want = hex::decode(want).map_err(|_| err(format!("{alg} `{want}` is not hex")))?;
            hashes.push((alg.clone(), want, digest::Context::new(a)));
        }
        if hashes.is_empty() {
            return Err(err("lists no hash".into()));
        }
        Ok(TargetVerifier {
            path: info.path.clone(),
            length: info.length,
            seen: 0,
            hashes,
        })
    }

    /// Hashes the next bytes; an error as soon as more than the target's length arrived.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), TufError> {
        self.seen += bytes.len() as u64;
        if self.exceeded() {
            return Err(self.too_long());
        }
        for (_, _, ctx) in &mut self.hashes {
            ctx.update(bytes);
        }
        Ok(())
    }

    /// More bytes than the target's length arrived.
    pub fn exceeded(&self) -> bool {
        self.seen > self.length
    }

    /// Bytes checked so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The target's length.
    pub fn length(&self) -> u64 {
        self.length
    }

    fn too_long(&self) -> TufError {
        TufError::Target {
            path: self.path.clone(),
            message: format!("more than its {} bytes arrived", self.length),
        }
    }

    /// The length and every hash match.
    pub fn finish(self) -> Result<(), TufError> {
        if self.exceeded() {
            return Err(self.too_long());
        }
        if self.seen != self.length {
            return Err(TufError::Target {
                path: self.path,
                message: format!("{} bytes, expected {}", self.seen, self.length),
            });
        }
        for (alg, want, ctx) in self.hashes {
            let got = ctx.finish();
            if got.as_ref() != want.as_slice() {
                return Err(TufError::Target {
                    path: self.path,
                    message: format!(
                        "{alg} is {}, expected {} (not the target's bytes)",
                        hex::encode(got),
                        hex::encode(want)
                    ),
                });
            }
        }
        Ok(())
    }
}

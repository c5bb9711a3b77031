//! Throwaway signing keys.
//!
//! SWUpdate (as packaged by Debian) verifies `sw-description.sig`, a CMS
//! signature, against the certificate given with `-k`. Each test makes its
//! own self-signed certificate with the `openssl` command line tool, so no
//! key material is checked in and no test depends on another's key.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, ensure};

/// A self-signed RSA certificate and its unencrypted private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCert {
    /// The certificate (PEM): give it to SWUpdate with `-k`.
    pub cert: PathBuf,
    /// The private key (PEM, unencrypted): signs `sw-description`.
    pub key: PathBuf,
}

impl TestCert {
    /// Generates `cert.pem` and `key.pem` in `dir` (which must exist).
    ///
    /// RSA 2048 with a 2-day validity: quick to make (well under a second)
    /// and accepted by SWUpdate's default `emailProtection` purpose check:
    /// OpenSSL 3 gives it `CA:TRUE` and key identifiers but no key usage or
    /// extended key usage, so it restricts nothing.
    pub fn generate(dir: &Path) -> anyhow::Result<TestCert> {
        Self::generate_at(dir.join("cert.pem"), dir.join("key.pem"), "test")
    }

    /// Like [`TestCert::generate`], but with the files named `<name>.cert.pem`
    /// and `<name>.key.pem` and the subject `/CN=<name>`, so that several
    /// certificates (e.g. a trusted one and a rogue one) can share `dir`.
    pub fn generate_named(dir: &Path, name: &str) -> anyhow::Result<TestCert> {
        Self::generate_at(
            dir.join(format!("{name}.cert.pem")),
            dir.join(format!("{name}.key.pem")),
            name,
        )
    }

    fn generate_at(cert: PathBuf, key: PathBuf, name: &str) -> anyhow::Result<TestCert> {
        let output = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-subj", &format!("/CN={name}"), "-days", "2"])
            .output()
            .context("running `openssl req` (is openssl installed?)")?;
        ensure!(
            output.status.success(),
            "`openssl req` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(TestCert { cert, key })
    }

    /// Signs `input` into a detached DER CMS signature at `output`, exactly
    /// as SWUpdate's documentation (and `swugenerator`) does for
    /// `sw-description`.
    pub fn sign(&self, input: &Path, output: &Path) -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(["cms", "-sign", "-in"])
            .arg(input)
            .arg("-out")
            .arg(output)
            .arg("-signer")
            .arg(&self.cert)
            .arg("-inkey")
            .arg(&self.key)
            .args(["-outform", "DER", "-nosmimecap", "-binary"])
            .output()
            .context("running `openssl cms -sign`")?;
        ensure!(
            out.status.success(),
            "`openssl cms -sign` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_and_signs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = TestCert::generate(dir.path()).expect("generate cert");
        assert!(cert.cert.is_file() && cert.key.is_file());
        let rogue = TestCert::generate_named(dir.path(), "rogue").expect("generate rogue");
        assert_ne!(rogue.cert, cert.cert);

        let input = dir.path().join("data");
        std::fs::write(&input, b"hello").expect("write data");
        let sig = dir.path().join("data.sig");
        cert.sign(&input, &sig).expect("sign");
        let verify = Command::new("openssl")
            .args(["cms", "-verify", "-inform", "DER", "-binary", "-in"])
            .arg(&sig)
            .arg("-content")
            .arg(&input)
            .arg("-CAfile")
            .arg(&cert.cert)
            .args(["-purpose", "any", "-out", "/dev/null"])
            .output()
            .expect("run openssl cms -verify");
        assert!(
            verify.status.success(),
            "verify failed: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
}

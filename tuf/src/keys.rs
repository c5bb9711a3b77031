//! Signature checks: the keys and schemes of securesystemslib (ed25519, RSA-PSS and PKCS#1
//! v1.5, ECDSA P-256/P-384) over ring, the crypto library of rustls in the agent, so no second
//! crypto library. A threshold counts distinct keys: the same key listed under two key ids, or
//! one signature repeated, counts once (metadata listing a keyid twice in `signatures` does not
//! get this far: it is refused when parsed).

use std::collections::{BTreeMap, BTreeSet};

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;

use super::error::TufError;
use super::metadata::{Key, Signature};
use super::spki::{self, Algorithm};

/// The verification algorithm of a key's scheme and the algorithm its SubjectPublicKeyInfo must
/// name, `None` for a scheme this client does not know (such a key never counts towards a
/// threshold).
fn scheme(key: &Key) -> Option<(&'static dyn VerificationAlgorithm, Algorithm)> {
    Some(match (key.keytype.as_str(), key.scheme.as_str()) {
        ("ed25519", "ed25519") => (&signature::ED25519, Algorithm::Ed25519),
        ("rsa", "rsassa-pss-sha256") => (&signature::RSA_PSS_2048_8192_SHA256, Algorithm::Rsa),
        ("rsa", "rsassa-pss-sha384") => (&signature::RSA_PSS_2048_8192_SHA384, Algorithm::Rsa),
        ("rsa", "rsassa-pss-sha512") => (&signature::RSA_PSS_2048_8192_SHA512, Algorithm::Rsa),
        ("rsa", "rsa-pkcs1v15-sha256") => (&signature::RSA_PKCS1_2048_8192_SHA256, Algorithm::Rsa),
        ("rsa", "rsa-pkcs1v15-sha384") => (&signature::RSA_PKCS1_2048_8192_SHA384, Algorithm::Rsa),
        ("rsa", "rsa-pkcs1v15-sha512") => (&signature::RSA_PKCS1_2048_8192_SHA512, Algorithm::Rsa),
        ("ecdsa" | "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256") => {
            (&signature::ECDSA_P256_SHA256_ASN1, Algorithm::EcP256)
        }
        ("ecdsa" | "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384") => {
            (&signature::ECDSA_P384_SHA384_ASN1, Algorithm::EcP384)
        }
        _ => return None,
    })
}

/// The raw public key: ed25519 keys are hex; RSA and ECDSA keys PEM (SubjectPublicKeyInfo, whose
/// algorithm must be the scheme's), or hex of the raw key as older tools wrote ECDSA keys.
fn public_bytes(key: &Key, algorithm: Algorithm) -> Option<Vec<u8>> {
    let p = key.keyval.public.trim();
    if p.is_empty() {
        return None;
    }
    if p.starts_with("-----BEGIN") {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(p.as_bytes()).ok()?;
        let (named, raw) = spki::parse(der.as_ref())?;
        return (named == algorithm).then(|| raw.to_vec());
    }
    hex::decode(p).ok()
}

/// Whether `sig` (hex) by `key` is valid over `msg`.
pub fn verify(key: &Key, msg: &[u8], sig: &str) -> bool {
    let Some((alg, algorithm)) = scheme(key) else {
        return false;
    };
    let (Some(public), Ok(sig)) = (public_bytes(key, algorithm), hex::decode(sig)) else {
        return false;
    };
    UnparsedPublicKey::new(alg, public)
        .verify(msg, &sig)
        .is_ok()
}

/// Checks that `threshold` distinct keys among `keyids` (looked up in `keys`) signed
/// `canonical`.
pub fn check_threshold(
    role: &str,
    keys: &BTreeMap<String, Key>,
    keyids: &[String],
    threshold: u64,
    canonical: &[u8],
    signatures: &[Signature],
) -> Result<(), TufError> {
    // Identity of a key is its material, not the key id a repository gave it.
    let mut signers: BTreeSet<(&str, &str, &str)> = BTreeSet::new();
    let wanted: BTreeSet<&str> = keyids.iter().map(String::as_str).collect();
    for keyid in wanted {
        let Some(key) = keys.get(keyid) else {
            continue;
        };
        let id = (
            key.keytype.as_str(),
            key.scheme.as_str(),
            key.keyval.public.trim(),
        );
        if signers.contains(&id) {
            continue;
        }
        if signatures
            .iter()
            .filter(|s| s.keyid == keyid)
            .any(|s| verify(key, canonical, &s.sig))
        {
            signers.insert(id);
        }
    }
    if (signers.len() as u64) < threshold {
        return Err(TufError::Threshold {
            role: role.to_owned(),
            valid: signers.len(),
            threshold,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! Keys made in the test, and metadata signed with them.
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::super::metadata::KeyVal;
    use super::*;

    pub struct TestKey {
        pair: Ed25519KeyPair,
        pub id: String,
    }

    impl TestKey {
        pub fn new(id: &str) -> TestKey {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            TestKey {
                pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
                id: id.to_owned(),
            }
        }

        pub fn key(&self) -> Key {
            Key {
                keytype: "ed25519".into(),
                scheme: "ed25519".into(),
                keyval: KeyVal {
                    public: hex::encode(self.pair.public_key().as_ref()),
                },
            }
        }

        pub fn json(&self) -> serde_json::Value {
            serde_json::json!({"keytype": "ed25519", "scheme": "ed25519",
                "keyval": {"public": hex::encode(self.pair.public_key().as_ref())}})
        }

        pub fn sign(&self, msg: &[u8]) -> Signature {
            Signature {
                keyid: self.id.clone(),
                sig: hex::encode(self.pair.sign(msg).as_ref()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_keys::TestKey;
    use super::*;

    #[test]
    fn threshold_counts_distinct_keys_once() {
        let (a, b) = (TestKey::new("a"), TestKey::new("b"));
        let msg = b"signed bytes";
        let mut keys = BTreeMap::new();
        keys.insert("a".to_owned(), a.key());
        keys.insert("b".to_owned(), b.key());
        // The same key material under a second id.
        keys.insert("a2".to_owned(), a.key());
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sig_a = a.sign(msg);
        let mut sig_a2 = a.sign(msg);
        sig_a2.keyid = "a2".into();

        // One key's signature, repeated and under an alias: still one key.
        let sigs = vec![sig_a.clone(), sig_a.clone(), sig_a2.clone()];
        let e = check_threshold("root", &keys, &ids(&["a", "a2", "b"]), 2, msg, &sigs);
        assert!(
            matches!(
                e,
                Err(TufError::Threshold {
                    valid: 1,
                    threshold: 2,
                    ..
                })
            ),
            "{e:?}"
        );
        // Key ids repeated in the role count once.
        let e = check_threshold(
            "root",
            &keys,
            &ids(&["a", "a"]),
            2,
            msg,
            std::slice::from_ref(&sig_a),
        );
        assert!(e.is_err());
        // Two distinct keys meet 2.
        let sigs = vec![sig_a.clone(), b.sign(msg)];
        check_threshold("root", &keys, &ids(&["a", "b"]), 2, msg, &sigs).unwrap();
        // A signature by a key outside the role does not count.
        let e = check_threshold("root", &keys, &ids(&["a"]), 2, msg, &sigs);
        assert!(e.is_err());
        // A bad signature does not count; a good one under the same id still does.
        let mut bad = b.sign(b"other bytes");
        bad.keyid = "b".into();
        let sigs = vec![sig_a, bad.clone()];
        assert!(check_threshold("root", &keys, &ids(&["a", "b"]), 2, msg, &sigs).is_err());
        let sigs = vec![bad, b.sign(msg)];
        check_threshold("root", &keys, &ids(&["b"]), 1, msg, &sigs).unwrap();
    }

    #[test]
    fn unknown_schemes_and_junk_never_verify() {
        let a = TestKey::new("a");
        let sig = a.sign(b"m");
        assert!(verify(&a.key(), b"m", &sig.sig));
        let mut k = a.key();
        k.scheme = "ed448".into();
        assert!(!verify(&k, b"m", &sig.sig));
        assert!(!verify(&a.key(), b"m", "zz"));
        let mut k = a.key();
        k.keyval.public = "not hex".into();
        assert!(!verify(&k, b"m", &sig.sig));
    }

    /// An ECDSA P-256 key in PEM, as securesystemslib writes it, with a DER signature.
    #[test]
    fn ecdsa_p256_pem_keys() {
        use ring::rand::SystemRandom;
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // SubjectPublicKeyInfo of a P-256 key: the fixed DER prefix, then the point.
        let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        spki.extend_from_slice(pair.public_key().as_ref());
        let pem = pem_of(spki.as_ref());
        let key = Key {
            keytype: "ecdsa".into(),
            scheme: "ecdsa-sha2-nistp256".into(),
            keyval: super::super::metadata::KeyVal { public: pem },
        };
        let sig = hex::encode(pair.sign(&rng, b"m").unwrap().as_ref());
        assert!(verify(&key, b"m", &sig));
        assert!(!verify(&key, b"n", &sig));
    }

    fn pem_of(der: &[u8]) -> String {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }
}

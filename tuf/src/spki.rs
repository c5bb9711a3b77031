//! The key inside a SubjectPublicKeyInfo (RFC 5280), the DER behind securesystemslib's PEM keys.
//! ring verifies raw keys (an RSAPublicKey, an EC point), so the wrapper is taken off here, with
//! its algorithm checked: a P-384 key does not verify as a P-256 key, an RSA key not as ECDSA.
//! Metadata is untrusted until verified: every length is checked against what is left.

/// The algorithm a SubjectPublicKeyInfo names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

// The DER of the object identifiers (tag and length included).
const RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const NULL: &[u8] = &[0x05, 0x00];

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;

/// One DER element of tag `tag` at the start of `input`: its contents and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form: 1 to 4 length bytes (no key comes near 4 GiB), minimal as DER wants.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n || rest[0] == 0 {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        if len < 0x80 {
            return None;
        }
        len
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The algorithm and the key of a DER SubjectPublicKeyInfo; `None` for anything else (another
/// algorithm, trailing bytes, a malformed element).
pub fn parse(der: &[u8]) -> Option<(Algorithm, &[u8])> {
    let (spki, rest) = element(der, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (alg_id, rest) = element(spki, SEQUENCE)?;
    let (bits, rest) = element(rest, BIT_STRING)?;
    if !rest.is_empty() {
        return None;
    }
    let algorithm = if alg_id == [RSA_ENCRYPTION, NULL].concat() || alg_id == RSA_ENCRYPTION {
        Algorithm::Rsa
    } else if alg_id == [EC_PUBLIC_KEY, P256].concat() {
        Algorithm::EcP256
    } else if alg_id == [EC_PUBLIC_KEY, P384].concat() {
        Algorithm::EcP384
    } else if alg_id == ED25519 {
        Algorithm::Ed25519
    } else {
        return None;
    };
    // A key is a whole number of bytes: no unused bits.
    let (&unused, key) = bits.split_first()?;
    (unused == 0 && !key.is_empty()).then_some((algorithm, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spki(alg: &[&[u8]], key: &[u8]) -> Vec<u8> {
        let alg: Vec<u8> = alg.concat();
        let mut inner = vec![SEQUENCE, alg.len() as u8];
        inner.extend(&alg);
        inner.push(BIT_STRING);
        der_len(&mut inner, key.len() + 1);
        inner.push(0);
        inner.extend(key);
        let mut out = vec![SEQUENCE];
        der_len(&mut out, inner.len());
        out.extend(inner);
        out
    }

    fn der_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
    }

    #[test]
    fn each_algorithm_and_its_key() {
        let point = [4u8; 65];
        assert_eq!(
            parse(&spki(&[EC_PUBLIC_KEY, P256], &point)),
            Some((Algorithm::EcP256, &point[..]))
        );
        assert_eq!(
            parse(&spki(&[EC_PUBLIC_KEY, P384], &[4u8; 97])).map(|p| p.0),
            Some(Algorithm::EcP384)
        );
        // An RSA key of 2048 bits: a long-form length of two bytes.
        let rsa = [0x30u8; 270];
        assert_eq!(
            parse(&spki(&[RSA_ENCRYPTION, NULL], &rsa)),
            Some((Algorithm::Rsa, &rsa[..]))
        );
        assert_eq!(
            parse(&spki(&[ED25519], &[1u8; 32])).map(|p| p.0),
            Some(Algorithm::Ed25519)
        );
    }

    #[test]
    fn malformed_or_unknown_is_none() {
        let good = spki(&[EC_PUBLIC_KEY, P256], &[4u8; 65]);
        // Every truncation, and a trailing byte.
        for n in 0..good.len() {
            assert_eq!(parse(&good[..n]), None, "cut at {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(parse(&long), None);
        // Unused bits in the key, another curve (secp256k1), a non-minimal length.
        let mut bits = good.clone();
        let at = good.len() - 66;
        bits[at] = 1;
        assert_eq!(parse(&bits), None);
        let k1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
        assert_eq!(parse(&spki(&[EC_PUBLIC_KEY, k1], &[4u8; 65])), None);
        assert_eq!(parse(&[SEQUENCE, 0x81, 0x05, 0, 0, 0, 0, 0]), None);
        assert_eq!(parse(&[SEQUENCE, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(parse(b""), None);
    }
}

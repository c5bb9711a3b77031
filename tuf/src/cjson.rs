//! OLPC canonical JSON, the form TUF signatures are made over (securesystemslib's
//! `encode_canonical`): object keys sorted by code point, no whitespace, integers only, and in
//! strings only `"` and `\` escaped. Written here (about forty lines over `serde_json::Value`)
//! rather than taken from a crate so the exact rules are in view and tested against the
//! reference output.

use serde_json::Value;

/// The canonical bytes of `v`; `Err` names what canonical JSON cannot hold (a float).
pub fn encode(v: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write(v, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(format!(
                    "{n} is not an integer (canonical JSON has no floats)"
                ));
            }
        }
        Value::String(s) => string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(e, out)?;
            }
            out.push(b']');
        }
        Value::Object(m) => {
            // UTF-8 byte order is code point order, which is what Python's sort gives.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                write(&m[k.as_str()], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        String::from_utf8(encode(&serde_json::from_str(s).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn sorted_compact_and_minimally_escaped() {
        // Expected bytes as securesystemslib.formats.encode_canonical prints them.
        assert_eq!(
            enc(r#"{"b": [1, -2, true, null], "a": {"z": "x\"y\\z", "é": "\n"}, "A": 0}"#),
            "{\"A\":0,\"a\":{\"z\":\"x\\\"y\\\\z\",\"é\":\"\n\"},\"b\":[1,-2,true,null]}"
        );
        assert_eq!(enc("18446744073709551615"), "18446744073709551615");
    }

    #[test]
    fn floats_are_refused() {
        assert!(encode(&serde_json::json!({"a": 1.5})).is_err());
    }
}

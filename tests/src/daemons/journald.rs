//! A stand-in for journald's native socket: a datagram socket in the test's directory that
//! parses what arrives as journald does (`KEY=value` lines, and `KEY`, a 64-bit little-endian
//! length and the value for values with line breaks), for tests that read the agent's journal
//! entries back. The agent sends there when `CIP_UPDATE_AGENT_JOURNAL_SOCKET` names it.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context as _, bail};

/// One journal entry: its fields in the order sent.
#[derive(Debug, Clone)]
pub struct Entry(pub Vec<(String, Vec<u8>)>);

impl Entry {
    /// The (first) value of field `name`, as text.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// The stand-in; it receives on a thread of its own until dropped with the test.
pub struct Journald {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Journald {
    /// Listens at `path`.
    pub fn bind(path: &Path) -> anyhow::Result<Journald> {
        let sock =
            UnixDatagram::bind(path).with_context(|| format!("binding {}", path.display()))?;
        let entries = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&entries);
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = sock.recv(&mut buf) {
                // (An empty datagram is a sender's probe, which journald ignores too.)
                if n == 0 {
                    continue;
                }
                let entry = parse(&buf[..n]).expect("a well-formed journal entry");
                sink.lock().unwrap().push(entry);
            }
        });
        Ok(Journald { entries })
    }

    /// The entries received so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().clone()
    }
}

/// One datagram of the native protocol.
pub fn parse(mut b: &[u8]) -> anyhow::Result<Entry> {
    let mut fields = Vec::new();
    while !b.is_empty() {
        let nl = b
            .iter()
            .position(|&c| c == b'\n')
            .context("a field without its line break")?;
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            fields.push((
                String::from_utf8(line[..eq].to_vec())?,
                line[eq + 1..].to_vec(),
            ));
            b = &b[nl + 1..];
            continue;
        }
        let name = String::from_utf8(line.to_vec())?;
        let rest = &b[nl + 1..];
        let len: [u8; 8] = rest
            .get(..8)
            .context("a binary field without its length")?
            .try_into()?;
        let len = usize::try_from(u64::from_le_bytes(len))?;
        let Some(value) = rest.get(8..8 + len) else {
            bail!("field {name}: shorter than its length {len}");
        };
        if rest.get(8 + len) != Some(&b'\n') {
            bail!("field {name}: no line break after the value");
        }
        fields.push((name, value.to_vec()));
        b = &rest[9 + len..];
    }
    for (name, _) in &fields {
        let ok = !name.is_empty()
            && !name.starts_with('_')
            && name
                .bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
        if !ok {
            bail!("journald drops a field named {name:?}");
        }
    }
    Ok(Entry(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse() {
        let mut b = b"PRIORITY=4\nMESSAGE\n".to_vec();
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(b"a\nb\nJOB_ID=x=y\n");
        let e = parse(&b).unwrap();
        assert_eq!(e.get("PRIORITY").as_deref(), Some("4"));
        assert_eq!(e.get("MESSAGE").as_deref(), Some("a\nb"));
        assert_eq!(e.get("JOB_ID").as_deref(), Some("x=y"));
        assert!(parse(b"job=1\n").is_err());
    }
}

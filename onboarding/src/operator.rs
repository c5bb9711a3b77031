//! The fleet's decisions, as plain functions: the allow list of `serve`, client-ids from a
//! naming template, and which jobs wait for an answer.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::protocol::{self, IdentityContext, check_client_id, check_serial};

/// `serve --allow FILE`: one device a line, `SERIAL` or `SERIAL CLIENT-ID`; `#` starts a
/// comment. A serial without a client-id gets one from the naming template.
pub fn parse_allow(text: &str) -> Result<BTreeMap<String, Option<String>>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let serial = words.next().unwrap_or_default();
        let client = words.next();
        if words.next().is_some() {
            return Err(format!(
                "line {}: `SERIAL` or `SERIAL CLIENT-ID` expected",
                n + 1
            ));
        }
        check_serial(serial).map_err(|e| format!("line {}: {e}", n + 1))?;
        if let Some(c) = client {
            check_client_id(c).map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        out.insert(serial.to_owned(), client.map(str::to_owned));
    }
    Ok(out)
}

/// A serial list (`enroll --serial-file`): one serial a line, `#` comments; a line may have
/// more words (e.g. an allow file), only the first counts.
pub fn parse_serials(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(serial) = line.split_whitespace().next() else {
            continue;
        };
        check_serial(serial).map_err(|e| format!("line {}: {e}", n + 1))?;
        if !out.iter().any(|s| s == serial) {
            out.push(serial.to_owned());
        }
    }
    Ok(out)
}

/// A client-id from a template: `{serial}` and `{model}` are replaced (the model reduced to
/// the characters a client-id may hold, spaces as `-`).
pub fn client_id_from_template(
    template: &str,
    serial: &str,
    model: &str,
) -> Result<String, String> {
    let model: String = model
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        .collect();
    let id = template
        .replace("{serial}", serial)
        .replace("{model}", &model);
    check_client_id(&id).map_err(|e| format!("template `{template}` gives an unusable {e}"))?;
    Ok(id)
}

/// An onboarding job waiting for the fleet (IDENTIFIED, or APPROVED with the answer refused),
/// with the device's identity checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The job's id.
    pub job_id: String,
    /// The job's clientId (the device's temporary `onboarding-<serial>`).
    pub client_id: String,
    /// The job's state.
    pub state: String,
    /// The verified identity, or why there is none.
    pub identity: Result<IdentityContext, String>,
}

/// Reads a job (as wfx shows it) into a [`Pending`]; `None` for a job that is not one.
pub fn pending_of(job: &Value) -> Option<Pending> {
    let job_id = job.get("id")?.as_str()?.to_owned();
    let status = job.get("status")?;
    let state = status.get("state")?.as_str()?.to_owned();
    let identity = match status.get("context") {
        Some(c) if state == protocol::state::IDENTIFIED || state == protocol::state::APPROVED => {
            protocol::verify_identity(&job_id, c)
        }
        _ if state == protocol::state::APPROVED => {
            Err("already answered, and not refused by the device".into())
        }
        _ => Err("not identified yet".into()),
    };
    Some(Pending {
        client_id: job
            .get("clientId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        job_id,
        state,
        identity,
    })
}

/// The serial a bootstrap client-id names.
pub fn serial_of_client_id(client_id: &str) -> Option<&str> {
    client_id.strip_prefix("onboarding-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    #[test]
    fn allow_file() {
        let a = parse_allow("# factory list\nSN1\nSN2 plant-a-7  # named\n\n").unwrap();
        assert_eq!(a.get("SN1"), Some(&None));
        assert_eq!(a.get("SN2"), Some(&Some("plant-a-7".into())));
        assert!(parse_allow("SN1 a b").unwrap_err().starts_with("line 1"));
        assert!(parse_allow("x\nS/N").unwrap_err().starts_with("line 2"));
        assert!(parse_allow("SN1 a/b").is_err());
        assert_eq!(parse_serials("A\nB x\nA\n#c").unwrap(), ["A", "B"]);
    }

    #[test]
    fn template() {
        assert_eq!(
            client_id_from_template("dev-{serial}", "SN1", "x").unwrap(),
            "dev-SN1"
        );
        assert_eq!(
            client_id_from_template("{model}:{serial}", "SN1", "SIMATIC IPC227E").unwrap(),
            "SIMATIC-IPC227E:SN1"
        );
        assert!(client_id_from_template("a b", "SN1", "x").is_err());
        assert!(client_id_from_template("", "SN1", "x").is_err());
    }

    #[test]
    fn pending_jobs() {
        let dev = SigningKey::from_bytes(&[2; 32]);
        let ctx = protocol::identity_context(&dev, "j1", "SN1", "m");
        let job = json!({"id": "j1", "clientId": "onboarding-SN1",
                         "status": {"state": "IDENTIFIED", "context": ctx}});
        let p = pending_of(&job).unwrap();
        assert_eq!(p.identity.unwrap().serial, "SN1");
        let job = json!({"id": "j2", "clientId": "onboarding-SN1",
                         "status": {"state": "IDENTIFIED", "context": ctx}});
        assert!(pending_of(&job).unwrap().identity.is_err());
        assert!(pending_of(&json!({"id": 1})).is_none());
        assert_eq!(serial_of_client_id("onboarding-SN1"), Some("SN1"));
    }
}

//! The onboarding protocol on the wire: the workflow's names, what the device puts in the job
//! status, what the fleet puts in the job definition, and the exact bytes each side signs.
//!
//! Both signed messages are UTF-8 text, one `name value` field per line, each line ended by
//! `\n`, under a first line that names the message and its version (so a signature of one kind
//! can never pass for the other). No field may hold a line break or control character
//! ([`check_job_id`], [`check_serial`], [`check_model`], [`check_client_id`]), so the text is
//! unambiguous. Keys and signatures are lowercase hex.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The workflow's name.
pub const WORKFLOW: &str = "cip.workflow.onboarding";

/// The workflow's states.
pub mod state {
    /// The fleet expects the device; waiting for it (initial).
    pub const ENROLLED: &str = "ENROLLED";
    /// The device sent its identity (status context).
    pub const IDENTIFIED: &str = "IDENTIFIED";
    /// The fleet's signed answer is in the definition.
    pub const APPROVED: &str = "APPROVED";
    /// The device stored its client-id (group CLOSED).
    pub const ONBOARDED: &str = "ONBOARDED";
    /// The fleet refused the device (group FAILED).
    pub const REJECTED: &str = "REJECTED";
}

/// The client-id a device uses before it has one.
pub fn bootstrap_client_id(serial: &str) -> String {
    format!("onboarding-{serial}")
}

/// The first line of the device's identity message.
pub const IDENTITY_V1: &str = "cip-onboarding identity v1";
/// The first line of the fleet's answer message.
pub const ANSWER_V1: &str = "cip-onboarding answer v1";

/// What the device signs when it identifies itself for job `job_id`.
pub fn identity_message(job_id: &str, serial: &str, model: &str, device_key: &str) -> String {
    format!(
        "{IDENTITY_V1}\njob-id {job_id}\nserial {serial}\nmodel {model}\ndevice-key {device_key}\n"
    )
}

/// What the fleet signs when it gives `client_id` to the device with key `device_key` and
/// serial `serial`, in job `job_id`: the answer holds only for that job, device and key.
pub fn answer_message(job_id: &str, serial: &str, device_key: &str, client_id: &str) -> String {
    format!(
        "{ANSWER_V1}\njob-id {job_id}\nserial {serial}\ndevice-key {device_key}\nclient-id {client_id}\n"
    )
}

/// The device's identity, in `status.context` of state IDENTIFIED. When the device refused an
/// answer it reports this again, staying in APPROVED, with `refused` saying why (the message
/// says it too) and `refusedDefinitionHash` naming the definition refused (wfx's
/// `definitionHash`), so that the same answer is not examined twice and a new one is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityContext {
    /// The device's serial.
    pub serial: String,
    /// The device's model.
    pub model: String,
    /// The device's ed25519 public key (hex, 32 bytes).
    pub public_key: String,
    /// Its signature (hex, 64 bytes) over [`identity_message`].
    pub signature: String,
    /// Why the device refused the last answer (then it is still APPROVED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The `definitionHash` of the refused answer, so that it is not examined again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_definition_hash: Option<String>,
}

/// The fleet's answer, the whole job definition in state APPROVED. `jobId` and `serial` are
/// there for people and for clearer refusals; the device checks the signature against its own
/// job id, serial and key, never against these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Answer {
    /// The job the answer is for (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The serial the answer is for (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The client-id the fleet gives the device.
    pub client_id: String,
    /// The device key the client-id is given to (hex).
    pub device_public_key: String,
    /// The fleet key's signature (hex) over [`answer_message`].
    pub signature: String,
}

/// A field that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{value}` {why}")]
pub struct FieldError {
    /// The field.
    pub what: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

fn field_err(what: &'static str, value: &str, why: impl Into<String>) -> FieldError {
    let mut value: String = value.chars().take(80).collect();
    value = value.escape_debug().to_string();
    FieldError {
        what,
        value,
        why: why.into(),
    }
}

fn charset(
    what: &'static str,
    value: &str,
    max: usize,
    ok: impl Fn(char) -> bool,
    allowed: &str,
) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > max {
        return Err(field_err(
            what,
            value,
            format!("must be 1 to {max} characters"),
        ));
    }
    if let Some(c) = value.chars().find(|c| !ok(*c)) {
        return Err(field_err(
            what,
            value,
            format!("has `{}`: use {allowed} only", c.escape_debug()),
        ));
    }
    Ok(())
}

/// wfx's job ids: `[A-Za-z0-9_.-]{1,36}`.
pub fn check_job_id(id: &str) -> Result<(), FieldError> {
    charset(
        "job id",
        id,
        36,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        "letters, digits and _ . -",
    )
}

/// A serial: `[A-Za-z0-9._-]{1,64}` (it becomes part of a client-id, a URL and a file name).
pub fn check_serial(serial: &str) -> Result<(), FieldError> {
    charset(
        "serial",
        serial,
        64,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        "letters, digits and _ . -",
    )
}

/// A model: printable text without line breaks, up to 128 bytes.
pub fn check_model(model: &str) -> Result<(), FieldError> {
    charset(
        "model",
        model,
        128,
        |c| !c.is_control(),
        "printable characters",
    )
}

/// A client-id, as the agent accepts it in `device.client_id`.
pub fn check_client_id(id: &str) -> Result<(), FieldError> {
    charset(
        "client-id",
        id,
        128,
        |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'),
        "letters, digits and - _ . :",
    )
}

/// A public key from its hex form.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "a public key must be 64 hex digits".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 public key: {e}"))
}

/// A signature from its hex form.
pub fn parse_signature(hex_sig: &str) -> Result<Signature, String> {
    let bytes: [u8; 64] = hex::decode(hex_sig.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "a signature must be 128 hex digits".to_owned())?;
    Ok(Signature::from_bytes(&bytes))
}

/// A public key as the protocol writes it: 64 hex digits.
pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// Signs a message; hex.
pub fn sign_hex(key: &SigningKey, message: &str) -> String {
    hex::encode(key.sign(message.as_bytes()).to_bytes())
}

/// Checks a hex signature over a message (strict: no malleable signatures, no weak keys).
pub fn verify_hex(key: &VerifyingKey, message: &str, signature: &str) -> Result<(), String> {
    let sig = parse_signature(signature)?;
    key.verify_strict(message.as_bytes(), &sig)
        .map_err(|_| "the signature does not verify".to_owned())
}

/// The identity the device sends for a job.
pub fn identity_context(
    key: &SigningKey,
    job_id: &str,
    serial: &str,
    model: &str,
) -> IdentityContext {
    let public_key = public_key_hex(&key.verifying_key());
    let signature = sign_hex(key, &identity_message(job_id, serial, model, &public_key));
    IdentityContext {
        serial: serial.to_owned(),
        model: model.to_owned(),
        public_key,
        signature,
        refused: None,
        refused_definition_hash: None,
    }
}

/// Reads a device's identity from a job status context and checks its signature for the job:
/// the device holds the key it names. What the operator sees before approving.
pub fn verify_identity(
    job_id: &str,
    context: &serde_json::Value,
) -> Result<IdentityContext, String> {
    let id: IdentityContext = serde_json::from_value(context.clone())
        .map_err(|e| format!("the status holds no device identity: {e}"))?;
    check_serial(&id.serial).map_err(|e| e.to_string())?;
    check_model(&id.model).map_err(|e| e.to_string())?;
    let key = parse_public_key(&id.public_key)?;
    verify_hex(
        &key,
        &identity_message(job_id, &id.serial, &id.model, &id.public_key),
        &id.signature,
    )
    .map_err(|_| "the device's signature over the job does not verify".to_owned())?;
    Ok(id)
}

/// The fleet's answer for a job and device.
pub fn make_answer(
    fleet: &SigningKey,
    job_id: &str,
    serial: &str,
    device_key: &str,
    client_id: &str,
) -> Answer {
    Answer {
        job_id: Some(job_id.to_owned()),
        serial: Some(serial.to_owned()),
        client_id: client_id.to_owned(),
        device_public_key: device_key.to_owned(),
        signature: sign_hex(
            fleet,
            &answer_message(job_id, serial, device_key, client_id),
        ),
    }
}

/// Why a device refuses an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not an answer of this protocol: what is wrong.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The answer was signed for another job.
    #[error("the answer was made for job {made_for}, not for this job {this}: replayed")]
    OtherJob {
        /// The job id the answer names.
        made_for: String,
        /// This job.
        this: String,
    },
    /// The answer names another serial.
    #[error("the answer is for serial {0}, not this device's")]
    OtherSerial(String),
    /// The answer is for another key: the key it names.
    #[error("the answer is for another device's key ({0})")]
    OtherKey(String),
    #[error(
        "the answer's signature does not verify with the fleet onboarding key (forged, or signed by another key)"
    )]
    /// The fleet key does not verify the signature.
    BadSignature,
}

/// What the device checks of an answer before it takes the client-id: well formed, for this
/// job, serial and key, and signed by the fleet key over exactly those. Returns the client-id.
pub fn verify_answer(
    definition: Option<&serde_json::Value>,
    fleet: &VerifyingKey,
    job_id: &str,
    serial: &str,
    device_key: &str,
) -> Result<String, Refusal> {
    let def = definition.ok_or_else(|| Refusal::Malformed("the job has no definition".into()))?;
    let a: Answer =
        serde_json::from_value(def.clone()).map_err(|e| Refusal::Malformed(e.to_string()))?;
    check_client_id(&a.client_id).map_err(|e| Refusal::Malformed(e.to_string()))?;
    parse_signature(&a.signature).map_err(Refusal::Malformed)?;
    if let Some(j) = a.job_id.as_deref().filter(|j| *j != job_id) {
        return Err(Refusal::OtherJob {
            made_for: j.escape_debug().to_string(),
            this: job_id.to_owned(),
        });
    }
    if let Some(s) = a.serial.as_deref().filter(|s| *s != serial) {
        return Err(Refusal::OtherSerial(s.escape_debug().to_string()));
    }
    if !a.device_public_key.eq_ignore_ascii_case(device_key) {
        let shown: String = a.device_public_key.chars().take(16).collect();
        return Err(Refusal::OtherKey(format!("{}...", shown.escape_debug())));
    }
    verify_hex(
        fleet,
        &answer_message(job_id, serial, device_key, &a.client_id),
        &a.signature,
    )
    .map_err(|_| Refusal::BadSignature)?;
    Ok(a.client_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    #[test]
    fn messages_are_exact() {
        assert_eq!(
            answer_message("j1", "SN1", "ab", "dev-1"),
            "cip-onboarding answer v1\njob-id j1\nserial SN1\ndevice-key ab\nclient-id dev-1\n"
        );
        assert_eq!(
            identity_message("j1", "SN1", "IPC 227E", "ab"),
            "cip-onboarding identity v1\njob-id j1\nserial SN1\nmodel IPC 227E\ndevice-key ab\n"
        );
    }

    #[test]
    fn a_good_answer_gives_the_client_id() {
        let (fleet, dev) = (key(1), key(2));
        let dk = public_key_hex(&dev.verifying_key());
        let a = make_answer(&fleet, "job-1", "SN1", &dk, "dev-0042");
        let def = serde_json::to_value(&a).unwrap();
        assert_eq!(
            verify_answer(Some(&def), &fleet.verifying_key(), "job-1", "SN1", &dk),
            Ok("dev-0042".into())
        );
        // The informative fields are optional: the signature binds job, serial and key anyway.
        let bare = serde_json::json!({"clientId": "dev-0042", "devicePublicKey": dk, "signature": a.signature});
        assert!(verify_answer(Some(&bare), &fleet.verifying_key(), "job-1", "SN1", &dk).is_ok());
        assert_eq!(
            verify_answer(Some(&bare), &fleet.verifying_key(), "job-2", "SN1", &dk),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn bad_answers_are_refused_for_their_reason() {
        let (fleet, dev, other) = (key(1), key(2), key(3));
        let fk = fleet.verifying_key();
        let dk = public_key_hex(&dev.verifying_key());
        let ok = |d: &serde_json::Value| verify_answer(Some(d), &fk, "job-1", "SN1", &dk);
        // Signed by another key.
        let forged = serde_json::to_value(make_answer(&other, "job-1", "SN1", &dk, "x")).unwrap();
        assert_eq!(ok(&forged), Err(Refusal::BadSignature));
        // For another device's key.
        let ok_key = public_key_hex(&other.verifying_key());
        let foreign =
            serde_json::to_value(make_answer(&fleet, "job-1", "SN1", &ok_key, "x")).unwrap();
        assert!(matches!(ok(&foreign), Err(Refusal::OtherKey(_))));
        // Replayed from another job.
        let old = serde_json::to_value(make_answer(&fleet, "job-0", "SN1", &dk, "x")).unwrap();
        assert!(matches!(ok(&old), Err(Refusal::OtherJob { .. })));
        // Another serial.
        let ser = serde_json::to_value(make_answer(&fleet, "job-1", "SN2", &dk, "x")).unwrap();
        assert!(matches!(ok(&ser), Err(Refusal::OtherSerial(_))));
        // Malformed in many ways; never a panic.
        for d in [
            serde_json::json!(null),
            serde_json::json!("x"),
            serde_json::json!({}),
            serde_json::json!({"clientId": 5, "devicePublicKey": dk, "signature": "00"}),
            serde_json::json!({"clientId": "a b", "devicePublicKey": dk, "signature": "00"}),
            serde_json::json!({"clientId": "a", "devicePublicKey": dk, "signature": "zz"}),
            serde_json::json!({"clientId": "a", "devicePublicKey": dk, "signature": "00", "extra": 1}),
        ] {
            assert!(matches!(ok(&d), Err(Refusal::Malformed(_))), "{d}");
        }
        assert!(matches!(
            verify_answer(None, &fk, "job-1", "SN1", &dk),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn identity_round_trip_and_tampering() {
        let dev = key(2);
        let ctx = identity_context(&dev, "job-1", "SN1", "qemu");
        let v = serde_json::to_value(&ctx).unwrap();
        assert_eq!(verify_identity("job-1", &v), Ok(ctx.clone()));
        assert!(verify_identity("job-2", &v).is_err());
        let mut t = v.clone();
        t["serial"] = "SN2".into();
        assert!(verify_identity("job-1", &t).is_err());
        assert!(verify_identity("job-1", &serde_json::json!({"serial": 1})).is_err());
    }

    #[test]
    fn fields_are_checked() {
        assert!(check_serial("SN-1_2.3").is_ok());
        assert!(check_serial("SN 1").is_err());
        assert!(check_serial("").is_err());
        assert!(check_serial(&"a".repeat(65)).is_err());
        assert!(check_model("IPC227E (rev 2)").is_ok());
        assert!(check_model("a\nb").is_err());
        assert!(check_client_id("dev:1").is_ok());
        assert!(check_client_id("dev/1").is_err());
        assert!(check_job_id("0a1b-2c").is_ok());
        assert!(check_job_id("a/b").is_err());
        assert!(parse_public_key("00").is_err());
        assert!(parse_signature("00").is_err());
    }
}

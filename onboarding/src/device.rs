//! The device's side of the exchange as one plain function: the onboarding job as wfx shows it
//! and the device's identity in, the next step out. The agent runs the steps (wfx requests,
//! storing the client-id) and asks again.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::Value;

use crate::protocol::{self, IdentityContext, Refusal, state};

/// The device: serial, model, key.
pub struct Me<'a> {
    /// Its serial (signed into its identity).
    pub serial: &'a str,
    /// Its model.
    pub model: &'a str,
    /// Its ed25519 key.
    pub key: &'a SigningKey,
}

/// The onboarding job, as much of it as the decision needs.
#[derive(Debug, Clone, Copy)]
pub struct JobView<'a> {
    /// The job's id (the answer is signed for it).
    pub id: &'a str,
    /// The job's state.
    pub state: &'a str,
    /// The job's definition (the fleet's answer, once there).
    pub definition: Option<&'a Value>,
    /// `status.context`.
    pub context: Option<&'a Value>,
    /// `status.message`.
    pub message: Option<&'a str>,
    /// `status.definitionHash` (set by wfx).
    pub definition_hash: Option<&'a str>,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Report IDENTIFIED with this identity (first time, or the status does not hold ours).
    Identify(IdentityContext),
    /// Nothing to do until wfx changes the job.
    Wait,
    /// The answer holds: store the client-id, then report ONBOARDED.
    Accept {
        /// The client-id of the answer.
        client_id: String,
    },
    /// The answer does not hold: nothing is stored; report the refusal (staying in APPROVED,
    /// with the identity again), so the fleet can answer again.
    Refuse {
        /// Why the answer does not hold.
        refusal: Refusal,
        /// The identity to report again.
        identity: IdentityContext,
    },
    /// The fleet rejected the device: acknowledge it in the status (same state).
    AcknowledgeRejection {
        /// The fleet's reason.
        reason: String,
    },
    /// Rejected, and already acknowledged.
    Rejected {
        /// The fleet's reason.
        reason: String,
    },
    /// The job is closed (ONBOARDED).
    Closed,
    /// The job id itself cannot be used (wfx's ids are `[A-Za-z0-9_.-]{1,36}`).
    BadJob(String),
}

/// Marks the device's acknowledgement of a rejection in `status.context`.
pub const ACKNOWLEDGED: &str = "deviceAcknowledged";

/// The next step for one onboarding job.
pub fn decide(job: &JobView, me: &Me, fleet: &VerifyingKey) -> Step {
    if let Err(e) = protocol::check_job_id(job.id) {
        return Step::BadJob(e.to_string());
    }
    let mine = || protocol::identity_context(me.key, job.id, me.serial, me.model);
    match job.state {
        state::ENROLLED => Step::Identify(mine()),
        state::IDENTIFIED => {
            let ours = mine();
            let shown = job
                .context
                .and_then(|c| protocol::verify_identity(job.id, c).ok());
            match shown {
                Some(s) if s.public_key == ours.public_key && s.serial == ours.serial => Step::Wait,
                _ => Step::Identify(ours),
            }
        }
        state::APPROVED => {
            // This very definition was refused already: wait for another answer.
            let refused = job
                .context
                .and_then(|c| c.get("refusedDefinitionHash"))
                .and_then(Value::as_str);
            if refused.is_some() && refused == job.definition_hash {
                return Step::Wait;
            }
            let dk = protocol::public_key_hex(&me.key.verifying_key());
            match protocol::verify_answer(job.definition, fleet, job.id, me.serial, &dk) {
                Ok(client_id) => Step::Accept { client_id },
                Err(refusal) => {
                    let mut identity = mine();
                    identity.refused = Some(refusal.to_string());
                    identity.refused_definition_hash = job.definition_hash.map(str::to_owned);
                    Step::Refuse { refusal, identity }
                }
            }
        }
        state::ONBOARDED => Step::Closed,
        state::REJECTED => {
            let reason = job
                .message
                .filter(|m| !m.is_empty())
                .unwrap_or("no reason given")
                .to_owned();
            let acked = job
                .context
                .and_then(|c| c.get(ACKNOWLEDGED))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if acked {
                Step::Rejected { reason }
            } else {
                Step::AcknowledgeRejection { reason }
            }
        }
        _ => Step::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys() -> (SigningKey, SigningKey) {
        (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        )
    }

    fn view<'a>(state: &'a str, def: Option<&'a Value>, ctx: Option<&'a Value>) -> JobView<'a> {
        JobView {
            id: "job-1",
            state,
            definition: def,
            context: ctx,
            message: None,
            definition_hash: Some("h1"),
        }
    }

    #[test]
    fn walk() {
        let (fleet, dev) = keys();
        let me = Me {
            serial: "SN1",
            model: "qemu",
            key: &dev,
        };
        let fk = fleet.verifying_key();
        let Step::Identify(id) = decide(&view("ENROLLED", None, None), &me, &fk) else {
            panic!()
        };
        let ctx = serde_json::to_value(&id).unwrap();
        assert_eq!(
            decide(&view("IDENTIFIED", None, Some(&ctx)), &me, &fk),
            Step::Wait
        );
        // A status that is not ours (another key, or garbage): identify again.
        let other =
            serde_json::to_value(protocol::identity_context(&fleet, "job-1", "SN1", "q")).unwrap();
        assert!(matches!(
            decide(&view("IDENTIFIED", None, Some(&other)), &me, &fk),
            Step::Identify(_)
        ));
        assert!(matches!(
            decide(&view("IDENTIFIED", None, Some(&json!(3))), &me, &fk),
            Step::Identify(_)
        ));
        let dk = protocol::public_key_hex(&dev.verifying_key());
        let ans = serde_json::to_value(protocol::make_answer(&fleet, "job-1", "SN1", &dk, "d-1"))
            .unwrap();
        assert_eq!(
            decide(&view("APPROVED", Some(&ans), None), &me, &fk),
            Step::Accept {
                client_id: "d-1".into()
            }
        );
        let forged =
            serde_json::to_value(protocol::make_answer(&dev, "job-1", "SN1", &dk, "d-1")).unwrap();
        let Step::Refuse { refusal, identity } =
            decide(&view("APPROVED", Some(&forged), None), &me, &fk)
        else {
            panic!()
        };
        assert_eq!(refusal, Refusal::BadSignature);
        assert!(identity.refused.as_ref().unwrap().contains("signature"));
        // Reported, the same definition is not examined again; a new one is.
        let refused = serde_json::to_value(&identity).unwrap();
        let mut v = view("APPROVED", Some(&ans), Some(&refused));
        assert_eq!(decide(&v, &me, &fk), Step::Wait);
        v.definition_hash = Some("h2");
        assert!(matches!(decide(&v, &me, &fk), Step::Accept { .. }));
        assert_eq!(
            decide(&view("ONBOARDED", None, None), &me, &fk),
            Step::Closed
        );
        assert_eq!(decide(&view("NEW-STATE", None, None), &me, &fk), Step::Wait);
        let mut bad = view("ENROLLED", None, None);
        bad.id = "../x";
        assert!(matches!(decide(&bad, &me, &fk), Step::BadJob(_)));
    }

    #[test]
    fn rejection_is_acknowledged_once() {
        let (fleet, dev) = keys();
        let me = Me {
            serial: "SN1",
            model: "qemu",
            key: &dev,
        };
        let fk = fleet.verifying_key();
        let mut v = view("REJECTED", None, None);
        v.message = Some("unknown device");
        assert_eq!(
            decide(&v, &me, &fk),
            Step::AcknowledgeRejection {
                reason: "unknown device".into()
            }
        );
        let ack = json!({ ACKNOWLEDGED: true });
        v.context = Some(&ack);
        assert!(matches!(decide(&v, &me, &fk), Step::Rejected { .. }));
    }
}

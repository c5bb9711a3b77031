//! The onboarding workflow file: valid against wfx's workflow schema, and shaped as the
//! protocol needs (who may move where, which group each state is in).

use std::path::Path;

use cip_onboarding::protocol::{WORKFLOW, state};
use serde_json::Value;

fn load() -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("cip.workflow.onboarding.yml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

#[test]
fn valid_against_the_wfx_workflow_schema() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_slice(
        &std::fs::read(dir.join("../tests/wfx/spec/workflow.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let wf = load();
    let errors: Vec<String> = validator.iter_errors(&wf).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    // The schema does catch a broken workflow (the check is not vacuous).
    let mut broken = wf.clone();
    broken["transitions"][0]["eligible"] = "DEVICE".into();
    assert!(!validator.is_valid(&broken));
}

#[test]
fn states_groups_and_actors() {
    let wf = load();
    assert_eq!(wf["name"], WORKFLOW);
    let states: Vec<&str> = wf["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            state::ENROLLED,
            state::IDENTIFIED,
            state::APPROVED,
            state::ONBOARDED,
            state::REJECTED
        ]
    );
    let group = |name: &str| -> Vec<&str> {
        wf["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()["states"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect()
    };
    assert_eq!(group("OPEN"), ["ENROLLED", "IDENTIFIED", "APPROVED"]);
    assert_eq!(group("CLOSED"), ["ONBOARDED"]);
    assert_eq!(group("FAILED"), ["REJECTED"]);
    let mut moves: Vec<String> = wf["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{} {}->{}",
                t["eligible"].as_str().unwrap(),
                t["from"].as_str().unwrap(),
                t["to"].as_str().unwrap()
            )
        })
        .collect();
    moves.sort();
    assert_eq!(
        moves,
        [
            "CLIENT APPROVED->ONBOARDED",
            "CLIENT ENROLLED->IDENTIFIED",
            "WFX APPROVED->REJECTED",
            "WFX ENROLLED->REJECTED",
            "WFX IDENTIFIED->APPROVED",
            "WFX IDENTIFIED->REJECTED",
        ]
    );
    // ENROLLED is the only state nothing leads to: wfx starts new jobs there.
    let initial: Vec<&&str> = states
        .iter()
        .filter(|s| !moves.iter().any(|m| m.ends_with(&format!("->{s}"))))
        .collect();
    assert_eq!(initial, [&"ENROLLED"]);
}

//! An invalid Canary gets a `Validated=False` condition and a Warning event naming the field
//! path, is not run, and does not stop the other canaries; once fixed it starts like any other.

#[path = "kube_common/mod.rs"]
mod kube_common;

use std::time::Duration;

use kube_common::*;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

fn canary(name: &str, step_weight: &str) -> String {
    format!(
        r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: {name}, namespace: test}}
spec:
  provider: kubernetes
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  service: {{port: 9898}}
  analysis: {{interval: 1s, threshold: 2, iterations: 2, stepWeight: {step_weight}}}
"#
    )
}

fn validated(c: &serde_json::Value) -> Option<serde_json::Value> {
    c["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Validated")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_canaries_are_reported_and_the_others_keep_running() {
    let mut env = Env::start().await;
    env.create(deployment("good", "podinfo:6.0.0"));
    env.create(deployment("bad", "podinfo:6.0.0"));
    env.create(deployment("typo", "podinfo:6.0.0"));
    // Both iterations and stepWeight (the CRD's oneOf), and a stepWeight out of range.
    env.create_yaml(&canary("bad", "150"));
    // A field of the wrong type cannot even be read as a Canary.
    let mut typo: serde_json::Value = serde_yaml_ng::from_str(&canary("typo", "10")).unwrap();
    typo["spec"]["analysis"]["threshold"] = json!("five");
    env.create(typo);
    let mut good: serde_json::Value = serde_yaml_ng::from_str(&canary("good", "10")).unwrap();
    good["spec"]["analysis"]
        .as_object_mut()
        .unwrap()
        .remove("stepWeight");
    env.create(good);

    let bad = env
        .wait_for(CANARY_API, "Canary", "bad", |c| validated(c).is_some())
        .await;
    let cond = validated(&bad).unwrap();
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "InvalidSpec");
    let msg = cond["message"].as_str().unwrap();
    assert!(msg.starts_with("invalid canary spec: "), "{msg}");
    assert!(
        msg.contains("spec.analysis.stepWeight: must be between 1 and 100, got 150"),
        "{msg}"
    );
    assert!(msg.contains("found iterations and stepWeight"), "{msg}");
    env.wait_event("bad", "Warning: invalid canary spec: ").await;
    assert!(
        env.event_messages("bad")
            .iter()
            .any(|m| m.contains("spec.analysis.stepWeight"))
    );

    let typo = env
        .wait_for(CANARY_API, "Canary", "typo", |c| validated(c).is_some())
        .await;
    let msg = validated(&typo).unwrap()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("spec.analysis.threshold"), "{msg}");
    env.wait_event("typo", "spec.analysis.threshold").await;

    // The valid canary runs: it initializes and promotes a new revision.
    env.wait_phase("good", "Initialized", LIMIT).await;
    env.set_image("good", "podinfo:6.0.1");
    env.wait_phase("good", "Succeeded", LIMIT).await;

    // The invalid ones were never acted on.
    assert!(env.get("apps/v1", "Deployment", "bad-primary").is_none());
    assert_eq!(
        env.canary("bad")["status"]["phase"],
        "",
        "no phase: never initialized"
    );
    assert_eq!(
        env.event_messages("bad").len(),
        1,
        "reported once: {:?}",
        env.event_messages("bad")
    );

    // Fixed: the condition goes away and the canary initializes.
    let mut fixed = env.canary("bad");
    fixed["spec"]["analysis"]
        .as_object_mut()
        .unwrap()
        .remove("stepWeight");
    env.server.store().upsert(fixed).unwrap();
    let c = env.wait_phase("bad", "Initialized", LIMIT).await;
    assert!(validated(&c).is_none(), "{c}");
    assert!(env.get("apps/v1", "Deployment", "bad-primary").is_some());
    env.stop_agent().await;
}

//! A Canary the CRD's schema accepts but aviary's validation does not gets a `Validated=False`
//! condition and a Warning event naming the field path, is not run, and does not stop the other
//! canaries; once fixed it starts like any other. A field of the wrong type never gets that far:
//! the real API server refuses it (server-side schema validation of `aviary crds`).

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

/// The canary with `field` of its analysis removed (it has both iterations and stepWeight).
fn without(mut canary: serde_json::Value, field: &str) -> serde_json::Value {
    let analysis = canary["spec"]["analysis"].as_object_mut().unwrap();
    analysis.remove(field).expect("the analysis has the field");
    canary
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
    let mut env = Env::start("invalid-canaries-are-reported-and-the-ot").await;
    env.create(deployment("good", "podinfo:6.0.0")).await;
    env.create(deployment("bad", "podinfo:6.0.0")).await;
    // Both iterations and stepWeight: the CRD's oneOf, enforced by the API server.
    let refused = env
        .objects
        .create(env.yaml(&canary("bad", "10")))
        .await
        .unwrap_err();
    assert_eq!(refused.api_code(), Some(422), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("must validate one and only one schema (oneOf)"),
        "{refused}"
    );
    // A stepWeight out of range passes the schema; aviary's validation catches it.
    env.create(without(env.yaml(&canary("bad", "150")), "iterations"))
        .await;
    // A field of the wrong type is refused by the API server, naming the field.
    let mut typo = env.yaml(&canary("typo", "10"));
    typo["spec"]["analysis"]["threshold"] = json!("five");
    let refused = env.objects.create(typo).await.unwrap_err();
    assert_eq!(refused.api_code(), Some(422), "{refused}");
    let text = refused.to_string();
    assert!(text.contains("spec.analysis.threshold"), "{text}");
    assert!(env.get(CANARY_API, "Canary", "typo").await.is_none());
    env.create(without(env.yaml(&canary("good", "10")), "stepWeight"))
        .await;

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
    env.wait_event("bad", "Warning: invalid canary spec: ").await;
    assert!(
        env.event_messages("bad")
            .await
            .iter()
            .any(|m| m.contains("spec.analysis.stepWeight"))
    );

    // The valid canary runs: it initializes and promotes a new revision.
    env.wait_phase("good", "Initialized", LIMIT).await;
    env.set_image("good", "podinfo:6.0.1").await;
    env.wait_phase("good", "Succeeded", LIMIT).await;

    // The invalid ones were never acted on.
    assert!(env.get("apps/v1", "Deployment", "bad-primary").await.is_none());
    assert_eq!(
        env.canary("bad").await["status"]["phase"],
        "",
        "no phase: never initialized"
    );
    assert_eq!(
        env.event_messages("bad").await.len(),
        1,
        "reported once: {:?}",
        env.event_messages("bad").await
    );

    // Fixed: the condition goes away and the canary initializes.
    env.objects
        .update(CANARY_API, "Canary", Some(&env.ns), "bad", |c| {
            c["spec"]["analysis"]["stepWeight"] = json!(10);
        })
        .await
        .unwrap();
    let c = env.wait_phase("bad", "Initialized", LIMIT).await;
    assert!(validated(&c).is_none(), "{c}");
    assert!(env.get("apps/v1", "Deployment", "bad-primary").await.is_some());
    env.stop_agent().await;
}

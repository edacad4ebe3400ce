//! The agent as the ServiceAccount bound to deploy/rbac (not as admin): a whole canary
//! (initialization, analysis, promotion, rollback) with zero 403s in the API server's audit log;
//! then one verb removed from its ClusterRole: the agent says which permission is missing
//! (resource and verb, and the identity) in a Warning event, keeps running and keeps the
//! canary's state, and goes on once the verb is granted again.

#[path = "kube_common/mod.rs"]
mod kube_common;

use std::time::Duration;

use kube_common::*;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

fn forbidden(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(audit_line)
        .collect()
}

/// Namespace `name` with the podinfo Deployment and its gatewayapi canary (steps of 10 up to 20,
/// success rate), and the agent started as deploy/rbac's ServiceAccount, whose user name comes
/// back.
async fn canary_as_service_account(name: &str) -> (Env, String) {
    let mut env = Env::without_agent(name, None).await;
    let user = env.run_agent_as_service_account().await;
    env.create_podinfo_canary(&weighted_analysis(20, 10, true)).await;
    env.start_agent();
    (env, user)
}

/// The agent's ClusterRole grants exactly `verbs` on deployments.
async fn deployment_verbs(env: &Env, verbs: &[&str]) {
    env.edit_agent_role(|role| {
        for rule in role["rules"].as_array_mut().unwrap() {
            if rule["resources"] == json!(["deployments"]) {
                rule["verbs"] = json!(verbs);
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_canary_as_the_deploy_rbac_service_account_sees_no_403() {
    let (mut env, user) = canary_as_service_account("rbac-whole-canary").await;

    env.wait_phase("podinfo", "Initialized", LIMIT).await;
    env.set_image("podinfo", "podinfo:6.0.1").await;
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    env.wait_event("podinfo", "Promotion completed! Scaling down podinfo.test")
        .await;
    env.prom.set(&["http_request_duration_seconds_count"], 42.0);
    env.set_image("podinfo", "podinfo:6.0.2").await;
    env.wait_phase("podinfo", "Failed", LIMIT).await;
    env.wait_event("podinfo", "Canary failed! Scaling down podinfo.test")
        .await;
    env.stop_agent().await;

    let audit = env.audit(&user);
    assert!(
        audit.len() > 50,
        "the agent's requests are in the audit log: {}",
        audit.len()
    );
    let denied = forbidden(&audit);
    assert!(denied.is_empty(), "403s for {user}:\n{}", denied.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_verb_is_named_and_the_canary_goes_on_once_granted() {
    let (mut env, user) = canary_as_service_account("rbac-removed-verb").await;
    env.wait_phase("podinfo", "Initialized", LIMIT).await;

    // No more `patch` on deployments: a new revision cannot scale the canary up.
    deployment_verbs(&env, &["get", "list", "watch", "create"]).await;
    env.set_image("podinfo", "podinfo:6.0.1").await;
    let expected = "missing permission: patch deployments.apps";
    env.wait_event("podinfo", expected).await;
    let event = env
        .event_messages("podinfo")
        .await
        .into_iter()
        .find(|m| m.contains(expected))
        .unwrap();
    assert!(event.starts_with("Warning: "), "{event}");
    assert!(event.contains(&user), "names the identity that lacks it: {event}");
    assert!(
        event.contains("deploy/rbac/cluster-role.yaml"),
        "says where to grant it: {event}"
    );
    let c = env.canary("podinfo").await;
    assert!(env.agent_running(), "the agent keeps running");
    // The canary's state is kept: still initialized on the old revision, nothing rolled back.
    let phase = c["status"]["phase"].as_str().unwrap().to_string();
    assert!(
        ["Initialized", "Progressing"].contains(&phase.as_str()),
        "{phase}"
    );
    assert!(!env.has_event("podinfo", "Rolling back").await);
    assert!(!forbidden(&env.audit(&user)).is_empty());

    // Granted again: the same canary goes on to promotion, and the condition is gone.
    deployment_verbs(&env, &["get", "list", "watch", "create", "patch"]).await;
    env.wait_phase("podinfo", "Succeeded", LIMIT).await;
    let primary = env.obj("apps/v1", "Deployment", "podinfo-primary").await;
    assert_eq!(image(&primary), "podinfo:6.0.1");
    env.stop_agent().await;
}

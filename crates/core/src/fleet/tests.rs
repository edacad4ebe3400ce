//! The sequencer over a model fleet: table-driven cases and invariants over random runs.

use std::collections::BTreeMap;
use std::time::Duration;

use aviary_api::FleetRollout;
use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::verbs::{abort, approve_wave, pause, resume, retry_cluster, skip_cluster};
use super::*;

fn rollout(spec: Value) -> FleetRollout {
    serde_json::from_value(json!({
        "apiVersion": "aviary.dev/v1alpha1",
        "kind": "FleetRollout",
        "metadata": {"name": "r1"},
        "spec": spec,
    }))
    .unwrap()
}

fn base_spec() -> Value {
    json!({
        "canary": {"namespace": "test", "name": "podinfo"},
        "revision": {"containerImages": {"podinfod": "podinfo:2"}},
    })
}

/// [`base_spec`] with the fields of `extra`.
fn rollout_spec(extra: Value) -> Value {
    with(base_spec(), extra)
}

fn with(mut spec: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// podinfod at `podinfo:TAG`.
fn rev(tag: &str) -> Revision {
    Revision {
        container_images: [("podinfod".to_string(), format!("podinfo:{tag}"))].into(),
        version: String::new(),
    }
}

fn old_rev() -> Revision {
    rev("1")
}

fn new_rev() -> Revision {
    rev("2")
}

fn steady() -> CanaryObs {
    CanaryObs {
        phase: "Succeeded".into(),
        last_applied_spec: "fp-old".into(),
        last_promoted_spec: "fp-old".into(),
        target_revision: old_rev(),
        primary_revision: old_rev(),
        primary_success_rate: Some(100.0),
        ..Default::default()
    }
}

/// (name, region, labels) → registered clusters that all report the canary.
fn clusters(specs: &[(&str, &str)]) -> Vec<ClusterInfo> {
    specs
        .iter()
        .map(|(n, r)| ClusterInfo {
            name: n.to_string(),
            region: r.to_string(),
            labels: [("env".to_string(), "prod".to_string())].into(),
            canary: Some(steady()),
        })
        .collect()
}

fn t0() -> Timestamp {
    "2025-01-01T00:00:00Z".parse().unwrap()
}

fn errors(spec: Value, fleet: &[ClusterInfo]) -> Vec<String> {
    match resolve_plan(&rollout(spec), fleet) {
        Ok(p) => panic!("expected errors, got plan {p:?}"),
        Err(e) => e
            .into_iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect(),
    }
}

// === plan resolution ===

#[test]
fn plan_assigns_each_cluster_to_the_first_wave_that_selects_it() {
    let fleet = clusters(&[("a1", "us"), ("a2", "us"), ("b1", "eu"), ("c1", "ap")]);
    let spec = rollout_spec(json!({"waves": [
            {"name": "first", "clusters": {"matchLabels": {"cluster": "a1"}}},
            {"name": "us", "regions": ["us"], "maxConcurrent": "50%"},
            {"name": "rest", "maxConcurrent": 5, "approval": "manual"},
        ], "failurePolicy": {"mandatoryWaves": ["first"], "maxFailedClusters": "50%", "rollback": "all"},
           "clusterDeadline": "10m"}));
    let plan = resolve_plan(&rollout(spec), &fleet).unwrap();
    let waves: Vec<(String, Vec<String>, u32, bool, bool)> = plan
        .waves
        .iter()
        .map(|w| {
            (
                w.name.clone(),
                w.clusters.iter().map(|c| c.name.clone()).collect(),
                w.max_concurrent,
                w.manual_approval,
                w.mandatory,
            )
        })
        .collect();
    assert_eq!(
        waves,
        vec![
            ("first".into(), vec!["a1".into()], 1, false, true),
            ("us".into(), vec!["a2".into()], 1, false, false),
            ("rest".into(), vec!["b1".into(), "c1".into()], 5, true, false),
        ]
    );
    assert_eq!(plan.waves[0].clusters[0].previous_revision, old_rev());
    assert_eq!(plan.waves[0].clusters[0].previous_fingerprint, "fp-old");
    assert_eq!(plan.max_failed_clusters, 2); // 50% of 4
    assert_eq!(plan.rollback, RollbackScope::All);
    assert_eq!(plan.cluster_deadline, Duration::from_secs(600));
    assert_eq!(plan.mode, Mode::Push);
}

#[test]
fn plan_by_region_and_exclusions() {
    let mut fleet = clusters(&[("a1", "us"), ("a2", "us"), ("b1", "eu"), ("x", "eu")]);
    fleet[3].canary = None;
    fleet.push(ClusterInfo {
        name: "dev".into(),
        region: "us".into(),
        labels: [("env".to_string(), "dev".to_string())].into(),
        canary: Some(steady()),
    });
    let spec = rollout_spec(
        json!({"byRegion": ["eu", "us"], "clusters": {"matchLabels": {"env": "prod"}},
               "waveDefaults": {"maxConcurrent": "25%", "bake": {"duration": "1m", "minRequests": 10}},
               "failurePolicy": {"maxFailedClusters": "40%"}}),
    );
    let plan = resolve_plan(&rollout(spec), &fleet).unwrap();
    assert_eq!(plan.waves.len(), 2);
    assert_eq!(plan.waves[0].name, "eu");
    assert_eq!(plan.waves[1].clusters.len(), 2);
    assert_eq!(plan.waves[1].max_concurrent, 1); // 25% of 2, rounded up
    assert_eq!(plan.waves[1].bake.as_ref().unwrap().min_requests, 10);
    assert_eq!(plan.max_failed_clusters, 1); // 40% of 3, rounded down
    assert_eq!(plan.excluded, vec!["x: does not report canary test/podinfo"]);
}

#[test]
fn plan_errors_name_the_field() {
    let fleet = clusters(&[("a1", "us"), ("b1", "eu")]);
    let mut without_canary = fleet.clone();
    for c in &mut without_canary {
        c.canary = None;
    }
    let cases: Vec<(Value, &[ClusterInfo], &str)> = vec![
        (
            rollout_spec(json!({"waves": [{"name": "w"}], "canary": {"namespace": "test", "name": "nope"}})),
            &without_canary,
            "spec.canary: no selected cluster reports canary test/nope",
        ),
        (
            rollout_spec(json!({"waves": [{"name": "w"}], "clusters": {"matchLabels": {"env": "qa"}}})),
            &fleet,
            "spec.clusters: selects none of the 2 registered clusters",
        ),
        (
            rollout_spec(json!({"waves": [{"name": "w"}]})),
            &[],
            "spec.clusters: no cluster is registered",
        ),
        (
            rollout_spec(
                json!({"waves": [{"name": "w", "clusters": {"matchExpressions": [{"key": "region", "operator": "In", "values": ["mars"]}]}}]}),
            ),
            &fleet,
            "spec.waves[0].clusters: selects no cluster",
        ),
        (
            rollout_spec(json!({"waves": [{"name": "all"}, {"name": "late", "regions": ["us"]}]})),
            &fleet,
            "spec.waves[1].regions: every cluster it selects is already in an earlier wave: a1 (wave all)",
        ),
        (
            rollout_spec(json!({"byRegion": ["us", "ap"]})),
            &fleet,
            "spec.byRegion[1]: no selected cluster reporting canary test/podinfo is in region \"ap\"",
        ),
        (
            rollout_spec(json!({"waves": [{"name": "w", "maxConcurrent": "150%"}]})),
            &fleet,
            "spec.waves[0].maxConcurrent: a percent must be between 0% and 100%",
        ),
        (
            rollout_spec(json!({"waves": [{"name": "w"}], "failurePolicy": {"mandatoryWaves": ["first"]}})),
            &fleet,
            "spec.failurePolicy.mandatoryWaves[0]: \"first\" is not a wave of this rollout",
        ),
        (
            rollout_spec(json!({"waves": [{"name": "w", "bake": {"minSuccessRate": 101.0}}]})),
            &fleet,
            "spec.waves[0].bake.minSuccessRate: must be a percentage between 0 and 100",
        ),
        (
            rollout_spec(json!({"waves": [{"name": "w"}], "clusterDeadline": "0s"})),
            &fleet,
            "spec.clusterDeadline: must be longer than 0",
        ),
    ];
    for (spec, fleet, want) in cases {
        let got = errors(spec, fleet);
        assert!(
            got.iter().any(|e| e.starts_with(want)),
            "want {want:?}, got {got:?}"
        );
    }
    let mut bad_name = rollout(rollout_spec(json!({"waves": [{"name": "w"}]})));
    bad_name.metadata.name = Some("a/b".into());
    let got = resolve_plan(&bad_name, &fleet).unwrap_err();
    assert_eq!(got[0].path, "metadata.name");
}

// === the model fleet ===

/// A fleet of model agents that act on commands like Flagger would, driven step by step.
struct Model {
    plan: Plan,
    state: RolloutState,
    view: FleetView,
    now: Timestamp,
    /// Every command reconcile or a verb returned, in order.
    sent: Vec<Command>,
}

impl Model {
    fn new(spec: Value, fleet: &[(&str, &str)]) -> Self {
        let infos = clusters(fleet);
        let plan = resolve_plan(&rollout(spec), &infos).unwrap();
        let view = infos
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Observation {
                        connected: true,
                        canary: c.canary.clone(),
                        gate_request: None,
                    },
                )
            })
            .collect();
        let state = RolloutState::new(&plan, "alice", t0());
        Self {
            plan,
            state,
            view,
            now: t0(),
            sent: Vec::new(),
        }
    }

    /// Steps, then asserts the rollout's phase.
    #[track_caller]
    fn step_to(&mut self, phase: RolloutPhase) {
        self.step();
        assert_eq!(self.state.phase, phase);
    }

    /// Steps `clusters` to success one at a time, stepping after each.
    fn finish_in_turn(&mut self, clusters: &[&str]) {
        for c in clusters {
            self.step();
            self.finish(c, true);
        }
        self.step();
    }

    /// Delivers an agent's ack of command `id`; whether it changed anything.
    fn ack(&mut self, id: &str, applied: bool, fingerprint: &str, message: &str) -> bool {
        on_ack(
            &self.plan,
            &mut self.state,
            id,
            applied,
            fingerprint,
            message,
            self.now,
        )
    }

    /// The first history record of `kind`.
    fn record(&self, kind: &str) -> &HistoryEntry {
        self.state
            .history
            .iter()
            .find(|h| h.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} record in {:?}", self.state.history))
    }

    fn obs(&mut self, c: &str) -> &mut CanaryObs {
        self.view.get_mut(c).unwrap().canary.as_mut().unwrap()
    }

    /// Reconciles and delivers StartRevision acks (the agent applies the revision at once).
    fn step(&mut self) -> Vec<Command> {
        let cmds = reconcile(&self.plan, &mut self.state, &self.view, self.now);
        self.deliver(&cmds);
        cmds
    }

    fn deliver(&mut self, cmds: &[Command]) {
        self.sent.extend(cmds.iter().cloned());
        for c in cmds {
            match c {
                Command::StartRevision {
                    id,
                    cluster,
                    revision,
                    ..
                } => {
                    let o = self.obs(cluster);
                    o.target_revision = revision.clone();
                    o.last_applied_spec = "fp-new".into();
                    o.phase = "Progressing".into();
                    o.canary_weight = 10;
                    on_ack(&self.plan, &mut self.state, id, true, "fp-new", "", self.now);
                }
                Command::RollbackCanary { cluster, .. } => {
                    let o = self.obs(cluster);
                    if o.phase == "Progressing" {
                        o.phase = "Failed".into();
                        o.canary_weight = 0;
                    }
                }
                Command::Revert {
                    cluster, revision, ..
                } => {
                    let o = self.obs(cluster);
                    o.primary_revision = revision.clone();
                    o.target_revision = revision.clone();
                    o.last_applied_spec = "fp-old".into();
                    o.last_promoted_spec = "fp-old".into();
                    o.phase = "Succeeded".into();
                }
                Command::OpenGate { .. } => {}
            }
        }
    }

    /// The cluster's analysis ends.
    fn finish(&mut self, c: &str, ok: bool) {
        let o = self.obs(c);
        assert_eq!(o.last_applied_spec, "fp-new", "{c} was not started");
        if ok {
            o.phase = "Succeeded".into();
            o.last_promoted_spec = "fp-new".into();
            o.primary_revision = new_rev();
            o.served_requests = 0;
            o.canary_weight = 0;
        } else {
            o.phase = "Failed".into();
            o.failed_checks = 5;
            o.canary_weight = 0;
            o.metrics.insert("request-success-rate".into(), 42.0);
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now = plus(self.now, Duration::from_secs(secs));
    }

    fn phases(&self) -> Vec<(String, &'static str)> {
        self.state
            .clusters()
            .map(|c| (c.name.clone(), c.phase.as_str()))
            .collect()
    }

    fn phase_of(&self, c: &str) -> ClusterPhase {
        self.state.clusters().find(|s| s.name == c).unwrap().phase
    }

    fn kinds(&self) -> Vec<String> {
        self.state.history.iter().map(|h| h.kind.clone()).collect()
    }
}

fn starts(cmds: &[Command]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::StartRevision { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

fn two_waves(extra: Value) -> Value {
    with(
        rollout_spec(json!({"waves": [
            {"name": "first", "regions": ["us"], "maxConcurrent": 1},
            {"name": "rest", "maxConcurrent": 2},
        ]})),
        extra,
    )
}

const FLEET: &[(&str, &str)] = &[("us1", "us"), ("us2", "us"), ("eu1", "eu"), ("eu2", "eu")];

#[test]
fn waves_run_in_order_within_max_concurrent() {
    let mut m = Model::new(two_waves(json!({})), FLEET);
    assert_eq!(starts(&m.step()), vec!["r1/us1/1"]);
    assert_eq!(m.state.phase, RolloutPhase::Running);
    assert!(m.step().is_empty(), "nothing new while us1 runs");
    assert_eq!(m.phase_of("us1"), ClusterPhase::Progressing);
    m.finish("us1", true);
    assert_eq!(starts(&m.step()), vec!["r1/us2/1"]);
    m.finish("us2", true);
    assert_eq!(starts(&m.step()), vec!["r1/eu1/1", "r1/eu2/1"]);
    m.finish("eu1", true);
    m.finish("eu2", true);
    assert!(m.step().is_empty());
    assert_eq!(m.state.phase, RolloutPhase::Succeeded);
    assert!(m.state.finished.is_some());
    let k = m.kinds();
    assert_eq!(k.iter().filter(|k| *k == "cluster-started").count(), 4);
    assert_eq!(k.iter().filter(|k| *k == "wave-succeeded").count(), 2);
    assert_eq!(k.last().unwrap(), "rollout-succeeded");
    // Terminal: nothing changes any more.
    let before = m.state.clone();
    m.finish("eu1", false);
    m.advance(100_000);
    assert!(m.step().is_empty());
    assert_eq!(m.state, before);
}

#[test]
fn rollback_scopes() {
    // (scope, expected commands after us2 fails in wave `first` while eu waves are pending)
    // First wave has us1 (succeeded) and us2 (fails): mandatory.
    let cases = [
        ("cluster", vec![], vec![("us1", "Succeeded"), ("us2", "Failed")]),
        (
            "wave",
            vec!["Revert r1/us1/1/revert"],
            vec![("us1", "Reverted"), ("us2", "Failed")],
        ),
        (
            "all",
            vec!["Revert r1/us1/1/revert"],
            vec![("us1", "Reverted"), ("us2", "Failed")],
        ),
    ];
    for (scope, want_cmds, want_phases) in cases {
        let spec = rollout_spec(json!({"waves": [
                {"name": "first", "regions": ["us"], "maxConcurrent": 2},
                {"name": "rest"},
            ], "failurePolicy": {"mandatoryWaves": ["first"], "rollback": scope}}));
        let mut m = Model::new(spec, FLEET);
        assert_eq!(starts(&m.step()), vec!["r1/us1/1", "r1/us2/1"]);
        m.finish("us1", true);
        m.step();
        m.finish("us2", false);
        let cmds = m.step();
        let described: Vec<String> = cmds
            .iter()
            .map(|c| match c {
                Command::Revert { id, .. } => format!("Revert {id}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(described, want_cmds, "scope {scope}");
        m.step();
        assert_eq!(m.state.phase, RolloutPhase::Failed, "scope {scope}");
        let phases: Vec<(String, &str)> = m.phases().into_iter().take(2).collect();
        let want: Vec<(String, &str)> = want_phases.iter().map(|(c, p)| (c.to_string(), *p)).collect();
        assert_eq!(phases, want, "scope {scope}");
        assert_eq!(m.state.waves[1].phase, WavePhase::Cancelled);
        assert_eq!(m.phase_of("eu1"), ClusterPhase::Pending);
        let failed = m.record("cluster-failed");
        assert_eq!(failed.metrics["request-success-rate"], 42.0);
        assert_eq!(failed.metrics["failedChecks"], 5.0);
    }
}

#[test]
fn rollback_all_unwinds_newest_wave_first_and_rolls_back_running_canaries() {
    let spec = rollout_spec(json!({"waves": [
            {"name": "w1", "clusters": {"matchLabels": {"cluster": "us1"}}},
            {"name": "w2", "clusters": {"matchLabels": {"cluster": "us2"}}},
            {"name": "w3", "maxConcurrent": 2},
        ], "failurePolicy": {"rollback": "all"}}));
    let mut m = Model::new(spec, FLEET);
    m.step();
    m.finish("us1", true);
    m.step();
    m.finish("us2", true);
    assert_eq!(starts(&m.step()), vec!["r1/eu1/1", "r1/eu2/1"]);
    m.finish("eu1", false);
    let cmds = m.step();
    // The running canary is rolled back; the newest promoted wave (w2) is reverted first.
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert_eq!(
        cmds[0],
        Command::RollbackCanary {
            id: "r1/eu2/1/rollback".into(),
            cluster: "eu2".into(),
            reason: "1 failed (budget 0, failurePolicy.maxFailedClusters)".into(),
        }
    );
    assert!(
        matches!(&cmds[1], Command::Revert { cluster, .. } if cluster == "us2"),
        "{cmds:?}"
    );
    assert_eq!(m.state.phase, RolloutPhase::RollingBack);
    // w1 only after w2 is back.
    let next = m.step();
    assert!(
        matches!(&next[..], [Command::Revert { cluster, .. }] if cluster == "us1"),
        "{next:?}"
    );
    m.step_to(RolloutPhase::Failed);
    assert_eq!(
        m.phases(),
        vec![
            ("us1".to_string(), "Reverted"),
            ("us2".to_string(), "Reverted"),
            ("eu1".to_string(), "Failed"),
            ("eu2".to_string(), "Reverted"),
        ]
    );
}

#[test]
fn failure_budget_tolerates_then_fails() {
    let mut m = Model::new(
        two_waves(json!({"failurePolicy": {"maxFailedClusters": 1}})),
        FLEET,
    );
    m.step();
    m.finish("us1", false);
    assert_eq!(
        starts(&m.step()),
        vec!["r1/us2/1"],
        "one failure is within the budget"
    );
    assert_eq!(m.state.phase, RolloutPhase::Running);
    m.finish("us2", true);
    m.step();
    m.finish("eu1", false);
    m.step_to(RolloutPhase::RollingBack);
    assert!(
        m.state
            .message
            .contains("2 failed (budget 1, failurePolicy.maxFailedClusters)")
    );
    m.step_to(RolloutPhase::Failed);
}

#[test]
fn bake_needs_time_and_requests() {
    let spec = two_waves(json!({"waveDefaults": {"bake": {"duration": "10m", "minRequests": 1000}}}));
    let mut m = Model::new(spec, FLEET);
    m.finish_in_turn(&["us1", "us2"]);
    assert_eq!(m.state.waves[0].phase, WavePhase::Baking);
    assert_eq!(
        next_wake(&m.plan, &m.state, m.now),
        Some(plus(m.now, Duration::from_secs(600)))
    );
    m.obs("us1").served_requests = 400;
    m.obs("us2").served_requests = 500;
    m.advance(600);
    m.step();
    assert_eq!(m.state.waves[0].phase, WavePhase::Baking, "900 requests < 1000");
    assert_eq!(
        next_wake(&m.plan, &m.state, m.now),
        None,
        "evidence comes with reports"
    );
    assert_eq!(bake_requests(&m.state, 0, &m.view), 900);
    m.obs("us2").served_requests = 600;
    let cmds = m.step();
    assert_eq!(starts(&cmds), vec!["r1/eu1/1", "r1/eu2/1"]);
    assert_eq!(m.state.waves[0].bake.as_ref().unwrap().requests, Some(1000));
    let done = m.record("wave-succeeded");
    assert_eq!(done.metrics["bakeRequests"], 1000.0);
    assert!(
        done.message.contains("1000 requests (≥ 1000)"),
        "{}",
        done.message
    );
}

#[test]
fn bake_time_alone_is_not_enough_and_counter_restarts_do_not_over_count() {
    let spec = rollout_spec(
        json!({"waves": [{"name": "only", "maxConcurrent": 4, "bake": {"duration": "1m", "minRequests": 100}}]}),
    );
    let mut m = Model::new(spec, &[("a", "us")]);
    m.step();
    m.finish("a", true);
    m.obs("a").served_requests = 50;
    m.step();
    m.obs("a").served_requests = 120;
    m.advance(60);
    m.step();
    assert_eq!(bake_requests(&m.state, 0, &m.view), 70);
    // The agent restarted: its counter starts from 0 again.
    m.obs("a").served_requests = 20;
    m.step();
    assert_eq!(bake_requests(&m.state, 0, &m.view), 20);
    m.obs("a").served_requests = 100;
    m.step_to(RolloutPhase::Succeeded);
}

#[test]
fn bake_regression_fails_the_cluster() {
    let spec = rollout_spec(json!({"waves": [
            {"name": "first", "regions": ["us"], "maxConcurrent": 2, "bake": {"duration": "5m", "minSuccessRate": 99}},
            {"name": "rest"},
        ], "failurePolicy": {"mandatoryWaves": ["first"], "rollback": "wave"}}));
    let mut m = Model::new(spec, FLEET);
    m.step();
    m.finish("us1", true);
    m.finish("us2", true);
    m.step();
    assert_eq!(m.state.waves[0].phase, WavePhase::Baking);
    m.obs("us2").primary_success_rate = Some(97.5);
    m.advance(60);
    let cmds = m.step();
    assert_eq!(m.phase_of("us2"), ClusterPhase::Failed);
    assert!(
        matches!(&cmds[..], [Command::Revert { cluster, .. }] if cluster == "us1"),
        "{cmds:?}"
    );
    let reg = m.record("bake-regression");
    assert!(
        reg.message.contains("97.50% < bake.minSuccessRate 99%"),
        "{}",
        reg.message
    );
    assert_eq!(reg.metrics["primarySuccessRate"], 97.5);
    m.step_to(RolloutPhase::Failed);
}

#[test]
fn manual_approval_waits_and_can_be_given_in_advance() {
    let spec = rollout_spec(json!({"waves": [
        {"name": "first", "regions": ["us"], "maxConcurrent": 2},
        {"name": "eu", "regions": ["eu"], "approval": "manual", "maxConcurrent": 2},
    ]}));
    let mut m = Model::new(spec.clone(), FLEET);
    m.step();
    m.finish("us1", true);
    m.finish("us2", true);
    assert!(starts(&m.step()).is_empty());
    assert_eq!(m.state.waves[1].phase, WavePhase::WaitingApproval);
    let g = gate_decision(
        [(&m.plan, &m.state)],
        "eu1",
        &m.plan.canary,
        &GateAsk {
            fingerprint: "fp-new".into(),
            revision: new_rev(),
        },
    );
    assert!(!g.open);
    assert_eq!(g.reason, "waiting for wave eu of rollout r1 to be approved");
    approve_wave(&m.plan, &mut m.state, "eu", &Stamp::by("bob", m.now)).unwrap();
    approve_wave(&m.plan, &mut m.state, "eu", &Stamp::by("bob", m.now)).unwrap(); // idempotent
    assert_eq!(m.kinds().iter().filter(|k| *k == "wave-approved").count(), 1);
    assert_eq!(starts(&m.step()), vec!["r1/eu1/1", "r1/eu2/1"]);
    let e = approve_wave(&m.plan, &mut m.state, "first", &Stamp::by("bob", m.now)).unwrap_err();
    assert!(e.to_string().contains("does not need approval"), "{e}");

    // In advance: no stop at all.
    let mut m = Model::new(spec, FLEET);
    approve_wave(&m.plan, &mut m.state, "eu", &Stamp::by("carol", m.now)).unwrap();
    m.step();
    m.finish("us1", true);
    m.finish("us2", true);
    assert_eq!(starts(&m.step()), vec!["r1/eu1/1", "r1/eu2/1"]);
    let h = m.record("wave-approved");
    assert_eq!(
        (h.actor.as_str(), h.message.as_str()),
        ("carol", "approved in advance")
    );
}

#[test]
fn pause_lets_running_canaries_finish_and_starts_nothing() {
    let mut m = Model::new(two_waves(json!({})), FLEET);
    m.step();
    pause(&m.plan, &mut m.state, &Stamp::by("alice", m.now), "incident").unwrap();
    pause(&m.plan, &mut m.state, &Stamp::by("alice", m.now), "incident").unwrap();
    m.finish("us1", true);
    assert!(m.step().is_empty());
    assert_eq!(m.phase_of("us1"), ClusterPhase::Succeeded);
    assert_eq!(m.phase_of("us2"), ClusterPhase::Pending);
    assert_eq!(m.state.phase, RolloutPhase::Paused);
    resume(&m.plan, &mut m.state, &Stamp::by("alice", m.now), "").unwrap();
    assert_eq!(starts(&m.step()), vec!["r1/us2/1"]);
    assert_eq!(m.kinds().iter().filter(|k| *k == "paused").count(), 1);
}

#[test]
fn a_verb_without_an_actor_is_recorded_as_unknown() {
    let mut m = Model::new(two_waves(json!({})), FLEET);
    m.step();
    pause(&m.plan, &mut m.state, &Stamp::by("", m.now), "").unwrap();
    assert_eq!(m.state.message, "paused by unknown");
    let h = m.state.history.last().unwrap();
    assert_eq!((h.kind.as_str(), h.actor.as_str()), ("paused", "unknown"));
}

#[test]
fn skip_and_retry() {
    let mut m = Model::new(
        two_waves(json!({"failurePolicy": {"maxFailedClusters": 1}})),
        FLEET,
    );
    skip_cluster(&m.plan, &mut m.state, "us2", &Stamp::by("alice", m.now)).unwrap();
    m.step();
    let e = skip_cluster(&m.plan, &mut m.state, "us1", &Stamp::by("alice", m.now)).unwrap_err();
    assert!(e.to_string().contains("its canary is running"), "{e}");
    let e = retry_cluster(&m.plan, &mut m.state, "us1", &Stamp::by("alice", m.now)).unwrap_err();
    assert!(
        e.to_string().contains("only a Failed cluster can be retried"),
        "{e}"
    );
    m.finish("us1", false);
    let cmds = m.step();
    // us1 failed within the budget and us2 is skipped: wave `first` completes.
    assert_eq!(starts(&cmds), vec!["r1/eu1/1", "r1/eu2/1"]);
    retry_cluster(&m.plan, &mut m.state, "us1", &Stamp::by("alice", m.now)).unwrap();
    retry_cluster(&m.plan, &mut m.state, "us1", &Stamp::by("alice", m.now)).unwrap(); // idempotent
    assert_eq!(starts(&m.step()), vec!["r1/us1/2"]);
    assert_eq!(m.state.failed_clusters(), 0);
    m.finish("us1", true);
    m.finish("eu1", true);
    m.finish("eu2", true);
    m.step_to(RolloutPhase::Succeeded);
    let started_us1 = m
        .state
        .history
        .iter()
        .filter(|h| h.kind == "cluster-started" && h.cluster == "us1")
        .count();
    assert_eq!(started_us1, 2);
    assert_eq!(m.kinds().iter().filter(|k| *k == "cluster-retried").count(), 1);
    let e = skip_cluster(&m.plan, &mut m.state, "eu1", &Stamp::by("alice", m.now)).unwrap_err();
    assert!(e.to_string().contains("already ended Succeeded"), "{e}");
    let e = skip_cluster(&m.plan, &mut m.state, "nope", &Stamp::by("alice", m.now)).unwrap_err();
    assert!(e.to_string().contains("not in the plan"), "{e}");
}

#[test]
fn abort_rolls_back_per_policy_then_aborted() {
    let mut m = Model::new(two_waves(json!({"failurePolicy": {"rollback": "wave"}})), FLEET);
    m.step();
    m.finish("us1", true);
    m.step();
    let cmds = abort(&m.plan, &mut m.state, &Stamp::by("alice", m.now), "bad idea").unwrap();
    m.deliver(&cmds);
    let ids: Vec<String> = cmds
        .iter()
        .map(|c| match c {
            Command::RollbackCanary { id, .. } | Command::Revert { id, .. } => id.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec!["r1/us2/1/rollback", "r1/us1/1/revert"]);
    assert!(
        abort(&m.plan, &mut m.state, &Stamp::by("alice", m.now), "")
            .unwrap()
            .is_empty()
    );
    let e = pause(&m.plan, &mut m.state, &Stamp::by("alice", m.now), "").unwrap_err();
    assert!(e.to_string().contains("is rolling back"), "{e}");
    m.step_to(RolloutPhase::Aborted);
    assert_eq!(m.phase_of("us1"), ClusterPhase::Reverted);
    assert_eq!(m.phase_of("us2"), ClusterPhase::Reverted);
    assert_eq!(m.state.waves[0].phase, WavePhase::Cancelled);
    assert!(abort(&m.plan, &mut m.state, &Stamp::by("alice", m.now), "").is_ok());
    let e = resume(&m.plan, &mut m.state, &Stamp::by("alice", m.now), "").unwrap_err();
    assert!(e.to_string().contains("already ended Aborted"), "{e}");
}

#[test]
fn deadline_fails_an_unreachable_cluster() {
    let mut m = Model::new(
        two_waves(json!({"clusterDeadline": "30m", "failurePolicy": {"maxFailedClusters": 1}})),
        FLEET,
    );
    m.view.get_mut("us1").unwrap().connected = false;
    let cmds = reconcile(&m.plan, &mut m.state, &m.view, m.now);
    assert_eq!(starts(&cmds), vec!["r1/us1/1"]);
    // Not delivered: the agent is away. The command stays pending for its reconnect.
    assert_eq!(starts(&pending_commands(&m.plan, &m.state)), vec!["r1/us1/1"]);
    m.advance(29 * 60);
    assert!(m.step().is_empty());
    assert_eq!(m.phase_of("us1"), ClusterPhase::Starting);
    m.advance(60);
    assert_eq!(starts(&m.step()), vec!["r1/us2/1"]);
    let c = m.state.clusters().next().unwrap();
    assert_eq!(c.phase, ClusterPhase::Failed);
    assert!(
        c.verdict.contains("clusterDeadline 30m") && c.verdict.contains("not connected"),
        "{}",
        c.verdict
    );
    assert!(pending_commands(&m.plan, &m.state).is_empty());
}

#[test]
fn a_canary_still_initializing_gets_its_start_revision_once_initialized() {
    let mut m = Model::new(two_waves(json!({"clusterDeadline": "30m"})), FLEET);
    m.obs("us1").phase = "Initializing".into();
    assert!(starts(&m.step()).is_empty(), "held while Initializing");
    assert_eq!(m.phase_of("us1"), ClusterPhase::Starting);
    let c = m.state.clusters().next().unwrap();
    assert!(
        c.shown_verdict().contains("test/podinfo is still Initializing"),
        "{}",
        c.shown_verdict()
    );
    // Held commands are not re-sent on a reconnect either.
    assert!(pending_commands(&m.plan, &m.state).is_empty());
    assert!(m.step().is_empty());
    m.obs("us1").phase = "Initialized".into();
    assert_eq!(starts(&m.step()), vec!["r1/us1/1"]);
    assert!(m.state.clusters().next().unwrap().waiting.is_empty());
    m.finish("us1", true);
    m.step();
    assert_eq!(m.phase_of("us1"), ClusterPhase::Succeeded);
    assert!(m.kinds().contains(&"cluster-waiting".to_string()));
    assert!(m.kinds().contains(&"cluster-pushed".to_string()));

    // A canary that never finishes initializing fails at the deadline, saying why.
    let mut m = Model::new(two_waves(json!({"clusterDeadline": "30m"})), FLEET);
    m.obs("us1").phase = String::new();
    m.step();
    m.advance(31 * 60);
    m.step();
    let c = m.state.clusters().next().unwrap();
    assert_eq!(c.phase, ClusterPhase::Failed);
    assert!(
        c.verdict
            .contains("never pushed: canary test/podinfo is not initialized yet"),
        "{}",
        c.verdict
    );
}

#[test]
fn acks_are_idempotent_and_a_refusal_fails_the_cluster() {
    let mut m = Model::new(
        two_waves(json!({"failurePolicy": {"maxFailedClusters": 4}})),
        FLEET,
    );
    let cmds = reconcile(&m.plan, &mut m.state, &m.view, m.now);
    assert_eq!(starts(&cmds), vec!["r1/us1/1"]);
    assert!(m.ack("r1/us1/1", true, "fp-x", ""));
    assert!(!m.ack("r1/us1/1", true, "fp-x", ""));
    assert!(!m.ack("r1/us1/7", false, "", "old"));
    assert!(!m.ack("other/us1/1", false, "", "x"));
    assert!(pending_commands(&m.plan, &m.state).is_empty());
    let cmds = reconcile(&m.plan, &mut m.state, &m.view, m.now);
    assert!(cmds.is_empty());
    skip_cluster(&m.plan, &mut m.state, "us2", &Stamp::by("a", m.now)).unwrap();
    // us1 fails by a refused ack in a later attempt.
    let c = m.state.cluster_mut("us1").unwrap().1;
    c.phase = ClusterPhase::Failed;
    retry_cluster(&m.plan, &mut m.state, "us1", &Stamp::by("a", m.now)).unwrap();
    let cmds = reconcile(&m.plan, &mut m.state, &m.view, m.now);
    assert_eq!(starts(&cmds), vec!["r1/us1/2"]);
    assert!(m.ack("r1/us1/2", false, "", "image pull denied"));
    let c = m.state.clusters().next().unwrap();
    assert_eq!(c.phase, ClusterPhase::Failed);
    assert!(c.verdict.contains("image pull denied"));
}

#[test]
fn gate_mode_opens_for_the_rollout_revision() {
    let spec = with(two_waves(json!({})), json!({"mode": "gate"}));
    let mut m = Model::new(spec, FLEET);
    let ask = GateAsk {
        fingerprint: "fp-new".into(),
        revision: new_rev(),
    };
    // GitOps applied the revision everywhere; every agent asks.
    for c in ["us1", "us2", "eu1", "eu2"] {
        m.view.get_mut(c).unwrap().gate_request = Some(ask.clone());
    }
    let cmds = m.step();
    assert_eq!(
        cmds,
        vec![Command::OpenGate {
            cluster: "us1".into(),
            fingerprint: "fp-new".into()
        }]
    );
    let decide =
        |m: &Model, c: &str, ask: &GateAsk| gate_decision([(&m.plan, &m.state)], c, &m.plan.canary, ask);
    assert!(decide(&m, "us1", &ask).open);
    let g = decide(&m, "us2", &ask);
    assert!(!g.open);
    assert_eq!(g.reason, "waiting for wave first of rollout r1");
    let other = GateAsk {
        fingerprint: "fp-other".into(),
        revision: old_rev(),
    };
    assert!(
        !decide(&m, "us1", &other).open,
        "another revision is not the one started"
    );
    assert!(
        decide(&m, "nowhere", &ask).open,
        "unplanned clusters are unmanaged"
    );
    let other_canary = CanaryKey::new("test", "other");
    assert!(gate_decision([(&m.plan, &m.state)], "us2", &other_canary, &ask).open);
    // The analysis runs and fails: the rollout fails; clusters never started stay held.
    let o = m.obs("us1");
    o.last_applied_spec = "fp-new".into();
    o.phase = "Failed".into();
    m.step();
    m.step_to(RolloutPhase::Failed);
    let g = decide(&m, "us2", &ask);
    assert!(!g.open);
    assert!(g.reason.contains("ended Failed"), "{}", g.reason);
    assert!(decide(&m, "us2", &other).open, "a different revision is not held");
}

#[test]
fn push_mode_gate_follows_the_acked_fingerprint() {
    let mut m = Model::new(two_waves(json!({})), FLEET);
    m.step();
    let ask = |fp: &str| GateAsk {
        fingerprint: fp.into(),
        revision: new_rev(),
    };
    assert!(gate_decision([(&m.plan, &m.state)], "us1", &m.plan.canary, &ask("fp-new")).open);
    assert!(!gate_decision([(&m.plan, &m.state)], "us1", &m.plan.canary, &ask("fp-zzz")).open);
}

// === invariants over random runs ===

#[derive(Debug, Clone)]
enum Act {
    Step,
    Finish(usize, bool),
    Advance(u64),
    Disconnect(usize),
    Served(usize, u64),
    Pause,
    Resume,
    Abort,
    Approve(usize),
    Skip(usize),
    Retry(usize),
}

fn act(n: usize, w: usize) -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => Just(Act::Step),
        4 => (0..n, prop::bool::weighted(0.75)).prop_map(|(c, ok)| Act::Finish(c, ok)),
        1 => (1u64..2000).prop_map(Act::Advance),
        1 => (0..n).prop_map(Act::Disconnect),
        1 => (0..n, 0u64..500).prop_map(|(c, r)| Act::Served(c, r)),
        1 => Just(Act::Pause),
        1 => Just(Act::Resume),
        1 => prop::bool::weighted(0.1).prop_map(|_| Act::Abort),
        1 => (0..w).prop_map(Act::Approve),
        1 => (0..n).prop_map(Act::Skip),
        1 => (0..n).prop_map(Act::Retry),
    ]
}

fn spec_strategy() -> impl Strategy<Value = (Value, usize)> {
    (
        1usize..4,
        1u32..4,
        0u32..3,
        prop::sample::select(vec!["cluster", "wave", "all"]),
        prop::bool::ANY,
        prop::bool::ANY,
        prop::bool::ANY,
    )
        .prop_map(|(per_wave, max_conc, budget, scope, manual, bake, mandatory)| {
            let waves: Vec<Value> = (0..3)
                .map(|i| {
                    let mut w = json!({"name": format!("w{i}"), "regions": [format!("r{i}")], "maxConcurrent": max_conc});
                    if manual && i == 1 {
                        w["approval"] = json!("manual");
                    }
                    if bake {
                        w["bake"] = json!({"duration": "5m", "minRequests": 100, "minSuccessRate": 90.0});
                    }
                    w
                })
                .collect();
            let mut fp = json!({"maxFailedClusters": budget, "rollback": scope});
            if mandatory {
                fp["mandatoryWaves"] = json!(["w0"]);
            }
            let spec = rollout_spec(json!({"waves": waves, "failurePolicy": fp, "clusterDeadline": "30m"}));
            (spec, per_wave)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn sequencer_invariants(
        (spec, per_wave) in spec_strategy(),
        acts in prop::collection::vec(act(9, 3), 1..120),
    ) {
        let names: Vec<String> = (0..3).flat_map(|w| (0..per_wave).map(move |i| format!("c{w}{i}"))).collect();
        let fleet: Vec<(String, String)> = names.iter().map(|n| (n.clone(), format!("r{}", &n[1..2]))).collect();
        let fleet_ref: Vec<(&str, &str)> = fleet.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let mut m = Model::new(spec, &fleet_ref);
        let planned = m.plan.cluster_count() as u32;
        let mut terminal: Option<RolloutState> = None;
        let mut start_ids: Vec<String> = Vec::new();
        let mut retries: BTreeMap<String, u32> = BTreeMap::new();
        let n = names.len();
        for a in acts {
            let before = m.state.clone();
            match a {
                Act::Step => {
                    let cmds = m.step();
                    start_ids.extend(starts(&cmds));
                }
                Act::Finish(i, ok) => {
                    let c = &names[i % n];
                    if m.obs(c).last_applied_spec == "fp-new" && m.obs(c).phase == "Progressing" {
                        m.finish(c, ok);
                    }
                }
                Act::Advance(s) => m.advance(s),
                Act::Disconnect(i) => {
                    let o = m.view.get_mut(&names[i % n]).unwrap();
                    o.connected = !o.connected;
                }
                Act::Served(i, r) => m.obs(&names[i % n]).served_requests += r,
                Act::Pause => { let _ = pause(&m.plan, &mut m.state, &Stamp::by("p", m.now), ""); }
                Act::Resume => { let _ = resume(&m.plan, &mut m.state, &Stamp::by("p", m.now), ""); }
                Act::Abort => {
                    if let Ok(cmds) = abort(&m.plan, &mut m.state, &Stamp::by("p", m.now), "") {
                        m.deliver(&cmds);
                    }
                }
                Act::Approve(w) => { let _ = approve_wave(&m.plan, &mut m.state, &format!("w{w}"), &Stamp::by("p", m.now)); }
                Act::Skip(i) => { let _ = skip_cluster(&m.plan, &mut m.state, &names[i % n], &Stamp::by("p", m.now)); }
                Act::Retry(i) => {
                    let c = &names[i % n];
                    let was = m.phase_of(c);
                    if retry_cluster(&m.plan, &mut m.state, c, &Stamp::by("p", m.now)).is_ok() && was == ClusterPhase::Failed {
                        *retries.entry(c.clone()).or_default() += 1;
                    }
                }
            }
            // Terminal states are final.
            if let Some(t) = &terminal {
                prop_assert_eq!(&m.state, t);
            } else if m.state.phase.is_terminal() {
                terminal = Some(m.state.clone());
            }
            // History only grows.
            prop_assert!(m.state.history.len() >= before.history.len());
            // Never more than maxConcurrent running per wave; at most one wave in progress.
            for (wp, ws) in m.plan.waves.iter().zip(&m.state.waves) {
                let running = ws.clusters.iter().filter(|c| c.phase.is_running()).count() as u32;
                prop_assert!(running <= wp.max_concurrent, "wave {} runs {running}", wp.name);
            }
            let in_progress = m.state.waves.iter().filter(|w| matches!(w.phase, WavePhase::Running | WavePhase::Baking)).count();
            prop_assert!(in_progress <= 1);
            prop_assert!(m.state.failed_clusters() <= planned);
            // A cluster is started at most once per attempt, and only retries add attempts.
            for c in m.state.clusters() {
                let started = m.state.history.iter().filter(|h| h.kind == "cluster-started" && h.cluster == c.name).count() as u32;
                prop_assert_eq!(started, c.attempts);
                prop_assert!(c.attempts <= 1 + retries.get(&c.name).copied().unwrap_or(0));
            }
        }
        let mut unique = start_ids.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), start_ids.len(), "a StartRevision id was issued twice");
    }
}

// === pooled evidence ===

fn report(
    cluster: &str,
    interval: u64,
    canary: (u64, u64),
    primary: (u64, u64),
) -> crate::judge::EvidenceReport {
    use crate::judge::{ArmCounts, EvidenceReport, IntervalCounts};
    EvidenceReport {
        cluster: cluster.into(),
        run: "fp-new@1".into(),
        interval,
        boundaries_ms: Vec::new(),
        counts: IntervalCounts {
            seconds: 30.0,
            canary: ArmCounts {
                requests: canary.0,
                errors: canary.1,
                latency: None,
            },
            primary: ArmCounts {
                requests: primary.0,
                errors: primary.1,
                latency: None,
            },
        },
    }
}

#[test]
fn pooled_evidence_stops_the_rollout_though_no_cluster_failed() {
    let mut m = Model::new(two_waves(json!({"evidence": {"pooled": true}})), FLEET);
    assert_eq!(m.plan.evidence.map(|e| e.alpha), Some(0.05));
    m.step();
    // us1 serves a canary with 5× the primary's errors, each interval too small to fail alone.
    for i in 0..40 {
        assert_eq!(
            add_evidence(&mut m.state, &report("us1", i, (200, 1), (1800, 2))),
            Some(crate::judge::Added::New)
        );
        m.step();
        if m.state.phase == RolloutPhase::RollingBack {
            break;
        }
    }
    assert_eq!(m.state.phase, RolloutPhase::RollingBack, "{:?}", m.state.message);
    let reason = &m.state.rollback.as_ref().unwrap().reason;
    assert!(
        reason.starts_with("pooled evidence: rollback: fleet evidence"),
        "{reason}"
    );
    assert_eq!(m.state.failed_clusters(), 0);
    assert!(
        m.sent
            .iter()
            .any(|c| matches!(c, Command::RollbackCanary { cluster, .. } if cluster == "us1")),
        "{:?}",
        m.sent
    );
    // Evidence no longer decides once the rollout rolls back; outsiders are refused.
    assert_eq!(
        add_evidence(&mut m.state, &report("us1", 99, (1, 0), (1, 0))),
        None
    );
}

#[test]
fn pooled_evidence_refuses_clusters_outside_the_plan_and_keeps_a_good_rollout_going() {
    let mut m = Model::new(two_waves(json!({"evidence": {"pooled": true}})), FLEET);
    m.step();
    assert_eq!(
        add_evidence(&mut m.state, &report("elsewhere", 0, (200, 9), (1800, 0))),
        None
    );
    assert_eq!(m.state.evidence.as_ref().unwrap().refused, 1);
    for i in 0..20 {
        add_evidence(&mut m.state, &report("us1", i, (200, 0), (1800, 2)));
        add_evidence(&mut m.state, &report("us1", i, (200, 0), (1800, 2)));
    }
    m.step_to(RolloutPhase::Running);
    // The state (with its pool) survives the store's JSON.
    let text = serde_json::to_string(&m.state).unwrap();
    let back: RolloutState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, m.state);
}

#[test]
fn the_planned_look_at_the_last_wave_stops_a_small_regression() {
    let spec = two_waves(json!({"evidence": {"pooled": true, "plannedLook": true}}));
    let mut m = Model::new(spec, FLEET);
    m.step();
    // 2.25× the primary's errors: 12 of 60 errors on a 10% canary, not enough for the anytime
    // evidence at 0.1 α, enough for one look at 0.9 α.
    for i in 0..6 {
        add_evidence(&mut m.state, &report("us1", i, (200, 2), (1800, 8)));
    }
    m.finish("us1", true);
    m.step();
    assert_eq!(m.state.phase, RolloutPhase::Running, "{}", m.state.message);
    m.finish("us2", true);
    m.step();
    assert_eq!(m.state.phase, RolloutPhase::RollingBack, "{}", m.state.message);
    let reason = &m.state.rollback.as_ref().unwrap().reason;
    assert!(
        reason.starts_with("pooled evidence, planned look at the last wave"),
        "{reason}"
    );
    assert!(m.kinds().contains(&"evidence-look".to_string()));
    assert!(
        starts(&m.sent).iter().all(|s| !s.contains("eu")),
        "the last wave never started"
    );
}

#[test]
fn pooled_promote_ends_a_bake_before_its_request_count() {
    let spec = with(
        two_waves(json!({"evidence": {"pooled": true, "advance": true}})),
        json!({"waveDefaults": {"bake": {"duration": "1m", "minRequests": 1000000}}}),
    );
    let mut m = Model::new(spec, FLEET);
    m.finish_in_turn(&["us1", "us2"]);
    assert_eq!(m.state.waves[0].phase, WavePhase::Baking);
    m.advance(120);
    m.step();
    assert_eq!(
        m.state.waves[0].phase,
        WavePhase::Baking,
        "no evidence yet: the request count holds"
    );
    for i in 0..30 {
        add_evidence(&mut m.state, &report("us1", i, (20_000, 2), (180_000, 180)));
    }
    m.step();
    assert_eq!(
        m.state.waves[0].phase,
        WavePhase::Succeeded,
        "{}",
        m.state.message
    );
}

// === bounds (issue 15) ===

#[test]
fn history_keeps_the_first_record_and_the_newest() {
    use crate::fleet::rollout::{MAX_HISTORY, MAX_HISTORY_MESSAGE};
    let mut m = Model::new(two_waves(json!({})), FLEET);
    let first = m.state.history[0].kind.clone();
    for i in 0..MAX_HISTORY + 10 {
        crate::fleet::verbs::pause(
            &m.plan,
            &mut m.state,
            &Stamp::by("bob", m.now),
            &format!("{i} {}", "x".repeat(5000)),
        )
        .ok();
        crate::fleet::verbs::resume(&m.plan, &mut m.state, &Stamp::by("bob", m.now), "").ok();
    }
    assert_eq!(m.state.history.len(), MAX_HISTORY);
    assert_eq!(m.state.history[0].kind, first, "the created record stays");
    assert!(m.state.history_dropped > 0);
    assert!(
        m.state
            .history
            .iter()
            .all(|h| h.message.len() <= MAX_HISTORY_MESSAGE + 64)
    );
    let mark = m.state.history_mark();
    crate::fleet::verbs::pause(&m.plan, &mut m.state, &Stamp::by("carol", m.now), "").unwrap();
    assert_eq!(m.state.history_since(mark).len(), 1);
    m.state.comment_since(mark, "from CI job 7");
    assert_eq!(m.state.history.last().unwrap().comment, "from CI job 7");
}

#[test]
fn an_unstorable_report_fails_only_the_clusters_that_changed() {
    let mut m = Model::new(two_waves(json!({})), FLEET);
    m.step();
    let before = m.state.clone();
    m.obs("us1").metrics.insert("huge".into(), 1.0);
    m.finish("us1", false);
    let mut next = before.clone();
    reconcile(&m.plan, &mut next, &m.view, m.now);
    assert!(crate::fleet::fail_unstorable(
        &m.plan,
        &before,
        &mut next,
        &"too large ".repeat(100),
        m.now
    ));
    let us1 = next.clusters().find(|c| c.name == "us1").unwrap();
    assert_eq!(us1.phase, ClusterPhase::Failed);
    assert!(us1.metrics.is_empty());
    assert!(
        us1.verdict.starts_with("its report could not be stored"),
        "{}",
        us1.verdict
    );
    assert!(us1.verdict.len() < 400, "{}", us1.verdict.len());
    assert!(
        next.history_since(before.history_mark())
            .iter()
            .all(|h| h.metrics.is_empty())
    );
    for other in ["us2", "eu1", "eu2"] {
        let b = before.clusters().find(|c| c.name == other).unwrap();
        assert_eq!(
            next.clusters().find(|c| c.name == other).unwrap(),
            b,
            "{other} untouched"
        );
    }
    // Nothing changed: nothing to blame.
    let mut same = before.clone();
    assert!(!crate::fleet::fail_unstorable(
        &m.plan, &before, &mut same, "x", m.now
    ));
}

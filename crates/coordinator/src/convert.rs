//! Between the wire (aviary.v1) and the resource, sequencer and fleet-view types: the only
//! place besides the services (`api`, `agent_link`) that names wire messages.

use aviary_api::FleetRolloutSpec;
use aviary_api::duration::format_go_duration;
use aviary_api::fleet::{
    BakeSpec, CanaryRef, EvidenceSpec, FailurePolicy, RevisionSpec, WaveSettings, WaveSpec,
};
use aviary_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use aviary_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use aviary_core::fleet::{CanaryKey, ClusterPhase, Command, Plan, PooledEvidence, Revision};
use aviary_proto::ts::{from_jiff, to_jiff};
use aviary_proto::v1;
use aviary_proto::v1::coordinator_message::Msg;

use crate::fleet::{CanaryReport, ClusterCanary, ClusterSummary, Fleet};
use crate::store::RolloutRecord;

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn selector_from(s: &v1::LabelSelector) -> LabelSelector {
    LabelSelector {
        match_labels: (!s.match_labels.is_empty()).then(|| s.match_labels.clone()),
        match_expressions: (!s.match_expressions.is_empty()).then(|| {
            s.match_expressions
                .iter()
                .map(|e| LabelSelectorRequirement {
                    key: e.key.clone(),
                    operator: e.operator.clone(),
                    values: (!e.values.is_empty()).then(|| e.values.clone()),
                })
                .collect()
        }),
    }
}

fn selector_to(s: &LabelSelector) -> v1::LabelSelector {
    v1::LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .map(|e| v1::LabelSelectorRequirement {
                key: e.key.clone(),
                operator: e.operator.clone(),
                values: e.values.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

fn settings_from(s: &v1::WaveSettings) -> WaveSettings {
    WaveSettings {
        max_concurrent: opt(&s.max_concurrent).map(IntOrString::String),
        bake: s.bake.as_ref().map(|b| BakeSpec {
            duration: opt(&b.duration),
            min_requests: (b.min_requests > 0).then_some(b.min_requests),
            min_success_rate: b.min_success_rate,
        }),
        approval: opt(&s.approval),
    }
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

fn settings_to(s: &WaveSettings) -> v1::WaveSettings {
    v1::WaveSettings {
        max_concurrent: s.max_concurrent.as_ref().map(int_or_string).unwrap_or_default(),
        bake: s.bake.as_ref().map(|b| v1::BakeSpec {
            duration: b.duration.clone().unwrap_or_default(),
            min_requests: b.min_requests.unwrap_or(0),
            min_success_rate: b.min_success_rate,
        }),
        approval: s.approval.clone().unwrap_or_default(),
    }
}

/// The wire spec as a FleetRollout spec (empty strings are unset fields).
pub(crate) fn spec_from_proto(s: &v1::RolloutSpec) -> FleetRolloutSpec {
    FleetRolloutSpec {
        canary: s.canary.as_ref().map(|c| CanaryRef {
            namespace: opt(&c.namespace),
            name: opt(&c.name),
        }),
        revision: s.revision.as_ref().map(|r| RevisionSpec {
            container_images: (!r.container_images.is_empty()).then(|| r.container_images.clone()),
            version: opt(&r.version),
        }),
        mode: opt(&s.mode),
        clusters: s.clusters.as_ref().map(selector_from),
        waves: (!s.waves.is_empty()).then(|| {
            s.waves
                .iter()
                .map(|w| WaveSpec {
                    name: opt(&w.name),
                    clusters: w.clusters.as_ref().map(selector_from),
                    regions: (!w.regions.is_empty()).then(|| w.regions.clone()),
                    settings: w.settings.as_ref().map(settings_from).unwrap_or_default(),
                })
                .collect()
        }),
        by_region: (!s.by_region.is_empty()).then(|| s.by_region.clone()),
        wave_defaults: s.wave_defaults.as_ref().map(settings_from),
        failure_policy: s.failure_policy.as_ref().map(|f| FailurePolicy {
            max_failed_clusters: opt(&f.max_failed_clusters).map(IntOrString::String),
            mandatory_waves: (!f.mandatory_waves.is_empty()).then(|| f.mandatory_waves.clone()),
            rollback: opt(&f.rollback),
        }),
        cluster_deadline: opt(&s.cluster_deadline),
        evidence: s.evidence.as_ref().map(|e| EvidenceSpec {
            pooled: Some(e.pooled),
            alpha: e.alpha,
            advance: e.advance.then_some(true),
            planned_look: e.planned_look,
        }),
    }
}

/// A FleetRollout spec on the wire.
pub(crate) fn spec_to_proto(s: &FleetRolloutSpec) -> v1::RolloutSpec {
    v1::RolloutSpec {
        canary: s.canary.as_ref().map(|c| v1::CanaryRef {
            namespace: c.namespace.clone().unwrap_or_default(),
            name: c.name.clone().unwrap_or_default(),
        }),
        revision: s.revision.as_ref().map(|r| v1::Revision {
            container_images: r.container_images.clone().unwrap_or_default(),
            version: r.version.clone().unwrap_or_default(),
        }),
        mode: s.mode.clone().unwrap_or_default(),
        clusters: s.clusters.as_ref().map(selector_to),
        waves: s
            .waves
            .iter()
            .flatten()
            .map(|w| v1::WaveSpec {
                name: w.name.clone().unwrap_or_default(),
                clusters: w.clusters.as_ref().map(selector_to),
                regions: w.regions.clone().unwrap_or_default(),
                settings: Some(settings_to(&w.settings)),
            })
            .collect(),
        by_region: s.by_region.clone().unwrap_or_default(),
        wave_defaults: s.wave_defaults.as_ref().map(settings_to),
        failure_policy: s.failure_policy.as_ref().map(|f| v1::FailurePolicy {
            max_failed_clusters: f
                .max_failed_clusters
                .as_ref()
                .map(int_or_string)
                .unwrap_or_default(),
            mandatory_waves: f.mandatory_waves.clone().unwrap_or_default(),
            rollback: f.rollback.clone().unwrap_or_default(),
        }),
        cluster_deadline: s.cluster_deadline.clone().unwrap_or_default(),
        evidence: s.evidence.as_ref().map(|e| v1::EvidenceSpec {
            pooled: e.pooled.unwrap_or(false),
            alpha: e.alpha,
            advance: e.advance.unwrap_or(false),
            planned_look: e.planned_look,
        }),
    }
}

/// The pooled evidence on the wire.
pub(crate) fn evidence_to_proto(e: &PooledEvidence) -> v1::PooledEvidence {
    let v = e.verdict();
    let m = v.shared.metrics.first();
    v1::PooledEvidence {
        decision: v.decision.as_str().into(),
        evidence: v.ln_global.exp(),
        threshold: v.threshold,
        p_value: v.p_value,
        ratio: m.and_then(|m| m.ratio.estimate),
        ratio_low: m.and_then(|m| m.ratio.lo),
        ratio_high: m.and_then(|m| m.ratio.hi),
        confidence: m.map_or(0.0, |m| m.confidence),
        clusters_reporting: v.clusters_reporting as u32,
        clusters_planned: v.clusters_planned as u32,
        explanation: e.summary(),
        planned_look_p: e.look_p,
        refused: e.refused,
        last_refusal: e.last_refusal.clone(),
    }
}

/// A rollout on the wire: the stored record plus live values (weights, connectivity, bake
/// progress) from the fleet view.
pub(crate) fn render(rec: &RolloutRecord, fleet: &Fleet, with_history: bool) -> v1::Rollout {
    let plan = &rec.plan;
    let state = &rec.state;
    let live = fleet.live_for(plan);
    let mut live = live.into_iter();
    let waves = plan
        .waves
        .iter()
        .zip(&state.waves)
        .map(|(wp, ws)| {
            let lives: Vec<_> = live.by_ref().take(wp.clusters.len()).collect();
            // Live bake evidence: growth of served requests over the baseline (see
            // aviary_core::fleet::bake_requests), or the total recorded when the bake ended.
            let bake_requests = ws.bake.as_ref().map_or(0, |b| {
                b.requests.unwrap_or_else(|| {
                    wp.clusters
                        .iter()
                        .zip(&lives)
                        .filter_map(|(cp, l)| {
                            let base = *b.baseline.get(&cp.name)?;
                            let cur = l.canary.as_ref().map_or(base, |c| c.served_requests);
                            Some(cur.saturating_sub(base))
                        })
                        .sum()
                })
            });
            v1::WaveStatus {
                name: wp.name.clone(),
                phase: ws.phase.as_str().into(),
                max_concurrent: wp.max_concurrent,
                mandatory: wp.mandatory,
                manual_approval: wp.manual_approval,
                approved_by: ws.approved.as_ref().map(|a| a.actor.clone()).unwrap_or_default(),
                bake_duration: wp
                    .bake
                    .as_ref()
                    .map(|b| format_go_duration(b.duration))
                    .unwrap_or_default(),
                bake_min_requests: wp.bake.as_ref().map_or(0, |b| b.min_requests),
                bake_started: ws.bake.as_ref().map(|b| from_jiff(b.started)),
                bake_requests,
                clusters: wp
                    .clusters
                    .iter()
                    .zip(&ws.clusters)
                    .zip(lives)
                    .map(|((cp, cs), l)| {
                        let active = cs.phase.is_running() || cs.phase == ClusterPhase::Reverting;
                        let (canary_phase, weight, checks, metrics) = match (l.canary, active) {
                            (Some(c), true) => (c.phase, c.weight, c.failed_checks, c.metrics),
                            _ => (
                                cs.canary_phase.clone(),
                                cs.canary_weight,
                                cs.failed_checks,
                                cs.metrics.clone(),
                            ),
                        };
                        v1::ClusterStatus {
                            cluster: cp.name.clone(),
                            region: cp.region.clone(),
                            phase: cs.phase.as_str().into(),
                            canary_phase,
                            canary_weight: weight,
                            failed_checks: checks,
                            previous_revision: Some(v1::Revision::from(&cp.previous_revision)),
                            started: cs.started.map(from_jiff),
                            finished: cs.finished.map(from_jiff),
                            attempts: cs.attempts,
                            verdict: cs.verdict.clone(),
                            metrics,
                            connected: l.connected,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    v1::Rollout {
        name: rec.name.clone(),
        phase: state.phase.as_str().into(),
        message: state.message.clone(),
        canary: Some(v1::CanaryRef {
            namespace: plan.canary.namespace.clone(),
            name: plan.canary.name.clone(),
        }),
        revision: Some(v1::Revision::from(&plan.revision)),
        mode: plan.mode.as_str().into(),
        rollback_scope: plan.rollback.as_str().into(),
        max_failed_clusters: plan.max_failed_clusters,
        failed_clusters: state.failed_clusters(),
        waves,
        created: Some(from_jiff(state.created)),
        finished: state.finished.map(from_jiff),
        history: if with_history {
            state
                .history
                .iter()
                .map(|h| v1::HistoryEntry {
                    time: Some(from_jiff(h.time)),
                    kind: h.kind.clone(),
                    actor: h.actor.clone(),
                    wave: h.wave.clone(),
                    cluster: h.cluster.clone(),
                    message: h.message.clone(),
                    metrics: h.metrics.clone(),
                    comment: h.comment.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
        spec: Some(spec_to_proto(&rec.spec)),
        evidence: state.evidence.as_ref().map(evidence_to_proto),
    }
}

/// An agent's snapshot of one canary, in the fleet view's terms.
pub(crate) fn report_from_proto(s: v1::CanarySnapshot) -> CanaryReport {
    CanaryReport {
        key: CanaryKey::new(s.namespace, s.name),
        target_kind: s.target_kind,
        target_name: s.target_name,
        phase: s.phase,
        canary_weight: s.canary_weight,
        failed_checks: s.failed_checks,
        iterations: s.iterations,
        last_applied_spec: s.last_applied_spec,
        last_promoted_spec: s.last_promoted_spec,
        last_transition_time: s.last_transition_time.as_ref().and_then(to_jiff),
        target_revision: s.target_revision.as_ref().map(Revision::from),
        primary_revision: s.primary_revision.as_ref().map(Revision::from),
        served_requests: s.served_requests,
        primary_success_rate: s.primary_success_rate,
        message: s.message,
        metrics: s.metrics,
        rollout: s.rollout,
    }
}

/// A canary of the fleet view on the wire, as its agent reported it.
pub(crate) fn report_to_proto(r: &CanaryReport) -> v1::CanarySnapshot {
    v1::CanarySnapshot {
        namespace: r.key.namespace.clone(),
        name: r.key.name.clone(),
        target_kind: r.target_kind.clone(),
        target_name: r.target_name.clone(),
        phase: r.phase.clone(),
        canary_weight: r.canary_weight,
        failed_checks: r.failed_checks,
        iterations: r.iterations,
        last_applied_spec: r.last_applied_spec.clone(),
        last_promoted_spec: r.last_promoted_spec.clone(),
        last_transition_time: r.last_transition_time.map(from_jiff),
        target_revision: r.target_revision.as_ref().map(v1::Revision::from),
        primary_revision: r.primary_revision.as_ref().map(v1::Revision::from),
        served_requests: r.served_requests,
        primary_success_rate: r.primary_success_rate,
        message: r.message.clone(),
        metrics: r.metrics.clone(),
        rollout: r.rollout.clone(),
    }
}

/// ListClusters' entry.
pub(crate) fn cluster_to_proto(c: &ClusterSummary) -> v1::Cluster {
    v1::Cluster {
        name: c.record.name.clone(),
        region: c.record.region.clone(),
        labels: c.record.labels.clone(),
        agent_version: c.record.agent_version.clone(),
        connected: c.connected,
        last_seen: c.last_seen.map(from_jiff),
        canaries: c.canaries as u32,
    }
}

/// ListCanaries' entry.
pub(crate) fn cluster_canary_to_proto(c: &ClusterCanary) -> v1::FleetCanary {
    v1::FleetCanary {
        cluster: c.cluster.clone(),
        region: c.region.clone(),
        canary: Some(report_to_proto(&c.report)),
    }
}

/// A sequencer command as a message to the agent.
pub(crate) fn command_message(plan: &Plan, c: &Command) -> v1::CoordinatorMessage {
    let ns = plan.canary.namespace.clone();
    let name = plan.canary.name.clone();
    let msg = match c {
        Command::StartRevision { id, revision, .. } => Msg::StartRevision(v1::StartRevision {
            command_id: id.clone(),
            rollout: plan.name.clone(),
            namespace: ns,
            name,
            revision: Some(v1::Revision::from(revision)),
        }),
        Command::OpenGate { fingerprint, .. } => Msg::GateDecision(v1::GateDecision {
            rollout: plan.name.clone(),
            namespace: ns,
            name,
            fingerprint: fingerprint.clone(),
            open: true,
            reason: format!("started by rollout {}", plan.name),
        }),
        Command::RollbackCanary { id, reason, .. } => Msg::Rollback(v1::RollbackCanary {
            command_id: id.clone(),
            rollout: plan.name.clone(),
            namespace: ns,
            name,
            reason: reason.clone(),
        }),
        Command::Revert {
            id, revision, reason, ..
        } => Msg::Revert(v1::Revert {
            command_id: id.clone(),
            rollout: plan.name.clone(),
            namespace: ns,
            name,
            revision: Some(v1::Revision::from(revision)),
            reason: reason.clone(),
        }),
    };
    v1::CoordinatorMessage { msg: Some(msg) }
}

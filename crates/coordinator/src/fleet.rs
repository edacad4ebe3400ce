//! The in-memory view of the fleet: registered clusters, whether their agent is connected, and
//! the last snapshot of every canary. It is fed by the agent streams and is never written to the
//! store on a status update (agents resend everything on reconnect); only registrations are.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aviary_core::fleet::{CanaryKey, CanaryObs, ClusterInfo, GateAsk, Observation, Plan, Revision};
use jiff::Timestamp;
use parking_lot::{Mutex, RwLock};

use crate::store::ClusterRecord;

/// One cluster as known now.
#[derive(Debug, Clone)]
pub(crate) struct ClusterEntry {
    pub(crate) record: ClusterRecord,
    pub(crate) connected: bool,
    /// The session generation that owns `connected` (a replaced stream must not mark the
    /// cluster disconnected).
    pub(crate) session: u64,
    pub(crate) last_seen: Option<Timestamp>,
    pub(crate) canaries: BTreeMap<CanaryKey, CanaryReport>,
    pub(crate) gates: HashMap<CanaryKey, GateAsk>,
}

/// One canary as its agent last reported it (the wire's `CanarySnapshot`, in domain types).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CanaryReport {
    pub(crate) key: CanaryKey,
    pub(crate) target_kind: String,
    pub(crate) target_name: String,
    /// Flagger phase.
    pub(crate) phase: String,
    pub(crate) canary_weight: i32,
    pub(crate) failed_checks: i32,
    pub(crate) iterations: i32,
    /// `status.lastAppliedSpec` / `status.lastPromotedSpec` fingerprints.
    pub(crate) last_applied_spec: String,
    pub(crate) last_promoted_spec: String,
    pub(crate) last_transition_time: Option<Timestamp>,
    /// What the target describes and what the primary runs (`None`: the agent did not say).
    pub(crate) target_revision: Option<Revision>,
    pub(crate) primary_revision: Option<Revision>,
    /// Requests served by the primary's current revision since its promotion.
    pub(crate) served_requests: u64,
    pub(crate) primary_success_rate: Option<f64>,
    pub(crate) message: String,
    /// The last metric values of the analysis.
    pub(crate) metrics: BTreeMap<String, f64>,
    /// The rollout that last commanded the canary.
    pub(crate) rollout: String,
}

impl CanaryReport {
    /// What the sequencer reads of the report.
    pub(crate) fn observation(&self) -> CanaryObs {
        CanaryObs {
            phase: self.phase.clone(),
            canary_weight: self.canary_weight,
            failed_checks: self.failed_checks,
            last_applied_spec: self.last_applied_spec.clone(),
            last_promoted_spec: self.last_promoted_spec.clone(),
            target_revision: self.target_revision.clone().unwrap_or_default(),
            primary_revision: self.primary_revision.clone().unwrap_or_default(),
            served_requests: self.served_requests,
            primary_success_rate: self.primary_success_rate,
            metrics: self.metrics.clone(),
            message: self.message.clone(),
        }
    }
}

/// ListClusters: one registered cluster.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSummary {
    pub(crate) record: ClusterRecord,
    pub(crate) connected: bool,
    pub(crate) last_seen: Option<Timestamp>,
    pub(crate) canaries: usize,
}

/// ListCanaries' filters: empty matches any; the phase is case-insensitive.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CanaryFilter<'a> {
    pub(crate) cluster: &'a str,
    pub(crate) region: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) phase: &'a str,
}

/// ListCanaries: one canary with the cluster that reports it.
#[derive(Debug, Clone)]
pub(crate) struct ClusterCanary {
    pub(crate) cluster: String,
    pub(crate) region: String,
    pub(crate) report: CanaryReport,
}

/// What a rendered rollout shows live of one cluster.
#[derive(Debug, Clone, Default)]
pub(crate) struct Live {
    pub(crate) connected: bool,
    pub(crate) canary: Option<LiveCanary>,
}

#[derive(Debug, Clone)]
pub(crate) struct LiveCanary {
    pub(crate) phase: String,
    pub(crate) weight: i32,
    pub(crate) failed_checks: i32,
    pub(crate) metrics: std::collections::BTreeMap<String, f64>,
    pub(crate) served_requests: u64,
}

/// The fleet view.
#[derive(Default)]
pub(crate) struct Fleet {
    clusters: RwLock<BTreeMap<String, Arc<Mutex<ClusterEntry>>>>,
}

impl Fleet {
    /// Loads registrations from the store (disconnected until their agent says Hello).
    pub(crate) fn load(&self, records: Vec<ClusterRecord>) {
        let mut map = self.clusters.write();
        for r in records {
            map.entry(r.name.clone()).or_insert_with(|| {
                Arc::new(Mutex::new(ClusterEntry {
                    record: r,
                    connected: false,
                    session: 0,
                    last_seen: None,
                    canaries: BTreeMap::new(),
                    gates: HashMap::new(),
                }))
            });
        }
    }

    fn entry(&self, cluster: &str) -> Option<Arc<Mutex<ClusterEntry>>> {
        self.clusters.read().get(cluster).cloned()
    }

    /// A Hello: (re)registers the cluster and replaces its canaries with the full snapshot.
    /// Returns the previous registration (to decide whether to write it).
    pub(crate) fn hello(
        &self,
        record: ClusterRecord,
        session: u64,
        canaries: Vec<CanaryReport>,
        now: Timestamp,
    ) -> Option<ClusterRecord> {
        let canaries: BTreeMap<CanaryKey, CanaryReport> =
            canaries.into_iter().map(|r| (r.key.clone(), r)).collect();
        let mut map = self.clusters.write();
        match map.get(&record.name) {
            Some(e) => {
                let mut e = e.lock();
                let previous = e.record.clone();
                e.record = ClusterRecord {
                    registered: previous.registered,
                    ..record
                };
                e.connected = true;
                e.session = session;
                e.last_seen = Some(now);
                e.canaries = canaries;
                e.gates.clear();
                Some(previous)
            }
            None => {
                map.insert(
                    record.name.clone(),
                    Arc::new(Mutex::new(ClusterEntry {
                        record,
                        connected: true,
                        session,
                        last_seen: Some(now),
                        canaries,
                        gates: HashMap::new(),
                    })),
                );
                None
            }
        }
    }

    /// A status update (or the canary of an Ack).
    pub(crate) fn update(&self, cluster: &str, report: CanaryReport, now: Timestamp) {
        if let Some(e) = self.entry(cluster) {
            let mut e = e.lock();
            e.last_seen = Some(now);
            e.canaries.insert(report.key.clone(), report);
        }
    }

    pub(crate) fn seen(&self, cluster: &str, now: Timestamp) {
        if let Some(e) = self.entry(cluster) {
            e.lock().last_seen = Some(now);
        }
    }

    /// Records a gate request (reconcile opens the gate from it in gate mode).
    pub(crate) fn gate_request(&self, cluster: &str, canary: CanaryKey, ask: GateAsk) {
        if let Some(e) = self.entry(cluster) {
            e.lock().gates.insert(canary, ask);
        }
    }

    /// The stream of `session` ended. False if a newer session owns the cluster.
    pub(crate) fn disconnected(&self, cluster: &str, session: u64) -> bool {
        if let Some(e) = self.entry(cluster) {
            let mut e = e.lock();
            if e.session == session {
                e.connected = false;
                return true;
            }
        }
        false
    }

    /// Every registered cluster, with the canary `key` as it reports it (plan resolution).
    pub(crate) fn cluster_infos(&self, key: &CanaryKey) -> Vec<ClusterInfo> {
        let entries: Vec<_> = self.clusters.read().values().cloned().collect();
        entries
            .iter()
            .map(|e| {
                let e = e.lock();
                ClusterInfo {
                    name: e.record.name.clone(),
                    region: e.record.region.clone(),
                    labels: e.record.labels.clone(),
                    canary: e.canaries.get(key).map(CanaryReport::observation),
                }
            })
            .collect()
    }

    /// What reconcile sees of a plan's clusters.
    pub(crate) fn view_for(&self, plan: &Plan) -> BTreeMap<String, Observation> {
        let map = self.clusters.read();
        plan.clusters()
            .filter_map(|c| {
                let e = map.get(&c.name)?.lock();
                Some((
                    c.name.clone(),
                    Observation {
                        connected: e.connected,
                        canary: e.canaries.get(&plan.canary).map(CanaryReport::observation),
                        gate_request: e.gates.get(&plan.canary).cloned(),
                    },
                ))
            })
            .collect()
    }

    /// The live values of a plan's clusters for its canary, in plan order (one lock each).
    pub(crate) fn live_for(&self, plan: &Plan) -> Vec<Live> {
        let map = self.clusters.read();
        plan.clusters()
            .map(|c| match map.get(&c.name) {
                Some(e) => {
                    let e = e.lock();
                    Live {
                        connected: e.connected,
                        canary: e.canaries.get(&plan.canary).map(|s| LiveCanary {
                            phase: s.phase.clone(),
                            weight: s.canary_weight,
                            failed_checks: s.failed_checks,
                            metrics: s.metrics.clone(),
                            served_requests: s.served_requests,
                        }),
                    }
                }
                None => Live::default(),
            })
            .collect()
    }

    /// ListClusters.
    pub(crate) fn list_clusters(&self) -> Vec<ClusterSummary> {
        let entries: Vec<_> = self.clusters.read().values().cloned().collect();
        entries
            .iter()
            .map(|e| {
                let e = e.lock();
                ClusterSummary {
                    record: e.record.clone(),
                    connected: e.connected,
                    last_seen: e.last_seen,
                    canaries: e.canaries.len(),
                }
            })
            .collect()
    }

    /// ListCanaries.
    pub(crate) fn list_canaries(&self, f: CanaryFilter<'_>) -> Vec<ClusterCanary> {
        let entries: Vec<Arc<Mutex<ClusterEntry>>> = if f.cluster.is_empty() {
            self.clusters.read().values().cloned().collect()
        } else {
            self.entry(f.cluster).into_iter().collect()
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.lock();
            if !f.region.is_empty() && e.record.region != f.region {
                continue;
            }
            for (k, s) in &e.canaries {
                if (!f.namespace.is_empty() && k.namespace != f.namespace)
                    || (!f.phase.is_empty() && !s.phase.eq_ignore_ascii_case(f.phase))
                {
                    continue;
                }
                out.push(ClusterCanary {
                    cluster: e.record.name.clone(),
                    region: e.record.region.clone(),
                    report: s.clone(),
                });
            }
        }
        out
    }
}

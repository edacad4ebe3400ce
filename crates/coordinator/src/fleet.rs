//! The in-memory view of the fleet: registered clusters, whether their agent is connected, and
//! the last snapshot of every canary. It is fed by the agent streams and is never written to the
//! store on a status update (agents resend everything on reconnect); only registrations are.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aviary_core::fleet::{CanaryKey, CanaryObs, ClusterInfo, GateAsk, Observation, Plan, Revision};
use aviary_proto::v1;
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
    pub(crate) canaries: BTreeMap<CanaryKey, v1::CanarySnapshot>,
    pub(crate) gates: HashMap<CanaryKey, GateAsk>,
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

pub(crate) fn revision_from_proto(r: Option<&v1::Revision>) -> Revision {
    r.map(|r| Revision {
        container_images: r.container_images.clone(),
        version: r.version.clone(),
    })
    .unwrap_or_default()
}

pub(crate) fn revision_to_proto(r: &Revision) -> v1::Revision {
    v1::Revision {
        container_images: r.container_images.clone(),
        version: r.version.clone(),
    }
}

pub(crate) fn obs_from_snapshot(s: &v1::CanarySnapshot) -> CanaryObs {
    CanaryObs {
        phase: s.phase.clone(),
        canary_weight: s.canary_weight,
        failed_checks: s.failed_checks,
        last_applied_spec: s.last_applied_spec.clone(),
        last_promoted_spec: s.last_promoted_spec.clone(),
        target_revision: revision_from_proto(s.target_revision.as_ref()),
        primary_revision: revision_from_proto(s.primary_revision.as_ref()),
        served_requests: s.served_requests,
        primary_success_rate: s.primary_success_rate,
        metrics: s.metrics.clone(),
        message: s.message.clone(),
    }
}

pub(crate) fn key_of(s: &v1::CanarySnapshot) -> CanaryKey {
    CanaryKey::new(s.namespace.clone(), s.name.clone())
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
        canaries: Vec<v1::CanarySnapshot>,
        now: Timestamp,
    ) -> Option<ClusterRecord> {
        let canaries: BTreeMap<CanaryKey, v1::CanarySnapshot> =
            canaries.into_iter().map(|s| (key_of(&s), s)).collect();
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
    pub(crate) fn update(&self, cluster: &str, snapshot: v1::CanarySnapshot, now: Timestamp) {
        if let Some(e) = self.entry(cluster) {
            let mut e = e.lock();
            e.last_seen = Some(now);
            e.canaries.insert(key_of(&snapshot), snapshot);
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
                    canary: e.canaries.get(key).map(obs_from_snapshot),
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
                        canary: e.canaries.get(&plan.canary).map(obs_from_snapshot),
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
    pub(crate) fn list_clusters(&self) -> Vec<v1::Cluster> {
        let entries: Vec<_> = self.clusters.read().values().cloned().collect();
        entries
            .iter()
            .map(|e| {
                let e = e.lock();
                v1::Cluster {
                    name: e.record.name.clone(),
                    region: e.record.region.clone(),
                    labels: e.record.labels.clone(),
                    agent_version: e.record.agent_version.clone(),
                    connected: e.connected,
                    last_seen: e.last_seen.map(aviary_proto::ts::from_jiff),
                    canaries: e.canaries.len() as u32,
                }
            })
            .collect()
    }

    /// (region, connected) of every registered cluster (the metrics).
    pub(crate) fn connections(&self) -> Vec<(String, bool)> {
        let entries: Vec<_> = self.clusters.read().values().cloned().collect();
        entries
            .iter()
            .map(|e| {
                let e = e.lock();
                (e.record.region.clone(), e.connected)
            })
            .collect()
    }

    /// ListCanaries with its filters (empty = any; phase is case-insensitive).
    pub(crate) fn list_canaries(&self, f: &v1::ListCanariesRequest) -> Vec<v1::FleetCanary> {
        let entries: Vec<Arc<Mutex<ClusterEntry>>> = if f.cluster.is_empty() {
            self.clusters.read().values().cloned().collect()
        } else {
            self.entry(&f.cluster).into_iter().collect()
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.lock();
            if !f.region.is_empty() && e.record.region != f.region {
                continue;
            }
            for (k, s) in &e.canaries {
                if (!f.namespace.is_empty() && k.namespace != f.namespace)
                    || (!f.phase.is_empty() && !s.phase.eq_ignore_ascii_case(&f.phase))
                {
                    continue;
                }
                out.push(v1::FleetCanary {
                    cluster: e.record.name.clone(),
                    region: e.record.region.clone(),
                    canary: Some(s.clone()),
                });
            }
        }
        out
    }
}

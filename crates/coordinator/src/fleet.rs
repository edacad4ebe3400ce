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
    /// When this replica last loaded or heard from the registration: a cluster loaded by a new
    /// leader is not older than the term (registration expiry counts from here at the earliest).
    pub(crate) known: Timestamp,
    pub(crate) canaries: BTreeMap<CanaryKey, CanaryReport>,
    pub(crate) gates: HashMap<CanaryKey, GateAsk>,
}

/// Why a cluster could not be forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    Unknown,
    Connected,
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
    pub(crate) fn load(&self, records: Vec<ClusterRecord>, now: Timestamp) {
        let mut map = self.clusters.write();
        for r in records {
            map.entry(r.name.clone()).or_insert_with(|| {
                Arc::new(Mutex::new(ClusterEntry {
                    record: r,
                    connected: false,
                    session: 0,
                    last_seen: None,
                    known: now,
                    canaries: BTreeMap::new(),
                    gates: HashMap::new(),
                }))
            });
        }
    }

    fn entry(&self, cluster: &str) -> Option<Arc<Mutex<ClusterEntry>>> {
        self.clusters.read().get(cluster).cloned()
    }

    /// Every cluster's entry, out of the map: each is then locked without holding the map.
    fn entries(&self) -> Vec<Arc<Mutex<ClusterEntry>>> {
        self.clusters.read().values().cloned().collect()
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
                e.known = now;
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
                        known: now,
                        canaries,
                        gates: HashMap::new(),
                    })),
                );
                None
            }
        }
    }

    /// A status update (or the canary of an Ack). A new canary beyond
    /// [`MAX_CANARIES_PER_CLUSTER`](crate::limits::MAX_CANARIES_PER_CLUSTER) is refused.
    pub(crate) fn update(&self, cluster: &str, report: CanaryReport, now: Timestamp) -> Result<(), String> {
        if let Some(e) = self.entry(cluster) {
            let mut e = e.lock();
            e.last_seen = Some(now);
            if e.canaries.len() >= crate::limits::MAX_CANARIES_PER_CLUSTER
                && !e.canaries.contains_key(&report.key)
            {
                return Err(format!(
                    "cluster {cluster} already reports {} canaries, the limit",
                    e.canaries.len()
                ));
            }
            e.canaries.insert(report.key.clone(), report);
        }
        Ok(())
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

    /// Drops the canaries and gate requests of clusters whose agent has been gone for longer
    /// than `ttl` (their snapshots are stale; a reconnecting agent sends them all again).
    /// Returns how many canaries went.
    pub(crate) fn expire(&self, now: Timestamp, ttl: std::time::Duration) -> usize {
        let mut dropped = 0;
        for e in self.entries() {
            let mut e = e.lock();
            let stale = !e.connected
                && e.last_seen
                    .is_none_or(|t| now.duration_since(t).unsigned_abs() > ttl);
            if stale && !e.canaries.is_empty() {
                dropped += e.canaries.len();
                e.canaries.clear();
                e.gates.clear();
            }
        }
        dropped
    }

    /// Clusters whose agent has been gone for longer than `ttl` (counted from the last time
    /// this replica heard from them or loaded them): their registrations expire.
    pub(crate) fn expired_clusters(&self, now: Timestamp, ttl: std::time::Duration) -> Vec<String> {
        self.entries()
            .iter()
            .filter_map(|e| {
                let e = e.lock();
                let since = e.last_seen.map_or(e.known, |t| t.max(e.known));
                (!e.connected && now.duration_since(since).unsigned_abs() > ttl)
                    .then(|| e.record.name.clone())
            })
            .collect()
    }

    /// Forgets a disconnected cluster (its registration, canaries and gate requests); the
    /// summary it had. A connected one is kept: its agent would register again at once.
    pub(crate) fn forget(&self, cluster: &str) -> Result<ClusterSummary, Keep> {
        let mut map = self.clusters.write();
        let entry = map.get(cluster).cloned().ok_or(Keep::Unknown)?;
        let e = entry.lock();
        if e.connected {
            return Err(Keep::Connected);
        }
        let summary = ClusterSummary {
            record: e.record.clone(),
            connected: false,
            last_seen: e.last_seen,
            canaries: e.canaries.len(),
        };
        drop(e);
        map.remove(cluster);
        Ok(summary)
    }

    /// Every registered cluster, with the canary `key` as it reports it (plan resolution).
    pub(crate) fn cluster_infos(&self, key: &CanaryKey) -> Vec<ClusterInfo> {
        self.entries()
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
        self.entries()
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
        let entries = if f.cluster.is_empty() {
            self.entries()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> ClusterRecord {
        ClusterRecord {
            name: name.into(),
            region: "r".into(),
            labels: Default::default(),
            agent_version: String::new(),
            registered: Timestamp::UNIX_EPOCH,
        }
    }

    fn report(name: &str) -> CanaryReport {
        CanaryReport {
            key: CanaryKey::new("ns".to_string(), name.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn canaries_of_a_cluster_gone_for_longer_than_the_ttl_are_dropped() {
        let fleet = Fleet::default();
        let t0 = Timestamp::UNIX_EPOCH;
        let ttl = std::time::Duration::from_secs(600);
        fleet.hello(record("a"), 1, vec![report("x"), report("y")], t0);
        fleet.hello(record("b"), 2, vec![report("z")], t0);
        assert!(fleet.disconnected("a", 1));
        let later = t0 + jiff::SignedDuration::from_secs(601);
        assert_eq!(fleet.expire(t0 + jiff::SignedDuration::from_secs(599), ttl), 0);
        assert_eq!(fleet.expire(later, ttl), 2, "a's canaries go; b is connected");
        let counts: Vec<(String, usize)> = fleet
            .list_clusters()
            .into_iter()
            .map(|c| (c.record.name, c.canaries))
            .collect();
        assert_eq!(counts, [("a".to_string(), 0), ("b".to_string(), 1)]);
    }

    #[test]
    fn registrations_expire_after_the_ttl_and_only_disconnected_ones_are_forgotten() {
        let fleet = Fleet::default();
        let t0 = Timestamp::UNIX_EPOCH;
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        let ttl = std::time::Duration::from_secs(3600);
        fleet.hello(record("a"), 1, vec![report("x")], t0);
        fleet.hello(record("b"), 2, vec![], t0);
        // Loaded by a new leader at 1000 s without ever being seen by it: expiry counts from
        // the load.
        fleet.load(vec![record("c")], at(1000));
        assert!(fleet.disconnected("a", 1));
        assert!(fleet.expired_clusters(at(3600), ttl).is_empty());
        assert_eq!(fleet.expired_clusters(at(3601), ttl), ["a"], "b is connected");
        assert_eq!(fleet.expired_clusters(at(4601), ttl), ["a", "c"]);

        assert_eq!(fleet.forget("b").unwrap_err(), Keep::Connected);
        assert_eq!(fleet.forget("nope").unwrap_err(), Keep::Unknown);
        let gone = fleet.forget("a").unwrap();
        assert_eq!((gone.record.name.as_str(), gone.canaries), ("a", 1));
        let names: Vec<String> = fleet.list_clusters().into_iter().map(|c| c.record.name).collect();
        assert_eq!(names, ["b", "c"]);
        // Its agent comes back: registered again.
        assert!(fleet.hello(record("a"), 3, vec![], at(5000)).is_none());
    }
}

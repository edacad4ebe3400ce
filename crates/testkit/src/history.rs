//! The history checker every fault test shares: it replays a rollout's audit history (the JSON
//! of `aviary rollout get NAME -o json`) in order and checks the fleet's invariants
//! mechanically, then compares the coordinator's view of each cluster with its agent's own
//! status.
//!
//! Invariants:
//! - each cluster is started at most once per rollout (once more per `cluster-retried`), and
//!   every other transition of a cluster or a wave happens at most once;
//! - nothing is started or promoted after the rollback decision (`rollback-started`,
//!   `rollout-failed`, `rollout-aborted`) or after the rollout succeeded;
//! - no wave starts before the previous wave succeeded, and no cluster of a wave starts before
//!   its wave did;
//! - the failure budget (`maxFailedClusters`) is never exceeded while clusters keep starting;
//! - a cluster the coordinator calls Succeeded (Failed) is Succeeded (Failed) on its agent.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// What a check covered (for the closing totals).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// History records replayed.
    pub transitions: usize,
    /// Clusters whose agent status was compared.
    pub agents: usize,
}

impl std::ops::AddAssign for Checked {
    fn add_assign(&mut self, o: Checked) {
        self.transitions += o.transitions;
        self.agents += o.agents;
    }
}

/// Transitions that may happen once per cluster (or per wave) and rollout.
const ONCE: [&str; 6] = [
    "cluster-succeeded",
    "cluster-failed",
    "wave-started",
    "wave-succeeded",
    "rollout-succeeded",
    "rollback-started",
];

/// Transitions that move a rollout forward (forbidden once it is decided).
const FORWARD: [&str; 4] = [
    "cluster-started",
    "wave-started",
    "cluster-succeeded",
    "rollout-succeeded",
];

/// Records after which nothing moves forward.
const DECIDED: [&str; 4] = [
    "rollback-started",
    "rollout-failed",
    "rollout-aborted",
    "rollout-succeeded",
];

/// The field `camel` (or its snake_case spelling) of `v`.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> &'a Value {
    if v[camel].is_null() { &v[snake] } else { &v[camel] }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// Checks `rollout` (a rendered rollout with its history) and, for each `(cluster, phase)` in
/// `agents` (the canary phase the cluster's agent reports), that the agent agrees with the
/// coordinator on a finished cluster. Returns what was checked, or every violation found.
pub fn check(rollout: &Value, agents: &[(String, String)]) -> Result<Checked, Vec<String>> {
    let mut bad = Vec::new();
    let waves: Vec<&Value> = rollout["waves"]
        .as_array()
        .map(|w| w.iter().collect())
        .unwrap_or_default();
    let order: Vec<&str> = waves.iter().map(|w| text(w, "name")).collect();
    let wave_of: BTreeMap<&str, &str> = waves
        .iter()
        .flat_map(|w| {
            w["clusters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |c| (text(c, "cluster"), text(w, "name")))
        })
        .collect();
    let budget = field(rollout, "maxFailedClusters", "max_failed_clusters")
        .as_u64()
        .unwrap_or(0) as usize;
    let history = rollout["history"].as_array().cloned().unwrap_or_default();

    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut starts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut retries: BTreeMap<&str, usize> = BTreeMap::new();
    let mut waves_started: BTreeSet<&str> = BTreeSet::new();
    let mut waves_done: BTreeSet<&str> = BTreeSet::new();
    let mut decided: Option<&str> = None;
    let mut failed = 0usize;
    for (i, h) in history.iter().enumerate() {
        let (kind, wave, cluster) = (text(h, "kind"), text(h, "wave"), text(h, "cluster"));
        let at = format!("record {i} ({kind} wave={wave:?} cluster={cluster:?})");
        if let Some(d) = decided
            && FORWARD.contains(&kind)
        {
            bad.push(format!("{at} after {d}"));
        }
        if ONCE.contains(&kind) && !seen.insert((kind.into(), wave.into(), cluster.into())) {
            let retried = kind.starts_with("cluster-") && retries.get(cluster).is_some_and(|n| *n > 0);
            if !retried {
                bad.push(format!("{at} repeated"));
            }
        }
        match kind {
            "cluster-retried" => *retries.entry(cluster).or_default() += 1,
            "cluster-started" => {
                let n = starts.entry(cluster).or_default();
                *n += 1;
                if *n > 1 + retries.get(cluster).copied().unwrap_or(0) {
                    bad.push(format!("{at}: started {n} times"));
                }
                let w = if wave.is_empty() {
                    wave_of.get(cluster).copied().unwrap_or_default()
                } else {
                    wave
                };
                if !waves_started.contains(w) && order.first() != Some(&w) {
                    bad.push(format!("{at}: its wave {w:?} had not started"));
                }
                if failed > budget {
                    bad.push(format!("{at}: {failed} clusters failed, budget {budget}"));
                }
            }
            "wave-started" => {
                if let Some(p) = order.iter().position(|w| *w == wave)
                    && p > 0
                    && !waves_done.contains(order[p - 1])
                {
                    bad.push(format!("{at} before wave {:?} succeeded", order[p - 1]));
                }
                if failed > budget {
                    bad.push(format!("{at}: {failed} clusters failed, budget {budget}"));
                }
                waves_started.insert(wave);
            }
            "wave-succeeded" => {
                waves_done.insert(wave);
            }
            "cluster-failed" => failed += 1,
            _ => {}
        }
        if DECIDED.contains(&kind) {
            decided.get_or_insert(kind);
        }
    }

    let phases: BTreeMap<&str, &str> = waves
        .iter()
        .flat_map(|w| w["clusters"].as_array().into_iter().flatten())
        .map(|c| (text(c, "cluster"), text(c, "phase")))
        .collect();
    for (cluster, agent_phase) in agents {
        let coordinator = phases.get(cluster.as_str()).copied().unwrap_or_default();
        if matches!(coordinator, "Succeeded" | "Failed") && coordinator != agent_phase {
            bad.push(format!(
                "cluster {cluster}: the coordinator says {coordinator}, its agent {agent_phase}"
            ));
        }
    }
    if bad.is_empty() {
        Ok(Checked {
            transitions: history.len(),
            agents: agents.len(),
        })
    } else {
        Err(bad)
    }
}

/// [`check`], panicking with every violation and the history.
pub fn assert_consistent(rollout: &Value, agents: &[(String, String)]) -> Checked {
    match check(rollout, agents) {
        Ok(c) => c,
        Err(bad) => panic!(
            "the history of {} breaks the invariants:\n  {}\nhistory: {:#}",
            text(rollout, "name"),
            bad.join("\n  "),
            rollout["history"]
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// (kind, wave, cluster).
    type Record = (&'static str, &'static str, &'static str);

    fn rollout(history: &[Record]) -> Value {
        json!({
            "name": "r",
            "maxFailedClusters": 0,
            "waves": [
                {"name": "a", "clusters": [{"cluster": "a1", "phase": "Succeeded"}]},
                {"name": "b", "clusters": [{"cluster": "b1", "phase": "Succeeded"}]},
            ],
            "history": history.iter().map(|(k, w, c)| json!({"kind": k, "wave": w, "cluster": c})).collect::<Vec<_>>(),
        })
    }

    const GOOD: [Record; 7] = [
        ("wave-started", "a", ""),
        ("cluster-started", "a", "a1"),
        ("cluster-succeeded", "a", "a1"),
        ("wave-succeeded", "a", ""),
        ("wave-started", "b", ""),
        ("cluster-started", "b", "b1"),
        ("cluster-succeeded", "b", "b1"),
    ];

    #[test]
    fn a_clean_history_passes_and_counts_its_records() {
        let agents = [("a1".to_string(), "Succeeded".to_string())];
        assert_eq!(
            check(&rollout(&GOOD), &agents),
            Ok(Checked {
                transitions: 7,
                agents: 1
            })
        );
    }

    #[test]
    fn each_broken_invariant_is_reported() {
        let cases: Vec<(Vec<Record>, &str)> = vec![
            (
                [&GOOD[..], &[("cluster-started", "b", "b1")]].concat(),
                "started 2 times",
            ),
            ([&GOOD[..3], &GOOD[4..]].concat(), "before wave \"a\" succeeded"),
            (
                vec![
                    ("wave-started", "a", ""),
                    ("rollback-started", "", ""),
                    ("cluster-started", "a", "a1"),
                ],
                "after rollback-started",
            ),
            (
                vec![
                    ("wave-started", "a", ""),
                    ("cluster-failed", "a", "a1"),
                    ("cluster-started", "a", "b9"),
                ],
                "budget 0",
            ),
            (
                [&GOOD[..], &[("cluster-succeeded", "b", "b1")]].concat(),
                "repeated",
            ),
        ];
        for (history, want) in cases {
            let bad = check(&rollout(&history), &[]).expect_err(want);
            assert!(bad.iter().any(|b| b.contains(want)), "{want}: {bad:?}");
        }
        let agents = [("a1".to_string(), "Failed".to_string())];
        let bad = check(&rollout(&GOOD), &agents).unwrap_err();
        assert!(bad[0].contains("its agent Failed"), "{bad:?}");
    }

    #[test]
    fn a_retried_cluster_may_start_again() {
        let h = [
            &GOOD[..3],
            &[("cluster-retried", "a", "a1"), ("cluster-started", "a", "a1")],
        ]
        .concat();
        assert!(check(&rollout(&h), &[]).is_ok());
    }
}

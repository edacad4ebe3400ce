//! The statistical judge's step of a tick, opt-in per canary (`judge.aviary.dev/mode`, see
//! [`crate::judge::config`]). Without the annotation nothing here runs and the tick is
//! Flagger's, event for event.
//!
//! - The analysis' first tick (no canary traffic yet) starts a run: the configuration, the raw
//!   counters of both arms, and the latency boundaries chosen from the primary's histogram so
//!   far (pre-canary data, so the choice keeps the test valid).
//! - Every later analysis tick reads the counters again; the difference is one interval (one
//!   traffic split: the split changes only at the end of a tick), which the judge observes and
//!   the gate (the coordinator) receives as evidence to pool.
//! - ROLLBACK (modes `rollback`, `enforce`) sets `failedChecks` to the threshold and takes
//!   Flagger's rollback path at once, with its events and alerts. PROMOTE (`enforce`) on a tick
//!   whose own checks passed goes to Flagger's promotion path (confirm-promotion hooks first).
//!   `observe` only reports.
//! - The judge's state lives in the agent's memory. After a restart mid-analysis the judge
//!   sits the rest of that analysis out: starting a fresh e-process at the same α would be a
//!   second test and double the false-rollback bound.

use aviary_api::Strategy;
use jiff::Timestamp;

use super::{Step, Tick};
use crate::judge::{CanaryJudge, CounterReading, Decision, EvidenceReport, JudgeConfig, JudgeMode};
use crate::ports::EventType;

/// One analysis run's judge, kept in the tick memory between ticks.
#[derive(Debug, Clone)]
pub(crate) struct JudgeRun {
    /// The revision (`status.lastAppliedSpec`) this run analyses.
    revision: String,
    /// The run's name in evidence reports (revision and start).
    run: String,
    config: JudgeConfig,
    judge: CanaryJudge,
    /// The last reading; `None` after a failed read (the next one starts a fresh interval, so
    /// an interval never spans two splits).
    last: Option<CounterReading>,
    /// Intervals observed so far.
    interval: u64,
    /// The decision last announced as an event.
    announced: Decision,
}

impl Tick<'_, '_> {
    fn revision_under_analysis(&self) -> String {
        self.status().last_applied_spec.clone()
    }

    /// The metric model the counters are selected with (the built-ins' model, no interval).
    fn counter_model(&self) -> crate::ports::MetricModel {
        self.model(&aviary_api::canary::CanaryMetric::default())
    }

    /// Tells once per analysis why the judge is off, and remembers it.
    async fn judge_off(&mut self, why: &str) {
        let revision = self.revision_under_analysis();
        self.memory.judge = None;
        if self.memory.judge_off.as_deref() == Some(revision.as_str()) {
            return;
        }
        self.memory.judge_off = Some(revision);
        let id = self.id();
        self.event(
            EventType::Warning,
            &format!("Statistical judge off for this analysis of {id}: {why}; Flagger's checks decide alone"),
        )
        .await;
    }

    /// The analysis' first tick: a new judge run, or none.
    pub(super) async fn start_judge(&mut self) {
        self.memory.judge = None;
        let config = match JudgeConfig::from_canary(&self.c) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => return self.judge_off(&e.to_string()).await,
        };
        let a = self.c.analysis();
        if self.c.strategy() != Strategy::Canary || a.mirror.unwrap_or(false) {
            return self
                .judge_off(
                    "the judge compares arms that share traffic request by request, which only the progressive canary strategy without mirroring does",
                )
                .await;
        }
        let reading = match self.ports.metrics.counters(&self.c, &self.counter_model()).await {
            Ok(r) => r,
            Err(e) => {
                return self
                    .judge_off(&format!("cannot read the request counters: {e}"))
                    .await;
            }
        };
        // Everything the primary served so far: pre-canary data for the latency boundaries.
        let before = reading.since(&CounterReading {
            at: reading.at,
            ..Default::default()
        });
        let boundaries = match config.spec.resolve_boundaries(before.primary.latency.as_ref()) {
            Ok(b) => b,
            Err(e) => return self.judge_off(&e.to_string()).await,
        };
        let revision = self.revision_under_analysis();
        self.memory.judge_off = None;
        self.memory.judge = Some(JudgeRun {
            run: run_name(&revision, self.now),
            revision,
            judge: CanaryJudge::new(&config.spec, boundaries),
            config,
            last: Some(reading),
            interval: 0,
            announced: Decision::Continue,
        });
    }

    /// A later analysis tick: one more interval of evidence, and the decision to act on
    /// (always `Continue` without a judge or in `observe`).
    pub(super) async fn judge_interval(&mut self) -> Decision {
        let revision = self.revision_under_analysis();
        let Some(mut run) = self.memory.judge.take().filter(|r| r.revision == revision) else {
            if self.memory.judge_off.as_deref() != Some(revision.as_str())
                && matches!(JudgeConfig::from_canary(&self.c), Ok(Some(_)))
            {
                self.judge_off(
                    "the judge has not watched this analysis from its start (the agent restarted, or the annotation came later), and starting a test midway at the same α would double the false-rollback bound",
                )
                .await;
            }
            return Decision::Continue;
        };
        let decision = self.observe_interval(&mut run).await;
        let id = self.id();
        let acts = matches!(
            (decision, run.config.mode),
            (Decision::Rollback, JudgeMode::Rollback | JudgeMode::Enforce)
                | (Decision::Promote, JudgeMode::Enforce)
        );
        if decision != run.announced || acts {
            let verdict = run.judge.verdict(&run.config.spec);
            let kind = match decision {
                Decision::Rollback => EventType::Warning,
                _ => EventType::Normal,
            };
            let observe = if acts || decision == Decision::Continue {
                ""
            } else {
                " (observe only)"
            };
            self.event(
                kind,
                &format!("Statistical judge on {id}: {}{observe}", verdict.explanation),
            )
            .await;
            run.announced = decision;
        }
        self.memory.judge = Some(run);
        if acts { decision } else { Decision::Continue }
    }

    /// Reads the counters, observes the interval since the last reading and reports it.
    async fn observe_interval(&mut self, run: &mut JudgeRun) -> Decision {
        let spec = &run.config.spec;
        let reading = match self.ports.metrics.counters(&self.c, &self.counter_model()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(canary = %self.id(), "judge: cannot read the request counters, this interval is not judged: {e}");
                run.last = None;
                return run.judge.decision(spec);
            }
        };
        let Some(last) = run.last.replace(reading.clone()) else {
            return run.judge.decision(spec);
        };
        let counts = reading.since(&last);
        if let Err(e) = run.judge.observe(spec, &counts) {
            tracing::warn!(canary = %self.id(), "judge: interval not judged: {e}");
            return run.judge.decision(spec);
        }
        let report = EvidenceReport {
            cluster: self.config.cluster.clone().unwrap_or_default(),
            run: run.run.clone(),
            interval: run.interval,
            boundaries_ms: run.judge.boundaries().to_vec(),
            counts,
        };
        run.interval += 1;
        self.ports.gate.report_evidence(&self.c, &report).await;
        run.judge.decision(spec)
    }

    /// ROLLBACK: Flagger's own path, as if the failed checks had reached the threshold.
    pub(super) async fn roll_back_by_judge(&mut self) -> Step {
        let threshold = self.c.threshold();
        self.set_failed_checks(threshold).await?;
        self.rollback().await
    }
}

/// `<revision>@<start second>`: distinct for every analysis of a canary.
fn run_name(revision: &str, now: Timestamp) -> String {
    let short: String = revision.chars().take(16).collect();
    format!("{short}@{}", now.as_second())
}

//! The statistical judge: anytime-valid canary-versus-primary analysis, per canary and pooled
//! across the fleet. Pure: counts in, verdicts out. Operators' guide: docs/statistical-analysis.md.
//!
//! - [`counts`]: the input, exact integer counts per interval for both arms.
//! - [`ratio`]: the conditional-binomial mixture e-process on the canary/primary rate ratio
//!   (FAIL, PROMOTE and the confidence sequence), stratified by interval.
//! - [`rate`]: the absolute arm, Flagger's threshold made anytime-valid.
//! - [`metric`]: one metric (errors, or latency as exceedances at histogram bounds) and its
//!   verdict with a readable explanation.
//! - [`canary`]: every metric of one canary run combined: ROLLBACK / PROMOTE / CONTINUE.
//! - [`fleet`]: the coordinator's pool of every cluster's evidence.
//! - [`config`]: the settings, read from an unchanged Flagger Canary.
//! - [`explain`]: number formatting for explanations.

pub mod canary;
pub mod config;
pub mod counts;
pub mod explain;
pub mod fleet;
mod lnsum;
pub mod metric;
pub mod rate;
pub mod ratio;

pub use canary::{CanaryJudge, JudgeSpec, Verdict};
pub use config::{JudgeConfig, JudgeMode};
pub use counts::{ArmCounts, Histogram, IntervalCounts};
pub use fleet::{Added, EvidenceReport, FleetJudge, FleetVerdict};
pub use metric::{Boundaries, Decision, MetricKind, MetricSpec, MetricVerdict, Slo};

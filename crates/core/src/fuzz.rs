//! Fuzz targets (`fuzz/`, feature `fuzzing`; their corpus replays in this crate's tests):
//! hostile manifests through parsing, validation and what the engine derives from a valid one,
//! and hostile query templates through rendering.

use std::collections::BTreeMap;
use std::time::Duration;

use aviary_api::document::{Resource, parse_documents};
use aviary_api::validate::{document_error_report, validate};

use crate::fleet::evidence::evidence_plan;
use crate::fleet::{ClusterInfo, resolve_plan};
use crate::ports::MetricModel;
use crate::weights;

/// Canary, MetricTemplate, AlertProvider, LocalService and FleetRollout YAML as `aviary
/// validate` reads it; a resource without errors then goes where the product takes it: a
/// Canary's defaults, interval, deadline and whole weight schedule; a FleetRollout's plan
/// against a small fleet and its evidence plan.
pub fn manifests(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(docs) = parse_documents(text) else {
        return;
    };
    for doc in docs {
        let parsed = match doc {
            Ok(p) => p,
            Err(e) => {
                let report = document_error_report(&e);
                let _ = report.error_summary();
                continue;
            }
        };
        let report = validate(&parsed);
        for d in &report.diagnostics {
            let _ = report.line(d);
        }
        if report.has_errors() {
            continue;
        }
        match &parsed.resource {
            Resource::Canary(c) => canary_schedule(&aviary_api::defaults::defaulted(c)),
            Resource::FleetRollout(r) => {
                let fleet = fleet();
                let _ = resolve_plan(r, &fleet);
                let _ = evidence_plan(&r.spec);
            }
            _ => {}
        }
    }
}

/// A valid canary's timings and every weight step from 0 to promotion (bounded: a schedule
/// always reaches its maximum weight in at most 100 steps).
fn canary_schedule(c: &aviary_api::Canary) {
    let _ = c.analysis_interval(Duration::from_secs(1));
    let _ = c.progress_deadline();
    let _ = c.threshold();
    let a = c.analysis();
    let max = weights::max_weight(a);
    let (mut primary, mut canary, mut mirrored) = (weights::TOTAL, 0, false);
    for _ in 0..=2 * weights::TOTAL {
        if canary >= max {
            break;
        }
        (primary, canary, mirrored) = weights::advance(a, primary, canary, mirrored);
        assert!(
            (0..=weights::TOTAL).contains(&primary) && (0..=weights::TOTAL).contains(&canary),
            "weights out of range: {primary}/{canary}"
        );
    }
    for _ in 0..=weights::TOTAL {
        if canary == 0 {
            break;
        }
        (primary, canary) = weights::promotion_step(a, primary, canary);
    }
}

/// Three clusters in two regions, without the rollout's canary (the plan's own checks run).
fn fleet() -> Vec<ClusterInfo> {
    [("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us")]
        .map(|(name, region)| ClusterInfo {
            name: name.into(),
            region: region.into(),
            labels: BTreeMap::from([("tier".to_string(), "prod".to_string())]),
            canary: None,
        })
        .to_vec()
}

/// A metric query template rendered as Flagger's `RenderQuery` does, with every model
/// function defined.
pub fn query_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The other functions answer "" (defined all the same).
    let model = MetricModel {
        name: "podinfo".into(),
        interval: "1m".into(),
        variables: BTreeMap::from([("cluster".to_string(), "eu-1".to_string())]),
        ..MetricModel::default()
    };
    let _ = crate::template::render(text, &model);
}

#[cfg(test)]
mod tests {
    use aviary_testkit::fuzz::replay;

    #[test]
    fn the_fuzz_corpora_replay_without_a_panic() {
        assert!(replay("manifests", super::manifests) > 0);
        assert!(replay("query_template", super::query_template) > 0);
    }
}

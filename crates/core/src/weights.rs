//! Traffic weight math, exactly as Flagger does it (`nextStepWeight`, `runCanary`,
//! `runPromotionTrafficShift`). Weights are percent of a total of 100.

use aviary_api::CanaryAnalysis;
use aviary_api::defaults::effective_max_weight;

/// Flagger's total weight.
pub const TOTAL: i32 = 100;

/// The maximum canary weight (`maxWeight`, or the last `stepWeights` element, capped at 100).
pub fn max_weight(a: &CanaryAnalysis) -> i32 {
    effective_max_weight(a)
}

/// The next increment from `canary_weight`: `stepWeight` when set; otherwise the next element
/// of `stepWeights` minus the current weight, capped by `100 - current`; 1 at 100 (so a full
/// canary still moves on to promotion).
pub fn next_step(a: &CanaryAnalysis, canary_weight: i32) -> i32 {
    let step = a.step_weight.unwrap_or(0);
    let steps = a.step_weights.as_deref().unwrap_or(&[]);
    if step > 0 || steps.is_empty() {
        return step;
    }
    let max_step = TOTAL - canary_weight;
    if max_step == 0 {
        return 1;
    }
    if canary_weight == 0 {
        return max_step.min(steps[0]);
    }
    for pair in steps.windows(2) {
        if pair[0] == canary_weight {
            return max_step.min(pair[1] - canary_weight);
        }
    }
    max_step
}

/// One canary step (`runCanary` below max weight). With mirroring and weight 0, the first step
/// turns mirroring on at 100/0 and the next turns it off and shifts the first step.
/// Returns `(primary, canary, mirrored)`.
pub fn advance(a: &CanaryAnalysis, primary: i32, canary: i32, mirrored: bool) -> (i32, i32, bool) {
    let step = next_step(a, canary);
    if a.mirror.unwrap_or(false) && canary == 0 {
        if !mirrored {
            return (TOTAL, 0, true);
        }
        return (TOTAL - step, step, false);
    }
    let p = (primary - step).max(0);
    let c = (canary + step).min(TOTAL);
    (p, c, mirrored)
}

/// One promotion step (`runPromotionTrafficShift` with `stepWeightPromotion > 0`).
/// Returns `(primary, canary)`.
pub fn promotion_step(a: &CanaryAnalysis, primary: i32, canary: i32) -> (i32, i32) {
    let step = a.step_weight_promotion.unwrap_or(0);
    ((primary + step).min(TOTAL), (canary - step).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn analysis(step: Option<i32>, steps: Option<Vec<i32>>, max: Option<i32>) -> CanaryAnalysis {
        CanaryAnalysis {
            step_weight: step,
            step_weights: steps,
            max_weight: max,
            ..Default::default()
        }
    }

    #[test]
    fn step_weights_walk_the_list() {
        let a = analysis(None, Some(vec![5, 10, 15, 20, 25, 35, 45, 55]), None);
        let mut w = 0;
        let mut seen = vec![];
        while w < max_weight(&a) {
            w += next_step(&a, w);
            seen.push(w);
        }
        assert_eq!(seen, vec![5, 10, 15, 20, 25, 35, 45, 55]);
        assert_eq!(max_weight(&a), 55);
    }

    #[test]
    fn step_weight_overshoots_like_flagger() {
        let a = analysis(Some(30), None, Some(50));
        let (mut p, mut c) = (100, 0);
        let mut seen = vec![];
        while c < max_weight(&a) {
            (p, c, _) = advance(&a, p, c, false);
            seen.push(c);
        }
        assert_eq!(seen, vec![30, 60]);
        assert_eq!(p + c, 100);
    }

    #[test]
    fn unknown_current_weight_jumps_to_full() {
        let a = analysis(None, Some(vec![10, 50]), None);
        assert_eq!(next_step(&a, 30), 70);
        assert_eq!(next_step(&a, 100), 1);
    }

    #[test]
    fn mirroring_takes_one_extra_step() {
        let a = CanaryAnalysis {
            step_weight: Some(10),
            mirror: Some(true),
            ..Default::default()
        };
        assert_eq!(advance(&a, 100, 0, false), (100, 0, true));
        assert_eq!(advance(&a, 100, 0, true), (90, 10, false));
        assert_eq!(advance(&a, 90, 10, false), (80, 20, false));
    }

    #[test]
    fn promotion_steps() {
        let a = CanaryAnalysis {
            step_weight_promotion: Some(50),
            ..Default::default()
        };
        assert_eq!(promotion_step(&a, 0, 100), (50, 50));
        assert_eq!(promotion_step(&a, 50, 50), (100, 0));
        assert_eq!(promotion_step(&a, 80, 20), (100, 0));
    }

    proptest! {
        /// Weights stay within 0–100 and sum to 100 through any sequence of steps.
        #[test]
        fn weights_stay_in_range_and_sum_to_100(
            step in proptest::option::of(1i32..=100),
            steps in proptest::collection::vec(1i32..=100, 1..8),
            max in proptest::option::of(1i32..=100),
            mirror in any::<bool>(),
            promo in 0i32..=100,
        ) {
            let mut sorted = steps.clone();
            sorted.sort();
            sorted.dedup();
            let a = CanaryAnalysis {
                step_weight: step,
                step_weights: if step.is_some() { None } else { Some(sorted) },
                max_weight: max,
                mirror: Some(mirror),
                step_weight_promotion: Some(promo),
                ..Default::default()
            };
            let (mut p, mut c, mut m) = (100, 0, false);
            for _ in 0..300 {
                if c >= max_weight(&a) { break; }
                (p, c, m) = advance(&a, p, c, m);
                prop_assert!((0..=100).contains(&p) && (0..=100).contains(&c));
                prop_assert_eq!(p + c, 100);
            }
            prop_assert!(c >= max_weight(&a), "never reached max weight");
            if promo > 0 {
                for _ in 0..200 {
                    if p == 100 { break; }
                    (p, c) = promotion_step(&a, p, c);
                    prop_assert!((0..=100).contains(&p) && (0..=100).contains(&c));
                    prop_assert_eq!(p + c, 100);
                }
                prop_assert_eq!(p, 100);
            }
        }
    }
}

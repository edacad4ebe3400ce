//! Summaries: exact (Clopper-Pearson) intervals for rates, quantiles of times.

/// ln C(n, k).
fn ln_choose(n: u64, k: u64) -> f64 {
    let k = k.min(n - k);
    (0..k)
        .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
        .sum()
}

/// P(X ≤ k) for X ~ Bin(n, p).
fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    (0..=k.min(n))
        .map(|i| (ln_choose(n, i) + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()).exp())
        .sum::<f64>()
        .min(1.0)
}

/// The exact two-sided 95% confidence interval of a rate of `k` in `n`.
pub fn clopper_pearson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let solve = |f: &dyn Fn(f64) -> bool| {
        // f is true below the root, false above.
        let (mut lo, mut hi) = (0.0, 1.0);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if f(mid) { lo = mid } else { hi = mid }
        }
        0.5 * (lo + hi)
    };
    let lower = if k == 0 {
        0.0
    } else {
        solve(&|p| 1.0 - binomial_cdf(k - 1, n, p) < 0.025)
    };
    let upper = if k == n {
        1.0
    } else {
        solve(&|p| binomial_cdf(k, n, p) > 0.025)
    };
    (lower, upper)
}

/// The `q` quantile of `xs` (nearest rank); `None` when empty.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_matches_known_values() {
        // R: binom.test(5, 1000)$conf.int = 0.001624 0.011628
        let (lo, hi) = clopper_pearson(5, 1000);
        assert!(
            (lo - 0.001624).abs() < 2e-6 && (hi - 0.011628).abs() < 2e-6,
            "{lo} {hi}"
        );
        // binom.test(0, 1000): 0 0.003682
        let (lo, hi) = clopper_pearson(0, 1000);
        assert!(lo == 0.0 && (hi - 0.003682).abs() < 2e-6, "{hi}");
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}

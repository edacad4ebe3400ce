//! Numerically safe sums of exponentials: e-values are kept as logarithms because evidence
//! against a clearly broken canary overflows an f64 within minutes.

/// `ln Σ exp(v)`; `-∞` for an empty slice.
pub(crate) fn ln_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// `ln((1/n) Σ exp(v))`: the log of an equally weighted mixture.
pub(crate) fn ln_mean_exp(values: &[f64]) -> f64 {
    ln_sum_exp(values) - (values.len() as f64).ln()
}

/// `ln Σ w_i exp(v_i)` for weights `w_i ≥ 0`; zero weights drop out.
pub(crate) fn ln_weighted_sum_exp(terms: &[(f64, f64)]) -> f64 {
    let logs: Vec<f64> = terms
        .iter()
        .filter(|(w, _)| *w > 0.0)
        .map(|(w, v)| w.ln() + v)
        .collect();
    ln_sum_exp(&logs)
}

/// The point a fraction `t` of the way from `a` to `b` on a log scale.
pub(crate) fn log_interp(a: f64, b: f64, t: f64) -> f64 {
    (a.ln() + t * (b.ln() - a.ln())).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_without_overflow() {
        assert!((ln_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-9);
        assert!((ln_mean_exp(&[0.0, 0.0, 0.0]) - 0.0).abs() < 1e-12);
        assert_eq!(ln_sum_exp(&[]), f64::NEG_INFINITY);
        let w = ln_weighted_sum_exp(&[(0.5, 2f64.ln()), (0.5, 4f64.ln()), (0.0, 1e9)]);
        assert!((w - 3f64.ln()).abs() < 1e-12);
        assert!((log_interp(1.0, 4.0, 0.5) - 2.0).abs() < 1e-12);
    }
}

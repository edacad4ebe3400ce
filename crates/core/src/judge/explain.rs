//! Number formatting for the judge's explanations: two significant digits, because an
//! operator reads "evidence 31 ≥ 20", not "31.4159 ≥ 20.0000".

use super::ratio::RatioInterval;

/// `x` with two significant digits: 0.042, 0.42, 4.2, 42, 420.
pub fn fmt_sig2(x: f64) -> String {
    if !x.is_finite() {
        return if x > 0.0 { "∞".into() } else { "-∞".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(mag - 1);
    let rounded = (x / scale).round() * scale;
    // Rounding may carry into the next decade (9.96 → 10).
    let mag = rounded.abs().log10().floor() as i32;
    let decimals = (1 - mag).max(0) as usize;
    format!("{rounded:.decimals$}")
}

/// An e-value given as its logarithm: "31", "0.8", "2.4e+06", "<0.01".
pub fn fmt_e(ln: f64) -> String {
    if ln > 1e5f64.ln() {
        let decimal = ln / std::f64::consts::LN_10;
        let mut exp = decimal.floor();
        let mut mantissa = (10f64.powf(decimal - exp) * 10.0).round() / 10.0;
        if mantissa >= 10.0 {
            mantissa /= 10.0;
            exp += 1.0;
        }
        return format!("{mantissa:.1}e{exp}");
    }
    let e = ln.exp();
    if e < 0.01 { "<0.01".into() } else { fmt_sig2(e) }
}

/// "12,000".
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "250ms", "2.5ms".
pub fn fmt_ms(ms: f64) -> String {
    if ms.fract() == 0.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{}ms", fmt_sig2(ms))
    }
}

/// "0.52%", "1%".
pub fn fmt_pct(fraction: f64) -> String {
    let p = fraction * 100.0;
    let s = fmt_sig2(p);
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}%")
}

/// "∈ [1.8, 6.1]"; an end beyond the grid reads "<0.25" or ">32".
pub fn fmt_ratio_interval(ci: &RatioInterval) -> String {
    let lo = ci.lo.map_or_else(|| "<0.25".to_string(), fmt_sig2);
    let hi = ci.hi.map_or_else(|| ">32".to_string(), fmt_sig2);
    format!("∈ [{lo}, {hi}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_significant_digits() {
        let cases = [
            (31.4, "31"),
            (6.14, "6.1"),
            (1.8, "1.8"),
            (0.4249, "0.42"),
            (0.031, "0.031"),
            (20.0, "20"),
            (40.0, "40"),
            (123.0, "120"),
            (1.0, "1.0"),
            (9.96, "10"),
        ];
        for (x, want) in cases {
            assert_eq!(fmt_sig2(x), want, "{x}");
        }
    }

    #[test]
    fn evidence_counts_and_units() {
        assert_eq!(fmt_e(31f64.ln()), "31");
        assert_eq!(fmt_e(20f64.ln()), "20");
        assert_eq!(fmt_e(-10.0), "<0.01");
        assert_eq!(fmt_e(2.4e6f64.ln()), "2.4e6");
        assert_eq!(fmt_e(9.99e6f64.ln()), "1.0e7");
        assert_eq!(fmt_count(12_000), "12,000");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_ms(250.0), "250ms");
        assert_eq!(fmt_ms(2.5), "2.5ms");
        assert_eq!(fmt_pct(0.0052), "0.52%");
        assert_eq!(fmt_pct(0.01), "1%");
        let ci = RatioInterval {
            estimate: Some(3.0),
            lo: Some(1.83),
            hi: None,
        };
        assert_eq!(fmt_ratio_interval(&ci), "∈ [1.8, >32]");
    }
}

//! Go's number formatting, so event texts match Flagger's byte for byte
//! (`success rate 69.17% < 99%`, `request duration 1.2s > 500ms`).

/// Go's `%v` for a float64: shortest round-trip digits; exponent form (`1e+06`) when the
/// decimal exponent is below -4 or at least 6.
pub fn float_v(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits in scientific form: `6.9165e1`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` exponent is an integer");
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{v}")
}

/// Go's `%.2f`.
pub fn float_2f(v: f64) -> String {
    format!("{v:.2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_v_formatting() {
        let cases: &[(f64, &str)] = &[
            (99.0, "99"),
            (99.5, "99.5"),
            (0.1, "0.1"),
            (500.0, "500"),
            (999999.0, "999999"),
            (1_000_000.0, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-3.5, "-3.5"),
            (0.0, "0"),
        ];
        for (v, want) in cases {
            assert_eq!(float_v(*v), *want, "{v}");
        }
    }

    #[test]
    fn go_2f_formatting_rounds_half_even_on_exact_values() {
        assert_eq!(float_2f(69.17), "69.17");
        assert_eq!(float_2f(0.125), "0.12");
        assert_eq!(float_2f(100.0), "100.00");
    }
}

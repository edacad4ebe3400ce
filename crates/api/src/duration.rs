//! Go-style durations (`1m30s`, `500ms`, `1.5h`), as Flagger's fields are Go `time.Duration`
//! strings, and Go's formatting of them (used verbatim in event texts such as
//! `request duration 1.2s > 500ms`).

use std::time::Duration;

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

fn err(input: &str, reason: &'static str) -> DurationError {
    DurationError {
        input: input.to_string(),
        reason,
    }
}

/// Parses a Go duration string. Negative durations are rejected (no field of a canary means
/// anything by them). `"0"` is zero, as in Go.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let mut s = input.trim();
    if s.is_empty() {
        return Err(err(input, "empty"));
    }
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    } else if s.starts_with('-') {
        return Err(err(input, "negative durations are not allowed"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_nanos: u128 = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // number: digits, optional fraction
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_part = &s[start..i];
        let mut frac_part = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let fstart = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_part = &s[fstart..i];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err(input, "expected a number"));
        }
        // unit: letters (and µ/μ)
        let ustart = i;
        while i < s.len() {
            let c = s[i..].chars().next().unwrap_or('0');
            if c.is_ascii_digit() || c == '.' {
                break;
            }
            i += c.len_utf8();
        }
        let unit_nanos: u128 = match &s[ustart..i] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err(input, "missing unit (use ns, us, ms, s, m or h)")),
            _ => return Err(err(input, "unknown unit (use ns, us, ms, s, m or h)")),
        };
        let int_val: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err(input, "number too large"))?
        };
        let mut nanos = int_val
            .checked_mul(unit_nanos)
            .ok_or_else(|| err(input, "number too large"))?;
        if !frac_part.is_empty() {
            // fraction × unit, truncated like Go
            let digits = frac_part.len().min(18) as u32;
            let frac_val: u128 = frac_part[..digits as usize].parse().unwrap_or(0);
            nanos += frac_val * unit_nanos / 10u128.pow(digits);
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| err(input, "number too large"))?;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| err(input, "number too large"))?;
    Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

/// Formats a duration exactly like Go's `time.Duration.String()`.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1u128)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fmt_frac(nanos, div));
    }
    let mut out = String::new();
    let total_secs = nanos / 1_000_000_000;
    let hours = total_secs / 3600;
    let minutes = (total_secs % 3600) / 60;
    let secs_nanos = nanos - (hours * 3600 + minutes * 60) * 1_000_000_000;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", fmt_frac(secs_nanos, 1_000_000_000)));
    out
}

/// `value / div` with the fraction's trailing zeros dropped (Go's fmtFrac).
fn fmt_frac(value: u128, div: u128) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let frac_str = format!("{frac:0width$}");
    format!("{whole}.{}", frac_str.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("15s", Duration::from_secs(15)),
            ("1m", Duration::from_secs(60)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("2us", Duration::from_micros(2)),
            ("2µs", Duration::from_micros(2)),
            ("10ns", Duration::from_nanos(10)),
            (".5s", Duration::from_millis(500)),
            ("+3s", Duration::from_secs(3)),
            ("1h2m3s4ms", Duration::new(3723, 4_000_000)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go_duration(input).as_ref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        for input in ["", "s", "10", "1x", "-5s", "1m30", "abc", "1..5s", "1d"] {
            assert!(parse_go_duration(input).is_err(), "{input} should not parse");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1200), "1.2s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::new(3723, 500_000_000), "1h2m3.5s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_go_duration(*d), *want);
        }
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in 0u64..10_000_000_000_000u64) {
            let d = Duration::from_nanos(nanos);
            let s = format_go_duration(d);
            proptest::prop_assert_eq!(parse_go_duration(&s).unwrap(), d, "{}", s);
        }
    }
}

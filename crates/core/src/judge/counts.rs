//! The judge's input: exact integer counts per interval for the canary and the primary, taken
//! as differences of raw counters (never PromQL's extrapolated `increase()`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A classic (cumulative) latency histogram over one interval.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Histogram {
    /// Upper bounds in milliseconds, strictly increasing, without `+Inf`.
    pub bounds_ms: Vec<f64>,
    /// Requests at or below each bound, then the total (the `+Inf` bucket): one more entry than
    /// `bounds_ms`, non-decreasing.
    pub cumulative: Vec<u64>,
}

impl Histogram {
    /// Requests observed by the histogram (its `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Index of bound `b_ms` (exact up to float rounding of the `le` label).
    pub fn bound_index(&self, b_ms: f64) -> Option<usize> {
        self.bounds_ms
            .iter()
            .position(|b| (b - b_ms).abs() <= 1e-9 * b_ms.abs().max(1.0))
    }

    /// Requests slower than bound number `i`.
    pub fn above(&self, i: usize) -> u64 {
        self.count() - self.cumulative[i]
    }

    fn validate(&self, path: &str) -> Result<()> {
        if self.cumulative.len() != self.bounds_ms.len() + 1 {
            return Err(Error::Judge(format!(
                "{path}.cumulative: {} counts for {} bounds; expected one count per bound plus the +Inf bucket",
                self.cumulative.len(),
                self.bounds_ms.len()
            )));
        }
        if self.bounds_ms.iter().any(|b| !b.is_finite() || *b < 0.0)
            || self.bounds_ms.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(Error::Judge(format!(
                "{path}.boundsMs: {:?} must be finite, non-negative and strictly increasing",
                self.bounds_ms
            )));
        }
        if self.cumulative.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::Judge(format!(
                "{path}.cumulative: {:?} decreases; cumulative bucket counts never do (was a counter reset not handled?)",
                self.cumulative
            )));
        }
        Ok(())
    }
}

/// One arm's counts over one interval.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmCounts {
    /// Requests served.
    pub requests: u64,
    /// Requests that failed (5xx), a subset of `requests`.
    pub errors: u64,
    /// Response times, when the metric source has a histogram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Histogram>,
}

impl ArmCounts {
    fn validate(&self, path: &str) -> Result<()> {
        if self.errors > self.requests {
            return Err(Error::Judge(format!(
                "{path}.errors: {} errors but only {} requests; the error counter must count a subset of the requests",
                self.errors, self.requests
            )));
        }
        if let Some(h) = &self.latency {
            h.validate(&format!("{path}.latency"))?;
        }
        Ok(())
    }
}

/// The canary's and the primary's counts over one interval (one stratum).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntervalCounts {
    /// Length of the interval in seconds (the minimum bake is measured in these).
    pub seconds: f64,
    pub canary: ArmCounts,
    pub primary: ArmCounts,
}

impl IntervalCounts {
    /// Checks that the counts can be counts: errors within requests, histograms cumulative,
    /// both arms' histograms on the same bounds.
    pub fn validate(&self) -> Result<()> {
        if !(self.seconds.is_finite() && self.seconds >= 0.0) {
            return Err(Error::Judge(format!(
                "seconds: {} is not a duration; expected the interval's length in seconds",
                self.seconds
            )));
        }
        self.canary.validate("canary")?;
        self.primary.validate("primary")?;
        if let (Some(c), Some(p)) = (&self.canary.latency, &self.primary.latency)
            && c.bounds_ms != p.bounds_ms
        {
            return Err(Error::Judge(format!(
                "primary.latency.boundsMs: {:?} differs from the canary's {:?}; both arms must use the same buckets",
                p.bounds_ms, c.bounds_ms
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(bounds: &[f64], cum: &[u64]) -> Histogram {
        Histogram {
            bounds_ms: bounds.to_vec(),
            cumulative: cum.to_vec(),
        }
    }

    #[test]
    fn bad_counts_are_named_with_their_field() {
        let mut c = IntervalCounts {
            seconds: 15.0,
            ..Default::default()
        };
        c.canary.errors = 3;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("canary.errors: 3 errors but only 0 requests"),
            "{e}"
        );

        let mut c = IntervalCounts::default();
        c.primary.latency = Some(hist(&[10.0, 5.0], &[1, 2, 3]));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("primary.latency.boundsMs"), "{e}");

        let mut c = IntervalCounts::default();
        c.canary.latency = Some(hist(&[10.0], &[5, 3]));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("counter reset"), "{e}");

        let mut c = IntervalCounts::default();
        c.canary.latency = Some(hist(&[10.0], &[5]));
        assert!(c.validate().unwrap_err().to_string().contains("+Inf"));

        let mut c = IntervalCounts::default();
        c.canary.latency = Some(hist(&[10.0], &[1, 5]));
        c.primary.latency = Some(hist(&[20.0], &[1, 5]));
        assert!(c.validate().unwrap_err().to_string().contains("same buckets"));
    }

    #[test]
    fn exceedances() {
        let h = hist(&[50.0, 100.0, 250.0], &[60, 90, 99, 100]);
        assert_eq!(h.count(), 100);
        assert_eq!(h.bound_index(100.0), Some(1));
        assert_eq!(h.bound_index(120.0), None);
        assert_eq!(h.above(1), 10);
    }
}

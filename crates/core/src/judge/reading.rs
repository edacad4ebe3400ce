//! Raw counter readings, and the exact counts between two of them.
//!
//! A metric source reads the cumulative counters of both arms at one instant (Prometheus' raw
//! series, never `increase()`; the local router's lifetime counters). The judge differences two
//! readings series by series: a series whose value went down was reset (its process restarted),
//! so its new value is what it counted since; a series not seen before started from zero. Series
//! are keyed by a digest of their labels ([`series_id`]), so a reading stays small.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::counts::{ArmCounts, Histogram, IntervalCounts};

/// A stable 64-bit id for a series from its canonical label text (for example
/// `{code="500",pod="a"}` with the labels sorted).
pub fn series_id(labels: &str) -> u64 {
    let d = Sha256::digest(labels.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// One series of a classic histogram: cumulative counts at each bound, then `+Inf`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesHistogram {
    /// Upper bounds in milliseconds, strictly increasing, without `+Inf`.
    pub bounds_ms: Vec<f64>,
    /// Cumulative values at each bound, then the `+Inf` bucket.
    pub cumulative: Vec<f64>,
}

/// One arm's counters at one instant, by series.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmReading {
    /// Every request counter series (id → value).
    #[serde(default)]
    pub requests: BTreeMap<u64, f64>,
    /// The series counting failed (5xx) requests, a subset of the requests.
    #[serde(default)]
    pub errors: BTreeMap<u64, f64>,
    /// Latency histogram series (id of the labels without `le` → the series' buckets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latency: BTreeMap<u64, SeriesHistogram>,
}

/// Both arms' counters at one instant.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterReading {
    /// When the counters were read (Prometheus: the evaluation time).
    pub at: Timestamp,
    pub canary: ArmReading,
    pub primary: ArmReading,
}

impl CounterReading {
    /// The exact counts between `earlier` and this reading.
    pub fn since(&self, earlier: &CounterReading) -> IntervalCounts {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64().max(0.0);
        let mut canary = self.canary.since(&earlier.canary);
        let mut primary = self.primary.since(&earlier.primary);
        // Both arms on the bounds they share (the judge compares the same buckets).
        if let (Some(c), Some(p)) = (&canary.latency, &primary.latency) {
            let common: Vec<f64> = c
                .bounds_ms
                .iter()
                .copied()
                .filter(|b| p.bound_index(*b).is_some())
                .collect();
            canary.latency = Some(restrict(c, &common));
            primary.latency = Some(restrict(p, &common));
        }
        IntervalCounts {
            seconds,
            canary,
            primary,
        }
    }
}

impl ArmReading {
    fn since(&self, earlier: &ArmReading) -> ArmCounts {
        let requests = counter_delta(&earlier.requests, &self.requests);
        // Requests and errors come from the same samples, so errors ⊂ requests; a source that
        // reads them at slightly different moments is clamped rather than refused.
        let errors = counter_delta(&earlier.errors, &self.errors).min(requests);
        ArmCounts {
            requests,
            errors,
            latency: histogram_delta(&earlier.latency, &self.latency),
        }
    }
}

/// The increase of a counter family: per series, the difference, or the new value after a reset
/// or for a series not seen before.
fn counter_delta(before: &BTreeMap<u64, f64>, now: &BTreeMap<u64, f64>) -> u64 {
    let sum: f64 = now
        .iter()
        .map(|(id, v)| match before.get(id) {
            Some(b) if v >= b => v - b,
            _ => *v,
        })
        .filter(|d| d.is_finite() && *d > 0.0)
        .sum();
    sum.round() as u64
}

/// The histogram of an interval: each series' increase (its whole value after a reset, a change
/// of buckets, or when new), summed on the bounds every series has.
fn histogram_delta(
    before: &BTreeMap<u64, SeriesHistogram>,
    now: &BTreeMap<u64, SeriesHistogram>,
) -> Option<Histogram> {
    let deltas: Vec<SeriesHistogram> = now
        .iter()
        .filter(|(_, h)| h.cumulative.len() == h.bounds_ms.len() + 1)
        .map(|(id, h)| match before.get(id) {
            Some(b)
                if b.bounds_ms == h.bounds_ms
                    && b.cumulative.iter().zip(&h.cumulative).all(|(x, y)| y >= x) =>
            {
                SeriesHistogram {
                    bounds_ms: h.bounds_ms.clone(),
                    cumulative: h
                        .cumulative
                        .iter()
                        .zip(&b.cumulative)
                        .map(|(y, x)| y - x)
                        .collect(),
                }
            }
            _ => h.clone(),
        })
        .collect();
    let first = deltas.first()?;
    let common: Vec<f64> = first
        .bounds_ms
        .iter()
        .copied()
        .filter(|b| deltas.iter().all(|d| d.bounds_ms.contains(b)))
        .collect();
    let mut cumulative = vec![0.0; common.len() + 1];
    for d in &deltas {
        for (i, b) in common.iter().enumerate() {
            let k = d.bounds_ms.iter().position(|x| x == b).expect("a common bound");
            cumulative[i] += d.cumulative[k];
        }
        cumulative[common.len()] += d.cumulative.last().copied().unwrap_or(0.0);
    }
    // Rounded, and made non-decreasing (float noise or mismatched scrapes must not make a
    // histogram the judge refuses).
    let mut out: Vec<u64> = Vec::with_capacity(cumulative.len());
    for v in cumulative {
        let v = if v.is_finite() {
            v.max(0.0).round() as u64
        } else {
            0
        };
        out.push(v.max(out.last().copied().unwrap_or(0)));
    }
    Some(Histogram {
        bounds_ms: common,
        cumulative: out,
    })
}

/// `h` on a subset of its bounds (the `+Inf` bucket kept).
pub fn restrict(h: &Histogram, keep: &[f64]) -> Histogram {
    let mut bounds_ms = Vec::new();
    let mut cumulative = Vec::new();
    for (i, b) in h.bounds_ms.iter().enumerate() {
        if keep.iter().any(|k| (k - b).abs() <= 1e-9 * b.abs().max(1.0)) {
            bounds_ms.push(*b);
            cumulative.push(h.cumulative[i]);
        }
    }
    cumulative.push(h.count());
    Histogram {
        bounds_ms,
        cumulative,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn series(pairs: &[(u64, f64)]) -> BTreeMap<u64, f64> {
        pairs.iter().copied().collect()
    }

    fn hist(bounds: &[f64], cum: &[f64]) -> SeriesHistogram {
        SeriesHistogram {
            bounds_ms: bounds.to_vec(),
            cumulative: cum.to_vec(),
        }
    }

    #[test]
    fn counters_are_differenced_per_series_with_resets_and_new_series() {
        // (before, now) → increase
        type Series = Vec<(u64, f64)>;
        let cases: Vec<(Series, Series, u64)> = vec![
            (vec![(1, 100.0)], vec![(1, 130.0)], 30),
            // series 2 restarted (pod restart): its new value counts whole
            (vec![(1, 100.0), (2, 500.0)], vec![(1, 110.0), (2, 7.0)], 17),
            // series 3 is new (a new pod, or a first 500): counted from zero
            (vec![(1, 100.0)], vec![(1, 100.0), (3, 4.0)], 4),
            // a series that vanished adds nothing
            (vec![(1, 100.0), (2, 50.0)], vec![(1, 120.0)], 20),
            (vec![], vec![], 0),
        ];
        for (before, now, want) in cases {
            assert_eq!(
                counter_delta(&series(&before), &series(&now)),
                want,
                "{before:?} → {now:?}"
            );
        }
    }

    #[test]
    fn a_reading_becomes_the_intervals_counts() {
        let bounds = [50.0, 100.0, 250.0];
        let a = reading(
            0,
            (1000.0, 10.0, hist(&bounds, &[600.0, 900.0, 990.0, 1000.0])),
            (9000.0, hist(&bounds, &[5000.0, 8000.0, 8900.0, 9000.0])),
        );
        // the primary's histogram series was reset and has one bound less
        let b = reading(
            15,
            (1100.0, 12.0, hist(&bounds, &[650.0, 980.0, 1089.0, 1100.0])),
            (9900.0, hist(&[50.0, 250.0], &[700.0, 890.0, 900.0])),
        );
        let c = b.since(&a);
        assert_eq!(c.seconds, 15.0);
        assert_eq!((c.canary.requests, c.canary.errors), (100, 2));
        assert_eq!((c.primary.requests, c.primary.errors), (900, 0));
        let ch = c.canary.latency.unwrap();
        let ph = c.primary.latency.unwrap();
        assert_eq!(ch.bounds_ms, vec![50.0, 250.0]);
        assert_eq!(ch.cumulative, vec![50, 99, 100]);
        assert_eq!(ph.bounds_ms, vec![50.0, 250.0]);
        assert_eq!(ph.cumulative, vec![700, 890, 900]);
        c_valid(&b.since(&a));
    }

    /// A reading at `t` seconds: the canary's requests, errors and latency (series 1, 9 and
    /// 5), the primary's requests and latency (series 2 and 6).
    fn reading(
        t: i64,
        (requests, errors, latency): (f64, f64, SeriesHistogram),
        (primary_requests, primary_latency): (f64, SeriesHistogram),
    ) -> CounterReading {
        let mut r = CounterReading {
            at: at(t),
            ..Default::default()
        };
        r.canary.requests = series(&[(1, requests)]);
        r.canary.errors = series(&[(9, errors)]);
        r.canary.latency.insert(5, latency);
        r.primary.requests = series(&[(2, primary_requests)]);
        r.primary.latency.insert(6, primary_latency);
        r
    }

    fn c_valid(c: &IntervalCounts) {
        c.validate().expect("differenced readings are valid counts");
    }

    #[test]
    fn histograms_sum_over_series_on_their_common_bounds() {
        let before = BTreeMap::new();
        let mut now = BTreeMap::new();
        now.insert(1, hist(&[10.0, 20.0, 40.0], &[1.0, 2.0, 3.0, 4.0]));
        now.insert(2, hist(&[10.0, 40.0], &[5.0, 6.0, 10.0]));
        let h = histogram_delta(&before, &now).unwrap();
        assert_eq!(h.bounds_ms, vec![10.0, 40.0]);
        assert_eq!(h.cumulative, vec![6, 9, 14]);
        assert!(histogram_delta(&before, &BTreeMap::new()).is_none());
    }

    #[test]
    fn errors_never_exceed_requests_and_restrict_keeps_the_total() {
        let mut a = ArmReading::default();
        a.requests.insert(1, 10.0);
        a.errors.insert(2, 12.0);
        let c = a.since(&ArmReading::default());
        assert_eq!((c.requests, c.errors), (10, 10));
        let h = Histogram {
            bounds_ms: vec![1.0, 2.0, 5.0],
            cumulative: vec![3, 5, 8, 9],
        };
        let r = restrict(&h, &[2.0]);
        assert_eq!((r.bounds_ms, r.cumulative), (vec![2.0], vec![5, 9]));
        assert_ne!(series_id("{a=\"1\"}"), series_id("{a=\"2\"}"));
    }

    #[test]
    fn readings_round_trip_through_json() {
        let mut a = CounterReading {
            at: at(3),
            ..Default::default()
        };
        a.canary.requests.insert(u64::MAX, 12.0);
        a.primary.latency.insert(7, hist(&[1.0], &[1.0, 2.0]));
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<CounterReading>(&text).unwrap(), a);
    }
}

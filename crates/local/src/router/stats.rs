//! Per-backend request statistics: lifetime counters and a Prometheus histogram for `/metrics`,
//! and a ring of per-second buckets (the last [`WINDOW_SECONDS`]) for the built-in metrics
//! `request-success-rate` and `request-duration` over an analysis interval.
//!
//! Latencies go into log-linear buckets (8 per power of two, in microseconds, about 6% wide), so
//! a window quantile is accurate to a few percent without keeping samples.

use std::sync::Mutex;
use std::time::Duration;

/// How far back [`BackendStats::window`] can look.
pub const WINDOW_SECONDS: u64 = 600;

/// Bucket upper bounds (seconds) of the Prometheus histogram, plus +Inf.
pub(crate) const PROMETHEUS_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Latencies are capped just below 2^27 µs (about 134 s).
const MAX_EXP: u32 = 26;
const LATENCY_BUCKETS: usize = (SUB + (MAX_EXP as u64 + 1 - SUB_BITS as u64) * SUB) as usize;

/// Requests and latency of one backend over a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowStats {
    /// Responses recorded in the window (mirrored copies count for the canary).
    pub requests: u64,
    /// Of which 5xx, including the router's own 502/503 for an unreachable backend.
    pub errors: u64,
    /// Non-5xx share in percent; `None` when there were no requests ("no values" in Flagger).
    pub success_rate: Option<f64>,
    /// 99th percentile latency in milliseconds (time to the response headers); `None` without
    /// requests.
    pub p99_ms: Option<f64>,
}

/// A backend's lifetime counters as the statistical judge reads them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// Responses since the router started.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Histogram bounds in milliseconds (the Prometheus exposition's buckets).
    pub bounds_ms: Vec<f64>,
    /// Responses at or below each bound, then all of them (`+Inf`).
    pub cumulative: Vec<u64>,
}

impl Lifetime {
    pub(crate) fn counters(&self) -> Counters {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|n| {
                running += n;
                running
            })
            .collect();
        Counters {
            requests: self.classes.iter().sum(),
            errors: self.classes[4],
            // Rounded to whole microseconds: 0.005 × 1000 is not exactly 5 in floating point.
            bounds_ms: PROMETHEUS_BUCKETS
                .iter()
                .map(|s| (s * 1e6).round() / 1e3)
                .collect(),
            cumulative,
        }
    }
}

/// A snapshot of the lifetime counters, for the Prometheus exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Lifetime {
    /// Responses by status class 1xx..5xx.
    pub(crate) classes: [u64; 5],
    /// Non-cumulative counts per [`PROMETHEUS_BUCKETS`] entry, the last one is +Inf.
    pub(crate) buckets: [u64; PROMETHEUS_BUCKETS.len() + 1],
    pub(crate) sum_seconds: f64,
    pub(crate) count: u64,
    pub(crate) mirrored: u64,
}

#[derive(Debug)]
struct Slot {
    second: u64,
    classes: [u32; 5],
    latency: [u32; LATENCY_BUCKETS],
}

#[derive(Debug)]
struct Inner {
    /// Indexed by `second % WINDOW_SECONDS`; allocated on first use so that an idle backend
    /// costs almost nothing.
    slots: Vec<Option<Box<Slot>>>,
    lifetime: Lifetime,
}

/// The statistics of one backend (primary or canary) of one router.
#[derive(Debug)]
pub(crate) struct BackendStats {
    // A mutex (uncontended in the common case, held for a few increments) keeps the slot rotation
    // simple and exact; the hot path takes it once per request.
    inner: Mutex<Inner>,
}

impl Default for BackendStats {
    fn default() -> Self {
        BackendStats {
            inner: Mutex::new(Inner {
                slots: (0..WINDOW_SECONDS).map(|_| None).collect(),
                lifetime: Lifetime::default(),
            }),
        }
    }
}

fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

fn latency_index(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let micros = micros.min((1 << (MAX_EXP + 1)) - 1);
    let exp = 63 - micros.leading_zeros();
    let mantissa = (micros >> (exp - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(exp - SUB_BITS) * SUB + mantissa) as usize
}

/// Lower and upper bound in microseconds of a latency bucket.
fn latency_bounds(index: usize) -> (f64, f64) {
    let index = index as u64;
    if index < SUB {
        return (index as f64, (index + 1) as f64);
    }
    let exp = (index - SUB) / SUB + u64::from(SUB_BITS);
    let mantissa = (index - SUB) % SUB;
    let shift = exp - u64::from(SUB_BITS);
    (
        ((SUB + mantissa) << shift) as f64,
        ((SUB + mantissa + 1) << shift) as f64,
    )
}

impl BackendStats {
    /// Records one response. `second` is the router clock's current second.
    pub(crate) fn record(&self, second: u64, status: u16, latency: Duration, mirrored: bool) {
        let class = class_index(status);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let seconds = latency.as_secs_f64();
        let prometheus_bucket = PROMETHEUS_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(PROMETHEUS_BUCKETS.len());
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let lifetime = &mut inner.lifetime;
        lifetime.classes[class] += 1;
        lifetime.buckets[prometheus_bucket] += 1;
        lifetime.sum_seconds += seconds;
        lifetime.count += 1;
        lifetime.mirrored += u64::from(mirrored);
        let slot = inner.slots[(second % WINDOW_SECONDS) as usize].get_or_insert_with(|| {
            Box::new(Slot {
                second,
                classes: [0; 5],
                latency: [0; LATENCY_BUCKETS],
            })
        });
        if slot.second != second {
            // The slot holds data from WINDOW_SECONDS (or more) ago: reuse it.
            slot.second = second;
            slot.classes = [0; 5];
            slot.latency = [0; LATENCY_BUCKETS];
        }
        slot.classes[class] = slot.classes[class].saturating_add(1);
        let bucket = &mut slot.latency[latency_index(micros)];
        *bucket = bucket.saturating_add(1);
    }

    /// Statistics over the `window` seconds ending with `second` (included), capped at
    /// [`WINDOW_SECONDS`].
    pub(crate) fn window(&self, second: u64, window: u64) -> WindowStats {
        let window = window.clamp(1, WINDOW_SECONDS);
        let oldest = second.saturating_sub(window - 1);
        let mut classes = [0u64; 5];
        let mut latency = [0u64; LATENCY_BUCKETS];
        {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            for slot in inner.slots.iter().flatten() {
                if slot.second >= oldest && slot.second <= second {
                    for (total, n) in classes.iter_mut().zip(slot.classes) {
                        *total += u64::from(n);
                    }
                    for (total, n) in latency.iter_mut().zip(slot.latency.iter()) {
                        *total += u64::from(*n);
                    }
                }
            }
        }
        let requests: u64 = classes.iter().sum();
        let errors = classes[4];
        WindowStats {
            requests,
            errors,
            success_rate: (requests > 0).then(|| (requests - errors) as f64 * 100.0 / requests as f64),
            p99_ms: quantile_micros(&latency, 0.99).map(|us| us / 1000.0),
        }
    }

    pub(crate) fn lifetime(&self) -> Lifetime {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lifetime
            .clone()
    }
}

/// The `q` quantile from bucket counts, interpolating linearly inside the bucket as Prometheus'
/// `histogram_quantile` does.
fn quantile_micros(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (index, &count) in buckets.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let (lower, upper) = latency_bounds(index);
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_cover_the_range_without_gaps() {
        let mut previous_upper = 0.0;
        for index in 0..LATENCY_BUCKETS {
            let (lower, upper) = latency_bounds(index);
            assert_eq!(lower, previous_upper, "bucket {index}");
            assert!(upper > lower);
            previous_upper = upper;
        }
        for micros in [
            0, 1, 7, 8, 9, 15, 16, 100, 999, 1000, 12_345, 1_000_000, 99_000_000,
        ] {
            let (lower, upper) = latency_bounds(latency_index(micros));
            assert!(
                lower <= micros as f64 && (micros as f64) < upper,
                "{micros}: {lower}..{upper}"
            );
            assert!(
                upper - lower <= (micros as f64 / 8.0).max(1.0),
                "{micros}: bucket too wide"
            );
        }
        assert_eq!(latency_index(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn window_success_rate_and_p99() {
        let stats = BackendStats::default();
        assert_eq!(
            stats.window(10, 60),
            WindowStats {
                requests: 0,
                errors: 0,
                success_rate: None,
                p99_ms: None
            }
        );
        // 99 fast successes and one slow failure per second for 5 s.
        for second in 6..=10 {
            for _ in 0..99 {
                stats.record(second, 200, Duration::from_millis(10), false);
            }
            stats.record(second, 503, Duration::from_millis(500), false);
        }
        let w = stats.window(10, 60);
        assert_eq!((w.requests, w.errors), (500, 5));
        assert_eq!(w.success_rate, Some(99.0));
        let p99 = w.p99_ms.unwrap();
        assert!((10.0..=11.0).contains(&p99), "{p99}");
        // Two slow requests out of 101 push the p99 into the slow bucket.
        stats.record(10, 200, Duration::from_millis(500), false);
        stats.record(10, 200, Duration::from_millis(500), false);
        let p99 = stats.window(10, 1).p99_ms.unwrap();
        assert!((470.0..=530.0).contains(&p99), "{p99}");
        // The window only looks back as far as asked.
        assert_eq!(stats.window(10, 1).requests, 102);
        assert_eq!(stats.window(12, 3).requests, 102);
        assert_eq!(stats.window(13, 3).requests, 0);
        assert_eq!(stats.window(70, 60).requests, 0);
    }

    #[test]
    fn old_slots_are_reused_after_the_ring_wraps() {
        let stats = BackendStats::default();
        stats.record(5, 500, Duration::from_millis(1), false);
        stats.record(5 + WINDOW_SECONDS, 200, Duration::from_millis(1), false);
        let w = stats.window(5 + WINDOW_SECONDS, WINDOW_SECONDS);
        assert_eq!((w.requests, w.errors, w.success_rate), (1, 0, Some(100.0)));
        // Lifetime counters keep everything.
        let lifetime = stats.lifetime();
        assert_eq!(lifetime.classes, [0, 1, 0, 0, 1]);
        assert_eq!(lifetime.count, 2);
    }

    #[test]
    fn lifetime_histogram_and_classes() {
        let stats = BackendStats::default();
        stats.record(1, 101, Duration::from_micros(100), false);
        stats.record(1, 302, Duration::from_millis(3), true);
        stats.record(1, 404, Duration::from_secs(100), false);
        let l = stats.lifetime();
        assert_eq!(l.classes, [1, 0, 1, 1, 0]);
        assert_eq!(l.buckets[0], 1); // <= 0.5 ms
        assert_eq!(l.buckets[3], 1); // <= 5 ms
        assert_eq!(l.buckets[PROMETHEUS_BUCKETS.len()], 1); // +Inf
        assert_eq!(l.mirrored, 1);
        assert!((l.sum_seconds - 100.0031).abs() < 1e-9);
    }

    #[test]
    fn counters_for_the_judge_are_cumulative_in_milliseconds() {
        let stats = BackendStats::default();
        stats.record(1, 200, Duration::from_millis(3), false);
        stats.record(1, 503, Duration::from_millis(30), false);
        stats.record(2, 200, Duration::from_secs(100), false);
        let c = stats.lifetime().counters();
        assert_eq!((c.requests, c.errors), (3, 1));
        assert_eq!(c.bounds_ms.len() + 1, c.cumulative.len());
        assert_eq!(c.bounds_ms[3], 5.0);
        assert_eq!(c.cumulative[3], 1); // <= 5 ms
        assert_eq!(c.cumulative[6], 2); // <= 50 ms
        assert_eq!(c.cumulative.last(), Some(&3));
    }
}

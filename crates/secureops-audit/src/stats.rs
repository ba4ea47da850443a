//! Counters the log keeps about itself, read by whoever exports metrics
//! (the `secureops` binary's `/metrics`), without this crate knowing about
//! any metrics library: plain atomics, updated once per group commit and
//! once per data sync, never per decision.
//!
//! [`Histogram`] is also what the enforcement point uses for its own
//! latencies (`secureops-proxy` depends on this crate, not the other way).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A histogram over fixed bucket bounds, lock-free: an observation is a
/// short scan of the bounds and two relaxed atomic adds.
///
/// Values are integers in the histogram's own unit (nanoseconds for
/// latencies, entries for group sizes); [`Histogram::snapshot`] scales
/// them to the exported unit (seconds).
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds, ascending, in the integer unit.
    bounds: &'static [u64],
    /// One count per bound, then the `+Inf` bucket.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    /// Exported value of one integer unit (1e-9 for nanoseconds).
    scale: f64,
}

/// What a scrape reads from a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations in this bucket alone)`, ascending,
    /// without `+Inf` (prometheus-client's encoders sum them up).
    pub buckets: Vec<(f64, u64)>,
    /// Observations in total (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observed values, scaled.
    pub sum: f64,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending, integer unit); an
    /// exported value is `value * scale`.
    pub fn new(bounds: &'static [u64], scale: f64) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Latencies: bounds in nanoseconds, exported in seconds.
    pub fn seconds(bounds_ns: &'static [u64]) -> Self {
        Self::new(bounds_ns, 1e-9)
    }

    /// Records one value (integer unit).
    pub fn observe(&self, value: u64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records one duration (nanosecond histograms).
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The current state.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            let n = count.load(Ordering::Relaxed);
            total += n;
            buckets.push((*bound as f64 * self.scale, n));
        }
        if let Some(inf) = self.counts.last() {
            total += inf.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            buckets,
            count: total,
            sum: self.sum.load(Ordering::Relaxed) as f64 * self.scale,
        }
    }
}

/// Latency buckets in nanoseconds: 1 µs … 10 s.
pub const LATENCY_BUCKETS_NS: &[u64] = &[
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    10_000_000_000,
];

/// Group-size buckets (entries per group commit), up to the writer's
/// largest group.
const GROUP_BUCKETS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// What the log did since it was opened (see the module docs).
#[derive(Debug)]
pub struct AuditStats {
    entries: AtomicU64,
    groups: Histogram,
    syncs: Histogram,
}

impl Default for AuditStats {
    fn default() -> Self {
        AuditStats {
            entries: AtomicU64::new(0),
            groups: Histogram::new(GROUP_BUCKETS, 1.0),
            syncs: Histogram::seconds(LATENCY_BUCKETS_NS),
        }
    }
}

impl AuditStats {
    /// Lines written to the log (decisions and the log's own `start`,
    /// `stop` entries).
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// Lines per group commit.
    pub fn groups(&self) -> HistogramSnapshot {
        self.groups.snapshot()
    }

    /// Duration of each data sync (`fdatasync`), in seconds.
    pub fn syncs(&self) -> HistogramSnapshot {
        self.syncs.snapshot()
    }

    /// A group of `lines` lines is in the file.
    pub(crate) fn group(&self, lines: u64) {
        if lines > 0 {
            self.entries.fetch_add(lines, Ordering::Relaxed);
            self.groups.observe(lines);
        }
    }

    /// Runs one data sync and records how long it took.
    pub(crate) fn timed_sync<T>(&self, sync: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = sync();
        self.syncs.observe_duration(started.elapsed());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_own_and_inf_counts_everything() {
        static B: &[u64] = &[10, 100];
        let h = Histogram::new(B, 0.5);
        for v in [1, 10, 11, 1000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(5.0, 2), (50.0, 1)]);
        assert_eq!(s.count, 4);
        assert_eq!(s.sum, 1022.0 * 0.5);
    }

    #[test]
    fn empty_groups_count_nothing() {
        let s = AuditStats::default();
        s.group(0);
        s.group(3);
        assert_eq!(s.entries(), 3);
        assert_eq!(s.groups().count, 1);
    }
}

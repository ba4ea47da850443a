//! Closed-loop load: N client tasks, each doing one operation after the
//! other until a deadline, every operation bounded by a timeout. Latencies
//! are kept whole (microseconds) and sorted once for the percentiles.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// What the clients of one measurement did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latency of every successful operation, microseconds.
    pub lat_us: Vec<u32>,
    /// Successful operations.
    pub ok: u64,
    /// Failed operations (wrong answer, refused, timed out, I/O error).
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Payload bytes moved by successful operations.
    pub bytes: u64,
    /// Bytes that should have arrived and did not.
    pub lost: u64,
    /// Connections opened again because the peer closed a keep-alive one.
    pub reconnects: u64,
}

impl Tally {
    /// Records one operation that started at `started`.
    pub fn record(&mut self, started: Instant, result: anyhow::Result<u64>) {
        match result {
            Ok(bytes) => {
                let us = started.elapsed().as_micros();
                self.lat_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                self.ok += 1;
                self.bytes += bytes;
            }
            Err(e) => self.fail(format!("{e:#}")),
        }
    }

    /// Records one failed operation.
    pub fn fail(&mut self, why: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why);
        }
    }

    /// Adds another client's tally to this one.
    pub fn merge(&mut self, other: Tally) {
        self.lat_us.extend(other.lat_us);
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.bytes += other.bytes;
        self.lost += other.lost;
        self.reconnects += other.reconnects;
    }
}

/// A finished measurement: the merged tally and the wall time it took.
#[derive(Debug, Default)]
pub struct Run {
    /// All clients together.
    pub tally: Tally,
    /// From the first client's start to the last client's end.
    pub elapsed: Duration,
}

impl Run {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.tally.ok as f64 / secs } else { 0.0 }
    }
}

/// Runs `n` client tasks made by `client(i)` and merges what they return.
pub async fn clients<F, Fut>(n: usize, client: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(client(i))).collect();
    let mut tally = Tally::default();
    for h in handles {
        match h.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.fail(format!("client task failed: {e}")),
        }
    }
    Run {
        tally,
        elapsed: start.elapsed(),
    }
}

/// `n` clients repeat `op(i)` until `duration` is over; each operation is
/// cut off after `timeout` and counts as an error then. `op` returns the
/// payload bytes it moved.
pub async fn closed_loop<F, Fut>(n: usize, duration: Duration, timeout: Duration, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + duration;
    clients(n, move |i| {
        let op = Arc::clone(&op);
        async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let started = Instant::now();
                let result = match tokio::time::timeout(timeout, op(i)).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!("no answer within {timeout:?}")),
                };
                let failed = result.is_err();
                tally.record(started, result);
                if failed {
                    // A failing target must not turn the loop into a spin.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            tally
        }
    })
    .await
}

/// Latency percentiles of a measurement, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50: u32,
    /// 90th percentile.
    pub p90: u32,
    /// 99th percentile.
    pub p99: u32,
    /// Slowest.
    pub max: u32,
}

impl Latency {
    /// Percentiles of `samples` (sorted here); `None` when there are none.
    pub fn of(samples: &mut [u32]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |p: f64| {
            let i = ((samples.len() as f64) * p).ceil() as usize;
            samples[i.clamp(1, samples.len()) - 1]
        };
        Some(Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        let l = Latency::of(&mut v).unwrap();
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50, 90, 99, 100));
        let mut one = vec![7];
        let l = Latency::of(&mut one).unwrap();
        assert_eq!((l.p50, l.p99, l.max), (7, 7, 7));
        assert!(Latency::of(&mut []).is_none());
    }
}

//! Per-client fairness: a token bucket per source IP, checked before a
//! query is decoded, so one flooding client is refused cheaply and cannot
//! use up the capacity (or the audit log) that other clients need.
//!
//! Refused and dropped messages are not audited one by one (a flood would
//! otherwise grow the log without bound): they are counted per client and
//! reported in one summary entry per client and reporting period.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// All clients together get at most this many times one client's rate and
/// burst: while more clients are busy at once, each one's rate and burst
/// shrink to its share. Any local process can send from any address of
/// 127.0.0.0/8, so many addresses must not add up to a flood (and a flood
/// of audit entries) that one address could not send; a quiet client
/// keeps getting answers meanwhile.
const SHARED_BY: f64 = 4.0;

/// A client counts as busy this long after its last message.
const BUSY_FOR: Duration = Duration::from_secs(1);

/// How often the busy clients are counted again.
const RECOUNT: Duration = Duration::from_millis(100);

/// Clients tracked at once. Beyond it, idle clients are forgotten; if none
/// is idle, newcomers share one bucket (keyed by the unspecified address).
const MAX_CLIENTS: usize = 4096;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    refused: u64,
    dropped: u64,
}

/// What one client did that was not audited one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// The client.
    pub ip: IpAddr,
    /// Queries refused for being over the rate limit.
    pub refused: u64,
    /// Messages dropped without an answer (runts, responses).
    pub dropped: u64,
}

/// Token buckets keyed by source IP.
#[derive(Debug)]
pub(crate) struct Limiter {
    /// Tokens per second; 0 = unlimited.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// Busy clients when last counted, and when that was.
    busy: Mutex<(usize, Option<Instant>)>,
}

impl Limiter {
    /// `rate` queries per second per client with bursts of `burst`
    /// (at least one); `rate == 0` admits everything.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            busy: Mutex::new((0, None)),
        }
    }

    /// Takes a token for `ip`; `false` (and the refusal counted) when the
    /// client is over its rate.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let share = self.share(&buckets, now);
        let bucket = self.bucket(&mut buckets, ip, now);
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        let burst = (self.burst * share).max(1.0);
        bucket.tokens = (bucket.tokens + elapsed * self.rate * share).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            bucket.refused += 1;
            false
        }
    }

    /// The part of its rate and burst each client gets now (1 while at
    /// most [`SHARED_BY`] clients are busy).
    fn share(&self, buckets: &HashMap<IpAddr, Bucket>, now: Instant) -> f64 {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        if busy.1.is_none_or(|at| now.saturating_duration_since(at) >= RECOUNT) {
            let n = buckets
                .values()
                .filter(|b| now.saturating_duration_since(b.last) < BUSY_FOR)
                .count();
            *busy = (n, Some(now));
        }
        (SHARED_BY / busy.0.max(1) as f64).min(1.0)
    }

    /// Counts a message from `ip` dropped without an answer.
    pub(crate) fn note_dropped(&self, ip: IpAddr) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        self.bucket(&mut buckets, ip, Instant::now()).dropped += 1;
    }

    /// The counts since the last report, per client; resets them.
    pub(crate) fn take_reports(&self) -> Vec<Report> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (ip, b) in buckets.iter_mut() {
            if b.refused > 0 || b.dropped > 0 {
                out.push(Report {
                    ip: *ip,
                    refused: std::mem::take(&mut b.refused),
                    dropped: std::mem::take(&mut b.dropped),
                });
            }
        }
        out.sort_by_key(|r| r.ip);
        out
    }

    fn bucket<'a>(&self, buckets: &'a mut HashMap<IpAddr, Bucket>, ip: IpAddr, now: Instant) -> &'a mut Bucket {
        let key = if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&ip) {
            // Forget clients whose bucket has refilled and that owe no report.
            let refill = if self.rate > 0.0 { self.burst / self.rate } else { 0.0 };
            buckets.retain(|_, b| {
                b.refused > 0 || b.dropped > 0 || now.saturating_duration_since(b.last).as_secs_f64() < refill
            });
            if buckets.len() >= MAX_CLIENTS {
                IpAddr::from([0u8; 4])
            } else {
                ip
            }
        } else {
            ip
        };
        buckets.entry(key).or_insert_with(|| Bucket {
            tokens: self.burst,
            last: now,
            refused: 0,
            dropped: 0,
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn burst_then_rate() {
        let l = Limiter::new(10, 5);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..5).all(|_| l.admit(ip, t0)));
        assert!(!l.admit(ip, t0));
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.admit(ip, t1));
        assert!(!l.admit(ip, t1));
        assert_eq!(
            l.take_reports(),
            vec![Report {
                ip,
                refused: 2,
                dropped: 0
            }]
        );
        assert!(l.take_reports().is_empty());
    }

    #[test]
    fn clients_do_not_share_buckets() {
        let l = Limiter::new(1, 1);
        let now = Instant::now();
        let flooder: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(l.admit(flooder, now));
        assert!((0..1000).all(|_| !l.admit(flooder, now)));
        assert!(l.admit(other, now));
    }

    #[test]
    fn many_busy_clients_share_what_a_few_would_get() {
        let l = Limiter::new(100, 100);
        let t0 = Instant::now();
        let flooders: Vec<IpAddr> = (0..40u8).map(|n| IpAddr::from([127, 0, 1, n])).collect();
        // Each new flooder starts with a full burst; once they are all
        // counted busy, each gets a tenth of the rate and burst.
        for ip in &flooders {
            l.admit(*ip, t0);
        }
        let t1 = t0 + RECOUNT;
        let mut admitted = 0;
        for step in 0..10u32 {
            let now = t1 + Duration::from_millis(100) * step;
            for ip in &flooders {
                admitted += (0..100).filter(|_| l.admit(*ip, now)).count();
            }
        }
        // One second of 40 flooders: about what 4 clients may send (4 x
        // 100/s) plus their shrunk bursts, far from 40 x 100.
        assert!(admitted < 1000, "{admitted}");
        // A quiet client still gets its answers.
        let quiet: IpAddr = "127.0.0.1".parse().unwrap();
        let now = t1 + Duration::from_secs(1);
        assert!(l.admit(quiet, now));
        assert!(l.admit(quiet, now + Duration::from_millis(200)));
    }

    #[test]
    fn unlimited_admits_everything() {
        let l = Limiter::new(0, 0);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let now = Instant::now();
        assert!((0..10_000).all(|_| l.admit(ip, now)));
    }

    #[test]
    fn client_table_is_bounded() {
        let l = Limiter::new(1, 1);
        let now = Instant::now();
        for n in 0..(MAX_CLIENTS as u32 * 2) {
            let ip = IpAddr::from(n.to_be_bytes());
            l.admit(ip, now);
            l.admit(ip, now);
        }
        let buckets = l.buckets.lock().unwrap();
        assert!(buckets.len() <= MAX_CLIENTS + 1, "{}", buckets.len());
    }
}

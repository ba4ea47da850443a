//! Refusal pacing: a flood of denied attempts must not starve allowed
//! traffic.
//!
//! A refusal costs the guard little, but a client that retries denied
//! destinations in a tight loop (a confused or hijacked agent, a scanner)
//! makes as many as the CPU allows, and allowed connections then queue
//! behind them. So while allowed traffic is flowing (an allowed decision
//! within the last [`ACTIVE`]), refusals are answered at once up to a
//! sustained rate ([`RATE`] per second, with a burst of [`BURST`]); beyond
//! it each refusal is answered after a short delay, at most [`MAX_DELAY`],
//! which holds the flooding clients back while allowed connections never
//! wait. With no allowed traffic there is nothing to protect and refusals
//! go out at full speed. The decision and its audit entry are not delayed,
//! only the answer, and no byte reaches the upstream either way.
//!
//! The algorithm is GCRA (a token bucket kept as one "theoretical arrival
//! time"), lock-free on one atomic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Refusals per second answered without delay.
pub const RATE: u64 = 2000;
/// Refusals answered without delay in a burst above [`RATE`].
pub const BURST: u64 = 2000;
/// The longest a refusal is held back.
pub const MAX_DELAY: Duration = Duration::from_millis(10);
/// How recent an allowed decision must be for refusals to be paced.
pub const ACTIVE: Duration = Duration::from_millis(100);

/// Spaces refusals out beyond [`RATE`] (see the module docs).
#[derive(Debug)]
pub struct RefusalPacer {
    start: Instant,
    /// Theoretical arrival time of the next refusal, in ns since `start`.
    tat: AtomicU64,
    /// The last allowed decision, in ns since `start` (0: none yet).
    allowed: AtomicU64,
    interval: u64,
    tolerance: u64,
    max_delay: u64,
}

impl Default for RefusalPacer {
    fn default() -> Self {
        Self::new(RATE, BURST, MAX_DELAY)
    }
}

impl RefusalPacer {
    /// `rate` refusals per second without delay, `burst` more at once, and
    /// at most `max_delay` for the others.
    pub fn new(rate: u64, burst: u64, max_delay: Duration) -> Self {
        let interval = 1_000_000_000 / rate.max(1);
        Self {
            start: Instant::now(),
            tat: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            interval,
            tolerance: interval.saturating_mul(burst),
            max_delay: u64::try_from(max_delay.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    fn now(&self) -> u64 {
        // Never 0, which means "no allowed decision yet".
        u64::try_from(self.start.elapsed().as_nanos()).map_or(u64::MAX, |n| n.max(1))
    }

    /// Notes an allowed decision: refusals are paced for the next [`ACTIVE`].
    pub fn note_allowed(&self) {
        self.allowed.store(self.now(), Ordering::Relaxed);
    }

    /// How long the refusal arriving now is held back.
    pub fn delay(&self) -> Duration {
        let now = self.now();
        let allowed = self.allowed.load(Ordering::Relaxed);
        if allowed == 0 || now.saturating_sub(allowed) > ACTIVE.as_nanos() as u64 {
            return Duration::ZERO;
        }
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            // Over the burst tolerance: wait, but never longer than
            // `max_delay`, and do not let the debt grow past it.
            let wait = next.saturating_sub(now.saturating_add(self.tolerance));
            let (wait, next) = if wait > self.max_delay {
                (
                    self.max_delay,
                    now.saturating_add(self.tolerance).saturating_add(self.max_delay),
                )
            } else {
                (wait, next)
            };
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Duration::from_nanos(wait),
                Err(current) => tat = current,
            }
        }
    }

    /// Waits out [`RefusalPacer::delay`].
    pub async fn pace(&self) {
        let wait = self.delay();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_passes_then_refusals_are_spaced_and_capped() {
        let pacer = RefusalPacer::new(1000, 10, Duration::from_millis(5));
        pacer.note_allowed();
        // The burst (and the one the rate allows meanwhile) goes at once.
        for i in 0..10 {
            assert_eq!(pacer.delay(), Duration::ZERO, "refusal {i}");
        }
        // Then each is held about one interval (1 ms) more than the last,
        // up to the cap.
        let held: Vec<Duration> = (0..20).map(|_| pacer.delay()).collect();
        assert!(held[1] > Duration::ZERO, "{held:?}");
        assert!(held.windows(2).all(|w| w[1] >= w[0]), "{held:?}");
        assert!(held.iter().all(|d| *d <= Duration::from_millis(5)), "{held:?}");
        assert_eq!(held[19], Duration::from_millis(5), "{held:?}");
    }

    #[test]
    fn a_quiet_spell_refills_the_burst() {
        let pacer = RefusalPacer::new(1000, 2, Duration::from_millis(5));
        pacer.note_allowed();
        while pacer.delay().is_zero() {}
        std::thread::sleep(Duration::from_millis(20));
        pacer.note_allowed();
        assert_eq!(pacer.delay(), Duration::ZERO);
    }

    #[test]
    fn without_allowed_traffic_refusals_are_not_paced() {
        let pacer = RefusalPacer::new(1000, 2, Duration::from_millis(5));
        assert!((0..100).all(|_| pacer.delay().is_zero()));
        pacer.note_allowed();
        assert!((0..100).any(|_| !pacer.delay().is_zero()));
    }
}

//! Refusal pacing: a flood of denied attempts must not starve allowed
//! traffic.
//!
//! A refusal costs the guard little, but a client that retries denied
//! destinations in a tight loop (a confused or hijacked agent, a scanner)
//! makes as many as the CPU allows, and allowed connections then queue
//! behind them. So while allowed traffic is flowing (an allowed decision
//! within the last [`ACTIVE`]), refusals are answered at once up to a
//! sustained rate, with a burst of [`BURST`]; beyond it each refusal is
//! answered after a short delay, at most [`MAX_DELAY`], which holds the
//! flooding clients back while allowed connections never wait. The rate is
//! [`RATE`] per second or a little more than the allowed decisions of the
//! last [`ACTIVE`] ([`SHARE`] of them), whichever is higher: denied clients
//! as a whole are answered at least as fast as allowed ones are let
//! through, and no faster than needed. With no allowed traffic there is
//! nothing to protect and refusals go out at full speed. The decision and
//! its audit entry are not delayed, only the answer, and no byte reaches
//! the upstream either way.
//!
//! The algorithm is GCRA (a token bucket kept as one "theoretical arrival
//! time"), lock-free on atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Refusals per second answered without delay, at least.
pub const RATE: u64 = 2000;
/// Refusals answered without delay in a burst above [`RATE`].
pub const BURST: u64 = 2000;
/// The longest a refusal is held back.
pub const MAX_DELAY: Duration = Duration::from_millis(10);
/// How recent an allowed decision must be for refusals to be paced; also
/// the window over which allowed decisions are counted.
pub const ACTIVE: Duration = Duration::from_millis(100);
/// Refusals answered without delay per allowed decision of the last window
/// (numerator, denominator): a tenth more.
pub const SHARE: (u64, u64) = (11, 10);

/// Spaces refusals out beyond [`RATE`] (see the module docs).
#[derive(Debug)]
pub struct RefusalPacer {
    start: Instant,
    /// Theoretical arrival time of the next refusal, in ns since `start`.
    tat: AtomicU64,
    /// The last allowed decision, in ns since `start` (0: none yet).
    allowed: AtomicU64,
    /// Start of the current counting window, in ns since `start`.
    window: AtomicU64,
    /// Allowed decisions in the current window.
    counted: AtomicU64,
    /// Allowed decisions per second in the last full window.
    allowed_rate: AtomicU64,
    rate: u64,
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
        let rate = rate.max(1);
        Self {
            start: Instant::now(),
            tat: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            window: AtomicU64::new(0),
            counted: AtomicU64::new(0),
            allowed_rate: AtomicU64::new(0),
            rate,
            // The burst is a time allowance, whatever the rate.
            tolerance: (1_000_000_000 / rate).saturating_mul(burst),
            max_delay: u64::try_from(max_delay.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    fn now(&self) -> u64 {
        // Never 0, which means "no allowed decision yet".
        u64::try_from(self.start.elapsed().as_nanos()).map_or(u64::MAX, |n| n.max(1))
    }

    /// Notes an allowed decision: refusals are paced for the next [`ACTIVE`].
    pub fn note_allowed(&self) {
        self.note_allowed_at(self.now());
    }

    fn note_allowed_at(&self, now: u64) {
        self.allowed.store(now, Ordering::Relaxed);
        let window = self.window.load(Ordering::Relaxed);
        let length = now.saturating_sub(window);
        let active = ACTIVE.as_nanos() as u64;
        if length < active {
            self.counted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // One caller closes the window; a racing one counts in the new one.
        if self
            .window
            .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let counted = self.counted.swap(1, Ordering::Relaxed);
            // A window idle for longer than itself says nothing of now.
            let rate = if length < 2 * active {
                counted.saturating_mul(1_000_000_000) / length
            } else {
                0
            };
            self.allowed_rate.store(rate, Ordering::Relaxed);
        } else {
            self.counted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals per second answered without delay now.
    fn refusal_rate(&self) -> u64 {
        let allowed = self.allowed_rate.load(Ordering::Relaxed);
        self.rate.max(allowed.saturating_mul(SHARE.0) / SHARE.1)
    }

    /// How long the refusal arriving now is held back.
    pub fn delay(&self) -> Duration {
        self.delay_at(self.now())
    }

    fn delay_at(&self, now: u64) -> Duration {
        let allowed = self.allowed.load(Ordering::Relaxed);
        if allowed == 0 || now.saturating_sub(allowed) > ACTIVE.as_nanos() as u64 {
            return Duration::ZERO;
        }
        let interval = 1_000_000_000 / self.refusal_rate().max(1);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(interval);
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

    #[test]
    fn refusals_keep_pace_with_allowed_traffic() {
        const MS: u64 = 1_000_000;
        let pacer = RefusalPacer::new(1000, 1, Duration::from_millis(10));
        // Allowed decisions at 5000/s for 250 ms: the last full window
        // counted them.
        let mut t = MS;
        while t < 251 * MS {
            pacer.note_allowed_at(t);
            t += MS / 5;
        }
        let rate = pacer.refusal_rate();
        assert!((5400..=5600).contains(&rate), "{rate}/s, expected 5500");
        // A burst of refusals at one instant is spaced by 1/5500 s each.
        let held: Vec<u64> = (0..30).map(|_| pacer.delay_at(t).as_nanos() as u64).collect();
        let step = 1_000_000_000 / rate;
        for w in held.windows(2).filter(|w| w[0] > 0) {
            assert_eq!(w[1] - w[0], step, "{held:?}");
        }
        assert!(held[29] > 0 && held[29] < 10 * MS, "{held:?}");
    }

    #[test]
    fn slow_allowed_traffic_leaves_the_floor_rate() {
        const MS: u64 = 1_000_000;
        let pacer = RefusalPacer::new(1000, 1, Duration::from_millis(10));
        // 50 allowed decisions per second, then a quiet spell longer than
        // two windows: the floor applies either way.
        let mut t = MS;
        while t < 300 * MS {
            pacer.note_allowed_at(t);
            t += 20 * MS;
        }
        assert_eq!(pacer.refusal_rate(), 1000);
        pacer.note_allowed_at(t + 500 * MS);
        assert_eq!(pacer.refusal_rate(), 1000);
    }
}

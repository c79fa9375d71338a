//! Capped exponential backoff with jitter (client-go reflector constants).

use std::time::{Duration, Instant};

use crate::clock::Rng;

/// First delay: client-go's reflector starts at 800 ms, long enough not to hammer, short enough to recover fast.
pub const INITIAL: Duration = Duration::from_millis(800);
/// Cap: 30 s keeps a broken API server from being polled hard while still noticing recovery quickly.
pub const MAX: Duration = Duration::from_secs(30);
/// After this long without a failure the next failure starts from [`INITIAL`] again (client-go: 2 min).
pub const RESET_AFTER: Duration = Duration::from_secs(120);
/// Each delay is spread by ±25 % so that many watchers that failed together do not retry together.
const JITTER: f64 = 0.25;
/// No delay is ever shorter than this, so a retry loop can never spin.
const FLOOR: Duration = Duration::from_millis(10);

/// Doubling delays from [`INITIAL`] to [`MAX`] with jitter, reset after [`RESET_AFTER`] without failures.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    last_failure: Option<Instant>,
    rng: Rng,
}

impl Backoff {
    /// A fresh backoff using `rng` for jitter.
    pub fn new(rng: Rng) -> Self {
        Backoff {
            next: INITIAL,
            last_failure: None,
            rng,
        }
    }

    /// Records a failure at `now` and returns how long to wait before retrying (never ≤ 0, never above MAX).
    pub fn failure(&mut self, now: Instant) -> Duration {
        if self
            .last_failure
            .is_some_and(|t| now.saturating_duration_since(t) >= RESET_AFTER)
        {
            self.next = INITIAL;
        }
        self.last_failure = Some(now);
        let base = self.next;
        self.next = base.saturating_mul(2).min(MAX);
        let factor = 1.0 - JITTER + 2.0 * JITTER * self.rng.next_f64();
        base.mul_f64(factor).clamp(FLOOR, MAX)
    }

    #[cfg(test)]
    /// Forgets all failures: the next delay is [`INITIAL`] again.
    pub fn reset(&mut self) {
        self.next = INITIAL;
        self.last_failure = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_800ms_and_cap_at_30s_within_jitter() {
        let mut b = Backoff::new(Rng::with_seed(7));
        let now = Instant::now();
        let expected = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0];
        for want in expected {
            let got = b.failure(now).as_secs_f64();
            assert!(
                got >= want * 0.75 - 1e-9 && got <= (want * 1.25).min(30.0),
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn two_minutes_without_failure_resets_the_delay() {
        let mut b = Backoff::new(Rng::with_seed(1));
        let t0 = Instant::now();
        for _ in 0..6 {
            b.failure(t0);
        }
        assert!(b.failure(t0 + Duration::from_secs(1)) >= Duration::from_secs(20));
        let after = b.failure(t0 + Duration::from_secs(1) + RESET_AFTER);
        assert!(after <= INITIAL.mul_f64(1.25), "{after:?}");
    }

    #[test]
    fn explicit_reset_starts_over() {
        let mut b = Backoff::new(Rng::with_seed(3));
        let now = Instant::now();
        for _ in 0..10 {
            b.failure(now);
        }
        b.reset();
        assert!(b.failure(now) <= INITIAL.mul_f64(1.25));
    }

    #[test]
    fn delay_is_never_zero_even_for_a_zero_random_draw() {
        let mut b = Backoff::new(Rng::with_seed(0));
        for _ in 0..1000 {
            assert!(b.failure(Instant::now()) >= FLOOR);
        }
    }
}

//! Capped exponential backoff with jitter (client-go reflector constants) and a tiny injectable RNG.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// A xorshift64* generator: not cryptographic, only for spreading retries and watch timeouts.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed (tests); a zero seed is replaced because xorshift would stick at 0.
    pub fn with_seed(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A generator seeded from the wall clock and the current thread, different per thread and run.
    pub fn from_entropy() -> Self {
        let mut h = DefaultHasher::new();
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .hash(&mut h);
        std::thread::current().id().hash(&mut h);
        Self::with_seed(h.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A float uniformly in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An integer uniformly in `lo..=hi` (returns `lo` if `hi < lo`).
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        match hi.checked_sub(lo).and_then(|span| span.checked_add(1)) {
            Some(n) => lo + self.next_u64() % n,
            None if hi >= lo => self.next_u64(),
            None => lo,
        }
    }
}

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

    #[test]
    fn rng_ranges_stay_in_bounds_and_vary() {
        let mut r = Rng::with_seed(42);
        let draws: Vec<u64> = (0..200).map(|_| r.range_inclusive(290, 300)).collect();
        assert!(draws.iter().all(|d| (290..=300).contains(d)));
        assert!(draws.contains(&290) && draws.contains(&300));
        assert_eq!(r.range_inclusive(5, 1), 5);
        let _ = r.range_inclusive(0, u64::MAX);
        let f = r.next_f64();
        assert!((0.0..1.0).contains(&f));
    }
}

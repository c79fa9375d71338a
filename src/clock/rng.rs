//! The one random source: a tiny seedable generator, so tests can fix the draws.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// A xorshift64* generator: not cryptographic, only for jitter, watch timeouts and the Lease
/// identity's suffix.
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

    /// A generator seeded from std's per-process random hash keys, the wall clock and the current
    /// thread, so it differs per thread and run.
    pub fn from_entropy() -> Self {
        let mut h = RandomState::new().build_hasher();
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

#[cfg(test)]
mod tests {
    use super::*;

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

//! A blocking, thread-safe token bucket that every API request passes through (client-go's QPS/burst).

use crate::clock::Clock;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Token bucket: `qps` tokens a second up to `burst`; a request takes one, waiting if none is left.
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    clock: Arc<dyn Clock>,
    state: Mutex<Bucket>,
}

struct Bucket {
    /// May go negative: each waiter reserves its token before sleeping, so waiters are served in order.
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter allowing `qps` per second with bursts of `burst`; `qps` ≤ 0 (or NaN) means unlimited.
    pub fn new(qps: f64, burst: u32, clock: Arc<dyn Clock>) -> Self {
        let burst = f64::from(burst.max(1));
        let now = clock.now();
        RateLimiter {
            qps: if qps.is_finite() && qps > 0.0 {
                qps
            } else {
                0.0
            },
            burst,
            clock,
            state: Mutex::new(Bucket {
                tokens: burst,
                last: now,
            }),
        }
    }

    /// Whether this limiter never waits.
    pub fn is_unlimited(&self) -> bool {
        self.qps == 0.0
    }

    /// Takes one token, blocking until it is available.
    pub fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            self.clock.sleep(wait);
        }
    }

    /// Takes one token now (possibly on credit) and returns how long the caller must wait for it.
    fn reserve(&self) -> Duration {
        if self.is_unlimited() {
            return Duration::ZERO;
        }
        let now = self.clock.now();
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.qps).min(self.burst);
        b.last = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-b.tokens / self.qps).unwrap_or(Duration::from_secs(3600))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    #[test]
    fn burst_passes_at_once_then_requests_are_paced_at_qps() {
        let clock = Arc::new(FakeClock::new());
        let rl = RateLimiter::new(10.0, 5, clock.clone());
        for _ in 0..5 {
            rl.acquire();
        }
        assert_eq!(clock.elapsed(), Duration::ZERO);
        for _ in 0..10 {
            rl.acquire();
        }
        let waited = clock.elapsed().as_secs_f64();
        assert!((waited - 1.0).abs() < 1e-6, "waited {waited}");
    }

    #[test]
    fn idle_time_refills_the_bucket_up_to_burst_only() {
        let clock = Arc::new(FakeClock::new());
        let rl = RateLimiter::new(1.0, 2, clock.clone());
        rl.acquire();
        rl.acquire();
        clock.advance(Duration::from_secs(100));
        let before = clock.elapsed();
        rl.acquire();
        rl.acquire();
        assert_eq!(clock.elapsed(), before);
        rl.acquire();
        assert_eq!(clock.elapsed() - before, Duration::from_secs(1));
    }

    #[test]
    fn zero_or_negative_qps_is_unlimited() {
        let clock = Arc::new(FakeClock::new());
        for qps in [0.0, -1.0, f64::NAN] {
            let rl = RateLimiter::new(qps, 1, clock.clone());
            assert!(rl.is_unlimited());
            for _ in 0..1000 {
                rl.acquire();
            }
        }
        assert_eq!(clock.elapsed(), Duration::ZERO);
    }

    #[test]
    fn concurrent_waiters_each_reserve_their_own_slot() {
        let clock = Arc::new(FakeClock::new());
        let rl = RateLimiter::new(2.0, 1, clock.clone());
        rl.acquire();
        let waits: Vec<Duration> = (0..4).map(|_| rl.reserve()).collect();
        let secs: Vec<f64> = waits.iter().map(|d| d.as_secs_f64()).collect();
        assert_eq!(secs, vec![0.5, 1.0, 1.5, 2.0]);
    }
}

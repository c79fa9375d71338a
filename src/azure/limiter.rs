//! The process-wide IMDS limiter: at most 5 requests in flight and 20 started per second.
//!
//! IMDS throttles managed-identity calls per node at those numbers (and the node is shared),
//! so we wait here rather than collect 429s.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Concurrent IMDS requests allowed (IMDS managed-identity limit per VM).
pub const MAX_CONCURRENT: usize = 5;
/// IMDS requests started per second (IMDS managed-identity limit per VM).
pub const MAX_PER_SECOND: u32 = 20;

/// A counting semaphore plus a token bucket under one mutex.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
    changed: Condvar,
    max_concurrent: usize,
    rate: u32,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// Start tokens available; refilled continuously at `rate` per second, capped at `rate`.
    tokens: f64,
    refilled: Instant,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a Limiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        state.in_flight -= 1;
        drop(state);
        self.limiter.changed.notify_one();
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(MAX_CONCURRENT, MAX_PER_SECOND)
    }
}

impl Limiter {
    /// The process-wide IMDS limiter (the IMDS limits are per node, so one per process at most).
    pub fn shared() -> Arc<Limiter> {
        static SHARED: OnceLock<Arc<Limiter>> = OnceLock::new();
        SHARED.get_or_init(|| Arc::new(Limiter::default())).clone()
    }

    /// A limiter with the given bounds (both at least 1).
    pub fn new(max_concurrent: usize, rate: u32) -> Limiter {
        let rate = rate.max(1);
        Limiter {
            state: Mutex::new(State {
                in_flight: 0,
                tokens: f64::from(rate),
                refilled: Instant::now(),
            }),
            changed: Condvar::new(),
            max_concurrent: max_concurrent.max(1),
            rate,
        }
    }

    /// Blocks until a slot and a start token are both free.
    pub fn acquire(&self) -> Permit<'_> {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
            state.tokens =
                (state.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.rate));
            state.refilled = now;
            if state.in_flight < self.max_concurrent && state.tokens >= 1.0 {
                state.in_flight += 1;
                state.tokens -= 1.0;
                return Permit { limiter: self };
            }
            if state.in_flight >= self.max_concurrent {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            } else {
                let wait = Duration::from_secs_f64((1.0 - state.tokens) / f64::from(self.rate));
                state = self
                    .changed
                    .wait_timeout(state, wait.max(Duration::from_millis(1)))
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
        }
    }

    #[cfg(test)]
    /// The number of permits held right now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (plain counters), so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn never_more_than_five_run_at_once() {
        let limiter = Arc::new(Limiter::new(5, 1000));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let (limiter, running, peak) = (limiter.clone(), running.clone(), peak.clone());
                std::thread::spawn(move || {
                    let _permit = limiter.acquire();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= 5, "peak {peak}");
        assert!(peak >= 2, "the test did not overlap anything (peak {peak})");
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn starts_beyond_the_rate_wait_for_the_bucket() {
        let limiter = Limiter::new(100, 20);
        let started = Instant::now();
        for _ in 0..25 {
            drop(limiter.acquire());
        }
        // 20 come from the full bucket; 5 more need at least 5/20 s of refill.
        assert!(
            started.elapsed() >= Duration::from_millis(240),
            "{:?}",
            started.elapsed()
        );
    }
}

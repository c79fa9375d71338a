//! An injectable monotonic clock, so rate limits, backoff and watch timing can be tested without sleeping.

use std::time::{Duration, Instant};

/// Reads the time and sleeps; the real one uses `std`, tests use [`FakeClock`].
pub trait Clock: Send + Sync {
    /// The current monotonic time.
    fn now(&self) -> Instant;
    /// Blocks the calling thread for `d`.
    fn sleep(&self, d: Duration);
    /// The wall-clock time, in UTC (token and refresh times are wall-clock).
    fn utc(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

#[cfg(test)]
/// A clock that only moves when told to; `sleep` advances it instantly.
#[derive(Debug)]
pub struct FakeClock {
    start: Instant,
    start_utc: time::OffsetDateTime,
    offset: std::sync::Mutex<Duration>,
}

#[cfg(test)]
impl FakeClock {
    /// A fake clock starting at the current instant.
    pub fn new() -> Self {
        FakeClock {
            start: Instant::now(),
            start_utc: time::macros::datetime!(2026-01-02 15:04:05 UTC),
            offset: std::sync::Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        *offset = offset.saturating_add(d);
    }

    /// Total time slept or advanced so far.
    pub fn elapsed(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }

    fn utc(&self) -> time::OffsetDateTime {
        self.start_utc + self.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_slept_or_advanced() {
        let c = FakeClock::new();
        let t0 = c.now();
        c.sleep(Duration::from_secs(3));
        c.advance(Duration::from_millis(500));
        assert_eq!(c.now() - t0, Duration::from_millis(3500));
    }
}

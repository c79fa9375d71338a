//! Time and chance. The one clock: monotonic time for waits and deadlines, wall-clock UTC for
//! tokens and the API, and sleep; injectable, so rate limits, backoff, leases, probes and token
//! lifetimes are tested without sleeping. How times are written ([`rfc3339`]). The one random
//! source, [`Rng`], seedable so tests can fix the jitter.

pub mod rfc3339;
mod rng;

pub use rng::Rng;

use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// Reads the time and sleeps; the real one is [`SystemClock`], tests use [`FakeClock`].
pub trait Clock: Send + Sync {
    /// The current monotonic time.
    fn now(&self) -> Instant;
    /// The current wall-clock time, in UTC.
    fn utc(&self) -> OffsetDateTime;
    /// Blocks the calling thread for `d`.
    fn sleep(&self, d: Duration);
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn utc(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

#[cfg(test)]
/// A clock that only moves when told to; `sleep` advances it instantly. Monotonic and wall time
/// move together, as they do on a machine whose clock is not being set.
#[derive(Debug)]
pub struct FakeClock {
    start: Instant,
    start_utc: OffsetDateTime,
    offset: std::sync::Mutex<Duration>,
}

#[cfg(test)]
impl FakeClock {
    /// A fake clock whose wall time starts at 2026-01-02 15:04:05 UTC.
    pub fn new() -> Self {
        Self::starting_at(time::macros::datetime!(2026-01-02 15:04:05 UTC))
    }

    /// A fake clock whose wall time starts at `utc`.
    pub fn starting_at(utc: OffsetDateTime) -> Self {
        FakeClock {
            start: Instant::now(),
            start_utc: utc,
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

    fn utc(&self) -> OffsetDateTime {
        self.start_utc + self.elapsed()
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_slept_or_advanced() {
        let c = FakeClock::new();
        let (t0, w0) = (c.now(), c.utc());
        c.sleep(Duration::from_secs(3));
        c.advance(Duration::from_millis(500));
        assert_eq!(c.now() - t0, Duration::from_millis(3500));
        assert_eq!(c.utc() - w0, time::Duration::milliseconds(3500));
    }

    #[test]
    fn fake_clock_can_start_at_any_wall_time() {
        let at = time::macros::datetime!(2026-01-01 00:00:00.250 UTC);
        let c = FakeClock::starting_at(at);
        assert_eq!(c.utc(), at);
    }
}

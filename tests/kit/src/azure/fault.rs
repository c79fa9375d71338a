//! Fault injection shared by the fakes: the next N requests fail or hang, and added latency.

use super::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// One injected fault, consumed by one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (and the fake's usual error body for it).
    Status(u16),
    /// Wait this long before answering normally (for client timeout tests).
    Hang(Duration),
}

#[derive(Debug, Default)]
struct Plan {
    next: VecDeque<Fault>,
    latency: Duration,
}

/// Faults queued for the next requests, plus a latency added to every request.
#[derive(Debug, Default)]
pub struct FaultPlan {
    plan: Mutex<Plan>,
}

impl FaultPlan {
    /// The next `n` requests are answered with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut p = lock(&self.plan);
        p.next.extend(std::iter::repeat_n(Fault::Status(status), n));
    }

    /// The next `n` requests wait `delay` before being answered.
    pub fn hang_next(&self, n: usize, delay: Duration) {
        let mut p = lock(&self.plan);
        p.next.extend(std::iter::repeat_n(Fault::Hang(delay), n));
    }

    /// Every request waits `latency` before being answered (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.plan).latency = latency;
    }

    /// Drops queued faults and latency.
    pub fn clear(&self) {
        *lock(&self.plan) = Plan::default();
    }

    /// How many queued faults are left.
    pub fn pending(&self) -> usize {
        lock(&self.plan).next.len()
    }

    /// Takes this request's latency and fault, without sleeping (the pure half of [`FaultPlan::apply`]).
    pub fn take(&self) -> (Duration, Option<Fault>) {
        let mut p = lock(&self.plan);
        let latency = p.latency;
        (latency, p.next.pop_front())
    }

    /// Applies this request's latency and fault: sleeps as planned, and returns the status to fail
    /// with, if any.
    pub fn apply(&self) -> Option<u16> {
        let (latency, fault) = self.take();
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        match fault {
            Some(Fault::Status(s)) => Some(s),
            Some(Fault::Hang(d)) => {
                std::thread::sleep(d);
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_faults_are_consumed_in_order_then_requests_pass() {
        let f = FaultPlan::default();
        f.fail_next(2, 500);
        f.hang_next(1, Duration::from_millis(1));
        assert_eq!(f.take(), (Duration::ZERO, Some(Fault::Status(500))));
        assert_eq!(f.apply(), Some(500));
        assert_eq!(f.apply(), None);
        assert_eq!(f.pending(), 0);
        assert_eq!(f.apply(), None);
    }

    #[test]
    fn latency_applies_to_every_request_until_cleared() {
        let f = FaultPlan::default();
        f.set_latency(Duration::from_millis(5));
        assert_eq!(f.take().0, Duration::from_millis(5));
        assert_eq!(f.take().0, Duration::from_millis(5));
        f.clear();
        assert_eq!(f.take(), (Duration::ZERO, None));
    }
}

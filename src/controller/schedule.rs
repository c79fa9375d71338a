//! The de-duplicating work queue and the deadline heap.
//!
//! One structure does both jobs, as client-go's delaying queue and kube-rs's scheduler do: every key
//! has at most one due time (the earliest wins), keys come out in due-time order so the most urgent
//! refresh goes first, and a key is never handed to two workers at once. A key scheduled while a
//! worker holds it waits in `pending` and is re-queued when the worker calls [`WorkQueue::done`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The pure bookkeeping behind [`WorkQueue`]; time is always passed in.
#[derive(Debug)]
pub struct Schedule<K: Ord + Clone> {
    /// Min-heap of (due, sequence, key); entries whose due differs from `due[key]` are stale.
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    /// The one live due time of each scheduled key that is not being processed.
    due: BTreeMap<K, Instant>,
    /// Keys a worker holds right now.
    processing: BTreeSet<K>,
    /// Keys scheduled while being processed, with the earliest time asked for.
    pending: BTreeMap<K, Instant>,
    seq: u64,
}

impl<K: Ord + Clone> Default for Schedule<K> {
    fn default() -> Self {
        Schedule {
            heap: BinaryHeap::new(),
            due: BTreeMap::new(),
            processing: BTreeSet::new(),
            pending: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<K: Ord + Clone> Schedule<K> {
    /// Schedules `key` at `at`; an earlier existing due time wins.
    pub fn add_at(&mut self, key: K, at: Instant) {
        if self.processing.contains(&key) {
            let e = self.pending.entry(key).or_insert(at);
            *e = (*e).min(at);
            return;
        }
        if let Some(existing) = self.due.get(&key) {
            if *existing <= at {
                return;
            }
        }
        self.due.insert(key.clone(), at);
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, key)));
    }

    /// Takes the due key with the earliest due time, marking it as processing.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        while let Some(Reverse((at, _, key))) = self.heap.peek().cloned() {
            if self.due.get(&key) != Some(&at) {
                self.heap.pop();
                continue;
            }
            if at > now {
                return None;
            }
            self.heap.pop();
            self.due.remove(&key);
            self.processing.insert(key.clone());
            return Some(key);
        }
        None
    }

    /// The earliest live due time, if any key is scheduled.
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, _, key))) = self.heap.peek() {
            if self.due.get(key) == Some(at) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Releases a key after processing; a schedule made meanwhile takes effect now.
    pub fn done(&mut self, key: &K) {
        self.processing.remove(key);
        if let Some(at) = self.pending.remove(key) {
            self.add_at(key.clone(), at);
        }
    }

    /// Drops any schedule of `key` (it was deleted); a worker holding it keeps it until `done`.
    pub fn forget(&mut self, key: &K) {
        self.due.remove(key);
        self.pending.remove(key);
    }

    /// Keys due at `now` and not yet taken by a worker.
    pub fn ready_len(&self, now: Instant) -> usize {
        self.due.values().filter(|at| **at <= now).count()
    }

    #[cfg(test)]
    /// All keys scheduled (due or not), excluding those being processed.
    pub fn scheduled_len(&self) -> usize {
        self.due.len()
    }
}

/// A thread-safe [`Schedule`]: producers call `add`/`add_at`, workers block in `get`.
#[derive(Debug)]
pub struct WorkQueue<K: Ord + Clone> {
    inner: Mutex<Inner<K>>,
    cond: Condvar,
}

#[derive(Debug)]
struct Inner<K: Ord + Clone> {
    schedule: Schedule<K>,
    shutting_down: bool,
}

impl<K: Ord + Clone> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            inner: Mutex::new(Inner {
                schedule: Schedule::default(),
                shutting_down: false,
            }),
            cond: Condvar::new(),
        }
    }
}

impl<K: Ord + Clone> WorkQueue<K> {
    fn lock(&self) -> MutexGuard<'_, Inner<K>> {
        // A worker that panicked while holding the lock leaves consistent data: every mutation of the
        // schedule completes before the guard drops, so the poison flag carries no information.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules `key` to run now.
    pub fn add(&self, key: K) {
        self.add_at(key, Instant::now());
    }

    /// Schedules `key` at `at`; an earlier existing schedule wins.
    pub fn add_at(&self, key: K, at: Instant) {
        let mut g = self.lock();
        g.schedule.add_at(key, at);
        drop(g);
        self.cond.notify_all();
    }

    /// Blocks until a key is due and returns it, or `None` once the queue shuts down.
    pub fn get(&self) -> Option<K> {
        let mut g = self.lock();
        loop {
            if g.shutting_down {
                return None;
            }
            let now = Instant::now();
            if let Some(k) = g.schedule.pop_due(now) {
                return Some(k);
            }
            g = match g.schedule.next_due() {
                Some(at) => {
                    self.cond
                        .wait_timeout(g, at.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.cond.wait(g).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Marks `key` as no longer being processed.
    pub fn done(&self, key: &K) {
        let mut g = self.lock();
        g.schedule.done(key);
        drop(g);
        self.cond.notify_all();
    }

    /// Drops any pending schedule of `key`.
    pub fn forget(&self, key: &K) {
        self.lock().schedule.forget(key);
    }

    /// Keys due now and waiting for a worker (the queue depth metric).
    pub fn ready_len(&self) -> usize {
        self.lock().schedule.ready_len(Instant::now())
    }

    /// Wakes every worker with `None`; later `get` calls return `None` at once.
    pub fn shutdown(&self) {
        self.lock().shutting_down = true;
        self.cond.notify_all();
    }
}

/// Per-key failure backoff for reconcile errors: 5 s doubling to 5 min, with ±20 % jitter.
///
/// Upstream retried Azure failures about once a second forever (spec §2.10); a binding that keeps
/// failing here settles at one attempt every few minutes, and a success resets it.
#[derive(Debug)]
pub struct FailureBackoff<K: Ord> {
    failures: BTreeMap<K, u32>,
}

impl<K: Ord> Default for FailureBackoff<K> {
    fn default() -> Self {
        FailureBackoff {
            failures: BTreeMap::new(),
        }
    }
}

/// First retry delay after a failure.
pub const FAILURE_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay; keeps a broken binding visible without load.
pub const FAILURE_CAP: Duration = Duration::from_secs(300);

impl<K: Ord> FailureBackoff<K> {
    /// Records a failure and returns the delay before the next attempt.
    /// `jitter` is a number in `[0, 1)` supplied by the caller's random source.
    pub fn failed(&mut self, key: K, jitter: f64) -> Duration {
        let n = self.failures.entry(key).or_insert(0);
        let exp = (*n).min(16);
        *n = n.saturating_add(1);
        let base = FAILURE_BASE
            .saturating_mul(1u32 << exp)
            .min(FAILURE_CAP)
            .as_secs_f64();
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        Duration::from_secs_f64((base * factor).max(1.0))
    }

    /// Clears the failure count after a success.
    pub fn succeeded(&mut self, key: &K) {
        self.failures.remove(key);
    }

    #[cfg(test)]
    /// How many consecutive failures `key` has had.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn repeated_adds_collapse_into_one() {
        let mut s = Schedule::default();
        let now = t0();
        s.add_at("a", now);
        s.add_at("a", now);
        assert_eq!(s.pop_due(now), Some("a"));
        assert_eq!(s.pop_due(now), None);
    }

    #[test]
    fn earlier_schedule_wins() {
        let mut s = Schedule::default();
        let now = t0();
        s.add_at("a", now + Duration::from_secs(60));
        s.add_at("a", now + Duration::from_secs(1));
        s.add_at("a", now + Duration::from_secs(30));
        assert_eq!(s.next_due(), Some(now + Duration::from_secs(1)));
        assert_eq!(s.pop_due(now), None);
        assert_eq!(s.pop_due(now + Duration::from_secs(1)), Some("a"));
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn earliest_deadline_comes_out_first() {
        let mut s = Schedule::default();
        let now = t0();
        s.add_at("late", now + Duration::from_secs(3));
        s.add_at("early", now + Duration::from_secs(1));
        s.add_at("middle", now + Duration::from_secs(2));
        let later = now + Duration::from_secs(10);
        assert_eq!(s.pop_due(later), Some("early"));
        assert_eq!(s.pop_due(later), Some("middle"));
        assert_eq!(s.pop_due(later), Some("late"));
    }

    #[test]
    fn add_while_processing_waits_until_done() {
        let mut s = Schedule::default();
        let now = t0();
        s.add_at("a", now);
        assert_eq!(s.pop_due(now), Some("a"));
        s.add_at("a", now);
        assert_eq!(s.pop_due(now), None, "never handed to two workers at once");
        s.done(&"a");
        assert_eq!(s.pop_due(now), Some("a"));
    }

    #[test]
    fn pending_keeps_the_earliest_time() {
        let mut s = Schedule::default();
        let now = t0();
        s.add_at("a", now);
        s.pop_due(now);
        s.add_at("a", now + Duration::from_secs(9));
        s.add_at("a", now + Duration::from_secs(2));
        s.done(&"a");
        assert_eq!(s.next_due(), Some(now + Duration::from_secs(2)));
    }

    #[test]
    fn forgotten_key_does_not_come_out() {
        let mut s = Schedule::default();
        let now = t0();
        s.add_at("a", now);
        s.forget(&"a");
        assert_eq!(s.pop_due(now), None);
        assert_eq!(s.scheduled_len(), 0);
    }

    #[test]
    fn ready_len_counts_only_due_keys() {
        let mut s = Schedule::default();
        let now = t0();
        s.add_at("a", now);
        s.add_at("b", now + Duration::from_secs(5));
        assert_eq!(s.ready_len(now), 1);
        assert_eq!(s.scheduled_len(), 2);
    }

    #[test]
    fn blocked_worker_wakes_when_a_key_is_added() {
        let q = Arc::new(WorkQueue::default());
        let q2 = Arc::clone(&q);
        let worker = std::thread::spawn(move || q2.get());
        q.add("x");
        assert_eq!(worker.join().ok().flatten(), Some("x"));
    }

    #[test]
    fn delayed_key_is_returned_after_its_delay() {
        let q = WorkQueue::default();
        let start = Instant::now();
        q.add_at("x", Instant::now() + Duration::from_millis(50));
        assert_eq!(q.get(), Some("x"));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn shutdown_releases_blocked_workers() {
        let q: Arc<WorkQueue<&str>> = Arc::new(WorkQueue::default());
        let q2 = Arc::clone(&q);
        let worker = std::thread::spawn(move || q2.get());
        q.shutdown();
        assert_eq!(worker.join().ok().flatten(), None);
    }

    #[test]
    fn failure_backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = FailureBackoff::default();
        let d: Vec<u64> = (0..8).map(|_| b.failed("k", 0.5).as_secs()).collect();
        assert_eq!(d, vec![5, 10, 20, 40, 80, 160, 300, 300]);
        b.succeeded(&"k");
        assert_eq!(b.failures(&"k"), 0);
        assert_eq!(b.failed("k", 0.5).as_secs(), 5);
    }

    #[test]
    fn failure_backoff_jitter_stays_within_twenty_percent() {
        let mut b = FailureBackoff::default();
        let low = b.failed("a", 0.0);
        let mut b = FailureBackoff::default();
        let high = b.failed("a", 0.999);
        assert_eq!(low, Duration::from_secs(4));
        assert!(high < Duration::from_secs(6) && high > Duration::from_secs(5));
    }
}

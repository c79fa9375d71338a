//! Liveness and readiness: components beat on progress; `/healthz` and `/readyz` read the verdicts.
//!
//! Liveness fails when a watch loop has not beaten within its bound (server watch timeout plus a
//! margin), or when a worker is busy on one key with no beat for longer than the busy bound. A worker
//! idle on an empty queue is healthy however long it waits. Readiness holds once every tracked
//! binding kind has processed its initial list; kinds whose CRD is absent do not block it, but at
//! least one kind must be synced.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};

/// Bounds for the liveness verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Longest a busy worker may go without a beat. Defaults to 2 min.
    pub busy_limit: Duration,
    /// Longest a watch loop may go without a beat. Defaults to 6 min (a 290 s server watch timeout,
    /// plus a relist and backoff margin); set it to the watch timeout plus a margin.
    pub watch_limit: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            busy_limit: Duration::from_secs(120),
            watch_limit: Duration::from_secs(360),
        }
    }
}

/// What a component is doing, as last reported.
#[derive(Debug, Clone, Copy)]
enum State {
    /// A watch loop; healthy while it beats.
    Watch { last_beat: Instant },
    /// A worker waiting for work; always healthy.
    Idle,
    /// A worker inside a reconcile; healthy while it beats.
    Busy { last_beat: Instant },
}

/// Where a binding kind stands for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KindSync {
    /// Initial list not yet processed.
    Pending,
    /// Initial list processed.
    Synced,
    /// The CRD is not installed; ignored.
    Absent,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each component's registration number (see [`Heartbeat`]) and state.
    components: BTreeMap<String, (u64, State)>,
    /// The last registration number handed out.
    registrations: u64,
    kinds: BTreeMap<String, KindSync>,
}

/// One line of a probe answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The component (`watch:v1beta2`, `worker:3`) or kind (`sync:v1beta1`).
    pub name: String,
    /// Whether it passes.
    pub ok: bool,
    /// Why, in a few words (`ok`, `no beat for 400s`, `initial list pending`).
    pub detail: String,
}

/// A probe answer: every check, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every check passes and there is at least one.
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }
}

/// Liveness and readiness state. Share it behind an `Arc`.
pub struct Health {
    config: HealthConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new(HealthConfig::default(), Arc::new(SystemClock))
    }
}

impl Health {
    /// Health with the given bounds and clock.
    pub fn new(config: HealthConfig, clock: Arc<dyn Clock>) -> Health {
        Health {
            config,
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent across a panic (every update is one insert).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a watch loop (`watch:v1beta2`, `watch:secrets`, …), counted as having beaten now.
    /// Names are unique: registering a name again replaces the earlier component.
    pub fn register_watch(self: &Arc<Self>, name: &str) -> Heartbeat {
        let now = self.clock.now();
        self.register(name, State::Watch { last_beat: now })
    }

    /// Registers a worker (`worker:0`, …), idle. Names are unique as for watches.
    pub fn register_worker(self: &Arc<Self>, name: &str) -> Heartbeat {
        self.register(name, State::Idle)
    }

    fn register(self: &Arc<Self>, name: &str, state: State) -> Heartbeat {
        let mut inner = self.lock();
        inner.registrations += 1;
        let registration = inner.registrations;
        inner
            .components
            .insert(name.to_string(), (registration, state));
        Heartbeat {
            health: Arc::clone(self),
            name: name.to_string(),
            registration,
        }
    }

    /// Tracks a binding kind (`v1beta2`, `v1beta1`): readiness waits for it until synced or absent.
    pub fn track_kind(&self, kind: &str) {
        self.lock()
            .kinds
            .entry(kind.to_string())
            .or_insert(KindSync::Pending);
    }

    /// The kind's initial list has been processed.
    pub fn mark_synced(&self, kind: &str) {
        self.lock().kinds.insert(kind.to_string(), KindSync::Synced);
    }

    /// The kind's CRD is not installed; it no longer blocks readiness.
    pub fn mark_absent(&self, kind: &str) {
        self.lock().kinds.insert(kind.to_string(), KindSync::Absent);
    }

    /// Applies `f` to the component, unless it was registered again since (a stale handle).
    fn update(&self, name: &str, registration: u64, f: impl FnOnce(&mut State, Instant)) {
        let now = self.clock.now();
        match self.lock().components.get_mut(name) {
            Some((r, s)) if *r == registration => f(s, now),
            _ => {}
        }
    }

    /// The liveness verdict, one check per component.
    pub fn liveness(&self) -> Report {
        let now = self.clock.now();
        let checks = self
            .lock()
            .components
            .iter()
            .map(|(name, (_, state))| {
                let (ok, detail) = match *state {
                    State::Idle => (true, "idle".to_string()),
                    State::Watch { last_beat } => {
                        judge(now, last_beat, self.config.watch_limit, "watch")
                    }
                    State::Busy { last_beat } => {
                        judge(now, last_beat, self.config.busy_limit, "busy")
                    }
                };
                Check {
                    name: name.clone(),
                    ok,
                    detail,
                }
            })
            .collect::<Vec<_>>();
        if checks.is_empty() {
            // Nothing registered yet (start-up): alive; readiness gates traffic.
            return Report {
                checks: vec![Check {
                    name: "process".into(),
                    ok: true,
                    detail: "ok".into(),
                }],
            };
        }
        Report { checks }
    }

    /// The readiness verdict, one check per tracked kind, plus a failing `sync` check when no kind
    /// is synced.
    pub fn readiness(&self) -> Report {
        let inner = self.lock();
        let mut checks: Vec<Check> = inner
            .kinds
            .iter()
            .map(|(kind, s)| {
                let (ok, detail) = match s {
                    KindSync::Pending => (false, "initial list pending"),
                    KindSync::Synced => (true, "synced"),
                    KindSync::Absent => (true, "not installed"),
                };
                Check {
                    name: format!("sync:{kind}"),
                    ok,
                    detail: detail.into(),
                }
            })
            .collect();
        if !inner.kinds.values().any(|s| *s == KindSync::Synced) {
            checks.push(Check {
                name: "sync".into(),
                ok: false,
                detail: "no binding kind synced".into(),
            });
        }
        Report { checks }
    }
}

/// Healthy while the last beat is within `limit`.
fn judge(now: Instant, last_beat: Instant, limit: Duration, what: &str) -> (bool, String) {
    let quiet = now.saturating_duration_since(last_beat);
    if quiet > limit {
        (
            false,
            format!(
                "{what}: no beat for {}s (limit {}s)",
                quiet.as_secs(),
                limit.as_secs()
            ),
        )
    } else {
        (true, "ok".into())
    }
}

/// A component's handle for reporting progress.
#[derive(Debug)]
pub struct Heartbeat {
    health: Arc<Health>,
    name: String,
    /// Which registration of `name` this handle owns, so an old handle cannot touch a newer one.
    registration: u64,
}

impl Heartbeat {
    /// Progress: a watch event, a bookmark, a (re)list, or a step inside a reconcile. A watch loop
    /// beats on every turn, failed attempts and backoff wake-ups included: the bound is there to
    /// catch a loop stuck on a dead connection, not an API server that is down (a restart would
    /// not help with that).
    pub fn beat(&self) {
        self.health
            .update(&self.name, self.registration, |s, now| match s {
                State::Watch { last_beat } | State::Busy { last_beat } => *last_beat = now,
                State::Idle => {}
            });
    }

    /// A worker took a key and starts reconciling it.
    pub fn busy(&self) {
        self.health.update(&self.name, self.registration, |s, now| {
            *s = State::Busy { last_beat: now }
        });
    }

    /// A worker finished and waits for the queue.
    pub fn idle(&self) {
        self.health
            .update(&self.name, self.registration, |s, _| *s = State::Idle);
    }
}

impl Drop for Heartbeat {
    /// A component that stops (e.g. at shutdown) no longer counts.
    fn drop(&mut self) {
        let mut inner = self.health.lock();
        if matches!(inner.components.get(&self.name), Some((r, _)) if *r == self.registration) {
            inner.components.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    fn setup() -> (Arc<Health>, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::new());
        let config = HealthConfig {
            busy_limit: Duration::from_secs(120),
            watch_limit: Duration::from_secs(300),
        };
        (Arc::new(Health::new(config, clock.clone())), clock)
    }

    #[test]
    fn idle_worker_stays_healthy_forever() {
        let (h, clock) = setup();
        let _w = h.register_worker("worker:0");
        clock.advance(Duration::from_secs(86_400));
        assert!(h.liveness().ok());
    }

    #[test]
    fn busy_worker_without_beat_past_the_bound_fails_liveness() {
        let (h, clock) = setup();
        let w = h.register_worker("worker:1");
        w.busy();
        clock.advance(Duration::from_secs(100));
        w.beat();
        clock.advance(Duration::from_secs(100));
        assert!(h.liveness().ok(), "a beat resets the busy bound");
        clock.advance(Duration::from_secs(21));
        let r = h.liveness();
        assert!(!r.ok());
        let failing: Vec<_> = r.checks.iter().filter(|c| !c.ok).collect();
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].name, "worker:1");
        assert!(
            failing[0].detail.contains("no beat for 121s"),
            "{}",
            failing[0].detail
        );
        w.idle();
        assert!(h.liveness().ok(), "finishing the reconcile heals");
    }

    #[test]
    fn silent_watch_fails_liveness_and_beats_keep_it_alive() {
        let (h, clock) = setup();
        let w = h.register_watch("watch:v1beta2");
        clock.advance(Duration::from_secs(299));
        w.beat();
        clock.advance(Duration::from_secs(300));
        assert!(h.liveness().ok());
        clock.advance(Duration::from_secs(1));
        assert!(!h.liveness().ok());
    }

    #[test]
    fn dropped_components_stop_counting() {
        let (h, clock) = setup();
        let w = h.register_watch("watch:secrets");
        clock.advance(Duration::from_secs(1000));
        assert!(!h.liveness().ok());
        drop(w);
        assert!(h.liveness().ok());
    }

    #[test]
    fn a_stale_handle_cannot_touch_or_remove_a_newer_registration() {
        let (h, clock) = setup();
        let old = h.register_worker("worker:0");
        let new = h.register_worker("worker:0");
        new.busy();
        clock.advance(Duration::from_secs(200));
        old.idle();
        assert!(
            !h.liveness().ok(),
            "the old handle did not reset the new one"
        );
        drop(old);
        assert_eq!(h.liveness().checks[0].name, "worker:0", "still registered");
        drop(new);
        assert_eq!(h.liveness().checks[0].name, "process");
    }

    #[test]
    fn readiness_waits_for_every_tracked_kind() {
        let (h, _) = setup();
        assert!(!h.readiness().ok(), "nothing synced yet");
        h.track_kind("v1beta2");
        h.track_kind("v1beta1");
        h.mark_synced("v1beta2");
        let r = h.readiness();
        assert!(!r.ok());
        assert!(r
            .checks
            .iter()
            .any(|c| c.name == "sync:v1beta1" && !c.ok && c.detail == "initial list pending"));
        h.mark_synced("v1beta1");
        assert!(h.readiness().ok());
    }

    #[test]
    fn absent_kind_does_not_block_readiness_but_one_must_sync() {
        let (h, _) = setup();
        h.track_kind("v1beta2");
        h.track_kind("v1beta1");
        h.mark_absent("v1beta1");
        assert!(!h.readiness().ok(), "v1beta2 still pending");
        h.mark_absent("v1beta2");
        let r = h.readiness();
        assert!(!r.ok(), "all absent is not ready");
        assert!(r
            .checks
            .iter()
            .any(|c| c.detail == "no binding kind synced"));
        h.mark_synced("v1beta2");
        assert!(h.readiness().ok());
    }

    #[test]
    fn track_kind_does_not_undo_a_sync() {
        let (h, _) = setup();
        h.mark_synced("v1beta2");
        h.track_kind("v1beta2");
        assert!(h.readiness().ok());
    }
}

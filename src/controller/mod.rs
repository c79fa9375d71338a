//! Wiring: watchers feed the store and the queue, workers reconcile bindings and schedule the next
//! pass.
//!
//! Four watches run, each in its own thread: both binding kinds (label-selected by
//! `--label-selector`), the Secrets carrying our label, and ServiceAccounts (of which the store keeps
//! only those that matter). A dispatcher thread per watch folds its events into the store and
//! queues the bindings they concern. Workers take keys from the queue, at most one worker per key.

pub mod app;
pub mod events;
pub mod leader;
pub mod reconcile;
pub mod schedule;
pub mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::binding::names::BINDING_LABEL;
use crate::binding::ApiVersion;
use crate::controller::events::{EventRecorder, EventWrite};
use crate::controller::reconcile::{Action, Note, Reconciler};
use crate::controller::schedule::WorkQueue;
use crate::controller::store::{BindingKey, Store, Update};
use crate::kube::{watch, Client, ListParams, Resource, WatchEvent, WatchHandle};
use crate::ops::health::Health;
use crate::ops::metrics::{Metrics, ReconcileResult};

/// Metrics, probes and Events, shared by every thread.
pub struct Observability {
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Liveness and readiness.
    pub health: Arc<Health>,
    /// Event de-duplication state.
    pub events: Arc<Mutex<EventRecorder>>,
    /// Where Event writes go; see [`EventSink`].
    pub event_sink: EventSink,
}

/// How many Event writes may wait for the sender before new ones are dropped. Each holds its
/// JSON body, so a deep queue would cost more memory than the bindings themselves.
const EVENT_QUEUE: usize = 256;

/// An Event write waiting for the sender. The body waits as JSON text: about 600 bytes, where the
/// parsed form took about 2.3 KiB (a full queue held 0.6 MiB of them).
struct QueuedEvent {
    patch: bool,
    namespace: String,
    name: String,
    body: Box<str>,
}

impl QueuedEvent {
    fn new(w: EventWrite) -> QueuedEvent {
        let (patch, namespace, name, body) = match w {
            EventWrite::Create {
                namespace,
                name,
                body,
            } => (false, namespace, name, body),
            EventWrite::PatchSeries {
                namespace,
                name,
                body,
            } => (true, namespace, name, body),
        };
        QueuedEvent {
            patch,
            namespace,
            name,
            body: body.to_string().into_boxed_str(),
        }
    }

    fn into_write(self) -> EventWrite {
        // The text came from a `Value` a moment ago; it parses back.
        let body = serde_json::from_str(&self.body).unwrap_or_default();
        let (namespace, name) = (self.namespace, self.name);
        if self.patch {
            EventWrite::PatchSeries {
                namespace,
                name,
                body,
            }
        } else {
            EventWrite::Create {
                namespace,
                name,
                body,
            }
        }
    }
}

/// Sends Event writes from a thread of its own, through a client with its own rate limit, as
/// client-go's event broadcaster does: Events are best effort, so they never slow the writes
/// that matter (finalizer, Secret, ServiceAccount, status) nor block a worker, and a burst of
/// them is dropped rather than queued without bound.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::SyncSender<QueuedEvent>,
}

impl EventSink {
    /// Starts the sender thread with `client` (give it its own, low rate limit).
    pub fn start(
        client: Client,
        recorder: Arc<Mutex<EventRecorder>>,
    ) -> std::io::Result<EventSink> {
        let (tx, rx) = mpsc::sync_channel::<QueuedEvent>(EVENT_QUEUE);
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for q in rx {
                    send_event(&client, &recorder, &q.into_write());
                }
            })?;
        Ok(EventSink { tx })
    }

    fn send(&self, w: EventWrite, recorder: &Mutex<EventRecorder>) {
        if let Err(e) = self.tx.try_send(QueuedEvent::new(w)) {
            let q = match e {
                mpsc::TrySendError::Full(q) | mpsc::TrySendError::Disconnected(q) => q,
            };
            log::debug!(
                "event {}/{} dropped: the event queue is full",
                q.namespace,
                q.name
            );
            recorder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget(&q.namespace, &q.name);
        }
    }
}

/// Every binding is reconciled at least this often, as a safety net against a missed event.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(30 * 60);
/// Watch events (each a whole object, or a page of up to 500) that may wait for a dispatcher:
/// none, so a watch hands over each event as its dispatcher takes it. A parsed page is over half
/// a MiB, and at start-up the ServiceAccount dispatcher waits for the binding lists while its
/// watch keeps listing; a deep buffer held the whole first list of every feed at once and set
/// acrpull's high-water mark (26 MiB of the 36 MiB peak heap at 10 000 bindings). Waiting only
/// pauses the watch's reading; the socket buffers what arrives meanwhile.
const WATCH_BUFFER: usize = 0;

/// Which watch an event came from.
#[derive(Clone, Copy, Debug)]
enum Feed {
    Bindings(ApiVersion),
    Secrets,
    ServiceAccounts,
}

impl Feed {
    fn name(self) -> &'static str {
        match self {
            Feed::Bindings(ApiVersion::V1beta2) => "v1beta2 AcrPullBindings",
            Feed::Bindings(ApiVersion::V1beta1) => "v1beta1 AcrPullBindings",
            Feed::Secrets => "pull Secrets",
            Feed::ServiceAccounts => "ServiceAccounts",
        }
    }

    fn store_kind(self) -> crate::controller::store::Kind {
        match self {
            Feed::Bindings(v) => crate::controller::store::Kind::Bindings(v),
            Feed::Secrets => crate::controller::store::Kind::Secrets,
            Feed::ServiceAccounts => crate::controller::store::Kind::ServiceAccounts,
        }
    }

    /// The name readiness tracks a binding kind by, and metric label values.
    fn kind(self) -> &'static str {
        match self {
            Feed::Bindings(ApiVersion::V1beta2) => "v1beta2",
            Feed::Bindings(ApiVersion::V1beta1) => "v1beta1",
            Feed::Secrets => "secrets",
            Feed::ServiceAccounts => "serviceaccounts",
        }
    }
}

/// Settings of the running controller.
pub struct Settings {
    /// Label selector for both binding kinds (canonical form; empty = all).
    pub label_selector: String,
    /// Worker threads.
    pub workers: usize,
    /// Leader election, when enabled: workers start only once this replica leads.
    pub leader: Option<Arc<crate::controller::leader::ElectorHandle>>,
}

/// A running controller; `shutdown` stops it.
pub struct Controller {
    queue: Arc<WorkQueue<BindingKey>>,
    stop: Arc<AtomicBool>,
    watches: Vec<WatchHandle>,
    workers: Vec<JoinHandle<()>>,
    store: Arc<Mutex<Store>>,
}

impl Controller {
    /// Starts the watches, dispatchers, workers and the resync timer.
    pub fn start(
        client: Client,
        reconciler: Arc<Reconciler>,
        obs: Arc<Observability>,
        settings: &Settings,
    ) -> std::io::Result<Controller> {
        let queue: Arc<WorkQueue<BindingKey>> = Arc::new(WorkQueue::default());
        let stop = Arc::new(AtomicBool::new(false));
        let store = Arc::clone(&reconciler.store);
        let mut watches = Vec::new();
        let mut workers = Vec::new();
        let selector = |s: &str| ListParams {
            label_selector: (!s.is_empty()).then(|| s.to_string()),
            ..ListParams::default()
        };
        let feeds = [
            (
                Feed::Bindings(ApiVersion::V1beta2),
                Resource::ACR_PULL_BINDINGS_V1BETA2,
                selector(&settings.label_selector),
            ),
            (
                Feed::Bindings(ApiVersion::V1beta1),
                Resource::ACR_PULL_BINDINGS_V1BETA1,
                selector(&settings.label_selector),
            ),
            (Feed::Secrets, Resource::SECRETS, selector(BINDING_LABEL)),
            (
                Feed::ServiceAccounts,
                Resource::SERVICE_ACCOUNTS,
                ListParams::default(),
            ),
        ];
        let listed = Arc::new(Listed::default());
        // Already validated at start-up; an unparsable one here selects everything.
        let selector_parsed =
            crate::binding::selector::Selector::parse(&settings.label_selector).unwrap_or_default();
        for (feed, res, params) in feeds {
            // Bounded: a dispatcher that falls behind slows its watch down (TCP backpressure)
            // instead of buffering raw objects without limit.
            let (tx, rx) = mpsc::sync_channel(WATCH_BUFFER);
            if let Feed::Bindings(_) = feed {
                obs.health.track_kind(feed.kind());
            }
            let listed_by_watch = Arc::clone(&listed);
            let heartbeat = obs.health.register_watch(feed.name());
            let health = Arc::clone(&obs.health);
            let observer = move |missing: bool| {
                heartbeat.beat();
                if missing {
                    if let Feed::Bindings(_) = feed {
                        health.mark_absent(feed.kind());
                        listed_by_watch.mark(feed.kind());
                    }
                }
            };
            watches.push(watch::spawn(
                feed.name(),
                client.clone(),
                res.path(None, None, None),
                params,
                tx,
                Box::new(observer),
            )?);
            let d = Dispatch {
                feed,
                store: Arc::clone(&store),
                queue: Arc::clone(&queue),
                obs: Arc::clone(&obs),
                listed: Arc::clone(&listed),
                selector: selector_parsed.clone(),
            };
            std::thread::Builder::new()
                .name(format!("dispatch {}", feed.name()))
                .spawn(move || d.run(rx))?;
        }
        for i in 0..settings.workers {
            let reconciler = Arc::clone(&reconciler);
            let queue = Arc::clone(&queue);
            let obs = Arc::clone(&obs);
            let leader = settings.leader.clone();
            let stop = Arc::clone(&stop);
            workers.push(
                std::thread::Builder::new()
                    .name(format!("worker {i}"))
                    .spawn(move || {
                        // Followers keep their watches and queue warm but do no work.
                        if let Some(l) = &leader {
                            if !l.wait_until_leader(&stop) {
                                return;
                            }
                        }
                        let w = Worker {
                            reconciler: &reconciler,
                            queue: &queue,
                            obs: &obs,
                        };
                        w.run(i)
                    })?,
            );
        }
        {
            let store = Arc::clone(&store);
            let queue = Arc::clone(&queue);
            let stop = Arc::clone(&stop);
            let obs = Arc::clone(&obs);
            std::thread::Builder::new()
                .name("resync".into())
                .spawn(move || resync(&store, &queue, &stop, &obs))?;
        }
        Ok(Controller {
            queue,
            stop,
            watches,
            workers,
            store,
        })
    }

    /// The shared store (for probes and metrics).
    pub fn store(&self) -> Arc<Mutex<Store>> {
        Arc::clone(&self.store)
    }

    /// The work queue (for metrics).
    pub fn queue(&self) -> Arc<WorkQueue<BindingKey>> {
        Arc::clone(&self.queue)
    }

    /// Stops watching and lets in-flight reconciles finish, so no binding is left half-written.
    /// Watch threads notice the stop between reads and are not waited for: an idle watch can take
    /// its whole read timeout to notice, and they hold nothing that needs finishing.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.watches {
            w.stop();
        }
        self.queue.shutdown();
        for t in self.workers {
            let _ = t.join();
        }
    }
}

/// How long the Secret and ServiceAccount watches wait for the binding lists before starting
/// anyway (a binding CRD that answers neither a list nor a 404 must not stall everything).
const BINDINGS_FIRST_WAIT: Duration = Duration::from_secs(30);

/// Which feeds have listed once (or found their resource missing).
#[derive(Default)]
struct Listed {
    kinds: Mutex<std::collections::BTreeSet<&'static str>>,
    changed: std::sync::Condvar,
}

impl Listed {
    fn mark(&self, kind: &'static str) {
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind);
        self.changed.notify_all();
    }

    /// Waits until every kind in `kinds` has listed, or `timeout` passes.
    fn wait(&self, kinds: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut done = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        while !kinds.iter().all(|k| done.contains(k)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "binding lists still incomplete; watching Secrets and ServiceAccounts anyway"
                );
                return;
            }
            done = self
                .changed
                .wait_timeout(done, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// One watch's dispatcher: folds its events into the store and queues what they concern.
struct Dispatch {
    feed: Feed,
    store: Arc<Mutex<Store>>,
    queue: Arc<WorkQueue<BindingKey>>,
    obs: Arc<Observability>,
    listed: Arc<Listed>,
    selector: crate::binding::selector::Selector,
}

/// A binding the watch calls deleted while it still carries our finalizer has not been deleted:
/// it stopped matching the label selector.
fn left_selector(feed: Feed, event: &WatchEvent) -> Option<BindingKey> {
    let (Feed::Bindings(version), WatchEvent::Deleted(obj)) = (feed, event) else {
        return None;
    };
    let m = &obj["metadata"];
    let ours = m["finalizers"].as_array().is_some_and(|f| {
        f.iter()
            .any(|v| v.as_str() == Some(crate::binding::FINALIZER))
    });
    ours.then(|| BindingKey {
        namespace: m["namespace"].as_str().unwrap_or_default().into(),
        name: m["name"].as_str().unwrap_or_default().into(),
        version,
    })
}

impl Dispatch {
    fn run(self, rx: mpsc::Receiver<WatchEvent>) {
        let feed = self.feed;
        let mut listed = false;
        for event in rx {
            // The release is queued work like any other: one worker per key, and only when
            // this replica may write.
            let left = left_selector(feed, &event).filter(|_| !self.selector.is_empty());
            let list_event = matches!(
                event,
                WatchEvent::Restarted(_) | WatchEvent::Page { .. } | WatchEvent::ListEnd(_)
            );
            if matches!(feed, Feed::ServiceAccounts) && list_event && !listed {
                // ServiceAccounts that no binding targets are dropped on arrival, so folding the
                // first list before the bindings are known would drop them all and cost a GET per
                // binding afterwards.
                self.listed
                    .wait(&["v1beta2", "v1beta1"], BINDINGS_FIRST_WAIT);
            }
            match &event {
                WatchEvent::Restarted(objs) => log::info!("listed {} {}", objs.len(), feed.name()),
                WatchEvent::ListEnd(_) => log::info!("listed {} (paged)", feed.name()),
                _ => {}
            }
            let keys = {
                let mut s = self.store.lock().unwrap_or_else(|p| p.into_inner());
                let mut keys = s.fold(Update::Watched(feed.store_kind(), &event));
                if let Some(key) = left {
                    keys.extend(s.fold(Update::LeftSelector(key)));
                }
                keys
            };
            for k in keys {
                self.queue.add(k);
            }
            if let WatchEvent::Restarted(_) | WatchEvent::ListEnd(_) = event {
                if listed {
                    self.obs.metrics.watch_restart(feed.kind());
                }
                listed = true;
                if let Feed::Bindings(_) = feed {
                    self.obs.health.mark_synced(feed.kind());
                }
                self.listed.mark(feed.kind());
            }
        }
    }
}

/// One worker thread's view of the shared parts.
struct Worker<'a> {
    reconciler: &'a Reconciler,
    queue: &'a WorkQueue<BindingKey>,
    obs: &'a Observability,
}

impl Worker<'_> {
    fn run(&self, index: usize) {
        let heartbeat = self.obs.health.register_worker(&format!("worker {index}"));
        while let Some(key) = self.queue.get() {
            heartbeat.busy();
            let started = Instant::now();
            let r = self.reconciler.reconcile(&key);
            match r.action {
                Action::RequeueAt(at) => self.queue.add_at(key.clone(), at),
                Action::Wait => {}
                Action::Forget => self.queue.forget(&key),
            }
            if let Some(note) = r.note {
                self.event(&note);
            }
            let result = if r.failed {
                ReconcileResult::Error
            } else {
                ReconcileResult::Success
            };
            if let Some(n) = r.writes {
                log::debug!(
                    "{key}: reconciled in {:?} with {n} writes",
                    started.elapsed()
                );
            }
            self.obs.metrics.reconcile(result, started.elapsed());
            self.queue.done(&key);
            heartbeat.idle();
        }
    }

    /// Records an Event; a failed Event write never fails the reconcile.
    fn event(&self, note: &Note) {
        let write = self
            .obs
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(
                &note.regarding,
                note.reason,
                "Reconcile",
                &note.text,
                OffsetDateTime::now_utc(),
            );
        if let Some(w) = write {
            self.obs.event_sink.send(w, &self.obs.events);
        }
    }
}

fn send_event(client: &Client, recorder: &Mutex<EventRecorder>, w: &EventWrite) {
    let result = match w {
        EventWrite::Create { .. } => client.create(&w.path(), w.body()),
        EventWrite::PatchSeries { .. } => client.patch_merge(&w.path(), w.body()),
    };
    if let Err(e) = result {
        log::debug!("event {}/{} not written: {e}", w.namespace(), w.name());
        recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(w.namespace(), w.name());
    }
}

/// How often the binding-state and queue gauges are recomputed (O(bindings) each time).
const GAUGE_PERIOD: Duration = Duration::from_secs(5);
/// How often Event series counts that moved since their last write are flushed.
const EVENT_FLUSH_PERIOD: Duration = Duration::from_secs(30);

fn resync(
    store: &Mutex<Store>,
    queue: &WorkQueue<BindingKey>,
    stop: &AtomicBool,
    obs: &Observability,
) {
    let mut next = Instant::now() + RESYNC_PERIOD;
    let mut next_flush = Instant::now() + EVENT_FLUSH_PERIOD;
    let mut next_gauges = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        if Instant::now() >= next_gauges {
            next_gauges = Instant::now() + GAUGE_PERIOD;
            let (counts, earliest) = store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .binding_states();
            obs.metrics.set_bindings(counts);
            obs.metrics.set_token_earliest_expiry(earliest);
            obs.metrics.set_workqueue_depth(queue.ready_len());
        }
        if Instant::now() >= next_flush {
            next_flush = Instant::now() + EVENT_FLUSH_PERIOD;
            let writes = obs
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .flush(OffsetDateTime::now_utc());
            for w in writes {
                obs.event_sink.send(w, &obs.events);
            }
        }
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + RESYNC_PERIOD;
        let keys = store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .binding_keys();
        log::debug!("resync: queueing {} bindings", keys.len());
        for k in keys {
            queue.add(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_queued_event_comes_out_as_the_write_that_went_in() {
        let body = json!({"metadata": {"name": "b.1", "namespace": "ns"}, "note": "first token"});
        let create = EventWrite::Create {
            namespace: "ns".into(),
            name: "b.1".into(),
            body: body.clone(),
        };
        let back = QueuedEvent::new(create).into_write();
        assert!(matches!(back, EventWrite::Create { .. }));
        assert_eq!((back.namespace(), back.name()), ("ns", "b.1"));
        assert_eq!(back.body(), &body);

        let series = json!({"series": {"count": 3}});
        let patch = EventWrite::PatchSeries {
            namespace: "ns".into(),
            name: "b.1".into(),
            body: series.clone(),
        };
        let back = QueuedEvent::new(patch).into_write();
        assert!(matches!(back, EventWrite::PatchSeries { .. }));
        assert_eq!(back.body(), &series);
    }
}

//! Wiring: watchers feed the store and the queue, workers reconcile bindings and schedule the next
//! pass.
//!
//! Four watches run, each in its own thread: both binding kinds (label-selected by
//! `--label-selector`), the Secrets carrying our label, and ServiceAccounts (of which the store keeps
//! only those that matter). A dispatcher thread per watch folds its events into the store and
//! queues the bindings they concern. Workers take keys from the queue, at most one worker per key.

// In the order of the flow (blank lines keep rustfmt from sorting them).

/// Start-up and shutdown.
pub mod app;

/// Watch events into the store.
mod dispatch;

/// The store: what the watches and our own requests have shown.
pub mod store;

/// The work queue and its deadlines.
pub mod schedule;

/// Workers: queue → reconcile → queue.
mod worker;

/// One reconcile of one binding.
pub mod reconcile;

/// Events about bindings (pure), and the thread that sends them.
pub mod events;

mod event_sink;

/// Leader election.
pub mod leader;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::binding::names::BINDING_LABEL;
use crate::binding::ApiVersion;
use crate::controller::dispatch::{Dispatch, Feed, Listed};
pub use crate::controller::event_sink::EventSink;
use crate::controller::events::EventRecorder;
use crate::controller::reconcile::Reconciler;
use crate::controller::schedule::WorkQueue;
use crate::controller::store::{BindingKey, Store};
use crate::controller::worker::Worker;
use crate::kube::{watch, Client, ListParams, Resource, WatchHandle};
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;

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

/// Every binding is reconciled at least this often, as a safety net against a missed event.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(30 * 60);
/// Watch events (each a whole object, or a page of up to 500) that may wait for a dispatcher:
/// none, so a watch hands over each event as its dispatcher takes it. A parsed page is large, and
/// at start-up the ServiceAccount dispatcher waits for the binding lists while its watch keeps
/// listing; a deep buffer would hold the whole first list of every feed at once, which sets the
/// high-water mark of memory for good. Waiting only pauses the watch's reading; the socket buffers what arrives meanwhile.
const WATCH_BUFFER: usize = 0;

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

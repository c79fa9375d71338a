//! Wiring: watchers feed the store and the queue, workers reconcile bindings and schedule the next
//! pass.
//!
//! Four watches run, each in its own thread: both binding kinds (label-selected by
//! `--label-selector`), the Secrets carrying our label, and ServiceAccounts (of which the store keeps
//! only those that matter). A dispatcher thread per watch folds its events into the store and
//! queues the bindings they concern. Workers take keys from the queue, at most one worker per key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::binding::ApiVersion;
use crate::kube::backoff::Rng;
use crate::kube::{watch, Client, ListParams, Resource, WatchEvent, WatchHandle};
use crate::names::BINDING_LABEL;
use crate::reconcile::{Outcome2, Reconciler};
use crate::schedule::{FailureBackoff, WorkQueue};
use crate::store::{BindingKey, Store};

/// Every binding is reconciled at least this often, as a safety net against a missed event.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(30 * 60);
/// Refreshes of bindings that share one token would all fall due in the same second; each is
/// pushed back by a random share of this, so they reach the API server spread out.
pub const REFRESH_JITTER: Duration = Duration::from_secs(60);

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
}

/// Settings of the running controller.
pub struct Settings {
    /// Label selector for both binding kinds (canonical form; empty = all).
    pub label_selector: String,
    /// Worker threads.
    pub workers: usize,
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
        for (feed, res, params) in feeds {
            let (tx, rx) = mpsc::channel();
            watches.push(watch::spawn(
                feed.name(),
                client.clone(),
                res.path(None, None, None),
                params,
                tx,
            )?);
            let store = Arc::clone(&store);
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("dispatch {}", feed.name()))
                .spawn(move || dispatch(feed, rx, &store, &queue))?;
        }
        let failures: Arc<Failures> = Arc::default();
        for i in 0..settings.workers {
            let reconciler = Arc::clone(&reconciler);
            let queue = Arc::clone(&queue);
            let failures = Arc::clone(&failures);
            workers.push(
                std::thread::Builder::new()
                    .name(format!("worker {i}"))
                    .spawn(move || work(&reconciler, &queue, &failures, i as u64))?,
            );
        }
        {
            let store = Arc::clone(&store);
            let queue = Arc::clone(&queue);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("resync".into())
                .spawn(move || resync(&store, &queue, &stop))?;
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

fn dispatch(
    feed: Feed,
    rx: mpsc::Receiver<WatchEvent>,
    store: &Mutex<Store>,
    queue: &WorkQueue<BindingKey>,
) {
    for event in rx {
        let keys = {
            let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
            apply(feed, &mut s, &event)
        };
        for k in keys {
            queue.add(k);
        }
    }
}

/// Folds one watch event into the store; returns the bindings to reconcile.
fn apply(feed: Feed, s: &mut Store, event: &WatchEvent) -> Vec<BindingKey> {
    match (feed, event) {
        (Feed::Bindings(v), WatchEvent::Restarted(objs)) => {
            log::info!("listed {} {}", objs.len(), feed.name());
            s.restart_bindings(v, objs)
        }
        (Feed::Bindings(v), WatchEvent::Applied(obj)) => match s.apply_binding(v, obj) {
            Ok(k) => vec![k],
            Err(e) => {
                log::warn!("skipping an AcrPullBinding that cannot be decoded: {e}");
                Vec::new()
            }
        },
        (Feed::Bindings(v), WatchEvent::Deleted(obj)) => {
            s.delete_binding(v, obj).into_iter().collect()
        }
        (Feed::Secrets, WatchEvent::Restarted(objs)) => s.restart_secrets(objs),
        (Feed::Secrets, WatchEvent::Applied(obj)) => s.apply_secret(obj),
        (Feed::Secrets, WatchEvent::Deleted(obj)) => s.delete_secret(obj),
        (Feed::ServiceAccounts, WatchEvent::Restarted(objs)) => s.restart_sas(objs),
        (Feed::ServiceAccounts, WatchEvent::Applied(obj)) => s.apply_sa(obj),
        (Feed::ServiceAccounts, WatchEvent::Deleted(obj)) => s.delete_sa(obj),
    }
}

/// Converts a wall-clock deadline to an `Instant`, never in the past.
fn instant_at(at: OffsetDateTime) -> Instant {
    let delta = at - OffsetDateTime::now_utc();
    let d = Duration::try_from(delta).unwrap_or(Duration::ZERO);
    Instant::now() + d
}

/// Consecutive failures per binding, shared by the workers (a key may land on any of them).
type Failures = Mutex<FailureBackoff<BindingKey>>;

fn failed(failures: &Failures, key: &BindingKey, jitter: f64) -> Duration {
    failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .failed(key.clone(), jitter)
}

fn succeeded(failures: &Failures, key: &BindingKey) {
    failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .succeeded(key);
}

fn work(reconciler: &Reconciler, queue: &WorkQueue<BindingKey>, failures: &Failures, seed: u64) {
    let mut rng = Rng::with_seed(Rng::from_entropy().next_u64() ^ seed);
    while let Some(key) = queue.get() {
        let started = Instant::now();
        match reconciler.reconcile(&key) {
            Ok(Outcome2::Gone) => {
                succeeded(failures, &key);
                queue.forget(&key);
            }
            Ok(Outcome2::Done {
                error,
                refresh_at,
                writes,
            }) => {
                log::debug!(
                    "{key}: reconciled in {:?} with {writes} writes",
                    started.elapsed()
                );
                if let Some(err) = error {
                    let delay = failed(failures, &key, rng.next_f64());
                    log::info!("{key}: {err}; retrying in {}s", delay.as_secs());
                    queue.add_after(key.clone(), delay);
                } else {
                    succeeded(failures, &key);
                }
                if let Some(at) = refresh_at {
                    let jitter = REFRESH_JITTER.mul_f64(rng.next_f64());
                    queue.add_at(key.clone(), instant_at(at) + jitter);
                }
            }
            Err(e) => {
                let delay = failed(failures, &key, rng.next_f64());
                let delay = e
                    .retry_after()
                    .map_or(delay, |r| r.max(Duration::from_secs(1)));
                log::warn!("{key}: {e}; retrying in {}s", delay.as_secs());
                queue.add_after(key.clone(), delay);
            }
        }
        queue.done(&key);
    }
}

fn resync(store: &Mutex<Store>, queue: &WorkQueue<BindingKey>, stop: &AtomicBool) {
    let mut next = Instant::now() + RESYNC_PERIOD;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
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

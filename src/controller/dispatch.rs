//! Watch dispatch: one thread per watch folds its events into the store and queues the bindings
//! they concern.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::binding::ApiVersion;
use crate::controller::schedule::WorkQueue;
use crate::controller::store::{BindingKey, Store, Update};
use crate::controller::Observability;
use crate::kube::WatchEvent;

/// Which watch an event came from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Feed {
    Bindings(ApiVersion),
    Secrets,
    ServiceAccounts,
}

impl Feed {
    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Feed::Bindings(ApiVersion::V1beta2) => "v1beta2",
            Feed::Bindings(ApiVersion::V1beta1) => "v1beta1",
            Feed::Secrets => "secrets",
            Feed::ServiceAccounts => "serviceaccounts",
        }
    }
}

/// How long the Secret and ServiceAccount watches wait for the binding lists before starting
/// anyway (a binding CRD that answers neither a list nor a 404 must not stall everything).
const BINDINGS_FIRST_WAIT: Duration = Duration::from_secs(30);

/// Which feeds have listed once (or found their resource missing).
#[derive(Default)]
pub(crate) struct Listed {
    kinds: Mutex<std::collections::BTreeSet<&'static str>>,
    changed: std::sync::Condvar,
}

impl Listed {
    pub(crate) fn mark(&self, kind: &'static str) {
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
pub(crate) struct Dispatch {
    pub(crate) feed: Feed,
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) queue: Arc<WorkQueue<BindingKey>>,
    pub(crate) obs: Arc<Observability>,
    pub(crate) listed: Arc<Listed>,
    pub(crate) selector: crate::binding::selector::Selector,
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
    pub(crate) fn run(self, rx: mpsc::Receiver<WatchEvent>) {
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

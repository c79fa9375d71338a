//! Workers: take a key from the queue, reconcile it, schedule what the reconcile asks for.

use std::time::Instant;

use time::OffsetDateTime;

use crate::controller::reconcile::{Action, Note, Reconciler};
use crate::controller::schedule::WorkQueue;
use crate::controller::store::BindingKey;
use crate::controller::Observability;
use crate::ops::metrics::ReconcileResult;

/// One worker thread's view of the shared parts.
pub(crate) struct Worker<'a> {
    pub(crate) reconciler: &'a Reconciler,
    pub(crate) queue: &'a WorkQueue<BindingKey>,
    pub(crate) obs: &'a Observability,
}

impl Worker<'_> {
    pub(crate) fn run(&self, index: usize) {
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

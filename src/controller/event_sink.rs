//! The Event sender: Event writes leave the workers through a bounded queue to a thread of
//! their own, with a client of its own rate limit.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::controller::events::{EventRecorder, EventWrite};
use crate::kube::Client;

/// How many Event writes may wait for the sender before new ones are dropped. Each holds its
/// JSON body, so a deep queue would cost more memory than the bindings themselves.
const EVENT_QUEUE: usize = 256;

/// An Event write waiting for the sender. The body waits as JSON text, a fraction of the size of
/// its parsed form.
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

    pub(crate) fn send(&self, w: EventWrite, recorder: &Mutex<EventRecorder>) {
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

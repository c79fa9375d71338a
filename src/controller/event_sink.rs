//! The Event sender: Event writes leave the workers through a bounded queue to a thread of
//! their own, with a client of its own rate limit.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::controller::events::{EventRecorder, EventWrite};
use crate::kube::Client;

/// How many Event writes may wait for the sender before new ones are dropped. Each holds its
/// body, so the queue is bounded rather than allowed to grow with a burst.
const EVENT_QUEUE: usize = 256;

/// Sends Event writes from a thread of its own, through a client with its own rate limit, as
/// client-go's event broadcaster does: Events are best effort, so they never slow the writes
/// that matter (finalizer, Secret, ServiceAccount, status) nor block a worker, and a burst of
/// them is dropped rather than queued without bound.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::SyncSender<EventWrite>,
}

impl EventSink {
    /// Starts the sender thread with `client` (give it its own, low rate limit).
    pub fn start(
        client: Client,
        recorder: Arc<Mutex<EventRecorder>>,
    ) -> std::io::Result<EventSink> {
        let (tx, rx) = mpsc::sync_channel::<EventWrite>(EVENT_QUEUE);
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for w in rx {
                    send_event(&client, &recorder, &w);
                }
            })?;
        Ok(EventSink { tx })
    }

    pub(crate) fn send(&self, w: EventWrite, recorder: &Mutex<EventRecorder>) {
        if let Err(e) = self.tx.try_send(w) {
            let w = match e {
                mpsc::TrySendError::Full(w) | mpsc::TrySendError::Disconnected(w) => w,
            };
            log::debug!(
                "event {}/{} dropped: the event queue is full",
                w.namespace(),
                w.name()
            );
            recorder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget(w.namespace(), w.name());
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

//! Watch streams: replay of the shared event log to one client, with resume, label-selected
//! ADDED/DELETED transitions, bookmarks, timeouts, cuts and 410s. Waits on the store's `Condvar`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Event, EventKind, ExpiredWatch, Store};
use crate::http::{Body, Chunk};

/// With no `timeoutSeconds`, kube-apiserver ends a watch after a random time above
/// `--min-request-timeout` (1800 s); the emulator uses the lower bound.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Which objects a watch (or a list) selects.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The resource type.
    pub res: &'static ResourceType,
    /// The namespace, or every namespace.
    pub ns: Option<String>,
    /// The `labelSelector`.
    pub labels: LabelSelector,
    /// The `fieldSelector`.
    pub fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        self.ns.as_deref().is_none_or(|n| n == ns)
            && self.labels.matches_object(obj)
            && self.fields.matches(name, ns)
    }

    /// What this watcher sees of one event: a selector turns a modification into ADDED or
    /// DELETED when the object starts or stops matching (the DELETED carries the previous
    /// state with the event's rv, as the watch cache sends it).
    fn convert<'e>(&self, ev: &'e Event) -> Option<(EventKind, Cow<'e, Value>)> {
        if ev.res != self.res.index() {
            return None;
        }
        match ev.kind {
            EventKind::Added | EventKind::Deleted => self
                .matches(&ev.object)
                .then_some((ev.kind, Cow::Borrowed(&ev.object))),
            EventKind::Modified => {
                let now = self.matches(&ev.object);
                let before = ev.prev.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some((EventKind::Modified, Cow::Borrowed(&ev.object))),
                    (false, true) => Some((EventKind::Added, Cow::Borrowed(&ev.object))),
                    (true, false) => {
                        let prev = ev.prev.as_deref().expect("before is true only with a prev");
                        let mut prev = prev.clone();
                        prev["metadata"]["resourceVersion"] = json!(ev.rv.to_string());
                        Some((EventKind::Deleted, Cow::Owned(prev)))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

/// A watch request's parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// What to watch.
    pub filter: Filter,
    /// The `resourceVersion` query parameter (`None` when absent).
    pub resource_version: Option<String>,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: end the synthetic ADDED events with an annotated BOOKMARK.
    pub send_initial_events: bool,
}

/// One watch event line. Written straight from the stored object: `json!` would copy it first.
fn line(kind: &str, object: &Value) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(b"{\"type\":");
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut b, kind);
    b.extend_from_slice(b",\"object\":");
    let _ = serde_json::to_writer(&mut b, object);
    b.extend_from_slice(b"}\n");
    b
}

fn bookmark(res: &ResourceType, rv: u64, initial_end: bool) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta}),
    )
}

/// Starts a watch. `Err` only for a refusal sent as an HTTP status (bad rv, or 410 in HTTP mode).
pub fn start(store: Arc<Store>, p: Params) -> Result<Body, ApiError> {
    let st = store.lock();
    let mut pending = VecDeque::new();
    let last = match p.resource_version.as_deref() {
        None | Some("") | Some("0") => {
            // rv unset or "0": kube-apiserver starts with synthetic ADDED events for every
            // current object, then streams changes from that point.
            for (_, obj) in st.objects_of(p.filter.res, p.filter.ns.as_deref()) {
                if p.filter.matches(obj) {
                    pending.push_back(line("ADDED", obj));
                }
            }
            if p.send_initial_events && p.bookmarks {
                pending.push_back(bookmark(p.filter.res, st.rv, true));
            }
            st.rv
        }
        Some(s) => {
            let rv: u64 = s.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "resourceVersion: Invalid value: \"{s}\": must be a valid resource version"
                ))
            })?;
            if rv < st.compacted {
                let err = ApiError::too_old(rv, st.compacted);
                if st.expired_watch == ExpiredWatch::Http {
                    return Err(err);
                }
                pending.push_back(line("ERROR", &err.to_status()));
                let stream = Stream {
                    store: store.clone(),
                    params: p,
                    last: rv,
                    pending,
                    deadline: Instant::now(),
                    next_bookmark: Instant::now(),
                    epoch: st.cut_epoch,
                    done: true,
                };
                return Ok(Body::Stream(Box::new(stream)));
            }
            rv
        }
    };
    let now = Instant::now();
    let stream = Stream {
        store: store.clone(),
        last,
        pending,
        deadline: now + p.timeout.unwrap_or(DEFAULT_TIMEOUT),
        next_bookmark: now + st.bookmark_interval,
        epoch: st.cut_epoch,
        done: false,
        params: p,
    };
    Ok(Body::Stream(Box::new(stream)))
}

/// One open watch: the iterator the listener drains into chunks.
struct Stream {
    store: Arc<Store>,
    params: Params,
    /// The rv of the last log entry this watcher has consumed.
    last: u64,
    /// Lines ready to send (initial events, or a final ERROR).
    pending: VecDeque<Vec<u8>>,
    deadline: Instant,
    next_bookmark: Instant,
    epoch: u64,
    /// No more waiting: send what is pending, then end.
    done: bool,
}

impl Iterator for Stream {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        if let Some(p) = self.pending.pop_front() {
            return Some(Chunk::Data(p));
        }
        if self.done {
            return None;
        }
        let store = self.store.clone();
        let mut st = store.lock();
        loop {
            if st.cut_epoch != self.epoch || st.stopping {
                self.done = true;
                return Some(Chunk::Abort);
            }
            if st.dropped_through[self.params.filter.res.index()] > self.last {
                // This watcher fell behind the history: what the real server sends then.
                self.done = true;
                let err = ApiError::too_old(self.last, st.compacted);
                return Some(Chunk::Data(line("ERROR", &err.to_status())));
            }
            let mut out = Vec::new();
            for ev in st.events_after(self.last) {
                self.last = ev.rv;
                if let Some((kind, obj)) = self.params.filter.convert(ev) {
                    out.extend(line(kind.as_str(), &obj));
                }
            }
            if !out.is_empty() {
                let latency = st.latency.watch;
                drop(st);
                if latency > Duration::ZERO {
                    std::thread::sleep(latency);
                }
                return Some(Chunk::Data(out));
            }
            let now = Instant::now();
            if now >= self.deadline {
                self.done = true;
                return None;
            }
            if self.params.bookmarks && now >= self.next_bookmark {
                self.next_bookmark = now + st.bookmark_interval;
                self.last = self.last.max(st.rv);
                return Some(Chunk::Data(bookmark(
                    self.params.filter.res,
                    self.last,
                    false,
                )));
            }
            let mut wake = self.deadline;
            if self.params.bookmarks {
                wake = wake.min(self.next_bookmark);
            }
            let wait = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            st = store.wait_events(self.params.filter.res.index(), st, wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{NAMESPACES, SECRETS};

    fn store_with_ns() -> Arc<Store> {
        let store = Arc::new(Store::new());
        store
            .write(|st| st.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}})))
            .unwrap();
        store
    }

    fn params(labels: &str, rv: Option<&str>, timeout_ms: u64) -> Params {
        Params {
            filter: Filter {
                res: &SECRETS,
                ns: Some("ns".into()),
                labels: LabelSelector::parse(labels).unwrap(),
                fields: FieldSelector::default(),
            },
            resource_version: rv.map(str::to_string),
            timeout: Some(Duration::from_millis(timeout_ms)),
            bookmarks: false,
            send_initial_events: false,
        }
    }

    fn events(body: Body) -> Vec<Value> {
        let bytes = crate::http::Response {
            status: 200,
            headers: vec![],
            body,
        }
        .body_bytes();
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn label_selected_watch_sees_objects_enter_and_leave() {
        let store = store_with_ns();
        let rv = store.lock().rv.to_string();
        store
            .write(|st| {
                st.create(
                    &SECRETS,
                    "ns",
                    json!({"metadata": {"name": "s", "labels": {"a": "1"}}}),
                )
            })
            .unwrap();
        let cur = store.lock().get(&SECRETS, "ns", "s").unwrap().clone();
        let mut unlabelled = cur.clone();
        unlabelled["metadata"]["labels"] = json!({});
        store
            .write(|st| st.update(&SECRETS, "ns", "s", unlabelled, false))
            .unwrap();
        let body = start(store, params("a=1", Some(&rv), 50)).unwrap();
        let evs = events(body);
        let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ADDED", "DELETED"]);
    }

    #[test]
    fn resume_before_the_history_is_an_in_stream_410() {
        let store = store_with_ns();
        store.write(|st| st.compact());
        let evs = events(start(store, params("", Some("1001"), 50)).unwrap());
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["type"], "ERROR");
        assert_eq!(evs[0]["object"]["code"], 410);
    }

    #[test]
    fn resume_before_the_history_is_an_http_410_when_asked() {
        let store = store_with_ns();
        store.write(|st| {
            st.compact();
            st.expired_watch = ExpiredWatch::Http;
        });
        assert_eq!(
            start(store, params("", Some("1001"), 50))
                .err()
                .unwrap()
                .code,
            410
        );
    }

    #[test]
    fn rv_zero_starts_with_synthetic_added_events() {
        let store = store_with_ns();
        store
            .write(|st| st.create(&SECRETS, "ns", json!({"metadata": {"name": "s"}})))
            .unwrap();
        let evs = events(start(store, params("", Some("0"), 20)).unwrap());
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["type"], "ADDED");
    }
}

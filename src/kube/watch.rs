//! List + watch as an explicit state machine: paginated relist, resume from resourceVersion, backoff.
//!
//! `Empty → InitPage{continue} → InitListed{rv} → Watching{rv, stream}`; [`Watcher::step`] makes one
//! move. A 410 (HTTP, or an in-stream ERROR) goes back to `Empty` for a fresh relist; a stream that ends
//! goes to `InitListed` to rewatch from the last rv; other errors back off and keep the rv.

use super::backoff::Backoff;
use super::client::{Client, ListPage, ListParams, RawEvent, WatchStream};
use super::error::Error;
use crate::clock::{Clock, Rng, SystemClock};
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Page size of the initial list: bounds the memory of one response body.
pub const PAGE_SIZE: u32 = 500;
/// Watch `timeoutSeconds` is drawn from this range so many watchers do not reconnect in lockstep
/// (kube-rs uses 290 s, below the 300 s that proxies and load balancers commonly allow).
pub const WATCH_TIMEOUT_SECS: (u64, u64) = (290, 300);
/// A watch that ends sooner than this having carried no event is an error, so a refusing server
/// cannot make us reconnect in a hot loop (client-go's `VeryShortWatchError`).
pub const MIN_WATCH_DURATION: Duration = Duration::from_secs(1);
/// A throttled request waits at least this long even if `Retry-After` says 0.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);
/// Backoff sleeps wake this often to notice the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// What the watcher tells its caller, who keeps the objects (the watcher keeps only the rv).
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A full relist that fitted in one page: replace the whole store with these objects, so
    /// deletions missed while disconnected disappear.
    Restarted(Vec<Value>),
    /// One page of a relist that spans several pages (`first` starts a new relist). The caller
    /// folds it at once, so memory never holds more than a page of raw objects.
    Page {
        /// Whether this is the first page of the relist.
        first: bool,
        /// The page's objects.
        items: Vec<Value>,
    },
    /// The last page of a multi-page relist: fold it, then drop whatever the relist's pages did
    /// not contain.
    ListEnd(Vec<Value>),
    /// An object was added or modified.
    Applied(Value),
    /// An object was deleted (its last state).
    Deleted(Value),
}

/// Where the loop broke, for logs.
#[derive(Debug)]
pub enum WatchError {
    /// A LIST page failed.
    InitialListFailed(Error),
    /// Opening the WATCH failed.
    WatchStartFailed(Error),
    /// The server sent an in-stream ERROR event other than 410.
    ErrorEvent(Error),
    /// Reading or decoding the stream failed.
    WatchFailed(Error),
    /// The watch ended within [`MIN_WATCH_DURATION`] without any event.
    VeryShortWatch,
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchError::InitialListFailed(e) => write!(f, "initial list failed: {e}"),
            WatchError::WatchStartFailed(e) => write!(f, "watch start failed: {e}"),
            WatchError::ErrorEvent(e) => write!(f, "watch error event: {e}"),
            WatchError::WatchFailed(e) => write!(f, "watch failed: {e}"),
            WatchError::VeryShortWatch => write!(f, "watch ended immediately without events"),
        }
    }
}

impl std::error::Error for WatchError {}

/// Something that can list and watch one resource; the API client, or a fake in tests.
pub trait Source {
    /// The event stream of an open watch.
    type Stream: EventSource;
    /// One LIST page (quorum read, `limit` [`PAGE_SIZE`]).
    fn list(&mut self, continue_token: Option<&str>) -> Result<ListPage, Error>;
    /// Opens a watch from `resource_version`, ended by the server after `timeout_secs`.
    fn watch(&mut self, resource_version: &str, timeout_secs: u32) -> Result<Self::Stream, Error>;
}

/// The events of one open watch.
pub trait EventSource {
    /// The next event, or `Ok(None)` when the server closed the stream normally.
    fn next_event(&mut self) -> Result<Option<RawEvent>, Error>;
}

impl EventSource for WatchStream {
    fn next_event(&mut self) -> Result<Option<RawEvent>, Error> {
        WatchStream::next_event(self)
    }
}

/// Lists and watches one collection path of the API server.
pub struct ApiSource {
    client: Client,
    path: String,
    params: ListParams,
}

impl ApiSource {
    /// Watches `path` (e.g. `Resource::SECRETS.path(None, None, None)`) with the given selectors.
    pub fn new(client: Client, path: String, selectors: ListParams) -> Self {
        ApiSource {
            client,
            path,
            params: ListParams {
                limit: None,
                continue_token: None,
                ..selectors
            },
        }
    }
}

impl Source for ApiSource {
    type Stream = WatchStream;

    fn list(&mut self, continue_token: Option<&str>) -> Result<ListPage, Error> {
        let params = ListParams {
            limit: Some(PAGE_SIZE),
            continue_token: continue_token.map(str::to_string),
            ..self.params.clone()
        };
        self.client.list(&self.path, &params)
    }

    fn watch(&mut self, resource_version: &str, timeout_secs: u32) -> Result<WatchStream, Error> {
        self.client
            .watch(&self.path, &self.params, resource_version, timeout_secs)
    }
}

/// The watcher's position.
pub enum State<S> {
    /// Nothing listed yet, or a 410 demanded a fresh relist.
    Empty,
    /// Mid-way through a paginated list; `items` collects pages until the last one.
    InitPage {
        /// Token for the next page.
        continue_token: Option<String>,
        /// Objects of the pages read so far.
        items: Vec<Value>,
    },
    /// Listed (or a stream ended); the next step opens a watch from `resource_version`.
    InitListed {
        /// Where to resume.
        resource_version: String,
    },
    /// Reading events.
    Watching {
        /// The last resourceVersion seen.
        resource_version: String,
        /// The open stream.
        stream: S,
        /// When it was opened.
        started: Instant,
        /// Events (bookmarks included) it has carried.
        events: u64,
    },
}

impl<S> State<S> {
    #[cfg(test)]
    /// The state's name, for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::InitPage { .. } => "InitPage",
            State::InitListed { .. } => "InitListed",
            State::Watching { .. } => "Watching",
        }
    }

    #[cfg(test)]
    /// The resourceVersion the watcher would resume from, if any.
    pub fn resource_version(&self) -> Option<&str> {
        match self {
            State::InitListed { resource_version }
            | State::Watching {
                resource_version, ..
            } => Some(resource_version),
            _ => None,
        }
    }
}

/// What one [`Watcher::step`] produced.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Deliver this to the caller.
    Event(WatchEvent),
    /// The state moved; nothing to deliver.
    Progress,
    /// Something failed; wait this long before the next step.
    Backoff(Duration),
}

/// The list+watch state machine for one resource.
pub struct Watcher<S: Source> {
    name: String,
    source: S,
    state: State<S::Stream>,
    backoff: Backoff,
    rng: Rng,
    clock: Arc<dyn Clock>,
    not_found_logged: bool,
}

impl<S: Source> Watcher<S> {
    /// A watcher named `name` in logs (e.g. "v1beta1 AcrPullBinding"), with the real clock and fresh randomness.
    pub fn new(name: impl Into<String>, source: S) -> Self {
        Self::with_parts(name, source, Arc::new(SystemClock), Rng::from_entropy())
    }

    /// As [`Watcher::new`] with an injected clock and RNG (tests).
    pub fn with_parts(name: impl Into<String>, source: S, clock: Arc<dyn Clock>, rng: Rng) -> Self {
        Watcher {
            name: name.into(),
            source,
            state: State::Empty,
            backoff: Backoff::new(rng.clone()),
            rng,
            clock,
            not_found_logged: false,
        }
    }

    #[cfg(test)]
    /// The current state.
    pub fn state(&self) -> &State<S::Stream> {
        &self.state
    }

    /// Makes one move of the state machine.
    pub fn step(&mut self) -> Step {
        let (step, next) = match std::mem::replace(&mut self.state, State::Empty) {
            State::Empty => self.list_page(None, Vec::new()),
            State::InitPage {
                continue_token,
                items,
            } => self.list_page(continue_token, items),
            State::InitListed { resource_version } => self.start_watch(resource_version),
            State::Watching {
                resource_version,
                stream,
                started,
                events,
            } => self.read_event(resource_version, stream, started, events),
        };
        self.state = next;
        step
    }

    fn list_page(
        &mut self,
        continue_token: Option<String>,
        items: Vec<Value>,
    ) -> (Step, State<S::Stream>) {
        match self.source.list(continue_token.as_deref()) {
            Ok(page) => {
                self.not_found_logged = false;
                let first = continue_token.is_none();
                match page.continue_token {
                    // Pages are handed over one by one instead of being gathered: a cluster with
                    // many objects we do not keep (ServiceAccounts) must not cost their whole list.
                    Some(c) => (
                        Step::Event(WatchEvent::Page {
                            first,
                            items: page.items,
                        }),
                        State::InitPage {
                            continue_token: Some(c),
                            items,
                        },
                    ),
                    None => {
                        log::debug!(
                            "{}: listed {} objects (last page) at rv {}",
                            self.name,
                            page.items.len(),
                            page.resource_version
                        );
                        let event = if first {
                            WatchEvent::Restarted(page.items)
                        } else {
                            WatchEvent::ListEnd(page.items)
                        };
                        (
                            Step::Event(event),
                            State::InitListed {
                                resource_version: page.resource_version,
                            },
                        )
                    }
                }
            }
            Err(e) if e.is_not_found() => {
                if !self.not_found_logged {
                    log::warn!("{} CRD not installed; retrying", self.name);
                    self.not_found_logged = true;
                }
                (self.fail_quietly(&e), State::Empty)
            }
            // The continue token expired: start the list over.
            Err(e) if e.is_gone() => (self.fail(WatchError::InitialListFailed(e)), State::Empty),
            Err(e) => (
                self.fail(WatchError::InitialListFailed(e)),
                State::InitPage {
                    continue_token,
                    items,
                },
            ),
        }
    }

    fn start_watch(&mut self, resource_version: String) -> (Step, State<S::Stream>) {
        let (lo, hi) = WATCH_TIMEOUT_SECS;
        let timeout = u32::try_from(self.rng.range_inclusive(lo, hi)).unwrap_or(290);
        match self.source.watch(&resource_version, timeout) {
            Ok(stream) => (
                Step::Progress,
                State::Watching {
                    resource_version,
                    stream,
                    started: self.clock.now(),
                    events: 0,
                },
            ),
            Err(e) if e.is_gone() => {
                log::info!(
                    "{}: resourceVersion {resource_version} expired; relisting",
                    self.name
                );
                (Step::Progress, State::Empty)
            }
            Err(e) => (
                self.fail(WatchError::WatchStartFailed(e)),
                State::InitListed { resource_version },
            ),
        }
    }

    fn read_event(
        &mut self,
        mut resource_version: String,
        mut stream: S::Stream,
        started: Instant,
        events: u64,
    ) -> (Step, State<S::Stream>) {
        let event = match stream.next_event() {
            Ok(Some(event)) => event,
            Ok(None) => {
                let short =
                    self.clock.now().saturating_duration_since(started) < MIN_WATCH_DURATION;
                let step = if short && events == 0 {
                    self.fail(WatchError::VeryShortWatch)
                } else {
                    Step::Progress
                };
                return (step, State::InitListed { resource_version });
            }
            Err(e) => {
                return (
                    self.fail(WatchError::WatchFailed(e)),
                    State::InitListed { resource_version },
                )
            }
        };
        let RawEvent { kind, object } = event;
        if kind == "ERROR" {
            let e = Error::from_status(500, &object);
            if e.is_gone() {
                log::info!("{}: watch expired (410); relisting", self.name);
                return (Step::Progress, State::Empty);
            }
            return (
                self.fail(WatchError::ErrorEvent(e)),
                State::InitListed { resource_version },
            );
        }
        if let Some(rv) = object["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| !rv.is_empty())
        {
            resource_version = rv.to_string();
        }
        let step = match kind.as_str() {
            "ADDED" | "MODIFIED" => Step::Event(WatchEvent::Applied(object)),
            "DELETED" => Step::Event(WatchEvent::Deleted(object)),
            "BOOKMARK" => Step::Progress,
            other => {
                log::debug!("{}: ignoring watch event of type {other:?}", self.name);
                Step::Progress
            }
        };
        (
            step,
            State::Watching {
                resource_version,
                stream,
                started,
                events: events.saturating_add(1),
            },
        )
    }

    /// Logs the failure and returns how long to wait: `Retry-After` for a 429, else the backoff.
    fn fail(&mut self, e: WatchError) -> Step {
        let retry_after = match &e {
            WatchError::InitialListFailed(Error::TooManyRequests { retry_after })
            | WatchError::WatchStartFailed(Error::TooManyRequests { retry_after }) => *retry_after,
            _ => None,
        };
        let d = self.delay(retry_after);
        log::warn!("{}: {e}; retrying in {} ms", self.name, d.as_millis());
        Step::Backoff(d)
    }

    /// A failure already reported (the missing-CRD message): back off, log only at debug level.
    fn fail_quietly(&mut self, e: &Error) -> Step {
        let d = self.delay(None);
        log::debug!("{}: {e}; retrying in {} ms", self.name, d.as_millis());
        Step::Backoff(d)
    }

    fn delay(&mut self, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.max(MIN_RETRY_AFTER),
            None => self.backoff.failure(self.clock.now()),
        }
    }

    #[cfg(test)]
    /// Steps until `stop` is set or the receiver is gone, sending events and sleeping out backoffs.
    pub fn run(self, tx: &SyncSender<WatchEvent>, stop: &AtomicBool) {
        self.run_observed(tx, stop, &|_| {});
    }

    /// Like [`Watcher::run`], telling `observer` after every step whether the resource is
    /// missing (its list answers 404, e.g. a CRD not installed); liveness probes count the calls.
    pub fn run_observed(
        mut self,
        tx: &SyncSender<WatchEvent>,
        stop: &AtomicBool,
        observer: &dyn Fn(bool),
    ) {
        while !stop.load(Ordering::Relaxed) {
            let step = self.step();
            observer(self.not_found_logged);
            match step {
                Step::Event(e) => {
                    if tx.send(e).is_err() {
                        return;
                    }
                }
                Step::Progress => {}
                Step::Backoff(d) => sleep_unless_stopped(&*self.clock, d, stop),
            }
        }
        log::debug!("{}: watcher stopped", self.name);
    }
}

fn sleep_unless_stopped(clock: &dyn Clock, d: Duration, stop: &AtomicBool) {
    let deadline = clock.now() + d;
    loop {
        let now = clock.now();
        if stop.load(Ordering::Relaxed) || now >= deadline {
            return;
        }
        clock.sleep((deadline - now).min(STOP_POLL));
    }
}

/// A running watcher thread; dropping it asks the thread to stop (it notices between reads).
pub struct WatchHandle {
    stop: Arc<AtomicBool>,
    // Only tests wait for the thread; in the product it ends on its own once stopped.
    #[cfg(test)]
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WatchHandle {
    /// Asks the watcher to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    #[cfg(test)]
    /// Asks the watcher to stop and waits for its thread (at most one read idle timeout).
    pub fn join(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a thread that lists and watches `path`, sends events to `tx` and calls `observer` after
/// every step (see [`Watcher::run_observed`]).
pub fn spawn(
    name: impl Into<String>,
    client: Client,
    path: String,
    selectors: ListParams,
    tx: SyncSender<WatchEvent>,
    observer: Box<dyn Fn(bool) + Send>,
) -> std::io::Result<WatchHandle> {
    let name = name.into();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let source = ApiSource::new(client, path, selectors);
    let thread = std::thread::Builder::new()
        .name(format!("watch {name}"))
        .spawn(move || Watcher::new(name, source).run_observed(&tx, &flag, &*observer))?;
    #[cfg(not(test))]
    drop(thread);
    Ok(WatchHandle {
        stop,
        #[cfg(test)]
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::kube::auth::Auth;
    use crate::kube::client::tests::{client, serve, Canned};
    use serde_json::json;
    use std::collections::VecDeque;
    use std::sync::mpsc;

    type Reply<T> = Result<T, Error>;

    #[derive(Default)]
    struct FakeSource {
        lists: VecDeque<Reply<ListPage>>,
        watches: VecDeque<Reply<FakeStream>>,
        list_calls: Vec<Option<String>>,
        watch_calls: Vec<(String, u32)>,
    }

    struct FakeStream {
        events: VecDeque<Reply<Option<RawEvent>>>,
        clock: Option<(Arc<FakeClock>, Duration)>,
    }

    impl EventSource for FakeStream {
        fn next_event(&mut self) -> Result<Option<RawEvent>, Error> {
            if let Some((clock, d)) = &self.clock {
                clock.advance(*d);
            }
            self.events.pop_front().unwrap_or(Ok(None))
        }
    }

    impl Source for FakeSource {
        type Stream = FakeStream;
        fn list(&mut self, continue_token: Option<&str>) -> Result<ListPage, Error> {
            self.list_calls.push(continue_token.map(str::to_string));
            self.lists.pop_front().expect("test scripted enough lists")
        }
        fn watch(&mut self, rv: &str, timeout_secs: u32) -> Result<FakeStream, Error> {
            self.watch_calls.push((rv.to_string(), timeout_secs));
            self.watches
                .pop_front()
                .expect("test scripted enough watches")
        }
    }

    fn page(names: &[&str], rv: &str, cont: Option<&str>) -> Reply<ListPage> {
        Ok(ListPage {
            items: names
                .iter()
                .map(|n| json!({"metadata": {"name": n}}))
                .collect(),
            resource_version: rv.to_string(),
            continue_token: cont.map(str::to_string),
        })
    }

    fn ev(kind: &str, name: &str, rv: &str) -> Reply<Option<RawEvent>> {
        Ok(Some(RawEvent {
            kind: kind.to_string(),
            object: json!({"metadata": {"name": name, "resourceVersion": rv}}),
        }))
    }

    fn stream(events: Vec<Reply<Option<RawEvent>>>) -> Reply<FakeStream> {
        Ok(FakeStream {
            events: events.into(),
            clock: None,
        })
    }

    fn status(code: u16) -> Error {
        Error::from_status(code, &Value::Null)
    }

    fn watcher(src: FakeSource) -> (Watcher<FakeSource>, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::new());
        (
            Watcher::with_parts("test", src, clock.clone(), Rng::with_seed(9)),
            clock,
        )
    }

    #[test]
    fn paginated_list_is_delivered_page_by_page_then_watched_from_its_rv() {
        let mut src = FakeSource::default();
        src.lists.push_back(page(&["a", "b"], "", Some("c1")));
        src.lists.push_back(page(&["c"], "10", None));
        src.watches.push_back(stream(vec![
            ev("ADDED", "d", "11"),
            ev("DELETED", "a", "12"),
        ]));
        let (mut w, _) = watcher(src);
        let Step::Event(WatchEvent::Page { first: true, items }) = w.step() else {
            panic!("expected the first page")
        };
        assert_eq!(items.len(), 2);
        assert_eq!(w.state().name(), "InitPage");
        let Step::Event(WatchEvent::ListEnd(items)) = w.step() else {
            panic!("expected the last page")
        };
        assert_eq!(items.len(), 1);
        assert_eq!(w.state().resource_version(), Some("10"));
        assert_eq!(w.step(), Step::Progress);
        assert_eq!(w.state().name(), "Watching");
        assert!(
            matches!(w.step(), Step::Event(WatchEvent::Applied(o)) if o["metadata"]["name"] == "d")
        );
        assert!(
            matches!(w.step(), Step::Event(WatchEvent::Deleted(o)) if o["metadata"]["name"] == "a")
        );
        assert_eq!(w.state().resource_version(), Some("12"));
        assert_eq!(w.source.list_calls, vec![None, Some("c1".to_string())]);
        let (rv, timeout) = &w.source.watch_calls[0];
        assert_eq!(rv, "10");
        assert!((290..=300).contains(timeout));
    }

    #[test]
    fn bookmark_only_moves_the_rv_and_a_normal_end_rewatches_from_it() {
        let mut src = FakeSource::default();
        src.lists.push_back(page(&[], "5", None));
        let clock = Arc::new(FakeClock::new());
        src.watches.push_back(Ok(FakeStream {
            events: vec![ev("BOOKMARK", "", "50")].into(),
            clock: Some((clock.clone(), Duration::from_secs(100))),
        }));
        src.watches.push_back(stream(vec![]));
        let mut w = Watcher::with_parts("test", src, clock, Rng::with_seed(1));
        w.step();
        w.step();
        assert_eq!(w.step(), Step::Progress);
        assert_eq!(w.state().resource_version(), Some("50"));
        assert_eq!(w.step(), Step::Progress);
        assert_eq!(w.state().name(), "InitListed");
        w.step();
        assert_eq!(w.source.watch_calls[1].0, "50");
    }

    #[test]
    fn in_stream_410_error_relists_from_scratch() {
        let mut src = FakeSource::default();
        src.lists.push_back(page(&["a"], "5", None));
        src.watches.push_back(stream(vec![Ok(Some(RawEvent {
            kind: "ERROR".into(),
            object: json!({"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}),
        }))]));
        src.lists.push_back(page(&["b"], "90", None));
        let (mut w, _) = watcher(src);
        w.step();
        w.step();
        assert_eq!(w.step(), Step::Progress);
        assert_eq!(w.state().name(), "Empty");
        assert_eq!(
            w.step(),
            Step::Event(WatchEvent::Restarted(vec![
                json!({"metadata": {"name": "b"}})
            ]))
        );
        assert_eq!(w.state().resource_version(), Some("90"));
    }

    #[test]
    fn http_410_on_watch_start_relists_and_expired_continue_restarts_the_list() {
        let mut src = FakeSource::default();
        src.lists.push_back(page(&["a"], "5", None));
        src.watches.push_back(Err(status(410)));
        src.lists.push_back(page(&["a"], "", Some("c")));
        src.lists.push_back(Err(status(410)));
        let (mut w, _) = watcher(src);
        w.step();
        assert_eq!(w.step(), Step::Progress);
        assert_eq!(w.state().name(), "Empty");
        w.step();
        assert!(matches!(w.step(), Step::Backoff(_)));
        assert_eq!(w.state().name(), "Empty");
    }

    #[test]
    fn too_many_requests_honours_retry_after_and_keeps_the_rv() {
        let mut src = FakeSource::default();
        src.lists.push_back(page(&[], "7", None));
        src.watches.push_back(Err(Error::TooManyRequests {
            retry_after: Some(Duration::from_secs(4)),
        }));
        let (mut w, _) = watcher(src);
        w.step();
        assert_eq!(w.step(), Step::Backoff(Duration::from_secs(4)));
        assert_eq!(w.state().name(), "InitListed");
        assert_eq!(w.state().resource_version(), Some("7"));
    }

    #[test]
    fn a_watch_that_dies_at_once_without_events_backs_off() {
        let mut src = FakeSource::default();
        src.lists.push_back(page(&[], "7", None));
        src.watches.push_back(stream(vec![]));
        let (mut w, _) = watcher(src);
        w.step();
        w.step();
        let Step::Backoff(d) = w.step() else {
            panic!("a very short watch must back off")
        };
        assert!(d >= Duration::from_millis(600) && d <= Duration::from_millis(1000));
        assert_eq!(w.state().resource_version(), Some("7"));
    }

    #[test]
    fn transport_errors_back_off_with_growing_delays_and_keep_the_rv() {
        let mut src = FakeSource::default();
        src.lists.push_back(page(&[], "3", None));
        for _ in 0..3 {
            src.watches
                .push_back(Err(Error::Transport(ureq::Error::ConnectionFailed)));
        }
        src.watches.push_back(stream(vec![Err(Error::Transport(
            ureq::Error::ConnectionFailed,
        ))]));
        let (mut w, _) = watcher(src);
        w.step();
        let delays: Vec<Duration> = (0..3)
            .map(|_| match w.step() {
                Step::Backoff(d) => d,
                other => panic!("expected backoff, got {other:?}"),
            })
            .collect();
        assert!(delays[0] < delays[1] && delays[1] < delays[2], "{delays:?}");
        assert_eq!(w.step(), Step::Progress);
        assert!(matches!(w.step(), Step::Backoff(_)));
        assert_eq!(w.state().resource_version(), Some("3"));
        assert_eq!(w.state().name(), "InitListed");
    }

    #[test]
    fn missing_crd_is_logged_once_and_retried_without_exiting() {
        let mut src = FakeSource::default();
        for _ in 0..3 {
            src.lists.push_back(Err(status(404)));
        }
        src.lists.push_back(page(&["x"], "1", None));
        let (mut w, _) = watcher(src);
        for _ in 0..3 {
            assert!(matches!(w.step(), Step::Backoff(_)));
            assert!(w.not_found_logged);
        }
        assert!(matches!(w.step(), Step::Event(WatchEvent::Restarted(_))));
        assert!(!w.not_found_logged);
    }

    #[test]
    fn run_stops_when_the_flag_is_set_during_backoff() {
        let mut src = FakeSource::default();
        src.lists.push_back(Err(status(500)));
        let (w, _) = watcher(src);
        let (tx, _rx) = mpsc::sync_channel(16);
        let stop = AtomicBool::new(true);
        w.run(&tx, &stop);
    }

    #[test]
    fn real_http_watch_delivers_list_events_and_relists_after_in_stream_410() {
        let list1 = r#"{"metadata":{"resourceVersion":"10"},"items":[{"metadata":{"name":"a","resourceVersion":"9"}}]}"#;
        let list2 = r#"{"metadata":{"resourceVersion":"30"},"items":[{"metadata":{"name":"b","resourceVersion":"29"}}]}"#;
        let (base, seen) = serve(vec![
            Canned::json(200, list1),
            Canned {
                status: 200,
                headers: vec![],
                chunks: vec![
                    "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"11\"}}}\n".into(),
                    "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"20\"}}}\n".into(),
                    "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\"}}\n".into(),
                ],
            },
            Canned::json(200, list2),
        ]);
        let c = client(&base, Auth::None);
        let (tx, rx) = mpsc::sync_channel(16);
        let selectors = ListParams {
            label_selector: Some("app=x".into()),
            ..ListParams::default()
        };
        let handle = spawn(
            "secrets",
            c,
            "/api/v1/secrets".into(),
            selectors,
            tx,
            Box::new(|_| {}),
        )
        .unwrap();
        let wait = Duration::from_secs(10);
        let first = rx.recv_timeout(wait).unwrap();
        assert!(
            matches!(&first, WatchEvent::Restarted(items) if items[0]["metadata"]["name"] == "a")
        );
        let second = rx.recv_timeout(wait).unwrap();
        assert!(
            matches!(&second, WatchEvent::Applied(o) if o["metadata"]["resourceVersion"] == "11")
        );
        let third = rx.recv_timeout(wait).unwrap();
        assert!(
            matches!(&third, WatchEvent::Restarted(items) if items[0]["metadata"]["name"] == "b")
        );
        handle.stop();
        let lines: Vec<String> = (0..3)
            .map(|_| seen.recv_timeout(wait).unwrap().request_line)
            .collect();
        assert_eq!(
            lines[0],
            "GET /api/v1/secrets?labelSelector=app%3Dx&limit=500 HTTP/1.1"
        );
        assert!(lines[1].starts_with("GET /api/v1/secrets?labelSelector=app%3Dx&watch=1&allowWatchBookmarks=true&timeoutSeconds="));
        assert!(lines[1].ends_with("&resourceVersion=10 HTTP/1.1"));
        assert_eq!(lines[2], lines[0]);
        handle.join();
    }
}

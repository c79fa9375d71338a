//! The object store: one global resourceVersion counter, the event log, and write semantics
//! (create, update, status, patch, delete, finalizers) as kube-apiserver applies them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::patch::{self, PatchError};
use super::resources::{self, ResourceType, ALL};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::validate;

/// Where the resourceVersion counter starts: far from 0 so "0" and small numbers stay special.
const FIRST_RV: u64 = 1000;
/// Default number of events kept for watch resumes.
const DEFAULT_HISTORY: usize = 10_000;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed (the object is its last state).
    Deleted,
}

impl EventKind {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One write, as watchers replay it.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion this write produced.
    pub rv: u64,
    /// Index of the resource type in [`ALL`].
    pub res: usize,
    /// What happened.
    pub kind: EventKind,
    /// The object after the write (for deletes: its last state, carrying the delete's rv).
    /// Shared with the store and with the next event's `prev`: the history holds each version
    /// once, not three times.
    pub object: Arc<Value>,
    /// The object before the write (modifications only), for label-selected watches.
    pub prev: Option<Arc<Value>>,
}

/// How a watch that asks for a resourceVersion older than the history is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiredWatch {
    /// HTTP 200 then one `ERROR` event carrying a 410 `Status` (what kube-apiserver does).
    #[default]
    InStream,
    /// HTTP 410 with the `Status` as the body.
    Http,
}

/// A key in the store: resource index, namespace (`""` for cluster-scoped), name.
pub type ObjKey = (usize, String, String);

/// Everything behind the store's one mutex.
pub struct State {
    /// The last resourceVersion handed out.
    pub rv: u64,
    /// Live objects. Private: every insert and removal goes through [`State::put`] and
    /// [`State::take`], which keep the ownership indexes below in step.
    objects: BTreeMap<ObjKey, Arc<Value>>,
    /// Live objects' keys by uid: whether an owner exists.
    uid_keys: HashMap<String, ObjKey>,
    /// Owner uid -> live objects whose `ownerReferences` name it (the owner may be gone).
    dependents: HashMap<String, BTreeSet<ObjKey>>,
    /// Objects the garbage collector has to look at: dependents of removed objects, and objects
    /// written with owners none of which exists. Nothing else can become an orphan.
    gc_pending: BTreeSet<ObjKey>,
    /// How many objects garbage collection has examined, ever (its cost, for tests).
    pub gc_examined: u64,
    /// Recent events, oldest first, strictly increasing rv.
    pub log: VecDeque<Arc<Event>>,
    /// How many events `log` keeps.
    pub history_limit: usize,
    /// Per resource type (index in [`ALL`]): the highest rv of an event of that type dropped
    /// from `log`. A live watcher of the type behind it has missed events; one behind only
    /// other types' dropped events has not (it is not woken for them, see [`Store::write`]).
    pub dropped_through: [u64; ALL.len()],
    /// Resource types (bits by index in [`ALL`]) with events their watchers have not been
    /// woken for yet.
    wake_types: u32,
    /// Whether the background thread has work it has not been woken for.
    wake_background: bool,
    /// Oldest rv a new watch or continue token may resume from.
    pub compacted: u64,
    /// Bumped by `cut_watches`: open streams whose epoch differs are cut.
    pub cut_epoch: u64,
    /// Set when the server shuts down: every stream and background thread ends.
    pub stopping: bool,
    /// Custom resource types whose CRD is "not installed" (indices into [`ALL`]).
    pub missing: Vec<usize>,
    /// Namespaces waiting for their `default` ServiceAccount, with the time it is due.
    pub pending_default_sa: Vec<(Instant, String)>,
    /// Delay before a new namespace gets its `default` ServiceAccount.
    pub default_sa_delay: Duration,
    /// Interval between BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// How a too-old watch is refused.
    pub expired_watch: ExpiredWatch,
    /// The chart's admission policies, when enabled.
    pub policies: Option<super::admission::Policies>,
    /// The user whose request is being applied (set by the handler for the write's duration).
    pub acting_user: String,
    /// Whether custom resources are checked against their CRD schema (default true); off, the
    /// server stores any object, as a cluster whose CRD has no schema would.
    pub crd_validation: bool,
    /// Simulated per-request latency (zero by default).
    pub latency: Latency,
}

/// Simulated latency of a real kube-apiserver with etcd behind it. Each request sleeps on its own
/// thread, outside the store lock, so concurrent requests overlap as on a real server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// GET and LIST: slept before the state is read.
    pub read: Duration,
    /// POST, PUT, PATCH, DELETE (TokenRequests included): slept before the write is applied,
    /// so its effect becomes visible, and its reply is sent, only after it.
    pub write: Duration,
    /// Watch events: each batch is sent this long after the watcher picked it up.
    pub watch: Duration,
}

impl Latency {
    /// The latency of a request with this Kubernetes verb (zero for a watch request itself).
    pub fn for_verb(&self, verb: &str) -> Duration {
        match verb {
            "get" | "list" => self.read,
            "create" | "update" | "patch" | "delete" | "deletecollection" => self.write,
            _ => Duration::ZERO,
        }
    }
}

/// The store: state plus the condition variables watchers and the background thread wait on.
pub struct Store {
    state: Mutex<State>,
    /// One per resource type (index in [`ALL`]): notified when events of that type are recorded
    /// and on every control change. Waking every watcher on every write cost more than the
    /// writes at scale.
    watchers: [Condvar; ALL.len()],
    /// The background thread's: notified when it has work and on every control change.
    background: Condvar,
}

/// Who a finished write must wake (taken from the state under its lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    types: u32,
    background: bool,
}

/// Preconditions a DELETE may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// The object's uid must be this.
    pub uid: Option<String>,
    /// The object's resourceVersion must be this.
    pub resource_version: Option<String>,
}

/// A page of a list.
#[derive(Debug)]
pub struct Page {
    /// The items, in key order.
    pub items: Vec<Value>,
    /// The list's resourceVersion.
    pub rv: u64,
    /// The token for the next page, if any.
    pub continue_token: Option<String>,
    /// How many matching items follow this page.
    pub remaining: usize,
}

/// How a PATCH body is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
}

fn now_rfc3339() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&f)
        .expect("a UTC timestamp always formats")
}

/// A pseudo-random 64-bit value: distinct per call, unpredictable enough for uids and names.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random value for tokens the emulator hands out.
pub fn random_token() -> u64 {
    random_u64()
}

fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// The 5-character suffix `generateName` gets (the real alphabet avoids vowels and look-alikes).
fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
            r /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The uids an object's `ownerReferences` name.
fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["uid"].as_str().unwrap_or(""))
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or("")
}

fn set_rv(obj: &mut Value, rv: u64) {
    obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether two objects are equal outside `metadata` and `status`: what `generation` tracks.
/// Compared in place; copying both objects per update cost more than the rest of the write.
fn same_spec(a: &Value, b: &Value) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            let tracked = |k: &String| k != "metadata" && k != "status";
            a.keys().filter(|k| tracked(k)).count() == b.keys().filter(|k| tracked(k)).count()
                && a.iter()
                    .filter(|(k, _)| tracked(k))
                    .all(|(k, v)| b.get(k) == Some(v))
        }
        _ => a == b,
    }
}

/// A continue token: the list's rv and the last key returned.
fn encode_continue(rv: u64, key: &ObjKey) -> String {
    use base64::Engine as _;
    let raw = json!({"rv": rv, "ns": key.1, "name": key.2}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    Some((
        v["rv"].as_u64()?,
        v["ns"].as_str()?.to_string(),
        v["name"].as_str()?.to_string(),
    ))
}

impl Default for State {
    fn default() -> State {
        State::new()
    }
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store {
            state: Mutex::new(State::new()),
            watchers: std::array::from_fn(|_| Condvar::new()),
            background: Condvar::new(),
        }
    }

    /// Locks the state. A panic in another thread never poisons the emulator for good.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the locked state, then wakes the watchers of the types it wrote and, if it
    /// gave it work, the background thread. A call that recorded nothing (a control change, a
    /// refused write) wakes everyone, so every waiter re-checks what it waits for.
    pub fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (out, wake) = {
            let mut st = self.lock();
            let out = f(&mut st);
            (out, st.take_wake())
        };
        self.notify(wake);
        out
    }

    /// Wakes the waiters a write asked for (see [`Store::write`]).
    pub fn notify(&self, wake: Wake) {
        let everyone = wake.types == 0 && !wake.background;
        for (i, cv) in self.watchers.iter().enumerate() {
            if everyone || wake.types & (1 << i) != 0 {
                cv.notify_all();
            }
        }
        if everyone || wake.background {
            self.background.notify_all();
        }
    }

    /// Waits (at most `timeout`) for events of resource type `res` or a control change.
    pub fn wait_events<'a>(
        &self,
        res: usize,
        st: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        self.watchers[res]
            .wait_timeout(st, timeout)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// Waits (at most `timeout`) for background work or a control change.
    pub fn wait_background<'a>(
        &self,
        st: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        self.background
            .wait_timeout(st, timeout)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }
}

impl State {
    /// An empty state with the defaults.
    pub fn new() -> State {
        State {
            rv: FIRST_RV,
            objects: BTreeMap::new(),
            uid_keys: HashMap::new(),
            dependents: HashMap::new(),
            gc_pending: BTreeSet::new(),
            gc_examined: 0,
            log: VecDeque::new(),
            history_limit: DEFAULT_HISTORY,
            dropped_through: [0; ALL.len()],
            wake_types: 0,
            wake_background: false,
            compacted: FIRST_RV,
            cut_epoch: 0,
            stopping: false,
            missing: Vec::new(),
            pending_default_sa: Vec::new(),
            default_sa_delay: Duration::from_millis(150),
            bookmark_interval: Duration::from_secs(3),
            expired_watch: ExpiredWatch::InStream,
            policies: None,
            acting_user: String::new(),
            crd_validation: true,
            latency: Latency::default(),
        }
    }

    /// Who must be woken for what happened since the last call.
    pub fn take_wake(&mut self) -> Wake {
        Wake {
            types: std::mem::take(&mut self.wake_types),
            background: std::mem::take(&mut self.wake_background),
        }
    }

    /// Whether this resource type is served (its CRD installed).
    pub fn installed(&self, rt: &ResourceType) -> bool {
        !self.missing.contains(&rt.index())
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(
        &mut self,
        rt: &ResourceType,
        kind: EventKind,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        self.log.push_back(Arc::new(Event {
            rv: self.rv,
            res: rt.index(),
            kind,
            object,
            prev,
        }));
        self.wake_types |= 1 << rt.index();
        self.trim_history(self.history_limit);
    }

    fn trim_history(&mut self, keep: usize) {
        while self.log.len() > keep {
            if let Some(e) = self.log.pop_front() {
                self.dropped_through[e.res] = e.rv;
                self.compacted = self.compacted.max(e.rv);
            }
        }
    }

    /// Drops the whole history and moves the resume point past every rv handed out so far:
    /// the next resume or continue with an older rv gets 410.
    pub fn compact(&mut self) {
        self.trim_history(0);
        let rv = self.next_rv();
        self.compacted = rv;
    }

    /// Sets the history size, trimming at once.
    pub fn set_history_limit(&mut self, n: usize) {
        self.history_limit = n;
        self.trim_history(n);
    }

    /// Stores an object under `key` (replacing what was there) and indexes its uid and owners.
    fn put(&mut self, key: ObjKey, obj: Arc<Value>) {
        if let Some(old) = self.objects.remove(&key) {
            self.unindex(&key, &old);
        }
        let uid = meta_str(&obj, "uid");
        if !uid.is_empty() {
            self.uid_keys.insert(uid.to_string(), key.clone());
        }
        let mut owners = 0;
        let mut owner_alive = false;
        for owner in owner_uids(&obj) {
            owners += 1;
            owner_alive |= self.uid_keys.contains_key(owner);
            self.dependents
                .entry(owner.to_string())
                .or_default()
                .insert(key.clone());
        }
        if owners > 0 && !owner_alive {
            // Written with owners none of which exists: the collector deletes it, as it would
            // have found it on a full sweep.
            self.gc_pending.insert(key.clone());
            self.wake_background = true;
        }
        self.objects.insert(key, obj);
    }

    /// Removes an object and its index entries; its dependents become collection candidates.
    fn take(&mut self, key: &ObjKey) -> Option<Arc<Value>> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        if let Some(deps) = self.dependents.get(meta_str(&old, "uid")) {
            self.gc_pending.extend(deps.iter().cloned());
            self.wake_background = true;
        }
        Some(old)
    }

    fn unindex(&mut self, key: &ObjKey, old: &Value) {
        let uid = meta_str(old, "uid");
        if self.uid_keys.get(uid) == Some(key) {
            self.uid_keys.remove(uid);
        }
        for owner in owner_uids(old) {
            if let Some(deps) = self.dependents.get_mut(owner) {
                deps.remove(key);
                if deps.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
    }

    /// Whether a live object has this uid.
    pub fn uid_exists(&self, uid: &str) -> bool {
        self.uid_keys.contains_key(uid)
    }

    /// Whether the garbage collector has objects to look at.
    pub fn gc_due(&self) -> bool {
        !self.gc_pending.is_empty()
    }

    /// The objects the garbage collector has to look at, in key order; the set starts empty again.
    pub fn take_gc_candidates(&mut self) -> BTreeSet<ObjKey> {
        std::mem::take(&mut self.gc_pending)
    }

    /// The stored object under a key.
    pub fn get_key(&self, key: &ObjKey) -> Option<&Value> {
        self.objects.get(key).map(|o| &**o)
    }

    /// The stored objects of one resource type (in one namespace, if given), in key order.
    pub fn objects_of<'a>(
        &'a self,
        rt: &ResourceType,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> {
        let idx = rt.index();
        let from = (idx, ns.unwrap_or("").to_string(), String::new());
        self.objects
            .range(from..)
            .take_while(move |(k, _)| k.0 == idx && ns.is_none_or(|n| k.1 == n))
            .map(|(k, v)| (k, &**v))
    }

    fn key(rt: &ResourceType, ns: &str, name: &str) -> ObjKey {
        let ns = if rt.namespaced { ns } else { "" };
        (rt.index(), ns.to_string(), name.to_string())
    }

    /// The stored object, if any.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&State::key(rt, ns, name)).map(|o| &**o)
    }

    /// Checks the namespace a namespaced write goes to: it must exist and not be terminating.
    fn check_namespace(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        match self.get(&resources::NAMESPACES, "", ns) {
            None => Err(ApiError::not_found(&resources::NAMESPACES, ns)),
            Some(n) if !n["metadata"]["deletionTimestamp"].is_null() => Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    rt.qualified(),
                    name
                ),
                details: Some(json!({"kind": rt.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]})),
                retry_after: None,
            }),
            Some(_) => Ok(()),
        }
    }

    /// Type-specific validation and defaulting, on create and update.
    fn validate(
        rt: &ResourceType,
        ns: &str,
        obj: &mut Value,
        crd_schema: bool,
    ) -> Result<(), ApiError> {
        validate::metadata(rt, obj)?;
        if std::ptr::eq(rt, &resources::SECRETS) {
            validate::secret(obj)?;
        }
        if std::ptr::eq(rt, &resources::EVENTS) {
            validate::event(obj)?;
        }
        if std::ptr::eq(rt, &resources::EVENTS) || std::ptr::eq(rt, &resources::CORE_EVENTS) {
            validate::event_namespace(rt, ns, obj)?;
        }
        if rt.custom && crd_schema {
            let name = meta_str(obj, "name").to_string();
            super::crd::validate(rt, &name, obj)?;
        }
        Ok(())
    }

    /// Runs the enabled admission policies on a write by the acting user.
    fn admit(&self, rt: &ResourceType, old: Option<&Value>, new: &Value) -> Result<(), ApiError> {
        match &self.policies {
            Some(p) => p.write(&self.acting_user, rt, old, new),
            None => Ok(()),
        }
    }

    /// POST: creates an object.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body must be a JSON object".into(),
            ));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let body_ns = meta_str(&obj, "namespace");
        if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        if meta_str(&obj, "name").is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if !prefix.is_empty() {
                obj["metadata"]["name"] = Value::String(format!("{prefix}{}", name_suffix()));
            }
        }
        // Admission (NamespaceLifecycle) runs before validation, so a missing namespace wins.
        self.check_namespace(rt, ns, meta_str(&obj, "name"))?;
        Self::validate(rt, ns, &mut obj, self.crd_validation)?;
        self.admit(rt, None, &obj)?;
        if !meta_str(&obj, "resourceVersion").is_empty() {
            return Err(ApiError::rv_on_create());
        }
        let name = meta_str(&obj, "name").to_string();
        let key = State::key(rt, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("made an object above");
        for server_owned in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
        ] {
            meta.remove(server_owned);
        }
        meta.insert("uid".into(), Value::String(new_uid()));
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        if rt.namespaced {
            meta.insert("namespace".into(), Value::String(ns.to_string()));
        } else {
            meta.remove("namespace");
        }
        if rt.custom {
            meta.insert("generation".into(), json!(1));
            // The status subresource makes status server-owned: a create cannot set it.
            obj.as_object_mut().expect("an object").remove("status");
        }
        obj["apiVersion"] = Value::String(rt.api_version());
        obj["kind"] = Value::String(rt.kind.to_string());
        if std::ptr::eq(rt, &resources::NAMESPACES) {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let due = Instant::now() + self.default_sa_delay;
            self.pending_default_sa.push((due, name.clone()));
            self.wake_background = true;
        }
        let rv = self.next_rv();
        set_rv(&mut obj, rv);
        let obj = Arc::new(obj);
        self.put(key, obj.clone());
        self.record(rt, EventKind::Added, obj.clone(), None);
        Ok(Arc::unwrap_or_clone(obj))
    }

    /// PUT (`status` false) or PUT to `/status` (`status` true).
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let key = State::key(rt, ns, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body must be a JSON object".into(),
            ));
        }
        let body_name = meta_str(&body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let want_rv = meta_str(&body, "resourceVersion");
        if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(rt, name));
        }
        let mut new = if status {
            let mut n = Value::clone(&old);
            match body.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    n.as_object_mut()
                        .expect("stored objects are objects")
                        .remove("status");
                }
            }
            n
        } else {
            let mut n = body;
            if !n["metadata"].is_object() {
                n["metadata"] = json!({});
            }
            for immutable in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match old["metadata"].get(immutable) {
                    Some(v) => n["metadata"][immutable] = v.clone(),
                    None => {
                        n["metadata"]
                            .as_object_mut()
                            .expect("made an object")
                            .remove(immutable);
                    }
                }
            }
            if rt.custom {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        n.as_object_mut().expect("an object").remove("status");
                    }
                }
            }
            if std::ptr::eq(rt, &resources::NAMESPACES) {
                n["status"] = old["status"].clone();
                n["spec"] = old["spec"].clone();
            }
            n
        };
        new["apiVersion"] = Value::String(rt.api_version());
        new["kind"] = Value::String(rt.kind.to_string());
        Self::validate(rt, ns, &mut new, self.crd_validation)?;
        if !status {
            self.admit(rt, Some(&old), &new)?;
        }
        if std::ptr::eq(rt, &resources::SECRETS) && new["type"] != old["type"] {
            let t = new["type"].as_str().unwrap_or("").to_string();
            return Err(ApiError::invalid_value(
                rt,
                name,
                "type",
                &t,
                "field is immutable",
            ));
        }
        if std::ptr::eq(rt, &resources::SECRETS)
            && old["immutable"] == json!(true)
            && (new["data"] != old["data"] || new["immutable"] != old["immutable"])
        {
            return Err(ApiError::invalid(
                rt,
                name,
                "data",
                "FieldValueForbidden",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
        if !old["metadata"]["deletionTimestamp"].is_null() {
            let before = finalizers(&old);
            let added: Vec<String> = finalizers(&new)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                let quoted: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "metadata.finalizers",
                    "FieldValueForbidden",
                    &format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        quoted.join(", ")
                    ),
                ));
            }
        }
        if rt.custom && !status && !same_spec(&new, &old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        set_rv(
            &mut new,
            old["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .parse()
                .unwrap_or(0),
        );
        if new == *old {
            // kube-apiserver skips a write whose bytes are unchanged: same rv, no event.
            return Ok(Arc::unwrap_or_clone(old));
        }
        let rv = self.next_rv();
        set_rv(&mut new, rv);
        if !new["metadata"]["deletionTimestamp"].is_null() && finalizers(&new).is_empty() {
            let new = Arc::new(new);
            self.take(&key);
            self.record(rt, EventKind::Deleted, new.clone(), Some(old));
            self.after_delete(rt, &new);
            return Ok(Arc::unwrap_or_clone(new));
        }
        let new = Arc::new(new);
        self.put(key, new.clone());
        self.record(rt, EventKind::Modified, new.clone(), Some(old));
        Ok(Arc::unwrap_or_clone(new))
    }

    /// PATCH (`status` true for `/status`).
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchType,
        body: &Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let old = self
            .objects
            .get(&State::key(rt, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let patched = match kind {
            PatchType::Strategic if rt.custom => {
                return Err(ApiError::unsupported_media_type(
                    "application/strategic-merge-patch+json",
                ))
            }
            PatchType::Strategic => {
                if !body.is_object() {
                    return Err(ApiError::bad_request(
                        "json: cannot unmarshal into Go value of type map[string]interface {}"
                            .into(),
                    ));
                }
                let mut p = Value::clone(&old);
                patch::strategic_merge_patch(&mut p, body, rt.plural);
                p
            }
            PatchType::Merge => {
                if !body.is_object() {
                    return Err(ApiError::bad_request(
                        "json: cannot unmarshal into Go value of type map[string]interface {}"
                            .into(),
                    ));
                }
                let mut p = Value::clone(&old);
                patch::merge_patch(&mut p, body);
                p
            }
            PatchType::Json => match patch::json_patch(&old, body) {
                Ok(p) => p,
                Err(PatchError::Malformed(m)) => return Err(ApiError::bad_request(m)),
                Err(PatchError::Apply(m)) => return Err(ApiError::patch_failed(&m)),
            },
        };
        self.update(rt, ns, name, patched, status)
    }

    /// DELETE: removes the object, or marks it for deletion while finalizers remain.
    /// Returns the object's state after the call.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<Value, ApiError> {
        let key = State::key(rt, ns, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(uid) = &pre.uid {
            let actual = meta_str(&old, "uid");
            if uid != actual {
                return Err(ApiError::conflict_because(
                    rt,
                    name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                ));
            }
        }
        if let Some(want) = &pre.resource_version {
            let actual = meta_str(&old, "resourceVersion");
            if want != actual {
                return Err(ApiError::conflict_because(
                    rt,
                    name,
                    &format!("Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {actual}"),
                ));
            }
        }
        let is_ns = std::ptr::eq(rt, &resources::NAMESPACES);
        if !finalizers(&old).is_empty() || is_ns {
            if !old["metadata"]["deletionTimestamp"].is_null() {
                return Ok(Arc::unwrap_or_clone(old));
            }
            let mut new = Value::clone(&old);
            new["metadata"]["deletionTimestamp"] = Value::String(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if is_ns {
                new["status"]["phase"] = json!("Terminating");
            }
            let rv = self.next_rv();
            set_rv(&mut new, rv);
            let new = Arc::new(new);
            self.put(key, new.clone());
            self.record(rt, EventKind::Modified, new.clone(), Some(old));
            if is_ns {
                self.empty_namespace(name);
            }
            return Ok(Arc::unwrap_or_clone(new));
        }
        let mut gone = Value::clone(&old);
        let rv = self.next_rv();
        set_rv(&mut gone, rv);
        self.take(&key);
        let gone = Arc::new(gone);
        self.record(rt, EventKind::Deleted, gone.clone(), Some(old));
        self.after_delete(rt, &gone);
        Ok(Arc::unwrap_or_clone(gone))
    }

    /// A terminating namespace goes away with its last object.
    fn after_delete(&mut self, rt: &ResourceType, gone: &Value) {
        if rt.namespaced {
            let ns = meta_str(gone, "namespace").to_string();
            self.finish_namespace(&ns);
        }
    }

    /// What the namespace controller does: deletes everything in a terminating namespace.
    fn empty_namespace(&mut self, ns: &str) {
        let keys: Vec<ObjKey> = ALL
            .iter()
            .filter(|rt| rt.namespaced)
            .flat_map(|rt| self.objects_of(rt, Some(ns)).map(|(k, _)| k.clone()))
            .collect();
        for (res, ns, name) in keys {
            // Errors cannot happen: the object was just listed and no preconditions are set.
            let _ = self.delete(ALL[res], &ns, &name, &Preconditions::default());
        }
        self.finish_namespace(ns);
    }

    /// Removes a terminating namespace once nothing is left in it.
    pub fn finish_namespace(&mut self, ns: &str) {
        let terminating = self
            .get(&resources::NAMESPACES, "", ns)
            .is_some_and(|n| !n["metadata"]["deletionTimestamp"].is_null());
        // Checked only for a terminating namespace, one seek per type: this runs on every delete.
        let empty = || {
            ALL.iter()
                .filter(|rt| rt.namespaced)
                .all(|rt| self.objects_of(rt, Some(ns)).next().is_none())
        };
        if terminating && empty() {
            let key = State::key(&resources::NAMESPACES, "", ns);
            if let Some(old) = self.take(&key) {
                let mut gone = Value::clone(&old);
                let rv = self.next_rv();
                set_rv(&mut gone, rv);
                self.record(
                    &resources::NAMESPACES,
                    EventKind::Deleted,
                    Arc::new(gone),
                    Some(old),
                );
            }
        }
    }

    /// LIST: matching objects in key order, paged by `limit`/`continue`.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Page, ApiError> {
        let mut after: Option<(String, String)> = None;
        let mut list_rv = self.rv;
        if let Some(t) = continue_token.filter(|t| !t.is_empty()) {
            let (rv, cns, cname) = decode_continue(t).ok_or_else(|| {
                ApiError::bad_request(
                    "continue key is not valid: illegal base64 data at input byte 0".into(),
                )
            })?;
            if rv < self.compacted {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into(),
                ));
            }
            // Simplification: later pages show the current state, not a snapshot at `rv`; the
            // list keeps reporting the first page's rv, as the real server does.
            list_rv = rv;
            after = Some((cns, cname));
        }
        let idx = rt.index();
        // Seek straight past the continue key (or to the namespace): a page costs its own
        // items plus the count of the rest, not a walk over everything listed before it.
        let ns_start = (idx, ns.unwrap_or("").to_string(), String::new());
        let start = match after {
            Some((an, am)) if (an.as_str(), am.as_str()) >= (ns_start.1.as_str(), "") => {
                Bound::Excluded((idx, an, am))
            }
            _ => Bound::Included(ns_start),
        };
        let mut matching = self
            .objects
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.0 == idx && ns.is_none_or(|n| k.1 == n))
            .filter(|(k, v)| fields.matches(&k.2, &k.1) && labels.matches_object(v));
        let cap = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut last_key = None;
        for (k, v) in matching.by_ref() {
            items.push(Value::clone(v));
            if items.len() == cap {
                last_key = Some(k);
                break;
            }
        }
        let remaining = if last_key.is_some() {
            matching.count()
        } else {
            0
        };
        let continue_token = match (remaining, last_key) {
            (r, Some(k)) if r > 0 => Some(encode_continue(list_rv, k)),
            _ => None,
        };
        Ok(Page {
            items,
            rv: list_rv,
            continue_token,
            remaining,
        })
    }

    /// Events with rv strictly after `rv`, oldest first.
    pub fn events_after(&self, rv: u64) -> impl Iterator<Item = &Arc<Event>> {
        let start = self.log.partition_point(|e| e.rv <= rv);
        self.log.range(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{BINDINGS_V1BETA1, NAMESPACES, SECRETS, SERVICE_ACCOUNTS};

    fn with_ns() -> State {
        let mut st = State::new();
        st.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}}))
            .unwrap();
        st
    }

    #[test]
    fn stale_resource_version_is_a_conflict() {
        let mut st = with_ns();
        let sa = st
            .create(
                &SERVICE_ACCOUNTS,
                "ns",
                json!({"metadata": {"name": "default"}}),
            )
            .unwrap();
        let mut first = sa.clone();
        first["imagePullSecrets"] = json!([{"name": "a"}]);
        st.update(&SERVICE_ACCOUNTS, "ns", "default", first, false)
            .unwrap();
        let mut second = sa;
        second["imagePullSecrets"] = json!([{"name": "b"}]);
        let err = st
            .update(&SERVICE_ACCOUNTS, "ns", "default", second, false)
            .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Operation cannot be fulfilled on serviceaccounts \"default\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn every_write_takes_the_next_global_resource_version() {
        let mut st = with_ns();
        let a = st
            .create(&SECRETS, "ns", json!({"metadata": {"name": "a"}}))
            .unwrap();
        let b = st
            .create(&SERVICE_ACCOUNTS, "ns", json!({"metadata": {"name": "b"}}))
            .unwrap();
        let ra: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let rb: u64 = b["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rb, ra + 1);
        assert_eq!(st.rv, rb);
    }

    #[test]
    fn unchanged_update_does_not_bump_the_resource_version() {
        let mut st = with_ns();
        let a = st
            .create(&SECRETS, "ns", json!({"metadata": {"name": "a"}}))
            .unwrap();
        let again = st.update(&SECRETS, "ns", "a", a.clone(), false).unwrap();
        assert_eq!(
            again["metadata"]["resourceVersion"],
            a["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn generation_moves_only_with_the_spec() {
        let mut st = with_ns();
        let b = st
            .create(
                &BINDINGS_V1BETA1,
                "ns",
                json!({"metadata": {"name": "b"}, "spec": {"acrServer": "a.azurecr.io"}, "status": {"error": "e"}}),
            )
            .unwrap();
        assert_eq!(b["metadata"]["generation"], 1);
        assert!(b.get("status").is_none(), "status is dropped on create");
        let mut labelled = b.clone();
        labelled["metadata"]["labels"] = json!({"l": "v"});
        let b = st
            .update(&BINDINGS_V1BETA1, "ns", "b", labelled, false)
            .unwrap();
        assert_eq!(b["metadata"]["generation"], 1);
        let mut respec = b.clone();
        respec["spec"]["acrServer"] = json!("b.azurecr.io");
        let b = st
            .update(&BINDINGS_V1BETA1, "ns", "b", respec, false)
            .unwrap();
        assert_eq!(b["metadata"]["generation"], 2);
    }

    #[test]
    fn finalizers_hold_a_deleted_object_until_they_are_gone() {
        let mut st = with_ns();
        st.create(
            &SECRETS,
            "ns",
            json!({"metadata": {"name": "a", "finalizers": ["f"]}}),
        )
        .unwrap();
        let marked = st
            .delete(&SECRETS, "ns", "a", &Preconditions::default())
            .unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
        let mut more = marked.clone();
        more["metadata"]["finalizers"] = json!(["f", "g"]);
        assert_eq!(
            st.update(&SECRETS, "ns", "a", more, false)
                .unwrap_err()
                .code,
            422
        );
        let mut none = marked;
        none["metadata"]["finalizers"] = json!([]);
        st.update(&SECRETS, "ns", "a", none, false).unwrap();
        assert!(st.get(&SECRETS, "ns", "a").is_none());
        assert_eq!(st.log.back().unwrap().kind, EventKind::Deleted);
    }

    #[test]
    fn pages_across_many_objects_return_each_once_in_order_with_the_right_remaining_count() {
        let mut st = State::new();
        for ns in ["a", "b", "c"] {
            st.create(&NAMESPACES, "", json!({"metadata": {"name": ns}}))
                .unwrap();
        }
        let mut want = Vec::new();
        for i in 0..250 {
            let ns = ["a", "b", "c"][i % 3];
            let name = format!("s-{i:03}");
            let labels = if i % 5 == 0 {
                json!({"pick": "yes"})
            } else {
                json!({})
            };
            st.create(
                &SECRETS,
                ns,
                json!({"metadata": {"name": name, "labels": labels}}),
            )
            .unwrap();
            // Other types around the secrets' range must not leak into it.
            st.create(&SERVICE_ACCOUNTS, ns, json!({"metadata": {"name": name}}))
                .unwrap();
            want.push((ns.to_string(), name, i % 5 == 0));
        }
        want.sort();
        let cases = [
            (None, "", 7),
            (Some("b"), "", 10),
            (None, "pick=yes", 4),
            (Some("c"), "pick!=yes", 9),
        ];
        for (ns, sel, limit) in cases {
            let labels = LabelSelector::parse(sel).unwrap();
            let expected: Vec<(String, String)> = want
                .iter()
                .filter(|(n, _, pick)| {
                    ns.is_none_or(|x| x == n) && (sel.is_empty() || *pick == (sel == "pick=yes"))
                })
                .map(|(n, name, _)| (n.clone(), name.clone()))
                .collect();
            let mut got = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = st
                    .list(
                        &SECRETS,
                        ns,
                        &labels,
                        &FieldSelector::default(),
                        Some(limit),
                        token.as_deref(),
                    )
                    .unwrap();
                assert!(page.items.len() <= limit);
                for o in &page.items {
                    got.push((
                        meta_str(o, "namespace").to_string(),
                        meta_str(o, "name").to_string(),
                    ));
                }
                assert_eq!(
                    page.remaining,
                    expected.len() - got.len(),
                    "remaining after {} items of {ns:?} {sel:?}",
                    got.len()
                );
                match page.continue_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            assert_eq!(got, expected, "{ns:?} {sel:?}");
        }
    }

    #[test]
    fn a_write_wakes_only_the_watchers_of_its_type_and_background_work_wakes_the_collector() {
        let mut st = with_ns();
        let first = st.take_wake();
        assert_eq!(first.types, 1 << NAMESPACES.index());
        assert!(
            first.background,
            "the namespace's default ServiceAccount is due"
        );
        let owner = st
            .create(&SECRETS, "ns", json!({"metadata": {"name": "o"}}))
            .unwrap();
        let wake = st.take_wake();
        assert_eq!(wake.types, 1 << SECRETS.index());
        assert!(!wake.background);
        let refs = json!([{"kind": "Secret", "name": "o", "uid": owner["metadata"]["uid"]}]);
        st.create(
            &SERVICE_ACCOUNTS,
            "ns",
            json!({"metadata": {"name": "d", "ownerReferences": refs}}),
        )
        .unwrap();
        st.delete(&SECRETS, "ns", "o", &Preconditions::default())
            .unwrap();
        let wake = st.take_wake();
        assert_eq!(
            wake.types,
            (1 << SECRETS.index()) | (1 << SERVICE_ACCOUNTS.index())
        );
        assert!(wake.background, "the ServiceAccount lost its owner");
        assert_eq!(
            st.take_wake(),
            Wake {
                types: 0,
                background: false
            }
        );
    }

    #[test]
    fn dropped_history_is_tracked_per_type() {
        let mut st = with_ns();
        st.set_history_limit(2);
        let before = st.rv;
        for n in ["a", "b", "c"] {
            st.create(&SECRETS, "ns", json!({"metadata": {"name": n}}))
                .unwrap();
        }
        assert!(st.dropped_through[SECRETS.index()] > before);
        assert_eq!(st.dropped_through[SERVICE_ACCOUNTS.index()], 0);
        st.compact();
        assert_eq!(st.dropped_through[SECRETS.index()], st.rv - 1);
    }

    #[test]
    fn list_pages_continue_where_they_stopped() {
        let mut st = with_ns();
        for n in ["a", "b", "c"] {
            st.create(&SECRETS, "ns", json!({"metadata": {"name": n}}))
                .unwrap();
        }
        let all = (LabelSelector::default(), FieldSelector::default());
        let p1 = st
            .list(&SECRETS, Some("ns"), &all.0, &all.1, Some(2), None)
            .unwrap();
        assert_eq!(p1.items.len(), 2);
        assert_eq!(p1.remaining, 1);
        let p2 = st
            .list(
                &SECRETS,
                Some("ns"),
                &all.0,
                &all.1,
                Some(2),
                p1.continue_token.as_deref(),
            )
            .unwrap();
        assert_eq!(p2.items[0]["metadata"]["name"], "c");
        assert!(p2.continue_token.is_none());
        st.compact();
        let err = st
            .list(
                &SECRETS,
                Some("ns"),
                &all.0,
                &all.1,
                Some(2),
                p1.continue_token.as_deref(),
            )
            .unwrap_err();
        assert_eq!(err.code, 410);
    }
}

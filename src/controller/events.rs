//! Kubernetes Events about bindings, de-duplicated into series; pure: it returns the writes to make.
//!
//! Like client-go's events broadcaster, the same (binding uid, reason, note, type) seen again within
//! [`RecorderConfig::window`] does not create a new Event: the recorder instead merge-patches the
//! existing Event's `series` (`count`, `lastObservedTime`), at most once per
//! [`RecorderConfig::patch_interval`] so a hot failure cannot flood the API server; the count catches
//! up on the next patch (or on [`EventRecorder::flush`]).
//!
//! The caller executes each [`EventWrite`] with the Kubernetes client
//! (`POST /apis/events.k8s.io/v1/namespaces/<ns>/events`, or `PATCH …/events/<name>` with
//! `application/merge-patch+json`; see [`EventWrite::method`], [`EventWrite::path`],
//! [`EventWrite::content_type`]). A failed write never blocks reconciliation: log it at debug, call
//! [`EventRecorder::forget`] so the next occurrence starts a fresh Event, and move on.
//!
//! Notes are free text chosen by the caller: pass only messages built from typed errors, which never
//! carry tokens, assertions or Secret data.

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use crate::binding::BindingError;
use crate::clock::rfc3339;

use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "acrpull.microsoft.com/controller";

/// Longest `note` the API accepts, in bytes.
const MAX_NOTE: usize = 1024;

/// Longest `reportingInstance`, `action` and `reason`, in characters.
const MAX_SHORT_FIELD: usize = 128;

/// Longest object name; the generated suffix takes 17 of these.
const MAX_NAME: usize = 253;

/// Why an Event is emitted; the CamelCase `reason` and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A fresh pull token was written to the Secret (Normal).
    TokenRefreshed,
    /// Getting a token from IMDS, Entra or ACR failed (Warning).
    TokenRequestFailed,
    /// The target ServiceAccount does not exist (Warning).
    ServiceAccountNotFound,
    /// The registry is not in `--allowed-acr-server-suffixes` (Warning).
    ServerNotAllowed,
    /// The binding's spec cannot be acted on (Warning).
    InvalidSpec,
    /// A Secret with our name exists but is not ours (Warning).
    SecretConflict,
    /// `--identity-policy` does not allow the binding's identity with its registry (Warning).
    PolicyDenied,
}

impl Reason {
    /// The Warning reason for a binding's error: the same as its `Ready` condition's.
    pub fn for_error(e: &BindingError) -> Reason {
        match e {
            BindingError::InvalidSpec(_) | BindingError::MissingAnnotation { .. } => {
                Reason::InvalidSpec
            }
            BindingError::ServerNotAllowed(_) => Reason::ServerNotAllowed,
            BindingError::ServiceAccountNotFound { .. } => Reason::ServiceAccountNotFound,
            BindingError::ServiceAccountUnreadable { .. } | BindingError::TokenRequest { .. } => {
                Reason::TokenRequestFailed
            }
            BindingError::SecretConflict { .. } => Reason::SecretConflict,
            BindingError::PolicyDenied(_) => Reason::PolicyDenied,
        }
    }

    /// The `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TokenRefreshed => "TokenRefreshed",
            Reason::TokenRequestFailed => "TokenRequestFailed",
            Reason::ServiceAccountNotFound => "ServiceAccountNotFound",
            Reason::ServerNotAllowed => "ServerNotAllowed",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::SecretConflict => "SecretConflict",
            Reason::PolicyDenied => "PolicyDenied",
        }
    }

    /// The `type` field: `Normal` for progress, `Warning` for anything a user should look at.
    pub fn event_type(self) -> EventType {
        match self {
            Reason::TokenRefreshed => EventType::Normal,
            _ => EventType::Warning,
        }
    }
}

/// The `type` of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Routine progress.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    /// The `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The binding an Event is about (`regarding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    /// `acrpull.microsoft.com/v1beta2` or `msi-acrpull.microsoft.com/v1beta1`.
    pub api_version: String,
    /// Namespace of the binding (and of the Event).
    pub namespace: String,
    /// Name of the binding.
    pub name: String,
    /// Its uid: the series key, so a recreated binding starts new series.
    pub uid: String,
    /// Its resourceVersion when observed.
    pub resource_version: String,
}

/// A write for the caller to execute against the Kubernetes API.
#[derive(Debug, Clone, PartialEq)]
pub enum EventWrite {
    /// Create a new Event.
    Create {
        /// Namespace of the Event.
        namespace: String,
        /// The generated name (`<binding>.<16 hex>`), also in `body.metadata.name`.
        name: String,
        /// The Event.
        body: Value,
    },
    /// Merge-patch the `series` of an existing Event.
    PatchSeries {
        /// Namespace of the Event.
        namespace: String,
        /// Name of the Event.
        name: String,
        /// `{"series": {"count": n, "lastObservedTime": …}}`.
        body: Value,
    },
}

impl EventWrite {
    /// Namespace of the Event written.
    pub fn namespace(&self) -> &str {
        match self {
            EventWrite::Create { namespace, .. } | EventWrite::PatchSeries { namespace, .. } => {
                namespace
            }
        }
    }

    /// Name of the Event written.
    pub fn name(&self) -> &str {
        match self {
            EventWrite::Create { name, .. } | EventWrite::PatchSeries { name, .. } => name,
        }
    }

    /// The body to send.
    pub fn body(&self) -> &Value {
        match self {
            EventWrite::Create { body, .. } | EventWrite::PatchSeries { body, .. } => body,
        }
    }

    #[cfg(test)]
    /// `POST` or `PATCH`.
    pub fn method(&self) -> &'static str {
        match self {
            EventWrite::Create { .. } => "POST",
            EventWrite::PatchSeries { .. } => "PATCH",
        }
    }

    /// The API path, relative to the server.
    pub fn path(&self) -> String {
        match self {
            EventWrite::Create { namespace, .. } => {
                format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events")
            }
            EventWrite::PatchSeries {
                namespace, name, ..
            } => format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}"),
        }
    }

    #[cfg(test)]
    /// `Content-Type` of the body.
    pub fn content_type(&self) -> &'static str {
        match self {
            EventWrite::Create { .. } => "application/json",
            EventWrite::PatchSeries { .. } => "application/merge-patch+json",
        }
    }
}

/// Recorder tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderConfig {
    /// How long after its last occurrence a repeat still joins the series. Defaults to 10 min.
    pub window: StdDuration,
    /// Least time between two writes of one series. Defaults to 30 s.
    pub patch_interval: StdDuration,
    /// Most series remembered; the least recently seen are forgotten first. Defaults to 4096.
    pub max_series: usize,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            window: StdDuration::from_secs(600),
            patch_interval: StdDuration::from_secs(30),
            max_series: 4096,
        }
    }
}

/// What identifies a series. The note is kept as a hash: 4096 series of 1 kB notes would
/// otherwise hold 4 MB for nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    reason: Reason,
    note_hash: u64,
    kind: EventType,
}

fn note_hash(note: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: stable for the life of the process, which is all the recorder needs.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    note.hash(&mut h);
    h.finish()
}

/// One Event and its repeats.
#[derive(Debug, Clone)]
struct Series {
    namespace: String,
    name: String,
    /// Occurrences so far.
    count: u64,
    /// Count last written to the API server.
    written_count: u64,
    last_seen: OffsetDateTime,
    last_write: OffsetDateTime,
}

/// Turns occurrences into Event writes. Owned by one thread or behind a `Mutex`.
#[derive(Debug)]
pub struct EventRecorder {
    instance: String,
    window: Duration,
    patch_interval: Duration,
    max_series: usize,
    series: HashMap<Key, Series>,
    /// Mixed into generated names so two Events in one nanosecond still differ.
    seq: u64,
}

impl EventRecorder {
    /// A recorder reporting as `instance` (the pod name).
    pub fn new(instance: &str, config: RecorderConfig) -> EventRecorder {
        EventRecorder {
            instance: truncate_chars(instance, MAX_SHORT_FIELD),
            window: to_time(config.window),
            patch_interval: to_time(config.patch_interval),
            max_series: config.max_series.max(1),
            series: HashMap::new(),
            seq: 0,
        }
    }

    /// Records one occurrence at `now`; returns the write to make, if any (none while a series is
    /// inside its patch interval).
    pub fn record(
        &mut self,
        regarding: &Regarding,
        reason: Reason,
        action: &'static str,
        note: &str,
        now: OffsetDateTime,
    ) -> Option<EventWrite> {
        let note = truncate_bytes(note, MAX_NOTE);
        let key = Key {
            uid: regarding.uid.clone(),
            reason,
            note_hash: note_hash(&note),
            kind: reason.event_type(),
        };
        if let Some(s) = self.series.get_mut(&key) {
            if now - s.last_seen < self.window {
                s.count += 1;
                s.last_seen = now;
                return (now - s.last_write >= self.patch_interval).then(|| patch(s, now));
            }
        }
        self.make_room(now);
        let name = self.event_name(&regarding.name, now);
        let body = event_body(regarding, reason, action, &note, &self.instance, &name, now);
        self.series.insert(
            key,
            Series {
                namespace: regarding.namespace.clone(),
                name: name.clone(),
                count: 1,
                written_count: 1,
                last_seen: now,
                last_write: now,
            },
        );
        Some(EventWrite::Create {
            namespace: regarding.namespace.clone(),
            name,
            body,
        })
    }

    /// Patches for series whose count moved since their last write and whose interval has passed;
    /// call it now and then so the count of a burst that stopped is not lost.
    pub fn flush(&mut self, now: OffsetDateTime) -> Vec<EventWrite> {
        let interval = self.patch_interval;
        self.series
            .values_mut()
            .filter(|s| s.count > s.written_count && now - s.last_write >= interval)
            .map(|s| patch(s, now))
            .collect()
    }

    /// Forgets the series of Event `name` in `namespace` (its write failed, or it was deleted), so
    /// the next occurrence creates a new Event.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.series
            .retain(|_, s| !(s.namespace == namespace && s.name == name));
    }

    #[cfg(test)]
    /// Series remembered.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    #[cfg(test)]
    /// Whether no series is remembered.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Drops expired series, then the least recently seen, until one more fits.
    fn make_room(&mut self, now: OffsetDateTime) {
        if self.series.len() < self.max_series {
            return;
        }
        let window = self.window;
        self.series.retain(|_, s| now - s.last_seen < window);
        while self.series.len() >= self.max_series {
            let oldest = self
                .series
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.series.remove(&k),
                None => break,
            };
        }
    }

    /// `<binding>.<16 hex>`, the hex from the time (as client-go does) plus a sequence number.
    fn event_name(&mut self, binding: &str, now: OffsetDateTime) -> String {
        self.seq = self.seq.wrapping_add(1);
        let nanos = now.unix_timestamp_nanos() as u64;
        let prefix = truncate_chars(binding, MAX_NAME - 17);
        // A cut name may end in '.' or '-', which cannot precede the '.' separator.
        let prefix = prefix.trim_end_matches(['.', '-']);
        format!("{prefix}.{:016x}", nanos.wrapping_add(self.seq))
    }
}

/// The series patch for `s`, marking it written.
fn patch(s: &mut Series, now: OffsetDateTime) -> EventWrite {
    s.written_count = s.count;
    s.last_write = now;
    EventWrite::PatchSeries {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        body: json!({
            "series": {
                "count": s.count,
                "lastObservedTime": rfc3339::format_micros(now),
            }
        }),
    }
}

/// A new `events.k8s.io/v1` Event.
fn event_body(
    regarding: &Regarding,
    reason: Reason,
    action: &str,
    note: &str,
    instance: &str,
    name: &str,
    now: OffsetDateTime,
) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": { "name": name, "namespace": regarding.namespace },
        "eventTime": rfc3339::format_micros(now),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance,
        "action": truncate_chars(action, MAX_SHORT_FIELD),
        "reason": reason.as_str(),
        "type": reason.event_type().as_str(),
        "note": note,
        "regarding": {
            "apiVersion": regarding.api_version,
            "kind": "AcrPullBinding",
            "namespace": regarding.namespace,
            "name": regarding.name,
            "uid": regarding.uid,
            "resourceVersion": regarding.resource_version,
        },
    })
}

fn to_time(d: StdDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::MAX)
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// At most `max` bytes, cut at a character boundary.
fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(uid: &str) -> Regarding {
        Regarding {
            api_version: "acrpull.microsoft.com/v1beta2".into(),
            namespace: "team-a".into(),
            name: "pull".into(),
            uid: uid.into(),
            resource_version: "42".into(),
        }
    }

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).expect("valid constant")
    }

    fn recorder() -> EventRecorder {
        EventRecorder::new("acrpull-7d9f-abcde", RecorderConfig::default())
    }

    fn fail(r: &mut EventRecorder, uid: &str, at: i64) -> Option<EventWrite> {
        r.record(
            &binding(uid),
            Reason::TokenRequestFailed,
            "Reconcile",
            "ACR exchange failed: 401",
            t(at),
        )
    }

    #[test]
    fn a_new_event_has_every_required_field() {
        let mut r = recorder();
        let w = fail(&mut r, "u1", 0).expect("first occurrence creates");
        assert_eq!(w.method(), "POST");
        assert_eq!(w.path(), "/apis/events.k8s.io/v1/namespaces/team-a/events");
        assert_eq!(w.content_type(), "application/json");
        let b = w.body();
        assert_eq!(b["apiVersion"], "events.k8s.io/v1");
        assert_eq!(b["kind"], "Event");
        assert_eq!(b["metadata"]["namespace"], "team-a");
        assert_eq!(b["metadata"]["name"], w.name());
        assert_eq!(b["eventTime"], "2027-01-15T08:00:00.000000Z");
        assert_eq!(b["reportingController"], "acrpull.microsoft.com/controller");
        assert_eq!(b["reportingInstance"], "acrpull-7d9f-abcde");
        assert_eq!(b["action"], "Reconcile");
        assert_eq!(b["reason"], "TokenRequestFailed");
        assert_eq!(b["type"], "Warning");
        assert_eq!(b["note"], "ACR exchange failed: 401");
        assert_eq!(b["regarding"]["kind"], "AcrPullBinding");
        assert_eq!(
            b["regarding"]["apiVersion"],
            "acrpull.microsoft.com/v1beta2"
        );
        assert_eq!(b["regarding"]["uid"], "u1");
        assert_eq!(b["regarding"]["resourceVersion"], "42");
        assert!(b.get("series").is_none());
    }

    #[test]
    fn generated_names_are_binding_dot_sixteen_hex_and_unique() {
        let mut r = recorder();
        let a = fail(&mut r, "u1", 0).expect("create");
        let b = fail(&mut r, "u2", 0).expect("create");
        for w in [&a, &b] {
            let (prefix, hex) = w.name().rsplit_once('.').expect("has a dot");
            assert_eq!(prefix, "pull");
            assert_eq!(hex.len(), 16);
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
        }
        assert_ne!(a.name(), b.name());
    }

    #[test]
    fn long_binding_names_are_cut_to_a_valid_event_name() {
        let mut r = recorder();
        let mut reg = binding("u1");
        reg.name = format!("{}-{}", "a".repeat(235), "b".repeat(17));
        let w = r
            .record(&reg, Reason::InvalidSpec, "Reconcile", "x", t(0))
            .expect("create");
        assert!(w.name().len() <= 253, "{}", w.name().len());
        assert!(!w.name().contains("-."));
    }

    #[test]
    fn repeats_within_the_interval_write_nothing_then_patch_the_series_count() {
        let mut r = recorder();
        let created = fail(&mut r, "u1", 0).expect("create");
        assert_eq!(fail(&mut r, "u1", 5), None);
        assert_eq!(fail(&mut r, "u1", 10), None);
        let p = fail(&mut r, "u1", 31).expect("interval passed: patch");
        assert_eq!(p.method(), "PATCH");
        assert_eq!(p.content_type(), "application/merge-patch+json");
        assert_eq!(p.name(), created.name());
        assert_eq!(
            p.path(),
            format!(
                "/apis/events.k8s.io/v1/namespaces/team-a/events/{}",
                created.name()
            )
        );
        assert_eq!(p.body()["series"]["count"], 4);
        assert_eq!(
            p.body()["series"]["lastObservedTime"],
            rfc3339::format_micros(t(31))
        );
        assert_eq!(
            fail(&mut r, "u1", 40),
            None,
            "throttled again after a patch"
        );
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_different_note_reason_or_binding_starts_a_new_event() {
        let mut r = recorder();
        fail(&mut r, "u1", 0).expect("create");
        let other_uid = fail(&mut r, "u2", 1).expect("other binding");
        assert_eq!(other_uid.method(), "POST");
        let other_note = r
            .record(
                &binding("u1"),
                Reason::TokenRequestFailed,
                "Reconcile",
                "timeout",
                t(2),
            )
            .expect("other note");
        assert_eq!(other_note.method(), "POST");
        let other_reason = r
            .record(
                &binding("u1"),
                Reason::TokenRefreshed,
                "Reconcile",
                "ACR exchange failed: 401",
                t(3),
            )
            .expect("other reason");
        assert_eq!(other_reason.body()["type"], "Normal");
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn a_repeat_after_the_window_creates_a_new_event() {
        let mut r = recorder();
        let first = fail(&mut r, "u1", 0).expect("create");
        let again = fail(&mut r, "u1", 601).expect("window passed");
        assert_eq!(again.method(), "POST");
        assert_ne!(again.name(), first.name());
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn flush_writes_counts_a_stopped_burst_left_behind() {
        let mut r = recorder();
        fail(&mut r, "u1", 0).expect("create");
        fail(&mut r, "u2", 0).expect("create");
        assert_eq!(fail(&mut r, "u1", 3), None);
        assert!(r.flush(t(10)).is_empty(), "interval not passed");
        let out = r.flush(t(30));
        assert_eq!(out.len(), 1, "only the series with unwritten repeats");
        assert_eq!(out[0].body()["series"]["count"], 2);
        assert!(r.flush(t(100)).is_empty(), "nothing new since");
    }

    #[test]
    fn forget_makes_the_next_occurrence_create_again() {
        let mut r = recorder();
        let w = fail(&mut r, "u1", 0).expect("create");
        r.forget(w.namespace(), w.name());
        assert!(r.is_empty());
        assert_eq!(fail(&mut r, "u1", 1).map(|w| w.method()), Some("POST"));
    }

    #[test]
    fn series_are_bounded_by_evicting_the_least_recently_seen() {
        let mut r = EventRecorder::new(
            "pod",
            RecorderConfig {
                max_series: 3,
                ..RecorderConfig::default()
            },
        );
        fail(&mut r, "u1", 0).expect("create");
        fail(&mut r, "u2", 1).expect("create");
        fail(&mut r, "u3", 2).expect("create");
        assert_eq!(
            fail(&mut r, "u1", 3),
            None,
            "u1 seen again: now the freshest"
        );
        fail(&mut r, "u4", 4).expect("create");
        assert_eq!(r.len(), 3);
        assert_eq!(fail(&mut r, "u1", 5), None, "u1 kept");
        assert_eq!(
            fail(&mut r, "u2", 6).map(|w| w.method()),
            Some("POST"),
            "u2 was evicted"
        );
    }

    #[test]
    fn notes_are_cut_to_one_kilobyte_on_a_char_boundary() {
        let mut r = recorder();
        let note = "é".repeat(600);
        let w = r
            .record(
                &binding("u1"),
                Reason::InvalidSpec,
                "Reconcile",
                &note,
                t(0),
            )
            .expect("create");
        let n = w.body()["note"].as_str().expect("string");
        assert!(n.len() <= 1024 && n.len() >= 1023);
        assert!(n.chars().all(|c| c == 'é'));
    }
}

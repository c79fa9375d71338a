//! The controller's view of the cluster: compact records of bindings, our Secrets and the
//! ServiceAccounts that matter, fed by the watches, with the indexes reconcile needs.
//!
//! Memory grows with the number of bindings, never with the size of the cluster: Secrets arrive
//! label-selected, and a ServiceAccount is kept only while a binding targets it or it references a
//! pull Secret named like ours.
//!
//! Every change enters through [`Store::fold`], whether a watch saw it or one of our own requests
//! returned it, and comes back as the bindings it concerns, so the caller can queue them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::binding::names::{is_managed_name, BINDING_LABEL};
use crate::binding::{ApiVersion, Binding, V1beta1Defaults, KIND};
use crate::kube::WatchEvent;
use crate::plan::{Observed, SaObs, SecretObs};

/// Identifies one binding: namespace first, so a namespace's bindings are one range of the map.
/// Shared strings, because every binding's key is copied into the work queue, the deadline heap and
/// the retry gates; a copy is then a reference count, not two allocations.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BindingKey {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// Which of the two binding resources.
    pub version: ApiVersion,
}

impl fmt::Display for BindingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = match self.version {
            ApiVersion::V1beta1 => "v1beta1",
            ApiVersion::V1beta2 => "v1beta2",
        };
        write!(f, "{}/{} ({v})", self.namespace, self.name)
    }
}

/// A (namespace, name) pair.
type NsName = (String, String);

/// Which watched resource a relist is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// One of the two binding resources.
    Bindings(ApiVersion),
    /// Our labelled Secrets.
    Secrets,
    /// ServiceAccounts.
    ServiceAccounts,
}

/// What reconcile needs besides the store: whether the target ServiceAccount must be fetched.
pub enum Observation {
    /// Everything needed is known.
    Ready(Box<Observed>),
    /// The target ServiceAccount is neither cached nor known to be absent: GET it first.
    NeedServiceAccount {
        /// Namespace.
        namespace: String,
        /// ServiceAccount name.
        name: String,
    },
}

/// One change to the store.
pub enum Update<'a> {
    /// An event of the watch of `Kind`.
    Watched(Kind, &'a WatchEvent),
    /// An object one of our requests returned (a write's answer, or a GET). A ServiceAccount read
    /// this way is kept even if no binding targets it yet: the binding asking for it does.
    Returned(Kind, &'a Value),
    /// One of our requests found the object gone.
    Gone(Kind, &'a str, &'a str),
    /// A binding that still carries our finalizer left `--label-selector`: the watch reported it
    /// deleted, but its finalizer is still for someone to release.
    LeftSelector(BindingKey),
    /// The finalizer of a binding that left the selector has been dealt with.
    Released(&'a BindingKey),
}

/// The store itself. Not thread-safe; the controller wraps it in a `Mutex`.
#[derive(Default)]
pub struct Store {
    defaults: V1beta1Defaults,
    /// Records are boxed: a B-tree node has room for eleven entries and is often half empty, so
    /// inline half-kilobyte records would waste more than they hold.
    bindings: BTreeMap<BindingKey, Box<Binding>>,
    /// Secrets carrying the binding label (the watch is label-selected).
    secrets: BTreeMap<NsName, Box<SecretObs>>,
    /// Unlabelled Secrets seen through a GET after a create conflicted (foreign, or legacy
    /// msi-acrpull Secrets from before labels existed).
    unlabelled: BTreeMap<NsName, SecretObs>,
    sas: BTreeMap<NsName, SaObs>,
    /// ServiceAccounts a GET found missing; the ServiceAccount watch clears them on creation.
    absent_sas: BTreeSet<NsName>,
    /// Objects seen so far by each multi-page relist in progress; `None` when the store held
    /// nothing of that kind as the relist began (the first list), so nothing can be stale and
    /// the names need not be kept: at start-up that set was tens of thousands of short-lived
    /// allocations interleaved with the records, and it raised the high-water mark for good.
    relists: BTreeMap<Kind, Option<BTreeSet<NsName>>>,
    /// Whether the Secret and ServiceAccount watches have listed at least once.
    secrets_listed: bool,
    sas_listed: bool,
    /// Set when a reconcile gave up waiting for the lists, so no later one waits again.
    sync_given_up: bool,
    /// Bindings that left `--label-selector` with our finalizer on (see [`Update::LeftSelector`]).
    unselected: BTreeSet<BindingKey>,
}

fn ns_name(obj: &Value) -> Option<NsName> {
    let m = obj.get("metadata")?;
    Some((
        m.get("namespace")?.as_str()?.to_string(),
        m.get("name")?.as_str()?.to_string(),
    ))
}

/// Resource versions are opaque, but every API server issues increasing integers; when both parse,
/// an event no newer than what we hold changes nothing. That is how the echo of our own write (whose
/// response the store already holds) is told apart from someone else's change: it must not queue the
/// binding again, or every failing pass would trigger the next one at once.
fn is_not_newer(candidate: &str, current: &str) -> bool {
    match (candidate.parse::<u64>(), current.parse::<u64>()) {
        (Ok(a), Ok(b)) => a <= b,
        _ => candidate == current,
    }
}

impl Store {
    /// An empty store decoding v1beta1 bindings with these defaults.
    pub fn new(defaults: V1beta1Defaults) -> Store {
        Store {
            defaults,
            ..Store::default()
        }
    }

    /// Whether the Secret and ServiceAccount watches have each listed once. Before that the store
    /// cannot tell which ServiceAccounts still reference an old Secret, so a pass could delete a
    /// Secret that is still in use.
    pub fn synced(&self) -> bool {
        (self.secrets_listed && self.sas_listed) || self.sync_given_up
    }

    /// Stops [`Store::synced`] from holding anything up (the lists are taking too long).
    pub fn give_up_sync(&mut self) {
        self.sync_given_up = true;
    }

    #[cfg(test)]
    /// How many bindings are known.
    pub fn binding_count(&self) -> usize {
        self.bindings.len()
    }

    /// All binding keys (for a resync).
    pub fn binding_keys(&self) -> Vec<BindingKey> {
        self.bindings.keys().cloned().collect()
    }

    /// Bindings by state (error in status; token in status; neither) and the earliest token
    /// expiry among them.
    pub fn binding_states(
        &self,
    ) -> (
        crate::ops::metrics::BindingCounts,
        Option<time::OffsetDateTime>,
    ) {
        let mut c = crate::ops::metrics::BindingCounts::default();
        let mut earliest: Option<time::OffsetDateTime> = None;
        for b in self.bindings.values() {
            if b.status.error.as_deref().is_some_and(|e| !e.is_empty()) {
                c.error += 1;
            } else if b.status.token_expiration_time.is_some() {
                c.ready += 1;
            } else {
                c.pending += 1;
            }
            if let Some(t) = b.status.token_expiration_time {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        }
        (c, earliest)
    }

    #[cfg(test)]
    /// A binding, if known.
    pub fn binding(&self, key: &BindingKey) -> Option<&Binding> {
        self.bindings.get(key).map(|b| &**b)
    }

    fn range_ns<'a, V>(
        map: &'a BTreeMap<NsName, V>,
        ns: &'a str,
    ) -> impl Iterator<Item = (&'a NsName, &'a V)> + 'a {
        map.range((ns.to_string(), String::new())..)
            .take_while(move |((n, _), _)| n == ns)
    }

    fn bindings_in<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Binding> + 'a {
        let start = BindingKey {
            namespace: ns.into(),
            name: "".into(),
            version: ApiVersion::V1beta1,
        };
        self.bindings
            .range(start..)
            .take_while(move |(k, _)| &*k.namespace == ns)
            .map(|(_, b)| &**b)
    }

    fn key_of(b: &Binding) -> BindingKey {
        BindingKey {
            namespace: Arc::clone(&b.meta.namespace),
            name: b.meta.name.as_str().into(),
            version: b.version,
        }
    }

    /// Folds one change in; returns the bindings it concerns.
    pub fn fold(&mut self, update: Update<'_>) -> Vec<BindingKey> {
        match update {
            Update::Watched(kind, event) => self.fold_event(kind, event),
            Update::Returned(Kind::Bindings(v), obj) => {
                // A finalizer removal may have been the last word: the object is then gone.
                let meta = &obj["metadata"];
                if meta["deletionTimestamp"].is_string()
                    && meta["finalizers"].as_array().is_none_or(|f| f.is_empty())
                {
                    return self.delete_binding(v, obj).into_iter().collect();
                }
                match self.apply_binding(v, obj) {
                    Ok(k) => k.into_iter().collect(),
                    Err(e) => {
                        log::warn!("cannot decode the AcrPullBinding the server returned: {e}");
                        Vec::new()
                    }
                }
            }
            Update::Returned(Kind::Secrets, obj) => self.apply_secret(obj),
            Update::Returned(Kind::ServiceAccounts, obj) => {
                self.apply_fetched_sa(obj);
                Vec::new()
            }
            Update::Gone(Kind::Bindings(v), ns, name) => {
                let gone = serde_json::json!({"metadata": {"namespace": ns, "name": name}});
                self.delete_binding(v, &gone).into_iter().collect()
            }
            Update::Gone(Kind::Secrets, ns, name) => {
                self.remove_secret(ns, name);
                Vec::new()
            }
            Update::Gone(Kind::ServiceAccounts, ns, name) => {
                self.mark_sa_absent(ns, name);
                Vec::new()
            }
            Update::LeftSelector(key) => {
                self.unselected.insert(key.clone());
                vec![key]
            }
            Update::Released(key) => {
                self.unselected.remove(key);
                Vec::new()
            }
        }
    }

    /// Whether `key` left the label selector and its finalizer still needs releasing.
    pub fn left_selector(&self, key: &BindingKey) -> bool {
        self.unselected.contains(key)
    }

    fn fold_event(&mut self, kind: Kind, event: &WatchEvent) -> Vec<BindingKey> {
        match (kind, event) {
            (Kind::Bindings(v), WatchEvent::Restarted(objs)) => self.restart_bindings(v, objs),
            (Kind::Bindings(v), WatchEvent::Applied(obj)) => match self.apply_binding(v, obj) {
                Ok(k) => {
                    if let Some(k) = &k {
                        self.unselected.remove(k);
                    }
                    k.into_iter().collect()
                }
                Err(e) => {
                    log::warn!("skipping an AcrPullBinding that cannot be decoded: {e}");
                    Vec::new()
                }
            },
            (Kind::Bindings(v), WatchEvent::Deleted(obj)) => {
                self.delete_binding(v, obj).into_iter().collect()
            }
            (_, WatchEvent::Page { first, items }) => self.relist_page(kind, *first, items),
            (_, WatchEvent::ListEnd(items)) => self.relist_end(kind, items),
            (Kind::Secrets, WatchEvent::Restarted(objs)) => self.restart_secrets(objs),
            (Kind::Secrets, WatchEvent::Applied(obj)) => self.apply_secret(obj),
            (Kind::Secrets, WatchEvent::Deleted(obj)) => self.delete_secret(obj),
            (Kind::ServiceAccounts, WatchEvent::Restarted(objs)) => self.restart_sas(objs),
            (Kind::ServiceAccounts, WatchEvent::Applied(obj)) => self.apply_sa(obj),
            (Kind::ServiceAccounts, WatchEvent::Deleted(obj)) => self.delete_sa(obj),
        }
    }

    // ---- bindings ----

    /// Records a binding as the API server returned it. `Ok(None)` when it changes nothing we hold
    /// (an echo of our own write, or a stale event); an error if it cannot be decoded at all.
    fn apply_binding(
        &mut self,
        version: ApiVersion,
        obj: &Value,
    ) -> Result<Option<BindingKey>, crate::binding::DecodeError> {
        let b = Binding::decode(version, obj, &self.defaults)?;
        let key = Self::key_of(&b);
        if let Some(old) = self.bindings.get(&key) {
            if old.meta.uid == b.meta.uid
                && is_not_newer(&b.meta.resource_version, &old.meta.resource_version)
            {
                return Ok(None);
            }
        }
        self.bindings.insert(key.clone(), Box::new(b));
        Ok(Some(key))
    }

    /// Forgets a deleted binding.
    fn delete_binding(&mut self, version: ApiVersion, obj: &Value) -> Option<BindingKey> {
        let (namespace, name) = ns_name(obj)?;
        let key = BindingKey {
            namespace: namespace.into(),
            name: name.into(),
            version,
        };
        self.bindings.remove(&key).map(|_| key)
    }

    /// Replaces every binding of `version` after a relist; returns every key that changed or went.
    fn restart_bindings(&mut self, version: ApiVersion, objs: &[Value]) -> Vec<BindingKey> {
        let old: BTreeSet<BindingKey> = self
            .bindings
            .keys()
            .filter(|k| k.version == version)
            .cloned()
            .collect();
        for k in &old {
            self.bindings.remove(k);
        }
        let mut keys = BTreeSet::new();
        for obj in objs {
            match self.apply_binding(version, obj) {
                Ok(k) => keys.extend(k),
                Err(e) => log::warn!("skipping an AcrPullBinding that cannot be decoded: {e}"),
            }
        }
        // Bindings that vanished while we were disconnected need no work (their finalizer kept
        // them until we cleaned up, or they never had one); queue them anyway so the queue forgets them.
        keys.extend(old);
        keys.into_iter().collect()
    }

    // ---- Secrets ----

    /// The bindings a Secret may belong to: its controller owner, and bindings in its namespace
    /// whose label value matches its label.
    fn secret_owners(&self, ns: &str, s: &SecretObs) -> Vec<BindingKey> {
        let mut keys = BTreeSet::new();
        for r in s
            .owner_refs
            .iter()
            .filter(|r| r.controller && r.kind == KIND)
        {
            let version = match r.api_version.split('/').next() {
                Some("acrpull.microsoft.com") => ApiVersion::V1beta2,
                Some("msi-acrpull.microsoft.com") => ApiVersion::V1beta1,
                _ => continue,
            };
            keys.insert(BindingKey {
                namespace: ns.into(),
                name: r.name.as_str().into(),
                version,
            });
        }
        if let Some(label) = s.labels.get(BINDING_LABEL) {
            for b in self.bindings_in(ns) {
                if b.label_value() == label || b.secret_name() == s.name {
                    keys.insert(Self::key_of(b));
                }
            }
        }
        keys.into_iter().collect()
    }

    /// Records a labelled Secret.
    fn apply_secret(&mut self, obj: &Value) -> Vec<BindingKey> {
        let (Some(id), Some(s)) = (ns_name(obj), SecretObs::from_object(obj)) else {
            return Vec::new();
        };
        if let Some(old) = self
            .secrets
            .get(&id)
            .map(|s| &**s)
            .or_else(|| self.unlabelled.get(&id))
        {
            if old.uid == s.uid && is_not_newer(&s.resource_version, &old.resource_version) {
                return Vec::new();
            }
        }
        let keys = self.secret_owners(&id.0, &s);
        self.unlabelled.remove(&id);
        if s.labels.contains_key(BINDING_LABEL) {
            self.secrets.insert(id, Box::new(s));
        } else {
            self.secrets.remove(&id);
            self.unlabelled.insert(id, s);
        }
        keys
    }

    /// Forgets a deleted Secret.
    fn delete_secret(&mut self, obj: &Value) -> Vec<BindingKey> {
        let Some(id) = ns_name(obj) else {
            return Vec::new();
        };
        self.unlabelled.remove(&id);
        match self.secrets.remove(&id) {
            Some(s) => self.secret_owners(&id.0, &s),
            None => SecretObs::from_object(obj)
                .map(|s| self.secret_owners(&id.0, &s))
                .unwrap_or_default(),
        }
    }

    /// Forgets a Secret by name (our own delete succeeded or found it gone).
    fn remove_secret(&mut self, ns: &str, name: &str) {
        let id = (ns.to_string(), name.to_string());
        self.secrets.remove(&id);
        self.unlabelled.remove(&id);
    }

    /// Replaces every labelled Secret after a relist.
    fn restart_secrets(&mut self, objs: &[Value]) -> Vec<BindingKey> {
        self.secrets_listed = true;
        let mut keys: BTreeSet<BindingKey> = BTreeSet::new();
        let old = std::mem::take(&mut self.secrets);
        for ((ns, _), s) in &old {
            keys.extend(self.secret_owners(ns, s));
        }
        for obj in objs {
            keys.extend(self.apply_secret(obj));
        }
        keys.into_iter().collect()
    }

    // ---- ServiceAccounts ----

    /// The bindings a ServiceAccount change may give work: those that target it but are missing
    /// from its pull secrets (a reference to restore, or an SA that just appeared), and those that
    /// do not target it but are referenced by it (a reference to remove). A binding already
    /// attached to its target has nothing to do about the change, so a busy shared ServiceAccount
    /// does not wake every binding of its namespace.
    fn sa_concerns(&self, ns: &str, sa: &SaObs) -> Vec<BindingKey> {
        let names: std::collections::HashSet<&str> =
            sa.image_pull_secrets.iter().map(String::as_str).collect();
        let referenced_labels: std::collections::HashSet<&str> = sa
            .image_pull_secrets
            .iter()
            .filter_map(|n| self.secrets.get(&(ns.to_string(), n.clone())))
            .filter_map(|s| s.labels.get(BINDING_LABEL))
            .collect();
        self.bindings_in(ns)
            .filter(|b| {
                let expected = b.secret_name();
                if b.target_service_account.as_deref() == Some(sa.name.as_str()) {
                    !names.contains(expected.as_str())
                } else {
                    names.contains(expected.as_str())
                        || referenced_labels.contains(b.label_value().as_str())
                }
            })
            .map(Self::key_of)
            .collect()
    }

    fn sa_is_relevant(sa: &SaObs, concerns: &[BindingKey]) -> bool {
        !concerns.is_empty() || sa.image_pull_secrets.iter().any(|n| is_managed_name(n))
    }

    /// Records a ServiceAccount if it matters to a binding; drops it otherwise.
    fn apply_sa(&mut self, obj: &Value) -> Vec<BindingKey> {
        let (Some(id), Some(sa)) = (ns_name(obj), SaObs::from_object(obj)) else {
            return Vec::new();
        };
        self.absent_sas.remove(&id);
        if let Some(old) = self.sas.get(&id) {
            if is_not_newer(&sa.resource_version, &old.resource_version) {
                return Vec::new();
            }
        }
        let concerns = self.sa_concerns(&id.0, &sa);
        if Self::sa_is_relevant(&sa, &concerns) {
            self.sas.insert(id, sa);
        } else {
            self.sas.remove(&id);
        }
        concerns
    }

    /// Records a ServiceAccount read with a GET for a binding that targets it.
    fn apply_fetched_sa(&mut self, obj: &Value) {
        if let (Some(id), Some(sa)) = (ns_name(obj), SaObs::from_object(obj)) {
            self.absent_sas.remove(&id);
            self.sas.insert(id, sa);
        }
    }

    /// Records that a GET found no such ServiceAccount.
    fn mark_sa_absent(&mut self, ns: &str, name: &str) {
        let id = (ns.to_string(), name.to_string());
        self.sas.remove(&id);
        self.absent_sas.insert(id);
    }

    /// Forgets a deleted ServiceAccount.
    fn delete_sa(&mut self, obj: &Value) -> Vec<BindingKey> {
        let Some(id) = ns_name(obj) else {
            return Vec::new();
        };
        self.sas.remove(&id);
        self.absent_sas.insert(id.clone());
        let sa = SaObs {
            name: id.1.clone(),
            resource_version: String::new(),
            image_pull_secrets: Vec::new(),
        };
        self.sa_concerns(&id.0, &sa)
    }

    /// Replaces every kept ServiceAccount after a relist.
    fn restart_sas(&mut self, objs: &[Value]) -> Vec<BindingKey> {
        self.sas_listed = true;
        let mut keys: BTreeSet<BindingKey> = BTreeSet::new();
        let old = std::mem::take(&mut self.sas);
        self.absent_sas.clear();
        for ((ns, _), sa) in &old {
            keys.extend(self.sa_concerns(ns, sa));
        }
        for obj in objs {
            keys.extend(self.apply_sa(obj));
        }
        keys.into_iter().collect()
    }

    // ---- multi-page relists ----

    fn apply_kind(&mut self, kind: Kind, obj: &Value) -> Vec<BindingKey> {
        match kind {
            Kind::Bindings(v) => match self.apply_binding(v, obj) {
                Ok(k) => k.into_iter().collect(),
                Err(e) => {
                    log::warn!("skipping an AcrPullBinding that cannot be decoded: {e}");
                    Vec::new()
                }
            },
            Kind::Secrets => self.apply_secret(obj),
            Kind::ServiceAccounts => self.apply_sa(obj),
        }
    }

    /// Folds one page of a multi-page relist (`first` starts it); returns the bindings to queue.
    fn relist_page(&mut self, kind: Kind, first: bool, objs: &[Value]) -> Vec<BindingKey> {
        if first {
            let held = self.holds_any(kind);
            self.relists.insert(kind, held.then(BTreeSet::new));
        }
        let mut keys = Vec::new();
        for obj in objs {
            let seen = self
                .relists
                .entry(kind)
                .or_insert_with(|| Some(BTreeSet::new()));
            if let (Some(seen), Some(id)) = (seen, ns_name(obj)) {
                seen.insert(id);
            }
            keys.extend(self.apply_kind(kind, obj));
        }
        keys
    }

    /// Whether the store holds any object of `kind`.
    fn holds_any(&self, kind: Kind) -> bool {
        match kind {
            Kind::Bindings(v) => self.bindings.keys().any(|k| k.version == v),
            Kind::Secrets => !self.secrets.is_empty(),
            Kind::ServiceAccounts => !self.sas.is_empty(),
        }
    }

    /// Folds the last page of a multi-page relist and forgets every object of `kind` that none
    /// of its pages held (deleted while we were disconnected).
    fn relist_end(&mut self, kind: Kind, objs: &[Value]) -> Vec<BindingKey> {
        let mut keys = self.relist_page(kind, false, objs);
        let seen = self
            .relists
            .remove(&kind)
            .unwrap_or_else(|| Some(BTreeSet::new()));
        let gone = |id: &NsName| seen.as_ref().is_some_and(|s| !s.contains(id));
        match kind {
            Kind::Bindings(v) => {
                let stale: Vec<BindingKey> = self
                    .bindings
                    .keys()
                    .filter(|k| {
                        k.version == v && gone(&(k.namespace.to_string(), k.name.to_string()))
                    })
                    .cloned()
                    .collect();
                for k in &stale {
                    self.bindings.remove(k);
                }
                keys.extend(stale);
            }
            Kind::Secrets => {
                let stale: Vec<NsName> =
                    self.secrets.keys().filter(|id| gone(id)).cloned().collect();
                for id in stale {
                    if let Some(sec) = self.secrets.remove(&id) {
                        keys.extend(self.secret_owners(&id.0, &sec));
                    }
                }
                self.secrets_listed = true;
            }
            Kind::ServiceAccounts => {
                let stale: Vec<NsName> = self.sas.keys().filter(|id| gone(id)).cloned().collect();
                for id in stale {
                    if let Some(sa) = self.sas.remove(&id) {
                        keys.extend(self.sa_concerns(&id.0, &sa));
                    }
                }
                self.absent_sas.clear();
                self.sas_listed = true;
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    // ---- observation ----

    /// Everything the planner needs about `key`, or `None` if the binding is gone.
    pub fn observe(&self, key: &BindingKey) -> Option<Observation> {
        let b = self.bindings.get(key)?;
        let ns: &str = &b.meta.namespace;
        let label = b.label_value();
        let expected = b.secret_name();
        let mut secrets: Vec<SecretObs> = Self::range_ns(&self.secrets, ns)
            .filter(|(_, s)| {
                s.labels.get(BINDING_LABEL) == Some(label.as_str()) || s.name == expected
            })
            .map(|(_, s)| (**s).clone())
            .collect();
        if let Some(s) = self.unlabelled.get(&(ns.to_string(), expected.clone())) {
            secrets.push(s.clone());
        }
        let target_sa = match &b.target_service_account {
            None => None,
            Some(name) => {
                let id = (ns.to_string(), name.to_string());
                match self.sas.get(&id) {
                    Some(sa) => Some(sa.clone()),
                    None if self.absent_sas.contains(&id) => None,
                    None => {
                        return Some(Observation::NeedServiceAccount {
                            namespace: ns.to_string(),
                            name: name.to_string(),
                        })
                    }
                }
            }
        };
        let mut ours: BTreeSet<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
        ours.insert(expected.as_str());
        let other_sas = Self::range_ns(&self.sas, ns)
            .filter(|((_, n), _)| Some(n.as_str()) != b.target_service_account.as_deref())
            .filter(|(_, sa)| {
                sa.image_pull_secrets
                    .iter()
                    .any(|p| ours.contains(p.as_str()))
            })
            .map(|(_, sa)| sa.clone())
            .collect();
        Some(Observation::Ready(Box::new(Observed {
            binding: (**b).clone(),
            secrets,
            target_sa,
            other_sas,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binding(ns: &str, name: &str, sa: &str, rv: &str) -> Value {
        json!({
            "apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding",
            "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}"), "resourceVersion": rv},
            "spec": {"acr": {"server": "r.azurecr.io", "scope": "repository:a:pull", "environment": "PublicCloud"},
                     "auth": {"managedIdentity": {"clientID": "c"}}, "serviceAccountName": sa}
        })
    }

    fn sa(ns: &str, name: &str, pulls: &[&str], rv: &str) -> Value {
        let pulls: Vec<Value> = pulls.iter().map(|p| json!({"name": p})).collect();
        json!({"metadata": {"namespace": ns, "name": name, "resourceVersion": rv}, "imagePullSecrets": pulls})
    }

    fn secret(ns: &str, name: &str, label: Option<&str>, owner: &str, rv: &str) -> Value {
        let mut labels = serde_json::Map::new();
        if let Some(l) = label {
            labels.insert(BINDING_LABEL.into(), l.into());
        }
        json!({"metadata": {"namespace": ns, "name": name, "uid": format!("s-{name}"), "resourceVersion": rv,
            "labels": labels,
            "ownerReferences": [{"apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding",
                                  "name": owner, "uid": format!("uid-{owner}"), "controller": true}]},
            "type": "kubernetes.io/dockerconfigjson"})
    }

    fn ready(o: Option<Observation>) -> Observed {
        match o {
            Some(Observation::Ready(o)) => *o,
            Some(Observation::NeedServiceAccount { name, .. }) => panic!("needs SA {name}"),
            None => panic!("binding gone"),
        }
    }

    fn key(ns: &str, name: &str) -> BindingKey {
        BindingKey {
            namespace: ns.into(),
            name: name.into(),
            version: ApiVersion::V1beta2,
        }
    }

    #[test]
    fn unrelated_service_accounts_are_not_kept() {
        let mut s = Store::default();
        assert!(s
            .apply_sa(&sa("ns", "builder", &["registry-creds"], "1"))
            .is_empty());
        assert!(s.sas.is_empty());
    }

    #[test]
    fn targeted_service_account_is_kept_and_queues_its_binding() {
        let mut s = Store::default();
        s.apply_binding(ApiVersion::V1beta2, &binding("ns", "b", "puller", "1"))
            .unwrap();
        let keys = s.apply_sa(&sa("ns", "puller", &[], "2"));
        assert_eq!(keys, vec![key("ns", "b")]);
        assert_eq!(
            ready(s.observe(&key("ns", "b"))).target_sa.unwrap().name,
            "puller"
        );
    }

    #[test]
    fn an_attached_binding_is_not_woken_by_changes_to_its_service_account() {
        let mut s = Store::default();
        s.apply_binding(ApiVersion::V1beta2, &binding("ns", "b", "puller", "1"))
            .unwrap();
        s.apply_binding(ApiVersion::V1beta2, &binding("ns", "c", "puller", "1"))
            .unwrap();
        // b is attached, c is not yet: only c has something to do.
        let keys = s.apply_sa(&sa("ns", "puller", &["acr-pull-b", "other"], "2"));
        assert_eq!(keys, vec![key("ns", "c")]);
        // A ServiceAccount b does not target, holding b's Secret: b must clean it up.
        let keys = s.apply_sa(&sa("ns", "old", &["acr-pull-b"], "3"));
        assert_eq!(keys, vec![key("ns", "b")]);
    }

    #[test]
    fn unknown_target_asks_for_a_get_and_absent_target_does_not() {
        let mut s = Store::default();
        s.apply_binding(ApiVersion::V1beta2, &binding("ns", "b", "puller", "1"))
            .unwrap();
        assert!(matches!(
            s.observe(&key("ns", "b")),
            Some(Observation::NeedServiceAccount { .. })
        ));
        s.mark_sa_absent("ns", "puller");
        assert!(ready(s.observe(&key("ns", "b"))).target_sa.is_none());
    }

    #[test]
    fn secret_event_queues_its_owner() {
        let mut s = Store::default();
        s.apply_binding(ApiVersion::V1beta2, &binding("ns", "b", "default", "1"))
            .unwrap();
        let keys = s.apply_secret(&secret("ns", "acr-pull-b", Some("b"), "b", "3"));
        assert_eq!(keys, vec![key("ns", "b")]);
        let o = ready({
            s.mark_sa_absent("ns", "default");
            s.observe(&key("ns", "b"))
        });
        assert_eq!(o.secrets.len(), 1);
    }

    #[test]
    fn older_watch_event_does_not_replace_a_newer_write() {
        let mut s = Store::default();
        s.apply_secret(&secret("ns", "acr-pull-b", Some("b"), "b", "9"));
        s.apply_secret(&secret("ns", "acr-pull-b", Some("b"), "b", "5"));
        let kept = s
            .secrets
            .get(&("ns".to_string(), "acr-pull-b".to_string()))
            .unwrap();
        assert_eq!(kept.resource_version, "9");
    }

    #[test]
    fn echo_of_our_own_write_queues_nothing() {
        let mut s = Store::default();
        let k = s
            .apply_binding(ApiVersion::V1beta2, &binding("ns", "b", "default", "4"))
            .unwrap();
        assert_eq!(k, Some(key("ns", "b")));
        let echo = s
            .apply_binding(ApiVersion::V1beta2, &binding("ns", "b", "default", "4"))
            .unwrap();
        assert_eq!(echo, None);
        s.apply_secret(&secret("ns", "acr-pull-b", Some("b"), "b", "7"));
        assert!(s
            .apply_secret(&secret("ns", "acr-pull-b", Some("b"), "b", "7"))
            .is_empty());
        let newer = s
            .apply_binding(ApiVersion::V1beta2, &binding("ns", "b", "default", "9"))
            .unwrap();
        assert_eq!(newer, Some(key("ns", "b")));
    }

    #[test]
    fn relist_drops_secrets_deleted_while_disconnected() {
        let mut s = Store::default();
        s.apply_binding(ApiVersion::V1beta2, &binding("ns", "b", "default", "1"))
            .unwrap();
        s.apply_secret(&secret("ns", "acr-pull-b", Some("b"), "b", "3"));
        let keys = s.restart_secrets(&[]);
        assert_eq!(keys, vec![key("ns", "b")]);
        assert!(s.secrets.is_empty());
    }

    #[test]
    fn old_service_account_referencing_our_secret_is_observed() {
        let mut s = Store::default();
        s.apply_binding(ApiVersion::V1beta2, &binding("ns", "b", "new", "1"))
            .unwrap();
        s.apply_sa(&sa("ns", "old", &["acr-pull-b", "other"], "2"));
        s.apply_sa(&sa("ns", "new", &[], "3"));
        let o = ready(s.observe(&key("ns", "b")));
        assert_eq!(o.other_sas.len(), 1);
        assert_eq!(o.other_sas[0].name, "old");
    }

    #[test]
    fn bindings_of_other_namespaces_are_not_observed() {
        let mut s = Store::default();
        s.apply_binding(ApiVersion::V1beta2, &binding("a", "b", "default", "1"))
            .unwrap();
        s.apply_binding(ApiVersion::V1beta2, &binding("b", "b", "default", "1"))
            .unwrap();
        s.apply_secret(&secret("b", "acr-pull-b", Some("b"), "b", "3"));
        s.mark_sa_absent("a", "default");
        assert!(ready(s.observe(&key("a", "b"))).secrets.is_empty());
    }

    #[test]
    fn a_multi_page_relist_forgets_only_what_no_page_held() {
        let mut s = Store::default();
        s.apply_binding(ApiVersion::V1beta2, &binding("ns", "kept", "default", "1"))
            .unwrap();
        s.apply_binding(ApiVersion::V1beta2, &binding("ns", "gone", "default", "1"))
            .unwrap();
        let kind = Kind::Bindings(ApiVersion::V1beta2);
        s.relist_page(kind, true, &[binding("ns", "kept", "default", "1")]);
        assert_eq!(
            s.binding_count(),
            2,
            "nothing disappears before the list ends"
        );
        let keys = s.relist_end(kind, &[binding("ns", "new", "default", "2")]);
        assert_eq!(keys, vec![key("ns", "gone"), key("ns", "new")]);
        assert_eq!(s.binding_count(), 2);
        assert!(s.binding(&key("ns", "gone")).is_none());
    }

    #[test]
    fn a_first_list_keeps_no_names_and_still_folds_every_page() {
        let mut s = Store::default();
        let kind = Kind::Bindings(ApiVersion::V1beta2);
        let first = s.relist_page(kind, true, &[binding("ns", "a", "default", "1")]);
        assert_eq!(first, vec![key("ns", "a")]);
        assert_eq!(
            s.relists.get(&kind),
            Some(&None),
            "nothing held, nothing to prune"
        );
        let last = s.relist_end(kind, &[binding("ns", "b", "default", "1")]);
        assert_eq!(last, vec![key("ns", "b")]);
        assert_eq!(s.binding_count(), 2);
        // The next relist starts from a full store, so it tracks names and prunes again.
        s.relist_page(kind, true, &[binding("ns", "a", "default", "1")]);
        assert!(matches!(s.relists.get(&kind), Some(Some(_))));
        s.relist_end(kind, &[]);
        assert!(s.binding(&key("ns", "b")).is_none());
    }

    #[test]
    fn unrelated_service_accounts_of_a_paged_list_are_never_kept() {
        let mut s = Store::default();
        for page in 0..3 {
            let objs: Vec<Value> = (0..100)
                .map(|i| sa("ns", &format!("sa-{page}-{i}"), &[], "1"))
                .collect();
            s.relist_page(Kind::ServiceAccounts, page == 0, &objs);
        }
        s.relist_end(Kind::ServiceAccounts, &[]);
        assert!(s.sas.is_empty());
        assert!(s.synced() || !s.secrets_listed);
    }

    #[test]
    fn the_store_is_synced_once_secrets_and_service_accounts_have_listed() {
        let mut s = Store::default();
        assert!(!s.synced());
        s.restart_secrets(&[]);
        assert!(!s.synced());
        s.restart_sas(&[]);
        assert!(s.synced());
        let mut t = Store::default();
        t.give_up_sync();
        assert!(t.synced());
    }
}

//! An emulated Kubernetes API server (HTTPS on loopback) with real list/watch, write and RBAC
//! semantics, plus in-process controls for tests: direct object access, faults, the request log.
//!
//! Real kube-apiserver behaviour is the spec; `tests/conformance.rs` checks the emulator against
//! a real cluster when `ACRPULL_CONFORMANCE_KUBECONFIG` is set. Known simplifications:
//! - later `continue` pages show the current state, not a snapshot at the first page's rv;
//! - list `resourceVersion`/`resourceVersionMatch` are ignored (always the latest state), and a
//!   watch from an rv newer than the store's is accepted instead of waiting;
//! - strategic merge patch knows only `metadata.finalizers` (in apimachinery's order),
//!   `metadata.ownerReferences` and a ServiceAccount's `secrets` (both appended, not reordered);
//!   server-side apply answers 415; `dryRun` and `fieldManager` are ignored;
//! - deleting a namespace deletes its content at once (finalizers still hold objects) and the
//!   namespace goes with its last object; garbage collection is background-only;
//! - core/v1 and `events.k8s.io/v1` Events are stored apart; core/v1 Events get only the
//!   namespace rule of their validation; no admission plugins besides the opt-in chart policies
//!   (no OwnerReferencesPermissionEnforcement);
//! - requests answer at once unless [`ApiServer::set_latency`] sets a simulated latency.

mod admission;
mod auth;
mod crd;
mod discovery;
mod faults;
mod gc;
mod handler;
mod patch;
mod resources;
mod selector;
mod status;
mod store;
mod token;
mod validate;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

pub use admission::Policies;
pub use auth::{RbacError, Rule};
pub use faults::{Fault, LoggedRequest, Matcher};
pub use patch::{json_patch, merge_patch};
pub use resources::ResourceType;
pub use selector::{FieldSelector, LabelSelector};
pub use status::ApiError;
pub use store::{ExpiredWatch, Latency, Preconditions};
pub use token::{TokenRecord, ISSUER as TOKEN_ISSUER};

use handler::{lock, Api, Inner};
use store::Store;

/// Resource name of `acrpull.microsoft.com/v1beta2` bindings, for the accessors.
pub const BINDINGS_V1BETA2: &str = "acrpullbindings.acrpull.microsoft.com";
/// Resource name of `msi-acrpull.microsoft.com/v1beta1` bindings, for the accessors.
pub const BINDINGS_V1BETA1: &str = "acrpullbindings.msi-acrpull.microsoft.com";
/// Resource name of Leases, for the accessors.
pub const LEASES: &str = "leases.coordination.k8s.io";
/// Resource name of `events.k8s.io/v1` Events, for the accessors.
pub const EVENTS: &str = "events.events.k8s.io";
/// Resource name of core/v1 Events, for the accessors.
pub const CORE_EVENTS: &str = "events";
/// The user the kubeconfig's token authenticates as; allowed everything.
pub const ADMIN_USER: &str = "kubernetes-admin";

/// A running emulated API server. Dropping it ends every watch, stops its threads and removes
/// its temporary directory.
pub struct ApiServer {
    inner: Arc<Inner>,
    ca: crate::tls::Ca,
    dir: PathBuf,
    kubeconfig: PathBuf,
    admin_token: String,
    gc: Option<JoinHandle<()>>,
    server: Option<crate::http::Server>,
}

/// Why the emulator could not start.
#[derive(Debug)]
pub enum StartError {
    /// Binding the listener, writing the kubeconfig or spawning a thread failed.
    Io(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(e) => write!(f, "cannot start the emulated api server: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Io(e) => Some(e),
        }
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> StartError {
        StartError::Io(e)
    }
}

fn resource(name: &str) -> Result<&'static ResourceType, ApiError> {
    resources::lookup(name).ok_or_else(ApiError::no_route)
}

impl ApiServer {
    /// Starts an emulator; panics if the loopback listener cannot be opened (tests cannot run then).
    pub fn start() -> ApiServer {
        ApiServer::try_start().expect("the emulated api server starts on loopback")
    }

    /// Starts an emulator.
    pub fn try_start() -> Result<ApiServer, StartError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let ca = crate::tls::Ca::new();
        let store = Arc::new(Store::new());
        let admin_token = format!("kit-admin-{:016x}", store::random_token());
        let mut authz = auth::Authz::default();
        authz.add_user(&admin_token, ADMIN_USER);
        authz.add_admin(ADMIN_USER);
        let inner = Arc::new(Inner {
            store: store.clone(),
            authz: Mutex::new(authz),
            faults: Mutex::default(),
            log: Mutex::default(),
            tokens: Mutex::default(),
            signer: crate::jwt::Signer::kit(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        });
        let config = ca.server_config(&["localhost", "127.0.0.1", "kubernetes.default.svc"]);
        let server = crate::http::serve_https(Arc::new(Api(inner.clone())), config)?;
        let dir = std::env::temp_dir().join(format!(
            "acrpull-kit-kube-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        crate::tls::write_kubeconfig(&kubeconfig, &server.url(), ca.pem(), &admin_token)?;
        ca.write_pem(&dir)?;
        let gc = gc::spawn(store)?;
        let api = ApiServer {
            inner,
            ca,
            dir,
            kubeconfig,
            admin_token,
            gc: Some(gc),
            server: Some(server),
        };
        Ok(api)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.as_ref().map(|s| s.url()).unwrap_or_default()
    }

    /// The CA certificate (PEM) the server's certificate chains to.
    pub fn ca_pem(&self) -> &str {
        self.ca.pem()
    }

    /// The CA certificate written to a file (`<tmp>/ca.crt`).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A kubeconfig for the admin user.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The admin bearer token (also in the kubeconfig).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The temporary directory this server owns (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `Handler` itself, for in-process requests without a socket.
    pub fn handler(&self) -> Arc<dyn crate::http::Handler> {
        Arc::new(Api(self.inner.clone()))
    }

    // ---- direct object access (no auth, no faults, not logged) ----

    /// The stored object (`res` is `secrets`, `serviceaccounts`, `namespaces`, or a
    /// `plural.group` such as [`BINDINGS_V1BETA2`]); `ns` is ignored for cluster-scoped types.
    pub fn get(&self, res: &str, ns: &str, name: &str) -> Option<Value> {
        let rt = resources::lookup(res)?;
        self.inner.store.lock().get(rt, ns, name).cloned()
    }

    /// Runs `f` on the stored object in place, without copying it: for callers that poll many
    /// objects (the benchmark reads every binding each second), where copies would dominate.
    /// `None` if the object does not exist.
    pub fn inspect<T>(
        &self,
        res: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&Value) -> T,
    ) -> Option<T> {
        let rt = resources::lookup(res)?;
        self.inner.store.lock().get(rt, ns, name).map(f)
    }

    /// Runs `f` on every stored object of a type (its namespace, name and the object), in key
    /// order, under one lock and without copies: a poll over many objects walks the store once
    /// instead of looking each one up.
    /// Returns the resourceVersion the walk saw, for [`ApiServer::inspect_changes`].
    pub fn inspect_all(&self, res: &str, mut f: impl FnMut(&str, &str, &Value)) -> u64 {
        let st = self.inner.store.lock();
        if let Some(rt) = resources::lookup(res) {
            for (k, v) in st.objects_of(rt, None) {
                f(&k.1, &k.2, v);
            }
        }
        st.rv
    }

    /// Runs `f` on each state objects of a type were written with after resourceVersion
    /// `since` (creates and updates, oldest first), from the watch history, under one lock and
    /// without copies: a poll costs the writes since the last one, not the whole store. Returns
    /// the resourceVersion to pass next time, or `None` when the history no longer reaches back
    /// to `since` (walk everything with [`ApiServer::inspect_all`] then).
    pub fn inspect_changes(
        &self,
        res: &str,
        since: u64,
        mut f: impl FnMut(&str, &str, &Value),
    ) -> Option<u64> {
        let rt = resources::lookup(res)?;
        let st = self.inner.store.lock();
        if st.dropped_through[rt.index()] > since || st.compacted > since {
            return None;
        }
        for ev in st.events_after(since) {
            if ev.res == rt.index() && ev.kind != store::EventKind::Deleted {
                let meta = &ev.object["metadata"];
                let ns = meta["namespace"].as_str().unwrap_or("");
                f(ns, meta["name"].as_str().unwrap_or(""), &ev.object);
            }
        }
        Some(st.rv)
    }

    /// Every stored object of a type, in one namespace or all (`None`).
    pub fn list(&self, res: &str, ns: Option<&str>) -> Vec<Value> {
        let Ok(rt) = resource(res) else {
            return Vec::new();
        };
        self.inner
            .store
            .lock()
            .list(
                rt,
                ns,
                &LabelSelector::default(),
                &FieldSelector::default(),
                None,
                None,
            )
            .map(|p| p.items)
            .unwrap_or_default()
    }

    /// Creates an object with the server's semantics (validation, rv, events).
    pub fn create(&self, res: &str, ns: &str, obj: Value) -> Result<Value, ApiError> {
        let rt = resource(res)?;
        self.inner.store.write(|st| st.create(rt, ns, obj))
    }

    /// Replaces an object (a PUT; `resourceVersion` in `obj` is a precondition when set).
    pub fn put(&self, res: &str, ns: &str, obj: Value) -> Result<Value, ApiError> {
        let rt = resource(res)?;
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.inner
            .store
            .write(|st| st.update(rt, ns, &name, obj, false))
    }

    /// Replaces an object's status (a PUT to `/status`).
    pub fn put_status(&self, res: &str, ns: &str, obj: Value) -> Result<Value, ApiError> {
        let rt = resource(res)?;
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.inner
            .store
            .write(|st| st.update(rt, ns, &name, obj, true))
    }

    /// Deletes an object (finalizers still hold it).
    pub fn delete(&self, res: &str, ns: &str, name: &str) -> Result<Value, ApiError> {
        let rt = resource(res)?;
        self.inner
            .store
            .write(|st| st.delete(rt, ns, name, &Preconditions::default()))
    }

    /// Creates a namespace (its `default` ServiceAccount follows after the configured delay).
    pub fn create_namespace(&self, name: &str) -> Result<Value, ApiError> {
        self.create(
            "namespaces",
            "",
            serde_json::json!({"metadata": {"name": name}}),
        )
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.store.lock().rv
    }

    // ---- users and permissions ----

    /// Maps a bearer token to a user.
    pub fn add_user(&self, token: &str, user: &str) {
        lock(&self.inner.authz).add_user(token, user);
    }

    /// Forgets a bearer token (a rotated credential): requests carrying it get 401.
    pub fn remove_token(&self, token: &str) {
        lock(&self.inner.authz).remove_token(token);
    }

    /// Lets a user do everything.
    pub fn add_admin(&self, user: &str) {
        lock(&self.inner.authz).add_admin(user);
    }

    /// Grants a user one allow rule.
    pub fn allow(&self, user: &str, rule: Rule) {
        lock(&self.inner.authz).allow(user, rule);
    }

    /// Removes every rule of a user.
    pub fn revoke(&self, user: &str) {
        lock(&self.inner.authz).revoke(user);
    }

    /// Loads RBAC YAML (Roles, ClusterRoles and their bindings); returns the users granted.
    pub fn load_rbac(&self, yaml: &str) -> Result<Vec<String>, RbacError> {
        lock(&self.inner.authz).load_rbac(yaml)
    }

    // ---- server behaviour switches ----

    /// Installs or removes a CRD (`res` is [`BINDINGS_V1BETA2`] or [`BINDINGS_V1BETA1`]):
    /// its paths answer 404 while it is not installed.
    pub fn set_crd_installed(&self, res: &str, installed: bool) {
        let Ok(rt) = resource(res) else { return };
        self.inner.store.write(|st| {
            st.missing.retain(|i| *i != rt.index());
            if !installed {
                st.missing.push(rt.index());
            }
        });
    }

    /// Enables the ValidatingAdmissionPolicies upstream's chart ships, judging `controller_user`
    /// (`system:serviceaccount:<ns>:<sa>`) with this token audience; `None` disables them.
    pub fn set_admission_policies(&self, policies: Option<Policies>) {
        self.inner.store.write(|st| st.policies = policies);
    }

    /// Turns CRD schema validation (pruning, defaults, required fields, CEL rules) of both
    /// binding kinds on or off (default on); off, any JSON object is stored as written.
    pub fn set_crd_validation(&self, on: bool) {
        self.inner.store.write(|st| st.crd_validation = on);
    }

    /// How many events the watch history keeps.
    pub fn set_history_limit(&self, n: usize) {
        self.inner.store.write(|st| st.set_history_limit(n));
    }

    /// The interval between BOOKMARK events (for watches that allow them). Default 3 s.
    pub fn set_bookmark_interval(&self, d: Duration) {
        self.inner.store.write(|st| st.bookmark_interval = d);
    }

    /// Simulated per-request latency: reads, writes and watch-event delivery (all zero by
    /// default). Requests sleep each on their own thread, so concurrent ones overlap.
    pub fn set_latency(&self, latency: Latency) {
        self.inner.store.write(|st| st.latency = latency);
    }

    /// Whether a too-old watch gets an in-stream ERROR (default, as the real server) or HTTP 410.
    pub fn set_expired_watch(&self, mode: ExpiredWatch) {
        self.inner.store.write(|st| st.expired_watch = mode);
    }

    /// Delay before a new namespace gets its `default` ServiceAccount. Default 150 ms.
    pub fn set_default_sa_delay(&self, d: Duration) {
        self.inner.store.write(|st| st.default_sa_delay = d);
    }

    /// Cuts every open watch stream mid-way (no final chunk).
    pub fn cut_watches(&self) {
        self.inner.store.write(|st| st.cut_epoch += 1);
    }

    /// Drops the watch history: resuming from any rv handed out so far gets 410.
    pub fn compact(&self) {
        self.inner.store.write(|st| st.compact());
    }

    // ---- faults ----

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        lock(&self.inner.faults).add(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    // ---- observation ----

    /// The requests answered so far, oldest first (direct accessor calls excluded; the most
    /// recent 200 000 are kept).
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        // Requests still being answered (bounded wait) are logged first, so what a test saw
        // happen is in the log it reads.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.inner.in_flight.load(Ordering::SeqCst) > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        lock(&self.inner.log).entries()
    }

    /// Empties the request log and its counters.
    pub fn clear_log(&self) {
        lock(&self.inner.log).clear();
    }

    /// How many requests had this verb on this plural resource (exact, however many there were).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        lock(&self.inner.log).count(verb, resource)
    }

    /// How many requests this user made (exact).
    pub fn count_by_user(&self, user: &str) -> usize {
        lock(&self.inner.log).count_by_user(user)
    }

    /// How many retained log entries match.
    pub fn count_matching(&self, f: impl Fn(&LoggedRequest) -> bool) -> usize {
        lock(&self.inner.log).count_matching(f)
    }

    /// Every TokenRequest granted so far.
    pub fn token_requests(&self) -> Vec<TokenRecord> {
        lock(&self.inner.tokens).clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.inner.store.write(|st| st.stopping = true);
        if let Some(gc) = self.gc.take() {
            let _ = gc.join();
        }
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names_seen(api: &ApiServer, since: Option<u64>) -> (Vec<String>, Option<u64>) {
        let mut seen = Vec::new();
        let mut visit = |_: &str, name: &str, _: &Value| seen.push(name.to_string());
        let rv = match since {
            Some(rv) => api.inspect_changes("secrets", rv, &mut visit),
            None => Some(api.inspect_all("secrets", &mut visit)),
        };
        (seen, rv)
    }

    #[test]
    fn inspect_changes_sees_only_what_was_written_since_and_gives_up_past_the_history() {
        let api = ApiServer::start();
        api.create_namespace("ns").unwrap();
        for n in ["a", "b"] {
            api.create("secrets", "ns", json!({"metadata": {"name": n}}))
                .unwrap();
        }
        let (all, rv) = names_seen(&api, None);
        assert_eq!(all, ["a", "b"]);
        let mut b = api.get("secrets", "ns", "b").unwrap();
        b["data"] = json!({"k": "dg=="});
        api.put("secrets", "ns", b).unwrap();
        api.create("serviceaccounts", "ns", json!({"metadata": {"name": "x"}}))
            .unwrap();
        api.delete("secrets", "ns", "a").unwrap();
        let (changed, next) = names_seen(&api, rv);
        assert_eq!(
            changed,
            ["b"],
            "the update only: other types and deletes are skipped"
        );
        assert!(next > rv);
        api.compact();
        assert_eq!(names_seen(&api, next), (vec![], None));
    }
}

//! One reconcile of one binding: observe, plan, mint a token if the plan needs one, apply the
//! writes in order, and say what comes next.
//!
//! Every write carries a precondition. A conflict means someone else changed an object since we
//! looked: we read that object again, plan again from the new observation, and try once more
//! (bounded), keeping any token already minted so a conflict never costs a second exchange.
//!
//! The Kubernetes calls go through [`Api`], tokens through [`Mint`] and time through [`Clock`], so
//! a reconcile runs in a unit test without HTTP. Server answers enter the store through
//! [`Store::fold`], the same door the watches use.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;

use crate::binding::selector::Selector;
use crate::binding::{ApiVersion, BindingError, FINALIZER};
use crate::clock::{Clock, Rng};
use crate::controller::events::{Reason, Regarding};
use crate::controller::schedule::FailureBackoff;
use crate::controller::store::{BindingKey, Kind, Observation, Store, Update};
use crate::kube::{self, Client, Preconditions, Resource};
use crate::ops::metrics::{Metrics, SecretOp};
use crate::plan::{self, Minted, Outcome, PlanConfig, TokenNeed, Write};
use crate::tokens::credential::Minter;

/// How many times one reconcile re-plans after a write conflicted.
const MAX_ATTEMPTS: usize = 4;
/// How long reconciles wait at start-up for the Secret and ServiceAccount watches to list once
/// (a cache sync). After that they go on with what the store knows and never wait again.
const SYNC_WAIT: Duration = Duration::from_secs(30);
/// How often the store is checked while waiting for the sync.
const SYNC_POLL: Duration = Duration::from_millis(20);
/// A retry after a token failure comes this much (up to twice this) after the token gate opens,
/// so it is never turned away by the gate it waits for.
const GATE_MARGIN: Duration = Duration::from_millis(100);
/// Refreshes of bindings that share one token would all fall due in the same second; each is
/// pushed back by a random share of this, so they reach the API server spread out. The share is
/// also bounded by a twentieth of the time left until the refresh, so a short-lived token is never
/// pushed past its expiry.
pub const REFRESH_JITTER: Duration = Duration::from_secs(60);

/// The Kubernetes calls a reconcile makes, on API paths. [`Client`] is the real one.
pub trait Api: Send + Sync {
    /// GET.
    fn get(&self, path: &str) -> Result<Value, kube::Error>;
    /// POST.
    fn create(&self, path: &str, body: &Value) -> Result<Value, kube::Error>;
    /// PUT.
    fn replace(&self, path: &str, body: &Value) -> Result<Value, kube::Error>;
    /// PATCH with a JSON patch.
    fn patch_json(&self, path: &str, patch: &Value) -> Result<Value, kube::Error>;
    /// PATCH with a JSON merge patch.
    fn patch_merge(&self, path: &str, patch: &Value) -> Result<Value, kube::Error>;
    /// DELETE with optional preconditions.
    fn delete(&self, path: &str, pre: Option<&Preconditions>) -> Result<Value, kube::Error>;
}

impl Api for Client {
    fn get(&self, path: &str) -> Result<Value, kube::Error> {
        Client::get(self, path)
    }
    fn create(&self, path: &str, body: &Value) -> Result<Value, kube::Error> {
        Client::create(self, path, body)
    }
    fn replace(&self, path: &str, body: &Value) -> Result<Value, kube::Error> {
        Client::replace(self, path, body)
    }
    fn patch_json(&self, path: &str, patch: &Value) -> Result<Value, kube::Error> {
        Client::patch_json(self, path, patch)
    }
    fn patch_merge(&self, path: &str, patch: &Value) -> Result<Value, kube::Error> {
        Client::patch_merge(self, path, patch)
    }
    fn delete(&self, path: &str, pre: Option<&Preconditions>) -> Result<Value, kube::Error> {
        Client::delete(self, path, pre)
    }
}

/// Mints the registry token a plan asks for. [`Minter`] is the real one.
pub trait Mint: Send + Sync {
    /// A token for `need`, or the binding's error.
    fn mint(&self, need: &TokenNeed) -> Minted;
}

impl Mint for Minter {
    fn mint(&self, need: &TokenNeed) -> Minted {
        Minter::mint(self, need)
    }
}

/// What the worker does with the key next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again at this time (a refresh, or a retry).
    RequeueAt(Instant),
    /// Nothing is due: wait for a change.
    Wait,
    /// The binding is gone: drop everything queued for it.
    Forget,
}

/// An Event worth recording about the binding.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// The binding.
    pub regarding: Regarding,
    /// Why.
    pub reason: Reason,
    /// What happened.
    pub text: String,
}

/// What a reconcile ended with.
#[derive(Clone, Debug, PartialEq)]
pub struct Reconciled {
    /// What comes next.
    pub action: Action,
    /// An Event to record.
    pub note: Option<Note>,
    /// Whether the pass failed (the binding's own error, or the API's), for metrics.
    pub failed: bool,
    /// Writes made, when the pass got to the end.
    pub writes: Option<usize>,
}

/// A reconcile that could not complete: the Kubernetes API failed.
#[derive(Debug)]
pub enum ReconcileError {
    /// A request to the API server failed.
    Kube {
        /// What we were doing.
        action: String,
        /// Why it failed.
        source: kube::Error,
    },
    /// Writes kept conflicting with concurrent changes.
    TooManyConflicts,
    /// The planner asked for a token again after being given one (a bug, never user input).
    TokenAskedTwice,
    /// This replica no longer holds the leader lease.
    NotLeader,
}

impl ReconcileError {
    /// The server's `Retry-After`, when it throttled us.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ReconcileError::Kube {
                source: kube::Error::TooManyRequests { retry_after },
                ..
            } => *retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconcileError::Kube { action, source } => write!(f, "{action}: {source}"),
            ReconcileError::TooManyConflicts => {
                write!(f, "gave up after {MAX_ATTEMPTS} conflicting writes")
            }
            ReconcileError::NotLeader => f.write_str("not the leader; write skipped"),
            ReconcileError::TokenAskedTwice => {
                f.write_str("internal error: the planner asked for a token twice in one pass")
            }
        }
    }
}

impl std::error::Error for ReconcileError {}

/// Every binding's consecutive failures: one backoff per key, whatever failed. A token failure
/// also closes the key's token gate until its retry time: watch events (another binding patching
/// the shared ServiceAccount, say) queue a failing binding long before then, and such a pass still
/// fixes what it can in Kubernetes but reuses the token error instead of asking Azure again. A
/// changed input (a spec edit) opens the gate at once.
#[derive(Default)]
struct Failures {
    backoff: FailureBackoff<BindingKey>,
    gates: HashMap<BindingKey, Gate>,
}

struct Gate {
    inputs_hash: String,
    until: Instant,
    error: BindingError,
}

impl Failures {
    /// The gated error, if the same inputs failed and their retry time has not come.
    fn gated(&self, key: &BindingKey, inputs_hash: &str, now: Instant) -> Option<&Gate> {
        self.gates
            .get(key)
            .filter(|g| g.inputs_hash == inputs_hash && now < g.until)
    }

    fn forget(&mut self, key: &BindingKey) {
        self.backoff.succeeded(key);
        self.gates.remove(key);
    }
}

/// How the pass's token request went.
enum Asked {
    /// No token was needed.
    No,
    /// Minted now; `Err` carries the inputs it failed for.
    Minted(Result<(), String>),
    /// The gate answered with the last failure; retry when it opens.
    Gated(Instant),
}

/// What one pass saw and did, before the worker's next step is decided.
struct Pass {
    plan: plan::Plan,
    asked: Asked,
    regarding: Regarding,
    /// A fresh token was written to the Secret of a binding that was not ready before.
    secret_written: bool,
    /// Writes made, conflicted attempts included.
    writes: usize,
}

/// Everything a reconcile needs, shared by the workers.
pub struct Reconciler {
    /// The Kubernetes API.
    pub api: Box<dyn Api>,
    /// Registry tokens.
    pub mint: Box<dyn Mint>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The shared store.
    pub store: Arc<Mutex<Store>>,
    /// Planner settings.
    pub plan: PlanConfig,
    /// Write counters.
    pub metrics: Arc<Metrics>,
    /// Whether this replica may write now (leader election); checked before every write, so a
    /// replica that could not renew its lease stops writing before another can take over.
    pub may_write: Box<dyn Fn() -> bool + Send + Sync>,
    /// `--label-selector` (bindings can leave it).
    pub selector: Selector,
    failures: Mutex<Failures>,
    rng: Mutex<Rng>,
}

/// Why a write did not apply.
enum WriteFailure {
    /// A precondition failed or the object already exists: re-observe and re-plan.
    Conflict,
    /// Anything else.
    Fatal(ReconcileError),
}

fn resource(version: ApiVersion) -> Resource {
    match version {
        ApiVersion::V1beta1 => Resource::ACR_PULL_BINDINGS_V1BETA1,
        ApiVersion::V1beta2 => Resource::ACR_PULL_BINDINGS_V1BETA2,
    }
}

fn binding_path(key: &BindingKey, sub: Option<&str>) -> String {
    resource(key.version).path(Some(&key.namespace), Some(&key.name), sub)
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let action = action.into();
    move |source| ReconcileError::Kube { action, source }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every lock here guards state left consistent at each return, so a poisoned lock (a panic
    // in another worker) carries no broken invariant.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reconciler {
    /// A reconciler with no failures recorded yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        api: Box<dyn Api>,
        mint: Box<dyn Mint>,
        clock: Arc<dyn Clock>,
        store: Arc<Mutex<Store>>,
        plan: PlanConfig,
        metrics: Arc<Metrics>,
        may_write: Box<dyn Fn() -> bool + Send + Sync>,
        selector: Selector,
    ) -> Reconciler {
        Reconciler {
            api,
            mint,
            clock,
            store,
            plan,
            metrics,
            may_write,
            selector,
            failures: Mutex::default(),
            rng: Mutex::new(Rng::from_entropy()),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn fold(&self, update: Update<'_>) {
        self.store().fold(update);
    }

    /// A random number in `[0, 1)`: the one source of jitter for backoff and refreshes.
    fn jitter(&self) -> f64 {
        lock(&self.rng).next_f64()
    }

    /// Forgets `key`'s failures, so its next pass asks for a token at once (a new identity
    /// policy, say).
    pub fn forget_failures(&self, key: &BindingKey) {
        lock(&self.failures).forget(key);
    }

    /// Waits (bounded) until the store has seen every Secret and ServiceAccount once: planning
    /// earlier could delete an old Secret that a not yet listed ServiceAccount still references.
    fn wait_for_sync(&self, key: &BindingKey) {
        let deadline = self.clock.now() + SYNC_WAIT;
        while !self.store().synced() {
            if self.clock.now() >= deadline {
                log::warn!("{key}: Secrets and ServiceAccounts are not listed yet; going on");
                self.store().give_up_sync();
                return;
            }
            self.clock.sleep(SYNC_POLL);
        }
    }

    /// Reconciles one binding and decides what comes next.
    pub fn reconcile(&self, key: &BindingKey) -> Reconciled {
        let result = self.pass(key);
        // Read after the pass: it may have waited for the first lists, and delays count from
        // when they are decided.
        let now = self.clock.now();
        match result {
            Ok(None) => {
                self.forget_failures(key);
                Reconciled {
                    action: Action::Forget,
                    note: None,
                    failed: false,
                    writes: None,
                }
            }
            Ok(Some(pass)) => self.next_step(key, pass, now),
            Err(e) => {
                let delay = lock(&self.failures)
                    .backoff
                    .failed(key.clone(), self.jitter());
                let delay = e
                    .retry_after()
                    .map_or(delay, |r| r.max(Duration::from_secs(1)));
                log::warn!("{key}: {e}; retrying in {}s", delay.as_secs());
                Reconciled {
                    action: Action::RequeueAt(now + delay),
                    note: None,
                    failed: true,
                    writes: None,
                }
            }
        }
    }

    /// The next step after a pass that reached the API: the refresh, or the retry of a failure.
    fn next_step(&self, key: &BindingKey, pass: Pass, now: Instant) -> Reconciled {
        let refresh = pass.plan.refresh_at.map(|at| {
            let at = self.instant_at(at);
            at + refresh_jitter(at, now, self.jitter())
        });
        let Some(error) = pass.plan.error else {
            lock(&self.failures).forget(key);
            let note = pass.secret_written.then(|| Note {
                regarding: pass.regarding,
                reason: Reason::TokenRefreshed,
                text: "wrote a fresh registry token to the pull secret".into(),
            });
            return Reconciled {
                action: refresh.map_or(Action::Wait, Action::RequeueAt),
                note,
                failed: false,
                writes: Some(pass.writes),
            };
        };
        let retry = match pass.asked {
            // The gate owns the retry time, so passes triggered by unrelated events neither call
            // Azure nor stretch the backoff.
            Asked::Gated(until) => until + GATE_MARGIN.mul_f64(1.0 + self.jitter()),
            asked => {
                let mut f = lock(&self.failures);
                if let Asked::Minted(Err(inputs_hash)) = &asked {
                    // Changed inputs (a spec edit) failing are a new problem: their backoff
                    // starts afresh, as their gate does.
                    if f.gates
                        .get(key)
                        .is_some_and(|g| g.inputs_hash != *inputs_hash)
                    {
                        f.backoff.succeeded(key);
                    }
                }
                let until = now + f.backoff.failed(key.clone(), self.jitter());
                if let Asked::Minted(Err(inputs_hash)) = asked {
                    let gate = Gate {
                        inputs_hash,
                        until,
                        error: error.clone(),
                    };
                    f.gates.insert(key.clone(), gate);
                    until + GATE_MARGIN.mul_f64(1.0 + self.jitter())
                } else {
                    until
                }
            }
        };
        let at = refresh.map_or(retry, |r| r.min(retry));
        log::info!(
            "{key}: {error}; retrying in {}s",
            at.saturating_duration_since(now).as_secs()
        );
        Reconciled {
            action: Action::RequeueAt(at),
            note: Some(Note {
                regarding: pass.regarding,
                reason: Reason::for_error(&error),
                text: error.to_string(),
            }),
            failed: true,
            writes: Some(pass.writes),
        }
    }

    /// Converts a wall-clock deadline to an `Instant`, never in the past.
    fn instant_at(&self, at: OffsetDateTime) -> Instant {
        let d = Duration::try_from(at - self.clock.utc()).unwrap_or(Duration::ZERO);
        self.clock.now() + d
    }

    /// One pass: observe, plan, mint, write; re-planned after a conflict. `None`: the binding is
    /// gone.
    fn pass(&self, key: &BindingKey) -> Result<Option<Pass>, ReconcileError> {
        self.wait_for_sync(key);
        let mut minted: Option<Minted> = None;
        let mut asked = Asked::No;
        let mut writes = 0;
        for _ in 0..MAX_ATTEMPTS {
            // Its own statement: a guard in the `match` scrutinee would hold the store through
            // the arms, which lock it again.
            let observation = self.store().observe(key);
            let obs = match observation {
                None => {
                    if self.store().left_selector(key) {
                        self.release_unselected(key)?;
                    }
                    return Ok(None);
                }
                Some(Observation::NeedServiceAccount { namespace, name }) => {
                    self.fetch_service_account(&namespace, &name)?;
                    continue;
                }
                Some(Observation::Ready(obs)) => obs,
            };
            let now = self.clock.utc();
            let outcome = match plan::plan(&obs, &self.plan, now, minted.as_ref()) {
                Outcome::NeedToken(need) => {
                    let m = self.mint_gated(key, &need, &mut asked);
                    let o = plan::plan(&obs, &self.plan, now, Some(&m));
                    minted = Some(m);
                    o
                }
                done => done,
            };
            let Outcome::Done(p) = outcome else {
                // The planner asks for a token only once per observation; asking again would
                // mean it ignored the one we gave it.
                return Err(ReconcileError::TokenAskedTwice);
            };
            let mut rv = obs.binding.meta.resource_version.clone();
            let finalizers = obs.binding.meta.finalizers.clone();
            let mut conflicted = false;
            for w in &p.writes {
                if !(self.may_write)() {
                    return Err(ReconcileError::NotLeader);
                }
                match self.apply(key, w, &mut rv, &finalizers) {
                    Ok(()) => {
                        writes += 1;
                        self.count(w);
                    }
                    Err(WriteFailure::Conflict) => {
                        conflicted = true;
                        break;
                    }
                    Err(WriteFailure::Fatal(e)) => return Err(e),
                }
            }
            if conflicted {
                log::debug!("{key}: a write conflicted; observing again");
                continue;
            }
            // A routine refresh of a binding that was already fine is not news: only the first
            // token and a recovery from an error are worth an Event (and its API write).
            let was_ready = obs.binding.status.error.is_none()
                && obs.binding.status.token_expiration_time.is_some();
            let secret_written = !was_ready
                && p.writes
                    .iter()
                    .any(|w| matches!(w, Write::CreateSecret { .. } | Write::ReplaceSecret { .. }));
            let m = &obs.binding.meta;
            let regarding = Regarding {
                api_version: obs.binding.version.api_version().to_string(),
                namespace: m.namespace.to_string(),
                name: m.name.clone(),
                uid: m.uid.clone(),
                resource_version: rv,
            };
            return Ok(Some(Pass {
                plan: p,
                asked,
                regarding,
                secret_written,
                writes,
            }));
        }
        Err(ReconcileError::TooManyConflicts)
    }

    /// A token for `need`, unless the same inputs failed and their gate is still closed.
    fn mint_gated(&self, key: &BindingKey, need: &TokenNeed, asked: &mut Asked) -> Minted {
        let now = self.clock.now();
        if let Some(g) = lock(&self.failures).gated(key, &need.inputs_hash, now) {
            *asked = Asked::Gated(g.until);
            return Minted::Err(g.error.clone());
        }
        let m = self.mint.mint(need);
        *asked = Asked::Minted(match &m {
            Minted::Ok(_) => Ok(()),
            Minted::Err(_) => Err(need.inputs_hash.clone()),
        });
        m
    }

    /// Drops our finalizer from a binding that left `--label-selector` (upstream leaves it, so a
    /// later deletion hangs forever, spec §9.8). Only the finalizer goes: its Secret stays valid
    /// and attached (so pulls keep working), the owner reference still lets the garbage collector
    /// remove the Secret when the binding is deleted, and a shard whose selector matches it now
    /// adds its own finalizer. The binding is read first: the watch no longer shows it.
    fn release_unselected(&self, key: &BindingKey) -> Result<(), ReconcileError> {
        if !(self.may_write)() {
            self.fold(Update::Released(key));
            return Ok(());
        }
        let path = binding_path(key, None);
        let obj = match self.api.get(&path) {
            Ok(obj) => obj,
            Err(e) if e.is_not_found() => {
                self.fold(Update::Released(key));
                return Ok(());
            }
            Err(e) => return Err(kube_err(format!("get {key}"))(e)),
        };
        let meta = &obj["metadata"];
        let labels: std::collections::BTreeMap<String, String> = meta["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let finalizers: Vec<String> = meta["finalizers"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let selected = self.selector.matches(&labels);
        if selected || !finalizers.iter().any(|f| f == FINALIZER) {
            self.fold(Update::Released(key));
            return Ok(());
        }
        let remaining: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
        let rv = meta["resourceVersion"].as_str().unwrap_or_default();
        self.api
            .patch_json(&path, &plan::remove_finalizer_patch(rv, &remaining))
            .map_err(kube_err(format!("{key}: remove finalizer")))?;
        log::info!(
            "{key}: no longer matches --label-selector; removed our finalizer so its deletion cannot hang"
        );
        self.fold(Update::Released(key));
        Ok(())
    }

    fn count(&self, w: &Write) {
        match w {
            Write::CreateSecret { .. } => self.metrics.secret_write(SecretOp::Create),
            Write::ReplaceSecret { .. } => self.metrics.secret_write(SecretOp::Replace),
            Write::DeleteSecret { .. } => self.metrics.secret_write(SecretOp::Delete),
            Write::PatchServiceAccount { .. } => self.metrics.serviceaccount_write(),
            Write::UpdateStatus { .. } => self.metrics.status_write(),
            Write::AddFinalizer | Write::RemoveFinalizer { .. } => {}
        }
    }

    fn fetch_service_account(&self, ns: &str, name: &str) -> Result<(), ReconcileError> {
        let path = Resource::SERVICE_ACCOUNTS.path(Some(ns), Some(name), None);
        match self.api.get(&path) {
            Ok(obj) => self.fold(Update::Returned(Kind::ServiceAccounts, &obj)),
            Err(e) if e.is_not_found() => self.fold(Update::Gone(Kind::ServiceAccounts, ns, name)),
            Err(e) => return Err(kube_err(format!("get serviceaccount {ns}/{name}"))(e)),
        }
        Ok(())
    }

    /// Applies one write and folds the server's answer into the store.
    fn apply(
        &self,
        key: &BindingKey,
        w: &Write,
        rv: &mut String,
        finalizers: &[String],
    ) -> Result<(), WriteFailure> {
        let ns = &*key.namespace;
        let result = match w {
            Write::AddFinalizer => self
                .api
                .patch_json(
                    &binding_path(key, None),
                    &plan::add_finalizer_patch(rv, finalizers),
                )
                .map(|obj| self.binding_written(key, &obj, rv, "added finalizer")),
            Write::RemoveFinalizer { remaining, .. } => self
                .api
                .patch_json(
                    &binding_path(key, None),
                    &plan::remove_finalizer_patch(rv, remaining),
                )
                .map(|obj| self.binding_written(key, &obj, rv, "removed finalizer")),
            Write::UpdateStatus { status } => self
                .api
                .patch_merge(
                    &binding_path(key, Some("status")),
                    &plan::status_merge_patch(Some(rv), status),
                )
                .map(|obj| self.binding_written(key, &obj, rv, "updated status")),
            Write::CreateSecret { body } => {
                let path = Resource::SECRETS.path(Some(ns), None, None);
                match self.api.create(&path, body) {
                    Ok(obj) => {
                        log::info!("{key}: created secret {}", obj_name(&obj));
                        self.fold(Update::Returned(Kind::Secrets, &obj));
                        Ok(())
                    }
                    Err(e) if e.is_already_exists() => {
                        // The name is taken by a Secret our label-selected watch cannot see
                        // (foreign, or an unlabelled legacy one): read it so the planner decides.
                        let name = body["metadata"]["name"].as_str().unwrap_or_default();
                        self.refresh_secret(ns, name)?;
                        return Err(WriteFailure::Conflict);
                    }
                    Err(e) => Err(e),
                }
            }
            Write::ReplaceSecret { name, body } => {
                let path = Resource::SECRETS.path(Some(ns), Some(name), None);
                match self.api.replace(&path, body) {
                    Ok(obj) => {
                        log::info!("{key}: refreshed secret {name}");
                        self.fold(Update::Returned(Kind::Secrets, &obj));
                        Ok(())
                    }
                    Err(e) if e.is_conflict() || e.is_not_found() => {
                        self.refresh_secret(ns, name)?;
                        return Err(WriteFailure::Conflict);
                    }
                    Err(e) => Err(e),
                }
            }
            Write::DeleteSecret {
                name,
                uid,
                resource_version,
            } => {
                let path = Resource::SECRETS.path(Some(ns), Some(name), None);
                let pre = Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: Some(resource_version.clone()),
                };
                match self.api.delete(&path, Some(&pre)) {
                    Ok(_) => {
                        log::info!("{key}: deleted secret {name}");
                        self.fold(Update::Gone(Kind::Secrets, ns, name));
                        Ok(())
                    }
                    Err(e) if e.is_not_found() => {
                        self.fold(Update::Gone(Kind::Secrets, ns, name));
                        Ok(())
                    }
                    Err(e) if e.is_conflict() => {
                        self.refresh_secret(ns, name)?;
                        return Err(WriteFailure::Conflict);
                    }
                    Err(e) => Err(e),
                }
            }
            Write::PatchServiceAccount {
                name,
                resource_version,
                image_pull_secrets,
            } => {
                let path = Resource::SERVICE_ACCOUNTS.path(Some(ns), Some(name), None);
                let patch = plan::service_account_patch(resource_version, image_pull_secrets);
                match self.api.patch_json(&path, &patch) {
                    Ok(obj) => {
                        log::info!(
                            "{key}: serviceaccount {name} pull secrets are now {image_pull_secrets:?}"
                        );
                        self.fold(Update::Returned(Kind::ServiceAccounts, &obj));
                        Ok(())
                    }
                    Err(e) if is_precondition_failure(&e) || e.is_not_found() => {
                        self.fetch_service_account(ns, name)
                            .map_err(WriteFailure::Fatal)?;
                        return Err(WriteFailure::Conflict);
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_precondition_failure(&e) && is_binding_write(w) => {
                self.refresh_binding(key).map_err(WriteFailure::Fatal)?;
                Err(WriteFailure::Conflict)
            }
            Err(e) => Err(WriteFailure::Fatal(ReconcileError::Kube {
                action: format!("{key}: {}", describe(w)),
                source: e,
            })),
        }
    }

    /// Records a binding write's answer and threads its resourceVersion into the next write.
    fn binding_written(&self, key: &BindingKey, obj: &Value, rv: &mut String, what: &str) {
        log::info!("{key}: {what}");
        if let Some(new_rv) = obj["metadata"]["resourceVersion"].as_str() {
            *rv = new_rv.to_string();
        }
        self.fold(Update::Returned(Kind::Bindings(key.version), obj));
    }

    fn refresh_binding(&self, key: &BindingKey) -> Result<(), ReconcileError> {
        match self.api.get(&binding_path(key, None)) {
            Ok(obj) => {
                self.fold(Update::Returned(Kind::Bindings(key.version), &obj));
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                let kind = Kind::Bindings(key.version);
                self.fold(Update::Gone(kind, &key.namespace, &key.name));
                Ok(())
            }
            Err(e) => Err(kube_err(format!("get {key}"))(e)),
        }
    }

    fn refresh_secret(&self, ns: &str, name: &str) -> Result<(), WriteFailure> {
        let path = Resource::SECRETS.path(Some(ns), Some(name), None);
        match self.api.get(&path) {
            Ok(obj) => {
                self.fold(Update::Returned(Kind::Secrets, &obj));
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                self.fold(Update::Gone(Kind::Secrets, ns, name));
                Ok(())
            }
            Err(e) => Err(WriteFailure::Fatal(kube_err(format!(
                "get secret {ns}/{name}"
            ))(e))),
        }
    }
}

/// The random delay added to a refresh due at `at`: up to [`REFRESH_JITTER`], at most 5 % of the
/// time until then.
fn refresh_jitter(at: Instant, now: Instant, unit: f64) -> Duration {
    let bound = REFRESH_JITTER.min(at.saturating_duration_since(now) / 20);
    bound.mul_f64(unit.clamp(0.0, 1.0))
}

/// A failed `test` op (422 Invalid from a JSON patch) or a stale resourceVersion (409).
fn is_precondition_failure(e: &kube::Error) -> bool {
    e.is_conflict() || e.code() == Some(422)
}

fn is_binding_write(w: &Write) -> bool {
    matches!(
        w,
        Write::AddFinalizer | Write::RemoveFinalizer { .. } | Write::UpdateStatus { .. }
    )
}

fn obj_name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("?")
}

fn describe(w: &Write) -> String {
    match w {
        Write::AddFinalizer => "add finalizer".into(),
        Write::RemoveFinalizer { .. } => "remove finalizer".into(),
        Write::CreateSecret { body } => format!("create secret {}", obj_name(body)),
        Write::ReplaceSecret { name, .. } => format!("replace secret {name}"),
        Write::DeleteSecret { name, .. } => format!("delete secret {name}"),
        Write::PatchServiceAccount { name, .. } => format!("patch serviceaccount {name}"),
        Write::UpdateStatus { .. } => "update status".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::TokenStep;
    use crate::binding::V1beta1Defaults;
    use crate::clock::FakeClock;
    use crate::kube::WatchEvent;
    use crate::plan::{MintedToken, Password};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records every call; GETs read `objects`, writes echo their body (or a bare object) unless
    /// `fail` names their verb.
    #[derive(Default)]
    struct FakeApi {
        calls: Mutex<Vec<String>>,
        objects: Mutex<HashMap<String, Value>>,
        fail: Mutex<Option<(&'static str, u16)>>,
    }

    impl FakeApi {
        fn answer(
            &self,
            verb: &'static str,
            path: &str,
            body: Option<&Value>,
        ) -> Result<Value, kube::Error> {
            lock(&self.calls).push(format!("{verb} {path}"));
            if let Some((v, code)) = *lock(&self.fail) {
                if v == verb {
                    return Err(kube::Error::Status {
                        code,
                        reason: String::new(),
                        message: String::new(),
                    });
                }
            }
            Ok(body
                .cloned()
                .unwrap_or_else(|| json!({"metadata": {"resourceVersion": "99"}})))
        }

        fn calls(&self) -> Vec<String> {
            lock(&self.calls).clone()
        }
    }

    impl Api for Arc<FakeApi> {
        fn get(&self, path: &str) -> Result<Value, kube::Error> {
            lock(&self.calls).push(format!("GET {path}"));
            lock(&self.objects)
                .get(path)
                .cloned()
                .ok_or(kube::Error::Status {
                    code: 404,
                    reason: "NotFound".into(),
                    message: String::new(),
                })
        }
        fn create(&self, path: &str, body: &Value) -> Result<Value, kube::Error> {
            self.answer("POST", path, Some(body))
        }
        fn replace(&self, path: &str, body: &Value) -> Result<Value, kube::Error> {
            self.answer("PUT", path, Some(body))
        }
        fn patch_json(&self, path: &str, _: &Value) -> Result<Value, kube::Error> {
            self.answer("PATCH", path, None)
        }
        fn patch_merge(&self, path: &str, _: &Value) -> Result<Value, kube::Error> {
            self.answer("MERGE", path, None)
        }
        fn delete(&self, path: &str, _: Option<&Preconditions>) -> Result<Value, kube::Error> {
            self.answer("DELETE", path, None)
        }
    }

    /// Hands out a token valid for an hour, or `fail`'s error; counts requests.
    struct FakeMint {
        clock: Arc<FakeClock>,
        fail: bool,
        asked: Arc<AtomicUsize>,
    }

    impl Mint for FakeMint {
        fn mint(&self, _: &TokenNeed) -> Minted {
            self.asked.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Minted::Err(BindingError::TokenRequest {
                    step: TokenStep::AcrToken,
                    detail: "denied".into(),
                });
            }
            let now = self.clock.utc();
            Minted::Ok(MintedToken {
                password: Password::new("TOKEN"),
                expires: now + time::Duration::hours(1),
                issued: now,
            })
        }
    }

    const BINDING: &str = "/apis/acrpull.microsoft.com/v1beta2/namespaces/ns/acrpullbindings/b";

    fn key() -> BindingKey {
        BindingKey {
            namespace: "ns".into(),
            name: "b".into(),
            version: ApiVersion::V1beta2,
        }
    }

    fn binding(finalizers: &[&str], labels: Value) -> Value {
        json!({
            "apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding",
            "metadata": {"namespace": "ns", "name": "b", "uid": "u1", "resourceVersion": "5",
                         "generation": 1, "finalizers": finalizers, "labels": labels},
            "spec": {"serviceAccountName": "default",
                     "acr": {"server": "r.azurecr.io", "scope": "repository:app:pull",
                             "environment": "PublicCloud"},
                     "auth": {"managedIdentity": {"clientID": "c1"}}}
        })
    }

    struct Rig {
        api: Arc<FakeApi>,
        clock: Arc<FakeClock>,
        asked: Arc<AtomicUsize>,
        store: Arc<Mutex<Store>>,
        r: Reconciler,
    }

    /// A reconciler over a store that has listed `bindings` and the namespace's `default`
    /// ServiceAccount.
    fn rig(bindings: Vec<Value>, mint_fails: bool, selector: &str) -> Rig {
        let store = Arc::new(Mutex::new(Store::new(V1beta1Defaults::default())));
        {
            let mut s = lock(&store);
            let kind = Kind::Bindings(ApiVersion::V1beta2);
            s.fold(Update::Watched(kind, &WatchEvent::Restarted(bindings)));
            s.fold(Update::Watched(
                Kind::Secrets,
                &WatchEvent::Restarted(vec![]),
            ));
            let sa =
                json!({"metadata": {"namespace": "ns", "name": "default", "resourceVersion": "3"}});
            s.fold(Update::Watched(
                Kind::ServiceAccounts,
                &WatchEvent::Restarted(vec![sa]),
            ));
        }
        let api = Arc::new(FakeApi::default());
        let clock = Arc::new(FakeClock::new());
        let asked = Arc::new(AtomicUsize::new(0));
        let mint = FakeMint {
            clock: Arc::clone(&clock),
            fail: mint_fails,
            asked: Arc::clone(&asked),
        };
        let r = Reconciler::new(
            Box::new(Arc::clone(&api)),
            Box::new(mint),
            clock.clone(),
            Arc::clone(&store),
            PlanConfig::default(),
            Arc::new(Metrics::default()),
            Box::new(|| true),
            Selector::parse(selector).expect("test selector parses"),
        );
        Rig {
            api,
            clock,
            asked,
            store,
            r,
        }
    }

    #[test]
    fn a_new_binding_is_served_in_four_writes_and_comes_back_for_its_refresh() {
        let t = rig(vec![binding(&[], json!({}))], false, "");
        let start = t.clock.now();
        let r = t.r.reconcile(&key());
        assert_eq!(
            t.api.calls(),
            vec![
                format!("PATCH {BINDING}"),
                "POST /api/v1/namespaces/ns/secrets".to_string(),
                "PATCH /api/v1/namespaces/ns/serviceaccounts/default".to_string(),
                format!("MERGE {BINDING}/status"),
            ]
        );
        assert_eq!(t.asked.load(Ordering::SeqCst), 1);
        assert!(!r.failed);
        assert_eq!(r.note.map(|n| n.reason), Some(Reason::TokenRefreshed));
        // Refreshed at half the hour-long lifetime, pushed back by at most a minute of jitter.
        let Action::RequeueAt(at) = r.action else {
            panic!("a refresh is scheduled: {:?}", r.action);
        };
        let after = at - start;
        assert!(
            after >= Duration::from_secs(30 * 60) && after <= Duration::from_secs(31 * 60),
            "{after:?}"
        );
    }

    #[test]
    fn a_failed_token_is_not_asked_again_until_its_gate_opens() {
        let t = rig(vec![binding(&[FINALIZER], json!({}))], true, "");
        let first = t.r.reconcile(&key());
        assert!(first.failed);
        let note = first.note.expect("a failure is an Event");
        assert_eq!(note.reason, Reason::TokenRequestFailed);
        assert_eq!(note.text, "failed to retrieve ACR token: denied");
        let Action::RequeueAt(retry) = first.action else {
            panic!("a retry is scheduled: {:?}", first.action);
        };
        let delay = retry - t.clock.now();
        assert!(
            delay >= Duration::from_secs(4) && delay <= Duration::from_secs(7),
            "first retry after 5 s ± 20 %, then the gate margin: {delay:?}"
        );

        // A watch event brings the binding back at once: the gate answers, Azure is not asked,
        // and the retry time stays where it was.
        let again = t.r.reconcile(&key());
        assert_eq!(t.asked.load(Ordering::SeqCst), 1, "the gate answered");
        let Action::RequeueAt(same) = again.action else {
            panic!("the retry stays scheduled: {:?}", again.action);
        };
        assert!(same.saturating_duration_since(retry) < Duration::from_millis(200));

        t.clock.advance(delay);
        t.r.reconcile(&key());
        assert_eq!(
            t.asked.load(Ordering::SeqCst),
            2,
            "asked again once the gate opened"
        );
    }

    #[test]
    fn a_spec_edit_asks_at_once_and_starts_its_backoff_afresh() {
        let t = rig(vec![binding(&[FINALIZER], json!({}))], true, "");
        let delay_of = |r: Reconciled, clock: &FakeClock| match r.action {
            Action::RequeueAt(at) => at - clock.now(),
            other => panic!("a retry is scheduled: {other:?}"),
        };
        let first = delay_of(t.r.reconcile(&key()), &t.clock);
        t.clock.advance(first);
        let second = delay_of(t.r.reconcile(&key()), &t.clock);
        assert!(
            second >= Duration::from_secs(8),
            "the backoff grew: {second:?}"
        );
        assert_eq!(t.asked.load(Ordering::SeqCst), 2);

        let mut edited = binding(&[FINALIZER], json!({}));
        edited["metadata"]["resourceVersion"] = json!("6");
        edited["spec"]["acr"]["scope"] = json!("repository:other:pull");
        let kind = Kind::Bindings(ApiVersion::V1beta2);
        lock(&t.store).fold(Update::Watched(kind, &WatchEvent::Applied(edited)));
        let third = delay_of(t.r.reconcile(&key()), &t.clock);
        assert_eq!(
            t.asked.load(Ordering::SeqCst),
            3,
            "new inputs pass the gate"
        );
        assert!(
            third <= Duration::from_secs(7),
            "and start at 5 s again: {third:?}"
        );
    }

    #[test]
    fn a_deleted_binding_is_forgotten_without_a_request() {
        let t = rig(vec![], false, "");
        let r = t.r.reconcile(&key());
        assert_eq!(r.action, Action::Forget);
        assert!(t.api.calls().is_empty());
    }

    #[test]
    fn a_binding_that_left_the_selector_loses_only_our_finalizer() {
        let t = rig(vec![], false, "shard=a");
        let obj = binding(&["other/keep", FINALIZER], json!({"shard": "b"}));
        lock(&t.api.objects).insert(BINDING.to_string(), obj);
        lock(&t.store).fold(Update::LeftSelector(key()));
        let r = t.r.reconcile(&key());
        assert_eq!(r.action, Action::Forget);
        assert_eq!(
            t.api.calls(),
            vec![format!("GET {BINDING}"), format!("PATCH {BINDING}")]
        );
        assert!(!lock(&t.store).left_selector(&key()), "released once");
    }

    #[test]
    fn a_binding_back_in_the_selector_keeps_its_finalizer() {
        let t = rig(vec![], false, "shard=a");
        let obj = binding(&[FINALIZER], json!({"shard": "a"}));
        lock(&t.api.objects).insert(BINDING.to_string(), obj);
        lock(&t.store).fold(Update::LeftSelector(key()));
        t.r.reconcile(&key());
        assert_eq!(t.api.calls(), vec![format!("GET {BINDING}")]);
    }

    #[test]
    fn an_api_failure_backs_off_without_an_event() {
        let t = rig(vec![binding(&[FINALIZER], json!({}))], false, "");
        *lock(&t.api.fail) = Some(("POST", 500));
        let r = t.r.reconcile(&key());
        assert!(r.failed);
        assert_eq!(r.note, None);
        let Action::RequeueAt(at) = r.action else {
            panic!("a retry is scheduled: {:?}", r.action);
        };
        let delay = at - t.clock.now();
        assert!(
            delay >= Duration::from_secs(4) && delay <= Duration::from_secs(6),
            "{delay:?}"
        );
    }
}

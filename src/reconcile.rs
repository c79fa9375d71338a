//! One reconcile of one binding: observe, plan, fetch a token if the plan needs one, apply the
//! writes in order, and report what comes next.
//!
//! Every write carries a precondition. A conflict means someone else changed an object since we
//! looked: we read that object again, plan again from the new observation, and try once more
//! (bounded), keeping any token already fetched so a conflict never costs a second exchange.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use time::OffsetDateTime;

use crate::azure::imds::ManagedIdentity;
use crate::binding::{ApiVersion, Identity};
use crate::events::Regarding;
use crate::kube::{self, Client, Preconditions, Resource};
use crate::metrics::{Metrics, SecretOp};
use crate::plan::{self, Minted, MintedToken, Outcome, PlanConfig, TokenNeed, Write};
use crate::store::{BindingKey, Observation, Store};
use crate::tokens::{
    AcrTokenRequest, ClientAssertion, Credential, TokenError, TokenService, TokenStage,
};
use crate::workload::{
    self, ManagedIdentityAssertion, ServiceAccountToken, TOKEN_EXCHANGE_RESOURCE,
};

/// How many times one reconcile re-plans after a write conflicted.
const MAX_ATTEMPTS: usize = 4;
/// How long reconciles wait at start-up for the Secret and ServiceAccount watches to list once
/// (a cache sync). After that they go on with what the store knows and never wait again.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often the store is checked while waiting for the sync.
const SYNC_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The ACR audience used when tokens are requested for the registry instead of ARM.
pub const ACR_AUDIENCE: &str = "https://containerregistry.azure.net";

/// What a reconcile ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome2 {
    /// The binding no longer exists.
    Gone,
    /// The pass completed. `error` is what the binding's status now says (a validation or token
    /// failure); `refresh_at` is when the token must next be refreshed.
    Done {
        /// The binding's error, if any.
        error: Option<String>,
        /// Next refresh deadline.
        refresh_at: Option<OffsetDateTime>,
        /// Writes made.
        writes: usize,
        /// Whether a fresh token was written to the pull Secret of a binding that was not ready
        /// before (new, or failing): the moments worth a `TokenRefreshed` Event.
        secret_written: bool,
        /// The binding, for Events about it.
        regarding: Option<Regarding>,
        /// When a failed token request may be retried (set only when the token failed).
        token_retry_at: Option<std::time::Instant>,
    },
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
    pub fn retry_after(&self) -> Option<std::time::Duration> {
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

/// Everything a reconcile needs, shared by the workers.
pub struct Reconciler {
    /// The API client.
    pub client: Client,
    /// The token service.
    pub tokens: Arc<TokenService>,
    /// The shared store.
    pub store: Arc<Mutex<Store>>,
    /// Planner settings.
    pub plan: PlanConfig,
    /// Request Entra/IMDS tokens for the registry audience instead of ARM.
    pub acr_audience: bool,
    /// `--authority-host`: the Entra authority for every cloud (else the binding's cloud's).
    pub authority_host: Option<String>,
    /// `--service-account-token-audience`: the one audience of minted ServiceAccount tokens.
    pub token_audience: String,
    /// Write counters.
    pub metrics: Arc<Metrics>,
    /// Recent token failures; see [`TokenGate`].
    pub token_gate: TokenGate,
    /// Whether this replica may write now (leader election); checked before every write, so a
    /// replica that could not renew its lease stops writing before another can take over.
    pub may_write: Box<dyn Fn() -> bool + Send + Sync>,
    /// `--identity-policy`, checked before any token is requested.
    pub policy: crate::policy::PolicyHandle,
}

/// Keeps event-triggered passes from hammering Azure while a binding's token keeps failing.
///
/// Watch events (another binding patching the shared ServiceAccount, say) queue a failing binding
/// long before its backoff expires. Such a pass still fixes what it can in Kubernetes, but for the
/// same inputs it reuses the last token error instead of asking Azure again until the retry time.
/// A changed input (a spec edit) is asked for at once.
#[derive(Default)]
pub struct TokenGate {
    failures: Mutex<std::collections::HashMap<BindingKey, TokenFailure>>,
}

struct TokenFailure {
    inputs_hash: String,
    count: u32,
    retry_at: std::time::Instant,
    message: String,
}

impl TokenGate {
    fn lock(&self) -> MutexGuard<'_, std::collections::HashMap<BindingKey, TokenFailure>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last error, if the same inputs failed and their retry time has not come.
    fn blocked(&self, key: &BindingKey, inputs_hash: &str) -> Option<String> {
        let g = self.lock();
        let f = g.get(key)?;
        (f.inputs_hash == inputs_hash && std::time::Instant::now() < f.retry_at)
            .then(|| f.message.clone())
    }

    fn failed(&self, key: &BindingKey, inputs_hash: &str, message: &str) {
        let mut g = self.lock();
        let count = g
            .get(key)
            .filter(|f| f.inputs_hash == inputs_hash)
            .map_or(0, |f| f.count.saturating_add(1));
        // Three quarters of the worker's (jittered ±20 %) delay, so its scheduled retry always passes.
        let delay = crate::schedule::FAILURE_BASE
            .saturating_mul(1u32 << count.min(16))
            .min(crate::schedule::FAILURE_CAP)
            .mul_f64(0.75);
        g.insert(
            key.clone(),
            TokenFailure {
                inputs_hash: inputs_hash.to_string(),
                count,
                retry_at: std::time::Instant::now() + delay,
                message: message.to_string(),
            },
        );
    }

    fn succeeded(&self, key: &BindingKey) {
        self.lock().remove(key);
    }

    /// When the failing token of `key` may be asked for again.
    fn retry_at(&self, key: &BindingKey) -> Option<std::time::Instant> {
        self.lock().get(key).map(|f| f.retry_at)
    }

    /// Drops what is known about a deleted binding.
    pub fn forget(&self, key: &BindingKey) {
        self.lock().remove(key);
    }
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

/// Why a write did not apply.
enum WriteFailure {
    /// A precondition failed or the object already exists: re-observe and re-plan.
    Conflict,
    /// Anything else.
    Fatal(ReconcileError),
}

impl Reconciler {
    fn store(&self) -> MutexGuard<'_, Store> {
        // The store's methods leave it consistent at every return, so a poisoned lock (a panic in
        // another worker) carries no broken invariant.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (bounded) until the store has seen every Secret and ServiceAccount once: planning
    /// earlier could delete an old Secret that a not yet listed ServiceAccount still references.
    fn wait_for_sync(&self, key: &BindingKey) {
        let deadline = std::time::Instant::now() + SYNC_WAIT;
        while !self.store().synced() {
            if std::time::Instant::now() >= deadline {
                log::warn!("{key}: Secrets and ServiceAccounts are not listed yet; going on");
                self.store().give_up_sync();
                return;
            }
            std::thread::sleep(SYNC_POLL);
        }
    }

    /// Reconciles one binding.
    pub fn reconcile(&self, key: &BindingKey) -> Result<Outcome2, ReconcileError> {
        self.wait_for_sync(key);
        let mut minted: Option<Minted> = None;
        let mut writes_made = 0;
        for _ in 0..MAX_ATTEMPTS {
            let observation = self.store().observe(key);
            let obs = match observation {
                None => {
                    self.token_gate.forget(key);
                    return Ok(Outcome2::Gone);
                }
                Some(Observation::NeedServiceAccount { namespace, name }) => {
                    self.fetch_service_account(&namespace, &name)?;
                    continue;
                }
                Some(Observation::Ready(obs)) => obs,
            };
            let now = OffsetDateTime::now_utc();
            let outcome = match plan::plan(&obs, &self.plan, now, minted.as_ref()) {
                Outcome::NeedToken(need) => {
                    let m = match self.token_gate.blocked(key, &need.inputs_hash) {
                        Some(message) => Minted::Err(message),
                        None => {
                            let m = self.mint(&need);
                            match &m {
                                Minted::Ok(_) => self.token_gate.succeeded(key),
                                Minted::Err(e) => self.token_gate.failed(key, &need.inputs_hash, e),
                            }
                            m
                        }
                    };
                    let o = plan::plan(&obs, &self.plan, now, Some(&m));
                    minted = Some(m);
                    o
                }
                done => done,
            };
            let Outcome::Done(mut p) = outcome else {
                // The planner asks for a token only once per observation; asking again would
                // mean it ignored the one we gave it.
                return Err(ReconcileError::TokenAskedTwice);
            };
            add_conditions(&obs.binding, &mut p, now);
            let mut rv = obs.binding.meta.resource_version.clone();
            let finalizers = obs.binding.meta.finalizers.clone();
            let mut conflicted = false;
            for w in &p.writes {
                if !(self.may_write)() {
                    return Err(ReconcileError::NotLeader);
                }
                match self.apply(key, w, &mut rv, &finalizers) {
                    Ok(()) => {
                        writes_made += 1;
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
            let token_retry_at = match &minted {
                Some(Minted::Err(_)) => self.token_gate.retry_at(key),
                _ => None,
            };
            return Ok(Outcome2::Done {
                error: p.error,
                refresh_at: p.refresh_at,
                writes: writes_made,
                secret_written,
                regarding: Some(regarding),
                token_retry_at,
            });
        }
        Err(ReconcileError::TooManyConflicts)
    }

    /// Drops our finalizer from a binding that left `--label-selector` (upstream leaves it, so a
    /// later deletion hangs forever, spec §9.8). Only the finalizer goes: its Secret stays valid
    /// and attached (so pulls keep working), the owner reference still lets the garbage collector
    /// remove the Secret when the binding is deleted, and a shard whose selector matches it now
    /// adds its own finalizer. Does nothing unless this replica may write.
    pub fn release_unselected(&self, key: &BindingKey, selector: &crate::selector::Selector) {
        if !(self.may_write)() {
            return;
        }
        let path = binding_path(key, None);
        let obj = match self.client.get(&path) {
            Ok(obj) => obj,
            Err(e) if e.is_not_found() => return,
            Err(e) => {
                log::warn!("{key}: left the label selector, but reading it failed: {e}");
                return;
            }
        };
        let labels: std::collections::BTreeMap<String, String> = obj["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        if selector.matches(&labels) {
            return;
        }
        let finalizers: Vec<String> = obj["metadata"]["finalizers"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == crate::binding::FINALIZER) {
            return;
        }
        let remaining: Vec<String> = finalizers
            .into_iter()
            .filter(|f| f != crate::binding::FINALIZER)
            .collect();
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        match self
            .client
            .patch_json(&path, &plan::remove_finalizer_patch(rv, &remaining))
        {
            Ok(_) => log::info!(
                "{key}: no longer matches --label-selector; removed our finalizer so its deletion cannot hang"
            ),
            Err(e) => log::warn!("{key}: left the label selector; removing our finalizer failed: {e}"),
        }
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
        match self.client.get(&path) {
            Ok(obj) => self.store().apply_fetched_sa(&obj),
            Err(e) if e.is_not_found() => self.store().mark_sa_absent(ns, name),
            Err(e) => return Err(kube_err(format!("get serviceaccount {ns}/{name}"))(e)),
        }
        Ok(())
    }

    /// Gets a registry token for `need`, as the planner's `Minted` (errors carry upstream's prefixes).
    fn mint(&self, need: &TokenNeed) -> Minted {
        let credential = match self.credential(need) {
            Ok(c) => c,
            Err(msg) => {
                log::warn!("{}/{}: {msg}", need.namespace, need.binding_name);
                return Minted::Err(msg);
            }
        };
        let request = AcrTokenRequest {
            credential: &credential,
            audience: self.entra_audience(need),
            registry: &need.server,
            scope: &need.scope,
            not_issued_before: need.not_issued_before,
        };
        match self.tokens.acr_token(&request) {
            Ok(t) => Minted::Ok(MintedToken {
                password: t.password,
                expires: t.expires,
                issued: t.issued,
            }),
            Err(e) => {
                let msg = token_error_message(need.version, &e);
                log::warn!("{}/{}: {msg}", need.namespace, need.binding_name);
                Minted::Err(msg)
            }
        }
    }

    /// The IMDS resource / Entra audience: the registry's with `--entra-audience=acr`, else the
    /// binding's ARM audience.
    fn entra_audience<'a>(&self, need: &'a TokenNeed) -> &'a str {
        if self.acr_audience {
            ACR_AUDIENCE
        } else {
            need.arm_resource.as_str()
        }
    }

    /// `--authority-host` when given, else the binding's cloud's authority.
    fn authority(&self, need: &TokenNeed) -> String {
        self.authority_host
            .clone()
            .or_else(|| need.environment.authority_host().map(str::to_string))
            // The planner refuses the only environment without one (air-gapped without
            // cloudConfig), so this is never reached; Entra then reports the bad host.
            .unwrap_or_default()
    }

    /// The identity policy's verdict on `identity` for this binding's namespace and registry.
    fn allowed(&self, need: &TokenNeed, identity: &str) -> Result<(), String> {
        self.policy
            .check(&need.namespace, identity, &need.registry.host)
            .map_err(|d| d.to_string())
    }

    /// Who asks for the token; an error is the user-facing status message. The identity policy
    /// is checked before anything is requested, the ServiceAccount token included.
    fn credential(&self, need: &TokenNeed) -> Result<Credential, String> {
        for id in crate::policy::spec_identities(&need.identity) {
            self.allowed(need, &id)?;
        }
        Ok(match &need.identity {
            Identity::ManagedClientId(id) => {
                Credential::Managed(ManagedIdentity::ClientId(id.to_string()))
            }
            Identity::ManagedResourceId(id) => {
                Credential::Managed(ManagedIdentity::ResourceId(id.to_string()))
            }
            Identity::SystemAssigned => Credential::Managed(ManagedIdentity::System),
            Identity::Workload {
                service_account_ref,
                client_id,
                tenant_id,
            } => {
                // Unlike upstream, the token is minted for (and the annotations read from) the
                // ServiceAccount the spec names as the federated one, not the pull-secret target.
                let ids = workload::lookup_ids(
                    &self.client,
                    &need.namespace,
                    service_account_ref,
                    client_id.as_deref(),
                    tenant_id.as_deref(),
                )
                .map_err(|e| e.to_string())?;
                self.allowed(need, &ids.client_id)?;
                let source = ServiceAccountToken::new(
                    self.client.clone(),
                    &need.namespace,
                    service_account_ref,
                    &self.token_audience,
                );
                Credential::ClientAssertion(ClientAssertion {
                    authority_host: self.authority(need),
                    tenant: ids.tenant_id,
                    client_id: ids.client_id,
                    source: Arc::new(source),
                })
            }
            Identity::FederatedApplication {
                managed,
                tenant_id,
                client_id,
            } => {
                let node = Credential::Managed(managed.clone());
                let token = self
                    .tokens
                    .entra_token(&node, TOKEN_EXCHANGE_RESOURCE)
                    .map_err(|e| format!("failed to retrieve ARM token: {e}"))?;
                let source = ManagedIdentityAssertion::new(&node_key(managed), token.token);
                Credential::ClientAssertion(ClientAssertion {
                    authority_host: self.authority(need),
                    tenant: tenant_id.clone(),
                    client_id: client_id.clone(),
                    source: Arc::new(source),
                })
            }
        })
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
                .client
                .patch_json(
                    &binding_path(key, None),
                    &plan::add_finalizer_patch(rv, finalizers),
                )
                .map(|obj| self.binding_written(key, &obj, rv, "added finalizer")),
            Write::RemoveFinalizer { remaining, .. } => self
                .client
                .patch_json(
                    &binding_path(key, None),
                    &plan::remove_finalizer_patch(rv, remaining),
                )
                .map(|obj| self.binding_written(key, &obj, rv, "removed finalizer")),
            Write::UpdateStatus { status } => self
                .client
                .patch_merge(
                    &binding_path(key, Some("status")),
                    &plan::status_merge_patch(Some(rv), status),
                )
                .map(|obj| self.binding_written(key, &obj, rv, "updated status")),
            Write::CreateSecret { body } => {
                let path = Resource::SECRETS.path(Some(ns), None, None);
                match self.client.create(&path, body) {
                    Ok(obj) => {
                        log::info!("{key}: created secret {}", obj_name(&obj));
                        self.store().apply_secret(&obj);
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
                match self.client.replace(&path, body) {
                    Ok(obj) => {
                        log::info!("{key}: refreshed secret {name}");
                        self.store().apply_secret(&obj);
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
                match self.client.delete(&path, Some(&pre)) {
                    Ok(_) => {
                        log::info!("{key}: deleted secret {name}");
                        self.store().remove_secret(ns, name);
                        Ok(())
                    }
                    Err(e) if e.is_not_found() => {
                        self.store().remove_secret(ns, name);
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
                match self.client.patch_json(&path, &patch) {
                    Ok(obj) => {
                        log::info!(
                            "{key}: serviceaccount {name} pull secrets are now {image_pull_secrets:?}"
                        );
                        self.store().apply_fetched_sa(&obj);
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
        // A finalizer removal may have been the last word: the object is then gone.
        if obj["metadata"]["deletionTimestamp"].is_string()
            && obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
        {
            self.store().delete_binding(key.version, obj);
            return;
        }
        if let Err(e) = self.store().apply_binding(key.version, obj) {
            log::warn!("{key}: cannot decode the binding the server returned: {e}");
        }
    }

    fn refresh_binding(&self, key: &BindingKey) -> Result<(), ReconcileError> {
        match self.client.get(&binding_path(key, None)) {
            Ok(obj) => {
                if let Err(e) = self.store().apply_binding(key.version, &obj) {
                    log::warn!("{key}: cannot decode the binding: {e}");
                }
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                let gone =
                    serde_json::json!({"metadata": {"namespace": key.namespace, "name": key.name}});
                self.store().delete_binding(key.version, &gone);
                Ok(())
            }
            Err(e) => Err(kube_err(format!("get {key}"))(e)),
        }
    }

    fn refresh_secret(&self, ns: &str, name: &str) -> Result<(), WriteFailure> {
        let path = Resource::SECRETS.path(Some(ns), Some(name), None);
        match self.client.get(&path) {
            Ok(obj) => {
                self.store().apply_secret(&obj);
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                self.store().remove_secret(ns, name);
                Ok(())
            }
            Err(e) => Err(WriteFailure::Fatal(kube_err(format!(
                "get secret {ns}/{name}"
            ))(e))),
        }
    }
}

/// Adds `Ready`/`TokenValid` conditions and `observedGeneration` to the pass: merged into its
/// status write, or as a write of their own when only they are stale. A failing binding is also
/// revisited when its token expires, so `TokenValid` turns false on time.
fn add_conditions(b: &crate::binding::Binding, p: &mut plan::Plan, now: OffsetDateTime) {
    if b.meta.deleting {
        return;
    }
    let written_expiry = p.writes.iter().rev().find_map(|w| match w {
        Write::UpdateStatus { status } => status["tokenExpirationTime"]
            .as_str()
            .and_then(crate::binding::parse_time),
        _ => None,
    });
    let expires = written_expiry.or(b.status.token_expiration_time);
    if p.error.is_some() && p.refresh_at.is_none() {
        p.refresh_at = expires
            .filter(|e| *e > now)
            .map(|e| e + time::Duration::seconds(1));
    }
    let Some(extra) = crate::conditions::status_patch(b, p.error.as_deref(), expires, now) else {
        return;
    };
    let existing = p.writes.iter_mut().find_map(|w| match w {
        Write::UpdateStatus { status } => Some(status),
        _ => None,
    });
    match (existing, extra) {
        (Some(Value::Object(status)), Value::Object(more)) => status.extend(more),
        (_, extra) => p.writes.push(Write::UpdateStatus { status: extra }),
    }
}

/// The status message for a failed token flow, with upstream's prefixes. A ServiceAccount token
/// that could not be minted keeps its own prefix (`failed to mint service account token: `).
fn token_error_message(version: ApiVersion, e: &TokenError) -> String {
    let msg = match (version, e) {
        (ApiVersion::V1beta1, _) => format!("failed to retrieve ACR access token: {e}"),
        (ApiVersion::V1beta2, TokenError::Assertion(a)) => a.to_string(),
        (ApiVersion::V1beta2, e) if e.stage() == TokenStage::Entra => {
            format!("failed to retrieve ARM token: {e}")
        }
        (ApiVersion::V1beta2, e) => format!("failed to retrieve ACR token: {e}"),
    };
    without_trace(msg)
}

/// Drops what Entra appends to every error description (`Trace ID: … Correlation ID: …
/// Timestamp: …`). Those change on every attempt; kept, each failure would rewrite status, and
/// the status write would wake the binding again at once instead of after its backoff.
fn without_trace(mut msg: String) -> String {
    if let Some(at) = msg.find("Trace ID:") {
        msg.truncate(at);
        msg.truncate(msg.trim_end().len());
    }
    msg
}

/// A stable name for a node identity, for the cross-tenant assertion's cache key.
fn node_key(m: &ManagedIdentity) -> String {
    match m {
        ManagedIdentity::System => "system".to_string(),
        ManagedIdentity::ClientId(c) => format!("client:{c}"),
        ManagedIdentity::ResourceId(r) => format!("resource:{r}"),
    }
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
    use crate::azure::entra::EntraError;
    use crate::azure::error::ErrorDetail;
    use crate::tokens::AssertionError;
    use crate::workload::WorkloadError;

    fn entra_refusal() -> TokenError {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found. Trace ID: 1234 Correlation ID: 5678 Timestamp: 2026-01-01 00:00:00Z"}"#;
        TokenError::Entra(EntraError::Status {
            status: 400,
            detail: ErrorDetail::from_body(body),
        })
    }

    #[test]
    fn entra_errors_keep_error_and_description_but_not_the_per_attempt_trace() {
        let msg = token_error_message(ApiVersion::V1beta2, &entra_refusal());
        assert_eq!(
            msg,
            "failed to retrieve ARM token: entra token request failed with status 400: \
             invalid_client: AADSTS700213: No matching federated identity record found."
        );
    }

    #[test]
    fn a_service_account_token_failure_keeps_its_own_prefix() {
        let e = TokenError::Assertion(AssertionError::new(WorkloadError::ServiceAccountNotFound {
            name: "sa".into(),
        }));
        assert_eq!(
            token_error_message(ApiVersion::V1beta2, &e),
            "failed to mint service account token: service account \"sa\" not found"
        );
        assert!(token_error_message(ApiVersion::V1beta1, &e)
            .starts_with("failed to retrieve ACR access token: "));
    }
}

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
use crate::kube::{self, Client, Preconditions, Resource};
use crate::plan::{self, Minted, MintedToken, Outcome, Password, PlanConfig, TokenNeed, Write};
use crate::store::{BindingKey, Observation, Store};
use crate::tokens::{AcrTokenRequest, Credential, TokenService, TokenStage};

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
                None => return Ok(Outcome2::Gone),
                Some(Observation::NeedServiceAccount { namespace, name }) => {
                    self.fetch_service_account(&namespace, &name)?;
                    continue;
                }
                Some(Observation::Ready(obs)) => obs,
            };
            let now = OffsetDateTime::now_utc();
            let outcome = match plan::plan(&obs, &self.plan, now, minted.as_ref()) {
                Outcome::NeedToken(need) => {
                    let m = self.mint_once(key, &need);
                    let o = plan::plan(&obs, &self.plan, now, Some(&m));
                    minted = Some(m);
                    o
                }
                done => done,
            };
            let Outcome::Done(p) = outcome else {
                // The planner asks for a token only once per observation; asking again would
                // mean it ignored the one we gave it.
                return Err(ReconcileError::TooManyConflicts);
            };
            let mut rv = obs.binding.meta.resource_version.clone();
            let finalizers = obs.binding.meta.finalizers.clone();
            let mut conflicted = false;
            for w in &p.writes {
                match self.apply(key, w, &mut rv, &finalizers) {
                    Ok(()) => writes_made += 1,
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
            return Ok(Outcome2::Done {
                error: p.error,
                refresh_at: p.refresh_at,
                writes: writes_made,
            });
        }
        Err(ReconcileError::TooManyConflicts)
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

    /// Like [`Reconciler::mint`], but a failure for the same inputs moments ago is answered again
    /// instead of asking Azure (the pass that our own failure status write triggers; see
    /// [`crate::store::FAILED_TOKEN_HOLD`]).
    fn mint_once(&self, key: &BindingKey, need: &TokenNeed) -> Minted {
        let now = std::time::Instant::now();
        if let Some(message) = self.store().recent_token_failure(key, need, now) {
            log::debug!("{key}: the token attempt failed moments ago; not asking again yet");
            return Minted::Err(message);
        }
        let minted = self.mint(need);
        let failure = match &minted {
            Minted::Err(message) => Some(message.as_str()),
            Minted::Ok(_) => None,
        };
        // Timed from the end: an attempt with retries inside can take many seconds.
        let ended = std::time::Instant::now();
        self.store().record_token_attempt(key, need, failure, ended);
        minted
    }

    /// Gets a registry token for `need`, as the planner's `Minted` (errors carry upstream's prefixes).
    fn mint(&self, need: &TokenNeed) -> Minted {
        let credential = match &need.identity {
            Identity::ManagedClientId(id) => Credential::Managed(ManagedIdentity::ClientId(id.clone())),
            Identity::ManagedResourceId(id) => {
                Credential::Managed(ManagedIdentity::ResourceId(id.clone()))
            }
            Identity::SystemAssigned => Credential::Managed(ManagedIdentity::System),
            Identity::Workload { .. } => {
                return Minted::Err(
                    "failed to retrieve ARM token: workload identity is not supported by this build yet"
                        .into(),
                )
            }
        };
        let audience = if self.acr_audience {
            ACR_AUDIENCE
        } else {
            need.arm_resource.as_str()
        };
        let request = AcrTokenRequest {
            credential: &credential,
            audience,
            registry: &need.server,
            scope: &need.scope,
            not_issued_before: need.not_issued_before,
        };
        match self.tokens.acr_token(&request) {
            Ok(t) => Minted::Ok(MintedToken {
                password: Password::new(t.password.expose().to_string()),
                expires: t.expires,
                issued: t.issued,
            }),
            Err(e) => {
                let msg = match (need.version, e.stage()) {
                    (ApiVersion::V1beta1, _) => format!("failed to retrieve ACR access token: {e}"),
                    (ApiVersion::V1beta2, TokenStage::Entra) => {
                        format!("failed to retrieve ARM token: {e}")
                    }
                    (ApiVersion::V1beta2, TokenStage::Acr) => {
                        format!("failed to retrieve ACR token: {e}")
                    }
                };
                log::warn!("{}/{}: {msg}", need.namespace, need.binding_name);
                Minted::Err(msg)
            }
        }
    }

    /// Applies one write and folds the server's answer into the store.
    fn apply(
        &self,
        key: &BindingKey,
        w: &Write,
        rv: &mut String,
        finalizers: &[String],
    ) -> Result<(), WriteFailure> {
        let ns = key.namespace.as_str();
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
                self.store().apply_fetched_secret(&obj);
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

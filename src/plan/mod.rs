//! The pure planner: observed objects and now in, ordered writes and the next deadline out.
//!
//! Upstream does one write per reconcile pass and waits for its own watch event (spec §2.3); we
//! plan the whole pass at once, each write carrying its concurrency precondition, so a new binding
//! costs four writes (finalizer, Secret, ServiceAccount, status), a refresh two, steady state none.
//! Planning is two-phase so it stays pure: the first call may answer `NeedToken`; the caller
//! fetches a token and calls again with it.

pub mod conditions;
mod observed;
mod secret;
pub mod strmap;
mod token;
mod write;

use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::binding::names::{self, BINDING_LABEL};
use crate::binding::suffix::{AllowList, ServerAddr};
use crate::binding::{ApiVersion, Binding, BindingError, Spec, FINALIZER, KIND};
use crate::clock::rfc3339;

pub use observed::{Observed, SaObs, SecretObs};
pub use secret::{DOCKERCONFIG_TYPE, EXPIRY_ANNOTATION, INPUTS_ANNOTATION, REFRESH_ANNOTATION};
pub use token::{Minted, MintedToken, Password, TokenNeed};
pub use write::{
    add_finalizer_patch, remove_finalizer_patch, service_account_patch, status_merge_patch, Write,
};

/// v1beta1 refreshes this long before expiry (upstream's `tokenRefreshBuffer`).
const V1BETA1_REFRESH_BUFFER: Duration = Duration::minutes(30);
/// The earliest a refresh may be scheduled after `now`: a deadline ≤ now would spin.
const MIN_REQUEUE: Duration = Duration::seconds(1);
/// A minted token is kept at least this long (or half its lifetime, if that is shorter), whatever
/// the refresh rule says: one that arrives already expired (a registry clock behind ours) would
/// otherwise be re-minted by every pass, and every Secret write wakes the binding again.
const MIN_TOKEN_AGE: Duration = Duration::seconds(30);

/// Planner settings.
#[derive(Clone, Debug)]
pub struct PlanConfig {
    /// v1beta2 refreshes at this fraction of the token lifetime (validated in (0, 1] elsewhere).
    pub ttl_rotation_fraction: f64,
    /// Which registry hosts are allowed.
    pub allow: AllowList,
}

impl Default for PlanConfig {
    /// Fraction 0.5 (upstream's default) and the default allow-list.
    fn default() -> Self {
        PlanConfig {
            ttl_rotation_fraction: 0.5,
            allow: AllowList::default(),
        }
    }
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A Secret must be (re)generated: fetch a token and plan again with it.
    NeedToken(Box<TokenNeed>),
    /// The complete pass.
    Done(Plan),
}

/// The writes of one pass and what comes next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Writes, in the order they must be applied.
    pub writes: Vec<Write>,
    /// The binding's error after this pass (what `status.error` says), if any.
    pub error: Option<BindingError>,
    /// When the next refresh is due (always after `now`); `None` = wait for a change.
    pub refresh_at: Option<OffsetDateTime>,
}

/// Plans one reconcile pass, conditions included. Call with `minted: None` first; on `NeedToken`
/// fetch a token and call again with the same observation and `Some(..)`.
pub fn plan(
    obs: &Observed,
    cfg: &PlanConfig,
    now: OffsetDateTime,
    minted: Option<&Minted>,
) -> Outcome {
    match writes(obs, cfg, now, minted) {
        Outcome::Done(mut p) => {
            add_conditions(&obs.binding, &mut p, now);
            Outcome::Done(p)
        }
        need => need,
    }
}

/// Adds `Ready`/`TokenValid` conditions and `observedGeneration` to the pass: merged into its
/// status write, or as a write of their own when only they are stale. A failing binding is also
/// revisited when its token expires, so `TokenValid` turns false on time.
fn add_conditions(b: &Binding, p: &mut Plan, now: OffsetDateTime) {
    if b.meta.deleting {
        return;
    }
    let written_expiry = p.writes.iter().rev().find_map(|w| match w {
        Write::UpdateStatus { status } => status["tokenExpirationTime"]
            .as_str()
            .and_then(rfc3339::parse_seconds),
        _ => None,
    });
    let expires = written_expiry.or(b.status.token_expiration_time);
    if p.error.is_some() && p.refresh_at.is_none() {
        p.refresh_at = expires
            .filter(|e| *e > now)
            .map(|e| e + time::Duration::seconds(1));
    }
    let Some(extra) = conditions::status_patch(b, p.error.as_ref(), expires, now) else {
        return;
    };
    let existing = p.writes.iter_mut().find_map(|w| match w {
        Write::UpdateStatus { status } => Some(status),
        _ => None,
    });
    match (existing, extra) {
        (Some(serde_json::Value::Object(status)), serde_json::Value::Object(more)) => {
            status.extend(more)
        }
        (_, extra) => p.writes.push(Write::UpdateStatus { status: extra }),
    }
}

/// The pass's writes without the conditions (upstream's behaviour; what the table tests hold).
fn writes(
    obs: &Observed,
    cfg: &PlanConfig,
    now: OffsetDateTime,
    minted: Option<&Minted>,
) -> Outcome {
    let b = &obs.binding;
    let own = Ownership::of(obs);
    if b.meta.deleting {
        return Outcome::Done(plan_deletion(obs, &own));
    }
    let mut writes = Vec::new();
    if !b.has_finalizer() {
        writes.push(Write::AddFinalizer);
    }
    let (spec, registry) = match validate(b, cfg) {
        Ok(v) => v,
        Err(e) => return Outcome::Done(fail(b, writes, e)),
    };
    // Previously targeted ServiceAccounts lose every reference to our Secrets (spec §2.12; this
    // also works for v1beta1, unlike upstream).
    let elsewhere = obs
        .other_sas
        .iter()
        .filter(|sa| *sa.name != *spec.target_service_account);
    writes.extend(elsewhere.filter_map(|sa| unreference(sa, &own)));
    let Some(target) = obs.target_sa.as_ref() else {
        let e = BindingError::ServiceAccountNotFound {
            name: spec.target_service_account.to_string(),
        };
        return Outcome::Done(fail(b, writes, e));
    };
    if own.foreign_with_expected_name {
        let e = BindingError::SecretConflict {
            name: own.expected.clone(),
        };
        return Outcome::Done(fail(b, writes, e));
    }

    let current = own.current(obs);
    let fresh = current.and_then(|s| usable_times(s, b, spec, cfg, now));
    let times = match fresh {
        Some(times) => times,
        None => match minted {
            None => return Outcome::NeedToken(Box::new(token_need(b, spec, registry, current))),
            Some(Minted::Err(e)) => return Outcome::Done(fail(b, writes, e.clone())),
            Some(Minted::Ok(token)) => {
                write_secret(&mut writes, b, spec, &own.expected, current, token);
                TokenTimes {
                    issued: whole_seconds(token.issued),
                    expires: whole_seconds(token.expires),
                }
            }
        },
    };

    writes.extend(attach(target, &own));
    // Secrets from older naming schemes go only after every reference to them is gone.
    let old = own.owned(obs).filter(|s| s.name != own.expected);
    writes.extend(old.map(delete_secret));
    writes.extend(success_status(b, times));
    let due = refresh_boundary(b.version, times, cfg.ttl_rotation_fraction);
    Outcome::Done(Plan {
        writes,
        error: None,
        refresh_at: Some(clamp_after(due, now)),
    })
}

/// Which observed Secrets belong to the binding.
struct Ownership {
    /// The name this binding's version expects.
    expected: String,
    /// Names of Secrets we own (any naming scheme).
    owned_names: Vec<String>,
    /// A Secret has the expected name but is not ours.
    foreign_with_expected_name: bool,
}

impl Ownership {
    fn of(obs: &Observed) -> Ownership {
        let b = &obs.binding;
        let expected = b.secret_name();
        let owned_names: Vec<String> = obs
            .secrets
            .iter()
            .filter(|s| is_owned(b, s))
            .map(|s| s.name.clone())
            .collect();
        let foreign_with_expected_name = obs
            .secrets
            .iter()
            .any(|s| s.name == expected && !is_owned(b, s));
        Ownership {
            expected,
            owned_names,
            foreign_with_expected_name,
        }
    }

    fn owned<'a>(&'a self, obs: &'a Observed) -> impl Iterator<Item = &'a SecretObs> + 'a {
        obs.secrets
            .iter()
            .filter(move |s| is_owned(&obs.binding, s))
    }

    fn current<'a>(&self, obs: &'a Observed) -> Option<&'a SecretObs> {
        obs.secrets
            .iter()
            .find(|s| s.name == self.expected && is_owned(&obs.binding, s))
    }

    /// Whether a ServiceAccount reference to `name` is ours to remove.
    fn removable(&self, name: &str) -> bool {
        self.owned_names.iter().any(|n| n == name)
            || (name == self.expected && !self.foreign_with_expected_name)
    }
}

/// Ours = our label value (or the unlabelled legacy v1beta1 name) AND a controller
/// ownerReference to this very binding (group, kind and uid), so same-named bindings of the two
/// versions never touch each other's Secrets (spec §9.3).
fn is_owned(b: &Binding, s: &SecretObs) -> bool {
    let group_prefix = format!("{}/", b.version.group());
    let owner = s.owner_refs.iter().any(|o| {
        o.controller
            && o.kind == KIND
            && o.uid == b.meta.uid
            && o.api_version.starts_with(&group_prefix)
    });
    if !owner {
        return false;
    }
    match s.labels.get(BINDING_LABEL) {
        Some(v) => v == b.label_value(),
        None => s.name == names::v1beta1_secret_name(&b.meta.name),
    }
}

/// Deletion (spec §2.4): unreference, delete owned Secrets, drop the finalizer. Needs no valid
/// spec and never waits for a missing ServiceAccount.
fn plan_deletion(obs: &Observed, own: &Ownership) -> Plan {
    let b = &obs.binding;
    let Some(index) = b.meta.finalizers.iter().position(|f| f == FINALIZER) else {
        return Plan::default();
    };
    let mut writes = Vec::new();
    let sas = obs.target_sa.iter().chain(
        obs.other_sas
            .iter()
            .filter(|sa| obs.target_sa.as_ref().is_none_or(|t| t.name != sa.name)),
    );
    writes.extend(sas.filter_map(|sa| unreference(sa, own)));
    for s in own.owned(obs) {
        writes.push(delete_secret(s));
    }
    writes.push(Write::RemoveFinalizer {
        index,
        remaining: b
            .meta
            .finalizers
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect(),
    });
    Plan {
        writes,
        error: None,
        refresh_at: None,
    }
}

/// The spec, if usable, and the registry it may talk to; else the user-facing error.
fn validate<'a>(b: &'a Binding, cfg: &PlanConfig) -> Result<(&'a Spec, ServerAddr), BindingError> {
    let spec = b.spec.as_ref().map_err(|e| e.clone())?;
    if let Some(problem) = spec.problem() {
        return Err(problem.into());
    }
    let registry = cfg.allow.check(&spec.server)?;
    Ok((spec, registry))
}

/// An error pass: the writes so far plus a status error write if the error changed. Times and
/// the existing Secret are kept (spec §2.9).
fn fail(b: &Binding, mut writes: Vec<Write>, error: BindingError) -> Plan {
    let msg = error.to_string();
    if b.status.error.as_deref() != Some(msg.as_str()) {
        writes.push(Write::UpdateStatus {
            status: json!({ "error": msg }),
        });
    }
    Plan {
        writes,
        error: Some(error),
        refresh_at: None,
    }
}

/// Issue and expiry of a Secret's token, whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TokenTimes {
    issued: OffsetDateTime,
    expires: OffsetDateTime,
}

/// The current Secret's times if it can stay as it is: right type, our label, same inputs,
/// parsable annotations and not past its refresh boundary (spec §2.7, §2.8).
fn usable_times(
    s: &SecretObs,
    b: &Binding,
    spec: &Spec,
    cfg: &PlanConfig,
    now: OffsetDateTime,
) -> Option<TokenTimes> {
    if s.type_ != DOCKERCONFIG_TYPE
        || s.labels.get(BINDING_LABEL) != Some(b.label_value().as_str())
        || s.annotations.get(INPUTS_ANNOTATION) != Some(&*spec.inputs_hash)
    {
        return None;
    }
    let times = TokenTimes {
        issued: rfc3339::parse_seconds(s.annotations.get(REFRESH_ANNOTATION)?)?,
        expires: rfc3339::parse_seconds(s.annotations.get(EXPIRY_ANNOTATION)?)?,
    };
    if now > refresh_boundary(b.version, times, cfg.ttl_rotation_fraction) {
        return None;
    }
    Some(times)
}

/// When a token must be replaced: v1beta1 30 min before expiry; v1beta2 at the configured
/// fraction of its lifetime. Arithmetic that cannot be represented means "now".
fn refresh_boundary(version: ApiVersion, t: TokenTimes, fraction: f64) -> OffsetDateTime {
    let lifetime = t.expires - t.issued;
    let floor = if lifetime > Duration::ZERO {
        MIN_TOKEN_AGE.min(lifetime / 2)
    } else {
        MIN_TOKEN_AGE
    };
    let earliest = t.issued.checked_add(floor).unwrap_or(t.issued);
    lifetime_boundary(version, t, fraction).max(earliest)
}

/// The refresh boundary from the token's lifetime alone (spec §2.7, §2.8).
fn lifetime_boundary(version: ApiVersion, t: TokenTimes, fraction: f64) -> OffsetDateTime {
    match version {
        ApiVersion::V1beta1 => t
            .expires
            .checked_sub(V1BETA1_REFRESH_BUFFER)
            .unwrap_or(t.expires),
        ApiVersion::V1beta2 => {
            let secs = (t.expires - t.issued).as_seconds_f64() * fraction;
            Duration::checked_seconds_f64(secs)
                .and_then(|d| t.issued.checked_add(d))
                .unwrap_or(t.issued)
        }
    }
}

/// `due`, but never earlier than one second after `now` (upstream's clamp, commit `63d3907`).
fn clamp_after(due: OffsetDateTime, now: OffsetDateTime) -> OffsetDateTime {
    let earliest = now + MIN_REQUEUE;
    due.max(earliest)
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn token_need(
    b: &Binding,
    spec: &Spec,
    registry: ServerAddr,
    current: Option<&SecretObs>,
) -> TokenNeed {
    // Only a Secret minted for the same inputs can hold the token being replaced.
    let not_issued_before = current
        .filter(|s| s.annotations.get(INPUTS_ANNOTATION) == Some(&*spec.inputs_hash))
        .and_then(|s| s.annotations.get(REFRESH_ANNOTATION))
        .and_then(rfc3339::parse_seconds);
    TokenNeed {
        version: b.version,
        namespace: b.meta.namespace.to_string(),
        binding_name: b.meta.name.clone(),
        identity: spec.identity.clone(),
        server: spec.server.to_string(),
        registry,
        scope: spec.scope.to_string(),
        environment: spec.environment.clone(),
        // validate() refused the only spec without an ARM resource (air-gapped, no cloudConfig).
        arm_resource: spec.arm_resource.as_deref().unwrap_or_default().to_string(),
        target_service_account: spec.target_service_account.to_string(),
        inputs_hash: spec.inputs_hash.to_string(),
        not_issued_before,
    }
}

/// Creates or replaces the expected Secret with a fresh token. A Secret of another type cannot be
/// updated in place (type is immutable), so it is deleted and created again.
fn write_secret(
    writes: &mut Vec<Write>,
    b: &Binding,
    spec: &Spec,
    name: &str,
    current: Option<&SecretObs>,
    token: &MintedToken,
) {
    let content = secret::SecretContent {
        name,
        server: &spec.server,
        password: token.password.expose(),
        expires: token.expires,
        issued: token.issued,
        inputs_hash: &spec.inputs_hash,
    };
    match current {
        Some(s) if s.type_ == DOCKERCONFIG_TYPE => writes.push(Write::ReplaceSecret {
            name: name.to_string(),
            body: secret::secret_body(b, &content, Some(s)),
        }),
        Some(s) => {
            writes.push(delete_secret(s));
            writes.push(Write::CreateSecret {
                body: secret::secret_body(b, &content, None),
            });
        }
        None => writes.push(Write::CreateSecret {
            body: secret::secret_body(b, &content, None),
        }),
    }
}

/// Attaches the expected Secret and drops older names from the target in one patch, so there is
/// never a moment without a credential; sorted like upstream when anything changes (spec §2.6).
fn attach(target: &SaObs, own: &Ownership) -> Option<Write> {
    let mut pulls: Vec<String> = target
        .image_pull_secrets
        .iter()
        .filter(|n| **n == own.expected || !own.owned_names.contains(n))
        .cloned()
        .collect();
    if !pulls.contains(&own.expected) {
        pulls.push(own.expected.clone());
    }
    if pulls == target.image_pull_secrets {
        return None;
    }
    names::sort_pull_secrets(&mut pulls);
    Some(patch_sa(target, pulls))
}

/// Removes every reference to our Secrets from `sa` (no sort, like upstream), if it has any.
fn unreference(sa: &SaObs, own: &Ownership) -> Option<Write> {
    let kept: Vec<String> = sa
        .image_pull_secrets
        .iter()
        .filter(|n| !own.removable(n))
        .cloned()
        .collect();
    (kept.len() != sa.image_pull_secrets.len()).then(|| patch_sa(sa, kept))
}

/// The success status (spec §2.9), written only when it differs from what is observed.
fn success_status(b: &Binding, times: TokenTimes) -> Option<Write> {
    let same = b.status.error.is_none()
        && b.status.last_token_refresh_time.map(whole_seconds) == Some(times.issued)
        && b.status.token_expiration_time.map(whole_seconds) == Some(times.expires);
    (!same).then(|| Write::UpdateStatus {
        status: json!({
            "lastTokenRefreshTime": rfc3339::format_seconds(times.issued),
            "tokenExpirationTime": rfc3339::format_seconds(times.expires),
            "error": null,
        }),
    })
}

fn patch_sa(sa: &SaObs, image_pull_secrets: Vec<String>) -> Write {
    Write::PatchServiceAccount {
        name: sa.name.clone(),
        resource_version: sa.resource_version.clone(),
        image_pull_secrets,
    }
}

fn delete_secret(s: &SecretObs) -> Write {
    Write::DeleteSecret {
        name: s.name.clone(),
        uid: s.uid.clone(),
        resource_version: s.resource_version.clone(),
    }
}

#[cfg(test)]
mod tests;

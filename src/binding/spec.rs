//! Spec decoding for both versions: v1beta1 env resolution (spec §2.7), v1beta2 with the CRD's
//! CEL rules re-checked (spec §1.2, §2.8), and upstream's inputs-hash formulas.

use crate::binding::text::share;
use serde_json::Value;

use super::{
    clean_path, CloudConfig, Environment, Identity, ManagedIdentity, Spec, SpecError,
    V1beta1Defaults, DEFAULT_SERVICE_ACCOUNT, MAX_FIELD_BYTES, V1BETA1_ARM_RESOURCE,
};
use crate::binding::hash::inputs_hash;

/// Reads an optional string field: absent/null → `None`; wrong type or too long → error.
fn opt_str(obj: Option<&Value>, key: &str, path: &str) -> Result<Option<String>, SpecError> {
    match obj.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_FIELD_BYTES => Err(SpecError::TooLong {
            field: path.to_string(),
        }),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SpecError::WrongType {
            field: path.to_string(),
            expected: "a string",
        }),
    }
}

/// Reads an optional object field: absent/null → `None`; wrong type → error.
fn opt_obj<'a>(
    obj: Option<&'a Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Value>, SpecError> {
    match obj.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(SpecError::WrongType {
            field: path.to_string(),
            expected: "an object",
        }),
    }
}

fn spec_object(spec: Option<&Value>) -> Result<&Value, SpecError> {
    match spec {
        None | Some(Value::Null) => Err(SpecError::Missing {
            field: "spec".to_string(),
        }),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(SpecError::WrongType {
            field: "spec".to_string(),
            expected: "an object",
        }),
    }
}

pub(super) fn v1beta1_target(spec: Option<&Value>) -> Option<String> {
    match spec.and_then(|s| s.get("serviceAccountName")) {
        None | Some(Value::Null) => Some(DEFAULT_SERVICE_ACCOUNT.to_string()),
        Some(Value::String(s)) if s.is_empty() => Some(DEFAULT_SERVICE_ACCOUNT.to_string()),
        Some(Value::String(s)) if s.len() <= MAX_FIELD_BYTES => Some(s.clone()),
        Some(_) => None,
    }
}

/// v1beta1 resolution (spec §2.7): env defaults, `path.Clean`, client ID first.
pub(super) fn decode_v1beta1(spec: Option<&Value>, d: &V1beta1Defaults) -> Result<Spec, SpecError> {
    let spec = Some(spec_object(spec)?);
    let server = opt_str(spec, "acrServer", "spec.acrServer")?.unwrap_or_default();
    let server = if server.is_empty() {
        d.acr_server.clone()
    } else {
        server
    };
    let scope = opt_str(spec, "scope", "spec.scope")?.unwrap_or_default();
    let client_id = opt_str(
        spec,
        "managedIdentityClientID",
        "spec.managedIdentityClientID",
    )?
    .filter(|s| !s.is_empty())
    .unwrap_or_else(|| d.client_id.clone());
    let raw_resource = opt_str(
        spec,
        "managedIdentityResourceID",
        "spec.managedIdentityResourceID",
    )?
    .unwrap_or_default();
    let cleaned = clean_path(&raw_resource);
    let resource_id = if cleaned == "." {
        d.resource_id.clone()
    } else {
        cleaned
    };
    let target = opt_str(spec, "serviceAccountName", "spec.serviceAccountName")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
    let identity = if !client_id.is_empty() {
        Identity::ManagedClientId(share(&client_id))
    } else if !resource_id.is_empty() {
        Identity::ManagedResourceId(share(&resource_id))
    } else {
        return Err(SpecError::NoIdentity);
    };
    let arm_resource = if d.arm_resource.is_empty() {
        V1BETA1_ARM_RESOURCE.to_string()
    } else {
        d.arm_resource.clone()
    };
    let inputs_hash = inputs_hash(&format!(
        "{client_id}{resource_id}{server}{scope}{}",
        audience_mode_suffix(d.acr_audience)
    ));
    Ok(Spec {
        server: share(&server),
        scope: share(&scope),
        identity,
        environment: Environment::PublicCloud,
        arm_resource: Some(share(&arm_resource)),
        target_service_account: share(&target),
        inputs_hash: share(&inputs_hash),
    })
}

fn required_str(obj: Option<&Value>, key: &str, path: &str) -> Result<String, SpecError> {
    opt_str(obj, key, path)?.ok_or_else(|| SpecError::Missing {
        field: path.to_string(),
    })
}

fn non_empty(obj: Option<&Value>, key: &str, path: &str) -> Result<String, SpecError> {
    let s = required_str(obj, key, path)?;
    if s.is_empty() {
        return Err(SpecError::Missing {
            field: path.to_string(),
        });
    }
    Ok(s)
}

fn decode_environment(acr: Option<&Value>) -> Result<Environment, SpecError> {
    let name = opt_str(acr, "environment", "spec.acr.environment")?;
    Ok(match name.as_deref() {
        None | Some("PublicCloud") => Environment::PublicCloud,
        Some("USGovernmentCloud") => Environment::USGovernmentCloud,
        Some("ChinaCloud") => Environment::ChinaCloud,
        Some("AirgappedCloud") => {
            let cfg = opt_obj(acr, "cloudConfig", "spec.acr.cloudConfig")?;
            match cfg {
                None => Environment::AirgappedCloud(None),
                Some(c) => Environment::AirgappedCloud(Some(Box::new(CloudConfig {
                    entra_authority_host: non_empty(
                        Some(c),
                        "entraAuthorityHost",
                        "spec.acr.cloudConfig.entraAuthorityHost",
                    )?,
                    resource_manager_audience: non_empty(
                        Some(c),
                        "resourceManagerAudience",
                        "spec.acr.cloudConfig.resourceManagerAudience",
                    )?,
                }))),
            }
        }
        Some(_) => return Err(SpecError::UnsupportedEnvironment),
    })
}

/// The IMDS identity of a managed-identity `Identity` (the only kinds decoded before a
/// `federatedApplication` wraps one).
fn managed_of(id: Identity) -> ManagedIdentity {
    match id {
        Identity::ManagedClientId(c) => ManagedIdentity::ClientId(c.to_string()),
        Identity::ManagedResourceId(r) => ManagedIdentity::ResourceId(r.to_string()),
        _ => ManagedIdentity::System,
    }
}

/// What `--entra-audience=acr` adds to the inputs hash (nothing in the default ARM mode).
fn audience_mode_suffix(acr_audience: bool) -> &'static str {
    if acr_audience {
        "/audience=acr"
    } else {
        ""
    }
}

/// v1beta2 decoding (spec §1.2, §2.8), with the CRD's CEL rules re-checked.
pub(super) fn decode_v1beta2(spec: Option<&Value>, acr_audience: bool) -> Result<Spec, SpecError> {
    let spec = Some(spec_object(spec)?);
    let acr = opt_obj(spec, "acr", "spec.acr")?.ok_or(SpecError::Missing {
        field: "spec.acr".to_string(),
    })?;
    let server = non_empty(Some(acr), "server", "spec.acr.server")?;
    let scope = non_empty(Some(acr), "scope", "spec.acr.scope")?;
    let environment = decode_environment(Some(acr))?;
    let target = non_empty(spec, "serviceAccountName", "spec.serviceAccountName")?;
    let auth = opt_obj(spec, "auth", "spec.auth")?.ok_or(SpecError::Missing {
        field: "spec.auth".to_string(),
    })?;
    let mi = opt_obj(Some(auth), "managedIdentity", "spec.auth.managedIdentity")?;
    let wi = opt_obj(Some(auth), "workloadIdentity", "spec.auth.workloadIdentity")?;
    let (identity, hash_identity) = match (mi, wi) {
        (Some(mi), None) => {
            let path = "spec.auth.managedIdentity";
            let client = opt_str(Some(mi), "clientID", &format!("{path}.clientID"))?;
            let resource = opt_str(Some(mi), "resourceID", &format!("{path}.resourceID"))?;
            let id = match (&client, &resource) {
                (Some(_), Some(_)) => return Err(SpecError::ManagedIdentityBothIds),
                (Some(c), None) if !c.is_empty() => Identity::ManagedClientId(share(c)),
                (None, Some(r)) if !r.is_empty() => Identity::ManagedResourceId(share(r)),
                // Present-but-empty, like upstream, means the node's own identity.
                (Some(_), None) | (None, Some(_)) => Identity::SystemAssigned,
                (None, None) => return Err(SpecError::ManagedIdentityBothIds),
            };
            let mut hash_part = format!(
                "managedIdentity{}{}",
                resource.unwrap_or_default(),
                client.unwrap_or_default()
            );
            let fed_path = format!("{path}.federatedApplication");
            let id = match opt_obj(Some(mi), "federatedApplication", &fed_path)? {
                None => id,
                Some(fed) => {
                    let tenant_id =
                        non_empty(Some(fed), "tenantID", &format!("{fed_path}.tenantID"))?;
                    let client_id =
                        non_empty(Some(fed), "clientID", &format!("{fed_path}.clientID"))?;
                    // Not upstream's field: appended only when present, like the workload IDs.
                    hash_part.push_str(&format!("/federated/{tenant_id}/{client_id}"));
                    Identity::FederatedApplication {
                        managed: managed_of(id),
                        tenant_id,
                        client_id,
                    }
                }
            };
            (id, hash_part)
        }
        (None, Some(wi)) => {
            let path = "spec.auth.workloadIdentity";
            let sa_ref = non_empty(
                Some(wi),
                "serviceAccountRef",
                &format!("{path}.serviceAccountRef"),
            )?;
            let client = opt_str(Some(wi), "clientID", &format!("{path}.clientID"))?;
            let tenant = opt_str(Some(wi), "tenantID", &format!("{path}.tenantID"))?;
            if client.is_some() != tenant.is_some() {
                return Err(SpecError::WorkloadIdsNotPaired);
            }
            let mut hash_part = format!("workloadIdentity{sa_ref}");
            // Upstream leaves explicit IDs out of the hash, so changing them waits for the next
            // refresh; we add them only when present, keeping upstream's hash otherwise.
            if let (Some(c), Some(t)) = (&client, &tenant) {
                hash_part.push_str(&format!("/{c}/{t}"));
            }
            let id = Identity::Workload {
                service_account_ref: sa_ref,
                client_id: client.filter(|c| !c.is_empty()),
                tenant_id: tenant.filter(|t| !t.is_empty()),
            };
            (id, hash_part)
        }
        _ => return Err(SpecError::AuthNotExactlyOne),
    };
    let mut hashed = format!(
        "{target}{hash_identity}{}{server}{scope}",
        environment.name()
    );
    if let Environment::AirgappedCloud(Some(c)) = &environment {
        // Same reasoning as the workload IDs: absent upstream, appended only when present.
        hashed.push_str(&format!(
            "/{}/{}",
            c.entra_authority_host, c.resource_manager_audience
        ));
    }
    hashed.push_str(audience_mode_suffix(acr_audience));
    Ok(Spec {
        arm_resource: environment.arm_audience().map(share),
        server: share(&server),
        scope: share(&scope),
        identity,
        environment,
        target_service_account: share(&target),
        inputs_hash: share(&inputs_hash(&hashed)),
    })
}

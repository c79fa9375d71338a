//! The one credential resolver: a binding's identity and acrpull's flags in, the credential that
//! asks Azure for its tokens (and the audience and authority it asks with) out, and then the
//! registry token itself. The controller mints through it; `acrpull check` resolves through it too,
//! so the two cannot drift.

use std::sync::Arc;

use crate::azure::imds::ManagedIdentity;
use crate::binding::policy::PolicyHandle;
use crate::binding::{ApiVersion, BindingError, Identity, TokenStep};
use crate::kube::Client;
use crate::plan::{Minted, MintedToken, TokenNeed};
use crate::tokens::workload::{
    self, ManagedIdentityAssertion, ServiceAccountToken, TOKEN_EXCHANGE_RESOURCE,
};
use crate::tokens::{
    AcrTokenRequest, ClientAssertion, Credential, TokenError, TokenService, TokenStage,
};

/// The ACR audience used when tokens are requested for the registry instead of ARM.
pub const ACR_AUDIENCE: &str = "https://containerregistry.azure.net";

/// The token flow's settings that come from flags, not from the binding.
#[derive(Clone, Debug, Default)]
pub struct FlowConfig {
    /// `--entra-audience=acr`: request Entra/IMDS tokens for the registry audience, not ARM.
    pub acr_audience: bool,
    /// `--authority-host`: the Entra authority for every cloud (else the binding's cloud's).
    pub authority_host: Option<String>,
    /// `--service-account-token-audience`: the one audience of minted ServiceAccount tokens.
    pub token_audience: String,
}

/// Resolves credentials and mints registry tokens for bindings.
pub struct Minter {
    /// The API client (workload identity reads ServiceAccounts and requests their tokens).
    pub client: Client,
    /// The token service (cache and single-flight).
    pub tokens: Arc<TokenService>,
    /// Flags.
    pub config: FlowConfig,
    /// `--identity-policy`, checked before any token is requested.
    pub policy: PolicyHandle,
}

impl Minter {
    /// Gets a registry token for `need`, as the planner's `Minted` (errors carry upstream's prefixes).
    pub fn mint(&self, need: &TokenNeed) -> Minted {
        let credential = match self.credential(need) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("{}/{}: {e}", need.namespace, need.binding_name);
                return Minted::Err(e);
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
                let e = token_error(need.version, &e);
                log::warn!("{}/{}: {e}", need.namespace, need.binding_name);
                Minted::Err(e)
            }
        }
    }

    /// The IMDS resource / Entra audience: the registry's with `--entra-audience=acr`, else the
    /// binding's ARM audience.
    pub fn entra_audience<'a>(&self, need: &'a TokenNeed) -> &'a str {
        if self.config.acr_audience {
            ACR_AUDIENCE
        } else {
            need.arm_resource.as_str()
        }
    }

    /// `--authority-host` when given, else the binding's cloud's authority.
    pub fn authority(&self, need: &TokenNeed) -> String {
        self.config
            .authority_host
            .clone()
            .or_else(|| need.environment.authority_host().map(str::to_string))
            // The planner refuses the only environment without one (air-gapped without
            // cloudConfig), so this is never reached; Entra then reports the bad host.
            .unwrap_or_default()
    }

    /// The identity policy's verdict on `identity` for this binding's namespace and registry.
    fn allowed(&self, need: &TokenNeed, identity: &str) -> Result<(), BindingError> {
        Ok(self
            .policy
            .check(&need.namespace, identity, &need.registry.host)?)
    }

    /// Who asks for the token; an error is the user-facing status message. The identity policy
    /// is checked before anything is requested, the ServiceAccount token included.
    pub fn credential(&self, need: &TokenNeed) -> Result<Credential, BindingError> {
        for id in crate::binding::policy::spec_identities(&need.identity) {
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
                .map_err(lookup_error)?;
                self.allowed(need, &ids.client_id)?;
                let source = ServiceAccountToken::new(
                    self.client.clone(),
                    &need.namespace,
                    service_account_ref,
                    &self.config.token_audience,
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
                    .map_err(|e| BindingError::TokenRequest {
                        step: TokenStep::ArmToken,
                        detail: without_trace(e.to_string()),
                    })?;
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
}

/// A failed token flow as the binding reports it, at upstream's step. A ServiceAccount token
/// that could not be minted is its own step (`failed to mint service account token: `).
fn token_error(version: ApiVersion, e: &TokenError) -> BindingError {
    let (step, detail) = match (version, e) {
        (ApiVersion::V1beta1, e) => (TokenStep::AcrAccessToken, e.to_string()),
        (ApiVersion::V1beta2, TokenError::Assertion(a)) => {
            (TokenStep::ServiceAccountToken, a.cause().to_string())
        }
        (ApiVersion::V1beta2, e) if e.stage() == TokenStage::Entra => {
            (TokenStep::ArmToken, e.to_string())
        }
        (ApiVersion::V1beta2, e) => (TokenStep::AcrToken, e.to_string()),
    };
    BindingError::TokenRequest {
        step,
        detail: without_trace(detail),
    }
}

/// Workload identity's ServiceAccount lookup, as the binding reports it.
fn lookup_error(e: workload::WorkloadError) -> BindingError {
    match e {
        workload::WorkloadError::ServiceAccountNotFound { name } => {
            BindingError::ServiceAccountNotFound { name }
        }
        workload::WorkloadError::MissingAnnotation {
            service_account,
            annotation,
        } => BindingError::MissingAnnotation {
            service_account,
            annotation,
        },
        other => BindingError::ServiceAccountUnreadable {
            detail: match other {
                workload::WorkloadError::GetServiceAccount(e) => e.to_string(),
                other => other.to_string(),
            },
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::entra::EntraError;
    use crate::azure::error::ErrorDetail;
    use crate::tokens::workload::WorkloadError;
    use crate::tokens::AssertionError;

    fn entra_refusal() -> TokenError {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found. Trace ID: 1234 Correlation ID: 5678 Timestamp: 2026-01-01 00:00:00Z"}"#;
        TokenError::Entra(EntraError::Status {
            status: 400,
            detail: ErrorDetail::from_body(body),
        })
    }

    #[test]
    fn entra_errors_keep_error_and_description_but_not_the_per_attempt_trace() {
        let msg = token_error(ApiVersion::V1beta2, &entra_refusal()).to_string();
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
            token_error(ApiVersion::V1beta2, &e).to_string(),
            "failed to mint service account token: service account \"sa\" not found"
        );
        assert!(token_error(ApiVersion::V1beta1, &e)
            .to_string()
            .starts_with("failed to retrieve ACR access token: "));
    }
}

//! Why a binding cannot be served: one typed error whose `Display` is the exact `status.error`
//! text (upstream's wording where upstream has one) and whose [`BindingError::reason`] is the
//! `Ready` condition's and the Event's reason.

use std::fmt;

use crate::binding::policy::Denied;
use crate::binding::suffix::SuffixError;
use crate::binding::SpecError;

/// The step of the token flow that failed; each has upstream's status prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStep {
    /// v1beta1: any step (upstream reports them all as the ACR access token).
    AcrAccessToken,
    /// v1beta2: the Entra/ARM token (IMDS, Entra, or a node token for a federated assertion).
    ArmToken,
    /// v1beta2: the registry exchange.
    AcrToken,
    /// v1beta2 workload identity: the ServiceAccount token from the TokenRequest API.
    ServiceAccountToken,
}

impl TokenStep {
    fn prefix(self) -> &'static str {
        match self {
            TokenStep::AcrAccessToken => "failed to retrieve ACR access token",
            TokenStep::ArmToken => "failed to retrieve ARM token",
            TokenStep::AcrToken => "failed to retrieve ACR token",
            TokenStep::ServiceAccountToken => "failed to mint service account token",
        }
    }
}

/// A binding's own failure, as its status and Events report it. Never holds a token: token
/// failures carry the already redacted upstream message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingError {
    /// The spec cannot be used.
    InvalidSpec(SpecError),
    /// The registry server is malformed or outside the allowed suffixes.
    ServerNotAllowed(SuffixError),
    /// A ServiceAccount the binding needs (its target, or the workload identity one) is missing.
    ServiceAccountNotFound {
        /// Its name.
        name: String,
    },
    /// The workload identity ServiceAccount lacks an annotation and the spec gives no ID.
    MissingAnnotation {
        /// The ServiceAccount.
        service_account: String,
        /// The annotation (client-id is checked first, like upstream).
        annotation: &'static str,
    },
    /// Reading the workload identity ServiceAccount failed (the API server, not the spec).
    ServiceAccountUnreadable {
        /// The failure, as the client reported it.
        detail: String,
    },
    /// A Secret with the expected name exists and is not this binding's.
    SecretConflict {
        /// The Secret's name.
        name: String,
    },
    /// `--identity-policy` refuses the identity with this registry in this namespace.
    PolicyDenied(Denied),
    /// A token request failed at `step`.
    TokenRequest {
        /// Where the flow stopped.
        step: TokenStep,
        /// What the upstream said, redacted and without per-attempt trace IDs.
        detail: String,
    },
}

impl BindingError {
    /// The CamelCase reason of the `Ready=False` condition and of the Warning Event.
    pub fn reason(&self) -> &'static str {
        match self {
            BindingError::InvalidSpec(_) | BindingError::MissingAnnotation { .. } => "InvalidSpec",
            BindingError::ServerNotAllowed(_) => "ServerNotAllowed",
            BindingError::ServiceAccountNotFound { .. } => "ServiceAccountNotFound",
            BindingError::ServiceAccountUnreadable { .. } | BindingError::TokenRequest { .. } => {
                "TokenRequestFailed"
            }
            BindingError::SecretConflict { .. } => "SecretConflict",
            BindingError::PolicyDenied(_) => "PolicyDenied",
        }
    }
}

impl fmt::Display for BindingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindingError::InvalidSpec(e) => e.fmt(f),
            BindingError::ServerNotAllowed(e) => e.fmt(f),
            BindingError::ServiceAccountNotFound { name } => {
                write!(f, "service account {name:?} not found")
            }
            BindingError::MissingAnnotation {
                service_account,
                annotation,
            } => write!(
                f,
                "service account {service_account} missing {annotation} annotation"
            ),
            BindingError::ServiceAccountUnreadable { detail } => {
                write!(f, "failed to get service account: {detail}")
            }
            BindingError::SecretConflict { name } => {
                write!(f, "secret {name:?} exists and is not owned by this binding")
            }
            BindingError::PolicyDenied(d) => d.fmt(f),
            BindingError::TokenRequest { step, detail } => {
                write!(f, "{}: {detail}", step.prefix())
            }
        }
    }
}

impl std::error::Error for BindingError {}

impl From<SpecError> for BindingError {
    fn from(e: SpecError) -> Self {
        BindingError::InvalidSpec(e)
    }
}

impl From<SuffixError> for BindingError {
    fn from(e: SuffixError) -> Self {
        BindingError::ServerNotAllowed(e)
    }
}

impl From<Denied> for BindingError {
    fn from(d: Denied) -> Self {
        BindingError::PolicyDenied(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> Denied {
        Denied {
            namespace: "team".into(),
            identity: "id".into(),
            registry: "r.azurecr.io".into(),
        }
    }

    /// Every variant: its exact status text (upstream's where upstream has one) and its reason.
    #[test]
    fn each_error_keeps_its_status_text_and_reason() {
        let cases: Vec<(BindingError, &str, &str)> = vec![
            (
                SpecError::NoIdentity.into(),
                "either a client ID or a resource ID is required",
                "InvalidSpec",
            ),
            (
                SuffixError::NotAllowed {
                    server: "x.io".into(),
                    allowed: ".azurecr.io".into(),
                }
                .into(),
                "ACR server \"x.io\" is not in the allowed ACR server suffixes: .azurecr.io",
                "ServerNotAllowed",
            ),
            (
                BindingError::ServiceAccountNotFound { name: "sa".into() },
                "service account \"sa\" not found",
                "ServiceAccountNotFound",
            ),
            (
                BindingError::MissingAnnotation {
                    service_account: "sa".into(),
                    annotation: "azure.workload.identity/client-id",
                },
                "service account sa missing azure.workload.identity/client-id annotation",
                "InvalidSpec",
            ),
            (
                BindingError::ServiceAccountUnreadable {
                    detail: "timed out".into(),
                },
                "failed to get service account: timed out",
                "TokenRequestFailed",
            ),
            (
                BindingError::SecretConflict {
                    name: "acr-pull-b".into(),
                },
                "secret \"acr-pull-b\" exists and is not owned by this binding",
                "SecretConflict",
            ),
            (
                denied().into(),
                "identity policy: namespace \"team\" may not use identity \"id\" with registry \"r.azurecr.io\"",
                "PolicyDenied",
            ),
            (
                BindingError::TokenRequest {
                    step: TokenStep::AcrAccessToken,
                    detail: "boom".into(),
                },
                "failed to retrieve ACR access token: boom",
                "TokenRequestFailed",
            ),
            (
                BindingError::TokenRequest {
                    step: TokenStep::ArmToken,
                    detail: "boom".into(),
                },
                "failed to retrieve ARM token: boom",
                "TokenRequestFailed",
            ),
            (
                BindingError::TokenRequest {
                    step: TokenStep::AcrToken,
                    detail: "boom".into(),
                },
                "failed to retrieve ACR token: boom",
                "TokenRequestFailed",
            ),
            (
                BindingError::TokenRequest {
                    step: TokenStep::ServiceAccountToken,
                    detail: "service account \"sa\" not found".into(),
                },
                "failed to mint service account token: service account \"sa\" not found",
                "TokenRequestFailed",
            ),
        ];
        for (e, text, reason) in cases {
            assert_eq!(e.to_string(), text);
            assert_eq!(e.reason(), reason, "{text}");
        }
    }
}

//! Client assertions for Entra: ServiceAccount tokens from the TokenRequest API (workload
//! identity, spec §4.2) with client/tenant resolution, and a managed-identity token presented as
//! the assertion of an application in another tenant (cross-tenant pulls).

use std::fmt;

use serde_json::{json, Value};

use crate::azure::SecretString;
use crate::kube::{self, Client, Resource};
use crate::tokens::{AssertionError, AssertionSource};

/// The ServiceAccount annotation naming the federated application (client) ID.
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// The ServiceAccount annotation naming the application's tenant ID.
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// Lifetime asked for minted ServiceAccount tokens: the shortest the API server grants, since
/// the token is used once, right away, for one Entra exchange.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// The IMDS resource of a managed-identity token used as a federated assertion.
pub const TOKEN_EXCHANGE_RESOURCE: &str = "api://AzureADTokenExchange";

/// Why workload identity could not produce an assertion or its IDs. Never holds a token.
#[derive(Debug)]
#[non_exhaustive]
pub enum WorkloadError {
    /// The ServiceAccount named by `serviceAccountRef` does not exist.
    ServiceAccountNotFound {
        /// Its name.
        name: String,
    },
    /// No explicit IDs in the spec and the ServiceAccount lacks an annotation.
    MissingAnnotation {
        /// The ServiceAccount.
        service_account: String,
        /// The annotation missing (client-id is checked first, like upstream).
        annotation: &'static str,
    },
    /// Reading the ServiceAccount failed.
    GetServiceAccount(kube::Error),
    /// The TokenRequest failed (RBAC, admission policy, API error).
    TokenRequest(kube::Error),
    /// The TokenRequest answer carried no `status.token`.
    NoToken,
    /// There is no cluster to ask: `acrpull check` of a binding given by flags.
    NoCluster,
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadError::ServiceAccountNotFound { name } => {
                write!(f, "service account {name:?} not found")
            }
            WorkloadError::MissingAnnotation {
                service_account,
                annotation,
            } => write!(
                f,
                "service account {service_account} missing {annotation} annotation"
            ),
            WorkloadError::GetServiceAccount(e) => write!(f, "failed to get service account: {e}"),
            WorkloadError::TokenRequest(e) => e.fmt(f),
            WorkloadError::NoToken => f.write_str("token request returned no token"),
            WorkloadError::NoCluster => {
                f.write_str("workload identity needs the binding's cluster")
            }
        }
    }
}

impl std::error::Error for WorkloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkloadError::GetServiceAccount(e) | WorkloadError::TokenRequest(e) => Some(e),
            _ => None,
        }
    }
}

/// The Entra application a workload-identity binding authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIds {
    /// Application (client) ID.
    pub client_id: String,
    /// Tenant ID.
    pub tenant_id: String,
}

/// Client and tenant: the spec's when it gives both, else the ServiceAccount's annotations
/// (`sa` is the ServiceAccount object, `None` when it does not exist).
pub fn resolve_ids(
    sa_name: &str,
    spec_client: Option<&str>,
    spec_tenant: Option<&str>,
    sa: Option<&Value>,
) -> Result<WorkloadIds, WorkloadError> {
    if let (Some(c), Some(t)) = (spec_client, spec_tenant) {
        if !c.is_empty() && !t.is_empty() {
            return Ok(WorkloadIds {
                client_id: c.to_string(),
                tenant_id: t.to_string(),
            });
        }
    }
    let sa = sa.ok_or_else(|| WorkloadError::ServiceAccountNotFound {
        name: sa_name.to_string(),
    })?;
    let annotation = |key: &'static str| {
        sa["metadata"]["annotations"][key]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or(WorkloadError::MissingAnnotation {
                service_account: sa_name.to_string(),
                annotation: key,
            })
    };
    let client_id = annotation(CLIENT_ID_ANNOTATION)?;
    let tenant_id = annotation(TENANT_ID_ANNOTATION)?;
    Ok(WorkloadIds {
        client_id,
        tenant_id,
    })
}

/// Resolves the IDs, reading the ServiceAccount live only when the spec does not name both.
pub fn lookup_ids(
    client: &Client,
    namespace: &str,
    sa_name: &str,
    spec_client: Option<&str>,
    spec_tenant: Option<&str>,
) -> Result<WorkloadIds, WorkloadError> {
    let explicit =
        spec_client.is_some_and(|c| !c.is_empty()) && spec_tenant.is_some_and(|t| !t.is_empty());
    if explicit {
        return resolve_ids(sa_name, spec_client, spec_tenant, None);
    }
    let path = Resource::SERVICE_ACCOUNTS.path(Some(namespace), Some(sa_name), None);
    let sa = match client.get(&path) {
        Ok(sa) => Some(sa),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(WorkloadError::GetServiceAccount(e)),
    };
    resolve_ids(sa_name, spec_client, spec_tenant, sa.as_ref())
}

/// The TokenRequest body: exactly one audience (the chart's admission policy allows no other)
/// and a short lifetime.
pub fn token_request_body(audience: &str) -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": TOKEN_EXPIRATION_SECONDS}
    })
}

/// `status.token` of a TokenRequest answer.
pub fn token_of(answer: &Value) -> Result<SecretString, WorkloadError> {
    answer["status"]["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(SecretString::new)
        .ok_or(WorkloadError::NoToken)
}

/// Mints ServiceAccount tokens for one ServiceAccount and audience. Holds no token itself.
#[derive(Clone)]
pub struct ServiceAccountToken {
    client: Client,
    namespace: String,
    service_account: String,
    audience: String,
}

impl ServiceAccountToken {
    /// A source minting tokens for `namespace/service_account` with `audience`.
    pub fn new(
        client: Client,
        namespace: &str,
        service_account: &str,
        audience: &str,
    ) -> ServiceAccountToken {
        ServiceAccountToken {
            client,
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            audience: audience.to_string(),
        }
    }

    fn mint(&self) -> Result<SecretString, WorkloadError> {
        let path = Resource::SERVICE_ACCOUNTS.path(
            Some(&self.namespace),
            Some(&self.service_account),
            Some("token"),
        );
        match self
            .client
            .post_subresource(&path, &token_request_body(&self.audience))
        {
            Ok(answer) => token_of(&answer),
            Err(e) if e.is_not_found() => Err(WorkloadError::ServiceAccountNotFound {
                name: self.service_account.clone(),
            }),
            Err(e) => Err(WorkloadError::TokenRequest(e)),
        }
    }
}

impl fmt::Debug for ServiceAccountToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountToken")
            .field("namespace", &self.namespace)
            .field("service_account", &self.service_account)
            .field("audience", &self.audience)
            .finish()
    }
}

impl AssertionSource for ServiceAccountToken {
    fn key(&self) -> String {
        format!(
            "sa:{}/{}\n{}",
            self.namespace, self.service_account, self.audience
        )
    }

    fn assertion(&self) -> Result<SecretString, AssertionError> {
        self.mint().map_err(AssertionError::new)
    }
}

/// A managed-identity token (resource [`TOKEN_EXCHANGE_RESOURCE`]) already fetched, presented as
/// the client assertion of an application that trusts that identity (cross-tenant pulls).
#[derive(Clone)]
pub struct ManagedIdentityAssertion {
    identity_key: String,
    token: SecretString,
}

impl ManagedIdentityAssertion {
    /// Wraps `token`, obtained for the identity `identity_key` names (part of cache keys).
    pub fn new(identity_key: &str, token: SecretString) -> ManagedIdentityAssertion {
        ManagedIdentityAssertion {
            identity_key: identity_key.to_string(),
            token,
        }
    }
}

impl fmt::Debug for ManagedIdentityAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentityAssertion")
            .field("identity", &self.identity_key)
            .field("token", &self.token)
            .finish()
    }
}

impl AssertionSource for ManagedIdentityAssertion {
    fn key(&self) -> String {
        format!("mi-assertion:{}", self.identity_key)
    }

    fn assertion(&self) -> Result<SecretString, AssertionError> {
        Ok(self.token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(annotations: Value) -> Value {
        json!({"metadata": {"name": "delegate", "annotations": annotations}})
    }

    #[test]
    fn explicit_ids_win_over_annotations_and_need_no_service_account() {
        let ids = resolve_ids("delegate", Some("c"), Some("t"), None).unwrap();
        assert_eq!(
            ids,
            WorkloadIds {
                client_id: "c".into(),
                tenant_id: "t".into()
            }
        );
        let annotated = sa(json!({CLIENT_ID_ANNOTATION: "other", TENANT_ID_ANNOTATION: "x"}));
        let ids = resolve_ids("delegate", Some("c"), Some("t"), Some(&annotated)).unwrap();
        assert_eq!(ids.client_id, "c");
    }

    #[test]
    fn annotations_supply_the_ids_when_the_spec_has_none() {
        let annotated = sa(json!({CLIENT_ID_ANNOTATION: "ac", TENANT_ID_ANNOTATION: "at"}));
        let ids = resolve_ids("delegate", None, None, Some(&annotated)).unwrap();
        assert_eq!(ids.client_id, "ac");
        assert_eq!(ids.tenant_id, "at");
    }

    #[test]
    fn a_missing_client_id_annotation_is_reported_first_in_upstream_words() {
        let bare = sa(json!({}));
        let e = resolve_ids("delegate", None, None, Some(&bare)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service account delegate missing azure.workload.identity/client-id annotation"
        );
        let client_only = sa(json!({CLIENT_ID_ANNOTATION: "ac"}));
        let e = resolve_ids("delegate", None, None, Some(&client_only)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service account delegate missing azure.workload.identity/tenant-id annotation"
        );
    }

    #[test]
    fn a_missing_service_account_is_not_found_in_upstream_words() {
        let e = resolve_ids("ghost", None, None, None).unwrap_err();
        assert_eq!(e.to_string(), "service account \"ghost\" not found");
    }

    #[test]
    fn the_token_request_asks_for_one_audience_and_a_short_lifetime() {
        let body = token_request_body("api://AzureCRTokenExchange");
        assert_eq!(body["kind"], "TokenRequest");
        assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(
            body["spec"]["audiences"],
            json!(["api://AzureCRTokenExchange"])
        );
        assert_eq!(body["spec"]["expirationSeconds"], 600);
    }

    #[test]
    fn the_token_is_read_from_status_and_an_empty_one_is_an_error() {
        let t = token_of(&json!({"status": {"token": "eyJ.a.b"}})).unwrap();
        assert_eq!(t.expose(), "eyJ.a.b");
        assert!(matches!(
            token_of(&json!({"status": {"token": ""}})),
            Err(WorkloadError::NoToken)
        ));
        assert!(matches!(token_of(&json!({})), Err(WorkloadError::NoToken)));
    }

    #[test]
    fn a_managed_identity_assertion_never_shows_its_token() {
        let a = ManagedIdentityAssertion::new("mi:client:x", SecretString::new("eyJ.secret.sig"));
        let shown = format!("{a:?}");
        assert!(!shown.contains("eyJ.secret.sig"), "{shown}");
        assert_eq!(a.assertion().unwrap().expose(), "eyJ.secret.sig");
        assert_eq!(a.key(), "mi-assertion:mi:client:x");
    }

    #[test]
    fn mint_failures_carry_upstreams_prefix_through_the_assertion_error() {
        let e = AssertionError::new(WorkloadError::ServiceAccountNotFound { name: "sa".into() });
        assert_eq!(
            e.to_string(),
            "failed to mint service account token: service account \"sa\" not found"
        );
    }
}

//! The one credential resolver: a binding's identity and acrpull's flags in, the credential that
//! asks Azure for its tokens and the audience it asks for out (the authority is the credential's),
//! after the identity policy has allowed every identity involved. The controller mints through it;
//! `acrpull check` resolves through it too and reports each of its steps, so the two cannot drift.

use std::fmt;
use std::sync::Arc;

use crate::azure::imds::ManagedIdentity;
use crate::azure::AccessToken;
use crate::binding::policy::{spec_identities, Denied, PolicyHandle};
use crate::binding::{ApiVersion, BindingError, Environment, Identity, TokenStep};
pub use crate::cli::FlowConfig;
use crate::kube::Client;
use crate::plan::{Minted, MintedToken, TokenNeed};
use crate::tokens::workload::{
    self, ManagedIdentityAssertion, ServiceAccountToken, WorkloadError, WorkloadIds,
    TOKEN_EXCHANGE_RESOURCE,
};
use crate::tokens::{
    AcrTokenRequest, AssertionError, AssertionSource, ClientAssertion, Credential, TokenError,
    TokenService, TokenStage,
};

/// The ACR audience used when tokens are requested for the registry instead of ARM.
pub const ACR_AUDIENCE: &str = "https://containerregistry.azure.net";

/// The parts of one binding the resolver reads.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// Where a workload identity's ServiceAccount lives; the policy is asked about it too.
    pub namespace: &'a str,
    /// Who asks for the token.
    pub identity: &'a Identity,
    /// The validated registry host the policy is asked about.
    pub registry_host: &'a str,
    /// The cloud: its authority unless `--authority-host`.
    pub environment: &'a Environment,
    /// The binding's ARM audience: the audience unless `--entra-audience=acr`.
    pub arm_resource: &'a str,
}

/// Who asks Entra, and for which audience.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// The credential; a client assertion's carries the authority it is presented at.
    pub credential: Credential,
    /// The IMDS resource / Entra audience.
    pub audience: String,
}

/// Why no credential could be resolved. Holds each step's own error, so `acrpull check` can
/// report it as it is and the controller can turn it into a status message.
#[derive(Debug)]
pub enum ResolveError {
    /// The identity policy refuses one of the identities involved.
    Denied(Denied),
    /// Workload identity's application and tenant could not be found.
    WorkloadIds(WorkloadError),
    /// A ServiceAccount token minted up front (only `acrpull check` does) was refused.
    ServiceAccountToken(AssertionError),
    /// The node identity's token, the federated application's assertion, could not be had.
    NodeToken(TokenError),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Denied(e) => e.fmt(f),
            ResolveError::WorkloadIds(e) => e.fmt(f),
            ResolveError::ServiceAccountToken(e) => e.fmt(f),
            ResolveError::NodeToken(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ResolveError {}

impl From<ResolveError> for BindingError {
    fn from(e: ResolveError) -> BindingError {
        match e {
            ResolveError::Denied(d) => d.into(),
            ResolveError::WorkloadIds(e) => lookup_error(e),
            // Workload identity is v1beta2 only, so this is v1beta2's step (see `token_error`).
            ResolveError::ServiceAccountToken(e) => BindingError::TokenRequest {
                step: TokenStep::ServiceAccountToken,
                detail: without_trace(e.cause().to_string()),
            },
            ResolveError::NodeToken(e) => BindingError::TokenRequest {
                step: TokenStep::ArmToken,
                detail: without_trace(e.to_string()),
            },
        }
    }
}

/// The resolver's calls out, one per step that needs the world, made in the flow's order. The
/// controller answers from the cluster and its token cache; `acrpull check` asks Azure directly and
/// writes each call into its report as it happens (hence `&mut self`).
pub trait FlowSteps {
    /// Workload identity's application and tenant: the spec's, else the ServiceAccount's
    /// annotations.
    fn workload_ids(
        &mut self,
        namespace: &str,
        service_account: &str,
        client_id: Option<&str>,
        tenant_id: Option<&str>,
    ) -> Result<WorkloadIds, WorkloadError>;
    /// Where the ServiceAccount tokens of `audience` presented to Entra come from.
    fn service_account_assertion(
        &mut self,
        namespace: &str,
        service_account: &str,
        audience: &str,
    ) -> Result<Arc<dyn AssertionSource>, AssertionError>;
    /// The node identity's token for `resource`: a federated application's assertion.
    fn node_token(
        &mut self,
        identity: &ManagedIdentity,
        resource: &str,
    ) -> Result<AccessToken, TokenError>;
}

/// Resolves who asks for `subject`'s tokens. The identity policy is asked about every identity
/// before anything is requested with it, the ServiceAccount token included.
pub fn resolve(
    subject: &Subject<'_>,
    config: &FlowConfig,
    policy: &PolicyHandle,
    steps: &mut dyn FlowSteps,
) -> Result<Resolution, ResolveError> {
    let allowed = |identity: &str| {
        policy
            .check(subject.namespace, identity, subject.registry_host)
            .map_err(ResolveError::Denied)
    };
    for id in spec_identities(subject.identity) {
        allowed(&id)?;
    }
    let credential = match subject.identity {
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
            let ids = steps
                .workload_ids(
                    subject.namespace,
                    service_account_ref,
                    client_id.as_deref(),
                    tenant_id.as_deref(),
                )
                .map_err(ResolveError::WorkloadIds)?;
            allowed(&ids.client_id)?;
            let source = steps
                .service_account_assertion(
                    subject.namespace,
                    service_account_ref,
                    &config.token_audience,
                )
                .map_err(ResolveError::ServiceAccountToken)?;
            Credential::ClientAssertion(ClientAssertion {
                authority_host: authority(config, subject.environment),
                tenant: ids.tenant_id,
                client_id: ids.client_id,
                source,
            })
        }
        Identity::FederatedApplication {
            managed,
            tenant_id,
            client_id,
        } => {
            let token = steps
                .node_token(managed, TOKEN_EXCHANGE_RESOURCE)
                .map_err(ResolveError::NodeToken)?;
            let source = ManagedIdentityAssertion::new(&node_key(managed), token.token);
            Credential::ClientAssertion(ClientAssertion {
                authority_host: authority(config, subject.environment),
                tenant: tenant_id.clone(),
                client_id: client_id.clone(),
                source: Arc::new(source),
            })
        }
    };
    Ok(Resolution {
        credential,
        audience: entra_audience(config, subject.arm_resource).to_string(),
    })
}

/// The IMDS resource / Entra audience: the registry's with `--entra-audience=acr`, else the
/// binding's ARM audience.
fn entra_audience<'a>(config: &FlowConfig, arm_resource: &'a str) -> &'a str {
    if config.acr_audience {
        ACR_AUDIENCE
    } else {
        arm_resource
    }
}

/// `--authority-host` when given, else the binding's cloud's authority.
fn authority(config: &FlowConfig, environment: &Environment) -> String {
    config
        .authority_host
        .clone()
        .or_else(|| environment.authority_host().map(str::to_string))
        // The planner refuses the only environment without one (air-gapped without
        // cloudConfig), so this is never reached; Entra then reports the bad host.
        .unwrap_or_default()
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
        let resolved = match self.resolution(need) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("{}/{}: {e}", need.namespace, need.binding_name);
                return Minted::Err(e);
            }
        };
        let request = AcrTokenRequest {
            credential: &resolved.credential,
            audience: &resolved.audience,
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

    /// Who asks for `need`'s token; an error is the user-facing status message.
    fn resolution(&self, need: &TokenNeed) -> Result<Resolution, BindingError> {
        let subject = Subject {
            namespace: &need.namespace,
            identity: &need.identity,
            registry_host: &need.registry.host,
            environment: &need.environment,
            arm_resource: &need.arm_resource,
        };
        Ok(resolve(
            &subject,
            &self.config,
            &self.policy,
            &mut Live(self),
        )?)
    }
}

/// The controller's answers to the resolver: the live cluster, and the token cache.
struct Live<'a>(&'a Minter);

impl FlowSteps for Live<'_> {
    fn workload_ids(
        &mut self,
        namespace: &str,
        service_account: &str,
        client_id: Option<&str>,
        tenant_id: Option<&str>,
    ) -> Result<WorkloadIds, WorkloadError> {
        workload::lookup_ids(
            &self.0.client,
            namespace,
            service_account,
            client_id,
            tenant_id,
        )
    }

    fn service_account_assertion(
        &mut self,
        namespace: &str,
        service_account: &str,
        audience: &str,
    ) -> Result<Arc<dyn AssertionSource>, AssertionError> {
        // Minted only when the token cache has to ask Entra, not on every reconcile.
        Ok(Arc::new(ServiceAccountToken::new(
            self.0.client.clone(),
            namespace,
            service_account,
            audience,
        )))
    }

    fn node_token(
        &mut self,
        identity: &ManagedIdentity,
        resource: &str,
    ) -> Result<AccessToken, TokenError> {
        let node = Credential::Managed(identity.clone());
        self.0.tokens.entra_token(&node, resource)
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
        workload::WorkloadError::GetServiceAccount(e) => BindingError::ServiceAccountUnreadable {
            detail: e.to_string(),
        },
        other => BindingError::ServiceAccountUnreadable {
            detail: other.to_string(),
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
    use crate::azure::SecretString;
    use crate::binding::policy::Policy;
    use crate::tokens::workload::WorkloadError;
    use crate::tokens::AssertionError;

    /// Answers the resolver with canned results and records its calls, in order.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        node: Option<TokenError>,
    }

    #[derive(Debug)]
    struct Fixed;

    impl AssertionSource for Fixed {
        fn key(&self) -> String {
            "fixed".into()
        }
        fn assertion(&self) -> Result<SecretString, AssertionError> {
            Ok(SecretString::new("assertion"))
        }
    }

    impl FlowSteps for Recorder {
        fn workload_ids(
            &mut self,
            namespace: &str,
            service_account: &str,
            _client_id: Option<&str>,
            _tenant_id: Option<&str>,
        ) -> Result<WorkloadIds, WorkloadError> {
            self.calls
                .push(format!("ids {namespace}/{service_account}"));
            Ok(WorkloadIds {
                client_id: "app-1".into(),
                tenant_id: "tenant-1".into(),
            })
        }

        fn service_account_assertion(
            &mut self,
            namespace: &str,
            service_account: &str,
            audience: &str,
        ) -> Result<Arc<dyn AssertionSource>, AssertionError> {
            self.calls
                .push(format!("sa token {namespace}/{service_account} {audience}"));
            Ok(Arc::new(Fixed))
        }

        fn node_token(
            &mut self,
            identity: &ManagedIdentity,
            resource: &str,
        ) -> Result<AccessToken, TokenError> {
            self.calls.push(format!("node {identity:?} {resource}"));
            match self.node.take() {
                Some(e) => Err(e),
                None => Ok(AccessToken {
                    token: SecretString::new("node-token"),
                    expires: time::OffsetDateTime::UNIX_EPOCH,
                    refresh_at: None,
                }),
            }
        }
    }

    fn subject(identity: &Identity) -> Subject<'_> {
        Subject {
            namespace: "ns",
            identity,
            registry_host: "r.azurecr.io",
            environment: &Environment::PublicCloud,
            arm_resource: "https://management.core.windows.net/",
        }
    }

    fn config() -> FlowConfig {
        FlowConfig {
            token_audience: "api://AzureCRTokenExchange".into(),
            ..FlowConfig::default()
        }
    }

    fn policy(rules: &str) -> PolicyHandle {
        PolicyHandle::enforcing(Policy::parse(rules).expect("a valid test policy"))
    }

    fn workload() -> Identity {
        Identity::Workload {
            service_account_ref: "wi".into(),
            client_id: None,
            tenant_id: None,
        }
    }

    fn federated() -> Identity {
        Identity::FederatedApplication {
            managed: ManagedIdentity::ClientId("node-1".into()),
            tenant_id: "tenant-2".into(),
            client_id: "app-2".into(),
        }
    }

    #[test]
    fn a_managed_identity_needs_no_calls_and_asks_for_the_arm_audience_unless_told_acr() {
        let identity = Identity::ManagedClientId("client-1".into());
        let mut steps = Recorder::default();
        let r = resolve(
            &subject(&identity),
            &config(),
            &PolicyHandle::default(),
            &mut steps,
        )
        .expect("resolves");
        assert!(matches!(
            r.credential,
            Credential::Managed(ManagedIdentity::ClientId(ref c)) if c == "client-1"
        ));
        assert_eq!(r.audience, "https://management.core.windows.net/");
        assert!(steps.calls.is_empty());
        let acr = FlowConfig {
            acr_audience: true,
            ..config()
        };
        let r = resolve(
            &subject(&identity),
            &acr,
            &PolicyHandle::default(),
            &mut steps,
        )
        .expect("resolves");
        assert_eq!(r.audience, ACR_AUDIENCE);
    }

    #[test]
    fn workload_identity_reads_its_ids_then_names_its_service_account_token() {
        let identity = workload();
        let mut steps = Recorder::default();
        let r = resolve(
            &subject(&identity),
            &config(),
            &PolicyHandle::default(),
            &mut steps,
        )
        .expect("resolves");
        assert_eq!(
            steps.calls,
            ["ids ns/wi", "sa token ns/wi api://AzureCRTokenExchange"]
        );
        let Credential::ClientAssertion(c) = r.credential else {
            panic!("workload identity presents an assertion");
        };
        assert_eq!(c.authority_host, "https://login.microsoftonline.com/");
        assert_eq!(
            (c.tenant.as_str(), c.client_id.as_str()),
            ("tenant-1", "app-1")
        );
    }

    #[test]
    fn the_policy_refuses_a_workload_application_before_its_service_account_token() {
        let identity = workload();
        let mut steps = Recorder::default();
        let only_app_9 = policy(
            r#"{"rules": [{"namespaces": ["*"], "identities": ["app-9"], "registries": ["*"]}]}"#,
        );
        let e = resolve(&subject(&identity), &config(), &only_app_9, &mut steps)
            .expect_err("app-1 is not allowed");
        assert!(matches!(e, ResolveError::Denied(ref d) if d.identity == "app-1"));
        assert_eq!(steps.calls, ["ids ns/wi"]);
        assert!(BindingError::from(e)
            .to_string()
            .starts_with("identity policy: "));
    }

    #[test]
    fn a_federated_application_presents_the_node_token_at_the_flag_authority() {
        let identity = federated();
        let mut steps = Recorder::default();
        let cfg = FlowConfig {
            authority_host: Some("https://login.example/".into()),
            ..config()
        };
        let r = resolve(
            &subject(&identity),
            &cfg,
            &PolicyHandle::default(),
            &mut steps,
        )
        .expect("resolves");
        assert_eq!(
            steps.calls,
            ["node ClientId(\"node-1\") api://AzureADTokenExchange"]
        );
        let Credential::ClientAssertion(c) = r.credential else {
            panic!("a federated application presents an assertion");
        };
        assert_eq!(c.authority_host, "https://login.example/");
        assert_eq!(
            (c.tenant.as_str(), c.client_id.as_str()),
            ("tenant-2", "app-2")
        );
        assert_eq!(c.source.assertion().expect("held").expose(), "node-token");
    }

    #[test]
    fn a_federated_binding_needs_both_identities_allowed_before_the_node_is_asked() {
        let identity = federated();
        let mut steps = Recorder::default();
        let node_only = policy(
            r#"{"rules": [{"namespaces": ["ns"], "identities": ["node-1"], "registries": ["azurecr.io"]}]}"#,
        );
        let e = resolve(&subject(&identity), &config(), &node_only, &mut steps)
            .expect_err("app-2 is not allowed");
        assert!(matches!(e, ResolveError::Denied(ref d) if d.identity == "app-2"));
        assert!(steps.calls.is_empty());
    }

    #[test]
    fn a_node_token_failure_is_the_bindings_arm_token_step_without_the_trace() {
        let identity = federated();
        let mut steps = Recorder {
            node: Some(entra_refusal()),
            ..Recorder::default()
        };
        let e = resolve(
            &subject(&identity),
            &config(),
            &PolicyHandle::default(),
            &mut steps,
        )
        .expect_err("the node token is refused");
        assert!(e.to_string().contains("Trace ID"), "check shows it whole");
        assert_eq!(
            BindingError::from(e).to_string(),
            "failed to retrieve ARM token: entra token request failed with status 400: \
             invalid_client: AADSTS700213: No matching federated identity record found."
        );
    }

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

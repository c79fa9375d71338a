//! `acrpull check`: runs one binding's token flow step by step and reports each step, never a token.
//!
//! The binding is read from the cluster (or built from flags), checked against the allow-list,
//! and then IMDS and the registry are asked directly, not through the controller's token cache,
//! so the report says what Azure answers now. Who asks, for which audience and at which authority
//! is not decided here but by the controller's own resolver (`tokens::credential::resolve`), whose
//! calls out are answered and reported step by step; the Entra/IMDS request is the token service's
//! own (`tokens::request::entra_token`), made uncached. The report model is in `report` and the
//! scope comparison in `access`; this file runs the flow and fills the report in.

mod access;
mod report;

pub use access::{compare, format_grants, granted, Grant, Verdict};
pub use report::{Report, Step};

use std::fmt;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::azure::acr::AcrError;
use crate::azure::error::HttpError;
use crate::azure::http::HttpSetupError;
use crate::azure::imds::{ImdsError, ManagedIdentity};
use crate::azure::jwt;
use crate::azure::{AccessToken, SecretString};
use crate::binding::policy::PolicyHandle;
use crate::binding::suffix::AllowList;
use crate::binding::{ApiVersion, Binding, Environment, Identity, Spec};
use crate::cli::{CheckArgs, CheckTarget, Config, EntraAudience, FlagBinding, OutputFormat};
use crate::clock::rfc3339;
use crate::kube::{self, Resource};
use crate::tokens::credential::{self, FlowSteps, Resolution, ResolveError, Subject};
use crate::tokens::request::{self, Ask};
use crate::tokens::workload::{
    self, ServiceAccountToken, WorkloadError, WorkloadIds, CLIENT_ID_ANNOTATION,
    TENANT_ID_ANNOTATION,
};
use crate::tokens::{
    AssertionError, AssertionSource, AzureUpstream, Credential, TokenError, Upstream,
};

/// Why the check could not run at all (as opposed to a step failing, which is in the report).
#[derive(Debug)]
pub enum CheckError {
    /// The Azure HTTP clients could not be built (bad `SSL_CERT_FILE`, proxy, `--connect-to`).
    Azure(HttpSetupError),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Azure(e) => write!(f, "azure clients: {e}"),
        }
    }
}

impl std::error::Error for CheckError {}

/// A step failure found before any token exists: the reason and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What went wrong.
    pub reason: String,
    /// What the operator could do.
    pub hint: Option<String>,
}

/// Where the checked binding came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from the cluster.
    Cluster,
    /// Described by command-line flags.
    Flags,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Cluster => "cluster",
            Source::Flags => "flags",
        }
    }
}

/// The binding to check, as resolved from the cluster or the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// What is checked, for the report's first line.
    pub subject: String,
    /// Where it came from.
    pub source: Source,
    /// The decoded binding, or why there is none.
    pub binding: Result<Binding, Problem>,
}

/// What workload identity needs from the cluster; a trait so tests can answer without one.
pub trait Cluster {
    /// The application and tenant: the spec's, else the ServiceAccount's annotations.
    fn workload_ids(
        &self,
        namespace: &str,
        service_account: &str,
        client_id: Option<&str>,
        tenant_id: Option<&str>,
    ) -> Result<WorkloadIds, WorkloadError>;
    /// A ServiceAccount token for `audience` (TokenRequest), the client assertion.
    fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
    ) -> Result<SecretString, AssertionError>;
}

impl Cluster for kube::Client {
    fn workload_ids(
        &self,
        namespace: &str,
        service_account: &str,
        client_id: Option<&str>,
        tenant_id: Option<&str>,
    ) -> Result<WorkloadIds, WorkloadError> {
        workload::lookup_ids(self, namespace, service_account, client_id, tenant_id)
    }

    fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
    ) -> Result<SecretString, AssertionError> {
        ServiceAccountToken::new(self.clone(), namespace, service_account, audience).assertion()
    }
}

/// Runs the whole check against the real cluster and Azure.
pub fn run(args: &CheckArgs) -> Result<Report, CheckError> {
    let http = crate::azure::clients(&args.config.connect_to).map_err(CheckError::Azure)?;
    let upstream = AzureUpstream::new(http, &args.config.imds_endpoint);
    let (resolved, client) = resolve(args);
    Ok(check(
        &args.config,
        resolved,
        &upstream,
        client.as_ref().map(|c| c as &dyn Cluster),
        &OffsetDateTime::now_utc,
    ))
}

/// The report in the chosen format, newline-terminated.
pub fn render(report: &Report, format: OutputFormat) -> String {
    match format {
        OutputFormat::Text => report.to_text(),
        OutputFormat::Json => format!("{}\n", report.to_json()),
    }
}

/// Step 1's input: the binding read from the cluster (with the client, for workload
/// identity), or built from the flags.
fn resolve(args: &CheckArgs) -> (Resolved, Option<kube::Client>) {
    match &args.target {
        CheckTarget::Flags(f) => (
            Resolved {
                subject: format!(
                    "registry {} scope {:?} (given by flags)",
                    f.registry, f.scope
                ),
                source: Source::Flags,
                binding: Binding::decode(
                    ApiVersion::V1beta2,
                    &flag_binding_object(f),
                    &args.config.v1beta1_defaults(),
                )
                .map_err(|e| Problem {
                    reason: e.to_string(),
                    hint: None,
                }),
            },
            None,
        ),
        CheckTarget::Cluster {
            namespace,
            name,
            version,
        } => {
            let subject = format!("{namespace}/{name} ({})", version.api_version());
            let (binding, client) = match connect(&args.config) {
                Ok(client) => (
                    read_binding(&client, &args.config, namespace, name, *version),
                    Some(client),
                ),
                Err(p) => (Err(p), None),
            };
            let resolved = Resolved {
                subject,
                source: Source::Cluster,
                binding,
            };
            (resolved, client)
        }
    }
}

/// The Kubernetes client, from `--kubeconfig`, `KUBECONFIG` or the pod's service account.
fn connect(cfg: &Config) -> Result<kube::Client, Problem> {
    let no_hint = |reason: String| Problem { reason, hint: None };
    let kube_cfg = kube::Config::load(cfg.kubeconfig.as_deref())
        .map_err(|e| no_hint(format!("kubernetes connection: {e}")))?;
    kube::Client::new(&kube_cfg).map_err(|e| no_hint(format!("kubernetes connection: {e}")))
}

/// GETs the binding and decodes it as the controller would.
fn read_binding(
    client: &kube::Client,
    cfg: &Config,
    namespace: &str,
    name: &str,
    version: ApiVersion,
) -> Result<Binding, Problem> {
    let no_hint = |reason: String| Problem { reason, hint: None };
    let resource = match version {
        ApiVersion::V1beta1 => Resource::ACR_PULL_BINDINGS_V1BETA1,
        ApiVersion::V1beta2 => Resource::ACR_PULL_BINDINGS_V1BETA2,
    };
    let obj = client
        .get(&resource.path(Some(namespace), Some(name), None))
        .map_err(|e| read_problem(&e, namespace, name, version))?;
    Binding::decode(version, &obj, &cfg.v1beta1_defaults()).map_err(|e| no_hint(e.to_string()))
}

fn read_problem(e: &kube::Error, namespace: &str, name: &str, version: ApiVersion) -> Problem {
    if e.is_not_found() {
        let other = match version {
            ApiVersion::V1beta2 => "v1beta1",
            ApiVersion::V1beta1 => "v1beta2",
        };
        return Problem {
            reason: format!(
                "AcrPullBinding {namespace}/{name} not found in {}",
                version.api_version()
            ),
            hint: Some(format!(
                "check --namespace and --name; a binding of the other API version needs --kind {other}"
            )),
        };
    }
    Problem {
        reason: format!("reading the binding: {e}"),
        hint: e
            .is_forbidden()
            .then(|| "the kubeconfig's user may not get AcrPullBindings here".to_string()),
    }
}

/// A v1beta2 binding object holding what the flags describe, so flags and cluster bindings go
/// through the same decoding and validation.
pub fn flag_binding_object(f: &FlagBinding) -> Value {
    let managed = match (&f.client_id, &f.resource_id) {
        (Some(c), _) => json!({ "clientID": c }),
        (None, Some(r)) => json!({ "resourceID": r }),
        // An empty client ID is how v1beta2 names the node's system-assigned identity.
        (None, None) => json!({ "clientID": "" }),
    };
    json!({
        "apiVersion": ApiVersion::V1beta2.api_version(),
        "kind": "AcrPullBinding",
        "metadata": {
            "name": "acrpull-check", "namespace": "default",
            "uid": "acrpull-check", "resourceVersion": "0"
        },
        "spec": {
            "acr": {"server": f.registry, "scope": f.scope, "environment": f.environment},
            "auth": {"managedIdentity": managed},
            "serviceAccountName": "default"
        }
    })
}

/// Runs the five steps for a resolved binding against `upstream`. The returned report is
/// finished (unreached steps listed as skipped) and redacted of every token obtained.
pub fn check(
    cfg: &Config,
    resolved: Resolved,
    upstream: &dyn Upstream,
    cluster: Option<&dyn Cluster>,
    now: &dyn Fn() -> OffsetDateTime,
) -> Report {
    let mut flow = Flow {
        cfg,
        upstream,
        cluster,
        now,
        report: Report::new(resolved.subject),
        secrets: Vec::new(),
    };
    flow.run(resolved.source, resolved.binding);
    let Flow {
        mut report,
        secrets,
        ..
    } = flow;
    report.finish();
    let exposed: Vec<&str> = secrets.iter().map(SecretString::expose).collect();
    report.redact(&exposed);
    report
}

/// One run of the flow: each step pushes its report entry and hands the next step its input,
/// or `None` when it failed and the flow stops.
struct Flow<'a> {
    cfg: &'a Config,
    upstream: &'a dyn Upstream,
    /// The binding's cluster (workload identity); `None` for bindings given by flags.
    cluster: Option<&'a dyn Cluster>,
    now: &'a dyn Fn() -> OffsetDateTime,
    report: Report,
    /// Every token obtained, so the finished report can be scrubbed of them.
    secrets: Vec<SecretString>,
}

impl Flow<'_> {
    fn run(&mut self, source: Source, binding: Result<Binding, Problem>) {
        let namespace = binding
            .as_ref()
            .map(|b| b.meta.namespace.clone())
            .unwrap_or_default();
        let (step, spec) = binding_step(source, binding);
        self.report.push(step);
        let Some(spec) = spec else { return };
        let Some(registry_host) = self.allow_list(&spec.server) else {
            return;
        };
        let Some((entra, principal)) = self.entra_token(&spec, &namespace, &registry_host) else {
            return;
        };
        let Some(refresh) = self.exchange(&spec, &entra) else {
            return;
        };
        self.access_token(&spec, &refresh, principal.as_deref());
    }

    /// Step 2: tokens may only be sent to an allowed registry. Returns its host.
    fn allow_list(&mut self, server: &str) -> Option<String> {
        let allow = AllowList::from_flag(self.cfg.allowed_acr_server_suffixes.as_deref());
        let (step, host) = allow_step(&allow, server);
        self.report.push(step);
        host
    }

    /// Step 3: the Entra token (IMDS, or Entra with a client assertion), with its audience,
    /// expiry and principal claims. Who asks, and for which audience, is resolved exactly as the
    /// controller resolves it, and asked for with the controller's own request, past every cache.
    /// Returns the token and the principal's object ID.
    fn entra_token(
        &mut self,
        spec: &Spec,
        namespace: &str,
        registry_host: &str,
    ) -> Option<(SecretString, Option<String>)> {
        let subject = Subject {
            namespace,
            identity: &spec.identity,
            registry_host,
            environment: &spec.environment,
            arm_resource: spec.arm_resource.as_deref().unwrap_or_default(),
        };
        let config = self.cfg.flow_config();
        let mut probe = Probe {
            step: Step::ok("entra token").detail("identity", describe_identity(&spec.identity)),
            flow: self,
        };
        // `--identity-policy` is not one of check's flags: check reports what Azure answers, and
        // a denial shows on the binding's status.
        let resolved = credential::resolve(&subject, &config, &PolicyHandle::default(), &mut probe);
        let step = probe.step;
        let got = match resolved {
            Ok(r) => self.request(step, &r),
            Err(e) => Err(resolve_failed(step, e)),
        };
        let (mut step, token) = match got {
            Ok(got) => got,
            Err(failed) => {
                self.report.push(failed);
                return None;
            }
        };
        self.secrets.push(token.token.clone());
        let payload = jwt::read_payload(token.token.expose()).unwrap_or_default();
        for (key, claim) in [
            ("aud", "aud"),
            ("oid", "oid"),
            ("appid", "appid"),
            ("azp", "azp"),
            ("tid", "tid"),
            ("resource id", "xms_mirid"),
        ] {
            if let Some(v) = claim_text(&payload, claim) {
                step = step.detail(key, v);
            }
        }
        self.report
            .push(step.detail("expires", describe_expiry(token.expires, (self.now)())));
        Some((token.token, claim_text(&payload, "oid")))
    }

    /// The resolved credential's Entra token, from IMDS or from Entra for its assertion, asked
    /// for with the token service's own request (`tokens::request`) past its cache; `Err` is the
    /// failed step.
    fn request(&self, mut step: Step, resolved: &Resolution) -> Result<(Step, AccessToken), Step> {
        let imds = self.cfg.imds_endpoint.as_str();
        // The application Entra was asked for, so a refusal can point at its federated credential.
        let mut application = None;
        let got = request::entra_token(
            self.upstream,
            &resolved.credential,
            &resolved.audience,
            (self.now)(),
            &mut |ask| match *ask {
                Ask::Imds { resource, .. } => {
                    step.details.push(("via", format!("IMDS {imds}")));
                    step.details
                        .push(("requested audience", resource.to_string()));
                }
                Ask::ClientAssertion {
                    authority_host,
                    tenant,
                    client_id,
                    scope,
                } => {
                    step.details
                        .push(("via", format!("Entra {authority_host}{tenant}")));
                    step.details.push(("client id", client_id.to_string()));
                    step.details.push(("tenant", tenant.to_string()));
                    step.details.push(("requested scope", scope.to_string()));
                    application = Some(client_id.to_string());
                }
            },
        );
        let e = match got {
            Ok(t) => return Ok((step, t)),
            Err(e) => e,
        };
        let hint = match application {
            Some(app) => Some(format!(
                "check the federated identity credential of application {app}: its issuer, \
                 subject and audience must match the assertion's"
            )),
            None => entra_hint(&e),
        };
        Err(with_hint(step.failed(e.to_string()), hint))
    }

    /// Step 4: the registry refresh token (the pull password itself when there is no scope).
    fn exchange(&mut self, spec: &Spec, entra: &SecretString) -> Option<SecretString> {
        let step = Step::ok("acr exchange").detail(
            "endpoint",
            format!("https://{}/oauth2/exchange", spec.server),
        );
        let refresh = match self.upstream.acr_refresh_token(&spec.server, entra) {
            Ok(t) => t,
            Err(e) => {
                self.report.push(with_hint(
                    step.failed(e.to_string()),
                    exchange_hint(&e, self.cfg),
                ));
                return None;
            }
        };
        self.secrets.push(refresh.clone());
        let unscoped = spec.scope.is_empty();
        let step = expiry_step(step, refresh.expose(), (self.now)(), unscoped);
        if unscoped {
            self.report.push(step.detail(
                "password",
                "this refresh token (no scope: v1beta1 legacy mode, registry-wide)",
            ));
            self.report
                .push(Step::ok("acr token").skipped("the binding has no scope"));
            return None;
        }
        self.report.push(step);
        Some(refresh)
    }

    /// Step 5: the scoped access token, its expiry and what it grants against what was asked.
    fn access_token(&mut self, spec: &Spec, refresh: &SecretString, principal: Option<&str>) {
        let step = Step::ok("acr token")
            .detail("endpoint", format!("https://{}/oauth2/token", spec.server))
            .detail("requested", spec.scope.to_string());
        let access = match self
            .upstream
            .acr_access_token(&spec.server, refresh, &spec.scope)
        {
            Ok(t) => t,
            Err(e) => {
                self.report.push(step.failed(e.to_string()));
                return;
            }
        };
        self.secrets.push(access.clone());
        let payload = jwt::read_payload(access.expose()).unwrap_or_default();
        let step = access_step(step, granted(&payload), &spec.scope, principal);
        self.report
            .push(expiry_step(step, access.expose(), (self.now)(), true));
    }
}

/// Check's answers to the resolver: the binding's cluster and IMDS asked directly, each call
/// written into the entra token step as it is made, so a failure shows how far the flow got.
struct Probe<'f, 'a> {
    flow: &'f mut Flow<'a>,
    step: Step,
}

impl Probe<'_, '_> {
    fn detail(&mut self, key: &'static str, value: impl Into<String>) {
        self.step.details.push((key, value.into()));
    }
}

impl FlowSteps for Probe<'_, '_> {
    fn workload_ids(
        &mut self,
        namespace: &str,
        service_account: &str,
        client_id: Option<&str>,
        tenant_id: Option<&str>,
    ) -> Result<WorkloadIds, WorkloadError> {
        let cluster = self.flow.cluster.ok_or(WorkloadError::NoCluster)?;
        self.detail("service account", format!("{namespace}/{service_account}"));
        cluster.workload_ids(namespace, service_account, client_id, tenant_id)
    }

    fn service_account_assertion(
        &mut self,
        namespace: &str,
        service_account: &str,
        audience: &str,
    ) -> Result<Arc<dyn AssertionSource>, AssertionError> {
        let cluster = self
            .flow
            .cluster
            .ok_or_else(|| AssertionError::new(WorkloadError::NoCluster))?;
        self.detail("assertion audience", audience);
        // Minted now rather than when Entra is asked, so the report says whose token Entra
        // got even when it refuses it.
        let token = cluster.service_account_token(namespace, service_account, audience)?;
        self.flow.secrets.push(token.clone());
        let claims = jwt::read_payload(token.expose()).unwrap_or_default();
        for (key, claim) in [("assertion iss", "iss"), ("assertion sub", "sub")] {
            if let Some(v) = claim_text(&claims, claim) {
                self.detail(key, v);
            }
        }
        Ok(Arc::new(Presented(token)))
    }

    fn node_token(
        &mut self,
        identity: &ManagedIdentity,
        resource: &str,
    ) -> Result<AccessToken, TokenError> {
        self.detail(
            "assertion via",
            format!("IMDS {}", self.flow.cfg.imds_endpoint),
        );
        self.detail("assertion audience", resource);
        // The controller's node token comes through the same request (from its cache).
        let node = Credential::Managed(identity.clone());
        let token = request::entra_token(
            self.flow.upstream,
            &node,
            resource,
            (self.flow.now)(),
            &mut |_| {},
        )?;
        self.flow.secrets.push(token.token.clone());
        Ok(token)
    }
}

/// An assertion already in hand (see `Probe::service_account_assertion`).
#[derive(Debug)]
struct Presented(SecretString);

impl AssertionSource for Presented {
    fn key(&self) -> String {
        // Check asks Azure directly, so no cache ever keys on it.
        "acrpull-check".to_string()
    }

    fn assertion(&self) -> Result<SecretString, AssertionError> {
        Ok(self.0.clone())
    }
}

/// Step 3 when resolving who asks failed: the step's own error, with what to do about it.
fn resolve_failed(step: Step, e: ResolveError) -> Step {
    match e {
        ResolveError::WorkloadIds(WorkloadError::NoCluster) | ResolveError::Denied(_) => {
            step.failed(e.to_string())
        }
        ResolveError::WorkloadIds(e) => step.failed(e.to_string()).hint(format!(
            "annotate the ServiceAccount with {CLIENT_ID_ANNOTATION} and \
             {TENANT_ID_ANNOTATION}, or set clientID and tenantID in the binding"
        )),
        ResolveError::ServiceAccountToken(e) => step.failed(e.to_string()).hint(
            "the user acrpull runs as needs create on serviceaccounts/token for this \
             ServiceAccount and this audience",
        ),
        ResolveError::NodeToken(e) => with_hint(step.failed(e.to_string()), entra_hint(&e)),
    }
}

fn with_hint(step: Step, hint: Option<String>) -> Step {
    match hint {
        Some(h) => step.hint(h),
        None => step,
    }
}

/// Step 1 from the resolved binding: its resolved fields, or why it cannot be used.
fn binding_step(source: Source, binding: Result<Binding, Problem>) -> (Step, Option<Spec>) {
    let step = Step::ok("binding").detail("source", source.as_str());
    let b = match binding {
        Ok(b) => b,
        Err(p) => return (with_hint(step.failed(p.reason), p.hint), None),
    };
    let step = step.detail("api version", b.version.api_version());
    let spec = match b.spec.clone() {
        Ok(spec) => spec,
        Err(e) => return (step.failed(e.to_string()), None),
    };
    let mut step = step
        .detail("registry", spec.server.to_string())
        .detail(
            "scope",
            if spec.scope.is_empty() {
                "(none)".to_string()
            } else {
                spec.scope.to_string()
            },
        )
        .detail("identity", describe_identity(&spec.identity));
    if b.version == ApiVersion::V1beta2 {
        step = step.detail("environment", spec.environment.name());
    }
    if source == Source::Cluster {
        step = step
            .detail("service account", spec.target_service_account.to_string())
            .detail("pull secret", b.secret_name());
        if let Some(e) = &b.status.error {
            step = step.detail("status error", e.clone());
        }
        if b.meta.deleting {
            step = step.warning("the binding is being deleted");
        }
    }
    if let Some(problem) = spec.problem() {
        return (step.failed(problem.to_string()), None);
    }
    if let Environment::AirgappedCloud(_) = spec.environment {
        step = step.detail(
            "note",
            "air-gapped cloud: the audience comes from cloudConfig",
        );
    }
    (step, Some(spec))
}

/// Step 2: whether tokens may be sent to the registry at all, and its host when they may.
fn allow_step(allow: &AllowList, server: &str) -> (Step, Option<String>) {
    let step = Step::ok("allow-list").detail(
        "allowed",
        match allow {
            AllowList::Any => "* (any host)".to_string(),
            AllowList::Suffixes(s) => s.join(", "),
        },
    );
    match allow.check(server) {
        Ok(addr) => (step.detail("host", addr.authority()), Some(addr.host)),
        Err(e) => (
            step.failed(e.to_string()).hint(
                "fix the binding's server, or add its domain to --allowed-acr-server-suffixes \
                 (as the controller is started)",
            ),
            None,
        ),
    }
}

/// Step 5's verdict: the granted access against the requested scope.
fn access_step(
    step: Step,
    grants: Option<Vec<Grant>>,
    scope: &str,
    principal: Option<&str>,
) -> Step {
    let Some(grants) = grants else {
        return step.detail("granted", "unknown (the token has no access claim)");
    };
    let who = principal.map_or_else(|| "the identity".to_string(), |p| format!("object ID {p}"));
    let grant_hint = format!(
        "grant {who} AcrPull on the registry (or Container Registry Repository Reader on \
         registries with ABAC repository permissions)"
    );
    let step = step.detail("granted", format_grants(&grants));
    match compare(scope, &grants) {
        Verdict::Full => step,
        Verdict::Narrower { missing } => step
            .warning(format!(
                "narrower than requested; not granted: {}",
                missing.join(" ")
            ))
            .hint(grant_hint),
        Verdict::Nothing => step
            .failed("the registry granted none of the requested access: pulls will be refused")
            .hint(grant_hint),
    }
}

/// Adds a registry token's expiry; an expired token (clock skew) is a warning.
fn expiry_step(step: Step, token: &str, now: OffsetDateTime, required: bool) -> Step {
    match jwt::read_claims(token) {
        Ok(c) => {
            let step = step.detail("expires", describe_expiry(c.expires, now));
            if c.expires <= now {
                step.warning("the token is already expired: is this machine's clock right?")
            } else {
                step
            }
        }
        Err(e) if required => step.failed(AcrError::from(e).to_string()),
        Err(_) => step.detail("expires", "unknown (not a JWT)"),
    }
}

fn entra_hint(e: &TokenError) -> Option<String> {
    match e {
        TokenError::Imds(ImdsError::IdentityNotAssigned) => Some(
            "assign this user-assigned identity to the nodes (VM scale set) acrpull runs on, \
             or fix the client/resource ID"
                .to_string(),
        ),
        TokenError::Imds(ImdsError::Http(_)) => Some(
            "IMDS is only reachable from an Azure VM: run acrpull check where the controller \
             runs (e.g. kubectl exec into its pod), or set --imds-endpoint"
                .to_string(),
        ),
        _ => None,
    }
}

fn exchange_hint(e: &TokenError, cfg: &Config) -> Option<String> {
    match e {
        TokenError::Acr(AcrError::Exchange(HttpError::Status { status: 401, .. }))
            if cfg.entra_audience == EntraAudience::Arm =>
        {
            Some(
                "the registry refused the Entra token; if it has ARM-audience authentication \
                 disabled, use --entra-audience acr"
                    .to_string(),
            )
        }
        TokenError::Acr(AcrError::Exchange(HttpError::Status { status: 404, .. })) => {
            Some("is the server a container registry?".to_string())
        }
        _ => None,
    }
}

/// Who asks for tokens, in words.
pub fn describe_identity(identity: &Identity) -> String {
    match identity {
        Identity::ManagedClientId(id) => format!("managed identity, client ID {id}"),
        Identity::ManagedResourceId(id) => format!("managed identity, resource ID {id}"),
        Identity::SystemAssigned => "the node's system-assigned managed identity".to_string(),
        Identity::Workload {
            service_account_ref,
            client_id,
            tenant_id,
        } => {
            let mut s = format!("workload identity, service account {service_account_ref}");
            if let (Some(c), Some(t)) = (client_id, tenant_id) {
                s.push_str(&format!(", client ID {c}, tenant {t}"));
            }
            s
        }
        Identity::FederatedApplication {
            managed,
            tenant_id,
            client_id,
        } => {
            let node = match managed {
                ManagedIdentity::System => "the node's system-assigned identity".to_string(),
                ManagedIdentity::ClientId(id) => format!("managed identity client ID {id}"),
                ManagedIdentity::ResourceId(id) => format!("managed identity resource ID {id}"),
            };
            format!("application {client_id} in tenant {tenant_id}, federated with {node}")
        }
    }
}

/// `2026-01-02T15:04:05Z (in 1h14m59s)`, or `(expired 3m0s ago)`.
pub fn describe_expiry(expires: OffsetDateTime, now: OffsetDateTime) -> String {
    let left = expires - now;
    let when = rfc3339::format_seconds(expires);
    if left.is_positive() {
        format!("{when} (in {})", human(left))
    } else {
        format!("{when} (expired {} ago)", human(-left))
    }
}

/// A duration as `1h2m3s`, `2m3s` or `3s`, whole seconds.
fn human(d: time::Duration) -> String {
    let s = d.whole_seconds().max(0);
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// A claim shown in the report: strings as they are, the first entry of a list. Only called with
/// the names of non-secret claims.
fn claim_text(payload: &Map<String, Value>, name: &str) -> Option<String> {
    match payload.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Array(list) => list.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::report::Outcome;
    use super::*;
    use crate::azure::entra::{AssertionRequest, EntraError};
    use crate::azure::error::ErrorDetail;
    use crate::azure::AccessToken;
    use crate::binding::V1beta1Defaults;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use std::sync::Mutex;

    const NOW: i64 = 1_800_000_000;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW).expect("a fixed valid time")
    }

    fn jwt(claims: Value) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    /// Answers like Azure, with canned results, and records which calls were made.
    struct FakeAzure {
        entra: Result<AccessToken, TokenError>,
        refresh: Result<SecretString, TokenError>,
        access: Result<SecretString, TokenError>,
        calls: Mutex<Vec<String>>,
    }

    impl FakeAzure {
        fn working(access: Value) -> FakeAzure {
            FakeAzure {
                entra: Ok(AccessToken {
                    token: SecretString::new(jwt(json!({
                        "aud": "https://management.core.windows.net/", "exp": NOW + 86400,
                        "oid": "oid-1", "appid": "client-1", "tid": "tenant-1",
                        "xms_mirid": "/subscriptions/s/id1"
                    }))),
                    expires: now() + time::Duration::hours(24),
                    refresh_at: None,
                }),
                refresh: Ok(SecretString::new(jwt(
                    json!({"exp": NOW + 3 * 3600, "grant_type": "refresh_token"}),
                ))),
                access: Ok(SecretString::new(jwt(
                    json!({"exp": NOW + 4500, "access": access}),
                ))),
                calls: Mutex::default(),
            }
        }

        fn tokens(&self) -> Vec<String> {
            let mut t = Vec::new();
            if let Ok(e) = &self.entra {
                t.push(e.token.expose().to_string());
            }
            for r in [&self.refresh, &self.access].into_iter().flatten() {
                t.push(r.expose().to_string());
            }
            t
        }

        fn calls(&self) -> Vec<String> {
            self.calls
                .lock()
                .expect("no test panics while holding it")
                .clone()
        }

        fn called(&self, what: String) {
            self.calls
                .lock()
                .expect("no test panics while holding it")
                .push(what);
        }
    }

    impl Upstream for FakeAzure {
        fn managed_identity_token(
            &self,
            identity: &ManagedIdentity,
            resource: &str,
            _now: OffsetDateTime,
        ) -> Result<AccessToken, TokenError> {
            self.called(format!("imds {identity:?} {resource}"));
            self.entra.clone()
        }

        fn client_assertion_token(
            &self,
            request: &AssertionRequest<'_>,
            _now: OffsetDateTime,
        ) -> Result<AccessToken, TokenError> {
            self.called(format!(
                "entra {} {} {} {}",
                request.authority_host, request.tenant, request.client_id, request.scope
            ));
            self.entra.clone()
        }

        fn acr_refresh_token(
            &self,
            registry: &str,
            _entra_token: &SecretString,
        ) -> Result<SecretString, TokenError> {
            self.called(format!("exchange {registry}"));
            self.refresh.clone()
        }

        fn acr_access_token(
            &self,
            registry: &str,
            _refresh_token: &SecretString,
            scope: &str,
        ) -> Result<SecretString, TokenError> {
            self.called(format!("token {registry} {scope}"));
            self.access.clone()
        }
    }

    fn flags(registry: &str, scope: &str) -> FlagBinding {
        FlagBinding {
            registry: registry.into(),
            scope: scope.into(),
            client_id: Some("client-1".into()),
            resource_id: None,
            environment: "PublicCloud".into(),
        }
    }

    fn resolved(f: &FlagBinding) -> Resolved {
        Resolved {
            subject: "test".into(),
            source: Source::Flags,
            binding: Binding::decode(
                ApiVersion::V1beta2,
                &flag_binding_object(f),
                &V1beta1Defaults::default(),
            )
            .map_err(|e| Problem {
                reason: e.to_string(),
                hint: None,
            }),
        }
    }

    fn pull_app() -> Value {
        json!([{"type": "repository", "name": "app", "actions": ["pull"]}])
    }

    fn step<'a>(r: &'a Report, name: &str) -> &'a Step {
        r.steps
            .iter()
            .find(|s| s.name == name)
            .expect("every step is listed")
    }

    fn detail<'a>(s: &'a Step, key: &str) -> Option<&'a str> {
        s.details
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    fn assert_no_token(r: &Report, azure: &FakeAzure) {
        let out = format!("{}{}", r.to_text(), r.to_json());
        for t in azure.tokens() {
            assert!(!out.contains(&t), "a token leaked into:\n{out}");
            // Not even the signature-free part that identifies it.
            let head: String = t
                .split('.')
                .nth(1)
                .unwrap_or_default()
                .chars()
                .take(40)
                .collect();
            assert!(!out.contains(&head), "part of a token leaked into:\n{out}");
        }
    }

    #[test]
    fn a_working_binding_reports_every_step_ok_with_claims_and_no_token() {
        let azure = FakeAzure::working(pull_app());
        let f = flags("r.azurecr.io", "repository:app:pull");
        let r = check(&Config::default(), resolved(&f), &azure, None, &now);
        assert!(r.passed(), "{}", r.to_text());
        assert!(
            r.steps.iter().all(|s| s.outcome == Outcome::Ok),
            "{}",
            r.to_text()
        );
        let entra = step(&r, "entra token");
        assert_eq!(
            detail(entra, "aud"),
            Some("https://management.core.windows.net/")
        );
        assert_eq!(detail(entra, "oid"), Some("oid-1"));
        assert_eq!(detail(entra, "appid"), Some("client-1"));
        assert_eq!(
            detail(entra, "expires"),
            Some("2027-01-16T08:00:00Z (in 24h0m0s)")
        );
        assert_eq!(
            detail(step(&r, "acr exchange"), "expires"),
            Some("2027-01-15T11:00:00Z (in 3h0m0s)")
        );
        let token = step(&r, "acr token");
        assert_eq!(detail(token, "granted"), Some("repository:app:pull"));
        assert_eq!(
            detail(token, "expires"),
            Some("2027-01-15T09:15:00Z (in 1h15m0s)")
        );
        assert_eq!(
            azure.calls(),
            vec![
                "imds ClientId(\"client-1\") https://management.core.windows.net/".to_string(),
                "exchange r.azurecr.io".into(),
                "token r.azurecr.io repository:app:pull".into(),
            ]
        );
        assert_no_token(&r, &azure);
    }

    #[test]
    fn the_acr_audience_flag_changes_the_requested_audience() {
        let azure = FakeAzure::working(pull_app());
        let cfg = Config {
            entra_audience: EntraAudience::Acr,
            ..Config::default()
        };
        let r = check(
            &cfg,
            resolved(&flags("r.azurecr.io", "repository:app:pull")),
            &azure,
            None,
            &now,
        );
        assert_eq!(
            detail(step(&r, "entra token"), "requested audience"),
            Some("https://containerregistry.azure.net")
        );
    }

    #[test]
    fn an_unknown_identity_fails_the_entra_step_with_a_hint_and_skips_the_rest() {
        let mut azure = FakeAzure::working(pull_app());
        azure.entra = Err(TokenError::Imds(ImdsError::IdentityNotAssigned));
        let r = check(
            &Config::default(),
            resolved(&flags("r.azurecr.io", "repository:app:pull")),
            &azure,
            None,
            &now,
        );
        assert!(!r.passed());
        let s = step(&r, "entra token");
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(
            s.reason.as_deref(),
            Some("the requested identity isn't assigned to this resource")
        );
        assert!(s.hint.as_deref().is_some_and(|h| h.contains("assign")));
        assert_eq!(step(&r, "acr exchange").outcome, Outcome::Skipped);
        assert_eq!(azure.calls().len(), 1);
    }

    #[test]
    fn a_disallowed_registry_fails_before_any_token_is_asked_for() {
        let azure = FakeAzure::working(pull_app());
        let f = flags("r.azurecr.io.attacker.example", "repository:app:pull");
        let r = check(&Config::default(), resolved(&f), &azure, None, &now);
        let s = step(&r, "allow-list");
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(
            s.reason.as_deref(),
            Some("ACR server \"r.azurecr.io.attacker.example\" is not in the allowed ACR server suffixes: azurecr.io, azurecr.us, azurecr.cn")
        );
        assert!(azure.calls().is_empty());
        assert_eq!(step(&r, "entra token").outcome, Outcome::Skipped);
    }

    #[test]
    fn a_token_granting_nothing_fails_and_names_the_principal() {
        let azure = FakeAzure::working(json!([]));
        let r = check(
            &Config::default(),
            resolved(&flags("r.azurecr.io", "repository:app:pull")),
            &azure,
            None,
            &now,
        );
        let s = step(&r, "acr token");
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(detail(s, "granted"), Some("none"));
        assert!(s.hint.as_deref().is_some_and(|h| h.contains("oid-1")));
        assert!(r
            .to_text()
            .ends_with("result: FAILED at step \"acr token\"\n"));
    }

    #[test]
    fn a_narrower_grant_is_a_warning_and_still_passes() {
        let azure = FakeAzure::working(pull_app());
        let f = flags("r.azurecr.io", "repository:app:pull,push");
        let r = check(&Config::default(), resolved(&f), &azure, None, &now);
        assert!(r.passed());
        let s = step(&r, "acr token");
        assert_eq!(s.outcome, Outcome::Warning);
        assert_eq!(
            s.reason.as_deref(),
            Some("narrower than requested; not granted: repository:app:push")
        );
    }

    #[test]
    fn an_unscoped_v1beta1_binding_uses_the_refresh_token_and_skips_the_access_token() {
        let azure = FakeAzure::working(pull_app());
        let obj = json!({
            "apiVersion": "msi-acrpull.microsoft.com/v1beta1", "kind": "AcrPullBinding",
            "metadata": {"name": "b", "namespace": "ns", "uid": "u", "resourceVersion": "1"},
            "spec": {"acrServer": "r.azurecr.io", "managedIdentityResourceID": "/subscriptions/s/id1"}
        });
        let binding = Binding::decode(ApiVersion::V1beta1, &obj, &V1beta1Defaults::default())
            .map_err(|e| Problem {
                reason: e.to_string(),
                hint: None,
            });
        let res = Resolved {
            subject: "ns/b".into(),
            source: Source::Cluster,
            binding,
        };
        let r = check(&Config::default(), res, &azure, None, &now);
        assert!(r.passed(), "{}", r.to_text());
        assert_eq!(
            detail(step(&r, "binding"), "identity"),
            Some("managed identity, resource ID /subscriptions/s/id1")
        );
        assert_eq!(
            detail(step(&r, "entra token"), "requested audience"),
            Some("https://management.azure.com/")
        );
        assert!(detail(step(&r, "acr exchange"), "password").is_some());
        assert_eq!(step(&r, "acr token").outcome, Outcome::Skipped);
        assert_eq!(azure.calls().len(), 2);
    }

    #[test]
    fn an_error_body_echoing_a_token_is_redacted() {
        let mut azure = FakeAzure::working(pull_app());
        let entra = azure.tokens()[0].clone();
        azure.refresh = Err(TokenError::Acr(AcrError::Exchange(HttpError::Status {
            status: 401,
            detail: Some(ErrorDetail {
                error: Some("UNAUTHORIZED".into()),
                description: Some(format!("bad token {entra}")),
            }),
        })));
        let r = check(
            &Config::default(),
            resolved(&flags("r.azurecr.io", "repository:app:pull")),
            &azure,
            None,
            &now,
        );
        let s = step(&r, "acr exchange");
        assert_eq!(s.outcome, Outcome::Failed);
        assert!(s
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("[redacted]")));
        assert!(s
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("--entra-audience acr")));
        assert_no_token(&r, &azure);
    }

    /// A cluster whose ServiceAccount `wi` is annotated for application `app-1` in `tenant-1`.
    struct FakeCluster {
        assertion: String,
    }

    impl FakeCluster {
        fn new() -> FakeCluster {
            FakeCluster {
                assertion: jwt(json!({
                    "iss": "https://oidc.example/cluster", "sub": "system:serviceaccount:ns:wi",
                    "aud": ["api://AzureCRTokenExchange"], "exp": NOW + 600
                })),
            }
        }
    }

    impl Cluster for FakeCluster {
        fn workload_ids(
            &self,
            _namespace: &str,
            service_account: &str,
            client_id: Option<&str>,
            tenant_id: Option<&str>,
        ) -> Result<WorkloadIds, WorkloadError> {
            let annotated = serde_json::json!({"metadata": {"annotations": {
                CLIENT_ID_ANNOTATION: "app-1", TENANT_ID_ANNOTATION: "tenant-1"
            }}});
            let sa = (service_account == "wi").then_some(&annotated);
            workload::resolve_ids(service_account, client_id, tenant_id, sa)
        }

        fn service_account_token(
            &self,
            _namespace: &str,
            _service_account: &str,
            _audience: &str,
        ) -> Result<SecretString, AssertionError> {
            Ok(SecretString::new(self.assertion.clone()))
        }
    }

    fn v1beta2(auth: Value) -> Resolved {
        let obj = json!({
            "apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding",
            "metadata": {"name": "b", "namespace": "ns", "uid": "u", "resourceVersion": "1"},
            "spec": {"acr": {"server": "r.azurecr.io", "scope": "repository:app:pull"},
                     "auth": auth, "serviceAccountName": "default"}
        });
        Resolved {
            subject: "ns/b".into(),
            source: Source::Cluster,
            binding: Binding::decode(ApiVersion::V1beta2, &obj, &V1beta1Defaults::default())
                .map_err(|e| Problem {
                    reason: e.to_string(),
                    hint: None,
                }),
        }
    }

    #[test]
    fn workload_identity_presents_a_service_account_token_to_entra() {
        let azure = FakeAzure::working(pull_app());
        let cluster = FakeCluster::new();
        let res = v1beta2(json!({"workloadIdentity": {"serviceAccountRef": "wi"}}));
        let r = check(&Config::default(), res, &azure, Some(&cluster), &now);
        assert!(r.passed(), "{}", r.to_text());
        let s = step(&r, "entra token");
        assert_eq!(detail(s, "service account"), Some("ns/wi"));
        assert_eq!(detail(s, "client id"), Some("app-1"));
        assert_eq!(detail(s, "tenant"), Some("tenant-1"));
        assert_eq!(
            detail(s, "assertion sub"),
            Some("system:serviceaccount:ns:wi")
        );
        assert_eq!(
            detail(s, "assertion audience"),
            Some("api://AzureCRTokenExchange")
        );
        assert_eq!(
            azure.calls()[0],
            "entra https://login.microsoftonline.com/ tenant-1 app-1 https://management.core.windows.net//.default"
        );
        let out = r.to_text();
        assert!(!out.contains(&cluster.assertion), "{out}");
        assert_no_token(&r, &azure);
    }

    #[test]
    fn an_entra_refusal_shows_what_was_asked_and_points_at_the_federated_credential() {
        let mut azure = FakeAzure::working(pull_app());
        azure.entra = Err(TokenError::Entra(EntraError::Status {
            status: 400,
            detail: None,
        }));
        let res = v1beta2(json!({"workloadIdentity": {"serviceAccountRef": "wi"}}));
        let r = check(
            &Config::default(),
            res,
            &azure,
            Some(&FakeCluster::new()),
            &now,
        );
        let s = step(&r, "entra token");
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(
            s.reason.as_deref(),
            Some("entra token request failed with status 400")
        );
        assert_eq!(
            s.hint.as_deref(),
            Some(
                "check the federated identity credential of application app-1: its issuer, \
                 subject and audience must match the assertion's"
            )
        );
        assert_eq!(
            detail(s, "via"),
            Some("Entra https://login.microsoftonline.com/tenant-1")
        );
        assert_eq!(
            detail(s, "requested scope"),
            Some("https://management.core.windows.net//.default")
        );
        assert_eq!(step(&r, "acr exchange").outcome, Outcome::Skipped);
    }

    #[test]
    fn workload_identity_without_annotations_fails_with_a_hint() {
        let azure = FakeAzure::working(pull_app());
        let res = v1beta2(json!({"workloadIdentity": {"serviceAccountRef": "bare"}}));
        let r = check(
            &Config::default(),
            res,
            &azure,
            Some(&FakeCluster::new()),
            &now,
        );
        let s = step(&r, "entra token");
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(
            s.reason.as_deref(),
            Some("service account \"bare\" not found")
        );
        assert!(s
            .hint
            .as_deref()
            .is_some_and(|h| h.contains(CLIENT_ID_ANNOTATION)));
        assert!(azure.calls().is_empty());
    }

    #[test]
    fn workload_identity_without_the_bindings_cluster_fails_before_anything_is_asked() {
        let azure = FakeAzure::working(pull_app());
        let res = v1beta2(json!({"workloadIdentity": {"serviceAccountRef": "wi"}}));
        let r = check(&Config::default(), res, &azure, None, &now);
        let s = step(&r, "entra token");
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(
            s.reason.as_deref(),
            Some("workload identity needs the binding's cluster")
        );
        assert_eq!(s.hint, None);
        assert_eq!(detail(s, "service account"), None);
        assert!(azure.calls().is_empty());
    }

    #[test]
    fn a_federated_application_uses_the_node_token_as_its_assertion() {
        let azure = FakeAzure::working(pull_app());
        let res = v1beta2(json!({"managedIdentity": {
            "clientID": "client-1",
            "federatedApplication": {"tenantID": "tenant-2", "clientID": "app-2"}
        }}));
        let cfg = Config {
            authority_host: Some("https://login.example/".into()),
            ..Config::default()
        };
        let r = check(&cfg, res, &azure, None, &now);
        assert!(r.passed(), "{}", r.to_text());
        assert_eq!(
            azure.calls()[..2],
            [
                "imds ClientId(\"client-1\") api://AzureADTokenExchange".to_string(),
                "entra https://login.example/ tenant-2 app-2 https://management.core.windows.net//.default".into(),
            ]
        );
        let s = step(&r, "entra token");
        assert_eq!(
            detail(s, "assertion via"),
            Some("IMDS http://169.254.169.254")
        );
        assert_eq!(
            detail(s, "via"),
            Some("Entra https://login.example/tenant-2")
        );
        assert_no_token(&r, &azure);
    }

    #[test]
    fn a_bad_spec_fails_the_binding_step() {
        let azure = FakeAzure::working(pull_app());
        let mut f = flags("r.azurecr.io", "repository:app:pull");
        f.environment = "AirgappedCloud".into();
        let r = check(&Config::default(), resolved(&f), &azure, None, &now);
        let s = step(&r, "binding");
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(
            s.reason.as_deref(),
            Some("a custom cloud configuration must be present for air-gapped cloud environments")
        );
        assert!(azure.calls().is_empty());
    }

    #[test]
    fn flags_without_an_identity_mean_the_system_assigned_identity() {
        let mut f = flags("r.azurecr.io", "repository:app:pull");
        f.client_id = None;
        let b = resolved(&f).binding.expect("the flag binding decodes");
        assert_eq!(b.spec.map(|s| s.identity), Ok(Identity::SystemAssigned));
        f.resource_id = Some("/subscriptions/s/id1".into());
        let b = resolved(&f).binding.expect("the flag binding decodes");
        assert_eq!(
            b.spec.map(|s| s.identity),
            Ok(Identity::ManagedResourceId("/subscriptions/s/id1".into()))
        );
    }

    #[test]
    fn expiries_read_as_time_and_distance() {
        let t = now();
        assert_eq!(
            describe_expiry(t + time::Duration::seconds(59), t),
            "2027-01-15T08:00:59Z (in 59s)"
        );
        assert_eq!(
            describe_expiry(t - time::Duration::seconds(180), t),
            "2027-01-15T07:57:00Z (expired 3m0s ago)"
        );
    }

    #[test]
    fn an_expired_registry_token_is_a_warning_about_the_clock() {
        let mut azure = FakeAzure::working(pull_app());
        azure.access = Ok(SecretString::new(jwt(
            json!({"exp": NOW - 10, "access": pull_app()}),
        )));
        let r = check(
            &Config::default(),
            resolved(&flags("r.azurecr.io", "repository:app:pull")),
            &azure,
            None,
            &now,
        );
        let s = step(&r, "acr token");
        assert_eq!(s.outcome, Outcome::Warning);
        assert!(s.reason.as_deref().is_some_and(|r| r.contains("clock")));
    }

    #[test]
    fn an_access_token_that_is_not_a_jwt_fails_like_the_controller() {
        let mut azure = FakeAzure::working(pull_app());
        azure.access = Ok(SecretString::new("opaque"));
        let r = check(
            &Config::default(),
            resolved(&flags("r.azurecr.io", "repository:app:pull")),
            &azure,
            None,
            &now,
        );
        let s = step(&r, "acr token");
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(
            s.reason.as_deref(),
            Some("failed to parse ACR access token")
        );
    }
}

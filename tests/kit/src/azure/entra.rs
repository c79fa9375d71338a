//! The fake Entra authority: OIDC discovery and the client-credentials grant with a federated
//! JWT assertion (workload identity), answering errors the way Entra does (HTTPS; `Host` names
//! the authority host).
//!
//! An assertion is accepted when its kit signature verifies, it is within its valid time range,
//! and one federated credential on the app matches its `iss`, `sub` and `aud` (see the module
//! docs of `azure` for how managed-identity tokens line up with this).

use super::fault::FaultPlan;
use super::{entra_issuer_tenant, lock, LoggedRequest, Shared};
use crate::http::{Handler, Request, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The only client assertion type Entra accepts.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Scopes MSAL adds to every request; Entra ignores them in the client-credentials grant.
const OIDC_SCOPES: [&str; 4] = ["openid", "offline_access", "profile", "email"];
/// Default access-token lifetime (Entra's default is about an hour).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3599);
/// How far in the future an assertion's `nbf` may be (Entra tolerates a few minutes of skew).
const NBF_SKEW_SECS: i64 = 300;

/// An app registration (or a managed identity's service principal) clients authenticate as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// The client (application) id.
    pub client_id: String,
    /// The service principal's object id (the issued token's `oid` and `sub`).
    pub object_id: String,
}

/// A trust: assertions with this issuer, subject and audience may authenticate as the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedCredential {
    /// The assertion's `iss` (e.g. the cluster's OIDC issuer URL).
    pub issuer: String,
    /// The assertion's `sub` (`system:serviceaccount:<ns>:<sa>`, or a managed identity's object id).
    pub subject: String,
    /// A value the assertion's `aud` must contain (`api://AzureADTokenExchange`, ...).
    pub audience: String,
}

/// What the fake Entra has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntraCounters {
    /// Discovery documents served.
    pub discovery: u64,
    /// Tokens issued, by (tenant, client id).
    pub issued: HashMap<(String, String), u64>,
    /// Token requests refused, by (tenant, client id as sent).
    pub refused: HashMap<(String, String), u64>,
}

#[derive(Debug, Clone)]
struct App {
    object_id: String,
    credentials: Vec<FederatedCredential>,
}

/// Why Entra refused a request; renders as Entra's JSON error with its AADSTS code.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// No such route.
    NotFound,
    /// The token endpoint was called with another method than POST.
    NotPost,
    /// The tenant in the path is unknown.
    UnknownTenant(String),
    /// A required form field is missing.
    MissingParameter(&'static str),
    /// `grant_type` is not `client_credentials`.
    UnsupportedGrant,
    /// `scope` is not one resource's `/.default`.
    ScopeNotDefault(String),
    /// `scope` names more than one resource.
    SeveralResources,
    /// No such client in the tenant.
    UnknownClient { client: String, tenant: String },
    /// No `client_assertion` (nor a secret) was sent.
    NoCredential,
    /// `client_assertion_type` is not jwt-bearer.
    BadAssertionType,
    /// The assertion is not a JWT.
    MalformedAssertion,
    /// The assertion's signature does not verify.
    BadSignature,
    /// The assertion is expired, has no `exp`, or is not yet valid.
    OutsideValidity { now: i64, nbf: i64, exp: i64 },
    /// No federated credential trusts the assertion's issuer.
    IssuerMismatch(String),
    /// None trusts its subject (for that issuer).
    SubjectMismatch(String),
    /// None trusts its audience (for that issuer and subject).
    AudienceMismatch(String),
    /// An injected fault.
    Injected(u16),
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::NotFound => 404,
            Refusal::Injected(s) => *s,
            _ => 400,
        }
    }

    fn error(&self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::UnsupportedGrant => "unsupported_grant_type",
            Refusal::ScopeNotDefault(_) | Refusal::SeveralResources => "invalid_scope",
            Refusal::UnknownClient { .. } => "unauthorized_client",
            Refusal::NoCredential
            | Refusal::BadAssertionType
            | Refusal::MalformedAssertion
            | Refusal::BadSignature
            | Refusal::OutsideValidity { .. }
            | Refusal::IssuerMismatch(_)
            | Refusal::SubjectMismatch(_)
            | Refusal::AudienceMismatch(_) => "invalid_client",
            Refusal::Injected(401) => "invalid_client",
            Refusal::Injected(429) => "temporarily_unavailable",
            Refusal::Injected(s) if *s >= 500 => "temporarily_unavailable",
            _ => "invalid_request",
        }
    }

    fn code(&self) -> u32 {
        match self {
            Refusal::NotFound => 900023,
            Refusal::NotPost => 900561,
            Refusal::UnknownTenant(_) => 90002,
            Refusal::MissingParameter(_) => 900144,
            Refusal::UnsupportedGrant => 70003,
            Refusal::ScopeNotDefault(_) => 1002012,
            Refusal::SeveralResources => 70011,
            Refusal::UnknownClient { .. } => 700016,
            Refusal::NoCredential => 7000218,
            Refusal::BadAssertionType => 50012,
            Refusal::MalformedAssertion => 50027,
            Refusal::BadSignature => 700027,
            Refusal::OutsideValidity { .. } => 700024,
            Refusal::IssuerMismatch(_) => 700211,
            Refusal::SubjectMismatch(_) => 700213,
            Refusal::AudienceMismatch(_) => 700212,
            Refusal::Injected(429) => 50196,
            Refusal::Injected(401) => 7000215,
            Refusal::Injected(_) => 90033,
        }
    }

    fn response(&self, trace: &str, now: i64) -> Response {
        let stamp = timestamp(now);
        let description = format!(
            "AADSTS{}: {self} Trace ID: {trace} Correlation ID: {trace} Timestamp: {stamp}",
            self.code()
        );
        let body = json!({
            "error": self.error(),
            "error_description": description,
            "error_codes": [self.code()],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": trace,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code()),
        });
        Response::json(self.status(), &body)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const CHECK: &str = "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.";
        match self {
            Refusal::NotFound => f.write_str("The requested resource was not found."),
            Refusal::NotPost => f.write_str("The endpoint only accepts POST requests."),
            Refusal::UnknownTenant(t) => write!(f, "Tenant '{t}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
            Refusal::MissingParameter(p) => write!(f, "The request body must contain the following parameter: '{p}'."),
            Refusal::UnsupportedGrant => f.write_str("The provided value for the input parameter 'grant_type' is not valid."),
            Refusal::ScopeNotDefault(s) => write!(f, "The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
            Refusal::SeveralResources => f.write_str("The provided request must include a 'scope' input parameter naming one resource."),
            Refusal::UnknownClient { client, tenant } => write!(f, "Application with identifier '{client}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
            Refusal::NoCredential => f.write_str("The request body must contain the following parameter: 'client_assertion' or 'client_secret'."),
            Refusal::BadAssertionType => write!(f, "Client assertion type must be {JWT_BEARER}."),
            Refusal::MalformedAssertion => f.write_str("JWT token is invalid or malformed."),
            Refusal::BadSignature => f.write_str("Client assertion failed signature validation."),
            Refusal::OutsideValidity { now, nbf, exp } => write!(f, "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.", timestamp(*now), timestamp(*nbf), timestamp(*exp)),
            Refusal::IssuerMismatch(i) => write!(f, "No matching federated identity record found for presented assertion issuer '{i}'. {CHECK}"),
            Refusal::SubjectMismatch(s) => write!(f, "No matching federated identity record found for presented assertion subject '{s}'. {CHECK}"),
            Refusal::AudienceMismatch(a) => write!(f, "No matching federated identity record found for presented assertion audience '{a}'. {CHECK}"),
            Refusal::Injected(_) => f.write_str("A transient error has occurred. Please try again."),
        }
    }
}

/// The fake Entra authority.
#[derive(Debug)]
pub struct Entra {
    shared: Shared,
    tenants: Mutex<Vec<String>>,
    apps: Mutex<HashMap<(String, String), App>>,
    lifetime: Mutex<Duration>,
    counters: Mutex<EntraCounters>,
    /// Faults and latency for the next token requests.
    pub faults: FaultPlan,
}

impl Default for Entra {
    fn default() -> Entra {
        Entra::new()
    }
}

impl Entra {
    /// A fake Entra with no tenant yet.
    pub fn new() -> Entra {
        Entra::with_shared(Shared::default())
    }

    /// Same, sharing clock and token registry with the other fakes.
    pub fn with_shared(shared: Shared) -> Entra {
        Entra {
            shared,
            tenants: Mutex::default(),
            apps: Mutex::default(),
            lifetime: Mutex::new(DEFAULT_LIFETIME),
            counters: Mutex::default(),
            faults: FaultPlan::default(),
        }
    }

    /// Makes a tenant known.
    pub fn add_tenant(&self, tenant: &str) {
        let mut t = lock(&self.tenants);
        if !t.iter().any(|x| x == tenant) {
            t.push(tenant.to_string());
        }
    }

    /// Registers an app (or a managed identity's service principal) in a tenant.
    pub fn add_application(&self, tenant: &str, app: Application) {
        self.add_tenant(tenant);
        let mut apps = lock(&self.apps);
        let entry = apps
            .entry((tenant.to_string(), app.client_id))
            .or_insert_with(|| App {
                object_id: String::new(),
                credentials: Vec::new(),
            });
        entry.object_id = app.object_id;
    }

    /// Adds a federated credential to the app `client_id` in `tenant`, registering the app first
    /// (with object id = client id) when it is unknown.
    pub fn add_federated_credential(
        &self,
        client_id: &str,
        tenant: &str,
        credential: FederatedCredential,
    ) {
        self.add_tenant(tenant);
        let mut apps = lock(&self.apps);
        apps.entry((tenant.to_string(), client_id.to_string()))
            .or_insert_with(|| App {
                object_id: client_id.to_string(),
                credentials: Vec::new(),
            })
            .credentials
            .push(credential);
    }

    /// Sets the lifetime of access tokens issued from now on. Defaults to 3599 s.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.lifetime) = lifetime;
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> EntraCounters {
        lock(&self.counters).clone()
    }

    /// The shared clock, registry and log.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    fn known_tenant(&self, tenant: &str) -> Result<(), Refusal> {
        if lock(&self.tenants).iter().any(|t| t == tenant) {
            Ok(())
        } else {
            Err(Refusal::UnknownTenant(tenant.to_string()))
        }
    }

    fn discovery(&self, tenant: &str, host: &str) -> Result<Value, Refusal> {
        self.known_tenant(tenant)?;
        lock(&self.counters).discovery += 1;
        let base = format!("https://{host}/{tenant}");
        Ok(json!({
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("https://{host}/{tenant}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{base}/v2.0"),
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }))
    }

    /// The client-credentials grant: returns (client id, resource, response body).
    fn token(&self, tenant: &str, req: &Request) -> Result<(String, String, Value), Refusal> {
        self.known_tenant(tenant)?;
        if let Some(status) = self.faults.apply() {
            return Err(Refusal::Injected(status));
        }
        let form = form_of(req);
        let field = |name: &'static str| -> Result<&str, Refusal> {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
                .ok_or(Refusal::MissingParameter(name))
        };
        if field("grant_type")? != "client_credentials" {
            return Err(Refusal::UnsupportedGrant);
        }
        let client_id = field("client_id")?;
        let resource = resource_of(field("scope")?)?;
        let app = lock(&self.apps)
            .get(&(tenant.to_string(), client_id.to_string()))
            .cloned()
            .ok_or_else(|| Refusal::UnknownClient {
                client: client_id.to_string(),
                tenant: tenant.to_string(),
            })?;
        let assertion = field("client_assertion").map_err(|_| Refusal::NoCredential)?;
        if field("client_assertion_type")? != JWT_BEARER {
            return Err(Refusal::BadAssertionType);
        }
        self.check_assertion(assertion, &app.credentials)?;
        let body = self.issue(tenant, client_id, &app.object_id, &resource);
        Ok((client_id.to_string(), resource, body))
    }

    fn check_assertion(
        &self,
        assertion: &str,
        fics: &[FederatedCredential],
    ) -> Result<(), Refusal> {
        let claims =
            crate::jwt::claims_unverified(assertion).map_err(|_| Refusal::MalformedAssertion)?;
        if self.shared.verify(assertion).is_none() {
            return Err(Refusal::BadSignature);
        }
        let now = self.shared.clock.now_unix();
        let exp = claims["exp"].as_i64().unwrap_or(0);
        let nbf = claims["nbf"].as_i64().unwrap_or(i64::MIN);
        if exp <= now || nbf > now + NBF_SKEW_SECS {
            return Err(Refusal::OutsideValidity {
                now,
                nbf: nbf.max(0),
                exp,
            });
        }
        match_federated(&claims, fics)
    }

    fn issue(&self, tenant: &str, client_id: &str, object_id: &str, resource: &str) -> Value {
        let now = self.shared.clock.now_unix();
        let lifetime = lock(&self.lifetime).as_secs() as i64;
        let claims = json!({
            "aud": resource, "iss": format!("https://sts.windows.net/{tenant}/"),
            "iat": now, "nbf": now, "exp": now + lifetime,
            "appid": client_id, "appidacr": "2", "idtyp": "app",
            "oid": object_id, "sub": object_id, "tid": tenant,
            "uti": self.shared.token_id(), "ver": "1.0",
        });
        let token = self.shared.mint(&claims);
        *lock(&self.counters)
            .issued
            .entry((tenant.to_string(), client_id.to_string()))
            .or_default() += 1;
        json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        })
    }

    fn route(&self, req: &Request) -> Result<(Option<String>, Option<String>, Value), Refusal> {
        let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        let host = req.header("host").unwrap_or("login.microsoftonline.com");
        match (req.method.as_str(), segments.as_slice()) {
            ("GET", [tenant, "v2.0", ".well-known", "openid-configuration"]) => {
                Ok((None, None, self.discovery(tenant, host)?))
            }
            ("GET", [tenant, "discovery", "v2.0", "keys"]) => {
                self.known_tenant(tenant)?;
                Ok((None, None, self.shared.signer.jwks()))
            }
            ("POST", [tenant, "oauth2", "v2.0", "token"]) => {
                let sent_client = form_of(req)
                    .into_iter()
                    .find(|(k, _)| k == "client_id")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                match self.token(tenant, req) {
                    Ok((client, resource, body)) => Ok((Some(client), Some(resource), body)),
                    Err(e) => {
                        *lock(&self.counters)
                            .refused
                            .entry((tenant.to_string(), sent_client))
                            .or_default() += 1;
                        Err(e)
                    }
                }
            }
            (_, [_, "oauth2", "v2.0", "token"]) => Err(Refusal::NotPost),
            _ => Err(Refusal::NotFound),
        }
    }
}

impl Handler for Entra {
    fn handle(&self, req: Request) -> Response {
        let (status, principal, scope, resp) = match self.route(&req) {
            Ok((principal, scope, body)) => (200, principal, scope, Response::json(200, &body)),
            Err(r) => {
                let trace = uuid_like(&self.shared.token_id());
                (
                    r.status(),
                    None,
                    None,
                    r.response(&trace, self.shared.clock.now_unix()),
                )
            }
        };
        self.shared.log(LoggedRequest {
            service: "entra",
            host: req.header("host").map(str::to_string),
            method: req.method.clone(),
            path: req.path.clone(),
            status,
            principal,
            scope,
        });
        resp
    }
}

/// The form fields, or none when the body is not form-urlencoded (the real services then miss
/// every field).
pub(super) fn form_of(req: &Request) -> Vec<(String, String)> {
    let is_form = req.header("content-type").is_some_and(|c| {
        c.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if is_form {
        req.form()
    } else {
        Vec::new()
    }
}

/// The one resource a client-credentials `scope` names: `<resource>/.default`, OIDC scopes ignored.
fn resource_of(scope: &str) -> Result<String, Refusal> {
    let resources: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !OIDC_SCOPES.contains(s))
        .collect();
    match resources.as_slice() {
        [one] => one
            .strip_suffix("/.default")
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .ok_or_else(|| Refusal::ScopeNotDefault(one.to_string())),
        [] => Err(Refusal::MissingParameter("scope")),
        _ => Err(Refusal::SeveralResources),
    }
}

/// Finds a federated credential matching the assertion, naming the first claim that fails.
fn match_federated(claims: &Value, fics: &[FederatedCredential]) -> Result<(), Refusal> {
    let iss = claims["iss"].as_str().unwrap_or_default();
    let sub = claims["sub"].as_str().unwrap_or_default();
    let auds: Vec<&str> = match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let by_issuer: Vec<_> = fics
        .iter()
        .filter(|f| same_issuer(&f.issuer, iss))
        .collect();
    if by_issuer.is_empty() {
        return Err(Refusal::IssuerMismatch(iss.to_string()));
    }
    let by_subject: Vec<_> = by_issuer.into_iter().filter(|f| f.subject == sub).collect();
    if by_subject.is_empty() {
        return Err(Refusal::SubjectMismatch(sub.to_string()));
    }
    if by_subject
        .iter()
        .any(|f| auds.contains(&f.audience.as_str()))
    {
        Ok(())
    } else {
        Err(Refusal::AudienceMismatch(auds.join(",")))
    }
}

/// Issuers match exactly, except that the two Entra forms for one tenant are the same issuer.
fn same_issuer(configured: &str, presented: &str) -> bool {
    if configured == presented {
        return true;
    }
    match (
        entra_issuer_tenant(configured),
        entra_issuer_tenant(presented),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Entra's timestamp format, `2024-01-02 03:04:05Z`.
fn timestamp(unix: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// A GUID-shaped id made from a unique token id (trace and correlation ids).
fn uuid_like(seed: &str) -> String {
    let digits: String = seed.chars().filter(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().unwrap_or(0);
    format!("00000000-0000-4000-8000-{n:012x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::{Imds, ManagedIdentity, Principal, TOKEN_EXCHANGE_AUDIENCE};
    use crate::jwt::Signer;

    const TENANT: &str = "tenant-b";
    const CLUSTER: &str = "https://oidc.example/cluster-1/";
    const SUBJECT: &str = "system:serviceaccount:ns:puller";
    const AUDIENCE: &str = "api://AzureCRTokenExchange";
    const ARM_SCOPE: &str = "https://management.core.windows.net//.default";

    fn entra() -> Entra {
        let e = Entra::new();
        e.add_application(
            TENANT,
            Application {
                client_id: "app-1".into(),
                object_id: "sp-1".into(),
            },
        );
        e.add_federated_credential(
            "app-1",
            TENANT,
            FederatedCredential {
                issuer: CLUSTER.into(),
                subject: SUBJECT.into(),
                audience: AUDIENCE.into(),
            },
        );
        e
    }

    fn sa_token(iss: &str, sub: &str, aud: &str, exp_in: i64) -> String {
        let now = crate::jwt::now_unix();
        Signer::kit().sign(&json!({"iss": iss, "sub": sub, "aud": [aud], "iat": now, "nbf": now, "exp": now + exp_in}))
    }

    fn form(pairs: &[(&str, &str)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn encode(v: &str) -> String {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    fn token_req(tenant: &str, client: &str, scope: &str, assertion: &str) -> Request {
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("scope", scope),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("client_info", "1"),
        ]);
        Request::new("POST", &format!("/{tenant}/oauth2/v2.0/token"))
            .with_header("Host", "login.fake.test:8443")
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body(body)
    }

    fn good_request() -> Request {
        token_req(
            TENANT,
            "app-1",
            &format!("{ARM_SCOPE} openid offline_access profile"),
            &sa_token(CLUSTER, SUBJECT, AUDIENCE, 3600),
        )
    }

    fn aadsts(resp: Response) -> (u16, Value) {
        let status = resp.status;
        (status, resp.body_json())
    }

    #[test]
    fn discovery_names_the_token_endpoint_on_the_requested_host() {
        let e = entra();
        let req = Request::new(
            "GET",
            &format!("/{TENANT}/v2.0/.well-known/openid-configuration"),
        )
        .with_header("Host", "login.fake.test:8443");
        let doc = e.handle(req).body_json();
        assert_eq!(
            doc["token_endpoint"],
            "https://login.fake.test:8443/tenant-b/oauth2/v2.0/token"
        );
        assert_eq!(doc["issuer"], "https://login.fake.test:8443/tenant-b/v2.0");
        assert!(doc["jwks_uri"]
            .as_str()
            .unwrap()
            .ends_with("/tenant-b/discovery/v2.0/keys"));
        let unknown = Request::new("GET", "/nope/v2.0/.well-known/openid-configuration");
        assert_eq!(aadsts(e.handle(unknown)).1["error_codes"], json!([90002]));
    }

    #[test]
    fn a_trusted_assertion_gets_a_token_with_integer_expiry() {
        let e = entra();
        let (status, body) = aadsts(e.handle(good_request()));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["expires_in"].is_i64());
        assert!(body["ext_expires_in"].is_i64());
        let claims = Signer::kit()
            .verify(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(claims["aud"], "https://management.core.windows.net/");
        assert_eq!(claims["tid"], TENANT);
        assert_eq!(claims["appid"], "app-1");
        assert_eq!(claims["oid"], "sp-1");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3599
        );
        assert_eq!(
            e.counters().issued[&(TENANT.to_string(), "app-1".to_string())],
            1
        );
    }

    #[test]
    fn errors_have_entras_shape() {
        let e = entra();
        let (status, body) = aadsts(e.handle(token_req(TENANT, "ghost", ARM_SCOPE, "x")));
        assert_eq!(status, 400);
        assert_eq!(body["error"], "unauthorized_client");
        assert_eq!(body["error_codes"], json!([700016]));
        assert!(body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700016: "));
        for key in ["timestamp", "trace_id", "correlation_id"] {
            assert!(body[key].is_string(), "{key}");
        }
        assert_eq!(
            e.counters().refused[&(TENANT.to_string(), "ghost".to_string())],
            1
        );
    }

    #[test]
    fn a_forged_signature_is_refused() {
        let e = entra();
        let good = sa_token(CLUSTER, SUBJECT, AUDIENCE, 3600);
        let (h, rest) = good.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        use base64::Engine as _;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            json!({"iss": CLUSTER, "sub": SUBJECT, "aud": AUDIENCE, "exp": i64::MAX}).to_string(),
        );
        let forged = format!("{h}.{claims}.{sig}");
        let (status, body) = aadsts(e.handle(token_req(TENANT, "app-1", ARM_SCOPE, &forged)));
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_client"))
        );
        assert_eq!(body["error_codes"], json!([700027]));
        let (_, body) = aadsts(e.handle(token_req(TENANT, "app-1", ARM_SCOPE, "not-a-jwt")));
        assert_eq!(body["error_codes"], json!([50027]));
    }

    #[test]
    fn issuer_subject_and_audience_must_match_a_federated_credential() {
        let e = entra();
        let cases = [
            (
                sa_token("https://other.example/", SUBJECT, AUDIENCE, 3600),
                700211,
            ),
            (
                sa_token(CLUSTER, "system:serviceaccount:ns:other", AUDIENCE, 3600),
                700213,
            ),
            (
                sa_token(CLUSTER, SUBJECT, "api://AzureADTokenExchange", 3600),
                700212,
            ),
        ];
        for (assertion, code) in cases {
            let (status, body) =
                aadsts(e.handle(token_req(TENANT, "app-1", ARM_SCOPE, &assertion)));
            assert_eq!(status, 400);
            assert_eq!(body["error"], "invalid_client");
            assert_eq!(body["error_codes"], json!([code]));
        }
    }

    #[test]
    fn an_expired_assertion_is_refused() {
        let e = entra();
        let (status, body) = aadsts(e.handle(token_req(
            TENANT,
            "app-1",
            ARM_SCOPE,
            &sa_token(CLUSTER, SUBJECT, AUDIENCE, -5),
        )));
        assert_eq!(status, 400);
        assert_eq!(body["error_codes"], json!([700024]));
        // A fresh assertion looks expired to a fake whose clock runs two hours ahead.
        e.shared().clock.set_skew(7200);
        let (_, body) = aadsts(e.handle(good_request()));
        assert_eq!(body["error_codes"], json!([700024]));
    }

    #[test]
    fn scope_must_be_one_resource_default() {
        let e = entra();
        let a = sa_token(CLUSTER, SUBJECT, AUDIENCE, 3600);
        let (_, body) = aadsts(e.handle(token_req(
            TENANT,
            "app-1",
            "https://management.core.windows.net/",
            &a,
        )));
        assert_eq!(body["error"], "invalid_scope");
        let two = "https://management.core.windows.net//.default https://containerregistry.azure.net/.default";
        let (_, body) = aadsts(e.handle(token_req(TENANT, "app-1", two, &a)));
        assert_eq!(body["error"], "invalid_scope");
        let (status, body) = aadsts(e.handle(token_req(
            TENANT,
            "app-1",
            "https://containerregistry.azure.net/.default",
            &a,
        )));
        assert_eq!(status, 200);
        let claims = Signer::kit()
            .verify(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(claims["aud"], "https://containerregistry.azure.net");
    }

    #[test]
    fn missing_fields_wrong_grant_and_wrong_method_are_refused() {
        let e = entra();
        let mut req = good_request();
        req.headers.retain(|(n, _)| n != "content-type");
        assert_eq!(aadsts(e.handle(req)).1["error_codes"], json!([900144]));
        let bad_grant = Request::new("POST", &format!("/{TENANT}/oauth2/v2.0/token"))
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body("grant_type=password&client_id=app-1");
        assert_eq!(
            aadsts(e.handle(bad_grant)).1["error"],
            "unsupported_grant_type"
        );
        let no_assertion = Request::new("POST", &format!("/{TENANT}/oauth2/v2.0/token"))
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body(form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "app-1"),
                ("scope", ARM_SCOPE),
            ]));
        let (_, body) = aadsts(e.handle(no_assertion));
        assert_eq!(
            (body["error"].as_str(), &body["error_codes"]),
            (Some("invalid_client"), &json!([7000218]))
        );
        let get = Request::new("GET", &format!("/{TENANT}/oauth2/v2.0/token"));
        assert_eq!(aadsts(e.handle(get)).1["error_codes"], json!([900561]));
    }

    #[test]
    fn a_managed_identity_token_is_accepted_cross_tenant() {
        let shared = Shared::default();
        let imds = Imds::with_shared("tenant-a", shared.clone());
        imds.add_identity(ManagedIdentity {
            client_id: "mi-client".into(),
            object_id: "mi-object".into(),
            resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi".into(),
            principal: Principal::UserAssigned,
        });
        let e = Entra::with_shared(shared.clone());
        e.add_application(
            TENANT,
            Application {
                client_id: "app-x".into(),
                object_id: "sp-x".into(),
            },
        );
        e.add_federated_credential(
            "app-x",
            TENANT,
            FederatedCredential {
                issuer: "https://login.microsoftonline.com/tenant-a/v2.0".into(),
                subject: "mi-object".into(),
                audience: TOKEN_EXCHANGE_AUDIENCE.into(),
            },
        );
        let mi = imds.handle(
            Request::new("GET", &format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={TOKEN_EXCHANGE_AUDIENCE}&client_id=mi-client"))
                .with_header("Metadata", "true"),
        );
        let assertion = mi.body_json()["access_token"].as_str().unwrap().to_string();
        let (status, body) = aadsts(e.handle(token_req(TENANT, "app-x", ARM_SCOPE, &assertion)));
        assert_eq!(status, 200, "{body}");
        let claims = Signer::kit()
            .verify(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            (claims["tid"].as_str(), claims["oid"].as_str()),
            (Some(TENANT), Some("sp-x"))
        );
        // The same MI token for another resource does not carry the exchange audience.
        let arm = imds.handle(
            Request::new("GET", "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/&client_id=mi-client")
                .with_header("Metadata", "true"),
        );
        let wrong = arm.body_json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, body) = aadsts(e.handle(token_req(TENANT, "app-x", ARM_SCOPE, &wrong)));
        assert_eq!(body["error_codes"], json!([700212]));
        assert_eq!(shared.issued.all().len(), 3);
    }

    #[test]
    fn sts_and_login_issuer_forms_are_the_same_issuer() {
        assert!(same_issuer(
            "https://login.microsoftonline.com/t/v2.0",
            "https://sts.windows.net/t/"
        ));
        assert!(!same_issuer(
            "https://login.microsoftonline.com/t/v2.0",
            "https://sts.windows.net/u/"
        ));
        assert!(!same_issuer(CLUSTER, "https://oidc.example/cluster-1"));
    }

    #[test]
    fn injected_faults_fail_the_next_requests() {
        let e = entra();
        e.faults.fail_next(1, 503);
        e.faults.fail_next(1, 401);
        let (status, body) = aadsts(e.handle(good_request()));
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("temporarily_unavailable"))
        );
        let (status, body) = aadsts(e.handle(good_request()));
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
        assert_eq!(e.handle(good_request()).status, 200);
    }

    #[test]
    fn timestamps_use_entras_format() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00Z");
    }
}

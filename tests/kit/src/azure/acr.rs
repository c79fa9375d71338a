//! The fake Azure Container Registry token service: `/oauth2/exchange`, `/oauth2/token` and the
//! `/v2/` challenge, for several registries on one listener told apart by `Host` (HTTPS).
//!
//! `POST /oauth2/token` takes a refresh token (what acrpull sends); `GET /oauth2/token` takes Basic
//! auth with the null GUID and a refresh or access token (what Docker clients do with the pull
//! Secret acrpull writes).
//!
//! Tokens follow the Docker registry token format: RS256 JWTs with `iss` = `Azure Container
//! Registry`, `aud` = the registry host, and (access tokens) an `access` list. Grants model role
//! assignments: a grant on repository `*` is registry-wide (like AcrPull); a requested scope must
//! still name one repository, as ACR allows no wildcards in scopes.

use super::entra::form_of;
use super::fault::FaultPlan;
use super::{entra_issuer_tenant, host_name, lock, LoggedRequest, Shared};
use crate::http::{Handler, Request, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The ACR audience (the same in every cloud).
pub const ACR_AUDIENCE: &str = "https://containerregistry.azure.net";
/// ARM audiences in every cloud (compared without a trailing slash).
pub const ARM_AUDIENCES: [&str; 6] = [
    "https://management.core.windows.net/",
    "https://management.azure.com/",
    "https://management.core.usgovcloudapi.net/",
    "https://management.usgovcloudapi.net/",
    "https://management.core.chinacloudapi.cn/",
    "https://management.chinacloudapi.cn/",
];
/// The user name that marks an ACR token as the password.
pub const NULL_GUID: &str = "00000000-0000-0000-0000-000000000000";
/// The issuer of registry tokens.
const ACR_ISSUER: &str = "Azure Container Registry";
/// Default lifetimes: refresh tokens 3 h (ACR docs), access tokens 75 min (observed, doc sample).
pub const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(3 * 3600);
/// See [`DEFAULT_REFRESH_LIFETIME`].
pub const DEFAULT_ACCESS_LIFETIME: Duration = Duration::from_secs(75 * 60);

/// Which Entra token audiences a registry accepts at `/oauth2/exchange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audiences {
    /// The default: ARM and ACR audiences.
    ArmAndAcr,
    /// Authentication-as-ARM disabled: only the ACR audience.
    AcrOnly,
}

/// One registry served by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// The login server, e.g. `example.azurecr.io` (a `:port` is allowed; `Host` may add one).
    pub host: String,
    /// Which audiences `/oauth2/exchange` accepts.
    pub accepted_audiences: Audiences,
    /// Repositories that exist (informational: authorization follows grants, as in ACR).
    pub repositories: Vec<String>,
}

/// What the fake ACR has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcrCounters {
    /// Successful exchanges by (host, principal object id).
    pub exchanges: HashMap<(String, String), u64>,
    /// Successful token requests by (host, principal, requested scopes joined with a space).
    pub tokens: HashMap<(String, String, String), u64>,
    /// Refused exchange and token requests.
    pub refused: u64,
}

/// Why ACR refused a request; renders as `{"errors":[{"code","message"}]}` with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// No registry has this host, or no such route.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// A required form field is missing or empty.
    MissingField(&'static str),
    /// The grant type is not the one this endpoint serves.
    UnsupportedGrant,
    /// `service` is not this registry.
    ServiceMismatch,
    /// The presented Entra token is not one the fakes issued, or is malformed.
    InvalidToken,
    /// The presented token has expired.
    Expired,
    /// The token's audience is neither ARM nor ACR.
    WrongAudience,
    /// An ARM-audience token at a registry with authentication-as-ARM disabled.
    ArmDisabled,
    /// `tenant` was sent and differs from the token's.
    TenantMismatch,
    /// The refresh token is not one this registry issued.
    InvalidRefreshToken,
    /// Basic credentials that are not the null GUID and a registry token of this registry.
    BadCredentials,
    /// A scope that does not parse as `type:name:actions`.
    MalformedScope(String),
    /// An injected fault.
    Injected(u16),
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::NotFound => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::MissingField(_)
            | Refusal::UnsupportedGrant
            | Refusal::ServiceMismatch
            | Refusal::MalformedScope(_) => 400,
            Refusal::Injected(s) => *s,
            _ => 401,
        }
    }

    fn code(&self) -> &'static str {
        match self.status() {
            404 => "NOT_FOUND",
            405 => "UNSUPPORTED",
            400 => "BAD_REQUEST",
            401 => "UNAUTHORIZED",
            429 => "TOOMANYREQUESTS",
            _ => "UNKNOWN",
        }
    }

    fn response(&self) -> Response {
        let body = json!({"errors": [{"code": self.code(), "message": self.to_string()}]});
        let resp = Response::json(self.status(), &body);
        if self.status() == 429 {
            resp.with_header("retry-after", "1")
        } else {
            resp
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotFound => f.write_str("not found"),
            Refusal::MethodNotAllowed => f.write_str("method not allowed"),
            Refusal::MissingField(n) => write!(f, "missing required parameter: {n}"),
            Refusal::UnsupportedGrant => f.write_str("unsupported grant type"),
            Refusal::ServiceMismatch => f.write_str("service name does not match the registry"),
            Refusal::InvalidToken => f.write_str("the access token is invalid"),
            Refusal::Expired => f.write_str("the access token has expired"),
            Refusal::WrongAudience => f.write_str("the access token has an invalid audience"),
            Refusal::ArmDisabled => f.write_str("authentication with an ARM audience token is disabled for this registry; use a token for https://containerregistry.azure.net"),
            Refusal::TenantMismatch => f.write_str("the tenant does not match the access token"),
            Refusal::InvalidRefreshToken => f.write_str("the refresh token is invalid or expired"),
            Refusal::BadCredentials => f.write_str("authentication required, visit https://aka.ms/acr/authorization for more information."),
            Refusal::MalformedScope(s) => write!(f, "invalid scope: {s}"),
            Refusal::Injected(401) => f.write_str("authentication required, visit https://aka.ms/acr/authorization for more information."),
            Refusal::Injected(_) => f.write_str("injected fault"),
        }
    }
}

/// One requested scope.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    kind: String,
    name: String,
    actions: Vec<String>,
}

/// A successful answer: (principal, scope asked for, body).
type Issued = (String, Option<String>, Value);

/// (principal, registry host) → (repository, actions) grants.
type Grants = HashMap<(String, String), Vec<(String, Vec<String>)>>;

/// The fake ACR.
#[derive(Debug)]
pub struct Acr {
    shared: Shared,
    registries: Mutex<Vec<Registry>>,
    grants: Mutex<Grants>,
    refresh_lifetime: Mutex<Duration>,
    access_lifetime: Mutex<Duration>,
    counters: Mutex<AcrCounters>,
    // Base64 DER certificates (leaf first) put in registry tokens' `x5c` header; empty: none.
    token_x5c: Mutex<Vec<String>>,
    /// Faults and latency for the next exchange and token requests.
    pub faults: FaultPlan,
}

impl Default for Acr {
    fn default() -> Acr {
        Acr::new()
    }
}

impl Acr {
    /// A fake ACR serving no registry yet.
    pub fn new() -> Acr {
        Acr::with_shared(Shared::default())
    }

    /// Same, sharing clock and token registry with the other fakes.
    pub fn with_shared(shared: Shared) -> Acr {
        Acr {
            shared,
            registries: Mutex::default(),
            grants: Mutex::default(),
            refresh_lifetime: Mutex::new(DEFAULT_REFRESH_LIFETIME),
            access_lifetime: Mutex::new(DEFAULT_ACCESS_LIFETIME),
            counters: Mutex::default(),
            token_x5c: Mutex::default(),
            faults: FaultPlan::default(),
        }
    }

    /// Serves a registry.
    pub fn add_registry(&self, registry: Registry) {
        let mut r = registry;
        r.host = r.host.to_ascii_lowercase();
        lock(&self.registries).push(r);
    }

    /// Lets `principal` (an object id or client id) do `actions` on repositories of `host`
    /// (`*` as the repository: every repository, like a registry-scope role assignment;
    /// `registry:catalog` for the catalog scope).
    pub fn grant(&self, principal: &str, host: &str, grants: &[(&str, &[&str])]) {
        let mut g = lock(&self.grants);
        let entry = g
            .entry((principal.to_string(), host.to_ascii_lowercase()))
            .or_default();
        for (repo, actions) in grants {
            entry.push((
                repo.to_string(),
                actions.iter().map(|a| a.to_string()).collect(),
            ));
        }
    }

    /// Sets the lifetime of refresh tokens issued from now on. Defaults to 3 h.
    pub fn set_refresh_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.refresh_lifetime) = lifetime;
    }

    /// Sets the lifetime of access tokens issued from now on. Defaults to 75 min.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.access_lifetime) = lifetime;
    }

    /// Makes every registry token issued from now on carry an `x5c` header with this certificate
    /// chain (DER, leaf first; the leaf certifies the kit signing key), so a real registry
    /// (distribution's token auth) can verify them against its root bundle. Off by default;
    /// an empty chain turns it off again.
    pub fn set_token_certificate_chain(&self, chain: &[Vec<u8>]) {
        use base64::Engine as _;
        *lock(&self.token_x5c) = chain
            .iter()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .collect();
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> AcrCounters {
        lock(&self.counters).clone()
    }

    /// The shared clock, registry and log.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Every token string the fakes sharing this one's registry ever issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.issued.all()
    }

    /// Whether `bearer` (a registry access token) allows `action` on `repository` at `host`.
    pub fn authorize(&self, host: &str, bearer: &str, repository: &str, action: &str) -> bool {
        let Some(reg) = self.registry(host) else {
            return false;
        };
        let Some(claims) = self.registry_token(&reg, bearer) else {
            return false;
        };
        claims["access"].as_array().is_some_and(|entries| {
            entries.iter().any(|e| {
                e["type"] == "repository"
                    && e["name"] == repository
                    && e["actions"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == action || x == "*"))
            })
        })
    }

    /// The registry a `Host` header names (with or without its port).
    fn registry(&self, host: &str) -> Option<Registry> {
        let host = host.trim().to_ascii_lowercase();
        let name = host_name(&host);
        let regs = lock(&self.registries);
        regs.iter()
            .find(|r| r.host == host)
            .or_else(|| regs.iter().find(|r| host_name(&r.host) == name))
            .cloned()
    }

    /// The claims of an unexpired token this registry issued (refresh or access).
    fn registry_token(&self, reg: &Registry, token: &str) -> Option<Value> {
        let claims = self.shared.verify(token)?;
        let ok = claims["iss"] == ACR_ISSUER
            && claims["aud"] == reg.host.as_str()
            && claims["exp"]
                .as_i64()
                .is_some_and(|e| e > self.shared.clock.now_unix());
        ok.then_some(claims)
    }

    fn route(&self, req: &Request) -> Result<(Option<String>, Option<String>, Response), Refusal> {
        let reg = req
            .header("host")
            .and_then(|h| self.registry(h))
            .ok_or(Refusal::NotFound)?;
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/oauth2/exchange") => self.with_fault(|| self.exchange(&reg, req)),
            ("POST", "/oauth2/token") => self.with_fault(|| self.token(&reg, req)),
            ("GET", "/oauth2/token") => self.with_fault(|| self.token_get(&reg, req)),
            (_, "/oauth2/exchange" | "/oauth2/token") => Err(Refusal::MethodNotAllowed),
            ("GET", "/v2/" | "/v2") => Ok((None, None, self.challenge(&reg, req))),
            _ => Err(Refusal::NotFound),
        }
    }

    fn with_fault(
        &self,
        serve: impl FnOnce() -> Result<Issued, Refusal>,
    ) -> Result<(Option<String>, Option<String>, Response), Refusal> {
        let result = match self.faults.apply() {
            Some(status) => Err(Refusal::Injected(status)),
            None => serve(),
        };
        match result {
            Ok((principal, scope, body)) => {
                Ok((Some(principal), scope, Response::json(200, &body)))
            }
            Err(e) => {
                lock(&self.counters).refused += 1;
                Err(e)
            }
        }
    }

    /// `POST /oauth2/exchange`: an Entra token for a registry refresh token.
    fn exchange(&self, reg: &Registry, req: &Request) -> Result<Issued, Refusal> {
        let form = form_of(req);
        let grant = field(&form, "grant_type")?;
        if grant != "access_token" && grant != "access_token_refresh_token" {
            return Err(Refusal::UnsupportedGrant);
        }
        check_service(reg, field(&form, "service")?)?;
        let aad = field(&form, "access_token")?;
        let claims = self.shared.verify(aad).ok_or(Refusal::InvalidToken)?;
        let tid = claims["iss"]
            .as_str()
            .and_then(entra_issuer_tenant)
            .ok_or(Refusal::InvalidToken)?
            .to_string();
        if claims["tid"] != tid.as_str() {
            return Err(Refusal::InvalidToken);
        }
        if claims["exp"]
            .as_i64()
            .is_none_or(|e| e <= self.shared.clock.now_unix())
        {
            return Err(Refusal::Expired);
        }
        check_audience(reg, claims["aud"].as_str().unwrap_or_default())?;
        if let Some(t) = form.iter().find(|(k, _)| k == "tenant").map(|(_, v)| v) {
            if !t.is_empty() && *t != tid {
                return Err(Refusal::TenantMismatch);
            }
        }
        let oid = claims["oid"]
            .as_str()
            .ok_or(Refusal::InvalidToken)?
            .to_string();
        let appid = claims["appid"]
            .as_str()
            .or(claims["azp"].as_str())
            .unwrap_or_default();
        let now = self.shared.clock.now_unix();
        let refresh = self.mint(&json!({
            "jti": self.shared.token_id(), "sub": oid, "oid": oid, "appid": appid,
            "tenant": tid, "iss": ACR_ISSUER, "aud": reg.host,
            "nbf": now, "iat": now,
            "exp": now + lock(&self.refresh_lifetime).as_secs() as i64,
            "grant_type": "refresh_token", "version": "1.0",
            "permissions": {"actions": ["*"], "notActions": []}, "roles": [],
        }));
        *lock(&self.counters)
            .exchanges
            .entry((reg.host.clone(), oid.clone()))
            .or_default() += 1;
        Ok((oid, None, json!({"refresh_token": refresh})))
    }

    /// `POST /oauth2/token`: a refresh token for an access token limited to granted ∩ requested.
    fn token(&self, reg: &Registry, req: &Request) -> Result<Issued, Refusal> {
        let form = form_of(req);
        if field(&form, "grant_type")? != "refresh_token" {
            return Err(Refusal::UnsupportedGrant);
        }
        check_service(reg, field(&form, "service")?)?;
        let claims = self
            .registry_token(reg, field(&form, "refresh_token")?)
            .filter(|c| c["grant_type"] == "refresh_token")
            .ok_or(Refusal::InvalidRefreshToken)?;
        self.access_token(reg, &claims, scopes_in(&form))
    }

    /// `GET /oauth2/token?service=&scope=` with Basic auth, the null GUID as user and a registry
    /// refresh or access token as password: what Docker clients do with a pull secret.
    fn token_get(&self, reg: &Registry, req: &Request) -> Result<Issued, Refusal> {
        let service = req
            .query_param("service")
            .filter(|s| !s.is_empty())
            .ok_or(Refusal::MissingField("service"))?;
        check_service(reg, service)?;
        let password = basic_password(req).ok_or(Refusal::BadCredentials)?;
        let claims = self
            .registry_token(reg, &password)
            .ok_or(Refusal::BadCredentials)?;
        self.access_token(reg, &claims, scopes_in(&req.query))
    }

    /// Mints an access token for the requested scopes, limited by what the credential allows:
    /// the principal's grants for a refresh token, the token's own `access` for an access token.
    fn access_token(
        &self,
        reg: &Registry,
        cred: &Value,
        requested: Vec<&str>,
    ) -> Result<Issued, Refusal> {
        let scopes = requested
            .iter()
            .map(|s| parse_scope(s))
            .collect::<Result<Vec<_>, _>>()?;
        let oid = cred["sub"].as_str().unwrap_or_default().to_string();
        let access = if cred["grant_type"] == "refresh_token" {
            let appid = cred["appid"].as_str().unwrap_or_default();
            self.allowed(&reg.host, &[oid.as_str(), appid], &scopes)
        } else {
            narrowed(&cred["access"], &scopes)
        };
        let now = self.shared.clock.now_unix();
        let token = self.mint(&json!({
            "jti": self.shared.token_id(), "sub": oid, "nbf": now, "iat": now,
            "exp": now + lock(&self.access_lifetime).as_secs() as i64,
            "iss": ACR_ISSUER, "aud": reg.host, "version": "1.0", "access": access,
            "roles": [], "grant_type": "access_token",
        }));
        let scope = requested.join(" ");
        *lock(&self.counters)
            .tokens
            .entry((reg.host.clone(), oid.clone(), scope.clone()))
            .or_default() += 1;
        Ok((oid, Some(scope), json!({"access_token": token})))
    }

    /// Signs a registry token, with the `x5c` header when one is set, and records it as issued.
    fn mint(&self, claims: &Value) -> String {
        let x5c = lock(&self.token_x5c).clone();
        if x5c.is_empty() {
            return self.shared.mint(claims);
        }
        let mut header = serde_json::Map::new();
        header.insert("x5c".to_string(), json!(x5c));
        let token = self.shared.signer.sign_with_header(&header, claims);
        self.shared.issued.record(&token);
        token
    }

    /// The `access` list: for each requested scope, the requested actions granted. A grant on
    /// `*` covers every repository; `registry:<name>` grants cover registry scopes (the catalog).
    fn allowed(&self, host: &str, principals: &[&str], scopes: &[Scope]) -> Vec<Value> {
        let grants = lock(&self.grants);
        let held: Vec<&(String, Vec<String>)> = principals
            .iter()
            .filter(|p| !p.is_empty())
            .filter_map(|p| grants.get(&(p.to_string(), host.to_string())))
            .flatten()
            .collect();
        let covers = |granted: &str, s: &Scope| match s.kind.as_str() {
            "repository" => granted == s.name || granted == "*",
            _ => granted.strip_prefix("registry:") == Some(s.name.as_str()),
        };
        scopes
            .iter()
            .filter_map(|s| {
                let actions: Vec<&String> = s
                    .actions
                    .iter()
                    .filter(|a| {
                        held.iter().any(|(name, acts)| {
                            covers(name, s) && acts.iter().any(|g| g == *a || g == "*")
                        })
                    })
                    .collect();
                (!actions.is_empty())
                    .then(|| json!({"type": s.kind, "name": s.name, "actions": actions}))
            })
            .collect()
    }

    /// `GET /v2/`: 200 with a valid bearer for this registry, else the token challenge.
    fn challenge(&self, reg: &Registry, req: &Request) -> Response {
        let bearer = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| {
            self.registry_token(reg, b)
                .is_some_and(|c| c.get("access").is_some())
        }) {
            return Response::json(200, &json!({}))
                .with_header("docker-distribution-api-version", "registry/2.0");
        }
        let realm_host = req.header("host").unwrap_or(&reg.host);
        let body = json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required, visit https://aka.ms/acr/authorization for more information.", "detail": null}]});
        Response::json(401, &body)
            .with_header(
                "www-authenticate",
                &format!(
                    "Bearer realm=\"https://{realm_host}/oauth2/token\",service=\"{}\"",
                    reg.host
                ),
            )
            .with_header("docker-distribution-api-version", "registry/2.0")
    }
}

impl Handler for Acr {
    fn handle(&self, req: Request) -> Response {
        let (status, principal, scope, resp) = match self.route(&req) {
            Ok((principal, scope, resp)) => (resp.status, principal, scope, resp),
            Err(r) => (r.status(), None, None, r.response()),
        };
        self.shared.log(LoggedRequest {
            service: "acr",
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

fn field<'a>(form: &'a [(String, String)], name: &'static str) -> Result<&'a str, Refusal> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
        .ok_or(Refusal::MissingField(name))
}

/// Every `scope` field, each split on spaces (ACR takes both forms).
fn scopes_in(fields: &[(String, String)]) -> Vec<&str> {
    fields
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split_whitespace())
        .collect()
}

/// The password of `Authorization: Basic` credentials whose user is the null GUID.
fn basic_password(req: &Request) -> Option<String> {
    use base64::Engine as _;
    let encoded = req.header("authorization")?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (user == NULL_GUID).then(|| password.to_string())
}

/// The `access` entries of an access token narrowed to the requested scopes.
fn narrowed(access: &Value, scopes: &[Scope]) -> Vec<Value> {
    let held = access.as_array().map(Vec::as_slice).unwrap_or_default();
    scopes
        .iter()
        .filter_map(|s| {
            let actions: Vec<&String> = s
                .actions
                .iter()
                .filter(|a| {
                    held.iter().any(|e| {
                        e["type"] == s.kind.as_str()
                            && e["name"] == s.name.as_str()
                            && e["actions"]
                                .as_array()
                                .is_some_and(|x| x.iter().any(|g| g == a.as_str() || g == "*"))
                    })
                })
                .collect();
            (!actions.is_empty())
                .then(|| json!({"type": s.kind, "name": s.name, "actions": actions}))
        })
        .collect()
}

/// `service` must name this registry (its host, with or without the port it is configured with).
fn check_service(reg: &Registry, service: &str) -> Result<(), Refusal> {
    let s = service.to_ascii_lowercase();
    if s == reg.host || s == host_name(&reg.host) {
        Ok(())
    } else {
        Err(Refusal::ServiceMismatch)
    }
}

fn check_audience(reg: &Registry, aud: &str) -> Result<(), Refusal> {
    let aud = aud.trim_end_matches('/');
    if aud == ACR_AUDIENCE {
        return Ok(());
    }
    if ARM_AUDIENCES.iter().any(|a| a.trim_end_matches('/') == aud) {
        return match reg.accepted_audiences {
            Audiences::ArmAndAcr => Ok(()),
            Audiences::AcrOnly => Err(Refusal::ArmDisabled),
        };
    }
    Err(Refusal::WrongAudience)
}

/// Parses `type:name:action[,action]`; the name may not be empty, nor may any action.
fn parse_scope(s: &str) -> Result<Scope, Refusal> {
    let bad = || Refusal::MalformedScope(s.to_string());
    let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
    let (name, actions) = rest.rsplit_once(':').ok_or_else(bad)?;
    let actions: Vec<String> = actions.split(',').map(str::to_string).collect();
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*".contains(&b));
    if !matches!(kind, "repository" | "registry")
        || !valid_name
        || actions.iter().any(String::is_empty)
    {
        return Err(bad());
    }
    Ok(Scope {
        kind: kind.to_string(),
        name: name.to_string(),
        actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{claims_unverified, now_unix, Signer};

    const HOST: &str = "reg1.azurecr.io";
    const STRICT: &str = "strict.azurecr.io";

    fn acr() -> Acr {
        let acr = Acr::new();
        acr.add_registry(Registry {
            host: HOST.into(),
            accepted_audiences: Audiences::ArmAndAcr,
            repositories: vec!["alice".into(), "bob".into()],
        });
        acr.add_registry(Registry {
            host: STRICT.into(),
            accepted_audiences: Audiences::AcrOnly,
            repositories: vec!["alice".into()],
        });
        acr.grant(
            "oid-1",
            HOST,
            &[("alice", &["pull"]), ("bob", &["pull", "push"])],
        );
        acr.grant("oid-1", STRICT, &[("*", &["pull"])]);
        acr
    }

    fn entra_token(aud: &str, exp_in: i64) -> String {
        let now = now_unix();
        Signer::kit().sign(&json!({"iss": "https://sts.windows.net/t1/", "tid": "t1", "oid": "oid-1", "appid": "app-1", "aud": aud, "iat": now, "exp": now + exp_in}))
    }

    fn post(host: &str, path: &str, body: &str) -> Request {
        Request::new("POST", path)
            .with_header("Host", host)
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body(body.to_string())
    }

    fn exchange(acr: &Acr, host: &str, service: &str, token: &str) -> Response {
        acr.handle(post(
            host,
            "/oauth2/exchange?api-version=2021-07-01",
            &format!("grant_type=access_token&service={service}&access_token={token}"),
        ))
    }

    fn refresh_token(acr: &Acr, host: &str) -> String {
        let r = exchange(acr, host, host, &entra_token(ACR_AUDIENCE, 3600)).body_json();
        r["refresh_token"]
            .as_str()
            .expect("exchange succeeds")
            .to_string()
    }

    fn access(acr: &Acr, host: &str, scope: &str, refresh: &str) -> Response {
        acr.handle(post(
            host,
            "/oauth2/token?api-version=2021-07-01",
            &format!(
                "grant_type=refresh_token&service={host}&scope={scope}&refresh_token={refresh}"
            ),
        ))
    }

    #[test]
    fn exchange_returns_a_registry_refresh_token() {
        let acr = acr();
        let resp = exchange(
            &acr,
            HOST,
            HOST,
            &entra_token("https://management.core.windows.net/", 3600),
        );
        assert_eq!(resp.status, 200);
        let t = resp.body_json()["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        let c = Signer::kit().verify(&t).unwrap();
        assert_eq!(
            (c["iss"].as_str(), c["aud"].as_str(), c["sub"].as_str()),
            (Some(ACR_ISSUER), Some(HOST), Some("oid-1"))
        );
        assert_eq!(c["grant_type"], "refresh_token");
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            3 * 3600
        );
        assert_eq!(
            acr.counters().exchanges[&(HOST.to_string(), "oid-1".to_string())],
            1
        );
    }

    #[test]
    fn exchange_with_a_service_for_another_registry_is_refused() {
        let acr = acr();
        let resp = exchange(&acr, HOST, STRICT, &entra_token(ACR_AUDIENCE, 3600));
        assert_eq!(resp.status, 400);
        assert_eq!(resp.body_json()["errors"][0]["code"], "BAD_REQUEST");
    }

    #[test]
    fn host_with_a_port_finds_the_registry() {
        let acr = acr();
        assert_eq!(
            exchange(
                &acr,
                "reg1.azurecr.io:8443",
                HOST,
                &entra_token(ACR_AUDIENCE, 3600)
            )
            .status,
            200
        );
        assert_eq!(
            exchange(
                &acr,
                "unknown.azurecr.io",
                "unknown.azurecr.io",
                &entra_token(ACR_AUDIENCE, 3600)
            )
            .status,
            404
        );
    }

    #[test]
    fn foreign_or_expired_tokens_are_refused() {
        let acr = acr();
        // Signed by the kit but issued by the Kubernetes API server, not Entra.
        let sa = Signer::kit().sign(&json!({"iss": "https://kubernetes.default.svc", "aud": ACR_AUDIENCE, "exp": now_unix() + 600, "oid": "oid-1"}));
        assert_eq!(exchange(&acr, HOST, HOST, &sa).status, 401);
        // Right claims, not signed by the kit.
        let good = entra_token(ACR_AUDIENCE, 3600);
        let forged = format!("{}.AAAA", good.rsplit_once('.').unwrap().0);
        assert_eq!(exchange(&acr, HOST, HOST, &forged).status, 401);
        let expired = exchange(&acr, HOST, HOST, &entra_token(ACR_AUDIENCE, -1));
        assert_eq!(expired.status, 401);
        assert_eq!(expired.body_json()["errors"][0]["code"], "UNAUTHORIZED");
        assert_eq!(
            exchange(
                &acr,
                HOST,
                HOST,
                &entra_token("https://graph.microsoft.com", 3600)
            )
            .status,
            401
        );
        assert_eq!(acr.counters().refused, 4);
    }

    #[test]
    fn arm_audience_is_refused_where_authentication_as_arm_is_disabled() {
        let acr = acr();
        for aud in [
            "https://management.core.windows.net/",
            "https://management.azure.com/",
        ] {
            let resp = exchange(&acr, STRICT, STRICT, &entra_token(aud, 3600));
            assert_eq!(resp.status, 401);
            assert!(resp.body_json()["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("ARM audience"));
        }
        assert_eq!(
            exchange(&acr, STRICT, STRICT, &entra_token(ACR_AUDIENCE, 3600)).status,
            200
        );
        assert_eq!(
            exchange(
                &acr,
                HOST,
                HOST,
                &entra_token("https://management.usgovcloudapi.net", 3600)
            )
            .status,
            200
        );
    }

    #[test]
    fn a_mismatched_tenant_is_refused() {
        let acr = acr();
        let body = format!(
            "grant_type=access_token&service={HOST}&tenant=t2&access_token={}",
            entra_token(ACR_AUDIENCE, 3600)
        );
        assert_eq!(
            acr.handle(post(HOST, "/oauth2/exchange", &body)).status,
            401
        );
    }

    #[test]
    fn access_token_carries_granted_intersect_requested() {
        let acr = acr();
        let refresh = refresh_token(&acr, HOST);
        let scope = "repository:alice:pull,push repository:bob:pull repository:carol:pull";
        let resp = access(&acr, HOST, scope, &refresh);
        assert_eq!(resp.status, 200);
        let token = resp.body_json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let c = Signer::kit().verify(&token).unwrap();
        assert_eq!(
            c["access"],
            json!([
                {"type": "repository", "name": "alice", "actions": ["pull"]},
                {"type": "repository", "name": "bob", "actions": ["pull"]},
            ])
        );
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            75 * 60
        );
        assert!(acr.authorize(HOST, &token, "alice", "pull"));
        assert!(!acr.authorize(HOST, &token, "alice", "push"));
        assert!(!acr.authorize(HOST, &token, "carol", "pull"));
        assert!(!acr.authorize(STRICT, &token, "alice", "pull"));
        assert_eq!(
            acr.counters().tokens[&(HOST.to_string(), "oid-1".to_string(), scope.to_string())],
            1
        );
    }

    #[test]
    fn repeated_scope_fields_are_accepted_and_registry_wide_grants_apply() {
        let acr = acr();
        let refresh = refresh_token(&acr, STRICT);
        let body = format!("grant_type=refresh_token&service={STRICT}&scope=repository:alice:pull&scope=repository:zed:pull,push&refresh_token={refresh}");
        let token = acr.handle(post(STRICT, "/oauth2/token", &body)).body_json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let c = claims_unverified(&token).unwrap();
        assert_eq!(
            c["access"][1],
            json!({"type": "repository", "name": "zed", "actions": ["pull"]})
        );
        assert!(acr.authorize(STRICT, &token, "alice", "pull"));
    }

    #[test]
    fn malformed_scopes_are_refused_like_acr() {
        let acr = acr();
        let refresh = refresh_token(&acr, HOST);
        for scope in [
            "repository:alice",
            "alice",
            "repository::pull",
            "repository:Alice:pull",
            "repository:alice:pull,",
            "blob:alice:pull",
        ] {
            let resp = access(&acr, HOST, scope, &refresh);
            assert_eq!(resp.status, 400, "{scope}");
            assert!(resp.body_json()["errors"][0]["code"].is_string());
        }
    }

    #[test]
    fn refresh_tokens_are_bound_to_their_registry_and_lifetime() {
        let acr = acr();
        let refresh = refresh_token(&acr, HOST);
        assert_eq!(
            access(&acr, STRICT, "repository:alice:pull", &refresh).status,
            401
        );
        // An access token is not a refresh token.
        let token = access(&acr, HOST, "repository:alice:pull", &refresh).body_json()
            ["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            access(&acr, HOST, "repository:alice:pull", &token).status,
            401
        );
        // Service for another registry.
        let body = format!("grant_type=refresh_token&service={STRICT}&scope=repository:alice:pull&refresh_token={refresh}");
        assert_eq!(acr.handle(post(HOST, "/oauth2/token", &body)).status, 400);
        acr.set_refresh_token_lifetime(Duration::from_secs(5));
        let short = refresh_token(&acr, HOST);
        acr.shared().clock.set_skew(6);
        assert_eq!(
            access(&acr, HOST, "repository:alice:pull", &short).status,
            401
        );
        assert_eq!(
            access(&acr, HOST, "repository:alice:pull", &refresh).status,
            200
        );
    }

    #[test]
    fn access_token_lifetime_is_settable_down_to_seconds() {
        let acr = acr();
        acr.set_access_token_lifetime(Duration::from_secs(3));
        let refresh = refresh_token(&acr, HOST);
        let token = access(&acr, HOST, "repository:alice:pull", &refresh).body_json()
            ["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let c = claims_unverified(&token).unwrap();
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 3);
        assert!(acr.authorize(HOST, &token, "alice", "pull"));
        acr.shared().clock.set_skew(4);
        assert!(!acr.authorize(HOST, &token, "alice", "pull"));
    }

    #[test]
    fn v2_challenges_with_the_token_realm_then_accepts_a_registry_token() {
        let acr = acr();
        let resp =
            acr.handle(Request::new("GET", "/v2/").with_header("Host", "reg1.azurecr.io:8443"));
        assert_eq!(resp.status, 401);
        let challenge = resp
            .headers
            .iter()
            .find(|(n, _)| n == "www-authenticate")
            .map(|(_, v)| v.clone());
        assert_eq!(challenge.as_deref(), Some("Bearer realm=\"https://reg1.azurecr.io:8443/oauth2/token\",service=\"reg1.azurecr.io\""));
        let refresh = refresh_token(&acr, HOST);
        let token = access(&acr, HOST, "repository:alice:pull", &refresh).body_json()
            ["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let ok = acr.handle(
            Request::new("GET", "/v2/")
                .with_header("Host", HOST)
                .with_header("Authorization", &format!("Bearer {token}")),
        );
        assert_eq!(ok.status, 200);
        let with_refresh = acr.handle(
            Request::new("GET", "/v2/")
                .with_header("Host", HOST)
                .with_header("Authorization", &format!("Bearer {refresh}")),
        );
        assert_eq!(with_refresh.status, 401);
    }

    #[test]
    fn registry_tokens_carry_x5c_only_when_a_chain_is_set() {
        let header = |t: &str| -> Value {
            use base64::Engine as _;
            let h = t.split('.').next().unwrap();
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .unwrap(),
            )
            .unwrap()
        };
        let acr = acr();
        let plain = refresh_token(&acr, HOST);
        assert!(header(&plain).get("x5c").is_none());
        acr.set_token_certificate_chain(&[vec![1, 2, 3], vec![4]]);
        let refresh = refresh_token(&acr, HOST);
        assert_eq!(header(&refresh)["x5c"], json!(["AQID", "BA=="]));
        let token = access(&acr, HOST, "repository:alice:pull", &refresh).body_json()
            ["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(header(&token)["x5c"], json!(["AQID", "BA=="]));
        assert!(acr.authorize(HOST, &token, "alice", "pull"));
        assert!(acr.issued_tokens().contains(&token));
        acr.set_token_certificate_chain(&[]);
        assert!(header(&refresh_token(&acr, HOST)).get("x5c").is_none());
    }

    #[test]
    fn injected_faults_fail_exchanges_then_clear() {
        let acr = acr();
        acr.faults.fail_next(1, 401);
        acr.faults.fail_next(1, 503);
        assert_eq!(
            exchange(&acr, HOST, HOST, &entra_token(ACR_AUDIENCE, 3600)).status,
            401
        );
        assert_eq!(
            exchange(&acr, HOST, HOST, &entra_token(ACR_AUDIENCE, 3600)).status,
            503
        );
        assert_eq!(
            exchange(&acr, HOST, HOST, &entra_token(ACR_AUDIENCE, 3600)).status,
            200
        );
    }

    #[test]
    fn the_request_log_holds_no_token_but_the_registry_has_them_all() {
        let acr = acr();
        let refresh = refresh_token(&acr, HOST);
        let token = access(&acr, HOST, "repository:alice:pull", &refresh).body_json()
            ["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let log = format!("{:?}", acr.shared().requests());
        assert!(!log.contains(&refresh) && !log.contains(&token));
        assert!(log.contains("repository:alice:pull"));
        assert_eq!(acr.issued_tokens(), vec![refresh, token]);
        assert!(!format!("{acr:?}").contains("eyJ"));
    }

    fn basic(password: &str) -> String {
        use base64::Engine as _;
        let creds = format!("{NULL_GUID}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(creds)
        )
    }

    fn docker_get(acr: &Acr, query: &str, auth: &str) -> Response {
        acr.handle(
            Request::new("GET", &format!("/oauth2/token?{query}"))
                .with_header("Host", HOST)
                .with_header("Authorization", auth),
        )
    }

    #[test]
    fn docker_clients_get_a_token_with_basic_auth_and_a_refresh_token() {
        let acr = acr();
        let refresh = refresh_token(&acr, HOST);
        let q = format!("service={HOST}&scope=repository:bob:pull,push");
        let resp = docker_get(&acr, &q, &basic(&refresh));
        assert_eq!(resp.status, 200);
        let token = resp.body_json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(acr.authorize(HOST, &token, "bob", "push"));
        assert_eq!(
            claims_unverified(&token).unwrap()["grant_type"],
            "access_token"
        );
        // The wrong user name, or no credentials, is a 401.
        use base64::Engine as _;
        let other = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{refresh}"))
        );
        assert_eq!(docker_get(&acr, &q, &other).status, 401);
        assert_eq!(docker_get(&acr, &q, "Bearer x").status, 401);
    }

    #[test]
    fn an_access_token_as_password_only_narrows_its_own_access() {
        let acr = acr();
        let refresh = refresh_token(&acr, HOST);
        let scoped = access(&acr, HOST, "repository:alice:pull", &refresh).body_json()
            ["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let q = format!("service={HOST}&scope=repository:alice:pull&scope=repository:bob:pull");
        let token = docker_get(&acr, &q, &basic(&scoped)).body_json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(acr.authorize(HOST, &token, "alice", "pull"));
        assert!(!acr.authorize(HOST, &token, "bob", "pull"));
    }

    #[test]
    fn catalog_scope_needs_a_registry_grant() {
        let acr = acr();
        let refresh = refresh_token(&acr, HOST);
        let scope = "registry:catalog:*";
        let c = |acr: &Acr| {
            let t = access(acr, HOST, scope, &refresh).body_json()["access_token"]
                .as_str()
                .unwrap()
                .to_string();
            claims_unverified(&t).unwrap()["access"].clone()
        };
        assert_eq!(c(&acr), json!([]));
        acr.grant("oid-1", HOST, &[("registry:catalog", &["*"])]);
        assert_eq!(
            c(&acr),
            json!([{"type": "registry", "name": "catalog", "actions": ["*"]}])
        );
    }

    #[test]
    fn wrong_grant_method_or_content_type_is_refused() {
        let acr = acr();
        let json_body = Request::new("POST", "/oauth2/exchange")
            .with_header("Host", HOST)
            .with_header("Content-Type", "application/json")
            .with_body(format!(
                "grant_type=access_token&service={HOST}&access_token={}",
                entra_token(ACR_AUDIENCE, 3600)
            ));
        assert_eq!(acr.handle(json_body).status, 400);
        let body = format!("grant_type=password&service={HOST}&access_token=x");
        assert_eq!(
            acr.handle(post(HOST, "/oauth2/exchange", &body)).status,
            400
        );
        assert_eq!(
            acr.handle(Request::new("PUT", "/oauth2/token").with_header("Host", HOST))
                .status,
            405
        );
    }
}

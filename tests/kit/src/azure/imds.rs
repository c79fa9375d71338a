//! The fake IMDS managed-identity token endpoint, as strict as the real one (plain HTTP).
//!
//! Enforced: `Metadata: true`, no `X-Forwarded-For`, `api-version` ≥ 2018-02-01, a `resource`
//! (not a `/.default` scope), identity selection by `client_id`, `object_id`, `msi_res_id` or
//! `mi_res_id`, and the managed-identity rate limits (20 requests/s, 5 concurrent → 429).

use super::fault::FaultPlan;
use super::{lock, LoggedRequest, Shared, TOKEN_EXCHANGE_AUDIENCE};
use crate::http::{Handler, Request, Response};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The token path.
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// The oldest api-version IMDS serves managed-identity tokens for.
const MIN_API_VERSION: &str = "2018-02-01";
/// Managed-identity category limits per VM (compute docs, "Rate limiting").
const MAX_PER_SECOND: usize = 20;
const MAX_CONCURRENT: usize = 5;
/// Default token lifetime: AAD managed-identity tokens live about a day.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Whether an identity is the VM's own or one assigned to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// Used when a request names no identity.
    SystemAssigned,
    /// Must be named by a selector when the VM has more than one identity.
    UserAssigned,
}

/// One identity assigned to the fake VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedIdentity {
    /// The client (application) id.
    pub client_id: String,
    /// The service principal's object id (the token's `oid` and `sub`).
    pub object_id: String,
    /// The ARM resource id (`/subscriptions/…/userAssignedIdentities/<name>`).
    pub resource_id: String,
    /// System- or user-assigned.
    pub principal: Principal,
}

/// What the fake IMDS has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImdsCounters {
    /// Every request to the token path.
    pub requests: u64,
    /// Requests answered 429 by the rate limiter.
    pub throttled: u64,
    /// Tokens issued, by (identity client id, resource).
    pub issued: HashMap<(String, String), u64>,
    /// The most requests ever in flight at once.
    pub max_concurrent: usize,
}

/// Why IMDS refused a request (each renders as the real service's status and body).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// Not the token path.
    NotFound,
    /// Not a GET.
    MethodNotAllowed,
    /// `Metadata: true` missing (`bad_request_102`).
    MissingMetadata,
    /// The request carried `X-Forwarded-For` (it came through a proxy).
    ForwardedFor,
    /// No `api-version`.
    MissingApiVersion,
    /// An `api-version` IMDS does not serve.
    BadApiVersion,
    /// No `resource`.
    MissingResource,
    /// A `.default` scope was sent where a resource belongs.
    ScopeAsResource,
    /// More than one identity selector.
    SeveralSelectors,
    /// The selector names no identity on this VM (or the VM has none).
    IdentityNotFound,
    /// No selector, and several user-assigned identities.
    AmbiguousIdentity,
    /// Over 20 requests/s or 5 in flight.
    Throttled,
    /// An injected fault.
    Injected(u16),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NotFound => "not found",
            Refusal::MethodNotAllowed => "method not allowed",
            Refusal::MissingMetadata => "Required metadata header not specified",
            Refusal::ForwardedFor => "Request contains X-Forwarded-For header",
            Refusal::MissingApiVersion => "Required query variable 'api-version' is missing",
            Refusal::BadApiVersion => "Invalid api-version",
            Refusal::MissingResource => "Required query variable 'resource' is missing",
            Refusal::ScopeAsResource => "AADSTS500011: The resource principal was not found",
            Refusal::SeveralSelectors => "Only one of client_id, object_id, msi_res_id may be specified",
            Refusal::IdentityNotFound => "Identity not found",
            Refusal::AmbiguousIdentity => "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
            Refusal::Throttled => "Too many requests",
            Refusal::Injected(_) => "injected fault",
        })
    }
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::NotFound => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::Throttled => 429,
            Refusal::Injected(s) => *s,
            _ => 400,
        }
    }

    fn error_code(&self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::ScopeAsResource => "invalid_resource",
            Refusal::Throttled => "too_many_requests",
            Refusal::Injected(404) => "not_found",
            Refusal::Injected(410) => "gone",
            Refusal::Injected(429) => "too_many_requests",
            Refusal::Injected(s) if *s >= 500 => "internal_error",
            _ => "invalid_request",
        }
    }

    fn response(&self) -> Response {
        let body = json!({"error": self.error_code(), "error_description": self.to_string()});
        let resp = Response::json(self.status(), &body);
        if self.status() == 429 {
            resp.with_header("retry-after", "1")
        } else {
            resp
        }
    }
}

/// Admitted requests in the last second (a sliding window).
#[derive(Debug, Default)]
struct RateWindow {
    admitted: VecDeque<Instant>,
}

impl RateWindow {
    /// Admits a request at `now` unless 20 were admitted in the second before it.
    fn admit(&mut self, now: Instant) -> bool {
        while let Some(&t) = self.admitted.front() {
            if now.saturating_duration_since(t) >= Duration::from_secs(1) {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
        if self.admitted.len() >= MAX_PER_SECOND {
            return false;
        }
        self.admitted.push_back(now);
        true
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fake IMDS.
#[derive(Debug)]
pub struct Imds {
    tenant: String,
    shared: Shared,
    identities: Mutex<Vec<ManagedIdentity>>,
    lifetime: Mutex<Duration>,
    sole_identity_is_default: AtomicBool,
    window: Mutex<RateWindow>,
    in_flight: AtomicUsize,
    counters: Mutex<ImdsCounters>,
    /// Faults and latency for the next requests.
    pub faults: FaultPlan,
}

impl Imds {
    /// A fake IMDS on a VM in `tenant`, with no identity yet.
    pub fn new(tenant: &str) -> Imds {
        Imds::with_shared(tenant, Shared::default())
    }

    /// Same, sharing clock and token registry with the other fakes.
    pub fn with_shared(tenant: &str, shared: Shared) -> Imds {
        Imds {
            tenant: tenant.to_string(),
            shared,
            identities: Mutex::default(),
            lifetime: Mutex::new(DEFAULT_LIFETIME),
            sole_identity_is_default: AtomicBool::new(true),
            window: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            counters: Mutex::default(),
            faults: FaultPlan::default(),
        }
    }

    /// Assigns an identity to the VM.
    pub fn add_identity(&self, identity: ManagedIdentity) {
        lock(&self.identities).push(identity);
    }

    /// Sets the lifetime of tokens issued from now on. Defaults to 24 h.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.lifetime) = lifetime;
    }

    /// Whether a request with no selector gets the VM's only user-assigned identity. Defaults to
    /// true (as on a VM with exactly one identity); false makes it "Identity not found".
    pub fn set_sole_identity_is_default(&self, yes: bool) {
        self.sole_identity_is_default.store(yes, Ordering::SeqCst);
    }

    /// The tenant the VM's identities live in.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> ImdsCounters {
        lock(&self.counters).clone()
    }

    /// The shared clock, registry and log.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    fn serve(&self, req: &Request) -> Result<(ManagedIdentity, String, Value), Refusal> {
        if req.path != TOKEN_PATH {
            return Err(Refusal::NotFound);
        }
        if req.method != "GET" {
            return Err(Refusal::MethodNotAllowed);
        }
        let (_guard, concurrent) = self.enter();
        self.admit(concurrent)?;
        if let Some(status) = self.faults.apply() {
            return Err(Refusal::Injected(status));
        }
        check_transport(req)?;
        let resource = check_query(req)?;
        let identity = select_identity(
            &lock(&self.identities),
            req,
            self.sole_identity_is_default.load(Ordering::SeqCst),
        )?;
        let body = self.issue(&identity, &resource);
        Ok((identity, resource, body))
    }

    /// Counts this request in flight, records the peak, and says how many are in flight with it.
    fn enter(&self) -> (InFlight<'_>, usize) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut c = lock(&self.counters);
        c.requests += 1;
        c.max_concurrent = c.max_concurrent.max(now);
        (InFlight(&self.in_flight), now)
    }

    fn admit(&self, concurrent: usize) -> Result<(), Refusal> {
        let ok =
            concurrent <= MAX_CONCURRENT && lock(&self.window).admit(self.shared.clock.instant());
        if ok {
            Ok(())
        } else {
            lock(&self.counters).throttled += 1;
            Err(Refusal::Throttled)
        }
    }

    /// Mints the token and renders the all-strings response body.
    fn issue(&self, id: &ManagedIdentity, resource: &str) -> Value {
        let now = self.shared.clock.now_unix();
        let lifetime = lock(&self.lifetime).as_secs() as i64;
        let exp = now + lifetime;
        let claims = mi_claims(
            &self.tenant,
            id,
            resource,
            now,
            exp,
            &self.shared.token_id(),
        );
        let token = self.shared.mint(&claims);
        *lock(&self.counters)
            .issued
            .entry((id.client_id.clone(), resource.to_string()))
            .or_default() += 1;
        json!({
            "access_token": token,
            "refresh_token": "",
            "expires_in": lifetime.to_string(),
            "expires_on": exp.to_string(),
            "ext_expires_in": lifetime.to_string(),
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": id.client_id,
        })
    }
}

impl Handler for Imds {
    fn handle(&self, req: Request) -> Response {
        let result = self.serve(&req);
        let (status, principal, resp) = match result {
            Ok((id, _, body)) => (200, Some(id.client_id), Response::json(200, &body)),
            Err(r) => (r.status(), None, r.response()),
        };
        self.shared.log(LoggedRequest {
            service: "imds",
            host: req.header("host").map(str::to_string),
            method: req.method.clone(),
            path: req.path.clone(),
            status,
            principal,
            scope: req.query_param("resource").map(str::to_string),
        });
        resp
    }
}

/// The claims of a managed-identity token: v2 for the token-exchange audience, v1 otherwise.
fn mi_claims(
    tenant: &str,
    id: &ManagedIdentity,
    resource: &str,
    now: i64,
    exp: i64,
    token_id: &str,
) -> Value {
    let mut c = json!({
        "aud": resource, "iat": now, "nbf": now, "exp": exp,
        "oid": id.object_id, "sub": id.object_id, "tid": tenant,
        "idtyp": "app", "uti": token_id, "xms_mirid": id.resource_id,
    });
    let obj = c
        .as_object_mut()
        .expect("a json! object literal is an object");
    if resource == TOKEN_EXCHANGE_AUDIENCE {
        obj.insert(
            "iss".into(),
            format!("https://login.microsoftonline.com/{tenant}/v2.0").into(),
        );
        obj.insert("azp".into(), id.client_id.clone().into());
        obj.insert("azpacr".into(), "2".into());
        obj.insert("ver".into(), "2.0".into());
    } else {
        obj.insert(
            "iss".into(),
            format!("https://sts.windows.net/{tenant}/").into(),
        );
        obj.insert("appid".into(), id.client_id.clone().into());
        obj.insert("appidacr".into(), "2".into());
        obj.insert("ver".into(), "1.0".into());
    }
    c
}

/// The SSRF guards: `Metadata: true` (lower-case, as documented) and no proxy header.
fn check_transport(req: &Request) -> Result<(), Refusal> {
    if req.header("metadata") != Some("true") {
        return Err(Refusal::MissingMetadata);
    }
    if req.header("x-forwarded-for").is_some() {
        return Err(Refusal::ForwardedFor);
    }
    Ok(())
}

/// Checks `api-version` and returns the resource.
fn check_query(req: &Request) -> Result<String, Refusal> {
    let version = req
        .query_param("api-version")
        .ok_or(Refusal::MissingApiVersion)?;
    if !is_date(version) || version < MIN_API_VERSION {
        return Err(Refusal::BadApiVersion);
    }
    let resource = req
        .query_param("resource")
        .filter(|r| !r.is_empty())
        .ok_or(Refusal::MissingResource)?;
    if resource.ends_with("/.default") {
        return Err(Refusal::ScopeAsResource);
    }
    Ok(resource.to_string())
}

/// `YYYY-MM-DD`, so string order is date order.
fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Picks the identity a request names, or the default one when it names none.
fn select_identity(
    ids: &[ManagedIdentity],
    req: &Request,
    sole_is_default: bool,
) -> Result<ManagedIdentity, Refusal> {
    let selectors: Vec<(&str, &str)> = ["client_id", "object_id", "msi_res_id", "mi_res_id"]
        .iter()
        .filter_map(|k| req.query_param(k).map(|v| (*k, v)))
        .collect();
    let found = match selectors.as_slice() {
        [] => default_identity(ids, sole_is_default)?,
        [(kind, value)] => ids.iter().find(|id| match *kind {
            "client_id" => id.client_id.eq_ignore_ascii_case(value),
            "object_id" => id.object_id.eq_ignore_ascii_case(value),
            // ARM resource ids are case-insensitive.
            _ => id.resource_id.eq_ignore_ascii_case(value),
        }),
        _ => return Err(Refusal::SeveralSelectors),
    };
    found.cloned().ok_or(Refusal::IdentityNotFound)
}

fn default_identity(
    ids: &[ManagedIdentity],
    sole_is_default: bool,
) -> Result<Option<&ManagedIdentity>, Refusal> {
    if let Some(system) = ids
        .iter()
        .find(|i| i.principal == Principal::SystemAssigned)
    {
        return Ok(Some(system));
    }
    match ids {
        [] => Ok(None),
        [only] if sole_is_default => Ok(Some(only)),
        [_] => Ok(None),
        _ => Err(Refusal::AmbiguousIdentity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{now_unix, Signer};
    use std::sync::Arc;

    const ARM: &str = "https://management.azure.com/";

    fn uami(n: u8) -> ManagedIdentity {
        ManagedIdentity {
            client_id: format!("client-{n}"),
            object_id: format!("object-{n}"),
            resource_id: format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id{n}"),
            principal: Principal::UserAssigned,
        }
    }

    fn imds_with(ids: &[ManagedIdentity]) -> Imds {
        let imds = Imds::new("tenant-a");
        for id in ids {
            imds.add_identity(id.clone());
        }
        imds
    }

    fn token_request(query: &str) -> Request {
        Request::new("GET", &format!("{TOKEN_PATH}?{query}")).with_header("Metadata", "true")
    }

    fn arm(extra: &str) -> Request {
        token_request(&format!("api-version=2018-02-01&resource={ARM}{extra}"))
    }

    #[test]
    fn missing_metadata_header_is_refused_with_the_real_body() {
        let imds = imds_with(&[uami(1)]);
        let req = Request::new(
            "GET",
            &format!("{TOKEN_PATH}?api-version=2018-02-01&resource={ARM}"),
        );
        let resp = imds.handle(req);
        assert_eq!(resp.status, 400);
        assert_eq!(
            resp.body_json(),
            json!({"error":"invalid_request","error_description":"Required metadata header not specified"})
        );
    }

    #[test]
    fn metadata_header_must_be_lowercase_true() {
        let imds = imds_with(&[uami(1)]);
        let req = Request::new(
            "GET",
            &format!("{TOKEN_PATH}?api-version=2018-02-01&resource={ARM}"),
        )
        .with_header("Metadata", "True");
        assert_eq!(imds.handle(req).status, 400);
    }

    #[test]
    fn forwarded_for_header_is_refused() {
        let imds = imds_with(&[uami(1)]);
        let resp = imds.handle(arm("").with_header("X-Forwarded-For", "10.0.0.1"));
        assert_eq!(resp.status, 400);
        assert_eq!(resp.body_json()["error"], "invalid_request");
    }

    #[test]
    fn old_missing_or_malformed_api_version_is_refused() {
        let imds = imds_with(&[uami(1)]);
        for q in [
            format!("api-version=2017-12-01&resource={ARM}"),
            format!("resource={ARM}"),
            format!("api-version=latest&resource={ARM}"),
        ] {
            assert_eq!(imds.handle(token_request(&q)).status, 400, "{q}");
        }
        let newer = token_request(&format!("api-version=2019-08-01&resource={ARM}"));
        assert_eq!(imds.handle(newer).status, 200);
    }

    #[test]
    fn missing_resource_or_a_scope_in_its_place_is_refused() {
        let imds = imds_with(&[uami(1)]);
        assert_eq!(
            imds.handle(token_request("api-version=2018-02-01")).status,
            400
        );
        let scope =
            token_request("api-version=2018-02-01&resource=https://management.azure.com//.default");
        let resp = imds.handle(scope);
        assert_eq!(resp.status, 400);
        assert_eq!(resp.body_json()["error"], "invalid_resource");
    }

    #[test]
    fn every_response_value_is_a_string_and_matches_the_jwt() {
        let imds = imds_with(&[uami(1)]);
        let body = imds.handle(arm("&client_id=client-1")).body_json();
        let obj = body.as_object().unwrap();
        for key in [
            "access_token",
            "refresh_token",
            "expires_in",
            "expires_on",
            "ext_expires_in",
            "not_before",
            "resource",
            "token_type",
        ] {
            assert!(
                obj.get(key).is_some_and(Value::is_string),
                "{key} is not a string"
            );
        }
        assert_eq!(body["refresh_token"], "");
        assert_eq!(body["expires_in"], "86400");
        let claims = Signer::kit()
            .verify(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            claims["exp"].as_i64().unwrap().to_string(),
            body["expires_on"]
        );
        assert_eq!(claims["aud"], ARM);
        assert_eq!(claims["iss"], "https://sts.windows.net/tenant-a/");
        assert_eq!(claims["tid"], "tenant-a");
        assert_eq!(claims["oid"], "object-1");
        assert_eq!(claims["appid"], "client-1");
        assert_eq!(claims["xms_mirid"], uami(1).resource_id);
    }

    #[test]
    fn token_lifetime_is_settable() {
        let imds = imds_with(&[uami(1)]);
        imds.set_token_lifetime(Duration::from_secs(600));
        let body = imds.handle(arm("")).body_json();
        assert_eq!(body["expires_in"], "600");
        let exp: i64 = body["expires_on"].as_str().unwrap().parse().unwrap();
        assert!((exp - now_unix() - 600).abs() <= 2);
    }

    #[test]
    fn each_selector_finds_its_identity() {
        let imds = imds_with(&[uami(1), uami(2)]);
        let rid = uami(2).resource_id;
        for sel in [
            "&client_id=client-2".to_string(),
            "&object_id=object-2".into(),
            format!("&msi_res_id={rid}"),
            format!("&mi_res_id={}", rid.to_uppercase()),
        ] {
            let body = imds.handle(arm(&sel)).body_json();
            let claims = Signer::kit()
                .verify(body["access_token"].as_str().unwrap())
                .unwrap();
            assert_eq!(claims["oid"], "object-2", "{sel}");
        }
    }

    #[test]
    fn unknown_identity_is_refused() {
        let imds = imds_with(&[uami(1)]);
        let resp = imds.handle(arm("&client_id=nobody"));
        assert_eq!(resp.status, 400);
        assert_eq!(
            resp.body_json(),
            json!({"error":"invalid_request","error_description":"Identity not found"})
        );
    }

    #[test]
    fn several_identities_and_no_selector_is_ambiguous() {
        let imds = imds_with(&[uami(1), uami(2)]);
        let resp = imds.handle(arm(""));
        assert_eq!(resp.status, 400);
        assert!(resp.body_json()["error_description"]
            .as_str()
            .unwrap()
            .contains("Multiple user assigned"));
        assert_eq!(
            imds.handle(arm("&client_id=client-1&object_id=object-1"))
                .status,
            400
        );
    }

    #[test]
    fn no_selector_picks_the_system_identity_or_the_sole_one() {
        let mut system = uami(9);
        system.principal = Principal::SystemAssigned;
        let imds = imds_with(&[uami(1), system]);
        let body = imds.handle(arm("")).body_json();
        let claims = Signer::kit()
            .verify(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(claims["oid"], "object-9");

        let sole = imds_with(&[uami(1)]);
        assert_eq!(sole.handle(arm("")).status, 200);
        sole.set_sole_identity_is_default(false);
        assert_eq!(sole.handle(arm("")).status, 400);
        assert_eq!(imds_with(&[]).handle(arm("")).status, 400);
    }

    #[test]
    fn exchange_audience_tokens_are_v2_with_the_login_issuer() {
        let imds = imds_with(&[uami(1)]);
        let q = format!("api-version=2018-02-01&resource={TOKEN_EXCHANGE_AUDIENCE}");
        let body = imds.handle(token_request(&q)).body_json();
        let claims = Signer::kit()
            .verify(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            claims["iss"],
            "https://login.microsoftonline.com/tenant-a/v2.0"
        );
        assert_eq!(claims["sub"], "object-1");
        assert_eq!(claims["azp"], "client-1");
    }

    #[test]
    fn the_twenty_first_request_in_a_second_is_throttled() {
        let imds = imds_with(&[uami(1)]);
        imds.shared().clock.freeze_instant();
        for i in 0..20 {
            assert_eq!(imds.handle(arm("")).status, 200, "request {i}");
        }
        let resp = imds.handle(arm(""));
        assert_eq!(resp.status, 429);
        assert!(resp
            .headers
            .iter()
            .any(|(n, v)| n == "retry-after" && v == "1"));
        imds.shared().clock.advance(Duration::from_secs(1));
        assert_eq!(imds.handle(arm("")).status, 200);
        assert_eq!(imds.counters().throttled, 1);
        assert_eq!(
            imds.counters().issued[&("client-1".to_string(), ARM.to_string())],
            21
        );
    }

    #[test]
    fn rate_window_slides() {
        let mut w = RateWindow::default();
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(w.admit(t0));
        }
        assert!(!w.admit(t0 + Duration::from_millis(999)));
        assert!(w.admit(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_sixth_concurrent_request_is_throttled() {
        let imds = Arc::new(imds_with(&[uami(1)]));
        imds.faults.set_latency(Duration::from_millis(400));
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (imds, barrier) = (imds.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    imds.handle(arm("")).status
                })
            })
            .collect();
        let mut statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        statuses.sort();
        assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429]);
        assert_eq!(imds.counters().max_concurrent, 6);
        assert_eq!(imds.counters().throttled, 1);
    }

    #[test]
    fn injected_faults_answer_with_their_status_then_clear() {
        let imds = imds_with(&[uami(1)]);
        imds.faults.fail_next(1, 410);
        imds.faults.fail_next(1, 429);
        let gone = imds.handle(arm(""));
        assert_eq!(gone.status, 410);
        let throttled = imds.handle(arm(""));
        assert_eq!(throttled.status, 429);
        assert!(throttled.headers.iter().any(|(n, _)| n == "retry-after"));
        assert_eq!(imds.handle(arm("")).status, 200);
    }

    #[test]
    fn a_hang_delays_the_answer() {
        let imds = imds_with(&[uami(1)]);
        imds.faults.hang_next(1, Duration::from_millis(150));
        let t0 = Instant::now();
        assert_eq!(imds.handle(arm("")).status, 200);
        assert!(t0.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn wrong_path_or_method_is_refused_and_the_log_has_no_token() {
        let imds = imds_with(&[uami(1)]);
        assert_eq!(
            imds.handle(Request::new("GET", "/metadata/instance"))
                .status,
            404
        );
        assert_eq!(imds.handle(Request::new("POST", TOKEN_PATH)).status, 405);
        let body = imds.handle(arm("")).body_json();
        let token = body["access_token"].as_str().unwrap();
        let log = format!("{:?}", imds.shared().requests());
        assert!(!log.contains(token));
        assert_eq!(imds.shared().issued.all(), vec![token.to_string()]);
    }
}

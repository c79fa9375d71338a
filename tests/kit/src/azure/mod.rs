//! Fake Azure endpoints: IMDS, Entra and ACR, strict about their protocols.
//!
//! The three fakes share a clock (tests can skew it), one signing key, a registry of every token
//! they ever issued (so a test can scan acrpull's logs for leaks) and a redacted request log.
//!
//! How the token claims line up across the fakes (so the cross-tenant flow works):
//! - IMDS issues v1-style tokens (`iss` = `https://sts.windows.net/<tid>/`) for every resource except
//!   [`TOKEN_EXCHANGE_AUDIENCE`], for which it issues a v2 token (`iss` =
//!   `https://login.microsoftonline.com/<tid>/v2.0`), as the real service does. `sub` and `oid` are
//!   the identity's object id; `appid` (v1) or `azp` (v2) is its client id; `xms_mirid` its resource id.
//! - Entra accepts such a token as a client assertion when a federated credential on the app
//!   names that issuer (either form, same tenant), `subject` = the identity's object id and
//!   `audience` = [`TOKEN_EXCHANGE_AUDIENCE`].
//! - Entra issues v1 tokens (`iss` = `https://sts.windows.net/<tid>/`) with `oid`/`sub` = the app's
//!   object id and `appid` = its client id.
//! - ACR accepts any unexpired token with one of those issuers and the kit signature; the principal
//!   it grants to is the token's `oid` (a grant may also name the `appid`).

mod acr;
mod entra;
mod fault;
mod imds;

pub use acr::{
    Acr, AcrCounters, Audiences, Registry, ACR_AUDIENCE, ARM_AUDIENCES, DEFAULT_ACCESS_LIFETIME,
};
pub use entra::{Application, Entra, EntraCounters, FederatedCredential};
pub use fault::{Fault, FaultPlan};
pub use imds::{Imds, ImdsCounters, ManagedIdentity, Principal};

use crate::jwt::{now_unix, Signer};
use serde_json::Value;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The audience of a managed-identity token used as a federated assertion.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The fakes' clock: wall time with a settable skew, and a monotonic time that tests can freeze.
#[derive(Debug, Default)]
pub struct Clock {
    skew_secs: AtomicI64,
    // When set, `instant()` returns this instead of the real monotonic time (rate-limit tests).
    frozen: Mutex<Option<Instant>>,
}

impl Clock {
    /// Unix seconds as the fakes see them: real time plus the skew.
    pub fn now_unix(&self) -> i64 {
        now_unix() + self.skew_secs.load(Ordering::SeqCst)
    }

    /// Shifts the fakes' wall clock by `secs` (negative: the fakes are behind).
    pub fn set_skew(&self, secs: i64) {
        self.skew_secs.store(secs, Ordering::SeqCst);
    }

    /// The monotonic time used for rate limiting.
    pub fn instant(&self) -> Instant {
        lock(&self.frozen).unwrap_or_else(Instant::now)
    }

    /// Stops monotonic time where it is now; `advance` moves it on.
    pub fn freeze_instant(&self) {
        let mut f = lock(&self.frozen);
        if f.is_none() {
            *f = Some(Instant::now());
        }
    }

    /// Moves frozen monotonic time forward (no effect unless frozen).
    pub fn advance(&self, by: Duration) {
        if let Some(t) = lock(&self.frozen).as_mut() {
            *t += by;
        }
    }
}

/// Every token string the fakes ever issued. Its `Debug` shows only the count.
#[derive(Default)]
pub struct IssuedTokens {
    tokens: Mutex<Vec<String>>,
}

impl IssuedTokens {
    fn record(&self, token: &str) {
        lock(&self.tokens).push(token.to_string());
    }

    /// All issued tokens, oldest first (for leak scans of acrpull's output).
    pub fn all(&self) -> Vec<String> {
        lock(&self.tokens).clone()
    }
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuedTokens({} redacted)", lock(&self.tokens).len())
    }
}

/// One request as a fake saw it, with nothing secret in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Which fake answered: `imds`, `entra` or `acr`.
    pub service: &'static str,
    /// The `Host` header, when sent.
    pub host: Option<String>,
    /// Method and path (no query: IMDS queries carry no secrets, but keep one rule for all).
    pub method: String,
    /// The path.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The principal the request was made as or for, when known (object id or client id).
    pub principal: Option<String>,
    /// The resource or scope asked for, when there was one.
    pub scope: Option<String>,
}

/// What the three fakes share.
#[derive(Clone)]
pub struct Shared {
    /// The clock.
    pub clock: Arc<Clock>,
    /// Every token issued.
    pub issued: Arc<IssuedTokens>,
    log: Arc<Mutex<Vec<LoggedRequest>>>,
    signer: Arc<Signer>,
    serial: Arc<AtomicU64>,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            clock: Arc::default(),
            issued: Arc::default(),
            log: Arc::default(),
            signer: Arc::new(Signer::kit()),
            serial: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("clock", &self.clock)
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Signs `claims` with the kit key and records the token as issued.
    fn mint(&self, claims: &Value) -> String {
        let token = self.signer.sign(claims);
        self.issued.record(&token);
        token
    }

    /// Checks the kit signature and returns the claims.
    fn verify(&self, token: &str) -> Option<Value> {
        self.signer.verify(token).ok()
    }

    /// A fresh token id (`uti`/`jti`), unique across the fakes.
    fn token_id(&self) -> String {
        format!("kit-{:08}", self.serial.fetch_add(1, Ordering::SeqCst))
    }

    fn log(&self, entry: LoggedRequest) {
        lock(&self.log).push(entry);
    }

    /// Every request any fake answered, oldest first, redacted.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.log).clone()
    }
}

/// The three fakes, sharing one clock, one issued-token registry and one request log.
pub struct Azure {
    /// The managed-identity endpoint.
    pub imds: Arc<Imds>,
    /// The Entra authority (workload identity).
    pub entra: Arc<Entra>,
    /// The container registries.
    pub acr: Arc<Acr>,
    /// What they share.
    pub shared: Shared,
}

impl Azure {
    /// Fresh fakes; IMDS runs on a machine in `tenant`, which Entra also knows.
    pub fn new(tenant: &str) -> Azure {
        let shared = Shared::default();
        let entra = Entra::with_shared(shared.clone());
        entra.add_tenant(tenant);
        Azure {
            imds: Arc::new(Imds::with_shared(tenant, shared.clone())),
            entra: Arc::new(entra),
            acr: Arc::new(Acr::with_shared(shared.clone())),
            shared,
        }
    }

    /// Every token string the fakes ever issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.issued.all()
    }

    /// Assigns a managed identity to the IMDS VM and registers its service principal in Entra
    /// (tenant of the VM), so it can also be used with workload identity (federated credentials).
    pub fn add_managed_identity(&self, identity: ManagedIdentity) {
        self.entra.add_application(
            self.imds.tenant(),
            Application {
                client_id: identity.client_id.clone(),
                object_id: identity.object_id.clone(),
            },
        );
        self.imds.add_identity(identity);
    }

    /// Shifts all three fakes' clocks by `secs`.
    pub fn set_clock_skew(&self, secs: i64) {
        self.shared.clock.set_skew(secs);
    }
}

/// Locks a mutex, going on if a panicking test thread poisoned it (the data stays consistent:
/// every critical section here is a single push, pop or counter update).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `Host` header without a port, lower-cased.
fn host_name(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    if let Some(rest) = h.strip_prefix('[') {
        // `[v6]:port` or `[v6]`
        return rest
            .split_once(']')
            .map_or(h.clone(), |(ip, _)| format!("[{ip}]"));
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name.to_string()
        }
        _ => h,
    }
}

/// True when the issuer is one of the Entra forms (`sts.windows.net` v1 or `login.microsoftonline.com` v2).
fn entra_issuer_tenant(iss: &str) -> Option<&str> {
    if let Some(rest) = iss.strip_prefix("https://sts.windows.net/") {
        return rest
            .strip_suffix('/')
            .filter(|t| !t.is_empty() && !t.contains('/'));
    }
    iss.strip_prefix("https://login.microsoftonline.com/")
        .and_then(|rest| rest.strip_suffix("/v2.0"))
        .filter(|t| !t.is_empty() && !t.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Handler;

    #[test]
    fn skew_moves_the_fakes_wall_clock() {
        let c = Clock::default();
        c.set_skew(-3600);
        assert!((c.now_unix() - (now_unix() - 3600)).abs() <= 1);
    }

    #[test]
    fn frozen_monotonic_time_only_moves_when_advanced() {
        let c = Clock::default();
        c.freeze_instant();
        let t0 = c.instant();
        assert_eq!(c.instant(), t0);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.instant(), t0 + Duration::from_secs(2));
    }

    #[test]
    fn minted_tokens_are_recorded_and_debug_hides_them() {
        let s = Shared::default();
        let t = s.mint(&serde_json::json!({"x": 1}));
        assert_eq!(s.issued.all(), vec![t.clone()]);
        assert!(!format!("{:?}", s).contains(&t));
        assert!(s.verify(&t).is_some());
    }

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("Reg.AzureCR.io:8443"), "reg.azurecr.io");
        assert_eq!(host_name("reg.azurecr.io"), "reg.azurecr.io");
        assert_eq!(host_name("[::1]:8443"), "[::1]");
        assert_eq!(host_name("127.0.0.1:80"), "127.0.0.1");
    }

    #[test]
    fn both_entra_issuer_forms_name_their_tenant() {
        assert_eq!(
            entra_issuer_tenant("https://sts.windows.net/t1/"),
            Some("t1")
        );
        assert_eq!(
            entra_issuer_tenant("https://login.microsoftonline.com/t1/v2.0"),
            Some("t1")
        );
        assert_eq!(entra_issuer_tenant("https://kubernetes.default.svc"), None);
        assert_eq!(entra_issuer_tenant("https://sts.windows.net/"), None);
    }

    #[test]
    fn azure_bundle_shares_one_issued_registry() {
        let az = Azure::new("tenant-a");
        az.shared.mint(&serde_json::json!({}));
        assert_eq!(az.issued_tokens().len(), 1);
        az.set_clock_skew(10);
        az.add_managed_identity(ManagedIdentity {
            client_id: "c".into(),
            object_id: "o".into(),
            resource_id: "/r".into(),
            principal: Principal::UserAssigned,
        });
        assert_eq!(
            az.imds
                .handle(
                    crate::http::Request::new(
                        "GET",
                        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x&client_id=c"
                    )
                    .with_header("Metadata", "true")
                )
                .status,
            200
        );
        assert!(az.shared.clock.now_unix() >= now_unix() + 9);
    }
}

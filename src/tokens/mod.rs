//! The token flow: `credential` resolves who asks (for the controller and `acrpull check` alike),
//! `request` makes the one Entra/IMDS request, and the token service here caches and
//! single-flights Entra and ACR tokens.
//!
//! Entra/IMDS tokens are cached per (identity, audience) until their refresh point (`refresh_in`,
//! else half-life); ACR tokens per (identity, audience, registry, scope) until half their
//! lifetime. Concurrent requests for one key cause one upstream call: the first caller fetches,
//! the others wait on its result. So N bindings sharing inputs cost one exchange, not N.

pub mod credential;
pub mod metered;
pub mod request;
pub mod workload;

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use time::OffsetDateTime;

use crate::azure::acr::{self, AcrClient, AcrError};
use crate::azure::entra::{AssertionRequest, EntraClient, EntraError};
use crate::azure::error::HttpError;
use crate::azure::http::HttpSend;
use crate::azure::imds::{ImdsClient, ImdsError, ManagedIdentity};
use crate::azure::limiter::Limiter;
use crate::azure::{AccessToken, SecretString};
use crate::clock::Clock;

/// Cache sizes above which expired entries are swept on insert (then the bar doubles).
const FIRST_SWEEP_AT: usize = 256;

/// Supplies client assertions (the controller mints ServiceAccount tokens via Kubernetes).
pub trait AssertionSource: Send + Sync + fmt::Debug {
    /// A stable name for what the assertion proves, e.g. `namespace/serviceaccount`; part of
    /// cache keys so two sources never share tokens.
    fn key(&self) -> String;
    /// A fresh assertion. Called only when an Entra token must be fetched.
    fn assertion(&self) -> Result<SecretString, AssertionError>;
}

/// Why an assertion could not be minted; wraps the source's own error.
#[derive(Debug, Clone)]
pub struct AssertionError(Arc<dyn std::error::Error + Send + Sync>);

impl AssertionError {
    /// Wraps the assertion source's error.
    pub fn new(cause: impl std::error::Error + Send + Sync + 'static) -> AssertionError {
        AssertionError(Arc::new(cause))
    }
}

impl AssertionError {
    /// What the assertion source reported, without this error's prefix.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync) {
        &*self.0
    }
}

impl fmt::Display for AssertionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed to mint service account token: {}", self.0)
    }
}

impl std::error::Error for AssertionError {}

/// Workload identity: an Entra application proven by a client assertion.
#[derive(Debug, Clone)]
pub struct ClientAssertion {
    /// Entra authority host of the binding's cloud.
    pub authority_host: String,
    /// Tenant ID.
    pub tenant: String,
    /// Application (client) ID.
    pub client_id: String,
    /// Where assertions come from.
    pub source: Arc<dyn AssertionSource>,
}

/// Who asks for tokens.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A managed identity through IMDS.
    Managed(ManagedIdentity),
    /// Workload identity through Entra.
    ClientAssertion(ClientAssertion),
}

impl Credential {
    fn key(&self) -> String {
        match self {
            Credential::Managed(ManagedIdentity::System) => "mi:system".to_owned(),
            Credential::Managed(ManagedIdentity::ClientId(id)) => format!("mi:client:{id}"),
            Credential::Managed(ManagedIdentity::ResourceId(id)) => format!("mi:resource:{id}"),
            Credential::ClientAssertion(c) => format!(
                "wi:{}\n{}\n{}\n{}",
                c.authority_host,
                c.tenant,
                c.client_id,
                c.source.key()
            ),
        }
    }
}

/// One request for a registry password.
#[derive(Debug, Clone)]
pub struct AcrTokenRequest<'a> {
    /// Who asks.
    pub credential: &'a Credential,
    /// The Entra audience (IMDS resource), e.g. the cloud's ARM audience; the Entra scope is
    /// `<audience>/.default`.
    pub audience: &'a str,
    /// The registry host, as written (already checked against the allow-list).
    pub registry: &'a str,
    /// ACR scope; empty means the unscoped refresh token is the password (v1beta1).
    pub scope: &'a str,
    /// A cached token issued at or before this instant is not reused.
    pub not_issued_before: Option<OffsetDateTime>,
}

/// A registry password with its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcrToken {
    /// The docker password (an ACR access token, or the refresh token when unscoped).
    pub password: SecretString,
    /// The token's `exp`.
    pub expires: OffsetDateTime,
    /// When we obtained it, whole seconds (as Secret annotations store it).
    pub issued: OffsetDateTime,
}

/// Which step of the token flow failed, so the controller can pick upstream's message prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStage {
    /// Getting the Entra/ARM token (IMDS, assertion, Entra).
    Entra,
    /// Exchanging at the registry.
    Acr,
}

/// Why no token could be had.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TokenError {
    /// IMDS failed.
    Imds(ImdsError),
    /// The assertion could not be minted.
    Assertion(AssertionError),
    /// Entra refused the assertion.
    Entra(EntraError),
    /// The registry exchange failed.
    Acr(AcrError),
    /// The thread fetching this token panicked; waiters get this instead of hanging.
    Abandoned,
}

impl TokenError {
    /// The step that failed.
    pub fn stage(&self) -> TokenStage {
        match self {
            TokenError::Acr(_) => TokenStage::Acr,
            _ => TokenStage::Entra,
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Imds(e) => e.fmt(f),
            TokenError::Assertion(e) => e.fmt(f),
            TokenError::Entra(e) => e.fmt(f),
            TokenError::Acr(e) => e.fmt(f),
            TokenError::Abandoned => f.write_str("token request abandoned"),
        }
    }
}

impl std::error::Error for TokenError {}

impl From<ImdsError> for TokenError {
    fn from(e: ImdsError) -> Self {
        TokenError::Imds(e)
    }
}

impl From<EntraError> for TokenError {
    fn from(e: EntraError) -> Self {
        TokenError::Entra(e)
    }
}

impl From<AcrError> for TokenError {
    fn from(e: AcrError) -> Self {
        TokenError::Acr(e)
    }
}

impl From<AssertionError> for TokenError {
    fn from(e: AssertionError) -> Self {
        TokenError::Assertion(e)
    }
}

/// The upstream calls, behind a trait so tests can count and gate them.
pub trait Upstream: Send + Sync {
    /// IMDS token for `resource`.
    fn managed_identity_token(
        &self,
        identity: &ManagedIdentity,
        resource: &str,
        now: OffsetDateTime,
    ) -> Result<AccessToken, TokenError>;
    /// Entra token for a client assertion.
    fn client_assertion_token(
        &self,
        request: &AssertionRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<AccessToken, TokenError>;
    /// ACR `/oauth2/exchange`.
    fn acr_refresh_token(
        &self,
        registry: &str,
        entra_token: &SecretString,
    ) -> Result<SecretString, TokenError>;
    /// ACR `/oauth2/token`.
    fn acr_access_token(
        &self,
        registry: &str,
        refresh_token: &SecretString,
        scope: &str,
    ) -> Result<SecretString, TokenError>;
}

/// The real upstream: IMDS, Entra and ACR clients.
#[derive(Debug)]
pub struct AzureUpstream {
    /// IMDS client.
    pub imds: ImdsClient,
    /// Entra client.
    pub entra: EntraClient,
    /// Registry client.
    pub acr: AcrClient,
}

impl AzureUpstream {
    /// The real clients over `http`, with IMDS at `imds_endpoint` behind the process-wide limiter.
    pub fn new(http: Arc<dyn HttpSend>, imds_endpoint: &str) -> AzureUpstream {
        AzureUpstream {
            imds: ImdsClient::new(http.clone(), imds_endpoint, Limiter::shared()),
            entra: EntraClient::new(http.clone()),
            acr: AcrClient::new(http),
        }
    }
}

impl Upstream for AzureUpstream {
    fn managed_identity_token(
        &self,
        identity: &ManagedIdentity,
        resource: &str,
        now: OffsetDateTime,
    ) -> Result<AccessToken, TokenError> {
        Ok(self.imds.token(identity, resource, || now)?)
    }

    fn client_assertion_token(
        &self,
        request: &AssertionRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<AccessToken, TokenError> {
        Ok(self.entra.token(request, || now)?)
    }

    fn acr_refresh_token(
        &self,
        registry: &str,
        entra_token: &SecretString,
    ) -> Result<SecretString, TokenError> {
        Ok(self.acr.refresh_token(registry, entra_token)?)
    }

    fn acr_access_token(
        &self,
        registry: &str,
        refresh_token: &SecretString,
        scope: &str,
    ) -> Result<SecretString, TokenError> {
        Ok(self.acr.access_token(registry, refresh_token, scope)?)
    }
}

/// The upstream endpoints, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// IMDS token endpoint.
    Imds,
    /// Entra token endpoint.
    Entra,
    /// ACR `/oauth2/exchange`.
    AcrExchange,
    /// ACR `/oauth2/token`.
    AcrToken,
}

impl UpstreamKind {
    /// Every kind, for metrics output.
    pub const ALL: [UpstreamKind; 4] = [
        UpstreamKind::Imds,
        UpstreamKind::Entra,
        UpstreamKind::AcrExchange,
        UpstreamKind::AcrToken,
    ];

    /// A metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Imds => "imds",
            UpstreamKind::Entra => "entra",
            UpstreamKind::AcrExchange => "acr_exchange",
            UpstreamKind::AcrToken => "acr_token",
        }
    }
}

/// Request and cache counters, readable by the metrics code at any time.
#[derive(Debug, Default)]
pub struct Counters {
    /// `[kind][0]` successes, `[kind][1]` failures.
    requests: [[AtomicU64; 2]; 4],
    entra_cache_hits: AtomicU64,
    acr_cache_hits: AtomicU64,
    shared_waits: AtomicU64,
}

impl Counters {
    /// Upstream requests of `kind` that succeeded (`ok`) or failed.
    pub fn requests(&self, kind: UpstreamKind, ok: bool) -> u64 {
        self.requests[kind as usize][usize::from(!ok)].load(Ordering::Relaxed)
    }

    /// Entra/IMDS tokens served from the cache.
    pub fn entra_cache_hits(&self) -> u64 {
        self.entra_cache_hits.load(Ordering::Relaxed)
    }

    /// ACR tokens served from the cache.
    pub fn acr_cache_hits(&self) -> u64 {
        self.acr_cache_hits.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    /// Requests that waited for another thread's identical fetch instead of calling upstream.
    pub fn shared_waits(&self) -> u64 {
        self.shared_waits.load(Ordering::Relaxed)
    }

    fn record<T>(&self, kind: UpstreamKind, result: &Result<T, TokenError>) {
        self.requests[kind as usize][usize::from(result.is_err())].fetch_add(1, Ordering::Relaxed);
    }
}

/// A cached Entra token and when to stop reusing it.
#[derive(Debug, Clone)]
struct EntraEntry {
    token: AccessToken,
    refresh_at: OffsetDateTime,
}

/// The token service. Share it behind an `Arc`.
pub struct TokenService {
    upstream: Arc<dyn Upstream>,
    clock: Arc<dyn Clock>,
    entra: SingleFlight<(String, String), EntraEntry>,
    acr: SingleFlight<(String, String, String, String), AcrToken>,
    counters: Counters,
}

impl fmt::Debug for TokenService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenService").finish_non_exhaustive()
    }
}

impl TokenService {
    /// A service calling `upstream`, timed by `clock`.
    pub fn new(upstream: Arc<dyn Upstream>, clock: Arc<dyn Clock>) -> TokenService {
        TokenService {
            upstream,
            clock,
            entra: SingleFlight::default(),
            acr: SingleFlight::default(),
            counters: Counters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A registry password for `request`, from the cache when still fresh.
    pub fn acr_token(&self, request: &AcrTokenRequest<'_>) -> Result<AcrToken, TokenError> {
        let key = (
            request.credential.key(),
            request.audience.to_owned(),
            request.registry.to_owned(),
            request.scope.to_owned(),
        );
        let now = self.clock.utc();
        let usable = |t: &AcrToken| {
            now < half_life(t.issued, t.expires)
                && request.not_issued_before.is_none_or(|nib| t.issued > nib)
        };
        let (result, source) =
            self.acr
                .get_or_fetch(&key, usable, || self.fetch_acr(request), |t| t.expires, now);
        match source {
            Source::Cache => {
                self.counters.acr_cache_hits.fetch_add(1, Ordering::Relaxed);
            }
            Source::Shared => {
                self.counters.shared_waits.fetch_add(1, Ordering::Relaxed);
            }
            Source::Fetched => {}
        }
        result
    }

    /// An Entra/IMDS token for `credential` and `audience`, from the cache when still fresh.
    pub fn entra_token(
        &self,
        credential: &Credential,
        audience: &str,
    ) -> Result<AccessToken, TokenError> {
        let key = (credential.key(), audience.to_owned());
        let now = self.clock.utc();
        let (result, source) = self.entra.get_or_fetch(
            &key,
            |e| now < e.refresh_at,
            || self.fetch_entra(credential, audience),
            |e| e.token.expires,
            now,
        );
        match source {
            Source::Cache => {
                self.counters
                    .entra_cache_hits
                    .fetch_add(1, Ordering::Relaxed);
            }
            Source::Shared => {
                self.counters.shared_waits.fetch_add(1, Ordering::Relaxed);
            }
            Source::Fetched => {}
        }
        result.map(|e| e.token)
    }

    fn fetch_entra(
        &self,
        credential: &Credential,
        audience: &str,
    ) -> Result<EntraEntry, TokenError> {
        let now = self.clock.utc();
        let mut asked = None;
        let token = request::entra_token(&*self.upstream, credential, audience, now, &mut |a| {
            asked = Some(a.upstream());
        });
        // A refused assertion never reached Azure, so it is no upstream request.
        if let Some(kind) = asked {
            self.counters.record(kind, &token);
        }
        let token = token?;
        let refresh_at = token
            .refresh_at
            .filter(|r| *r < token.expires)
            .unwrap_or_else(|| half_life(now, token.expires));
        Ok(EntraEntry { token, refresh_at })
    }

    fn fetch_acr(&self, request: &AcrTokenRequest<'_>) -> Result<AcrToken, TokenError> {
        let entra = self.entra_token(request.credential, request.audience)?;
        let refresh = self
            .upstream
            .acr_refresh_token(request.registry, &entra.token);
        self.counters.record(UpstreamKind::AcrExchange, &refresh);
        if let Err(TokenError::Acr(AcrError::Exchange(HttpError::Status { status: 401, .. }))) =
            &refresh
        {
            // The registry rejected a token we still thought fresh (revoked, or rotated
            // credentials): forget it so the next attempt fetches a new one.
            self.entra
                .forget(&(request.credential.key(), request.audience.to_owned()));
        }
        let refresh = refresh?;
        let password = if request.scope.is_empty() {
            refresh
        } else {
            let r = self
                .upstream
                .acr_access_token(request.registry, &refresh, request.scope);
            self.counters.record(UpstreamKind::AcrToken, &r);
            r?
        };
        let expires = acr::password_expiry(&password)?;
        let now = self.clock.utc();
        Ok(AcrToken {
            password,
            expires,
            issued: now.replace_nanosecond(0).unwrap_or(now),
        })
    }
}

/// The midpoint between `from` and `until` (or `from` when `until` is not later).
fn half_life(from: OffsetDateTime, until: OffsetDateTime) -> OffsetDateTime {
    if until <= from {
        return from;
    }
    from + (until - from) / 2
}

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Cache,
    Shared,
    Fetched,
}

/// One fetch in progress: waiters block on `done` until `result` is set.
struct Flight<V> {
    result: Mutex<Option<Result<V, TokenError>>>,
    done: Condvar,
    waiters: AtomicUsize,
}

/// A cache where concurrent misses on one key share a single fetch.
struct SingleFlight<K, V> {
    state: Mutex<FlightState<K, V>>,
}

struct FlightState<K, V> {
    cached: HashMap<K, V>,
    in_flight: HashMap<K, Arc<Flight<V>>>,
    sweep_at: usize,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            state: Mutex::new(FlightState {
                cached: HashMap::new(),
                in_flight: HashMap::new(),
                sweep_at: FIRST_SWEEP_AT,
            }),
        }
    }
}

/// Locks, ignoring poisoning: every critical section leaves the maps consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    /// The cached value when `usable`, else the result of an in-flight fetch for `key`, else the
    /// result of `fetch` run on this thread (stored on success).
    fn get_or_fetch(
        &self,
        key: &K,
        usable: impl Fn(&V) -> bool,
        fetch: impl FnOnce() -> Result<V, TokenError>,
        expires: impl Fn(&V) -> OffsetDateTime,
        now: OffsetDateTime,
    ) -> (Result<V, TokenError>, Source) {
        let mut state = lock(&self.state);
        if let Some(v) = state.cached.get(key).filter(|v| usable(v)) {
            return (Ok(v.clone()), Source::Cache);
        }
        if let Some(flight) = state.in_flight.get(key).cloned() {
            drop(state);
            return (Self::wait(&flight), Source::Shared);
        }
        let flight = Arc::new(Flight {
            result: Mutex::new(None),
            done: Condvar::new(),
            waiters: AtomicUsize::new(0),
        });
        state.in_flight.insert(key.clone(), flight.clone());
        drop(state);

        let mut guard = FlightGuard {
            cache: self,
            key,
            flight: &flight,
            finished: false,
        };
        let result = fetch();
        let mut state = lock(&self.state);
        state.in_flight.remove(key);
        if let Ok(v) = &result {
            state.cached.insert(key.clone(), v.clone());
            if state.cached.len() >= state.sweep_at {
                state.cached.retain(|_, v| expires(v) > now);
                state.sweep_at = (state.cached.len() * 2).max(FIRST_SWEEP_AT);
            }
        }
        drop(state);
        guard.finished = true;
        Self::publish(&flight, result.clone());
        (result, Source::Fetched)
    }

    fn wait(flight: &Flight<V>) -> Result<V, TokenError> {
        flight.waiters.fetch_add(1, Ordering::SeqCst);
        let mut slot = lock(&flight.result);
        loop {
            if let Some(result) = slot.as_ref() {
                return result.clone();
            }
            slot = flight
                .done
                .wait(slot)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn publish(flight: &Flight<V>, result: Result<V, TokenError>) {
        *lock(&flight.result) = Some(result);
        flight.done.notify_all();
    }

    fn forget(&self, key: &K) {
        lock(&self.state).cached.remove(key);
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        lock(&self.state)
            .in_flight
            .values()
            .map(|f| f.waiters.load(Ordering::SeqCst))
            .sum()
    }
}

/// Releases waiters with [`TokenError::Abandoned`] if the fetching thread unwinds.
struct FlightGuard<'a, K: Hash + Eq + Clone, V: Clone> {
    cache: &'a SingleFlight<K, V>,
    key: &'a K,
    flight: &'a Arc<Flight<V>>,
    finished: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for FlightGuard<'_, K, V> {
    fn drop(&mut self) {
        if !self.finished {
            lock(&self.cache.state).in_flight.remove(self.key);
            SingleFlight::<K, V>::publish(self.flight, Err(TokenError::Abandoned));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00:00.250 UTC);

    fn jwt_expiring(exp: OffsetDateTime) -> String {
        let payload = format!(r#"{{"exp":{}}}"#, exp.unix_timestamp());
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload))
    }

    /// Counts calls; `gate` holds the exchange until opened; failures are scripted.
    struct FakeUpstream {
        clock: Arc<FakeClock>,
        imds: AtomicUsize,
        entra: AtomicUsize,
        exchange: AtomicUsize,
        token: AtomicUsize,
        gate: (Mutex<bool>, Condvar),
        fail_exchange_with: Mutex<Option<u16>>,
        entra_refresh_in: Option<i64>,
        serial: AtomicUsize,
    }

    impl FakeUpstream {
        fn new(clock: Arc<FakeClock>) -> FakeUpstream {
            FakeUpstream {
                clock,
                imds: AtomicUsize::new(0),
                entra: AtomicUsize::new(0),
                exchange: AtomicUsize::new(0),
                token: AtomicUsize::new(0),
                gate: (Mutex::new(true), Condvar::new()),
                fail_exchange_with: Mutex::new(None),
                entra_refresh_in: None,
                serial: AtomicUsize::new(0),
            }
        }

        fn close_gate(&self) {
            *self.gate.0.lock().unwrap() = false;
        }

        fn open_gate(&self) {
            *self.gate.0.lock().unwrap() = true;
            self.gate.1.notify_all();
        }

        fn entra_token(&self, now: OffsetDateTime) -> AccessToken {
            AccessToken {
                token: SecretString::new(format!(
                    "entra-{}",
                    self.serial.fetch_add(1, Ordering::SeqCst)
                )),
                expires: now + time::Duration::hours(24),
                refresh_at: self
                    .entra_refresh_in
                    .map(|s| now + time::Duration::seconds(s)),
            }
        }

        /// A fresh, distinct JWT valid for three hours from the fake clock.
        fn acr_jwt(&self) -> SecretString {
            let n = self.serial.fetch_add(1, Ordering::SeqCst);
            let exp = self.clock.utc() + time::Duration::hours(3);
            SecretString::new(format!("{}{n}", jwt_expiring(exp)))
        }
    }

    impl Upstream for FakeUpstream {
        fn managed_identity_token(
            &self,
            _identity: &ManagedIdentity,
            _resource: &str,
            now: OffsetDateTime,
        ) -> Result<AccessToken, TokenError> {
            self.imds.fetch_add(1, Ordering::SeqCst);
            Ok(self.entra_token(now))
        }

        fn client_assertion_token(
            &self,
            request: &AssertionRequest<'_>,
            now: OffsetDateTime,
        ) -> Result<AccessToken, TokenError> {
            assert_eq!(request.assertion.expose(), "sa-token");
            assert_eq!(
                request.scope,
                "https://management.core.windows.net//.default"
            );
            self.entra.fetch_add(1, Ordering::SeqCst);
            Ok(self.entra_token(now))
        }

        fn acr_refresh_token(
            &self,
            _registry: &str,
            _entra_token: &SecretString,
        ) -> Result<SecretString, TokenError> {
            self.exchange.fetch_add(1, Ordering::SeqCst);
            let mut open = self.gate.0.lock().unwrap();
            while !*open {
                open = self.gate.1.wait(open).unwrap();
            }
            drop(open);
            if let Some(status) = *self.fail_exchange_with.lock().unwrap() {
                return Err(TokenError::Acr(AcrError::Exchange(HttpError::Status {
                    status,
                    detail: None,
                })));
            }
            Ok(self.acr_jwt())
        }

        fn acr_access_token(
            &self,
            _registry: &str,
            _refresh_token: &SecretString,
            _scope: &str,
        ) -> Result<SecretString, TokenError> {
            self.token.fetch_add(1, Ordering::SeqCst);
            Ok(self.acr_jwt())
        }
    }

    fn setup() -> (Arc<FakeClock>, Arc<FakeUpstream>, Arc<TokenService>) {
        setup_with(|_| {})
    }

    fn setup_with(
        tweak: impl FnOnce(&mut FakeUpstream),
    ) -> (Arc<FakeClock>, Arc<FakeUpstream>, Arc<TokenService>) {
        let clock = Arc::new(FakeClock::starting_at(T0));
        let mut upstream = FakeUpstream::new(clock.clone());
        tweak(&mut upstream);
        let upstream = Arc::new(upstream);
        let service = Arc::new(TokenService::new(upstream.clone(), clock.clone()));
        (clock, upstream, service)
    }

    const MI: Credential = Credential::Managed(ManagedIdentity::System);
    const ARM: &str = "https://management.core.windows.net/";

    fn request<'a>(scope: &'a str, registry: &'a str) -> AcrTokenRequest<'a> {
        AcrTokenRequest {
            credential: &MI,
            audience: ARM,
            registry,
            scope,
            not_issued_before: None,
        }
    }

    #[test]
    fn ten_threads_asking_for_one_token_cause_one_upstream_call() {
        let (_clock, upstream, service) = setup();
        upstream.close_gate();
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let service = service.clone();
                std::thread::spawn(move || {
                    service
                        .acr_token(&request("repository:app:pull", "r.azurecr.io"))
                        .map(|t| t.password)
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while service.acr.waiting() < 9 || upstream.exchange.load(Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline, "threads never queued up");
            std::thread::yield_now();
        }
        upstream.open_gate();
        let passwords: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        assert!(passwords.iter().all(|p| *p == passwords[0]));
        assert_eq!(upstream.imds.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.exchange.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.token.load(Ordering::SeqCst), 1);
        assert_eq!(service.counters().shared_waits(), 9);
        assert_eq!(
            service.counters().requests(UpstreamKind::AcrExchange, true),
            1
        );
    }

    #[test]
    fn an_acr_token_is_reused_until_half_its_lifetime() {
        let (clock, upstream, service) = setup();
        let first = service.acr_token(&request("s", "r.azurecr.io")).unwrap();
        assert_eq!(first.issued, datetime!(2026-01-01 00:00:00 UTC));
        clock.advance(Duration::from_secs(89 * 60));
        let again = service.acr_token(&request("s", "r.azurecr.io")).unwrap();
        assert_eq!(again, first);
        assert_eq!(service.counters().acr_cache_hits(), 1);
        clock.advance(Duration::from_secs(2 * 60));
        let fresh = service.acr_token(&request("s", "r.azurecr.io")).unwrap();
        assert_ne!(fresh.password, first.password);
        assert_eq!(upstream.exchange.load(Ordering::SeqCst), 2);
        // The Entra token lives 24 h, so it was reused for the second exchange.
        assert_eq!(upstream.imds.load(Ordering::SeqCst), 1);
        assert_eq!(service.counters().entra_cache_hits(), 1);
    }

    #[test]
    fn a_token_issued_before_not_issued_before_is_not_reused() {
        let (clock, upstream, service) = setup();
        let first = service.acr_token(&request("s", "r.azurecr.io")).unwrap();
        clock.advance(Duration::from_secs(1));
        let mut replacing = request("s", "r.azurecr.io");
        replacing.not_issued_before = Some(first.issued);
        let second = service.acr_token(&replacing).unwrap();
        assert_ne!(second.password, first.password);
        assert!(second.issued > first.issued);
        assert_eq!(upstream.exchange.load(Ordering::SeqCst), 2);
        // An older bound still allows the cached token.
        replacing.not_issued_before = Some(first.issued);
        assert_eq!(service.acr_token(&replacing).unwrap(), second);
    }

    #[test]
    fn the_secrets_own_second_counts_as_issued_at_or_before() {
        let (_clock, upstream, service) = setup();
        let first = service.acr_token(&request("s", "r.azurecr.io")).unwrap();
        // The Secret annotation is written with whole seconds in the same second.
        let mut replacing = request("s", "r.azurecr.io");
        replacing.not_issued_before = Some(datetime!(2026-01-01 00:00:00 UTC));
        let second = service.acr_token(&replacing).unwrap();
        assert_ne!(second.password, first.password);
        assert_eq!(upstream.exchange.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_empty_scope_makes_the_refresh_token_the_password() {
        let (_clock, upstream, service) = setup();
        service.acr_token(&request("", "r.azurecr.io")).unwrap();
        assert_eq!(upstream.exchange.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.token.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn registries_and_scopes_are_cached_apart_but_share_the_entra_token() {
        let (_clock, upstream, service) = setup();
        let a = service.acr_token(&request("s", "a.azurecr.io")).unwrap();
        let b = service.acr_token(&request("s", "b.azurecr.io")).unwrap();
        let c = service.acr_token(&request("t", "a.azurecr.io")).unwrap();
        assert_ne!(a.password, b.password);
        assert_ne!(a.password, c.password);
        assert_eq!(upstream.exchange.load(Ordering::SeqCst), 3);
        assert_eq!(upstream.imds.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn failures_are_not_cached_and_name_their_stage() {
        let (_clock, upstream, service) = setup();
        *upstream.fail_exchange_with.lock().unwrap() = Some(503);
        let err = service
            .acr_token(&request("s", "r.azurecr.io"))
            .unwrap_err();
        assert_eq!(err.stage(), TokenStage::Acr);
        assert_eq!(
            err.to_string(),
            "failed to exchange AAD access token for ACR refresh token: status 503"
        );
        assert_eq!(
            service
                .counters()
                .requests(UpstreamKind::AcrExchange, false),
            1
        );
        *upstream.fail_exchange_with.lock().unwrap() = None;
        service.acr_token(&request("s", "r.azurecr.io")).unwrap();
        assert_eq!(upstream.exchange.load(Ordering::SeqCst), 2);
        // The Entra token survived a 503.
        assert_eq!(upstream.imds.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_401_from_the_registry_drops_the_cached_entra_token() {
        let (_clock, upstream, service) = setup();
        *upstream.fail_exchange_with.lock().unwrap() = Some(401);
        service
            .acr_token(&request("s", "r.azurecr.io"))
            .unwrap_err();
        *upstream.fail_exchange_with.lock().unwrap() = None;
        service.acr_token(&request("s", "r.azurecr.io")).unwrap();
        assert_eq!(upstream.imds.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn entra_tokens_follow_refresh_in_when_given() {
        let (clock, upstream, service) = setup_with(|u| u.entra_refresh_in = Some(600));
        service.entra_token(&MI, ARM).unwrap();
        clock.advance(Duration::from_secs(599));
        service.entra_token(&MI, ARM).unwrap();
        assert_eq!(upstream.imds.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(2));
        service.entra_token(&MI, ARM).unwrap();
        assert_eq!(upstream.imds.load(Ordering::SeqCst), 2);
    }

    #[derive(Debug)]
    struct FakeAssertions {
        calls: AtomicUsize,
        fail: AtomicBool,
    }

    #[derive(Debug)]
    struct MintFailed;

    impl fmt::Display for MintFailed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("forbidden")
        }
    }

    impl std::error::Error for MintFailed {}

    impl AssertionSource for FakeAssertions {
        fn key(&self) -> String {
            "ns/sa".to_owned()
        }

        fn assertion(&self) -> Result<SecretString, AssertionError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(AssertionError::new(MintFailed));
            }
            Ok(SecretString::new("sa-token"))
        }
    }

    #[test]
    fn workload_identity_mints_an_assertion_only_when_entra_is_called() {
        let (_clock, upstream, service) = setup();
        let source = Arc::new(FakeAssertions {
            calls: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        });
        let wi = Credential::ClientAssertion(ClientAssertion {
            authority_host: "https://login.microsoftonline.com/".into(),
            tenant: "t".into(),
            client_id: "c".into(),
            source: source.clone(),
        });
        let mut req = request("s", "r.azurecr.io");
        req.credential = &wi;
        service.acr_token(&req).unwrap();
        service.acr_token(&request("s", "r.azurecr.io")).unwrap();
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.entra.load(Ordering::SeqCst), 1);
        assert_eq!(service.counters().requests(UpstreamKind::Entra, true), 1);
        assert_eq!(service.counters().requests(UpstreamKind::Imds, true), 1);
        // The managed identity did not reuse the workload identity's tokens.
        assert_eq!(upstream.imds.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.exchange.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_assertion_is_an_entra_stage_error() {
        let (_clock, _upstream, service) = setup();
        let wi = Credential::ClientAssertion(ClientAssertion {
            authority_host: "https://login.microsoftonline.com/".into(),
            tenant: "t".into(),
            client_id: "c".into(),
            source: Arc::new(FakeAssertions {
                calls: AtomicUsize::new(0),
                fail: AtomicBool::new(true),
            }),
        });
        let err = service.entra_token(&wi, ARM).unwrap_err();
        assert_eq!(err.stage(), TokenStage::Entra);
        assert_eq!(
            err.to_string(),
            "failed to mint service account token: forbidden"
        );
        // Entra was never asked, so no Entra request is counted, failed or not.
        for ok in [true, false] {
            assert_eq!(service.counters().requests(UpstreamKind::Entra, ok), 0);
        }
    }

    #[test]
    fn waiters_are_released_when_the_fetching_thread_panics() {
        let cache: Arc<SingleFlight<u8, u8>> = Arc::new(SingleFlight::default());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let fetcher = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                cache.get_or_fetch(
                    &1,
                    |_| true,
                    || {
                        started_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                        panic!("fetch failed hard");
                    },
                    |_| T0,
                    T0,
                )
            })
        };
        started_rx.recv().unwrap();
        let waiter = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.get_or_fetch(&1, |_| true, || Ok(7), |_| T0, T0))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.waiting() < 1 {
            assert!(Instant::now() < deadline, "waiter never queued");
            std::thread::yield_now();
        }
        release_tx.send(()).unwrap();
        assert!(fetcher.join().is_err());
        let (result, source) = waiter.join().unwrap();
        assert!(matches!(result, Err(TokenError::Abandoned)));
        assert_eq!(source, Source::Shared);
    }

    #[test]
    fn debug_output_of_tokens_is_redacted() {
        let (_clock, _upstream, service) = setup();
        let t = service.acr_token(&request("s", "r.azurecr.io")).unwrap();
        let shown = format!("{t:?}");
        assert!(
            shown.contains("[redacted]") && !shown.contains("e30."),
            "{shown}"
        );
    }

    #[test]
    fn identities_of_different_kinds_never_share_a_cache_key() {
        let keys = [
            Credential::Managed(ManagedIdentity::System).key(),
            Credential::Managed(ManagedIdentity::ClientId("x".into())).key(),
            Credential::Managed(ManagedIdentity::ResourceId("x".into())).key(),
        ];
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[1], keys[2]);
        assert_ne!(keys[0], keys[2]);
    }
}

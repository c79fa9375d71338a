//! Measures every Azure token request: latency per upstream, and throttling (429) and server
//! errors (5xx) per upstream, for `/metrics`. A decorator around the real [`Upstream`], so the
//! token service stays unaware of metrics.

use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;

use crate::azure::acr::AcrError;
use crate::azure::entra::{AssertionRequest, EntraError};
use crate::azure::imds::{ImdsError, ManagedIdentity};
use crate::azure::{AccessToken, HttpError, SecretString};
use crate::ops::metrics::{Metrics, Render};
use crate::tokens::{Counters, TokenError, Upstream, UpstreamKind};

/// The HTTP status Azure answered with, when the error carries one.
fn status_of(e: &TokenError) -> Option<u16> {
    let http = |h: &HttpError| h.status();
    match e {
        TokenError::Imds(ImdsError::Status { status, .. }) => Some(*status),
        TokenError::Imds(ImdsError::Http(h)) => http(h),
        TokenError::Entra(EntraError::Status { status, .. }) => Some(*status),
        TokenError::Entra(EntraError::Http(h)) => http(h),
        TokenError::Acr(AcrError::Exchange(h) | AcrError::Token(h)) => http(h),
        _ => None,
    }
}

/// An [`Upstream`] that records what each call cost.
pub struct Metered {
    inner: Arc<dyn Upstream>,
    metrics: Arc<Metrics>,
}

impl Metered {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: Arc<dyn Upstream>, metrics: Arc<Metrics>) -> Metered {
        Metered { inner, metrics }
    }

    fn record<T>(&self, kind: UpstreamKind, started: Instant, r: &Result<T, TokenError>) {
        let label = kind.as_str();
        self.metrics
            .token_request_duration(label, started.elapsed());
        if let Err(e) = r {
            match status_of(e) {
                Some(429) => self.metrics.azure_throttled(label),
                Some(s) if s >= 500 => self.metrics.azure_server_error(label),
                _ => {}
            }
        }
    }
}

impl Upstream for Metered {
    fn managed_identity_token(
        &self,
        identity: &ManagedIdentity,
        resource: &str,
        now: OffsetDateTime,
    ) -> Result<AccessToken, TokenError> {
        let t = Instant::now();
        let r = self.inner.managed_identity_token(identity, resource, now);
        self.record(UpstreamKind::Imds, t, &r);
        r
    }

    fn client_assertion_token(
        &self,
        request: &AssertionRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<AccessToken, TokenError> {
        let t = Instant::now();
        let r = self.inner.client_assertion_token(request, now);
        self.record(UpstreamKind::Entra, t, &r);
        r
    }

    fn acr_refresh_token(
        &self,
        registry: &str,
        entra_token: &SecretString,
    ) -> Result<SecretString, TokenError> {
        let t = Instant::now();
        let r = self.inner.acr_refresh_token(registry, entra_token);
        self.record(UpstreamKind::AcrExchange, t, &r);
        r
    }

    fn acr_access_token(
        &self,
        registry: &str,
        refresh_token: &SecretString,
        scope: &str,
    ) -> Result<SecretString, TokenError> {
        let t = Instant::now();
        let r = self.inner.acr_access_token(registry, refresh_token, scope);
        self.record(UpstreamKind::AcrToken, t, &r);
        r
    }
}

/// Renders the token service's counters: `acrpull_token_requests_total{upstream,outcome}` and
/// `acrpull_token_cache_hits_total{cache}`. Wire it with
/// `metrics.add_collector(Box::new(move |r| collect_token_counters(service.counters(), r)))`.
pub fn collect_token_counters(counters: &Counters, r: &mut Render) {
    const REQUESTS: &str = "acrpull_token_requests_total";
    const REQUESTS_HELP: &str = "Token requests to Azure by upstream and outcome.";
    for kind in UpstreamKind::ALL {
        for (ok, outcome) in [(true, "ok"), (false, "error")] {
            let labels = [("upstream", kind.as_str()), ("outcome", outcome)];
            r.counter(
                REQUESTS,
                REQUESTS_HELP,
                &labels,
                counters.requests(kind, ok),
            );
        }
    }
    const HITS: &str = "acrpull_token_cache_hits_total";
    const HITS_HELP: &str = "Tokens served from the cache instead of Azure.";
    r.counter(
        HITS,
        HITS_HELP,
        &[("cache", "entra")],
        counters.entra_cache_hits(),
    );
    r.counter(
        HITS,
        HITS_HELP,
        &[("cache", "acr")],
        counters.acr_cache_hits(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_told_apart() {
        let throttled = TokenError::Imds(ImdsError::Status {
            status: 429,
            detail: None,
            attempts: 4,
        });
        assert_eq!(status_of(&throttled), Some(429));
        let server = TokenError::Acr(AcrError::Token(HttpError::Status {
            status: 503,
            detail: None,
        }));
        assert_eq!(status_of(&server), Some(503));
        assert_eq!(status_of(&TokenError::Acr(AcrError::NoExpiry)), None);
    }

    #[test]
    fn token_counters_render_every_upstream_and_cache_seeded_at_zero() {
        let m = Metrics::default();
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        m.add_collector(Box::new(move |r| collect_token_counters(&c, r)));
        let text = m.render();
        for kind in UpstreamKind::ALL {
            for outcome in ["ok", "error"] {
                let line = format!(
                    "acrpull_token_requests_total{{upstream=\"{}\",outcome=\"{outcome}\"}} 0\n",
                    kind.as_str()
                );
                assert!(text.contains(&line), "{line} in\n{text}");
            }
        }
        assert!(text.contains("acrpull_token_cache_hits_total{cache=\"entra\"} 0\n"));
        assert!(text.contains("acrpull_token_cache_hits_total{cache=\"acr\"} 0\n"));
    }
}

//! Host name resolution with a short cache, for every HTTP client acrpull runs.
//!
//! ureq resolves the host before every request, pooled connection or not, and with a timeout set
//! (ours always are) it does so on a new thread each time. For a kubeconfig naming its API server
//! by host name that was a thread and a DNS query per Kubernetes request: at 50 requests/s, 50 of
//! each, and most of acrpull's idle CPU while Events drained. One lookup per host per
//! [`TTL`] is plenty: connections are pooled, and a changed address is picked up within the TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a successful lookup is reused.
pub const TTL: Duration = Duration::from_secs(30);

/// Resolves through ureq's resolver and remembers successful answers for [`TTL`]; failures are
/// never cached, so the next request asks again.
#[derive(Debug, Default)]
pub struct CachingResolver {
    inner: DefaultResolver,
    cache: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl CachingResolver {
    /// The cached answer for `key`, when still fresh at `now`.
    fn cached(&self, key: &str, now: Instant) -> Option<ResolvedSocketAddrs> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < TTL)
            .map(|(_, addrs)| addrs.clone())
    }

    fn remember(&self, key: String, now: Instant, addrs: &ResolvedSocketAddrs) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Hosts are the API server and a few Azure endpoints; drop stale ones so a long run
        // against many registries keeps only what it still uses.
        cache.retain(|_, (at, _)| now.saturating_duration_since(*at) < TTL);
        cache.insert(key, (now, addrs.clone()));
    }
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        let now = Instant::now();
        if let Some(addrs) = self.cached(&key, now) {
            return Ok(addrs);
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        self.remember(key, now, &addrs);
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::Timeout;

    fn timeout() -> NextTimeout {
        NextTimeout {
            after: Duration::from_secs(5).into(),
            reason: Timeout::Resolve,
            ..NextTimeout::default()
        }
    }

    #[test]
    fn a_lookup_is_reused_within_the_ttl_and_redone_after_it() {
        let r = CachingResolver::default();
        let uri: Uri = "https://localhost:6443/api".parse().unwrap();
        let config = Config::default();
        let first = r.resolve(&uri, &config, timeout()).unwrap();
        assert!(!first.is_empty());
        let key = "https://localhost:6443".to_string();
        assert!(
            r.cached(&key, Instant::now()).is_some(),
            "cached after one lookup"
        );
        assert!(
            r.cached(&key, Instant::now() + TTL).is_none(),
            "stale after the TTL"
        );
        let again = r.resolve(&uri, &config, timeout()).unwrap();
        assert_eq!(&*first, &*again);
    }

    #[test]
    fn failures_are_not_cached() {
        let r = CachingResolver::default();
        let uri: Uri = "https://no-such-host.invalid:443/".parse().unwrap();
        assert!(r.resolve(&uri, &Config::default(), timeout()).is_err());
        assert!(r
            .cached("https://no-such-host.invalid:443", Instant::now())
            .is_none());
    }
}

//! Fault injection (fail, throttle, delay matching requests) and the request log tests assert on.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::status::ApiError;

/// Which requests a fault applies to; unset fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    /// HTTP method, upper-case.
    pub method: Option<String>,
    /// Kubernetes verb (get, list, watch, create, update, patch, delete, deletecollection).
    pub verb: Option<String>,
    /// Plural resource (`secrets`, `acrpullbindings`).
    pub resource: Option<String>,
    /// Subresource (`status`, `token`); `Some("")` matches only the main resource.
    pub subresource: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// The authenticated user (faults apply after authentication and authorization).
    pub user: Option<String>,
}

impl Matcher {
    /// Matches every request.
    pub fn any() -> Matcher {
        Matcher::default()
    }

    /// Matches a verb on a resource.
    pub fn verb(verb: &str, resource: &str) -> Matcher {
        Matcher {
            verb: Some(verb.into()),
            resource: Some(resource.into()),
            ..Matcher::default()
        }
    }

    /// Also requires this HTTP method.
    pub fn method(mut self, m: &str) -> Matcher {
        self.method = Some(m.to_ascii_uppercase());
        self
    }

    /// Also requires this subresource (`""` for the main resource).
    pub fn subresource(mut self, s: &str) -> Matcher {
        self.subresource = Some(s.into());
        self
    }

    /// Also requires this namespace.
    pub fn namespace(mut self, ns: &str) -> Matcher {
        self.namespace = Some(ns.into());
        self
    }

    /// Also requires this object name.
    pub fn name(mut self, n: &str) -> Matcher {
        self.name = Some(n.into());
        self
    }

    /// Also requires this authenticated user: one client cut off while others carry on.
    pub fn user(mut self, u: &str) -> Matcher {
        self.user = Some(u.into());
        self
    }

    fn matches(&self, r: &LoggedRequest) -> bool {
        let eq = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        eq(&self.method, &r.method)
            && eq(&self.verb, &r.verb)
            && eq(&self.resource, &r.resource)
            && eq(&self.subresource, &r.subresource)
            && eq(&self.namespace, &r.namespace)
            && eq(&self.name, &r.name)
            && eq(&self.user, &r.user)
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Which requests it applies to.
    pub matcher: Matcher,
    /// The status code to fail with; `None` only delays.
    pub code: Option<u16>,
    /// `Retry-After` seconds to send with the failure.
    pub retry_after: Option<u64>,
    /// Delay before answering.
    pub latency: Duration,
    /// How many more matching requests it applies to; `None` for all of them.
    pub remaining: Option<u32>,
    /// The share of matching requests it applies to (1.0 = every one), spread evenly.
    pub fraction: f64,
    credit: f64,
}

impl Fault {
    /// Fails matching requests with this code and a generic `Status`.
    pub fn fail(code: u16, matcher: Matcher) -> Fault {
        Fault {
            matcher,
            code: Some(code),
            retry_after: None,
            latency: Duration::ZERO,
            remaining: None,
            fraction: 1.0,
            credit: 0.0,
        }
    }

    /// 429 with `Retry-After`, as API Priority and Fairness rejects.
    pub fn throttle(matcher: Matcher, retry_after_secs: u64) -> Fault {
        Fault {
            retry_after: Some(retry_after_secs),
            ..Fault::fail(429, matcher)
        }
    }

    /// Delays matching requests, then serves them normally.
    pub fn delay(matcher: Matcher, latency: Duration) -> Fault {
        Fault {
            code: None,
            latency,
            ..Fault::fail(0, matcher)
        }
    }

    /// Applies only to the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Fault {
        self.remaining = Some(n);
        self
    }

    /// Applies to this share of matching requests (deterministically: every 1/f-th).
    pub fn fraction(mut self, f: f64) -> Fault {
        self.fraction = f.clamp(0.0, 1.0);
        self
    }

    /// Sets `Retry-After` (builder style).
    pub fn retry_after(mut self, secs: u64) -> Fault {
        self.retry_after = Some(secs);
        self
    }
}

/// What a fault does to one request.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Sleep this long first.
    pub latency: Duration,
    /// Then fail with this.
    pub error: Option<ApiError>,
}

/// One request as the log keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The authenticated user (`""` when authentication failed).
    pub user: String,
    /// HTTP method.
    pub method: String,
    /// Kubernetes verb.
    pub verb: String,
    /// API group.
    pub group: String,
    /// Plural resource (`""` for non-resource paths).
    pub resource: String,
    /// Subresource or `""`.
    pub subresource: String,
    /// Namespace or `""`.
    pub namespace: String,
    /// Name or `""`.
    pub name: String,
    /// The status code answered (200 for a watch that started).
    pub code: u16,
    /// Query parameters as sent (`labelSelector`, `limit`, `watch`, …), for tests that check how
    /// a client lists.
    pub query: Vec<(String, String)>,
}

/// How many entries the request log keeps; counters keep counting past it.
const LOG_LIMIT: usize = 200_000;

/// The request log: recent entries in order, plus totals that survive trimming (so a long
/// benchmark's counts stay exact while memory stays bounded).
#[derive(Debug, Default)]
pub struct RequestLog {
    entries: VecDeque<LoggedRequest>,
    by_verb_resource: HashMap<(String, String), usize>,
    by_user: HashMap<String, usize>,
}

impl RequestLog {
    /// Records one answered request.
    pub fn push(&mut self, r: LoggedRequest) {
        *self
            .by_verb_resource
            .entry((r.verb.clone(), r.resource.clone()))
            .or_default() += 1;
        *self.by_user.entry(r.user.clone()).or_default() += 1;
        self.entries.push_back(r);
        if self.entries.len() > LOG_LIMIT {
            self.entries.pop_front();
        }
    }

    /// Forgets everything, totals included.
    pub fn clear(&mut self) {
        *self = RequestLog::default();
    }

    /// The retained entries, oldest first.
    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.entries.iter().cloned().collect()
    }

    /// Requests with this verb on this plural resource, ever (since the last clear).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.by_verb_resource
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests by this user, ever (since the last clear).
    pub fn count_by_user(&self, user: &str) -> usize {
        self.by_user.get(user).copied().unwrap_or(0)
    }

    /// Retained entries that match.
    pub fn count_matching(&self, f: impl Fn(&LoggedRequest) -> bool) -> usize {
        self.entries.iter().filter(|r| f(r)).count()
    }
}

/// Active faults.
#[derive(Debug, Default)]
pub struct Faults {
    faults: Vec<Fault>,
}

impl Faults {
    /// Adds a fault.
    pub fn add(&mut self, f: Fault) {
        self.faults.push(f);
    }

    /// Removes every fault.
    pub fn clear(&mut self) {
        self.faults.clear();
    }

    /// Decides what happens to this request, using up counted faults.
    pub fn judge(&mut self, r: &LoggedRequest) -> Verdict {
        let mut v = Verdict::default();
        for f in self.faults.iter_mut() {
            if !f.matcher.matches(r) || f.remaining == Some(0) {
                continue;
            }
            f.credit += f.fraction;
            if f.credit < 1.0 {
                continue;
            }
            f.credit -= 1.0;
            if let Some(n) = f.remaining.as_mut() {
                *n -= 1;
            }
            v.latency += f.latency;
            if let (Some(code), None) = (f.code, &v.error) {
                v.error = Some(ApiError::injected(code, "injected fault", f.retry_after));
            }
        }
        self.faults.retain(|f| f.remaining != Some(0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(verb: &str, resource: &str) -> LoggedRequest {
        LoggedRequest {
            verb: verb.into(),
            resource: resource.into(),
            method: "GET".into(),
            ..LoggedRequest::default()
        }
    }

    #[test]
    fn counted_fault_fails_exactly_n_requests() {
        let mut f = Faults::default();
        f.add(Fault::fail(503, Matcher::verb("get", "secrets")).times(2));
        assert_eq!(f.judge(&req("get", "secrets")).error.unwrap().code, 503);
        assert!(f.judge(&req("list", "secrets")).error.is_none());
        assert_eq!(f.judge(&req("get", "secrets")).error.unwrap().code, 503);
        assert!(f.judge(&req("get", "secrets")).error.is_none());
    }

    #[test]
    fn fraction_spreads_failures_evenly() {
        let mut f = Faults::default();
        f.add(Fault::fail(500, Matcher::any()).fraction(0.5));
        let failed = (0..10)
            .filter(|_| f.judge(&req("get", "x")).error.is_some())
            .count();
        assert_eq!(failed, 5);
    }

    #[test]
    fn log_totals_survive_clearing_only_by_clear() {
        let mut log = RequestLog::default();
        log.push(LoggedRequest {
            user: "u".into(),
            ..req("get", "secrets")
        });
        log.push(req("get", "secrets"));
        assert_eq!(log.count("get", "secrets"), 2);
        assert_eq!(log.count_by_user("u"), 1);
        assert_eq!(log.count_matching(|r| r.user.is_empty()), 1);
        log.clear();
        assert_eq!(log.count("get", "secrets"), 0);
        assert!(log.entries().is_empty());
    }

    #[test]
    fn throttle_carries_retry_after() {
        let mut f = Faults::default();
        f.add(Fault::throttle(Matcher::any(), 1));
        let e = f.judge(&req("get", "x")).error.unwrap();
        assert_eq!((e.code, e.retry_after), (429, Some(1)));
    }
}

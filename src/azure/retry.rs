//! Bounded retries with jittered backoff for one Azure call, honouring `Retry-After` up to a cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::HttpError;
use super::http::HttpResponse;
use crate::clock::Rng;

/// Sleeps between attempts; injectable so tests do not wait.
pub type Sleeper = Arc<dyn Fn(Duration) + Send + Sync>;

/// When and how long to retry. `Default` is the IMDS policy.
#[derive(Clone)]
pub struct RetryPolicy {
    /// Waits before the 2nd, 3rd, … attempt; its length is the number of retries.
    /// Defaults to 1 s, 2 s, 4 s (four attempts, well inside a 30 s reconcile budget).
    pub delays: Vec<Duration>,
    /// Extra random wait, as a fraction of each delay. Defaults to 0.25.
    pub jitter: f64,
    /// Longest `Retry-After` honoured. Defaults to 8 s.
    pub max_retry_after: Duration,
    /// No retry starts once this much time has passed since the first attempt, so a call
    /// stays inside one reconcile. Defaults to 20 s.
    pub budget: Duration,
    /// How to wait. Defaults to `std::thread::sleep`.
    pub sleep: Sleeper,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(4),
            ],
            jitter: 0.25,
            max_retry_after: Duration::from_secs(8),
            budget: Duration::from_secs(20),
            sleep: Arc::new(std::thread::sleep),
        }
    }
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("delays", &self.delays)
            .field("jitter", &self.jitter)
            .field("max_retry_after", &self.max_retry_after)
            .field("budget", &self.budget)
            .finish()
    }
}

impl RetryPolicy {
    /// The azcore-like policy for Entra and registries: three quick retries.
    pub fn azure() -> RetryPolicy {
        RetryPolicy {
            delays: vec![
                Duration::from_millis(800),
                Duration::from_millis(1600),
                Duration::from_millis(3200),
            ],
            ..RetryPolicy::default()
        }
    }

    #[cfg(test)]
    /// A policy that never retries (for tests and callers that retry themselves).
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            delays: Vec::new(),
            ..RetryPolicy::default()
        }
    }

    /// Runs `attempt` until it returns a response whose status `retryable` rejects, a
    /// non-retryable error, or the retries run out. Returns the last outcome and the attempt count.
    pub fn run(
        &self,
        retryable: impl Fn(u16) -> bool,
        mut attempt: impl FnMut() -> Result<HttpResponse, HttpError>,
    ) -> (Result<HttpResponse, HttpError>, usize) {
        let started = Instant::now();
        let mut rng = Rng::from_entropy();
        let mut attempts = 0;
        loop {
            let outcome = attempt();
            attempts += 1;
            let retry_after = match &outcome {
                Ok(r) if retryable(r.status) => r.retry_after,
                Err(e) if e.is_timeout() => None,
                _ => return (outcome, attempts),
            };
            let Some(base) = self.delays.get(attempts - 1) else {
                return (outcome, attempts);
            };
            let mut wait = *base + jitter(*base, self.jitter, &mut rng);
            if let Some(asked) = retry_after {
                wait = wait.max(asked.min(self.max_retry_after));
            }
            if started.elapsed() + wait >= self.budget {
                return (outcome, attempts);
            }
            (self.sleep)(wait);
        }
    }
}

/// A random duration in `[0, base × fraction)`.
fn jitter(base: Duration, fraction: f64, rng: &mut Rng) -> Duration {
    if fraction.is_nan() || fraction <= 0.0 || base.is_zero() {
        return Duration::ZERO;
    }
    base.mul_f64(fraction * rng.next_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recording_policy() -> (RetryPolicy, Arc<Mutex<Vec<Duration>>>) {
        let waits = Arc::new(Mutex::new(Vec::new()));
        let w = waits.clone();
        let policy = RetryPolicy {
            jitter: 0.0,
            sleep: Arc::new(move |d| w.lock().unwrap().push(d)),
            ..RetryPolicy::default()
        };
        (policy, waits)
    }

    fn status(code: u16, retry_after: Option<u64>) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status: code,
            body: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    #[test]
    fn retries_stop_after_the_last_delay() {
        let (policy, waits) = recording_policy();
        let (outcome, attempts) = policy.run(|s| s == 503, || status(503, None));
        assert_eq!(attempts, 4);
        assert_eq!(outcome.unwrap().status, 503);
        assert_eq!(
            *waits.lock().unwrap(),
            vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(4)
            ]
        );
    }

    #[test]
    fn non_retryable_statuses_return_at_once() {
        let (policy, waits) = recording_policy();
        let (outcome, attempts) = policy.run(|s| s == 503, || status(403, None));
        assert_eq!((outcome.unwrap().status, attempts), (403, 1));
        assert!(waits.lock().unwrap().is_empty());
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let (policy, waits) = recording_policy();
        let mut answers = vec![
            status(429, Some(3)),
            status(429, Some(600)),
            status(200, None),
        ];
        answers.reverse();
        let (outcome, attempts) = policy.run(|s| s == 429, || answers.pop().unwrap());
        assert_eq!((outcome.unwrap().status, attempts), (200, 3));
        assert_eq!(
            *waits.lock().unwrap(),
            vec![Duration::from_secs(3), Duration::from_secs(8)]
        );
    }

    #[test]
    fn no_retry_starts_past_the_budget() {
        let (mut policy, waits) = recording_policy();
        policy.budget = Duration::from_millis(1500);
        let (_, attempts) = policy.run(|s| s == 503, || status(503, None));
        // 1 s fits in the budget; 1 s + 2 s would not.
        assert_eq!(attempts, 2);
        assert_eq!(*waits.lock().unwrap(), vec![Duration::from_secs(1)]);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let mut rng = Rng::with_seed(5);
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(4), 0.25, &mut rng);
            assert!(j < Duration::from_secs(1));
        }
    }
}

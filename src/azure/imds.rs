//! Managed-identity tokens from IMDS (spec §4.1, protocol §3a), limited and retried.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::error::{ErrorDetail, HttpError};
use super::http::HttpSend;
use super::limiter::Limiter;
use super::retry::RetryPolicy;
use super::secret::{AccessToken, SecretString};
use crate::clock::rfc3339;
use crate::net::percent;

/// The IMDS token API version (the oldest that supports managed identities).
const API_VERSION: &str = "2018-02-01";

// The identity is the binding model's: IMDS asks for whichever one a binding names.
pub use crate::binding::ManagedIdentity;

/// Why IMDS gave no token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ImdsError {
    /// 400 for a user-assigned identity: it is not attached to this node.
    IdentityNotAssigned,
    /// IMDS refused the request (a non-retryable status, or a retryable one after the last try).
    Status {
        /// HTTP status.
        status: u16,
        /// `error` / `error_description`, redacted.
        detail: Option<ErrorDetail>,
        /// How many attempts were made.
        attempts: usize,
    },
    /// The request did not complete (connect, timeout, I/O).
    Http(HttpError),
    /// A 200 whose body had no token or no usable expiry.
    MalformedResponse,
}

impl fmt::Display for ImdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImdsError::IdentityNotAssigned => {
                f.write_str("the requested identity isn't assigned to this resource")
            }
            ImdsError::Status {
                status,
                detail,
                attempts,
            } => {
                write!(f, "managed identity endpoint returned status {status}")?;
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                if *attempts > 1 {
                    write!(f, " (after {attempts} attempts)")?;
                }
                Ok(())
            }
            ImdsError::Http(e) => write!(f, "managed identity endpoint: {e}"),
            ImdsError::MalformedResponse => {
                f.write_str("managed identity endpoint returned an invalid token response")
            }
        }
    }
}

impl std::error::Error for ImdsError {}

impl From<HttpError> for ImdsError {
    fn from(e: HttpError) -> Self {
        ImdsError::Http(e)
    }
}

/// Asks IMDS for tokens through the process-wide limiter.
pub struct ImdsClient {
    http: Arc<dyn HttpSend>,
    endpoint: String,
    limiter: Arc<Limiter>,
    retry: RetryPolicy,
}

impl fmt::Debug for ImdsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImdsClient")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl ImdsClient {
    /// A client for `endpoint` (e.g. [`DEFAULT_ENDPOINT`], or `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
    pub fn new(http: Arc<dyn HttpSend>, endpoint: &str, limiter: Arc<Limiter>) -> ImdsClient {
        ImdsClient {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            limiter,
            retry: RetryPolicy::default(),
        }
    }

    #[cfg(test)]
    /// Replaces the retry policy (tests use one that does not sleep).
    pub fn with_retry(mut self, retry: RetryPolicy) -> ImdsClient {
        self.retry = retry;
        self
    }

    /// A token for `resource` (an audience, not a `/.default` scope) as `identity`.
    pub fn token(
        &self,
        identity: &ManagedIdentity,
        resource: &str,
        now: impl Fn() -> OffsetDateTime,
    ) -> Result<AccessToken, ImdsError> {
        let url = self.token_url(identity, resource);
        let (outcome, attempts) = self.retry.run(imds_retryable, || {
            let _permit = self.limiter.acquire();
            self.http.imds_get(&url)
        });
        let response = outcome?;
        match response.status {
            200 => parse_token_response(&response.body, now()),
            400 if *identity != ManagedIdentity::System => Err(ImdsError::IdentityNotAssigned),
            status => Err(ImdsError::Status {
                status,
                detail: ErrorDetail::from_body(&response.body),
                attempts,
            }),
        }
    }

    fn token_url(&self, identity: &ManagedIdentity, resource: &str) -> String {
        let mut query = vec![("api-version", API_VERSION), ("resource", resource)];
        match identity {
            ManagedIdentity::System => {}
            ManagedIdentity::ClientId(id) => query.push(("client_id", id)),
            ManagedIdentity::ResourceId(id) => query.push(("msi_res_id", id)),
        }
        format!(
            "{}/metadata/identity/oauth2/token?{}",
            self.endpoint,
            percent::encode_pairs(query)
        )
    }
}

/// IMDS asks for retries on 404 and 410 (updating), 429 (throttled) and 5xx.
fn imds_retryable(status: u16) -> bool {
    matches!(status, 404 | 410 | 429 | 500..=599)
}

/// Parses an IMDS token response. Numbers may arrive as strings; `expires_on` wins over
/// `expires_in`, as in MSAL.
pub fn parse_token_response(body: &str, now: OffsetDateTime) -> Result<AccessToken, ImdsError> {
    let value: Value = serde_json::from_str(body).map_err(|_| ImdsError::MalformedResponse)?;
    let token = match value.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => SecretString::new(t.clone()),
        _ => return Err(ImdsError::MalformedResponse),
    };
    let expires = value
        .get("expires_on")
        .and_then(parse_expires_on)
        .or_else(|| {
            let seconds = value.get("expires_in").and_then(seconds_of)?;
            now.checked_add(time::Duration::seconds(seconds))
        })
        .ok_or(ImdsError::MalformedResponse)?;
    let refresh_at = value
        .get("refresh_in")
        .and_then(seconds_of)
        .filter(|s| *s > 0)
        .and_then(|s| now.checked_add(time::Duration::seconds(s)));
    Ok(AccessToken {
        token,
        expires,
        refresh_at,
    })
}

/// A whole number of seconds given as a JSON number or a numeric string.
fn seconds_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

/// `expires_on` as MSAL accepts it: unix seconds (number or string), `MM/dd/yyyy HH:mm:ss`,
/// `yyyy-MM-dd HH:mm:ss` (both UTC), or RFC 3339.
fn parse_expires_on(v: &Value) -> Option<OffsetDateTime> {
    if let Some(seconds) = seconds_of(v) {
        return OffsetDateTime::from_unix_timestamp(seconds).ok();
    }
    let text = v.as_str()?.trim();
    let us = format_description!("[month]/[day]/[year] [hour]:[minute]:[second]");
    let iso = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    PrimitiveDateTime::parse(text, us)
        .or_else(|_| PrimitiveDateTime::parse(text, iso))
        .map(PrimitiveDateTime::assume_utc)
        .ok()
        .or_else(|| rfc3339::parse(text))
}

/// A retry policy that records waits instead of sleeping; for tests here and in `tokens`.
#[cfg(test)]
pub(crate) fn no_sleep_retry() -> RetryPolicy {
    RetryPolicy {
        sleep: Arc::new(|_: std::time::Duration| {}),
        ..RetryPolicy::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::http::{HttpClients, HttpConfig};
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::Mutex;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);

    #[test]
    fn all_string_imds_response_is_parsed() {
        let body = r#"{"access_token":"eyJ.a.b","refresh_token":"","expires_in":"3599","expires_on":"1767229200","not_before":"1767225600","resource":"https://management.azure.com/","token_type":"Bearer"}"#;
        let t = parse_token_response(body, NOW).unwrap();
        assert_eq!(t.expires.unix_timestamp(), 1_767_229_200);
        assert_eq!(t.token.expose(), "eyJ.a.b");
        assert_eq!(t.refresh_at, None);
    }

    #[test]
    fn numeric_fields_and_refresh_in_are_parsed() {
        let body =
            r#"{"access_token":"t","expires_in":86399,"expires_on":1767312000,"refresh_in":43199}"#;
        let t = parse_token_response(body, NOW).unwrap();
        assert_eq!(t.expires.unix_timestamp(), 1_767_312_000);
        assert_eq!(t.refresh_at, Some(NOW + time::Duration::seconds(43199)));
    }

    #[test]
    fn expires_on_date_formats_are_accepted() {
        for (text, want) in [
            ("01/02/2026 03:04:05", datetime!(2026-01-02 03:04:05 UTC)),
            ("2026-01-02 03:04:05", datetime!(2026-01-02 03:04:05 UTC)),
            (
                "2026-01-02T03:04:05+01:00",
                datetime!(2026-01-02 02:04:05 UTC),
            ),
        ] {
            let body = format!(r#"{{"access_token":"t","expires_on":"{text}"}}"#);
            assert_eq!(
                parse_token_response(&body, NOW).unwrap().expires,
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn expires_in_is_used_when_expires_on_is_unreadable() {
        let body = r#"{"access_token":"t","expires_on":"soon","expires_in":"60"}"#;
        let t = parse_token_response(body, NOW).unwrap();
        assert_eq!(t.expires, NOW + time::Duration::seconds(60));
    }

    #[test]
    fn a_response_without_token_or_expiry_is_malformed() {
        for body in [
            r#"{"expires_in":"60"}"#,
            r#"{"access_token":"","expires_in":"60"}"#,
            r#"{"access_token":"t"}"#,
            "not json",
        ] {
            assert!(
                matches!(
                    parse_token_response(body, NOW),
                    Err(ImdsError::MalformedResponse)
                ),
                "{body}"
            );
        }
    }

    /// A tiny IMDS: answers each connection with the next canned (status, body), records URLs.
    fn fake_imds(
        answers: Vec<(u16, &'static str)>,
    ) -> (String, Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let handle = std::thread::spawn(move || {
            for (status, body) in answers {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut headers = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    headers.push_str(&line.to_ascii_lowercase());
                }
                let status_ok = if headers.contains("metadata: true") {
                    status
                } else {
                    400
                };
                log.lock().unwrap().push(request_line.trim().to_owned());
                let reply = format!(
                    "HTTP/1.1 {status_ok} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(reply.as_bytes()).unwrap();
            }
        });
        (endpoint, seen, handle)
    }

    fn client(endpoint: &str) -> ImdsClient {
        let http = Arc::new(HttpClients::new(&HttpConfig::default()).unwrap());
        ImdsClient::new(http, endpoint, Arc::new(Limiter::default())).with_retry(no_sleep_retry())
    }

    #[test]
    fn a_user_assigned_token_is_fetched_over_real_http() {
        let (endpoint, seen, server) = fake_imds(vec![(
            200,
            r#"{"access_token":"tok","expires_in":"3600","expires_on":"1767229200"}"#,
        )]);
        let id = ManagedIdentity::ClientId("1234-abcd".into());
        let t = client(&endpoint)
            .token(&id, "https://management.azure.com/", || NOW)
            .unwrap();
        assert_eq!(t.token.expose(), "tok");
        server.join().unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0],
            "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id=1234-abcd HTTP/1.1"
        );
    }

    #[test]
    fn resource_ids_use_msi_res_id_and_system_sends_no_selector() {
        let c = client("http://imds.test/");
        let url = c.token_url(&ManagedIdentity::ResourceId("/sub/x".into()), "r");
        assert!(url.ends_with("&msi_res_id=%2Fsub%2Fx"), "{url}");
        let url = c.token_url(&ManagedIdentity::System, "r");
        assert_eq!(
            url,
            "http://imds.test/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r"
        );
    }

    #[test]
    fn transient_statuses_are_retried_then_succeed() {
        let (endpoint, seen, server) = fake_imds(vec![
            (410, ""),
            (429, r#"{"error":"throttled"}"#),
            (500, ""),
            (200, r#"{"access_token":"tok","expires_in":3600}"#),
        ]);
        let t = client(&endpoint).token(&ManagedIdentity::System, "r", || NOW);
        assert!(t.is_ok(), "{t:?}");
        server.join().unwrap();
        assert_eq!(seen.lock().unwrap().len(), 4);
    }

    #[test]
    fn a_400_for_a_user_assigned_identity_is_not_assigned_and_not_retried() {
        let (endpoint, seen, server) = fake_imds(vec![(
            400,
            r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
        )]);
        let err = client(&endpoint)
            .token(&ManagedIdentity::ClientId("x".into()), "r", || NOW)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the requested identity isn't assigned to this resource"
        );
        server.join().unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn retries_are_bounded_and_the_error_names_the_status() {
        let (endpoint, seen, server) = fake_imds(vec![(503, ""); 4]);
        let err = client(&endpoint)
            .token(&ManagedIdentity::System, "r", || NOW)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "managed identity endpoint returned status 503 (after 4 attempts)"
        );
        server.join().unwrap();
        assert_eq!(seen.lock().unwrap().len(), 4);
    }
}

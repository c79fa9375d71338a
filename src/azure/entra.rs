//! Entra client-credentials exchange with a federated assertion (workload identity, spec §4.2).

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;

use super::error::{ErrorDetail, HttpError};
use super::http::HttpSend;
use super::retry::RetryPolicy;
use super::secret::{AccessToken, SecretString};

/// The assertion type for a JWT bearer client assertion.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Why Entra gave no token. Never holds the assertion.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EntraError {
    /// The tenant ID is not a plain GUID or domain name, so it cannot go in the URL path.
    InvalidTenant,
    /// The authority host is not an `https://` URL.
    InvalidAuthority,
    /// Entra answered with an error status.
    Status {
        /// HTTP status.
        status: u16,
        /// `error` / `error_description`, redacted.
        detail: Option<ErrorDetail>,
    },
    /// The request did not complete.
    Http(HttpError),
    /// A 200 without `access_token` or a numeric `expires_in`.
    MalformedResponse,
}

impl fmt::Display for EntraError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntraError::InvalidTenant => f.write_str("invalid tenant id"),
            EntraError::InvalidAuthority => f.write_str("invalid entra authority host"),
            EntraError::Status {
                status,
                detail: Some(d),
            } => write!(f, "entra token request failed with status {status}: {d}"),
            EntraError::Status {
                status,
                detail: None,
            } => write!(f, "entra token request failed with status {status}"),
            EntraError::Http(e) => write!(f, "entra token request: {e}"),
            EntraError::MalformedResponse => {
                f.write_str("entra returned an invalid token response")
            }
        }
    }
}

impl std::error::Error for EntraError {}

impl From<HttpError> for EntraError {
    fn from(e: HttpError) -> Self {
        EntraError::Http(e)
    }
}

/// What to exchange: who we are, where, and for which scope.
#[derive(Debug, Clone)]
pub struct AssertionRequest<'a> {
    /// Entra authority host, e.g. `https://login.microsoftonline.com/`.
    pub authority_host: &'a str,
    /// Tenant ID.
    pub tenant: &'a str,
    /// The application (client) ID of the federated identity.
    pub client_id: &'a str,
    /// The signed service-account token.
    pub assertion: &'a SecretString,
    /// `<audience>/.default`.
    pub scope: &'a str,
}

/// Exchanges client assertions for access tokens.
pub struct EntraClient {
    http: Arc<dyn HttpSend>,
    retry: RetryPolicy,
}

impl fmt::Debug for EntraClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraClient").finish()
    }
}

impl EntraClient {
    /// A client sending through `http`, with the azcore-like retry policy.
    pub fn new(http: Arc<dyn HttpSend>) -> EntraClient {
        EntraClient {
            http,
            retry: RetryPolicy::azure(),
        }
    }

    #[cfg(test)]
    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> EntraClient {
        self.retry = retry;
        self
    }

    /// `POST {authority}{tenant}/oauth2/v2.0/token` with the client-credentials form.
    pub fn token(
        &self,
        request: &AssertionRequest<'_>,
        now: impl Fn() -> OffsetDateTime,
    ) -> Result<AccessToken, EntraError> {
        let url = token_url(request.authority_host, request.tenant)?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", request.client_id),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", request.assertion.expose()),
            ("scope", request.scope),
        ];
        let (outcome, _attempts) = self
            .retry
            .run(azure_retryable, || self.http.azure_post_form(&url, &form));
        let response = outcome?;
        if response.status != 200 {
            return Err(EntraError::Status {
                status: response.status,
                detail: ErrorDetail::from_body(&response.body),
            });
        }
        parse_token_response(&response.body, now())
    }
}

/// azcore retries these statuses for Entra and registries.
pub(crate) fn azure_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

fn token_url(authority_host: &str, tenant: &str) -> Result<String, EntraError> {
    if !authority_host.starts_with("https://") {
        return Err(EntraError::InvalidAuthority);
    }
    let tenant_ok = !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !tenant.starts_with('.');
    if !tenant_ok {
        return Err(EntraError::InvalidTenant);
    }
    let host = authority_host.trim_end_matches('/');
    Ok(format!("{host}/{tenant}/oauth2/v2.0/token"))
}

/// Parses `{"access_token": .., "expires_in": <int>, "refresh_in"?: <int>}`.
pub fn parse_token_response(body: &str, now: OffsetDateTime) -> Result<AccessToken, EntraError> {
    let value: Value = serde_json::from_str(body).map_err(|_| EntraError::MalformedResponse)?;
    let token = match value.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => SecretString::new(t.clone()),
        _ => return Err(EntraError::MalformedResponse),
    };
    let seconds = |name: &str| match value.get(name) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let expires_in = seconds("expires_in")
        .filter(|s| *s > 0)
        .ok_or(EntraError::MalformedResponse)?;
    let expires = now
        .checked_add(time::Duration::seconds(expires_in))
        .ok_or(EntraError::MalformedResponse)?;
    let refresh_at = seconds("refresh_in")
        .filter(|s| *s > 0 && *s < expires_in)
        .and_then(|s| now.checked_add(time::Duration::seconds(s)));
    Ok(AccessToken {
        token,
        expires,
        refresh_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::http::fake::{answer, FakeHttp};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);

    #[test]
    fn the_client_credentials_form_is_sent_to_the_tenant_endpoint() {
        let http = Arc::new(FakeHttp::default());
        http.push(answer(
            200,
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ.x.y"}"#,
        ));
        let client = EntraClient::new(http.clone()).with_retry(RetryPolicy::none());
        let assertion = SecretString::new("sa-token");
        let token = client
            .token(
                &AssertionRequest {
                    authority_host: "https://login.microsoftonline.com/",
                    tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47",
                    client_id: "client-1",
                    assertion: &assertion,
                    scope: "https://management.core.windows.net//.default",
                },
                || NOW,
            )
            .unwrap();
        assert_eq!(token.expires, NOW + time::Duration::seconds(3599));
        let sent = http.sent.lock().unwrap();
        assert_eq!(
            sent[0].0,
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        let form: Vec<(&str, &str)> = sent[0]
            .1
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            form,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "client-1"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", "sa-token"),
                ("scope", "https://management.core.windows.net//.default"),
            ]
        );
    }

    #[test]
    fn an_error_response_keeps_only_safe_fields() {
        let http = Arc::new(FakeHttp::default());
        http.push(answer(
            400,
            r#"{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found for presented assertion eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln","error_codes":[700213],"trace_id":"t"}"#,
        ));
        let client = EntraClient::new(http).with_retry(RetryPolicy::none());
        let assertion = SecretString::new("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln");
        let err = client
            .token(
                &AssertionRequest {
                    authority_host: "https://login.microsoftonline.com/",
                    tenant: "t",
                    client_id: "c",
                    assertion: &assertion,
                    scope: "s",
                },
                || NOW,
            )
            .unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with(
                "entra token request failed with status 400: invalid_client: AADSTS700213"
            ),
            "{shown}"
        );
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(!format!("{err:?}").contains("eyJ"));
    }

    #[test]
    fn tenants_that_could_change_the_path_are_refused() {
        for bad in ["", "../x", "a/b", "t?x=1", ".hidden"] {
            assert!(matches!(
                token_url("https://login.microsoftonline.com/", bad),
                Err(EntraError::InvalidTenant)
            ));
        }
        assert!(matches!(
            token_url("http://login.microsoftonline.com/", "t"),
            Err(EntraError::InvalidAuthority)
        ));
        assert_eq!(
            token_url("https://login.air", "contoso.onmicrosoft.com").unwrap(),
            "https://login.air/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
    }

    #[test]
    fn a_response_without_expires_in_is_malformed() {
        assert!(matches!(
            parse_token_response(r#"{"access_token":"t"}"#, NOW),
            Err(EntraError::MalformedResponse)
        ));
        assert!(matches!(
            parse_token_response(r#"{"expires_in":3600}"#, NOW),
            Err(EntraError::MalformedResponse)
        ));
    }
}

//! The registry token exchange (spec §4.3): Entra token → ACR refresh token → scoped access token.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;

use super::entra::azure_retryable;
use super::error::{ErrorDetail, HttpError};
use super::http::HttpSend;
use super::jwt::{self, JwtError};
use super::retry::RetryPolicy;
use super::secret::SecretString;

/// The ACR OAuth API version upstream uses.
const API_VERSION: &str = "2021-07-01";

/// Why the registry gave no token. Display texts are upstream's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AcrError {
    /// The server is not a bare `host[:port]`; nothing was sent.
    InvalidServer,
    /// `/oauth2/exchange` failed.
    Exchange(HttpError),
    /// `/oauth2/exchange` answered without a `refresh_token`.
    EmptyRefreshToken,
    /// `/oauth2/token` failed.
    Token(HttpError),
    /// `/oauth2/token` answered without an `access_token`.
    EmptyAccessToken,
    /// The chosen token is not a JWT.
    UnparsableToken,
    /// The chosen token has no numeric `exp`.
    NoExpiry,
}

impl fmt::Display for AcrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcrError::InvalidServer => {
                f.write_str("server must be a host name without scheme, path, query, or fragment")
            }
            AcrError::Exchange(e) => write!(
                f,
                "failed to exchange AAD access token for ACR refresh token: {e}"
            ),
            AcrError::EmptyRefreshToken => f.write_str(
                "got an empty response when exchanging AAD access token for ACR refresh token",
            ),
            AcrError::Token(e) => write!(
                f,
                "failed to exchange ACR refresh token for ACR access token: {e}"
            ),
            AcrError::EmptyAccessToken => f.write_str(
                "got an empty response when exchanging ACR refresh token for ACR access token",
            ),
            AcrError::UnparsableToken => f.write_str("failed to parse ACR access token"),
            // The misspelling is upstream's; users may match on it.
            AcrError::NoExpiry => f.write_str("failed to parse ACR acess token expiration"),
        }
    }
}

impl std::error::Error for AcrError {}

impl From<JwtError> for AcrError {
    fn from(e: JwtError) -> Self {
        match e {
            JwtError::NotJwt => AcrError::UnparsableToken,
            JwtError::NoExpiry => AcrError::NoExpiry,
        }
    }
}

/// Talks to registries' OAuth endpoints.
pub struct AcrClient {
    http: Arc<dyn HttpSend>,
    retry: RetryPolicy,
}

impl fmt::Debug for AcrClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcrClient").finish()
    }
}

impl AcrClient {
    /// A client sending through `http`, with the azcore-like retry policy.
    pub fn new(http: Arc<dyn HttpSend>) -> AcrClient {
        AcrClient {
            http,
            retry: RetryPolicy::azure(),
        }
    }

    #[cfg(test)]
    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> AcrClient {
        self.retry = retry;
        self
    }

    /// `POST /oauth2/exchange`: trades an Entra token for the registry's refresh token.
    pub fn refresh_token(
        &self,
        server: &str,
        entra_token: &SecretString,
    ) -> Result<SecretString, AcrError> {
        let hostname = bare_hostname(server)?;
        let url = format!("https://{server}/oauth2/exchange?api-version={API_VERSION}");
        let form = [
            ("grant_type", "access_token"),
            ("service", hostname),
            ("access_token", entra_token.expose()),
        ];
        let body = self.post(&url, &form).map_err(AcrError::Exchange)?;
        token_field(&body, "refresh_token").ok_or(AcrError::EmptyRefreshToken)
    }

    /// `POST /oauth2/token`: trades the refresh token for an access token limited to `scope`
    /// (space-separated scopes sent as one field, as upstream).
    pub fn access_token(
        &self,
        server: &str,
        refresh_token: &SecretString,
        scope: &str,
    ) -> Result<SecretString, AcrError> {
        bare_hostname(server)?;
        let url = format!("https://{server}/oauth2/token?api-version={API_VERSION}");
        let form = [
            ("grant_type", "refresh_token"),
            ("service", server),
            ("scope", scope),
            ("refresh_token", refresh_token.expose()),
        ];
        let body = self.post(&url, &form).map_err(AcrError::Token)?;
        token_field(&body, "access_token").ok_or(AcrError::EmptyAccessToken)
    }

    fn post(&self, url: &str, form: &[(&str, &str)]) -> Result<String, HttpError> {
        let (outcome, _attempts) = self
            .retry
            .run(azure_retryable, || self.http.azure_post_form(url, form));
        let response = outcome?;
        if response.status != 200 {
            return Err(HttpError::Status {
                status: response.status,
                detail: ErrorDetail::from_body(&response.body),
            });
        }
        Ok(response.body)
    }
}

/// The expiry of the token that becomes the pull password, read from its `exp`.
pub fn password_expiry(password: &SecretString) -> Result<OffsetDateTime, AcrError> {
    Ok(jwt::expiry(password.expose())?)
}

/// A non-empty string field of a JSON body; a non-JSON body counts as empty, as upstream.
fn token_field(body: &str, name: &str) -> Option<SecretString> {
    let value: Value = serde_json::from_str(body).ok()?;
    match value.get(name) {
        Some(Value::String(t)) if !t.is_empty() => Some(SecretString::new(t.clone())),
        _ => None,
    }
}

/// The hostname of a bare `host[:port]` server, or an error for anything else. The caller has
/// already checked the allow-list; this guards against a path or userinfo sneaking into the URL.
fn bare_hostname(server: &str) -> Result<&str, AcrError> {
    let (host, port) = match server.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (server, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['.', '-'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(host)
    } else {
        Err(AcrError::InvalidServer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::http::fake::{answer, FakeHttp};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn client(http: &Arc<FakeHttp>) -> AcrClient {
        AcrClient::new(http.clone()).with_retry(RetryPolicy::none())
    }

    fn pairs(form: &[(String, String)]) -> Vec<(&str, &str)> {
        form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn exchange_sends_the_hostname_as_service() {
        let http = Arc::new(FakeHttp::default());
        http.push(answer(200, r#"{"refresh_token":"rt"}"#));
        let rt = client(&http)
            .refresh_token("myregistry.azurecr.io:443", &SecretString::new("entra"))
            .unwrap();
        assert_eq!(rt.expose(), "rt");
        assert_eq!(
            http.sent.lock().unwrap()[0].0,
            "https://myregistry.azurecr.io:443/oauth2/exchange?api-version=2021-07-01"
        );
        assert_eq!(
            pairs(&http.form(0)),
            vec![
                ("grant_type", "access_token"),
                ("service", "myregistry.azurecr.io"),
                ("access_token", "entra"),
            ]
        );
    }

    #[test]
    fn token_sends_the_server_as_written_and_the_whole_scope() {
        let http = Arc::new(FakeHttp::default());
        http.push(answer(200, r#"{"access_token":"at"}"#));
        client(&http)
            .access_token(
                "myregistry.azurecr.io:443",
                &SecretString::new("rt"),
                "repository:a:pull repository:b:pull",
            )
            .unwrap();
        assert_eq!(
            http.sent.lock().unwrap()[0].0,
            "https://myregistry.azurecr.io:443/oauth2/token?api-version=2021-07-01"
        );
        assert_eq!(
            pairs(&http.form(0)),
            vec![
                ("grant_type", "refresh_token"),
                ("service", "myregistry.azurecr.io:443"),
                ("scope", "repository:a:pull repository:b:pull"),
                ("refresh_token", "rt"),
            ]
        );
    }

    #[test]
    fn empty_answers_have_upstreams_messages() {
        let http = Arc::new(FakeHttp::default());
        http.push(answer(200, r#"{"refresh_token":""}"#));
        http.push(answer(200, "{}"));
        let c = client(&http);
        let e1 = c
            .refresh_token("r.azurecr.io", &SecretString::new("x"))
            .unwrap_err();
        assert_eq!(
            e1.to_string(),
            "got an empty response when exchanging AAD access token for ACR refresh token"
        );
        let e2 = c
            .access_token("r.azurecr.io", &SecretString::new("x"), "s")
            .unwrap_err();
        assert_eq!(
            e2.to_string(),
            "got an empty response when exchanging ACR refresh token for ACR access token"
        );
    }

    #[test]
    fn http_failures_are_wrapped_and_redacted() {
        let http = Arc::new(FakeHttp::default());
        http.push(answer(
            401,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad token eyJabc.def.ghi"}]}"#,
        ));
        let e = client(&http)
            .refresh_token("r.azurecr.io", &SecretString::new("eyJabc.def.ghi"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to exchange AAD access token for ACR refresh token: status 401: UNAUTHORIZED: bad token [redacted]"
        );
    }

    #[test]
    fn servers_that_are_not_bare_hosts_send_nothing() {
        let http = Arc::new(FakeHttp::default());
        for bad in [
            "",
            "r.azurecr.io/path",
            "user@r.azurecr.io",
            "r.azurecr.io?x",
            "r.azurecr.io#f",
            "https://r.azurecr.io",
            "r.azurecr.io:",
            "r.azurecr.io:99999a",
            " r.azurecr.io",
        ] {
            let e = client(&http)
                .refresh_token(bad, &SecretString::new("x"))
                .unwrap_err();
            assert!(matches!(e, AcrError::InvalidServer), "{bad:?}");
        }
        assert!(http.sent.lock().unwrap().is_empty());
    }

    #[test]
    fn password_expiry_errors_use_upstreams_texts() {
        let e = password_expiry(&SecretString::new("opaque")).unwrap_err();
        assert_eq!(e.to_string(), "failed to parse ACR access token");
        let no_exp = format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(r#"{"iat":1}"#));
        let e = password_expiry(&SecretString::new(no_exp)).unwrap_err();
        assert_eq!(e.to_string(), "failed to parse ACR acess token expiration");
        let ok = format!(
            "e30.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"exp":1800000000}"#)
        );
        assert_eq!(
            password_expiry(&SecretString::new(ok))
                .unwrap()
                .unix_timestamp(),
            1_800_000_000
        );
    }
}

//! `HttpError`: what can go wrong on one Azure HTTP call, with error bodies reduced to safe fields.

use std::fmt;
use std::sync::Arc;

/// Longest `error_description` kept from an Azure error body.
const MAX_DESCRIPTION: usize = 300;

/// Failure of one HTTP exchange with IMDS, Entra or a registry.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HttpError {
    /// The request never got a response: DNS, connect, TLS, timeout or I/O.
    Transport(Arc<ureq::Error>),
    /// The server answered with a status we do not accept; the body is reduced to [`ErrorDetail`].
    Status {
        /// The HTTP status code.
        status: u16,
        /// `error` / `error_description` from the body, when it had them.
        detail: Option<ErrorDetail>,
    },
    /// The server answered with a redirect, which is never followed because requests carry tokens.
    Redirect {
        /// The HTTP status code (3xx).
        status: u16,
    },
    /// The URL was refused before sending (not HTTPS where required, or not parseable).
    InvalidUrl,
}

impl HttpError {
    /// Whether the failure was a timeout rather than a refusal.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HttpError::Transport(e) if matches!(**e, ureq::Error::Timeout(_)))
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } | HttpError::Redirect { status } => Some(*status),
            _ => None,
        }
    }
}

impl From<ureq::Error> for HttpError {
    fn from(e: ureq::Error) -> Self {
        HttpError::Transport(Arc::new(e))
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Transport(e) => write!(f, "request failed: {e}"),
            HttpError::Status {
                status,
                detail: Some(d),
            } => write!(f, "status {status}: {d}"),
            HttpError::Status {
                status,
                detail: None,
            } => write!(f, "status {status}"),
            HttpError::Redirect { status } => {
                write!(f, "refusing to follow a redirect (status {status})")
            }
            HttpError::InvalidUrl => f.write_str("invalid request url"),
        }
    }
}

impl std::error::Error for HttpError {}

/// The only parts of an Azure error body we keep: safe to log and to show in a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    /// The OAuth `error` code, e.g. `invalid_client`.
    pub error: Option<String>,
    /// `error_description`, truncated and with anything token-like removed.
    pub description: Option<String>,
}

impl ErrorDetail {
    /// Extracts `error` and `error_description` from a JSON error body; `None` when it has neither.
    ///
    /// ACR answers `{"errors":[{"code":..,"message":..}]}`, so the first entry of that list is read too.
    pub fn from_body(body: &str) -> Option<ErrorDetail> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let text = |v: Option<&serde_json::Value>| -> Option<String> {
            match v? {
                serde_json::Value::String(s) if !s.is_empty() => Some(scrub(s)),
                _ => None,
            }
        };
        let mut error = text(value.get("error"));
        let mut description = text(value.get("error_description"));
        if error.is_none() && description.is_none() {
            if let Some(first) = value.get("errors").and_then(|e| e.get(0)) {
                error = text(first.get("code"));
                description = text(first.get("message"));
            }
        }
        if error.is_none() && description.is_none() {
            return None;
        }
        Some(ErrorDetail { error, description })
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.error, &self.description) {
            (Some(e), Some(d)) => write!(f, "{e}: {d}"),
            (Some(e), None) => f.write_str(e),
            (None, Some(d)) => f.write_str(d),
            (None, None) => Ok(()),
        }
    }
}

/// Truncates to [`MAX_DESCRIPTION`] characters and replaces every JWT-looking word with
/// `[redacted]`, because some services echo the rejected token back in their description.
pub fn scrub(text: &str) -> String {
    let truncated: String = text.chars().take(MAX_DESCRIPTION).collect();
    let mut out = String::with_capacity(truncated.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_like_token(word) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in truncated.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '+' | '/') {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    if text.chars().count() > MAX_DESCRIPTION {
        out.push('…');
    }
    out
}

/// A JWT starts with `eyJ` (base64 of `{"`); long unbroken base64 runs are treated as secrets too.
fn looks_like_token(word: &str) -> bool {
    word.contains("eyJ") || (word.len() >= 40 && !word.contains('/') && !word.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_keeps_only_error_and_description() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS700016: app not found","trace_id":"abc","access_token":"eyJsecret"}"#;
        let d = ErrorDetail::from_body(body).unwrap();
        assert_eq!(d.error.as_deref(), Some("invalid_client"));
        assert_eq!(d.to_string(), "invalid_client: AADSTS700016: app not found");
    }

    #[test]
    fn a_token_echoed_in_the_description_is_redacted() {
        let body = r#"{"error":"invalid_grant","error_description":"assertion eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln was rejected"}"#;
        let err = HttpError::Status {
            status: 400,
            detail: ErrorDetail::from_body(body),
        };
        let shown = err.to_string();
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(shown.contains("[redacted] was rejected"), "{shown}");
    }

    #[test]
    fn a_non_json_body_gives_no_detail() {
        assert_eq!(ErrorDetail::from_body("<html>eyJtoken</html>"), None);
        let err = HttpError::Status {
            status: 502,
            detail: None,
        };
        assert_eq!(err.to_string(), "status 502");
    }

    #[test]
    fn acr_error_lists_are_read() {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        let d = ErrorDetail::from_body(body).unwrap();
        assert_eq!(d.to_string(), "UNAUTHORIZED: authentication required");
    }

    #[test]
    fn long_descriptions_are_truncated() {
        let long = "word ".repeat(200);
        let body = format!(r#"{{"error":"x","error_description":"{long}"}}"#);
        let d = ErrorDetail::from_body(&body).unwrap();
        assert!(d.description.unwrap().chars().count() <= MAX_DESCRIPTION + 1);
    }
}

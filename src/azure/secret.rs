//! Secret values: `SecretString` never shows itself in logs, `Debug` or `Display`; `AccessToken` wraps one.

use std::fmt;

/// A token, assertion or password. Formatting prints `[redacted]`; read it with [`expose`].
///
/// [`expose`]: SecretString::expose
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself; call only where it leaves the process on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An Entra (or IMDS) access token with the times the cache needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The bearer token.
    pub token: SecretString,
    /// When it stops working.
    pub expires: time::OffsetDateTime,
    /// When the issuer suggests refreshing (`refresh_in`), if it said.
    pub refresh_at: Option<time::OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = SecretString::new("eyJhbGciOi.secret.value");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "eyJhbGciOi.secret.value");
    }
}

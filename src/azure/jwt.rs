//! Reads claims from an unverified JWT: `exp` for scheduling, a few more for diagnostics.
//!
//! The registry is the authority on its tokens; we only need their lifetime, as upstream does.

use std::fmt;

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use time::OffsetDateTime;

/// Longest token we try to read; real ones are a few KiB.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// base64url that accepts padded and unpadded input.
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token's claims could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// Not three dot-separated parts with a base64url JSON object in the middle.
    NotJwt,
    /// The payload has no `exp`, or it is not a representable number.
    NoExpiry,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::NotJwt => f.write_str("not a jwt"),
            JwtError::NoExpiry => f.write_str("no numeric exp claim"),
        }
    }
}

impl std::error::Error for JwtError {}

/// The claims we read. Holds no token material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `exp`: when the token stops working.
    pub expires: OffsetDateTime,
    /// `iat`, when present and numeric.
    pub issued: Option<OffsetDateTime>,
    /// `aud` (first entry when a list).
    pub audience: Option<String>,
    /// Number of entries in the ACR `access` claim, when present.
    pub access_entries: Option<usize>,
}

/// The whole unverified payload of `token`, for diagnostics (`acrpull check`) that show a few
/// named, non-secret claims. Never panics.
pub fn read_payload(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::NotJwt);
    }
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::NotJwt);
    };
    let bytes = B64.decode(payload).map_err(|_| JwtError::NotJwt)?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(object)) => Ok(object),
        _ => Err(JwtError::NotJwt),
    }
}

/// Reads the claims of `token` without verifying its signature. Never panics.
pub fn read_claims(token: &str) -> Result<Claims, JwtError> {
    let object = read_payload(token)?;
    let expires = object
        .get("exp")
        .and_then(numeric_date)
        .ok_or(JwtError::NoExpiry)?;
    let audience = match object.get("aud") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(list)) => {
            list.first().and_then(|v| v.as_str()).map(str::to_owned)
        }
        _ => None,
    };
    Ok(Claims {
        expires,
        issued: object.get("iat").and_then(numeric_date),
        audience,
        access_entries: object
            .get("access")
            .and_then(|a| a.as_array())
            .map(Vec::len),
    })
}

/// Reads only `exp`.
pub fn expiry(token: &str) -> Result<OffsetDateTime, JwtError> {
    read_claims(token).map(|c| c.expires)
}

/// A JSON NumericDate (seconds, possibly fractional) as a time, if in range.
fn numeric_date(v: &serde_json::Value) -> Option<OffsetDateTime> {
    let seconds = match v.as_i64() {
        Some(s) => s,
        None => {
            let f = v.as_f64()?;
            if !f.is_finite() || f.abs() > 1e15 {
                return None;
            }
            f.floor() as i64
        }
    };
    OffsetDateTime::from_unix_timestamp(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{URL_SAFE as PADDED, URL_SAFE_NO_PAD};

    fn token(payload: &str, padded: bool) -> String {
        let enc = |s: &str| {
            if padded {
                PADDED.encode(s)
            } else {
                URL_SAFE_NO_PAD.encode(s)
            }
        };
        format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(payload))
    }

    #[test]
    fn exp_is_read_from_unpadded_and_padded_tokens() {
        let payload = r#"{"exp":1700000000,"iat":1699995500,"aud":"reg.azurecr.io","access":[{"type":"repository"}]}"#;
        for padded in [false, true] {
            let claims = read_claims(&token(payload, padded)).unwrap();
            assert_eq!(claims.expires.unix_timestamp(), 1_700_000_000);
            assert_eq!(claims.issued.unwrap().unix_timestamp(), 1_699_995_500);
            assert_eq!(claims.audience.as_deref(), Some("reg.azurecr.io"));
            assert_eq!(claims.access_entries, Some(1));
        }
    }

    #[test]
    fn fractional_exp_is_accepted() {
        let t = token(r#"{"exp":1700000000.75}"#, false);
        assert_eq!(expiry(&t).unwrap().unix_timestamp(), 1_700_000_000);
    }

    #[test]
    fn a_missing_or_textual_exp_is_no_expiry() {
        assert_eq!(
            expiry(&token(r#"{"iat":1}"#, false)),
            Err(JwtError::NoExpiry)
        );
        assert_eq!(
            expiry(&token(r#"{"exp":"1700000000"}"#, false)),
            Err(JwtError::NoExpiry)
        );
        assert_eq!(
            expiry(&token(r#"{"exp":1e300}"#, false)),
            Err(JwtError::NoExpiry)
        );
    }

    #[test]
    fn garbage_is_not_a_jwt() {
        for bad in [
            "",
            "opaque-refresh-token",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            "a.bm90IGpzb24.c",
            "a.WzEsMl0.c",
            "....",
            "\u{1F600}.\u{1F600}.\u{1F600}",
        ] {
            assert_eq!(expiry(bad), Err(JwtError::NotJwt), "{bad:?}");
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = crate::clock::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
        let mut next = || rng.next_u64();
        let alphabet = b"eyJ.-_=+/ABCxyz0189{}\":,[]";
        for _ in 0..5000 {
            let len = (next() % 64) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
                .collect();
            let _ = read_claims(&text);
            let payload = URL_SAFE_NO_PAD.encode(&text);
            let _ = read_claims(&format!("e30.{payload}.x"));
        }
    }
}

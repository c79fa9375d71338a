//! JSON Web Tokens as the kit issues them: RS256 signed with a fixed test key, checked by the fakes.
//!
//! The key pair in `testdata/` exists only for tests. One key signs every token the kit mints
//! (ServiceAccount tokens, Entra tokens, registry tokens); each issuer sets its own `iss`, so a
//! fake can tell whose token it was handed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair};
use serde_json::{json, Value};

/// The kit's signing key (PKCS#8 DER, RSA 2048). Test-only material.
const KEY_PKCS8: &[u8] = include_bytes!("../testdata/sa-signing-key.pk8");

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three dot-separated base64url parts, or a part is not JSON.
    Malformed,
    /// The header's `alg` is not RS256.
    UnsupportedAlgorithm,
    /// The signature does not verify with the kit key.
    BadSignature,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtError::Malformed => "malformed token",
            JwtError::UnsupportedAlgorithm => "unsupported signing algorithm",
            JwtError::BadSignature => "signature does not verify",
        })
    }
}

impl std::error::Error for JwtError {}

/// Signs and verifies RS256 tokens with the kit key.
pub struct Signer {
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl Signer {
    /// The signer holding the kit's test key.
    pub fn kit() -> Signer {
        let key = RsaKeyPair::from_pkcs8(KEY_PKCS8).expect("the kit's test key is valid PKCS#8");
        Signer {
            key,
            rng: SystemRandom::new(),
        }
    }

    /// The key id put in every header (`kid`).
    pub fn key_id(&self) -> &'static str {
        "acrpull-testkit"
    }

    /// Signs `claims` as an RS256 JWT.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&serde_json::Map::new(), claims)
    }

    /// Signs `claims` as an RS256 JWT whose header also carries `extra` (e.g. an `x5c` chain).
    pub fn sign_with_header(
        &self,
        extra: &serde_json::Map<String, Value>,
        claims: &Value,
    ) -> String {
        let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": self.key_id()});
        if let Some(h) = header.as_object_mut() {
            h.extend(extra.clone());
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                signing_input.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing with a valid key does not fail");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Verifies the signature and returns the claims. Expiry and audience are the caller's to check.
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        let (header, claims, sig, signing_input) = split(token)?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(JwtError::UnsupportedAlgorithm);
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            self.key.public().as_ref(),
        );
        public
            .verify(signing_input.as_bytes(), &sig)
            .map_err(|_| JwtError::BadSignature)?;
        Ok(claims)
    }

    /// The public key as a JWK set, as an OIDC issuer publishes it.
    pub fn jwks(&self) -> Value {
        let public = self.key.public();
        let (n, e) = rsa_components(public.as_ref());
        json!({"keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.key_id(),
            "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
        }]})
    }
}

/// Reads the claims without checking the signature.
pub fn claims_unverified(token: &str) -> Result<Value, JwtError> {
    split(token).map(|(_, claims, _, _)| claims)
}

/// The current time as Unix seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn split(token: &str) -> Result<(Value, Value, Vec<u8>, String), JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let decode_json = |p: &str| -> Result<Value, JwtError> {
        let bytes = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
    };
    let header = decode_json(h)?;
    let claims = decode_json(c)?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    Ok((header, claims, sig, format!("{h}.{c}")))
}

/// Splits a DER `RSAPublicKey` (SEQUENCE { n INTEGER, e INTEGER }) into minimal big-endian n and e.
fn rsa_components(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    fn read_len(b: &[u8], i: &mut usize) -> usize {
        let first = b[*i] as usize;
        *i += 1;
        if first < 0x80 {
            return first;
        }
        let n = first & 0x7f;
        let mut len = 0;
        for _ in 0..n {
            len = (len << 8) | b[*i] as usize;
            *i += 1;
        }
        len
    }
    fn read_int(b: &[u8], i: &mut usize) -> Vec<u8> {
        *i += 1; // INTEGER tag
        let len = read_len(b, i);
        let mut v = &b[*i..*i + len];
        *i += len;
        while v.len() > 1 && v[0] == 0 {
            v = &v[1..];
        }
        v.to_vec()
    }
    let mut i = 1; // SEQUENCE tag
    read_len(der, &mut i);
    let n = read_int(der, &mut i);
    let e = read_int(der, &mut i);
    (n, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_round_trips() {
        let s = Signer::kit();
        let t = s.sign(&json!({"sub": "x", "exp": 5}));
        assert_eq!(s.verify(&t).unwrap()["sub"], "x");
        assert_eq!(claims_unverified(&t).unwrap()["exp"], 5);
    }

    #[test]
    fn tampered_token_is_refused() {
        let s = Signer::kit();
        let t = s.sign(&json!({"sub": "x"}));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "y"}).to_string());
        parts[1] = &forged;
        assert_eq!(s.verify(&parts.join(".")), Err(JwtError::BadSignature));
        assert_eq!(s.verify("a.b"), Err(JwtError::Malformed));
    }

    #[test]
    fn jwks_exponent_is_65537() {
        let jwks = Signer::kit().jwks();
        assert_eq!(jwks["keys"][0]["e"], "AQAB");
    }
}

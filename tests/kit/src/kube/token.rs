//! TokenRequest (`serviceaccounts/{name}/token`): ServiceAccount tokens signed with the kit key.

use serde_json::{json, Value};

use super::resources::SERVICE_ACCOUNTS;
use super::status::ApiError;
use super::store::State;
use crate::jwt::{now_unix, Signer};

/// The issuer (`iss`) of every ServiceAccount token the emulator mints.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audience a TokenRequest without `spec.audiences` gets (the API server's own).
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// `expirationSeconds` when the request sets none.
const DEFAULT_EXPIRATION: i64 = 3600;
/// The shortest lifetime kube-apiserver accepts.
const MIN_EXPIRATION: i64 = 600;

/// One TokenRequest, as logged for assertions (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount's name.
    pub service_account: String,
    /// The audiences granted.
    pub audiences: Vec<String>,
    /// The lifetime granted.
    pub expiration_seconds: i64,
}

fn rfc3339(unix: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&f).ok())
        .unwrap_or_default()
}

/// Answers a TokenRequest for `ns/name`: the TokenRequest object with `status.token`.
pub fn request(
    st: &State,
    signer: &Signer,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<(Value, TokenRecord), ApiError> {
    let sa = st
        .get(&SERVICE_ACCOUNTS, ns, name)
        .ok_or_else(|| ApiError::not_found(&SERVICE_ACCOUNTS, name))?;
    let spec = &body["spec"];
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences.push(DEFAULT_AUDIENCE.to_string());
    }
    let exp_secs = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_EXPIRATION);
    let invalid = |why: &str| {
        ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {exp_secs}: {why}"
        ),
        details: Some(json!({"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest"})),
        retry_after: None,
    }
    };
    if exp_secs < MIN_EXPIRATION {
        return Err(invalid("may not specify a duration less than 10 minutes"));
    }
    if exp_secs > 1 << 32 {
        return Err(invalid(
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let now = now_unix();
    let exp = now + exp_secs;
    let sub = format!("system:serviceaccount:{ns}:{name}");
    let claims = json!({
        "iss": ISSUER,
        "sub": sub,
        "aud": audiences,
        "iat": now,
        "nbf": now,
        "exp": exp,
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]},
        },
    });
    let token = signer.sign(&claims);
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": exp_secs, "boundObjectRef": null},
        "status": {"token": token, "expirationTimestamp": rfc3339(exp)},
    });
    let record = TokenRecord {
        namespace: ns.to_string(),
        service_account: name.to_string(),
        audiences,
        expiration_seconds: exp_secs,
    };
    Ok((out, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::NAMESPACES;

    #[test]
    fn token_names_the_service_account_and_audiences() {
        let mut st = State::new();
        st.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}}))
            .unwrap();
        st.create(&SERVICE_ACCOUNTS, "ns", json!({"metadata": {"name": "sa"}}))
            .unwrap();
        let signer = Signer::kit();
        let body = json!({"spec": {"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 600}});
        let (tr, rec) = request(&st, &signer, "ns", "sa", &body).unwrap();
        let claims = signer
            .verify(tr["status"]["token"].as_str().unwrap())
            .unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:ns:sa");
        assert_eq!(claims["aud"], json!(["api://AzureADTokenExchange"]));
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            600
        );
        assert_eq!(rec.audiences, ["api://AzureADTokenExchange"]);
    }

    #[test]
    fn unknown_service_account_is_not_found_and_short_lifetimes_are_invalid() {
        let mut st = State::new();
        st.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}}))
            .unwrap();
        let signer = Signer::kit();
        assert_eq!(
            request(&st, &signer, "ns", "x", &json!({}))
                .unwrap_err()
                .code,
            404
        );
        st.create(&SERVICE_ACCOUNTS, "ns", json!({"metadata": {"name": "x"}}))
            .unwrap();
        let short = json!({"spec": {"expirationSeconds": 60}});
        assert_eq!(
            request(&st, &signer, "ns", "x", &short).unwrap_err().code,
            422
        );
    }
}

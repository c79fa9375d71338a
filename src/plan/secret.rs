//! The pull Secret's exact bytes (spec §2.5): dockerconfigjson, label, annotations, owner.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::binding::names::BINDING_LABEL;
use crate::binding::{Binding, KIND};
use crate::clock::rfc3339;

use super::SecretObs;

/// Annotation holding the token's expiry.
pub const EXPIRY_ANNOTATION: &str = "acr.microsoft.com/token.expiry";
/// Annotation holding when the token was obtained.
pub const REFRESH_ANNOTATION: &str = "acr.microsoft.com/token.refresh";
/// Annotation holding the inputs hash the token was minted for.
pub const INPUTS_ANNOTATION: &str = "acr.microsoft.com/token.inputs";
/// The only Secret type we write.
pub const DOCKERCONFIG_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// The data key of the docker config.
pub const DOCKERCONFIG_KEY: &str = ".dockerconfigjson";
/// The registry user for ACR tokens: the null GUID.
const USERNAME: &str = "00000000-0000-0000-0000-000000000000";
/// The e-mail upstream writes.
const EMAIL: &str = "msi-acrpull@azurecr.io";

/// `.dockerconfigjson` as compact JSON with upstream's key order (a BTreeMap-backed
/// `serde_json::Map` would sort them, so it is written out by hand).
pub fn docker_config(server: &str, password: &str) -> String {
    let auth = STANDARD.encode(format!("{USERNAME}:{password}"));
    let q = |s: &str| Value::String(s.to_string()).to_string();
    format!(
        "{{\"auths\":{{{}:{{\"username\":{},\"password\":{},\"email\":{},\"auth\":{}}}}}}}",
        q(server),
        q(USERNAME),
        q(password),
        q(EMAIL),
        q(&auth)
    )
}

/// What goes into a freshly minted Secret.
pub struct SecretContent<'a> {
    /// The Secret's name.
    pub name: &'a str,
    /// The server key in `auths`, as written in the binding.
    pub server: &'a str,
    /// The registry token.
    pub password: &'a str,
    /// Token expiry.
    pub expires: OffsetDateTime,
    /// When the token was obtained.
    pub issued: OffsetDateTime,
    /// The binding's inputs hash.
    pub inputs_hash: &'a str,
}

/// The full Secret object. `previous` is the object being replaced: its labels and annotations
/// survive except ours, and its resourceVersion becomes the update's precondition.
pub fn secret_body(
    binding: &Binding,
    content: &SecretContent<'_>,
    previous: Option<&SecretObs>,
) -> Value {
    let mut labels: Map<String, Value> = Map::new();
    let mut annotations: Map<String, Value> = Map::new();
    if let Some(old) = previous {
        for (k, v) in old.labels.iter() {
            labels.insert(k.to_string(), Value::String(v.to_string()));
        }
        for (k, v) in old.annotations.iter() {
            annotations.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    labels.insert(BINDING_LABEL.into(), json!(binding.label_value()));
    annotations.insert(
        EXPIRY_ANNOTATION.into(),
        json!(rfc3339::format_seconds(content.expires)),
    );
    annotations.insert(
        REFRESH_ANNOTATION.into(),
        json!(rfc3339::format_seconds(content.issued)),
    );
    annotations.insert(INPUTS_ANNOTATION.into(), json!(content.inputs_hash));
    let mut metadata = json!({
        "name": content.name,
        "namespace": binding.meta.namespace,
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [{
            "apiVersion": binding.version.api_version(),
            "kind": KIND,
            "name": binding.meta.name,
            "uid": binding.meta.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }],
    });
    if let Some(old) = previous {
        metadata["resourceVersion"] = json!(old.resource_version);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": DOCKERCONFIG_TYPE,
        "data": { DOCKERCONFIG_KEY: STANDARD.encode(docker_config(content.server, content.password)) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_matches_upstream_bytes() {
        assert_eq!(
            docker_config("registry.azurecr.io", "TOKEN"),
            r#"{"auths":{"registry.azurecr.io":{"username":"00000000-0000-0000-0000-000000000000","password":"TOKEN","email":"msi-acrpull@azurecr.io","auth":"MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwOlRPS0VO"}}}"#
        );
    }

    #[test]
    fn docker_config_escapes_json_special_characters() {
        let s = docker_config("a\"b", "p\\q");
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["auths"]["a\"b"]["password"], "p\\q");
    }
}

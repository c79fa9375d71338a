//! The AcrPullBinding CRDs' structural schemas as kube-apiserver applies them: unknown fields
//! pruned, defaults filled, required fields, enums and the CEL rules (hand-translated).

use serde_json::{json, Value};

use super::resources::{ResourceType, BINDINGS_V1BETA1, BINDINGS_V1BETA2};
use super::status::ApiError;

/// One node of a structural schema.
enum Schema {
    /// A string.
    Str,
    /// An object with these known properties; anything else is pruned.
    Obj(&'static [(&'static str, Schema)]),
    /// An integer.
    Int,
    /// A list of objects kept as they are (`status.conditions`: metav1.Condition entries).
    List,
}

use Schema::{Int, List, Obj, Str};

static V1BETA2: Schema = Obj(&[
    (
        "spec",
        Obj(&[
            (
                "acr",
                Obj(&[
                    ("server", Str),
                    ("scope", Str),
                    ("environment", Str),
                    (
                        "cloudConfig",
                        Obj(&[
                            ("entraAuthorityHost", Str),
                            ("resourceManagerAudience", Str),
                        ]),
                    ),
                ]),
            ),
            (
                "auth",
                Obj(&[
                    (
                        "managedIdentity",
                        Obj(&[
                            ("clientID", Str),
                            ("resourceID", Str),
                            (
                                "federatedApplication",
                                Obj(&[("tenantID", Str), ("clientID", Str)]),
                            ),
                        ]),
                    ),
                    (
                        "workloadIdentity",
                        Obj(&[
                            ("serviceAccountRef", Str),
                            ("clientID", Str),
                            ("tenantID", Str),
                        ]),
                    ),
                ]),
            ),
            ("serviceAccountName", Str),
        ]),
    ),
    (
        "status",
        Obj(&[
            ("lastTokenRefreshTime", Str),
            ("tokenExpirationTime", Str),
            ("error", Str),
            ("conditions", List),
            ("observedGeneration", Int),
        ]),
    ),
]);

static V1BETA1: Schema = Obj(&[
    (
        "spec",
        Obj(&[
            ("acrServer", Str),
            ("scope", Str),
            ("managedIdentityClientID", Str),
            ("managedIdentityResourceID", Str),
            ("serviceAccountName", Str),
        ]),
    ),
    (
        "status",
        Obj(&[
            ("lastTokenRefreshTime", Str),
            ("tokenExpirationTime", Str),
            ("error", Str),
            ("conditions", List),
            ("observedGeneration", Int),
        ]),
    ),
]);

const ENVIRONMENTS: [&str; 4] = [
    "PublicCloud",
    "USGovernmentCloud",
    "ChinaCloud",
    "AirgappedCloud",
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Prunes unknown fields below `path` and reports type mismatches.
fn prune(v: &mut Value, s: &Schema, path: &str, errs: &mut Vec<String>) {
    match (s, &mut *v) {
        (Str, Value::String(_)) => {}
        (Int, Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        (List, Value::Array(_)) => {}
        (Obj(fields), Value::Object(m)) => {
            m.retain(|k, _| fields.iter().any(|(f, _)| f == k));
            for (k, child) in m.iter_mut() {
                if let Some((_, cs)) = fields.iter().find(|(f, _)| f == k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    prune(child, cs, &p, errs);
                }
            }
        }
        (s, other) => {
            let want = match s {
                Str => "string",
                Obj(_) => "object",
                Int => "integer",
                List => "array",
            };
            let got = type_name(other);
            errs.push(format!("{path}: Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""));
        }
    }
}

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

fn required(v: &Value, path: &str, keys: &[&str], errs: &mut Vec<String>) {
    for k in keys {
        if !has(v, k) {
            errs.push(format!("{path}.{k}: Required value"));
        }
    }
}

fn min_len(v: &Value, path: &str, key: &str, errs: &mut Vec<String>) {
    if v[key].as_str() == Some("") {
        errs.push(format!(
            "{path}.{key}: Invalid value: \"\": {path}.{key} in body should be at least 1 chars long"
        ));
    }
}

fn cel(path: &str, kind: &str, message: &str, errs: &mut Vec<String>) {
    errs.push(format!("{path}: Invalid value: \"{kind}\": {message}"));
}

/// `isURL('https://' + self) && url('https://' + self).getHostname() == self`: a bare host name.
fn is_bare_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn v1beta2(obj: &mut Value, errs: &mut Vec<String>) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        errs.push("spec: Required value".into());
        return;
    }
    required(spec, "spec", &["acr", "auth", "serviceAccountName"], errs);
    if spec["acr"].is_object() {
        let acr = &mut spec["acr"];
        if !has(acr, "environment") {
            acr["environment"] = json!("PublicCloud");
        }
        required(acr, "spec.acr", &["server", "scope"], errs);
        min_len(acr, "spec.acr", "scope", errs);
        let env = acr["environment"].as_str().unwrap_or("");
        if !ENVIRONMENTS.contains(&env) {
            let supported: Vec<String> = ENVIRONMENTS.iter().map(|e| format!("\"{e}\"")).collect();
            errs.push(format!(
                "spec.acr.environment: Unsupported value: \"{env}\": supported values: {}",
                supported.join(", ")
            ));
        }
        if let Some(server) = acr["server"].as_str() {
            if !is_bare_host(server) {
                cel(
                    "spec.acr.server",
                    "string",
                    "server must be a fully-qualified domain name",
                    errs,
                );
            }
        }
        // Upstream misspells the environment here (`ArigappedCloud`); this is the fixed rule.
        if (env == "AirgappedCloud") != has(acr, "cloudConfig") {
            cel(
                "spec.acr",
                "object",
                "a custom cloud configuration must be present for air-gapped cloud environments",
                errs,
            );
        }
        if acr["cloudConfig"].is_object() {
            let cc = &acr["cloudConfig"];
            required(
                cc,
                "spec.acr.cloudConfig",
                &["entraAuthorityHost", "resourceManagerAudience"],
                errs,
            );
            min_len(cc, "spec.acr.cloudConfig", "entraAuthorityHost", errs);
            min_len(cc, "spec.acr.cloudConfig", "resourceManagerAudience", errs);
        }
    }
    let auth = &spec["auth"];
    if auth.is_object() {
        if has(auth, "managedIdentity") == has(auth, "workloadIdentity") {
            cel(
                "spec.auth",
                "object",
                "only one authentication type can be set",
                errs,
            );
        }
        let mi = &auth["managedIdentity"];
        if mi.is_object() && has(mi, "clientID") == has(mi, "resourceID") {
            cel(
                "spec.auth.managedIdentity",
                "object",
                "only client or resource ID can be set",
                errs,
            );
        }
        let fed = &mi["federatedApplication"];
        if fed.is_object() {
            let path = "spec.auth.managedIdentity.federatedApplication";
            required(fed, path, &["tenantID", "clientID"], errs);
            min_len(fed, path, "tenantID", errs);
            min_len(fed, path, "clientID", errs);
        }
        let wi = &auth["workloadIdentity"];
        if wi.is_object() {
            required(
                wi,
                "spec.auth.workloadIdentity",
                &["serviceAccountRef"],
                errs,
            );
            if has(wi, "clientID") != has(wi, "tenantID") {
                cel(
                    "spec.auth.workloadIdentity",
                    "object",
                    "custom client and tenant identifiers must be provided together, if at all",
                    errs,
                );
            }
        }
    }
}

fn v1beta1(obj: &Value, errs: &mut Vec<String>) {
    if !obj["spec"].is_object() {
        errs.push("spec: Required value".into());
        return;
    }
    required(&obj["spec"], "spec", &["acrServer"], errs);
}

/// Prunes, defaults and validates a binding of either version in place.
pub fn validate(rt: &ResourceType, name: &str, obj: &mut Value) -> Result<(), ApiError> {
    let (schema, v2) = if std::ptr::eq(rt, &BINDINGS_V1BETA2) {
        (&V1BETA2, true)
    } else if std::ptr::eq(rt, &BINDINGS_V1BETA1) {
        (&V1BETA1, false)
    } else {
        return Ok(());
    };
    let mut errs = Vec::new();
    if let (Obj(fields), Some(m)) = (schema, obj.as_object_mut()) {
        for (k, v) in m.iter_mut() {
            if let Some((_, s)) = fields.iter().find(|(f, _)| f == k) {
                prune(v, s, k, &mut errs);
            }
        }
    }
    if errs.is_empty() {
        if v2 {
            v1beta2(obj, &mut errs);
        } else {
            v1beta1(obj, &mut errs);
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    let detail = if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    };
    Err(ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("{} \"{name}\" is invalid: {detail}", rt.qualified_kind()),
        details: Some(json!({"name": name, "group": rt.group, "kind": rt.kind,
            "causes": errs.iter().map(|e| json!({"reason": "FieldValueInvalid", "message": e})).collect::<Vec<_>>()})),
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Value {
        json!({"metadata": {"name": "b"}, "spec": {
            "acr": {"server": "r.azurecr.io", "scope": "repository:a:pull"},
            "auth": {"managedIdentity": {"clientID": "c"}},
            "serviceAccountName": "default"}})
    }

    #[test]
    fn a_valid_binding_is_defaulted_and_pruned() {
        let mut b = good();
        b["spec"]["unknown"] = json!(1);
        b["status"] = json!({"error": "", "extra": true});
        validate(&BINDINGS_V1BETA2, "b", &mut b).unwrap();
        assert_eq!(b["spec"]["acr"]["environment"], "PublicCloud");
        assert!(b["spec"].get("unknown").is_none());
        assert!(b["status"].get("extra").is_none());
    }

    #[test]
    fn missing_required_fields_are_all_reported() {
        let mut b = json!({"metadata": {"name": "b"}, "spec": {"acr": {"server": "r.azurecr.io"}}});
        let e = validate(&BINDINGS_V1BETA2, "b", &mut b).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .starts_with("AcrPullBinding.acrpull.microsoft.com \"b\" is invalid: ["),
            "{}",
            e.message
        );
        assert!(e.message.contains("spec.auth: Required value"));
        assert!(e.message.contains("spec.acr.scope: Required value"));
    }

    #[test]
    fn cel_rules_hold() {
        let mut both = good();
        both["spec"]["auth"]["workloadIdentity"] = json!({"serviceAccountRef": "sa"});
        assert!(validate(&BINDINGS_V1BETA2, "b", &mut both)
            .unwrap_err()
            .message
            .contains("only one authentication type can be set"));
        let mut url = good();
        url["spec"]["acr"]["server"] = json!("https://r.azurecr.io");
        assert!(validate(&BINDINGS_V1BETA2, "b", &mut url).is_err());
        let mut airgap = good();
        airgap["spec"]["acr"]["environment"] = json!("AirgappedCloud");
        assert!(validate(&BINDINGS_V1BETA2, "b", &mut airgap).is_err());
        airgap["spec"]["acr"]["cloudConfig"] = json!({"entraAuthorityHost": "https://login.example", "resourceManagerAudience": "https://mgmt.example"});
        validate(&BINDINGS_V1BETA2, "b", &mut airgap).unwrap();
    }

    #[test]
    fn federated_application_is_kept_and_needs_both_ids() {
        let mut fed = good();
        fed["spec"]["auth"]["managedIdentity"]["federatedApplication"] =
            json!({"tenantID": "t", "clientID": "app", "junk": 1});
        validate(&BINDINGS_V1BETA2, "b", &mut fed).unwrap();
        assert_eq!(
            fed["spec"]["auth"]["managedIdentity"]["federatedApplication"],
            json!({"tenantID": "t", "clientID": "app"})
        );
        let mut half = good();
        half["spec"]["auth"]["managedIdentity"]["federatedApplication"] = json!({"tenantID": "t"});
        assert!(validate(&BINDINGS_V1BETA2, "b", &mut half)
            .unwrap_err()
            .message
            .contains("spec.auth.managedIdentity.federatedApplication.clientID: Required value"));
    }

    #[test]
    fn v1beta1_needs_only_acr_server() {
        let mut b = json!({"metadata": {"name": "b"}, "spec": {"acrServer": ""}});
        validate(&BINDINGS_V1BETA1, "b", &mut b).unwrap();
        let mut none = json!({"metadata": {"name": "b"}, "spec": {}});
        assert!(validate(&BINDINGS_V1BETA1, "b", &mut none).is_err());
    }
}

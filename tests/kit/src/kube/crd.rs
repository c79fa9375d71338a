//! The AcrPullBinding CRDs' structural schemas as kube-apiserver applies them: the schema read from
//! the shipped CRD manifests (unknown fields pruned, types, required, enums, lengths checked), plus
//! the defaults and CEL rules, which are hand-translated.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{json, Value};

use super::resources::{ResourceType, BINDINGS_V1BETA1, BINDINGS_V1BETA2};
use super::status::ApiError;

/// The shipped CRDs: the one source of truth for which fields exist, so a field missing there is
/// pruned in the tests exactly as a real API server would prune it.
const V1BETA2_CRD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../manifests/01-crd-acrpull.microsoft.com.yaml"
));
const V1BETA1_CRD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../manifests/02-crd-msi-acrpull.microsoft.com.yaml"
));

/// What a schema node holds.
#[derive(Debug)]
enum Kind {
    /// A string.
    Str,
    /// An integer.
    Int,
    /// A number.
    Num,
    /// A boolean.
    Bool,
    /// An object with these known properties; anything else is pruned.
    Obj(BTreeMap<String, Schema>),
    /// A list of items of one schema.
    List(Box<Schema>),
    /// Kept as it is (`x-kubernetes-preserve-unknown-fields`).
    Opaque,
}

/// One node of a structural schema, with the value validations the emulator applies.
#[derive(Debug)]
struct Schema {
    kind: Kind,
    required: Vec<String>,
    allowed: Vec<Value>,
    min_length: Option<u64>,
    max_length: Option<u64>,
}

impl Schema {
    /// Reads an `openAPIV3Schema` node. Panics on a non-structural schema: the manifests are
    /// ours, and tests/e2e/manifests.rs checks they are structural.
    fn from_openapi(v: &Value, path: &str) -> Schema {
        let kind = if v["x-kubernetes-preserve-unknown-fields"] == true {
            Kind::Opaque
        } else {
            match v["type"].as_str() {
                Some("string") => Kind::Str,
                Some("integer") => Kind::Int,
                Some("number") => Kind::Num,
                Some("boolean") => Kind::Bool,
                Some("array") => Kind::List(Box::new(Schema::from_openapi(
                    &v["items"],
                    &format!("{path}[]"),
                ))),
                Some("object") => Kind::Obj(
                    v["properties"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, child)| {
                            (
                                k.clone(),
                                Schema::from_openapi(child, &format!("{path}.{k}")),
                            )
                        })
                        .collect(),
                ),
                other => panic!("CRD schema at {path} has type {other:?}: not structural"),
            }
        };
        let strings = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        };
        Schema {
            kind,
            required: strings("required"),
            allowed: v["enum"].as_array().cloned().unwrap_or_default(),
            min_length: v["minLength"].as_u64(),
            max_length: v["maxLength"].as_u64(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Str => "string",
            Kind::Int => "integer",
            Kind::Num => "number",
            Kind::Bool => "boolean",
            Kind::Obj(_) => "object",
            Kind::List(_) => "array",
            Kind::Opaque => "any",
        }
    }
}

/// The root schema of a CRD manifest's only version.
fn load(manifest: &str, file: &str) -> Schema {
    let crd = Value::deserialize(serde_yaml::Deserializer::from_str(manifest))
        .unwrap_or_else(|e| panic!("{file} does not parse: {e}"));
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    Schema::from_openapi(root, "")
}

fn schema_for(rt: &ResourceType) -> Option<&'static Schema> {
    static V1BETA2: OnceLock<Schema> = OnceLock::new();
    static V1BETA1: OnceLock<Schema> = OnceLock::new();
    if std::ptr::eq(rt, &BINDINGS_V1BETA2) {
        Some(V1BETA2.get_or_init(|| load(V1BETA2_CRD, "01-crd-acrpull.microsoft.com.yaml")))
    } else if std::ptr::eq(rt, &BINDINGS_V1BETA1) {
        Some(V1BETA1.get_or_init(|| load(V1BETA1_CRD, "02-crd-msi-acrpull.microsoft.com.yaml")))
    } else {
        None
    }
}

fn json_type(v: &Value) -> &'static str {
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

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Prunes unknown fields below `path` and reports type mismatches. Null fields are dropped, as
/// the API server drops nulls of fields that are not `nullable`.
fn prune(v: &mut Value, s: &Schema, path: &str, errs: &mut Vec<String>) {
    match (&s.kind, &mut *v) {
        (Kind::Opaque, _)
        | (Kind::Str, Value::String(_))
        | (Kind::Bool, Value::Bool(_))
        | (Kind::Num, Value::Number(_)) => {}
        (Kind::Int, Value::Number(n)) if n.is_i64() || n.is_u64() => {}
        (Kind::List(items), Value::Array(list)) => {
            for (i, item) in list.iter_mut().enumerate() {
                prune(item, items, &format!("{path}[{i}]"), errs);
            }
        }
        (Kind::Obj(fields), Value::Object(m)) => {
            // The root's metadata is ObjectMeta, which the API server validates on its own.
            m.retain(|k, v| {
                !v.is_null() && (fields.contains_key(k) || (path.is_empty() && k == "metadata"))
            });
            for (k, child) in m.iter_mut() {
                if let Some(cs) = fields
                    .get(k)
                    .filter(|_| !(path.is_empty() && k == "metadata"))
                {
                    prune(child, cs, &join(path, k), errs);
                }
            }
        }
        (_, other) => {
            let want = s.type_name();
            let got = json_type(other);
            errs.push(format!("{path}: Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""));
        }
    }
}

/// Checks required fields, enums and string lengths, after pruning and defaulting.
fn check(v: &Value, s: &Schema, path: &str, errs: &mut Vec<String>) {
    if !s.allowed.is_empty() && !s.allowed.contains(v) {
        let shown = |x: &Value| {
            x.as_str()
                .map_or_else(|| x.to_string(), |t| format!("\"{t}\""))
        };
        let supported: Vec<String> = s.allowed.iter().map(shown).collect();
        errs.push(format!(
            "{path}: Unsupported value: {}: supported values: {}",
            shown(v),
            supported.join(", ")
        ));
    }
    if let Some(text) = v.as_str() {
        let len = text.chars().count() as u64;
        if let Some(min) = s.min_length.filter(|m| len < *m) {
            errs.push(format!(
                "{path}: Invalid value: \"{text}\": {path} in body should be at least {min} chars long"
            ));
        }
        if let Some(max) = s.max_length.filter(|m| len > *m) {
            errs.push(format!(
                "{path}: Too long: may not be more than {max} bytes"
            ));
        }
    }
    match (&s.kind, v) {
        (Kind::Obj(fields), Value::Object(m)) => {
            for k in &s.required {
                if !has(v, k) {
                    errs.push(format!("{}: Required value", join(path, k)));
                }
            }
            for (k, child) in m {
                if path.is_empty() && k == "metadata" {
                    continue;
                }
                if let Some(cs) = fields.get(k) {
                    check(child, cs, &join(path, k), errs);
                }
            }
        }
        (Kind::List(items), Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                check(item, items, &format!("{path}[{i}]"), errs);
            }
        }
        _ => {}
    }
}

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
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

/// The v1beta2 defaults (hand-translated from the CRD's `default:`).
fn v1beta2_defaults(obj: &mut Value) {
    // Indexing a missing member mutably would create it, so look before writing.
    if let Some(acr) = obj.get_mut("spec").and_then(|s| s.get_mut("acr")) {
        if acr.is_object() && !has(acr, "environment") {
            acr["environment"] = json!("PublicCloud");
        }
    }
}

/// The v1beta2 CEL rules (hand-translated from the CRD's `x-kubernetes-validations`).
fn v1beta2_cel(obj: &Value, errs: &mut Vec<String>) {
    let acr = &obj["spec"]["acr"];
    if acr.is_object() {
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
        let airgapped = acr["environment"].as_str() == Some("AirgappedCloud");
        if airgapped != has(acr, "cloudConfig") {
            cel(
                "spec.acr",
                "object",
                "a custom cloud configuration must be present for air-gapped cloud environments",
                errs,
            );
        }
    }
    let auth = &obj["spec"]["auth"];
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
        let wi = &auth["workloadIdentity"];
        if wi.is_object() && has(wi, "clientID") != has(wi, "tenantID") {
            cel(
                "spec.auth.workloadIdentity",
                "object",
                "custom client and tenant identifiers must be provided together, if at all",
                errs,
            );
        }
    }
}

/// Prunes, defaults and validates a binding of either version in place.
pub fn validate(rt: &ResourceType, name: &str, obj: &mut Value) -> Result<(), ApiError> {
    let Some(schema) = schema_for(rt) else {
        return Ok(());
    };
    let v2 = std::ptr::eq(rt, &BINDINGS_V1BETA2);
    let mut errs = Vec::new();
    prune(obj, schema, "", &mut errs);
    if errs.is_empty() {
        // Neither CRD requires `spec`, so a binding without one is stored, as a real API
        // server stores it; the controller must report it rather than crash.
        if v2 {
            v1beta2_defaults(obj);
        }
        check(obj, schema, "", &mut errs);
        if v2 {
            v1beta2_cel(obj, &mut errs);
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

    #[test]
    fn the_schemas_come_from_the_shipped_manifests() {
        for rt in [&BINDINGS_V1BETA2, &BINDINGS_V1BETA1] {
            let Kind::Obj(root) = &schema_for(rt).expect("bindings have a schema").kind else {
                panic!("the root is an object");
            };
            let keys: Vec<&str> = root.keys().map(String::as_str).collect();
            assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec", "status"]);
        }
        assert!(schema_for(&super::super::resources::SECRETS).is_none());
    }

    #[test]
    fn unknown_root_fields_and_nulls_are_pruned_and_metadata_is_kept() {
        let mut b = good();
        b["metadata"]["labels"] = json!({"a": "b"});
        b["extra"] = json!(1);
        b["spec"]["auth"]["managedIdentity"]["resourceID"] = Value::Null;
        validate(&BINDINGS_V1BETA2, "b", &mut b).unwrap();
        assert!(b.get("extra").is_none());
        assert_eq!(b["metadata"], json!({"name": "b", "labels": {"a": "b"}}));
        assert_eq!(
            b["spec"]["auth"]["managedIdentity"],
            json!({"clientID": "c"})
        );
    }

    #[test]
    fn condition_entries_are_pruned_and_checked_against_the_manifest() {
        let condition = json!({"type": "Ready", "status": "True", "reason": "R", "message": "m",
            "lastTransitionTime": "2026-01-02T15:04:05Z", "observedGeneration": 1});
        let mut b = good();
        let mut extra = condition.clone();
        extra["junk"] = json!(true);
        b["status"] = json!({"conditions": [extra]});
        validate(&BINDINGS_V1BETA2, "b", &mut b).unwrap();
        assert_eq!(b["status"]["conditions"][0], condition);

        let mut bad = good();
        let mut maybe = condition.clone();
        maybe["status"] = json!("Maybe");
        maybe.as_object_mut().unwrap().remove("reason");
        bad["status"] = json!({"conditions": [maybe]});
        let e = validate(&BINDINGS_V1BETA2, "b", &mut bad).unwrap_err();
        assert!(
            e.message
                .contains("status.conditions[0].reason: Required value"),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("status.conditions[0].status: Unsupported value: \"Maybe\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn lengths_and_enums_come_from_the_manifest() {
        let mut long = good();
        long["spec"]["acr"]["server"] = json!(format!("{}.azurecr.io", "a".repeat(250)));
        let e = validate(&BINDINGS_V1BETA2, "b", &mut long).unwrap_err();
        assert!(
            e.message
                .contains("spec.acr.server: Too long: may not be more than 253 bytes"),
            "{}",
            e.message
        );
        let mut empty = good();
        empty["spec"]["acr"]["scope"] = json!("");
        let e = validate(&BINDINGS_V1BETA2, "b", &mut empty).unwrap_err();
        assert!(
            e.message
                .contains("spec.acr.scope in body should be at least 1 chars long"),
            "{}",
            e.message
        );
        let mut cloud = good();
        cloud["spec"]["acr"]["environment"] = json!("MoonCloud");
        let e = validate(&BINDINGS_V1BETA2, "b", &mut cloud).unwrap_err();
        assert!(e.message.contains("spec.acr.environment: Unsupported value: \"MoonCloud\": supported values: \"PublicCloud\""), "{}", e.message);
    }

    #[test]
    fn wrong_types_are_reported_with_the_manifests_type() {
        let mut b = good();
        b["status"] = json!({"observedGeneration": "one"});
        let e = validate(&BINDINGS_V1BETA2, "b", &mut b).unwrap_err();
        assert!(
            e.message
                .contains("status.observedGeneration in body must be of type integer"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_binding_without_spec_is_stored_as_it_is() {
        let mut b = json!({"metadata": {"name": "b"}});
        validate(&BINDINGS_V1BETA2, "b", &mut b).unwrap();
        assert_eq!(b, json!({"metadata": {"name": "b"}}));
        let mut legacy = json!({"metadata": {"name": "b"}});
        validate(&BINDINGS_V1BETA1, "b", &mut legacy).unwrap();
    }
}

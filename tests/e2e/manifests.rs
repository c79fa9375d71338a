//! The shipped manifests are well-formed, least-privilege and hardened, and the CRD schemas agree
//! with what the code reads (the spec decoder) and writes (status, conditions).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use acrpull::testing::{
    plan, status_patch, ApiVersion, Binding, BindingError, Minted, MintedToken, Observed, Outcome,
    Password, PlanConfig, SaObs, SpecError, TokenStep, V1beta1Defaults, Write,
};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-01-02 15:04:05 UTC);
const V1BETA2_CRD: &str = "01-crd-acrpull.microsoft.com.yaml";
const V1BETA1_CRD: &str = "02-crd-msi-acrpull.microsoft.com.yaml";
/// The controller's namespace, upstream's chart name.
const NAMESPACE: &str = "acrpull";
/// The controller's ServiceAccount, upstream's chart name.
const SERVICE_ACCOUNT: &str = "acrpull";

// ---------------------------------------------------------------------------------------------
// Loading

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// Every document of a (multi-document) YAML file, as JSON; empty documents are skipped.
fn parse_docs(text: &str, file: &Path) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", file.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn load(rel: &str) -> Vec<Value> {
    let path = manifests_dir().join(rel);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_docs(&text, &path)
}

fn load_one(rel: &str) -> Value {
    let mut docs = load(rel);
    assert_eq!(docs.len(), 1, "{rel} must hold exactly one object");
    docs.remove(0)
}

/// Every `.yaml` file under `manifests/`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry is readable").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The top-level `.yaml` files, the ones `kubectl apply -f manifests/` applies, sorted by name.
fn top_level_files() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(manifests_dir())
        .expect("manifests/ is readable")
        .map(|e| e.expect("directory entry is readable").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            p.file_name()
                .expect("a file has a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn all_objects() -> Vec<(PathBuf, Value)> {
    yaml_files(&manifests_dir())
        .into_iter()
        .flat_map(|path| {
            let text = fs::read_to_string(&path).expect("manifest is readable");
            parse_docs(&text, &path)
                .into_iter()
                .map(move |v| (path.clone(), v))
        })
        .collect()
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn openapi(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

/// The schema node at a dotted path below `schema` (`""` is `schema` itself).
fn node<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(schema, |s, p| s.get("properties")?.get(p))
}

// ---------------------------------------------------------------------------------------------
// A tiny structural-schema validator

/// Schema keywords the validator understands. Any other keyword is reported, so a manifest that
/// starts using one makes this file learn it rather than pass without checking it.
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "enum",
    "minLength",
    "maxLength",
    "items",
    "description",
    "format",
    "default",
];

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

/// Validates `v` against a structural schema like kube-apiserver does, except that an unknown
/// field is an error instead of being pruned (a manifest or a write must not carry one).
/// `x-kubernetes-*` extensions (CEL rules, list types) are not evaluated.
fn check(schema: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    let Some(keys) = schema.as_object() else {
        errs.push(format!("{path}: schema is not an object"));
        return;
    };
    for k in keys.keys() {
        if !KEYWORDS.contains(&k.as_str()) && !k.starts_with("x-kubernetes-") {
            errs.push(format!("{path}: schema keyword {k} is not understood"));
        }
    }
    let want = schema["type"].as_str().unwrap_or("<none>");
    let got = json_type(v);
    let fits = want == got || (want == "number" && got == "integer");
    if !fits {
        errs.push(format!("{path}: must be {want}, is {got}"));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            errs.push(format!("{path}: {v} is not one of {allowed:?}"));
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|min| len < min) {
            errs.push(format!("{path}: shorter than minLength"));
        }
        if schema["maxLength"].as_u64().is_some_and(|max| len > max) {
            errs.push(format!("{path}: longer than maxLength"));
        }
        if schema["format"] == "date-time" && OffsetDateTime::parse(s, &Rfc3339).is_err() {
            errs.push(format!("{path}: {s:?} is not an RFC 3339 date-time"));
        }
    }
    if let Some(m) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            if m.get(r).is_none_or(Value::is_null) {
                errs.push(format!("{}: required", join(path, r)));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        // ObjectMeta is validated by the API server itself; CRDs spell it as a bare object.
        if props.is_none() && path == "metadata" {
            return;
        }
        for (k, child) in m {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(s, child, &join(path, k), errs),
                None => errs.push(format!("{}: unknown field", join(path, k))),
            }
        }
    }
    if let Some(items) = v.as_array() {
        match schema.get("items") {
            Some(s) => {
                for (i, item) in items.iter().enumerate() {
                    check(s, item, &format!("{path}[{i}]"), errs);
                }
            }
            None => errs.push(format!("{path}: array schema without items")),
        }
    }
}

fn fits(schema: &Value, v: &Value) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    check(schema, v, "", &mut errs);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Problems with a schema itself: nodes without a type, unknown keywords, objects without
/// properties, arrays without items, required names that are not properties, defaults and enum
/// values that do not fit their own node.
fn schema_problems(schema: &Value, path: &str, out: &mut Vec<String>) {
    for k in schema.as_object().into_iter().flat_map(|m| m.keys()) {
        if !KEYWORDS.contains(&k.as_str()) && !k.starts_with("x-kubernetes-") {
            out.push(format!("{path}: keyword {k} is not understood"));
        }
    }
    match schema["type"].as_str() {
        Some("object") => {
            let props = schema.get("properties").and_then(Value::as_object);
            if props.is_none() && path != "metadata" {
                out.push(format!("{path}: object without properties"));
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or_default();
                if props.is_none_or(|p| !p.contains_key(r)) {
                    out.push(format!("{path}: required {r} is not a property"));
                }
            }
            for (k, child) in props.into_iter().flatten() {
                schema_problems(child, &join(path, k), out);
            }
        }
        Some("array") => match schema.get("items") {
            Some(items) => schema_problems(items, &format!("{path}[]"), out),
            None => out.push(format!("{path}: array without items")),
        },
        Some("string" | "integer" | "number" | "boolean") => {}
        other => out.push(format!("{path}: type {other:?} is not structural")),
    }
    let mut leaf = json!({"type": schema["type"]});
    if let Some(allowed) = schema.get("enum") {
        leaf["enum"] = allowed.clone();
    }
    for value in schema["enum"].as_array().into_iter().flatten() {
        if let Err(e) = fits(&json!({"type": schema["type"]}), value) {
            out.push(format!("{path}: enum value {value}: {e:?}"));
        }
    }
    if let Some(default) = schema.get("default") {
        if let Err(e) = fits(&leaf, default) {
            out.push(format!("{path}: default {default}: {e:?}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every manifest

#[test]
fn every_manifest_parses_and_each_object_names_itself() {
    let objs = all_objects();
    assert!(objs.len() >= 10, "only {} objects found", objs.len());
    for (path, o) in &objs {
        let file = path.display();
        for field in ["apiVersion", "kind"] {
            assert!(
                o[field].as_str().is_some_and(|s| !s.is_empty()),
                "{file}: an object has no {field}"
            );
        }
        assert!(
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{file}: a {} has no metadata.name",
            o["kind"]
        );
    }
}

#[test]
fn namespaced_objects_live_in_the_controller_namespace_and_cluster_objects_in_none() {
    const CLUSTER_SCOPED: &[&str] = &[
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    let examples = manifests_dir().join("examples");
    for (path, o) in all_objects() {
        if path.starts_with(&examples) {
            continue;
        }
        let kind = o["kind"].as_str().unwrap_or_default();
        let ns = o["metadata"].get("namespace");
        if CLUSTER_SCOPED.contains(&kind) {
            assert!(ns.is_none(), "{}: {kind} is cluster-scoped", path.display());
        } else {
            assert_eq!(ns, Some(&json!(NAMESPACE)), "{}: {kind}", path.display());
        }
    }
}

#[test]
fn kustomization_lists_exactly_the_top_level_files_crds_and_namespace_first() {
    let path = manifests_dir().join("Kustomization");
    let text = fs::read_to_string(&path).expect("manifests/Kustomization is readable");
    let k = parse_docs(&text, &path).remove(0);
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k["kind"], "Kustomization");
    let listed: Vec<String> = k["resources"]
        .as_array()
        .expect("resources is a list")
        .iter()
        .map(|r| r.as_str().expect("a resource is a file name").to_string())
        .collect();
    // `kubectl apply -f manifests/` applies in file-name order; the list keeps the same order.
    assert_eq!(listed, top_level_files());

    let mut seen_other = None;
    for file in &listed {
        for o in load(file) {
            let kind = o["kind"].as_str().unwrap_or_default().to_string();
            let first = kind == "Namespace" || kind == "CustomResourceDefinition";
            if let (true, Some(other)) = (first, &seen_other) {
                panic!("{file}: {kind} comes after {other}");
            }
            if !first && seen_other.is_none() {
                seen_other = Some(format!("{kind} in {file}"));
            }
        }
    }
    assert!(
        seen_other.is_some(),
        "the manifests hold only CRDs and namespaces"
    );

    let image =
        &load_one("20-deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["image"];
    let (name, tag) = image
        .as_str()
        .and_then(|i| i.split_once(':'))
        .expect("the image is name:tag");
    assert_eq!(k["images"][0]["name"], name);
    assert_eq!(tag, env!("CARGO_PKG_VERSION"));
    assert_eq!(k["images"][0]["newTag"], env!("CARGO_PKG_VERSION"));
}

// ---------------------------------------------------------------------------------------------
// RBAC and Deployment

#[test]
fn rbac_rules_have_no_wildcard_anywhere() {
    let rbac = load("11-rbac.yaml");
    let roles: Vec<&Value> = rbac
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .collect();
    assert_eq!(roles.len(), 2);
    for role in roles {
        let rules = role["rules"].as_array().expect("rules is a list");
        assert!(!rules.is_empty());
        for rule in rules {
            assert!(rule["verbs"].as_array().is_some_and(|v| !v.is_empty()));
            for (field, values) in rule.as_object().expect("a rule is an object") {
                for v in values.as_array().expect("rule fields are lists") {
                    let v = v.as_str().expect("rule entries are strings");
                    assert!(
                        !v.contains('*'),
                        "{}: {field} has {v:?}",
                        role["metadata"]["name"]
                    );
                }
            }
        }
    }
    // Leases and nothing else are namespaced: the Role holds them, the ClusterRole does not.
    let cluster = of_kind(&rbac, "ClusterRole")[0];
    assert!(!cluster["rules"].to_string().contains("leases"));
    let role = of_kind(&rbac, "Role")[0];
    assert_eq!(role["rules"][0]["resources"], json!(["leases"]));
}

#[test]
fn role_bindings_grant_the_shipped_service_account() {
    let sa = load_one("10-serviceaccount.yaml");
    assert_eq!(sa["metadata"]["name"], SERVICE_ACCOUNT);
    let rbac = load("11-rbac.yaml");
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        let b = of_kind(&rbac, kind)[0];
        let role_kind = if kind == "RoleBinding" {
            "Role"
        } else {
            "ClusterRole"
        };
        let role = of_kind(&rbac, role_kind)[0];
        assert_eq!(b["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(b["roleRef"]["kind"], role_kind);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}])
        );
    }
}

/// The port of a `--flag=:port` argument.
fn flag_port(args: &[Value], flag: &str) -> u64 {
    let prefix = format!("{flag}=");
    let value = args
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{flag} is not set"));
    value
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{flag}={value} has no port"))
}

fn port_named(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn the_deployment_is_hardened_probed_and_sized() {
    let d = load_one("20-deployment.yaml");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = pod["containers"].as_array().expect("containers is a list");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(sc.get("privileged").is_none_or(|p| p == false));

    let args = c["args"].as_array().expect("args is a list");
    assert!(args.contains(&json!("--leader-elect")));
    let pod_name = c["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "POD_NAME"))
        .expect("POD_NAME is set");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );

    assert_eq!(
        port_named(c, "metrics"),
        flag_port(args, "--metrics-bind-address")
    );
    let probes = flag_port(args, "--health-probe-bind-address");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = match &get["port"] {
            Value::String(name) => port_named(c, name),
            other => other.as_u64().expect("a probe port is a name or a number"),
        };
        assert_eq!(port, probes, "{probe} port");
    }

    let res = &c["resources"];
    for key in ["cpu", "memory"] {
        assert!(res["requests"][key].is_string(), "requests.{key} is set");
    }
    assert!(res["limits"]["memory"].is_string(), "limits.memory is set");
}

// ---------------------------------------------------------------------------------------------
// CRDs

#[test]
fn both_crds_have_their_names_group_scope_and_status_subresource() {
    for (file, version, short) in [
        (V1BETA2_CRD, ApiVersion::V1beta2, json!(["apb", "apbs"])),
        (V1BETA1_CRD, ApiVersion::V1beta1, Value::Null),
    ] {
        let crd = load_one(file);
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1", "{file}");
        assert_eq!(crd["kind"], "CustomResourceDefinition", "{file}");
        let group = version.group();
        assert_eq!(crd["metadata"]["name"], format!("acrpullbindings.{group}"));
        let spec = &crd["spec"];
        assert_eq!(spec["group"], group);
        assert_eq!(spec["scope"], "Namespaced");
        let names = &spec["names"];
        assert_eq!(names["kind"], "AcrPullBinding");
        assert_eq!(names["listKind"], "AcrPullBindingList");
        assert_eq!(names["plural"], "acrpullbindings");
        assert_eq!(names["singular"], "acrpullbinding");
        assert_eq!(names["shortNames"], short, "{file}");
        let versions = spec["versions"].as_array().expect("versions is a list");
        assert_eq!(versions.len(), 1, "{file}: one version, no conversion");
        let v = &versions[0];
        assert_eq!(v["name"], version.version());
        assert_eq!(v["served"], true);
        assert_eq!(v["storage"], true);
        assert_eq!(v["subresources"], json!({"status": {}}));
    }
}

fn columns(crd: &Value) -> Vec<&Value> {
    crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

#[test]
fn v1beta2_printer_columns_are_upstreams_plus_ready() {
    let crd = load_one(V1BETA2_CRD);
    let got: Vec<(String, String, String, u64)> = columns(&crd)
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["jsonPath"].as_str().unwrap_or_default().to_string(),
                c["type"].as_str().unwrap_or_default().to_string(),
                c["priority"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    // Spec §1.2, in upstream's order; `Ready` is ours.
    let want = [
        ("Server", ".spec.acr.server", "string", 0),
        ("Scope", ".spec.acr.scope", "string", 1),
        ("Target", ".spec.serviceAccountName", "string", 0),
        ("Last Refresh", ".status.lastTokenRefreshTime", "date", 1),
        ("Expiration", ".status.tokenExpirationTime", "date", 0),
        ("Error", ".status.error", "string", 0),
        (
            "Ready",
            ".status.conditions[?(@.type==\"Ready\")].status",
            "string",
            0,
        ),
    ];
    let want: Vec<(String, String, String, u64)> = want
        .iter()
        .map(|(n, p, t, pr)| (n.to_string(), p.to_string(), t.to_string(), *pr))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn every_printer_column_points_at_a_schema_field_of_its_type() {
    for file in [V1BETA2_CRD, V1BETA1_CRD] {
        let crd = load_one(file);
        let cols = columns(&crd);
        assert!(
            cols.iter().any(|c| c["name"] == "Ready"),
            "{file}: no Ready column"
        );
        for c in cols {
            let path = c["jsonPath"].as_str().expect("a column has a jsonPath");
            // `.status.conditions[?(@.type=="Ready")].status` → `status.conditions` items' `status`.
            let (field, leaf) = match path.split_once("[?(") {
                Some((list, rest)) => {
                    let leaf = rest.rsplit_once("].").map(|(_, l)| l).unwrap_or_default();
                    (list.trim_start_matches('.').to_string(), Some(leaf))
                }
                None => (path.trim_start_matches('.').to_string(), None),
            };
            let mut n = node(openapi(&crd), &field)
                .unwrap_or_else(|| panic!("{file}: column {path} has no field"));
            if let Some(leaf) = leaf {
                n = node(&n["items"], leaf)
                    .unwrap_or_else(|| panic!("{file}: column {path} has no item field"));
            }
            let want = match c["type"].as_str() {
                Some("date") => ("string", Some("date-time")),
                Some(t) => (t, None),
                None => panic!("{file}: column {path} has no type"),
            };
            assert_eq!(n["type"], want.0, "{file}: {path}");
            if let Some(format) = want.1 {
                assert_eq!(n["format"], format, "{file}: {path}");
            }
        }
    }
}

#[test]
fn crd_schemas_are_structural_and_use_only_keywords_the_validator_knows() {
    for file in [V1BETA2_CRD, V1BETA1_CRD] {
        let mut problems = Vec::new();
        schema_problems(openapi(&load_one(file)), "", &mut problems);
        assert!(problems.is_empty(), "{file}: {problems:#?}");
    }
}

/// Every `x-kubernetes-validations` rule below `schema`, as (rule, message).
fn cel_rules(schema: &Value, out: &mut Vec<(String, String)>) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let text = |k: &str| rule[k].as_str().unwrap_or_default().to_string();
        out.push((text("rule"), text("message")));
    }
    for child in schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, c)| c)
    {
        cel_rules(child, out);
    }
    if let Some(items) = schema.get("items") {
        cel_rules(items, out);
    }
}

#[test]
fn v1beta2_cel_rules_fix_the_airgapped_typo_and_say_what_the_decoder_says() {
    let mut rules = Vec::new();
    cel_rules(openapi(&load_one(V1BETA2_CRD)), &mut rules);
    assert!(rules.iter().all(|(r, _)| !r.contains("ArigappedCloud")));
    assert!(rules
        .iter()
        .any(|(r, _)| r.contains("self.environment == 'AirgappedCloud'")));
    // The decoder re-checks the rules (clusters may skip CRD validation) with the same words.
    let messages: BTreeSet<&str> = rules.iter().map(|(_, m)| m.as_str()).collect();
    for e in [
        SpecError::AuthNotExactlyOne,
        SpecError::ManagedIdentityBothIds,
        SpecError::WorkloadIdsNotPaired,
        SpecError::AirgappedWithoutCloudConfig,
    ] {
        assert!(
            messages.contains(e.to_string().as_str()),
            "no CEL rule says {e}"
        );
    }
    let mut legacy = Vec::new();
    cel_rules(openapi(&load_one(V1BETA1_CRD)), &mut legacy);
    assert!(legacy.is_empty(), "v1beta1 has no CEL rules upstream");
}

#[test]
fn every_example_fits_its_crd_and_decodes_to_a_usable_spec() {
    let dir = manifests_dir().join("examples");
    let files = yaml_files(&dir);
    assert_eq!(files.len(), 3);
    let crds = [load_one(V1BETA2_CRD), load_one(V1BETA1_CRD)];
    for path in files {
        let text = fs::read_to_string(&path).expect("example is readable");
        for example in parse_docs(&text, &path) {
            let file = path.display();
            let crd = crds
                .iter()
                .find(|c| {
                    let av = format!(
                        "{}/{}",
                        c["spec"]["group"].as_str().unwrap_or_default(),
                        c["spec"]["versions"][0]["name"]
                            .as_str()
                            .unwrap_or_default()
                    );
                    example["apiVersion"] == av.as_str()
                        && example["kind"] == c["spec"]["names"]["kind"]
                })
                .unwrap_or_else(|| panic!("{file}: no CRD serves this object"));
            if let Err(errs) = fits(openapi(crd), &example) {
                panic!("{file}: {errs:#?}");
            }
            let b = decode(&example);
            assert!(b.spec.is_ok(), "{file}: {:?}", b.spec);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The decoder's fields against the schemas

/// Whether the decoder insists on a field, and how the schema is to say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// The decoder refuses the spec without it: the schema requires it.
    Required,
    /// Neither requires it.
    Optional,
    /// The schema requires it with a `default`, so it is never missing; the decoder reads
    /// absence as the same default.
    Defaulted,
    /// Upstream's schema requires it (kept for drop-in parity); the decoder tolerates absence.
    SchemaOnly,
}

use Need::{Defaulted, Optional, Required, SchemaOnly};

/// Dotted path below `spec`, JSON type, need.
type FieldTable = &'static [(&'static str, &'static str, Need)];

/// Every `spec` field the decoder reads, its JSON type and whether it is required, written from
/// `src/binding/spec.rs`. KEEP IN SYNC with the decoder: a field it starts reading goes here,
/// and the tests below then demand it in the CRD with the same type.
const V1BETA2_FIELDS: FieldTable = &[
    ("acr", "object", Required),
    ("acr.server", "string", Required),
    ("acr.scope", "string", Required),
    ("acr.environment", "string", Defaulted),
    ("acr.cloudConfig", "object", Optional),
    ("acr.cloudConfig.entraAuthorityHost", "string", Required),
    (
        "acr.cloudConfig.resourceManagerAudience",
        "string",
        Required,
    ),
    ("auth", "object", Required),
    ("auth.managedIdentity", "object", Optional),
    ("auth.managedIdentity.clientID", "string", Optional),
    ("auth.managedIdentity.resourceID", "string", Optional),
    (
        "auth.managedIdentity.federatedApplication",
        "object",
        Optional,
    ),
    (
        "auth.managedIdentity.federatedApplication.tenantID",
        "string",
        Required,
    ),
    (
        "auth.managedIdentity.federatedApplication.clientID",
        "string",
        Required,
    ),
    ("auth.workloadIdentity", "object", Optional),
    (
        "auth.workloadIdentity.serviceAccountRef",
        "string",
        Required,
    ),
    ("auth.workloadIdentity.clientID", "string", Optional),
    ("auth.workloadIdentity.tenantID", "string", Optional),
    ("serviceAccountName", "string", Required),
];

/// As [`V1BETA2_FIELDS`], for v1beta1. KEEP IN SYNC with `decode_v1beta1`.
const V1BETA1_FIELDS: FieldTable = &[
    // Empty or absent falls back to ACR_SERVER; upstream's CRD requires it anyway (minLength 0).
    ("acrServer", "string", SchemaOnly),
    ("scope", "string", Optional),
    ("managedIdentityClientID", "string", Optional),
    ("managedIdentityResourceID", "string", Optional),
    ("serviceAccountName", "string", Optional),
];

fn tables() -> [(&'static str, ApiVersion, FieldTable); 2] {
    [
        (V1BETA2_CRD, ApiVersion::V1beta2, V1BETA2_FIELDS),
        (V1BETA1_CRD, ApiVersion::V1beta1, V1BETA1_FIELDS),
    ]
}

fn spec_schema(file: &str) -> Value {
    node(openapi(&load_one(file)), "spec")
        .expect("the schema has spec")
        .clone()
}

/// Every property path below `schema`, dotted.
fn schema_paths(schema: &Value, path: &str, out: &mut Vec<String>) {
    for (k, child) in schema["properties"].as_object().into_iter().flatten() {
        let p = join(path, k);
        out.push(p.clone());
        schema_paths(child, &p, out);
    }
}

#[test]
fn every_field_the_decoder_reads_is_in_the_schema_with_its_type() {
    for (file, _, table) in tables() {
        let spec = &spec_schema(file);
        for (path, ty, _) in table {
            let n = node(spec, path).unwrap_or_else(|| panic!("{file}: spec.{path} is missing"));
            assert_eq!(n["type"], *ty, "{file}: spec.{path}");
        }
    }
}

#[test]
fn the_schema_has_no_spec_field_the_decoder_ignores() {
    for (file, _, table) in tables() {
        let spec = &spec_schema(file);
        let mut paths = Vec::new();
        schema_paths(spec, "", &mut paths);
        let known: BTreeSet<&str> = table.iter().map(|(p, _, _)| *p).collect();
        let ignored: Vec<&String> = paths
            .iter()
            .filter(|p| !known.contains(p.as_str()))
            .collect();
        assert!(
            ignored.is_empty(),
            "{file}: accepted but never read: {ignored:?}"
        );
    }
}

#[test]
fn schema_required_lists_equal_what_the_decoder_requires() {
    for (file, _, table) in tables() {
        let spec = &spec_schema(file);
        let objects = std::iter::once("").chain(
            table
                .iter()
                .filter(|(_, ty, _)| *ty == "object")
                .map(|(p, _, _)| *p),
        );
        for obj in objects {
            let n = node(spec, obj).expect("checked by the type test");
            let schema_required: BTreeSet<&str> = n["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let decoder_required: BTreeSet<&str> = table
                .iter()
                .filter(|(p, _, need)| {
                    *need != Optional && p.rsplit_once('.').map_or("", |(parent, _)| parent) == obj
                })
                .map(|(p, _, _)| p.rsplit('.').next().unwrap_or(p))
                .collect();
            assert_eq!(
                schema_required, decoder_required,
                "{file}: required of spec.{obj}"
            );
        }
        for (path, _, need) in table {
            let has_default = node(spec, path).is_some_and(|n| n.get("default").is_some());
            assert_eq!(
                has_default,
                *need == Defaulted,
                "{file}: default of spec.{path}"
            );
        }
    }
}

/// The JSON keys the decoder's source reads through its field helpers (`opt_str(obj, "key", ..)`
/// and friends): the string literal that is each call's second argument.
fn keys_read_by_the_decoder() -> BTreeSet<String> {
    const SOURCE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/binding/spec.rs"));
    let mut keys = BTreeSet::new();
    for helper in ["opt_str(", "opt_obj(", "non_empty(", "required_str("] {
        for (at, _) in SOURCE.match_indices(helper) {
            // Skip the helpers' own definitions.
            if SOURCE[..at].ends_with("fn ") {
                continue;
            }
            let args = &SOURCE[at + helper.len()..];
            let Some((_, rest)) = args.split_once(',') else {
                continue;
            };
            let rest = rest.trim_start();
            if let Some(lit) = rest.strip_prefix('"').and_then(|r| r.split_once('"')) {
                keys.insert(lit.0.to_string());
            }
        }
    }
    keys
}

#[test]
fn the_field_tables_name_every_key_the_decoder_source_reads() {
    let read = keys_read_by_the_decoder();
    assert!(read.len() >= 15, "the scan found only {read:?}");
    let tabled: BTreeSet<String> = tables()
        .iter()
        .flat_map(|(_, _, t)| t.iter())
        .map(|(p, _, _)| p.rsplit('.').next().unwrap_or(p).to_string())
        .collect();
    assert_eq!(read, tabled, "update V1BETA2_FIELDS / V1BETA1_FIELDS");
}

fn meta() -> Value {
    json!({"namespace": "default", "name": "b", "uid": "uid-1", "resourceVersion": "1",
           "generation": 3})
}

fn decode(obj: &Value) -> Binding {
    let version = if obj["apiVersion"] == ApiVersion::V1beta2.api_version() {
        ApiVersion::V1beta2
    } else {
        ApiVersion::V1beta1
    };
    let mut obj = obj.clone();
    obj["metadata"] = meta();
    Binding::decode(version, &obj, &V1beta1Defaults::default()).expect("metadata decodes")
}

fn spec_of(version: ApiVersion, spec: &Value) -> Result<(), SpecError> {
    let obj = json!({"apiVersion": version.api_version(), "kind": "AcrPullBinding",
                     "metadata": meta(), "spec": spec});
    let b = Binding::decode(version, &obj, &V1beta1Defaults::default()).expect("metadata decodes");
    b.spec.map(|_| ())
}

/// Valid specs that together set every field of the tables.
fn full_specs(version: ApiVersion) -> Vec<Value> {
    match version {
        ApiVersion::V1beta2 => vec![
            json!({"acr": {"server": "example.azurecr.io", "scope": "repository:a:pull",
                           "environment": "AirgappedCloud",
                           "cloudConfig": {"entraAuthorityHost": "https://login.air/",
                                           "resourceManagerAudience": "https://arm.air/"}},
                   "auth": {"managedIdentity": {"clientID": "c",
                            "federatedApplication": {"tenantID": "t", "clientID": "app"}}},
                   "serviceAccountName": "default"}),
            json!({"acr": {"server": "example.azurecr.io", "scope": "repository:a:pull",
                           "environment": "PublicCloud"},
                   "auth": {"managedIdentity": {"resourceID": "/r"}},
                   "serviceAccountName": "default"}),
            json!({"acr": {"server": "example.azurecr.io", "scope": "repository:a:pull",
                           "environment": "PublicCloud"},
                   "auth": {"workloadIdentity": {"serviceAccountRef": "sa", "clientID": "c",
                                                 "tenantID": "t"}},
                   "serviceAccountName": "default"}),
        ],
        ApiVersion::V1beta1 => vec![json!({"acrServer": "example.azurecr.io",
            "scope": "repository:a:pull", "managedIdentityClientID": "c",
            "managedIdentityResourceID": "/r", "serviceAccountName": "sa"})],
    }
}

/// The parent object of a dotted path, mutably.
fn parent_mut<'a>(
    v: &'a mut Value,
    path: &str,
) -> (&'a mut serde_json::Map<String, Value>, String) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("a path has a last part").to_string();
    let parent = parts.into_iter().fold(v, |v, p| &mut v[p]);
    (
        parent.as_object_mut().expect("the parent is an object"),
        last,
    )
}

/// Guards the tables against the decoder itself: a field the table calls required is refused
/// when missing, and every field is read with the table's type.
#[test]
fn the_field_tables_agree_with_the_decoder() {
    for (_, version, table) in tables() {
        let bases = full_specs(version);
        for base in &bases {
            assert_eq!(spec_of(version, base), Ok(()), "{base}");
        }
        for (path, ty, need) in table {
            let field = format!("spec.{path}");
            let base = bases
                .iter()
                .find(|b| path.split('.').try_fold(*b, |v, p| v.get(p)).is_some())
                .unwrap_or_else(|| panic!("no full spec sets {field}"));

            let mut wrong = base.clone();
            let (parent, key) = parent_mut(&mut wrong, path);
            parent.insert(
                key.clone(),
                if *ty == "string" {
                    json!(42)
                } else {
                    json!("x")
                },
            );
            match spec_of(version, &wrong) {
                Err(SpecError::WrongType { field: f, .. }) if f == field => {}
                other => panic!("{field} as a non-{ty}: {other:?}"),
            }

            let mut without = base.clone();
            let (parent, key) = parent_mut(&mut without, path);
            parent.remove(&key);
            let missing = Err(SpecError::Missing {
                field: field.clone(),
            });
            let got = spec_of(version, &without);
            match need {
                Required => assert_eq!(got, missing, "{field} removed"),
                Defaulted | SchemaOnly => assert_eq!(got, Ok(()), "{field} removed"),
                Optional => assert_ne!(got, missing, "{field} removed"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the controller writes against the status schemas

/// RFC 7386: what a merge patch leaves of `target`.
fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn example_objects() -> Vec<Value> {
    [
        "v1beta2-managed-identity.yaml",
        "v1beta2-workload-identity.yaml",
        "v1beta1-legacy.yaml",
    ]
    .iter()
    .map(|f| load_one(&format!("examples/{f}")))
    .collect()
}

fn observed(b: &Binding, target_found: bool) -> Observed {
    let spec = b.spec.as_ref().expect("examples decode");
    Observed {
        binding: b.clone(),
        secrets: Vec::new(),
        target_sa: target_found.then(|| SaObs {
            name: spec.target_service_account.to_string(),
            resource_version: "7".into(),
            image_pull_secrets: vec!["other".into()],
        }),
        other_sas: Vec::new(),
    }
}

/// The status the plan's `UpdateStatus` writes leave on a binding that had none.
fn planned_status(obs: &Observed, minted: Option<&Minted>) -> Value {
    let cfg = PlanConfig::default();
    let plan = match plan(obs, &cfg, NOW, minted) {
        Outcome::Done(p) => p,
        Outcome::NeedToken(_) => panic!("a token was handed over and more is asked"),
    };
    let mut status = json!({});
    let mut writes = 0;
    for w in &plan.writes {
        if let Write::UpdateStatus { status: patch } = w {
            merge(&mut status, patch);
            writes += 1;
        }
    }
    assert!(writes > 0, "the pass writes no status: {:?}", plan.writes);
    status
}

fn status_schema(version: ApiVersion) -> Value {
    let file = match version {
        ApiVersion::V1beta2 => V1BETA2_CRD,
        ApiVersion::V1beta1 => V1BETA1_CRD,
    };
    node(openapi(&load_one(file)), "status")
        .expect("the schema has status")
        .clone()
}

#[test]
fn planned_status_writes_fit_the_status_schemas() {
    let minted = Minted::Ok(MintedToken {
        password: Password::new("not-a-real-token"),
        expires: NOW + Duration::hours(3),
        issued: NOW,
    });
    let refused = Minted::Err(BindingError::TokenRequest {
        step: TokenStep::AcrToken,
        detail: "denied".into(),
    });
    for example in example_objects() {
        let b = decode(&example);
        let schema = status_schema(b.version);
        let obs = observed(&b, true);
        assert!(
            matches!(
                plan(&obs, &PlanConfig::default(), NOW, None),
                Outcome::NeedToken(_)
            ),
            "a fresh binding needs a token"
        );

        let mut ok = planned_status(&obs, Some(&minted));
        assert!(ok["tokenExpirationTime"].is_string(), "{ok}");
        let conditions = status_patch(&b, None, Some(NOW + Duration::hours(3)), NOW)
            .expect("a fresh binding has no conditions yet");
        merge(&mut ok, &conditions);
        if let Err(e) = fits(&schema, &ok) {
            panic!("{:?} success status {ok}: {e:#?}", b.version);
        }

        let mut failed = planned_status(&obs, Some(&refused));
        assert!(failed["error"].is_string(), "{failed}");
        let error = match &refused {
            Minted::Err(e) => e,
            Minted::Ok(_) => unreachable!("refused is an error"),
        };
        let conditions = status_patch(&b, Some(error), None, NOW).expect("conditions change");
        merge(&mut failed, &conditions);
        if let Err(e) = fits(&schema, &failed) {
            panic!("{:?} failure status {failed}: {e:#?}", b.version);
        }

        let no_sa = planned_status(&observed(&b, false), None);
        assert!(no_sa["error"]
            .as_str()
            .is_some_and(|e| e.contains("not found")));
        if let Err(e) = fits(&schema, &no_sa) {
            panic!("{:?} missing-SA status {no_sa}: {e:#?}", b.version);
        }
    }
}

#[test]
fn condition_patches_fit_the_status_schemas_in_every_state() {
    for example in example_objects() {
        let b = decode(&example);
        let schema = status_schema(b.version);
        let cases = [
            (None, Some(NOW + Duration::hours(1))),
            (None, Some(NOW - Duration::hours(1))),
            (None, None),
            (
                Some(BindingError::ServiceAccountNotFound { name: "x".into() }),
                Some(NOW + Duration::hours(1)),
            ),
        ];
        for (error, expires) in cases {
            let patch =
                status_patch(&b, error.as_ref(), expires, NOW).expect("a fresh binding changes");
            let mut status = json!({});
            merge(&mut status, &patch);
            assert_eq!(status["conditions"].as_array().map(Vec::len), Some(2));
            if let Err(e) = fits(&schema, &status) {
                panic!("{:?} {error:?} {expires:?}: {status}: {e:#?}", b.version);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Admission policies

#[test]
fn admission_policies_parse_and_every_policy_is_bound_failing_open_on_missing_params() {
    let objs = load("policies/admission-policies.yaml");
    let params = of_kind(&objs, "ConfigMap");
    assert_eq!(params.len(), 1);
    let params = params[0];
    assert_eq!(
        params["data"]["controllerServiceAccountName"],
        SERVICE_ACCOUNT
    );
    assert_eq!(params["data"]["controllerNamespace"], NAMESPACE);
    assert_eq!(
        params["data"]["tokenAudience"],
        acrpull::testing::DEFAULT_TOKEN_AUDIENCE
    );

    let policies = of_kind(&objs, "ValidatingAdmissionPolicy");
    let names: BTreeSet<&str> = policies
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    let want: BTreeSet<&str> = [
        "controller-token-request-policy",
        "controller-secret-mutation-policy",
        "controller-service-account-mutation-policy",
    ]
    .into();
    assert_eq!(names, want);
    for p in &policies {
        let name = &p["metadata"]["name"];
        assert_eq!(p["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(p["spec"]["failurePolicy"], "Fail", "{name}");
        assert_eq!(
            p["spec"]["paramKind"],
            json!({"apiVersion": "v1", "kind": "ConfigMap"})
        );
        assert!(p["spec"]["validations"]
            .as_array()
            .is_some_and(|v| !v.is_empty()));
        let user = &p["spec"]["matchConditions"][0];
        assert_eq!(user["name"], "userIsController", "{name}");
    }

    let bindings = of_kind(&objs, "ValidatingAdmissionPolicyBinding");
    let bound: BTreeMap<&str, &Value> = bindings
        .iter()
        .filter_map(|b| Some((b["spec"]["policyName"].as_str()?, *b)))
        .collect();
    assert_eq!(bound.keys().copied().collect::<BTreeSet<_>>(), want);
    for (policy, b) in bound {
        let spec = &b["spec"];
        assert_eq!(spec["validationActions"], json!(["Deny"]), "{policy}");
        let param = &spec["paramRef"];
        assert_eq!(param["name"], params["metadata"]["name"], "{policy}");
        assert_eq!(
            param["namespace"], params["metadata"]["namespace"],
            "{policy}"
        );
        assert_eq!(param["parameterNotFoundAction"], "Allow", "{policy}");
    }
}

// ---------------------------------------------------------------------------------------------
// The validator itself

fn tiny_schema() -> Value {
    json!({"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 3},
        "kind": {"type": "string", "enum": ["A", "B"]},
        "when": {"type": "string", "format": "date-time"},
        "list": {"type": "array", "items": {"type": "integer"}}}})
}

#[test]
fn the_validator_accepts_a_fitting_object() {
    let v = json!({"name": "abc", "kind": "A", "when": "2026-01-02T15:04:05Z", "list": [1, 2]});
    assert_eq!(fits(&tiny_schema(), &v), Ok(()));
}

#[test]
fn the_validator_reports_each_kind_of_misfit() {
    let cases = [
        (json!({"kind": "A"}), "name: required"),
        (json!({"name": "abc", "extra": 1}), "extra: unknown field"),
        (json!({"name": 1}), "name: must be string, is integer"),
        (json!({"name": ""}), "name: shorter than minLength"),
        (json!({"name": "abcd"}), "name: longer than maxLength"),
        (
            json!({"name": "a", "kind": "C"}),
            "kind: \"C\" is not one of",
        ),
        (
            json!({"name": "a", "when": "yesterday"}),
            "when: \"yesterday\" is not",
        ),
        (
            json!({"name": "a", "list": [1, "2"]}),
            "list[1]: must be integer",
        ),
    ];
    for (v, want) in cases {
        let errs = fits(&tiny_schema(), &v).expect_err(want);
        assert!(errs.iter().any(|e| e.starts_with(want)), "{v}: {errs:?}");
    }
}

#[test]
fn the_validator_refuses_schema_keywords_it_does_not_know() {
    let schema = json!({"type": "string", "pattern": "^a$"});
    assert!(fits(&schema, &json!("b")).is_err());
    let mut problems = Vec::new();
    schema_problems(&schema, "", &mut problems);
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn merge_patches_remove_nulls_and_merge_objects() {
    let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}});
    merge(&mut v, &json!({"a": null, "b": {"c": null, "e": 4}}));
    assert_eq!(v, json!({"b": {"d": 3, "e": 4}}));
}

//! End to end, every v1beta1 reconcile scenario of spec §7 (1–22): the real acrpull binary with
//! upstream's environment defaults, against the emulated API server and the fake Azure.

use acrpull_testkit::kube::BINDINGS_V1BETA1;
use acrpull_testkit::world::{
    assert_pull_secret, identity, jwt_expiry, parse_rfc3339, rfc3339, Acrpull, AcrpullOptions,
    World, BINDING_LABEL, EXPIRY_ANNOTATION, FINALIZER, INPUTS_ANNOTATION, REFRESH_ANNOTATION,
    REGISTRY, WAIT,
};
use serde_json::{json, Value};

use crate::bin;

const NS: &str = "default";
const SCOPE: &str = "repository:app:pull";
const SECRET: &str = "b-msi-acrpull-secret";
const ARM: &str = "https://management.azure.com/";

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Starts acrpull with upstream's v1beta1 defaults: `ACR_SERVER` = [`REGISTRY`] and
/// `MANAGED_IDENTITY_RESOURCE_ID` = identity 1.
fn start(w: &mut World, args: &[&str]) -> Acrpull {
    let opts = AcrpullOptions {
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![
            ("ACR_SERVER".into(), REGISTRY.into()),
            (
                "MANAGED_IDENTITY_RESOURCE_ID".into(),
                identity(1).resource_id,
            ),
        ],
        ..AcrpullOptions::default()
    };
    w.start_acrpull(bin(), &opts)
}

/// A v1beta1 binding `b` relying on the environment defaults, with `spec` fields added.
fn binding_obj(spec: Value) -> Value {
    let mut s = json!({"acrServer": "", "scope": SCOPE, "managedIdentityClientID": "",
                       "managedIdentityResourceID": ""});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "msi-acrpull.microsoft.com/v1beta1",
        "kind": "AcrPullBinding",
        "metadata": {"name": "b", "namespace": NS},
        "spec": s
    })
}

fn create(w: &World, spec: Value) -> Value {
    w.api
        .create(BINDINGS_V1BETA1, NS, binding_obj(spec))
        .expect("the binding can be created")
}

fn binding(w: &World) -> Value {
    w.api
        .get(BINDINGS_V1BETA1, NS, "b")
        .expect("the binding exists")
}

fn secret(w: &World) -> Option<Value> {
    w.api.get("secrets", NS, SECRET)
}

fn ready(w: &World) -> (Value, Value) {
    let b = w.wait_ready(BINDINGS_V1BETA1, NS, "b");
    let s = w.wait_for("the pull secret", WAIT, || secret(w));
    (b, s)
}

fn annotation(s: &Value, key: &str) -> String {
    s["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn regenerated(w: &World, inputs: &str) -> Value {
    let s = w.wait_for("a regenerated secret", WAIT, || {
        secret(w).filter(|s| annotation(s, INPUTS_ANNOTATION) != inputs)
    });
    assert_pull_secret(w, &s, &binding(w), REGISTRY, "b");
    s
}

/// An owned v1beta1 Secret with another name, as an older version left it.
fn extraneous_secret(b: &Value, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": name, "namespace": NS,
            "labels": {BINDING_LABEL: "b"},
            "ownerReferences": [{
                "apiVersion": "msi-acrpull.microsoft.com/v1beta1", "kind": "AcrPullBinding",
                "name": "b", "uid": b["metadata"]["uid"], "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "data": {".dockerconfigjson": "e30="}
    })
}

fn idle_passes(p: &Acrpull) -> usize {
    p.log
        .lines()
        .iter()
        .filter(|l| l.contains("default/b (v1beta1): reconciled in") && l.contains("with 0 writes"))
        .count()
}

#[test]
fn v1beta1_scenario_01_new_binding_gets_the_finalizer() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    let b = w.wait_for("the finalizer", WAIT, || {
        let b = w.api.get(BINDINGS_V1BETA1, NS, "b")?;
        b["metadata"]["finalizers"].is_array().then_some(b)
    });
    assert_eq!(b["metadata"]["finalizers"], json!([FINALIZER]));
}

#[test]
fn v1beta1_scenario_02_missing_service_account_is_a_status_error() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(&w, json!({"serviceAccountName": "missing"}));
    let b = w.wait_error(BINDINGS_V1BETA1, NS, "b", |e| !e.is_empty());
    assert_eq!(
        b["status"]["error"],
        "service account \"missing\" not found"
    );
    assert!(secret(&w).is_none());
    assert_eq!(w.azure.imds.counters().requests, 0);
}

#[test]
fn v1beta1_scenario_03_new_binding_gets_a_secret_from_the_environment_defaults() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    let (b, s) = ready(&w);
    assert_eq!(s["metadata"]["name"], SECRET);
    let password = assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    assert_eq!(
        s["metadata"]["labels"].as_object().map(|l| l.len()),
        Some(1)
    );
    assert_eq!(
        s["metadata"]["annotations"].as_object().map(|a| a.len()),
        Some(3)
    );
    // The default ServiceAccount is `default` when the spec names none.
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    let imds = w.azure.imds.counters();
    assert_eq!(
        imds.issued.get(&(identity(1).client_id, ARM.into())),
        Some(&1),
        "{imds:?}"
    );
    let acr = w.azure.acr.counters();
    assert_eq!(
        acr.tokens
            .get(&(REGISTRY.into(), identity(1).object_id, SCOPE.into())),
        Some(&1),
        "scoped token: {acr:?}"
    );
    assert_eq!(
        b["status"]["tokenExpirationTime"]
            .as_str()
            .map(str::to_string),
        jwt_expiry(&password)
    );
}

#[test]
fn v1beta1_scenario_04_token_failure_is_a_status_error() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(
        &w,
        json!({"managedIdentityClientID": "00000000-0000-0000-0000-000000000099"}),
    );
    let b = w.wait_error(BINDINGS_V1BETA1, NS, "b", |e| !e.is_empty());
    let err = b["status"]["error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("failed to retrieve ACR access token: "),
        "{err}"
    );
    assert!(secret(&w).is_none());
}

#[test]
fn v1beta1_scenario_05_disallowed_server_fails_before_any_token_request() {
    let mut w = World::start();
    let _p = start(&mut w, &["--allowed-acr-server-suffixes=azurecr.io"]);
    create(
        &w,
        json!({"acrServer": "registry.azurecr.io.attacker.example.com"}),
    );
    let b = w.wait_error(BINDINGS_V1BETA1, NS, "b", |e| !e.is_empty());
    assert_eq!(
        b["status"]["error"],
        "ACR server \"registry.azurecr.io.attacker.example.com\" is not in the allowed ACR server suffixes: azurecr.io"
    );
    assert!(w.azure.shared.requests().is_empty(), "no Azure request");
    assert!(secret(&w).is_none());
}

#[test]
fn v1beta1_scenario_06_removed_reference_is_added_back() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    ready(&w);
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    w.set_pull_secrets(NS, "default", &[]);
    w.wait_pull_secrets(NS, "default", &[SECRET]);
}

#[test]
fn v1beta1_scenario_07_v1beta2_names_come_before_v1beta1_names() {
    let mut w = World::start();
    w.set_pull_secrets(NS, "default", &["acr-pull-other"]);
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    ready(&w);
    w.wait_pull_secrets(NS, "default", &["acr-pull-other", SECRET]);
}

#[test]
fn v1beta1_scenario_08_status_mirrors_the_secret() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    ready(&w);
    w.wait_for("status equal to the annotations", WAIT, || {
        let b = binding(&w);
        let s = secret(&w)?;
        (b["status"]["tokenExpirationTime"] == annotation(&s, EXPIRY_ANNOTATION).as_str()
            && b["status"]["lastTokenRefreshTime"] == annotation(&s, REFRESH_ANNOTATION).as_str())
        .then_some(())
    });
    let b = binding(&w);
    let refreshed = parse_rfc3339(b["status"]["lastTokenRefreshTime"].as_str().unwrap_or(""))
        .expect("refresh time parses");
    assert!((refreshed - now_unix()).abs() < 60);
}

#[test]
fn v1beta1_scenario_09_expiry_within_30_minutes_refreshes_the_secret() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    ready(&w);
    let expiry = rfc3339(now_unix() + 20 * 60).unwrap();
    let refresh = rfc3339(now_unix() - 3600).unwrap();
    w.edit("secrets", NS, SECRET, |o| {
        o["metadata"]["annotations"][EXPIRY_ANNOTATION] = json!(expiry);
        o["metadata"]["annotations"][REFRESH_ANNOTATION] = json!(refresh);
    });
    let s = w.wait_for("a refreshed secret", WAIT, || {
        secret(&w).filter(|s| annotation(s, EXPIRY_ANNOTATION) != expiry)
    });
    assert_pull_secret(&w, &s, &binding(&w), REGISTRY, "b");
    assert!(parse_rfc3339(&annotation(&s, EXPIRY_ANNOTATION)).unwrap() > now_unix() + 30 * 60);
}

#[test]
fn v1beta1_scenario_10_stale_status_is_corrected() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    let (_, s) = ready(&w);
    w.edit_status(BINDINGS_V1BETA1, NS, "b", |o| {
        o["status"]["tokenExpirationTime"] = json!("2020-01-01T01:00:00Z");
    });
    w.wait_for("the status corrected", WAIT, || {
        (binding(&w)["status"]["tokenExpirationTime"] == annotation(&s, EXPIRY_ANNOTATION).as_str())
            .then_some(())
    });
}

#[test]
fn v1beta1_scenarios_11_12_extraneous_reference_removed_then_secret_deleted() {
    let mut w = World::start();
    let p = start(&mut w, &[]);
    create(&w, json!({}));
    let (b, _) = ready(&w);
    drop(p);
    let old = "b-msi-acrpull-secret-whatever";
    w.api
        .create("secrets", NS, extraneous_secret(&b, old))
        .unwrap();
    w.set_pull_secrets(NS, "default", &[SECRET, old]);
    w.api.clear_log();
    let _p = start(&mut w, &[]);
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    w.wait_for("the extraneous secret deleted", WAIT, || {
        w.api.get("secrets", NS, old).is_none().then_some(())
    });
    // The emulator logs a request once it has answered it, a moment after the object is gone.
    let writes = w.wait_for("the delete in the request log", WAIT, || {
        let writes = w.controller_writes();
        writes
            .iter()
            .any(|r| r.verb == "delete" && r.name == old)
            .then_some(writes)
    });
    let unref = writes.iter().position(|r| r.resource == "serviceaccounts");
    let delete = writes
        .iter()
        .position(|r| r.verb == "delete" && r.name == old);
    assert!(
        unref.is_some() && unref < delete,
        "unreference before delete: {writes:?}"
    );
}

#[test]
fn v1beta1_scenario_13_up_to_date_binding_makes_no_writes() {
    let mut w = World::start();
    let p = start(&mut w, &[]);
    create(&w, json!({}));
    ready(&w);
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    let settled = w.wait_for("a pass with nothing to do", WAIT, || {
        let n = idle_passes(&p);
        (n > 0).then_some(n)
    });
    w.api.clear_log();
    let imds = w.azure.imds.counters();
    let acr = w.azure.acr.counters();
    w.edit(BINDINGS_V1BETA1, NS, "b", |o| {
        o["metadata"]["labels"] = json!({"example.com/poke": "1"});
    });
    w.wait_for("the pass after the poke", WAIT, || {
        (idle_passes(&p) > settled).then_some(())
    });
    assert!(
        w.controller_writes().is_empty(),
        "{:?}",
        w.controller_writes()
    );
    assert_eq!(w.azure.imds.counters(), imds);
    assert_eq!(w.azure.acr.counters(), acr);
}

#[test]
fn v1beta1_scenario_14_previous_service_account_loses_the_reference() {
    let mut w = World::start();
    w.service_account(NS, "delegate", json!({}));
    let _p = start(&mut w, &[]);
    create(&w, json!({"serviceAccountName": "delegate"}));
    ready(&w);
    w.wait_pull_secrets(NS, "delegate", &[SECRET]);
    // Back to the default ServiceAccount: upstream never finds the old one (spec §2.12).
    w.edit(BINDINGS_V1BETA1, NS, "b", |o| {
        if let Some(spec) = o["spec"].as_object_mut() {
            spec.remove("serviceAccountName");
        }
    });
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    w.wait_pull_secrets(NS, "delegate", &[]);
}

#[test]
fn v1beta1_scenario_15_service_account_change_during_cleanup_keeps_unrelated_entries() {
    let mut w = World::start();
    w.service_account(NS, "delegate", json!({}));
    let p = start(&mut w, &[]);
    create(&w, json!({"serviceAccountName": "delegate"}));
    let (b, _) = ready(&w);
    drop(p);
    let old = "b-msi-acrpull-secret-whatever";
    w.api
        .create("secrets", NS, extraneous_secret(&b, old))
        .unwrap();
    w.set_pull_secrets(NS, "delegate", &[SECRET, old, "extraneous"]);
    w.edit(BINDINGS_V1BETA1, NS, "b", |o| {
        o["spec"]["serviceAccountName"] = json!("");
    });
    let _p = start(&mut w, &[]);
    w.wait_pull_secrets(NS, "delegate", &["extraneous"]);
    w.wait_pull_secrets(NS, "default", &[SECRET]);
}

#[test]
fn v1beta1_scenario_16_changed_server_regenerates() {
    let mut w = World::start();
    w.add_granted_registry("other.azurecr.io");
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    let (_, s) = ready(&w);
    let inputs = annotation(&s, INPUTS_ANNOTATION);
    w.edit(BINDINGS_V1BETA1, NS, "b", |o| {
        o["spec"]["acrServer"] = json!("other.azurecr.io");
    });
    let s = w.wait_for("a secret for the new server", WAIT, || {
        secret(&w).filter(|s| annotation(s, INPUTS_ANNOTATION) != inputs)
    });
    assert_pull_secret(&w, &s, &binding(&w), "other.azurecr.io", "b");
}

#[test]
fn v1beta1_scenario_17_changed_resource_id_is_cleaned_and_regenerates() {
    let mut w = World::start();
    let two = w.add_identity(2);
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    let (_, s) = ready(&w);
    let inputs = annotation(&s, INPUTS_ANNOTATION);
    // `path.Clean` semantics: doubled and trailing slashes go.
    let unclean = format!(
        "{}/",
        two.resource_id
            .replace("/resourceGroups/", "//resourceGroups/")
    );
    w.edit(BINDINGS_V1BETA1, NS, "b", |o| {
        o["spec"]["managedIdentityResourceID"] = json!(unclean);
    });
    regenerated(&w, &inputs);
    let imds = w.azure.imds.counters();
    assert_eq!(
        imds.issued.get(&(two.client_id.clone(), ARM.into())),
        Some(&1),
        "{imds:?}"
    );
}

#[test]
fn v1beta1_scenario_18_client_id_set_regenerates_and_wins_over_the_resource_id() {
    let mut w = World::start();
    let two = w.add_identity(2);
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    let (_, s) = ready(&w);
    let inputs = annotation(&s, INPUTS_ANNOTATION);
    w.edit(BINDINGS_V1BETA1, NS, "b", |o| {
        o["spec"]["managedIdentityClientID"] = json!(two.client_id);
    });
    regenerated(&w, &inputs);
    let acr = w.azure.acr.counters();
    assert_eq!(
        acr.tokens
            .get(&(REGISTRY.into(), two.object_id.clone(), SCOPE.into())),
        Some(&1),
        "{acr:?}"
    );
}

#[test]
fn v1beta1_scenario_19_changed_scope_regenerates() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    let (_, s) = ready(&w);
    let inputs = annotation(&s, INPUTS_ANNOTATION);
    w.edit(BINDINGS_V1BETA1, NS, "b", |o| {
        o["spec"]["scope"] = json!("repository:other:pull");
    });
    regenerated(&w, &inputs);
    let acr = w.azure.acr.counters();
    assert_eq!(
        acr.tokens.get(&(
            REGISTRY.into(),
            identity(1).object_id,
            "repository:other:pull".into()
        )),
        Some(&1),
        "{acr:?}"
    );
}

#[test]
fn v1beta1_unscoped_binding_gets_the_refresh_token() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(&w, json!({"scope": ""}));
    let (b, s) = ready(&w);
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    let acr = w.azure.acr.counters();
    assert!(acr.tokens.is_empty(), "no /oauth2/token call: {acr:?}");
    assert_eq!(
        acr.exchanges.get(&(REGISTRY.into(), identity(1).object_id)),
        Some(&1)
    );
}

#[test]
fn v1beta1_scenarios_20_22_deletion_unreferences_deletes_the_secret_then_drops_the_finalizer() {
    let mut w = World::start();
    let _p = start(&mut w, &[]);
    create(&w, json!({}));
    ready(&w);
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    w.api.clear_log();
    w.api.delete(BINDINGS_V1BETA1, NS, "b").unwrap();
    w.wait_for("the binding gone", WAIT, || {
        w.api.get(BINDINGS_V1BETA1, NS, "b").is_none().then_some(())
    });
    assert!(secret(&w).is_none());
    assert!(w.pull_secrets(NS, "default").is_empty());
    let writes = w.controller_writes();
    // The main resource only: a late status write of the last pass may show up too.
    let at = |res: &str, verb: &str| {
        writes
            .iter()
            .position(|r| r.resource == res && r.verb == verb && r.subresource.is_empty())
            .unwrap_or_else(|| panic!("no {verb} {res}: {writes:?}"))
    };
    let unref = at("serviceaccounts", "patch");
    let delete = at("secrets", "delete");
    let finalizer = at("acrpullbindings", "patch");
    assert!(unref < delete && delete < finalizer, "{writes:?}");
}

#[test]
fn v1beta1_legacy_unlabelled_secret_is_adopted_and_labelled() {
    let mut w = World::start();
    let b = create(&w, json!({}));
    // What msi-acrpull v0.1.3 and earlier left: owner reference, no label.
    let legacy = w
        .api
        .create(
            "secrets",
            NS,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": SECRET, "namespace": NS,
                    "ownerReferences": [{"apiVersion": "msi-acrpull.microsoft.com/v1beta1",
                        "kind": "AcrPullBinding", "name": "b", "uid": b["metadata"]["uid"],
                        "controller": true, "blockOwnerDeletion": true}]},
                "data": {".dockerconfigjson": "e30="}
            }),
        )
        .unwrap();
    w.set_pull_secrets(NS, "default", &[SECRET]);
    let _p = start(&mut w, &[]);
    let (b, s) = ready(&w);
    assert_eq!(
        s["metadata"]["uid"], legacy["metadata"]["uid"],
        "updated in place"
    );
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    assert_eq!(w.pull_secrets(NS, "default"), [SECRET]);
}

#[test]
fn v1beta1_arm_resource_environment_variable_overrides_the_imds_resource() {
    let mut w = World::start();
    let opts = AcrpullOptions {
        env: vec![
            ("ACR_SERVER".into(), REGISTRY.into()),
            ("MANAGED_IDENTITY_CLIENT_ID".into(), identity(1).client_id),
            (
                "ARM_RESOURCE".into(),
                "https://management.usgovcloudapi.net/".into(),
            ),
        ],
        ..AcrpullOptions::default()
    };
    let _p = w.start_acrpull(bin(), &opts);
    create(&w, json!({}));
    ready(&w);
    let imds = w.azure.imds.counters();
    assert_eq!(
        imds.issued.get(&(
            identity(1).client_id,
            "https://management.usgovcloudapi.net/".into()
        )),
        Some(&1),
        "{imds:?}"
    );
}

#[test]
fn v1beta1_without_any_identity_is_a_status_error() {
    let mut w = World::start();
    let opts = AcrpullOptions {
        env: vec![("ACR_SERVER".into(), REGISTRY.into())],
        ..AcrpullOptions::default()
    };
    let _p = w.start_acrpull(bin(), &opts);
    create(&w, json!({}));
    let b = w.wait_error(BINDINGS_V1BETA1, NS, "b", |e| !e.is_empty());
    assert_eq!(
        b["status"]["error"],
        "either a client ID or a resource ID is required"
    );
    assert!(w.azure.shared.requests().is_empty());
}

#[test]
fn v1beta1_secret_written_by_upstream_is_kept_as_it_is() {
    let mut w = World::start();
    let b = create(&w, json!({"scope": "repository:testing:pull,push"}));
    // Upstream's inputs hash for resource ID `defaultResourceID` and server `DefaultACRServer`
    // (spec §10), and fresh times.
    let upstream = w
        .api
        .create(
            "secrets",
            NS,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": SECRET, "namespace": NS, "labels": {BINDING_LABEL: "b"},
                    "annotations": {
                        INPUTS_ANNOTATION: "22xcczzccamzxpnpzuzes776qx9hc0r97keomc9lwybt",
                        REFRESH_ANNOTATION: rfc3339(now_unix() - 60).unwrap(),
                        EXPIRY_ANNOTATION: rfc3339(now_unix() + 3 * 3600).unwrap()},
                    "ownerReferences": [{"apiVersion": "msi-acrpull.microsoft.com/v1beta1",
                        "kind": "AcrPullBinding", "name": "b", "uid": b["metadata"]["uid"],
                        "controller": true, "blockOwnerDeletion": true}]},
                "data": {".dockerconfigjson": "e30="}
            }),
        )
        .unwrap();
    let opts = AcrpullOptions {
        args: vec!["--allowed-acr-server-suffixes=*".into()],
        env: vec![
            ("ACR_SERVER".into(), "DefaultACRServer".into()),
            (
                "MANAGED_IDENTITY_RESOURCE_ID".into(),
                "defaultResourceID".into(),
            ),
        ],
        ..AcrpullOptions::default()
    };
    let _p = w.start_acrpull(bin(), &opts);
    w.wait_ready(BINDINGS_V1BETA1, NS, "b");
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    assert_eq!(
        secret(&w).unwrap()["metadata"]["resourceVersion"],
        upstream["metadata"]["resourceVersion"],
        "not regenerated"
    );
    assert!(w.azure.shared.requests().is_empty(), "no token requested");
}

#[test]
fn v1beta1_new_binding_costs_exactly_four_writes() {
    let mut w = World::start();
    let p = start(&mut w, &[]);
    create(&w, json!({}));
    ready(&w);
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    w.wait_for("a pass with nothing to do", WAIT, || {
        (idle_passes(&p) > 0).then_some(())
    });
    let writes: Vec<String> = w
        .controller_writes()
        .iter()
        .map(|r| format!("{} {} {}", r.verb, r.resource, r.subresource))
        .collect();
    assert_eq!(
        writes,
        [
            "patch acrpullbindings ",
            "create secrets ",
            "patch serviceaccounts ",
            "patch acrpullbindings status"
        ]
    );
}

#[test]
fn v1beta1_server_with_a_path_is_refused_even_when_every_suffix_is_allowed() {
    let mut w = World::start();
    let _p = start(&mut w, &["--allowed-acr-server-suffixes=*"]);
    create(
        &w,
        json!({"acrServer": "myregistry.azurecr.io/oauth2/exchange"}),
    );
    let b = w.wait_error(BINDINGS_V1BETA1, NS, "b", |e| !e.is_empty());
    assert_eq!(
        b["status"]["error"],
        "ACR server \"myregistry.azurecr.io/oauth2/exchange\" is invalid: server must be a host name without scheme, path, query, or fragment"
    );
    assert!(
        w.azure.shared.requests().is_empty(),
        "no token left the process"
    );
}

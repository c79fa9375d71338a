//! End to end, the v1beta1 reconcile scenarios of spec §7 (1–22): the real acrpull binary with
//! upstream's environment defaults, against the emulated API server and the fake Azure. The
//! scenarios v1beta2 shares are written once, in `versions`.

use acrpull_testkit::kube::BINDINGS_V1BETA1;
use acrpull_testkit::world::{
    assert_pull_secret, identity, parse_rfc3339, rfc3339, AcrpullOptions, World, BINDING_LABEL,
    EXPIRY_ANNOTATION, INPUTS_ANNOTATION, REFRESH_ANNOTATION, REGISTRY, WAIT,
};
use serde_json::{json, Value};

use crate::versions::{annotation, regenerated, scenarios, v1beta1_binding, Version, NS};
use crate::{bin, now_unix};

const V: Version = Version::V1beta1;
const SECRET: &str = "b-msi-acrpull-secret";
const ARM: &str = "https://management.azure.com/";

scenarios!(V);

/// Creates binding `b` relying on the environment defaults, with `spec` fields added.
fn create(w: &World, spec: Value) -> Value {
    w.api
        .create(BINDINGS_V1BETA1, NS, v1beta1_binding(spec))
        .expect("the binding can be created")
}

#[test]
fn scenario_05_disallowed_server_fails_before_any_token_request() {
    let mut w = World::start();
    let _p = V.start(&mut w, &["--allowed-acr-server-suffixes=azurecr.io"]);
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
    assert!(V.secret(&w).is_none());
}

#[test]
fn scenario_09_expiry_within_30_minutes_refreshes_the_secret() {
    let mut w = World::start();
    let _p = V.start(&mut w, &[]);
    create(&w, json!({}));
    V.ready(&w);
    let expiry = rfc3339(now_unix() + 20 * 60).unwrap();
    let refresh = rfc3339(now_unix() - 3600).unwrap();
    w.edit("secrets", NS, SECRET, |o| {
        o["metadata"]["annotations"][EXPIRY_ANNOTATION] = json!(expiry);
        o["metadata"]["annotations"][REFRESH_ANNOTATION] = json!(refresh);
    });
    let s = w.wait_for("a refreshed secret", WAIT, || {
        V.secret(&w)
            .filter(|s| annotation(s, EXPIRY_ANNOTATION) != expiry)
    });
    assert_pull_secret(&w, &s, &V.get(&w), REGISTRY, "b");
    assert!(parse_rfc3339(&annotation(&s, EXPIRY_ANNOTATION)).unwrap() > now_unix() + 30 * 60);
}

#[test]
fn scenario_14_previous_service_account_loses_the_reference() {
    let mut w = World::start();
    w.service_account(NS, "delegate", json!({}));
    let _p = V.start(&mut w, &[]);
    create(&w, json!({"serviceAccountName": "delegate"}));
    V.ready(&w);
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
fn scenario_17_changed_resource_id_is_cleaned_and_regenerates() {
    let mut w = World::start();
    let two = w.add_identity(2);
    let _p = V.start(&mut w, &[]);
    create(&w, json!({}));
    let (_, s) = V.ready(&w);
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
    regenerated(&w, V, &inputs, REGISTRY);
    let imds = w.azure.imds.counters();
    assert_eq!(
        imds.issued.get(&(two.client_id.clone(), ARM.into())),
        Some(&1),
        "{imds:?}"
    );
}

#[test]
fn scenario_19_changed_scope_regenerates() {
    let mut w = World::start();
    let _p = V.start(&mut w, &[]);
    create(&w, json!({}));
    let (_, s) = V.ready(&w);
    let inputs = annotation(&s, INPUTS_ANNOTATION);
    w.edit(BINDINGS_V1BETA1, NS, "b", |o| {
        o["spec"]["scope"] = json!("repository:other:pull");
    });
    regenerated(&w, V, &inputs, REGISTRY);
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
fn unscoped_binding_gets_the_refresh_token() {
    let mut w = World::start();
    let _p = V.start(&mut w, &[]);
    create(&w, json!({"scope": ""}));
    let (b, s) = V.ready(&w);
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    let acr = w.azure.acr.counters();
    assert!(acr.tokens.is_empty(), "no /oauth2/token call: {acr:?}");
    assert_eq!(
        acr.exchanges.get(&(REGISTRY.into(), identity(1).object_id)),
        Some(&1)
    );
}

#[test]
fn legacy_unlabelled_secret_is_adopted_and_labelled() {
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
    let _p = V.start(&mut w, &[]);
    let (b, s) = V.ready(&w);
    assert_eq!(
        s["metadata"]["uid"], legacy["metadata"]["uid"],
        "updated in place"
    );
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    assert_eq!(w.pull_secrets(NS, "default"), [SECRET]);
}

#[test]
fn arm_resource_environment_variable_overrides_the_imds_resource() {
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
    V.ready(&w);
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
fn without_any_identity_is_a_status_error() {
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
fn secret_written_by_upstream_is_kept_as_it_is() {
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
        V.secret(&w).unwrap()["metadata"]["resourceVersion"],
        upstream["metadata"]["resourceVersion"],
        "not regenerated"
    );
    assert!(w.azure.shared.requests().is_empty(), "no token requested");
}

#[test]
fn server_with_a_path_is_refused_even_when_every_suffix_is_allowed() {
    let mut w = World::start();
    let _p = V.start(&mut w, &["--allowed-acr-server-suffixes=*"]);
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

//! End to end, the v1beta2 reconcile scenarios of spec §7 (1–4, 8–25): the real acrpull binary
//! against the emulated API server and the fake Azure, asserting the objects the server holds.
//! The scenarios v1beta1 shares are written once, in `versions`.

use std::time::Duration;

use acrpull_testkit::kube::BINDINGS_V1BETA2;
use acrpull_testkit::world::{
    assert_pull_secret, binding_v1beta2, identity, parse_rfc3339, rfc3339, World, BINDING_LABEL,
    EXPIRY_ANNOTATION, FINALIZER, INPUTS_ANNOTATION, REFRESH_ANNOTATION, REGISTRY, WAIT,
};
use serde_json::json;

use crate::versions::{annotation, scenarios, Version, NS, SCOPE};
use crate::{acrpull, now_unix};

const V: Version = Version::V1beta2;
const SECRET: &str = "acr-pull-b";

scenarios!(V);

#[test]
fn scenario_03_managed_identity_by_resource_id_creates_the_secret() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    let mut obj = binding_v1beta2(NS, "b", REGISTRY, SCOPE, "", "default");
    obj["spec"]["auth"] = json!({"managedIdentity": {"resourceID": identity(1).resource_id}});
    V.create_obj(&w, obj);
    let (b, s) = V.ready(&w);
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    let imds = w.azure.imds.counters();
    assert_eq!(
        imds.issued
            .get(&(
                identity(1).client_id,
                "https://management.core.windows.net/".into()
            ))
            .copied(),
        Some(1),
        "{imds:?}"
    );
    assert!(
        w.api.token_requests().is_empty(),
        "no ServiceAccount token for MI"
    );
}

#[test]
fn scenario_09_disallowed_server_fails_before_any_token_request() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    V.create_obj(
        &w,
        binding_v1beta2(
            NS,
            "b",
            "registry.example.com",
            SCOPE,
            &identity(1).client_id,
            "default",
        ),
    );
    let b = w.wait_error(BINDINGS_V1BETA2, NS, "b", |e| !e.is_empty());
    assert_eq!(
        b["status"]["error"],
        "ACR server \"registry.example.com\" is not in the allowed ACR server suffixes: azurecr.io, azurecr.us, azurecr.cn"
    );
    assert_eq!(b["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(w.azure.imds.counters().requests, 0);
    assert!(w.azure.shared.requests().is_empty(), "no Azure request");
    assert!(V.secret(&w).is_none());
}

#[test]
fn scenario_09_allow_list_flag_restricts_and_star_disables_the_check() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &["--allowed-acr-server-suffixes=azurecr.io"]);
    w.add_granted_registry("other.azurecr.cn");
    V.create_obj(
        &w,
        binding_v1beta2(
            NS,
            "b",
            "other.azurecr.cn",
            SCOPE,
            &identity(1).client_id,
            "default",
        ),
    );
    let b = w.wait_error(BINDINGS_V1BETA2, NS, "b", |e| !e.is_empty());
    assert_eq!(
        b["status"]["error"],
        "ACR server \"other.azurecr.cn\" is not in the allowed ACR server suffixes: azurecr.io"
    );
    assert_eq!(w.azure.imds.counters().requests, 0);
    drop(_p);

    // `*` lets any host through validation: the token flow is attempted (and the fake listener,
    // whose certificate does not cover this host, refuses the TLS handshake).
    let addr = w.azure_addr();
    let _p = acrpull(
        &mut w,
        &[
            "--allowed-acr-server-suffixes=*",
            &format!("--connect-to=registry.example.com={addr}"),
        ],
    );
    V.create_obj(
        &w,
        binding_v1beta2(
            NS,
            "c",
            "registry.example.com",
            SCOPE,
            &identity(1).client_id,
            "default",
        ),
    );
    let c = w.wait_error(BINDINGS_V1BETA2, NS, "c", |e| !e.is_empty());
    let err = c["status"]["error"].as_str().unwrap_or_default();
    assert!(!err.contains("allowed ACR server suffixes"), "{err}");
    assert!(err.starts_with("failed to retrieve ACR token: "), "{err}");
    assert!(w.azure.imds.counters().requests >= 1);
}

#[test]
fn scenario_13_secret_refreshed_past_half_life() {
    let mut w = World::start();
    w.azure
        .acr
        .set_access_token_lifetime(Duration::from_secs(4));
    let _p = acrpull(&mut w, &[]);
    V.create(&w);
    let (b, s) = V.ready(&w);
    let first = assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    let issued = parse_rfc3339(&annotation(&s, REFRESH_ANNOTATION)).expect("refresh parses");
    let expiry = parse_rfc3339(&annotation(&s, EXPIRY_ANNOTATION)).expect("expiry parses");
    assert!(expiry - issued <= 5, "the fake issued a short token");
    // Tokens issued from now on are long-lived, whichever pass (timer or event) refreshes.
    w.azure
        .acr
        .set_access_token_lifetime(Duration::from_secs(3600));
    // Past half of the lifetime (wall clock), any event makes the pass refresh the token.
    w.wait_for("half-life to pass", Duration::from_secs(10), || {
        (now_unix() > issued + (expiry - issued) / 2 + 1).then_some(())
    });
    w.edit(BINDINGS_V1BETA2, NS, "b", |o| {
        o["metadata"]["annotations"] = json!({"example.com/poke": "1"});
    });
    let s = w.wait_for("a refreshed secret", WAIT, || {
        V.secret(&w)
            .filter(|s| annotation(s, EXPIRY_ANNOTATION) != rfc3339(expiry).unwrap())
    });
    let b = V.get(&w);
    let second = assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    assert_ne!(first, second, "a new token");
    assert!(parse_rfc3339(&annotation(&s, EXPIRY_ANNOTATION)).unwrap() > now_unix() + 3000);
    w.wait_for("status of the new token", WAIT, || {
        (V.get(&w)["status"]["tokenExpirationTime"] == annotation(&s, EXPIRY_ANNOTATION).as_str())
            .then_some(())
    });
}

#[test]
fn scenario_13_doctored_annotations_past_the_boundary_are_replaced() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    V.create(&w);
    V.ready(&w);
    // Upstream's table row: refreshed 36 s ago, expiring in 24 s = past 50 % of the lifetime.
    let refresh = rfc3339(now_unix() - 36).unwrap();
    let expiry = rfc3339(now_unix() + 24).unwrap();
    w.edit("secrets", NS, SECRET, |o| {
        o["metadata"]["annotations"][REFRESH_ANNOTATION] = json!(refresh);
        o["metadata"]["annotations"][EXPIRY_ANNOTATION] = json!(expiry);
    });
    let s = w.wait_for("the secret rewritten", WAIT, || {
        V.secret(&w)
            .filter(|s| annotation(s, EXPIRY_ANNOTATION) != expiry)
    });
    assert_pull_secret(&w, &s, &V.get(&w), REGISTRY, "b");
    assert!(parse_rfc3339(&annotation(&s, EXPIRY_ANNOTATION)).unwrap() > now_unix() + 600);
}

#[test]
fn scenario_18_changed_service_account_moves_the_reference() {
    let mut w = World::start();
    w.service_account(NS, "other", json!({}));
    let _p = acrpull(&mut w, &[]);
    V.create(&w);
    let (_, s) = V.ready(&w);
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    let inputs = annotation(&s, INPUTS_ANNOTATION);
    w.edit(BINDINGS_V1BETA2, NS, "b", |o| {
        o["spec"]["serviceAccountName"] = json!("other");
    });
    w.wait_pull_secrets(NS, "other", &[SECRET]);
    w.wait_pull_secrets(NS, "default", &[]);
    // The ServiceAccount is part of v1beta2's inputs hash: the Secret is regenerated.
    let s = w.wait_for("a regenerated secret", WAIT, || {
        V.secret(&w)
            .filter(|s| annotation(s, INPUTS_ANNOTATION) != inputs)
    });
    assert_pull_secret(&w, &s, &V.get(&w), REGISTRY, "b");
}

#[test]
fn scenario_22_switch_to_resource_id_regenerates_the_secret() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    V.create(&w);
    let (_, s) = V.ready(&w);
    let inputs = annotation(&s, INPUTS_ANNOTATION);
    w.edit(BINDINGS_V1BETA2, NS, "b", |o| {
        o["spec"]["auth"]["managedIdentity"] = json!({"resourceID": identity(1).resource_id});
    });
    let s = w.wait_for("a secret for the resource ID", WAIT, || {
        V.secret(&w)
            .filter(|s| annotation(s, INPUTS_ANNOTATION) != inputs)
    });
    assert_pull_secret(&w, &s, &V.get(&w), REGISTRY, "b");
}

#[test]
fn failure_keeps_times_secret_and_reference_then_recovers() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    V.create(&w);
    let (good, s) = V.ready(&w);
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    // Upstream's e2e: a scope the registry refuses.
    w.edit(BINDINGS_V1BETA2, NS, "b", |o| {
        o["spec"]["acr"]["scope"] = json!("invalid!>?$q34m2,");
    });
    let bad = w.wait_error(BINDINGS_V1BETA2, NS, "b", |e| !e.is_empty());
    let err = bad["status"]["error"].as_str().unwrap_or_default();
    assert!(err.starts_with("failed to retrieve ACR token: "), "{err}");
    assert_eq!(
        bad["status"]["tokenExpirationTime"],
        good["status"]["tokenExpirationTime"]
    );
    assert_eq!(
        bad["status"]["lastTokenRefreshTime"],
        good["status"]["lastTokenRefreshTime"]
    );
    let kept = V.secret(&w).expect("the previous secret is kept");
    assert_eq!(kept["data"], s["data"]);
    assert_eq!(w.pull_secrets(NS, "default"), [SECRET]);

    w.edit(BINDINGS_V1BETA2, NS, "b", |o| {
        o["spec"]["acr"]["scope"] = json!(SCOPE);
    });
    let b = w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    assert!(b["status"]["error"].is_null(), "{b}");
}

#[test]
fn secret_deleted_by_a_user_is_recreated() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    V.create(&w);
    let (b, s) = V.ready(&w);
    w.api.delete("secrets", NS, SECRET).unwrap();
    let again = w.wait_for("the secret recreated", WAIT, || {
        V.secret(&w)
            .filter(|n| n["metadata"]["uid"] != s["metadata"]["uid"])
    });
    assert_pull_secret(&w, &again, &b, REGISTRY, "b");
    assert_eq!(w.pull_secrets(NS, "default"), [SECRET]);
}

#[test]
fn deleted_service_account_is_a_status_error_and_the_secret_is_kept() {
    let mut w = World::start();
    w.service_account(NS, "robot", json!({}));
    let _p = acrpull(&mut w, &[]);
    V.create_for(&w, "robot");
    let (good, _) = V.ready(&w);
    w.api.delete("serviceaccounts", NS, "robot").unwrap();
    let b = w.wait_error(BINDINGS_V1BETA2, NS, "b", |e| !e.is_empty());
    assert_eq!(b["status"]["error"], "service account \"robot\" not found");
    assert_eq!(
        b["status"]["tokenExpirationTime"],
        good["status"]["tokenExpirationTime"]
    );
    assert!(V.secret(&w).is_some());
    // Recreated: attached again.
    w.service_account(NS, "robot", json!({}));
    w.wait_pull_secrets(NS, "robot", &[SECRET]);
    w.wait_ready(BINDINGS_V1BETA2, NS, "b");
}

#[test]
fn foreign_secret_with_the_expected_name_is_never_touched() {
    let mut w = World::start();
    let foreign = w
        .api
        .create(
            "secrets",
            NS,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": SECRET, "namespace": NS},
                   "data": {"k": "dg=="}}),
        )
        .unwrap();
    let _p = acrpull(&mut w, &[]);
    V.create(&w);
    let b = w.wait_error(BINDINGS_V1BETA2, NS, "b", |e| !e.is_empty());
    assert_eq!(
        b["status"]["error"],
        "secret \"acr-pull-b\" exists and is not owned by this binding"
    );
    let now = V.secret(&w).unwrap();
    assert_eq!(
        now["metadata"]["resourceVersion"],
        foreign["metadata"]["resourceVersion"]
    );
    assert!(w.pull_secrets(NS, "default").is_empty());
    // Deleting the binding leaves the foreign Secret alone too.
    w.api.delete(BINDINGS_V1BETA2, NS, "b").unwrap();
    w.wait_for("the binding gone", WAIT, || {
        w.api.get(BINDINGS_V1BETA2, NS, "b").is_none().then_some(())
    });
    assert_eq!(
        V.secret(&w).unwrap()["metadata"]["uid"],
        foreign["metadata"]["uid"]
    );
}

#[test]
fn airgapped_without_cloud_config_is_a_status_error_not_a_crash() {
    let mut w = World::start();
    // As on a cluster whose CRD lacks our validation (or runs upstream's misspelt rule).
    w.api.set_crd_validation(false);
    let mut p = acrpull(&mut w, &[]);
    let mut obj = binding_v1beta2(NS, "b", REGISTRY, SCOPE, &identity(1).client_id, "default");
    obj["spec"]["acr"]["environment"] = json!("AirgappedCloud");
    V.create_obj(&w, obj);
    let b = w.wait_error(BINDINGS_V1BETA2, NS, "b", |e| !e.is_empty());
    assert_eq!(
        b["status"]["error"],
        "a custom cloud configuration must be present for air-gapped cloud environments"
    );
    assert!(p.exited().is_none(), "acrpull keeps running");
    // And it still serves other bindings.
    V.create_obj(
        &w,
        binding_v1beta2(NS, "c", REGISTRY, SCOPE, &identity(1).client_id, "default"),
    );
    w.wait_ready(BINDINGS_V1BETA2, NS, "c");
}

#[test]
fn sovereign_clouds_use_their_arm_audience() {
    let mut w = World::start();
    w.add_granted_registry("gov.azurecr.us");
    w.add_granted_registry("cn.azurecr.cn");
    let _p = acrpull(&mut w, &[]);
    for (name, server, env) in [
        ("gov", "gov.azurecr.us", "USGovernmentCloud"),
        ("cn", "cn.azurecr.cn", "ChinaCloud"),
    ] {
        let mut obj = binding_v1beta2(NS, name, server, SCOPE, &identity(1).client_id, "default");
        obj["spec"]["acr"]["environment"] = json!(env);
        V.create_obj(&w, obj);
    }
    for (name, server) in [("gov", "gov.azurecr.us"), ("cn", "cn.azurecr.cn")] {
        let b = w.wait_ready(BINDINGS_V1BETA2, NS, name);
        let s = w.wait_for("the secret", WAIT, || {
            w.api.get("secrets", NS, &format!("acr-pull-{name}"))
        });
        assert_pull_secret(&w, &s, &b, server, name);
    }
    let imds = w.azure.imds.counters();
    let resources: Vec<&str> = imds.issued.keys().map(|(_, r)| r.as_str()).collect();
    assert!(
        resources
            .iter()
            .any(|r| r.trim_end_matches('/') == "https://management.core.usgovcloudapi.net"),
        "{imds:?}"
    );
    assert!(
        resources
            .iter()
            .any(|r| r.trim_end_matches('/') == "https://management.core.chinacloudapi.cn"),
        "{imds:?}"
    );
}

#[test]
fn several_scopes_are_sent_as_one_field() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    let scopes = "repository:a:pull repository:b:pull";
    V.create_obj(
        &w,
        binding_v1beta2(NS, "b", REGISTRY, scopes, &identity(1).client_id, "default"),
    );
    let (b, s) = V.ready(&w);
    let password = assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    let acr = w.azure.acr.counters();
    assert_eq!(
        acr.tokens
            .get(&(REGISTRY.into(), identity(1).object_id, scopes.into())),
        Some(&1),
        "{acr:?}"
    );
    assert!(w.azure.acr.authorize(REGISTRY, &password, "a", "pull"));
    assert!(w.azure.acr.authorize(REGISTRY, &password, "b", "pull"));
    assert!(!w.azure.acr.authorize(REGISTRY, &password, "c", "pull"));
}

#[test]
fn conflicting_writes_are_retried_until_they_converge() {
    use acrpull_testkit::kube::{Fault, Matcher};
    let mut w = World::start();
    for (verb, res) in [
        ("patch", "serviceaccounts"),
        ("patch", "acrpullbindings"),
        ("create", "secrets"),
    ] {
        w.api
            .inject(Fault::fail(409, Matcher::verb(verb, res)).times(1));
    }
    let _p = acrpull(&mut w, &[]);
    V.create(&w);
    let (b, s) = V.ready(&w);
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    assert_eq!(b["metadata"]["finalizers"], json!([FINALIZER]));
}

#[test]
fn binding_in_a_new_namespace_waits_for_its_service_account() {
    let mut w = World::start();
    w.api.set_default_sa_delay(Duration::from_millis(1500));
    let _p = acrpull(&mut w, &[]);
    w.api.create_namespace("fresh").unwrap();
    w.api
        .create(
            BINDINGS_V1BETA2,
            "fresh",
            binding_v1beta2(
                "fresh",
                "b",
                REGISTRY,
                SCOPE,
                &identity(1).client_id,
                "default",
            ),
        )
        .unwrap();
    let b = w.wait_ready(BINDINGS_V1BETA2, "fresh", "b");
    let s = w.wait_for("the secret", WAIT, || w.api.get("secrets", "fresh", SECRET));
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    w.wait_pull_secrets("fresh", "default", &[SECRET]);
}

#[test]
fn owned_secret_of_another_type_is_replaced() {
    let mut w = World::start();
    let b = V.create(&w);
    w.api
        .create(
            "secrets",
            NS,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": SECRET, "namespace": NS, "labels": {BINDING_LABEL: "b"},
                    "ownerReferences": [{"apiVersion": "acrpull.microsoft.com/v1beta2",
                        "kind": "AcrPullBinding", "name": "b", "uid": b["metadata"]["uid"],
                        "controller": true, "blockOwnerDeletion": true}]},
                "data": {"k": "dg=="}
            }),
        )
        .unwrap();
    let _p = acrpull(&mut w, &[]);
    let (b, s) = V.ready(&w);
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
}

#[test]
fn empty_client_id_uses_the_node_identity() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    V.create_obj(&w, binding_v1beta2(NS, "b", REGISTRY, SCOPE, "", "default"));
    let (b, s) = V.ready(&w);
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    let imds = w.azure.imds.counters();
    assert_eq!(imds.requests, 1, "{imds:?}");
}

#[test]
fn deletion_keeps_other_finalizers() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    let mut obj = binding_v1beta2(NS, "b", REGISTRY, SCOPE, &identity(1).client_id, "default");
    obj["metadata"]["finalizers"] = json!(["example.com/other"]);
    V.create_obj(&w, obj);
    let b = w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    assert_eq!(
        b["metadata"]["finalizers"],
        json!(["example.com/other", FINALIZER])
    );
    w.api.delete(BINDINGS_V1BETA2, NS, "b").unwrap();
    let b = w.wait_for("our finalizer removed", WAIT, || {
        let b = V.get(&w);
        (b["metadata"]["finalizers"] == json!(["example.com/other"])).then_some(b)
    });
    assert!(b["metadata"]["deletionTimestamp"].is_string());
    assert!(V.secret(&w).is_none());
    assert!(w.pull_secrets(NS, "default").is_empty());
}

#[test]
fn restarted_controller_makes_no_writes_and_no_token_requests() {
    let mut w = World::start();
    let p = acrpull(&mut w, &[]);
    V.create(&w);
    V.ready(&w);
    w.wait_pull_secrets(NS, "default", &[SECRET]);
    w.wait_for("settled", WAIT, || (V.idle_passes(&p) > 0).then_some(()));
    drop(p);
    w.api.clear_log();
    let azure = w.azure.shared.requests().len();
    let p = acrpull(&mut w, &[]);
    w.wait_for("a pass with nothing to do", WAIT, || {
        (V.idle_passes(&p) > 0).then_some(())
    });
    assert!(
        w.controller_writes().is_empty(),
        "{:?}",
        w.controller_writes()
    );
    assert_eq!(w.azure.shared.requests().len(), azure);
}

#[test]
fn secret_written_by_upstream_is_kept_as_it_is() {
    let mut w = World::start();
    w.service_account(NS, "delegate", json!({}));
    let b = V.create_obj(
        &w,
        binding_v1beta2(
            NS,
            "b",
            "registry.azurecr.io",
            "repository:testing:pull,push",
            "client-id",
            "delegate",
        ),
    );
    // Upstream's inputs hash for these inputs (spec §10), and fresh times.
    let upstream = w
        .api
        .create(
            "secrets",
            NS,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": SECRET, "namespace": NS, "labels": {BINDING_LABEL: "b"},
                    "annotations": {
                        INPUTS_ANNOTATION: "bznn8knczhrdktghbm88h4ock013v94i8e8cslwlrob",
                        REFRESH_ANNOTATION: rfc3339(now_unix() - 60).unwrap(),
                        EXPIRY_ANNOTATION: rfc3339(now_unix() + 3600).unwrap()},
                    "ownerReferences": [{"apiVersion": "acrpull.microsoft.com/v1beta2",
                        "kind": "AcrPullBinding", "name": "b", "uid": b["metadata"]["uid"],
                        "controller": true, "blockOwnerDeletion": true}]},
                "data": {".dockerconfigjson": "e30="}
            }),
        )
        .unwrap();
    let _p = acrpull(&mut w, &[]);
    w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    w.wait_pull_secrets(NS, "delegate", &[SECRET]);
    assert_eq!(
        V.secret(&w).unwrap()["metadata"]["resourceVersion"],
        upstream["metadata"]["resourceVersion"],
        "not regenerated"
    );
    assert!(w.azure.shared.requests().is_empty(), "no token requested");
}

#[test]
fn service_account_fields_other_than_pull_secrets_are_untouched() {
    let mut w = World::start();
    w.api
        .create(
            "serviceaccounts",
            NS,
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "robot", "namespace": NS,
                                "labels": {"app": "x"}, "annotations": {"note": "keep"}},
                   "secrets": [{"name": "robot-token"}],
                   "automountServiceAccountToken": false}),
        )
        .unwrap();
    let _p = acrpull(&mut w, &[]);
    V.create_for(&w, "robot");
    V.ready(&w);
    w.wait_pull_secrets(NS, "robot", &[SECRET]);
    let sa = w.api.get("serviceaccounts", NS, "robot").unwrap();
    assert_eq!(sa["secrets"], json!([{"name": "robot-token"}]));
    assert_eq!(sa["automountServiceAccountToken"], false);
    assert_eq!(sa["metadata"]["labels"], json!({"app": "x"}));
    assert_eq!(sa["metadata"]["annotations"], json!({"note": "keep"}));
}

#[test]
fn namespace_deletion_completes() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    w.namespace("team");
    w.api
        .create(
            BINDINGS_V1BETA2,
            "team",
            binding_v1beta2(
                "team",
                "b",
                REGISTRY,
                SCOPE,
                &identity(1).client_id,
                "default",
            ),
        )
        .unwrap();
    w.wait_ready(BINDINGS_V1BETA2, "team", "b");
    w.api.delete("namespaces", "", "team").unwrap();
    w.wait_for("the namespace gone", Duration::from_secs(30), || {
        w.api.get("namespaces", "", "team").is_none().then_some(())
    });
    assert!(w.api.list(BINDINGS_V1BETA2, Some("team")).is_empty());
    assert!(w.api.list("secrets", Some("team")).is_empty());
}

#[test]
fn specs_the_crd_would_refuse_are_status_errors() {
    let mut w = World::start();
    // As on a cluster whose CRD lacks our validation.
    w.api.set_crd_validation(false);
    let _p = acrpull(&mut w, &[]);
    let id = identity(1);
    let cases = [
        (
            "both-ids",
            json!({"managedIdentity": {"clientID": id.client_id, "resourceID": id.resource_id}}),
            "only client or resource ID can be set",
        ),
        (
            "two-methods",
            json!({"managedIdentity": {"clientID": id.client_id},
                   "workloadIdentity": {"serviceAccountRef": "default"}}),
            "only one authentication type can be set",
        ),
        (
            "half-wi",
            json!({"workloadIdentity": {"serviceAccountRef": "default", "clientID": "c"}}),
            "custom client and tenant identifiers must be provided together, if at all",
        ),
    ];
    for (name, auth, _) in &cases {
        let mut obj = binding_v1beta2(NS, name, REGISTRY, SCOPE, "", "default");
        obj["spec"]["auth"] = auth.clone();
        V.create_obj(&w, obj);
    }
    for (name, _, message) in &cases {
        let b = w.wait_error(BINDINGS_V1BETA2, NS, name, |e| !e.is_empty());
        assert_eq!(b["status"]["error"], *message, "{name}");
        assert_eq!(b["metadata"]["finalizers"], json!([FINALIZER]), "{name}");
    }
    assert!(w.azure.shared.requests().is_empty(), "no Azure request");
    // Deletion needs no valid spec.
    w.api.delete(BINDINGS_V1BETA2, NS, "both-ids").unwrap();
    w.wait_for("the invalid binding gone", WAIT, || {
        w.api
            .get(BINDINGS_V1BETA2, NS, "both-ids")
            .is_none()
            .then_some(())
    });
}

#[test]
fn acr_audience_mode_works_with_registries_that_refuse_arm_tokens() {
    use acrpull_testkit::azure::Audiences;
    let mut w = World::start();
    w.add_registry("strict.azurecr.io", Audiences::AcrOnly);
    w.grant(&identity(1).object_id, "strict.azurecr.io", "*", &["pull"]);
    let p = acrpull(&mut w, &[]);
    V.create_obj(
        &w,
        binding_v1beta2(
            NS,
            "b",
            "strict.azurecr.io",
            SCOPE,
            &identity(1).client_id,
            "default",
        ),
    );
    let b = w.wait_error(BINDINGS_V1BETA2, NS, "b", |e| !e.is_empty());
    let err = b["status"]["error"].as_str().unwrap_or_default();
    assert!(err.starts_with("failed to retrieve ACR token: "), "{err}");
    drop(p);

    let _p = acrpull(&mut w, &["--entra-audience=acr"]);
    let b = w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    let s = w.wait_for("the secret", WAIT, || V.secret(&w));
    assert_pull_secret(&w, &s, &b, "strict.azurecr.io", "b");
    let imds = w.azure.imds.counters();
    assert!(
        imds.issued
            .keys()
            .any(|(_, r)| r.trim_end_matches('/') == "https://containerregistry.azure.net"),
        "{imds:?}"
    );
}

#[test]
fn corrupted_secret_annotations_mean_regenerate() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    V.create(&w);
    V.ready(&w);
    for (key, value) in [
        (EXPIRY_ANNOTATION, json!("not a time")),
        (REFRESH_ANNOTATION, json!("")),
        (INPUTS_ANNOTATION, json!("stale")),
    ] {
        let before = V.secret(&w).unwrap();
        w.edit("secrets", NS, SECRET, |o| {
            o["metadata"]["annotations"][key] = value.clone();
        });
        let s = w.wait_for("the secret regenerated", WAIT, || {
            V.secret(&w).filter(|s| {
                s["metadata"]["annotations"][key] != value
                    && s["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
            })
        });
        assert_pull_secret(&w, &s, &V.get(&w), REGISTRY, "b");
    }
}

//! End to end (real binary, test kit, shipped RBAC): workload identity, every cloud's authority
//! and audience, ACR-audience tokens, cross-tenant pulls, and re-minting on identity changes.

use std::time::Duration;

use acrpull_testkit::azure::{Audiences, LoggedRequest};
use acrpull_testkit::kube::{Policies, BINDINGS_V1BETA2, EVENTS};
use acrpull_testkit::world::{
    binding_v1beta2, binding_v1beta2_workload, identity, World, AIRGAPPED_AUTHORITY_HOST,
    CONTROLLER_USER, REGISTRY, SA_TOKEN_AUDIENCE, TENANT,
};
use serde_json::{json, Value};

use crate::acrpull;

const WAIT: Duration = Duration::from_secs(30);
/// The federated application workload-identity bindings authenticate as.
const APP: &str = "aaaaaaaa-0000-0000-0000-000000000001";
/// A second application, for re-minting tests.
const APP2: &str = "aaaaaaaa-0000-0000-0000-000000000002";
/// Another tenant, for cross-tenant pulls.
const OTHER_TENANT: &str = "bbbbbbbb-0000-0000-0000-000000000009";
const SCOPE: &str = "repository:app:pull";

fn annotated(client: &str, tenant: &str) -> Value {
    json!({"azure.workload.identity/client-id": client, "azure.workload.identity/tenant-id": tenant})
}

fn create(w: &World, obj: Value) {
    w.api
        .create(BINDINGS_V1BETA2, "default", obj)
        .expect("the binding is accepted");
}

/// Waits until the binding's status has a token expiry and no error; returns the pull Secret.
fn fulfilled(w: &World, name: &str) -> Value {
    let b = w.wait_for(&format!("binding {name} fulfilled"), WAIT, || {
        let b = w.api.get(BINDINGS_V1BETA2, "default", name)?;
        let ok = b["status"]["tokenExpirationTime"].is_string()
            && b["status"]["error"].as_str().unwrap_or("").is_empty();
        ok.then_some(b)
    });
    assert!(b["status"]["lastTokenRefreshTime"].is_string(), "{b}");
    w.api
        .get("secrets", "default", &format!("acr-pull-{name}"))
        .expect("the pull secret exists")
}

/// Waits for a status error containing `needle`; returns it.
fn failed_with(w: &World, name: &str, needle: &str) -> String {
    w.wait_for(&format!("binding {name} error {needle:?}"), WAIT, || {
        let b = w.api.get(BINDINGS_V1BETA2, "default", name)?;
        let e = b["status"]["error"].as_str()?.to_string();
        e.contains(needle).then_some(e)
    })
}

fn pull_secrets(w: &World, sa: &str) -> Vec<String> {
    w.api
        .get("serviceaccounts", "default", sa)
        .and_then(|s| s["imagePullSecrets"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect()
}

fn entra_requests(w: &World) -> Vec<LoggedRequest> {
    w.azure_requests("entra")
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

fn issued(w: &World, tenant: &str, client: &str) -> u64 {
    w.azure
        .entra
        .counters()
        .issued
        .get(&(tenant.to_string(), client.to_string()))
        .copied()
        .unwrap_or(0)
}

/// No token any fake issued appears in acrpull's output.
fn assert_no_token_leak(w: &World, log: &acrpull_testkit::world::Log) {
    let text = log.text();
    for t in w.azure.issued_tokens() {
        assert!(!text.contains(&t), "an issued token appears in the log");
    }
    assert!(
        !text.contains("eyJ"),
        "something JWT-like appears in the log"
    );
}

fn workload_binding_with_env(env: &str, cloud_config: Option<Value>, server: &str) -> Value {
    let mut b = binding_v1beta2_workload(
        "default",
        "b",
        SCOPE,
        "default",
        Some((APP, TENANT)),
        "default",
    );
    b["spec"]["acr"]["environment"] = json!(env);
    b["spec"]["acr"]["server"] = json!(server);
    if let Some(c) = cloud_config {
        b["spec"]["acr"]["cloudConfig"] = c;
    }
    b
}

// Spec §7 v1beta2 scenario 5: client and tenant from the ServiceAccount's annotations.
#[test]
fn workload_identity_uses_the_service_account_annotations() {
    let mut w = World::start();
    w.service_account("default", "delegate", annotated(APP, TENANT));
    w.federate_service_account("default", "delegate", APP, TENANT);
    let p = acrpull(&mut w, &[]);
    create(
        &w,
        binding_v1beta2_workload("default", "b", SCOPE, "delegate", None, "delegate"),
    );
    let secret = fulfilled(&w, "b");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    w.wait_for("the SA reference", WAIT, || {
        (pull_secrets(&w, "delegate") == ["acr-pull-b"]).then_some(())
    });
    let minted = w.api.token_requests();
    assert!(!minted.is_empty());
    for r in &minted {
        assert_eq!(r.service_account, "delegate");
        assert_eq!(r.audiences, [SA_TOKEN_AUDIENCE]);
        assert_eq!(r.expiration_seconds, 600);
    }
    let e = entra_requests(&w);
    assert!(!e.is_empty());
    for r in &e {
        assert_eq!(r.host.as_deref(), Some("login.microsoftonline.com"));
        assert_eq!(
            r.scope.as_deref(),
            Some("https://management.core.windows.net/")
        );
        assert_eq!(r.path, format!("/{TENANT}/oauth2/v2.0/token"));
    }
    assert_eq!(issued(&w, TENANT, APP), 1);
    assert_no_token_leak(&w, &p.log);
}

// Spec §7 v1beta2 scenario 6: literal client and tenant win; the SA's annotations are ignored.
#[test]
fn workload_identity_literal_ids_ignore_annotations() {
    let mut w = World::start();
    w.service_account(
        "default",
        "delegate",
        annotated("ffffffff-0000-0000-0000-000000000000", TENANT),
    );
    w.federate_service_account("default", "delegate", APP, TENANT);
    let _p = acrpull(&mut w, &[]);
    create(
        &w,
        binding_v1beta2_workload(
            "default",
            "b",
            SCOPE,
            "delegate",
            Some((APP, TENANT)),
            "delegate",
        ),
    );
    fulfilled(&w, "b");
    assert_eq!(issued(&w, TENANT, APP), 1);
    assert!(w.azure.entra.counters().refused.is_empty());
}

// Spec §7 v1beta2 scenario 7: an un-annotated ServiceAccount is a status error, upstream's words.
#[test]
fn workload_identity_without_annotations_is_a_status_error() {
    let mut w = World::start();
    w.service_account("default", "delegate", json!({}));
    let _p = acrpull(&mut w, &[]);
    create(
        &w,
        binding_v1beta2_workload("default", "b", SCOPE, "delegate", None, "delegate"),
    );
    let e = failed_with(&w, "b", "missing");
    assert_eq!(
        e,
        "service account delegate missing azure.workload.identity/client-id annotation"
    );
    assert!(w.api.token_requests().is_empty());
    w.wait_for("an Event about the binding", WAIT, || {
        w.api.list(EVENTS, Some("default")).into_iter().find(|ev| {
            ev["regarding"]["name"] == "b"
                && ev["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("missing azure.workload.identity/client-id"))
        })
    });
}

// Upstream bug: serviceAccountRef was ignored. The token is minted for the referenced SA and
// the Secret still goes to serviceAccountName.
#[test]
fn service_account_ref_is_minted_and_the_secret_goes_to_the_target() {
    let mut w = World::start();
    w.service_account("default", "federated", annotated(APP, TENANT));
    w.federate_service_account("default", "federated", APP, TENANT);
    let p = acrpull(&mut w, &[]);
    create(
        &w,
        binding_v1beta2_workload("default", "b", SCOPE, "federated", None, "default"),
    );
    fulfilled(&w, "b");
    w.wait_for("the target SA reference", WAIT, || {
        (pull_secrets(&w, "default") == ["acr-pull-b"]).then_some(())
    });
    assert!(pull_secrets(&w, "federated").is_empty());
    let minted = w.api.token_requests();
    assert!(!minted.is_empty());
    assert!(minted.iter().all(|r| r.service_account == "federated"));
    assert_no_token_leak(&w, &p.log);
}

#[test]
fn a_missing_referenced_service_account_is_a_status_error() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    create(
        &w,
        binding_v1beta2_workload("default", "b", SCOPE, "ghost", None, "default"),
    );
    let e = failed_with(&w, "b", "ghost");
    assert_eq!(e, "service account \"ghost\" not found");
}

#[test]
fn entra_refusals_reach_status_with_error_and_description_but_no_assertion() {
    let mut w = World::start();
    // Federated for another SA: Entra refuses the subject.
    w.service_account("default", "delegate", annotated(APP, TENANT));
    w.federate_service_account("default", "someone-else", APP, TENANT);
    let p = acrpull(&mut w, &[]);
    create(
        &w,
        binding_v1beta2_workload("default", "b", SCOPE, "delegate", None, "delegate"),
    );
    let e = failed_with(&w, "b", "failed to retrieve ARM token: ");
    assert!(e.starts_with("failed to retrieve ARM token: "), "{e}");
    assert!(e.contains("invalid_client"), "{e}");
    assert!(e.contains("AADSTS700213"), "{e}");
    assert!(!e.contains("eyJ"), "{e}");
    assert_no_token_leak(&w, &p.log);
}

#[test]
fn every_cloud_uses_its_authority_and_arm_audience() {
    let mut w = World::start();
    w.federate_service_account("default", "default", APP, TENANT);
    for host in ["myregistry.azurecr.us", "myregistry.azurecr.cn"] {
        w.add_registry(host, Audiences::ArmAndAcr);
        w.grant(APP, host, "*", &["pull"]);
    }
    let _p = acrpull(&mut w, &[]);
    let cases = [
        (
            "gov",
            "USGovernmentCloud",
            "myregistry.azurecr.us",
            "login.microsoftonline.us",
            "https://management.core.usgovcloudapi.net",
        ),
        (
            "china",
            "ChinaCloud",
            "myregistry.azurecr.cn",
            "login.chinacloudapi.cn",
            "https://management.core.chinacloudapi.cn",
        ),
        (
            "public",
            "PublicCloud",
            REGISTRY,
            "login.microsoftonline.com",
            "https://management.core.windows.net/",
        ),
    ];
    for (name, env, server, _, _) in cases {
        let mut b = workload_binding_with_env(env, None, server);
        b["metadata"]["name"] = json!(name);
        create(&w, b);
    }
    for (name, _, _, host, audience) in cases {
        fulfilled(&w, name);
        let seen = entra_requests(&w)
            .into_iter()
            .filter(|r| r.host.as_deref() == Some(host))
            .collect::<Vec<_>>();
        assert_eq!(seen.len(), 1, "{name}: {seen:?}");
        assert_eq!(seen[0].scope.as_deref(), Some(audience), "{name}");
        assert_eq!(seen[0].status, 200, "{name}");
    }
}

#[test]
fn managed_identity_in_each_cloud_asks_imds_for_that_clouds_audience() {
    let mut w = World::start();
    w.add_registry("myregistry.azurecr.cn", Audiences::ArmAndAcr);
    w.grant(
        &identity(1).object_id,
        "myregistry.azurecr.cn",
        "*",
        &["pull"],
    );
    let _p = acrpull(&mut w, &[]);
    let mut b = binding_v1beta2(
        "default",
        "b",
        "myregistry.azurecr.cn",
        SCOPE,
        &identity(1).client_id,
        "default",
    );
    b["spec"]["acr"]["environment"] = json!("ChinaCloud");
    create(&w, b);
    fulfilled(&w, "b");
    let imds = w.azure_requests("imds");
    assert!(!imds.is_empty());
    assert!(imds
        .iter()
        .all(|r| r.scope.as_deref() == Some("https://management.core.chinacloudapi.cn")));
    assert!(entra_requests(&w).is_empty());
}

#[test]
fn airgapped_cloud_uses_its_cloud_config() {
    let mut w = World::start();
    w.federate_service_account("default", "default", APP, TENANT);
    let _p = acrpull(&mut w, &[]);
    let cfg = json!({
        "entraAuthorityHost": format!("https://{AIRGAPPED_AUTHORITY_HOST}/"),
        "resourceManagerAudience": "https://management.azure.com/",
    });
    create(
        &w,
        workload_binding_with_env("AirgappedCloud", Some(cfg), REGISTRY),
    );
    fulfilled(&w, "b");
    let e = entra_requests(&w);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].host.as_deref(), Some(AIRGAPPED_AUTHORITY_HOST));
    assert_eq!(e[0].scope.as_deref(), Some("https://management.azure.com/"));
}

// Upstream's CEL typo let this through and then crashed the controller; the fixed rule refuses
// it at the API (the controller's own check is unit-tested in `binding` and `plan`).
#[test]
fn airgapped_cloud_without_cloud_config_is_refused_and_the_controller_lives_on() {
    let mut w = World::start();
    let mut p = acrpull(&mut w, &[]);
    let bad = workload_binding_with_env("AirgappedCloud", None, REGISTRY);
    let e = w
        .api
        .create(BINDINGS_V1BETA2, "default", bad)
        .expect_err("the API refuses air-gapped without cloudConfig");
    assert!(
        e.message
            .contains("a custom cloud configuration must be present"),
        "{}",
        e.message
    );
    create(
        &w,
        binding_v1beta2(
            "default",
            "ok",
            REGISTRY,
            SCOPE,
            &identity(1).client_id,
            "default",
        ),
    );
    fulfilled(&w, "ok");
    assert!(p.exited().is_none());
}

#[test]
fn authority_host_flag_overrides_every_cloud() {
    let mut w = World::start();
    w.federate_service_account("default", "default", APP, TENANT);
    let _p = acrpull(
        &mut w,
        &["--authority-host=https://login.microsoftonline.us"],
    );
    create(&w, workload_binding_with_env("PublicCloud", None, REGISTRY));
    fulfilled(&w, "b");
    let e = entra_requests(&w);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].host.as_deref(), Some("login.microsoftonline.us"));
    // The audience still follows the binding's cloud.
    assert_eq!(
        e[0].scope.as_deref(),
        Some("https://management.core.windows.net/")
    );
}

#[test]
fn acr_audience_works_where_arm_authentication_is_disabled() {
    let mut w = World::start();
    w.add_registry("strict.azurecr.io", Audiences::AcrOnly);
    w.grant(&identity(1).object_id, "strict.azurecr.io", "*", &["pull"]);
    w.federate_service_account("default", "default", APP, TENANT);
    w.grant(APP, "strict.azurecr.io", "*", &["pull"]);
    let _p = acrpull(&mut w, &["--entra-audience=acr"]);
    create(
        &w,
        binding_v1beta2(
            "default",
            "mi",
            "strict.azurecr.io",
            SCOPE,
            &identity(1).client_id,
            "default",
        ),
    );
    let mut wi = workload_binding_with_env("PublicCloud", None, "strict.azurecr.io");
    wi["metadata"]["name"] = json!("wi");
    create(&w, wi);
    fulfilled(&w, "mi");
    fulfilled(&w, "wi");
    let imds = w.azure_requests("imds");
    assert!(!imds.is_empty());
    assert!(imds
        .iter()
        .all(|r| r.scope.as_deref() == Some("https://containerregistry.azure.net")));
    let e = entra_requests(&w);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        e[0].scope.as_deref(),
        Some("https://containerregistry.azure.net")
    );
}

#[test]
fn arm_audience_fails_clearly_where_arm_authentication_is_disabled() {
    let mut w = World::start();
    w.add_registry("strict.azurecr.io", Audiences::AcrOnly);
    w.grant(&identity(1).object_id, "strict.azurecr.io", "*", &["pull"]);
    let _p = acrpull(&mut w, &[]);
    create(
        &w,
        binding_v1beta2(
            "default",
            "b",
            "strict.azurecr.io",
            SCOPE,
            &identity(1).client_id,
            "default",
        ),
    );
    let e = failed_with(&w, "b", "failed to retrieve ACR token: ");
    assert!(e.contains("ARM audience"), "{e}");
    assert!(w.api.get("secrets", "default", "acr-pull-b").is_none());
}

#[test]
fn cross_tenant_pull_presents_the_node_identity_to_the_federated_application() {
    let mut w = World::start();
    w.federate_managed_identity(1, APP, OTHER_TENANT);
    let p = acrpull(&mut w, &[]);
    let mut b = binding_v1beta2(
        "default",
        "b",
        REGISTRY,
        SCOPE,
        &identity(1).client_id,
        "default",
    );
    b["spec"]["auth"]["managedIdentity"]["federatedApplication"] =
        json!({"tenantID": OTHER_TENANT, "clientID": APP});
    create(&w, b);
    fulfilled(&w, "b");
    let imds = w.azure_requests("imds");
    assert!(imds
        .iter()
        .any(|r| r.scope.as_deref() == Some("api://AzureADTokenExchange")));
    assert!(imds
        .iter()
        .all(|r| r.scope.as_deref() == Some("api://AzureADTokenExchange")));
    assert_eq!(issued(&w, OTHER_TENANT, APP), 1);
    let e = entra_requests(&w);
    assert_eq!(e[0].path, format!("/{OTHER_TENANT}/oauth2/v2.0/token"));
    assert_eq!(
        e[0].scope.as_deref(),
        Some("https://management.core.windows.net/")
    );
    assert!(w.api.token_requests().is_empty());
    assert_no_token_leak(&w, &p.log);
}

#[test]
fn changing_the_workload_client_or_tenant_re_mints_at_once() {
    let mut w = World::start();
    w.federate_service_account("default", "default", APP, TENANT);
    w.federate_service_account("default", "default", APP2, TENANT);
    let _p = acrpull(&mut w, &[]);
    create(&w, workload_binding_with_env("PublicCloud", None, REGISTRY));
    let first = fulfilled(&w, "b");
    assert_eq!(issued(&w, TENANT, APP), 1);
    let mut b = w.api.get(BINDINGS_V1BETA2, "default", "b").unwrap();
    b["spec"]["auth"]["workloadIdentity"]["clientID"] = json!(APP2);
    w.api.put(BINDINGS_V1BETA2, "default", b).unwrap();
    let second = w.wait_for("a re-minted secret", WAIT, || {
        let s = w.api.get("secrets", "default", "acr-pull-b")?;
        (s["data"] != first["data"]).then_some(s)
    });
    assert_ne!(
        second["metadata"]["annotations"]["acr.microsoft.com/token.inputs"],
        first["metadata"]["annotations"]["acr.microsoft.com/token.inputs"]
    );
    assert_eq!(issued(&w, TENANT, APP2), 1);
}

#[test]
fn changing_the_service_account_annotations_is_picked_up_at_the_next_mint() {
    // Annotations are not in the hash (they live on another object), so the new app is used
    // from the next refresh: here, after a spec change that forces one.
    let mut w = World::start();
    w.service_account("default", "delegate", annotated(APP, TENANT));
    w.federate_service_account("default", "delegate", APP, TENANT);
    w.federate_service_account("default", "delegate", APP2, TENANT);
    let _p = acrpull(&mut w, &[]);
    create(
        &w,
        binding_v1beta2_workload("default", "b", SCOPE, "delegate", None, "delegate"),
    );
    fulfilled(&w, "b");
    let mut sa = w.api.get("serviceaccounts", "default", "delegate").unwrap();
    sa["metadata"]["annotations"] = annotated(APP2, TENANT);
    w.api.put("serviceaccounts", "default", sa).unwrap();
    let mut b = w.api.get(BINDINGS_V1BETA2, "default", "b").unwrap();
    b["spec"]["acr"]["scope"] = json!("repository:other:pull");
    w.api.put(BINDINGS_V1BETA2, "default", b).unwrap();
    w.wait_for("a token for the new app", WAIT, || {
        (issued(&w, TENANT, APP2) == 1).then_some(())
    });
}

#[test]
fn the_chart_policy_allows_exactly_the_one_audience() {
    let mut w = World::start();
    w.api.set_admission_policies(Some(Policies {
        controller_user: CONTROLLER_USER.to_string(),
        token_audience: SA_TOKEN_AUDIENCE.to_string(),
    }));
    w.federate_service_account("default", "default", APP, TENANT);
    let _p = acrpull(&mut w, &[]);
    create(&w, workload_binding_with_env("PublicCloud", None, REGISTRY));
    fulfilled(&w, "b");
    assert!(!w.api.token_requests().is_empty());
}

#[test]
fn another_audience_is_denied_by_the_chart_policy_and_reported() {
    let mut w = World::start();
    w.api.set_admission_policies(Some(Policies {
        controller_user: CONTROLLER_USER.to_string(),
        token_audience: SA_TOKEN_AUDIENCE.to_string(),
    }));
    let _p = acrpull(&mut w, &["--service-account-token-audience=api://Other"]);
    create(&w, workload_binding_with_env("PublicCloud", None, REGISTRY));
    let e = failed_with(&w, "b", "failed to mint service account token: ");
    assert!(e.contains("controller-token-request-policy"), "{e}");
    assert!(w.api.token_requests().is_empty());
}

#[test]
fn switching_the_audience_mode_re_mints_at_once() {
    let mut w = World::start();
    let p = acrpull(&mut w, &[]);
    create(
        &w,
        binding_v1beta2(
            "default",
            "b",
            REGISTRY,
            SCOPE,
            &identity(1).client_id,
            "default",
        ),
    );
    let first = fulfilled(&w, "b");
    drop(p);
    let _p = acrpull(&mut w, &["--entra-audience=acr"]);
    let second = w.wait_for("a re-minted secret", WAIT, || {
        let s = w.api.get("secrets", "default", "acr-pull-b")?;
        (s["data"] != first["data"]).then_some(s)
    });
    assert_ne!(
        second["metadata"]["annotations"]["acr.microsoft.com/token.inputs"],
        first["metadata"]["annotations"]["acr.microsoft.com/token.inputs"]
    );
    assert!(w
        .azure_requests("imds")
        .iter()
        .any(|r| r.scope.as_deref() == Some("https://containerregistry.azure.net")));
}

// Entra's descriptions end with a per-attempt trace ID and timestamp; kept in status, every
// failure rewrote status and the write woke the binding at once (about 15 Entra calls a second).
#[test]
fn a_persistent_entra_refusal_backs_off_instead_of_looping() {
    let mut w = World::start();
    w.service_account("default", "delegate", annotated(APP, TENANT));
    w.federate_service_account("default", "someone-else", APP, TENANT);
    let _p = acrpull(&mut w, &[]);
    create(
        &w,
        binding_v1beta2_workload("default", "b", SCOPE, "delegate", None, "delegate"),
    );
    let e = failed_with(&w, "b", "failed to retrieve ARM token: ");
    assert!(!e.contains("Trace ID"), "{e}");
    // A rate bound needs a window of real time.
    std::thread::sleep(Duration::from_secs(4));
    let calls = entra_requests(&w).len();
    assert!(calls <= 4, "{calls} Entra calls in about 4 s");
}

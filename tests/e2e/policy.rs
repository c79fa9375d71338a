//! End to end: `--identity-policy` allows listed (namespace, identity, registry) triples, refuses
//! everything else before any token is requested, and follows edits of the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use acrpull_testkit::kube::{BINDINGS_V1BETA2, EVENTS};
use acrpull_testkit::world::{
    binding_v1beta2, binding_v1beta2_workload, identity, Acrpull, World, REGISTRY, TENANT,
};
use serde_json::{json, Value};

use crate::acrpull;

const WAIT: Duration = Duration::from_secs(30);
const SCOPE: &str = "repository:app:pull";
const APP: &str = "aaaaaaaa-0000-0000-0000-000000000001";

fn write_policy(w: &World, rules: Value) -> PathBuf {
    let path = w.dir().join("policy.json");
    // Written beside and renamed, as a ConfigMap volume swaps its files.
    let tmp = w.dir().join("policy.json.tmp");
    std::fs::write(&tmp, json!({ "rules": rules }).to_string()).expect("policy written");
    std::fs::rename(&tmp, &path).expect("policy renamed");
    path
}

fn start(w: &mut World, policy: &Path) -> Acrpull {
    acrpull(w, &[&format!("--identity-policy={}", policy.display())])
}

fn create(w: &World, obj: Value) {
    w.api
        .create(BINDINGS_V1BETA2, "default", obj)
        .expect("the binding is accepted");
}

fn mi_binding(name: &str) -> Value {
    binding_v1beta2(
        "default",
        name,
        REGISTRY,
        SCOPE,
        &identity(1).client_id,
        "default",
    )
}

fn fulfilled(w: &World, name: &str) {
    w.wait_for(&format!("binding {name} fulfilled"), WAIT, || {
        let b = w.api.get(BINDINGS_V1BETA2, "default", name)?;
        let ok = b["status"]["tokenExpirationTime"].is_string()
            && b["status"]["error"].as_str().unwrap_or("").is_empty();
        ok.then_some(())
    });
    assert!(w
        .api
        .get("secrets", "default", &format!("acr-pull-{name}"))
        .is_some());
}

fn status_error(w: &World, name: &str, needle: &str) -> String {
    w.wait_for(&format!("binding {name} error {needle:?}"), WAIT, || {
        let b = w.api.get(BINDINGS_V1BETA2, "default", name)?;
        let e = b["status"]["error"].as_str()?.to_string();
        e.contains(needle).then_some(e)
    })
}

fn event_note(w: &World, name: &str, needle: &str) -> Value {
    w.wait_for(
        &format!("an Event for {name} saying {needle:?}"),
        WAIT,
        || {
            w.api.list(EVENTS, Some("default")).into_iter().find(|ev| {
                ev["regarding"]["name"] == name
                    && ev["note"].as_str().is_some_and(|n| n.contains(needle))
            })
        },
    )
}

fn token_calls(w: &World) -> usize {
    ["imds", "entra", "acr"]
        .iter()
        .map(|s| w.azure_requests(s).len())
        .sum::<usize>()
        + w.api.token_requests().len()
}

#[test]
fn a_binding_the_policy_lists_gets_its_secret() {
    let mut w = World::start();
    let policy = write_policy(
        &w,
        json!([{"namespaces": ["def*"], "identities": [identity(1).client_id],
                "registries": ["azurecr.io"]}]),
    );
    let _p = start(&mut w, &policy);
    create(&w, mi_binding("b"));
    fulfilled(&w, "b");
}

#[test]
fn a_binding_outside_the_policy_gets_a_status_error_an_event_and_no_token() {
    let mut w = World::start();
    w.service_account(
        "default",
        "delegate",
        json!({"azure.workload.identity/client-id": APP, "azure.workload.identity/tenant-id": TENANT}),
    );
    w.federate_service_account("default", "delegate", APP, TENANT);
    // Identity 1 only from team namespaces; the workload app only with another registry.
    let policy = write_policy(
        &w,
        json!([
            {"namespaces": ["team-*"], "identities": [identity(1).client_id], "registries": ["*"]},
            {"namespaces": ["default"], "identities": [APP], "registries": ["other.azurecr.io"]}
        ]),
    );
    let p = start(&mut w, &policy);
    create(&w, mi_binding("mi"));
    create(
        &w,
        binding_v1beta2_workload("default", "wi", SCOPE, "delegate", None, "delegate"),
    );
    let e = status_error(&w, "mi", "identity policy");
    assert_eq!(
        e,
        format!(
            "identity policy: namespace \"default\" may not use identity \"{}\" with registry \"{REGISTRY}\"",
            identity(1).client_id
        )
    );
    // The workload client ID came from the ServiceAccount annotation and is still checked.
    let e = status_error(&w, "wi", "identity policy");
    assert!(e.contains(&format!("identity \"{APP}\"")), "{e}");
    let ev = event_note(&w, "mi", "identity policy");
    assert_eq!(ev["reason"], "PolicyDenied");
    assert_eq!(ev["type"], "Warning");
    event_note(&w, "wi", "identity policy");
    let b = w
        .api
        .get(BINDINGS_V1BETA2, "default", "mi")
        .expect("binding");
    let ready = b["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .expect("a Ready condition");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "PolicyDenied");
    assert_eq!(token_calls(&w), 0, "no token of any kind was requested");
    assert!(w.api.get("secrets", "default", "acr-pull-mi").is_none());
    assert!(w.api.get("secrets", "default", "acr-pull-wi").is_none());
    assert!(p.log.contains("identity policy"));
}

#[test]
fn policy_edits_are_followed_both_ways() {
    let mut w = World::start();
    let deny_all = json!([]);
    let policy = write_policy(&w, deny_all.clone());
    let p = start(&mut w, &policy);
    create(&w, mi_binding("b"));
    status_error(&w, "b", "identity policy");
    assert_eq!(token_calls(&w), 0);

    // Loosened: the binding is retried at once, not after its backoff.
    write_policy(
        &w,
        json!([{"namespaces": ["default"], "identities": [identity(1).resource_id.to_uppercase(), identity(1).client_id],
                "registries": [REGISTRY]}]),
    );
    fulfilled(&w, "b");

    // Tightened again: the next token the binding needs is refused.
    write_policy(&w, deny_all);
    w.wait_for("the second reload", WAIT, || {
        let reloads = p
            .log
            .lines()
            .iter()
            .filter(|l| l.contains("identity policy reloaded"))
            .count();
        (reloads >= 2).then_some(())
    });
    let calls = token_calls(&w);
    let mut b = w
        .api
        .get(BINDINGS_V1BETA2, "default", "b")
        .expect("binding");
    b["spec"]["acr"]["scope"] = json!("repository:other:pull");
    w.api
        .put(BINDINGS_V1BETA2, "default", b)
        .expect("binding updated");
    status_error(&w, "b", "identity policy");
    assert_eq!(
        token_calls(&w),
        calls,
        "no token requested after tightening"
    );
}

#[test]
fn a_broken_edit_keeps_the_previous_policy() {
    let mut w = World::start();
    let policy = write_policy(&w, json!([]));
    let p = start(&mut w, &policy);
    w.wait_for("the policy loaded", WAIT, || {
        p.log.contains("enforced").then_some(())
    });
    std::fs::write(&policy, "{not json").expect("policy written");
    w.wait_for("the reload error logged", WAIT, || {
        p.log
            .contains("keeping the previous identity policy")
            .then_some(())
    });
    create(&w, mi_binding("b"));
    status_error(&w, "b", "identity policy");
    assert_eq!(token_calls(&w), 0);
}

#[test]
fn an_unusable_policy_file_stops_start_up() {
    let mut w = World::start();
    let missing = w.dir().join("absent.json");
    let mut p = start(&mut w, &missing);
    let status = p.wait_exit(Duration::from_secs(20)).expect("acrpull exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        p.log.contains("cannot read identity policy"),
        "{}",
        p.log.text()
    );

    let bad = w.dir().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"rules": [{"namespace": ["a"], "identities": ["b"], "registries": ["c"]}]}"#,
    )
    .expect("written");
    let mut p = start(&mut w, &bad);
    let status = p.wait_exit(Duration::from_secs(20)).expect("acrpull exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        p.log.contains("invalid identity policy"),
        "{}",
        p.log.text()
    );
}

#[test]
fn a_cross_tenant_binding_needs_its_node_identity_and_its_application_allowed() {
    let mut w = World::start();
    const OTHER_TENANT: &str = "bbbbbbbb-0000-0000-0000-000000000009";
    w.federate_managed_identity(1, APP, OTHER_TENANT);
    // The node identity is allowed, the application is not.
    let policy = write_policy(
        &w,
        json!([{"namespaces": ["default"], "identities": [identity(1).client_id],
                "registries": [REGISTRY]}]),
    );
    let p = start(&mut w, &policy);
    let mut b = mi_binding("b");
    b["spec"]["auth"]["managedIdentity"]["federatedApplication"] =
        json!({"tenantID": OTHER_TENANT, "clientID": APP});
    create(&w, b);
    let e = status_error(&w, "b", "identity policy");
    assert!(e.contains(&format!("identity \"{APP}\"")), "{e}");
    assert_eq!(token_calls(&w), 0, "not even the node identity's token");

    // Both allowed: the pull works.
    write_policy(
        &w,
        json!([{"namespaces": ["default"], "identities": [identity(1).client_id, APP],
                "registries": [REGISTRY]}]),
    );
    w.wait_for("the reload", WAIT, || {
        p.log.contains("identity policy reloaded").then_some(())
    });
    fulfilled(&w, "b");
}

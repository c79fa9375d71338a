//! Conformance: each test states what a real kube-apiserver does and checks it against the
//! emulator — or against a real cluster when `ACRPULL_CONFORMANCE_KUBECONFIG` names a kubeconfig.

mod common;

use std::time::Duration;

use common::{eventually, rv, Target};
use serde_json::{json, Value};

const SECRETS: &str = "secrets";
const B2: &str = "/apis/acrpull.microsoft.com/v1beta2";

fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"k": "dg=="}})
}

fn path(ns: &str, res: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/{res}/{name}")
}

fn coll(ns: &str, res: &str) -> String {
    format!("/api/v1/namespaces/{ns}/{res}")
}

fn binding(name: &str) -> Value {
    json!({"apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding",
        "metadata": {"name": name},
        "spec": {"acr": {"server": "r.azurecr.io", "scope": "repository:*:pull"},
                 "auth": {"managedIdentity": {"clientID": "00000000-0000-0000-0000-000000000001"}},
                 "serviceAccountName": "default"}})
}

/// A create answers 201 with server-set `uid`, `creationTimestamp` and a string
/// `resourceVersion`; a GET returns the same object.
#[test]
fn create_sets_server_fields_and_get_returns_them() {
    let t = Target::new();
    let ns = t.namespace("c1");
    let (code, created) = t.client.post(&coll(&ns, SECRETS), &secret("s"));
    assert_eq!(code, 201, "{created}");
    assert!(created["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert!(created["metadata"]["creationTimestamp"].is_string());
    assert!(created["metadata"]["resourceVersion"].is_string());
    assert_eq!(created["type"], "Opaque");
    let (code, got) = t.client.get(&path(&ns, SECRETS, "s"));
    assert_eq!(code, 200);
    assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(rv(&got), rv(&created));
}

/// Creating a name that exists is 409 AlreadyExists: `secrets "s" already exists`.
#[test]
fn create_of_an_existing_name_is_already_exists() {
    let t = Target::new();
    let ns = t.namespace("c2");
    assert_eq!(t.client.post(&coll(&ns, SECRETS), &secret("s")).0, 201);
    let (code, st) = t.client.post(&coll(&ns, SECRETS), &secret("s"));
    assert_eq!(code, 409);
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "AlreadyExists");
    assert_eq!(st["message"], "secrets \"s\" already exists");
    assert_eq!(st["details"]["name"], "s");
    assert_eq!(st["details"]["kind"], "secrets");
}

/// Creating in a namespace that does not exist is 404 NotFound naming the namespace.
#[test]
fn create_in_a_missing_namespace_is_not_found() {
    let t = Target::new();
    let (code, st) = t
        .client
        .post(&coll(&format!("nope-{}", t.suffix), SECRETS), &secret("s"));
    assert_eq!(code, 404);
    assert_eq!(st["reason"], "NotFound");
    assert_eq!(st["details"]["kind"], "namespaces");
}

/// A missing object is 404 with a `Status` body: `secrets "x" not found`.
#[test]
fn get_of_a_missing_object_is_a_not_found_status() {
    let t = Target::new();
    let ns = t.namespace("c3");
    let (code, st) = t.client.get(&path(&ns, SECRETS, "x"));
    assert_eq!(code, 404);
    assert_eq!(
        (
            st["apiVersion"].as_str(),
            st["status"].as_str(),
            st["code"].as_u64()
        ),
        (Some("v1"), Some("Failure"), Some(404))
    );
    assert_eq!(st["message"], "secrets \"x\" not found");
}

/// `generateName` gets a random suffix appended by the server.
#[test]
fn generate_name_gets_a_suffix() {
    let t = Target::new();
    let ns = t.namespace("c4");
    let (code, s) = t.client.post(
        &coll(&ns, SECRETS),
        &json!({"metadata": {"generateName": "gen-"}}),
    );
    assert_eq!(code, 201, "{s}");
    let name = s["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
}

/// A PUT carrying a stale resourceVersion is 409 Conflict with the well-known message.
#[test]
fn put_with_a_stale_resource_version_is_a_conflict() {
    let t = Target::new();
    let ns = t.namespace("c5");
    let (_, sa) = t.client.post(
        &coll(&ns, "serviceaccounts"),
        &json!({"metadata": {"name": "sa"}}),
    );
    let mut a = sa.clone();
    a["imagePullSecrets"] = json!([{"name": "a"}]);
    assert_eq!(t.client.put(&path(&ns, "serviceaccounts", "sa"), &a).0, 200);
    let mut b = sa;
    b["imagePullSecrets"] = json!([{"name": "b"}]);
    let (code, st) = t.client.put(&path(&ns, "serviceaccounts", "sa"), &b);
    assert_eq!(code, 409);
    assert_eq!(st["reason"], "Conflict");
    assert_eq!(
        st["message"],
        "Operation cannot be fulfilled on serviceaccounts \"sa\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

/// A PUT without a resourceVersion is unconditional.
#[test]
fn put_without_a_resource_version_is_unconditional() {
    let t = Target::new();
    let ns = t.namespace("c6");
    t.client.post(&coll(&ns, SECRETS), &secret("s"));
    let mut s = secret("s");
    s["data"]["k"] = json!("eA==");
    let (code, out) = t.client.put(&path(&ns, SECRETS, "s"), &s);
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["data"]["k"], "eA==");
}

/// A merge patch replaces lists wholesale and honours `metadata.resourceVersion` as a
/// precondition (409 when stale).
#[test]
fn merge_patch_replaces_lists_and_checks_the_resource_version() {
    let t = Target::new();
    let ns = t.namespace("c7");
    let (_, sa) = t.client.post(
        &coll(&ns, "serviceaccounts"),
        &json!({"metadata": {"name": "sa"}, "imagePullSecrets": [{"name": "a"}, {"name": "b"}]}),
    );
    let p = path(&ns, "serviceaccounts", "sa");
    let (code, out) = t.client.patch(
        &p,
        "application/merge-patch+json",
        &json!({"imagePullSecrets": [{"name": "c"}]}),
    );
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["imagePullSecrets"], json!([{"name": "c"}]));
    let stale = json!({"metadata": {"resourceVersion": rv(&sa)}, "imagePullSecrets": []});
    let (code, st) = t.client.patch(&p, "application/merge-patch+json", &stale);
    assert_eq!(code, 409, "{st}");
    assert_eq!(st["reason"], "Conflict");
}

/// A JSON patch applies add (with `-`), remove and replace; a failing `test` op is 422 Invalid
/// and nothing is applied.
#[test]
fn json_patch_applies_ops_and_a_failed_test_is_422() {
    let t = Target::new();
    let ns = t.namespace("c8");
    t.client.post(
        &coll(&ns, "serviceaccounts"),
        &json!({"metadata": {"name": "sa"}, "imagePullSecrets": [{"name": "a"}]}),
    );
    let p = path(&ns, "serviceaccounts", "sa");
    let ops = json!([
        {"op": "test", "path": "/imagePullSecrets/0/name", "value": "a"},
        {"op": "add", "path": "/imagePullSecrets/-", "value": {"name": "b"}},
        {"op": "remove", "path": "/imagePullSecrets/0"},
    ]);
    let (code, out) = t.client.patch(&p, "application/json-patch+json", &ops);
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["imagePullSecrets"], json!([{"name": "b"}]));
    let failing = json!([
        {"op": "add", "path": "/imagePullSecrets/-", "value": {"name": "c"}},
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
    ]);
    let (code, st) = t.client.patch(&p, "application/json-patch+json", &failing);
    assert_eq!(code, 422, "{st}");
    assert_eq!(st["reason"], "Invalid");
    let (_, now) = t.client.get(&p);
    assert_eq!(now["imagePullSecrets"], json!([{"name": "b"}]));
}

/// DELETE with a uid precondition that does not match is 409 and the object stays.
#[test]
fn delete_with_a_wrong_uid_precondition_is_a_conflict() {
    let t = Target::new();
    let ns = t.namespace("c9");
    t.client.post(&coll(&ns, SECRETS), &secret("s"));
    let p = path(&ns, SECRETS, "s");
    let opts = json!({"kind": "DeleteOptions", "apiVersion": "v1",
        "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}});
    let (code, st) = t.client.delete_with(&p, &opts);
    // The message's wording differs between versions: only the code and reason are promised.
    assert_eq!(code, 409, "{st}");
    assert_eq!(st["reason"], "Conflict", "{st}");
    assert_eq!(t.client.get(&p).0, 200);
    assert_eq!(t.client.delete(&p).0, 200);
    assert_eq!(t.client.get(&p).0, 404);
}

/// Finalizers: DELETE sets `deletionTimestamp` and keeps the object; a new finalizer is then
/// refused (422); removing the last finalizer deletes the object.
#[test]
fn finalizers_hold_deletion_until_removed() {
    let t = Target::new();
    let ns = t.namespace("c10");
    let mut s = secret("s");
    s["metadata"]["finalizers"] = json!(["example.com/hold"]);
    t.client.post(&coll(&ns, SECRETS), &s);
    let p = path(&ns, SECRETS, "s");
    assert_eq!(t.client.delete(&p).0, 200);
    let (code, held) = t.client.get(&p);
    assert_eq!(code, 200);
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let add = json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}});
    let (code, st) = t.client.patch(&p, "application/merge-patch+json", &add);
    assert_eq!(code, 422, "{st}");
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("no new finalizers can be added if the object is being deleted"));
    let clear = json!({"metadata": {"finalizers": null}});
    assert_eq!(
        t.client.patch(&p, "application/merge-patch+json", &clear).0,
        200
    );
    assert_eq!(t.client.get(&p).0, 404);
}

/// A Secret's `type` is immutable (422) and its `data` must be base64 (400).
#[test]
fn secret_type_is_immutable_and_data_must_be_base64() {
    let t = Target::new();
    let ns = t.namespace("c11");
    t.client.post(&coll(&ns, SECRETS), &secret("s"));
    let p = path(&ns, SECRETS, "s");
    let (code, st) = t.client.patch(
        &p,
        "application/merge-patch+json",
        &json!({"type": "example.com/other"}),
    );
    assert_eq!(code, 422, "{st}");
    assert_eq!(st["reason"], "Invalid");
    let (code, _) = t.client.post(
        &coll(&ns, SECRETS),
        &json!({"metadata": {"name": "bad"}, "data": {"k": "not base64!"}}),
    );
    assert_eq!(code, 400);
}

/// Names must be DNS-1123 subdomains and label values at most 63 characters (422 Invalid).
#[test]
fn invalid_names_and_label_values_are_422() {
    let t = Target::new();
    let ns = t.namespace("c12");
    // The messages' wording differs between versions: the code, reason and field are promised.
    let (code, st) = t.client.post(&coll(&ns, SECRETS), &secret("Bad_Name"));
    assert_eq!(code, 422, "{st}");
    assert_eq!(st["reason"], "Invalid", "{st}");
    assert!(
        cause_fields(&st).contains(&"metadata.name".to_string()),
        "{st}"
    );
    let mut s = secret("ok");
    s["metadata"]["labels"] = json!({"l": "a".repeat(64)});
    let (code, st) = t.client.post(&coll(&ns, SECRETS), &s);
    assert_eq!(code, 422, "{st}");
    assert_eq!(st["reason"], "Invalid", "{st}");
    assert!(
        cause_fields(&st).contains(&"metadata.labels".to_string()),
        "{st}"
    );
}

/// The `field` of each cause in a Status's details.
fn cause_fields(st: &Value) -> Vec<String> {
    st["details"]["causes"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["field"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Label selectors support `=`, `!=`, `in`, `notin`, `key` and `!key`; field selectors support
/// `metadata.name`.
#[test]
fn list_honours_label_and_field_selectors() {
    let t = Target::new();
    let ns = t.namespace("c13");
    for (n, labels) in [
        ("a", json!({"app": "x", "tier": "1"})),
        ("b", json!({"app": "y"})),
        ("c", json!({})),
    ] {
        let mut s = secret(n);
        s["metadata"]["labels"] = labels;
        t.client.post(&coll(&ns, SECRETS), &s);
    }
    let q = |sel: &str| {
        let (code, l) = t.client.get(&format!("{}?{sel}", coll(&ns, SECRETS)));
        assert_eq!(code, 200, "{l}");
        names(&l)
    };
    assert_eq!(q("labelSelector=app%3Dx"), ["a"]);
    assert_eq!(q("labelSelector=app!%3Dx"), ["b", "c"]);
    assert_eq!(q("labelSelector=app+in+(x,y)"), ["a", "b"]);
    assert_eq!(q("labelSelector=app+notin+(x)"), ["b", "c"]);
    assert_eq!(q("labelSelector=tier"), ["a"]);
    assert_eq!(q("labelSelector=!app"), ["c"]);
    assert_eq!(q("fieldSelector=metadata.name%3Db"), ["b"]);
    assert_eq!(q("fieldSelector=metadata.name!%3Db"), ["a", "c"]);
}

/// `limit` + `continue` page through a list; the list carries `metadata.resourceVersion`.
#[test]
fn list_pages_with_limit_and_continue() {
    let t = Target::new();
    let ns = t.namespace("c14");
    for n in ["a", "b", "c"] {
        t.client.post(&coll(&ns, SECRETS), &secret(n));
    }
    let (_, p1) = t.client.get(&format!("{}?limit=2", coll(&ns, SECRETS)));
    assert_eq!(names(&p1), ["a", "b"]);
    assert!(p1["metadata"]["resourceVersion"].is_string());
    let cont = p1["metadata"]["continue"]
        .as_str()
        .expect("a continue token");
    let (_, p2) = t
        .client
        .get(&format!("{}?limit=2&continue={cont}", coll(&ns, SECRETS)));
    assert_eq!(names(&p2), ["c"]);
    assert!(p2["metadata"]["continue"].as_str().unwrap_or("").is_empty());
}

/// A watch from a resourceVersion delivers only later events, in order.
#[test]
fn watch_resumes_strictly_after_the_resource_version() {
    let t = Target::new();
    let ns = t.namespace("c15");
    t.client.post(&coll(&ns, SECRETS), &secret("before"));
    let (_, list) = t.client.get(&coll(&ns, SECRETS));
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    t.client.post(&coll(&ns, SECRETS), &secret("after"));
    let (code, w) = t.client.watch(&format!(
        "{}?watch=1&resourceVersion={from}&timeoutSeconds=10",
        coll(&ns, SECRETS)
    ));
    assert_eq!(code, 200);
    let e = w.unwrap().next_event().unwrap();
    assert_eq!(e["type"], "ADDED");
    assert_eq!(e["object"]["metadata"]["name"], "after");
}

/// A watch at resourceVersion "0" starts with synthetic ADDED events for existing objects.
#[test]
fn watch_from_zero_starts_with_added_events() {
    let t = Target::new();
    let ns = t.namespace("c16");
    t.client.post(&coll(&ns, SECRETS), &secret("s"));
    let (_, w) = t.client.watch(&format!(
        "{}?watch=1&resourceVersion=0&timeoutSeconds=10",
        coll(&ns, SECRETS)
    ));
    let e = w.unwrap().next_event().unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("s"))
    );
}

/// A label-selected watch sends DELETED when an object stops matching and ADDED when it
/// starts to.
#[test]
fn label_selected_watch_reports_objects_leaving_and_entering() {
    let t = Target::new();
    let ns = t.namespace("c17");
    let mut s = secret("s");
    s["metadata"]["labels"] = json!({"sel": "yes"});
    let (_, created) = t.client.post(&coll(&ns, SECRETS), &s);
    let (_, w) = t.client.watch(&format!(
        "{}?watch=1&labelSelector=sel%3Dyes&resourceVersion={}&timeoutSeconds=10",
        coll(&ns, SECRETS),
        rv(&created)
    ));
    let mut w = w.unwrap();
    let p = path(&ns, SECRETS, "s");
    t.client.patch(
        &p,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"sel": "no"}}}),
    );
    assert_eq!(w.next_event().unwrap()["type"], "DELETED");
    t.client.patch(
        &p,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"sel": "yes"}}}),
    );
    assert_eq!(w.next_event().unwrap()["type"], "ADDED");
}

/// `timeoutSeconds` ends the watch cleanly (the stream just ends).
#[test]
fn watch_timeout_ends_the_stream_cleanly() {
    let t = Target::new();
    let ns = t.namespace("c18");
    let (_, list) = t.client.get(&coll(&ns, SECRETS));
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let started = std::time::Instant::now();
    let (_, w) = t.client.watch(&format!(
        "{}?watch=1&resourceVersion={from}&timeoutSeconds=1",
        coll(&ns, SECRETS)
    ));
    assert!(w.unwrap().next_event().is_none());
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A bearer token the server does not know is 401 Unauthorized.
#[test]
fn unknown_token_is_unauthorized() {
    let t = Target::new();
    let (code, st) = t
        .client
        .with_token("not-a-token")
        .get("/api/v1/namespaces/default/secrets");
    assert_eq!(code, 401);
    assert_eq!(st["reason"], "Unauthorized");
}

/// TokenRequest returns a JWT for `system:serviceaccount:<ns>:<name>` with the asked audiences
/// and `status.expirationTimestamp`; an unknown ServiceAccount is 404.
#[test]
fn token_request_mints_a_service_account_token() {
    let t = Target::new();
    let ns = t.namespace("c19");
    t.client.post(
        &coll(&ns, "serviceaccounts"),
        &json!({"metadata": {"name": "sa"}}),
    );
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 3600}});
    let (code, tr) = t.client.post(
        &format!("{}/token", path(&ns, "serviceaccounts", "sa")),
        &body,
    );
    assert_eq!(code, 201, "{tr}");
    assert!(tr["status"]["expirationTimestamp"].is_string());
    let claims =
        acrpull_testkit::jwt::claims_unverified(tr["status"]["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["sub"], format!("system:serviceaccount:{ns}:sa"));
    assert_eq!(claims["aud"], json!(["api://AzureADTokenExchange"]));
    let (code, _) = t.client.post(
        &format!("{}/token", path(&ns, "serviceaccounts", "nope")),
        &body,
    );
    assert_eq!(code, 404);
}

/// Leases: create, then a PUT with a stale resourceVersion loses the race (409).
#[test]
fn lease_updates_are_optimistic() {
    let t = Target::new();
    let ns = t.namespace("c20");
    let lp = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases");
    let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    let (code, l) = t.client.post(&lp, &lease);
    assert_eq!(code, 201, "{l}");
    let mut mine = l.clone();
    mine["spec"]["holderIdentity"] = json!("b");
    assert_eq!(t.client.put(&format!("{lp}/l"), &mine).0, 200);
    let mut theirs = l;
    theirs["spec"]["holderIdentity"] = json!("c");
    assert_eq!(t.client.put(&format!("{lp}/l"), &theirs).0, 409);
}

/// events.k8s.io/v1 Events need `eventTime`, `reportingController`, `reportingInstance`,
/// `action`, `reason` and a `type` of Normal or Warning (422 otherwise). Events of either API
/// need their involved object's namespace (`regarding`, `involvedObject`) to match theirs.
#[test]
fn events_require_their_fields() {
    let t = Target::new();
    let ns = t.namespace("c21");
    let ep = format!("/apis/events.k8s.io/v1/namespaces/{ns}/events");
    let (code, _) = t
        .client
        .post(&ep, &json!({"metadata": {"name": "e1"}, "reason": "R"}));
    assert_eq!(code, 422);
    let mut ok = json!({"metadata": {"name": "e2"}, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "acrpull.microsoft.com/controller", "reportingInstance": "pod-1",
        "action": "Reconcile", "reason": "Refreshed", "type": "Normal", "note": "ok"});
    // Without `regarding`, its namespace is "" and does not match the Event's. The server
    // validates its internal type, so the field is `involvedObject` here too (seen on 1.36).
    let (code, st) = t.client.post(&ep, &ok);
    assert_eq!(code, 422, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("does not match event.namespace"),
        "{st}"
    );
    assert!(
        cause_fields(&st).contains(&"involvedObject.namespace".to_string()),
        "{st}"
    );
    ok["regarding"] = json!({"apiVersion": "v1", "kind": "Secret", "namespace": ns, "name": "s"});
    let (code, e) = t.client.post(&ep, &ok);
    assert_eq!(code, 201, "{e}");
    let core = format!("/api/v1/namespaces/{ns}/events");
    let mut legacy = json!({"metadata": {"name": "e3"}, "reason": "R", "message": "m",
        "involvedObject": {"apiVersion": "v1", "kind": "Secret", "namespace": "elsewhere", "name": "s"}});
    let (code, st) = t.client.post(&core, &legacy);
    assert_eq!(code, 422, "{st}");
    assert!(
        cause_fields(&st).contains(&"involvedObject.namespace".to_string()),
        "{st}"
    );
    legacy["involvedObject"]["namespace"] = json!(ns);
    let (code, e) = t.client.post(&core, &legacy);
    assert_eq!(code, 201, "{e}");
}

/// Custom resources: `generation` starts at 1 and moves only with spec changes; writes to the
/// main resource ignore `.status`; writes to `/status` ignore everything but `.status`.
#[test]
fn custom_resource_generation_and_status_subresource() {
    let t = Target::new();
    if !t.has_binding_crd() {
        return;
    }
    let ns = t.namespace("c22");
    let bp = format!("{B2}/namespaces/{ns}/acrpullbindings");
    let (code, b) = t.client.post(&bp, &binding("b"));
    assert_eq!(code, 201, "{b}");
    assert_eq!(b["metadata"]["generation"], 1);
    let p = format!("{bp}/b");
    let (_, b) = t.client.patch(
        &p,
        "application/merge-patch+json",
        &json!({"status": {"error": "x"}, "metadata": {"labels": {"a": "b"}}}),
    );
    assert!(
        b["status"]["error"].is_null(),
        "main resource ignores status: {b}"
    );
    assert_eq!(b["metadata"]["generation"], 1, "labels are not spec");
    let (code, s) = t.client.patch(
        &format!("{p}/status"),
        "application/merge-patch+json",
        &json!({"status": {"error": "x"}, "metadata": {"labels": {"c": "d"}}, "spec": {"serviceAccountName": "other"}}),
    );
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["status"]["error"], "x");
    assert!(
        s["metadata"]["labels"]["c"].is_null(),
        "status ignores labels"
    );
    assert_eq!(s["spec"]["serviceAccountName"], "default");
    let (_, b) = t.client.patch(
        &p,
        "application/merge-patch+json",
        &json!({"spec": {"serviceAccountName": "x"}}),
    );
    assert_eq!(b["metadata"]["generation"], 2);
}

/// Strategic merge patch is not supported for custom resources: 415.
#[test]
fn strategic_merge_patch_on_a_custom_resource_is_415() {
    let t = Target::new();
    if !t.has_binding_crd() {
        return;
    }
    let ns = t.namespace("c23");
    let bp = format!("{B2}/namespaces/{ns}/acrpullbindings");
    t.client.post(&bp, &binding("b"));
    let (code, _) = t.client.patch(
        &format!("{bp}/b"),
        "application/strategic-merge-patch+json",
        &json!({"metadata": {"labels": {"a": "b"}}}),
    );
    assert_eq!(code, 415);
}

/// A new namespace gets a `default` ServiceAccount shortly after creation.
#[test]
fn a_new_namespace_gets_a_default_service_account() {
    let t = Target::new();
    let ns = t.namespace("c24");
    eventually(
        Duration::from_secs(10),
        "the default ServiceAccount",
        || (t.client.get(&path(&ns, "serviceaccounts", "default")).0 == 200).then_some(()),
    );
}

/// Strategic merge patch on a built-in type: `metadata.finalizers` is merged as a set (new items
/// first), while a ServiceAccount's `imagePullSecrets` (no patch strategy in the Go type) is
/// replaced.
#[test]
fn strategic_merge_patch_on_a_service_account_follows_the_go_tags() {
    let t = Target::new();
    let ns = t.namespace("c25");
    t.client.post(
        &coll(&ns, "serviceaccounts"),
        &json!({"metadata": {"name": "sa", "finalizers": ["example.com/a"]}, "imagePullSecrets": [{"name": "a"}]}),
    );
    let p = path(&ns, "serviceaccounts", "sa");
    let (code, out) = t.client.patch(
        &p,
        "application/strategic-merge-patch+json",
        &json!({"metadata": {"finalizers": ["example.com/b"]}, "imagePullSecrets": [{"name": "b"}]}),
    );
    assert_eq!(code, 200, "{out}");
    // apimachinery's mergeSlice puts patch items before server-only ones (real server: [b, a]).
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["example.com/b", "example.com/a"])
    );
    assert_eq!(out["imagePullSecrets"], json!([{"name": "b"}]));
    t.client.patch(
        &p,
        "application/merge-patch+json",
        &json!({"metadata": {"finalizers": null}}),
    );
}

/// A Secret with `immutable: true` refuses data changes (422).
#[test]
fn an_immutable_secret_refuses_data_changes() {
    let t = Target::new();
    let ns = t.namespace("c26");
    let mut s = secret("s");
    s["immutable"] = json!(true);
    assert_eq!(t.client.post(&coll(&ns, SECRETS), &s).0, 201);
    let (code, st) = t.client.patch(
        &path(&ns, SECRETS, "s"),
        "application/merge-patch+json",
        &json!({"data": {"k": "eA=="}}),
    );
    assert_eq!(code, 422, "{st}");
}

/// A create that carries `metadata.resourceVersion` is refused by the storage layer: a bare
/// 500 "resourceVersion should not be set on objects to be created".
#[test]
fn create_with_a_resource_version_is_refused() {
    let t = Target::new();
    let ns = t.namespace("c27");
    let mut s = secret("s");
    s["metadata"]["resourceVersion"] = json!("12345");
    let (code, st) = t.client.post(&coll(&ns, SECRETS), &s);
    assert_eq!(code, 500, "{st}");
    assert_eq!(
        st["message"],
        "resourceVersion should not be set on objects to be created"
    );
    assert_eq!(t.client.get(&path(&ns, SECRETS, "s")).0, 404);
}

/// The binding CRD's structural schema: unknown fields are pruned silently, `environment`
/// defaults to `PublicCloud`, and missing required fields are 422 Invalid.
#[test]
fn binding_schema_prunes_defaults_and_requires() {
    let t = Target::new();
    if !t.has_binding_crd() {
        return;
    }
    let ns = t.namespace("c28");
    let bp = format!("{B2}/namespaces/{ns}/acrpullbindings");
    let mut b = binding("b");
    b["spec"]["notInSchema"] = json!("x");
    let (code, out) = t.client.post(&bp, &b);
    assert_eq!(code, 201, "{out}");
    assert!(out["spec"].get("notInSchema").is_none(), "{out}");
    assert_eq!(out["spec"]["acr"]["environment"], "PublicCloud");
    let typed = |mut o: Value| {
        o["apiVersion"] = json!("acrpull.microsoft.com/v1beta2");
        o["kind"] = json!("AcrPullBinding");
        o
    };
    let (code, st) = t.client.post(
        &bp,
        &typed(json!({"metadata": {"name": "c"}, "spec": {"serviceAccountName": "x"}})),
    );
    assert_eq!(code, 422, "{st}");
    assert_eq!(st["reason"], "Invalid");
    let (code, _) = t.client.post(
        &bp,
        &typed(json!({"metadata": {"name": "d"}, "spec": {"acr": {"server": "r.azurecr.io", "scope": "s"},
            "auth": {"managedIdentity": {"clientID": "c"}, "workloadIdentity": {"serviceAccountRef": "w"}},
            "serviceAccountName": "x"}})),
    );
    assert_eq!(code, 422, "only one authentication type can be set");
    // A custom resource is decoded as unstructured JSON, which needs its `kind`: 400 first.
    let mut kindless = binding("e");
    kindless.as_object_mut().unwrap().remove("kind");
    let (code, st) = t.client.post(&bp, &kindless);
    assert_eq!(code, 400, "{st}");
    assert_eq!(st["reason"], "BadRequest", "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .starts_with("Object 'Kind' is missing in '"),
        "{st}"
    );
}

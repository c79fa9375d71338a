//! End to end: whatever a namespace user writes, acrpull answers with a clear status error (and an
//! Event), never panics, never asks for a token it must not, and never writes what is not ours.
//!
//! Several tests turn the emulator's CRD schema off, as a cluster whose CRD carries no schema
//! (or an older one) would: acrpull's own decoding is then the only guard.

use std::time::Duration;

use acrpull_testkit::kube::{BINDINGS_V1BETA1, BINDINGS_V1BETA2, EVENTS};
use acrpull_testkit::world::{binding_v1beta1, binding_v1beta2, identity, World, REGISTRY};
use serde_json::{json, Value};

use crate::{acrpull, assert_alive};

const WAIT: Duration = Duration::from_secs(40);
const SCOPE: &str = "repository:app:pull";
/// Status errors must stay short whatever the input: they are shown by `kubectl get`.
const MAX_ERROR_LEN: usize = 4096;

fn create(w: &World, res: &str, obj: Value) {
    w.api
        .create(res, "default", obj)
        .unwrap_or_else(|e| panic!("the binding is accepted: {e:?}"));
}

fn status_error(w: &World, res: &str, name: &str) -> String {
    let e = w.wait_for(&format!("binding {name} status error"), WAIT, || {
        let b = w.api.get(res, "default", name)?;
        let e = b["status"]["error"].as_str()?.to_string();
        (!e.is_empty()).then_some(e)
    });
    assert!(
        e.len() <= MAX_ERROR_LEN,
        "{name}: error of {} bytes",
        e.len()
    );
    e
}

fn has_event(w: &World, name: &str) -> bool {
    w.api
        .list(EVENTS, Some("default"))
        .iter()
        .any(|ev| ev["regarding"]["name"] == name && ev["type"] == "Warning")
}

fn wait_event(w: &World, name: &str) {
    w.wait_for(&format!("a Warning Event for {name}"), WAIT, || {
        has_event(w, name).then_some(())
    });
}

fn fulfilled(w: &World, res: &str, name: &str) -> Value {
    w.wait_for(&format!("binding {} fulfilled", name.len()), WAIT, || {
        let b = w.api.get(res, "default", name)?;
        let ok = b["status"]["tokenExpirationTime"].is_string()
            && b["status"]["error"].as_str().unwrap_or("").is_empty();
        ok.then_some(b)
    })
}

/// Writes the controller made that changed a `resource` object named `name` (a refused create
/// or a failed precondition changes nothing).
fn writes_to(w: &World, resource: &str, name: &str) -> usize {
    w.api.count_matching(|r| {
        r.resource == resource
            && r.name == name
            && r.code < 300
            && !matches!(r.verb.as_str(), "get" | "list" | "watch")
    })
}

/// Writes the controller made that changed any object of `resource`.
fn writes_of(w: &World, resource: &str) -> usize {
    w.api.count_matching(|r| {
        r.resource == resource
            && r.code < 300
            && !matches!(r.verb.as_str(), "get" | "list" | "watch")
    })
}

/// Nothing but the bindings themselves (finalizer, status) and Events was written.
fn assert_no_secret_or_sa_writes(w: &World) {
    assert_eq!(writes_of(w, "secrets"), 0, "a Secret was written");
    assert_eq!(
        writes_of(w, "serviceaccounts"),
        0,
        "a ServiceAccount was written"
    );
}

fn tokens_requested(w: &World) -> usize {
    w.azure_requests("imds").len() + w.azure_requests("acr").len()
}

#[test]
fn wrong_types_and_absurd_sizes_are_status_errors() {
    let mut w = World::start();
    w.api.set_crd_validation(false);
    let mut p = acrpull(&mut w, &[]);
    let client = identity(1).client_id;
    let good = |name: &str| binding_v1beta2("default", name, REGISTRY, SCOPE, &client, "default");
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut b = good("server-number");
    b["spec"]["acr"]["server"] = json!(42);
    cases.push(("server-number", b));
    let mut b = good("acr-string");
    b["spec"]["acr"] = json!("myregistry.azurecr.io");
    cases.push(("acr-string", b));
    let mut b = good("spec-array");
    b["spec"] = json!([1, 2, 3]);
    cases.push(("spec-array", b));
    let mut b = good("client-object");
    b["spec"]["auth"]["managedIdentity"]["clientID"] = json!({"nested": [true]});
    cases.push(("client-object", b));
    let mut b = good("sa-number");
    b["spec"]["serviceAccountName"] = json!(7);
    cases.push(("sa-number", b));
    let mut b = good("huge-scope");
    b["spec"]["acr"]["scope"] = json!(format!("repository:{}:pull", "a".repeat(200_000)));
    cases.push(("huge-scope", b));
    let mut b = good("huge-server");
    b["spec"]["acr"]["server"] = json!(format!("{}.azurecr.io", "a".repeat(100_000)));
    cases.push(("huge-server", b));
    let mut b = good("deep");
    let mut deep = json!("x");
    for _ in 0..100 {
        deep = json!({ "d": deep });
    }
    b["spec"]["acr"]["environment"] = deep;
    cases.push(("deep", b));
    let mut b = good("no-auth");
    b["spec"]["auth"] = json!(null);
    cases.push(("no-auth", b));
    for (_, obj) in &cases {
        create(&w, BINDINGS_V1BETA2, obj.clone());
    }
    let mut v1 = binding_v1beta1("default", "v1-types", REGISTRY, SCOPE, &client, "default");
    v1["spec"]["acrServer"] = json!(true);
    v1["spec"]["managedIdentityResourceID"] = json!(["x"]);
    create(&w, BINDINGS_V1BETA1, v1);

    for (name, _) in &cases {
        let e = status_error(&w, BINDINGS_V1BETA2, name);
        assert!(!e.contains("aaaaaaaaaaaaaaaa"), "{name} echoes its input");
    }
    status_error(&w, BINDINGS_V1BETA1, "v1-types");
    for (name, _) in &cases {
        wait_event(&w, name);
    }
    assert_eq!(tokens_requested(&w), 0);
    assert_no_secret_or_sa_writes(&w);
    assert_alive(&mut p);
}

#[test]
fn malformed_and_look_alike_servers_are_refused_before_any_token() {
    let mut w = World::start();
    w.api.set_crd_validation(false);
    let mut p = acrpull(&mut w, &[]);
    let client = identity(1).client_id;
    let servers = [
        ("empty", ""),
        ("spaces", "   "),
        ("scheme", "https://myregistry.azurecr.io"),
        ("http", "http://myregistry.azurecr.io"),
        ("bad-port", "myregistry.azurecr.io:99999"),
        ("word-port", "myregistry.azurecr.io:https"),
        ("path", "myregistry.azurecr.io/v2/app"),
        ("query", "myregistry.azurecr.io?service=evil.example"),
        ("fragment", "myregistry.azurecr.io#x"),
        ("userinfo", "user:pass@myregistry.azurecr.io"),
        ("backslash", "evil.example\\@myregistry.azurecr.io"),
        ("cyrillic", "myregistr\u{0443}.azurecr.io"),
        ("fullwidth-dot", "myregistry\u{ff0e}azurecr.io"),
        ("suffix-append", "myregistry.azurecr.io.evil.example"),
        ("dash-lookalike", "myregistry-azurecr.io"),
        ("glued", "evilazurecr.io"),
        ("ipv6", "[::1]:443"),
        ("newline", "myregistry.azurecr.io\nHost: evil"),
        ("percent", "myregistry%2eazurecr.io"),
    ];
    for (name, server) in servers {
        create(
            &w,
            BINDINGS_V1BETA2,
            binding_v1beta2("default", name, server, SCOPE, &client, "default"),
        );
    }
    for (name, server) in servers {
        let e = status_error(&w, BINDINGS_V1BETA2, name);
        assert!(
            e.starts_with("ACR server") || e.contains("server"),
            "{name} ({server:?}): {e}"
        );
    }
    for (name, _) in servers {
        wait_event(&w, name);
    }
    assert_eq!(
        tokens_requested(&w),
        0,
        "a token was requested for a bad server"
    );
    assert_no_secret_or_sa_writes(&w);
    assert_alive(&mut p);
}

#[test]
fn invalid_identity_formats_are_status_errors() {
    let mut w = World::start();
    w.api.set_crd_validation(false);
    let mut p = acrpull(&mut w, &[]);
    // A real client ID with a parameter glued on: were it not encoded, IMDS would read the real
    // ID and hand out its token.
    let smuggled = format!("{}&x=y", identity(1).client_id);
    let clients = [
        ("not-a-guid", "not-a-guid"),
        ("query-smuggling", smuggled.as_str()),
        ("path-traversal", "../../metadata/instance"),
        ("long", &"f".repeat(10_000)),
        ("unicode", "00000000-0000-0000-0000-00000000000\u{0661}"),
    ];
    for (name, id) in &clients {
        create(
            &w,
            BINDINGS_V1BETA2,
            binding_v1beta2("default", name, REGISTRY, SCOPE, id, "default"),
        );
    }
    let mut res = binding_v1beta2("default", "bad-resource-id", REGISTRY, SCOPE, "", "default");
    res["spec"]["auth"]["managedIdentity"] = json!({"resourceID": "not/a/resource?id=1"});
    create(&w, BINDINGS_V1BETA2, res);
    let mut wi = binding_v1beta2("default", "half-workload", REGISTRY, SCOPE, "", "default");
    wi["spec"]["auth"] =
        json!({"workloadIdentity": {"serviceAccountRef": "default", "clientID": "c"}});
    create(&w, BINDINGS_V1BETA2, wi);

    let names = clients
        .iter()
        .map(|(n, _)| *n)
        .chain(["bad-resource-id", "half-workload"]);
    for name in names {
        let e = status_error(&w, BINDINGS_V1BETA2, name);
        if name == "query-smuggling" {
            assert!(e.contains("isn't assigned"), "{e}");
        }
        wait_event(&w, name);
        assert!(w
            .api
            .get("secrets", "default", &format!("acr-pull-{name}"))
            .is_none());
    }
    assert_eq!(w.azure_requests("acr").len(), 0);
    assert_no_secret_or_sa_writes(&w);
    assert_alive(&mut p);
}

#[test]
fn names_at_every_length_limit_get_valid_secrets() {
    let mut w = World::start();
    let mut p = acrpull(&mut w, &[]);
    let client = identity(1).client_id;
    let lengths = [63, 64, 233, 234, 253];
    for n in lengths {
        let name = "a".repeat(n);
        create(
            &w,
            BINDINGS_V1BETA2,
            binding_v1beta2("default", &name, REGISTRY, SCOPE, &client, "default"),
        );
        create(
            &w,
            BINDINGS_V1BETA1,
            binding_v1beta1("default", &name, REGISTRY, SCOPE, &client, "default"),
        );
    }
    for n in lengths {
        let name = "a".repeat(n);
        fulfilled(&w, BINDINGS_V1BETA2, &name);
        fulfilled(&w, BINDINGS_V1BETA1, &name);
    }
    let sa = w
        .api
        .get("serviceaccounts", "default", "default")
        .expect("default SA");
    let refs: Vec<String> = sa["imagePullSecrets"]
        .as_array()
        .expect("pull secrets")
        .iter()
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect();
    assert_eq!(refs.len(), 2 * lengths.len(), "{refs:?}");
    for name in &refs {
        assert!(name.len() <= 253, "{name}");
        let s = w
            .api
            .get("secrets", "default", name)
            .unwrap_or_else(|| panic!("referenced Secret {name} exists"));
        for v in s["metadata"]["labels"]
            .as_object()
            .expect("labels")
            .values()
        {
            assert!(v.as_str().is_some_and(|v| v.len() <= 63), "label {v}");
        }
    }
    let mut distinct = refs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        refs.len(),
        "every binding has its own Secret"
    );
    assert_alive(&mut p);
}

#[test]
fn corrupted_annotations_on_our_secret_are_repaired() {
    let mut w = World::start();
    let mut p = acrpull(&mut w, &[]);
    create(
        &w,
        BINDINGS_V1BETA2,
        binding_v1beta2(
            "default",
            "b",
            REGISTRY,
            SCOPE,
            &identity(1).client_id,
            "default",
        ),
    );
    fulfilled(&w, BINDINGS_V1BETA2, "b");
    let corruptions = [
        json!({"acr.microsoft.com/token.expiry": "not a time",
               "acr.microsoft.com/token.refresh": "9999-99-99T99:99:99Z"}),
        json!({"acr.microsoft.com/token.inputs": "x".repeat(5000)}),
        json!({"acr.microsoft.com/token.expiry": null, "acr.microsoft.com/token.refresh": null,
               "acr.microsoft.com/token.inputs": null}),
    ];
    for corruption in corruptions {
        let mut s = w
            .api
            .get("secrets", "default", "acr-pull-b")
            .expect("our Secret");
        let annotations = s["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations");
        for (k, v) in corruption.as_object().expect("object") {
            match v {
                Value::Null => {
                    annotations.remove(k);
                }
                v => {
                    annotations.insert(k.clone(), v.clone());
                }
            }
        }
        annotations.insert("someone.else/keep".into(), json!("me"));
        let corrupted = w.api.put("secrets", "default", s).expect("corrupted");
        let rv = corrupted["metadata"]["resourceVersion"].clone();
        let repaired = w.wait_for("the Secret repaired", WAIT, || {
            let s = w.api.get("secrets", "default", "acr-pull-b")?;
            let a = &s["metadata"]["annotations"];
            let ok = s["metadata"]["resourceVersion"] != rv
                && a["acr.microsoft.com/token.expiry"]
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z') && t.len() < 40)
                && a["acr.microsoft.com/token.inputs"]
                    .as_str()
                    .is_some_and(|h| h.len() < 100);
            ok.then_some(s)
        });
        assert_eq!(
            repaired["metadata"]["annotations"]["someone.else/keep"], "me",
            "foreign annotations survive"
        );
        fulfilled(&w, BINDINGS_V1BETA2, "b");
    }
    assert_alive(&mut p);
}

#[test]
fn a_foreign_secret_with_our_name_is_never_touched() {
    let mut w = World::start();
    // One carries our label (our watch sees it), one does not (only a create conflict shows it).
    let foreign: Vec<(&str, Value)> = [("taken", true), ("hidden", false)]
        .into_iter()
        .map(|(name, labelled)| {
            let mut s = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": format!("acr-pull-{name}"), "namespace": "default"},
                "data": {"k": "dmFsdWU="}});
            if labelled {
                s["metadata"]["labels"] = json!({"acr.microsoft.com/binding": name});
            }
            let created = w
                .api
                .create("secrets", "default", s)
                .expect("foreign Secret");
            (name, created)
        })
        .collect();
    let mut p = acrpull(&mut w, &[]);
    for (name, _) in &foreign {
        create(
            &w,
            BINDINGS_V1BETA2,
            binding_v1beta2(
                "default",
                name,
                REGISTRY,
                SCOPE,
                &identity(1).client_id,
                "default",
            ),
        );
    }
    for (name, _) in &foreign {
        let e = status_error(&w, BINDINGS_V1BETA2, name);
        assert_eq!(
            e,
            format!("secret \"acr-pull-{name}\" exists and is not owned by this binding")
        );
        let ev = w.wait_for("a SecretConflict Event", WAIT, || {
            w.api
                .list(EVENTS, Some("default"))
                .into_iter()
                .find(|ev| ev["regarding"]["name"] == *name && ev["reason"] == "SecretConflict")
        });
        assert_eq!(ev["type"], "Warning");
        w.api
            .delete(BINDINGS_V1BETA2, "default", name)
            .expect("binding deleted");
    }
    for (name, before) in &foreign {
        w.wait_for("the binding gone", WAIT, || {
            w.api
                .get(BINDINGS_V1BETA2, "default", name)
                .is_none()
                .then_some(())
        });
        let secret = format!("acr-pull-{name}");
        let now = w
            .api
            .get("secrets", "default", &secret)
            .expect("the foreign Secret survives");
        assert_eq!(
            now["metadata"]["resourceVersion"],
            before["metadata"]["resourceVersion"]
        );
        assert_eq!(now["data"], before["data"]);
        assert_eq!(writes_to(&w, "secrets", &secret), 0);
    }
    assert_no_secret_or_sa_writes(&w);
    let sa = w
        .api
        .get("serviceaccounts", "default", "default")
        .expect("SA");
    assert!(
        sa["imagePullSecrets"].as_array().is_none_or(Vec::is_empty),
        "a foreign Secret was attached: {sa}"
    );
    assert_alive(&mut p);
}

#[test]
fn a_service_account_with_hundreds_of_pull_secrets_keeps_them_all() {
    let mut w = World::start();
    let foreign: Vec<Value> = (0..500)
        .map(|i| json!({"name": format!("foreign-{i:03}")}))
        .collect();
    w.api
        .create(
            "serviceaccounts",
            "default",
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "crowded", "namespace": "default"},
                   "imagePullSecrets": foreign}),
        )
        .expect("crowded SA");
    let mut p = acrpull(&mut w, &[]);
    create(
        &w,
        BINDINGS_V1BETA2,
        binding_v1beta2(
            "default",
            "b",
            REGISTRY,
            SCOPE,
            &identity(1).client_id,
            "crowded",
        ),
    );
    fulfilled(&w, BINDINGS_V1BETA2, "b");
    let names = |w: &World| -> Vec<String> {
        w.api
            .get("serviceaccounts", "default", "crowded")
            .and_then(|s| s["imagePullSecrets"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["name"].as_str().map(String::from))
            .collect()
    };
    let attached = w.wait_for("attached", WAIT, || {
        let n = names(&w);
        n.contains(&"acr-pull-b".to_string()).then_some(n)
    });
    assert_eq!(attached.len(), 501);
    for i in 0..500 {
        assert!(
            attached.contains(&format!("foreign-{i:03}")),
            "foreign-{i:03} lost"
        );
    }
    w.api
        .delete(BINDINGS_V1BETA2, "default", "b")
        .expect("binding deleted");
    let after = w.wait_for("detached", WAIT, || {
        let n = names(&w);
        (!n.contains(&"acr-pull-b".to_string())).then_some(n)
    });
    assert_eq!(after.len(), 500, "exactly ours was removed");
    assert!(
        w.api.count("patch", "serviceaccounts") + w.api.count("update", "serviceaccounts") <= 4,
        "attach and detach took a bounded number of writes"
    );
    assert_alive(&mut p);
}

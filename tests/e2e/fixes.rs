//! End to end, one regression test per upstream bug we fix (spec §9, §1.2, §2.5, §2.10): each
//! shows the fixed behaviour with the real binary against the emulated cluster. The fix both API
//! versions share, deletion with the ServiceAccount gone, is a scenario in `versions`.

use std::time::Duration;

use acrpull_testkit::kube::{Fault, Matcher, BINDINGS_V1BETA1, BINDINGS_V1BETA2};
use acrpull_testkit::world::{
    assert_pull_secret, binding_v1beta1, binding_v1beta2, identity, rfc3339, Acrpull, World,
    BINDING_LABEL, EXPIRY_ANNOTATION, FINALIZER, REFRESH_ANNOTATION, REGISTRY, WAIT,
};
use serde_json::{json, Value};

use crate::{acrpull, now_unix};

const NS: &str = "default";
const SCOPE: &str = "repository:app:pull";

fn v2(name: &str, sa: &str) -> Value {
    binding_v1beta2(NS, name, REGISTRY, SCOPE, &identity(1).client_id, sa)
}

fn v1(name: &str, sa: &str) -> Value {
    binding_v1beta1(NS, name, REGISTRY, SCOPE, &identity(1).client_id, sa)
}

fn idle_passes(p: &Acrpull, key: &str) -> usize {
    p.log
        .lines()
        .iter()
        .filter(|l| l.contains(&format!("{key}: reconciled in")) && l.contains("with 0 writes"))
        .count()
}

/// Whether `v` is a valid label value (≤ 63, alphanumeric at both ends, `-_.` inside).
fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[test]
fn same_name_v1beta1_and_v1beta2_bindings_never_touch_each_others_secrets() {
    let mut w = World::start();
    let p = acrpull(&mut w, &[]);
    w.api
        .create(BINDINGS_V1BETA2, NS, v2("b", "default"))
        .unwrap();
    w.api.create(BINDINGS_V1BETA1, NS, v1("b", "")).unwrap();
    let b2 = w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    let b1 = w.wait_ready(BINDINGS_V1BETA1, NS, "b");
    let s2 = w.wait_for("the v1beta2 secret", WAIT, || {
        w.api.get("secrets", NS, "acr-pull-b")
    });
    let s1 = w.wait_for("the v1beta1 secret", WAIT, || {
        w.api.get("secrets", NS, "b-msi-acrpull-secret")
    });
    assert_pull_secret(&w, &s2, &b2, REGISTRY, "b");
    assert_pull_secret(&w, &s1, &b1, REGISTRY, "b");
    assert_ne!(b1["metadata"]["uid"], b2["metadata"]["uid"]);
    w.wait_pull_secrets(NS, "default", &["acr-pull-b", "b-msi-acrpull-secret"]);

    // Both settle, and touching both makes neither write anything.
    w.wait_for("both idle", WAIT, || {
        (idle_passes(&p, "default/b (v1beta2)") > 0 && idle_passes(&p, "default/b (v1beta1)") > 0)
            .then_some(())
    });
    let before = (
        idle_passes(&p, "default/b (v1beta2)"),
        idle_passes(&p, "default/b (v1beta1)"),
    );
    w.api.clear_log();
    for res in [BINDINGS_V1BETA2, BINDINGS_V1BETA1] {
        w.edit(res, NS, "b", |o| {
            o["metadata"]["annotations"] = json!({"example.com/poke": "1"});
        });
    }
    w.wait_for("both passes after the poke", WAIT, || {
        (idle_passes(&p, "default/b (v1beta2)") > before.0
            && idle_passes(&p, "default/b (v1beta1)") > before.1)
            .then_some(())
    });
    assert!(
        w.controller_writes().is_empty(),
        "{:?}",
        w.controller_writes()
    );

    // Deleting one removes only its own Secret and reference.
    w.api.delete(BINDINGS_V1BETA2, NS, "b").unwrap();
    w.wait_for("the v1beta2 binding gone", WAIT, || {
        w.api.get(BINDINGS_V1BETA2, NS, "b").is_none().then_some(())
    });
    assert!(w.api.get("secrets", NS, "acr-pull-b").is_none());
    let s1_after = w
        .api
        .get("secrets", NS, "b-msi-acrpull-secret")
        .expect("the v1beta1 secret survives");
    assert_eq!(s1_after["metadata"]["uid"], s1["metadata"]["uid"]);
    w.wait_pull_secrets(NS, "default", &["b-msi-acrpull-secret"]);
    w.wait_ready(BINDINGS_V1BETA1, NS, "b");
}

#[test]
fn binding_names_longer_than_63_characters_get_a_valid_label() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    let long = format!("{}-{}", "a".repeat(40), "b".repeat(59));
    assert_eq!(long.len(), 100);
    w.api
        .create(BINDINGS_V1BETA2, NS, v2(&long, "default"))
        .unwrap();
    w.api.create(BINDINGS_V1BETA1, NS, v1(&long, "")).unwrap();
    let b2 = w.wait_ready(BINDINGS_V1BETA2, NS, &long);
    let b1 = w.wait_ready(BINDINGS_V1BETA1, NS, &long);
    let name2 = format!("acr-pull-{long}");
    let name1 = format!("{long}-msi-acrpull-secret");
    let s2 = w.wait_for("the v1beta2 secret", WAIT, || {
        w.api.get("secrets", NS, &name2)
    });
    let s1 = w.wait_for("the v1beta1 secret", WAIT, || {
        w.api.get("secrets", NS, &name1)
    });
    let label = s2["metadata"]["labels"][BINDING_LABEL]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(is_label_value(&label), "{label:?}");
    assert_ne!(label, long);
    assert_eq!(s1["metadata"]["labels"][BINDING_LABEL], label.as_str());
    assert_pull_secret(&w, &s2, &b2, REGISTRY, &label);
    assert_pull_secret(&w, &s1, &b1, REGISTRY, &label);
    w.wait_pull_secrets(NS, "default", &[&name2, &name1]);
}

#[test]
fn binding_names_of_253_characters_get_a_hashed_secret_name() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    let long = format!("{}z", "abcdefghi-".repeat(26))[8..].to_string();
    assert_eq!(long.len(), 253);
    w.api
        .create(BINDINGS_V1BETA2, NS, v2(&long, "default"))
        .unwrap();
    let b = w.wait_ready(BINDINGS_V1BETA2, NS, &long);
    let secrets = w.api.list("secrets", Some(NS));
    let s = secrets
        .iter()
        .find(|s| {
            s["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("acr-pull-"))
        })
        .expect("a pull secret");
    let name = s["metadata"]["name"].as_str().unwrap_or_default();
    assert!(name.len() <= 253, "{name}");
    assert!(
        name.starts_with(&format!("acr-pull-{}", &long[..200])),
        "{name}"
    );
    let label = s["metadata"]["labels"][BINDING_LABEL]
        .as_str()
        .unwrap_or("");
    assert!(is_label_value(label), "{label:?}");
    assert_pull_secret(&w, s, &b, REGISTRY, label);
    w.wait_pull_secrets(NS, "default", &[name]);
}

#[test]
fn v1beta1_previous_service_account_is_cleaned_up() {
    let mut w = World::start();
    w.service_account(NS, "first", json!({}));
    w.service_account(NS, "second", json!({}));
    w.set_pull_secrets(NS, "first", &["user-secret"]);
    let _p = acrpull(&mut w, &[]);
    w.api
        .create(BINDINGS_V1BETA1, NS, v1("b", "first"))
        .unwrap();
    w.wait_ready(BINDINGS_V1BETA1, NS, "b");
    w.wait_pull_secrets(NS, "first", &["user-secret", "b-msi-acrpull-secret"]);
    w.edit(BINDINGS_V1BETA1, NS, "b", |o| {
        o["spec"]["serviceAccountName"] = json!("second");
    });
    w.wait_pull_secrets(NS, "second", &["b-msi-acrpull-secret"]);
    w.wait_pull_secrets(NS, "first", &["user-secret"]);
}

#[test]
fn no_unpaged_or_unselected_cluster_wide_secret_list() {
    let mut w = World::start();
    // Noise: unrelated Secrets, and more labelled ones than one page holds.
    w.namespace("noise");
    for i in 0..520 {
        let mut labels = json!({});
        if i % 2 == 0 {
            labels[BINDING_LABEL] = json!(format!("nobody-{i}"));
        }
        w.api
            .create(
                "secrets",
                "noise",
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": format!("s{i}"), "namespace": "noise", "labels": labels},
                       "data": {"k": "dg=="}}),
            )
            .unwrap();
    }
    for i in 0..260 {
        w.api
            .create(
                "secrets",
                "noise",
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": format!("t{i}"), "namespace": "noise",
                                    "labels": {BINDING_LABEL: "x"}},
                       "data": {"k": "dg=="}}),
            )
            .unwrap();
    }
    let _p = acrpull(&mut w, &[]);
    w.api
        .create(BINDINGS_V1BETA2, NS, v2("b", "default"))
        .unwrap();
    w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    // The Secret watch starts once its list is complete.
    let log = w.wait_for("the Secret watch", WAIT, || {
        let log = w.api.request_log();
        log.iter()
            .any(|r| r.resource == "secrets" && r.verb == "watch")
            .then_some(log)
    });
    let secret_reads: Vec<_> = log
        .iter()
        .filter(|r| r.user == acrpull_testkit::world::CONTROLLER_USER)
        .filter(|r| r.resource == "secrets" && matches!(r.verb.as_str(), "list" | "watch"))
        .collect();
    assert!(!secret_reads.is_empty());
    let q = |r: &acrpull_testkit::kube::LoggedRequest, k: &str| {
        r.query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    };
    for r in &secret_reads {
        let selector = q(r, "labelSelector").unwrap_or_default();
        assert!(
            selector.contains(BINDING_LABEL),
            "a Secret {} without our label selector: {r:?}",
            r.verb
        );
        if r.verb == "list" {
            assert!(q(r, "limit").is_some(), "an unpaged Secret list: {r:?}");
        }
    }
    let lists: Vec<_> = secret_reads.iter().filter(|r| r.verb == "list").collect();
    assert!(
        lists.iter().any(|r| q(r, "continue").is_some()),
        "the 520 labelled Secrets were read in pages: {lists:?}"
    );
    assert!(
        !log.iter()
            .any(|r| r.user == acrpull_testkit::world::CONTROLLER_USER
                && r.resource == "secrets"
                && r.verb == "get"
                && r.namespace == "noise"),
        "no unrelated Secret is read"
    );
}

#[test]
fn foreign_labels_and_annotations_on_a_pull_secret_survive_a_refresh() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    w.api
        .create(BINDINGS_V1BETA2, NS, v2("b", "default"))
        .unwrap();
    w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    w.wait_for("the secret", WAIT, || {
        w.api.get("secrets", NS, "acr-pull-b")
    });
    let stale = rfc3339(now_unix() + 10).unwrap();
    w.edit("secrets", NS, "acr-pull-b", |o| {
        o["metadata"]["labels"]["team.example.com/owner"] = json!("payments");
        o["metadata"]["annotations"]["example.com/note"] = json!("keep me");
        o["metadata"]["annotations"][EXPIRY_ANNOTATION] = json!(stale);
        o["metadata"]["annotations"][REFRESH_ANNOTATION] = json!(rfc3339(now_unix() - 3600));
    });
    let s = w.wait_for("the refreshed secret", WAIT, || {
        w.api
            .get("secrets", NS, "acr-pull-b")
            .filter(|s| s["metadata"]["annotations"][EXPIRY_ANNOTATION] != stale.as_str())
    });
    assert_eq!(
        s["metadata"]["labels"]["team.example.com/owner"],
        "payments"
    );
    assert_eq!(s["metadata"]["annotations"]["example.com/note"], "keep me");
    assert_eq!(s["metadata"]["labels"][BINDING_LABEL], "b");
    let b = w.api.get(BINDINGS_V1BETA2, NS, "b").unwrap();
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
}

#[test]
fn label_selector_with_set_based_grammar_applies_to_both_kinds() {
    let mut w = World::start();
    let labelled = |mut obj: Value, labels: Value| {
        obj["metadata"]["labels"] = labels;
        obj
    };
    let create = |res: &str, obj: Value| {
        w.api.create(res, NS, obj).unwrap();
    };
    create(
        BINDINGS_V1BETA2,
        labelled(v2("match2", "default"), json!({"tier": "frontend"})),
    );
    create(
        BINDINGS_V1BETA2,
        labelled(
            v2("prod2", "default"),
            json!({"tier": "frontend", "environment": "prod"}),
        ),
    );
    create(
        BINDINGS_V1BETA2,
        labelled(v2("none2", "default"), json!({})),
    );
    create(
        BINDINGS_V1BETA1,
        labelled(v1("match1", ""), json!({"tier": "backend"})),
    );
    create(
        BINDINGS_V1BETA1,
        labelled(v1("db1", ""), json!({"tier": "db"})),
    );
    // Started after the bindings exist, so its first list shows what the selector lets through.
    let p = acrpull(
        &mut w,
        &["--label-selector=environment!=prod,tier in (frontend,backend)"],
    );
    w.wait_ready(BINDINGS_V1BETA2, NS, "match2");
    w.wait_ready(BINDINGS_V1BETA1, NS, "match1");
    w.wait_pull_secrets(
        NS,
        "default",
        &["acr-pull-match2", "match1-msi-acrpull-secret"],
    );
    assert!(
        p.log.contains("listed 1 v1beta2 AcrPullBindings"),
        "{}",
        p.log.text()
    );
    assert!(p.log.contains("listed 1 v1beta1 AcrPullBindings"));
    for (res, name) in [
        (BINDINGS_V1BETA2, "prod2"),
        (BINDINGS_V1BETA2, "none2"),
        (BINDINGS_V1BETA1, "db1"),
    ] {
        let b = w.api.get(res, NS, name).unwrap();
        assert!(
            b["metadata"]["finalizers"].is_null(),
            "{name} untouched: {b}"
        );
        assert!(b["status"].is_null(), "{name} untouched: {b}");
    }
    // A binding that starts matching is picked up.
    w.edit(BINDINGS_V1BETA1, NS, "db1", |o| {
        o["metadata"]["labels"]["tier"] = json!("backend");
    });
    let b = w.wait_ready(BINDINGS_V1BETA1, NS, "db1");
    assert_eq!(b["metadata"]["finalizers"], json!([FINALIZER]));
}

#[test]
fn no_secret_is_deleted_before_every_service_account_is_known() {
    let mut w = World::start();
    w.service_account(NS, "delegate", json!({}));
    let p = acrpull(&mut w, &[]);
    w.api
        .create(BINDINGS_V1BETA2, NS, v2("b", "delegate"))
        .unwrap();
    let b = w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    drop(p);
    // An older acrpull's Secret, still referenced by the ServiceAccount the binding targeted before.
    let old = "acr-pull-b-0123456789";
    w.api
        .create(
            "secrets",
            NS,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": old, "namespace": NS, "labels": {BINDING_LABEL: "b"},
                    "ownerReferences": [{"apiVersion": "acrpull.microsoft.com/v1beta2",
                        "kind": "AcrPullBinding", "name": "b", "uid": b["metadata"]["uid"],
                        "controller": true, "blockOwnerDeletion": true}]},
                "data": {".dockerconfigjson": "e30="}
            }),
        )
        .unwrap();
    w.set_pull_secrets(NS, "delegate", &["acr-pull-b", old, "extraneous"]);
    w.edit(BINDINGS_V1BETA2, NS, "b", |o| {
        o["spec"]["serviceAccountName"] = json!("default");
    });
    // The ServiceAccount list is slow: the bindings and Secrets are known first.
    w.api.inject(Fault::delay(
        Matcher::verb("list", "serviceaccounts"),
        Duration::from_millis(1500),
    ));
    let _p = acrpull(&mut w, &[]);
    w.wait_pull_secrets(NS, "delegate", &["extraneous"]);
    w.wait_pull_secrets(NS, "default", &["acr-pull-b"]);
    w.wait_for("the old secret deleted", WAIT, || {
        w.api.get("secrets", NS, old).is_none().then_some(())
    });
}

#[test]
fn binding_that_falls_out_of_the_label_selector_is_not_stuck_when_deleted() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &["--label-selector=team=a"]);
    let mut obj = v2("b", "default");
    obj["metadata"]["labels"] = json!({"team": "a"});
    w.api.create(BINDINGS_V1BETA2, NS, obj).unwrap();
    w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    w.edit(BINDINGS_V1BETA2, NS, "b", |o| {
        o["metadata"]["labels"]["team"] = json!("b");
    });
    w.wait_for("our finalizer released", Duration::from_secs(20), || {
        let b = w.api.get(BINDINGS_V1BETA2, NS, "b")?;
        let f = b["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (!f.iter().any(|x| x == FINALIZER)).then_some(())
    });
    assert!(
        w.api.get("secrets", NS, "acr-pull-b").is_some(),
        "the Secret stays, so pulls keep working"
    );
    w.api.delete(BINDINGS_V1BETA2, NS, "b").unwrap();
    w.wait_for("the binding gone", Duration::from_secs(30), || {
        w.api.get(BINDINGS_V1BETA2, NS, "b").is_none().then_some(())
    });
}

#[test]
fn throttled_writes_honour_retry_after_and_converge() {
    let mut w = World::start();
    w.api
        .inject(Fault::throttle(Matcher::verb("create", "secrets"), 1).times(1));
    w.api
        .inject(Fault::throttle(Matcher::verb("patch", "serviceaccounts"), 1).times(1));
    let _p = acrpull(&mut w, &[]);
    w.api
        .create(BINDINGS_V1BETA2, NS, v2("b", "default"))
        .unwrap();
    let b = w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    let s = w.wait_for("the secret", WAIT, || {
        w.api.get("secrets", NS, "acr-pull-b")
    });
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    w.wait_pull_secrets(NS, "default", &["acr-pull-b"]);
    let throttled = w.api.count_matching(|r| r.code == 429);
    assert_eq!(throttled, 2);
}

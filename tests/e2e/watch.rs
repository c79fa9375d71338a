//! End to end, the watches: cut streams and a compacted history make acrpull relist and miss
//! nothing; a binding CRD that is not installed is reported, retried and picked up once installed,
//! while the other kind is served all along.

use acrpull_testkit::kube::{Fault, Matcher, BINDINGS_V1BETA1, BINDINGS_V1BETA2};
use acrpull_testkit::world::{
    assert_pull_secret, binding_v1beta1, binding_v1beta2, identity, World, CONTROLLER_USER,
    REGISTRY, WAIT,
};
use serde_json::Value;

use crate::acrpull;

const NS: &str = "default";
const SCOPE: &str = "repository:app:pull";

fn v2(name: &str) -> Value {
    binding_v1beta2(NS, name, REGISTRY, SCOPE, &identity(1).client_id, "default")
}

fn v1(name: &str) -> Value {
    binding_v1beta1(NS, name, REGISTRY, SCOPE, &identity(1).client_id, "")
}

/// Whether the controller's watch of `resource` has failed since the log was cleared.
fn watch_failed(w: &World, resource: &str) -> bool {
    w.api.count_matching(|r| {
        r.user == CONTROLLER_USER && r.verb == "watch" && r.resource == resource && r.code >= 500
    }) > 0
}

#[test]
fn cut_and_compacted_history_relists_and_misses_nothing() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    for name in ["b1", "b3"] {
        w.api.create(BINDINGS_V1BETA2, NS, v2(name)).unwrap();
        w.wait_ready(BINDINGS_V1BETA2, NS, name);
    }
    w.wait_pull_secrets(NS, "default", &["acr-pull-b1", "acr-pull-b3"]);

    // Disconnect: streams cut, and no watch may start again for now.
    w.api.clear_log();
    for res in ["acrpullbindings", "secrets"] {
        w.api.inject(Fault::fail(503, Matcher::verb("watch", res)));
    }
    w.api.cut_watches();
    w.wait_for("both watches failing", WAIT, || {
        (watch_failed(&w, "acrpullbindings") && watch_failed(&w, "secrets")).then_some(())
    });

    // Changes acrpull cannot see while disconnected, then the history is compacted.
    w.api.create(BINDINGS_V1BETA2, NS, v2("b2")).unwrap();
    w.api.delete("secrets", NS, "acr-pull-b1").unwrap();
    w.api.delete(BINDINGS_V1BETA2, NS, "b3").unwrap();
    w.api.compact();
    w.api.clear_faults();

    let b2 = w.wait_ready(BINDINGS_V1BETA2, NS, "b2");
    let s2 = w.wait_for("b2's secret", WAIT, || {
        w.api.get("secrets", NS, "acr-pull-b2")
    });
    assert_pull_secret(&w, &s2, &b2, REGISTRY, "b2");
    let s1 = w.wait_for("b1's secret recreated", WAIT, || {
        w.api.get("secrets", NS, "acr-pull-b1")
    });
    let b1 = w.api.get(BINDINGS_V1BETA2, NS, "b1").unwrap();
    assert_pull_secret(&w, &s1, &b1, REGISTRY, "b1");
    w.wait_for("b3 cleaned up and gone", WAIT, || {
        (w.api.get(BINDINGS_V1BETA2, NS, "b3").is_none()
            && w.api.get("secrets", NS, "acr-pull-b3").is_none())
        .then_some(())
    });
    w.wait_pull_secrets(NS, "default", &["acr-pull-b1", "acr-pull-b2"]);
    let relists = |res: &str| {
        w.api.count_matching(|r| {
            r.user == CONTROLLER_USER && r.verb == "list" && r.resource == res && r.code == 200
        })
    };
    assert!(relists("acrpullbindings") >= 1, "bindings relisted");
    assert!(relists("secrets") >= 1, "secrets relisted");
}

/// Starts acrpull with `missing` not installed; the other kind is served; installing `missing`
/// later gets its bindings served too.
fn crd_missing_then_installed(missing: &str, other: &str, label: &str) {
    let mut w = World::start();
    w.api.set_crd_installed(missing, false);
    let mut p = acrpull(&mut w, &[]);
    let (late, served) = if missing == BINDINGS_V1BETA1 {
        (v1("late"), v2("served"))
    } else {
        (v2("late"), v1("served"))
    };
    w.api.create(other, NS, served).unwrap();
    w.wait_ready(other, NS, "served");
    w.wait_for("a clear log line", WAIT, || {
        p.log
            .contains(&format!("{label} AcrPullBindings CRD not installed"))
            .then_some(())
    });
    assert!(p.exited().is_none(), "acrpull keeps running");

    w.api.set_crd_installed(missing, true);
    w.api.create(missing, NS, late).unwrap();
    let b = w.wait_for(
        "the late kind served",
        std::time::Duration::from_secs(45),
        || {
            let b = w.api.get(missing, NS, "late")?;
            b["status"]["tokenExpirationTime"].is_string().then_some(b)
        },
    );
    assert!(b["status"]["error"].is_null(), "{b}");
}

#[test]
fn v1beta1_crd_not_installed_v1beta2_served_and_v1beta1_picked_up_later() {
    crd_missing_then_installed(BINDINGS_V1BETA1, BINDINGS_V1BETA2, "v1beta1");
}

#[test]
fn v1beta2_crd_not_installed_v1beta1_served_and_v1beta2_picked_up_later() {
    crd_missing_then_installed(BINDINGS_V1BETA2, BINDINGS_V1BETA1, "v1beta2");
}

#[test]
fn expiry_answered_with_http_410_also_relists() {
    use acrpull_testkit::kube::ExpiredWatch;
    let mut w = World::start();
    w.api.set_expired_watch(ExpiredWatch::Http);
    let _p = acrpull(&mut w, &[]);
    w.api.create(BINDINGS_V1BETA2, NS, v2("b1")).unwrap();
    w.wait_ready(BINDINGS_V1BETA2, NS, "b1");
    w.api.clear_log();
    w.api
        .inject(Fault::fail(503, Matcher::verb("watch", "acrpullbindings")));
    w.api.cut_watches();
    w.wait_for("the binding watch failing", WAIT, || {
        watch_failed(&w, "acrpullbindings").then_some(())
    });
    w.api.create(BINDINGS_V1BETA1, NS, v1("b2")).unwrap();
    w.api.compact();
    w.api.clear_faults();
    w.wait_ready(BINDINGS_V1BETA1, NS, "b2");
    assert!(
        w.api.count_matching(|r| r.verb == "watch" && r.code == 410) >= 1,
        "a watch was refused as expired"
    );
}

#[test]
fn tiny_history_still_misses_nothing() {
    let mut w = World::start();
    w.api.set_history_limit(2);
    let _p = acrpull(&mut w, &[]);
    for i in 0..8 {
        w.api
            .create(BINDINGS_V1BETA2, NS, v2(&format!("b{i}")))
            .unwrap();
    }
    for i in 0..8 {
        w.wait_ready(BINDINGS_V1BETA2, NS, &format!("b{i}"));
    }
    w.wait_for("all eight attached", WAIT, || {
        (w.pull_secrets(NS, "default").len() == 8).then_some(())
    });
}

#[test]
fn crd_removed_and_reinstalled_while_running() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    w.api.create(BINDINGS_V1BETA2, NS, v2("b1")).unwrap();
    w.wait_ready(BINDINGS_V1BETA2, NS, "b1");
    w.api.set_crd_installed(BINDINGS_V1BETA1, false);
    w.api.cut_watches();
    w.wait_for("the v1beta1 watch refused", WAIT, || {
        (w.api.count_matching(|r| {
            r.group == "msi-acrpull.microsoft.com" && r.verb == "watch" && r.code == 404
        }) > 0)
            .then_some(())
    });
    // The other kind is still served.
    w.api.create(BINDINGS_V1BETA2, NS, v2("b2")).unwrap();
    w.wait_ready(BINDINGS_V1BETA2, NS, "b2");
    w.api.set_crd_installed(BINDINGS_V1BETA1, true);
    w.api.create(BINDINGS_V1BETA1, NS, v1("b3")).unwrap();
    w.wait_for(
        "the reinstalled kind served",
        std::time::Duration::from_secs(45),
        || {
            let b = w.api.get(BINDINGS_V1BETA1, NS, "b3")?;
            b["status"]["tokenExpirationTime"].is_string().then_some(())
        },
    );
}

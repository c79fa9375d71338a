//! Sharding: two acrpull deployments, each with its own label selector and Lease, share one cluster.

use std::time::Duration;

use acrpull_testkit::kube::{BINDINGS_V1BETA1, BINDINGS_V1BETA2, LEASES};
use acrpull_testkit::world::{
    binding_v1beta1, binding_v1beta2, identity, Acrpull, AcrpullOptions, World, REGISTRY,
};
use serde_json::{json, Value};

use crate::bin;

fn shard(w: &mut World, name: &str) -> Acrpull {
    let opts = AcrpullOptions {
        args: vec![
            "--leader-elect".into(),
            "--leader-election-namespace=acrpull".into(),
            format!("--leader-election-id=acrpull-{name}"),
            format!("--label-selector=shard={name}"),
        ],
        env: vec![("POD_NAME".into(), format!("{name}-0"))],
        shipped_rbac: true,
    };
    w.start_acrpull(bin(), &opts)
}

fn labelled(mut b: Value, shard: &str) -> Value {
    b["metadata"]["labels"] = json!({"shard": shard});
    b
}

#[test]
fn two_shards_own_disjoint_bindings_and_share_a_service_account() {
    let mut w = World::start();
    w.namespace("acrpull");
    let a = shard(&mut w, "a");
    let b = shard(&mut w, "b");
    let cid = identity(1).client_id;
    // Several bindings per shard, all attaching to the same ServiceAccount, so both shards patch it.
    for i in 0..4 {
        let s = if i % 2 == 0 { "a" } else { "b" };
        w.api
            .create(
                BINDINGS_V1BETA2,
                "default",
                labelled(
                    binding_v1beta2(
                        "default",
                        &format!("v2-{i}"),
                        REGISTRY,
                        "repository:app:pull",
                        &cid,
                        "default",
                    ),
                    s,
                ),
            )
            .unwrap();
        w.api
            .create(
                BINDINGS_V1BETA1,
                "default",
                labelled(
                    binding_v1beta1(
                        "default",
                        &format!("v1-{i}"),
                        REGISTRY,
                        "repository:app:pull",
                        &cid,
                        "",
                    ),
                    s,
                ),
            )
            .unwrap();
    }
    let want: Vec<String> = (0..4)
        .flat_map(|i| {
            [
                format!("acr-pull-v2-{i}"),
                format!("v1-{i}-msi-acrpull-secret"),
            ]
        })
        .collect();
    let got = w.wait_for(
        "every binding attached to the shared ServiceAccount",
        Duration::from_secs(30),
        || {
            let names = w.pull_secrets("default", "default");
            want.iter().all(|n| names.contains(n)).then_some(names)
        },
    );
    assert_eq!(
        got.len(),
        want.len(),
        "no duplicates, nothing lost: {got:?}"
    );
    for shard_name in ["a", "b"] {
        let lease = w
            .api
            .get(LEASES, "acrpull", &format!("acrpull-{shard_name}"))
            .expect("each shard has its own Lease");
        assert_eq!(lease["spec"]["holderIdentity"], format!("{shard_name}-0"));
    }
    // Disjoint ownership: each shard only ever wrote its own bindings.
    for (p, mine, theirs) in [(&a, "a", "b"), (&b, "b", "a")] {
        let log = p.log.text();
        for i in 0..4 {
            let owner = if i % 2 == 0 { "a" } else { "b" };
            let line = format!("default/v2-{i} (v1beta2): created secret");
            if owner == mine {
                assert!(log.contains(&line), "shard {mine} handled v2-{i}");
            } else {
                assert!(
                    !log.contains(&line),
                    "shard {mine} never touched shard {theirs}'s v2-{i}"
                );
            }
        }
    }
    // Deleting shard a's bindings leaves shard b's references alone.
    for i in (0..4).step_by(2) {
        w.api
            .delete(BINDINGS_V1BETA2, "default", &format!("v2-{i}"))
            .unwrap();
        w.api
            .delete(BINDINGS_V1BETA1, "default", &format!("v1-{i}"))
            .unwrap();
    }
    let left = w.wait_for(
        "shard a's references removed",
        Duration::from_secs(30),
        || {
            let names = w.pull_secrets("default", "default");
            (names.len() == 4).then_some(names)
        },
    );
    for i in (1..4).step_by(2) {
        assert!(left.contains(&format!("acr-pull-v2-{i}")), "{left:?}");
        assert!(
            left.contains(&format!("v1-{i}-msi-acrpull-secret")),
            "{left:?}"
        );
    }
    assert!(a.log.lines().iter().all(|l| !l.contains("panicked")));
}

//! Leader election end to end: two acrpull processes against one emulated cluster.

use std::time::{Duration, Instant};

use acrpull_testkit::kube::{BINDINGS_V1BETA2, LEASES};
use acrpull_testkit::world::{
    binding_v1beta2, identity, Acrpull, AcrpullOptions, World, REGISTRY, WAIT,
};

use crate::bin;

fn replica(w: &mut World, name: &str) -> Acrpull {
    let opts = AcrpullOptions {
        args: vec![
            "--leader-elect".into(),
            "--leader-election-namespace=acrpull".into(),
        ],
        env: vec![("POD_NAME".into(), name.into())],
        shipped_rbac: true,
    };
    w.start_acrpull(bin(), &opts)
}

fn holder(w: &World) -> Option<String> {
    w.api.get(LEASES, "acrpull", "aks.azure.com")?["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(String::from)
}

fn create(w: &World, name: &str) {
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2(
                "default",
                name,
                REGISTRY,
                "repository:app:pull",
                &identity(1).client_id,
                "default",
            ),
        )
        .unwrap();
}

fn wrote(p: &Acrpull) -> bool {
    p.log.contains("created secret") || p.log.contains("updated status")
}

#[test]
fn one_replica_leads_and_sigterm_hands_over_at_once() {
    let mut w = World::start();
    w.namespace("acrpull");
    let a = replica(&mut w, "replica-a");
    let b = replica(&mut w, "replica-b");
    let first = w.wait_for("a leader", Duration::from_secs(20), || holder(&w));
    create(&w, "one");
    w.wait_for("the first secret", Duration::from_secs(20), || {
        w.api.get("secrets", "default", "acr-pull-one")
    });
    let (mut leader, follower) = if first == "replica-a" { (a, b) } else { (b, a) };
    // The Secret can be in the API before the kit's reader has captured the line that logs it.
    w.wait_for("the leader's log of its write", WAIT, || {
        wrote(&leader).then_some(())
    });
    assert!(
        !wrote(&follower),
        "the follower never writes:\n{}",
        follower.log.text()
    );

    leader.signal("TERM");
    let status = leader
        .wait_exit(Duration::from_secs(10))
        .expect("the leader exits on SIGTERM");
    assert!(status.success(), "exit 0 on SIGTERM, got {status}");
    let released = Instant::now();
    let second = w.wait_for("the follower to take over", Duration::from_secs(10), || {
        holder(&w).filter(|h| *h != first)
    });
    assert!(
        released.elapsed() < Duration::from_secs(5),
        "a released lease passes on without waiting for expiry ({:?})",
        released.elapsed()
    );
    assert_ne!(second, first);
    create(&w, "two");
    w.wait_for("the new leader to work", Duration::from_secs(20), || {
        w.api.get("secrets", "default", "acr-pull-two")
    });
}

#[test]
fn sigkill_hands_over_only_after_the_lease_expires() {
    let mut w = World::start();
    w.namespace("acrpull");
    let a = replica(&mut w, "replica-a");
    let first = w.wait_for("a leader", Duration::from_secs(20), || holder(&w));
    assert_eq!(first, "replica-a");
    let mut a = a;
    let _b = replica(&mut w, "replica-b");
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(5))
        .expect("SIGKILL ends the process");
    let killed = Instant::now();
    w.wait_for("replica-b to take over", Duration::from_secs(40), || {
        holder(&w).filter(|h| h == "replica-b")
    });
    assert!(
        killed.elapsed() >= Duration::from_secs(10),
        "no takeover while the dead leader's lease is still valid ({:?})",
        killed.elapsed()
    );
}

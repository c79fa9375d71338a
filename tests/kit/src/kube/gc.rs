//! What kube-controller-manager would do in the background: garbage-collect dependents whose
//! owners are gone, and give each new namespace its `default` ServiceAccount.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::resources::{ALL, NAMESPACES, SERVICE_ACCOUNTS};
use super::store::{ObjKey, Preconditions, State, Store};

/// Upper bound on how long the thread sleeps when nothing is due (it is woken by writes anyway).
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Minimum spacing of orphan sweeps: a burst of deletions needs only one, and dependents go a
/// moment after their owner, as with the real collector.
const SWEEP_SPACING: Duration = Duration::from_millis(20);

/// Starts the background thread; it ends when the store is stopping.
pub fn spawn(store: Arc<Store>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kit-kube-gc".into())
        .spawn(move || run(&store))
}

fn run(store: &Store) {
    let mut last_sweep = Instant::now() - SWEEP_SPACING;
    let mut st = store.lock();
    loop {
        if st.stopping {
            return;
        }
        let before = st.rv;
        create_default_service_accounts(&mut st);
        if st.gc_due() && last_sweep.elapsed() >= SWEEP_SPACING {
            collect_orphans(&mut st);
            last_sweep = Instant::now();
        }
        if st.rv != before {
            let wake = st.take_wake();
            store.notify(wake);
        }
        let now = Instant::now();
        let mut wait = st
            .pending_default_sa
            .iter()
            .map(|(due, _)| due.saturating_duration_since(now))
            .min()
            .unwrap_or(IDLE_WAKE);
        if st.gc_due() {
            wait = wait.min(SWEEP_SPACING.saturating_sub(last_sweep.elapsed()));
        }
        let wait = wait.clamp(Duration::from_millis(1), IDLE_WAKE);
        st = store.wait_background(st, wait);
    }
}

fn create_default_service_accounts(st: &mut State) {
    let now = Instant::now();
    let (due, later): (Vec<_>, Vec<_>) = st
        .pending_default_sa
        .drain(..)
        .partition(|(t, _)| *t <= now);
    st.pending_default_sa = later;
    for (_, ns) in due {
        let live = st
            .get(&NAMESPACES, "", &ns)
            .is_some_and(|n| n["metadata"]["deletionTimestamp"].is_null());
        if live && st.get(&SERVICE_ACCOUNTS, &ns, "default").is_none() {
            // Cannot fail: the namespace is live and the name is free.
            let _ = st.create(
                &SERVICE_ACCOUNTS,
                &ns,
                json!({"metadata": {"name": "default"}}),
            );
        }
    }
}

/// Deletes objects none of whose owners (matched by uid) exist any more, as the garbage
/// collector's background deletion does. Looks only at the store's candidates (dependents of
/// removed objects, objects written with missing owners), repeating for dependents of what it
/// deleted, so a sweep after writes that removed nothing costs nothing.
fn collect_orphans(st: &mut State) {
    loop {
        let candidates = st.take_gc_candidates();
        if candidates.is_empty() {
            return;
        }
        st.gc_examined += candidates.len() as u64;
        let orphans: Vec<ObjKey> = candidates
            .into_iter()
            .filter(|k| st.get_key(k).is_some_and(|o| is_orphan(st, o)))
            .collect();
        for (res, ns, name) in orphans {
            // Cannot fail: the object was just found and no preconditions are set.
            let _ = st.delete(ALL[res], &ns, &name, &Preconditions::default());
        }
    }
}

/// Not being deleted already, with owners, none of which exists.
fn is_orphan(st: &State, o: &Value) -> bool {
    o["metadata"]["deletionTimestamp"].is_null()
        && o["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| {
                !refs.is_empty()
                    && refs
                        .iter()
                        .all(|r| !st.uid_exists(r["uid"].as_str().unwrap_or("")))
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{BINDINGS_V1BETA1, SECRETS};

    #[test]
    fn dependents_of_a_deleted_owner_are_collected() {
        let mut st = State::new();
        st.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}}))
            .unwrap();
        let b = st
            .create(
                &BINDINGS_V1BETA1,
                "ns",
                json!({"metadata": {"name": "b"}, "spec": {"acrServer": "r.azurecr.io"}}),
            )
            .unwrap();
        let owner = json!([{"apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding",
            "name": "b", "uid": b["metadata"]["uid"], "controller": true}]);
        st.create(
            &SECRETS,
            "ns",
            json!({"metadata": {"name": "s", "ownerReferences": owner}}),
        )
        .unwrap();
        collect_orphans(&mut st);
        assert!(st.get(&SECRETS, "ns", "s").is_some(), "owner still exists");
        st.delete(&BINDINGS_V1BETA1, "ns", "b", &Preconditions::default())
            .unwrap();
        collect_orphans(&mut st);
        assert!(st.get(&SECRETS, "ns", "s").is_none());
    }

    fn binding(st: &mut State, name: &str) -> Value {
        st.create(
            &BINDINGS_V1BETA1,
            "ns",
            json!({"metadata": {"name": name}, "spec": {"acrServer": "r.azurecr.io"}}),
        )
        .unwrap()
    }

    fn secret_owned_by(st: &mut State, name: &str, owner: &Value) {
        let refs = json!([{"apiVersion": "msi-acrpull.microsoft.com/v1beta1", "kind": "AcrPullBinding",
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]);
        st.create(
            &SECRETS,
            "ns",
            json!({"metadata": {"name": name, "ownerReferences": refs}}),
        )
        .unwrap();
    }

    #[test]
    fn a_sweep_looks_only_at_dependents_of_what_was_deleted() {
        let mut st = State::new();
        st.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}}))
            .unwrap();
        let owners: Vec<Value> = (0..50)
            .map(|i| binding(&mut st, &format!("b{i}")))
            .collect();
        for (i, o) in owners.iter().enumerate() {
            secret_owned_by(&mut st, &format!("s{i}"), o);
        }
        collect_orphans(&mut st);
        let examined = st.gc_examined;
        // Writes that delete nothing give the collector nothing to look at.
        for i in 0..50 {
            st.create(
                &SECRETS,
                "ns",
                json!({"metadata": {"name": format!("x{i}")}}),
            )
            .unwrap();
        }
        st.delete(&SECRETS, "ns", "x0", &Preconditions::default())
            .unwrap();
        collect_orphans(&mut st);
        assert_eq!(st.gc_examined, examined, "nothing owned by x0");
        st.delete(&BINDINGS_V1BETA1, "ns", "b7", &Preconditions::default())
            .unwrap();
        collect_orphans(&mut st);
        assert_eq!(st.gc_examined, examined + 1, "only s7 was looked at");
        assert!(st.get(&SECRETS, "ns", "s7").is_none());
        assert!(st.get(&SECRETS, "ns", "s8").is_some(), "its owner lives");
        collect_orphans(&mut st);
        assert_eq!(st.gc_examined, examined + 1);
    }

    #[test]
    fn an_object_keeps_living_while_any_owner_does() {
        let mut st = State::new();
        st.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}}))
            .unwrap();
        let (a, b) = (binding(&mut st, "a"), binding(&mut st, "b"));
        let refs = json!([{"kind": "AcrPullBinding", "name": "a", "uid": a["metadata"]["uid"]},
                          {"kind": "AcrPullBinding", "name": "b", "uid": b["metadata"]["uid"]}]);
        st.create(
            &SECRETS,
            "ns",
            json!({"metadata": {"name": "s", "ownerReferences": refs}}),
        )
        .unwrap();
        st.delete(&BINDINGS_V1BETA1, "ns", "a", &Preconditions::default())
            .unwrap();
        collect_orphans(&mut st);
        assert!(st.get(&SECRETS, "ns", "s").is_some(), "b still owns it");
        st.delete(&BINDINGS_V1BETA1, "ns", "b", &Preconditions::default())
            .unwrap();
        collect_orphans(&mut st);
        assert!(st.get(&SECRETS, "ns", "s").is_none());
    }

    #[test]
    fn an_object_written_with_only_missing_owners_is_collected() {
        let mut st = State::new();
        st.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}}))
            .unwrap();
        let ghost = json!({"metadata": {"name": "gone", "uid": "no-such-uid"}});
        secret_owned_by(&mut st, "s", &ghost);
        collect_orphans(&mut st);
        assert!(st.get(&SECRETS, "ns", "s").is_none());
    }

    #[test]
    fn collection_cascades_through_dependents_of_dependents() {
        let mut st = State::new();
        st.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}}))
            .unwrap();
        let top = binding(&mut st, "top");
        let refs =
            json!([{"kind": "AcrPullBinding", "name": "top", "uid": top["metadata"]["uid"]}]);
        let mid = st
            .create(
                &BINDINGS_V1BETA1,
                "ns",
                json!({"metadata": {"name": "mid", "ownerReferences": refs}, "spec": {"acrServer": "r.azurecr.io"}}),
            )
            .unwrap();
        secret_owned_by(&mut st, "leaf", &mid);
        st.delete(&BINDINGS_V1BETA1, "ns", "top", &Preconditions::default())
            .unwrap();
        collect_orphans(&mut st);
        assert!(st.get(&BINDINGS_V1BETA1, "ns", "mid").is_none());
        assert!(st.get(&SECRETS, "ns", "leaf").is_none());
    }

    #[test]
    fn a_due_namespace_gets_its_default_service_account() {
        let mut st = State::new();
        st.default_sa_delay = Duration::ZERO;
        st.create(&NAMESPACES, "", json!({"metadata": {"name": "ns"}}))
            .unwrap();
        create_default_service_accounts(&mut st);
        assert!(st.get(&SERVICE_ACCOUNTS, "ns", "default").is_some());
    }
}

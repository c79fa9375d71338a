//! What kube-controller-manager would do in the background: garbage-collect dependents whose
//! owners are gone, and give each new namespace its `default` ServiceAccount.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use super::resources::{ALL, NAMESPACES, SERVICE_ACCOUNTS};
use super::store::{Preconditions, State, Store};

/// Upper bound on how long the thread sleeps when nothing is due (it is woken by writes anyway).
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Minimum spacing of orphan sweeps: each is O(objects), and a burst of writes needs only one.
const SWEEP_SPACING: Duration = Duration::from_millis(20);

/// Starts the background thread; it ends when the store is stopping.
pub fn spawn(store: Arc<Store>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kit-kube-gc".into())
        .spawn(move || run(&store))
}

fn run(store: &Store) {
    let mut swept_at = 0;
    let mut last_sweep = Instant::now() - SWEEP_SPACING;
    let mut st = store.lock();
    loop {
        if st.stopping {
            return;
        }
        let before = st.rv;
        create_default_service_accounts(&mut st);
        let dirty = st.rv != swept_at;
        if dirty && last_sweep.elapsed() >= SWEEP_SPACING {
            collect_orphans(&mut st);
            swept_at = st.rv;
            last_sweep = Instant::now();
        }
        if st.rv != before {
            store.changed.notify_all();
        }
        let now = Instant::now();
        let mut wait = st
            .pending_default_sa
            .iter()
            .map(|(due, _)| due.saturating_duration_since(now))
            .min()
            .unwrap_or(IDLE_WAKE);
        if st.rv != swept_at {
            wait = wait.min(SWEEP_SPACING.saturating_sub(last_sweep.elapsed()));
        }
        let wait = wait.clamp(Duration::from_millis(1), IDLE_WAKE);
        st = store
            .changed
            .wait_timeout(st, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
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
/// collector's background deletion does.
fn collect_orphans(st: &mut State) {
    loop {
        let uids = st.uids();
        let orphans: Vec<(usize, String, String)> = st
            .objects
            .iter()
            .filter(|(_, o)| o["metadata"]["deletionTimestamp"].is_null())
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| {
                        !refs.is_empty()
                            && refs
                                .iter()
                                .all(|r| !uids.contains(r["uid"].as_str().unwrap_or("")))
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        if orphans.is_empty() {
            return;
        }
        for (res, ns, name) in orphans {
            // Cannot fail: the object was just listed and no preconditions are set.
            let _ = st.delete(ALL[res], &ns, &name, &Preconditions::default());
        }
    }
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

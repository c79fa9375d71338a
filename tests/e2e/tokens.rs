//! End to end, what tokens cost: shared tokens across bindings, error backoff instead of a retry
//! loop, retries of bindings that never succeeded, and timed refresh of short-lived tokens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acrpull_testkit::kube::BINDINGS_V1BETA2;
use acrpull_testkit::world::{
    assert_pull_secret, binding_v1beta2, identity, parse_rfc3339, secret_password, World,
    CONTROLLER_USER, EXPIRY_ANNOTATION, REFRESH_ANNOTATION, REGISTRY, WAIT,
};
use serde_json::Value;

use crate::acrpull;

const NS: &str = "default";
const SCOPE: &str = "repository:app:pull";
/// A client ID the fake VM does not have (until a test assigns it).
const UNKNOWN: u32 = 9;

fn create(w: &World, name: &str, client_id: &str) -> Value {
    w.api
        .create(
            BINDINGS_V1BETA2,
            NS,
            binding_v1beta2(NS, name, REGISTRY, SCOPE, client_id, "default"),
        )
        .expect("the binding can be created")
}

/// Records when each IMDS request arrived, polling the fake's counter for `window`.
fn imds_arrivals(w: &World, window: Duration, stop_after: usize) -> Vec<Duration> {
    let t0 = Instant::now();
    let mut seen = w.azure.imds.counters().requests;
    let mut at = Vec::new();
    while t0.elapsed() < window && at.len() < stop_after {
        let n = w.azure.imds.counters().requests;
        for _ in seen..n {
            at.push(t0.elapsed());
        }
        seen = n;
        std::thread::sleep(Duration::from_millis(10));
    }
    at
}

/// Waits until acrpull watches all four resources, so no start-up pass mixes into a test.
fn watching(w: &World) {
    w.wait_for("acrpull watching", WAIT, || {
        let watches = |res: &str| {
            w.api.count_matching(|r| {
                r.user == CONTROLLER_USER && r.verb == "watch" && r.resource == res
            })
        };
        (watches("acrpullbindings") >= 2
            && watches("secrets") >= 1
            && watches("serviceaccounts") >= 1)
            .then_some(())
    });
}

#[test]
fn second_binding_with_same_identity_registry_and_scope_costs_no_extra_request() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    create(&w, "first", &identity(1).client_id);
    w.wait_ready(BINDINGS_V1BETA2, NS, "first");
    let imds = w.azure.imds.counters();
    let acr = w.azure.acr.counters();
    let azure_requests = w.azure.shared.requests().len();
    assert_eq!(imds.requests, 1, "{imds:?}");

    create(&w, "second", &identity(1).client_id);
    let b = w.wait_ready(BINDINGS_V1BETA2, NS, "second");
    let s = w.wait_for("the second secret", WAIT, || {
        w.api.get("secrets", NS, "acr-pull-second")
    });
    let password = assert_pull_secret(&w, &s, &b, REGISTRY, "second");
    let first = w.api.get("secrets", NS, "acr-pull-first").unwrap();
    assert_eq!(
        password,
        secret_password(&first, REGISTRY),
        "one shared token"
    );
    assert_eq!(w.azure.imds.counters(), imds, "no extra IMDS request");
    assert_eq!(w.azure.acr.counters(), acr, "no extra ACR request");
    assert_eq!(w.azure.shared.requests().len(), azure_requests);
}

#[test]
fn bindings_created_together_share_one_exchange() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    let names: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
    for n in &names {
        create(&w, n, &identity(1).client_id);
    }
    for n in &names {
        w.wait_ready(BINDINGS_V1BETA2, NS, n);
    }
    let imds = w.azure.imds.counters();
    assert_eq!(imds.requests, 1, "{imds:?}");
    let acr = w.azure.acr.counters();
    assert_eq!(acr.exchanges.values().sum::<u64>(), 1, "{acr:?}");
    assert_eq!(acr.tokens.values().sum::<u64>(), 1, "{acr:?}");
}

#[test]
fn failures_back_off_instead_of_retrying_every_second() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    watching(&w);
    create(&w, "b", &identity(UNKNOWN).client_id);
    // Passes queued by the failure's own writes count as failures too (up to 16–24 s).
    let at = imds_arrivals(&w, Duration::from_secs(30), 2);
    assert_eq!(at.len(), 2, "a failing binding is retried: {at:?}");
    // Not even the pass that the failure's own status write triggers asks again.
    assert!(
        at[1] - at[0] >= Duration::from_millis(3500),
        "the retry waited: {at:?}"
    );
    let b = w.api.get(BINDINGS_V1BETA2, NS, "b").unwrap();
    let err = b["status"]["error"].as_str().unwrap_or_default();
    assert!(err.starts_with("failed to retrieve ARM token: "), "{err}");
}

#[test]
fn binding_that_never_succeeded_is_retried_until_it_succeeds() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    watching(&w);
    create(&w, "b", &identity(UNKNOWN).client_id);
    w.wait_error(BINDINGS_V1BETA2, NS, "b", |e| !e.is_empty());
    // The identity gets assigned in Azure; nothing changes in the cluster.
    w.add_identity(UNKNOWN);
    let b = w.wait_for("a retry that succeeds", Duration::from_secs(40), || {
        let b = w.api.get(BINDINGS_V1BETA2, NS, "b")?;
        let s = &b["status"];
        (s["tokenExpirationTime"].is_string() && s["error"].is_null()).then_some(b)
    });
    let s = w.wait_for("the secret", WAIT, || {
        w.api.get("secrets", NS, "acr-pull-b")
    });
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
}

#[test]
fn error_texts_that_change_between_attempts_do_not_cause_a_retry_loop() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    // Real Entra error descriptions carry a trace ID and a timestamp, so no two failures read
    // the same. Here every other IMDS answer is a 403 instead of "identity not assigned".
    let stop = Arc::new(AtomicBool::new(false));
    let imds = w.azure.imds.clone();
    let flipper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut last = 0;
            while !stop.load(Ordering::SeqCst) {
                let n = imds.counters().requests;
                if n != last && n % 2 == 1 && imds.faults.pending() == 0 {
                    imds.faults.fail_next(1, 403);
                }
                last = n;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    create(&w, "b", &identity(UNKNOWN).client_id);
    w.wait_error(BINDINGS_V1BETA2, NS, "b", |e| !e.is_empty());
    let at = imds_arrivals(&w, Duration::from_secs(3), 50);
    stop.store(true, Ordering::SeqCst);
    let _ = flipper.join();
    assert!(
        at.len() <= 2,
        "{} IMDS requests within 3 s of a failure",
        at.len()
    );
}

#[test]
fn short_lived_token_is_refreshed_before_it_expires() {
    let mut w = World::start();
    w.azure
        .acr
        .set_access_token_lifetime(Duration::from_secs(20));
    let _p = acrpull(&mut w, &["--ttl-rotation-fraction=0.25"]);
    create(&w, "b", &identity(1).client_id);
    w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    let s = w.wait_for("the secret", WAIT, || {
        w.api.get("secrets", NS, "acr-pull-b")
    });
    let ann = |s: &Value, k: &str| {
        parse_rfc3339(s["metadata"]["annotations"][k].as_str().unwrap_or("")).unwrap_or(0)
    };
    let (issued, expiry) = (ann(&s, REFRESH_ANNOTATION), ann(&s, EXPIRY_ANNOTATION));
    let s2 = w.wait_for("a timed refresh", Duration::from_secs(25), || {
        w.api
            .get("secrets", NS, "acr-pull-b")
            .filter(|s| ann(s, REFRESH_ANNOTATION) > issued)
    });
    assert!(
        ann(&s2, REFRESH_ANNOTATION) < expiry,
        "refreshed before the old token expired"
    );
    let b = w.api.get(BINDINGS_V1BETA2, NS, "b").unwrap();
    assert_pull_secret(&w, &s2, &b, REGISTRY, "b");
}

#[test]
fn never_appear_in_the_log_or_the_status() {
    let mut w = World::start();
    let p = acrpull(&mut w, &[]);
    create(&w, "b", &identity(1).client_id);
    w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    create(&w, "bad", &identity(UNKNOWN).client_id);
    w.wait_error(BINDINGS_V1BETA2, NS, "bad", |e| !e.is_empty());
    // A refresh, too: an old, expired token (a just-minted one is kept for a minimum age,
    // whatever its expiry says, so both annotations are backdated).
    w.edit("secrets", NS, "acr-pull-b", |o| {
        o["metadata"]["annotations"][EXPIRY_ANNOTATION] = serde_json::json!("2000-01-01T00:00:00Z");
        o["metadata"]["annotations"][REFRESH_ANNOTATION] =
            serde_json::json!("1999-12-31T23:00:00Z");
    });
    w.wait_for("the refreshed secret", WAIT, || {
        w.api
            .get("secrets", NS, "acr-pull-b")
            .filter(|s| s["metadata"]["annotations"][EXPIRY_ANNOTATION] != "2000-01-01T00:00:00Z")
    });
    let log = p.log.text();
    let bindings = serde_json::to_string(&w.api.list(BINDINGS_V1BETA2, Some(NS))).unwrap();
    let issued = w.azure.issued_tokens();
    assert!(issued.len() >= 2);
    for t in &issued {
        // Any of the three JWT parts is enough to leak it.
        for part in t.split('.').filter(|p| p.len() > 16) {
            assert!(!log.contains(part), "a token part is in acrpull's log");
            assert!(!bindings.contains(part), "a token part is in a binding");
        }
    }
}

#[test]
fn fifty_bindings_across_namespaces_cost_one_token() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    let namespaces: Vec<String> = (0..5).map(|i| format!("ns{i}")).collect();
    for ns in &namespaces {
        w.namespace(ns);
    }
    for ns in &namespaces {
        for i in 0..10 {
            w.api
                .create(
                    BINDINGS_V1BETA2,
                    ns,
                    binding_v1beta2(
                        ns,
                        &format!("b{i}"),
                        REGISTRY,
                        SCOPE,
                        &identity(1).client_id,
                        "default",
                    ),
                )
                .unwrap();
        }
    }
    for ns in &namespaces {
        for i in 0..10 {
            w.wait_ready(BINDINGS_V1BETA2, ns, &format!("b{i}"));
        }
        w.wait_for("all ten attached", WAIT, || {
            (w.pull_secrets(ns, "default").len() == 10).then_some(())
        });
    }
    let imds = w.azure.imds.counters();
    assert_eq!(imds.requests, 1, "{imds:?}");
    let acr = w.azure.acr.counters();
    assert_eq!(acr.tokens.values().sum::<u64>(), 1, "{acr:?}");
}

#[test]
fn transient_imds_and_acr_failures_are_retried_within_one_attempt() {
    let mut w = World::start();
    w.azure.imds.faults.fail_next(2, 429);
    w.azure.acr.faults.fail_next(1, 503);
    let _p = acrpull(&mut w, &[]);
    watching(&w);
    w.api.clear_log();
    create(&w, "b", &identity(1).client_id);
    let b = w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    let s = w.wait_for("the secret", WAIT, || {
        w.api.get("secrets", NS, "acr-pull-b")
    });
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    assert_eq!(w.azure.imds.counters().requests, 3, "two retries");
    // No failure ever reached the status: exactly one status write, the success.
    let status_writes = || {
        w.api
            .count_matching(|r| r.user == CONTROLLER_USER && r.subresource == "status")
    };
    w.wait_for("the status write logged", WAIT, || {
        (status_writes() > 0).then_some(())
    });
    assert_eq!(status_writes(), 1);
}

#[test]
fn a_fixed_spec_is_tried_at_once_not_after_the_backoff() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    watching(&w);
    create(&w, "b", &identity(UNKNOWN).client_id);
    w.wait_error(BINDINGS_V1BETA2, NS, "b", |e| !e.is_empty());
    let fixed = Instant::now();
    w.edit(BINDINGS_V1BETA2, NS, "b", |o| {
        o["spec"]["auth"]["managedIdentity"]["clientID"] = serde_json::json!(identity(1).client_id);
    });
    w.wait_ready(BINDINGS_V1BETA2, NS, "b");
    assert!(
        fixed.elapsed() < Duration::from_secs(3),
        "took {:?}",
        fixed.elapsed()
    );
}

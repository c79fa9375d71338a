//! End to end under Azure faults (real binary, test kit, shipped RBAC): IMDS refusing (404, 410,
//! 429, 500) and hanging past the client timeout while many bindings need different identities,
//! Entra and the registry answering 401, 5xx and slowly, and tokens whose `exp` is already past
//! or far ahead because the fakes' clock is skewed.
//!
//! Backoff facts the bounds rely on: one IMDS call makes at most 4 attempts (retries after 1, 2
//! and 4 s, `src/azure/retry.rs`), an Entra or registry call at most 4 (0.8, 1.6, 3.2 s), only for
//! 408/429/5xx; a failed token then waits ≥ 4 s (5 s × 2ⁿ × [0.8, 1.2]) before it is asked for
//! again (the token gate, `src/controller/reconcile.rs`); a Secret is never refreshed sooner than
//! 1 s after the last mint (`src/plan/mod.rs`). IMDS admits at most 5 requests at once (`src/azure/limiter.rs`).

use std::time::{Duration, Instant};

use acrpull_testkit::azure::LoggedRequest;
use acrpull_testkit::kube::{Fault, Matcher, BINDINGS_V1BETA2};
use acrpull_testkit::world::{
    binding_v1beta2, binding_v1beta2_workload, identity, is_ready, World, CONTROLLER_USER,
    REGISTRY, TENANT,
};
use serde_json::{json, Value};

use crate::{acrpull, assert_alive};

const WAIT: Duration = Duration::from_secs(45);
/// The federated application the workload-identity binding authenticates as.
const APP: &str = "aaaaaaaa-0000-0000-0000-000000000001";

fn wait_ready(w: &World, ns: &str, name: &str) -> Value {
    w.wait_for(&format!("binding {ns}/{name} Ready"), WAIT, || {
        w.api.get(BINDINGS_V1BETA2, ns, name).filter(is_ready)
    })
}

fn bind(w: &World, ns: &str, name: &str, scope: &str, n: u32) {
    w.api
        .create(
            BINDINGS_V1BETA2,
            ns,
            binding_v1beta2(ns, name, REGISTRY, scope, &identity(n).client_id, "default"),
        )
        .expect("the binding is created");
}

/// Changes a binding's scope, which needs a new registry token at once.
fn rescope(w: &World, ns: &str, name: &str, scope: &str) {
    let mut b = w.api.get(BINDINGS_V1BETA2, ns, name).expect("binding");
    b["spec"]["acr"]["scope"] = json!(scope);
    w.api
        .put(BINDINGS_V1BETA2, ns, b)
        .expect("the scope changes");
}

/// Identities 2..=n assigned to the node, each granted pull on the registry.
fn identities(w: &World, n: u32) {
    for i in 2..=n {
        w.azure.add_managed_identity(identity(i));
        w.grant(&identity(i).object_id, REGISTRY, "*", &["pull"]);
    }
}

/// The controller wrote only pull Secrets, the `default` ServiceAccounts, bindings and Events.
fn assert_only_own_writes(w: &World) {
    let stray: Vec<_> = w
        .controller_writes()
        .into_iter()
        .filter(|r| match r.resource.as_str() {
            "secrets" => !(r.name.is_empty() || r.name.starts_with("acr-pull-")),
            // A TokenRequest (`create serviceaccounts/token`) mints a token and changes nothing.
            "serviceaccounts" => r.name != "default" && r.subresource != "token",
            "acrpullbindings" | "events" => false,
            _ => true,
        })
        .collect();
    assert!(
        stray.is_empty(),
        "writes to objects we do not own: {stray:#?}"
    );
}

/// Each binding's Secret exists and is referenced once from the `default` ServiceAccount.
fn assert_intact(w: &World, ns: &str, names: &[String]) {
    let sa = w.api.get("serviceaccounts", ns, "default").expect("SA");
    let refs = acrpull_testkit::world::pull_secret_names(&sa);
    for n in names {
        let secret = format!("acr-pull-{n}");
        assert!(
            w.api.get("secrets", ns, &secret).is_some(),
            "{secret} exists"
        );
        assert_eq!(refs.iter().filter(|r| **r == secret).count(), 1, "{refs:?}");
    }
}

fn requests(w: &World, service: &str, f: impl Fn(&LoggedRequest) -> bool) -> usize {
    w.azure_requests(service).iter().filter(|r| f(r)).count()
}

#[test]
fn imds_refusals_with_many_identities_recover_and_never_exceed_five_concurrent_requests() {
    let mut w = World::start();
    identities(&w, 10);
    let names: Vec<String> = (1..=10).map(|i| format!("id{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        bind(&w, "default", n, "repository:app:pull", i as u32 + 1);
    }
    // Every status IMDS asks to be retried, five of each, taken by whichever requests come first.
    for code in [404, 410, 429, 500] {
        w.azure.imds.faults.fail_next(5, code);
    }
    let since = Instant::now();
    let mut p = acrpull(&mut w, &[]);
    for n in &names {
        wait_ready(&w, "default", n);
    }
    let window = since.elapsed();
    assert_eq!(w.azure.imds.faults.pending(), 0, "every fault was met");
    let c = w.azure.imds.counters();
    assert!(
        c.max_concurrent <= 5,
        "{} IMDS requests at once",
        c.max_concurrent
    );
    // Each request took one token, met one injected fault, or was throttled by the fake's own
    // limiter; one token per identity means nothing was fetched twice.
    let issued: u64 = c.issued.values().sum();
    assert_eq!(issued, 10, "one token per identity: {:?}", c.issued);
    assert_eq!(c.requests, issued + 20 + c.throttled, "{c:?}");
    assert!(
        c.throttled <= 10,
        "{} requests throttled by IMDS in {window:?}",
        c.throttled
    );
    assert_intact(&w, "default", &names);
    assert_only_own_writes(&w);
    assert_alive(&mut p);
}

#[test]
fn imds_timeouts_hold_no_other_binding_and_recover() {
    let mut w = World::start();
    identities(&w, 8);
    let names: Vec<String> = (1..=8).map(|i| format!("id{i}")).collect();
    // Two requests hang past acrpull's 30 s call timeout (and its 20 s retry budget).
    w.azure.imds.faults.hang_next(2, Duration::from_secs(31));
    let since = Instant::now();
    let mut p = acrpull(&mut w, &[]);
    for (i, n) in names.iter().enumerate() {
        bind(&w, "default", n, "repository:app:pull", i as u32 + 1);
    }
    // Six bindings are served by the three free slots while two requests hang.
    w.wait_for("six bindings Ready while two IMDS calls hang", WAIT, || {
        let ready = names
            .iter()
            .filter(|n| {
                w.api
                    .get(BINDINGS_V1BETA2, "default", n)
                    .is_some_and(|b| is_ready(&b))
            })
            .count();
        (ready >= 6).then_some(())
    });
    assert!(
        since.elapsed() < Duration::from_secs(25),
        "the hung calls held the others back for {:?}",
        since.elapsed()
    );
    for n in &names {
        wait_ready(&w, "default", n);
    }
    let window = since.elapsed();
    let c = w.azure.imds.counters();
    assert!(
        c.max_concurrent <= 5,
        "{} IMDS requests at once",
        c.max_concurrent
    );
    assert_eq!(c.throttled, 0, "{c:?}");
    // 8 tokens, 2 hung requests, and for each of the 2 failed bindings at most one more pass
    // (the gate waits ≥ 3.75 s, the window is ~35 s) of up to 4 attempts.
    assert!(
        c.requests <= 8 + 2 + 2 * 4,
        "{} IMDS requests in {window:?}",
        c.requests
    );
    assert_intact(&w, "default", &names);
    assert_only_own_writes(&w);
    assert_alive(&mut p);
}

#[test]
fn entra_and_registry_401_5xx_and_slow_answers_recover() {
    let mut w = World::start();
    w.service_account(
        "default",
        "wi",
        json!({"azure.workload.identity/client-id": APP, "azure.workload.identity/tenant-id": TENANT}),
    );
    w.federate_service_account("default", "wi", APP, TENANT);
    // Short-lived Entra and IMDS tokens, so every new registry token needs a fresh one.
    w.azure.entra.set_token_lifetime(Duration::from_secs(6));
    w.azure.imds.set_token_lifetime(Duration::from_secs(6));
    let mut p = acrpull(&mut w, &[]);
    bind(&w, "default", "mi", "repository:app:pull", 1);
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2_workload(
                "default",
                "wi",
                "repository:app:pull",
                "wi",
                None,
                "default",
            ),
        )
        .expect("the workload binding is created");
    wait_ready(&w, "default", "mi");
    wait_ready(&w, "default", "wi");

    type Inject = fn(&World);
    let phases: [(&str, Inject, usize); 6] = [
        ("registry 401", |w| w.azure.acr.faults.fail_next(2, 401), 2),
        ("registry 503", |w| w.azure.acr.faults.fail_next(4, 503), 4),
        (
            "slow registry",
            |w| w.azure.acr.faults.set_latency(Duration::from_millis(1500)),
            0,
        ),
        ("Entra 401", |w| w.azure.entra.faults.fail_next(1, 401), 1),
        ("Entra 500", |w| w.azure.entra.faults.fail_next(3, 500), 3),
        (
            "slow Entra",
            |w| {
                w.azure
                    .entra
                    .faults
                    .set_latency(Duration::from_millis(1500))
            },
            0,
        ),
    ];
    for (i, (what, inject, failures)) in phases.into_iter().enumerate() {
        let acr_before = w.azure_requests("acr").len();
        let entra_before = w.azure_requests("entra").len();
        inject(&w);
        let since = Instant::now();
        let scope = format!("repository:app:pull repository:p{i}:pull");
        rescope(&w, "default", "mi", &scope);
        rescope(&w, "default", "wi", &scope);
        wait_ready(&w, "default", "mi");
        wait_ready(&w, "default", "wi");
        let window = since.elapsed();
        w.azure.acr.faults.clear();
        w.azure.entra.faults.clear();
        // Two bindings, each needing an exchange and a token per pass; a refusal costs a pass
        // (401 is not retried) and the next waits ≥ 3.75 s, so at most 1 + window/3.75 s passes.
        let passes = 2 + (window.as_secs_f64() / 3.75) as usize;
        let acr = w.azure_requests("acr").len() - acr_before;
        let entra = w.azure_requests("entra").len() - entra_before;
        assert!(
            acr <= failures + 2 * 2 * passes,
            "{what}: {acr} registry requests in {window:?}"
        );
        assert!(
            entra <= failures + passes,
            "{what}: {entra} Entra requests in {window:?}"
        );
    }
    assert!(
        requests(&w, "acr", |r| r.status == 401) >= 2,
        "the registry's 401s were met"
    );
    assert!(
        requests(&w, "entra", |r| r.status == 401) >= 1,
        "Entra's 401 was met"
    );
    assert_intact(&w, "default", &["mi".into(), "wi".into()]);
    assert_only_own_writes(&w);
    assert_alive(&mut p);
}

/// Parses an RFC 3339 status time into Unix seconds.
fn unix(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("a time, got {v}"));
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .unix_timestamp()
}

/// Starts a binding whose first status write fails once, and waits for its status to be written
/// after the retry (≥ 4 s later): a measured window of real work. Returns its length.
fn witness(w: &World, name: &str) -> Duration {
    w.api.inject(
        Fault::fail(
            500,
            Matcher::verb("patch", "acrpullbindings")
                .subresource("status")
                .name(name),
        )
        .times(1),
    );
    let since = Instant::now();
    bind(w, "default", name, "repository:witness:pull", 1);
    w.wait_for(&format!("{name}'s status after a retry"), WAIT, || {
        let b = w.api.get(BINDINGS_V1BETA2, "default", name)?;
        b["status"]["lastTokenRefreshTime"]
            .is_string()
            .then_some(())
    });
    since.elapsed()
}

#[test]
fn already_expired_and_far_future_tokens_neither_hot_loop_nor_stall() {
    let mut w = World::start();
    let now = || time::OffsetDateTime::now_utc().unix_timestamp();
    // The fakes run two hours behind: every registry token (75 min) has expired when issued.
    w.azure.set_clock_skew(-2 * 3600);
    let mut p = acrpull(&mut w, &[]);
    bind(&w, "default", "past", "repository:past:pull", 1);
    let b = w.wait_for("the expired token written", WAIT, || {
        let b = w.api.get(BINDINGS_V1BETA2, "default", "past")?;
        b["status"]["tokenExpirationTime"].is_string().then_some(b)
    });
    assert!(unix(&b["status"]["tokenExpirationTime"]) < now(), "{b}");
    assert!(!is_ready(&b), "an expired token is not Ready: {b}");
    // Count mints of that scope while an unrelated binding takes one failed status write and its
    // ≥ 4 s backoff to get its (equally expired) token written: the Secret is re-minted at most
    // once a second (plus the one in flight), never in a tight loop.
    let past = |w: &World| {
        requests(w, "acr", |r| {
            r.scope.as_deref() == Some("repository:past:pull")
        })
    };
    let before = past(&w);
    let since = Instant::now();
    let window = witness(&w, "witness");
    let mints = past(&w) - before;
    let max = 2 + window.as_secs() as usize;
    assert!(
        mints <= max,
        "{mints} mints of an expired token in {window:?}"
    );
    assert!(since.elapsed() >= window);
    // The clock is fixed; a change of inputs mints a usable token at once.
    w.azure.set_clock_skew(0);
    rescope(
        &w,
        "default",
        "past",
        "repository:past:pull repository:x:pull",
    );
    let b = wait_ready(&w, "default", "past");
    assert!(
        unix(&b["status"]["tokenExpirationTime"]) > now() + 3600,
        "{b}"
    );

    // Ten days ahead: the token claims to live ten days; it is refreshed at half of what it
    // claims, measured from when acrpull got it, so not again during this test.
    w.azure.set_clock_skew(10 * 24 * 3600);
    bind(&w, "default", "future", "repository:future:pull", 1);
    let b = wait_ready(&w, "default", "future");
    let refreshed = unix(&b["status"]["lastTokenRefreshTime"]);
    let expires = unix(&b["status"]["tokenExpirationTime"]);
    assert!(
        (refreshed - now()).abs() < 120,
        "refresh time is acrpull's clock: {b}"
    );
    assert!(expires > now() + 9 * 24 * 3600, "{b}");
    let secret = w
        .api
        .get("secrets", "default", "acr-pull-future")
        .expect("secret");
    let annotations = &secret["metadata"]["annotations"];
    assert_eq!(
        unix(&annotations["acr.microsoft.com/token.expiry"]),
        expires,
        "{secret}"
    );
    assert_eq!(
        unix(&annotations["acr.microsoft.com/token.refresh"]),
        refreshed,
        "{secret}"
    );
    let future = |w: &World| {
        requests(w, "acr", |r| {
            r.scope.as_deref() == Some("repository:future:pull")
        })
    };
    let before = future(&w);
    let window = witness(&w, "witness2");
    assert_eq!(
        future(&w),
        before,
        "a far-future token is not re-minted early ({window:?})"
    );
    assert_only_own_writes(&w);
    assert!(w.api.count_by_user(CONTROLLER_USER) > 0);
    assert_alive(&mut p);
}

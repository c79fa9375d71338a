//! End to end under Kubernetes faults (real binary, test kit, shipped RBAC): every route acrpull
//! uses answering 500, 503 and 429, list and watch failing, watch streams cut and compacted
//! mid-way, a concurrent ServiceAccount writer, and a rotated credential file.
//!
//! Every test ends the same way: once the fault clears each binding is Ready again, nothing was
//! lost (Secrets, ServiceAccount entries, foreign objects), the controller wrote only what it owns,
//! the number of requests during the fault stayed within what the backoff allows, and the process
//! is still running.
//!
//! Backoff facts the bounds rely on (see `src/controller/schedule.rs`,
//! `src/controller/reconcile.rs`, `src/kube/backoff.rs`, `src/kube/watch.rs`):
//! - a reconcile that fails on a Kubernetes error retries after 5 s × 2ⁿ × [0.8, 1.2], so never
//!   sooner than 4 s; with `Retry-After` it retries after max(1 s, Retry-After);
//! - a failing list or watch retries after 800 ms × 2ⁿ ± 25 % (so never sooner than 600 ms, then
//!   1.2 s, 2.4 s, …), or after `Retry-After` for a 429.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acrpull_testkit::kube::{ExpiredWatch, Fault, LoggedRequest, Matcher, BINDINGS_V1BETA2};
use acrpull_testkit::world::{
    binding_v1beta2, identity, is_ready, pull_secret_names, AcrpullOptions, World, CONTROLLER_USER,
    REGISTRY,
};
use serde_json::{json, Value};

use crate::{acrpull, assert_alive, bin};

const WAIT: Duration = Duration::from_secs(45);
const SCOPE: &str = "repository:app:pull";
/// The ServiceAccount bindings attach their Secret to.
const TARGET: &str = "app";
/// A pull Secret (and its reference on ServiceAccounts) that belongs to someone else.
const FOREIGN: &str = "foreign-pull";
/// A ServiceAccount no binding targets; it also references [`FOREIGN`].
const BYSTANDER: &str = "bystander";
/// The three answers every route is tried with.
const CODES: [u16; 3] = [500, 503, 429];

/// One kind of request, matched on what the emulator logs.
#[derive(Clone, Debug)]
struct Route {
    verb: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    namespace: Option<String>,
}

impl Route {
    fn new(verb: &'static str, resource: &'static str) -> Route {
        Route {
            verb,
            resource,
            subresource: None,
            namespace: None,
        }
    }

    fn sub(mut self, s: &'static str) -> Route {
        self.subresource = Some(s);
        self
    }

    fn ns(mut self, ns: &str) -> Route {
        self.namespace = Some(ns.to_string());
        self
    }

    fn matcher(&self) -> Matcher {
        let mut m = Matcher::verb(self.verb, self.resource);
        if let Some(s) = self.subresource {
            m = m.subresource(s);
        }
        if let Some(ns) = &self.namespace {
            m = m.namespace(ns);
        }
        m
    }

    fn matches(&self, r: &LoggedRequest) -> bool {
        r.user == CONTROLLER_USER
            && r.verb == self.verb
            && r.resource == self.resource
            && self.subresource.is_none_or(|s| r.subresource == s)
            && self.namespace.as_deref().is_none_or(|ns| r.namespace == ns)
    }

    /// Requests the controller made on this route.
    fn count(&self, w: &World) -> usize {
        w.api.count_matching(|r| self.matches(r))
    }

    /// Requests on this route answered with `code` (the injected fault).
    fn failures(&self, w: &World, code: u16) -> usize {
        w.api.count_matching(|r| self.matches(r) && r.code == code)
    }
}

/// The fault for `code`: 429s carry `Retry-After: 1`, as API Priority and Fairness sends.
fn fault(code: u16, route: &Route) -> Fault {
    if code == 429 {
        Fault::throttle(route.matcher(), 1)
    } else {
        Fault::fail(code, route.matcher())
    }
}

/// Most reconciles one binding can make on a failing route in `window`: the first, then one per
/// backoff delay (≥ 4 s for errors, exactly 1 s with `Retry-After: 1`), plus one in flight.
fn reconcile_bound(code: u16, window: Duration) -> usize {
    let gap = if code == 429 { 1.0 } else { 4.0 };
    2 + (window.as_secs_f64() / gap) as usize
}

/// Most list or watch attempts one stream makes in `window`: delays of at least 0.6 s doubling
/// (attempts ≤ 2 + log₂(1 + window/0.6 s)), or 1 s each with `Retry-After: 1`.
fn stream_bound(code: u16, window: Duration) -> usize {
    let t = window.as_secs_f64();
    if code == 429 {
        2 + t as usize
    } else {
        2 + (1.0 + t / 0.6).log2().ceil() as usize
    }
}

/// A namespace with the target ServiceAccount (already referencing a foreign pull Secret), a
/// foreign Secret and a bystander ServiceAccount.
fn tenant(w: &World, ns: &str) {
    w.namespace(ns);
    w.api
        .create(
            "secrets",
            ns,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                   "metadata": {"name": FOREIGN, "namespace": ns},
                   "data": {".dockerconfigjson": "e30="}}),
        )
        .expect("the foreign secret is created");
    for sa in [TARGET, BYSTANDER] {
        w.api
            .create(
                "serviceaccounts",
                ns,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": sa, "namespace": ns},
                       "imagePullSecrets": [{"name": FOREIGN}]}),
            )
            .expect("the service account is created");
    }
}

fn bind(w: &World, ns: &str, name: &str) {
    w.api
        .create(
            BINDINGS_V1BETA2,
            ns,
            binding_v1beta2(ns, name, REGISTRY, SCOPE, &identity(1).client_id, TARGET),
        )
        .expect("the binding is created");
}

fn wait_ready(w: &World, ns: &str, name: &str) -> Value {
    w.wait_for(&format!("binding {ns}/{name} Ready"), WAIT, || {
        w.api.get(BINDINGS_V1BETA2, ns, name).filter(is_ready)
    })
}

/// Nothing was lost: every binding's Secret exists, the target ServiceAccount references each of
/// them once plus the foreign entry, and the foreign objects are as they were.
fn assert_intact(w: &World, ns: &str, bindings: &[&str]) {
    for b in bindings {
        let s = w
            .api
            .get("secrets", ns, &format!("acr-pull-{b}"))
            .unwrap_or_else(|| panic!("secret acr-pull-{b} in {ns} exists"));
        assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
    }
    let sa = w.api.get("serviceaccounts", ns, TARGET).expect("target SA");
    let mut names = pull_secret_names(&sa);
    names.sort();
    let mut want: Vec<String> = bindings.iter().map(|b| format!("acr-pull-{b}")).collect();
    want.push(FOREIGN.to_string());
    want.sort();
    assert_eq!(names, want, "pull secrets of {ns}/{TARGET}");
    let foreign = w.api.get("secrets", ns, FOREIGN).expect("foreign secret");
    assert_eq!(foreign["data"][".dockerconfigjson"], "e30=");
    let bystander = w
        .api
        .get("serviceaccounts", ns, BYSTANDER)
        .expect("bystander");
    assert_eq!(pull_secret_names(&bystander), vec![FOREIGN.to_string()]);
}

/// The controller wrote only its pull Secrets, the target ServiceAccounts, bindings and Events.
fn assert_only_own_writes(w: &World, target_sas: &[&str]) {
    let stray: Vec<LoggedRequest> = w
        .controller_writes()
        .into_iter()
        .filter(|r| match r.resource.as_str() {
            // A create names no object in its path; it cannot overwrite anything either.
            "secrets" => {
                !(r.name.is_empty()
                    || r.name.starts_with("acr-pull-")
                    || r.name.ends_with("-msi-acrpull-secret"))
            }
            "serviceaccounts" => !target_sas.contains(&r.name.as_str()),
            "acrpullbindings" | "events" => false,
            _ => true,
        })
        .collect();
    assert!(
        stray.is_empty(),
        "writes to objects we do not own: {stray:#?}"
    );
}

/// Waits until every route has failed at least `n` times with `code` (the positive signal that
/// the fault window was exercised), then checks how many requests each made since `since`.
fn exercise(
    w: &World,
    routes: &[(Route, u16, usize)],
    since: Instant,
    bound: fn(u16, Duration) -> usize,
) {
    for (route, code, n) in routes {
        w.wait_for(&format!("{n} injected {code}s on {route:?}"), WAIT, || {
            (route.failures(w, *code) >= *n).then_some(())
        });
    }
    let window = since.elapsed();
    for (route, code, _) in routes {
        let made = route.count(w);
        let max = bound(*code, window);
        assert!(
            made <= max,
            "{made} requests on {route:?} in {window:?} while it answered {code}; the backoff allows {max}"
        );
    }
}

#[test]
fn every_write_and_read_route_recovers_from_500_503_and_429() {
    let mut w = World::start();
    w.api.set_default_sa_delay(Duration::ZERO);
    // Routes tried on a binding's first pass, one namespace per (route, code).
    let first_pass: [(&str, Route); 6] = [
        ("fin", Route::new("patch", "acrpullbindings").sub("")),
        (
            "status",
            Route::new("patch", "acrpullbindings").sub("status"),
        ),
        ("create", Route::new("create", "secrets")),
        ("saget", Route::new("get", "serviceaccounts")),
        ("sapatch", Route::new("patch", "serviceaccounts")),
        ("event", Route::new("create", "events")),
    ];
    let mut namespaces = Vec::new();
    for code in CODES {
        let shorts = first_pass.iter().map(|(s, _)| *s).chain(["upd", "del"]);
        for short in shorts {
            let ns = format!("{short}-{code}");
            tenant(&w, &ns);
            bind(&w, &ns, "b");
            namespaces.push(ns);
        }
    }
    let mut routes = Vec::new();
    for code in CODES {
        for (short, route) in &first_pass {
            let ns = format!("{short}-{code}");
            let route = route.clone().ns(&ns);
            if *short == "saget" {
                // The ServiceAccount is read only when the cache cannot be trusted: after a patch
                // conflicted. Every patch here conflicts, so every pass reads it.
                w.api.inject(Fault::fail(
                    409,
                    Matcher::verb("patch", "serviceaccounts").namespace(&ns),
                ));
            }
            w.api.inject(fault(code, &route));
            // An Event is written once per success and never retried; every other route is
            // retried, so a second failure proves the retry waited out its backoff.
            let n = if *short == "event" { 1 } else { 2 };
            routes.push((route, code, n));
        }
    }
    let since = Instant::now();
    let mut p = acrpull(&mut w, &[]);
    exercise(&w, &routes, since, reconcile_bound);
    w.api.clear_faults();
    for ns in &namespaces {
        wait_ready(&w, ns, "b");
        assert_intact(&w, ns, &["b"]);
    }
    assert_alive(&mut p);

    // Routes only a change uses: replacing the Secret (a new scope) and deleting it (the
    // binding goes).
    let mut routes = Vec::new();
    for code in CODES {
        let upd = Route::new("update", "secrets").ns(&format!("upd-{code}"));
        let del = Route::new("delete", "secrets").ns(&format!("del-{code}"));
        w.api.inject(fault(code, &upd));
        w.api.inject(fault(code, &del));
        routes.push((upd, code, 2));
        routes.push((del, code, 2));
    }
    let since = Instant::now();
    for code in CODES {
        let ns = format!("upd-{code}");
        let mut b = w.api.get(BINDINGS_V1BETA2, &ns, "b").expect("binding");
        b["spec"]["acr"]["scope"] = json!("repository:app:pull repository:other:pull");
        w.api
            .put(BINDINGS_V1BETA2, &ns, b)
            .expect("the scope changes");
        w.api
            .delete(BINDINGS_V1BETA2, &format!("del-{code}"), "b")
            .expect("the binding is deleted");
    }
    // Counts from before this phase are on other routes (update, delete were never used).
    exercise(&w, &routes, since, reconcile_bound);
    w.api.clear_faults();
    for code in CODES {
        let ns = format!("upd-{code}");
        let b = wait_ready(&w, &ns, "b");
        assert_eq!(
            b["spec"]["acr"]["scope"],
            "repository:app:pull repository:other:pull"
        );
        assert_intact(&w, &ns, &["b"]);
        let ns = format!("del-{code}");
        w.wait_for(&format!("binding {ns}/b gone"), WAIT, || {
            w.api
                .get(BINDINGS_V1BETA2, &ns, "b")
                .is_none()
                .then_some(())
        });
        assert!(
            w.api.get("secrets", &ns, "acr-pull-b").is_none(),
            "{ns}: secret deleted"
        );
        assert_intact(&w, &ns, &[]);
    }
    assert_only_own_writes(&w, &[TARGET]);
    assert_alive(&mut p);
}

/// Both binding kinds share the plural `acrpullbindings`: two streams, twice the attempts.
fn streams(resource: &str) -> usize {
    if resource == "acrpullbindings" {
        2
    } else {
        1
    }
}

const WATCHED: [&str; 3] = ["acrpullbindings", "secrets", "serviceaccounts"];

/// Waits until `verb` on every watched resource has failed with `code` once per stream since
/// `before` (the positive signal), then checks the attempts made since `since` against the
/// list/watch backoff.
fn streams_exercised(w: &World, verb: &'static str, code: u16, before: &[usize], since: Instant) {
    for (i, r) in WATCHED.iter().enumerate() {
        let route = Route::new(verb, r);
        w.wait_for(&format!("a failed {verb} of {r} ({code})"), WAIT, || {
            let failed = route.failures(w, code) >= streams(r);
            (failed && route.count(w) >= before[i] + streams(r)).then_some(())
        });
    }
    let window = since.elapsed();
    for (i, r) in WATCHED.iter().enumerate() {
        let made = Route::new(verb, r).count(w) - before[i];
        let max = streams(r) * stream_bound(code, window);
        assert!(
            made <= max,
            "{made} {verb}s of {r} in {window:?} answering {code}; allowed {max}"
        );
    }
}

fn counts(w: &World, verb: &'static str) -> Vec<usize> {
    WATCHED
        .iter()
        .map(|r| Route::new(verb, r).count(w))
        .collect()
}

/// A fresh process whose first lists fail with `code`; then, once it runs, every watch fails
/// with `code` after the streams are cut, while a binding is created and another deleted.
fn list_and_watch_outage(code: u16) {
    let mut w = World::start();
    w.api.set_default_sa_delay(Duration::ZERO);
    tenant(&w, "lw");
    bind(&w, "lw", "b0");
    let v1 = acrpull_testkit::kube::BINDINGS_V1BETA1;
    w.api
        .create(
            v1,
            "lw",
            acrpull_testkit::world::binding_v1beta1(
                "lw",
                "old",
                REGISTRY,
                SCOPE,
                &identity(1).client_id,
                TARGET,
            ),
        )
        .expect("the v1beta1 binding is created");
    for r in WATCHED {
        w.api.inject(fault(code, &Route::new("list", r)));
    }
    let since = Instant::now();
    let mut p = acrpull(&mut w, &[]);
    streams_exercised(&w, "list", code, &[0, 0, 0], since);
    w.api.clear_faults();
    wait_ready(&w, "lw", "b0");
    w.wait_for("v1beta1 binding Ready", WAIT, || {
        w.api.get(v1, "lw", "old").filter(is_ready)
    });

    let before = counts(&w, "watch");
    for r in WATCHED {
        w.api.inject(fault(code, &Route::new("watch", r)));
    }
    let since = Instant::now();
    w.api.cut_watches();
    // Changes no watch can deliver until the fault clears.
    bind(&w, "lw", "late");
    w.api
        .delete(BINDINGS_V1BETA2, "lw", "b0")
        .expect("b0 is deleted");
    streams_exercised(&w, "watch", code, &before, since);
    w.api.clear_faults();
    wait_ready(&w, "lw", "late");
    w.wait_for("b0 and its secret gone", WAIT, || {
        (w.api.get(BINDINGS_V1BETA2, "lw", "b0").is_none()
            && w.api.get("secrets", "lw", "acr-pull-b0").is_none())
        .then_some(())
    });
    let sa = w
        .api
        .get("serviceaccounts", "lw", TARGET)
        .expect("target SA");
    let mut names = pull_secret_names(&sa);
    names.sort();
    assert_eq!(
        names,
        ["acr-pull-late", FOREIGN, "old-msi-acrpull-secret"],
        "{code}"
    );
    assert_only_own_writes(&w, &[TARGET]);
    assert_alive(&mut p);
}

#[test]
fn list_and_watch_of_every_resource_recover_from_500_503_and_429() {
    for code in CODES {
        list_and_watch_outage(code);
    }
}

#[test]
fn cut_and_compacted_watches_resume_or_relist_without_losing_changes() {
    let mut w = World::start();
    w.api.set_default_sa_delay(Duration::ZERO);
    tenant(&w, "cc");
    let mut p = acrpull(&mut w, &[]);
    bind(&w, "cc", "b1");
    bind(&w, "cc", "b2");
    wait_ready(&w, "cc", "b1");
    wait_ready(&w, "cc", "b2");

    // A cut stream resumes from its resourceVersion: no relist, and nothing missed.
    let lists = counts(&w, "list");
    w.api.cut_watches();
    bind(&w, "cc", "b3");
    wait_ready(&w, "cc", "b3");
    assert_eq!(
        counts(&w, "list"),
        lists,
        "a cut watch resumes without relisting"
    );

    // History compacted while streams are open: the resume gets 410 (in the stream, or as the
    // HTTP status) and each stream relists once; changes made meanwhile are all seen.
    for (mode, gone, added) in [
        (ExpiredWatch::InStream, "b1", "b4"),
        (ExpiredWatch::Http, "b3", "b5"),
    ] {
        w.api.set_expired_watch(mode);
        let lists = counts(&w, "list");
        let since = Instant::now();
        w.api.compact();
        w.api.cut_watches();
        w.api
            .delete(BINDINGS_V1BETA2, "cc", gone)
            .expect("the binding is deleted");
        bind(&w, "cc", added);
        let mut b2 = w.api.get(BINDINGS_V1BETA2, "cc", "b2").expect("b2");
        b2["spec"]["acr"]["scope"] = json!(format!("repository:app:pull repository:{added}:pull"));
        w.api.put(BINDINGS_V1BETA2, "cc", b2).expect("b2 changes");
        wait_ready(&w, "cc", added);
        wait_ready(&w, "cc", "b2");
        w.wait_for(&format!("{gone} and its secret gone"), WAIT, || {
            (w.api.get(BINDINGS_V1BETA2, "cc", gone).is_none()
                && w.api
                    .get("secrets", "cc", &format!("acr-pull-{gone}"))
                    .is_none())
            .then_some(())
        });
        let relists = |w: &World| -> Vec<usize> {
            counts(w, "list")
                .iter()
                .zip(&lists)
                .map(|(now, then)| now - then)
                .collect()
        };
        w.wait_for("every stream relisted", WAIT, || {
            let r = relists(&w);
            WATCHED
                .iter()
                .zip(&r)
                .all(|(res, n)| *n >= streams(res))
                .then_some(())
        });
        let relists = relists(&w);
        // One relist per stream; a second only if a watch was cut again before it started.
        for (r, n) in WATCHED.iter().zip(&relists) {
            assert!(
                *n <= 2 * streams(r),
                "{n} relists of {r} after compaction ({mode:?}, {:?})",
                since.elapsed()
            );
        }
    }
    assert_intact(&w, "cc", &["b2", "b4", "b5"]);
    assert_only_own_writes(&w, &[TARGET]);
    assert_alive(&mut p);
}

#[test]
fn a_concurrent_service_account_writer_loses_no_entry_in_a_conflict_storm() {
    let mut w = World::start();
    w.api.set_default_sa_delay(Duration::ZERO);
    tenant(&w, "storm");
    let mut p = acrpull(&mut w, &[]);
    let api = Arc::new(w);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (api, stop, written) = (api.clone(), stop.clone(), written.clone());
        // The other writer: read, append its own entry, write back with the read resourceVersion
        // (retrying its own conflicts), as fast as it can until told to stop.
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 2000 {
                let Some(mut sa) = api.api.get("serviceaccounts", "storm", TARGET) else {
                    continue;
                };
                let mut refs = sa["imagePullSecrets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                refs.push(json!({"name": format!("other-{i}")}));
                sa["imagePullSecrets"] = Value::Array(refs);
                if api.api.put("serviceaccounts", "storm", sa).is_ok() {
                    i += 1;
                    written.store(i, Ordering::SeqCst);
                }
                // Pacing only: a write every few milliseconds keeps the storm going for as long
                // as the bindings take, without growing the list without bound.
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let names: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
    let since = Instant::now();
    for n in &names {
        bind(&api, "storm", n);
    }
    // Let the storm run until every binding got its Secret attached at least once.
    for n in &names {
        let want = format!("acr-pull-{n}");
        api.wait_for(&format!("{want} attached during the storm"), WAIT, || {
            let sa = api.api.get("serviceaccounts", "storm", TARGET)?;
            pull_secret_names(&sa).contains(&want).then_some(())
        });
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("the writer thread ends");
    let window = since.elapsed();
    let foreign = written.load(Ordering::SeqCst);
    assert!(foreign > 0, "the other writer made progress");
    for n in &names {
        wait_ready(&api, "storm", n);
    }
    let sa = api.api.get("serviceaccounts", "storm", TARGET).expect("SA");
    let got = pull_secret_names(&sa);
    for i in 0..foreign {
        assert!(
            got.contains(&format!("other-{i}")),
            "other-{i} survived: {got:?}"
        );
    }
    for n in &names {
        let want = format!("acr-pull-{n}");
        assert_eq!(
            got.iter().filter(|g| **g == want).count(),
            1,
            "{want} once: {got:?}"
        );
    }
    assert!(got.contains(&FOREIGN.to_string()));
    assert_eq!(got.len(), foreign + names.len() + 1, "{got:?}");
    // Each reconcile tries at most 4 writes before giving up for a backoff of ≥ 4 s, and each
    // binding needs one successful patch; so per binding ≤ 4 × (2 + window / 4 s).
    let patches = Route::new("patch", "serviceaccounts").count(&api);
    let max = names.len() * 4 * (2 + (window.as_secs_f64() / 4.0) as usize);
    assert!(
        patches <= max,
        "{patches} SA patches in {window:?}; allowed {max}"
    );
    assert_only_own_writes(&api, &[TARGET]);
    assert_alive(&mut p);
}

#[test]
fn a_rotated_token_file_is_reread_after_a_401() {
    let mut w = World::start();
    tenant(&w, "rot");
    let (kubeconfig, token_file) = w.controller_token_file_kubeconfig("token-one");
    let mut p = w.start_acrpull_with_kubeconfig(bin(), &AcrpullOptions::default(), &kubeconfig);
    bind(&w, "rot", "b1");
    wait_ready(&w, "rot", "b1");
    w.rotate_controller_token(&token_file, "token-one", "token-two");
    // The next requests carry the old token, get 401, re-read the file and go on.
    bind(&w, "rot", "b2");
    wait_ready(&w, "rot", "b2");
    let unauthorized = w.api.count_matching(|r| r.code == 401);
    assert!(unauthorized >= 1, "the old token was refused at least once");
    // Watches that were open keep streaming; once restarted they must use the new token too.
    w.api.cut_watches();
    let before = w.api.count_by_user(CONTROLLER_USER);
    bind(&w, "rot", "b3");
    wait_ready(&w, "rot", "b3");
    assert!(w.api.count_by_user(CONTROLLER_USER) > before);
    // Each request that met the old token is retried once with the new one: the 401s are few
    // (one per client connection in use at the rotation, at most a handful), never a loop.
    let refused = w.api.count_matching(|r| r.code == 401);
    assert!(
        refused <= 12,
        "{refused} requests refused after the rotation"
    );
    assert_intact(&w, "rot", &["b1", "b2", "b3"]);
    assert_only_own_writes(&w, &[TARGET]);
    assert_alive(&mut p);
}

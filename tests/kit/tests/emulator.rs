//! Emulator-only behaviour: fault injection, watch cuts and compaction, RBAC loading,
//! garbage collection, CRD toggles and the request log.

mod common;

use std::time::{Duration, Instant};

use acrpull_testkit::kube::{
    ApiServer, ExpiredWatch, Fault, Latency, Matcher, Policies, Rule, ADMIN_USER, BINDINGS_V1BETA2,
};
use common::{eventually, rv, Client};
use serde_json::{json, Value};

fn setup() -> (ApiServer, Client) {
    let api = ApiServer::start();
    let client = Client::new(&api.url(), api.ca_pem().as_bytes(), api.admin_token());
    api.create_namespace("ns").unwrap();
    (api, client)
}

fn secret(name: &str) -> Value {
    json!({"metadata": {"name": name}})
}

const SECRETS: &str = "/api/v1/namespaces/ns/secrets";

#[test]
fn injected_failures_hit_exactly_the_matching_requests() {
    let (api, c) = setup();
    api.inject(Fault::fail(503, Matcher::verb("list", "secrets")).times(2));
    assert_eq!(c.get(SECRETS).0, 503);
    assert_eq!(
        c.get(&format!("{SECRETS}/x")).0,
        404,
        "a get does not match"
    );
    assert_eq!(c.get(SECRETS).0, 503);
    assert_eq!(c.get(SECRETS).0, 200, "the fault is used up");
}

#[test]
fn a_fault_for_one_user_leaves_the_others_alone() {
    let (api, admin) = setup();
    api.add_user("token-u", "u");
    api.add_admin("u");
    let u = admin.with_token("token-u");
    api.inject(Fault::fail(503, Matcher::any().user("u")));
    assert_eq!(u.get(SECRETS).0, 503);
    assert_eq!(admin.get(SECRETS).0, 200, "another user is served");
    assert_eq!(u.get(SECRETS).0, 503, "the fault lasts");
}

#[test]
fn an_injected_conflict_reads_like_a_real_one() {
    let (api, c) = setup();
    c.post(SECRETS, &secret("a"));
    api.inject(Fault::fail(409, Matcher::verb("update", "secrets").name("a")).times(1));
    let (code, st) = c.put(&format!("{SECRETS}/a"), &secret("a"));
    assert_eq!(code, 409);
    assert_eq!(st["reason"], "Conflict");
    assert!(st["message"].as_str().unwrap().ends_with("the object has been modified; please apply your changes to the latest version and try again"));
    assert_eq!(c.put(&format!("{SECRETS}/a"), &secret("a")).0, 200);
}

#[test]
fn throttling_sends_429_with_retry_after() {
    let (api, c) = setup();
    api.inject(Fault::throttle(Matcher::any(), 1).times(1));
    let (code, ra) = c.get_retry_after(SECRETS);
    assert_eq!((code, ra.as_deref()), (429, Some("1")));
    api.clear_faults();
    assert_eq!(c.get(SECRETS).0, 200);
}

#[test]
fn latency_fault_delays_the_answer() {
    let (api, c) = setup();
    api.inject(Fault::delay(Matcher::verb("list", "secrets"), Duration::from_millis(200)).times(1));
    let start = Instant::now();
    assert_eq!(c.get(SECRETS).0, 200);
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn cut_watches_breaks_open_streams() {
    let (api, c) = setup();
    let (_, w) = c.watch(&format!("{SECRETS}?watch=1&timeoutSeconds=30"));
    let mut w = w.unwrap();
    // The watch is registered once the request is logged; then cut it.
    eventually(Duration::from_secs(5), "the watch to start", || {
        (api.count("watch", "secrets") == 1).then_some(())
    });
    api.cut_watches();
    let start = Instant::now();
    assert!(w.next_event().is_none());
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn compaction_makes_a_resume_an_in_stream_410() {
    let (api, c) = setup();
    let (_, s) = c.post(SECRETS, &secret("a"));
    api.compact();
    let (code, w) = c.watch(&format!(
        "{SECRETS}?watch=1&resourceVersion={}&timeoutSeconds=5",
        rv(&s)
    ));
    assert_eq!(code, 200);
    let e = w.unwrap().next_event().unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    api.set_expired_watch(ExpiredWatch::Http);
    let (code, _) = c.watch(&format!(
        "{SECRETS}?watch=1&resourceVersion={}&timeoutSeconds=5",
        rv(&s)
    ));
    assert_eq!(code, 410);
}

#[test]
fn a_short_history_expires_old_resume_points_and_continue_tokens() {
    let (api, c) = setup();
    api.set_history_limit(2);
    let (_, first) = c.post(SECRETS, &secret("a"));
    c.post(SECRETS, &secret("b"));
    let (_, page) = c.get(&format!("{SECRETS}?limit=1"));
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    for n in ["c", "d", "e"] {
        c.post(SECRETS, &secret(n));
    }
    let (_, w) = c.watch(&format!(
        "{SECRETS}?watch=1&resourceVersion={}&timeoutSeconds=5",
        rv(&first)
    ));
    assert_eq!(w.unwrap().next_event().unwrap()["type"], "ERROR");
    let (code, st) = c.get(&format!("{SECRETS}?limit=1&continue={token}"));
    assert_eq!(code, 410, "{st}");
}

#[test]
fn bookmarks_carry_only_the_resource_version() {
    let (api, c) = setup();
    api.set_bookmark_interval(Duration::from_millis(50));
    let (_, w) = c.watch(&format!(
        "{SECRETS}?watch=1&allowWatchBookmarks=true&timeoutSeconds=10"
    ));
    let e = w.unwrap().until(|e| e["type"] == "BOOKMARK");
    assert_eq!(e["object"]["kind"], "Secret");
    assert_eq!(e["object"]["apiVersion"], "v1");
    assert!(e["object"]["metadata"]["resourceVersion"].is_string());
    assert_eq!(e["object"]["metadata"].as_object().unwrap().len(), 1);
}

#[test]
fn initial_events_end_with_an_annotated_bookmark() {
    let (_api, c) = setup();
    c.post(SECRETS, &secret("a"));
    let (_, w) = c.watch(&format!(
        "{SECRETS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=10"
    ));
    let mut w = w.unwrap();
    assert_eq!(w.next_event().unwrap()["type"], "ADDED");
    let b = w.next_event().unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(
        b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

const RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects:
- {kind: ServiceAccount, name: ctl, namespace: sys}
"#;

#[test]
fn rbac_yaml_allows_exactly_what_it_grants() {
    let (api, c) = setup();
    let users = api.load_rbac(RBAC).unwrap();
    assert_eq!(users, ["system:serviceaccount:sys:ctl"]);
    api.add_user("ctl-token", "system:serviceaccount:sys:ctl");
    let ctl = c.with_token("ctl-token");
    assert_eq!(ctl.get(SECRETS).0, 200);
    assert_eq!(
        ctl.get("/api/v1/secrets").0,
        200,
        "a ClusterRoleBinding is cluster-wide"
    );
    let (code, _) = ctl.watch(&format!("{SECRETS}?watch=1&timeoutSeconds=1"));
    assert_eq!(code, 403, "watch needs its own verb");
    let (code, st) = ctl.delete(&format!("{SECRETS}/x"));
    assert_eq!(code, 403);
    assert_eq!(
        st["message"],
        "secrets \"x\" is forbidden: User \"system:serviceaccount:sys:ctl\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"ns\""
    );
    let (code, st) = ctl.get("/api/v1/namespaces/ns/serviceaccounts");
    assert_eq!(code, 403);
    assert_eq!(st["reason"], "Forbidden");
}

#[test]
fn rules_scope_by_namespace_subresource_and_name() {
    let (api, c) = setup();
    api.create_namespace("other").unwrap();
    api.add_user("u-token", "u");
    api.allow(
        "u",
        Rule::namespaced("ns", &["get", "update"], &[""], &["serviceaccounts"]).names(&["default"]),
    );
    api.allow(
        "u",
        Rule::cluster(&["create"], &[""], &["serviceaccounts/token"]),
    );
    let u = c.with_token("u-token");
    eventually(Duration::from_secs(5), "the default ServiceAccount", || {
        api.get("serviceaccounts", "ns", "default")
    });
    assert_eq!(
        u.get("/api/v1/namespaces/ns/serviceaccounts/default").0,
        200
    );
    assert_eq!(
        u.get("/api/v1/namespaces/other/serviceaccounts/default").0,
        403
    );
    assert_eq!(
        u.get("/api/v1/namespaces/ns/serviceaccounts").0,
        403,
        "resourceNames never allow list"
    );
    let (code, _) = u.post(
        "/api/v1/namespaces/ns/serviceaccounts/default/token",
        &json!({"spec": {"audiences": ["a"]}}),
    );
    assert_eq!(code, 201);
    assert_eq!(api.token_requests()[0].audiences, ["a"]);
    assert_eq!(api.token_requests()[0].service_account, "default");
}

#[test]
fn deleting_an_owner_garbage_collects_its_dependents() {
    let (api, _c) = setup();
    let b = api
        .create(
            BINDINGS_V1BETA2,
            "ns",
            json!({"metadata": {"name": "b"}, "spec": {
                "acr": {"server": "r.azurecr.io", "scope": "repository:a:pull"},
                "auth": {"managedIdentity": {"clientID": "c"}},
                "serviceAccountName": "default"}}),
        )
        .unwrap();
    let owner = json!([{"apiVersion": "acrpull.microsoft.com/v1beta2", "kind": "AcrPullBinding",
        "name": "b", "uid": b["metadata"]["uid"], "controller": true}]);
    api.create(
        "secrets",
        "ns",
        json!({"metadata": {"name": "s", "ownerReferences": owner}}),
    )
    .unwrap();
    api.delete(BINDINGS_V1BETA2, "ns", "b").unwrap();
    eventually(Duration::from_secs(5), "the dependent Secret to go", || {
        api.get("secrets", "ns", "s").is_none().then_some(())
    });
}

#[test]
fn an_uninstalled_crd_answers_404() {
    let (api, c) = setup();
    let path = "/apis/acrpull.microsoft.com/v1beta2/namespaces/ns/acrpullbindings";
    assert_eq!(c.get(path).0, 200);
    api.set_crd_installed(BINDINGS_V1BETA2, false);
    assert_eq!(c.get(path).0, 404);
    assert_eq!(
        c.get("/apis/msi-acrpull.microsoft.com/v1beta1/acrpullbindings")
            .0,
        200
    );
    api.set_crd_installed(BINDINGS_V1BETA2, true);
    assert_eq!(c.get(path).0, 200);
}

#[test]
fn the_request_log_records_user_verb_resource_and_code() {
    let (api, c) = setup();
    c.post(SECRETS, &secret("a"));
    c.get(&format!("{SECRETS}/a"));
    c.get(&format!("{SECRETS}/missing"));
    c.with_token("bad").get(SECRETS);
    let log = api.request_log();
    assert_eq!(log.len(), 4);
    assert_eq!((log[0].verb.as_str(), log[0].code), ("create", 201));
    assert_eq!((log[2].name.as_str(), log[2].code), ("missing", 404));
    assert_eq!((log[3].user.as_str(), log[3].code), ("", 401));
    assert_eq!(api.count("get", "secrets"), 2);
    assert_eq!(api.count_by_user(ADMIN_USER), 3);
    api.clear_log();
    assert!(api.request_log().is_empty());
}

#[test]
fn deleting_a_namespace_removes_its_content() {
    let (api, c) = setup();
    c.post(SECRETS, &secret("a"));
    assert_eq!(c.delete("/api/v1/namespaces/ns").0, 200);
    eventually(Duration::from_secs(5), "the namespace to go", || {
        api.get("namespaces", "", "ns").is_none().then_some(())
    });
    assert!(api.get("secrets", "ns", "a").is_none());
    assert_eq!(c.post(SECRETS, &secret("b")).0, 404);
}

#[test]
fn the_temporary_directory_goes_with_the_server() {
    let api = ApiServer::start();
    let kubeconfig = api.kubeconfig_path().to_path_buf();
    assert!(kubeconfig.exists());
    assert!(api.ca_path().exists());
    drop(api);
    assert!(!kubeconfig.exists());
}

#[test]
fn discovery_lists_installed_groups_only() {
    let (api, c) = setup();
    let (code, groups) = c.get("/apis");
    assert_eq!(code, 200);
    assert!(groups.to_string().contains("\"acrpull.microsoft.com\""));
    assert_eq!(c.get("/apis/acrpull.microsoft.com/v1beta2").0, 200);
    api.set_crd_installed(BINDINGS_V1BETA2, false);
    assert_eq!(c.get("/apis/acrpull.microsoft.com/v1beta2").0, 404);
    assert_eq!(c.with_token("bad").get("/api/v1").0, 401);
    let (code, jwks) = c.get("/openid/v1/jwks");
    assert_eq!((code, jwks["keys"][0]["kty"].as_str()), (200, Some("RSA")));
}

#[test]
fn chart_admission_policies_judge_only_the_controller() {
    let (api, c) = setup();
    let ctl_user = "system:serviceaccount:acrpull:acrpull";
    api.add_user("ctl", ctl_user);
    api.add_admin(ctl_user);
    api.set_admission_policies(Some(Policies {
        controller_user: ctl_user.into(),
        token_audience: "api://AzureCRTokenExchange".into(),
    }));
    let ctl = c.with_token("ctl");
    let (code, st) = ctl.post(SECRETS, &secret("plain"));
    assert_eq!(code, 403, "{st}");
    assert!(st["message"]
        .as_str()
        .unwrap()
        .contains("controller-secret-mutation-policy"));
    assert_eq!(
        c.post(SECRETS, &secret("plain")).0,
        201,
        "the admin is not judged"
    );
    let sa = eventually(Duration::from_secs(5), "the default ServiceAccount", || {
        api.get("serviceaccounts", "ns", "default")
    });
    let mut foreign = sa.clone();
    foreign["imagePullSecrets"] = json!([{"name": "someone-elses"}]);
    assert_eq!(
        ctl.put("/api/v1/namespaces/ns/serviceaccounts/default", &foreign)
            .0,
        403
    );
    let mut ours = sa;
    ours["imagePullSecrets"] = json!([{"name": "acr-pull-b"}]);
    assert_eq!(
        ctl.put("/api/v1/namespaces/ns/serviceaccounts/default", &ours)
            .0,
        200
    );
    let token = "/api/v1/namespaces/ns/serviceaccounts/default/token";
    assert_eq!(
        ctl.post(token, &json!({"spec": {"audiences": ["other"]}}))
            .0,
        403
    );
    assert_eq!(
        ctl.post(
            token,
            &json!({"spec": {"audiences": ["api://AzureCRTokenExchange"]}})
        )
        .0,
        201
    );
}

#[test]
fn concurrent_watchers_see_every_write_once_and_in_order() {
    let (api, c) = setup();
    let from = api.resource_version();
    let watchers: Vec<_> = (0..3)
        .map(|_| {
            let (_, w) = c.watch(&format!(
                "{SECRETS}?watch=1&resourceVersion={from}&timeoutSeconds=30"
            ));
            let mut w = w.unwrap();
            std::thread::spawn(move || {
                let mut rvs = Vec::new();
                while rvs.len() < 100 {
                    let e = w.next_event().expect("the stream stays open");
                    assert_eq!(e["type"], "ADDED");
                    rvs.push(rv(&e["object"]).parse::<u64>().unwrap());
                }
                rvs
            })
        })
        .collect();
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let c = Client::new(&api.url(), api.ca_pem().as_bytes(), api.admin_token());
            std::thread::spawn(move || {
                for i in 0..50 {
                    assert_eq!(c.post(SECRETS, &secret(&format!("w{t}-{i}"))).0, 201);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for w in watchers {
        let rvs = w.join().unwrap();
        assert!(rvs.windows(2).all(|p| p[0] < p[1]), "strictly increasing");
    }
}

#[test]
fn a_cut_watch_resumes_from_the_last_seen_version_without_loss() {
    let (api, c) = setup();
    let from = api.resource_version();
    let (_, w) = c.watch(&format!(
        "{SECRETS}?watch=1&resourceVersion={from}&timeoutSeconds=30"
    ));
    let mut w = w.unwrap();
    c.post(SECRETS, &secret("a"));
    let seen = rv(&w.next_event().unwrap()["object"]);
    api.cut_watches();
    assert!(w.next_event().is_none());
    c.post(SECRETS, &secret("b"));
    let (_, w) = c.watch(&format!(
        "{SECRETS}?watch=1&resourceVersion={seen}&timeoutSeconds=30"
    ));
    let e = w.unwrap().next_event().unwrap();
    assert_eq!(e["object"]["metadata"]["name"], "b");
}

#[test]
fn concurrent_writes_overlap_their_latency() {
    let (api, c) = setup();
    let write = Duration::from_millis(400);
    api.set_latency(Latency {
        write,
        ..Latency::default()
    });
    let start = Instant::now();
    std::thread::scope(|s| {
        let a = s.spawn(|| c.post(SECRETS, &secret("a")).0);
        let b = s.spawn(|| c.post(SECRETS, &secret("b")).0);
        assert_eq!(a.join().unwrap(), 201);
        assert_eq!(b.join().unwrap(), 201);
    });
    let took = start.elapsed();
    assert!(took >= write, "each write waits its latency: {took:?}");
    assert!(took < 2 * write, "the two writes overlap: {took:?}");
}

#[test]
fn a_write_shows_only_once_its_latency_has_passed() {
    let (api, c) = setup();
    let write = Duration::from_millis(400);
    api.set_latency(Latency {
        write,
        ..Latency::default()
    });
    let start = Instant::now();
    std::thread::scope(|s| {
        let w = s.spawn(|| c.post(SECRETS, &secret("late")).0);
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            api.get("secrets", "ns", "late").is_none(),
            "the write is not visible before its latency has passed"
        );
        assert_eq!(w.join().unwrap(), 201);
        assert!(start.elapsed() >= write, "the reply waits the latency");
        assert!(api.get("secrets", "ns", "late").is_some());
    });
}

#[test]
fn reads_and_watch_events_wait_their_own_latency() {
    let (api, c) = setup();
    let (read, watch) = (Duration::from_millis(200), Duration::from_millis(300));
    let (code, w) = c.watch(&format!(
        "{SECRETS}?watch=1&resourceVersion={}",
        api.resource_version()
    ));
    assert_eq!(code, 200);
    let mut w = w.unwrap();
    api.set_latency(Latency {
        read,
        write: Duration::ZERO,
        watch,
    });
    let start = Instant::now();
    assert_eq!(c.get(SECRETS).0, 200);
    assert!(start.elapsed() >= read, "a list waits the read latency");
    let start = Instant::now();
    api.create("secrets", "ns", secret("w")).unwrap();
    let ev = w.next_event().expect("the watch delivers the event");
    assert_eq!(ev["type"], "ADDED");
    assert!(
        start.elapsed() >= watch,
        "the event waits the watch latency"
    );
}

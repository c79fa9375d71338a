//! The reconcile scenarios of spec §7 that v1beta1 and v1beta2 share, written once: `scenarios!`
//! declares one test per scenario in the `v1beta1` and `v1beta2` modules, which also hold what
//! only their version does. A scenario from §7 names its numbers there (v1beta1 / v1beta2).

use acrpull_testkit::kube::{BINDINGS_V1BETA1, BINDINGS_V1BETA2};
use acrpull_testkit::world::{
    assert_pull_secret, binding_v1beta2, identity, jwt_expiry, parse_rfc3339, Acrpull,
    AcrpullOptions, World, BINDING_LABEL, EXPIRY_ANNOTATION, FINALIZER, INPUTS_ANNOTATION,
    REFRESH_ANNOTATION, REGISTRY, WAIT,
};
use serde_json::{json, Value};

use crate::{acrpull, bin, now_unix};

pub const NS: &str = "default";
pub const SCOPE: &str = "repository:app:pull";

/// Declares a `#[test]` per shared scenario, each running it for `$version`.
macro_rules! scenarios {
    ($version:expr) => {
        $crate::versions::scenarios!(@each $version;
            new_binding_gets_the_finalizer,
            missing_service_account_is_a_status_error_until_it_appears,
            new_binding_gets_its_secret_reference_and_status,
            token_failure_is_a_status_error,
            removed_reference_is_added_back,
            pull_secrets_are_sorted_unrelated_then_v1beta2_then_v1beta1,
            stale_status_is_corrected,
            extraneous_reference_removed_then_old_secret_deleted,
            up_to_date_binding_makes_no_writes_and_no_token_requests,
            service_account_change_during_cleanup_keeps_unrelated_entries,
            changed_server_regenerates_the_secret,
            changed_client_id_regenerates_the_secret,
            deletion_unreferences_deletes_the_secret_then_drops_the_finalizer,
            deletion_completes_when_the_service_account_is_missing,
            new_binding_costs_exactly_four_writes,
        );
    };
    (@each $version:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                $crate::versions::$scenario($version);
            }
        )*
    };
}
pub(crate) use scenarios;

/// An AcrPullBinding API version, and what the scenarios need to know about it. Every scenario
/// works on binding `b` in [`NS`], for identity 1 on [`REGISTRY`] with [`SCOPE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `msi-acrpull.microsoft.com/v1beta1`, run with upstream's environment defaults.
    V1beta1,
    /// `acrpull.microsoft.com/v1beta2`.
    V1beta2,
}

impl Version {
    /// The plural resource, as the kit names it.
    pub fn res(self) -> &'static str {
        match self {
            Version::V1beta1 => BINDINGS_V1BETA1,
            Version::V1beta2 => BINDINGS_V1BETA2,
        }
    }

    /// The version as acrpull's log names it (`default/b (v1beta1)`).
    pub fn name(self) -> &'static str {
        match self {
            Version::V1beta1 => "v1beta1",
            Version::V1beta2 => "v1beta2",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Version::V1beta1 => "msi-acrpull.microsoft.com/v1beta1",
            Version::V1beta2 => "acrpull.microsoft.com/v1beta2",
        }
    }

    /// The name of `b`'s pull Secret.
    pub fn secret_name(self) -> &'static str {
        match self {
            Version::V1beta1 => "b-msi-acrpull-secret",
            Version::V1beta2 => "acr-pull-b",
        }
    }

    /// A name of `b`'s Secret under an older naming scheme, as an earlier version left it.
    fn old_secret_name(self) -> &'static str {
        match self {
            Version::V1beta1 => "b-msi-acrpull-secret-whatever",
            Version::V1beta2 => "acr-pull-b-0123456789",
        }
    }

    /// What a spec says to target the namespace's `default` ServiceAccount: upstream's v1beta1
    /// leaves the field empty, v1beta2 requires the name.
    fn default_service_account(self) -> &'static str {
        match self {
            Version::V1beta1 => "",
            Version::V1beta2 => "default",
        }
    }

    /// How the status error of a failed IMDS token starts (upstream's wording differs).
    fn arm_token_error(self) -> &'static str {
        match self {
            Version::V1beta1 => "failed to retrieve ACR access token: ",
            Version::V1beta2 => "failed to retrieve ARM token: ",
        }
    }

    /// The resource acrpull asks IMDS for: v1beta1's `ARM_RESOURCE` default, or v1beta2's
    /// public-cloud ARM audience.
    fn arm_resource(self) -> &'static str {
        match self {
            Version::V1beta1 => "https://management.azure.com/",
            Version::V1beta2 => "https://management.core.windows.net/",
        }
    }

    /// Starts acrpull with extra flags; for v1beta1 with upstream's environment defaults,
    /// `ACR_SERVER` = [`REGISTRY`] and `MANAGED_IDENTITY_RESOURCE_ID` = identity 1.
    pub fn start(self, w: &mut World, args: &[&str]) -> Acrpull {
        match self {
            Version::V1beta1 => {
                let opts = AcrpullOptions {
                    args: args.iter().map(|a| a.to_string()).collect(),
                    env: vec![
                        ("ACR_SERVER".into(), REGISTRY.into()),
                        (
                            "MANAGED_IDENTITY_RESOURCE_ID".into(),
                            identity(1).resource_id,
                        ),
                    ],
                    ..AcrpullOptions::default()
                };
                w.start_acrpull(bin(), &opts)
            }
            Version::V1beta2 => acrpull(w, args),
        }
    }

    /// Binding `b` targeting ServiceAccount `sa`; a v1beta1 one leaves server and identity to
    /// the environment defaults (see [`Version::start`]).
    fn binding(self, sa: &str) -> Value {
        match self {
            Version::V1beta1 => {
                let mut spec = json!({});
                if !sa.is_empty() {
                    spec["serviceAccountName"] = json!(sa);
                }
                v1beta1_binding(spec)
            }
            Version::V1beta2 => {
                binding_v1beta2(NS, "b", REGISTRY, SCOPE, &identity(1).client_id, sa)
            }
        }
    }

    /// Creates this binding object.
    pub fn create_obj(self, w: &World, obj: Value) -> Value {
        w.api
            .create(self.res(), NS, obj)
            .expect("the binding can be created")
    }

    /// Creates `b` targeting the `default` ServiceAccount.
    pub fn create(self, w: &World) -> Value {
        self.create_obj(w, self.binding(self.default_service_account()))
    }

    /// Creates `b` targeting ServiceAccount `sa`.
    pub fn create_for(self, w: &World, sa: &str) -> Value {
        self.create_obj(w, self.binding(sa))
    }

    /// Binding `b` as stored.
    pub fn get(self, w: &World) -> Value {
        w.api.get(self.res(), NS, "b").expect("the binding exists")
    }

    /// `b`'s pull Secret, if it exists.
    pub fn secret(self, w: &World) -> Option<Value> {
        w.api.get("secrets", NS, self.secret_name())
    }

    /// Waits for `b` to be ready and its Secret to exist; returns both.
    pub fn ready(self, w: &World) -> (Value, Value) {
        let b = w.wait_ready(self.res(), NS, "b");
        let s = w.wait_for("the pull secret", WAIT, || self.secret(w));
        (b, s)
    }

    fn set_server(self, binding: &mut Value, server: &str) {
        match self {
            Version::V1beta1 => binding["spec"]["acrServer"] = json!(server),
            Version::V1beta2 => binding["spec"]["acr"]["server"] = json!(server),
        }
    }

    fn set_client_id(self, binding: &mut Value, client_id: &str) {
        match self {
            Version::V1beta1 => binding["spec"]["managedIdentityClientID"] = json!(client_id),
            Version::V1beta2 => {
                binding["spec"]["auth"]["managedIdentity"]["clientID"] = json!(client_id)
            }
        }
    }

    /// A Secret `name` owned by binding `b` (stored as `binding`) and labelled for it, holding
    /// an empty docker config.
    pub fn owned_secret(self, binding: &Value, name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {
                "name": name, "namespace": NS,
                "labels": {BINDING_LABEL: "b"},
                "ownerReferences": [{
                    "apiVersion": self.api_version(), "kind": "AcrPullBinding",
                    "name": "b", "uid": binding["metadata"]["uid"], "controller": true,
                    "blockOwnerDeletion": true
                }]
            },
            "data": {".dockerconfigjson": "e30="}
        })
    }

    /// How many passes over `b` acrpull has logged as making no write.
    pub fn idle_passes(self, p: &Acrpull) -> usize {
        let done = format!("{NS}/b ({}): reconciled in", self.name());
        p.log
            .lines()
            .iter()
            .filter(|l| l.contains(&done) && l.contains("with 0 writes"))
            .count()
    }
}

/// A v1beta1 binding `b` relying on the environment defaults, with `spec` fields added.
pub fn v1beta1_binding(spec: Value) -> Value {
    let mut s = json!({"acrServer": "", "scope": SCOPE, "managedIdentityClientID": "",
                       "managedIdentityResourceID": ""});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "msi-acrpull.microsoft.com/v1beta1",
        "kind": "AcrPullBinding",
        "metadata": {"name": "b", "namespace": NS},
        "spec": s
    })
}

/// A Secret's annotation, `""` when absent.
pub fn annotation(s: &Value, key: &str) -> String {
    s["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits for `b`'s Secret to be regenerated (its inputs hash no longer `inputs`) and checks it.
pub fn regenerated(w: &World, v: Version, inputs: &str, server: &str) -> Value {
    let s = w.wait_for("a regenerated secret", WAIT, || {
        v.secret(w)
            .filter(|s| annotation(s, INPUTS_ANNOTATION) != inputs)
    });
    assert_pull_secret(w, &s, &v.get(w), server, "b");
    s
}

/// Scenario 1 / 1.
pub fn new_binding_gets_the_finalizer(v: Version) {
    let mut w = World::start();
    let _p = v.start(&mut w, &[]);
    v.create(&w);
    let b = w.wait_for("the finalizer", WAIT, || {
        let b = w.api.get(v.res(), NS, "b")?;
        b["metadata"]["finalizers"].is_array().then_some(b)
    });
    assert_eq!(b["metadata"]["finalizers"], json!([FINALIZER]));
}

/// Scenario 2 / 2.
pub fn missing_service_account_is_a_status_error_until_it_appears(v: Version) {
    let mut w = World::start();
    let _p = v.start(&mut w, &[]);
    v.create_for(&w, "missing");
    let b = w.wait_error(v.res(), NS, "b", |e| !e.is_empty());
    assert_eq!(
        b["status"]["error"],
        "service account \"missing\" not found"
    );
    assert!(b["status"]["tokenExpirationTime"].is_null(), "{b}");
    assert!(v.secret(&w).is_none(), "no Secret while the SA is missing");
    assert_eq!(
        w.azure.imds.counters().requests,
        0,
        "no token while the SA is missing"
    );

    w.service_account(NS, "missing", json!({}));
    let (b, s) = v.ready(&w);
    assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    w.wait_pull_secrets(NS, "missing", &[v.secret_name()]);
}

/// Scenarios 3 and 8 / 4 and 12: the Secret, the ServiceAccount's reference, and a status that
/// mirrors the Secret's annotations.
pub fn new_binding_gets_its_secret_reference_and_status(v: Version) {
    let mut w = World::start();
    let _p = v.start(&mut w, &[]);
    v.create(&w);
    let (b, s) = v.ready(&w);
    let password = assert_pull_secret(&w, &s, &b, REGISTRY, "b");
    assert_eq!(s["metadata"]["name"], v.secret_name());
    assert_eq!(
        s["metadata"]["labels"].as_object().map(|l| l.len()),
        Some(1)
    );
    assert_eq!(
        s["metadata"]["annotations"].as_object().map(|a| a.len()),
        Some(3)
    );
    w.wait_pull_secrets(NS, "default", &[v.secret_name()]);
    let b = w.wait_for("status matching the secret", WAIT, || {
        let b = v.get(&w);
        let s = v.secret(&w)?;
        (b["status"]["tokenExpirationTime"] == annotation(&s, EXPIRY_ANNOTATION).as_str()
            && b["status"]["lastTokenRefreshTime"] == annotation(&s, REFRESH_ANNOTATION).as_str())
        .then_some(b)
    });
    assert_eq!(
        b["status"]["tokenExpirationTime"]
            .as_str()
            .map(str::to_string),
        jwt_expiry(&password)
    );
    let refreshed = parse_rfc3339(b["status"]["lastTokenRefreshTime"].as_str().unwrap_or(""))
        .expect("lastTokenRefreshTime parses");
    assert!(
        (refreshed - now_unix()).abs() < 60,
        "refresh time is about now"
    );
    let imds = w.azure.imds.counters();
    assert_eq!(
        imds.issued
            .get(&(identity(1).client_id, v.arm_resource().into())),
        Some(&1),
        "{imds:?}"
    );
    let acr = w.azure.acr.counters();
    let oid = identity(1).object_id;
    assert_eq!(
        acr.exchanges.get(&(REGISTRY.into(), oid.clone())),
        Some(&1),
        "{acr:?}"
    );
    assert_eq!(
        acr.tokens.get(&(REGISTRY.into(), oid, SCOPE.into())),
        Some(&1),
        "scoped token: {acr:?}"
    );
}

/// Scenario 4 / 8: an identity IMDS does not know.
pub fn token_failure_is_a_status_error(v: Version) {
    let mut w = World::start();
    let _p = v.start(&mut w, &[]);
    let mut obj = v.binding(v.default_service_account());
    v.set_client_id(&mut obj, "00000000-0000-0000-0000-000000000099");
    v.create_obj(&w, obj);
    let b = w.wait_error(v.res(), NS, "b", |e| !e.is_empty());
    let err = b["status"]["error"].as_str().unwrap_or_default();
    assert!(err.starts_with(v.arm_token_error()), "{err}");
    assert!(v.secret(&w).is_none());
    assert!(w.pull_secrets(NS, "default").is_empty());
}

/// Scenario 6 / 10.
pub fn removed_reference_is_added_back(v: Version) {
    let mut w = World::start();
    let _p = v.start(&mut w, &[]);
    v.create(&w);
    v.ready(&w);
    w.wait_pull_secrets(NS, "default", &[v.secret_name()]);
    w.set_pull_secrets(NS, "default", &[]);
    w.wait_pull_secrets(NS, "default", &[v.secret_name()]);
}

/// Scenario 7 / 11: unrelated names alphabetically, then v1beta2's `acr-pull-*`, then v1beta1's
/// `*-msi-acrpull-secret`, wherever this version's own name falls.
pub fn pull_secrets_are_sorted_unrelated_then_v1beta2_then_v1beta1(v: Version) {
    let mut w = World::start();
    w.set_pull_secrets(
        NS,
        "default",
        &[
            "zz-user",
            "previous-msi-acrpull-secret",
            "acr-pull-other",
            "aa-user",
        ],
    );
    let _p = v.start(&mut w, &[]);
    v.create(&w);
    v.ready(&w);
    let want = match v {
        Version::V1beta1 => [
            "aa-user",
            "zz-user",
            "acr-pull-other",
            "b-msi-acrpull-secret",
            "previous-msi-acrpull-secret",
        ],
        Version::V1beta2 => [
            "aa-user",
            "zz-user",
            "acr-pull-b",
            "acr-pull-other",
            "previous-msi-acrpull-secret",
        ],
    };
    w.wait_pull_secrets(NS, "default", &want);
}

/// Scenario 10 / 14.
pub fn stale_status_is_corrected(v: Version) {
    let mut w = World::start();
    let _p = v.start(&mut w, &[]);
    v.create(&w);
    let (_, s) = v.ready(&w);
    w.edit_status(v.res(), NS, "b", |o| {
        o["status"]["lastTokenRefreshTime"] = json!("2020-01-01T00:00:00Z");
        o["status"]["tokenExpirationTime"] = json!("2020-01-01T01:00:00Z");
    });
    w.wait_for("the status corrected", WAIT, || {
        let b = v.get(&w);
        (b["status"]["tokenExpirationTime"] == annotation(&s, EXPIRY_ANNOTATION).as_str()
            && b["status"]["lastTokenRefreshTime"] == annotation(&s, REFRESH_ANNOTATION).as_str())
        .then_some(())
    });
}

/// Scenarios 11–12 / 15–16: a reference to an owned Secret of an older naming scheme is
/// removed first, then the Secret is deleted.
pub fn extraneous_reference_removed_then_old_secret_deleted(v: Version) {
    let mut w = World::start();
    let p = v.start(&mut w, &[]);
    v.create(&w);
    let (b, _) = v.ready(&w);
    drop(p);
    let old = v.old_secret_name();
    w.api
        .create("secrets", NS, v.owned_secret(&b, old))
        .unwrap();
    w.set_pull_secrets(NS, "default", &[v.secret_name(), old]);
    w.api.clear_log();
    let _p = v.start(&mut w, &[]);
    w.wait_pull_secrets(NS, "default", &[v.secret_name()]);
    w.wait_for("the old secret deleted", WAIT, || {
        w.api.get("secrets", NS, old).is_none().then_some(())
    });
    assert!(v.secret(&w).is_some());
    // The emulator logs a request once it has answered it, a moment after the object is gone.
    let writes = w.wait_for("the delete in the request log", WAIT, || {
        let writes = w.controller_writes();
        writes
            .iter()
            .any(|r| r.verb == "delete" && r.name == old)
            .then_some(writes)
    });
    let unref = writes
        .iter()
        .position(|r| r.resource == "serviceaccounts" && r.verb == "patch");
    let delete = writes
        .iter()
        .position(|r| r.resource == "secrets" && r.verb == "delete" && r.name == old);
    assert!(
        unref.is_some() && unref < delete,
        "unreference before delete: {writes:?}"
    );
}

/// Scenario 13 / 17.
pub fn up_to_date_binding_makes_no_writes_and_no_token_requests(v: Version) {
    let mut w = World::start();
    let p = v.start(&mut w, &[]);
    v.create(&w);
    v.ready(&w);
    w.wait_pull_secrets(NS, "default", &[v.secret_name()]);
    let settled = w.wait_for("a pass with nothing to do", WAIT, || {
        let n = v.idle_passes(&p);
        (n > 0).then_some(n)
    });
    w.api.clear_log();
    let imds = w.azure.imds.counters();
    let acr = w.azure.acr.counters();
    // A change that triggers a pass and needs nothing from acrpull.
    w.edit(v.res(), NS, "b", |o| {
        o["metadata"]["labels"] = json!({"example.com/poke": "1"});
        o["metadata"]["annotations"] = json!({"example.com/poke": "1"});
    });
    w.wait_for("the pass after the poke", WAIT, || {
        (v.idle_passes(&p) > settled).then_some(())
    });
    assert!(
        w.controller_writes().is_empty(),
        "{:?}",
        w.controller_writes()
    );
    assert_eq!(w.azure.imds.counters(), imds);
    assert_eq!(w.azure.acr.counters(), acr);
}

/// Scenario 15 / 19: the binding moves to another ServiceAccount while acrpull is down and an
/// older Secret is still referenced; the previous ServiceAccount keeps only what is not ours.
pub fn service_account_change_during_cleanup_keeps_unrelated_entries(v: Version) {
    let mut w = World::start();
    w.service_account(NS, "delegate", json!({}));
    let p = v.start(&mut w, &[]);
    v.create_for(&w, "delegate");
    let (b, _) = v.ready(&w);
    drop(p);
    let old = v.old_secret_name();
    w.api
        .create("secrets", NS, v.owned_secret(&b, old))
        .unwrap();
    w.set_pull_secrets(NS, "delegate", &[v.secret_name(), old, "extraneous"]);
    w.edit(v.res(), NS, "b", |o| {
        o["spec"]["serviceAccountName"] = json!(v.default_service_account());
    });
    let _p = v.start(&mut w, &[]);
    w.wait_pull_secrets(NS, "delegate", &["extraneous"]);
    w.wait_pull_secrets(NS, "default", &[v.secret_name()]);
    w.wait_for("the old secret deleted", WAIT, || {
        w.api.get("secrets", NS, old).is_none().then_some(())
    });
}

/// Scenario 16 / 20.
pub fn changed_server_regenerates_the_secret(v: Version) {
    let mut w = World::start();
    w.add_granted_registry("other.azurecr.io");
    let _p = v.start(&mut w, &[]);
    v.create(&w);
    let (_, s) = v.ready(&w);
    let inputs = annotation(&s, INPUTS_ANNOTATION);
    w.edit(v.res(), NS, "b", |o| v.set_server(o, "other.azurecr.io"));
    regenerated(&w, v, &inputs, "other.azurecr.io");
    let acr = w.azure.acr.counters();
    assert_eq!(
        acr.exchanges
            .get(&("other.azurecr.io".into(), identity(1).object_id)),
        Some(&1),
        "{acr:?}"
    );
    w.wait_ready(v.res(), NS, "b");
}

/// Scenario 18 / 21. For v1beta1 the resource ID of identity 1 stays set (from the
/// environment): the token for identity 2 shows that the client ID wins.
pub fn changed_client_id_regenerates_the_secret(v: Version) {
    let mut w = World::start();
    let two = w.add_identity(2);
    let _p = v.start(&mut w, &[]);
    v.create(&w);
    let (_, s) = v.ready(&w);
    let inputs = annotation(&s, INPUTS_ANNOTATION);
    w.edit(v.res(), NS, "b", |o| v.set_client_id(o, &two.client_id));
    regenerated(&w, v, &inputs, REGISTRY);
    let acr = w.azure.acr.counters();
    assert_eq!(
        acr.tokens
            .get(&(REGISTRY.into(), two.object_id.clone(), SCOPE.into())),
        Some(&1),
        "{acr:?}"
    );
}

/// Scenarios 20–22 / 23–25: the reference goes first, then the Secret, then the finalizer;
/// pull secrets that are not ours stay.
pub fn deletion_unreferences_deletes_the_secret_then_drops_the_finalizer(v: Version) {
    let mut w = World::start();
    w.set_pull_secrets(NS, "default", &["user-secret"]);
    let _p = v.start(&mut w, &[]);
    v.create(&w);
    v.ready(&w);
    w.wait_pull_secrets(NS, "default", &["user-secret", v.secret_name()]);
    w.api.clear_log();
    w.api.delete(v.res(), NS, "b").unwrap();
    w.wait_for("the binding gone", WAIT, || {
        w.api.get(v.res(), NS, "b").is_none().then_some(())
    });
    assert!(v.secret(&w).is_none());
    assert_eq!(w.pull_secrets(NS, "default"), ["user-secret"]);
    let writes = w.controller_writes();
    // The main resource only: a late status write of the last pass may show up too.
    let at = |res: &str, verb: &str| {
        writes
            .iter()
            .position(|r| r.resource == res && r.verb == verb && r.subresource.is_empty())
            .unwrap_or_else(|| panic!("no {verb} {res}: {writes:?}"))
    };
    let unref = at("serviceaccounts", "patch");
    let delete = at("secrets", "delete");
    let finalizer = at("acrpullbindings", "patch");
    assert!(unref < delete && delete < finalizer, "{writes:?}");
}

/// One of the upstream bugs we fix (the others are in `fixes`): deleting a binding whose
/// ServiceAccount is gone completes, and promptly.
pub fn deletion_completes_when_the_service_account_is_missing(v: Version) {
    let mut w = World::start();
    w.service_account(NS, "robot", json!({}));
    let _p = v.start(&mut w, &[]);
    v.create_for(&w, "robot");
    v.ready(&w);
    w.api.delete("serviceaccounts", NS, "robot").unwrap();
    w.wait_error(v.res(), NS, "b", |e| {
        e == "service account \"robot\" not found"
    });
    let started = std::time::Instant::now();
    w.api.delete(v.res(), NS, "b").unwrap();
    w.wait_for("the binding gone", WAIT, || {
        w.api.get(v.res(), NS, "b").is_none().then_some(())
    });
    assert!(v.secret(&w).is_none());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// The finalizer, the Secret, the reference and the status: four writes and no more.
pub fn new_binding_costs_exactly_four_writes(v: Version) {
    let mut w = World::start();
    let p = v.start(&mut w, &[]);
    v.create(&w);
    v.ready(&w);
    w.wait_pull_secrets(NS, "default", &[v.secret_name()]);
    w.wait_for("a pass with nothing to do", WAIT, || {
        (v.idle_passes(&p) > 0).then_some(())
    });
    let writes: Vec<String> = w
        .controller_writes()
        .iter()
        .map(|r| format!("{} {} {}", r.verb, r.resource, r.subresource))
        .collect();
    assert_eq!(
        writes,
        [
            "patch acrpullbindings ",
            "create secrets ",
            "patch serviceaccounts ",
            "patch acrpullbindings status"
        ]
    );
}

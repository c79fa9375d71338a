//! Table-style tests of the planner, one per upstream scenario (spec §7) plus our fixes.

use super::*;
use crate::binding::V1beta1Defaults;
use crate::binding::{BindingError, Identity, TokenStep};
use crate::plan::observed::OwnerRef;
use crate::plan::secret::DOCKERCONFIG_KEY;
use crate::plan::strmap::StrMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;
use serde_json::Value;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2006-01-02 15:04:05 UTC);
const UID: &str = "uid-1";

fn long_expiry() -> OffsetDateTime {
    NOW + Duration::hours(24)
}

fn v1_defaults() -> V1beta1Defaults {
    V1beta1Defaults {
        acr_server: "DefaultACRServer".into(),
        resource_id: "defaultResourceID".into(),
        ..Default::default()
    }
}

/// A binding object; `finalizer` adds ours, `deleting` sets a deletionTimestamp.
fn binding(
    version: ApiVersion,
    spec: Value,
    status: Value,
    finalizer: bool,
    deleting: bool,
) -> Binding {
    let mut meta =
        json!({"namespace": "ns", "name": "binding", "uid": UID, "resourceVersion": "10"});
    if finalizer {
        meta["finalizers"] = json!(["other.example/finalizer", FINALIZER]);
    }
    if deleting {
        meta["deletionTimestamp"] = json!("2006-01-02T15:03:05Z");
    }
    let obj = json!({"metadata": meta, "spec": spec, "status": status});
    Binding::decode(version, &obj, &v1_defaults()).expect("test binding decodes")
}

fn v1(spec: Value) -> Binding {
    binding(ApiVersion::V1beta1, spec, json!({}), true, false)
}

fn v2_spec() -> Value {
    json!({"serviceAccountName": "delegate",
           "acr": {"server": "registry.azurecr.io", "scope": "repository:testing:pull,push",
                   "environment": "PublicCloud"},
           "auth": {"managedIdentity": {"resourceID": "resource"}}})
}

fn v2(spec: Value) -> Binding {
    binding(ApiVersion::V1beta2, spec, json!({}), true, false)
}

fn with_status(mut b: Binding, issued: OffsetDateTime, expires: OffsetDateTime) -> Binding {
    b.status.last_token_refresh_time = Some(issued);
    b.status.token_expiration_time = Some(expires);
    b
}

fn sa(name: &str, pulls: &[&str]) -> SaObs {
    SaObs {
        name: name.into(),
        resource_version: format!("rv-{name}"),
        image_pull_secrets: pulls.iter().map(|s| s.to_string()).collect(),
    }
}

/// A Secret owned by `b` with the given name, times and inputs hash.
fn owned(
    b: &Binding,
    name: &str,
    issued: OffsetDateTime,
    expires: OffsetDateTime,
    inputs: &str,
) -> SecretObs {
    SecretObs {
        name: name.into(),
        resource_version: format!("rv-{name}"),
        uid: format!("uid-{name}"),
        type_: DOCKERCONFIG_TYPE.into(),
        labels: StrMap::from([(BINDING_LABEL.to_string(), b.label_value())]),
        annotations: StrMap::from([
            (
                EXPIRY_ANNOTATION.to_string(),
                rfc3339::format_seconds(expires),
            ),
            (
                REFRESH_ANNOTATION.to_string(),
                rfc3339::format_seconds(issued),
            ),
            (INPUTS_ANNOTATION.to_string(), inputs.to_string()),
        ]),
        owner_refs: vec![OwnerRef {
            api_version: b.version.api_version().into(),
            kind: KIND.into(),
            name: b.meta.name.clone(),
            uid: b.meta.uid.clone(),
            controller: true,
        }],
    }
}

/// The up-to-date Secret for `b`.
fn current(b: &Binding) -> SecretObs {
    let hash = b
        .spec
        .as_ref()
        .map(|s| s.inputs_hash.clone())
        .unwrap_or_default();
    owned(b, &b.secret_name(), NOW, long_expiry(), &hash)
}

fn obs(b: Binding, secrets: Vec<SecretObs>, target: Option<SaObs>, others: Vec<SaObs>) -> Observed {
    Observed {
        binding: b,
        secrets,
        target_sa: target,
        other_sas: others,
    }
}

fn any_host() -> PlanConfig {
    PlanConfig {
        ttl_rotation_fraction: 0.5,
        allow: AllowList::Any,
    }
}

fn token() -> Minted {
    Minted::Ok(MintedToken {
        password: Password::new("TOKEN"),
        expires: long_expiry(),
        issued: NOW,
    })
}

/// Plans without a token and expects a finished plan.
fn done(o: &Observed, cfg: &PlanConfig) -> Plan {
    match writes(o, cfg, NOW, None) {
        Outcome::Done(p) => p,
        Outcome::NeedToken(n) => panic!("unexpected token need {n:?}"),
    }
}

/// Expects a token need, then plans with `minted`.
fn minted(o: &Observed, cfg: &PlanConfig, m: &Minted) -> (Box<TokenNeed>, Plan) {
    let need = match writes(o, cfg, NOW, None) {
        Outcome::NeedToken(n) => n,
        Outcome::Done(p) => panic!("expected a token need, got {p:?}"),
    };
    match writes(o, cfg, NOW, Some(m)) {
        Outcome::Done(p) => (need, p),
        Outcome::NeedToken(n) => panic!("token given but needed again: {n:?}"),
    }
}

fn status_error(msg: &str) -> Write {
    Write::UpdateStatus {
        status: json!({"error": msg}),
    }
}

fn status_ok(issued: OffsetDateTime, expires: OffsetDateTime) -> Write {
    Write::UpdateStatus {
        status: json!({"lastTokenRefreshTime": rfc3339::format_seconds(issued),
                       "tokenExpirationTime": rfc3339::format_seconds(expires), "error": null}),
    }
}

fn patch(sa: &str, pulls: &[&str]) -> Write {
    Write::PatchServiceAccount {
        name: sa.into(),
        resource_version: format!("rv-{sa}"),
        image_pull_secrets: pulls.iter().map(|s| s.to_string()).collect(),
    }
}

fn delete(name: &str) -> Write {
    Write::DeleteSecret {
        name: name.into(),
        uid: format!("uid-{name}"),
        resource_version: format!("rv-{name}"),
    }
}

fn secret_body_of(w: &Write) -> &Value {
    match w {
        Write::CreateSecret { body } | Write::ReplaceSecret { body, .. } => body,
        other => panic!("not a secret write: {other:?}"),
    }
}

fn docker_config_of(body: &Value) -> String {
    let data = body["data"][DOCKERCONFIG_KEY]
        .as_str()
        .expect("data present");
    String::from_utf8(STANDARD.decode(data).expect("base64")).expect("utf-8")
}

// ---- v1beta1 scenarios (spec §7, acrpullbinding_controller_test.go) ----

#[test]
fn v1beta1_1_binding_missing_finalizer_gets_one() {
    let b = binding(ApiVersion::V1beta1, json!({}), json!({}), false, false);
    let b = with_status(b, NOW, long_expiry());
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("default", &["binding-msi-acrpull-secret"])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(p.writes, vec![Write::AddFinalizer]);
}

#[test]
fn v1beta1_2_missing_service_account_is_a_status_error() {
    let b = v1(json!({"serviceAccountName": "missing"}));
    let p = done(&obs(b, vec![], None, vec![]), &any_host());
    assert_eq!(
        p.writes,
        vec![status_error(r#"service account "missing" not found"#)]
    );
    assert_eq!(
        error_text(&p).as_deref(),
        Some(r#"service account "missing" not found"#)
    );
    assert_eq!(p.refresh_at, None);
}

#[test]
fn v1beta1_3_no_secret_creates_one_with_exact_content() {
    let b = v1(json!({"scope": "repository:testing:pull,push"}));
    let o = obs(b, vec![], Some(sa("default", &[])), vec![]);
    let (need, p) = minted(&o, &any_host(), &token());
    assert_eq!(
        need.identity,
        Identity::ManagedResourceId("defaultResourceID".into())
    );
    assert_eq!(need.server, "DefaultACRServer");
    assert_eq!(need.registry.host, "defaultacrserver");
    assert_eq!(need.scope, "repository:testing:pull,push");
    assert_eq!(need.arm_resource, "https://management.azure.com/");
    assert_eq!(need.not_issued_before, None);
    let body = secret_body_of(&p.writes[0]);
    let mut expected = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": "binding-msi-acrpull-secret", "namespace": "ns",
            "labels": {"acr.microsoft.com/binding": "binding"},
            "annotations": {
                "acr.microsoft.com/token.expiry": "2006-01-03T15:04:05Z",
                "acr.microsoft.com/token.refresh": "2006-01-02T15:04:05Z",
                "acr.microsoft.com/token.inputs": "22xcczzccamzxpnpzuzes776qx9hc0r97keomc9lwybt",
            },
            "ownerReferences": [{"apiVersion": "msi-acrpull.microsoft.com/v1beta1", "kind": "AcrPullBinding",
                                 "name": "binding", "uid": UID, "controller": true, "blockOwnerDeletion": true}],
        },
    });
    expected["data"] = body["data"].clone();
    assert_eq!(body, &expected);
    assert_eq!(
        docker_config_of(body),
        r#"{"auths":{"DefaultACRServer":{"username":"00000000-0000-0000-0000-000000000000","password":"TOKEN","email":"msi-acrpull@azurecr.io","auth":"MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwOlRPS0VO"}}}"#
    );
    assert!(matches!(p.writes[0], Write::CreateSecret { .. }));
    assert_eq!(
        p.writes[1],
        patch("default", &["binding-msi-acrpull-secret"])
    );
    assert_eq!(p.writes[2], status_ok(NOW, long_expiry()));
    assert_eq!(p.writes.len(), 3);
    assert_eq!(p.refresh_at, Some(long_expiry() - Duration::minutes(30)));
}

#[test]
fn v1beta1_4_token_failure_is_a_status_error() {
    let b = v1(json!({}));
    let o = obs(b, vec![], Some(sa("default", &[])), vec![]);
    let err = Minted::Err(BindingError::TokenRequest {
        step: TokenStep::AcrAccessToken,
        detail: "oops".into(),
    });
    let (_, p) = minted(&o, &any_host(), &err);
    assert_eq!(
        p.writes,
        vec![status_error("failed to retrieve ACR access token: oops")]
    );
    assert_eq!(p.refresh_at, None);
}

#[test]
fn v1beta1_5_disallowed_server_fails_before_any_token_call() {
    let b = v1(json!({}));
    let cfg = PlanConfig {
        allow: AllowList::Suffixes(vec!["azurecr.io".into()]),
        ..PlanConfig::default()
    };
    let p = done(&obs(b, vec![], Some(sa("default", &[])), vec![]), &cfg);
    let msg =
        r#"ACR server "DefaultACRServer" is not in the allowed ACR server suffixes: azurecr.io"#;
    assert_eq!(p.writes, vec![status_error(msg)]);
}

#[test]
fn v1beta1_6_existing_secret_is_attached_to_the_service_account() {
    let b = with_status(v1(json!({})), NOW, long_expiry());
    let s = current(&b);
    let p = done(
        &obs(b, vec![s], Some(sa("default", &[])), vec![]),
        &any_host(),
    );
    assert_eq!(
        p.writes,
        vec![patch("default", &["binding-msi-acrpull-secret"])]
    );
}

#[test]
fn v1beta1_7_attachment_honours_ordering() {
    let b = with_status(v1(json!({})), NOW, long_expiry());
    let s = current(&b);
    let p = done(
        &obs(b, vec![s], Some(sa("default", &["acr-pull-other"])), vec![]),
        &any_host(),
    );
    assert_eq!(
        p.writes,
        vec![patch(
            "default",
            &["acr-pull-other", "binding-msi-acrpull-secret"]
        )]
    );
}

#[test]
fn v1beta1_8_referenced_secret_sets_the_status() {
    let b = v1(json!({}));
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("default", &["binding-msi-acrpull-secret"])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(p.writes, vec![status_ok(NOW, long_expiry())]);
}

#[test]
fn v1beta1_9_expiry_within_30_minutes_regenerates() {
    let b = with_status(
        v1(json!({})),
        NOW - Duration::hours(23),
        NOW + Duration::minutes(29),
    );
    let hash = b.spec.as_ref().unwrap().inputs_hash.clone();
    let s = owned(
        &b,
        "binding-msi-acrpull-secret",
        NOW - Duration::hours(23),
        NOW + Duration::minutes(29),
        &hash,
    );
    let o = obs(
        b,
        vec![s],
        Some(sa("default", &["binding-msi-acrpull-secret"])),
        vec![],
    );
    let (need, p) = minted(&o, &any_host(), &token());
    assert_eq!(need.not_issued_before, Some(NOW - Duration::hours(23)));
    assert!(
        matches!(&p.writes[0], Write::ReplaceSecret { name, .. } if name == "binding-msi-acrpull-secret")
    );
    let body = secret_body_of(&p.writes[0]);
    assert_eq!(
        body["metadata"]["resourceVersion"],
        "rv-binding-msi-acrpull-secret"
    );
    assert_eq!(
        body["metadata"]["annotations"][EXPIRY_ANNOTATION],
        "2006-01-03T15:04:05Z"
    );
    assert_eq!(p.writes[1], status_ok(NOW, long_expiry()));
    assert_eq!(p.writes.len(), 2);
}

#[test]
fn v1beta1_9b_expiry_just_outside_30_minutes_is_kept() {
    let b = with_status(
        v1(json!({})),
        NOW - Duration::hours(23),
        NOW + Duration::minutes(31),
    );
    let hash = b.spec.as_ref().unwrap().inputs_hash.clone();
    let s = owned(
        &b,
        "binding-msi-acrpull-secret",
        NOW - Duration::hours(23),
        NOW + Duration::minutes(31),
        &hash,
    );
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("default", &["binding-msi-acrpull-secret"])),
            vec![],
        ),
        &any_host(),
    );
    assert!(p.writes.is_empty());
    assert_eq!(p.refresh_at, Some(NOW + Duration::minutes(1)));
}

#[test]
fn v1beta1_10_stale_status_is_updated() {
    let b = with_status(
        v1(json!({})),
        NOW - Duration::hours(1),
        NOW + Duration::hours(12),
    );
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("default", &["binding-msi-acrpull-secret"])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(p.writes, vec![status_ok(NOW, long_expiry())]);
}

#[test]
fn v1beta1_11_and_12_extraneous_reference_is_removed_then_its_secret_deleted() {
    let b = with_status(v1(json!({})), NOW, long_expiry());
    let s = current(&b);
    let extra = owned(
        &b,
        "binding-msi-acrpull-secret-whatever",
        NOW,
        long_expiry(),
        "old",
    );
    let target = sa(
        "default",
        &[
            "binding-msi-acrpull-secret",
            "binding-msi-acrpull-secret-whatever",
        ],
    );
    let p = done(&obs(b, vec![s, extra], Some(target), vec![]), &any_host());
    assert_eq!(
        p.writes,
        vec![
            patch("default", &["binding-msi-acrpull-secret"]),
            delete("binding-msi-acrpull-secret-whatever"),
        ]
    );
}

#[test]
fn v1beta1_12_unreferenced_extraneous_secret_is_deleted() {
    let b = with_status(v1(json!({})), NOW, long_expiry());
    let s = current(&b);
    let extra = owned(
        &b,
        "binding-msi-acrpull-secret-whatever",
        NOW,
        long_expiry(),
        "old",
    );
    let target = sa("default", &["binding-msi-acrpull-secret"]);
    let p = done(&obs(b, vec![s, extra], Some(target), vec![]), &any_host());
    assert_eq!(
        p.writes,
        vec![delete("binding-msi-acrpull-secret-whatever")]
    );
}

#[test]
fn v1beta1_13_up_to_date_is_a_no_op_with_a_requeue() {
    let b = with_status(v1(json!({})), NOW, long_expiry());
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("default", &["binding-msi-acrpull-secret"])),
            vec![],
        ),
        &any_host(),
    );
    assert!(p.writes.is_empty());
    assert_eq!(p.error, None);
    assert_eq!(p.refresh_at, Some(long_expiry() - Duration::minutes(30)));
}

#[test]
fn v1beta1_14_service_account_change_cleans_the_old_one() {
    let b = with_status(v1(json!({"serviceAccountName": ""})), NOW, long_expiry());
    let s = current(&b);
    let old = sa("delegate", &["binding-msi-acrpull-secret"]);
    let p = done(
        &obs(b, vec![s], Some(sa("default", &[])), vec![old]),
        &any_host(),
    );
    assert_eq!(
        p.writes,
        vec![
            patch("delegate", &[]),
            patch("default", &["binding-msi-acrpull-secret"])
        ]
    );
}

#[test]
fn v1beta1_15_service_account_change_during_cleanup_removes_every_owned_name() {
    let b = with_status(v1(json!({})), NOW, long_expiry());
    let s = current(&b);
    let extra = owned(
        &b,
        "binding-msi-acrpull-secret-whatever",
        NOW,
        long_expiry(),
        "old",
    );
    let old = sa(
        "delegate",
        &[
            "binding-msi-acrpull-secret",
            "extraneous",
            "binding-msi-acrpull-secret-whatever",
        ],
    );
    let p = done(
        &obs(
            b,
            vec![s, extra],
            Some(sa("default", &["binding-msi-acrpull-secret"])),
            vec![old],
        ),
        &any_host(),
    );
    assert_eq!(
        p.writes,
        vec![
            patch("delegate", &["extraneous"]),
            delete("binding-msi-acrpull-secret-whatever")
        ]
    );
}

/// Scenarios 16–19: any change of the hashed inputs regenerates the Secret.
#[test]
fn v1beta1_16_to_19_changed_inputs_regenerate() {
    let cases = [
        (
            json!({"acrServer": "somewhere.else.biz"}),
            Identity::ManagedResourceId("defaultResourceID".into()),
        ),
        (
            json!({"acrServer": "somewhere.else.biz", "managedIdentityResourceID": "./whatever/identity//"}),
            Identity::ManagedResourceId("whatever/identity".into()),
        ),
        (
            json!({"acrServer": "somewhere.else.biz", "managedIdentityClientID": "Client-identity"}),
            Identity::ManagedClientId("Client-identity".into()),
        ),
        (
            json!({"acrServer": "somewhere.else.biz", "scope": "repository:alice:pull"}),
            Identity::ManagedResourceId("defaultResourceID".into()),
        ),
    ];
    for (spec, identity) in cases {
        let b = with_status(v1(spec.clone()), NOW, long_expiry());
        let s = owned(
            &b,
            "binding-msi-acrpull-secret",
            NOW,
            long_expiry(),
            "2wucoufm4eqegr6z5nmg00bvmwguubf86kfxk6yir9pw",
        );
        let o = obs(
            b,
            vec![s],
            Some(sa("default", &["binding-msi-acrpull-secret"])),
            vec![],
        );
        let (need, p) = minted(&o, &any_host(), &token());
        assert_eq!(need.identity, identity, "{spec}");
        assert_eq!(need.server, "somewhere.else.biz");
        assert_eq!(
            need.not_issued_before, None,
            "inputs changed: any cached token will do"
        );
        assert!(matches!(p.writes[0], Write::ReplaceSecret { .. }), "{spec}");
    }
}

#[test]
fn v1beta1_20_to_22_deletion_unreferences_deletes_and_drops_the_finalizer() {
    let b = binding(
        ApiVersion::V1beta1,
        json!({"serviceAccountName": "delegate"}),
        json!({}),
        true,
        true,
    );
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("delegate", &["binding-msi-acrpull-secret", "mine"])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(
        p.writes,
        vec![
            patch("delegate", &["mine"]),
            delete("binding-msi-acrpull-secret"),
            Write::RemoveFinalizer {
                index: 1,
                remaining: vec!["other.example/finalizer".into()]
            },
        ]
    );
}

#[test]
fn v1beta1_22_deletion_with_nothing_left_only_drops_the_finalizer() {
    let b = binding(ApiVersion::V1beta1, json!({}), json!({}), true, true);
    let p = done(&obs(b, vec![], None, vec![]), &any_host());
    assert!(matches!(
        p.writes.as_slice(),
        [Write::RemoveFinalizer { .. }]
    ));
}

// ---- v1beta2 scenarios (spec §7, acrpullbinding_v1beta2_controller_test.go) ----

#[test]
fn v1beta2_1_binding_missing_finalizer_gets_one() {
    let b = with_status(
        binding(ApiVersion::V1beta2, v2_spec(), json!({}), false, false),
        NOW,
        long_expiry(),
    );
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("delegate", &["acr-pull-binding"])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(p.writes, vec![Write::AddFinalizer]);
}

#[test]
fn v1beta2_2_missing_service_account_is_a_status_error() {
    let mut spec = v2_spec();
    spec["serviceAccountName"] = json!("missing");
    let p = done(&obs(v2(spec), vec![], None, vec![]), &any_host());
    assert_eq!(
        p.writes,
        vec![status_error(r#"service account "missing" not found"#)]
    );
}

#[test]
fn v1beta2_3_and_4_managed_identity_mints_a_new_secret() {
    let cases = [
        (
            json!({"resourceID": "resource"}),
            Identity::ManagedResourceId("resource".into()),
            "2goxvjvcjze0v96ooojjo7okj10q3qo5rtq9tgckauh",
        ),
        (
            json!({"clientID": "client-id"}),
            Identity::ManagedClientId("client-id".into()),
            "bznn8knczhrdktghbm88h4ock013v94i8e8cslwlrob",
        ),
    ];
    for (mi, identity, hash) in cases {
        let mut spec = v2_spec();
        spec["auth"] = json!({"managedIdentity": mi});
        let o = obs(v2(spec), vec![], Some(sa("delegate", &[])), vec![]);
        let (need, p) = minted(&o, &any_host(), &token());
        assert_eq!(need.identity, identity);
        assert_eq!(need.arm_resource, "https://management.core.windows.net/");
        let body = secret_body_of(&p.writes[0]);
        assert_eq!(body["metadata"]["name"], "acr-pull-binding");
        assert_eq!(body["metadata"]["annotations"][INPUTS_ANNOTATION], hash);
        assert_eq!(
            body["metadata"]["ownerReferences"][0]["apiVersion"],
            "acrpull.microsoft.com/v1beta2"
        );
        assert!(docker_config_of(body).starts_with(r#"{"auths":{"registry.azurecr.io":{"#));
    }
}

#[test]
fn v1beta2_5_and_6_workload_identity_needs_carry_the_identity() {
    let mut spec = v2_spec();
    spec["auth"] = json!({"workloadIdentity": {"serviceAccountRef": "delegate"}});
    let o = obs(v2(spec.clone()), vec![], Some(sa("delegate", &[])), vec![]);
    let (need, _) = minted(&o, &any_host(), &token());
    assert_eq!(
        need.identity,
        Identity::Workload {
            service_account_ref: "delegate".into(),
            client_id: None,
            tenant_id: None
        }
    );
    assert_eq!(need.target_service_account, "delegate");
    assert_eq!(need.namespace, "ns");
    spec["auth"]["workloadIdentity"]["clientID"] = json!("client-id");
    spec["auth"]["workloadIdentity"]["tenantID"] = json!("tenant-id");
    let o = obs(v2(spec), vec![], Some(sa("delegate", &[])), vec![]);
    let (need, _) = minted(&o, &any_host(), &token());
    assert_eq!(
        need.identity,
        Identity::Workload {
            service_account_ref: "delegate".into(),
            client_id: Some("client-id".into()),
            tenant_id: Some("tenant-id".into())
        }
    );
}

#[test]
fn v1beta2_7_and_8_token_service_errors_reach_the_status_verbatim() {
    for (e, msg) in [
        (
            BindingError::MissingAnnotation {
                service_account: "delegate".into(),
                annotation: "azure.workload.identity/client-id",
            },
            "service account delegate missing azure.workload.identity/client-id annotation",
        ),
        (
            BindingError::TokenRequest {
                step: TokenStep::ArmToken,
                detail: "oops".into(),
            },
            "failed to retrieve ARM token: oops",
        ),
    ] {
        let o = obs(v2(v2_spec()), vec![], Some(sa("delegate", &[])), vec![]);
        let (_, p) = minted(&o, &any_host(), &Minted::Err(e));
        assert_eq!(p.writes, vec![status_error(msg)]);
        assert_eq!(error_text(&p).as_deref(), Some(msg));
    }
}

#[test]
fn v1beta2_9_disallowed_server_fails_before_any_token_call() {
    let mut spec = v2_spec();
    spec["acr"]["server"] = json!("registry.azurecr.io.attacker.example.com");
    let p = done(
        &obs(v2(spec), vec![], Some(sa("delegate", &[])), vec![]),
        &PlanConfig::default(),
    );
    assert_eq!(
        error_text(&p).as_deref(),
        Some(
            r#"ACR server "registry.azurecr.io.attacker.example.com" is not in the allowed ACR server suffixes: azurecr.io, azurecr.us, azurecr.cn"#
        )
    );
}

#[test]
fn v1beta2_10_and_11_existing_secret_is_attached_in_order() {
    let b = with_status(v2(v2_spec()), NOW, long_expiry());
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("delegate", &["previous-msi-acrpull-secret"])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(
        p.writes,
        vec![patch(
            "delegate",
            &["acr-pull-binding", "previous-msi-acrpull-secret"]
        )]
    );
}

#[test]
fn v1beta2_12_referenced_secret_sets_the_status() {
    let b = v2(v2_spec());
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("delegate", &["acr-pull-binding"])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(p.writes, vec![status_ok(NOW, long_expiry())]);
    assert_eq!(p.refresh_at, Some(NOW + Duration::hours(12)));
}

#[test]
fn v1beta2_13_past_the_rotation_fraction_regenerates() {
    let issued = NOW - Duration::seconds(36);
    let expires = NOW + Duration::seconds(24);
    let b = with_status(v2(v2_spec()), issued, expires);
    let hash = b.spec.as_ref().unwrap().inputs_hash.clone();
    let s = owned(&b, "acr-pull-binding", issued, expires, &hash);
    let o = obs(
        b,
        vec![s],
        Some(sa("delegate", &["acr-pull-binding"])),
        vec![],
    );
    let (need, p) = minted(&o, &any_host(), &token());
    assert_eq!(need.not_issued_before, Some(issued));
    assert_eq!(p.writes.len(), 2, "{:?}", p.writes);
    assert!(matches!(p.writes[0], Write::ReplaceSecret { .. }));
    assert_eq!(p.writes[1], status_ok(NOW, long_expiry()));
}

#[test]
fn v1beta2_14_stale_status_is_updated() {
    let b = with_status(
        v2(v2_spec()),
        NOW - Duration::hours(2),
        NOW + Duration::hours(12),
    );
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("delegate", &["acr-pull-binding"])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(p.writes, vec![status_ok(NOW, long_expiry())]);
}

#[test]
fn v1beta2_15_and_16_extraneous_reference_then_secret_are_removed() {
    let b = with_status(v2(v2_spec()), NOW, long_expiry());
    let s = current(&b);
    let extra = owned(&b, "acr-pull-binding-2r0akz2dzv", NOW, long_expiry(), "old");
    let target = sa(
        "delegate",
        &["acr-pull-binding", "acr-pull-binding-2r0akz2dzv"],
    );
    let p = done(&obs(b, vec![s, extra], Some(target), vec![]), &any_host());
    assert_eq!(
        p.writes,
        vec![
            patch("delegate", &["acr-pull-binding"]),
            delete("acr-pull-binding-2r0akz2dzv")
        ]
    );
}

#[test]
fn v1beta2_17_up_to_date_is_a_no_op() {
    let b = with_status(v2(v2_spec()), NOW, long_expiry());
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("delegate", &["acr-pull-binding"])),
            vec![],
        ),
        &any_host(),
    );
    assert!(p.writes.is_empty());
    assert_eq!(p.refresh_at, Some(NOW + Duration::hours(12)));
}

#[test]
fn v1beta2_18_and_19_service_account_change_cleans_old_references() {
    let mut spec = v2_spec();
    spec["serviceAccountName"] = json!("newer");
    let b = v2(spec);
    // The target moved, so the inputs hash changed and the Secret is regenerated too.
    let s = owned(&b, "acr-pull-binding", NOW, long_expiry(), "old-hash");
    let extra = owned(&b, "acr-pull-binding-old", NOW, long_expiry(), "old");
    let old = sa(
        "delegate",
        &["acr-pull-binding", "unrelated", "acr-pull-binding-old"],
    );
    let o = obs(b, vec![s, extra], Some(sa("newer", &[])), vec![old]);
    let (_, p) = minted(&o, &any_host(), &token());
    assert_eq!(p.writes[0], patch("delegate", &["unrelated"]));
    assert!(matches!(p.writes[1], Write::ReplaceSecret { .. }));
    assert_eq!(p.writes[2], patch("newer", &["acr-pull-binding"]));
    assert_eq!(p.writes[3], delete("acr-pull-binding-old"));
    assert_eq!(p.writes[4], status_ok(NOW, long_expiry()));
}

#[test]
fn v1beta2_20_to_22_changed_inputs_regenerate() {
    let mut server = v2_spec();
    server["acr"]["server"] = json!("somewhere.azurecr.io");
    let mut client = v2_spec();
    client["auth"] = json!({"managedIdentity": {"clientID": "other-client-id"}});
    let mut resource = v2_spec();
    resource["auth"] = json!({"managedIdentity": {"resourceID": "other"}});
    for spec in [server, client, resource] {
        let b = with_status(v2(spec.clone()), NOW, long_expiry());
        let s = owned(
            &b,
            "acr-pull-binding",
            NOW,
            long_expiry(),
            "2goxvjvcjze0v96ooojjo7okj10q3qo5rtq9tgckauh",
        );
        let o = obs(
            b,
            vec![s],
            Some(sa("delegate", &["acr-pull-binding"])),
            vec![],
        );
        let (_, p) = minted(&o, &any_host(), &token());
        assert!(matches!(p.writes[0], Write::ReplaceSecret { .. }), "{spec}");
    }
}

#[test]
fn v1beta2_23_to_25_deletion_tolerates_a_missing_service_account() {
    let b = binding(ApiVersion::V1beta2, v2_spec(), json!({}), true, true);
    let s = current(&b);
    let p = done(&obs(b, vec![s], None, vec![]), &any_host());
    assert_eq!(
        p.writes,
        vec![
            delete("acr-pull-binding"),
            Write::RemoveFinalizer {
                index: 1,
                remaining: vec!["other.example/finalizer".into()]
            },
        ]
    );
}

// ---- our fixes and guarantees ----

#[test]
fn a_new_binding_costs_exactly_four_writes() {
    let b = binding(ApiVersion::V1beta2, v2_spec(), json!({}), false, false);
    let o = obs(b, vec![], Some(sa("delegate", &[])), vec![]);
    let (_, p) = minted(&o, &any_host(), &token());
    assert_eq!(p.writes.len(), 4);
    assert_eq!(p.writes[0], Write::AddFinalizer);
    assert!(matches!(p.writes[1], Write::CreateSecret { .. }));
    assert_eq!(p.writes[2], patch("delegate", &["acr-pull-binding"]));
    assert_eq!(p.writes[3], status_ok(NOW, long_expiry()));
}

#[test]
fn steady_state_costs_no_writes_and_refresh_costs_two() {
    let b = with_status(v2(v2_spec()), NOW, long_expiry());
    let s = current(&b);
    let o = obs(
        b,
        vec![s],
        Some(sa("delegate", &["acr-pull-binding"])),
        vec![],
    );
    assert!(done(&o, &any_host()).writes.is_empty());
    let later = NOW + Duration::hours(13);
    let Outcome::NeedToken(_) = writes(&o, &any_host(), later, None) else {
        panic!("a refresh is due");
    };
    let fresh = Minted::Ok(MintedToken {
        password: Password::new("NEW"),
        expires: later + Duration::hours(24),
        issued: later,
    });
    let Outcome::Done(p) = writes(&o, &any_host(), later, Some(&fresh)) else {
        panic!("token given");
    };
    assert_eq!(p.writes.len(), 2);
    assert_eq!(p.refresh_at, Some(later + Duration::hours(12)));
}

#[test]
fn same_name_bindings_of_both_versions_never_touch_each_others_secrets() {
    let v1b = with_status(
        v1(json!({"serviceAccountName": "delegate"})),
        NOW,
        long_expiry(),
    );
    let mut v2b = with_status(v2(v2_spec()), NOW, long_expiry());
    v2b.meta.uid = "uid-2".into();
    let s1 = current(&v1b);
    let s2 = current(&v2b);
    let target = sa(
        "delegate",
        &["acr-pull-binding", "binding-msi-acrpull-secret"],
    );
    let p1 = done(
        &obs(
            v1b.clone(),
            vec![s1.clone(), s2.clone()],
            Some(target.clone()),
            vec![],
        ),
        &any_host(),
    );
    assert!(p1.writes.is_empty(), "{:?}", p1.writes);
    let p2 = done(
        &obs(
            v2b,
            vec![s1.clone(), s2.clone()],
            Some(target.clone()),
            vec![],
        ),
        &any_host(),
    );
    assert!(p2.writes.is_empty(), "{:?}", p2.writes);
    let mut deleting = v1b;
    deleting.meta.deleting = true;
    let p = done(
        &obs(deleting, vec![s1, s2], Some(target), vec![]),
        &any_host(),
    );
    assert_eq!(p.writes[0], patch("delegate", &["acr-pull-binding"]));
    assert_eq!(p.writes[1], delete("binding-msi-acrpull-secret"));
    assert_eq!(p.writes.len(), 3);
}

#[test]
fn a_foreign_secret_with_our_name_is_never_touched() {
    let b = v2(v2_spec());
    let mut foreign = current(&b);
    foreign.owner_refs.clear();
    let p = done(
        &obs(
            b.clone(),
            vec![foreign.clone()],
            Some(sa("delegate", &[])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(
        p.writes,
        vec![status_error(
            r#"secret "acr-pull-binding" exists and is not owned by this binding"#
        )]
    );
    let mut deleting = b;
    deleting.meta.deleting = true;
    let p = done(
        &obs(
            deleting,
            vec![foreign],
            Some(sa("delegate", &["acr-pull-binding"])),
            vec![],
        ),
        &any_host(),
    );
    assert!(
        matches!(p.writes.as_slice(), [Write::RemoveFinalizer { .. }]),
        "{:?}",
        p.writes
    );
}

#[test]
fn a_legacy_unlabelled_secret_is_adopted_and_labelled() {
    let b = with_status(v1(json!({})), NOW, long_expiry());
    let mut legacy = current(&b);
    legacy.labels.clear();
    let o = obs(
        b,
        vec![legacy],
        Some(sa("default", &["binding-msi-acrpull-secret"])),
        vec![],
    );
    let (_, p) = minted(&o, &any_host(), &token());
    let body = secret_body_of(&p.writes[0]);
    assert_eq!(body["metadata"]["labels"][BINDING_LABEL], "binding");
}

#[test]
fn foreign_labels_and_annotations_survive_a_replace() {
    let b = with_status(
        v2(v2_spec()),
        NOW - Duration::hours(20),
        NOW + Duration::hours(4),
    );
    let hash = b.spec.as_ref().unwrap().inputs_hash.clone();
    let mut s = owned(
        &b,
        "acr-pull-binding",
        NOW - Duration::hours(20),
        NOW + Duration::hours(4),
        &hash,
    );
    s.labels.insert("team", "a");
    s.annotations.insert("note", "keep");
    let o = obs(
        b,
        vec![s],
        Some(sa("delegate", &["acr-pull-binding"])),
        vec![],
    );
    let (_, p) = minted(&o, &any_host(), &token());
    let body = secret_body_of(&p.writes[0]);
    assert_eq!(body["metadata"]["labels"]["team"], "a");
    assert_eq!(body["metadata"]["annotations"]["note"], "keep");
    assert_eq!(
        body["metadata"]["annotations"][REFRESH_ANNOTATION],
        "2006-01-02T15:04:05Z"
    );
}

#[test]
fn corrupted_annotations_are_treated_as_expired() {
    let b = with_status(v2(v2_spec()), NOW, long_expiry());
    let mut s = current(&b);
    s.annotations.insert(EXPIRY_ANNOTATION, "not a time");
    let o = obs(
        b,
        vec![s],
        Some(sa("delegate", &["acr-pull-binding"])),
        vec![],
    );
    assert!(matches!(
        writes(&o, &any_host(), NOW, None),
        Outcome::NeedToken(_)
    ));
}

#[test]
fn long_binding_names_get_valid_names_and_labels() {
    for len in [64, 240, 260] {
        let name = "n".repeat(len);
        let mut b = v2(v2_spec());
        b.meta.name = name.clone();
        let o = obs(b, vec![], Some(sa("delegate", &[])), vec![]);
        let (_, p) = minted(&o, &any_host(), &token());
        let body = secret_body_of(&p.writes[0]);
        let secret_name = body["metadata"]["name"].as_str().unwrap();
        assert!(names::is_dns_subdomain(secret_name), "{secret_name}");
        let label = body["metadata"]["labels"][BINDING_LABEL].as_str().unwrap();
        assert!(names::is_valid_label_value(label), "{label}");
        assert_eq!(
            body["metadata"]["ownerReferences"][0]["name"],
            name.as_str()
        );
        let mut b1 = v1(json!({}));
        b1.meta.name = name;
        assert!(b1.secret_name().len() <= 253);
    }
}

#[test]
fn the_cached_token_issue_time_is_what_the_secret_and_status_record() {
    let b = v2(v2_spec());
    let o = obs(b, vec![], Some(sa("delegate", &[])), vec![]);
    let cached = Minted::Ok(MintedToken {
        password: Password::new("T"),
        expires: NOW + Duration::hours(2),
        issued: NOW - Duration::hours(1),
    });
    let (_, p) = minted(&o, &any_host(), &cached);
    let body = secret_body_of(&p.writes[0]);
    assert_eq!(
        body["metadata"]["annotations"][REFRESH_ANNOTATION],
        "2006-01-02T14:04:05Z"
    );
    assert_eq!(
        p.writes[2],
        status_ok(NOW - Duration::hours(1), NOW + Duration::hours(2))
    );
    assert_eq!(p.refresh_at, Some(NOW + Duration::minutes(30)));
}

#[test]
fn refresh_is_never_scheduled_at_or_before_now() {
    let b = v2(v2_spec());
    let o = obs(b, vec![], Some(sa("delegate", &[])), vec![]);
    let nearly_spent = Minted::Ok(MintedToken {
        password: Password::new("T"),
        expires: NOW + Duration::seconds(1),
        issued: NOW - Duration::hours(1),
    });
    let (_, p) = minted(&o, &any_host(), &nearly_spent);
    assert_eq!(p.refresh_at, Some(NOW + Duration::seconds(1)));
}

#[test]
fn an_unchanged_error_is_not_written_again() {
    let b = binding(
        ApiVersion::V1beta2,
        v2_spec(),
        json!({"error": "service account \"delegate\" not found"}),
        true,
        false,
    );
    let p = done(&obs(b, vec![], None, vec![]), &any_host());
    assert!(p.writes.is_empty());
    assert!(p.error.is_some());
}

#[test]
fn a_bad_spec_is_a_status_error_but_deletion_still_works() {
    let mut spec = v2_spec();
    spec["acr"]["environment"] = json!("AirgappedCloud");
    let p = done(
        &obs(v2(spec.clone()), vec![], Some(sa("delegate", &[])), vec![]),
        &any_host(),
    );
    assert_eq!(
        error_text(&p).as_deref(),
        Some("a custom cloud configuration must be present for air-gapped cloud environments")
    );
    let b = binding(
        ApiVersion::V1beta2,
        json!({"acr": 1}),
        json!({}),
        true,
        true,
    );
    assert!(b.spec.is_err());
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("delegate", &["acr-pull-binding"])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(p.writes.len(), 3);
}

#[test]
fn deletion_without_our_finalizer_does_nothing() {
    let b = binding(ApiVersion::V1beta2, v2_spec(), json!({}), false, true);
    let s = current(&b);
    let p = done(
        &obs(
            b,
            vec![s],
            Some(sa("delegate", &["acr-pull-binding"])),
            vec![],
        ),
        &any_host(),
    );
    assert_eq!(p, Plan::default());
}

#[test]
fn a_secret_of_the_wrong_type_is_recreated() {
    let b = v2(v2_spec());
    let mut s = current(&b);
    s.type_ = "Opaque".into();
    let o = obs(
        b,
        vec![s],
        Some(sa("delegate", &["acr-pull-binding"])),
        vec![],
    );
    let (_, p) = minted(&o, &any_host(), &token());
    assert_eq!(p.writes[0], delete("acr-pull-binding"));
    assert!(matches!(p.writes[1], Write::CreateSecret { .. }));
}

#[test]
fn debug_output_never_shows_the_token() {
    let o = obs(v2(v2_spec()), vec![], Some(sa("delegate", &[])), vec![]);
    let m = Minted::Ok(MintedToken {
        password: Password::new("SUPERSECRET"),
        expires: long_expiry(),
        issued: NOW,
    });
    let (_, p) = minted(&o, &any_host(), &m);
    let shown = format!("{p:?} {m:?}");
    assert!(!shown.contains("SUPERSECRET"));
    assert!(!shown.contains(&STANDARD.encode("SUPERSECRET")[..8]));
    assert!(shown.contains("acr-pull-binding"));
}

// ---- convergence: applying a plan's writes leaves nothing to do ----

/// Applies `writes` to the observation the way the API server would.
fn apply(o: &mut Observed, writes: &[Write]) {
    for (i, w) in writes.iter().enumerate() {
        match w {
            Write::AddFinalizer => o.binding.meta.finalizers.push(FINALIZER.into()),
            Write::RemoveFinalizer { remaining, .. } => {
                o.binding.meta.finalizers = remaining.clone()
            }
            Write::CreateSecret { body } | Write::ReplaceSecret { body, .. } => {
                let mut s = SecretObs::from_object(body).expect("secret body has a name");
                s.resource_version = format!("rv-new-{i}");
                s.uid = format!("uid-{}", s.name);
                o.secrets.retain(|x| x.name != s.name);
                o.secrets.push(s);
            }
            Write::DeleteSecret { name, .. } => o.secrets.retain(|x| x.name != *name),
            Write::PatchServiceAccount {
                name,
                image_pull_secrets,
                ..
            } => {
                for sa in o.target_sa.iter_mut().chain(o.other_sas.iter_mut()) {
                    if sa.name == *name {
                        sa.image_pull_secrets = image_pull_secrets.clone();
                    }
                }
            }
            Write::UpdateStatus { status } => {
                let st = &mut o.binding.status;
                if let Some(e) = status.get("error") {
                    st.error = e.as_str().map(str::to_string);
                }
                if let Some(t) = status.get("lastTokenRefreshTime").and_then(Value::as_str) {
                    st.last_token_refresh_time = rfc3339::parse_seconds(t);
                }
                if let Some(t) = status.get("tokenExpirationTime").and_then(Value::as_str) {
                    st.token_expiration_time = rfc3339::parse_seconds(t);
                }
            }
        }
    }
}

/// Plans (minting when asked), applies, and checks the next pass is empty.
fn converges(mut o: Observed) -> Observed {
    let p = match writes(&o, &any_host(), NOW, None) {
        Outcome::Done(p) => p,
        Outcome::NeedToken(_) => match writes(&o, &any_host(), NOW, Some(&token())) {
            Outcome::Done(p) => p,
            Outcome::NeedToken(n) => panic!("needed a token twice: {n:?}"),
        },
    };
    apply(&mut o, &p.writes);
    match writes(&o, &any_host(), NOW, None) {
        Outcome::Done(again) => assert!(again.writes.is_empty(), "second pass: {:?}", again.writes),
        Outcome::NeedToken(n) => panic!("second pass wants a token: {n:?}"),
    }
    o
}

#[test]
fn every_scenario_converges_in_one_pass() {
    let v1b = binding(ApiVersion::V1beta1, json!({}), json!({}), false, false);
    converges(obs(
        v1b.clone(),
        vec![],
        Some(sa("default", &["mine"])),
        vec![],
    ));
    let v2b = binding(ApiVersion::V1beta2, v2_spec(), json!({}), false, false);
    let o = converges(obs(v2b.clone(), vec![], Some(sa("delegate", &[])), vec![]));
    assert_eq!(
        o.target_sa.unwrap().image_pull_secrets,
        ["acr-pull-binding"]
    );

    // Moved SA, an old-scheme Secret referenced in both places, a stale status.
    let extra = owned(
        &v2b,
        "acr-pull-binding-2r0akz2dzv",
        NOW,
        long_expiry(),
        "old",
    );
    let stale = owned(&v2b, "acr-pull-binding", NOW, long_expiry(), "old");
    let o = converges(obs(
        binding(
            ApiVersion::V1beta2,
            v2_spec(),
            json!({"error": "boom"}),
            true,
            false,
        ),
        vec![extra, stale],
        Some(sa("delegate", &["zzz", "acr-pull-binding-2r0akz2dzv"])),
        vec![sa(
            "before",
            &["acr-pull-binding", "acr-pull-binding-2r0akz2dzv", "keep"],
        )],
    ));
    assert_eq!(o.secrets.len(), 1);
    assert_eq!(o.other_sas[0].image_pull_secrets, ["keep"]);
    assert_eq!(
        o.target_sa.unwrap().image_pull_secrets,
        ["zzz", "acr-pull-binding"]
    );
    assert_eq!(o.binding.status.error, None);

    // A legacy unlabelled v1beta1 Secret gets adopted.
    let mut legacy = current(&v1b);
    legacy.labels.clear();
    let o = converges(obs(v1b, vec![legacy], Some(sa("default", &[])), vec![]));
    assert_eq!(o.secrets[0].labels.get(BINDING_LABEL), Some("binding"));

    // Deletion leaves nothing behind.
    let gone = binding(ApiVersion::V1beta2, v2_spec(), json!({}), true, true);
    let s = current(&gone);
    let o = converges(obs(
        gone,
        vec![s],
        Some(sa("delegate", &["acr-pull-binding"])),
        vec![],
    ));
    assert!(o.secrets.is_empty());
    assert!(!o.binding.has_finalizer());
}

#[test]
fn malformed_specs_never_panic_in_decoding_or_planning() {
    let weird = [
        json!(null),
        json!(1),
        json!(true),
        json!([]),
        json!({}),
        json!(""),
        json!("x".repeat(20_000)),
        json!("AirgappedCloud"),
    ];
    let paths: [&[&str]; 12] = [
        &["serviceAccountName"],
        &["acr"],
        &["acr", "server"],
        &["acr", "scope"],
        &["acr", "environment"],
        &["acr", "cloudConfig"],
        &["auth"],
        &["auth", "managedIdentity"],
        &["auth", "managedIdentity", "resourceID"],
        &["auth", "workloadIdentity"],
        &["acrServer"],
        &["managedIdentityResourceID"],
    ];
    for version in [ApiVersion::V1beta1, ApiVersion::V1beta2] {
        for path in paths {
            for w in &weird {
                let mut spec = v2_spec();
                let mut at = &mut spec;
                for key in &path[..path.len() - 1] {
                    at = &mut at[*key];
                }
                at[path[path.len() - 1]] = w.clone();
                for deleting in [false, true] {
                    let b = binding(version, spec.clone(), json!({"error": 5}), true, deleting);
                    let o = obs(b, vec![], Some(sa("delegate", &[])), vec![]);
                    let _ = writes(&o, &PlanConfig::default(), NOW, None);
                    let _ = writes(&o, &any_host(), NOW, Some(&token()));
                }
            }
        }
    }
}

#[test]
fn a_token_that_arrived_expired_is_kept_for_its_minimum_age() {
    let b = v2(v2_spec());
    let o = obs(b, vec![], Some(sa("delegate", &[])), vec![]);
    let expired = Minted::Ok(MintedToken {
        password: Password::new("T"),
        expires: NOW - Duration::minutes(45),
        issued: NOW,
    });
    let (_, p) = minted(&o, &any_host(), &expired);
    assert_eq!(p.refresh_at, Some(NOW + MIN_TOKEN_AGE));
    // The next pass, a moment later, finds the Secret usable and asks for no token.
    let b = with_status(o.binding.clone(), NOW, NOW - Duration::minutes(45));
    let hash = b.spec.as_ref().unwrap().inputs_hash.clone();
    let name = b.secret_name();
    let secret = owned(&b, &name, NOW, NOW - Duration::minutes(45), &hash);
    let o = obs(b, vec![secret], Some(sa("delegate", &[&name])), vec![]);
    let later = NOW + Duration::seconds(5);
    assert!(matches!(
        writes(&o, &any_host(), later, None),
        Outcome::Done(_)
    ));
    assert!(matches!(
        writes(
            &o,
            &any_host(),
            NOW + MIN_TOKEN_AGE + Duration::seconds(1),
            None
        ),
        Outcome::NeedToken(_)
    ));
}

#[test]
fn a_v1beta1_token_that_arrived_expired_is_also_kept_for_its_minimum_age() {
    let b = v1(json!({"scope": "repository:testing:pull,push"}));
    let o = obs(b, vec![], Some(sa("default", &[])), vec![]);
    let expired = Minted::Ok(MintedToken {
        password: Password::new("T"),
        expires: NOW - Duration::minutes(45),
        issued: NOW,
    });
    let (_, p) = minted(&o, &any_host(), &expired);
    assert_eq!(p.refresh_at, Some(NOW + MIN_TOKEN_AGE));
}

/// The plan's error as its status text.
fn error_text(p: &Plan) -> Option<String> {
    p.error.as_ref().map(ToString::to_string)
}

//! Status conditions and Events end to end: success, failure, recovery.

use std::time::Duration;

use acrpull_testkit::kube::{BINDINGS_V1BETA2, EVENTS};
use acrpull_testkit::world::{binding_v1beta2, condition, identity, World, REGISTRY};
use serde_json::Value;

use crate::acrpull;

fn events_for(w: &World, name: &str, reason: &str) -> Vec<Value> {
    w.api
        .list(EVENTS, Some("default"))
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name && e["reason"] == reason)
        .collect()
}

#[test]
fn conditions_and_events_follow_success_failure_and_recovery() {
    let mut w = World::start();
    let _p = acrpull(&mut w, &[]);
    w.api
        .create(
            BINDINGS_V1BETA2,
            "default",
            binding_v1beta2(
                "default",
                "b",
                REGISTRY,
                "repository:app:pull",
                &identity(1).client_id,
                "default",
            ),
        )
        .unwrap();

    let ready = w.wait_for("Ready=True", Duration::from_secs(20), || {
        let b = w.api.get(BINDINGS_V1BETA2, "default", "b")?;
        (condition(&b, "Ready")?["status"] == "True").then_some(b)
    });
    assert_eq!(condition(&ready, "TokenValid").unwrap()["status"], "True");
    assert_eq!(
        ready["status"]["observedGeneration"],
        ready["metadata"]["generation"]
    );
    let expiry = ready["status"]["tokenExpirationTime"].clone();
    let normal = w.wait_for("a TokenRefreshed event", Duration::from_secs(10), || {
        let e = events_for(&w, "b", "TokenRefreshed");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(normal[0]["type"], "Normal");
    assert_eq!(normal[0]["regarding"]["kind"], "AcrPullBinding");

    // The registry starts failing; a scope change forces a new token.
    w.azure.acr.faults.fail_next(1000, 503);
    let mut b = w.api.get(BINDINGS_V1BETA2, "default", "b").unwrap();
    b["spec"]["acr"]["scope"] = "repository:app:pull repository:other:pull".into();
    w.api.put(BINDINGS_V1BETA2, "default", b).unwrap();
    let failed = w.wait_for("Ready=False", Duration::from_secs(20), || {
        let b = w.api.get(BINDINGS_V1BETA2, "default", "b")?;
        (condition(&b, "Ready")?["status"] == "False").then_some(b)
    });
    let r = condition(&failed, "Ready").unwrap();
    assert_eq!(r["reason"], "TokenRequestFailed");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .starts_with("failed to retrieve ACR token:"),
        "{r}"
    );
    assert_eq!(
        condition(&failed, "TokenValid").unwrap()["status"],
        "True",
        "the old token still works"
    );
    assert_eq!(
        failed["status"]["tokenExpirationTime"], expiry,
        "times are kept on error"
    );
    assert_eq!(
        failed["status"]["observedGeneration"],
        failed["metadata"]["generation"]
    );
    let warnings = w.wait_for(
        "a TokenRequestFailed event",
        Duration::from_secs(10),
        || {
            let e = events_for(&w, "b", "TokenRequestFailed");
            (!e.is_empty()).then_some(e)
        },
    );
    assert_eq!(warnings[0]["type"], "Warning");
    assert!(
        !warnings[0]["note"].as_str().unwrap_or("").contains("eyJ"),
        "no token in notes"
    );

    // Recovery: the fault clears and the next retry succeeds.
    w.azure.acr.faults.clear();
    let recovered = w.wait_for("Ready=True again", Duration::from_secs(30), || {
        let b = w.api.get(BINDINGS_V1BETA2, "default", "b")?;
        (condition(&b, "Ready")?["status"] == "True").then_some(b)
    });
    assert!(
        recovered["status"].get("error").is_none_or(Value::is_null),
        "{recovered}"
    );
    assert_eq!(
        events_for(&w, "b", "TokenRequestFailed").len(),
        1,
        "repeated failures share one Event series"
    );
}
